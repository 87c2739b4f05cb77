//! The rollout guard: on the leader, every [`GUARD_TICK`], each active rollout's canary is
//! compared with its stable version over the guard's window ([`crate::rollout::judge`]). A
//! breach cuts the canary off at once; a step whose time has come and that passes the guard
//! advances (the last one promotes). After a rollout ends without promotion, the jobs its
//! canary failed are handed back to stable with their attempts (`Store::rollout_heal`), for
//! [`HEAL_AFTER_END`] so that attempts still running at the cut-off are covered too.
//!
//! Every change is a compare-and-set on the rollout's revision: a leader change mid-pass, or
//! an operator pausing a rollout while the guard judges it, cannot lose a decision or take
//! one twice. Operators' requests go through [`request`] and the same compare-and-set.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::rollout::{
    judge, Action, Request, Rollout, RolloutError, RolloutSpec, RolloutState, Sample, Verdict,
    GUARD_TICK, HEAL_AFTER_END, UNVERSIONED,
};
use crate::store::{HealParams, Result, Store, VersionSamplesParams};

/// Jobs handed back to stable per store call.
pub const HEAL_BATCH: usize = 1_000;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Rollouts cut off.
    pub cut_off: usize,
    /// Steps advanced (promotions included).
    pub advanced: usize,
    /// Jobs handed back to stable.
    pub healed: usize,
}

/// Runs a pass every [`GUARD_TICK`] while this process leads, until `stop`, and tells
/// `decided` when a pass cut a rollout off or moved it on (this node's worker then replans at
/// once instead of at its next heartbeat).
pub async fn run(
    store: Arc<dyn Store>,
    stop: CancellationToken,
    decided: Arc<dyn Fn() + Send + Sync>,
) {
    super::while_leading(store, "the rollout guard", GUARD_TICK, stop, |store| {
        let decided = decided.clone();
        async move {
            let report = pass(store.as_ref(), Utc::now()).await?;
            if report.cut_off + report.advanced > 0 {
                decided();
            }
            Ok(())
        }
    })
    .await;
}

/// The canary's and stable's samples of `r` over its guard window ending at `now` (never
/// before the rollout started).
pub async fn window(
    store: &dyn Store,
    r: &Rollout,
    now: DateTime<Utc>,
) -> Result<(Sample, Sample)> {
    let span = chrono::Duration::seconds(i64::try_from(r.guard.window_secs).unwrap_or(i64::MAX));
    let since = now
        .checked_sub_signed(span)
        .unwrap_or(r.started_at)
        .max(r.started_at);
    let rows = store
        .version_samples(VersionSamplesParams {
            kind: r.kind.clone(),
            since,
        })
        .await?;
    let stable = r.stable.as_deref().unwrap_or(UNVERSIONED);
    let (mut canary, mut stable_side) = (Sample::default(), Sample::default());
    for row in rows {
        let side = match row.version.as_deref().unwrap_or(UNVERSIONED) {
            v if v == r.canary => &mut canary,
            v if v == stable => &mut stable_side,
            _ => continue,
        };
        side.add(&Sample {
            attempts: row.attempts,
            failures: row.failures,
            run: row.run,
        });
    }
    Ok((canary, stable_side))
}

/// One look at every rollout that is active or ended lately. Idle, it is one read of the
/// routes every node reads anyway.
pub async fn pass(store: &dyn Store, now: DateTime<Utc>) -> Result<PassReport> {
    let mut report = PassReport::default();
    let heal_for = chrono::Duration::from_std(HEAL_AFTER_END).unwrap_or_default();
    let watched: Vec<uuid::Uuid> = store
        .rollout_routes()
        .await?
        .into_iter()
        .filter(|r| r.active || r.finished_at.is_some_and(|f| now - f < heal_for))
        .map(|r| r.rollout)
        .collect();
    for id in watched {
        let Some(r) = store.rollout_get(id).await? else {
            continue;
        };
        if r.state.is_active() {
            guard_one(store, r, now, &mut report).await?;
        } else if matches!(r.state, RolloutState::RolledBack | RolloutState::Aborted) {
            report.healed += heal(store, r, now).await?;
        }
    }
    Ok(report)
}

async fn guard_one(
    store: &dyn Store,
    mut r: Rollout,
    now: DateTime<Utc>,
    report: &mut PassReport,
) -> Result<()> {
    let (canary, stable) = window(store, &r, now).await?;
    let (verdict, evidence) = judge(&r.guard, &canary, &stable);
    match verdict {
        Verdict::Breach => {
            let reason = format!("cut off by the guard: {}", evidence.breach);
            r.stop(now, Action::CutOff, "guard", reason, Some(evidence.clone()));
            let Some(saved) = store.rollout_save(r).await? else {
                return Ok(()); // Someone else decided first; the next pass sees theirs.
            };
            report.cut_off += 1;
            tracing::error!(rollout = %saved.id, kind = %saved.kind, canary = %saved.canary, breach = %evidence.breach, "rollout cut off: the canary is worse than stable");
            announce(
                store,
                &saved,
                crate::stats::event_kind::ROLLOUT_CUT_OFF,
                now,
            )
            .await;
            report.healed += heal(store, saved, now).await?;
        }
        Verdict::Pass
            if r.state == RolloutState::Running && r.next_step_at.is_some_and(|t| t <= now) =>
        {
            r.advance(now, evidence);
            if let Some(saved) = store.rollout_save(r).await? {
                report.advanced += 1;
                tracing::info!(rollout = %saved.id, kind = %saved.kind, share = saved.share, state = saved.state.as_str(), "rollout step passed the guard");
                if saved.state == RolloutState::Promoted {
                    announce(
                        store,
                        &saved,
                        crate::stats::event_kind::ROLLOUT_PROMOTED,
                        now,
                    )
                    .await;
                }
            }
        }
        // Too few samples holds the step: a rollout never advances on no evidence.
        Verdict::Pass | Verdict::NotEnough => {}
    }
    Ok(())
}

/// Hands the jobs `r`'s canary failed back to stable, and counts them on the rollout.
async fn heal(store: &dyn Store, mut r: Rollout, now: DateTime<Utc>) -> Result<usize> {
    let mut total = 0;
    loop {
        let event = crate::job::TimelineEvent::new(now, "handed_back").detail(format!(
            "rollout of {} {} ended ({}); retried on the stable version with the canary's attempts given back",
            r.kind,
            r.canary,
            r.state.as_str()
        ));
        let ids = store
            .rollout_heal(HealParams {
                kind: r.kind.clone(),
                canary: r.canary.clone(),
                since: r.started_at,
                now,
                limit: HEAL_BATCH,
                event,
            })
            .await?;
        total += ids.len();
        if ids.len() < HEAL_BATCH {
            break;
        }
    }
    if total > 0 {
        tracing::warn!(rollout = %r.id, kind = %r.kind, jobs = total, "jobs the canary failed handed back to the stable version");
        // The count is informative: losing this race to another change only loses the count.
        for _ in 0..3 {
            r.healed += total as u64;
            match store.rollout_save(r.clone()).await? {
                Some(_) => break,
                None => match store.rollout_get(r.id).await? {
                    Some(fresh) => r = fresh,
                    None => break,
                },
            }
        }
    }
    Ok(total)
}

/// Records a cluster event and, for a cut-off with a `notify_url`, enqueues an `http` job
/// that posts the decision there.
async fn announce(store: &dyn Store, r: &Rollout, kind: &str, now: DateTime<Utc>) {
    let last = r.decisions.last();
    let detail = json!({
        "rollout": r.id,
        "kind": r.kind,
        "canary": r.canary,
        "stable": r.stable,
        "state": r.state,
        "decision": last,
    });
    let event = crate::stats::Event {
        at: now,
        kind: kind.to_owned(),
        node: String::new(),
        detail: detail.clone(),
    };
    if let Err(e) = store.add_events(vec![event]).await {
        tracing::warn!(error = %e, "recording the rollout event failed");
    }
    if kind != crate::stats::event_kind::ROLLOUT_CUT_OFF {
        return;
    }
    if let Some(url) = &r.notify_url {
        let job = crate::job::NewJob::new(
            "http",
            json!({"method": "POST", "url": url, "body": detail}),
        )
        .with_max_attempts(10);
        if let Err(e) = store.insert_many(vec![job]).await {
            tracing::warn!(error = %e, url = %url, "enqueueing the cut-off notification failed");
        }
    }
}

/// Starts a rollout after checking it: the spec itself, and that a live node serves the kind
/// and one serves the canary version (an unknown kind or version is refused, nothing stored).
pub async fn start(
    store: &dyn Store,
    spec: RolloutSpec,
    actor: &str,
    now: DateTime<Utc>,
) -> std::result::Result<Rollout, StartError> {
    spec.validate()?;
    let nodes = store.list_nodes().await?;
    let live: Vec<_> = nodes.iter().filter(|n| !n.draining).collect();
    if !live.iter().any(|n| n.kinds.contains(&spec.kind)) {
        return Err(RolloutError::Invalid(format!(
            "no live node serves kind `{}`; start a worker with a handler for it first",
            spec.kind
        ))
        .into());
    }
    let known = crate::node::versions_served(live.iter().copied(), &spec.kind);
    if !known.contains(spec.version.as_str()) {
        return Err(RolloutError::Invalid(format!(
            "no live node serves version `{}` of `{}` (versions served: {}); deploy it with Registry::register_version first",
            spec.version,
            spec.kind,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.into_iter().collect::<Vec<_>>().join(", ")
            }
        ))
        .into());
    }
    let routes = store.rollout_routes().await?;
    if let Some(route) = routes.iter().find(|r| r.kind == spec.kind) {
        if route.stable.as_deref() == Some(spec.version.as_str()) {
            return Err(RolloutError::Invalid(format!(
                "version `{}` is already the stable version of `{}`",
                spec.version, spec.kind
            ))
            .into());
        }
    }
    let kind = spec.kind.clone();
    let rollout = Rollout::new(spec, None, actor, now);
    match store.rollout_start(rollout).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(RolloutError::Conflict(format!(
            "kind `{kind}` already has an active rollout; promote, abort or wait for it first"
        ))
        .into()),
        Err(e) => Err(e.into()),
    }
}

/// Applies an operator's request to rollout `id` (compare and set, retried on a race with
/// the guard). A promotion or abort takes effect on every node as soon as its store tells it
/// (`Store::routes_wakeup`), and within a heartbeat in any case.
pub async fn request(
    store: &dyn Store,
    id: uuid::Uuid,
    req: Request,
    actor: &str,
    now: DateTime<Utc>,
) -> std::result::Result<Rollout, StartError> {
    for _ in 0..5 {
        let Some(mut r) = store.rollout_get(id).await? else {
            return Err(RolloutError::NotFound(id.to_string()).into());
        };
        r.apply(req, actor, now)?;
        if let Some(saved) = store.rollout_save(r).await? {
            match saved.state {
                RolloutState::Promoted => {
                    announce(
                        store,
                        &saved,
                        crate::stats::event_kind::ROLLOUT_PROMOTED,
                        now,
                    )
                    .await;
                }
                RolloutState::Aborted => {
                    heal(store, saved.clone(), now).await?;
                }
                _ => {}
            }
            return Ok(store.rollout_get(id).await?.unwrap_or(saved));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(RolloutError::Conflict(format!(
        "rollout {id} kept changing while this request was applied; try again"
    ))
    .into())
}

/// Why a rollout request failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The request was refused.
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
