//! What a running attempt writes, and what happens to it when its worker is gone: outcomes,
//! checkpoints, pending durable cleanups, lease extensions, rescue. Every write on behalf of
//! an attempt goes through the fence (`sql::FENCE`); a fenced-out write changes nothing and
//! is reported as such, never as an error.

use mend::cleanup::DurableCleanup;
use mend::job::JobState;
use mend::maintenance::rescuer;
use mend::store::{
    CheckpointParams, CompleteParams, CompleteResult, ExtendLeasesParams, ExtendLeasesResult,
    Fence, OutcomeKind, RescueParams, Rescued, Result,
};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, ToSql};

use crate::error::map_err;
use crate::jobs::discard_undecodable;
use crate::row::{
    error_json, event_json, get_job, json, micros, query_jobs_lenient, stored, to_json,
};
use crate::sql;

/// Applies a batch of outcomes, each fenced on its own.
pub(crate) fn complete_many(
    conn: &Connection,
    path: &str,
    p: CompleteParams,
) -> Result<CompleteResult> {
    let now = micros(p.now);
    let mut result = CompleteResult::default();
    // The common outcome's statement is looked up once per batch, not per row.
    let mut completed = conn
        .prepare_cached(&sql::COMPLETED)
        .map_err(|e| map_err(path, e))?;
    let stored_now = stored(p.now);
    for o in p.outcomes {
        let id = o.fence.id.as_bytes().as_slice();
        // A plain completion writes no event: the timeline derives it.
        let quiet = matches!(o.kind, OutcomeKind::Completed { .. }) && o.cleanups.is_empty();
        let event = if quiet {
            String::new()
        } else {
            event_json(&o.timeline_event(stored_now))?
        };
        let fence = (id, o.fence.attempt, o.fence.lease_owner.as_str());
        let n = match &o.kind {
            OutcomeKind::Completed { result } if quiet => {
                let result = result.as_ref().map(|v| v.to_string());
                completed.execute(params![fence.0, fence.1, fence.2, now, result])
            }
            OutcomeKind::Completed { result } => {
                let result = result.as_ref().map(|v| v.to_string());
                conn.prepare_cached(&sql::COMPLETED_WITH_EVENT)
                    .and_then(|mut s| {
                        s.execute(params![fence.0, fence.1, fence.2, now, result, event])
                    })
            }
            OutcomeKind::Retry { error, run_at } => {
                let record = error_json(error)?;
                conn.prepare_cached(&sql::RETRY).and_then(|mut s| {
                    s.execute(params![
                        fence.0,
                        fence.1,
                        fence.2,
                        micros(*run_at),
                        record,
                        now,
                        event
                    ])
                })
            }
            OutcomeKind::Discard { error } | OutcomeKind::Cancelled { error } => {
                let state = if matches!(o.kind, OutcomeKind::Discard { .. }) {
                    "discarded"
                } else {
                    "cancelled"
                };
                let record = error_json(error)?;
                conn.prepare_cached(&sql::FINISH_WITH_ERROR)
                    .and_then(|mut s| {
                        s.execute(params![
                            fence.0, fence.1, fence.2, now, record, state, event
                        ])
                    })
            }
            OutcomeKind::Snooze { run_at } => {
                let state = JobState::waiting_for(stored(*run_at), stored_now).as_str();
                conn.prepare_cached(&sql::SNOOZE).and_then(|mut s| {
                    s.execute(params![
                        fence.0,
                        fence.1,
                        fence.2,
                        micros(*run_at),
                        state,
                        now,
                        event
                    ])
                })
            }
            OutcomeKind::Release => conn
                .prepare_cached(&sql::RELEASE)
                .and_then(|mut s| s.execute(params![fence.0, fence.1, fence.2, now, event])),
        }
        .map_err(|e| map_err(path, e))?;
        if n == 1 {
            result.applied.push(o.fence.id);
        } else {
            result.fenced.push(o.fence.id);
        }
    }
    Ok(result)
}

/// Stores the attempt's checkpoint; `false` when fenced out.
pub(crate) fn checkpoint(conn: &Connection, path: &str, p: CheckpointParams) -> Result<bool> {
    let state = p.state.to_string();
    let n = execute_fenced(conn, &sql::CHECKPOINT, &p.fence, params![state])
        .map_err(|e| map_err(path, e))?;
    Ok(n == 1)
}

/// Runs the fenced write `sql` for `fence`'s attempt: the fence fills `?1` to `?3`, `rest`
/// what follows. The rows changed: 0 when the attempt is fenced out.
pub(crate) fn execute_fenced(
    conn: &Connection,
    sql: &str,
    fence: &Fence,
    rest: &[&dyn ToSql],
) -> rusqlite::Result<usize> {
    let id = fence.id.as_bytes().as_slice();
    let head: [&dyn ToSql; 3] = [&id, &fence.attempt, &fence.lease_owner];
    conn.prepare_cached(sql)?.execute(params_from_iter(
        head.into_iter().chain(rest.iter().copied()),
    ))
}

/// Changes a running attempt's pending durable cleanups (fenced; `None` when the attempt
/// no longer holds the job), optionally recording a timeline event in the same write.
pub(crate) fn edit_pending<T>(
    conn: &Connection,
    path: &str,
    fence: &Fence,
    event: Option<String>,
    edit: impl FnOnce(&mut Vec<DurableCleanup>) -> T,
) -> Result<Option<T>> {
    let (key, attempt, lease_owner) = (
        fence.id.as_bytes().to_vec(),
        fence.attempt,
        fence.lease_owner.as_str(),
    );
    let current: Option<Option<String>> = conn
        .prepare_cached(&sql::PENDING_CLEANUPS)
        .and_then(|mut s| {
            s.query_row(params![key, attempt, lease_owner], |r| r.get(0))
                .optional()
        })
        .map_err(|e| map_err(path, e))?;
    let Some(current) = current else {
        return Ok(None);
    };
    let stored = current
        .map(|s| json(&key, "pending_cleanups", &s))
        .transpose()?;
    let (out, list) = DurableCleanup::edit_stored(stored, edit);
    let text = list.map(|l| to_json(&l)).transpose()?;
    conn.prepare_cached(&sql::SET_PENDING_CLEANUPS)
        .and_then(|mut s| s.execute(params![key, text, event]))
        .map_err(|e| map_err(path, e))?;
    Ok(Some(out))
}

/// Extends the leases still held; reports the lost ones and those asked to cancel.
pub(crate) fn extend_leases(
    conn: &Connection,
    path: &str,
    p: ExtendLeasesParams,
) -> Result<ExtendLeasesResult> {
    let mut out = ExtendLeasesResult::default();
    let mut stmt = conn
        .prepare_cached(&sql::EXTEND_LEASE)
        .map_err(|e| map_err(path, e))?;
    for held in p.jobs {
        let cancel: Option<bool> = stmt
            .query_row(
                params![
                    held.id.as_bytes().as_slice(),
                    held.attempt,
                    p.lease_owner,
                    micros(p.expires_at)
                ],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| map_err(path, e))?;
        match cancel {
            None => out.lost.push(held),
            Some(true) => out.cancel_requested.push(held.id),
            Some(false) => {}
        }
    }
    Ok(out)
}

/// Takes the running jobs of dead nodes, and of expired leases, away from their workers.
pub(crate) fn rescue(conn: &Connection, path: &str, p: RescueParams) -> Result<Vec<Rescued>> {
    let dead = to_json(&p.dead_nodes)?;
    let now = micros(p.now);
    let (candidates, bad) =
        query_jobs_lenient(conn, path, &sql::RESCUE_CANDIDATES, params![dead, now])?;
    discard_undecodable(conn, path, bad, p.now)?;
    // Only a job that ran a named version can be a canary's.
    let routes = if candidates.iter().any(|j| j.version.is_some()) {
        crate::rollouts::routes(conn, path)?
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for job in candidates {
        let d = rescuer::decide(&job, p.now, p.quarantine_after_lost, &routes);
        let finalized = (d.state == JobState::Discarded).then_some(now);
        let record = error_json(&d.error)?;
        let event = event_json(&d.timeline_event(&job, stored(p.now)))?;
        let n = conn
            .prepare_cached(&sql::RESCUE_ONE)
            .and_then(|mut s| {
                s.execute(params![
                    d.state.as_str(),
                    now,
                    finalized,
                    record,
                    job.id.as_bytes().as_slice(),
                    job.attempt,
                    event,
                    micros(d.run_at)
                ])
            })
            .map_err(|e| map_err(path, e))?;
        if n == 1 {
            if let Some(job) = get_job(conn, path, job.id)? {
                out.push(Rescued {
                    job,
                    quarantined: d.quarantined,
                });
            }
        }
    }
    Ok(out)
}
