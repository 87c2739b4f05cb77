//! In-memory cleanups (`ctx.defer`) run last-registered first on every way an attempt can end
//! short of the process dying, each told how it ended; a cleanup that panics (or hangs) is
//! recorded and the others still run.

#![expect(
    clippy::expect_used,
    reason = "test set-up fails loudly: a broken fixture is a failed test"
)]

use std::time::Duration;

use mend::{
    AttemptExit, CleanupOutcome, ErrorKind, EventOutcome, JobArgs, JobError, JobEvent, JobState,
    Registry, WorkerConfig, WorkerHandle,
};
use mend_test::ending::Ending;
use mend_test::env::Env;
use mend_test::handler::registry_with;
use mend_test::sync::Log;
use mend_test::wait::wait_for_event;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

mend_test::job_args!(struct Cleanly { ending: Ending } = "cleanly", max_attempts = 1);

/// Registers three named defers that log `(name, exit)`, then ends as asked. Sends the job id
/// on `started` once the defers are registered.
fn registry(log: &Log<(String, AttemptExit)>, started: mpsc::UnboundedSender<Uuid>) -> Registry {
    registry_with(
        (log.clone(), started),
        |(log, started), ctx, args: Cleanly| async move {
            for name in ["first", "second", "third"] {
                let log = log.clone();
                ctx.defer_named(name, move |exit| async move {
                    // Cleanups may await.
                    tokio::task::yield_now().await;
                    log.push((name.to_owned(), exit));
                });
            }
            let _ = started.send(ctx.id());
            args.ending.run().await
        },
    )
}

fn assert_lifo(log: &Log<(String, AttemptExit)>, expected: &AttemptExit) {
    let entries = log.snapshot();
    let names: Vec<_> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["third", "second", "first"],
        "cleanups run last-registered first: {entries:?}"
    );
    for (name, exit) in &entries {
        assert_eq!(exit, expected, "cleanup {name} was told {exit:?}");
    }
}

async fn run_one(
    ending: Ending,
    timeout: Option<Duration>,
) -> (Log<(String, AttemptExit)>, mend::JobRow) {
    let env = Env::new().await;
    let log = Log::new();
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut job = Cleanly { ending }.to_new_job().expect("encode args");
    if let Some(t) = timeout {
        job = job.with_timeout(t);
    }
    let (row, _) = env.run_to_end(registry(&log, tx), 2, |_| {}, job).await;
    (log, row)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defers_run_lifo_on_success() {
    let (log, job) = run_one(Ending::Ok, None).await;
    assert_eq!(job.state, JobState::Completed);
    assert_lifo(&log, &AttemptExit::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defers_run_lifo_on_error() {
    let (log, job) = run_one(Ending::Err, None).await;
    assert_eq!(job.state, JobState::Discarded);
    assert_lifo(
        &log,
        &AttemptExit::Failed {
            message: "it went wrong".into(),
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defers_run_lifo_on_panic() {
    let (log, job) = run_one(Ending::Panic, None).await;
    assert_eq!(job.state, JobState::Discarded);
    assert_eq!(job.errors[0].kind, ErrorKind::Panic);
    let entries = log.snapshot();
    let message = match &entries.first() {
        Some((_, AttemptExit::Panicked { message })) => message.clone(),
        other => panic!("expected a Panicked exit, got {other:?}"),
    };
    assert!(message.contains("it blew up"), "{message}");
    assert_lifo(&log, &AttemptExit::Panicked { message });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defers_run_lifo_on_timeout() {
    let (log, job) = run_one(Ending::Hang, Some(Duration::from_millis(100))).await;
    assert_eq!(job.state, JobState::Discarded);
    assert_eq!(job.errors[0].kind, ErrorKind::Timeout);
    assert_lifo(&log, &AttemptExit::TimedOut);
}

/// A worker running one job that blocks until stopped; returned once its defers are registered.
async fn start_blocked() -> (Env, Log<(String, AttemptExit)>, WorkerHandle, Uuid) {
    let env = Env::new().await;
    let log = Log::new();
    let (tx, mut started) = mpsc::unbounded_channel();
    let worker = env.worker(registry(&log, tx), 2, |_| {}).await;
    let id = env
        .client
        .enqueue(&Cleanly {
            ending: Ending::Block,
        })
        .await
        .expect("enqueue")
        .id;
    assert_eq!(
        mend_test::wait::recv(&mut started, "the handler to start").await,
        id
    );
    (env, log, worker, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defers_run_lifo_on_cancel() {
    let (env, log, worker, id) = start_blocked().await;

    worker.cancel(id).await.unwrap();
    let job = env.wait_for_state(id, JobState::Cancelled).await;
    assert_eq!(job.errors[0].kind, ErrorKind::Cancelled);
    assert_lifo(&log, &AttemptExit::Cancelled);
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defers_run_lifo_on_shutdown_release() {
    let (env, log, worker, id) = start_blocked().await;

    let report = worker.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.released, 1);
    assert_lifo(&log, &AttemptExit::Shutdown);
    assert_eq!(env.job(id).await.state, JobState::Available);
}

mend_test::job_args!(struct Messy { fail: bool } = "messy", max_attempts = 1);

/// Three cleanups; the middle one panics.
fn messy_registry(ran: &Log<&'static str>) -> Registry {
    registry_with(ran.clone(), |ran, ctx, args: Messy| async move {
        let r = ran.clone();
        ctx.defer_named("close-file", move |_| async move { r.push("close-file") });
        ctx.defer_named("broken", |_| async move { panic!("cleanup broke") });
        ctx.defer_named("unlock", move |_| async move { ran.push("unlock") });
        if args.fail {
            return Err(JobError::retry("handler failed"));
        }
        Ok(())
    })
}

/// One `Messy { fail }` enqueued on a worker of `registry` (settings adjusted by `tweak`), with
/// the worker's events subscribed before the enqueue.
async fn start_messy(
    registry: Registry,
    tweak: impl FnOnce(&mut WorkerConfig),
    fail: bool,
) -> (Env, WorkerHandle, broadcast::Receiver<JobEvent>, Uuid) {
    let env = Env::new().await;
    let (worker, events, id) = env.start_watched(registry, 2, tweak, &Messy { fail }).await;
    (env, worker, events, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_cleanup_is_recorded_and_the_others_still_run() {
    let ran = Log::new();
    let (env, worker, mut events, id) = start_messy(messy_registry(&ran), |_| {}, false).await;

    let ev = wait_for_event(&mut events, id, "the attempt's outcome", |_| true).await;
    assert_eq!(
        ev.outcome,
        EventOutcome::Completed,
        "a broken cleanup does not fail a successful attempt"
    );
    assert!(!ev.fenced);
    let names: Vec<_> = ev.cleanups.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["unlock", "broken", "close-file"]);
    assert_eq!(ev.cleanups[0].outcome, CleanupOutcome::Ok);
    match &ev.cleanups[1].outcome {
        CleanupOutcome::Panicked { message } => {
            assert!(message.contains("cleanup broke"), "{message}")
        }
        other => panic!("the panicking cleanup was reported as {other:?}"),
    }
    assert_eq!(ev.cleanups[2].outcome, CleanupOutcome::Ok);
    assert_eq!(ran.snapshot(), ["unlock", "close-file"]);
    assert_eq!(env.job(id).await.state, JobState::Completed);
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_cleanup_is_named_in_the_attempts_error() {
    let ran = Log::new();
    let (env, worker, _, id) = start_messy(messy_registry(&ran), |_| {}, true).await;

    let job = env.wait_for_state(id, JobState::Discarded).await;
    let message = &job.errors[0].message;
    assert!(message.starts_with("handler failed"), "{message}");
    assert!(
        message.contains("cleanups that failed: broken"),
        "{message}"
    );
    assert_eq!(ran.snapshot(), ["unlock", "close-file"]);
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_cleanup_is_abandoned_after_the_cleanup_timeout() {
    let ran = Log::new();
    let registry = registry_with(ran.clone(), |r, ctx, _: Messy| async move {
        ctx.defer_named("runs-last", move |_| async move { r.push("runs-last") });
        ctx.defer_named("hangs", |_| std::future::pending::<()>());
        Ok::<_, JobError>(())
    });
    let (_env, worker, mut events, id) = start_messy(
        registry,
        |c| c.cleanup_timeout = Duration::from_millis(100),
        false,
    )
    .await;

    let ev = wait_for_event(&mut events, id, "the attempt's outcome", |_| true).await;
    assert_eq!(ev.outcome, EventOutcome::Completed);
    assert_eq!(ev.cleanups[0].name, "hangs");
    assert_eq!(ev.cleanups[0].outcome, CleanupOutcome::TimedOut);
    assert!(ev.cleanups[0].duration_ms >= 100, "{:?}", ev.cleanups[0]);
    assert_eq!(ev.cleanups[1].outcome, CleanupOutcome::Ok);
    assert_eq!(ran.snapshot(), ["runs-last"]);
    worker.shutdown(Duration::from_secs(5)).await;
}
