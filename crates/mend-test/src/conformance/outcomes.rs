//! Writing outcomes: the fence, the state machine, and cancel requests winning over a running attempt's outcome.

use super::*;

pub async fn complete_is_fenced_by_owner_and_attempt(store: Arc<dyn Store>) {
    store.insert_many(vec![job("k"), job("k")]).await.unwrap();
    let claimed = claim(&store, "default", 2).await;
    let (j1, j2) = (&claimed[0], &claimed[1]);
    let done = OutcomeKind::Completed {
        result: Some(json!("ok")),
    };
    let mut wrong_owner = outcome(j1, done.clone());
    wrong_owner.fence.lease_owner = "node-b".into();
    let mut wrong_attempt = outcome(j2, done.clone());
    wrong_attempt.fence.attempt += 1;
    let r = complete(&store, vec![wrong_owner, wrong_attempt]).await;
    assert!(r.applied.is_empty());
    assert_eq!(r.fenced.len(), 2);
    assert_eq!(
        get(&store, j1.id).await.state,
        JobState::Running,
        "a fenced write changes nothing"
    );

    let r = complete(&store, vec![outcome(j1, done.clone())]).await;
    assert_eq!(r.applied, vec![j1.id]);
    let stored = get(&store, j1.id).await;
    assert_eq!(stored.state, JobState::Completed);
    assert_eq!(stored.result, Some(json!("ok")));
    assert!(stored.finalized_at.is_some());
    // The same outcome twice: the second is refused (the job is no longer running).
    let r = complete(&store, vec![outcome(j1, done)]).await;
    assert_eq!(r.fenced, vec![j1.id]);
}

pub async fn outcomes_move_jobs_as_the_state_machine_says(store: Arc<dyn Store>) {
    let jobs: Vec<NewJob> = (0..6).map(|_| job("k")).collect();
    store.insert_many(jobs).await.unwrap();
    let c = claim(&store, "default", 6).await;
    let later = DateTime::from_timestamp_micros(
        (Utc::now() + chrono::Duration::hours(1)).timestamp_micros(),
    )
    .unwrap();
    let e_retry = err(1, ErrorKind::Error, "boom");
    let e_discard = err(1, ErrorKind::Panic, "panicked at x.rs:1:1: no");
    let e_cancel = err(1, ErrorKind::Cancelled, "cancelled on request");
    let r = complete(
        &store,
        vec![
            outcome(&c[0], OutcomeKind::Completed { result: None }),
            outcome(
                &c[1],
                OutcomeKind::Retry {
                    error: e_retry.clone(),
                    run_at: later,
                },
            ),
            outcome(
                &c[2],
                OutcomeKind::Discard {
                    error: e_discard.clone(),
                },
            ),
            outcome(
                &c[3],
                OutcomeKind::Cancelled {
                    error: e_cancel.clone(),
                },
            ),
            outcome(&c[4], OutcomeKind::Snooze { run_at: later }),
            outcome(&c[5], OutcomeKind::Release),
        ],
    )
    .await;
    assert_eq!(r.applied.len(), 6, "all outcomes apply: {r:?}");
    let after: Vec<JobRow> = futures_join(&store, c.iter().map(|j| j.id)).await;
    for a in &after {
        assert_moved(JobState::Running, a.state);
    }
    assert_eq!(after[0].state, JobState::Completed);
    assert_eq!(after[0].result, None);
    assert_eq!(after[1].state, JobState::Retryable);
    assert_eq!(after[1].run_at, later);
    assert_eq!(after[1].errors, vec![e_retry]);
    assert_eq!(after[1].attempt, 1, "a failed attempt counts");
    assert_eq!(after[2].state, JobState::Discarded);
    assert_eq!(after[2].errors, vec![e_discard]);
    assert!(after[2].finalized_at.is_some());
    assert_eq!(after[3].state, JobState::Cancelled);
    assert_eq!(after[3].errors, vec![e_cancel]);
    assert_eq!(after[4].state, JobState::Scheduled);
    assert_eq!(after[4].attempt, 0, "a snooze does not use up an attempt");
    assert_eq!(after[4].run_at, later);
    assert_eq!(after[5].state, JobState::Available);
    assert_eq!(
        after[5].run_at, c[5].run_at,
        "a released job keeps its place in the queue"
    );
    assert_eq!(
        after[5].attempt, 0,
        "a shutdown release does not use up an attempt"
    );
    assert!(after[5].errors.is_empty());
    // The released job is claimable again straight away, as attempt 1.
    let again = claim(&store, "default", 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (c[5].id, 1));
}

async fn futures_join(store: &Arc<dyn Store>, ids: impl Iterator<Item = Uuid>) -> Vec<JobRow> {
    let mut out = Vec::new();
    for id in ids {
        out.push(get(store, id).await);
    }
    out
}

pub async fn a_cancel_request_wins_over_retry_snooze_and_release(store: Arc<dyn Store>) {
    insert_k(&store, 3).await;
    let c = claim(&store, "default", 3).await;
    let ids: Vec<Uuid> = c.iter().map(|j| j.id).collect();
    cancel_now(&store, ids.clone()).await;
    let later = Utc::now() + chrono::Duration::hours(1);
    let r = complete(
        &store,
        vec![
            outcome(
                &c[0],
                OutcomeKind::Retry {
                    error: err(1, ErrorKind::Error, "failed anyway"),
                    run_at: later,
                },
            ),
            outcome(&c[1], OutcomeKind::Snooze { run_at: later }),
            outcome(&c[2], OutcomeKind::Release),
        ],
    )
    .await;
    assert_eq!(r.applied.len(), 3);
    for id in ids {
        let j = get(&store, id).await;
        assert_eq!(
            j.state,
            JobState::Cancelled,
            "the cancel request is not lost: {j:?}"
        );
        assert!(j.finalized_at.is_some());
    }
    assert!(claim(&store, "default", 10).await.is_empty());
}
