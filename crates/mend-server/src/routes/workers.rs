//! The remote worker protocol: workers in any language claim jobs (long-polling), heartbeat
//! their leases, and complete or fail their attempts over HTTP.
//!
//! A remote worker is the lease owner `remote:<worker_id>`. Every write is fenced by (job id,
//! attempt, lease owner) exactly as for in-process workers, so a worker that lost its lease
//! gets 409 and changes nothing. A worker that vanishes stops heartbeating; when its leases
//! expire the server's rescuer hands the jobs back (error kind `lost`).

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::Json;
use chrono::Utc;
use mend::settle::{settle, Attempt, Ending, Rules};
use mend::store::{
    ClaimParams, CompleteParams, ExtendLeasesParams, Fence, HeldJob, Outcome, OutcomeKind,
};
use mend::JobRow;
use serde::Deserialize;
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
    pub worker_id: String,
    /// The queue (default `default`).
    pub queue: Option<String>,
    /// The kinds this worker runs (at least one).
    pub kinds: Vec<String>,
    /// At most this many jobs (default 1, at most 100).
    pub limit: Option<usize>,
    /// Wait up to this long for a job when none is available (default 0, at most 20000).
    pub wait_ms: Option<u64>,
    /// Lease length (default 30000).
    pub lease_ms: Option<u64>,
}

/// Claims jobs of the given kinds for a remote worker, waiting up to `wait_ms` for one.
#[utoipa::path(post, path = "/v1/workers/claim", tag = "workers", request_body = ClaimRequest,
    responses((status = 200, description = "`{\"jobs\": [JobRow], \"lease_owner\": \"remote:<worker_id>\"}`", body = Object), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn claim(
    State(state): State<AppState>,
    body: Result<Json<ClaimRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
    let wake = state.store.wakeup();
    loop {
        if !state.is_ready() {
            // Shutting down: hand out nothing, but wait as asked so workers do not spin.
            tokio::time::sleep_until(deadline).await;
            return Ok(Json(
                serde_json::json!({ "jobs": [], "lease_owner": owner }),
            ));
        }
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let jobs = state
            .store
            .claim(ClaimParams {
                queue: queue.clone(),
                kinds: req.kinds.clone(),
                limit,
                lease_owner: owner.clone(),
                lease_duration: lease,
                now: Utc::now(),
            })
            .await?;
        let now = tokio::time::Instant::now();
        if !jobs.is_empty() || now >= deadline {
            return Ok(Json(
                serde_json::json!({ "jobs": jobs, "lease_owner": owner }),
            ));
        }
        let nap = POLL_EVERY.min(deadline - now);
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// `POST /v1/workers/heartbeat`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HeartbeatRequest {
    /// The worker.
    pub worker_id: String,
    /// The attempts it is running.
    pub jobs: Vec<HeldAttempt>,
    /// New lease length from now (default 30000).
    pub lease_ms: Option<u64>,
}

/// An attempt a worker holds.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HeldAttempt {
    /// The job.
    pub id: Uuid,
    /// The attempt number it got from the claim.
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

/// `POST /v1/jobs/{id}/complete`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CompleteRequest {
    /// The worker.
    pub worker_id: String,
    /// The attempt it ran.
    pub attempt: i32,
    /// Stored as the job's result.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
}

/// `POST /v1/jobs/{id}/fail`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct FailRequest {
    /// The worker.
    pub worker_id: String,
    /// The attempt it ran.
    pub attempt: i32,
    /// What went wrong.
    pub error: String,
    /// Do not retry: discard the job.
    #[serde(default)]
    pub fatal: bool,
    /// Retry after this long instead of the default backoff.
    pub retry_after_ms: Option<u64>,
}

/// Writes a remote worker's outcome for `attempt` of job `id`, fenced by the worker, and
/// counts it in the dashboard history. `before` is the job as it was while running, when the
/// caller read it (its due time and start give the wait and run time).
async fn record(
    state: &AppState,
    id: Uuid,
    attempt: i32,
    owner: String,
    kind: OutcomeKind,
    before: Option<&JobRow>,
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
        return Err(ApiError::conflict(format!(
            "{owner} does not hold attempt {attempt} of job {id} any more (its lease expired and it was rescued, or it was cancelled or finished elsewhere); drop the job"
        )));
    }
    let job = super::jobs::load(state, id).await?;
    if let (Some(ended), Some(history)) = (ended, state.worker.as_ref().map(|w| w.history())) {
        let now = Utc::now();
        let facts = before.unwrap_or(&job);
        let started = facts.attempted_at;
        let wait = started.and_then(|s| (s - facts.run_at.max(facts.created_at)).to_std().ok());
        let run = started.and_then(|s| (now - s).to_std().ok());
        history.record(&job.queue, &job.kind, now, ended, wait, run);
    }
    Ok(Json(job))
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
    // A completed job keeps its run_at and attempted_at: the row read after is enough.
    record(&state, id, req.attempt, owner, kind, None).await
}

/// Fails a remote worker's attempt: retried with backoff (or `retry_after_ms`), or discarded
/// when `fatal` or out of attempts.
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
    if req.error.trim().is_empty() {
        return Err(ApiError::invalid("error", "say what went wrong"));
    }
    let job = super::jobs::load(&state, id).await?;
    // The same table as an attempt run in-process: settled by `mend::settle`.
    let ending = if req.fatal {
        Ending::Fatal { message: req.error }
    } else {
        Ending::Failed {
            message: req.error,
            retry_after: req
                .retry_after_ms
                .map(|ms| Duration::from_millis(ms.min(MAX_LEASE_MS * 24))),
        }
    };
    let facts = Attempt {
        attempt: req.attempt,
        ..Attempt::of(&job)
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
    let Some(kind) = settled.outcome else {
        return Err(ApiError::conflict(format!(
            "attempt {} of job {id} cannot be failed",
            req.attempt
        )));
    };
    record(&state, id, req.attempt, owner, kind, Some(&job)).await
}
