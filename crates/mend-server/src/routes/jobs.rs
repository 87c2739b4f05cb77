//! Jobs: enqueue (one or a batch, idempotent with `Idempotency-Key`, or unique by kind, args,
//! queue and period), get, list with filters and cursor paging, cancel and retry.
//!
//! Every request is checked completely before the store is touched, and a batch is stored in
//! one transaction, so a bad request never changes stored jobs.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use mend::store::{ListParams, MAX_PAGE};
use mend::{JobRow, JobState, NewJob};
use serde::Deserialize;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{ApiError, Problem};
use crate::{AppState, MAX_BATCH};

/// The header that makes an enqueue idempotent.
pub(super) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Longest time a job may be delayed or limited to (a year and a week: sanity, not policy).
const MAX_DELAY_MS: u64 = 366 * 24 * 3600 * 1000;
const MAX_TIMEOUT_MS: i64 = 7 * 24 * 3600 * 1000;
const MAX_ATTEMPTS_LIMIT: i32 = 10_000;
const MAX_TAGS: usize = 32;
const MAX_NAME: usize = 128;

/// One job to enqueue.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EnqueueRequest {
    /// Which handler runs it.
    #[schema(pattern = r"^[A-Za-z0-9_.:/-]{1,128}$")]
    pub kind: String,
    /// Its input (default `{}`).
    #[schema(value_type = Value, required = false)]
    pub args: Option<serde_json::Value>,
    /// The queue (default `default`).
    #[schema(pattern = r"^[A-Za-z0-9_.:/-]{1,128}$")]
    pub queue: Option<String>,
    /// Lower runs first (default 0).
    #[schema(minimum = -32768, maximum = 32767)]
    #[serde(default, deserialize_with = "mend::lenient::opt_int")]
    pub priority: Option<i16>,
    /// Attempts allowed (default 25).
    #[schema(minimum = 1, maximum = 10000)]
    #[serde(default, deserialize_with = "mend::lenient::opt_int")]
    pub max_attempts: Option<i32>,
    /// Do not run before this RFC 3339 time (not with `delay_ms`).
    #[schema(value_type = Option<chrono::DateTime<Utc>>)]
    pub run_at: Option<String>,
    /// Do not run before this many milliseconds from now (not with `run_at`).
    #[schema(maximum = 31_622_400_000_u64)]
    #[serde(default, deserialize_with = "mend::lenient::opt_int")]
    pub delay_ms: Option<u64>,
    /// Per-attempt time limit.
    #[schema(minimum = 1, maximum = 604_800_000)]
    #[serde(default, deserialize_with = "mend::lenient::opt_int")]
    pub timeout_ms: Option<i64>,
    /// Labels for filtering.
    #[schema(value_type = Option<Vec<super::contract::Tag>>, max_items = 32)]
    pub tags: Option<Vec<String>>,
    /// Enqueueing again with the same key returns the first job (same as the
    /// `Idempotency-Key` header; `unique_key` is accepted as an alias).
    #[serde(default, alias = "unique_key")]
    #[schema(pattern = r"^[^\u0000]{1,255}$")]
    pub idempotency_key: Option<String>,
    /// The key it counts under for the per-key limits of its queue, instead of the one each
    /// limit's JSON pointer finds in the args.
    #[schema(pattern = r"^[^\u0000]{1,255}$")]
    pub limit_key: Option<String>,
    /// Make the job unique: a job these options call the same, while it is in their states,
    /// is returned instead (`duplicate: true`, status 200). Not with an idempotency key.
    pub unique: Option<UniqueRequest>,
}

/// How a job is unique (see `mend::unique`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UniqueRequest {
    /// `true`: all args count; a list: only these top-level keys (`customer`) or JSON pointers
    /// (`/order/id`); `false` or absent: args do not count (one job per kind).
    pub by_args: Option<ByArgsRequest>,
    /// Unique within the job's queue (default: across queues).
    pub per_queue: Option<bool>,
    /// One per period, e.g. `1h`, `30m`, `1d` (counted from the epoch, by the job's `run_at`).
    pub period: Option<String>,
    /// The states the existing job holds its key in (default: scheduled, available, running,
    /// retryable); these four must be listed; add completed, cancelled, discarded.
    pub states: Option<Vec<String>>,
}

/// `by_args`: all args, or some.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum ByArgsRequest {
    /// All args (`true`) or none (`false`).
    All(bool),
    /// Only these top-level keys or JSON pointers.
    Keys(Vec<String>),
}

/// The unique options of a request, checked field by field; `at` prefixes the field names.
fn unique_opts(req: UniqueRequest, at: &str) -> Result<mend::UniqueOpts, ApiError> {
    use mend::unique::{arg_pointer, parse_period, UniqueOpts, MAX_ARG_KEYS, MAX_PERIOD};
    let field = |name: &str| format!("{at}unique.{name}");
    let mut opts = UniqueOpts::new();
    match req.by_args {
        None | Some(ByArgsRequest::All(false)) => {}
        Some(ByArgsRequest::All(true)) => opts = opts.by_args(),
        Some(ByArgsRequest::Keys(keys)) => {
            if keys.is_empty() || keys.len() > MAX_ARG_KEYS {
                return Err(ApiError::invalid(
                    field("by_args"),
                    format!(
                        "by_args lists 1–{MAX_ARG_KEYS} args (or is true for all of them); got {}",
                        keys.len()
                    ),
                ));
            }
            for (i, k) in keys.iter().enumerate() {
                arg_pointer(k)
                    .map_err(|e| ApiError::invalid(field(&format!("by_args[{i}]")), e))?;
            }
            opts = opts.by_arg_keys(keys);
        }
    }
    if req.per_queue == Some(true) {
        opts = opts.per_queue();
    }
    if let Some(p) = req.period {
        let d = parse_period(&p).map_err(|e| ApiError::invalid(field("period"), e))?;
        if d.is_zero() || d > MAX_PERIOD {
            return Err(ApiError::invalid(
                field("period"),
                format!(
                    "period must be more than 0 and at most 366d (got {})",
                    shown(&p)
                ),
            ));
        }
        opts = opts.period(d);
    }
    if let Some(states) = req.states {
        let mut parsed = Vec::with_capacity(states.len());
        for (i, s) in states.iter().enumerate() {
            parsed.push(
                s.parse::<JobState>().map_err(|e| {
                    ApiError::invalid(field(&format!("states[{i}]")), e.to_string())
                })?,
            );
        }
        opts = opts.states(parsed);
    }
    opts.validate()
        .map_err(|e| ApiError::invalid(format!("{at}{}", e.field), e.to_string()))?;
    Ok(opts)
}

/// A batch to enqueue.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchRequest {
    /// The jobs, stored all or nothing.
    #[schema(min_items = 1, max_items = 1000)]
    pub jobs: Vec<EnqueueRequest>,
}

/// A value echoed in an error message, cut so a huge input cannot make a huge answer.
fn shown(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut cut = MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}… ({} bytes)", &s[..cut], s.len())
}

/// Whether `s` can name a kind or a queue: 1–128 letters, digits and `_ - . : /`.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'))
}

fn to_new_job(
    state: &AppState,
    req: EnqueueRequest,
    header_key: Option<&str>,
    at: &str,
) -> Result<NewJob, ApiError> {
    let field = |name: &str| format!("{at}{name}");
    if !valid_name(&req.kind) {
        return Err(ApiError::invalid(
            field("kind"),
            format!(
                "kind must be 1–{MAX_NAME} characters of letters, digits and _ - . : / (got {})",
                shown(&req.kind)
            ),
        ));
    }
    let queue = req
        .queue
        .unwrap_or_else(|| mend::job::DEFAULT_QUEUE.to_owned());
    if !valid_name(&queue) {
        return Err(ApiError::invalid(
            field("queue"),
            format!(
                "queue must be 1–{MAX_NAME} characters of letters, digits and _ - . : / (got {})",
                shown(&queue)
            ),
        ));
    }
    let args = req.args.unwrap_or_else(|| serde_json::json!({}));
    if let Some(validate) = &state.validator {
        validate(&req.kind, &args).map_err(|m| ApiError::invalid(field("args"), m))?;
    }
    let mut job = NewJob::new(req.kind, args).with_queue(queue);
    if let Some(p) = req.priority {
        job = job.with_priority(p);
    }
    if let Some(m) = req.max_attempts {
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&m) {
            return Err(ApiError::invalid(
                field("max_attempts"),
                format!("max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT} (got {m})"),
            ));
        }
        job = job.with_max_attempts(m);
    }
    match (req.run_at, req.delay_ms) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                field("run_at"),
                "give either run_at or delay_ms, not both",
            ))
        }
        (Some(t), None) => {
            let t: DateTime<Utc> = DateTime::parse_from_rfc3339(&t)
                .map_err(|e| {
                    ApiError::invalid(
                        field("run_at"),
                        format!("run_at must be an RFC 3339 time such as 2026-11-21T10:00:00Z ({e}; got {})", shown(&t)),
                    )
                })?
                .with_timezone(&Utc);
            job = job.with_run_at(t);
        }
        (None, Some(ms)) => {
            if ms > MAX_DELAY_MS {
                return Err(ApiError::invalid(
                    field("delay_ms"),
                    format!("delay_ms must be at most {MAX_DELAY_MS} (a year); got {ms}"),
                ));
            }
            job = job.with_delay(std::time::Duration::from_millis(ms));
        }
        (None, None) => {}
    }
    if let Some(t) = req.timeout_ms {
        if !(1..=MAX_TIMEOUT_MS).contains(&t) {
            return Err(ApiError::invalid(
                field("timeout_ms"),
                format!("timeout_ms must be between 1 and {MAX_TIMEOUT_MS} (a week); got {t}"),
            ));
        }
        job.timeout_ms = Some(t);
    }
    if let Some(tags) = req.tags {
        if tags.len() > MAX_TAGS
            || tags
                .iter()
                .any(|t| t.is_empty() || t.chars().count() > MAX_NAME)
        {
            return Err(ApiError::invalid(
                field("tags"),
                format!("at most {MAX_TAGS} tags, each 1–{MAX_NAME} characters"),
            ));
        }
        job.tags = tags;
    }
    let key = match (header_key, req.idempotency_key) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::invalid(
                field("idempotency_key"),
                "the Idempotency-Key header and the idempotency_key field differ; send one",
            ))
        }
        (Some(h), _) => Some(h.to_owned()),
        (None, b) => b,
    };
    if let Some(k) = &key {
        if k.is_empty() || k.chars().count() > 255 {
            return Err(ApiError::invalid(
                field("idempotency_key"),
                "an idempotency key must be 1–255 characters",
            ));
        }
    }
    job.unique_key = key;
    job.limit_key = req.limit_key;
    if let Some(u) = req.unique {
        if job.unique_key.is_some() {
            return Err(ApiError::invalid(
                field("unique"),
                "give unique options or an idempotency key (header or field), not both",
            ));
        }
        job.unique = Some(unique_opts(u, at)?);
    }
    job.validate()
        .map_err(|e| ApiError::invalid(field(e.field), e.to_string()))?;
    Ok(job)
}

fn header_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    match headers.get(IDEMPOTENCY_KEY) {
        None => Ok(None),
        Some(v) => v.to_str().map(Some).map_err(|_| {
            ApiError::invalid(
                "Idempotency-Key",
                "the Idempotency-Key header must be visible ASCII",
            )
        }),
    }
}

/// The trace context stored with enqueued jobs: the enqueue span's own when spans are
/// exported (attempts then hang under it), else the caller's `traceparent` header as is.
fn enqueue_trace(span: &tracing::Span, headers: &HeaderMap) -> Option<String> {
    span.in_scope(crate::otel::current_traceparent).or_else(|| {
        headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|v| mend::trace::TraceParent::parse(v).is_some())
            .map(str::to_owned)
    })
}

/// Enqueues a job. With an `Idempotency-Key` header, enqueueing again with the same key
/// answers 200 with the original job; with `unique` options, a job they call the same
/// answers 200 with the existing job. Either way `duplicate` says which happened.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = EnqueueRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~](?:[\t -~]{0,253}[!-~])?$", description = "Makes the enqueue idempotent (1–255 visible ASCII characters; not with `unique`, and equal to the body's `idempotency_key` if both are sent)")),
    responses((status = 201, body = mend::Enqueued), (status = 200, description = "A duplicate: the existing job holding the key (`duplicate: true`)", body = mend::Enqueued),
              (status = 422, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn enqueue(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<EnqueueRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let mut job = to_new_job(&state, req, header_key(&headers)?, "")?;
    let new_id = job.id;
    let span = tracing::info_span!("enqueue", kind = %job.kind, queue = %job.queue, jobs = 1);
    job.trace_parent = enqueue_trace(&span, &headers);
    let mut rows = state.store.insert_many(vec![job]).instrument(span).await?;
    let row = rows.pop().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the store returned no job",
        )
    })?;
    let replayed = row.id != new_id;
    let row = mend::Enqueued {
        job: row,
        duplicate: replayed,
    };
    if !replayed {
        state
            .enqueued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = (status, Json(row)).into_response();
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// Enqueues up to 1000 jobs in one transaction: all or nothing. Each job of the answer says
/// whether it was a `duplicate`; the status is 200 when every one was.
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs", request_body = BatchRequest,
    params(("Prefer" = Option<String>, Header, description = "`return=minimal`: answer only each job's `id` and `duplicate` (a much smaller answer, for bulk producers)")),
    responses((status = 201, description = "`{\"jobs\": [Enqueued]}`", body = Object), (status = 200, description = "`{\"jobs\": [Enqueued]}`, every one a duplicate", body = Object), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn enqueue_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<BatchRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    if headers.contains_key(IDEMPOTENCY_KEY) {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "a batch takes idempotency keys per job (the idempotency_key field of each item), not the header",
        ));
    }
    if req.jobs.is_empty() || req.jobs.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "jobs",
            format!("a batch holds 1–{MAX_BATCH} jobs (got {})", req.jobs.len()),
        ));
    }
    let span = tracing::info_span!("enqueue", jobs = req.jobs.len());
    let trace_parent = enqueue_trace(&span, &headers);
    let mut jobs = Vec::with_capacity(req.jobs.len());
    for (i, item) in req.jobs.into_iter().enumerate() {
        let mut job = to_new_job(&state, item, None, &format!("jobs[{i}]."))?;
        job.trace_parent = trace_parent.clone();
        jobs.push(job);
    }
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let rows = state.store.insert_many(jobs).instrument(span).await?;
    let rows = mend::Enqueued::from_rows(&ids, rows);
    let new = rows.iter().filter(|r| !r.duplicate).count();
    state
        .enqueued
        .fetch_add(new as u64, std::sync::atomic::Ordering::Relaxed);
    let status = if new == 0 {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    if prefers_minimal(&headers) {
        let jobs: Vec<_> = rows
            .iter()
            .map(|r| serde_json::json!({"id": r.job.id, "duplicate": r.duplicate}))
            .collect();
        return Ok((status, Json(serde_json::json!({ "jobs": jobs }))).into_response());
    }
    Ok((status, Json(serde_json::json!({ "jobs": rows }))).into_response())
}

/// `Prefer: return=minimal` (RFC 7240): the caller wants only the ids back.
fn prefers_minimal(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("return=minimal"))
        })
    })
}

pub(crate) fn parse_id(p: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(raw) = p?;
    Uuid::parse_str(&raw).map_err(|_| {
        ApiError::bad_request(
            "invalid-id",
            format!(
                "{raw:?} is not a job id (a UUID such as 01933b6e-8f3a-7c2d-9b1e-0a1b2c3d4e5f)"
            ),
        )
    })
}

/// A job as `GET /v1/jobs/{id}` shows it: every field, and what holds it back.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct JobDetail {
    /// The job.
    #[serde(flatten)]
    pub job: JobRow,
    /// For an available job: the limits that hold it back right now (empty otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_by: Vec<mend::limits::Hold>,
}

/// One job, with its per-attempt errors, and the limits that hold it back if any.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobDetail), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobDetail>, ApiError> {
    let job = load(&state, parse_id(id)?).await?;
    let held_by = if job.state == mend::JobState::Available {
        state
            .store
            .limit_usage(mend::store::LimitUsageParams {
                queue: job.queue.clone(),
                jobs: vec![mend::store::LimitSubject {
                    kind: job.kind.clone(),
                    args: job.args.clone(),
                    limit_key: job.limit_key.clone(),
                }],
            })
            .await?
            .holds(&job, Utc::now())
    } else {
        Vec::new()
    };
    Ok(Json(JobDetail { job, held_by }))
}

/// The job `id`, or 404.
pub(crate) async fn load(state: &AppState, id: Uuid) -> Result<JobRow, ApiError> {
    state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// Filters of `GET /v1/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    queue: Option<String>,
    /// One state or several, comma-separated.
    #[param(
        pattern = r"^(?:|\s*(?:scheduled|available|running|retryable|completed|cancelled|discarded)\s*(?:,\s*(?:scheduled|available|running|retryable|completed|cancelled|discarded)\s*)*)$"
    )]
    state: Option<String>,
    kind: Option<String>,
    tag: Option<String>,
    /// The previous page's `next_cursor`.
    #[param(value_type = Option<uuid::Uuid>)]
    before: Option<String>,
    /// Page size (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only jobs created at or after this time (RFC 3339); empty means no bound.
    #[param(value_type = Option<chrono::DateTime<Utc>>)]
    created_after: Option<String>,
    /// Only jobs created before this time (RFC 3339); empty means no bound.
    #[param(value_type = Option<chrono::DateTime<Utc>>)]
    created_before: Option<String>,
    /// Only jobs whose args contain this JSON object (same values under its top-level keys),
    /// searched among the newest 20,000 jobs matching the other filters.
    args: Option<String>,
}

fn rfc3339(field: &str, v: Option<String>) -> Result<Option<chrono::DateTime<Utc>>, ApiError> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::invalid(
                        field,
                        format!(
                            "{field} must be an RFC 3339 time such as 2026-11-30T09:00:00Z ({e})"
                        ),
                    )
                })
        })
        .transpose()
}

/// Lists jobs, newest first, with filters and cursor paging.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = mend::store::JobPage), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<mend::store::JobPage>, ApiError> {
    let Query(q) = q?;
    let states = match q.state.as_deref() {
        None | Some("") => Vec::new(),
        Some(s) => s
            .split(',')
            .map(|p| p.trim().parse::<JobState>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::invalid("state", e.to_string()))?,
    };
    let before = q
        .before
        .map(|b| {
            Uuid::parse_str(&b).map_err(|_| {
                ApiError::invalid(
                    "before",
                    "before must be the next_cursor of a previous page",
                )
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let created_after = rfc3339("created_after", q.created_after)?;
    let created_before = rfc3339("created_before", q.created_before)?;
    let args_contains = match q.args.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => match serde_json::from_str::<serde_json::Value>(a) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            _ => {
                return Err(ApiError::invalid(
                    "args",
                    "args must be a JSON object such as {\"user\": 42}",
                ))
            }
        },
    };
    let page = state
        .store
        .list(ListParams {
            queue: q.queue,
            states,
            kind: q.kind,
            tag: q.tag,
            before,
            limit,
            created_after,
            created_before,
            args_contains,
        })
        .await?;
    Ok(Json(page))
}

/// Cancels a job (see `mend::Client::cancel`): a waiting one at once; a running one is stopped
/// at once on this node, within a heartbeat on another.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobRow), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "The job already completed or was discarded")))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<JobRow>, ApiError> {
    let id = parse_id(id)?;
    let job = state
        .client()
        .cancel(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    if job.state.is_final() && job.state != JobState::Cancelled {
        return Err(ApiError::conflict(format!(
            "job {id} is already {}; there is nothing to cancel",
            job.state
        )));
    }
    Ok(Json(job))
}

/// `?force=true` on retry.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryQuery {
    /// Retry a completed job too (its effects happen again).
    #[serde(default)]
    force: bool,
}

/// Retries a cancelled or discarded job now (a completed one only with `?force=true`). 409,
/// changing nothing, when the job is not finished, or when another job holds its unique key
/// now (the problem names that job).
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(("id" = Uuid, Path), RetryQuery),
    responses((status = 200, body = JobRow), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<RetryQuery>, QueryRejection>,
) -> Result<Json<JobRow>, ApiError> {
    let id = parse_id(id)?;
    let Query(q) = q?;
    let before = state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    if !before.state.is_final() {
        return Err(ApiError::conflict(format!(
            "job {id} is {}; only completed, cancelled or discarded jobs can be retried",
            before.state
        )));
    }
    if before.state == JobState::Completed && !q.force {
        return Err(ApiError::conflict(format!(
            "job {id} completed; retrying it runs it (and its effects) again. Add ?force=true if that is what you want"
        )));
    }
    state
        .client()
        .retry(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}
