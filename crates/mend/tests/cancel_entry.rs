//! Cancel has one entry point, `Client::cancel`: a client taken from a running worker
//! (`WorkerHandle::client`, which the HTTP API uses) stops that worker's attempt at once, not
//! at its next heartbeat; a plain client on the same store reaches it through the heartbeat.

#![expect(clippy::unwrap_used)]

use std::time::Duration;

use mend::{Client, EventOutcome, JobState, NewJob, Registry, Worker};
use mend_test::env::Env;
use mend_test::wait::{recv, wait_for_event};
use tokio::sync::mpsc;

/// Waits for the attempt to start, cancels it through `cancel`, and returns how the attempt
/// ended, failing if that takes longer than `within`.
async fn cancel_running(heartbeat: Duration, through_worker: bool, within: Duration) {
    let env = Env::new().await;
    let store = env.store.clone();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let mut registry = Registry::new();
    registry.register_raw("wait", None, move |ctx, _args| {
        let started_tx = started_tx.clone();
        async move {
            let _ = started_tx.send(ctx.id());
            ctx.cancelled().await;
            // A handler that returned Ok would have finished its work (and stay completed).
            Err(mend::JobError::retry("stopped"))
        }
    });
    let worker = Worker::builder(store.clone())
        .registry(registry)
        .configure(|c| c.heartbeat_interval = heartbeat)
        .build()
        .start()
        .await
        .unwrap();
    let mut events = worker.events();
    let job = store
        .insert_many(vec![NewJob::new("wait", serde_json::json!({}))])
        .await
        .unwrap()
        .remove(0);
    let id = recv(&mut started, "the job to start").await;
    assert_eq!(id, job.id);
    let client = if through_worker {
        worker.client()
    } else {
        Client::new(store.clone())
    };
    let asked = std::time::Instant::now();
    client.cancel(id).await.unwrap();
    let event = tokio::time::timeout(
        within,
        wait_for_event(&mut events, id, "the cancel outcome", |_| true),
    )
    .await
    .unwrap_or_else(|_| panic!("the attempt was not stopped within {within:?}"));
    assert_eq!(event.outcome, EventOutcome::Cancelled, "{event:?}");
    assert!(asked.elapsed() < within);
    let row = client.get(id).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Cancelled);
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_workers_own_client_stops_a_running_attempt_at_once() {
    // Heartbeats are an hour apart: only the direct path can stop the attempt in time.
    cancel_running(Duration::from_secs(3600), true, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn any_other_client_reaches_a_running_attempt_through_the_heartbeat() {
    cancel_running(Duration::from_millis(100), false, Duration::from_secs(5)).await;
}
