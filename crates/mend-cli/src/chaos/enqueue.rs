//! The drill jobs' arrival: enqueued in batches spread over the drill, through the very faults
//! the drill inflicts (a cut connection or a restarting database must not lose a batch, nor
//! insert it twice).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mend::store::Store;
use mend::NewJob;

use super::watch::RESCUE_LIMIT;
use crate::drill::{self, DrillArgs};

/// Attempts a drill job has: far more than its drawn faults, so only a bug discards one.
pub(super) const MAX_ATTEMPTS: i32 = 25;

/// Enqueues the jobs in batches spread over `over`; returns their ids. With `twin`, every
/// other job is of the drill's twin kind (the one `--good-canary` rolls out).
pub(super) async fn enqueue(
    store: Arc<dyn Store>,
    queue: String,
    timeout: Duration,
    jobs: Vec<DrillArgs>,
    over: Duration,
    twin: bool,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    const TICK: Duration = Duration::from_millis(50);
    let ticks = (over.as_millis() / TICK.as_millis()).max(1) as usize;
    let per_tick = jobs.len().div_ceil(ticks).max(1);
    let start = Instant::now();
    let mut ids = Vec::with_capacity(jobs.len());
    let total = jobs.len();
    for (i, chunk) in jobs.chunks(per_tick).enumerate() {
        // Arrivals spread evenly over the whole window, so faults late in it still hit work.
        let due = over.mul_f64((i * per_tick) as f64 / total as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let mut batch = Vec::with_capacity(chunk.len());
        for (j, args) in chunk.iter().enumerate() {
            let kind = if twin && (i * per_tick + j) % 2 == 1 {
                drill::TWIN_KIND
            } else {
                drill::KIND
            };
            batch.push(
                NewJob::new(kind, serde_json::to_value(args)?)
                    .with_queue(queue.clone())
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_timeout(timeout),
            );
        }
        ids.extend(batch.iter().map(|j| j.id));
        insert_surely(store.as_ref(), batch).await?;
    }
    Ok(ids)
}

/// Inserts a batch through connection cuts and database restarts. A failed insert may still
/// have committed (the reply was lost), so a retry sends only the jobs that are not there.
async fn insert_surely(store: &dyn Store, mut batch: Vec<NewJob>) -> anyhow::Result<()> {
    let give_up = Instant::now() + RESCUE_LIMIT;
    loop {
        match store.insert_many(batch.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > give_up => {
                return Err(e).context("enqueueing drill jobs kept failing for 2 minutes")
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut missing = Vec::with_capacity(batch.len());
                for job in batch {
                    match store.get(job.id).await {
                        Ok(Some(_)) => {}
                        _ => missing.push(job),
                    }
                }
                batch = missing;
                if batch.is_empty() {
                    return Ok(());
                }
            }
        }
    }
}
