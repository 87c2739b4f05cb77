//! Panic isolation: a panicking handler fails its attempt with error kind `panic`, the panic
//! message and the source location; the worker survives and keeps running other jobs.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mend::{AttemptExit, ErrorKind, JobArgs, JobError, JobState, Registry};
use mend_test::env::{stat, Env};
use mend_test::handler::registry_with;

/// The line of the `panic!` below, recorded by the handler just before it panics.
static PANIC_LINE: AtomicU32 = AtomicU32::new(0);

mend_test::job_args!(struct Explode { what: String } = "explode", max_attempts = 2);
mend_test::job_args!(struct Fine { n: i32 } = "fine");

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register_fn(|_ctx, args: Explode| async move {
        tokio::task::yield_now().await;
        if !args.what.is_empty() {
            PANIC_LINE.store(line!() + 1, Ordering::SeqCst);
            panic!("the handler blew up: {}", args.what);
        }
        Ok::<_, JobError>(())
    });
    registry.register_fn(|_ctx, args: Fine| async move { Ok::<_, JobError>(args.n * 2) });
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_is_recorded_with_message_and_location() {
    let env = Env::new().await;
    // One slot: the jobs after the panic run on the very same worker and slot.
    let worker = env
        .worker(registry(), 1, |c| {
            c.retry_policy = std::sync::Arc::new(mend::FixedDelay(Duration::from_millis(10)))
        })
        .await;
    let id = env
        .client
        .enqueue(&Explode {
            what: "kaboom".into(),
        })
        .await
        .unwrap()
        .id;

    let job = env.wait_for_state(id, JobState::Discarded).await;
    assert_eq!(
        job.attempt, 2,
        "a panic counts as a failed attempt and is retried like an error"
    );
    assert_eq!(job.errors.len(), 2);
    let line = PANIC_LINE.load(Ordering::SeqCst);
    assert_ne!(line, 0);
    for (i, e) in job.errors.iter().enumerate() {
        assert_eq!(e.attempt, i as i32 + 1);
        assert_eq!(e.kind, ErrorKind::Panic);
        assert!(
            e.message.contains("the handler blew up: kaboom"),
            "message lacks the panic text: {}",
            e.message
        );
        let location = format!("tests/panic.rs:{line}:");
        assert!(
            e.message.contains(&location),
            "message lacks the location {location}: {}",
            e.message
        );
    }
    assert_eq!(stat(&worker.stats().panics), 2, "the panics counter moved");

    // The worker survived: it still runs other jobs.
    let args: Vec<Fine> = [1, 2, 3].into_iter().map(|n| Fine { n }).collect();
    let rows = env.client.enqueue_many(&args).await.unwrap();
    for (row, n) in rows.iter().zip([1, 2, 3]) {
        let job = env.wait_for_state(row.id, JobState::Completed).await;
        assert_eq!(job.result, Some(serde_json::json!(n * 2)));
    }
    assert_eq!(stat(&worker.stats().panics), 2);
    assert!(worker.is_ready());
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stat(&worker.stats().completed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_still_runs_its_defers_and_reports_the_panic_to_them() {
    let env = Env::new().await;
    let exits = mend_test::sync::Log::new();
    let registry = registry_with(exits.clone(), |log, ctx, _: Explode| async move {
        ctx.defer(move |exit| async move { log.push(exit) });
        panic!("boom in handler");
        #[allow(unreachable_code)]
        Ok::<_, JobError>(())
    });
    let worker = env.worker(registry, 1, |_| {}).await;
    let job = Explode { what: "x".into() }
        .to_new_job()
        .unwrap()
        .with_max_attempts(1);
    let id = env.insert(job).await.id;

    let job = env.wait_for_state(id, JobState::Discarded).await;
    assert_eq!(job.errors[0].kind, ErrorKind::Panic);
    let exits = exits.snapshot();
    assert_eq!(exits.len(), 1, "{exits:?}");
    match &exits[0] {
        AttemptExit::Panicked { message } => {
            assert!(message.contains("boom in handler"), "{message}")
        }
        other => panic!("defer was told {other:?}, expected Panicked"),
    }
    worker.shutdown(Duration::from_secs(5)).await;
}

mend_test::job_args!(struct EagerBoom = "eager_boom", max_attempts = 1);

struct EagerBoomHandler;
impl mend::Handler for EagerBoomHandler {
    type Args = EagerBoom;
    type Output = ();
    // Not an `async fn`: the panic happens while the handler's future is being built, before
    // it is ever polled.
    #[allow(clippy::manual_async_fn)]
    fn run(
        &self,
        _ctx: mend::JobContext,
        _: EagerBoom,
    ) -> impl std::future::Future<Output = Result<(), JobError>> + Send {
        panic!("panicked before returning a future");
        #[allow(unreachable_code)]
        async {
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_building_the_handler_future_is_caught_too() {
    let env = Env::new().await;
    let mut registry = registry();
    registry.register(EagerBoomHandler);
    let worker = env.worker(registry, 1, |_| {}).await;
    let id = env.client.enqueue(&EagerBoom).await.unwrap().id;

    let job = env.wait_for_state(id, JobState::Discarded).await;
    assert_eq!(job.errors[0].kind, ErrorKind::Panic);
    assert!(
        job.errors[0]
            .message
            .contains("panicked before returning a future"),
        "{}",
        job.errors[0].message
    );
    assert!(
        job.errors[0].message.contains("tests/panic.rs:"),
        "{}",
        job.errors[0].message
    );
    let fine = env.client.enqueue(&Fine { n: 21 }).await.unwrap().id;
    let job = env.wait_for_state(fine, JobState::Completed).await;
    assert_eq!(job.result, Some(serde_json::json!(42)));
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(stat(&worker.stats().panics), 1);
}
