//! Decoding stored rows into [`JobRow`]s, and encoding what the store writes (jsonb records,
//! timestamps at the stored precision).
//!
//! A row that cannot be decoded fails only itself: the lenient decoder hands it back apart,
//! so the store can take it out of circulation instead of failing every claim or rescue on
//! it. This module runs no queries.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mend::job::{JobRow, TimelineEvent};
use mend::store::{Result, StoreError};
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::decode;

/// JSON for a jsonb parameter: PostgreSQL's jsonb cannot hold NUL characters, so any in
/// messages become U+FFFD.
pub(crate) fn jsonb<T: serde::Serialize>(v: &T) -> Result<Value> {
    fn scrub(v: &mut Value) {
        match v {
            Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{fffd}"),
            Value::Array(a) => a.iter_mut().for_each(scrub),
            Value::Object(o) => o.values_mut().for_each(scrub),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(v)
        .map_err(|e| StoreError::database(format!("encoding a record: {e}")))?;
    scrub(&mut v);
    Ok(v)
}

/// One row of [`crate::sql::COLS`] (or the claim's columns, whose events are NULL).
pub(crate) fn row_to_job(r: &Row) -> Result<JobRow> {
    let id: Uuid = r.try_get(0).map_err(|e| decode(None, "id", e))?;
    let col = |name: &'static str| move |e: tokio_postgres::Error| decode(Some(id), name, e);
    let state: String = r.try_get(4).map_err(col("state"))?;
    let errors: Value = r.try_get(15).map_err(col("errors"))?;
    let events: Option<Value> = r.try_get(20).map_err(col("events"))?;
    let mut job = JobRow {
        id,
        queue: r.try_get(1).map_err(col("queue"))?,
        kind: r.try_get(2).map_err(col("kind"))?,
        args: r.try_get(3).map_err(col("args"))?,
        state: state.parse().map_err(|e| decode(Some(id), "state", e))?,
        priority: r.try_get(5).map_err(col("priority"))?,
        attempt: r.try_get(6).map_err(col("attempt"))?,
        max_attempts: r.try_get(7).map_err(col("max_attempts"))?,
        run_at: r.try_get(8).map_err(col("run_at"))?,
        created_at: r.try_get(9).map_err(col("created_at"))?,
        attempted_at: r.try_get(10).map_err(col("attempted_at"))?,
        finalized_at: r.try_get(11).map_err(col("finalized_at"))?,
        lease_owner: r.try_get(12).map_err(col("lease_owner"))?,
        lease_expires_at: r.try_get(13).map_err(col("lease_expires_at"))?,
        cancel_requested: r.try_get(14).map_err(col("cancel_requested"))?,
        errors: serde_json::from_value(errors).map_err(|e| decode(Some(id), "errors", e))?,
        unique_key: r.try_get(16).map_err(col("unique_key"))?,
        tags: r.try_get(17).map_err(col("tags"))?,
        result: r.try_get(18).map_err(col("result"))?,
        timeout_ms: r.try_get(19).map_err(col("timeout_ms"))?,
        trace_parent: r.try_get(21).map_err(col("trace_parent"))?,
        checkpoint: r.try_get(22).map_err(col("checkpoint"))?,
        limit_key: r.try_get(24).map_err(col("limit_key"))?,
        version: r.try_get(25).map_err(col("version"))?,
        pending_cleanups: Vec::new(),
        timeline: Vec::new(),
    };
    let pending: Option<Value> = r.try_get(23).map_err(col("pending_cleanups"))?;
    if let Some(list) = pending {
        job.pending_cleanups =
            serde_json::from_value(list).map_err(|e| decode(Some(id), "pending_cleanups", e))?;
    }
    if let Some(events) = events {
        // History that cannot be read must not make the job itself unreadable.
        let stored: Vec<TimelineEvent> = serde_json::from_value(events).unwrap_or_else(|e| {
            tracing::warn!(id = %job.id, error = %e, "the job's stored timeline cannot be read; showing the derived steps only");
            Vec::new()
        });
        job.timeline = mend::job::build_timeline(&job, stored);
    }
    Ok(job)
}

/// A stored row that could not be decoded: its id and why.
pub(crate) type Undecodable = (Uuid, StoreError);

/// Decodes rows; a row that cannot be decoded is returned apart (id and error), so one
/// damaged row cannot wedge a queue or the rescuer.
pub(crate) fn decode_lenient(rows: &[Row]) -> (Vec<JobRow>, Vec<Undecodable>) {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for r in rows {
        match row_to_job(r) {
            Ok(job) => good.push(job),
            Err(e) => match r.try_get::<_, Uuid>(0) {
                Ok(id) => bad.push((id, e)),
                Err(_) => tracing::error!(error = %e, "a job row without a readable id"),
            },
        }
    }
    (good, bad)
}

/// Decodes rows; a row that cannot be decoded fails them all.
pub(crate) fn decode_all(rows: &[Row]) -> Result<Vec<JobRow>> {
    rows.iter().map(row_to_job).collect()
}

/// Rows returned in the order of `ids`, missing ones left out.
pub(crate) fn in_order(ids: &[Uuid], rows: Vec<JobRow>) -> Vec<JobRow> {
    let mut by_id: HashMap<Uuid, JobRow> = rows.into_iter().map(|j| (j.id, j)).collect();
    ids.iter().filter_map(|id| by_id.remove(id)).collect()
}

/// A count or limit as PostgreSQL's `int8`.
pub(crate) fn bound(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Timestamps as PostgreSQL stores them (microseconds), so returned rows equal later reads.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
