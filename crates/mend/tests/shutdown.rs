//! Graceful shutdown: stop claiming, let in-flight attempts finish within the drain, then cancel
//! the rest, run their defers (told `Shutdown`) and put them back to `available` without using
//! an attempt or recording an error. Readiness drops as soon as shutdown begins; a second call
//! returns at once.

#![expect(
    clippy::expect_used,
    reason = "test set-up fails loudly: a broken fixture is a failed test"
)]

use std::time::Duration;

use mend::{AttemptExit, JobError, JobRow, JobState, Registry, ShutdownReport, WorkerHandle};
use mend_test::env::{stat, Env};
use mend_test::handler::registry_with;
use mend_test::sync::{Gate, Log};
use mend_test::wait::{recv, wait_until, WAIT};
use tokio::sync::mpsc;
use uuid::Uuid;

mend_test::job_args! {
    struct Work {
        /// Fail attempt 1 (so a later attempt has history).
        fail_first: bool,
        /// Return as soon as the token fires instead of ignoring it.
        cooperative: bool,
    } = "work"
}

fn work(fail_first: bool, cooperative: bool) -> Work {
    Work {
        fail_first,
        cooperative,
    }
}

/// Each attempt logs its defer exit, signals `started`, then waits at `gate`.
fn registry(
    gate: &Gate,
    exits: &Log<AttemptExit>,
    started: mpsc::UnboundedSender<(Uuid, i32)>,
) -> Registry {
    let state = (gate.clone(), exits.clone(), started);
    registry_with(
        state,
        |(gate, exits, started), ctx, args: Work| async move {
            if args.fail_first && ctx.attempt() == 1 {
                return Err(JobError::retry_after("first attempt fails", Duration::ZERO));
            }
            ctx.defer(move |exit| async move { exits.push(exit) });
            let _ = started.send((ctx.id(), ctx.attempt()));
            if args.cooperative {
                tokio::select! {
                    _ = gate.wait() => {}
                    _ = ctx.cancelled() => return Err(JobError::retry("interrupted by shutdown")),
                }
            } else {
                gate.wait().await;
            }
            Ok(())
        },
    )
}

/// One test's store and a worker (two slots) running [`registry`], with the handles that steer
/// its handler.
struct Rig {
    env: Env,
    gate: Gate,
    exits: Log<AttemptExit>,
    tx: mpsc::UnboundedSender<(Uuid, i32)>,
    started: mpsc::UnboundedReceiver<(Uuid, i32)>,
    worker: WorkerHandle,
}

impl Rig {
    /// Enqueue `work` and wait until its attempt `attempt` has started.
    async fn start(&mut self, work: Work, attempt: i32) -> Uuid {
        let id = self.env.client.enqueue(&work).await.expect("enqueue").id;
        assert_eq!(
            recv(&mut self.started, &format!("attempt {attempt} to start")).await,
            (id, attempt)
        );
        id
    }

    /// Start `work` (until its attempt `attempt` runs), shut the worker down with a drain too
    /// short for it, and check it was released; returns the job as stored afterwards.
    async fn release(&mut self, work: Work, attempt: i32) -> JobRow {
        let id = self.start(work, attempt).await;
        let report = self.worker.shutdown(Duration::from_millis(50)).await;
        assert_eq!(report.released, 1);
        self.env.job(id).await
    }
}

async fn rig() -> Rig {
    let env = Env::new().await;
    let (gate, exits) = (Gate::new(), Log::new());
    let (tx, started) = mpsc::unbounded_channel();
    // Exactly as many slots as a test has jobs in flight: while they run, the fetcher waits for
    // a slot (not in the middle of a claim), so shutdown counts them as in flight the moment it
    // begins.
    let worker = env
        .worker(registry(&gate, &exits, tx.clone()), 2, |_| {})
        .await;
    Rig {
        env,
        gate,
        exits,
        tx,
        started,
        worker,
    }
}

/// Starts `worker.shutdown(drain)` in the background and waits until it has begun (readiness
/// dropped).
async fn begin_shutdown(
    worker: &WorkerHandle,
    drain: Duration,
) -> tokio::task::JoinHandle<ShutdownReport> {
    let h = worker.clone();
    let shutdown = tokio::spawn(async move { h.shutdown(drain).await });
    wait_until("readiness drops once shutdown begins", WAIT, || async {
        !worker.is_ready()
    })
    .await;
    shutdown
}

/// Waits (up to [`WAIT`]) for a shutdown begun by [`begin_shutdown`] to finish; `what` says why
/// it should.
async fn finished(shutdown: tokio::task::JoinHandle<ShutdownReport>, what: &str) -> ShutdownReport {
    tokio::time::timeout(WAIT, shutdown)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
        .expect("the shutdown task does not panic")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_jobs_that_finish_within_the_drain_complete() {
    let mut r = rig().await;
    let rows = r
        .env
        .client
        .enqueue_many(&[work(false, false), work(false, false)])
        .await
        .unwrap();
    for _ in 0..2 {
        recv(&mut r.started, "both handlers to start").await;
    }
    assert!(r.worker.is_ready());

    let shutdown = begin_shutdown(&r.worker, Duration::from_secs(30)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the in-flight attempts"
    );
    assert_eq!(r.worker.in_flight(), 2);

    r.gate.open();
    r.gate.open();
    let report = finished(shutdown, "shutdown finishes once the jobs do").await;
    assert_eq!(
        report,
        ShutdownReport {
            drained: 2,
            released: 0
        }
    );
    for row in &rows {
        let job = r.env.job(row.id).await;
        assert_eq!(job.state, JobState::Completed);
        assert_eq!(job.attempt, 1);
    }
    assert_eq!(
        r.exits.snapshot(),
        [AttemptExit::Completed, AttemptExit::Completed]
    );
    assert!(!r.worker.is_ready());
    let nodes = r.env.store.list_nodes().await.unwrap();
    assert!(
        nodes.iter().all(|n| n.id != r.worker.node_id()),
        "the node is deregistered: {nodes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_past_the_drain_is_released_without_using_an_attempt() {
    let mut r = rig().await;
    let mut events = r.worker.events();
    let id = r.start(work(false, false), 1).await;
    assert_eq!(
        r.env.job(id).await.attempt,
        1,
        "claimed: attempt 1 is running"
    );

    let report = r.worker.shutdown(Duration::from_millis(100)).await;
    assert_eq!(
        report,
        ShutdownReport {
            drained: 0,
            released: 1
        }
    );
    assert_eq!(
        r.exits.snapshot(),
        [AttemptExit::Shutdown],
        "defers are told the attempt was shut down"
    );
    let ev = mend_test::wait::wait_for_event(&mut events, id, "the release", |_| true).await;
    assert_eq!(ev.outcome, mend::EventOutcome::Released);
    assert!(!ev.fenced);
    assert_eq!(stat(&r.worker.stats().released), 1);

    let job = r.env.job(id).await;
    assert_eq!(job.state, JobState::Available);
    assert_eq!(job.attempt, 0, "the interrupted attempt does not count");
    assert!(
        job.errors.is_empty(),
        "a release records no error: {:#?}",
        job.errors
    );
    assert!(job.finalized_at.is_none());

    // The next worker runs it as attempt 1.
    r.gate.open();
    let next = r
        .env
        .worker(registry(&r.gate, &r.exits, r.tx.clone()), 2, |_| {})
        .await;
    assert_eq!(recv(&mut r.started, "the job to run again").await, (id, 1));
    let job = r.env.wait_for_state(id, JobState::Completed).await;
    assert_eq!(job.attempt, 1);
    assert!(job.errors.is_empty());
    next.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_job_keeps_the_attempt_count_it_had_before_the_claim() {
    let mut r = rig().await;
    // Attempt 1 failed; attempt 2 is running.
    let job = r.release(work(true, false), 2).await;
    assert_eq!(job.state, JobState::Available);
    assert_eq!(
        job.attempt, 1,
        "back to the count before attempt 2 was claimed"
    );
    assert_eq!(
        job.errors.len(),
        1,
        "only attempt 1's error: {:#?}",
        job.errors
    );
    assert_eq!(job.errors[0].attempt, 1);
}

/// A handler that returns as soon as its token fires must still be released, not failed: the
/// shutdown decides the outcome, not whatever the interrupted handler returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_cooperative_handler_stopped_by_shutdown_is_released_too() {
    let mut r = rig().await;
    let job = r.release(work(false, true), 1).await;
    assert_eq!(job.state, JobState::Available, "errors: {:#?}", job.errors);
    assert_eq!(job.attempt, 0);
    assert!(job.errors.is_empty());
    assert_eq!(r.exits.snapshot(), [AttemptExit::Shutdown]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_shutdown_call_returns_at_once() {
    let mut r = rig().await;
    let id = r.start(work(false, false), 1).await;

    let first = begin_shutdown(&r.worker, Duration::from_secs(30)).await;
    // While the first is still draining (the job is blocked), a second call does not wait.
    assert_returns_at_once(&r.worker, "a second shutdown call while the first drains").await;
    assert!(!first.is_finished());

    r.gate.open();
    let report = finished(first, "the first shutdown finishes").await;
    assert_eq!(report.released, 0);
    assert_eq!(r.env.job(id).await.state, JobState::Completed);
    // And after it finished.
    assert_returns_at_once(&r.worker, "shutdown after shutdown").await;
}

/// A shutdown call on a worker already shutting down (or shut down) returns at once, with an
/// empty report.
async fn assert_returns_at_once(worker: &WorkerHandle, which: &str) {
    let report = tokio::time::timeout(
        Duration::from_secs(2),
        worker.shutdown(Duration::from_secs(30)),
    )
    .await
    .unwrap_or_else(|_| panic!("{which} did not return at once"));
    assert_eq!(report, ShutdownReport::default(), "{which}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_drain_releases_at_once() {
    let mut r = rig().await;
    let id = r.start(work(false, false), 1).await;

    let shutdown = begin_shutdown(&r.worker, Duration::from_secs(3600)).await;
    r.worker.cut_drain();
    let report = finished(shutdown, "cutting the drain ends an hour-long drain").await;
    assert_eq!(report.released, 1);
    let job = r.env.job(id).await;
    assert_eq!((job.state, job.attempt), (JobState::Available, 0));
    assert_eq!(r.exits.snapshot(), [AttemptExit::Shutdown]);
}
