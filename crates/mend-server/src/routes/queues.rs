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
    /// Jobs per state still to run: scheduled, available, running, retryable (each present,
    /// zero when empty). Finished jobs are not counted here (that would read every one kept):
    /// see `/v1/stats` for how many finished, `/v1/jobs?state=completed` for the rows.
    #[schema(value_type = BTreeMap<String, u64>)]
    pub counts: BTreeMap<&'static str, u64>,
    /// Paused queues hand out no jobs; running ones finish.
    pub paused: bool,
}

/// Lists the queues that have work still to run, are paused, or are worked by a node, with
/// their counts per state still to run.
#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses((status = 200, description = "`{\"queues\": [QueueView]}`", body = Object)))]
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let paused = state.store.paused_queues().await?;
    let queues = live_table(&state, &paused).await?;
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

/// Jobs per queue in the states still to run, zeros included, for every queue that has some,
/// is paused, or is worked by a node (so a drained queue stays listed). Finished jobs are not
/// counted: that would read every one kept (their numbers are in /v1/stats, their rows in
/// /v1/jobs?state=...).
pub(super) async fn live_table(
    state: &AppState,
    paused: &[String],
) -> Result<BTreeMap<String, BTreeMap<&'static str, u64>>, ApiError> {
    let counts = state.store.live_queue_counts().await?;
    let nodes = state.store.list_nodes().await?;
    let zero = || -> BTreeMap<&'static str, u64> {
        mend::JobState::ALL
            .iter()
            .filter(|s| !s.is_final())
            .map(|s| (s.as_str(), 0))
            .collect()
    };
    let mut queues: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    let worked = nodes.iter().flat_map(|n| n.queues.iter().map(|q| &q.name));
    for name in paused.iter().chain(worked) {
        queues.entry(name.clone()).or_insert_with(zero);
    }
    for c in counts {
        queues
            .entry(c.queue)
            .or_insert_with(zero)
            .insert(c.state.as_str(), c.count);
    }
    Ok(queues)
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
