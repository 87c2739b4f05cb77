//! Cancellation: a waiting job is cancelled at once and never runs; a running job is stopped
//! (its token fires, defers are told `Cancelled`) and ends `cancelled` with an error of kind
//! `cancelled`, whether the cancel comes from this worker's handle or from another process
//! through the store (picked up by the heartbeat).

use std::time::Duration;

use mend::{
    AttemptExit, ErrorKind, EventOutcome, JobArgs, JobContext, JobError, JobState, Registry,
    WorkerHandle,
};
use mend_test::env::{stat, Env};
use mend_test::handler::registry_with;
use mend_test::sync::Log;
use mend_test::wait::recv;
use tokio::sync::mpsc;
use uuid::Uuid;

mend_test::job_args! {
    struct LongTask {
        /// Return as soon as the token fires (a well-behaved handler) instead of ignoring it.
        cooperative: bool,
    } = "long_task"
}
mend_test::job_args!(struct Quick = "quick");

/// What the tests observe about each attempt.
#[derive(Clone, Default)]
struct Probe {
    runs: Log<Uuid>,
    exits: Log<AttemptExit>,
    /// Set by a task the handler spawns on a child of its token.
    token_fired: Log<Uuid>,
}

fn registry(probe: &Probe, started: mpsc::UnboundedSender<Uuid>) -> Registry {
    let state = (probe.clone(), started);
    let registry = registry_with(state, |(p, started), ctx, args: LongTask| async move {
        p.runs.push(ctx.id());
        let exits = p.exits.clone();
        ctx.defer(move |exit| async move { exits.push(exit) });
        // Work spawned by the handler stops with it through a child token.
        let child = ctx.cancellation_token().child_token();
        let (fired, id) = (p.token_fired.clone(), ctx.id());
        tokio::spawn(async move {
            child.cancelled().await;
            fired.push(id);
        });
        let _ = started.send(ctx.id());
        if args.cooperative {
            ctx.cancelled().await;
            return Err(JobError::retry(
                "stopped early because the attempt was cancelled",
            ));
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    });
    let mut registry = registry;
    let p = probe.clone();
    registry.register_fn(move |ctx: JobContext, _: Quick| {
        let p = p.clone();
        async move {
            p.runs.push(ctx.id());
            Ok::<_, JobError>(())
        }
    });
    registry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_available_job_means_it_never_runs() {
    let env = Env::new().await;
    let probe = Probe::default();
    // Enqueued and cancelled before any worker exists.
    let doomed = env.client.enqueue(&Quick).await.unwrap().id;
    let row = env
        .client
        .cancel(doomed)
        .await
        .unwrap()
        .expect("the job exists");
    assert_eq!(row.state, JobState::Cancelled);
    assert!(row.finalized_at.is_some());

    let (tx, _rx) = mpsc::unbounded_channel();
    let worker = env.worker(registry(&probe, tx), 1, |_| {}).await;
    // Cancelled through the worker handle while waiting (scheduled for later).
    let later = Quick
        .to_new_job()
        .unwrap()
        .with_delay(Duration::from_millis(500));
    let later = env.insert(later).await.id;
    let row = worker.cancel(later).await.unwrap().expect("the job exists");
    assert_eq!(row.state, JobState::Cancelled);

    // A job enqueued after both is run; by the time it completes, the worker has claimed past
    // the cancelled ones (they are older, so they would have been claimed first).
    let sentinel = env.client.enqueue(&Quick).await.unwrap().id;
    env.wait_for_state(sentinel, JobState::Completed).await;
    // And the scheduled one's run_at has passed, so a claim would now promote it if it could.
    let deadline = env.job(later).await.run_at;
    mend_test::wait::wait_until(
        "the cancelled job's run_at has passed",
        mend_test::wait::WAIT,
        || async { chrono::Utc::now() > deadline },
    )
    .await;
    let sentinel2 = env.client.enqueue(&Quick).await.unwrap().id;
    env.wait_for_state(sentinel2, JobState::Completed).await;

    for id in [doomed, later] {
        let job = env.job(id).await;
        assert_eq!(job.state, JobState::Cancelled);
        assert_eq!(
            job.attempt, 0,
            "a cancelled waiting job never starts an attempt"
        );
        assert!(job.errors.is_empty());
    }
    assert_eq!(
        probe.runs.snapshot(),
        [sentinel, sentinel2],
        "only the sentinels ran"
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

/// One `LongTask` running on a worker with a heartbeat every `heartbeat`: returned once its
/// handler has started, with the worker's events subscribed before the enqueue.
struct Running {
    env: Env,
    probe: Probe,
    worker: WorkerHandle,
    events: tokio::sync::broadcast::Receiver<mend::JobEvent>,
    id: Uuid,
}

async fn start_long_task(heartbeat: Duration, cooperative: bool) -> Running {
    let env = Env::new().await;
    let probe = Probe::default();
    let (tx, mut started) = mpsc::unbounded_channel();
    let (worker, events, id) = env
        .start_watched(
            registry(&probe, tx),
            2,
            |c| c.heartbeat_interval = heartbeat,
            &LongTask { cooperative },
        )
        .await;
    assert_eq!(recv(&mut started, "the handler to start").await, id);
    Running {
        env,
        probe,
        worker,
        events,
        id,
    }
}

async fn assert_cancelled_while_running(env: &Env, probe: &Probe, id: Uuid) {
    let job = env.wait_for_state(id, JobState::Cancelled).await;
    assert_eq!(job.attempt, 1);
    assert_eq!(job.errors.len(), 1, "{:#?}", job.errors);
    assert_eq!(job.errors[0].kind, ErrorKind::Cancelled);
    assert_eq!(job.errors[0].attempt, 1);
    assert!(job.finalized_at.is_some());
    assert_eq!(
        probe.exits.snapshot(),
        [AttemptExit::Cancelled],
        "defers are told the attempt was cancelled"
    );
    mend_test::wait::wait_until(
        "the handler's child token fires",
        mend_test::wait::WAIT,
        || async { probe.token_fired.snapshot() == [id] },
    )
    .await;
    assert_eq!(
        probe.runs.snapshot(),
        [id],
        "a cancelled job is not run again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_through_the_worker_handle() {
    // A heartbeat too slow to matter: the handle stops the attempt directly.
    let mut r = start_long_task(Duration::from_secs(3600), false).await;

    let row = r
        .worker
        .cancel(r.id)
        .await
        .unwrap()
        .expect("the job exists");
    assert!(
        row.cancel_requested,
        "a running job is flagged, then stopped by its worker"
    );
    assert_cancelled_while_running(&r.env, &r.probe, r.id).await;
    let ev =
        mend_test::wait::wait_for_event(&mut r.events, r.id, "the cancel outcome", |_| true).await;
    assert_eq!(ev.outcome, EventOutcome::Cancelled);
    assert!(!ev.fenced);
    assert_eq!(stat(&r.worker.stats().cancelled), 1);
    assert_eq!(r.worker.in_flight(), 0);
    r.worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_from_another_process_is_picked_up_by_the_heartbeat() {
    let r = start_long_task(Duration::from_millis(50), false).await;

    // Another process: its own store connection on the same file, its own client.
    let other = mend::Client::new(r.env.reopen().await);
    let row = other.cancel(r.id).await.unwrap().expect("the job exists");
    assert_eq!(
        row.state,
        JobState::Running,
        "a running job is only flagged by the store"
    );
    assert!(row.cancel_requested);

    assert_cancelled_while_running(&r.env, &r.probe, r.id).await;
    r.worker.shutdown(Duration::from_secs(5)).await;
}

/// A well-behaved handler that watches `ctx.cancelled()` and returns (here with an error) as
/// soon as it fires must still end `cancelled`: the cancel decides the outcome, not whatever the
/// interrupted handler returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_cooperative_handler_that_returns_on_cancel_still_ends_cancelled() {
    let r = start_long_task(Duration::from_secs(3600), true).await;

    r.worker.cancel(r.id).await.unwrap();
    let job = r
        .env
        .wait_for_job(r.id, "done with its first attempt", |j| {
            j.state != JobState::Running
        })
        .await;
    assert_eq!(
        job.state,
        JobState::Cancelled,
        "a cancelled attempt must end cancelled; errors: {:#?}",
        job.errors
    );
    assert_eq!(job.errors[0].kind, ErrorKind::Cancelled);
    assert_eq!(r.probe.exits.snapshot(), [AttemptExit::Cancelled]);
    r.worker.shutdown(Duration::from_secs(5)).await;
}

mend_test::job_args!(struct FailsOnce = "fails_once");

/// A person cancels a running job; before the worker hears of it, the attempt fails and the
/// job would be retried. The cancel must still win: the job ends `cancelled` and its handler
/// does not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_cancel_requested_during_an_attempt_that_then_fails_is_not_lost() {
    let env = Env::new().await;
    let gate = mend_test::sync::Gate::new();
    let runs = Log::new();
    let (tx, mut started) = mpsc::unbounded_channel();
    let state = (gate.clone(), runs.clone(), tx);
    let registry = registry_with(state, |(g, r, tx), ctx, _: FailsOnce| async move {
        r.push(ctx.attempt());
        if ctx.attempt() == 1 {
            let _ = tx.send(ctx.id());
            g.wait().await;
            return Err(JobError::retry_after("flaky downstream", Duration::ZERO));
        }
        Ok(())
    });
    // No heartbeat during the test: the cancel request is not picked up while attempt 1 runs.
    let worker = env
        .worker(registry, 2, |c| {
            c.heartbeat_interval = Duration::from_secs(3600)
        })
        .await;
    env.wait_for_first_heartbeat(&worker).await;
    let id = env.client.enqueue(&FailsOnce).await.unwrap().id;
    assert_eq!(recv(&mut started, "attempt 1 to start").await, id);

    let other = mend::Client::new(env.reopen().await);
    assert!(
        other
            .cancel(id)
            .await
            .unwrap()
            .expect("the job exists")
            .cancel_requested
    );
    gate.open(); // attempt 1 fails

    let job = env.wait_final(id).await;
    assert_eq!(
        job.state,
        JobState::Cancelled,
        "the cancel was lost; errors: {:#?}",
        job.errors
    );
    assert_eq!(
        runs.snapshot(),
        [1],
        "the handler ran again after the job was cancelled"
    );
    worker.shutdown(Duration::from_secs(5)).await;
}
