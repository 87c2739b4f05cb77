//! Gray release: handler versions, rollouts of a canary version, the guard that cuts a bad
//! canary off, and the routing every claim applies.
//!
//! A kind may have several handler versions live at once (`Registry::register_version`). A
//! [`Rollout`] sends a share of a kind's jobs to a canary version. Which side a job is on is a
//! pure function of its id and the share ([`on_canary`]): its id's last two bytes (random in a
//! UUIDv7) pick a bucket out of 65,536, and the job is on the canary side while its bucket is
//! under the share's threshold. So a retry stays on its side while the share only grows, every
//! node agrees without talking, and nothing is written per job to route it.
//!
//! Routing is decided by the claim itself: a node passes [`Route`]s for the kinds under a
//! rollout (or pinned to a promoted version), and the claim takes only the jobs whose side this
//! node serves, recording on the job the version that will run the attempt. Without any
//! rollout the claim is the plain one and records no version: routing costs nothing then.
//!
//! The guard ([`judge`]) runs on the leader (`maintenance::rollouts`). It compares the
//! canary's failure rate with the stable version's over a sliding window with Fisher's exact
//! test, one-sided, and their run-time p95s; it judges nothing before a minimum sample. A breach
//! cuts the canary off: share to zero, the evidence stored in the rollout's decision log, and
//! the jobs the canary failed are handed back to the stable version with their attempts given
//! back (`Store::rollout_heal`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::stats::Sketch;

/// A share is counted in basis points: 10,000 is every job.
pub const FULL_SHARE: u32 = 10_000;

/// How many buckets job ids fall into (two bytes of the id).
pub const BUCKETS: u32 = 65_536;

/// The bucket of a job id: its last two bytes, which are random in a UUIDv7.
pub fn bucket(id: Uuid) -> u32 {
    let b = id.as_bytes();
    (u32::from(b[14]) << 8) | u32::from(b[15])
}

/// Jobs whose bucket is under this are on the canary side at `share` basis points.
pub fn threshold(share: u32) -> u32 {
    let t = u64::from(share.min(FULL_SHARE)) * u64::from(BUCKETS) / u64::from(FULL_SHARE);
    u32::try_from(t).unwrap_or(BUCKETS)
}

/// Whether job `id` runs on the canary version while the canary has `share` basis points.
pub fn on_canary(id: Uuid, share: u32) -> bool {
    bucket(id) < threshold(share)
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// The canary takes its share; steps advance on schedule while the guard passes them.
    Running,
    /// The canary keeps its share and the guard keeps watching, but steps do not advance.
    Paused,
    /// The guard cut the canary off: share zero, its failed jobs retried on stable.
    RolledBack,
    /// The canary became the stable version.
    Promoted,
    /// Stopped by hand: share zero, its failed jobs retried on stable.
    Aborted,
}

impl RolloutState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Promoted => "promoted",
            RolloutState::Aborted => "aborted",
        }
    }

    /// Running or paused: the canary still has its share.
    pub fn is_active(self) -> bool {
        matches!(self, RolloutState::Running | RolloutState::Paused)
    }
}

impl std::str::FromStr for RolloutState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "running" => RolloutState::Running,
            "paused" => RolloutState::Paused,
            "rolled_back" => RolloutState::RolledBack,
            "promoted" => RolloutState::Promoted,
            "aborted" => RolloutState::Aborted,
            other => return Err(format!("unknown rollout state `{other}`")),
        })
    }
}

/// When the guard cuts a canary off. Every field has a default meant for production.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct GuardConfig {
    /// The sliding window the two versions are compared over, in seconds (default 600).
    pub window_secs: u64,
    /// Attempts each side needs in the window before the guard judges (default 10).
    pub min_samples: u64,
    /// Significance of the one-sided Fisher exact test on failure rates (default 0.001):
    /// the chance that a canary exactly as good as stable is cut off at one look.
    pub alpha: f64,
    /// Cut off when the canary's run-time p95 is more than this many times stable's
    /// (default 2.0)...
    pub max_p95_ratio: f64,
    /// ...and more than this many milliseconds above it (default 100), so that 1 ms against
    /// 3 ms is not a breach.
    pub min_p95_delta_ms: f64,
    /// Also cut off when the canary's failure rate is significantly above this, whatever
    /// stable does (default none: only the comparison with stable counts).
    pub max_failure_rate: Option<f64>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            window_secs: 600,
            min_samples: 10,
            alpha: 0.001,
            max_p95_ratio: 2.0,
            min_p95_delta_ms: 100.0,
            max_failure_rate: None,
        }
    }
}

impl GuardConfig {
    /// Checks every field; the error says which and what is allowed.
    pub fn validate(&self) -> Result<(), RolloutError> {
        let bad = |m: String| Err(RolloutError::Invalid(m));
        if self.window_secs == 0 || self.window_secs > 7 * 24 * 3600 {
            return bad(format!(
                "guard window must be between 1 second and 7 days, got {} s",
                self.window_secs
            ));
        }
        if self.min_samples == 0 || self.min_samples > 1_000_000 {
            return bad(format!(
                "guard min_samples must be between 1 and 1000000, got {}",
                self.min_samples
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return bad(format!(
                "guard alpha must be above 0 and below 0.5, got {}",
                self.alpha
            ));
        }
        if !(self.max_p95_ratio.is_finite() && self.max_p95_ratio >= 1.0) {
            return bad(format!(
                "guard max_p95_ratio must be at least 1, got {}",
                self.max_p95_ratio
            ));
        }
        if !(self.min_p95_delta_ms.is_finite() && self.min_p95_delta_ms >= 0.0) {
            return bad(format!(
                "guard min_p95_delta_ms must be 0 or more, got {}",
                self.min_p95_delta_ms
            ));
        }
        if let Some(r) = self.max_failure_rate {
            if !(r > 0.0 && r < 1.0) {
                return bad(format!(
                    "guard max_failure_rate must be above 0 and below 1, got {r}"
                ));
            }
        }
        Ok(())
    }
}

/// What a rollout was asked to do: the input of [`Store::rollout_start`](crate::store::Store::rollout_start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutSpec {
    /// The kind.
    pub kind: String,
    /// The canary version.
    pub version: String,
    /// The canary's share at each step, in basis points, rising, the last one 10,000.
    pub steps: Vec<u32>,
    /// How long each step lasts before the next, if the guard passes it, in seconds.
    pub every_secs: u64,
    /// When to cut the canary off.
    #[serde(default)]
    pub guard: GuardConfig,
    /// A URL told of a cut-off (an `http` job posts the decision to it).
    #[serde(default)]
    pub notify_url: Option<String>,
}

/// Most steps a rollout may have.
pub const MAX_STEPS: usize = 20;

impl RolloutSpec {
    /// Checks everything that does not need the store; the error says what to fix.
    pub fn validate(&self) -> Result<(), RolloutError> {
        let bad = |m: String| Err(RolloutError::Invalid(m));
        check_name("kind", &self.kind)?;
        check_name("version", &self.version)?;
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return bad(format!(
                "a rollout needs 1 to {MAX_STEPS} steps, got {}",
                self.steps.len()
            ));
        }
        let mut last = 0;
        for &s in &self.steps {
            if s == 0 || s > FULL_SHARE || s <= last {
                return bad(format!(
                    "steps must rise strictly, each above 0% and at most 100%: {} does not",
                    format_steps(&self.steps)
                ));
            }
            last = s;
        }
        if last != FULL_SHARE {
            return bad(format!(
                "the last step must be 100% (the canary then becomes stable): {} ends at {}",
                format_steps(&self.steps),
                format_share(last)
            ));
        }
        if self.every_secs == 0 || self.every_secs > 30 * 24 * 3600 {
            return bad(format!(
                "the step interval must be between 1 second and 30 days, got {} s",
                self.every_secs
            ));
        }
        if let Some(url) = &self.notify_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
                return bad(format!(
                    "notify_url must be an http:// or https:// URL, got `{url}`"
                ));
            }
        }
        self.guard.validate()
    }
}

fn check_name(what: &str, s: &str) -> Result<(), RolloutError> {
    if s.is_empty() || s.len() > 200 || s.chars().any(char::is_control) {
        return Err(RolloutError::Invalid(format!(
            "{what} must be 1 to 200 printable characters, got `{}`",
            s.escape_debug()
        )));
    }
    Ok(())
}

/// A share in basis points as a percentage ("12.5%").
pub fn format_share(share: u32) -> String {
    let whole = share / 100;
    let frac = share % 100;
    if frac == 0 {
        format!("{whole}%")
    } else if frac % 10 == 0 {
        format!("{whole}.{}%", frac / 10)
    } else {
        format!("{whole}.{frac:02}%")
    }
}

/// Steps as "5%,25%,100%".
pub fn format_steps(steps: &[u32]) -> String {
    steps
        .iter()
        .map(|s| format_share(*s))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses "5%,25%,50%,100%" (the `%` is optional; up to two decimals) into basis points.
pub fn parse_steps(s: &str) -> Result<Vec<u32>, RolloutError> {
    s.split(',')
        .map(|part| parse_share(part.trim()))
        .collect::<Result<Vec<_>, _>>()
}

/// Parses one share ("12.5%", "12.5" or "100%") into basis points.
pub fn parse_share(part: &str) -> Result<u32, RolloutError> {
    let bad = || {
        RolloutError::Invalid(format!(
            "`{part}` is not a share: write a percentage such as 5% or 12.5%"
        ))
    };
    let number = part.strip_suffix('%').unwrap_or(part).trim();
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || frac.len() > 2 || !whole.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let frac: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<2}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(frac))
        .filter(|s| *s <= FULL_SHARE)
        .ok_or_else(bad)
}

/// What went wrong with a rollout request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RolloutError {
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// No such rollout.
    #[error("no rollout {0}")]
    NotFound(String),
    /// The rollout's state does not allow this.
    #[error("{0}")]
    Conflict(String),
}

/// Why a decision was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The rollout began at its first step.
    Started,
    /// A step passed the guard; the share rose.
    Advanced,
    /// Paused by hand.
    Paused,
    /// Resumed by hand.
    Resumed,
    /// The canary became stable (after the last step, or by hand).
    Promoted,
    /// The guard found the canary worse than stable and cut it off.
    CutOff,
    /// Stopped by hand.
    Aborted,
}

/// One side's figures over the guard's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SideStats {
    /// Attempts that ended (completed, failed, timed out, panicked or lost).
    pub attempts: u64,
    /// Of those, the ones that failed.
    pub failures: u64,
    /// failures / attempts (0 without attempts).
    pub failure_rate: f64,
    /// Run time p95 in milliseconds, if any attempt recorded one.
    pub p95_ms: Option<f64>,
}

/// What the guard saw when it decided.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Evidence {
    /// The window, in seconds.
    pub window_secs: u64,
    /// The canary version's figures.
    pub canary: SideStats,
    /// The stable version's figures.
    pub stable: SideStats,
    /// The one-sided p-value of Fisher's exact test (canary fails more often than stable),
    /// when both sides had the minimum sample.
    pub p_value: Option<f64>,
    /// The significance it was held against.
    pub alpha: f64,
    /// Which rule was breached, in words (empty: none).
    #[serde(default)]
    pub breach: String,
}

/// One entry of a rollout's decision log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Decision {
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub action: Action,
    /// The canary's share afterwards, in basis points.
    pub share: u32,
    /// Who: `guard` for the leader's own decisions, else the actor who asked.
    pub actor: String,
    /// Why, in words.
    pub reason: String,
    /// The figures behind a guard decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// Most decisions kept in a rollout's log (the first ones and the latest are kept).
pub const MAX_DECISIONS: usize = 200;

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rollout {
    /// Its id.
    pub id: Uuid,
    /// The kind.
    pub kind: String,
    /// The canary version.
    pub canary: String,
    /// The version the canary is compared with and falls back to (`None`: the nodes'
    /// unversioned handler).
    pub stable: Option<String>,
    /// Where it stands.
    pub state: RolloutState,
    /// The steps, in basis points.
    pub steps: Vec<u32>,
    /// The step reached (index into `steps`).
    pub step: usize,
    /// The canary's share now, in basis points.
    pub share: u32,
    /// Seconds per step.
    pub every_secs: u64,
    /// When the next step is due (running rollouts only).
    pub next_step_at: Option<DateTime<Utc>>,
    /// When to cut the canary off.
    pub guard: GuardConfig,
    /// Told of a cut-off.
    pub notify_url: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it ended (rolled back, promoted or aborted).
    pub finished_at: Option<DateTime<Utc>>,
    /// Jobs the canary failed that were handed back to stable with their attempts.
    pub healed: u64,
    /// Bumped by every change; a change applies only to the revision it read.
    pub revision: i64,
    /// What was decided, oldest first.
    pub decisions: Vec<Decision>,
}

impl Rollout {
    /// A new running rollout at its first step.
    pub fn new(
        spec: RolloutSpec,
        stable: Option<String>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Rollout {
        let share = spec.steps.first().copied().unwrap_or(0);
        let mut r = Rollout {
            id: Uuid::now_v7(),
            kind: spec.kind,
            canary: spec.version,
            stable,
            state: RolloutState::Running,
            steps: spec.steps,
            step: 0,
            share,
            every_secs: spec.every_secs,
            next_step_at: None,
            guard: spec.guard,
            notify_url: spec.notify_url,
            started_at: now,
            updated_at: now,
            finished_at: None,
            healed: 0,
            revision: 0,
            decisions: Vec::new(),
        };
        r.next_step_at = r.step_due(now);
        r.log(
            now,
            Action::Started,
            actor,
            format!(
                "canary {} at {} of {} (steps {}, every {} s)",
                r.canary,
                format_share(share),
                r.kind,
                format_steps(&r.steps),
                r.every_secs
            ),
            None,
        );
        r
    }

    fn step_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let every = chrono::Duration::seconds(i64::try_from(self.every_secs).unwrap_or(i64::MAX));
        now.checked_add_signed(every)
    }

    /// Appends a decision (the log keeps its first and latest [`MAX_DECISIONS`]).
    pub fn log(
        &mut self,
        at: DateTime<Utc>,
        action: Action,
        actor: &str,
        reason: String,
        evidence: Option<Evidence>,
    ) {
        if self.decisions.len() >= MAX_DECISIONS {
            self.decisions.remove(1);
        }
        self.decisions.push(Decision {
            at,
            action,
            share: self.share,
            actor: actor.to_owned(),
            reason,
            evidence,
        });
        self.updated_at = at;
    }

    /// Moves to the next step. The last step is 100%, where nothing is left to compare the
    /// canary with: reaching it promotes the canary.
    pub fn advance(&mut self, now: DateTime<Utc>, evidence: Evidence) {
        if self.step + 2 >= self.steps.len() {
            self.promote(
                now,
                "guard",
                format!(
                    "step {} of {} passed the guard; the canary becomes stable",
                    self.step + 1,
                    self.steps.len()
                ),
                Some(evidence),
            );
            return;
        }
        self.step += 1;
        self.share = self.steps[self.step];
        self.next_step_at = self.step_due(now);
        self.log(
            now,
            Action::Advanced,
            "guard",
            format!(
                "step {} of {} passed the guard; canary at {}",
                self.step,
                self.steps.len(),
                format_share(self.share)
            ),
            Some(evidence),
        );
    }

    /// The canary becomes stable.
    pub fn promote(
        &mut self,
        now: DateTime<Utc>,
        actor: &str,
        reason: String,
        evidence: Option<Evidence>,
    ) {
        self.state = RolloutState::Promoted;
        self.share = FULL_SHARE;
        self.next_step_at = None;
        self.finished_at = Some(now);
        self.log(now, Action::Promoted, actor, reason, evidence);
    }

    /// The canary is cut off (by the guard) or aborted (by hand): share zero.
    pub fn stop(
        &mut self,
        now: DateTime<Utc>,
        action: Action,
        actor: &str,
        reason: String,
        evidence: Option<Evidence>,
    ) {
        self.state = if action == Action::CutOff {
            RolloutState::RolledBack
        } else {
            RolloutState::Aborted
        };
        self.share = 0;
        self.next_step_at = None;
        self.finished_at = Some(now);
        self.log(now, action, actor, reason, evidence);
    }

    /// Applies an operator's request; the error says why the state does not allow it.
    pub fn apply(
        &mut self,
        request: Request,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), RolloutError> {
        let conflict = |what: &str, state: RolloutState| {
            Err(RolloutError::Conflict(format!(
                "cannot {what} rollout {}: it is {}",
                self.id,
                state.as_str()
            )))
        };
        match request {
            Request::Pause => {
                if self.state != RolloutState::Running {
                    return conflict("pause", self.state);
                }
                self.state = RolloutState::Paused;
                self.next_step_at = None;
                self.log(now, Action::Paused, actor, "paused by hand".into(), None);
            }
            Request::Resume => {
                if self.state != RolloutState::Paused {
                    return conflict("resume", self.state);
                }
                self.state = RolloutState::Running;
                self.next_step_at = self.step_due(now);
                self.log(now, Action::Resumed, actor, "resumed by hand".into(), None);
            }
            Request::Promote => {
                if !self.state.is_active() {
                    return conflict("promote", self.state);
                }
                self.promote(now, actor, "promoted by hand".into(), None);
            }
            Request::Abort => {
                if !self.state.is_active() {
                    return conflict("abort", self.state);
                }
                self.stop(now, Action::Aborted, actor, "aborted by hand".into(), None);
            }
        }
        Ok(())
    }

    /// The route this rollout sets for its kind (see [`RouteState`]).
    pub fn route_state(&self) -> RouteState {
        match self.state {
            RolloutState::Running | RolloutState::Paused => RouteState {
                rollout: self.id,
                finished_at: self.finished_at,
                kind: self.kind.clone(),
                canary: Some(self.canary.clone()),
                stable: self.stable.clone(),
                share: self.share,
                active: true,
            },
            RolloutState::Promoted => RouteState {
                rollout: self.id,
                finished_at: self.finished_at,
                kind: self.kind.clone(),
                canary: None,
                stable: Some(self.canary.clone()),
                share: 0,
                active: false,
            },
            RolloutState::RolledBack | RolloutState::Aborted => RouteState {
                rollout: self.id,
                finished_at: self.finished_at,
                kind: self.kind.clone(),
                canary: None,
                stable: self.stable.clone(),
                share: 0,
                active: false,
            },
        }
    }
}

/// An operator's request on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Stop advancing steps (the guard keeps watching).
    Pause,
    /// Advance again.
    Resume,
    /// Make the canary stable now.
    Promote,
    /// Share to zero; the canary's failed jobs go back to stable.
    Abort,
}

/// How a kind is routed now, as every node reads it: from its latest rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteState {
    /// The rollout it comes from.
    pub rollout: Uuid,
    /// When that rollout ended, if it did.
    pub finished_at: Option<DateTime<Utc>>,
    /// The kind.
    pub kind: String,
    /// The canary version, while a rollout is active.
    pub canary: Option<String>,
    /// The stable version (`None`: unversioned handlers).
    pub stable: Option<String>,
    /// The canary's share, basis points.
    pub share: u32,
    /// A rollout is running or paused: its attempts are sampled for the guard.
    pub active: bool,
}

/// How one claim routes one kind: passed in `ClaimParams::routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The kind.
    pub kind: String,
    /// Jobs whose bucket is under this are on the canary side ([`threshold`]).
    pub threshold: u32,
    /// The version recorded for a canary-side attempt.
    pub canary: Option<String>,
    /// The version recorded for a stable-side attempt (`None`: unversioned).
    pub stable: Option<String>,
    /// This node serves the canary side.
    pub canary_ok: bool,
    /// This node serves the stable side.
    pub stable_ok: bool,
}

impl Route {
    /// Whether this node may take job `id`, and the version recorded for its attempt if so
    /// ([`UNVERSIONED`] for the unversioned handler).
    pub fn admit(&self, id: Uuid) -> Option<Option<&str>> {
        if bucket(id) < self.threshold {
            self.canary_ok
                .then_some(Some(self.canary.as_deref().unwrap_or(UNVERSIONED)))
        } else {
            self.stable_ok
                .then_some(Some(self.stable.as_deref().unwrap_or(UNVERSIONED)))
        }
    }
}

/// The version recorded on a routed attempt that runs the unversioned handler: routed
/// attempts always record a version, so the guard can count the stable side.
pub const UNVERSIONED: &str = "";

/// Whether a claim with `routes` may take job `id` of `kind`, and the version recorded if so
/// (`Some(None)`: take it, not routed).
pub fn admit<'a>(routes: &'a [Route], kind: &str, id: Uuid) -> Option<Option<&'a str>> {
    match routes.iter().find(|r| r.kind == kind) {
        Some(r) => r.admit(id),
        None => Some(None),
    }
}

/// The versions a node serves per kind: `None` is the unversioned handler.
pub type Served = BTreeMap<String, Vec<Option<String>>>;

/// What a node's claims ask for, given the routes stored and what it serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The kinds to claim (kinds whose side this node serves neither of are left out).
    pub kinds: Vec<String>,
    /// The routes to pass to the claim.
    pub routes: Vec<Route>,
    /// Kinds under an active rollout: their attempts are sampled for the guard.
    pub sampled: Vec<String>,
}

impl Plan {
    /// Whether the node can claim anything at all (an empty `kinds` would mean "any kind").
    pub fn claims_nothing(&self) -> bool {
        self.kinds.is_empty()
    }

    /// Whether a job of `kind` claimed under this plan with `version` runs the canary.
    pub fn routes_to_canary(&self, kind: &str, version: Option<&str>) -> bool {
        version.is_some()
            && self
                .routes
                .iter()
                .any(|r| r.kind == kind && r.canary.as_deref() == version)
    }
}

/// The claim plan of a node serving `served`, under the stored `states`.
pub fn plan(states: &[RouteState], served: &Served) -> Plan {
    let mut out = Plan::default();
    for (kind, versions) in served {
        let Some(state) = states.iter().find(|s| &s.kind == kind) else {
            out.kinds.push(kind.clone());
            continue;
        };
        let serves = |v: &Option<String>| versions.iter().any(|x| x == v);
        let canary_ok = state
            .canary
            .as_ref()
            .is_some_and(|c| serves(&Some(c.clone())));
        let stable_ok = serves(&state.stable);
        if state.active {
            out.sampled.push(kind.clone());
        }
        if !canary_ok && !stable_ok {
            continue;
        }
        out.kinds.push(kind.clone());
        if state.canary.is_none() && state.stable.is_none() {
            // Back to unversioned handlers after a rollback: the plain claim.
            continue;
        }
        out.routes.push(Route {
            kind: kind.clone(),
            threshold: if state.canary.is_some() {
                threshold(state.share)
            } else {
                0
            },
            canary: state.canary.clone(),
            stable: state.stable.clone(),
            canary_ok,
            stable_ok,
        });
    }
    out
}

/// One side's raw sample over the window: what the guard judges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Attempts that ended.
    pub attempts: u64,
    /// Of those, failures.
    pub failures: u64,
    /// Their run times.
    pub run: Sketch,
}

impl Sample {
    /// Adds `other` to this one.
    pub fn add(&mut self, other: &Sample) {
        self.attempts += other.attempts;
        self.failures += other.failures;
        self.run.merge(&other.run);
    }

    fn stats(&self) -> SideStats {
        SideStats {
            attempts: self.attempts,
            failures: self.failures,
            failure_rate: if self.attempts == 0 {
                0.0
            } else {
                self.failures as f64 / self.attempts as f64
            },
            p95_ms: self.run.quantile_ms(0.95),
        }
    }
}

/// The guard's verdict on one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Too few attempts on a side to judge.
    NotEnough,
    /// Nothing breached.
    Pass,
    /// The canary is worse: cut it off.
    Breach,
}

/// Compares the canary with stable over one window (see the module docs).
pub fn judge(guard: &GuardConfig, canary: &Sample, stable: &Sample) -> (Verdict, Evidence) {
    let mut ev = Evidence {
        window_secs: guard.window_secs,
        canary: canary.stats(),
        stable: stable.stats(),
        p_value: None,
        alpha: guard.alpha,
        breach: String::new(),
    };
    if canary.attempts < guard.min_samples {
        return (Verdict::NotEnough, ev);
    }
    if let Some(max) = guard.max_failure_rate {
        let p = binomial_upper_tail(canary.failures, canary.attempts, max);
        if p < guard.alpha {
            ev.breach = format!(
                "canary failure rate {:.1}% is above the ceiling of {:.1}% (binomial p = {p:.2e})",
                ev.canary.failure_rate * 100.0,
                max * 100.0
            );
            return (Verdict::Breach, ev);
        }
    }
    if stable.attempts < guard.min_samples {
        return (Verdict::NotEnough, ev);
    }
    let p = fisher_one_sided(
        canary.failures,
        canary.attempts,
        stable.failures,
        stable.attempts,
    );
    ev.p_value = Some(p);
    if p < guard.alpha && ev.canary.failure_rate > ev.stable.failure_rate {
        ev.breach = format!(
            "canary fails {:.1}% of {} attempts against stable's {:.1}% of {} (Fisher exact, one-sided p = {p:.2e} < {})",
            ev.canary.failure_rate * 100.0,
            canary.attempts,
            ev.stable.failure_rate * 100.0,
            stable.attempts,
            guard.alpha
        );
        return (Verdict::Breach, ev);
    }
    if let (Some(c), Some(s)) = (ev.canary.p95_ms, ev.stable.p95_ms) {
        // The p95 of fewer than 20 attempts is their slowest: one slow attempt, which stable
        // has too at its own rate, must not cut a canary off. So the canary must also have
        // significantly more attempts over the bar than the 5% a canary as fast as stable
        // would have (a one-sided binomial test at the same alpha).
        let bar = (s * guard.max_p95_ratio).max(s + guard.min_p95_delta_ms);
        let n = canary.run.count();
        let over = canary.run.count_above_ms(bar);
        if n >= guard.min_samples
            && stable.run.count() >= guard.min_samples
            && c > s * guard.max_p95_ratio
            && c - s > guard.min_p95_delta_ms
        {
            let p = binomial_upper_tail(over, n, 0.05);
            if p < guard.alpha {
                ev.breach = format!(
                    "canary run-time p95 {c:.0} ms is over {}x stable's {s:.0} ms ({over} of {n} attempts over {bar:.0} ms, binomial p = {p:.2e})",
                    guard.max_p95_ratio
                );
                return (Verdict::Breach, ev);
            }
        }
    }
    (Verdict::Pass, ev)
}

/// ln(n!) for n below this comes from a table (the guard judges every half second).
const LN_FACTORIAL_TABLE: usize = 1024;

static LN_FACTORIALS: std::sync::LazyLock<Vec<f64>> = std::sync::LazyLock::new(|| {
    let mut t = Vec::with_capacity(LN_FACTORIAL_TABLE);
    let mut acc = 0.0;
    t.push(0.0);
    for k in 1..LN_FACTORIAL_TABLE {
        acc += (k as f64).ln();
        t.push(acc);
    }
    t
});

/// ln(n!) for the test's counts (a table of exact sums below 1024, Stirling's series above).
fn ln_factorial(n: u64) -> f64 {
    if let Some(v) = usize::try_from(n).ok().and_then(|i| LN_FACTORIALS.get(i)) {
        return *v;
    }
    let x = n as f64 + 1.0;
    // Stirling's series for ln Γ(x): error below 1e-12 at these sizes.
    (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x * x)
}

fn ln_choose(n: u64, k: u64) -> f64 {
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

/// One-sided Fisher exact test: the chance, if both versions failed equally often, that the
/// canary would show `a` or more failures out of `n1` attempts, given `a + c` failures in all
/// out of `n1 + n2` attempts (a hypergeometric upper tail).
pub fn fisher_one_sided(a: u64, n1: u64, c: u64, n2: u64) -> f64 {
    let n = n1 + n2;
    let k = a + c;
    if n1 == 0 || k == 0 || n == 0 {
        return 1.0;
    }
    let hi = k.min(n1);
    let denom = ln_choose(n, k);
    let mut p = 0.0;
    for x in a..=hi {
        if k - x > n2 {
            continue;
        }
        p += (ln_choose(n1, x) + ln_choose(n2, k - x) - denom).exp();
    }
    p.min(1.0)
}

/// The chance of `k` or more failures out of `n` attempts when each fails with chance `p`.
pub fn binomial_upper_tail(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let mut total = 0.0;
    for x in k..=n {
        total += (ln_choose(n, x) + x as f64 * p.ln() + (n - x) as f64 * (1.0 - p).ln()).exp();
    }
    total.min(1.0)
}

/// Accumulates the outcomes of attempts of kinds under an active rollout, per (kind,
/// version), until the next flush. Recording costs a mutex and a few additions, no I/O.
#[derive(Debug, Default)]
pub struct SampleRecorder {
    pending: std::sync::Mutex<BTreeMap<(String, String), Sample>>,
}

impl SampleRecorder {
    /// Records one attempt of `kind` run by `version` that ended as `ended`, after `run`.
    /// Cancelled and snoozed attempts say nothing about the version and are not counted.
    pub fn record(
        &self,
        kind: &str,
        version: &str,
        ended: crate::stats::Ended,
        run: Option<Duration>,
    ) {
        use crate::stats::Ended;
        let failed = match ended {
            Ended::Completed => false,
            Ended::Retried | Ended::Failed | Ended::Lost => true,
            Ended::Cancelled | Ended::Snoozed => return,
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let s = pending
            .entry((kind.to_owned(), version.to_owned()))
            .or_default();
        s.attempts += 1;
        if failed {
            s.failures += 1;
        }
        if let Some(r) = run {
            s.run.record(r);
        }
    }

    /// Everything recorded since the last take, stamped `at`.
    pub fn take(&self, at: DateTime<Utc>) -> Vec<crate::store::VersionSample> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        pending
            .into_iter()
            .map(|((kind, version), s)| crate::store::VersionSample {
                at,
                kind,
                version: Some(version),
                attempts: s.attempts,
                failures: s.failures,
                run: s.run,
            })
            .collect()
    }

    /// Puts back samples a flush could not write (bounded: past 10,000 keys they are
    /// dropped, the guard then judges on what it has).
    pub fn restore(&self, samples: Vec<crate::store::VersionSample>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for v in samples {
            if pending.len() >= 10_000 {
                return;
            }
            let s = pending
                .entry((v.kind, v.version.unwrap_or_default()))
                .or_default();
            s.add(&Sample {
                attempts: v.attempts,
                failures: v.failures,
                run: v.run,
            });
        }
    }
}

/// Writes what `recorder` gathered every [`SAMPLE_FLUSH_INTERVAL`] until `stop`, then once
/// more.
pub async fn run_sample_flusher(
    recorder: std::sync::Arc<SampleRecorder>,
    store: std::sync::Arc<dyn crate::store::Store>,
    stop: tokio_util::sync::CancellationToken,
) {
    let flush = || async {
        let samples = recorder.take(Utc::now());
        if samples.is_empty() {
            return;
        }
        if let Err(e) = store.add_version_samples(samples.clone()).await {
            tracing::warn!(error = %e, "writing rollout samples failed; will retry with the next flush");
            recorder.restore(samples);
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(SAMPLE_FLUSH_INTERVAL) => flush().await,
        }
    }
    flush().await;
}

/// Width of the sample rows the guard reads: each node writes at most one row per (kind,
/// version) per flush.
pub const SAMPLE_FLUSH_INTERVAL: Duration = Duration::from_millis(500);

/// How often the leader's guard looks at each active rollout.
pub const GUARD_TICK: Duration = Duration::from_millis(500);

/// A canary's failed attempt is retried no sooner than this: long enough for its sample to be
/// flushed, the guard to judge and, on a cut-off, hand the job back to stable before any node
/// claims it again (on a retry claimed first, the canary's attempt would not be given back).
/// A canary attempt lost with its worker waits as long after its rescue.
pub const CANARY_RETRY_FLOOR: Duration = Duration::from_secs(2);

/// Whether `version` of `kind` is the canary of an active rollout in `states`.
pub fn is_canary(states: &[RouteState], kind: &str, version: Option<&str>) -> bool {
    version.is_some_and(|v| {
        states
            .iter()
            .any(|s| s.kind == kind && s.canary.as_deref() == Some(v))
    })
}

/// Delays the retry in `outcome` to [`CANARY_RETRY_FLOOR`] after `now` when the attempt ran a
/// canary (see [`is_canary`]).
pub fn hold_canary_retry(
    canary: bool,
    outcome: &mut crate::store::OutcomeKind,
    now: DateTime<Utc>,
) {
    if let (true, crate::store::OutcomeKind::Retry { run_at, .. }) = (canary, outcome) {
        let floor = chrono::Duration::from_std(CANARY_RETRY_FLOOR).unwrap_or_default();
        if let Some(at) = now.checked_add_signed(floor) {
            *run_at = (*run_at).max(at);
        }
    }
}

/// How long after a rollout ends the guard keeps handing canary failures back to stable
/// (attempts that were running at the cut-off and failed later).
pub const HEAL_AFTER_END: Duration = Duration::from_secs(30 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    fn id_with(b14: u8, b15: u8) -> Uuid {
        let mut bytes = *Uuid::now_v7().as_bytes();
        bytes[14] = b14;
        bytes[15] = b15;
        Uuid::from_bytes(bytes)
    }

    #[test]
    fn shares_split_the_buckets() {
        assert_eq!(threshold(0), 0);
        assert_eq!(threshold(FULL_SHARE), BUCKETS);
        assert_eq!(threshold(5_000), 32_768);
        assert!(on_canary(id_with(0, 0), 1));
        assert!(!on_canary(id_with(0, 0), 0));
        assert!(!on_canary(id_with(255, 255), 9_999));
        assert!(on_canary(id_with(255, 255), FULL_SHARE));
        // A job on the canary side stays there as the share grows.
        let id = id_with(10, 0);
        let first = (0..=FULL_SHARE).find(|s| on_canary(id, *s)).unwrap();
        assert!((first..=FULL_SHARE).all(|s| on_canary(id, s)));
        // Ten percent of random ids, give or take.
        let n = (0..20_000)
            .filter(|_| on_canary(Uuid::now_v7(), 1_000))
            .count();
        assert!((1_700..2_300).contains(&n), "{n} of 20000 at 10%");
    }

    #[test]
    fn steps_parse_and_must_rise_to_100() {
        assert_eq!(
            parse_steps("5%,25%, 50%,100%").unwrap(),
            vec![500, 2500, 5000, 10_000]
        );
        assert_eq!(parse_steps("12.5,100").unwrap(), vec![1250, 10_000]);
        assert_eq!(format_steps(&[1250, 5, 10_000]), "12.5%,0.05%,100%");
        for bad in ["", "x", "101%", "-5%", "5.123%", "1e2"] {
            assert!(parse_steps(bad).is_err(), "{bad}");
        }
        let spec = |steps: Vec<u32>, every: u64| RolloutSpec {
            kind: "k".into(),
            version: "v2".into(),
            steps,
            every_secs: every,
            guard: GuardConfig::default(),
            notify_url: None,
        };
        assert!(spec(vec![500, 10_000], 60).validate().is_ok());
        for (steps, every) in [
            (vec![500, 400, 10_000], 60),
            (vec![500, 5000], 60),
            (vec![], 60),
            (vec![0, 10_000], 60),
            (vec![10_000], 0),
        ] {
            let e = spec(steps.clone(), every).validate().unwrap_err();
            assert!(matches!(e, RolloutError::Invalid(_)), "{steps:?}: {e}");
        }
        let mut s = spec(vec![10_000], 60);
        s.guard.window_secs = 0;
        assert!(s.validate().unwrap_err().to_string().contains("window"));
    }

    #[test]
    fn fisher_matches_known_values() {
        // 3 of 3 against 0 of 3: 1/20.
        assert!((fisher_one_sided(3, 3, 0, 3) - 0.05).abs() < 1e-9);
        // Equal rates give a large p.
        assert!(fisher_one_sided(5, 100, 50, 1000) > 0.4);
        assert!(fisher_one_sided(10, 10, 1, 90) < 1e-8);
        // Large counts go through Stirling's series and stay a probability.
        let p = fisher_one_sided(600, 10_000, 5_500, 100_000);
        assert!((0.0..=1.0).contains(&p), "{p}");
        assert!((ln_factorial(300) - ln_factorial_sum(300)).abs() < 1e-6);
        let x = LN_FACTORIAL_TABLE as u64;
        assert!((ln_factorial(x) - ln_factorial_sum(x)).abs() < 1e-6);
    }

    fn ln_factorial_sum(n: u64) -> f64 {
        (2..=n).map(|k| (k as f64).ln()).sum()
    }

    fn sample(attempts: u64, failures: u64, run_ms: f64) -> Sample {
        let mut s = Sample {
            attempts,
            failures,
            run: Sketch::default(),
        };
        for _ in 0..attempts {
            s.run.record_ms(run_ms);
        }
        s
    }

    #[test]
    fn guard_needs_samples_then_catches_failures_and_slowness() {
        let g = GuardConfig::default();
        let (v, _) = judge(&g, &sample(5, 5, 1.0), &sample(500, 5, 1.0));
        assert_eq!(v, Verdict::NotEnough);
        let (v, ev) = judge(&g, &sample(10, 10, 1.0), &sample(90, 1, 1.0));
        assert_eq!(v, Verdict::Breach);
        assert!(ev.breach.contains("Fisher"), "{}", ev.breach);
        assert!(ev.p_value.unwrap() < g.alpha);
        let (v, _) = judge(&g, &sample(100, 2, 1.0), &sample(900, 15, 1.0));
        assert_eq!(v, Verdict::Pass);
        let (v, ev) = judge(&g, &sample(50, 0, 900.0), &sample(500, 0, 100.0));
        assert_eq!(v, Verdict::Breach);
        assert!(ev.breach.contains("p95"), "{}", ev.breach);
        // 1 ms against 3 ms is not a breach: under the minimum difference.
        let (v, _) = judge(&g, &sample(50, 0, 3.0), &sample(500, 0, 1.0));
        assert_eq!(v, Verdict::Pass);
    }

    /// `mend chaos --good-canary` found it: with 2% of attempts timing out on both versions,
    /// a canary running stable's very code was cut off in 1 of 6 drills, its p95 over
    /// 10 to 19 attempts being the one timed-out attempt (2054 ms against stable's 276 ms).
    #[test]
    fn one_slow_attempt_among_few_does_not_cut_a_canary_off() {
        let g = GuardConfig::default();
        // Slow attempts that still succeed, so only the run-time rule can judge them.
        let with_slow = |fast: u64, slow: u64| {
            let mut s = sample(fast, 0, 200.0);
            s.attempts += slow;
            for _ in 0..slow {
                s.run.record_ms(2_000.0);
            }
            s
        };
        let stable = with_slow(490, 10);
        for n in 10..20 {
            let (v, ev) = judge(&g, &with_slow(n - 1, 1), &stable);
            assert_eq!(v, Verdict::Pass, "{n} attempts: {}", ev.breach);
        }
        // A canary that hangs on a fifth of its attempts is still caught, on more of them.
        let (v, ev) = judge(&g, &with_slow(48, 12), &stable);
        assert_eq!(v, Verdict::Breach, "{ev:?}");
        assert!(ev.breach.contains("12 of 60 attempts"), "{}", ev.breach);
    }

    /// A small deterministic generator (SplitMix64), so the false-alarm bound is reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Runs `rollouts` simulated rollouts of `jobs` jobs each at a 10% share, the guard looking
    /// after every 10 jobs; returns how many were cut off and the canary attempts each took.
    fn simulate(rollouts: u32, jobs: u32, stable_rate: f64, canary_rate: f64) -> (u32, Vec<u64>) {
        let g = GuardConfig::default();
        let mut rng = Rng(42);
        let mut cut = 0;
        let mut at = Vec::new();
        for _ in 0..rollouts {
            let (mut c, mut s) = (Sample::default(), Sample::default());
            for j in 0..jobs {
                let canary = rng.next() < 0.1;
                let side = if canary { &mut c } else { &mut s };
                let rate = if canary { canary_rate } else { stable_rate };
                side.attempts += 1;
                if rng.next() < rate {
                    side.failures += 1;
                }
                if j % 10 == 9 && judge(&g, &c, &s).0 == Verdict::Breach {
                    cut += 1;
                    at.push(c.attempts);
                    break;
                }
            }
        }
        (cut, at)
    }

    #[test]
    fn an_equal_canary_is_rarely_cut_off_and_a_bad_one_quickly() {
        // The documented false-alarm bound: with the defaults, a canary exactly as good as
        // stable (5% failures), looked at every 10 jobs over 2,000 jobs, is cut off in under 1%
        // of rollouts.
        let (false_alarms, _) = simulate(1_000, 2_000, 0.05, 0.05);
        assert!(false_alarms < 10, "{false_alarms} false cut-offs in 1000");
        // Also at 1%.
        let (false_alarms, _) = simulate(1_000, 2_000, 0.01, 0.01);
        assert!(false_alarms < 10, "{false_alarms} false cut-offs in 1000");
        // A canary failing every attempt is cut off within 20 canary attempts.
        let (cut, at) = simulate(200, 2_000, 0.01, 1.0);
        assert_eq!(cut, 200);
        assert!(at.iter().all(|a| *a <= 20), "{:?}", at.iter().max());
        // One failing half of its attempts against 1%, too.
        let (cut, at) = simulate(200, 2_000, 0.01, 0.5);
        assert_eq!(cut, 200);
        assert!(at.iter().all(|a| *a <= 40), "{:?}", at.iter().max());
        // One three times worse than stable (15% against 5%) within 200 canary attempts.
        let (cut, at) = simulate(200, 20_000, 0.05, 0.15);
        let late = at.iter().filter(|a| **a > 200).count();
        assert!(
            cut >= 190 && late <= 10,
            "cut {cut}, {late} after 200 attempts"
        );
    }

    #[test]
    fn plans_route_only_what_a_node_serves() {
        let states = vec![RouteState {
            rollout: Uuid::now_v7(),
            finished_at: None,
            kind: "resize".into(),
            canary: Some("v2".into()),
            stable: None,
            share: 1_000,
            active: true,
        }];
        let mut served = Served::new();
        served.insert("resize".into(), vec![None]);
        served.insert("mail".into(), vec![None]);
        let p = plan(&states, &served);
        assert_eq!(p.kinds, vec!["mail".to_string(), "resize".into()]);
        assert_eq!(p.sampled, vec!["resize".to_string()]);
        let r = &p.routes[0];
        assert!(r.stable_ok && !r.canary_ok);
        assert_eq!(r.threshold, threshold(1_000));
        assert_eq!(
            r.admit(id_with(0, 0)),
            None,
            "a canary job is not for a stable-only node"
        );
        assert_eq!(r.admit(id_with(255, 0)), Some(Some(UNVERSIONED)));
        // A node serving only v2 takes only canary jobs.
        served.insert("resize".into(), vec![Some("v2".into())]);
        let p = plan(&states, &served);
        assert_eq!(p.routes[0].admit(id_with(0, 0)), Some(Some("v2")));
        assert_eq!(p.routes[0].admit(id_with(255, 0)), None);
        // After promotion v2 is pinned: a node without v2 does not claim the kind.
        let promoted = vec![RouteState {
            rollout: Uuid::now_v7(),
            finished_at: None,
            kind: "resize".into(),
            canary: None,
            stable: Some("v2".into()),
            share: 0,
            active: false,
        }];
        served.insert("resize".into(), vec![None]);
        let p = plan(&promoted, &served);
        assert_eq!(p.kinds, vec!["mail".to_string()]);
        served.insert("resize".into(), vec![None, Some("v2".into())]);
        let p = plan(&promoted, &served);
        assert_eq!(p.routes[0].admit(id_with(0, 0)), Some(Some("v2")));
    }

    #[test]
    fn requests_follow_the_states() {
        let spec = RolloutSpec {
            kind: "k".into(),
            version: "v2".into(),
            steps: vec![1_000, 10_000],
            every_secs: 60,
            guard: GuardConfig::default(),
            notify_url: None,
        };
        let now = Utc::now();
        let mut r = Rollout::new(spec, None, "alice", now);
        assert_eq!(r.share, 1_000);
        r.apply(Request::Pause, "bob", now).unwrap();
        assert!(r.apply(Request::Pause, "bob", now).is_err());
        r.apply(Request::Resume, "bob", now).unwrap();
        r.advance(now, Evidence::default());
        assert_eq!(r.state, RolloutState::Promoted);
        assert_eq!(r.share, FULL_SHARE);
        assert!(r.apply(Request::Abort, "bob", now).is_err());
        let actions: Vec<Action> = r.decisions.iter().map(|d| d.action).collect();
        assert_eq!(
            actions,
            [
                Action::Started,
                Action::Paused,
                Action::Resumed,
                Action::Promoted
            ]
        );
    }
}
