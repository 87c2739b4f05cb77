//! Attempt timeouts: per kind (`Handler::timeout`) and per job (`timeout_ms`, which wins over
//! the kind's), recorded as error kind `timeout` ("timed out after …"); in-memory defers are
//! told `AttemptExit::TimedOut`.

#![expect(
    clippy::expect_used,
    reason = "test set-up fails loudly: a broken fixture is a failed test"
)]

use std::time::Duration;

use mend::{
    AttemptExit, ErrorKind, Handler, JobArgs, JobContext, JobError, JobRow, JobState, Registry,
};
use mend_test::env::{stat, Env};
use mend_test::handler::raw_registry_with;
use mend_test::sync::Log;

mend_test::job_args! {
    /// Sleeps `ms`, with a defer that logs how the attempt ended.
    struct Nap { ms: u64 } = "nap", max_attempts = 1
}

struct NapHandler {
    timeout: Option<Duration>,
    exits: Log<AttemptExit>,
}
impl Handler for NapHandler {
    type Args = Nap;
    type Output = ();
    async fn run(&self, ctx: JobContext, args: Nap) -> Result<(), JobError> {
        let exits = self.exits.clone();
        ctx.defer(move |exit| async move { exits.push(exit) });
        tokio::time::sleep(Duration::from_millis(args.ms)).await;
        Ok(())
    }
    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

fn registry(timeout: Option<Duration>, exits: &Log<AttemptExit>) -> Registry {
    let mut registry = Registry::new();
    registry.register(NapHandler {
        timeout,
        exits: exits.clone(),
    });
    registry
}

/// Where a timeout is set: on the kind, as the worker's default, on the job.
#[derive(Default)]
struct Timeouts {
    kind: Option<Duration>,
    worker_default: Option<Duration>,
    job: Option<Duration>,
}

impl Timeouts {
    /// Only the kind sets one.
    fn kind(t: Duration) -> Timeouts {
        Timeouts {
            kind: Some(t),
            ..Default::default()
        }
    }

    /// Only the worker's default is set.
    fn worker_default(t: Duration) -> Timeouts {
        Timeouts {
            worker_default: Some(t),
            ..Default::default()
        }
    }

    /// These, and the job's own `t`.
    fn and_job(self, t: Duration) -> Timeouts {
        Timeouts {
            job: Some(t),
            ..self
        }
    }
}

/// What became of one `Nap`.
struct Napped {
    job: JobRow,
    exits: Vec<AttemptExit>,
    /// The worker's `timeouts` counter.
    timeouts: u64,
}

/// Runs one `Nap { ms }` (one attempt) on its own worker with `timeouts` until it is finished.
async fn nap(timeouts: Timeouts, ms: u64) -> Napped {
    let env = Env::new().await;
    let exits = Log::new();
    let mut job = Nap { ms }.to_new_job().expect("encode");
    if let Some(t) = timeouts.job {
        job = job.with_timeout(t);
    }
    let tweak = |c: &mut mend::WorkerConfig| {
        if let Some(t) = timeouts.worker_default {
            c.default_timeout = t;
        }
    };
    let (job, worker) = env
        .run_to_end(registry(timeouts.kind, &exits), 2, tweak, job)
        .await;
    Napped {
        job,
        exits: exits.snapshot(),
        timeouts: stat(&worker.stats().timeouts),
    }
}

impl Napped {
    /// The one attempt timed out after `after` ("100ms"), and its defers were told so.
    fn assert_timed_out(&self, after: &str) {
        let job = &self.job;
        assert_eq!(job.state, JobState::Discarded, "{job:#?}");
        assert_eq!(job.errors.len(), 1);
        let e = &job.errors[0];
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert!(
            e.message.contains(&format!("timed out after {after}")),
            "{}",
            e.message
        );
        assert_eq!(self.exits, [AttemptExit::TimedOut]);
        assert_eq!(self.timeouts, 1);
    }
}

/// A timeout set in one place only, on the kind or as the worker's default, fails the attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_kind_or_worker_default_timeout_fails_the_attempt() {
    for (timeouts, after) in [
        (Timeouts::kind(Duration::from_millis(100)), "100ms"),
        // Nobody else sets one: the worker's default applies.
        (
            Timeouts::worker_default(Duration::from_millis(120)),
            "120ms",
        ),
    ] {
        nap(timeouts, 60_000).await.assert_timed_out(after);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_job_timeout_overrides_the_kinds() {
    assert_eq!(
        Nap { ms: 1 }
            .to_new_job()
            .unwrap()
            .with_timeout(Duration::from_millis(150))
            .timeout_ms,
        Some(150)
    );
    // The kind allows a minute; the job only 150ms.
    let timeouts = Timeouts::kind(Duration::from_secs(60)).and_job(Duration::from_millis(150));
    let napped = nap(timeouts, 60_000).await;
    assert_eq!(napped.job.timeout_ms, Some(150));
    napped.assert_timed_out("150ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_per_job_timeout_also_wins_over_the_kinds() {
    // The kind allows 50ms, but this job is allowed 10s: its 200ms nap completes.
    let kind = Duration::from_millis(50);
    let long = nap(Timeouts::kind(kind).and_job(Duration::from_secs(10)), 200).await;
    assert_eq!(long.job.state, JobState::Completed);
    assert!(long.job.errors.is_empty(), "{:#?}", long.job.errors);
    // Control: the same nap under the kind's own timeout times out.
    nap(Timeouts::kind(kind), 200)
        .await
        .assert_timed_out("50ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_job_with_attempts_left_is_retried() {
    let env = Env::new().await;
    let exits = Log::new();
    let attempts = Log::new();
    let registry = raw_registry_with(
        "slow_once",
        Some(Duration::from_millis(100)),
        (attempts.clone(), exits.clone()),
        |(a, x), ctx, _args| async move {
            a.push(ctx.attempt());
            ctx.defer(move |exit| async move { x.push(exit) });
            if ctx.attempt() == 1 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(None)
        },
    );
    let worker = env
        .worker(registry, 2, |c| {
            c.retry_policy = std::sync::Arc::new(mend::FixedDelay(Duration::from_millis(10)))
        })
        .await;
    let id = env
        .insert(mend::NewJob::new("slow_once", serde_json::json!({})))
        .await
        .id;

    let job = env.wait_for_state(id, JobState::Completed).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(job.errors.len(), 1);
    assert_eq!(
        (job.errors[0].attempt, job.errors[0].kind),
        (1, ErrorKind::Timeout)
    );
    assert_eq!(attempts.snapshot(), [1, 2]);
    assert_eq!(
        exits.snapshot(),
        [AttemptExit::TimedOut, AttemptExit::Completed]
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

/// `JobContext::cancellation_token` promises that work the handler spawns on a child token
/// stops with the attempt. A timed-out attempt has stopped (its future was dropped, and the job
/// may already be retried elsewhere), so the token must fire then too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_timed_out_attempt_fires_its_cancellation_token() {
    let env = Env::new().await;
    let fired = Log::new();
    let registry = raw_registry_with(
        "spawner",
        Some(Duration::from_millis(100)),
        fired.clone(),
        |f, ctx, _args| async move {
            let child = ctx.cancellation_token().child_token();
            let id = ctx.id();
            tokio::spawn(async move {
                child.cancelled().await;
                f.push(id);
            });
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(None)
        },
    );
    let worker = env.worker(registry, 2, |_| {}).await;
    let id = env
        .insert(mend::NewJob::new("spawner", serde_json::json!({})).with_max_attempts(1))
        .await
        .id;
    let job = env.wait_for_state(id, JobState::Discarded).await;
    assert_eq!(job.errors[0].kind, ErrorKind::Timeout);
    mend_test::wait::wait_until(
        "the timed-out attempt's token fires",
        Duration::from_secs(3),
        || async { fired.snapshot() == [id] },
    )
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
}
