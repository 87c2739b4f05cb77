//! The pruner: deletes completed, cancelled and discarded jobs once they are older than the
//! retention, in bounded batches so no transaction holds the write lock for long. Jobs that
//! are still waiting or running are never touched.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::{PruneParams, Result, Store};

/// How long finished jobs are kept by default: a week is long enough to look into last
/// week's failures, short enough that the table does not grow without bound.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often the pruner runs.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Jobs deleted per transaction.
pub const PRUNE_BATCH: usize = 1000;

/// Most batches per pass: a large backlog is worked off over several passes instead of one
/// long burst of writes.
const MAX_BATCHES_PER_PASS: usize = 100;

/// One pass: deletes finished jobs finalized before `now - retention`. Returns how many went.
pub async fn prune_once(store: &dyn Store, now: DateTime<Utc>, retention: Duration) -> Result<u64> {
    let keep = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let cutoff = now
        .checked_sub_signed(keep)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut total = 0;
    for _ in 0..MAX_BATCHES_PER_PASS {
        let n = store
            .prune(PruneParams {
                finalized_before: cutoff,
                limit: PRUNE_BATCH,
            })
            .await?;
        total += n;
        if n < PRUNE_BATCH as u64 {
            break;
        }
        // Let other writers (claims, outcomes) in between batches.
        tokio::task::yield_now().await;
    }
    if total > 0 {
        tracing::info!(pruned = total, %cutoff, "pruned finished jobs");
    }
    Ok(total)
}
