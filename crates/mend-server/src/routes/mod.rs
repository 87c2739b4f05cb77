//! The routes, one file per resource.

mod attempts;
mod audit;
mod contract;
mod cron;
pub(crate) mod debug;
mod health;
mod history;
pub(crate) use history::node_views;
mod jobs;
mod limits;
mod metrics;
mod queues;
pub(crate) mod rollouts;
mod workers;

use axum::routing::{get, post};
use axum::Router;

use crate::AppState;
use contract::Contract;

/// The OpenAPI description, generated from the handlers' annotations and the types.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "mend", description = "Durable background jobs that heal themselves."),
    paths(
        health::healthz, health::readyz, metrics::metrics,
        jobs::enqueue, jobs::enqueue_batch, jobs::get_job, jobs::list, jobs::cancel, jobs::retry,
        queues::list, queues::pause, queues::resume,
        limits::list, limits::get, limits::put, limits::delete,
        attempts::list,
        workers::claim, workers::heartbeat, workers::complete, workers::fail, workers::snooze, workers::release,
        workers::finish, workers::checkpoint, workers::defer, workers::cleanup_done,
        cron::list, cron::create, cron::get_one, cron::replace, cron::delete, cron::pause, cron::resume,
        debug::profile,
        history::stats, history::events, history::nodes,
        audit::list,
        rollouts::list, rollouts::start, rollouts::get_one, rollouts::pause, rollouts::resume, rollouts::promote, rollouts::abort,
    ),
    components(schemas(mend::JobRow, mend::Enqueued, mend::JobState, mend::AttemptError, mend::ErrorKind, crate::error::Problem, queues::QueueView,
        mend::cron::PeriodicDecl, mend::cron::Periodic, mend::cron::CronRow, mend::cron::CronRun, mend::cron::CatchUp, cron::CronView, cron::CronRunView,
        mend::LiveAttempt, mend::limits::Limit, mend::limits::Rate, mend::limits::Hold, mend::store::LimitState, jobs::JobDetail,
        mend::stats::StatsAnswer, mend::stats::StatsBucket, mend::stats::Counts, mend::stats::Event, mend::store::NodeQueue,
        history::EventsView, history::NodesView, history::NodeView,
        contract::Name, contract::Tag, contract::EventKinds, mend::audit::AuditEntry, audit::AuditPage,
        mend::rollout::Rollout, mend::rollout::RolloutState, mend::rollout::GuardConfig, mend::rollout::Decision, mend::rollout::Action,
        mend::rollout::Evidence, mend::rollout::SideStats, rollouts::StartRollout, rollouts::GuardOverrides, rollouts::RolloutsView, rollouts::RolloutSummary,
        rollouts::RolloutDetail, rollouts::WindowView, rollouts::SeriesView, rollouts::SeriesBucket, rollouts::BucketSide)),
    modifiers(&Contract),
    security(("bearer" = []))
)]
pub struct ApiDoc;

async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(<ApiDoc as utoipa::OpenApi>::openapi())
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics::metrics))
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
        .route("/debug/attempts", get(attempts::list))
        .route("/v1/limits", get(limits::list))
        .route(
            "/v1/limits/{name}",
            get(limits::get).put(limits::put).delete(limits::delete),
        )
        .route("/v1/workers/claim", post(workers::claim))
        .route("/v1/workers/heartbeat", post(workers::heartbeat))
        .route("/v1/jobs/{id}/complete", post(workers::complete))
        .route("/v1/jobs/{id}/fail", post(workers::fail))
        .route("/v1/jobs/{id}/snooze", post(workers::snooze))
        .route("/v1/jobs/{id}/release", post(workers::release))
        .route("/v1/jobs/{id}/checkpoint", post(workers::checkpoint))
        .route("/v1/jobs/{id}/cleanups", post(workers::defer))
        .route(
            "/v1/jobs/{id}/cleanups/{seq}/done",
            post(workers::cleanup_done),
        )
        .route("/v1/workers/finish", post(workers::finish))
        .route("/v1/stats", get(history::stats))
        .route("/v1/events", get(history::events))
        .route("/v1/nodes", get(history::nodes))
        .route("/v1/audit", get(audit::list))
        .route("/v1/cron", get(cron::list).post(cron::create))
        .route(
            "/v1/cron/{name}",
            get(cron::get_one).put(cron::replace).delete(cron::delete),
        )
        .route("/v1/cron/{name}/pause", post(cron::pause))
        .route("/v1/cron/{name}/resume", post(cron::resume))
        .route("/v1/rollouts", get(rollouts::list).post(rollouts::start))
        .route("/v1/rollouts/{id}", get(rollouts::get_one))
        .route("/v1/rollouts/{id}/pause", post(rollouts::pause))
        .route("/v1/rollouts/{id}/resume", post(rollouts::resume))
        .route("/v1/rollouts/{id}/promote", post(rollouts::promote))
        .route("/v1/rollouts/{id}/abort", post(rollouts::abort))
        // Looking inside the node (issue 17), behind debug::require_debug.
        .route(debug::PROFILE_PATH, get(debug::profile))
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
}
