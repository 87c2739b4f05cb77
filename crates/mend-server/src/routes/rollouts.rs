//! Rollouts (gray release): list them, start one, show one with its decision log, the guard's
//! current window and a time series of both versions, and pause, resume, promote or abort it.
//!
//! A start request is checked completely before the store is touched (`RolloutSpec::validate`
//! and the nodes serving the kind and version, in `mend::maintenance::rollouts::start`), so a
//! refused request changes nothing. Requests go through the same compare-and-set as the
//! guard's own decisions (`mend::maintenance::rollouts::request`).

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use mend::auth::Principal;
use mend::maintenance::rollouts::StartError;
use mend::rollout::{
    judge, Evidence, GuardConfig, Request, Rollout, RolloutError, RolloutSpec, Sample, Verdict,
    UNVERSIONED,
};
use mend::store::VersionSamplesParams;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ApiError, Problem};
use crate::AppState;

/// Fewest buckets in a rollout's time series.
pub(crate) const MIN_SERIES_BUCKETS: i64 = 6;

/// Most buckets in a rollout's time series.
pub(crate) const MAX_SERIES_BUCKETS: i64 = 120;

/// The bucket widths a series may use, in seconds: the narrowest that covers the rollout in
/// at most [`MAX_SERIES_BUCKETS`] buckets.
const SERIES_STEPS: [i64; 9] = [10, 30, 60, 300, 900, 3_600, 6 * 3_600, 86_400, 7 * 86_400];

/// The schema of `steps`: one string, or a list of strings or numbers (percentages).
fn steps_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let share = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(16)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Number));
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(400)),
        )
        .item(
            ArrayBuilder::new()
                .items(share)
                .min_items(Some(1))
                .max_items(Some(mend::rollout::MAX_STEPS)),
        )
        .description(Some(
            "The canary's share at each step: \"5%,25%,100%\", or [\"5%\", \"25%\", \"100%\"], or [5, 25, 100]",
        ))
        .into()
}

/// The body of `POST /v1/rollouts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRollout {
    /// The kind to roll out.
    #[schema(min_length = 1, max_length = 200)]
    pub kind: String,
    /// The canary version: a live node must serve it (`Registry::register_version`).
    #[schema(min_length = 1, max_length = 200)]
    pub version: String,
    /// The canary's share at each step, rising strictly and ending at 100%: either one
    /// string (`"5%,25%,100%"`) or a list (`["5%", "25%", "100%"]`, or numbers in percent
    /// such as `[5, 25, 100]`); up to two decimals.
    #[schema(schema_with = steps_schema)]
    pub steps: serde_json::Value,
    /// How long each step lasts before the guard may advance it: whole seconds in the
    /// duration grammar (`30s`, `10m`, `1h30m`), at most 30 days.
    #[schema(min_length = 1, max_length = 64)]
    pub every: String,
    /// Overrides of the guard's defaults.
    #[serde(default)]
    pub guard: Option<GuardOverrides>,
    /// An `http://` or `https://` URL told of a cut-off.
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub notify_url: Option<String>,
}

/// The guard's settings a start request may change; each left out keeps its default.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GuardOverrides {
    /// The sliding window both versions are compared over (default `10m`): whole seconds in
    /// the duration grammar, at most 7 days.
    #[serde(default)]
    #[schema(max_length = 64)]
    pub window: Option<String>,
    /// Attempts each side needs in the window before the guard judges (default 10).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub min_samples: Option<u64>,
    /// Significance of the one-sided Fisher test (default 0.001), above 0 and below 0.5.
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, exclusive_maximum = 0.5)]
    pub alpha: Option<f64>,
    /// Cut off when the canary's p95 is over this many times stable's (default 2, at least 1).
    #[serde(default)]
    #[schema(minimum = 1.0)]
    pub max_p95_ratio: Option<f64>,
    /// ...and this many milliseconds above it (default 100).
    #[serde(default)]
    #[schema(minimum = 0.0)]
    pub min_p95_delta_ms: Option<f64>,
    /// Also cut off above this failure rate whatever stable does (above 0, below 1).
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, exclusive_maximum = 1.0)]
    pub max_failure_rate: Option<f64>,
}

/// A rollout in a list: its latest decision only, and the guard's current window while it
/// is active.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RolloutSummary {
    /// The rollout as stored, with its latest decision only.
    #[serde(flatten)]
    pub rollout: Rollout,
    /// The guard's current window for both versions, while the rollout is running or
    /// paused (`null` once it ended: `GET /v1/rollouts/{id}` has the last one).
    pub window: Option<WindowView>,
}

/// `{"rollouts": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RolloutsView {
    /// Newest first.
    pub rollouts: Vec<RolloutSummary>,
}

/// The guard's look at the current window, as it would judge now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WindowView {
    /// From (never before the rollout started).
    pub since: DateTime<Utc>,
    /// To (now, or when the rollout ended).
    pub until: DateTime<Utc>,
    /// `not_enough` (too few attempts to judge), `pass` or `breach`.
    pub verdict: &'static str,
    /// Both sides' figures, the p-value and any rule breached.
    pub evidence: Evidence,
}

/// One side's figures in one bucket.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub(crate) struct BucketSide {
    /// Attempts that ended.
    pub attempts: u64,
    /// Of those, failures.
    pub failures: u64,
    /// failures / attempts; `null` without attempts.
    pub failure_rate: Option<f64>,
    /// Run-time p95 in milliseconds; `null` without timed attempts.
    pub p95_ms: Option<f64>,
}

/// One bucket of a rollout's time series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SeriesBucket {
    /// Its start.
    pub at: DateTime<Utc>,
    /// The canary version's figures.
    pub canary: BucketSide,
    /// The stable version's figures.
    pub stable: BucketSide,
}

/// Both versions over time since the rollout started.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SeriesView {
    /// The first bucket's start.
    pub since: DateTime<Utc>,
    /// The end of the last bucket (now, or when the rollout ended).
    pub until: DateTime<Utc>,
    /// The width of a bucket, in seconds (10 s to 7 days, so that at most 120 buckets cover
    /// the rollout; a longer one shows its latest 120; there are at least 6, the ones before
    /// the rollout started being empty).
    pub step_secs: i64,
    /// Every bucket, empty ones included, oldest first.
    pub buckets: Vec<SeriesBucket>,
}

/// A rollout with its whole decision log, the current window and the time series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RolloutDetail {
    /// The rollout as stored.
    #[serde(flatten)]
    pub rollout: Rollout,
    /// The guard's current window.
    pub window: WindowView,
    /// Both versions over time.
    pub series: SeriesView,
}

/// A rollout error as an answer: refused input 422 naming its field, no such rollout 404,
/// a state that does not allow the request 409.
pub(crate) fn rollout_error(e: StartError) -> ApiError {
    match e {
        StartError::Rollout(RolloutError::Invalid(m)) => ApiError::invalid(field_of(&m), m),
        StartError::Rollout(e @ RolloutError::NotFound(_)) => ApiError::not_found(e.to_string()),
        StartError::Rollout(RolloutError::Conflict(m)) => ApiError::conflict(m),
        StartError::Store(e) => e.into(),
    }
}

/// The field a message of `RolloutSpec::validate` or `start` is about (their messages name
/// it first, in words).
fn field_of(message: &str) -> &'static str {
    let m = message;
    if m.starts_with("kind") || m.starts_with("no live node serves kind") {
        "kind"
    } else if m.starts_with("version")
        || m.starts_with("no live node serves version")
        || m.contains("is already the stable version")
    {
        "version"
    } else if m.contains("step interval") {
        "every"
    } else if m.starts_with("notify_url") {
        "notify_url"
    } else if m.starts_with("guard window") {
        "guard.window"
    } else if let Some(rest) = m.strip_prefix("guard ") {
        match rest.split_whitespace().next() {
            Some("min_samples") => "guard.min_samples",
            Some("alpha") => "guard.alpha",
            Some("max_p95_ratio") => "guard.max_p95_ratio",
            Some("min_p95_delta_ms") => "guard.min_p95_delta_ms",
            Some("max_failure_rate") => "guard.max_failure_rate",
            _ => "guard",
        }
    } else {
        "steps"
    }
}

/// Whole seconds from a duration in the project's grammar; `what` names it in messages.
fn whole_seconds(field: &str, what: &str, text: &str) -> Result<u64, ApiError> {
    let d = mend::unique::parse_period(text)
        .map_err(|e| ApiError::invalid(field, format!("{field}: {e}")))?;
    if d.is_zero() || d.subsec_millis() != 0 {
        return Err(ApiError::invalid(
            field,
            format!("{field}: {what} must be a positive whole number of seconds, got {text:?}"),
        ));
    }
    Ok(d.as_secs())
}

/// The steps of a start request, in basis points.
fn parse_steps(value: &serde_json::Value) -> Result<Vec<u32>, ApiError> {
    let bad = |m: String| ApiError::invalid("steps", m);
    match value {
        serde_json::Value::String(s) => {
            mend::rollout::parse_steps(s).map_err(|e| bad(format!("steps: {e}")))
        }
        serde_json::Value::Array(items) => {
            if items.len() > mend::rollout::MAX_STEPS {
                return Err(bad(format!(
                    "steps: a rollout needs 1 to {} steps, got {}",
                    mend::rollout::MAX_STEPS,
                    items.len()
                )));
            }
            items
                .iter()
                .map(|item| match item {
                    serde_json::Value::String(s) => mend::rollout::parse_share(s.trim()),
                    // A number is a percentage; its text goes through the same parser, so
                    // 12.5 and "12.5%" agree and 1e3 is refused like "1e3".
                    serde_json::Value::Number(n) => mend::rollout::parse_share(&n.to_string()),
                    other => Err(RolloutError::Invalid(format!(
                        "`{other}` is not a share: write a percentage such as 5% or 12.5"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("steps: {e}")))
        }
        other => Err(bad(format!(
            "steps must be a string such as \"5%,25%,100%\" or a list such as [\"5%\", \"25%\", \"100%\"], got {other}"
        ))),
    }
}

/// The spec a start request asks for, checked field by field.
fn spec_of(body: StartRollout) -> Result<RolloutSpec, ApiError> {
    let steps = parse_steps(&body.steps)?;
    let every_secs = whole_seconds("every", "the step interval", &body.every)?;
    let mut guard = GuardConfig::default();
    if let Some(g) = body.guard {
        if let Some(w) = &g.window {
            guard.window_secs = whole_seconds("guard.window", "the guard window", w)?;
        }
        if let Some(v) = g.min_samples {
            guard.min_samples = v;
        }
        if let Some(v) = g.alpha {
            guard.alpha = v;
        }
        if let Some(v) = g.max_p95_ratio {
            guard.max_p95_ratio = v;
        }
        if let Some(v) = g.min_p95_delta_ms {
            guard.min_p95_delta_ms = v;
        }
        guard.max_failure_rate = g.max_failure_rate;
    }
    let spec = RolloutSpec {
        kind: body.kind,
        version: body.version,
        steps,
        every_secs,
        guard,
        notify_url: body.notify_url,
    };
    spec.validate()
        .map_err(|e| rollout_error(StartError::Rollout(e)))?;
    Ok(spec)
}

fn rollout_id(p: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(id) = p?;
    Ok(id)
}

fn actor(principal: Option<Extension<Principal>>) -> String {
    principal.map_or_else(|| crate::tokens::LOCAL_NAME.to_owned(), |p| p.0.name)
}

/// The side of a sample row: the canary, stable, or neither (another version).
fn side_of(r: &Rollout, version: Option<&str>) -> Option<bool> {
    let v = version.unwrap_or(UNVERSIONED);
    let stable = r.stable.as_deref().unwrap_or(UNVERSIONED);
    if v == r.canary {
        Some(true)
    } else if v == stable {
        Some(false)
    } else {
        None
    }
}

fn bucket_side(s: &Sample) -> BucketSide {
    BucketSide {
        attempts: s.attempts,
        failures: s.failures,
        failure_rate: (s.attempts > 0).then(|| s.failures as f64 / s.attempts as f64),
        p95_ms: s.run.quantile_ms(0.95),
    }
}

/// The end of what a rollout's figures cover: now while it is active, else when it ended.
fn end_of(r: &Rollout, now: DateTime<Utc>) -> DateTime<Utc> {
    r.finished_at.unwrap_or(now).min(now).max(r.started_at)
}

/// Both versions per bucket since `r` started (see [`SeriesView`]).
pub(crate) async fn series(
    state: &AppState,
    r: &Rollout,
    now: DateTime<Utc>,
) -> Result<SeriesView, ApiError> {
    let end = end_of(r, now);
    let span = (end - r.started_at).num_seconds().max(1);
    let step = SERIES_STEPS
        .iter()
        .copied()
        .find(|s| (span + *s - 1) / *s <= MAX_SERIES_BUCKETS)
        .unwrap_or(SERIES_STEPS[SERIES_STEPS.len() - 1]);
    // A few buckets at least, so a young rollout still draws a line (those before its
    // start are empty).
    let n = ((span + step - 1) / step).clamp(MIN_SERIES_BUCKETS, MAX_SERIES_BUCKETS);
    let since = end - chrono::Duration::seconds(n * step);
    let rows = state
        .store
        .version_samples(VersionSamplesParams {
            kind: r.kind.clone(),
            since: since.max(r.started_at),
        })
        .await?;
    let len = usize::try_from(n).unwrap_or(1);
    let mut canary = vec![Sample::default(); len];
    let mut stable = vec![Sample::default(); len];
    for row in rows {
        if row.at > end {
            continue;
        }
        let Some(is_canary) = side_of(r, row.version.as_deref()) else {
            continue;
        };
        let i = usize::try_from((row.at - since).num_seconds() / step)
            .unwrap_or(0)
            .min(len - 1);
        let side = if is_canary {
            &mut canary[i]
        } else {
            &mut stable[i]
        };
        side.add(&Sample {
            attempts: row.attempts,
            failures: row.failures,
            run: row.run,
        });
    }
    let buckets = canary
        .iter()
        .zip(&stable)
        .enumerate()
        .map(|(i, (c, s))| SeriesBucket {
            at: since + chrono::Duration::seconds(i as i64 * step),
            canary: bucket_side(c),
            stable: bucket_side(s),
        })
        .collect();
    Ok(SeriesView {
        since,
        until: end,
        step_secs: step,
        buckets,
    })
}

/// The guard's window of `r` as it would judge now (or as it stood when `r` ended).
pub(crate) async fn window(
    state: &AppState,
    r: &Rollout,
    now: DateTime<Utc>,
) -> Result<WindowView, ApiError> {
    let end = end_of(r, now);
    let (canary, stable) =
        mend::maintenance::rollouts::window(state.store.as_ref(), r, end).await?;
    let (verdict, evidence) = judge(&r.guard, &canary, &stable);
    let span = chrono::Duration::seconds(i64::try_from(r.guard.window_secs).unwrap_or(i64::MAX));
    Ok(WindowView {
        since: end
            .checked_sub_signed(span)
            .unwrap_or(r.started_at)
            .max(r.started_at),
        until: end,
        verdict: match verdict {
            Verdict::NotEnough => "not_enough",
            Verdict::Pass => "pass",
            Verdict::Breach => "breach",
        },
        evidence,
    })
}

/// A rollout with its log, window and series.
pub(crate) async fn detail(state: &AppState, rollout: Rollout) -> Result<RolloutDetail, ApiError> {
    let now = Utc::now();
    let window = window(state, &rollout, now).await?;
    let series = series(state, &rollout, now).await?;
    Ok(RolloutDetail {
        rollout,
        window,
        series,
    })
}

/// Every rollout, newest first (at most 500), each with its latest decision only; an active
/// one (at most one per kind) also with the guard's current window for both versions.
#[utoipa::path(get, path = "/v1/rollouts", tag = "rollouts",
    responses((status = 200, body = RolloutsView)))]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<RolloutsView>, ApiError> {
    Ok(Json(RolloutsView {
        rollouts: summaries(&state).await?,
    }))
}

/// The list's rollouts (see [`list`]).
pub(crate) async fn summaries(state: &AppState) -> Result<Vec<RolloutSummary>, ApiError> {
    let now = Utc::now();
    let mut out = Vec::new();
    for mut r in state.store.rollout_list().await? {
        let keep = r.decisions.len().saturating_sub(1);
        r.decisions.drain(..keep);
        let window = if r.state.is_active() {
            Some(window(state, &r, now).await?)
        } else {
            None
        };
        out.push(RolloutSummary { rollout: r, window });
    }
    Ok(out)
}

/// Starts a rollout of a canary version at its first step. Refused (422, the field named)
/// when the spec is wrong or no live node serves the kind or the version; 409 while the kind
/// has an active rollout. Nothing is stored when refused.
#[utoipa::path(post, path = "/v1/rollouts", tag = "rollouts", request_body = StartRollout,
    responses((status = 201, body = RolloutDetail),
              (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn start(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    body: Result<Json<StartRollout>, JsonRejection>,
) -> Result<(StatusCode, Json<RolloutDetail>), ApiError> {
    let Json(body) = body?;
    let spec = spec_of(body)?;
    let who = actor(principal);
    let r = mend::maintenance::rollouts::start(state.store.as_ref(), spec, &who, Utc::now())
        .await
        .map_err(rollout_error)?;
    routes_changed(&state);
    tracing::info!(rollout = %r.id, kind = %r.kind, canary = %r.canary, share = r.share, actor = %who, "rollout started");
    Ok((StatusCode::CREATED, Json(detail(&state, r).await?)))
}

/// One rollout with its whole decision log, the guard's current window for both versions,
/// and both versions' attempts, failures, failure rate and p95 per bucket since it started.
#[utoipa::path(get, path = "/v1/rollouts/{id}", tag = "rollouts",
    params(("id" = Uuid, Path, description = "Rollout id")),
    responses((status = 200, body = RolloutDetail)))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<RolloutDetail>, ApiError> {
    let id = rollout_id(id)?;
    let r = state
        .store
        .rollout_get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no rollout {id}")))?;
    Ok(Json(detail(&state, r).await?))
}

/// A rollout changed through this server: its remote workers and its own worker obey at once,
/// not at the next refresh.
fn routes_changed(state: &AppState) {
    state.remote_claims.forget_routes();
    if let Some(worker) = &state.worker {
        worker.replan();
    }
}

async fn act(
    state: AppState,
    principal: Option<Extension<Principal>>,
    id: Result<Path<Uuid>, PathRejection>,
    req: Request,
) -> Result<Json<RolloutDetail>, ApiError> {
    let id = rollout_id(id)?;
    let who = actor(principal);
    let r = mend::maintenance::rollouts::request(state.store.as_ref(), id, req, &who, Utc::now())
        .await
        .map_err(rollout_error)?;
    routes_changed(&state);
    tracing::info!(rollout = %r.id, kind = %r.kind, state = r.state.as_str(), actor = %who, request = ?req, "rollout changed by hand");
    Ok(Json(detail(&state, r).await?))
}

/// Pauses a running rollout: its steps stop advancing; the canary keeps its share and the
/// guard keeps watching (and may still cut it off). 409 unless running.
#[utoipa::path(post, path = "/v1/rollouts/{id}/pause", tag = "rollouts",
    params(("id" = Uuid, Path, description = "Rollout id")),
    responses((status = 200, body = RolloutDetail),
              (status = 409, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<RolloutDetail>, ApiError> {
    act(state, principal, id, Request::Pause).await
}

/// Resumes a paused rollout: its current step lasts a whole interval from now. 409 unless
/// paused.
#[utoipa::path(post, path = "/v1/rollouts/{id}/resume", tag = "rollouts",
    params(("id" = Uuid, Path, description = "Rollout id")),
    responses((status = 200, body = RolloutDetail),
              (status = 409, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<RolloutDetail>, ApiError> {
    act(state, principal, id, Request::Resume).await
}

/// Promotes the canary now: it becomes the kind's stable version on every node within a
/// heartbeat. 409 unless running or paused.
#[utoipa::path(post, path = "/v1/rollouts/{id}/promote", tag = "rollouts",
    params(("id" = Uuid, Path, description = "Rollout id")),
    responses((status = 200, body = RolloutDetail),
              (status = 409, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn promote(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<RolloutDetail>, ApiError> {
    act(state, principal, id, Request::Promote).await
}

/// Aborts a rollout: the canary's share goes to zero and the jobs it failed are retried on
/// the stable version. 409 unless running or paused.
#[utoipa::path(post, path = "/v1/rollouts/{id}/abort", tag = "rollouts",
    params(("id" = Uuid, Path, description = "Rollout id")),
    responses((status = 200, body = RolloutDetail),
              (status = 409, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn abort(
    State(state): State<AppState>,
    principal: Option<Extension<Principal>>,
    id: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<RolloutDetail>, ApiError> {
    act(state, principal, id, Request::Abort).await
}

/// Per (kind, canary), the latest rollout, for `/metrics`: the list is newest first.
pub(crate) fn latest_per_canary(rollouts: &[Rollout]) -> Vec<&Rollout> {
    let mut seen = BTreeMap::new();
    for r in rollouts {
        seen.entry((r.kind.as_str(), r.canary.as_str()))
            .or_insert(r);
    }
    seen.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_their_fields() {
        for (m, f) in [
            ("kind must be 1 to 200 printable characters, got ``", "kind"),
            ("no live node serves kind `x`; start a worker", "kind"),
            ("no live node serves version `v9` of `x`", "version"),
            (
                "version `v1` is already the stable version of `x`",
                "version",
            ),
            (
                "the step interval must be between 1 second and 30 days",
                "every",
            ),
            (
                "notify_url must be an http:// or https:// URL",
                "notify_url",
            ),
            (
                "guard window must be between 1 second and 7 days",
                "guard.window",
            ),
            (
                "guard alpha must be above 0 and below 0.5, got 0.7",
                "guard.alpha",
            ),
            ("the last step must be 100%", "steps"),
        ] {
            assert_eq!(field_of(m), f, "{m}");
        }
    }

    #[test]
    fn steps_as_text_or_lists() {
        let want = vec![500, 2_500, 10_000];
        for v in [
            serde_json::json!("5%,25%,100%"),
            serde_json::json!(["5%", "25", "100%"]),
            serde_json::json!([5, 25, 100]),
        ] {
            assert_eq!(parse_steps(&v).unwrap(), want, "{v}");
        }
        assert_eq!(
            parse_steps(&serde_json::json!([12.5, 100])).unwrap(),
            vec![1_250, 10_000]
        );
        for v in [
            serde_json::json!(5),
            serde_json::json!([true]),
            serde_json::json!(["-5%"]),
            serde_json::json!([1e3]),
            serde_json::json!("5%,,100%"),
        ] {
            assert_eq!(parse_steps(&v).unwrap_err().field.as_deref(), Some("steps"));
        }
    }

    #[test]
    fn durations_are_whole_positive_seconds() {
        assert_eq!(whole_seconds("every", "x", "10m").unwrap(), 600);
        assert_eq!(whole_seconds("every", "x", "1h30m").unwrap(), 5_400);
        for bad in ["0s", "0", "1500ms", "-5m", "ten", ""] {
            assert!(whole_seconds("every", "x", bad).is_err(), "{bad}");
        }
    }
}
