//! The audit log over HTTP: `GET /v1/audit`, newest first, filtered by time, actor and
//! action, a page at a time (the cursor is the last row's id). Rows are written by the auth
//! middleware (see `crate::roles`) and by the CLI.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use mend::audit::{AuditEntry, AuditParams, MAX_AUDIT_PAGE};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Problem};
use crate::AppState;

/// Rows per page unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;

/// The filters of `GET /v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Only rows at or after this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    since: Option<String>,
    /// Only rows before this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    until: Option<String>,
    /// Only this actor's rows (a token's name, `cli:<user>`, `MEND_API_TOKEN`, `local`).
    actor: Option<String>,
    /// Only this action's rows (`job.cancel`, `queue.pause`, `token.create`, ...).
    action: Option<String>,
    /// The previous page's `next_cursor`.
    before: Option<i64>,
    /// Rows per page (1 to 500, default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// A page of audit rows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AuditPage {
    /// Newest first.
    entries: Vec<AuditEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    next_cursor: Option<i64>,
}

fn time(field: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.filter(|v| !v.is_empty())
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    ApiError::bad_request(
                        "invalid-query",
                        format!(
                            "{field} must be an RFC 3339 time such as 2026-11-30T09:00:00Z ({e})"
                        ),
                    )
                })
        })
        .transpose()
}

/// Who changed what, when and from where: every change made through the API, the dashboard
/// or the CLI (enqueues excepted), newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 503, description = "The database did not answer", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid-query", e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_AUDIT_PAGE {
        return Err(ApiError::bad_request(
            "invalid-query",
            format!("limit must be between 1 and {MAX_AUDIT_PAGE}"),
        ));
    }
    let params = AuditParams {
        before_id: q.before,
        since: time("since", q.since.as_deref())?,
        until: time("until", q.until.as_deref())?,
        actor: q.actor.filter(|a| !a.is_empty()),
        action: q.action.filter(|a| !a.is_empty()),
        // One more than asked: tells whether there is a next page.
        limit: limit + 1,
    };
    let mut entries = state.store.audit_list(params).await?;
    let next_cursor = if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(AuditPage {
        entries,
        next_cursor,
    }))
}
