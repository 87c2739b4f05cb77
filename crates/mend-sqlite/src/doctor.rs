//! Read-only figures for `mend doctor`: the schema version without migrating (the file opened
//! read-only), waiting jobs per queue and kind, stuck leases and failed durable cleanups.
//! Every job query is served by a partial index (`mend_jobs_claim` covers the first,
//! `mend_jobs_running` and `mend_jobs_finished` the others).

use mend::store::{DoctorJob, DoctorParams, DoctorStats, Result, StoreError, WaitingKind};
use rusqlite::{params, Connection, OpenFlags};
use uuid::Uuid;

use crate::error::map_err;
use crate::row::micros;

/// The schema version (`PRAGMA user_version`) of the database file `url` names, read with
/// the file opened read-only: nothing is created or migrated. A missing file is an error.
pub fn schema_version(url: &str) -> Result<i64> {
    let path = crate::config::parse_url(url)?;
    if !std::path::Path::new(&path).exists() {
        return Err(StoreError::Unavailable {
            target: path,
            detail: "no such file; check the path, or create the database with `mend migrate`"
                .into(),
            source: None,
        });
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| map_err(&path, e))?;
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| map_err(&path, e))
}

/// See [`mend::Store::doctor_stats`].
pub(crate) fn stats(conn: &Connection, path: &str, p: DoctorParams) -> Result<DoctorStats> {
    let e = |e| map_err(path, e);
    let limit = i64::try_from(p.limit).unwrap_or(i64::MAX);
    let mut waiting = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT queue, kind, count(*) FROM (
                     SELECT queue, kind FROM mend_jobs
                     WHERE state = 'available' AND run_at < ?1 LIMIT ?2)
                 GROUP BY queue, kind ORDER BY queue, kind",
            )
            .map_err(e)?;
        let rows = stmt
            .query_map(
                params![micros(p.waiting_before), mend::store::DOCTOR_WAITING_SPAN],
                |r| {
                    Ok(WaitingKind {
                        queue: r.get(0)?,
                        kind: r.get(1)?,
                        count: r.get::<_, i64>(2)?.try_into().unwrap_or(0),
                    })
                },
            )
            .map_err(e)?;
        for r in rows {
            waiting.push(r.map_err(e)?);
        }
    }
    let stuck = jobs(
        conn,
        "SELECT id, queue, kind, lease_expires_at, lease_owner FROM mend_jobs
         WHERE state = 'running' AND lease_expires_at < ?1
         ORDER BY lease_expires_at LIMIT ?2",
        micros(p.lease_expired_before),
        limit,
    )
    .map_err(e)?;
    let cleanup_failed = jobs(
        conn,
        "SELECT id, queue, kind, finalized_at, json_extract(errors, '$[#-1].message') FROM mend_jobs
         WHERE finalized_at >= ?1 AND state = 'discarded' AND json_valid(errors)
           AND json_extract(errors, '$[#-1].message') LIKE 'cleanup failed:%'
         ORDER BY finalized_at DESC LIMIT ?2",
        micros(p.discarded_since),
        limit,
    )
    .map_err(e)?;
    Ok(DoctorStats {
        database_now: None,
        leader_held: None,
        waiting,
        stuck,
        cleanup_failed,
    })
}

/// Runs `sql` (columns id, queue, kind, at, detail) with a time and a row limit; rows with an
/// unreadable id are skipped.
fn jobs(conn: &Connection, sql: &str, at: i64, limit: i64) -> rusqlite::Result<Vec<DoctorJob>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params![at, limit], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (id, queue, kind, at, detail) = r?;
        let Ok(id) = Uuid::from_slice(&id) else {
            continue;
        };
        out.push(DoctorJob {
            id,
            queue,
            kind,
            at: at.and_then(chrono::DateTime::from_timestamp_micros),
            detail,
        });
    }
    Ok(out)
}
