//! The rescuer: finds nodes that are gone and jobs whose lease ran out, and hands their
//! running jobs back to the queue with a `lost` error (or quarantines a job that keeps killing
//! its workers). A live process's jobs are not taken while it heartbeats: its process is
//! checked on this host and its leases are extended while it runs. A process that stops
//! extending its leases for a whole lease (hung, or cut off from the database) is treated as
//! dead for those jobs; it fences itself (stops them) before that point.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::store::{DeadNodesParams, RescueParams, Rescued, Result, Store};

/// Runs rescue passes every `every` until `stop`, telling `on_rescued` how many jobs each
/// pass rescued.
/// Its own task, so a slow pass never delays a heartbeat. The first pass waits one interval:
/// a worker rescues once at start-up before it claims anything.
#[expect(
    clippy::too_many_arguments,
    reason = "the worker's settings the rescuer needs, each one named"
)]
pub(crate) async fn run(
    store: Arc<dyn Store>,
    node_id: String,
    every: Duration,
    stale_after: Duration,
    quarantine_after_lost: u32,
    history: Arc<crate::stats::Recorder>,
    on_rescued: impl Fn(&[Rescued]) + Send + 'static,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    // A backend that learns of a possible death early wakes us for a pass then (`notify_one`
    // keeps a permit, so a wake-up during a pass is not lost).
    let wakeup = store.rescue_wakeup();
    loop {
        let woken = async {
            match &wakeup {
                Some(w) => w.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
            _ = woken => {}
        }
        let pass = rescue_once(
            store.as_ref(),
            &node_id,
            Utc::now(),
            stale_after,
            quarantine_after_lost,
            Some(&*history),
        );
        // A pass in flight when shutdown begins is finished: it is one short transaction.
        match pass.await {
            Ok(r) => on_rescued(&r),
            Err(e) => tracing::warn!(error = %e, "rescue pass failed; will try again"),
        }
    }
}

/// One rescue pass. Returns the jobs rescued (none when another process leads maintenance).
/// Lost attempts go into `history` when given; rescues and dead nodes become events.
pub async fn rescue_once(
    store: &dyn Store,
    self_id: &str,
    now: DateTime<Utc>,
    stale_after: Duration,
    quarantine_after_lost: u32,
    history: Option<&crate::stats::Recorder>,
) -> Result<Vec<Rescued>> {
    let stale = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
    let stale_before = now
        .checked_sub_signed(stale)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    if !store.is_leader().await? {
        return Ok(Vec::new());
    }
    let dead = store
        .dead_nodes(DeadNodesParams {
            self_id: self_id.to_owned(),
            stale_before,
        })
        .await?;
    // Their registrations, for the events' "last heartbeat" (rare: only when some died).
    let dead_info: Vec<crate::store::NodeInfo> = if dead.is_empty() {
        Vec::new()
    } else {
        store
            .list_nodes()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|n| dead.contains(&n.id))
            .collect()
    };
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
    if !rescued.is_empty() || !dead_info.is_empty() {
        crate::maintenance::history::rescued(store, history, &rescued, &dead_info, now).await;
    }
    // A lost attempt of a routed kind counts against its version: a canary that kills its
    // worker must be cut off like one that fails. Rare, so written at once.
    let lost = crate::rollout::SampleRecorder::default();
    for r in &rescued {
        if let Some(v) = &r.job.version {
            lost.record(&r.job.kind, v, crate::stats::Ended::Lost, None);
        }
    }
    let lost = lost.take(now);
    if !lost.is_empty() {
        if let Err(e) = store.add_version_samples(lost).await {
            tracing::warn!(error = %e, "recording lost attempts for the rollout guard failed");
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
    /// When a `retryable` job may run again: now, or after
    /// [`crate::rollout::CANARY_RETRY_FLOOR`] for an active rollout's canary attempt.
    pub run_at: DateTime<Utc>,
    /// The job was quarantined as a poison pill.
    pub quarantined: bool,
}

impl RescueDecision {
    /// The timeline event every backend records for this rescue of `job` (the row as it was
    /// while still running).
    pub fn timeline_event(
        &self,
        job: &crate::job::JobRow,
        at: DateTime<Utc>,
    ) -> crate::job::TimelineEvent {
        let name = if self.quarantined {
            "quarantined"
        } else {
            "rescued"
        };
        let event = crate::job::TimelineEvent::new(at, name)
            .attempt(job.attempt)
            .detail(self.error.message.clone());
        match &job.lease_owner {
            Some(owner) => event.node(owner.clone()),
            None => event,
        }
    }
}

/// Decide a rescued job's fate: the `kill -9` row of the guarantee table
/// ([`crate::settle::lost`]). `job` is the row as it is while still `running`; `routes` are the
/// stored rollout routes (a store reads them only when a job it rescues ran a named version):
/// a lost attempt of an active rollout's canary is retried no sooner than
/// [`crate::rollout::CANARY_RETRY_FLOOR`], so the guard can hand it back to stable first, as
/// it does a failed one.
pub fn decide(
    job: &crate::job::JobRow,
    now: DateTime<Utc>,
    quarantine_after_lost: u32,
    routes: &[crate::rollout::RouteState],
) -> RescueDecision {
    let owner = job.lease_owner.as_deref().unwrap_or("unknown");
    let mut decision = crate::settle::lost(
        owner,
        &crate::settle::Attempt::of(job),
        now,
        quarantine_after_lost,
    );
    decision.error.version.clone_from(&job.version);
    if crate::rollout::is_canary(routes, &job.kind, job.version.as_deref()) {
        let floor =
            chrono::Duration::from_std(crate::rollout::CANARY_RETRY_FLOOR).unwrap_or_default();
        decision.run_at = now.checked_add_signed(floor).unwrap_or(now);
    }
    decision
}
