//! The gray-release part of a drill (`--bad-canary`, `--good-canary`): starting the canaries'
//! rollouts on the drill's store, waiting for the guard to decide, and the invariants and
//! figures of what it decided. The guard itself runs on the nodes (on their leader); this
//! module only asks for rollouts through the operators' entry point and reads what was stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use mend::maintenance::rollouts::StartError;
use mend::rollout::{Action, GuardConfig, Rollout, RolloutError, RolloutSpec, RolloutState};
use mend::store::Store;
use mend::{JobRow, JobState};
use serde::Serialize;
use uuid::Uuid;

use super::args::Drill;
use super::report::Invariant;
use crate::drill;

/// Who the drill's rollouts are started by, as their decision logs say.
const ACTOR: &str = "mend chaos";

/// How long after a cut-off a canary attempt may still start: nodes re-read the routes at
/// every heartbeat (1 s by default), and a claim already under way when the decision is stored
/// still records the canary. Past this, a canary attempt is a node disobeying the cut-off.
const ROUTE_LAG: Duration = Duration::from_secs(3);

/// How long the drill waits after starting the rollouts before its first job: a node's
/// heartbeat (1 s by default) re-reads the routes, and a job claimed before then is not routed.
pub(super) const ROUTES_TAKEN: Duration = Duration::from_millis(1_500);

/// How long a node may take to report the canary versions it serves before the drill gives
/// up starting the rollouts (nodes register when they start; this covers a slow start).
const START_PATIENCE: Duration = Duration::from_secs(10);

/// The rollouts a drill started.
pub(super) struct Rollouts {
    /// The bad canary's rollout, and the rate it fails at.
    bad: Option<(Uuid, f64)>,
    /// The good canary's rollout.
    good: Option<Uuid>,
}

impl Rollouts {
    /// Whether the drill asked for none.
    pub(super) fn is_empty(&self) -> bool {
        self.bad.is_none() && self.good.is_none()
    }
}

/// Starts the rollouts the drill asks for, at the first of its steps, with the default guard.
pub(super) async fn start(store: &Arc<dyn Store>, d: &Drill) -> anyhow::Result<Rollouts> {
    let spec = |kind: &str, version: &str| RolloutSpec {
        kind: kind.to_owned(),
        version: version.to_owned(),
        steps: d.canary_steps.clone(),
        every_secs: d.canary_every_secs,
        guard: GuardConfig::default(),
        notify_url: None,
    };
    let mut out = Rollouts {
        bad: None,
        good: None,
    };
    if let Some(rate) = d.args.bad_canary {
        let r = start_one(store, spec(drill::KIND, drill::BAD_CANARY)).await?;
        out.bad = Some((r.id, rate));
    }
    if d.args.good_canary {
        let r = start_one(store, spec(drill::TWIN_KIND, drill::GOOD_CANARY)).await?;
        out.good = Some(r.id);
    }
    Ok(out)
}

async fn start_one(store: &Arc<dyn Store>, spec: RolloutSpec) -> anyhow::Result<Rollout> {
    let give_up = Instant::now() + START_PATIENCE;
    loop {
        let what = format!("starting the rollout of {} {}", spec.kind, spec.version);
        match mend::maintenance::rollouts::start(store.as_ref(), spec.clone(), ACTOR, Utc::now())
            .await
        {
            Ok(r) => return Ok(r),
            // No live node reports the version yet: a node restarting after a kill, say.
            Err(StartError::Rollout(RolloutError::Invalid(_))) if Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context(what),
        }
    }
}

/// Whether every rollout has ended (cut off, promoted or aborted).
pub(super) async fn all_decided(store: &Arc<dyn Store>, r: &Rollouts) -> bool {
    for id in r.bad.map(|(id, _)| id).into_iter().chain(r.good) {
        match store.rollout_get(id).await {
            Ok(Some(r)) if !r.state.is_active() => {}
            _ => return false,
        }
    }
    true
}

/// What the bad canary did and how fast the guard cut it off.
#[derive(Debug, Serialize)]
pub(super) struct BadCanaryRecord {
    pub(super) rollout: Uuid,
    /// The share of its attempts the canary fails.
    pub(super) rate: f64,
    pub(super) state: RolloutState,
    /// Rollout start → cut-off.
    pub(super) cut_off_ms_from_start: Option<u64>,
    /// The canary's first failed attempt → cut-off.
    pub(super) cut_off_ms_from_first_failure: Option<u64>,
    /// The canary's attempts and failures the guard had seen when it cut it off.
    pub(super) canary_attempts_seen: Option<u64>,
    pub(super) canary_failures_seen: Option<u64>,
    /// The stable version's, in the same window.
    pub(super) stable_attempts_seen: Option<u64>,
    pub(super) stable_failures_seen: Option<u64>,
    /// Fisher's p-value behind the decision, if that test decided.
    pub(super) p_value: Option<f64>,
    /// The rule breached, in words.
    pub(super) breach: String,
    /// Canary attempts that failed before the cut-off, and after it (in flight then).
    pub(super) canary_failures_before: usize,
    pub(super) canary_failures_after: usize,
    /// Cut-off → the start of the last canary attempt (the nodes' lag in obeying it).
    pub(super) last_canary_start_after_cut_off_ms: Option<u64>,
    /// Jobs with at least one attempt failed by the canary.
    pub(super) jobs_hurt: usize,
    /// Jobs the guard handed back to stable with their attempts (the rollout's count).
    pub(super) jobs_handed_back: u64,
    /// Jobs hurt whose attempts the canary used were given back (`max_attempts` raised): a
    /// job whose retry was already due at the cut-off is not handed back, and runs on stable
    /// with the attempts it has left.
    pub(super) jobs_given_attempts_back: usize,
}

/// What became of the good canary.
#[derive(Debug, Serialize)]
pub(super) struct GoodCanaryRecord {
    pub(super) rollout: Uuid,
    pub(super) state: RolloutState,
    /// Steps passed (the promotion included).
    pub(super) steps_passed: usize,
    /// Rollout start → promotion.
    pub(super) promoted_ms_from_start: Option<u64>,
    /// Jobs of its kind whose final attempt ran the promoted canary, and in all.
    pub(super) jobs_on_canary: usize,
    pub(super) jobs: usize,
}

/// The canaries' part of the report.
#[derive(Debug, Default, Serialize)]
pub(super) struct CanaryReport {
    pub(super) bad: Option<BadCanaryRecord>,
    pub(super) good: Option<GoodCanaryRecord>,
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Option<u64> {
    u64::try_from((to - from).num_milliseconds()).ok()
}

/// Checks the canaries' invariants against the stored rollouts and the drill's jobs (those
/// of `queue`).
pub(super) async fn check(
    store: &Arc<dyn Store>,
    r: &Rollouts,
    queue: &str,
) -> anyhow::Result<(Vec<Invariant>, CanaryReport)> {
    let jobs = &super::check::all_jobs(store.as_ref(), queue).await?;
    let mut inv = Vec::new();
    let mut report = CanaryReport::default();
    if let Some((id, rate)) = r.bad {
        let rollout = store
            .rollout_get(id)
            .await?
            .context("the bad canary's rollout is gone")?;
        let (mut i, rec) = check_bad(&rollout, rate, jobs);
        inv.append(&mut i);
        report.bad = Some(rec);
    }
    if let Some(id) = r.good {
        let rollout = store
            .rollout_get(id)
            .await?
            .context("the good canary's rollout is gone")?;
        let (i, rec) = check_good(&rollout, jobs);
        inv.push(i);
        report.good = Some(rec);
    }
    Ok((inv, report))
}

fn check_bad(rollout: &Rollout, rate: f64, jobs: &[JobRow]) -> (Vec<Invariant>, BadCanaryRecord) {
    let cut = rollout
        .decisions
        .iter()
        .find(|d| d.action == Action::CutOff);
    let evidence = cut.and_then(|d| d.evidence.as_ref());
    let cut_at = cut.map(|d| d.at);
    let canary = |v: &Option<String>| v.as_deref() == Some(drill::BAD_CANARY);
    // Every attempt the canary failed, from the jobs' own error lists.
    let failures: Vec<DateTime<Utc>> = jobs
        .iter()
        .flat_map(|j| j.errors.iter())
        .filter(|e| canary(&e.version))
        .map(|e| e.at)
        .collect();
    let first_failure = failures.iter().min().copied();
    let before = failures
        .iter()
        .filter(|at| cut_at.is_none_or(|c| **at <= c))
        .count();
    // When each canary attempt began (the timeline's `failed` events carry it; a lost
    // attempt's does not, and its claim is judged by the others').
    let canary_starts: Vec<DateTime<Utc>> = jobs
        .iter()
        .flat_map(|j| {
            let attempts: Vec<i32> = j
                .errors
                .iter()
                .filter(|e| canary(&e.version))
                .map(|e| e.attempt)
                .collect();
            j.timeline
                .iter()
                .filter(move |t| t.attempt.is_some_and(|a| attempts.contains(&a)))
                .filter_map(|t| t.started_at)
        })
        .collect();
    let last_start_after_cut = cut_at.and_then(|c| {
        canary_starts
            .iter()
            .filter(|s| **s > c)
            .max()
            .and_then(|s| ms_between(c, *s))
    });
    let hurt: Vec<&JobRow> = jobs
        .iter()
        .filter(|j| j.errors.iter().any(|e| canary(&e.version)))
        .collect();

    let mut inv = Vec::new();
    let cut_ok = rollout.state == RolloutState::RolledBack
        && cut.is_some_and(|d| d.actor == "guard")
        && evidence.is_some_and(|e| !e.breach.is_empty() && e.canary.attempts > 0);
    inv.push(Invariant {
        name: "bad canary cut off",
        ok: cut_ok,
        detail: match (cut_ok, evidence) {
            (true, Some(e)) => format!(
                "rolled back by the guard: {} ({} canary attempts seen)",
                e.breach, e.canary.attempts
            ),
            _ => format!(
                "rollout {} is {} at {} after {} canary failures; no cut-off by the guard with evidence",
                rollout.id,
                rollout.state.as_str(),
                mend::rollout::format_share(rollout.share),
                failures.len()
            ),
        },
    });

    let lag_ms = u64::try_from(ROUTE_LAG.as_millis()).unwrap_or(u64::MAX);
    let obeyed = last_start_after_cut.is_none_or(|ms| ms <= lag_ms);
    inv.push(Invariant {
        name: "nodes obeyed the cut-off",
        ok: cut_at.is_some() && obeyed,
        detail: match (cut_at, last_start_after_cut) {
            (None, _) => "no cut-off to obey".to_owned(),
            (Some(_), None) => "no canary attempt began after the cut-off".to_owned(),
            (Some(_), Some(ms)) => format!(
                "the last canary attempt began {ms} ms after the cut-off (allowed: {lag_ms} ms, nodes re-read routes every heartbeat)"
            ),
        },
    });

    // The jobs it hurt: each completed; a canary attempt ending one must have started before
    // the cut-off reached the nodes (the canary may also succeed, at 1 - rate).
    let lag = chrono::Duration::from_std(ROUTE_LAG).unwrap_or_default();
    let bad: Vec<String> = hurt
        .iter()
        .filter_map(|j| {
            if j.state != JobState::Completed {
                return Some(format!(
                    "{} is {} after {} attempts",
                    j.id, j.state, j.attempt
                ));
            }
            let late = canary(&j.version)
                && cut_at.is_none_or(|c| j.attempted_at.is_none_or(|a| a > c + lag));
            late.then(|| format!("{} completed on the canary after the cut-off", j.id))
        })
        .collect();
    let on_stable = hurt.iter().filter(|j| !canary(&j.version)).count();
    inv.push(Invariant {
        name: "jobs the canary hurt completed on stable",
        ok: bad.is_empty(),
        detail: if bad.is_empty() {
            format!(
                "{} jobs hurt, {on_stable} completed on the stable version, {} on the canary before its cut-off; {} handed back by the guard",
                hurt.len(),
                hurt.len() - on_stable,
                rollout.healed
            )
        } else {
            format!(
                "{} of {} jobs hurt by the canary: {}",
                bad.len(),
                hurt.len(),
                bad.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            )
        },
    });

    let rec = BadCanaryRecord {
        rollout: rollout.id,
        rate,
        state: rollout.state,
        cut_off_ms_from_start: cut_at.and_then(|c| ms_between(rollout.started_at, c)),
        cut_off_ms_from_first_failure: cut_at
            .zip(first_failure)
            .and_then(|(c, f)| ms_between(f, c)),
        canary_attempts_seen: evidence.map(|e| e.canary.attempts),
        canary_failures_seen: evidence.map(|e| e.canary.failures),
        stable_attempts_seen: evidence.map(|e| e.stable.attempts),
        stable_failures_seen: evidence.map(|e| e.stable.failures),
        p_value: evidence.and_then(|e| e.p_value),
        breach: evidence.map(|e| e.breach.clone()).unwrap_or_default(),
        canary_failures_before: before,
        canary_failures_after: failures.len() - before,
        last_canary_start_after_cut_off_ms: last_start_after_cut,
        jobs_hurt: hurt.len(),
        jobs_handed_back: rollout.healed,
        jobs_given_attempts_back: hurt
            .iter()
            .filter(|j| j.max_attempts > super::enqueue::MAX_ATTEMPTS)
            .count(),
    };
    (inv, rec)
}

fn check_good(rollout: &Rollout, jobs: &[JobRow]) -> (Invariant, GoodCanaryRecord) {
    let cut = rollout
        .decisions
        .iter()
        .find(|d| d.action == Action::CutOff);
    let promoted = rollout
        .decisions
        .iter()
        .find(|d| d.action == Action::Promoted);
    let twins: Vec<&JobRow> = jobs.iter().filter(|j| j.kind == drill::TWIN_KIND).collect();
    let ok = rollout.state == RolloutState::Promoted && cut.is_none();
    let detail = match (cut, promoted) {
        (Some(c), _) => format!(
            "FALSE CUT-OFF of a canary that runs stable's code: {}",
            c.evidence
                .as_ref()
                .map_or(c.reason.clone(), |e| e.breach.clone())
        ),
        (None, Some(p)) => format!(
            "promoted after {} steps, {} s after its start",
            rollout.steps.len(),
            (p.at - rollout.started_at).num_milliseconds() as f64 / 1000.0
        ),
        (None, None) => format!(
            "still {} at {} when the drill ended: lengthen --duration or shorten --canary-every",
            rollout.state.as_str(),
            mend::rollout::format_share(rollout.share)
        ),
    };
    let rec = GoodCanaryRecord {
        rollout: rollout.id,
        state: rollout.state,
        steps_passed: rollout
            .decisions
            .iter()
            .filter(|d| matches!(d.action, Action::Advanced | Action::Promoted))
            .count(),
        promoted_ms_from_start: promoted.and_then(|p| ms_between(rollout.started_at, p.at)),
        jobs_on_canary: twins
            .iter()
            .filter(|j| j.version.as_deref() == Some(drill::GOOD_CANARY))
            .count(),
        jobs: twins.len(),
    };
    (
        Invariant {
            name: "good canary promoted, not cut off",
            ok,
            detail,
        },
        rec,
    )
}
