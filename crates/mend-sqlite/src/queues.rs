//! Queues: pausing (`mend_queues`) and the per-queue counts of jobs by state.

use chrono::{DateTime, Utc};
use mend::store::{QueueCount, Result};
use rusqlite::{params, Connection};

use crate::error::map_err;
use crate::row::micros;
use crate::sql;

/// How many jobs each queue holds in each state.
pub(crate) fn counts(conn: &Connection, path: &str) -> Result<Vec<QueueCount>> {
    let mut stmt = conn
        .prepare_cached(sql::QUEUE_COUNTS)
        .map_err(|e| map_err(path, e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(|e| map_err(path, e))?;
    let rows = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| map_err(path, e))?;
    QueueCount::from_rows(rows)
}

/// Pauses or resumes `queue`.
pub(crate) fn set_paused(
    conn: &Connection,
    path: &str,
    queue: &str,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    conn.prepare_cached(sql::SET_QUEUE_PAUSED)
        .and_then(|mut s| s.execute(params![queue, paused, micros(now)]))
        .map_err(|e| map_err(path, e))?;
    Ok(())
}

/// The paused queues, by name.
pub(crate) fn paused(conn: &Connection, path: &str) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached(sql::PAUSED_QUEUES)
        .map_err(|e| map_err(path, e))?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| map_err(path, e))?;
    rows.collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| map_err(path, e))
}
