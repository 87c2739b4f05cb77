//! Queues: the counts of jobs per state in each queue.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::error::ApiError;
use crate::AppState;

/// One queue and its counts per state.
#[derive(Debug, Serialize)]
pub struct QueueView {
    /// The queue's name.
    pub name: String,
    /// Jobs per state (every state is present, zero when empty).
    pub counts: BTreeMap<&'static str, u64>,
}

pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let counts = state.store.queue_counts().await?;
    let mut queues: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for c in counts {
        let entry = queues.entry(c.queue).or_insert_with(|| {
            mend::JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect()
        });
        entry.insert(c.state.as_str(), c.count);
    }
    let queues: Vec<QueueView> = queues
        .into_iter()
        .map(|(name, counts)| QueueView { name, counts })
        .collect();
    Ok(Json(serde_json::json!({ "queues": queues })))
}
