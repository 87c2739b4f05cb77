//! Periodic job schedules (`mend_cron`): their statements, and upsert, read, pause, delete and
//! the compare-and-set advance that inserts a due slot's jobs in the same transaction. Which
//! slots are due is core's decision (`mend::cron`); this module only stores it.
//!
//! The advance's `UPDATE .. WHERE next_slot = $expected` takes the schedule's row lock: a
//! second scheduler racing waits for the first one's commit, then finds the next slot moved
//! and updates nothing, so it inserts nothing either.

use chrono::{DateTime, Utc};
use mend::cron::{CatchUp, CronRow, CronRun, Periodic};
use mend::job::{JobRow, JobState};
use mend::store::{
    AdvanceCronParams, DueCronParams, Result, SetCronPausedParams, StoreError, UpsertCronParams,
};
use serde_json::Value;
use tokio_postgres::Row;

use crate::row::{bound, micros};
use crate::PgStore;

/// Every column of `mend_cron`, in the order [`decode`] reads them.
const COLS: &str = "name, schedule, timezone, kind, queue, args, priority, max_attempts, tags, catch_up, catch_up_max, paused, next_slot, last_slot, recent_runs, skipped, created_at, updated_at";

/// The statements, for the store's schema.
struct Statements {
    upsert: String,
    list: String,
    get: String,
    due: String,
    set_paused: String,
    delete: String,
    advance: String,
    set_runs: String,
}

fn statements(schema_q: &str) -> Statements {
    let t = format!("{schema_q}.mend_cron");
    Statements {
        // A schedule already stored keeps its paused flag and history, and its next slot
        // unless the expression or the zone changed.
        upsert: format!(
            "INSERT INTO {t} AS c (name, schedule, timezone, kind, queue, args, priority, max_attempts, tags, catch_up, catch_up_max, paused, next_slot, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, false, $12, $13, $13)
             ON CONFLICT (name) DO UPDATE SET
                 next_slot = CASE WHEN c.schedule <> excluded.schedule OR c.timezone <> excluded.timezone
                                  THEN excluded.next_slot ELSE c.next_slot END,
                 schedule = excluded.schedule, timezone = excluded.timezone, kind = excluded.kind,
                 queue = excluded.queue, args = excluded.args, priority = excluded.priority,
                 max_attempts = excluded.max_attempts, tags = excluded.tags, catch_up = excluded.catch_up,
                 catch_up_max = excluded.catch_up_max, updated_at = excluded.updated_at
             RETURNING {COLS}"
        ),
        list: format!("SELECT {COLS} FROM {t} ORDER BY name"),
        get: format!("SELECT {COLS} FROM {t} WHERE name = $1"),
        // The partial index `mend_cron_due`.
        due: format!(
            "SELECT {COLS} FROM {t} WHERE NOT paused AND next_slot <= $1 ORDER BY next_slot LIMIT $2"
        ),
        // Resuming a paused schedule starts it at its next slot after now.
        set_paused: format!(
            "UPDATE {t} SET next_slot = CASE WHEN paused AND NOT $2 THEN $3 ELSE next_slot END,
                 paused = $2, updated_at = $4
             WHERE name = $1 RETURNING {COLS}"
        ),
        delete: format!("DELETE FROM {t} WHERE name = $1"),
        advance: format!(
            "UPDATE {t} SET next_slot = $3, last_slot = COALESCE($4, last_slot), skipped = $5, updated_at = $6
             WHERE name = $1 AND next_slot = $2 AND NOT paused"
        ),
        set_runs: format!("UPDATE {t} SET recent_runs = $2 WHERE name = $1"),
    }
}

fn bad(name: &str, column: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Decode {
        id: format!("cron schedule {name}"),
        column,
        detail: detail.to_string(),
    }
}

fn decode(store: &PgStore, r: &Row) -> Result<CronRow> {
    let pg = store.pg();
    let name: String = r.try_get(0).map_err(&pg)?;
    let json = |i: usize, column: &'static str| -> Result<Value> {
        r.try_get::<_, Value>(i).map_err(|e| bad(&name, column, e))
    };
    let catch_up: String = r.try_get(9).map_err(&pg)?;
    let catch_up: CatchUp = catch_up
        .parse()
        .map_err(|e: mend::cron::CronError| bad(&name, "catch_up", e))?;
    let recent_runs: Vec<CronRun> = serde_json::from_value(json(14, "recent_runs")?)
        .map_err(|e| bad(&name, "recent_runs", e))?;
    let skipped: Vec<DateTime<Utc>> =
        serde_json::from_value(json(15, "skipped")?).map_err(|e| bad(&name, "skipped", e))?;
    let tags: Vec<String> =
        serde_json::from_value(json(8, "tags")?).map_err(|e| bad(&name, "tags", e))?;
    let catch_up_max: i32 = r.try_get(10).map_err(&pg)?;
    Ok(CronRow {
        periodic: Periodic {
            schedule: r.try_get(1).map_err(&pg)?,
            timezone: r.try_get(2).map_err(&pg)?,
            kind: r.try_get(3).map_err(&pg)?,
            queue: r.try_get(4).map_err(&pg)?,
            args: json(5, "args")?,
            priority: r.try_get(6).map_err(&pg)?,
            max_attempts: r.try_get(7).map_err(&pg)?,
            tags,
            catch_up,
            catch_up_max: u32::try_from(catch_up_max).unwrap_or(1),
            name: name.clone(),
        },
        paused: r.try_get(11).map_err(&pg)?,
        next_slot: r.try_get(12).map_err(&pg)?,
        last_slot: r.try_get(13).map_err(&pg)?,
        recent_runs,
        skipped,
        created_at: r.try_get(16).map_err(&pg)?,
        updated_at: r.try_get(17).map_err(&pg)?,
    })
}

fn decode_all(store: &PgStore, rows: &[Row]) -> Result<Vec<CronRow>> {
    rows.iter().map(|r| decode(store, r)).collect()
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| StoreError::database(e.to_string()))
}

/// See `Store::cron_upsert`.
pub(crate) async fn upsert(store: &PgStore, p: UpsertCronParams) -> Result<CronRow> {
    let s = statements(&store.inner.sql.schema_q);
    let d = &p.periodic;
    let tags = to_value(&d.tags)?;
    let max = i32::try_from(d.catch_up_max).unwrap_or(i32::MAX);
    let rows = store
        .query(
            &s.upsert,
            &[
                &d.name,
                &d.schedule,
                &d.timezone,
                &d.kind,
                &d.queue,
                &d.args,
                &d.priority,
                &d.max_attempts,
                &tags,
                &d.catch_up.as_str(),
                &max,
                &micros(p.next_slot),
                &micros(p.now),
            ],
        )
        .await?;
    decode_all(store, &rows)?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::database("upserting a schedule returned no row"))
}

/// Every schedule, by name.
pub(crate) async fn list(store: &PgStore) -> Result<Vec<CronRow>> {
    let s = statements(&store.inner.sql.schema_q);
    let rows = store.query(&s.list, &[]).await?;
    decode_all(store, &rows)
}

/// One schedule.
pub(crate) async fn get(store: &PgStore, name: &str) -> Result<Option<CronRow>> {
    let s = statements(&store.inner.sql.schema_q);
    let rows = store.query(&s.get, &[&name]).await?;
    Ok(decode_all(store, &rows)?.into_iter().next())
}

/// Schedules with a slot due.
pub(crate) async fn due(store: &PgStore, p: DueCronParams) -> Result<Vec<CronRow>> {
    let s = statements(&store.inner.sql.schema_q);
    let rows = store
        .query(&s.due, &[&micros(p.now), &bound(p.limit)])
        .await?;
    decode_all(store, &rows)
}

/// See `Store::cron_set_paused`.
pub(crate) async fn set_paused(store: &PgStore, p: SetCronPausedParams) -> Result<Option<CronRow>> {
    let s = statements(&store.inner.sql.schema_q);
    let rows = store
        .query(
            &s.set_paused,
            &[&p.name, &p.paused, &micros(p.next_slot), &micros(p.now)],
        )
        .await?;
    Ok(decode_all(store, &rows)?.into_iter().next())
}

/// See `Store::cron_delete`.
pub(crate) async fn delete(store: &PgStore, name: &str) -> Result<bool> {
    let s = statements(&store.inner.sql.schema_q);
    let c = store.client().await?;
    let n = c.execute(&s.delete, &[&name]).await.map_err(store.pg())?;
    Ok(n > 0)
}

/// See `Store::cron_advance`: the compare-and-set, the jobs and the runs in one transaction.
pub(crate) async fn advance(store: &PgStore, p: AdvanceCronParams) -> Result<Option<Vec<JobRow>>> {
    let s = statements(&store.inner.sql.schema_q);
    let mut c = store.client().await?;
    let tx = c.transaction().await.map_err(store.pg())?;
    let last = p.slots.last().map(|t| micros(*t));
    let won = tx
        .execute(
            &s.advance,
            &[
                &p.name,
                &micros(p.expected_next_slot),
                &micros(p.next_slot),
                &last,
                &to_value(&p.skipped)?,
                &micros(p.now),
            ],
        )
        .await
        .map_err(store.pg())?;
    if won == 0 {
        // Dropping the transaction rolls it back.
        return Ok(None);
    }
    let jobs =
        crate::jobs::insert_with(store, &*tx, store.inner.sql.insert.as_str(), p.jobs).await?;
    let ids: Vec<uuid::Uuid> = jobs.iter().map(|j| j.id).collect();
    let runs = mend::cron::merge_runs(&p.runs_before, &p.slots, &ids);
    tx.execute(&s.set_runs, &[&p.name, &to_value(&runs)?])
        .await
        .map_err(store.pg())?;
    tx.commit().await.map_err(store.pg())?;
    // Other nodes hear the insert trigger's NOTIFY; local fetchers are woken here.
    if jobs.iter().any(|j| j.state == JobState::Available) {
        store.inner.wake.notify_waiters();
    }
    Ok(Some(jobs))
}
