//! The completer: collects attempt outcomes and writes them in batches. Whatever arrived while
//! the previous write was in flight goes into the next one, so batches grow with load and an
//! idle system still writes each outcome at once. A failed write is retried with backoff; the
//! outcomes are kept, never dropped, until shutdown gives up on them (then the jobs stay
//! `running` under our lease and are rescued as lost, which is safe).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{EventOutcome, JobEvent, Pending, Shared};
use crate::store::{CompleteParams, CompleteResult, CompleteWithEffectParams, StoreError};

/// Most outcomes written in one store call.
const MAX_BATCH: usize = 1000;
/// Longest pause between retries of a failed write.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// How soon a completion whose own writes failed to commit is tried again: the failure was
/// the database's or the effect's, not the job's, so it is worth retrying almost at once.
const EFFECT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Write attempts made after shutdown began before giving up on a batch.
const ATTEMPTS_AFTER_STOP: u32 = 5;

pub(super) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            biased;
            p = rx.recv() => p,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        flush(&shared, batch, &stop).await;
    }
    // Shutdown: everything the executors produced is already queued.
    loop {
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            break;
        }
        flush(&shared, batch, &stop).await;
    }
}

/// After this many failed writes of a batch, write its outcomes one at a time to find out
/// whether one of them is what fails.
const SPLIT_AFTER: u32 = 3;

async fn write(shared: &Shared, batch: &[Pending]) -> Result<CompleteResult, StoreError> {
    shared
        .store
        .complete_many(CompleteParams {
            outcomes: batch.iter().map(|p| p.outcome.clone()).collect(),
            now: Utc::now(),
        })
        .await
}

/// Completions that carry the handler's own writes go alone, in their own transaction. If
/// that fails (the effect or the store), nothing was written and the attempt becomes a retry
/// (or a discard when out of attempts), written with the rest of the batch.
async fn write_effects(shared: &Shared, batch: Vec<Pending>) -> Vec<Pending> {
    let mut rest = Vec::with_capacity(batch.len());
    for mut p in batch {
        let Some(effect) = p.effect.take() else {
            rest.push(p);
            continue;
        };
        let now = Utc::now();
        match shared
            .store
            .complete_with_effect(CompleteWithEffectParams {
                outcome: p.outcome.clone(),
                effect,
                now,
            })
            .await
        {
            Ok(applied) => {
                let id = p.outcome.fence.id;
                let result = if applied {
                    CompleteResult {
                        applied: vec![id],
                        fenced: vec![],
                    }
                } else {
                    CompleteResult {
                        applied: vec![],
                        fenced: vec![id],
                    }
                };
                finish(shared, vec![p], result);
            }
            Err(e) => {
                tracing::warn!(id = %p.outcome.fence.id, error = %e, "the job's own writes did not commit with its completion; retrying the job");
                let ending = crate::settle::Ending::Failed {
                    message: format!(
                        "the job's own writes did not commit with its completion (nothing was written): {e}"
                    ),
                    retry_after: Some(EFFECT_RETRY_AFTER),
                };
                let rules = crate::settle::Rules {
                    now,
                    backoff: &|n| shared.config.retry_policy.backoff(n),
                    quarantine_after_lost: shared.config.quarantine_after_lost,
                };
                let settled = crate::settle::settle(ending, &p.facts, &[], &rules);
                let Some(kind) = settled.outcome else {
                    continue;
                };
                p.outcome.kind = kind;
                rest.push(p);
            }
        }
    }
    rest
}

async fn flush(shared: &Shared, batch: Vec<Pending>, stop: &CancellationToken) {
    let batch = if batch.iter().any(|p| p.effect.is_some()) {
        write_effects(shared, batch).await
    } else {
        batch
    };
    if batch.is_empty() {
        return;
    }
    let mut delay = Duration::from_millis(50);
    let mut failures = 0;
    loop {
        let e = match write(shared, &batch).await {
            Ok(r) => return finish(shared, batch, r),
            Err(e) => e,
        };
        failures += 1;
        if failures >= SPLIT_AFTER && batch.len() > 1 {
            match one_by_one(shared, batch).await {
                Some(rest) => {
                    // Every single write failed as well: the store is down, not one row bad.
                    tracing::warn!(error = %e, jobs = rest.len(), "the store keeps failing; keeping the outcomes and retrying");
                    return flush_systemic(shared, rest, stop, delay).await;
                }
                None => return,
            }
        }
        if stop.is_cancelled() && failures >= ATTEMPTS_AFTER_STOP {
            give_up(shared, &batch, &e);
            return;
        }
        tracing::warn!(error = %e, jobs = batch.len(), retry_in = ?delay, "writing outcomes failed; keeping them and retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

/// Retries a batch that failed as a whole and one by one: only a recovering store helps.
async fn flush_systemic(
    shared: &Shared,
    batch: Vec<Pending>,
    stop: &CancellationToken,
    mut delay: Duration,
) {
    let mut failures = 0;
    loop {
        tokio::time::sleep(delay).await;
        match write(shared, &batch).await {
            Ok(r) => return finish(shared, batch, r),
            Err(e) => {
                failures += 1;
                if stop.is_cancelled() && failures >= ATTEMPTS_AFTER_STOP {
                    give_up(shared, &batch, &e);
                    return;
                }
                tracing::warn!(error = %e, jobs = batch.len(), retry_in = ?delay, "writing outcomes failed; keeping them and retrying");
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

/// Writes each outcome alone. If some land and others fail, the failing ones are poison (a
/// row the store cannot update): they are given up so they cannot block every later outcome.
/// Returns the outcomes back when every single write failed.
async fn one_by_one(shared: &Shared, batch: Vec<Pending>) -> Option<Vec<Pending>> {
    let total = batch.len();
    let mut failed = Vec::new();
    for p in batch {
        match write(shared, std::slice::from_ref(&p)).await {
            Ok(r) => finish(shared, vec![p], r),
            Err(e) => failed.push((p, e)),
        }
    }
    if failed.len() == total {
        return Some(failed.into_iter().map(|(p, _)| p).collect());
    }
    for (p, e) in failed {
        give_up(shared, std::slice::from_ref(&p), &e);
    }
    None
}

/// Stops tracking outcomes that cannot be written: their leases lapse and the rescuer hands
/// the jobs back (as `lost`), which is safe; keeping them would block the completer forever.
fn give_up(shared: &Shared, batch: &[Pending], e: &StoreError) {
    tracing::error!(error = %e, jobs = batch.len(), ids = ?batch.iter().map(|p| p.outcome.fence.id).collect::<Vec<_>>(), "giving up on writing these outcomes; the jobs will be rescued as lost and retried");
    let mut inflight = shared.inflight();
    for p in batch {
        inflight.remove(&(p.outcome.fence.id, p.outcome.fence.attempt));
    }
}

fn finish(shared: &Shared, batch: Vec<Pending>, result: CompleteResult) {
    {
        let mut inflight = shared.inflight();
        for p in &batch {
            let key = (p.outcome.fence.id, p.outcome.fence.attempt);
            // A snooze or release hands the attempt number back, so the same key may already
            // belong to a new attempt of this job that started meanwhile: leave that one.
            if inflight
                .get(&key)
                .is_some_and(|f| f.ended.load(Ordering::Acquire))
            {
                inflight.remove(&key);
            }
        }
    }
    let fenced: std::collections::HashSet<_> = result.fenced.iter().copied().collect();
    let stats = &shared.stats;
    stats
        .fenced
        .fetch_add(fenced.len() as u64, Ordering::Relaxed);
    let publish = shared.events.receiver_count() > 0;
    let ended_at = Utc::now();
    let plan = shared.plan();
    for p in &batch {
        if fenced.contains(&p.outcome.fence.id) {
            continue;
        }
        if let Some(ended) = crate::stats::Ended::of(&p.outcome.kind) {
            if let Some(v) = &p.version {
                shared
                    .versions
                    .record(&p.kind, v, ended, Some(p.timing.run));
                if plan.sampled.contains(&p.kind) {
                    shared.samples.record(&p.kind, v, ended, Some(p.timing.run));
                }
            }
            shared.history.record(
                &p.queue,
                &p.kind,
                ended_at,
                ended,
                p.timing.wait,
                Some(p.timing.run),
            );
        }
    }
    for p in batch {
        let was_fenced = fenced.contains(&p.outcome.fence.id);
        let short = EventOutcome::from(&p.outcome.kind);
        let error = p.outcome.kind.error().cloned();
        if was_fenced {
            tracing::warn!(id = %p.outcome.fence.id, attempt = p.outcome.fence.attempt, outcome = ?short, "outcome refused: this worker no longer holds the job (rescued or cancelled elsewhere)");
        } else {
            let counter = match short {
                EventOutcome::Completed => &stats.completed,
                EventOutcome::Retried => &stats.retried,
                EventOutcome::Discarded => &stats.discarded,
                EventOutcome::Cancelled => &stats.cancelled,
                EventOutcome::Snoozed => &stats.snoozed,
                EventOutcome::Released => &stats.released,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if publish {
            let _ = shared.events.send(JobEvent {
                id: p.outcome.fence.id,
                kind: p.kind,
                queue: p.queue,
                attempt: p.outcome.fence.attempt,
                outcome: short,
                error,
                cleanups: p.outcome.cleanups,
                fenced: was_fenced,
            });
        }
    }
}
