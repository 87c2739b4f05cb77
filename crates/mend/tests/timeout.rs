//! Attempt timeouts: per kind (`Handler::timeout`) and per job (`timeout_ms`, which wins over
//! the kind's), recorded as error kind `timeout` ("timed out after …"); in-memory defers are
//! told `AttemptExit::TimedOut`.

use std::time::Duration;

use mend::{AttemptExit, ErrorKind, Handler, JobArgs, JobContext, JobError, JobState, Registry};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_kind_timeout_fails_the_attempt() {
    let env = Env::new().await;
    let exits = Log::new();
    let worker = env
        .worker(
            registry(Some(Duration::from_millis(100)), &exits),
            2,
            |_| {},
        )
        .await;
    let id = env.client.enqueue(&Nap { ms: 60_000 }).await.unwrap().id;

    let job = env.wait_for_state(id, JobState::Discarded).await;
    assert_eq!(job.errors.len(), 1);
    let e = &job.errors[0];
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.message.contains("timed out after 100ms"), "{}", e.message);
    assert_eq!(exits.snapshot(), [AttemptExit::TimedOut]);
    assert_eq!(stat(&worker.stats().timeouts), 1);
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_job_timeout_overrides_the_kinds() {
    let env = Env::new().await;
    let exits = Log::new();
    // The kind allows a minute; the job only 150ms.
    let worker = env
        .worker(registry(Some(Duration::from_secs(60)), &exits), 2, |_| {})
        .await;
    let job = Nap { ms: 60_000 }
        .to_new_job()
        .unwrap()
        .with_timeout(Duration::from_millis(150));
    assert_eq!(job.timeout_ms, Some(150));
    let id = env.insert(job).await.id;

    let job = env.wait_for_state(id, JobState::Discarded).await;
    assert_eq!(job.timeout_ms, Some(150));
    let e = &job.errors[0];
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.message.contains("timed out after 150ms"), "{}", e.message);
    assert_eq!(exits.snapshot(), [AttemptExit::TimedOut]);
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_per_job_timeout_also_wins_over_the_kinds() {
    let env = Env::new().await;
    let exits = Log::new();
    // The kind allows 50ms, but this job is allowed 10s: its 200ms nap completes.
    let worker = env
        .worker(registry(Some(Duration::from_millis(50)), &exits), 2, |_| {})
        .await;
    let long = Nap { ms: 200 }
        .to_new_job()
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let long = env.insert(long).await.id;
    // Control: the same nap under the kind's own timeout times out.
    let short = env.client.enqueue(&Nap { ms: 200 }).await.unwrap().id;

    let job = env.wait_for_state(long, JobState::Completed).await;
    assert!(job.errors.is_empty(), "{:#?}", job.errors);
    let job = env.wait_for_state(short, JobState::Discarded).await;
    assert_eq!(job.errors[0].kind, ErrorKind::Timeout);
    assert!(
        job.errors[0].message.contains("timed out after 50ms"),
        "{}",
        job.errors[0].message
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_default_timeout_applies_when_nobody_sets_one() {
    let env = Env::new().await;
    let exits = Log::new();
    let worker = env
        .worker(registry(None, &exits), 2, |c| {
            c.default_timeout = Duration::from_millis(120)
        })
        .await;
    let id = env.client.enqueue(&Nap { ms: 60_000 }).await.unwrap().id;

    let job = env.wait_for_state(id, JobState::Discarded).await;
    assert_eq!(job.errors[0].kind, ErrorKind::Timeout);
    assert!(
        job.errors[0].message.contains("timed out after 120ms"),
        "{}",
        job.errors[0].message
    );
    assert_eq!(exits.snapshot(), [AttemptExit::TimedOut]);
    worker.shutdown(Duration::from_secs(5)).await;
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
