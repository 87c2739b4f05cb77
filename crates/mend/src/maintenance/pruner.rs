//! The pruner: deletes completed, cancelled and discarded jobs once they are older than the
//! retention, in bounded batches so no transaction holds the write lock for long. Jobs that
//! are still waiting or running are never touched. It also deletes rate-limit buckets that
//! have filled up again (the same as no bucket), and the dashboard's per-minute history and
//! events past their own retention (see [`crate::stats`]), and audit rows past theirs
//! (see [`crate::audit`]).

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

/// Full rate-limit buckets deleted per pass (a bucket per key of a per-key rate limit; the
/// rest wait for the next pass).
pub const BUCKET_PRUNE_BATCH: usize = 10_000;

/// Longest a pass keeps deleting: a large backlog is worked off over several passes instead
/// of one long burst of writes that claims and outcomes would queue behind.
const MAX_PASS_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a pass every [`PRUNE_INTERVAL`] until `stop` (first one at once): finished jobs past
/// `retention`, dashboard history past `history_retention` and audit rows past
/// `audit_retention` (`None`: kept).
pub async fn run(
    store: std::sync::Arc<dyn Store>,
    retention: Option<Duration>,
    history_retention: Option<Duration>,
    audit_retention: Option<Duration>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Some(retention) = retention {
            if let Err(e) = prune_once(store.as_ref(), Utc::now(), retention).await {
                tracing::warn!(error = %e, "pruning finished jobs failed; will try again");
            }
        }
        if let Some(keep) = history_retention {
            if let Err(e) = crate::stats::prune_history_once(store.as_ref(), Utc::now(), keep).await
            {
                tracing::warn!(error = %e, "pruning dashboard history failed; will try again");
            }
        }
        if let Some(keep) = audit_retention {
            if let Err(e) = crate::audit::prune_audit_once(store.as_ref(), Utc::now(), keep).await {
                tracing::warn!(error = %e, "pruning the audit log failed; will try again");
            }
        }
        if let Err(e) = store
            .prune_limit_buckets(Utc::now(), BUCKET_PRUNE_BATCH)
            .await
        {
            tracing::warn!(error = %e, "pruning full rate-limit buckets failed; will try again");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

/// One pass: deletes finished jobs finalized before `now - retention`. Returns how many went.
pub async fn prune_once(store: &dyn Store, now: DateTime<Utc>, retention: Duration) -> Result<u64> {
    let cutoff = cutoff(now, retention);
    let total = in_batches(|limit| {
        store.prune(PruneParams {
            finalized_before: cutoff,
            limit,
        })
    })
    .await?;
    if total > 0 {
        tracing::info!(pruned = total, %cutoff, "pruned finished jobs");
    }
    Ok(total)
}

/// What is older than this goes: `now - retention`, clamped to the earliest time.
pub(crate) fn cutoff(now: DateTime<Utc>, retention: Duration) -> DateTime<Utc> {
    let keep = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    now.checked_sub_signed(keep)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Runs `delete` (given the batch size [`PRUNE_BATCH`], answering how many rows went) until
/// a batch comes back short or [`MAX_PASS_TIME`] has passed; the rows deleted in all. Every
/// pruned table goes through here, so each pass is bounded the same way.
pub(crate) async fn in_batches<F, Fut>(mut delete: F) -> Result<u64>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<u64>>,
{
    let mut total = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < MAX_PASS_TIME {
        let n = delete(PRUNE_BATCH).await?;
        total += n;
        if n < PRUNE_BATCH as u64 {
            break;
        }
        // Let other writers (claims, outcomes) in between batches.
        tokio::task::yield_now().await;
    }
    Ok(total)
}
