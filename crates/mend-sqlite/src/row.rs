//! Decoding stored rows into [`JobRow`]s, and encoding the JSON records the store writes.
//!
//! A row that cannot be decoded fails only itself: the lenient query hands it back apart, so
//! the store can take it out of circulation instead of failing every claim or rescue on it.
//! This module runs the queries it is given; it owns no SQL of its own (see `sql`).

use chrono::{DateTime, Utc};
use mend::job::{AttemptError, JobRow, TimelineEvent};
use mend::store::{Result, StoreError};
use rusqlite::{params, Connection, Row};
use uuid::Uuid;

use crate::error::{decode, map_err};
use crate::sql;

/// Every row of a query without parameters, each turned into a `T` by `f`.
pub(crate) fn all_rows<T>(
    conn: &Connection,
    path: &str,
    sql: &str,
    f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).map_err(|e| map_err(path, e))?;
    let rows = stmt.query_map([], f).map_err(|e| map_err(path, e))?;
    rows.collect::<rusqlite::Result<Vec<T>>>()
        .map_err(|e| map_err(path, e))
}

/// A time as stored: microseconds since the epoch.
pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A time cut to what the store keeps (microseconds), so returned rows equal later reads.
pub(crate) fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros(t)).unwrap_or(t)
}

fn ts(id: &[u8], column: &'static str, v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| decode(id, column, format!("timestamp {v} out of range")))
}

fn opt_ts(id: &[u8], column: &'static str, v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(|v| ts(id, column, v)).transpose()
}

/// A JSON column of job `id`.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    id: &[u8],
    column: &'static str,
    s: &str,
) -> Result<T> {
    serde_json::from_str(s).map_err(|e| decode(id, column, e))
}

/// A value as the JSON text a column stores.
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::database(e.to_string()))
}

/// An attempt error as the JSON record the `errors` column keeps.
pub(crate) fn error_json(e: &AttemptError) -> Result<String> {
    serde_json::to_string(e)
        .map_err(|e| StoreError::database(format!("encoding an attempt error: {e}")))
}

/// A timeline event as the JSON text the `events` column keeps.
pub(crate) fn event_json(e: &TimelineEvent) -> Result<String> {
    to_json(e)
}

/// One row of [`sql::COLS`] (or the claim's columns, whose events are NULL).
pub(crate) fn row_to_job(r: &Row<'_>) -> Result<JobRow> {
    let raw = |e: rusqlite::Error| StoreError::database(format!("reading a job row: {e}"));
    let id: Vec<u8> = r.get(0).map_err(raw)?;
    // NULL when the query left the events out (claims): no timeline then.
    let events: Option<String> = r.get(20).map_err(raw)?;
    let uuid = Uuid::from_slice(&id).map_err(|e| decode(&id, "id", e))?;
    let state: String = r.get(4).map_err(raw)?;
    let args: String = r.get(3).map_err(raw)?;
    let errors: String = r.get(15).map_err(raw)?;
    let tags: String = r.get(17).map_err(raw)?;
    let result: Option<String> = r.get(18).map_err(raw)?;
    let checkpoint: Option<String> = r.get(22).map_err(raw)?;
    let pending_cleanups: Option<String> = r.get(23).map_err(raw)?;
    let mut job = JobRow {
        id: uuid,
        queue: r.get(1).map_err(raw)?,
        kind: r.get(2).map_err(raw)?,
        args: json(&id, "args", &args)?,
        state: state.parse().map_err(|e| decode(&id, "state", e))?,
        priority: r.get(5).map_err(raw)?,
        attempt: r.get(6).map_err(raw)?,
        max_attempts: r.get(7).map_err(raw)?,
        run_at: ts(&id, "run_at", r.get(8).map_err(raw)?)?,
        created_at: ts(&id, "created_at", r.get(9).map_err(raw)?)?,
        attempted_at: opt_ts(&id, "attempted_at", r.get(10).map_err(raw)?)?,
        finalized_at: opt_ts(&id, "finalized_at", r.get(11).map_err(raw)?)?,
        lease_owner: r.get(12).map_err(raw)?,
        lease_expires_at: opt_ts(&id, "lease_expires_at", r.get(13).map_err(raw)?)?,
        cancel_requested: r.get(14).map_err(raw)?,
        errors: json(&id, "errors", &errors)?,
        unique_key: r.get(16).map_err(raw)?,
        tags: json(&id, "tags", &tags)?,
        result: result.map(|s| json(&id, "result", &s)).transpose()?,
        timeout_ms: r.get(19).map_err(raw)?,
        trace_parent: r.get(21).map_err(raw)?,
        limit_key: r.get(24).map_err(raw)?,
        version: r.get(25).map_err(raw)?,
        checkpoint: None,
        pending_cleanups: Vec::new(),
        timeline: Vec::new(),
    };
    job.checkpoint = checkpoint
        .map(|s| json(&id, "checkpoint", &s))
        .transpose()?;
    if let Some(list) = pending_cleanups {
        job.pending_cleanups = json(&id, "pending_cleanups", &list)?;
    }
    if let Some(events) = events {
        // History that cannot be read must not make the job itself unreadable.
        let stored: Vec<TimelineEvent> = serde_json::from_str(&events).unwrap_or_else(|e| {
            tracing::warn!(id = %job.id, error = %e, "the job's stored timeline cannot be read; showing the derived steps only");
            Vec::new()
        });
        job.timeline = mend::job::build_timeline(&job, stored);
    }
    Ok(job)
}

/// A stored row that could not be decoded: its raw id and why.
pub(crate) type Undecodable = (Vec<u8>, StoreError);

/// Like [`query_jobs`], but a row that cannot be decoded does not fail the whole query: it
/// is returned apart (id and error), so one damaged row cannot wedge a queue or the rescuer.
pub(crate) fn query_jobs_lenient(
    conn: &Connection,
    path: &str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<(Vec<JobRow>, Vec<Undecodable>)> {
    let mut stmt = conn.prepare_cached(sql).map_err(|e| map_err(path, e))?;
    let mut rows = stmt.query(params).map_err(|e| map_err(path, e))?;
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    while let Some(r) = rows.next().map_err(|e| map_err(path, e))? {
        match row_to_job(r) {
            Ok(job) => good.push(job),
            Err(e) => bad.push((r.get::<_, Vec<u8>>(0).unwrap_or_default(), e)),
        }
    }
    Ok((good, bad))
}

/// The jobs `sql` selects; a row that cannot be decoded fails the query.
pub(crate) fn query_jobs(
    conn: &Connection,
    path: &str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<JobRow>> {
    let mut stmt = conn.prepare_cached(sql).map_err(|e| map_err(path, e))?;
    let mut rows = stmt.query(params).map_err(|e| map_err(path, e))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(|e| map_err(path, e))? {
        out.push(row_to_job(r)?);
    }
    Ok(out)
}

/// One job by id.
pub(crate) fn get_job(conn: &Connection, path: &str, id: Uuid) -> Result<Option<JobRow>> {
    Ok(query_jobs(conn, path, &sql::GET, params![id.as_bytes().as_slice()])?.pop())
}
