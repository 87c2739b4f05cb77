//! Args that do not fit the handler discard the job after exactly one attempt (retrying cannot
//! fix them); a kind this worker has no handler for is never claimed by it.

use std::time::Duration;

use mend::{ErrorKind, JobArgs, JobError, JobState, NewJob, Registry};
use mend_test::env::{stat, Env};
use mend_test::handler::registry_with;
use mend_test::sync::Log;

mend_test::job_args!(struct Charge { cents: u64, customer: String } = "charge");

fn registry(calls: &Log<u64>) -> Registry {
    registry_with(calls.clone(), |calls, _ctx, args: Charge| async move {
        calls.push(args.cents);
        Ok::<_, JobError>(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_that_do_not_deserialize_discard_after_one_attempt() {
    let env = Env::new().await;
    let calls = Log::new();
    let worker = env.worker(registry(&calls), 2, |_| {}).await;
    let bad = [
        serde_json::json!({"cents": "ten", "customer": "c1"}), // wrong type
        serde_json::json!({"cents": 10}),                      // missing field
        serde_json::json!([1, 2, 3]),                          // not an object
    ];
    let mut ids = Vec::new();
    for args in bad {
        ids.push(env.insert(NewJob::new(Charge::KIND, args)).await.id);
    }
    let good = env
        .client
        .enqueue(&Charge {
            cents: 99,
            customer: "c2".into(),
        })
        .await
        .unwrap()
        .id;

    for id in ids {
        let job = env.wait_for_state(id, JobState::Discarded).await;
        assert_eq!(job.attempt, 1, "no retries for bad args");
        assert!(job.max_attempts > 1, "attempts were left");
        assert_eq!(job.errors.len(), 1);
        let e = &job.errors[0];
        assert_eq!(e.kind, ErrorKind::Error);
        assert!(
            e.message.contains("args do not match kind `charge`"),
            "{}",
            e.message
        );
    }
    env.wait_for_state(good, JobState::Completed).await;
    assert_eq!(calls.snapshot(), [99], "the handler never saw the bad args");
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stat(&worker.stats().discarded), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_without_a_handler_is_never_claimed() {
    let env = Env::new().await;
    let calls = Log::new();
    // Enqueued first, so a claim that ignored kinds would take it before the sentinel.
    let stranger = env
        .insert(NewJob::new(
            "not_mine",
            serde_json::json!({"cents": 1, "customer": "x"}),
        ))
        .await
        .id;
    // One slot: each claim asks for exactly one job.
    let worker = env.worker(registry(&calls), 1, |_| {}).await;
    for cents in [1, 2, 3] {
        let sentinel = env
            .client
            .enqueue(&Charge {
                cents,
                customer: "c".into(),
            })
            .await
            .unwrap()
            .id;
        env.wait_for_state(sentinel, JobState::Completed).await;
    }
    let job = env.job(stranger).await;
    assert_eq!(
        job.state,
        JobState::Available,
        "left for a worker that has the handler"
    );
    assert_eq!(job.attempt, 0);
    assert!(job.errors.is_empty());
    assert_eq!(job.lease_owner, None);
    assert_eq!(
        stat(&worker.stats().started),
        3,
        "only the sentinels were started"
    );
    worker.shutdown(Duration::from_secs(5)).await;

    // A worker that does have the handler runs it.
    let mut registry = Registry::new();
    registry.register_raw("not_mine", None, |_ctx, args| async move { Ok(Some(args)) });
    let other = env.worker(registry, 1, |_| {}).await;
    let job = env.wait_for_state(stranger, JobState::Completed).await;
    assert_eq!(job.attempt, 1);
    other.shutdown(Duration::from_secs(5)).await;
}
