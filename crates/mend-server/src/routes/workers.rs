//! The remote worker protocol: workers in any language claim jobs (long-polling), heartbeat
//! their leases, and complete or fail their attempts over HTTP.
//!
//! A remote worker gets what an in-process handler has: checkpoints (saved, and handed back by
//! the next claim), durable cleanups (written down before the work, handed to the next worker
//! that claims the job after a crash, reported done one by one), snooze, fatal errors, panics
//! with their traceback, results, cancellation through the heartbeat answer, release at
//! shutdown, and batched claim and finish. Endings are settled by [`mend::settle`], the same
//! table as in-process attempts.
//!
//! A remote worker is the lease owner `remote:<worker_id>`. Every write is fenced by (job id,
//! attempt, lease owner) exactly as for in-process workers, so a worker that lost its lease
//! gets 409 (or, in a batch, its id under `fenced`) and changes nothing. A worker that vanishes stops heartbeating; when its leases
//! expire the server's rescuer hands the jobs back (error kind `lost`).

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use mend::settle::{settle, Attempt, Ending, Rules, Stop};
use mend::store::{
    CheckpointParams, ClaimParams, CleanupDoneParams, CompleteParams, DeferDurableParams,
    ExtendLeasesParams, Fence, HeldJob, Outcome, OutcomeKind,
};
use mend::JobRow;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ApiError, Problem};
use crate::AppState;

/// Longest long-poll: below the request time limit, so a poll never times out as an error.
const MAX_WAIT_MS: u64 = 20_000;
/// Default and bounds of a remote lease.
const DEFAULT_LEASE_MS: u64 = 30_000;
const MIN_LEASE_MS: u64 = 1_000;
const MAX_LEASE_MS: u64 = 3_600_000;
/// Most jobs one claim hands out.
const MAX_CLAIM: usize = 100;
/// How often a long-poll looks again when no wake-up arrives (jobs falling due, other
/// processes enqueueing).
const POLL_EVERY: Duration = Duration::from_millis(100);

fn owner(worker_id: &str) -> Result<String, ApiError> {
    if worker_id.is_empty()
        || worker_id.len() > 128
        || !worker_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    {
        return Err(ApiError::invalid(
            "worker_id",
            "worker_id must be 1–128 letters, digits, _ - . : (make it unique per worker process)",
        ));
    }
    Ok(format!("remote:{worker_id}"))
}

fn lease(ms: Option<u64>) -> Result<Duration, ApiError> {
    let ms = ms.unwrap_or(DEFAULT_LEASE_MS);
    if !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(&ms) {
        return Err(ApiError::invalid(
            "lease_ms",
            format!("lease_ms must be between {MIN_LEASE_MS} and {MAX_LEASE_MS}; heartbeat well within it"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// `POST /v1/workers/claim`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ClaimRequest {
    /// Unique per worker process.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub worker_id: String,
    /// The queue (default `default`).
    #[schema(pattern = r"^[A-Za-z0-9_.:/-]{1,128}$")]
    pub queue: Option<String>,
    /// The kinds this worker runs (at least one).
    #[schema(value_type = Vec<super::contract::Name>, min_items = 1)]
    pub kinds: Vec<String>,
    /// At most this many jobs (default 1, at most 100).
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "mend::lenient::opt_int")]
    pub limit: Option<usize>,
    /// Wait up to this long for a job when none is available (default 0, at most 20000).
    #[schema(maximum = 20000)]
    #[serde(default, deserialize_with = "mend::lenient::opt_int")]
    pub wait_ms: Option<u64>,
    /// Lease length (default 30000).
    #[schema(minimum = 1000, maximum = 3_600_000)]
    #[serde(default, deserialize_with = "mend::lenient::opt_int")]
    pub lease_ms: Option<u64>,
    /// The handler version this worker runs for some of its kinds (a kind left out: its
    /// unversioned handler; entries for kinds not claimed are ignored). A kind under a rollout
    /// hands this worker only the jobs of the side it serves.
    #[serde(default)]
    pub versions: Vec<KindVersion>,
}

/// A kind and the handler version a remote worker runs for it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct KindVersion {
    /// The kind.
    #[schema(value_type = super::contract::Name)]
    pub kind: String,
    /// The version.
    #[schema(value_type = super::contract::Name)]
    pub version: String,
}

/// Claims jobs of the given kinds for a remote worker, waiting up to `wait_ms` for one.
#[utoipa::path(post, path = "/v1/workers/claim", tag = "workers", request_body = ClaimRequest,
    responses((status = 200, description = "`{\"jobs\": [JobRow], \"lease_owner\": \"remote:<worker_id>\"}`", body = Object), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn claim(
    State(state): State<AppState>,
    body: Result<Json<ClaimRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let owner = owner(&req.worker_id)?;
    if req.kinds.is_empty() {
        return Err(ApiError::invalid(
            "kinds",
            "name the kinds this worker runs, e.g. [\"send_email\"]",
        ));
    }
    let limit = req.limit.unwrap_or(1);
    if limit == 0 || limit > MAX_CLAIM {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be between 1 and {MAX_CLAIM}"),
        ));
    }
    let wait = req.wait_ms.unwrap_or(0);
    if wait > MAX_WAIT_MS {
        return Err(ApiError::invalid(
            "wait_ms",
            format!("wait_ms must be at most {MAX_WAIT_MS}; poll again after it"),
        ));
    }
    let lease = lease(req.lease_ms)?;
    let queue = req
        .queue
        .unwrap_or_else(|| mend::job::DEFAULT_QUEUE.to_owned());
    if !super::jobs::valid_name(&queue) {
        return Err(ApiError::invalid(
            "queue",
            "queue must be 1–128 letters, digits, _ - . : /",
        ));
    }
    if let Some(k) = req.kinds.iter().find(|k| !super::jobs::valid_name(k)) {
        let k: String = k.chars().take(80).collect();
        return Err(ApiError::invalid(
            "kinds",
            format!("{k:?} is not a kind name (1–128 letters, digits, _ - . : /)"),
        ));
    }
    if let Some(bad) = req
        .versions
        .iter()
        .find(|v| !super::jobs::valid_name(&v.kind) || !super::jobs::valid_name(&v.version))
    {
        let (k, v): (String, String) = (
            bad.kind.chars().take(80).collect(),
            bad.version.chars().take(80).collect(),
        );
        return Err(ApiError::invalid(
            "versions",
            format!("each of versions names a kind and a version (1–128 letters, digits, _ - . : /); {k:?}: {v:?} is not that"),
        ));
    }
    let served: mend::rollout::Served = req
        .kinds
        .iter()
        .map(|k| {
            let version = req.versions.iter().rev().find(|v| &v.kind == k);
            (k.clone(), vec![version.map(|v| v.version.clone())])
        })
        .collect();
    if let Some(worker) = &state.worker {
        // Reported as this node's own, so rollouts and `mend doctor` know this worker.
        worker.note_remote_served(&served);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
    let wake = state.store.wakeup();
    loop {
        if !state.is_ready() {
            // Shutting down: hand out nothing, but wait as asked so workers do not spin.
            tokio::time::sleep_until(deadline).await;
            return Ok(Json(ClaimAnswer {
                jobs: Vec::new(),
                lease_owner: &owner,
            })
            .into_response());
        }
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let routes = state.remote_claims.routes(state.store.as_ref()).await?;
        let plan = mend::rollout::plan(&routes, &served);
        let jobs = if plan.claims_nothing() {
            // Every kind asked for is pinned to a version this worker does not run.
            Vec::new()
        } else {
            state
                .store
                .claim(ClaimParams {
                    queue: queue.clone(),
                    kinds: plan.kinds,
                    limit,
                    lease_owner: owner.clone(),
                    lease_duration: lease,
                    now: Utc::now(),
                    routes: plan.routes,
                    ahead: 0,
                })
                .await?
        };
        let now = tokio::time::Instant::now();
        if !jobs.is_empty() || now >= deadline {
            if state.worker.is_some() {
                // Their outcomes go into this node's history (see `finish`).
                state.remote_claims.remember(&jobs);
            }
            return Ok(Json(ClaimAnswer {
                jobs: jobs.iter().map(claimed).collect(),
                lease_owner: &owner,
            })
            .into_response());
        }
        let nap = POLL_EVERY.min(deadline - now);
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// The answer to a claim: the jobs, and the lease owner the worker's later calls name.
#[derive(Serialize)]
struct ClaimAnswer<'a> {
    jobs: Vec<Claimed<'a>>,
    lease_owner: &'a str,
}

/// A claimed job as a remote worker gets it: the row (with its `checkpoint` to resume from and
/// the `pending_cleanups` a lost attempt left behind), plus `stop_after_cleanups`: when set, the
/// job was kept alive only so those cleanups could run (out of attempts, or quarantined), and
/// the worker reports it `fatal` with that message once they ran, without running the handler.
/// Written straight from the row (no JSON tree in between: this is the remote hot path).
#[derive(Serialize)]
struct Claimed<'a> {
    #[serde(flatten)]
    job: &'a JobRow,
    /// `checkpoint: null` spelled out when the row has none (the row leaves it out): a remote
    /// worker should not have to know which fields the row omits.
    #[serde(rename = "checkpoint", skip_serializing_if = "Option::is_none")]
    no_checkpoint: Option<()>,
    /// Likewise `pending_cleanups: []`.
    #[serde(rename = "pending_cleanups", skip_serializing_if = "Option::is_none")]
    no_cleanups: Option<[(); 0]>,
    stop_after_cleanups: Option<String>,
}

fn claimed(job: &JobRow) -> Claimed<'_> {
    let stop = if job.pending_cleanups.is_empty() {
        None
    } else {
        match mend::settle::after_recovery(
            &Attempt::of(job),
            mend::job::DEFAULT_QUARANTINE_AFTER_LOST,
        ) {
            Some(Ending::Fatal { message }) => Some(message),
            _ => None,
        }
    };
    Claimed {
        job,
        no_checkpoint: job.checkpoint.is_none().then_some(()),
        no_cleanups: job.pending_cleanups.is_empty().then_some([]),
        stop_after_cleanups: stop,
    }
}

/// `POST /v1/workers/heartbeat`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HeartbeatRequest {
    /// The worker.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub worker_id: String,
    /// The attempts it is running.
    pub jobs: Vec<HeldAttempt>,
    /// New lease length from now (default 30000).
    #[schema(minimum = 1000, maximum = 3_600_000)]
    #[serde(default, deserialize_with = "mend::lenient::opt_int")]
    pub lease_ms: Option<u64>,
}

/// An attempt a worker holds.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HeldAttempt {
    /// The job.
    pub id: Uuid,
    /// The attempt number it got from the claim.
    #[serde(deserialize_with = "mend::lenient::int")]
    pub attempt: i32,
}

/// Extends a remote worker's leases; reports attempts it lost and cancel requests.
#[utoipa::path(post, path = "/v1/workers/heartbeat", tag = "workers", request_body = HeartbeatRequest,
    responses((status = 200, description = "`{\"lost\": [{id, attempt}], \"cancel_requested\": [id]}`", body = Object), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    body: Result<Json<HeartbeatRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body?;
    let owner = owner(&req.worker_id)?;
    let lease = chrono::Duration::from_std(lease(req.lease_ms)?).unwrap_or(chrono::Duration::MAX);
    let r = state
        .store
        .extend_leases(ExtendLeasesParams {
            lease_owner: owner,
            jobs: req
                .jobs
                .iter()
                .map(|j| HeldJob {
                    id: j.id,
                    attempt: j.attempt,
                })
                .collect(),
            expires_at: Utc::now() + lease,
        })
        .await?;
    let lost: Vec<_> = r
        .lost
        .iter()
        .map(|h| serde_json::json!({"id": h.id, "attempt": h.attempt}))
        .collect();
    Ok(Json(
        serde_json::json!({ "lost": lost, "cancel_requested": r.cancel_requested }),
    ))
}

/// Most outcomes one `POST /v1/workers/finish` records.
const MAX_FINISH: usize = 1000;
/// Longest snooze or retry delay a remote worker may ask for (30 days).
const MAX_DELAY_MS: u64 = 30 * 24 * 3_600_000;
/// Most bytes of a traceback kept in the error (its end: where it was raised).
const MAX_TRACEBACK: usize = 3000;

/// How a remote attempt failed.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum FailKind {
    /// The handler raised or returned an error.
    #[default]
    Error,
    /// An uncaught exception or a crash inside the handler (recorded as kind `panic`).
    Panic,
    /// The handler ran past its timeout.
    Timeout,
}

/// `POST /v1/jobs/{id}/complete`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CompleteRequest {
    /// The worker.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub worker_id: String,
    /// The attempt it ran.
    #[serde(deserialize_with = "mend::lenient::int")]
    pub attempt: i32,
    /// Stored as the job's result.
    #[schema(value_type = Value, required = false)]
    pub result: Option<serde_json::Value>,
}

/// `POST /v1/jobs/{id}/fail`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FailRequest {
    /// The worker.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub worker_id: String,
    /// The attempt it ran.
    #[serde(deserialize_with = "mend::lenient::int")]
    pub attempt: i32,
    /// What went wrong (not blank).
    #[schema(pattern = r"\S")]
    pub error: String,
    /// `error` (default), `panic` (an uncaught exception) or `timeout`.
    #[serde(default)]
    pub kind: FailKind,
    /// The stack trace, stored after the message (its last 3000 bytes).
    pub traceback: Option<String>,
    /// Do not retry: discard the job.
    #[serde(default)]
    pub fatal: bool,
    /// Retry after this long instead of the default backoff.
    #[schema(maximum = 2_592_000_000_u64)]
    #[serde(default, deserialize_with = "mend::lenient::opt_int")]
    pub retry_after_ms: Option<u64>,
}

/// `POST /v1/jobs/{id}/snooze`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SnoozeRequest {
    /// The worker.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub worker_id: String,
    /// The attempt it ran.
    #[serde(deserialize_with = "mend::lenient::int")]
    pub attempt: i32,
    /// Run again after this long; the attempt does not count.
    #[schema(maximum = 2_592_000_000_u64)]
    #[serde(deserialize_with = "mend::lenient::int")]
    pub delay_ms: u64,
}

/// `POST /v1/jobs/{id}/release`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReleaseRequest {
    /// The worker.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub worker_id: String,
    /// The attempt it stops.
    #[serde(deserialize_with = "mend::lenient::int")]
    pub attempt: i32,
}

/// What a batched outcome says happened.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(super) enum FinishOutcome {
    /// Completed (with `result`).
    Completed,
    /// Failed (with `error`, and `kind`, `traceback`, `fatal`, `retry_after_ms`).
    Failed,
    /// Run again after `delay_ms`; the attempt does not count.
    Snoozed,
    /// Stopped at shutdown: back to `available`, the attempt does not count.
    Released,
    /// Stopped because a cancel was requested (the heartbeat said so).
    Cancelled,
}

/// One attempt's outcome in `POST /v1/workers/finish`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FinishItem {
    /// The job.
    pub id: Uuid,
    /// The attempt the worker ran.
    #[serde(deserialize_with = "mend::lenient::int")]
    pub attempt: i32,
    /// How it ended.
    pub outcome: FinishOutcome,
    /// `completed`: stored as the job's result.
    #[schema(value_type = Value, required = false)]
    pub result: Option<serde_json::Value>,
    /// `failed` (required then): what went wrong, not blank.
    #[schema(pattern = r"\S")]
    pub error: Option<String>,
    /// `failed`: `error` (default), `panic` or `timeout`.
    #[serde(default)]
    pub kind: FailKind,
    /// `failed`: the stack trace.
    pub traceback: Option<String>,
    /// `failed`: do not retry.
    #[serde(default)]
    pub fatal: bool,
    /// `failed`: retry after this long instead of the default backoff.
    #[schema(maximum = 2_592_000_000_u64)]
    #[serde(default, deserialize_with = "mend::lenient::opt_int")]
    pub retry_after_ms: Option<u64>,
    /// `snoozed` (required then): run again after this long.
    #[schema(maximum = 2_592_000_000_u64)]
    #[serde(default, deserialize_with = "mend::lenient::opt_int")]
    pub delay_ms: Option<u64>,
}

/// `POST /v1/workers/finish`: many attempts' outcomes at once.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FinishRequest {
    /// The worker.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub worker_id: String,
    /// At most 1000 outcomes, one per job.
    #[schema(max_items = 1000)]
    pub outcomes: Vec<FinishItem>,
}

/// `POST /v1/jobs/{id}/checkpoint`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckpointRequest {
    /// The worker.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub worker_id: String,
    /// The attempt it runs.
    #[serde(deserialize_with = "mend::lenient::int")]
    pub attempt: i32,
    /// The state to resume from; the next claim of the job hands it back as `checkpoint`.
    #[schema(value_type = Value)]
    pub state: serde_json::Value,
}

/// `POST /v1/jobs/{id}/cleanups`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct DeferRequest {
    /// The worker.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub worker_id: String,
    /// The attempt it runs.
    #[serde(deserialize_with = "mend::lenient::int")]
    pub attempt: i32,
    /// The cleanup's name, as the worker registered it.
    #[schema(pattern = r"^[A-Za-z0-9_.:/-]{1,128}$")]
    pub name: String,
    /// Its arguments.
    #[serde(default)]
    #[schema(value_type = Value, required = false)]
    pub args: serde_json::Value,
}

/// `POST /v1/jobs/{id}/cleanups/{seq}/done`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CleanupDoneRequest {
    /// The worker.
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub worker_id: String,
    /// The attempt it runs now (perhaps later than the cleanup's).
    #[serde(deserialize_with = "mend::lenient::int")]
    pub attempt: i32,
    /// How long the cleanup took, for the timeline.
    #[serde(default, deserialize_with = "mend::lenient::opt_int")]
    pub duration_ms: Option<u64>,
}

fn fenced_out(owner: &str, attempt: i32, id: Uuid) -> ApiError {
    ApiError::conflict(format!(
        "{owner} does not hold attempt {attempt} of job {id} any more (its lease expired and it was rescued, or it was cancelled or finished elsewhere); drop the job"
    ))
}

/// Writes a remote worker's outcome for `attempt` of job `id`, fenced by the worker, and
/// counts it in the dashboard history (the wait and run time from the claim's facts, or from
/// the row after when this server did not hand the attempt out).
async fn record(
    state: &AppState,
    id: Uuid,
    attempt: i32,
    owner: String,
    kind: OutcomeKind,
) -> Result<Json<JobRow>, ApiError> {
    let ended = mend::stats::Ended::of(&kind);
    let r = state
        .store
        .complete_many(CompleteParams {
            outcomes: vec![Outcome {
                fence: Fence::new(id, attempt, owner.clone()),
                kind,
                cleanups: vec![],
            }],
            now: Utc::now(),
        })
        .await?;
    if !r.fenced.is_empty() {
        return Err(fenced_out(&owner, attempt, id));
    }
    let job = super::jobs::load(state, id).await?;
    // The claim's facts when this server handed the attempt out (exact even after a retry
    // moved run_at), else the row's.
    let remembered = state.remote_claims.take([(id, attempt)]).0.remove(&id);
    if let (Some(ended), Some(history)) = (ended, state.worker.as_ref().map(|w| w.history())) {
        let f = remembered.unwrap_or_else(|| crate::remote::RemoteClaims::facts_of(&job));
        let now = Utc::now();
        let wait = f.started.and_then(|s| (s - f.due).to_std().ok());
        let run = f.started.and_then(|s| (now - s).to_std().ok());
        history.record(&f.queue, &f.kind, now, ended, wait, run);
        if let (Some(v), Some(w)) = (&f.version, state.worker.as_ref()) {
            w.record_version_sample(&f.kind, v, ended, run);
        }
    }
    Ok(Json(job))
}

fn delay(ms: u64, field: &str) -> Result<Duration, ApiError> {
    if ms > MAX_DELAY_MS {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be at most {MAX_DELAY_MS} (30 days)"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// The ending a failure report stands for.
fn failure(
    error: Option<String>,
    kind: FailKind,
    traceback: Option<String>,
    fatal: bool,
    retry_after_ms: Option<u64>,
) -> Result<Ending, ApiError> {
    let error = error.unwrap_or_default();
    if error.trim().is_empty() {
        return Err(ApiError::invalid("error", "say what went wrong"));
    }
    let message = match traceback.filter(|t| !t.trim().is_empty()) {
        None => error,
        Some(t) => {
            let mut cut = t.len().saturating_sub(MAX_TRACEBACK);
            while !t.is_char_boundary(cut) {
                cut += 1;
            }
            let more = if cut > 0 { "…" } else { "" };
            format!("{error}\n{more}{}", t[cut..].trim_end())
        }
    };
    let retry_after = retry_after_ms
        .map(|ms| delay(ms, "retry_after_ms"))
        .transpose()?;
    Ok(match kind {
        _ if fatal => Ending::Fatal { message },
        FailKind::Error => Ending::Failed {
            message,
            retry_after,
        },
        FailKind::Panic => Ending::Panicked { message },
        // The worker's own timeout: its message says how long.
        FailKind::Timeout => Ending::Failed {
            message,
            retry_after,
        },
    })
}

/// The outcome to write for `ending`, settled by the same table as in-process attempts. A
/// failure that may be retried needs the job's attempts (one read); the other endings do not.
async fn settle_remote(
    state: &AppState,
    id: Uuid,
    attempt: i32,
    ending: Ending,
    timed_out: bool,
) -> Result<Option<OutcomeKind>, ApiError> {
    let mut version = None;
    let mut kind = String::new();
    let facts = match ending {
        Ending::Failed { .. } | Ending::Panicked { .. } => match state.store.get(id).await? {
            Some(job) => {
                version.clone_from(&job.version);
                kind.clone_from(&job.kind);
                Attempt {
                    attempt,
                    ..Attempt::of(&job)
                }
            }
            None => return Ok(None),
        },
        _ => Attempt {
            attempt,
            max_attempts: i32::MAX,
            lost_before: 0,
            has_pending_cleanups: false,
        },
    };
    let settled = settle(
        ending,
        &facts,
        &[],
        &Rules {
            now: Utc::now(),
            backoff: &|n| mend::RetryPolicy::backoff(&mend::ExponentialBackoff::default(), n),
            quarantine_after_lost: 0,
        },
    );
    let mut outcome = settled.outcome;
    if version.is_some() {
        let routes = state.remote_claims.routes(state.store.as_ref()).await?;
        let canary = mend::rollout::is_canary(&routes, &kind, version.as_deref());
        if let Some(o) = outcome.as_mut() {
            mend::rollout::hold_canary_retry(canary, o, Utc::now());
        }
    }
    if let Some(error) = outcome.as_mut().and_then(OutcomeKind::error_mut) {
        error.version = version;
    }
    if timed_out {
        // Recorded as a timeout, with the worker's own words.
        if let Some(OutcomeKind::Retry { error, .. } | OutcomeKind::Discard { error }) =
            outcome.as_mut()
        {
            error.kind = mend::ErrorKind::Timeout;
        }
    }
    Ok(outcome)
}

/// Completes a remote worker's attempt (fenced by worker and attempt).
#[utoipa::path(post, path = "/v1/jobs/{id}/complete", tag = "workers", request_body = CompleteRequest, params(("id" = Uuid, Path)),
    responses((status = 200, body = JobRow), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn complete(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<CompleteRequest>, JsonRejection>,
) -> Result<Json<JobRow>, ApiError> {
    let id = super::jobs::parse_id(id)?;
    let Json(req) = body?;
    let owner = owner(&req.worker_id)?;
    let result = req.result.filter(|v| !v.is_null());
    let kind = OutcomeKind::Completed { result };
    record(&state, id, req.attempt, owner, kind).await
}

/// Fails a remote worker's attempt: retried with backoff (or `retry_after_ms`), or discarded
/// when `fatal` or out of attempts. `kind: "panic"` records an uncaught exception as a panic,
/// with its `traceback`; its durable cleanups should have been run (and reported done) first.
#[utoipa::path(post, path = "/v1/jobs/{id}/fail", tag = "workers", request_body = FailRequest, params(("id" = Uuid, Path)),
    responses((status = 200, body = JobRow), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn fail(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<FailRequest>, JsonRejection>,
) -> Result<Json<JobRow>, ApiError> {
    let id = super::jobs::parse_id(id)?;
    let Json(req) = body?;
    let owner = owner(&req.worker_id)?;
    let timed_out = matches!(req.kind, FailKind::Timeout);
    let ending = failure(
        Some(req.error),
        req.kind,
        req.traceback,
        req.fatal,
        req.retry_after_ms,
    )?;
    let Some(kind) = settle_remote(&state, id, req.attempt, ending, timed_out).await? else {
        return Err(ApiError::not_found(format!("no job {id}")));
    };
    record(&state, id, req.attempt, owner, kind).await
}

/// Snoozes a remote worker's attempt: the job runs again after `delay_ms`, and the attempt
/// does not count. Its durable cleanups stay written down.
#[utoipa::path(post, path = "/v1/jobs/{id}/snooze", tag = "workers", request_body = SnoozeRequest, params(("id" = Uuid, Path)),
    responses((status = 200, body = JobRow), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn snooze(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<SnoozeRequest>, JsonRejection>,
) -> Result<Json<JobRow>, ApiError> {
    let id = super::jobs::parse_id(id)?;
    let Json(req) = body?;
    let owner = owner(&req.worker_id)?;
    let run_at = after_now(delay(req.delay_ms, "delay_ms")?);
    record(
        &state,
        id,
        req.attempt,
        owner,
        OutcomeKind::Snooze { run_at },
    )
    .await
}

/// Releases a remote worker's attempt at shutdown: the job goes back to `available` at once
/// and the attempt does not count.
#[utoipa::path(post, path = "/v1/jobs/{id}/release", tag = "workers", request_body = ReleaseRequest, params(("id" = Uuid, Path)),
    responses((status = 200, body = JobRow), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn release(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<ReleaseRequest>, JsonRejection>,
) -> Result<Json<JobRow>, ApiError> {
    let id = super::jobs::parse_id(id)?;
    let Json(req) = body?;
    let owner = owner(&req.worker_id)?;
    record(&state, id, req.attempt, owner, OutcomeKind::Release).await
}

fn after_now(d: Duration) -> chrono::DateTime<Utc> {
    let now = Utc::now();
    now.checked_add_signed(chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
}

/// Records many attempts' outcomes in one request (few transactions), each fenced by (id,
/// attempt, worker): the answer lists the ids recorded (`applied`) and the ones refused because
/// the worker no longer holds them (`fenced`: drop those jobs).
#[utoipa::path(post, path = "/v1/workers/finish", tag = "workers", request_body = FinishRequest,
    responses((status = 200, description = "`{\"applied\": [id], \"fenced\": [id]}`", body = Object), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn finish(
    State(state): State<AppState>,
    body: Result<Json<FinishRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(req) = body?;
    let owner = owner(&req.worker_id)?;
    if req.outcomes.len() > MAX_FINISH {
        return Err(ApiError::invalid(
            "outcomes",
            format!("at most {MAX_FINISH} outcomes per request; send the rest in another"),
        ));
    }
    // One outcome per job: an attempt ends once, and the stores report by job id.
    let mut seen = std::collections::HashSet::with_capacity(req.outcomes.len());
    if let Some(dup) = req.outcomes.iter().find(|o| !seen.insert(o.id)) {
        return Err(ApiError::invalid(
            "outcomes",
            format!("job {} is listed twice; send one outcome per job", dup.id),
        ));
    }
    // Delays are checked whatever the outcome, so a value the contract refuses is never
    // taken just because this outcome does not use it.
    for item in &req.outcomes {
        if let Some(ms) = item.delay_ms {
            delay(ms, "delay_ms")?;
        }
        if let Some(ms) = item.retry_after_ms {
            delay(ms, "retry_after_ms")?;
        }
    }
    let mut outcomes = Vec::with_capacity(req.outcomes.len());
    let mut missing = Vec::new();
    for item in req.outcomes {
        let kind = match item.outcome {
            FinishOutcome::Completed => Some(OutcomeKind::Completed {
                result: item.result.filter(|v| !v.is_null()),
            }),
            FinishOutcome::Released => Some(OutcomeKind::Release),
            FinishOutcome::Snoozed => {
                let Some(ms) = item.delay_ms else {
                    return Err(ApiError::invalid(
                        "delay_ms",
                        format!("job {}: a snoozed outcome needs delay_ms", item.id),
                    ));
                };
                Some(OutcomeKind::Snooze {
                    run_at: after_now(delay(ms, "delay_ms")?),
                })
            }
            FinishOutcome::Cancelled => {
                settle_remote(
                    &state,
                    item.id,
                    item.attempt,
                    Ending::Stopped(Stop::Cancel),
                    false,
                )
                .await?
            }
            FinishOutcome::Failed => {
                let timed_out = matches!(item.kind, FailKind::Timeout);
                let ending = failure(
                    item.error,
                    item.kind,
                    item.traceback,
                    item.fatal,
                    item.retry_after_ms,
                )?;
                settle_remote(&state, item.id, item.attempt, ending, timed_out).await?
            }
        };
        match kind {
            Some(kind) => outcomes.push(Outcome {
                fence: Fence::new(item.id, item.attempt, owner.clone()),
                kind,
                cleanups: vec![],
            }),
            None => missing.push(item.id),
        }
    }
    // The dashboard's history needs each job's queue, kind, due time and start: remembered
    // from the claim when it went through this server, else read while the jobs still run
    // (one statement); counted once the outcomes are applied.
    let history = state.worker.as_ref().map(|w| w.history());
    let ended: std::collections::HashMap<Uuid, mend::stats::Ended> = if history.is_some() {
        outcomes
            .iter()
            .filter_map(|o| Some((o.fence.id, mend::stats::Ended::of(&o.kind)?)))
            .collect()
    } else {
        Default::default()
    };
    let mut facts = std::collections::HashMap::new();
    if history.is_some() {
        let (found, unknown) = state
            .remote_claims
            .take(outcomes.iter().map(|o| (o.fence.id, o.fence.attempt)));
        facts = found;
        let unknown: Vec<Uuid> = unknown
            .into_iter()
            .filter(|id| ended.contains_key(id))
            .collect();
        if !unknown.is_empty() {
            for job in state.store.get_many(unknown).await? {
                facts.insert(job.id, crate::remote::RemoteClaims::facts_of(&job));
            }
        }
    }
    let r = if outcomes.is_empty() {
        mend::store::CompleteResult::default()
    } else {
        state
            .store
            .complete_many(CompleteParams {
                outcomes,
                now: Utc::now(),
            })
            .await?
    };
    if let Some(history) = history {
        let now = Utc::now();
        let applied: std::collections::HashSet<&Uuid> = r.applied.iter().collect();
        for (id, f) in facts.iter().filter(|(id, _)| applied.contains(id)) {
            if let Some(e) = ended.get(id) {
                let wait = f.started.and_then(|s| (s - f.due).to_std().ok());
                let run = f.started.and_then(|s| (now - s).to_std().ok());
                history.record(&f.queue, &f.kind, now, *e, wait, run);
                if let (Some(v), Some(w)) = (&f.version, state.worker.as_ref()) {
                    w.record_version_sample(&f.kind, v, *e, run);
                }
            }
        }
    }
    let mut fenced = r.fenced;
    fenced.extend(missing);
    Ok(Json(
        serde_json::json!({ "applied": r.applied, "fenced": fenced }),
    ))
}

/// Saves a checkpoint for a running attempt; the next claim of the job (after a crash, a
/// failure or a snooze) hands it back as `checkpoint`.
#[utoipa::path(post, path = "/v1/jobs/{id}/checkpoint", tag = "workers", request_body = CheckpointRequest, params(("id" = Uuid, Path)),
    responses((status = 200, description = "`{\"saved\": true}`", body = Object), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn checkpoint(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<CheckpointRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = super::jobs::parse_id(id)?;
    let Json(req) = body?;
    let owner = owner(&req.worker_id)?;
    let saved = state
        .store
        .checkpoint(CheckpointParams {
            fence: Fence::new(id, req.attempt, owner.clone()),
            state: req.state,
        })
        .await?;
    if !saved {
        return Err(fenced_out(&owner, req.attempt, id));
    }
    Ok(Json(serde_json::json!({ "saved": true })))
}

/// Writes a durable cleanup down with a running job, before the work it undoes. If the worker
/// dies, the next worker that claims the job gets it in `pending_cleanups`, runs it, and
/// reports it done; if the attempt fails, its own worker runs it. A completed attempt's
/// cleanups are dropped.
#[utoipa::path(post, path = "/v1/jobs/{id}/cleanups", tag = "workers", request_body = DeferRequest, params(("id" = Uuid, Path)),
    responses((status = 200, description = "`{\"seq\": n}`: report it done under this number", body = Object), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn defer(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<DeferRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = super::jobs::parse_id(id)?;
    let Json(req) = body?;
    let owner = owner(&req.worker_id)?;
    if !super::jobs::valid_name(&req.name) {
        return Err(ApiError::invalid(
            "name",
            "a cleanup name is 1–128 letters, digits, _ - . : /",
        ));
    }
    let seq = state
        .store
        .defer_durable(DeferDurableParams {
            fence: Fence::new(id, req.attempt, owner.clone()),
            name: req.name,
            args: req.args,
        })
        .await?;
    match seq {
        Some(seq) => Ok(Json(serde_json::json!({ "seq": seq }))),
        None => Err(fenced_out(&owner, req.attempt, id)),
    }
}

/// Reports that a durable cleanup ran: it leaves the job's pending ones and is recorded in the
/// timeline. Fenced by the attempt the worker runs now. A cleanup that keeps failing is not
/// reported done; the worker fails the job `fatal` instead, saying which cleanup failed.
#[utoipa::path(post, path = "/v1/jobs/{id}/cleanups/{seq}/done", tag = "workers", request_body = CleanupDoneRequest,
    params(("id" = Uuid, Path), ("seq" = u32, Path, minimum = 0, maximum = 4_294_967_295_u64)),
    responses((status = 200, description = "`{\"done\": true}`", body = Object), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn cleanup_done(
    State(state): State<AppState>,
    path: Result<Path<(String, u32)>, PathRejection>,
    body: Result<Json<CleanupDoneRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path((raw, seq)) = path?;
    let id = super::jobs::parse_id(Ok(Path(raw)))?;
    let Json(req) = body?;
    let owner = owner(&req.worker_id)?;
    let job = super::jobs::load(&state, id).await?;
    let Some(c) = job.pending_cleanups.iter().find(|c| c.seq == seq) else {
        if job.lease_owner.as_deref() == Some(owner.as_str()) && job.attempt == req.attempt {
            // Already reported (a retried request): nothing left to do.
            return Ok(Json(serde_json::json!({ "done": true })));
        }
        return Err(fenced_out(&owner, req.attempt, id));
    };
    let took = req
        .duration_ms
        .map(|ms| format!(" ({ms} ms)"))
        .unwrap_or_default();
    let event = mend::job::TimelineEvent::new(Utc::now(), "cleanup")
        .attempt(req.attempt)
        .node(owner.clone())
        .detail(format!(
            "durable cleanup `{}` of attempt {} ran{took}",
            c.name, c.attempt
        ));
    let done = state
        .store
        .cleanup_done(CleanupDoneParams {
            fence: Fence::new(id, req.attempt, owner.clone()),
            seq,
            event,
        })
        .await?;
    if !done {
        return Err(fenced_out(&owner, req.attempt, id));
    }
    Ok(Json(serde_json::json!({ "done": true })))
}
