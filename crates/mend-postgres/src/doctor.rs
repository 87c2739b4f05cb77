//! Read-only figures for `mend doctor`: the schema version without migrating, the server's
//! clock, whether the maintenance leader's lock is held, waiting jobs per queue and kind,
//! stuck leases and failed durable cleanups. Every job query is served by a partial index
//! (`mend_jobs_claim`, `mend_jobs_running`, `mend_jobs_finished`).

use mend::store::{DoctorJob, DoctorParams, DoctorStats, Result, WaitingKind};

use crate::config::{self, PgConfig};
use crate::error::{map_pg, map_pool};
use crate::row::micros;
use crate::PgStore;

/// The schema version of the database at `url` (`0` when mend never migrated it), read
/// without migrating or creating anything.
pub async fn schema_version(url: &str) -> Result<i64> {
    let c = config::connection(url, PgConfig::default())?;
    let client = c.pool.get().await.map_err(|e| map_pool(&c.target, e))?;
    let table = format!("{}.mend_migrations", c.schema_q);
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .map_err(|e| map_pg(&c.target, e))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            &format!("SELECT coalesce(max(version), 0)::int8 FROM {table}"),
            &[],
        )
        .await
        .map_err(|e| map_pg(&c.target, e))?;
    Ok(row.get(0))
}

/// See [`mend::Store::doctor_stats`].
pub(crate) async fn stats(store: &PgStore, p: DoctorParams) -> Result<DoctorStats> {
    let s = &store.inner.session.schema_q;
    let limit = i64::try_from(p.limit).unwrap_or(i64::MAX);
    let pg = store.pg();
    let c = store.client().await?;
    let database_now = c
        .query_one("SELECT now()", &[])
        .await
        .map_err(&pg)?
        .try_get(0)
        .map_err(&pg)?;
    // The leader holds pg_try_advisory_lock(ns, 0) on its session (see `session::lead`).
    let ns = i64::from(store.inner.session.ns);
    let leader_held: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND l.classid::int8 = $1 AND l.objid = 0)",
            &[&ns],
        )
        .await
        .map_err(&pg)?
        .try_get(0)
        .map_err(&pg)?;
    let mut waiting = Vec::new();
    for r in c
        .query(
            &format!(
                "SELECT queue, kind, count(*) FROM (
                     SELECT queue, kind FROM {s}.mend_jobs
                     WHERE state = 'available' AND run_at < $1 LIMIT $2) w
                 GROUP BY queue, kind ORDER BY queue, kind"
            ),
            &[&micros(p.waiting_before), &mend::store::DOCTOR_WAITING_SPAN],
        )
        .await
        .map_err(&pg)?
    {
        let count: i64 = r.try_get(2).map_err(&pg)?;
        waiting.push(WaitingKind {
            queue: r.try_get(0).map_err(&pg)?,
            kind: r.try_get(1).map_err(&pg)?,
            count: u64::try_from(count).unwrap_or(0),
        });
    }
    let stuck = jobs(
        &c,
        &format!(
            "SELECT id, queue, kind, lease_expires_at, lease_owner FROM {s}.mend_jobs
             WHERE state = 'running' AND lease_expires_at < $1
             ORDER BY lease_expires_at LIMIT $2"
        ),
        &micros(p.lease_expired_before),
        limit,
    )
    .await
    .map_err(&pg)?;
    let cleanup_failed = jobs(
        &c,
        &format!(
            "SELECT id, queue, kind, finalized_at, errors -> -1 ->> 'message' FROM {s}.mend_jobs
             WHERE finalized_at >= $1 AND state = 'discarded'
               AND errors -> -1 ->> 'message' LIKE 'cleanup failed:%'
             ORDER BY finalized_at DESC LIMIT $2"
        ),
        &micros(p.discarded_since),
        limit,
    )
    .await
    .map_err(&pg)?;
    Ok(DoctorStats {
        database_now: Some(database_now),
        leader_held: Some(leader_held),
        waiting,
        stuck,
        cleanup_failed,
    })
}

/// Runs `sql` (columns id, queue, kind, at, detail) with a time and a row limit.
async fn jobs(
    c: &tokio_postgres::Client,
    sql: &str,
    at: &chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> std::result::Result<Vec<DoctorJob>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for r in c.query(sql, &[at, &limit]).await? {
        out.push(DoctorJob {
            id: r.try_get(0)?,
            queue: r.try_get(1)?,
            kind: r.try_get(2)?,
            at: r.try_get(3)?,
            detail: r.try_get(4)?,
        });
    }
    Ok(out)
}
