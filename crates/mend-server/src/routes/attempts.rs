//! `/debug/attempts`: what each attempt on this node is doing right now (in its handler, in
//! which cleanup and for how long, whether a cancel or a shutdown has reached it). A debug
//! route: behind the token like every route, and answered only where debug endpoints are on
//! (`routes::debug::require_debug`).

use axum::extract::State;
use axum::Json;

use crate::error::ApiError;
use crate::AppState;

/// The attempts this node is running, longest-running first, each with `doing` in words.
#[utoipa::path(get, path = "/debug/attempts", tag = "debug",
    responses((status = 200, description = "`{\"node\": .., \"attempts\": [LiveAttempt + doing]}`", body = Object),
              (status = 404, description = "Debug endpoints are off on this server (the same answer as an unknown path)")))]
pub(crate) async fn list(
    State(state): State<AppState>,
    uri: axum::http::Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    super::debug::require_debug(&state, uri.path())?;
    let Some(worker) = &state.worker else {
        return Ok(Json(serde_json::json!({ "node": null, "attempts": [] })));
    };
    let attempts: Vec<serde_json::Value> = worker
        .attempts()
        .into_iter()
        .map(|a| {
            let doing = a.doing();
            let mut v = serde_json::to_value(&a).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("doing".into(), serde_json::Value::String(doing));
            }
            v
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "node": worker.node_id(), "attempts": attempts }),
    ))
}
