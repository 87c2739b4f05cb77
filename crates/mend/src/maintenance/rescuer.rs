//! The rescuer: finds nodes that are gone and jobs whose lease ran out, and hands their
//! running jobs back to the queue with a `lost` error (or quarantines a job that keeps killing
//! its workers). A live process's jobs are not taken while it heartbeats: its process is
//! checked on this host and its leases are extended while it runs. A process that stops
//! extending its leases for a whole lease (hung, or cut off from the database) is treated as
//! dead for those jobs; it fences itself (stops them) before that point.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::{RescueParams, Rescued, Result, Store};

/// One rescue pass. Returns the jobs rescued (none when another process leads maintenance).
pub async fn rescue_once(
    store: &dyn Store,
    self_id: &str,
    now: DateTime<Utc>,
    stale_after: Duration,
    quarantine_after_lost: u32,
) -> Result<Vec<Rescued>> {
    let stale = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    let stale_before = now
        .checked_sub_signed(stale)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    if !store.is_leader().await? {
        return Ok(Vec::new());
    }
    let dead = store.dead_nodes(self_id, stale_before).await?;
    let rescued = store
        .rescue(RescueParams {
            dead_nodes: dead.clone(),
            now,
            quarantine_after_lost,
        })
        .await?;
    for r in &rescued {
        if r.quarantined {
            tracing::error!(id = %r.job.id, kind = %r.job.kind, lost = r.job.consecutive_lost(), "job quarantined: its attempts keep killing the worker; fix it, then retry it by hand");
        } else {
            tracing::warn!(id = %r.job.id, kind = %r.job.kind, state = %r.job.state, "rescued a job whose worker was lost");
        }
    }
    if !dead.is_empty() {
        tracing::info!(nodes = ?dead, "removed dead nodes");
        store.deregister_nodes(dead).await?;
    }
    Ok(rescued)
}

/// What a rescue does to one running job; every backend applies exactly this.
#[derive(Debug, Clone, PartialEq)]
pub struct RescueDecision {
    /// `retryable` (run again now), or `discarded` when out of attempts or quarantined.
    pub state: crate::job::JobState,
    /// The `lost` error recorded for the attempt.
    pub error: crate::job::AttemptError,
    /// The job was quarantined as a poison pill.
    pub quarantined: bool,
}

/// Decide a rescued job's fate. `job` is the row as it is while still `running`.
pub fn decide(
    job: &crate::job::JobRow,
    now: DateTime<Utc>,
    quarantine_after_lost: u32,
) -> RescueDecision {
    use crate::job::{AttemptError, ErrorKind, JobState};
    let owner = job.lease_owner.as_deref().unwrap_or("unknown");
    let lost_in_a_row = job.consecutive_lost() + 1;
    let quarantined = quarantine_after_lost > 0 && lost_in_a_row >= quarantine_after_lost;
    let message = if quarantined {
        format!(
            "worker lost (node {owner}); quarantined: {lost_in_a_row} attempts in a row ended with the worker lost, so this job is probably killing its process; fix the handler or the args, then retry the job by hand"
        )
    } else {
        format!("worker lost (node {owner} died or stopped heartbeating mid-attempt)")
    };
    // A job with durable cleanups still written down goes back to the queue even when it is
    // done for: the worker that claims it runs the cleanups, then discards it.
    let state =
        if (quarantined || job.attempt >= job.max_attempts) && job.pending_cleanups.is_empty() {
            JobState::Discarded
        } else {
            JobState::Retryable
        };
    RescueDecision {
        state,
        error: AttemptError {
            attempt: job.attempt,
            kind: ErrorKind::Lost,
            message,
            at: now,
        },
        quarantined,
    }
}
