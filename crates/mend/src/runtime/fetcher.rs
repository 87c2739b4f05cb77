//! The fetcher: one per queue. It waits for free slots, claims as many jobs as there are free
//! slots in one store call, and spawns an executor for each. It sleeps on the store's wake-up
//! (jobs inserted) or the poll interval, whichever comes first.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{executor, Shared, MAX_CLAIM_BATCH};
use crate::store::ClaimParams;

/// While the queue is busy (the last claim filled every free slot), wait for half the slots to
/// free up, or at most this long, before claiming, so one claim takes many jobs instead of one
/// claim per finished job. It never delays an idle queue: a claim that came back short means
/// the next job starts as soon as it is enqueued.
const BUSY_FETCH_COOLDOWN: Duration = Duration::from_millis(1);

/// Longest pause between claim attempts while the store keeps failing.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

pub(super) async fn run(
    shared: Arc<Shared>,
    queue: String,
    concurrency: usize,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    let wake = shared.store.wakeup();
    let mut error_backoff = Duration::from_millis(50);
    let mut busy = false;
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        if busy {
            // Wait for half the slots to free up (or the cooldown), then claim them together.
            let half = u32::try_from(concurrency / 2)
                .unwrap_or(u32::MAX)
                .saturating_sub(1);
            if half > 0 {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    p = slots.acquire_many(half) => drop(p),
                    _ = tokio::time::sleep(BUSY_FETCH_COOLDOWN) => {}
                }
            }
        }
        // Backpressure: while the completer is far behind, claim nothing more.
        if shared.backlog.available_permits() == 0 {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                p = shared.backlog.acquire() => drop(p),
            }
        }
        let mut permits = vec![first];
        while permits.len() < MAX_CLAIM_BATCH {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        // Arm the wake-up before claiming so an insert that lands during the claim is not missed.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let wanted = permits.len();
        let plan = shared.plan();
        if plan.claims_nothing() {
            // Every kind here is pinned to versions this node does not serve.
            drop(permits);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(shared.config.poll_interval) => {}
            }
            continue;
        }
        let claimed = shared
            .store
            .claim(ClaimParams {
                queue: queue.clone(),
                kinds: plan.kinds.clone(),
                limit: wanted,
                lease_owner: shared.node.id.clone(),
                lease_duration: shared.config.lease_duration,
                now: Utc::now(),
                routes: plan.routes.clone(),
            })
            .await;
        match claimed {
            Ok(jobs) => {
                error_backoff = Duration::from_millis(50);
                let got = jobs.len();
                busy = got == wanted;
                for job in jobs {
                    let Some(permit) = permits.pop() else { break };
                    // The enqueue's trace context: the attempt joins that trace and links to the enqueue.
                    let span = tracing::info_span!("job", id = %job.id, kind = %job.kind, queue = %job.queue, attempt = job.attempt, node = %shared.node.id, traceparent = job.trace_parent.as_deref());
                    crate::trace::continue_trace(&span, job.trace_parent.as_deref(), true);
                    shared
                        .tracker
                        .spawn(executor::execute(shared.clone(), job, permit).instrument(span));
                }
                drop(permits);
                if got < wanted {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(shared.config.poll_interval) => {}
                    }
                }
            }
            Err(e) => {
                busy = false;
                drop(permits);
                tracing::warn!(queue = %queue, error = %e, retry_in = ?error_backoff, "claim failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(error_backoff) => {}
                }
                error_backoff = (error_backoff * 2).min(MAX_ERROR_BACKOFF);
            }
        }
    }
}
