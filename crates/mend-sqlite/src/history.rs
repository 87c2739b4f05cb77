//! The dashboard's history (`mend_stats`, `mend_events`): per-minute aggregates, added to by
//! each flush and read merged (see `mend::stats`), and cluster events. Sketches are stored in
//! their sparse text form and merged here, on the writer, inside the flush's transaction: the
//! writer is the only one changing them, so read-merge-write cannot race.

use chrono::{DateTime, Utc};
use mend::stats::{
    Counts, Event, EventsParams, Merger, PruneHistoryParams, Sketch, StatsAnswer, StatsDelta,
    StatsParams,
};
use mend::store::{Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::map_err;
use crate::row::micros;
use crate::sql;

fn sketch(s: &str) -> Sketch {
    // A damaged sketch reads as empty rather than failing every chart.
    Sketch::from_text(s).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "skipping an unreadable latency sketch in mend_stats");
        Sketch::default()
    })
}

fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Adds `deltas` to their rows.
pub(crate) fn add(conn: &Connection, path: &str, deltas: Vec<StatsDelta>) -> Result<()> {
    let mut read = conn
        .prepare_cached(sql::STATS_SKETCHES)
        .map_err(|e| map_err(path, e))?;
    let mut write = conn
        .prepare_cached(sql::STATS_ADD)
        .map_err(|e| map_err(path, e))?;
    for d in deltas {
        let minute = micros(d.minute);
        let old: Option<(String, String)> = read
            .query_row(params![minute, d.queue, d.kind], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| map_err(path, e))?;
        let (mut wait, mut run) = (d.wait, d.run);
        if let Some((w, r)) = old {
            wait.merge(&sketch(&w));
            run.merge(&sketch(&r));
        }
        let c = d.counts;
        write
            .execute(params![
                minute,
                d.queue,
                d.kind,
                n(c.completed),
                n(c.retried),
                n(c.failed),
                n(c.cancelled),
                n(c.lost),
                n(c.snoozed),
                wait.to_text(),
                run.to_text()
            ])
            .map_err(|e| map_err(path, e))?;
    }
    Ok(())
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The window's rows, merged as `p` asks.
pub(crate) fn read(conn: &Connection, path: &str, p: StatsParams) -> Result<StatsAnswer> {
    let mut stmt = conn
        .prepare_cached(sql::STATS_READ)
        .map_err(|e| map_err(path, e))?;
    let mut rows = stmt
        .query(params![micros(p.since), micros(p.until), p.queue, p.kind])
        .map_err(|e| map_err(path, e))?;
    let mut merger = Merger::new(p);
    while let Some(r) = rows.next().map_err(|e| map_err(path, e))? {
        let minute: i64 = r.get(0).map_err(|e| map_err(path, e))?;
        let Some(minute) = DateTime::<Utc>::from_timestamp_micros(minute) else {
            continue;
        };
        let get = |i: usize| r.get::<_, i64>(i).map(count).map_err(|e| map_err(path, e));
        let delta = StatsDelta {
            minute,
            queue: r.get(1).map_err(|e| map_err(path, e))?,
            kind: r.get(2).map_err(|e| map_err(path, e))?,
            counts: Counts {
                completed: get(3)?,
                retried: get(4)?,
                failed: get(5)?,
                cancelled: get(6)?,
                lost: get(7)?,
                snoozed: get(8)?,
            },
            wait: sketch(&r.get::<_, String>(9).map_err(|e| map_err(path, e))?),
            run: sketch(&r.get::<_, String>(10).map_err(|e| map_err(path, e))?),
        };
        merger.add(&delta);
    }
    Ok(merger.finish())
}

/// Records `events`.
pub(crate) fn add_events(conn: &Connection, path: &str, events: Vec<Event>) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(sql::EVENT_ADD)
        .map_err(|e| map_err(path, e))?;
    for e in events {
        let detail = crate::row::to_json(&e.detail)?;
        stmt.execute(params![micros(e.at), e.kind, e.node, detail])
            .map_err(|err| map_err(path, err))?;
    }
    Ok(())
}

/// Events of the window, newest first.
pub(crate) fn events(conn: &Connection, path: &str, p: EventsParams) -> Result<Vec<Event>> {
    let kinds = if p.kinds.is_empty() {
        None
    } else {
        Some(crate::row::to_json(&p.kinds)?)
    };
    let limit = i64::try_from(p.limit.min(mend::stats::MAX_EVENTS)).unwrap_or(0);
    let mut stmt = conn
        .prepare_cached(sql::EVENTS_READ)
        .map_err(|e| map_err(path, e))?;
    let mut rows = stmt
        .query(params![micros(p.since), micros(p.until), kinds, limit])
        .map_err(|e| map_err(path, e))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(|e| map_err(path, e))? {
        let at: i64 = r.get(0).map_err(|e| map_err(path, e))?;
        let Some(at) = DateTime::<Utc>::from_timestamp_micros(at) else {
            continue;
        };
        let detail: String = r.get(3).map_err(|e| map_err(path, e))?;
        out.push(Event {
            at,
            kind: r.get(1).map_err(|e| map_err(path, e))?,
            node: r.get(2).map_err(|e| map_err(path, e))?,
            detail: serde_json::from_str(&detail)
                .map_err(|e| StoreError::database(format!("an event's detail is not JSON: {e}")))?,
        });
    }
    Ok(out)
}

/// Deletes up to `limit` old aggregate rows and up to `limit` old events.
pub(crate) fn prune(conn: &Connection, path: &str, p: PruneHistoryParams) -> Result<u64> {
    let limit = i64::try_from(p.limit).unwrap_or(i64::MAX);
    let before = micros(p.before);
    let stats = conn
        .prepare_cached(sql::STATS_PRUNE)
        .and_then(|mut s| s.execute(params![before, limit]))
        .map_err(|e| map_err(path, e))?;
    let events = conn
        .prepare_cached(sql::EVENTS_PRUNE)
        .and_then(|mut s| s.execute(params![before, limit]))
        .map_err(|e| map_err(path, e))?;
    let samples = crate::rollouts::prune_samples(conn, path, p.before, p.limit)?;
    Ok((stats + events) as u64 + samples)
}
