//! The per-job timeline: a job that panicked once, was rescued once and then completed shows
//! exactly those steps, in order, with the attempt and node of each.

use std::sync::Arc;
use std::time::Duration;

use mend::{FixedDelay, JobArgs, JobError, JobState, NewJob, Registry};
use mend_test::env::Env;
use mend_test::handler::registry_with;
use mend_test::sync::Gate;

mend_test::job_args!(struct Bumpy = "bumpy");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicked_then_rescued_then_completed() {
    let env = Env::new().await;
    let gate = Gate::new();
    let registry = registry_with(gate.clone(), |gate, ctx, _: Bumpy| async move {
        match ctx.attempt() {
            1 => panic!("first attempt blows up"),
            // The second attempt hangs until its worker is declared dead.
            2 => {
                gate.wait().await;
                Ok::<_, JobError>(())
            }
            _ => Ok(()),
        }
    });
    let worker = env
        .worker(registry, 2, |c| {
            c.retry_policy = Arc::new(FixedDelay(Duration::from_millis(10)));
            c.heartbeat_interval = Duration::from_millis(50);
        })
        .await;
    let node = worker.node_id().to_owned();
    let job = env
        .insert(NewJob::new(Bumpy::KIND, serde_json::json!(null)))
        .await;
    env.wait_for_job(job.id, "the second attempt to run", |j| {
        j.state == JobState::Running && j.attempt == 2
    })
    .await;
    // The worker is declared dead (as the rescuer does for a crashed process).
    assert_eq!(env.rescue_dead(&[&node]).await.len(), 1);
    let done = env.wait_for_state(job.id, JobState::Completed).await;
    gate.open();

    let steps: Vec<(String, Option<i32>)> = done
        .timeline
        .iter()
        .map(|e| (e.event.clone(), e.attempt))
        .collect();
    let expected: Vec<(String, Option<i32>)> = [
        ("enqueued", None),
        ("claimed", Some(1)),
        ("failed", Some(1)),
        ("claimed", Some(2)),
        ("rescued", Some(2)),
        ("claimed", Some(3)),
        ("completed", Some(3)),
    ]
    .into_iter()
    .map(|(e, a)| (e.to_owned(), a))
    .collect();
    assert_eq!(steps, expected, "{:#?}", done.timeline);
    let failed = &done.timeline[2];
    let detail = failed.detail.as_deref().unwrap();
    assert!(
        detail.starts_with("panic: ")
            && detail.contains("first attempt blows up")
            && detail.contains("timeline.rs"),
        "{detail}"
    );
    assert_eq!(done.timeline[1].node.as_deref(), Some(node.as_str()));
    assert!(done.timeline[4]
        .detail
        .as_deref()
        .unwrap()
        .contains("worker lost"));
    assert!(
        done.timeline.windows(2).all(|w| w[0].at <= w[1].at),
        "in time order: {:#?}",
        done.timeline
            .iter()
            .map(|e| (&e.event, e.at))
            .collect::<Vec<_>>()
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

mend_test::job_args!(struct WithCleanups = "with_cleanups");

/// DESIGN.md: "A panic inside one cleanup is caught and recorded; the remaining cleanups
/// still run." Recorded durably: the job's timeline keeps each cleanup's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_cleanup_is_recorded_in_the_timeline() {
    let env = Env::new().await;
    let mut registry = Registry::new();
    registry.register_fn(|ctx, _: WithCleanups| async move {
        ctx.defer_named("close-file", |_| async {});
        ctx.defer_named("release-lock", |_| async { panic!("lock server gone") });
        Ok::<_, JobError>(())
    });
    let worker = env.worker(registry, 2, |_| {}).await;
    let job = env
        .insert(NewJob::new(WithCleanups::KIND, serde_json::json!(null)))
        .await;
    let done = env.wait_for_state(job.id, JobState::Completed).await;
    let completed = done
        .timeline
        .iter()
        .find(|e| e.event == "completed")
        .expect("a completed step");
    let names: Vec<&str> = completed.cleanups.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["release-lock", "close-file"], "LIFO, both ran");
    match &completed.cleanups[0].outcome {
        mend::CleanupOutcome::Panicked { message } => {
            assert!(message.contains("lock server gone"), "{message}")
        }
        other => panic!("expected a recorded panic, got {other:?}"),
    }
    assert_eq!(completed.cleanups[1].outcome, mend::CleanupOutcome::Ok);
    // What each was told, as its span said (stored with the timeline).
    assert!(completed
        .cleanups
        .iter()
        .all(|c| c.told.as_deref() == Some("completed")));
    worker.shutdown(Duration::from_secs(5)).await;
}
