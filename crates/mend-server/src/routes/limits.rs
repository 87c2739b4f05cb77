//! Limits: rate limits and per-key concurrency limits, listed, set (created or replaced) and
//! removed at run time. The claim enforces them on every node (see `mend::limits`).

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::Json;
use mend::limits::Limit;
use mend::store::{LimitState, SetLimitParams};

use crate::error::{ApiError, Problem};
use crate::AppState;

/// The limit name in the path, checked.
fn limit_name(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = p?;
    let probe = Limit::new(name.clone(), "q").concurrency(1);
    probe
        .validate()
        .map_err(|e| ApiError::invalid("name", e.to_string()))?;
    Ok(name)
}

/// Every limit, with how many jobs the latest claim of its queue held back under it.
#[utoipa::path(get, path = "/v1/limits", tag = "limits",
    responses((status = 200, description = "`{\"limits\": [LimitState]}`", body = Object)))]
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limits = state.store.list_limits().await?;
    Ok(Json(serde_json::json!({ "limits": limits })))
}

/// One limit.
#[utoipa::path(get, path = "/v1/limits/{name}", tag = "limits",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_.-]{1,100}$", description = "Limit name")),
    responses((status = 200, body = LimitState),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<LimitState>, ApiError> {
    let name = limit_name(name)?;
    state
        .store
        .list_limits()
        .await?
        .into_iter()
        .find(|l| l.limit.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no limit {name:?}")))
}

/// Creates the limit `name`, or replaces it (its rate buckets start full). The body's `name`,
/// when given, must match the path.
#[utoipa::path(put, path = "/v1/limits/{name}", tag = "limits", request_body = Limit,
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_.-]{1,100}$", description = "Limit name")),
    responses((status = 200, body = Limit),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn put(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<Json<Limit>, ApiError> {
    let name = limit_name(name)?;
    let Json(mut value) = body?;
    match value.get("name") {
        None => {
            if let Some(o) = value.as_object_mut() {
                o.insert("name".into(), serde_json::Value::String(name.clone()));
            }
        }
        Some(serde_json::Value::String(n)) if *n == name => {}
        Some(_) => {
            return Err(ApiError::invalid(
                "name",
                "the body's name differs from the path's; leave it out or make them equal",
            ))
        }
    }
    let limit: Limit = serde_json::from_value(value).map_err(|e| {
        ApiError::invalid(
            "body",
            format!("not a limit: {e} (expected {{\"queue\", \"kind\"?, \"key\"?, \"rate\"?: {{\"max\", \"per_ms\", \"burst\"?}}, \"concurrency\"?}})"),
        )
    })?;
    limit
        .validate()
        .map_err(|e| ApiError::invalid(e.field, e.to_string()))?;
    state
        .store
        .set_limit(SetLimitParams {
            limit: limit.clone(),
            now: chrono::Utc::now(),
        })
        .await?;
    tracing::info!(limit = %limit.name, queue = %limit.queue, "limit set");
    Ok(Json(limit))
}

/// Removes a limit; its queue is claimed without it from then on.
#[utoipa::path(delete, path = "/v1/limits/{name}", tag = "limits",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_.-]{1,100}$", description = "Limit name")),
    responses((status = 200, description = "`{\"name\": .., \"deleted\": true}`", body = Object),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = limit_name(name)?;
    if state.store.delete_limit(name.clone()).await? {
        tracing::info!(limit = %name, "limit removed");
        Ok(Json(serde_json::json!({ "name": name, "deleted": true })))
    } else {
        Err(ApiError::not_found(format!("no limit {name:?}")))
    }
}
