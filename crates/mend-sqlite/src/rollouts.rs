//! Rollouts (`mend_rollouts`), the samples of versioned attempts the guard reads
//! (`mend_version_samples`), and handing the jobs a canary failed back to stable. What a
//! rollout decides is core's (`mend::rollout`); this module only stores it. A rollout is kept
//! as its JSON body beside the columns the statements filter on.

use chrono::{DateTime, Utc};
use mend::rollout::{Rollout, RouteState};
use mend::stats::Sketch;
use mend::store::{
    HealParams, Result, StoreError, VersionSample, VersionSamplesParams, MAX_ROLLOUTS_LISTED,
    MAX_SAMPLE_ROWS,
};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::error::map_err;
use crate::row::{micros, to_json};

fn decode(body: &str) -> Result<Rollout> {
    serde_json::from_str(body)
        .map_err(|e| StoreError::database(format!("a stored rollout cannot be read: {e}")))
}

fn latest(conn: &Connection, path: &str, kind: &str) -> Result<Option<Rollout>> {
    conn.prepare_cached(
        "SELECT body FROM mend_rollouts WHERE kind = ?1 ORDER BY started_at DESC, id DESC LIMIT 1",
    )
    .and_then(|mut s| {
        s.query_row(params![kind], |r| r.get::<_, String>(0))
            .optional()
    })
    .map_err(|e| map_err(path, e))?
    .map(|b| decode(&b))
    .transpose()
}

/// Inserts `rollout` with its stable version taken from the kind's latest rollout; `None`
/// when the kind has an active one (the partial unique index says so).
pub(crate) fn start(conn: &Connection, path: &str, rollout: Rollout) -> Result<Option<Rollout>> {
    let prev = latest(conn, path, &rollout.kind)?;
    let Some(rollout) = mend::store::rollout_to_start(prev, rollout)? else {
        return Ok(None);
    };
    let body = to_json(&rollout)?;
    conn.prepare_cached(
        "INSERT INTO mend_rollouts (id, kind, state, started_at, revision, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            rollout.id.as_bytes().as_slice(),
            rollout.kind,
            rollout.state.as_str(),
            micros(rollout.started_at),
            rollout.revision,
            body
        ])
    })
    .map_err(|e| map_err(path, e))?;
    Ok(Some(rollout))
}

pub(crate) fn list(conn: &Connection, path: &str) -> Result<Vec<Rollout>> {
    let mut stmt = conn
        .prepare_cached("SELECT body FROM mend_rollouts ORDER BY started_at DESC, id DESC LIMIT ?1")
        .map_err(|e| map_err(path, e))?;
    let bodies = stmt
        .query_map(params![MAX_ROLLOUTS_LISTED as i64], |r| {
            r.get::<_, String>(0)
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| map_err(path, e))?;
    bodies.iter().map(|b| decode(b)).collect()
}

pub(crate) fn get(conn: &Connection, path: &str, id: Uuid) -> Result<Option<Rollout>> {
    conn.prepare_cached("SELECT body FROM mend_rollouts WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row(params![id.as_bytes().as_slice()], |r| r.get::<_, String>(0))
                .optional()
        })
        .map_err(|e| map_err(path, e))?
        .map(|b| decode(&b))
        .transpose()
}

/// Compare and set on the revision.
pub(crate) fn save(conn: &Connection, path: &str, mut rollout: Rollout) -> Result<Option<Rollout>> {
    let read = rollout.revision;
    rollout.revision = read + 1;
    let body = to_json(&rollout)?;
    let n = conn
        .prepare_cached(
            "UPDATE mend_rollouts SET state = ?2, revision = ?3, body = ?4 WHERE id = ?1 AND revision = ?5",
        )
        .and_then(|mut s| {
            s.execute(params![
                rollout.id.as_bytes().as_slice(),
                rollout.state.as_str(),
                rollout.revision,
                body,
                read
            ])
        })
        .map_err(|e| map_err(path, e))?;
    Ok((n == 1).then_some(rollout))
}

/// The latest rollout of each kind, as routes.
pub(crate) fn routes(conn: &Connection, path: &str) -> Result<Vec<RouteState>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT body FROM mend_rollouts r WHERE r.id = (
                 SELECT id FROM mend_rollouts l WHERE l.kind = r.kind ORDER BY started_at DESC, id DESC LIMIT 1)",
        )
        .map_err(|e| map_err(path, e))?;
    let bodies = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| map_err(path, e))?;
    bodies
        .iter()
        .map(|b| decode(b).map(|r| r.route_state()))
        .collect()
}

pub(crate) fn add_samples(
    conn: &Connection,
    path: &str,
    samples: Vec<VersionSample>,
) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO mend_version_samples (at, kind, version, attempts, failures, run) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(|e| map_err(path, e))?;
    for s in samples {
        stmt.execute(params![
            micros(s.at),
            s.kind,
            s.version.unwrap_or_default(),
            i64::try_from(s.attempts).unwrap_or(i64::MAX),
            i64::try_from(s.failures).unwrap_or(i64::MAX),
            s.run.to_text()
        ])
        .map_err(|e| map_err(path, e))?;
    }
    Ok(())
}

pub(crate) fn samples(
    conn: &Connection,
    path: &str,
    p: VersionSamplesParams,
) -> Result<Vec<VersionSample>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT at, version, attempts, failures, run FROM mend_version_samples
             WHERE kind = ?1 AND at >= ?2 ORDER BY at LIMIT ?3",
        )
        .map_err(|e| map_err(path, e))?;
    let rows = stmt
        .query_map(
            params![p.kind, micros(p.since), MAX_SAMPLE_ROWS as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| map_err(path, e))?;
    Ok(rows
        .into_iter()
        .map(|(at, version, attempts, failures, run)| VersionSample {
            at: DateTime::<Utc>::from_timestamp_micros(at).unwrap_or_default(),
            kind: p.kind.clone(),
            version: (!version.is_empty()).then_some(version),
            attempts: u64::try_from(attempts).unwrap_or(0),
            failures: u64::try_from(failures).unwrap_or(0),
            // A damaged sketch loses its run times, not the counts.
            run: Sketch::from_text(&run).unwrap_or_default(),
        })
        .collect())
}

/// Deletes samples older than `before`, at most `limit`.
pub(crate) fn prune_samples(
    conn: &Connection,
    path: &str,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<u64> {
    conn.prepare_cached(
        "DELETE FROM mend_version_samples WHERE id IN (SELECT id FROM mend_version_samples WHERE at < ?1 ORDER BY at LIMIT ?2)",
    )
    .and_then(|mut s| s.execute(params![micros(before), i64::try_from(limit).unwrap_or(i64::MAX)]))
    .map(|n| n as u64)
    .map_err(|e| map_err(path, e))
}

pub(crate) fn heal(conn: &Connection, path: &str, p: HealParams) -> Result<Vec<Uuid>> {
    let event = to_json(&p.event)?;
    let mut stmt = conn
        .prepare_cached(&crate::sql::HEAL)
        .map_err(|e| map_err(path, e))?;
    let ids = stmt
        .query_map(
            params![
                p.kind,
                p.canary,
                micros(p.since),
                micros(p.now),
                i64::try_from(p.limit).unwrap_or(i64::MAX),
                event
            ],
            |r| r.get::<_, Vec<u8>>(0),
        )
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| map_err(path, e))?;
    Ok(ids
        .iter()
        .filter_map(|b| Uuid::from_slice(b).ok())
        .collect())
}
