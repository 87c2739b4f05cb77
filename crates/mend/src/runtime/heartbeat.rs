//! The heartbeater: extends the leases of running attempts, stops attempts that were cancelled
//! from elsewhere or whose lease was lost, and refreshes this node's liveness. (Rescuing dead
//! nodes' jobs is the rescuer's, in `maintenance/rescuer.rs`.)

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::settle::Stop;
use crate::store::{ExtendLeasesParams, HeartbeatNodeParams, HeldJob};

/// Share of the lease after which failed extensions make the worker stop its own attempts.
const SELF_FENCE_AT: f64 = 0.8;

pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(shared.config.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_extended = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        beat(&shared, &mut last_extended).await;
    }
}

fn alive_in_flight(shared: &Shared) -> u32 {
    u32::try_from(shared.running()).unwrap_or(u32::MAX)
}

async fn beat(shared: &Shared, last_extended: &mut Instant) {
    // Every node obeys a rollout's change (a cut-off above all) within a heartbeat, even
    // where the store cannot tell it sooner (or its notification was lost).
    shared.refresh_plan().await;
    let now = Utc::now();
    let alive = HeartbeatNodeParams {
        id: shared.node.id.clone(),
        now,
        in_flight: alive_in_flight(shared),
        draining: !shared.ready.load(std::sync::atomic::Ordering::Acquire),
    };
    // What remote workers serve through this node is registered as this node's own.
    let (node, remote_changed) = shared.remote.merged(&shared.node, Instant::now());
    let register = |node: crate::store::NodeInfo| crate::store::NodeInfo {
        last_seen: now,
        in_flight: alive_in_flight(shared),
        draining: !shared.ready.load(std::sync::atomic::Ordering::Acquire),
        ..node
    };
    match shared.store.heartbeat_node(alive).await {
        Ok(true) => {
            if remote_changed {
                if let Err(e) = shared.store.register_node(register(node)).await {
                    tracing::warn!(error = %e, "registering what remote workers serve failed; will try again");
                    shared.remote.forget_reported();
                }
            }
        }
        Ok(false) => {
            // Another process took us for dead and removed our row (a long pause, a clock
            // jump). Our leases are fenced already; register again so we are seen as alive.
            tracing::warn!(node = %shared.node.id, "this node was removed from the registry; registering again");
            if let Err(e) = shared.store.register_node(register(node)).await {
                tracing::warn!(error = %e, "registering again failed; will try again");
                shared.remote.forget_reported();
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "node heartbeat failed");
            if remote_changed {
                shared.remote.forget_reported();
            }
        }
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
        *last_extended = Instant::now();
        return;
    }
    let lease =
        chrono::Duration::from_std(shared.config.lease_duration).unwrap_or(chrono::Duration::MAX);
    let expires_at = now
        .checked_add_signed(lease)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let result = shared
        .store
        .extend_leases(ExtendLeasesParams {
            lease_owner: shared.node.id.clone(),
            jobs,
            expires_at,
        })
        .await;
    match result {
        Ok(r) => {
            *last_extended = Instant::now();
            // What /debug/attempts shows; a lost lease is stopped just below anyway.
            for f in shared.inflight().values() {
                f.live.leased_until(expires_at);
            }
            for id in r.cancel_requested {
                if shared.stop_job(id, Stop::Cancel) {
                    tracing::info!(%id, "cancel requested; stopping the attempt");
                }
            }
            for held in r.lost {
                // An attempt whose outcome is already queued for the completer is not stopped.
                if shared.stop_attempt(held.id, held.attempt, Stop::LeaseLost) {
                    tracing::warn!(id = %held.id, attempt = held.attempt, "lease lost; stopping the attempt");
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "extending leases failed; will try again");
            // Self-fencing: once our leases may have run out, another node may be running
            // these jobs; stop ours rather than run them twice.
            if last_extended.elapsed() >= shared.config.lease_duration.mul_f64(SELF_FENCE_AT) {
                let held: Vec<(uuid::Uuid, i32)> = shared.inflight().keys().copied().collect();
                tracing::error!(jobs = held.len(), "leases could not be extended for most of their duration; stopping the attempts so they are not run twice");
                for (id, attempt) in held {
                    shared.stop_attempt(id, attempt, Stop::LeaseLost);
                }
            }
        }
    }
}
