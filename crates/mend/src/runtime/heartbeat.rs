//! The heartbeater: extends the leases of running attempts, stops attempts that were cancelled
//! from elsewhere or whose lease was lost, refreshes this node's liveness, and periodically
//! rescues jobs of dead nodes.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{Shared, StopReason};
use crate::store::{ExtendLeasesParams, HeldJob};

pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(shared.config.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rescue = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        beat(&shared).await;
        if last_rescue.elapsed() >= shared.config.rescue_interval {
            last_rescue = Instant::now();
            match crate::maintenance::rescuer::rescue_once(
                shared.store.as_ref(),
                &shared.node.id,
                Utc::now(),
                shared.config.node_stale_after,
                shared.config.quarantine_after_lost,
            )
            .await
            {
                Ok(rescued) => {
                    shared
                        .stats
                        .rescued
                        .fetch_add(rescued.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "rescue pass failed; will try again"),
            }
        }
    }
}

async fn beat(shared: &Shared) {
    let now = Utc::now();
    if let Err(e) = shared.store.heartbeat_node(&shared.node.id, now).await {
        tracing::warn!(error = %e, "node heartbeat failed");
    }
    let jobs: Vec<HeldJob> = shared
        .inflight()
        .iter()
        .map(|((id, _), f)| HeldJob {
            id: *id,
            attempt: f.attempt,
        })
        .collect();
    if jobs.is_empty() {
        return;
    }
    let lease =
        chrono::Duration::from_std(shared.config.lease_duration).unwrap_or(chrono::Duration::MAX);
    let result = shared
        .store
        .extend_leases(ExtendLeasesParams {
            lease_owner: shared.node.id.clone(),
            jobs,
            expires_at: now + lease,
        })
        .await;
    match result {
        Ok(r) => {
            for id in r.cancel_requested {
                if shared.stop_job(id, StopReason::Cancel) {
                    tracing::info!(%id, "cancel requested; stopping the attempt");
                }
            }
            for held in r.lost {
                // An attempt whose outcome is already queued for the completer is not stopped.
                if shared.stop_attempt(held.id, held.attempt, StopReason::LeaseLost) {
                    tracing::warn!(id = %held.id, attempt = held.attempt, "lease lost; stopping the attempt");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "extending leases failed; will try again"),
    }
}
