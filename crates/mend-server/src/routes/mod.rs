//! The routes, one file per resource.

mod health;
mod jobs;
mod queues;
mod workers;

use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/jobs", post(jobs::enqueue).get(jobs::list))
        .route("/v1/jobs/batch", post(jobs::enqueue_batch))
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/v1/queues", get(queues::list))
        .route("/v1/queues/{name}/pause", post(queues::pause))
        .route("/v1/queues/{name}/resume", post(queues::resume))
        .route("/v1/workers/claim", post(workers::claim))
        .route("/v1/workers/heartbeat", post(workers::heartbeat))
        .route("/v1/jobs/{id}/complete", post(workers::complete))
        .route("/v1/jobs/{id}/fail", post(workers::fail))
        .fallback(health::not_found)
}
