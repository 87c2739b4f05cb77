//! The dashboard's history (`mend_stats`, `mend_events`): per-minute aggregates and cluster
//! events. A flush is one `INSERT .. SELECT FROM unnest(..) ON CONFLICT DO UPDATE` that adds
//! counts and merges the latency sketches (`int8[]` bucket counts) element by element in SQL,
//! so flushes from many nodes add up without reading first. Rows come sorted by key
//! (`mend::stats::Recorder::take`), so two nodes flushing the same minutes lock them in the
//! same order and cannot deadlock.

use chrono::{DateTime, Utc};
use mend::stats::{
    Counts, Event, EventsParams, Merger, PruneHistoryParams, Sketch, StatsAnswer, StatsDelta,
    StatsParams,
};
use mend::store::Result;

use crate::row::micros;
use crate::PgStore;

/// The history's statements.
pub(crate) struct HistorySql {
    add: String,
    read: String,
    prune_stats: String,
    add_events: String,
    events: String,
    prune_events: String,
}

/// Adds old and new sketch arrays element by element (the shorter one padded with zeros).
const MERGE: &str = "(SELECT coalesce(array_agg(coalesce(a, 0) + coalesce(b, 0) ORDER BY i), '{}') FROM unnest(s.{c}, excluded.{c}) WITH ORDINALITY AS x(a, b, i))";

impl HistorySql {
    pub(crate) fn new(schema_q: &str) -> HistorySql {
        let t = |s: &str| s.replace("{S}", schema_q);
        let counts = mend::stats::Ended::ALL
            .map(mend::stats::Ended::name)
            .map(|c| format!("{c} = s.{c} + excluded.{c}"))
            .join(", ");
        HistorySql {
            add: t(&format!(
                "INSERT INTO {{S}}.mend_stats AS s (minute, queue, kind, completed, retried, failed, cancelled, lost, snoozed, wait, run)
                 SELECT m, q, k, c1, c2, c3, c4, c5, c6, string_to_array(w, ',')::int8[], string_to_array(r, ',')::int8[]
                 FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::text[], $11::text[])
                     AS u(m, q, k, c1, c2, c3, c4, c5, c6, w, r)
                 ON CONFLICT (minute, queue, kind) DO UPDATE SET {counts}, wait = {}, run = {}",
                MERGE.replace("{c}", "wait"),
                MERGE.replace("{c}", "run"),
            )),
            read: t("SELECT minute, queue, kind, completed, retried, failed, cancelled, lost, snoozed, wait, run
                 FROM {S}.mend_stats
                 WHERE minute >= $1 AND minute < $2 AND ($3::text IS NULL OR queue = $3) AND ($4::text IS NULL OR kind = $4)"),
            prune_stats: t("DELETE FROM {S}.mend_stats WHERE ctid = ANY(ARRAY(
                 SELECT ctid FROM {S}.mend_stats WHERE minute < $1 ORDER BY minute LIMIT $2))"),
            add_events: t("INSERT INTO {S}.mend_events (at, kind, node, detail)
                 SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::jsonb[])"),
            events: t("SELECT at, kind, node, detail FROM {S}.mend_events
                 WHERE at >= $1 AND at < $2 AND (cardinality($3::text[]) = 0 OR kind = ANY($3))
                 ORDER BY at DESC, id DESC LIMIT $4"),
            prune_events: t("DELETE FROM {S}.mend_events WHERE id = ANY(ARRAY(
                 SELECT id FROM {S}.mend_events WHERE at < $1 ORDER BY at LIMIT $2))"),
        }
    }
}

fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn dense_text(s: &Sketch) -> String {
    s.to_dense()
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Adds `deltas` to their rows in one statement.
pub(crate) async fn add(store: &PgStore, deltas: Vec<StatsDelta>) -> Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let minutes: Vec<DateTime<Utc>> = deltas.iter().map(|d| d.minute).collect();
    let queues: Vec<&str> = deltas.iter().map(|d| d.queue.as_str()).collect();
    let kinds: Vec<&str> = deltas.iter().map(|d| d.kind.as_str()).collect();
    let col =
        |f: fn(&Counts) -> u64| -> Vec<i64> { deltas.iter().map(|d| n(f(&d.counts))).collect() };
    let (c1, c2, c3) = (col(|c| c.completed), col(|c| c.retried), col(|c| c.failed));
    let (c4, c5, c6) = (col(|c| c.cancelled), col(|c| c.lost), col(|c| c.snoozed));
    let waits: Vec<String> = deltas.iter().map(|d| dense_text(&d.wait)).collect();
    let runs: Vec<String> = deltas.iter().map(|d| dense_text(&d.run)).collect();
    let c = store.client().await?;
    c.execute(
        &store.inner.sql.history.add,
        &[
            &minutes, &queues, &kinds, &c1, &c2, &c3, &c4, &c5, &c6, &waits, &runs,
        ],
    )
    .await
    .map_err(store.pg())?;
    Ok(())
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The window's rows, merged as `p` asks.
pub(crate) async fn read(store: &PgStore, p: StatsParams) -> Result<StatsAnswer> {
    let rows = store
        .query(
            &store.inner.sql.history.read,
            &[&p.since, &p.until, &p.queue, &p.kind],
        )
        .await?;
    let mut merger = Merger::new(p);
    let pg = store.pg();
    for r in rows {
        let get = |i: usize| r.try_get::<_, i64>(i).map(count).map_err(&pg);
        let wait: Vec<i64> = r.try_get(9).map_err(&pg)?;
        let run: Vec<i64> = r.try_get(10).map_err(&pg)?;
        merger.add(&StatsDelta {
            minute: r.try_get(0).map_err(&pg)?,
            queue: r.try_get(1).map_err(&pg)?,
            kind: r.try_get(2).map_err(&pg)?,
            counts: Counts {
                completed: get(3)?,
                retried: get(4)?,
                failed: get(5)?,
                cancelled: get(6)?,
                lost: get(7)?,
                snoozed: get(8)?,
            },
            wait: Sketch::from_dense(&wait),
            run: Sketch::from_dense(&run),
        });
    }
    Ok(merger.finish())
}

/// Records `events` in one statement.
pub(crate) async fn add_events(store: &PgStore, events: Vec<Event>) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let at: Vec<DateTime<Utc>> = events.iter().map(|e| micros(e.at)).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let nodes: Vec<&str> = events.iter().map(|e| e.node.as_str()).collect();
    let details = events
        .iter()
        .map(|e| crate::row::jsonb(&e.detail))
        .collect::<Result<Vec<_>>>()?;
    let c = store.client().await?;
    c.execute(
        &store.inner.sql.history.add_events,
        &[&at, &kinds, &nodes, &details],
    )
    .await
    .map_err(store.pg())?;
    Ok(())
}

/// Events of the window, newest first.
pub(crate) async fn events(store: &PgStore, p: EventsParams) -> Result<Vec<Event>> {
    let limit = crate::row::bound(p.limit.min(mend::stats::MAX_EVENTS));
    let rows = store
        .query(
            &store.inner.sql.history.events,
            &[&p.since, &p.until, &p.kinds, &limit],
        )
        .await?;
    let pg = store.pg();
    rows.iter()
        .map(|r| {
            Ok(Event {
                at: r.try_get(0).map_err(&pg)?,
                kind: r.try_get(1).map_err(&pg)?,
                node: r.try_get(2).map_err(&pg)?,
                detail: r.try_get(3).map_err(&pg)?,
            })
        })
        .collect()
}

/// Deletes up to `limit` old aggregate rows and up to `limit` old events.
pub(crate) async fn prune(store: &PgStore, p: PruneHistoryParams) -> Result<u64> {
    let limit = crate::row::bound(p.limit);
    let c = store.client().await?;
    let stats = c
        .execute(&store.inner.sql.history.prune_stats, &[&p.before, &limit])
        .await
        .map_err(store.pg())?;
    let events = c
        .execute(&store.inner.sql.history.prune_events, &[&p.before, &limit])
        .await
        .map_err(store.pg())?;
    let samples = crate::rollouts::prune_samples(store, p.before, limit).await?;
    Ok(stats + events + samples)
}
