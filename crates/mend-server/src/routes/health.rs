//! Liveness and readiness probes, and the answer for unknown paths.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::AppState;

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, body = Object)))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready: false (503) as soon as shutdown begins, so load balancers stop sending work.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, body = Object), (status = 503, body = Object)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down"})),
        )
    }
}

pub(crate) async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!(
            "{} does not take {method}; see /openapi.json for what it takes",
            uri.path()
        ),
    )
}

pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    no_route(uri.path())
}

/// The answer for a path this server does not serve (also what a gated debug route answers).
pub(crate) fn no_route(path: &str) -> ApiError {
    ApiError::not_found(format!(
        "no route {path}; the API lives under /v1 (see /v1/jobs and /v1/queues)"
    ))
}
