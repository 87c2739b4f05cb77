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
use crate::store::{CompleteParams, OutcomeKind};

/// Most outcomes written in one store call.
const MAX_BATCH: usize = 1000;
/// Longest pause between retries of a failed write.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
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

async fn flush(shared: &Shared, batch: Vec<Pending>, stop: &CancellationToken) {
    let outcomes: Vec<_> = batch.iter().map(|p| p.outcome.clone()).collect();
    let mut delay = Duration::from_millis(50);
    let mut attempts_after_stop = 0;
    let result = loop {
        match shared
            .store
            .complete_many(CompleteParams {
                outcomes: outcomes.clone(),
                now: Utc::now(),
            })
            .await
        {
            Ok(r) => break Some(r),
            Err(e) => {
                if stop.is_cancelled() {
                    attempts_after_stop += 1;
                    if attempts_after_stop >= ATTEMPTS_AFTER_STOP {
                        tracing::error!(error = %e, jobs = outcomes.len(), "giving up on writing outcomes at shutdown; these jobs will be rescued as lost and retried");
                        break None;
                    }
                }
                tracing::warn!(error = %e, jobs = outcomes.len(), retry_in = ?delay, "writing outcomes failed; keeping them and retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    };
    let Some(result) = result else { return };

    {
        let mut inflight = shared.inflight();
        for p in &batch {
            inflight.remove(&(p.outcome.id, p.outcome.attempt));
        }
    }
    let fenced: std::collections::HashSet<_> = result.fenced.iter().copied().collect();
    let stats = &shared.stats;
    stats
        .fenced
        .fetch_add(fenced.len() as u64, Ordering::Relaxed);
    let publish = shared.events.receiver_count() > 0;
    for p in batch {
        let was_fenced = fenced.contains(&p.outcome.id);
        let (short, error) = match &p.outcome.kind {
            OutcomeKind::Completed { .. } => (EventOutcome::Completed, None),
            OutcomeKind::Retry { error, .. } => (EventOutcome::Retried, Some(error.clone())),
            OutcomeKind::Discard { error } => (EventOutcome::Discarded, Some(error.clone())),
            OutcomeKind::Cancelled { error } => (EventOutcome::Cancelled, Some(error.clone())),
            OutcomeKind::Snooze { .. } => (EventOutcome::Snoozed, None),
            OutcomeKind::Release => (EventOutcome::Released, None),
        };
        if was_fenced {
            tracing::warn!(id = %p.outcome.id, attempt = p.outcome.attempt, outcome = ?short, "outcome refused: this worker no longer holds the job (rescued or cancelled elsewhere)");
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
                id: p.outcome.id,
                kind: p.kind,
                queue: p.queue,
                attempt: p.outcome.attempt,
                outcome: short,
                error,
                cleanups: p.cleanups,
                fenced: was_fenced,
            });
        }
    }
}
