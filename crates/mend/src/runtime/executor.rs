//! The executor: runs one attempt with panic isolation, a timeout and a cancellation token,
//! runs its in-memory cleanups LIFO however it ended, and hands the outcome to the completer.
//! It never writes to the store itself.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::live::{Live, Step};
use super::{request_stop, stop_of, InFlight, Pending, Shared, Timing};

use crate::cleanup::{AttemptExit, CleanupOutcome, CleanupReport};
use crate::handler::{JobContext, JobError};
use crate::job::{bound_message, JobRow};
use crate::panic::CatchPanic;
use crate::settle::{self, Attempt, Durable, Ending, Rules, Stop};
use crate::store::{Fence, Outcome, OutcomeKind};

/// If the executor itself panics (outside the handler's guard), the attempt must not stay in
/// the in-flight map: its lease would be extended forever and the job never rescued. Dropping
/// the entry lets the lease lapse, and the rescuer hands the job back as `lost`.
struct Untrack<'a> {
    shared: &'a Shared,
    key: (uuid::Uuid, i32),
    armed: bool,
}

impl Drop for Untrack<'_> {
    fn drop(&mut self) {
        if self.armed {
            tracing::error!(id = %self.key.0, attempt = self.key.1, "internal error: the executor stopped unexpectedly; the job will be rescued when its lease expires");
            self.shared.inflight().remove(&self.key);
        }
    }
}

/// Runs `f` (user code: a handler's policy methods) and falls back to `default` if it panics.
fn guarded<T>(what: &str, default: T, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!("{what} panicked; using the default");
        default
    })
}

/// Longest a job claimed ahead waits for a slot before it goes back to the queue unstarted.
/// Claiming ahead is sized to what runs in two round trips, so only a change of pace (jobs that
/// suddenly take long) makes one wait this long; handing it back lets an idle node take it.
const AHEAD_WAIT_LIMIT: Duration = Duration::from_secs(1);

/// A claimed job's places in its queue: its claim's (held until its outcome is queued) and a
/// running slot, taken here, at once or, for a job claimed ahead, once one frees up.
pub(super) struct Slot {
    /// Its place among the queue's claimed jobs.
    pub(super) _claim: OwnedSemaphorePermit,
    /// The queue's running slots.
    pub(super) run: Arc<Semaphore>,
    /// The fetchers' stop: a job still waiting for a slot then goes back unstarted.
    pub(super) stop: CancellationToken,
    /// Claimed on a rollout's canary side, by the routes of its claim: a cut-off while it
    /// runs does not make a failed canary attempt a stable one, and its retry must wait for
    /// the guard to hand it back.
    pub(super) canary: bool,
}

/// A job claimed ahead goes back unstarted: at shutdown, or after [`AHEAD_WAIT_LIMIT`].
struct GoBack {
    shutdown: bool,
}

/// A running slot for the attempt: at once, or once one frees up for a job claimed ahead.
/// `None` when a cancel or a lost lease stopped it while it waited (it then settles without
/// running its handler).
async fn take_slot(
    slot: &Slot,
    token: &CancellationToken,
    live: &Live,
) -> Result<Option<OwnedSemaphorePermit>, GoBack> {
    if let Ok(p) = slot.run.clone().try_acquire_owned() {
        return Ok(Some(p));
    }
    live.set(Step::Waiting);
    tokio::select! {
        biased;
        _ = token.cancelled() => Ok(None),
        _ = slot.stop.cancelled() => Err(GoBack { shutdown: true }),
        p = slot.run.clone().acquire_owned() => Ok(p.ok()),
        // The queue's pace changed (its jobs got slow): other nodes may run it sooner.
        _ = tokio::time::sleep(AHEAD_WAIT_LIMIT) => Err(GoBack { shutdown: false }),
    }
}

pub(super) async fn execute(shared: Arc<Shared>, mut job: JobRow, slot: Slot) {
    // A child of the worker's stop token: a shutdown past its deadline reaches attempts that
    // were spawned but had not yet registered themselves.
    let token = shared.hard_stop.child_token();
    let reason = Arc::new(AtomicU8::new(0));
    let attempt_over = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Live::new(&job));
    shared.inflight().insert(
        (job.id, job.attempt),
        InFlight {
            attempt: job.attempt,
            live: live.clone(),
            token: token.clone(),
            reason: reason.clone(),
            ended: attempt_over.clone(),
        },
    );
    let mut untrack = Untrack {
        shared: &shared,
        key: (job.id, job.attempt),
        armed: true,
    };
    let running = match take_slot(&slot, &token, &live).await {
        Ok(running) => running,
        Err(GoBack { shutdown }) => {
            // Over, so a drain deadline does not count it again among the released.
            attempt_over.store(true, Ordering::Release);
            untrack.armed = false;
            if shutdown {
                shared.released_unstarted.fetch_add(1, Ordering::AcqRel);
            }
            release_unstarted(&shared, job);
            return;
        }
    };
    let due = job.run_at.max(job.created_at);
    let waited = (Utc::now() - due).to_std().ok();
    // A job stopped while it waited for a slot never started.
    if running.is_some() {
        shared.stats.started.fetch_add(1, Ordering::Relaxed);
        if let Some(waited) = waited {
            shared.stats.enqueue_to_start.observe(waited);
        }
    }
    let started = std::time::Instant::now();
    // A cancel request may have landed between the claim and now: then the handler never runs.
    if job.cancel_requested {
        shared.stop_attempt(job.id, job.attempt, Stop::Cancel);
    }

    let handler = shared
        .registry
        .handler_for(&job.kind, job.version.as_deref())
        .cloned();
    let kind_timeout = handler
        .as_ref()
        .and_then(|h| guarded("Handler::timeout", None, || h.timeout()));
    let timeout = job
        .timeout_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map(Duration::from_millis)
        .or(kind_timeout)
        .unwrap_or(shared.config.default_timeout);
    // The handler gets a child token: cancelling it from inside the handler does not end the
    // attempt as "cancelled", while every stop of the attempt reaches it.
    let ctx = JobContext::new(
        job.id,
        job.queue.clone(),
        job.kind.clone(),
        (job.attempt, job.max_attempts),
        token.child_token(),
        Some((shared.store.clone(), shared.node.id.clone())),
        job.checkpoint.take(),
    );
    let args = std::mem::take(&mut job.args);

    // Durable cleanups a lost attempt left behind run before this attempt does anything; if
    // the rescue kept the job alive only for them, the job stops here.
    let pending = std::mem::take(&mut job.pending_cleanups);
    let facts = Attempt {
        has_pending_cleanups: !pending.is_empty(),
        ..Attempt::of(&job)
    };
    let mut before: Option<Ending> = None;
    if running.is_none() && stop_of(&reason) == Some(Stop::LeaseLost) {
        // Its lease was lost while it waited for a slot: the job is another node's now, and
        // so are its lost attempt's cleanups.
        before = Some(Ending::Stopped(Stop::LeaseLost));
    } else if !pending.is_empty() {
        before = match run_durable(&shared, &job, pending, &|name| {
            live.set(Step::Recovering(name.to_owned()))
        })
        .await
        {
            Err(message) => Some(Ending::Fatal { message }),
            Ok(()) => settle::after_recovery(&facts, shared.config.quarantine_after_lost),
        };
    }

    live.set(Step::Handler);
    let ended = run_handler(
        &shared, &ctx, handler, args, timeout, &token, &reason, before,
    )
    .await;
    // The attempt is over however it ended: work spawned on its token stops too.
    token.cancel();
    let ran = started.elapsed();
    shared.stats.run_time.observe(ran);
    count(&shared, &job, &ended);
    let ended = promote_staged_files(&ctx, &reason, ended).await;
    // The attempt ended now: its error and its next run are timed from here, not from after
    // its cleanups.
    let now = Utc::now();
    let (ended, cleanups) = run_cleanups(&shared, &ctx, &job, ended, &live).await;
    live.set(Step::Reporting);

    // The handler's own policy is looked up only when a delay is needed (user code: a
    // panicking policy should not log on every attempt).
    let backoff = |n: i32| {
        let own = shared
            .registry
            .handler_for(&job.kind, job.version.as_deref())
            .and_then(|h| guarded("Handler::retry_policy", None, || h.retry_policy()));
        match own {
            Some(policy) => policy.backoff(n),
            None => shared.config.retry_policy.backoff(n),
        }
    };
    let rules = Rules {
        now,
        backoff: &backoff,
        quarantine_after_lost: shared.config.quarantine_after_lost,
    };
    let mut outcome = settle::settle(ended, &facts, &cleanups, &rules).outcome;
    if let Some(error) = outcome.as_mut().and_then(OutcomeKind::error_mut) {
        error.version.clone_from(&job.version);
    }
    if let Some(o) = outcome.as_mut() {
        crate::rollout::hold_canary_retry(slot.canary, o, now);
    }

    attempt_over.store(true, Ordering::Release);
    untrack.armed = false;
    drop(running);
    drop(slot);
    let timing = Timing {
        wait: waited,
        run: ran,
    };
    report(&shared, &ctx, job, facts, outcome, cleanups, timing);
}

/// Runs the handler under its timeout and the attempt's token and says how it ended. `before`
/// ends the attempt without calling the handler (a lost attempt's cleanups decided so).
#[expect(
    clippy::too_many_arguments,
    reason = "the pieces of one attempt, each owned by execute"
)]
async fn run_handler(
    shared: &Shared,
    ctx: &JobContext,
    handler: Option<Arc<dyn crate::handler::ErasedHandler>>,
    args: serde_json::Value,
    timeout: Duration,
    token: &CancellationToken,
    reason: &AtomicU8,
    before: Option<Ending>,
) -> Ending {
    let call_ctx = ctx.clone();
    let kind = ctx.kind().to_owned();
    // The handler is called inside the panic guard: building its future runs user code too.
    let call = CatchPanic::new(Box::pin(async move {
        match handler {
            Some(h) => h.call(call_ctx, args).await,
            None => Err(JobError::retry(format!(
                "no handler registered for kind `{kind}` on this worker; another worker may handle it"
            ))),
        }
    }));
    let stopped = || Ending::Stopped(stop_of(reason).unwrap_or(Stop::Cancel));
    let ended = if let Some(ending) = before {
        drop(call);
        ending
    } else if token.is_cancelled() {
        drop(call);
        stopped()
    } else {
        tokio::select! {
            biased;
            r = tokio::time::timeout(timeout, call) => match r {
                Ok(Ok(Ok(result))) => Ending::Returned { result },
                Ok(Ok(Err(e))) => Ending::from(e),
                Ok(Err(panic)) => Ending::Panicked { message: panic.to_string() },
                Err(_) => Ending::TimedOut { after: timeout },
            },
            _ = token.cancelled() => stopped(),
        }
    };
    // A stop that came from the worker's shutdown token (not through the in-flight entry).
    if shared.hard_stop.is_cancelled() {
        request_stop(reason, Stop::Shutdown);
    }
    // A stop request (cancel, shutdown, lost lease) wins over how the handler ended, unless
    // the handler finished its work: a cooperative handler that returns an error because it
    // saw the token was stopped, not failed.
    match (ended, stop_of(reason)) {
        (ended @ Ending::Returned { .. }, _) | (ended, None) => ended,
        (_, Some(stop)) => Ending::Stopped(stop),
    }
}

/// The worker's counters for how the handler ended.
fn count(shared: &Shared, job: &JobRow, ended: &Ending) {
    if ended.is_handler_error() {
        shared.stats.errors.fetch_add(1, Ordering::Relaxed);
    }
    match ended {
        Ending::Panicked { message } => {
            shared.stats.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(id = %job.id, kind = %job.kind, attempt = job.attempt, %message, "handler panicked; the worker carries on");
        }
        Ending::TimedOut { .. } => {
            shared.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// A completed attempt's staged files move into place before the completion is written; if
/// that fails, the attempt failed.
async fn promote_staged_files(ctx: &JobContext, reason: &AtomicU8, ended: Ending) -> Ending {
    let Ending::Returned { result } = ended else {
        return ended;
    };
    let staged = ctx.staged_files();
    if staged.is_empty() {
        Ending::Returned { result }
    } else if stop_of(reason) == Some(Stop::LeaseLost) {
        // The job is another worker's now: its attempt writes the file; moving ours into
        // place could overwrite what that attempt completes with.
        Ending::Stopped(Stop::LeaseLost)
    } else {
        match crate::cleanup::promote_staged(staged).await {
            Ok(()) => Ending::Returned { result },
            Err(message) => Ending::Failed {
                message,
                retry_after: None,
            },
        }
    }
}

/// Runs the attempt's in-memory cleanups (LIFO, told how it ended), then its durable ones when
/// the table says so; a durable cleanup that keeps failing stops the job.
async fn run_cleanups(
    shared: &Shared,
    ctx: &JobContext,
    job: &JobRow,
    ended: Ending,
    live: &Live,
) -> (Ending, Vec<CleanupReport>) {
    let exit = ended.exit().unwrap_or(AttemptExit::LeaseLost);
    let cleanups = if ctx.defers().is_empty() {
        Vec::new()
    } else {
        ctx.defers()
            .run_all(&exit, shared.config.cleanup_timeout, &|name| {
                live.set(Step::Cleanup(name.to_owned()))
            })
            .await
    };
    for c in &cleanups {
        let counter = match c.outcome {
            CleanupOutcome::Ok => &shared.stats.cleanups_ok,
            CleanupOutcome::Panicked { .. } => &shared.stats.cleanups_panicked,
            CleanupOutcome::TimedOut => &shared.stats.cleanups_timed_out,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    if ended.durable() == Durable::Run {
        let own = ctx.durable_cleanups();
        if !own.is_empty() {
            let on_start = |name: &str| live.set(Step::DurableCleanup(name.to_owned()));
            if let Err(message) = run_durable(shared, job, own, &on_start).await {
                return (Ending::Fatal { message }, cleanups);
            }
        }
    }
    (ended, cleanups)
}

/// Hands the settled outcome to the completer (nothing to write when the lease was lost).
fn report(
    shared: &Shared,
    ctx: &JobContext,
    job: JobRow,
    facts: Attempt,
    outcome: Option<OutcomeKind>,
    cleanups: Vec<CleanupReport>,
    timing: Timing,
) {
    let Some(kind) = outcome else {
        // Lease lost: the job belongs to someone else now; there is nothing to write.
        shared.inflight().remove(&(job.id, job.attempt));
        tracing::warn!(id = %job.id, "attempt stopped: this worker lost the job's lease");
        return;
    };
    let effect = if matches!(kind, OutcomeKind::Completed { .. }) {
        ctx.take_effect()
    } else {
        None
    };
    send(shared, job, facts, kind, cleanups, effect, timing);
}

/// A job claimed ahead that never got a slot (before shutdown, or within
/// [`AHEAD_WAIT_LIMIT`]) goes back to `available` without using an attempt, as a running one
/// cancelled by shutdown does (nothing of it ran).
fn release_unstarted(shared: &Shared, job: JobRow) {
    let facts = Attempt::of(&job);
    let timing = Timing {
        wait: None,
        run: Duration::ZERO,
    };
    send(
        shared,
        job,
        facts,
        OutcomeKind::Release,
        Vec::new(),
        None,
        timing,
    );
}

/// Queues an outcome for the completer.
fn send(
    shared: &Shared,
    job: JobRow,
    facts: Attempt,
    kind: OutcomeKind,
    cleanups: Vec<CleanupReport>,
    effect: Option<crate::store::TxEffect>,
    timing: Timing,
) {
    let sent = shared.outcomes.send(Pending {
        outcome: Outcome {
            fence: Fence::new(job.id, job.attempt, shared.node.id.clone()),
            kind,
            cleanups,
        },
        kind: job.kind,
        queue: job.queue,
        version: job.version,
        _backlog: shared.backlog.clone().try_acquire_owned().ok(),
        facts,
        effect,
        timing,
    });
    if let Err(unsent) = sent {
        // Only after the completer is gone (a bug or a panic there): the lease lapses and
        // the job is rescued, so say so instead of dropping it silently.
        let id = unsent.0.outcome.fence.id;
        tracing::error!(%id, "the completer is gone; this outcome is not saved and the job will be rescued");
        shared.inflight().remove(&(id, facts.attempt));
    }
}

/// Tries per durable cleanup before the job is stopped with its error.
const CLEANUP_TRIES: u32 = 3;

/// Runs durable cleanups last-registered first, each up to [`CLEANUP_TRIES`] times with
/// backoff, and records each run with the store (which removes it from the job). One that
/// keeps failing does not stop the others (DESIGN: the remaining cleanups still run); it
/// stays pending, and the returned error names every one that failed.
async fn run_durable(
    shared: &Shared,
    job: &JobRow,
    mut list: Vec<crate::cleanup::DurableCleanup>,
    on_start: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), String> {
    list.sort_by_key(|c| std::cmp::Reverse(c.seq));
    let mut failed: Vec<String> = Vec::new();
    for c in list {
        let Some(action) = shared.registry.cleanup(&c.name).cloned() else {
            failed.push(format!(
                "durable cleanup `{}` is not registered on this worker (register it with Registry::register_cleanup on every worker of the queue)",
                c.name
            ));
            continue;
        };
        on_start(&c.name);
        let started = std::time::Instant::now();
        // Its own span under the attempt's, like the in-memory ones.
        let span = tracing::info_span!(
            "cleanup",
            cleanup = %c.name,
            durable = true,
            written_by_attempt = c.attempt,
            outcome = tracing::field::Empty,
            tries = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let mut last = String::new();
        let mut ran = false;
        let mut tries = 0;
        for try_no in 0..CLEANUP_TRIES {
            tries = try_no + 1;
            if try_no > 0 {
                tokio::time::sleep(Duration::from_millis(100 * 4u64.pow(try_no - 1))).await;
            }
            let run = CatchPanic::new(action(c.args.clone()));
            let run = tracing::Instrument::instrument(run, span.clone());
            match tokio::time::timeout(shared.config.cleanup_timeout, run).await {
                Ok(Ok(Ok(()))) => {
                    ran = true;
                    break;
                }
                Ok(Ok(Err(e))) => last = e,
                Ok(Err(panic)) => last = format!("panicked: {panic}"),
                Err(_) => last = format!("timed out after {:?}", shared.config.cleanup_timeout),
            }
            tracing::warn!(id = %job.id, cleanup = %c.name, try_no = try_no + 1, error = %last, "durable cleanup failed");
        }
        span.record("outcome", if ran { "ok" } else { "failed" });
        span.record("tries", tries);
        span.record(
            "duration_ms",
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
        if !ran {
            crate::maintenance::history::cleanup_failed(
                shared.store.as_ref(),
                &shared.node.id,
                job,
                &c.name,
                tries,
                &last,
            )
            .await;
            failed.push(format!(
                "durable cleanup `{}` (written down by attempt {}) failed {CLEANUP_TRIES} times: {last}",
                c.name, c.attempt
            ));
            continue;
        }
        shared.stats.cleanups_ok.fetch_add(1, Ordering::Relaxed);
        let event = crate::job::TimelineEvent::new(Utc::now(), "cleanup")
            .attempt(job.attempt)
            .node(shared.node.id.clone())
            .detail(format!(
                "durable cleanup `{}` of attempt {} ran ({} ms)",
                c.name,
                c.attempt,
                started.elapsed().as_millis()
            ));
        let done = shared
            .store
            .cleanup_done(crate::store::CleanupDoneParams {
                fence: Fence::new(job.id, job.attempt, shared.node.id.clone()),
                seq: c.seq,
                event,
            })
            .await;
        match done {
            Ok(true) => {}
            Ok(false) => return Err("this attempt no longer holds the job".to_owned()),
            // It ran; it stays written down and runs again later (cleanups are idempotent).
            Err(e) => {
                tracing::warn!(id = %job.id, cleanup = %c.name, error = %e, "recording a durable cleanup's run failed; it will run again")
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(bound_message(format!(
            "cleanup failed: {}. The job is stopped so no cleanup is lost; fix them, then retry the job",
            failed.join("; ")
        )))
    }
}
