//! Periodic job schedules (`mend_cron`): their statements, and upsert, read, pause, delete and
//! the compare-and-set advance that inserts a due slot's jobs in the same transaction. Which
//! slots are due is core's decision (`mend::cron`); this module only stores it.

use chrono::{DateTime, Utc};
use mend::cron::{CatchUp, CronRow, CronRun, Periodic};
use mend::job::JobRow;
use mend::store::{
    AdvanceCronParams, DueCronParams, Result, SetCronPausedParams, StoreError, UpsertCronParams,
};
use rusqlite::{params, Connection, Row};

use crate::error::map_err;
use crate::row::{micros, to_json};

/// Every column of `mend_cron`, in the order [`decode`] reads them.
const COLS: &str = "name, schedule, timezone, kind, queue, args, priority, max_attempts, tags, catch_up, catch_up_max, paused, next_slot, last_slot, recent_runs, skipped, created_at, updated_at";

/// Insert a schedule, or replace the declaration of an existing one: its paused flag and
/// history stay, and its next slot too unless the expression or the zone changed.
fn upsert_sql() -> String {
    format!(
        "INSERT INTO mend_cron (name, schedule, timezone, kind, queue, args, priority, max_attempts, tags, catch_up, catch_up_max, paused, next_slot, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, ?12, ?13, ?13)
         ON CONFLICT (name) DO UPDATE SET
             next_slot = CASE WHEN mend_cron.schedule <> excluded.schedule OR mend_cron.timezone <> excluded.timezone
                              THEN excluded.next_slot ELSE mend_cron.next_slot END,
             schedule = excluded.schedule, timezone = excluded.timezone, kind = excluded.kind,
             queue = excluded.queue, args = excluded.args, priority = excluded.priority,
             max_attempts = excluded.max_attempts, tags = excluded.tags, catch_up = excluded.catch_up,
             catch_up_max = excluded.catch_up_max, updated_at = excluded.updated_at
         RETURNING {COLS}"
    )
}

fn select_sql(filter: &str) -> String {
    format!("SELECT {COLS} FROM mend_cron {filter}")
}

/// Resuming a paused schedule starts it at its next slot after now (`?3`); anything else
/// keeps the next slot.
fn set_paused_sql() -> String {
    format!(
        "UPDATE mend_cron SET next_slot = CASE WHEN paused = 1 AND ?2 = 0 THEN ?3 ELSE next_slot END,
             paused = ?2, updated_at = ?4
         WHERE name = ?1 RETURNING {COLS}"
    )
}

/// The compare-and-set: applies only while the next slot is the one the scheduler read and
/// the schedule is not paused.
const ADVANCE: &str = "UPDATE mend_cron SET next_slot = ?3, last_slot = COALESCE(?4, last_slot), skipped = ?5, updated_at = ?6
     WHERE name = ?1 AND next_slot = ?2 AND paused = 0";

const SET_RUNS: &str = "UPDATE mend_cron SET recent_runs = ?2 WHERE name = ?1";

const DELETE: &str = "DELETE FROM mend_cron WHERE name = ?1";

fn bad(name: &str, column: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Decode {
        id: format!("cron schedule {name}"),
        column,
        detail: detail.to_string(),
    }
}

fn ts(name: &str, column: &'static str, v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| bad(name, column, "timestamp out of range"))
}

fn json<T: serde::de::DeserializeOwned>(name: &str, column: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| bad(name, column, e))
}

/// The raw columns of one row; decoded outside rusqlite so a bad value names its column.
type Raw = (
    String,
    String,
    String,
    String,
    String,
    String,
    i16,
    i32,
    String,
    String,
    i64,
    bool,
    i64,
    Option<i64>,
    String,
    String,
    i64,
    i64,
);

fn raw(r: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
        r.get(14)?,
        r.get(15)?,
        r.get(16)?,
        r.get(17)?,
    ))
}

fn decode(r: Raw) -> Result<CronRow> {
    let (
        name,
        schedule,
        timezone,
        kind,
        queue,
        args,
        priority,
        max_attempts,
        tags,
        catch_up,
        catch_up_max,
        paused,
        next_slot,
        last_slot,
        recent_runs,
        skipped,
        created_at,
        updated_at,
    ) = r;
    let catch_up: CatchUp = catch_up
        .parse()
        .map_err(|e: mend::cron::CronError| bad(&name, "catch_up", e))?;
    let row = CronRow {
        paused,
        next_slot: ts(&name, "next_slot", next_slot)?,
        last_slot: last_slot.map(|v| ts(&name, "last_slot", v)).transpose()?,
        recent_runs: json::<Vec<CronRun>>(&name, "recent_runs", &recent_runs)?,
        skipped: json(&name, "skipped", &skipped)?,
        created_at: ts(&name, "created_at", created_at)?,
        updated_at: ts(&name, "updated_at", updated_at)?,
        periodic: Periodic {
            args: json(&name, "args", &args)?,
            tags: json(&name, "tags", &tags)?,
            schedule,
            timezone,
            kind,
            queue,
            priority,
            max_attempts,
            catch_up,
            catch_up_max: u32::try_from(catch_up_max).unwrap_or(1),
            name,
        },
    };
    Ok(row)
}

fn query(
    conn: &Connection,
    path: &str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<CronRow>> {
    let mut stmt = conn.prepare_cached(sql).map_err(|e| map_err(path, e))?;
    let raws = stmt
        .query_map(params, raw)
        .map_err(|e| map_err(path, e))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| map_err(path, e))?;
    raws.into_iter().map(decode).collect()
}

/// See `Store::cron_upsert`.
pub(crate) fn upsert(conn: &Connection, path: &str, p: UpsertCronParams) -> Result<CronRow> {
    let d = &p.periodic;
    let rows = query(
        conn,
        path,
        &upsert_sql(),
        params![
            d.name,
            d.schedule,
            d.timezone,
            d.kind,
            d.queue,
            to_json(&d.args)?,
            d.priority,
            d.max_attempts,
            to_json(&d.tags)?,
            d.catch_up.as_str(),
            i64::from(d.catch_up_max),
            micros(p.next_slot),
            micros(p.now),
        ],
    )?;
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::database("upserting a schedule returned no row"))
}

/// Every schedule, by name.
pub(crate) fn list(conn: &Connection, path: &str) -> Result<Vec<CronRow>> {
    query(conn, path, &select_sql("ORDER BY name"), [])
}

/// One schedule.
pub(crate) fn get(conn: &Connection, path: &str, name: &str) -> Result<Option<CronRow>> {
    Ok(query(conn, path, &select_sql("WHERE name = ?1"), [name])?
        .into_iter()
        .next())
}

/// Schedules with a slot due (the partial index `mend_cron_due`).
pub(crate) fn due(conn: &Connection, path: &str, p: DueCronParams) -> Result<Vec<CronRow>> {
    let limit = i64::try_from(p.limit).unwrap_or(i64::MAX);
    query(
        conn,
        path,
        &select_sql("WHERE paused = 0 AND next_slot <= ?1 ORDER BY next_slot LIMIT ?2"),
        params![micros(p.now), limit],
    )
}

/// See `Store::cron_set_paused`.
pub(crate) fn set_paused(
    conn: &Connection,
    path: &str,
    p: SetCronPausedParams,
) -> Result<Option<CronRow>> {
    Ok(query(
        conn,
        path,
        &set_paused_sql(),
        params![p.name, p.paused, micros(p.next_slot), micros(p.now)],
    )?
    .into_iter()
    .next())
}

/// See `Store::cron_delete`.
pub(crate) fn delete(conn: &Connection, path: &str, name: &str) -> Result<bool> {
    let n = conn
        .prepare_cached(DELETE)
        .and_then(|mut s| s.execute([name]))
        .map_err(|e| map_err(path, e))?;
    Ok(n > 0)
}

/// See `Store::cron_advance`: the compare-and-set, then the jobs, then the runs, all in the
/// writer's one savepoint.
pub(crate) fn advance(
    conn: &Connection,
    path: &str,
    p: AdvanceCronParams,
) -> Result<Option<Vec<JobRow>>> {
    let won = conn
        .prepare_cached(ADVANCE)
        .and_then(|mut s| {
            s.execute(params![
                p.name,
                micros(p.expected_next_slot),
                micros(p.next_slot),
                p.slots.last().map(|t| micros(*t)),
                to_json(&p.skipped)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                micros(p.now),
            ])
        })
        .map_err(|e| map_err(path, e))?;
    if won == 0 {
        return Ok(None);
    }
    let jobs = if p.jobs.is_empty() {
        Vec::new()
    } else {
        crate::jobs::insert(conn, path, p.jobs)?
    };
    let ids: Vec<uuid::Uuid> = jobs.iter().map(|j| j.id).collect();
    let runs = mend::cron::merge_runs(&p.runs_before, &p.slots, &ids);
    conn.prepare_cached(SET_RUNS)
        .and_then(|mut s| {
            s.execute(params![
                p.name,
                to_json(&runs).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?
            ])
        })
        .map_err(|e| map_err(path, e))?;
    Ok(Some(jobs))
}
