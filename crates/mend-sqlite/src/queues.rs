//! Queues: pausing (`mend_queues`) and the per-queue counts of jobs by state.

use chrono::{DateTime, Utc};
use mend::store::{QueueCount, Result};
use rusqlite::{params, Connection};

use crate::error::map_err;
use crate::row::{all_rows, micros};
use crate::sql;

/// How many jobs each queue holds in each state.
pub(crate) fn counts(conn: &Connection, path: &str) -> Result<Vec<QueueCount>> {
    let rows = all_rows(conn, path, sql::QUEUE_COUNTS, |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    QueueCount::from_rows(rows)
}

/// [`counts`] of the states still to run only.
pub(crate) fn live_counts(conn: &Connection, path: &str) -> Result<Vec<QueueCount>> {
    let rows = all_rows(conn, path, sql::LIVE_QUEUE_COUNTS, |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
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
    all_rows(conn, path, sql::PAUSED_QUEUES, |r| r.get(0))
}
