//! What an operator does to jobs: cancel and retry.

use super::*;

pub async fn cancel_waiting_and_running_jobs(store: Arc<dyn Store>) {
    let waiting = job("k");
    let scheduled = job("k").with_run_at(Utc::now() + chrono::Duration::hours(1));
    let running = job("k").with_queue("busy");
    store
        .insert_many(vec![waiting.clone(), scheduled.clone(), running.clone()])
        .await
        .unwrap();
    let r = claim(&store, "busy", 1).await;
    let rows = cancel_now(
        &store,
        vec![waiting.id, scheduled.id, running.id, Uuid::now_v7()],
    )
    .await;
    assert_eq!(rows.len(), 3, "missing ids are left out");
    assert_eq!(get(&store, waiting.id).await.state, JobState::Cancelled);
    assert_eq!(get(&store, scheduled.id).await.state, JobState::Cancelled);
    let run = get(&store, running.id).await;
    assert_eq!(
        run.state,
        JobState::Running,
        "a running job is flagged, its worker stops it"
    );
    assert!(run.cancel_requested);
    assert!(
        claim(&store, "default", 10).await.is_empty(),
        "cancelled jobs are never claimed"
    );
    // The worker reports the cancellation.
    let e = err(1, ErrorKind::Cancelled, "cancelled on request");
    complete(
        &store,
        vec![outcome(&r[0], OutcomeKind::Cancelled { error: e })],
    )
    .await;
    assert_eq!(get(&store, running.id).await.state, JobState::Cancelled);
    // Cancelling a finished job changes nothing.
    let before = get(&store, running.id).await;
    cancel_now(&store, vec![running.id]).await;
    assert_eq!(get(&store, running.id).await, before);
}

pub async fn retry_finished_jobs(store: Arc<dyn Store>) {
    store
        .insert_many(vec![job("k").with_max_attempts(1), job("k")])
        .await
        .unwrap();
    let c = claim(&store, "default", 2).await;
    complete(
        &store,
        vec![
            outcome(
                &c[0],
                OutcomeKind::Discard {
                    error: err(1, ErrorKind::Error, "bad"),
                },
            ),
            outcome(
                &c[1],
                OutcomeKind::Retry {
                    error: err(1, ErrorKind::Error, "later"),
                    run_at: Utc::now() + chrono::Duration::hours(1),
                },
            ),
        ],
    )
    .await;
    let rows = retry_now(&store, vec![c[0].id, c[1].id]).await;
    assert_eq!(rows[0].state, JobState::Available);
    assert_eq!(
        rows[0].max_attempts, 2,
        "out of attempts: retry grants one more"
    );
    assert!(rows[0].finalized_at.is_none());
    assert_eq!(rows[0].errors.len(), 1, "history is kept");
    assert_eq!(
        rows[1].state,
        JobState::Retryable,
        "only finished jobs are retried by hand"
    );
    let again = claim(&store, "default", 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
}
