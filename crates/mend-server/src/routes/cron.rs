//! Periodic jobs (cron schedules): list, create, show, replace, delete, pause and resume.
//!
//! A declaration is checked completely (`PeriodicDecl::into_periodic`, plus the server's args
//! validator) before the store is touched, so a refused request changes nothing. Each schedule
//! is shown with its next slot, its recent runs and the state of each run's job.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use mend::cron::{CronRow, Periodic, PeriodicDecl};
use mend::store::{SetCronPausedParams, UpsertCronParams};
use mend::JobState;
use serde::Serialize;
use uuid::Uuid;

use crate::error::{ApiError, Problem};
use crate::AppState;

/// One slot that ran, and what became of its job.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CronRunView {
    /// The slot.
    pub slot: DateTime<Utc>,
    /// Its job.
    pub job_id: Uuid,
    /// The job's state now; `null` once the job was pruned.
    pub state: Option<JobState>,
}

/// A schedule, its next slot, and its recent runs with their outcomes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CronView {
    /// The stored schedule (declaration, paused flag, next and last slot, skipped slots).
    #[serde(flatten)]
    pub schedule: CronRow,
    /// The recent runs, newest first, with their jobs' states (in a list: the latest only).
    pub runs: Vec<CronRunView>,
}

async fn view(state: &AppState, row: CronRow, runs: usize) -> Result<CronView, ApiError> {
    let mut out = Vec::new();
    for run in row.recent_runs.iter().rev().take(runs) {
        let job = state.store.get(run.job_id).await?;
        out.push(CronRunView {
            slot: run.slot,
            job_id: run.job_id,
            state: job.map(|j| j.state),
        });
    }
    Ok(CronView {
        schedule: row,
        runs: out,
    })
}

fn invalid(e: mend::cron::CronError) -> ApiError {
    ApiError::invalid(e.field, format!("{}: {}", e.field, e.message))
}

/// Checks a declaration; `name` from the path wins over (and must agree with) the body's.
fn check(
    state: &AppState,
    decl: PeriodicDecl,
    path_name: Option<String>,
) -> Result<Periodic, ApiError> {
    let mut decl = decl;
    if let Some(name) = path_name {
        if decl.name.as_ref().is_some_and(|n| *n != name) {
            return Err(ApiError::invalid(
                "name",
                format!("the body names {:?} but the path names {name:?}; leave name out of the body or make them agree", decl.name.unwrap_or_default()),
            ));
        }
        decl.name = Some(name);
    }
    let p = decl.into_periodic().map_err(invalid)?;
    if let Some(validate) = &state.validator {
        validate(&p.kind, &p.args).map_err(|m| ApiError::invalid("args", format!("args: {m}")))?;
    }
    Ok(p)
}

async fn store_it(state: &AppState, p: Periodic) -> Result<CronRow, ApiError> {
    let now = Utc::now();
    let schedule = p.validate().map_err(invalid)?;
    let row = state
        .store
        .cron_upsert(UpsertCronParams {
            next_slot: schedule.next_after(now).unwrap_or(DateTime::<Utc>::MAX_UTC),
            periodic: p,
            now,
        })
        .await?;
    tracing::info!(schedule = %row.periodic.name, next = %row.next_slot, "periodic job stored");
    Ok(row)
}

fn schedule_name(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = p?;
    let probe = Periodic::new(name.clone(), "@daily", "k", serde_json::json!({}));
    if let Err(e) = probe.validate() {
        if e.field == "name" {
            return Err(invalid(e));
        }
    }
    Ok(name)
}

/// Lists the schedules, by name, each with its latest run.
#[utoipa::path(get, path = "/v1/cron", tag = "cron",
    responses((status = 200, description = "`{\"schedules\": [CronView]}`", body = Object)))]
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut out = Vec::new();
    for row in state.store.cron_list().await? {
        out.push(view(&state, row, 1).await?);
    }
    Ok(Json(serde_json::json!({ "schedules": out })))
}

/// Creates a schedule (409 if the name is taken; use PUT to replace one).
#[utoipa::path(post, path = "/v1/cron", tag = "cron", request_body = PeriodicDecl,
    responses((status = 201, body = CronView),
              (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn create(
    State(state): State<AppState>,
    body: Result<Json<PeriodicDecl>, JsonRejection>,
) -> Result<(StatusCode, Json<CronView>), ApiError> {
    let Json(decl) = body?;
    let p = check(&state, decl, None)?;
    if state.store.cron_get(p.name.clone()).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "a schedule named {:?} exists; PUT /v1/cron/{} replaces it",
            p.name, p.name
        )));
    }
    let row = store_it(&state, p).await?;
    Ok((StatusCode::CREATED, Json(view(&state, row, 0).await?)))
}

/// One schedule with its recent runs and their jobs' states.
#[utoipa::path(get, path = "/v1/cron/{name}", tag = "cron",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_./-]{1,128}$", description = "Schedule name")),
    responses((status = 200, body = CronView),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<CronView>, ApiError> {
    let name = schedule_name(name)?;
    let row = state
        .store
        .cron_get(name.clone())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no schedule named {name:?}")))?;
    Ok(Json(view(&state, row, mend::cron::RECENT_RUNS_KEPT).await?))
}

/// Creates or replaces a schedule. Its paused flag and history stay; its next slot stays
/// unless the expression or the time zone changed.
#[utoipa::path(put, path = "/v1/cron/{name}", tag = "cron", request_body = PeriodicDecl,
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_./-]{1,128}$", description = "Schedule name")),
    responses((status = 200, body = CronView),
              (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn replace(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<PeriodicDecl>, JsonRejection>,
) -> Result<Json<CronView>, ApiError> {
    let name = schedule_name(name)?;
    let Json(decl) = body?;
    let p = check(&state, decl, Some(name))?;
    let row = store_it(&state, p).await?;
    Ok(Json(view(&state, row, mend::cron::RECENT_RUNS_KEPT).await?))
}

/// Deletes a schedule; the jobs it inserted stay.
#[utoipa::path(delete, path = "/v1/cron/{name}", tag = "cron",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_./-]{1,128}$", description = "Schedule name")),
    responses((status = 200, description = "`{\"name\": .., \"deleted\": true}`", body = Object),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = schedule_name(name)?;
    if !state.store.cron_delete(name.clone()).await? {
        return Err(ApiError::not_found(format!("no schedule named {name:?}")));
    }
    tracing::info!(schedule = %name, "periodic job deleted");
    Ok(Json(serde_json::json!({ "name": name, "deleted": true })))
}

async fn set_paused(
    state: AppState,
    name: Result<Path<String>, PathRejection>,
    paused: bool,
) -> Result<Json<CronView>, ApiError> {
    let name = schedule_name(name)?;
    let not_found = || ApiError::not_found(format!("no schedule named {name:?}"));
    let row = state
        .store
        .cron_get(name.clone())
        .await?
        .ok_or_else(not_found)?;
    let now = Utc::now();
    // Resuming starts at the next slot after now: slots passed while paused are not run.
    let next_slot = row
        .periodic
        .validate()
        .ok()
        .and_then(|s| s.next_after(now))
        .unwrap_or(row.next_slot);
    let row = state
        .store
        .cron_set_paused(SetCronPausedParams {
            name: name.clone(),
            paused,
            next_slot,
            now,
        })
        .await?
        .ok_or_else(not_found)?;
    tracing::info!(schedule = %name, paused, "periodic job paused state changed");
    Ok(Json(view(&state, row, mend::cron::RECENT_RUNS_KEPT).await?))
}

/// Pauses a schedule: no jobs are inserted for its slots until it is resumed.
#[utoipa::path(post, path = "/v1/cron/{name}/pause", tag = "cron",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_./-]{1,128}$", description = "Schedule name")),
    responses((status = 200, body = CronView),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<CronView>, ApiError> {
    set_paused(state, name, true).await
}

/// Resumes a paused schedule from its next slot after now (paused slots are not caught up).
#[utoipa::path(post, path = "/v1/cron/{name}/resume", tag = "cron",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_./-]{1,128}$", description = "Schedule name")),
    responses((status = 200, body = CronView),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<CronView>, ApiError> {
    set_paused(state, name, false).await
}
