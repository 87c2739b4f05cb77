//! Retries: failed attempts are recorded in order and retried after the policy's delay; the
//! attempt limit discards; fatal errors discard at once; snoozes do not use attempts; an
//! explicit `retry_after` wins over the policy.

#![expect(
    clippy::expect_used,
    reason = "test set-up fails loudly: a broken fixture is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use mend::{
    ErrorKind, FixedDelay, Handler, JobArgs, JobContext, JobError, JobRow, JobState, NewJob,
    Registry, RetryPolicy, WorkerHandle,
};
use mend_test::env::{attempt_errors, stat, Env};
use mend_test::handler::registry_with;
use mend_test::sync::Log;

mend_test::job_args! {
    /// Fails the first `fail` attempts, then returns the attempt number.
    struct Flaky { fail: i32 } = "flaky"
}

struct FlakyHandler {
    delay: Duration,
}
impl Handler for FlakyHandler {
    type Args = Flaky;
    type Output = i32;
    async fn run(&self, ctx: JobContext, args: Flaky) -> Result<i32, JobError> {
        if ctx.attempt() <= args.fail {
            return Err(JobError::retry(format!("fail #{}", ctx.attempt())));
        }
        Ok(ctx.attempt())
    }
    fn retry_policy(&self) -> Option<Arc<dyn RetryPolicy>> {
        Some(Arc::new(FixedDelay(self.delay)))
    }
}

/// The worker's own default policy in these tests: so long that a job retried by it would
/// never finish within a test, which proves the handler's policy (or `retry_after`) was used.
fn slow_default(c: &mut mend::WorkerConfig) {
    c.retry_policy = Arc::new(FixedDelay(Duration::from_secs(3600)));
}

fn flaky_registry(delay: Duration) -> Registry {
    let mut registry = Registry::new();
    registry.register(FlakyHandler { delay });
    registry
}

/// Runs `job` until it is final on a worker of `registry` with the [`slow_default`] policy.
async fn run(registry: Registry, job: impl JobArgs) -> (JobRow, WorkerHandle) {
    run_new(registry, job.to_new_job().expect("encode args")).await
}

/// [`run`] for a job built by hand.
async fn run_new(registry: Registry, job: NewJob) -> (JobRow, WorkerHandle) {
    let env = Env::new().await;
    env.run_to_end(registry, 2, slow_default, job).await
}

/// Attempt 2 started no earlier than attempt 1's failure plus `delay`.
fn assert_retried_after(job: &JobRow, delay: Duration) {
    let failed_at = job.errors[0].at;
    let second_started = job.attempted_at.expect("attempted_at is set");
    // The store keeps run_at/attempted_at in microseconds while the error time keeps
    // nanoseconds, so allow the sub-microsecond truncation and nothing more.
    let earliest = failed_at + chrono::Duration::from_std(delay).expect("a small delay")
        - chrono::Duration::microseconds(1);
    assert!(
        second_started >= earliest,
        "attempt 2 started at {second_started}, before the failure at {failed_at} + {delay:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_n_times_then_completes_with_errors_in_order() {
    let (job, worker) = run(flaky_registry(Duration::from_millis(10)), Flaky { fail: 3 }).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.attempt, 4, "completed on attempt N+1");
    assert_eq!(
        job.result,
        Some(serde_json::json!(4)),
        "the handler's output is stored"
    );
    assert_eq!(
        job.errors.len(),
        3,
        "one error per failed attempt: {:#?}",
        job.errors
    );
    for (i, e) in job.errors.iter().enumerate() {
        let n = i as i32 + 1;
        assert_eq!(e.attempt, n, "errors are recorded in attempt order");
        assert_eq!(e.kind, ErrorKind::Error);
        assert_eq!(e.message, format!("fail #{n}"));
    }
    assert!(
        job.errors.windows(2).all(|w| w[0].at < w[1].at),
        "error times increase: {:#?}",
        job.errors
    );
    assert!(job.finalized_at.is_some());
    assert_eq!(stat(&worker.stats().retried), 3);
    assert_eq!(stat(&worker.stats().completed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_waits_for_the_handlers_policy_delay() {
    let delay = Duration::from_millis(300);
    let (job, _) = run(flaky_registry(delay), Flaky { fail: 1 }).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.attempt, 2);
    assert_retried_after(&job, delay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaching_max_attempts_discards() {
    let job = Flaky { fail: 100 }
        .to_new_job()
        .unwrap()
        .with_max_attempts(3);
    let (job, worker) = run_new(flaky_registry(Duration::from_millis(10)), job).await;
    assert_eq!(job.state, JobState::Discarded);
    assert_eq!(job.attempt, 3, "ran exactly max_attempts times");
    let error = ErrorKind::Error;
    assert_eq!(attempt_errors(&job), [(1, error), (2, error), (3, error)]);
    assert_eq!(job.errors[2].message, "fail #3");
    assert!(job.finalized_at.is_some());
    assert_eq!(stat(&worker.stats().discarded), 1);
}

mend_test::job_args!(struct Doomed = "doomed");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_error_discards_after_one_attempt() {
    let calls = Log::new();
    let registry = registry_with(calls.clone(), |c, ctx, _: Doomed| async move {
        c.push(ctx.attempt());
        Err::<(), _>(JobError::fatal("the account was deleted"))
    });
    let (job, _) = run(registry, Doomed).await;
    assert_eq!(job.state, JobState::Discarded);
    assert_eq!(job.attempt, 1);
    assert_eq!(
        job.max_attempts,
        mend::job::DEFAULT_MAX_ATTEMPTS,
        "attempts were left, yet no retry"
    );
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].kind, ErrorKind::Error);
    assert!(
        job.errors[0].message.contains("the account was deleted"),
        "{}",
        job.errors[0].message
    );
    assert_eq!(calls.snapshot(), [1]);
}

mend_test::job_args!(struct Sleepy { snoozes: usize } = "sleepy");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snooze_runs_again_without_using_an_attempt() {
    let seen = Log::new();
    let registry = registry_with(seen.clone(), |s, ctx, args: Sleepy| async move {
        s.push(ctx.attempt());
        if s.len() <= args.snoozes {
            return Err(JobError::snooze(Duration::from_millis(30)));
        }
        Ok(())
    });
    let job = Sleepy { snoozes: 2 }
        .to_new_job()
        .unwrap()
        .with_max_attempts(1);
    let (job, worker) = run_new(registry, job).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(
        seen.snapshot(),
        [1, 1, 1],
        "ran three times, each as attempt 1"
    );
    assert_eq!(job.attempt, 1, "snoozes are not counted as attempts");
    assert!(
        job.errors.is_empty(),
        "a snooze is not an error: {:#?}",
        job.errors
    );
    assert_eq!(stat(&worker.stats().snoozed), 2);
}

mend_test::job_args!(struct RateLimited = "rate_limited");

struct RateLimitedHandler;
impl Handler for RateLimitedHandler {
    type Args = RateLimited;
    type Output = ();
    async fn run(&self, ctx: JobContext, _: RateLimited) -> Result<(), JobError> {
        if ctx.attempt() == 1 {
            return Err(JobError::retry_after(
                "429 Too Many Requests",
                Duration::from_millis(200),
            ));
        }
        Ok(())
    }
    fn retry_policy(&self) -> Option<Arc<dyn RetryPolicy>> {
        // Far longer than the test may take: only `retry_after` can bring the job back in time.
        Some(Arc::new(FixedDelay(Duration::from_secs(3600))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_overrides_the_policy() {
    let mut registry = Registry::new();
    registry.register(RateLimitedHandler);
    let job = NewJob::new(RateLimited::KIND, serde_json::json!(null));
    let (job, _) = run_new(registry, job).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.attempt, 2);
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].message, "429 Too Many Requests");
    assert_retried_after(&job, Duration::from_millis(200));
}

mend_test::job_args! {
    /// A retry policy that panics (user code) must not leave the job stuck in `running`: the
    /// attempt is still recorded and the job retried after a fallback delay.
    struct BadPolicyJob = "bad_policy"
}

#[derive(Debug)]
struct PanickingPolicy;
impl RetryPolicy for PanickingPolicy {
    fn backoff(&self, _attempt: i32) -> Duration {
        panic!("this policy is broken");
    }
}

struct BadPolicyHandler;
impl Handler for BadPolicyHandler {
    type Args = BadPolicyJob;
    type Output = ();
    async fn run(&self, _ctx: JobContext, _args: BadPolicyJob) -> Result<(), JobError> {
        Err(JobError::retry("failing on purpose"))
    }
    fn retry_policy(&self) -> Option<Arc<dyn RetryPolicy>> {
        Some(Arc::new(PanickingPolicy))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_retry_policy_does_not_strand_the_job() {
    let env = Env::new().await;
    let mut registry = Registry::new();
    registry.register(BadPolicyHandler);
    let worker = env.worker(registry, 2, |_| {}).await;
    let job = env
        .insert(NewJob::new(BadPolicyJob::KIND, serde_json::json!(null)))
        .await;
    let row = env.wait_for_state(job.id, JobState::Retryable).await;
    assert_eq!(row.errors.len(), 1);
    assert_eq!(row.errors[0].message, "failing on purpose");
    let delay = row.run_at - row.errors[0].at;
    assert!(
        delay >= chrono::Duration::seconds(50),
        "the fallback delay applies: {delay}"
    );
    // The outcome is stored before the completer lets go of the attempt: not at once, soon.
    mend_test::wait::wait_until(
        "the attempt leaves the node",
        mend_test::wait::WAIT,
        || async { worker.in_flight() == 0 },
    )
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
}
