//! Queues: the counts of jobs per state in each queue, and pausing and resuming a queue.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::error::{ApiError, Problem};
use crate::AppState;

/// One queue and its counts per state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct QueueView {
    /// The queue's name.
    pub name: String,
    /// Jobs per state (every state is present, zero when empty).
    #[schema(value_type = BTreeMap<String, u64>)]
    pub counts: BTreeMap<&'static str, u64>,
    /// Paused queues hand out no jobs; running ones finish.
    pub paused: bool,
}

/// Lists queues with their counts per state.
#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses((status = 200, description = "`{\"queues\": [QueueView]}`", body = Object)))]
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let counts = state.store.queue_counts().await?;
    let paused = state.store.paused_queues().await?;
    let zero = || {
        mend::JobState::ALL
            .iter()
            .map(|s| (s.as_str(), 0))
            .collect()
    };
    let mut queues: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for p in &paused {
        queues.entry(p.clone()).or_insert_with(zero);
    }
    for c in counts {
        let entry = queues.entry(c.queue).or_insert_with(|| {
            mend::JobState::ALL
                .iter()
                .map(|s| (s.as_str(), 0))
                .collect()
        });
        entry.insert(c.state.as_str(), c.count);
    }
    let queues: Vec<QueueView> = queues
        .into_iter()
        .map(|(name, counts)| QueueView {
            paused: paused.contains(&name),
            name,
            counts,
        })
        .collect();
    Ok(Json(serde_json::json!({ "queues": queues })))
}

fn queue_name(
    p: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    let axum::extract::Path(name) = p?;
    if !super::jobs::valid_name(&name) {
        return Err(ApiError::invalid(
            "name",
            format!("{name:?} is not a queue name (1–128 letters, digits, _ - . : /)"),
        ));
    }
    Ok(name)
}

async fn set_paused(
    state: AppState,
    name: String,
    paused: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .store
        .set_queue_paused(mend::store::SetQueuePausedParams {
            queue: name.clone(),
            paused,
            now: chrono::Utc::now(),
        })
        .await?;
    tracing::info!(queue = %name, paused, "queue paused state changed");
    Ok(Json(serde_json::json!({ "name": name, "paused": paused })))
}

/// Pauses a queue: its jobs are not handed out until it is resumed; running ones finish.
#[utoipa::path(post, path = "/v1/queues/{name}/pause", tag = "queues",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_.:/-]{1,128}$", description = "Queue name")),
    responses((status = 200, description = "`{\"name\": .., \"paused\": true}`", body = Object),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    name: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_paused(state, queue_name(name)?, true).await
}

/// Resumes a paused queue.
#[utoipa::path(post, path = "/v1/queues/{name}/resume", tag = "queues",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_.:/-]{1,128}$", description = "Queue name")),
    responses((status = 200, description = "`{\"name\": .., \"paused\": false}`", body = Object),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    name: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_paused(state, queue_name(name)?, false).await
}
