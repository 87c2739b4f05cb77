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
use mend_test::sync::Log;
use serde::{Deserialize, Serialize};

/// Sleeps `ms`, with a defer that logs how the attempt ended.
#[derive(Serialize, Deserialize)]
struct Nap {
    ms: u64,
}
impl JobArgs for Nap {
    const KIND: &'static str = "nap";
    fn configure(job: mend::NewJob) -> mend::NewJob {
        job.with_max_attempts(1)
    }
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
    let worker = env
        .worker(registry(timeouts.kind, &exits), 2, |c| {
            if let Some(t) = timeouts.worker_default {
                c.default_timeout = t;
            }
        })
        .await;
    let mut job = Nap { ms }.to_new_job().expect("encode");
    if let Some(t) = timeouts.job {
        job = job.with_timeout(t);
    }
    let id = env.insert(job).await.id;
    let job = env
        .wait_for_job(id, "finished", |j| j.state.is_final())
        .await;
    let timeouts = stat(&worker.stats().timeouts);
    worker.shutdown(Duration::from_secs(5)).await;
    Napped {
        job,
        exits: exits.snapshot(),
        timeouts,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_kind_timeout_fails_the_attempt() {
    let kind = Some(Duration::from_millis(100));
    nap(
        Timeouts {
            kind,
            ..Default::default()
        },
        60_000,
    )
    .await
    .assert_timed_out("100ms");
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
    let napped = nap(
        Timeouts {
            kind: Some(Duration::from_secs(60)),
            job: Some(Duration::from_millis(150)),
            ..Default::default()
        },
        60_000,
    )
    .await;
    assert_eq!(napped.job.timeout_ms, Some(150));
    napped.assert_timed_out("150ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_per_job_timeout_also_wins_over_the_kinds() {
    // The kind allows 50ms, but this job is allowed 10s: its 200ms nap completes.
    let kind = Some(Duration::from_millis(50));
    let long = nap(
        Timeouts {
            kind,
            job: Some(Duration::from_secs(10)),
            ..Default::default()
        },
        200,
    )
    .await;
    assert_eq!(long.job.state, JobState::Completed);
    assert!(long.job.errors.is_empty(), "{:#?}", long.job.errors);
    // Control: the same nap under the kind's own timeout times out.
    nap(
        Timeouts {
            kind,
            ..Default::default()
        },
        200,
    )
    .await
    .assert_timed_out("50ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_default_timeout_applies_when_nobody_sets_one() {
    let worker_default = Some(Duration::from_millis(120));
    nap(
        Timeouts {
            worker_default,
            ..Default::default()
        },
        60_000,
    )
    .await
    .assert_timed_out("120ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_job_with_attempts_left_is_retried() {
    let env = Env::new().await;
    let exits = Log::new();
    let attempts = Log::new();
    let mut registry = Registry::new();
    let (a, x) = (attempts.clone(), exits.clone());
    registry.register_raw(
        "slow_once",
        Some(Duration::from_millis(100)),
        move |ctx, _args| {
            let (a, x) = (a.clone(), x.clone());
            async move {
                a.push(ctx.attempt());
                ctx.defer(move |exit| async move { x.push(exit) });
                if ctx.attempt() == 1 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok(None)
            }
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
    let mut registry = Registry::new();
    let f = fired.clone();
    registry.register_raw(
        "spawner",
        Some(Duration::from_millis(100)),
        move |ctx, _args| {
            let f = f.clone();
            async move {
                let child = ctx.cancellation_token().child_token();
                let id = ctx.id();
                tokio::spawn(async move {
                    child.cancelled().await;
                    f.push(id);
                });
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(None)
            }
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
