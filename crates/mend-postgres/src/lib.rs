//! The PostgreSQL store for mend: many nodes, one database.
//!
//! - Hot paths are single set-based statements over partial indexes: inserts as one
//!   `INSERT .. SELECT FROM unnest(..)`, claims as `FOR UPDATE SKIP LOCKED` over the head of a
//!   queue (as many jobs as the worker has free slots), completions as one `UPDATE .. FROM
//!   unnest(..)` per batch. Every outcome is fenced by (id, attempt, lease owner).
//! - Claims and heartbeats use their own small pool with `synchronous_commit = off`: losing
//!   one to a database crash only leaves a job available again (its worker's outcome is then
//!   fenced out), while enqueues and outcomes commit durably. A later durable commit flushes
//!   the earlier asynchronous ones, so an outcome can never outlive its claim.
//! - One session connection per store holds an advisory lock per registered node and LISTENs
//!   for inserts (see `session`). The leader (another advisory lock) rescues the jobs of nodes
//!   whose lock is gone, within about a second of their death.
//! - Everything lives in one schema (`mend` unless configured), migrated under an advisory
//!   lock by whichever node starts first.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mend::StoreError> {
//! let store = mend_postgres::PgStore::open("postgres://postgres@127.0.0.1/app?schema=mend").await?;
//! # Ok(()) }
//! ```

mod error;
mod schema;
mod session;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use mend::job::{AttemptError, JobRow, JobState, NewJob, TimelineEvent};
use mend::maintenance::rescuer;
use mend::store::{
    CancelParams, CheckpointParams, ClaimParams, CleanupDoneParams, CompleteParams, CompleteResult,
    DeferDurableParams, ExtendLeasesParams, ExtendLeasesResult, HeldJob, JobPage, ListParams,
    NodeInfo, OutcomeKind, PruneParams, QueueCount, RescueParams, Rescued, Result, RetryParams,
    Store, StoreError, MAX_PAGE,
};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, NoTls, Row};
use uuid::Uuid;

pub use schema::SCHEMA_VERSION;
/// The driver, re-exported so callers of [`PgStore::insert_many_in`] use the same version.
pub use tokio_postgres;

use error::{decode, map_pg, map_pool};
use session::Session;

/// How often the leader looks for dead nodes: a lock check is one cheap query.
const RESCUE_EVERY: Duration = Duration::from_millis(200);
/// A node whose lock is missing is dead only if it is still missing this much later (a node
/// whose session was cut reconnects and re-locks within this window).
const CONFIRM_DEAD_AFTER: Duration = Duration::from_millis(250);
/// After its own session (re)connects, the leader judges nobody by a missing lock for this
/// long: after a database restart every node needs a moment to take its lock again.
const SESSION_GRACE: Duration = Duration::from_millis(1500);
/// Most due scheduled/retryable jobs promoted per claim.
const PROMOTE_BATCH: i64 = 1000;

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// The schema holding mend's tables (created if missing). Default `mend`. A `schema`
    /// parameter in the URL (`?schema=NAME`) overrides it.
    pub schema: String,
    /// Most connections for enqueues, outcomes and reads. Default 8.
    pub pool_size: usize,
    /// Most connections for claims and node heartbeats. Default 4.
    pub claim_pool_size: usize,
    /// Claims and node heartbeats commit without waiting for the WAL flush (see the module
    /// docs).
    /// Default `true`.
    pub async_claims: bool,
    /// How long to wait for a pooled connection before reporting the database unavailable.
    pub wait_timeout: Duration,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            schema: "mend".into(),
            pool_size: 8,
            claim_pool_size: 4,
            async_claims: true,
            wait_timeout: Duration::from_secs(10),
        }
    }
}

/// The PostgreSQL [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    target: String,
    schema: String,
    pool: Pool,
    fast: Pool,
    sql: Sql,
    session: Arc<Session>,
    session_task: tokio::task::JoinHandle<()>,
    wake: Arc<Notify>,
    /// Nodes whose lock was found missing, and when first (see [`CONFIRM_DEAD_AFTER`]).
    suspects: Mutex<HashMap<String, Instant>>,
    /// Nodes seen holding their lock, and through which session connection (its
    /// `up_since`). One seen since this session last connected has taken its lock back after
    /// any outage, so [`SESSION_GRACE`] need not cover it.
    relocked: Mutex<HashMap<String, Instant>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.session_task.abort();
    }
}

/// What [`effect`] wraps: the handler's writes, run inside the transaction that completes the
/// job.
type EffectFn = Box<
    dyn for<'t> FnOnce(
            &'t tokio_postgres::Transaction<'t>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>
                    + Send
                    + 't,
            >,
        > + Send,
>;

/// The handler's own writes to this database, to commit with its job's completion
/// (`JobContext::commit_with_completion`): they run inside the transaction that marks the job
/// completed; an error rolls both back.
///
/// ```no_run
/// # fn demo(ctx: &mend::JobContext, order: i64) {
/// ctx.commit_with_completion(mend_postgres::effect(move |tx| {
///     Box::pin(async move {
///         tx.execute("UPDATE orders SET receipt_sent = true WHERE id = $1", &[&order]).await?;
///         Ok(())
///     })
/// }));
/// # }
/// ```
pub fn effect<F>(f: F) -> mend::store::TxEffect
where
    F: for<'t> FnOnce(
            &'t tokio_postgres::Transaction<'t>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>
                    + Send
                    + 't,
            >,
        > + Send
        + 'static,
{
    let f: EffectFn = Box::new(f);
    mend::store::TxEffect::new(Box::new(f))
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The URL with any password hidden, for logs and errors.
pub use mend::store::redact_url;

/// Splits mend's own `schema` parameter off a URL; the rest goes to the driver.
pub fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| match p.split_once('=') {
            Some(("schema", v)) => {
                schema = Some(v.to_owned());
                false
            }
            _ => !p.is_empty(),
        })
        .collect();
    if rest.is_empty() {
        (base.to_owned(), schema)
    } else {
        (format!("{base}?{}", rest.join("&")), schema)
    }
}

fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 48
}

/// A stable 31-bit number for the schema: the advisory-lock namespace of its nodes, leader
/// and migrations (FNV-1a; the same in every process and version).
fn lock_namespace(schema: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in format!("mend:{schema}").bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h & 0x7fff_ffff) as i32
}

/// The SQL of every statement, with the schema filled in once at open.
struct Sql {
    schema_q: String,
    insert: String,
    select_unique: String,
    promote: String,
    claim: String,
    complete: String,
    completed_event: String,
    retry: String,
    finish_with_error: String,
    snooze: String,
    release: String,
    extend: String,
    extend_check: String,
    rescue_candidates: String,
    rescue_one: String,
    cancel_waiting: String,
    cancel_running: String,
    retry_finished: String,
    get_many: String,
    notify: String,
    dead_nodes: String,
    discard_bad: String,
}

const COLS: &str = "id, queue, kind, args, state, priority, attempt, max_attempts, run_at, created_at, attempted_at, finalized_at, lease_owner, lease_expires_at, cancel_requested, errors, unique_key, tags, result, timeout_ms, events, trace_parent, checkpoint, pending_cleanups";

/// A timestamp as the RFC 3339 text serde reads back exactly (microseconds, UTC).
fn ts_text(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

/// `events` with one more event; past the size bound the oldest stored event makes room.
fn with_event(event: &str) -> String {
    format!(
        "(CASE WHEN jsonb_typeof(events) <> 'array' THEN '[]'::jsonb WHEN pg_column_size(events) > {} THEN events - 0 ELSE events END) || jsonb_build_array({event})",
        mend::job::MAX_TIMELINE_BYTES
    )
}

/// The assignment that appends one event (see [`with_event`]).
fn push_event(event: &str) -> String {
    format!("events = {}", with_event(event))
}

/// An event that ends an attempt records when the attempt started (see `mend::job`).
fn attempt_event(param: &str) -> String {
    push_event(&format!(
        "({param}::jsonb || jsonb_build_object('started_at', {}))",
        ts_text("attempted_at")
    ))
}

/// Like [`attempt_event`] for outcomes a pending cancel request turns into `cancelled`.
fn attempt_event_or_cancelled(param: &str) -> String {
    push_event(&format!(
        "({param}::jsonb || jsonb_build_object('started_at', {}) || CASE WHEN cancel_requested THEN '{{\"event\":\"cancelled\"}}'::jsonb ELSE '{{}}'::jsonb END)",
        ts_text("attempted_at")
    ))
}

fn push_error(param: &str) -> String {
    format!("errors = (CASE WHEN jsonb_typeof(errors) = 'array' THEN errors ELSE '[]'::jsonb END) || jsonb_build_array({param}::jsonb)")
}

impl Sql {
    fn new(schema_q: &str, channel: &str) -> Self {
        let t = |s: &str| s.replace("{S}", schema_q);
        let fence = "WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'running'";
        Sql {
            schema_q: schema_q.to_owned(),
            insert: t("INSERT INTO {S}.mend_jobs (id, queue, kind, args, state, priority, max_attempts, run_at, created_at, unique_key, tags, timeout_ms, trace_parent)
                SELECT u.id, u.queue, u.kind, u.args, u.state, u.priority, u.max_attempts, u.run_at, $9, u.unique_key,
                       ARRAY(SELECT json_array_elements_text(u.tags)), u.timeout_ms, u.trace_parent
                FROM unnest($1::uuid[], $2::text[], $3::text[], $4::json[], $5::text[], $6::int2[], $7::int4[], $8::timestamptz[], $10::text[], $11::json[], $12::int8[], $13::text[])
                    AS u(id, queue, kind, args, state, priority, max_attempts, run_at, unique_key, tags, timeout_ms, trace_parent)
                ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
                RETURNING id"),
            select_unique: t(&format!("SELECT {COLS} FROM {{S}}.mend_jobs WHERE unique_key = ANY($1)")),
            promote: format!(
                "WITH due AS MATERIALIZED (SELECT id FROM {schema_q}.mend_jobs WHERE state IN ('scheduled', 'retryable') AND run_at <= $1
                    ORDER BY run_at LIMIT {PROMOTE_BATCH} FOR UPDATE SKIP LOCKED)
                 UPDATE {schema_q}.mend_jobs j SET state = 'available' FROM due
                 WHERE j.id = due.id AND j.state IN ('scheduled', 'retryable')
                 RETURNING pg_notify('{channel}', '')"
            ),
            claim: t(&format!(
                "WITH picked AS MATERIALIZED (
                    SELECT id FROM {{S}}.mend_jobs
                    WHERE state = 'available' AND queue = $1 AND (cardinality($2::text[]) = 0 OR kind = ANY($2::text[]))
                      AND NOT EXISTS (SELECT 1 FROM {{S}}.mend_queues q WHERE q.name = $1 AND q.paused)
                    ORDER BY priority, run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 UPDATE {{S}}.mend_jobs j SET state = 'running', attempt = j.attempt + 1, attempted_at = $4,
                     lease_owner = $5, lease_expires_at = $6
                 FROM picked WHERE j.id = picked.id
                 RETURNING {}",
                COLS.split(", ")
                    .map(|c| if c == "events" { "NULL::jsonb".to_owned() } else { format!("j.{c}") })
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            // A completed attempt's durable cleanups are dropped with it.
            complete: t("UPDATE {S}.mend_jobs j SET state = 'completed', finalized_at = $1, result = u.result, lease_expires_at = NULL, pending_cleanups = NULL
                FROM unnest($2::uuid[], $3::int4[], $4::text[], $5::json[]) AS u(id, attempt, owner, result)
                WHERE j.id = u.id AND j.attempt = u.attempt AND j.lease_owner = u.owner AND j.state = 'running'
                RETURNING j.id"),
            completed_event: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = 'completed', finalized_at = $4, result = $5::json, lease_expires_at = NULL, pending_cleanups = NULL, {} {fence}",
                attempt_event("$6")
            )),
            // A cancel request that arrived during the attempt wins over retry, snooze and release.
            retry: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'retryable' END,
                    finalized_at = CASE WHEN cancel_requested THEN $6::timestamptz END, run_at = $4, {}, {}, lease_expires_at = NULL {fence}",
                push_error("$5"),
                attempt_event_or_cancelled("$7")
            )),
            finish_with_error: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = $6, finalized_at = $4, {}, {}, lease_expires_at = NULL {fence}",
                push_error("$5"),
                attempt_event("$7")
            )),
            snooze: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE $5::text END,
                    finalized_at = CASE WHEN cancel_requested THEN $6::timestamptz END, run_at = $4, attempt = attempt - 1, {}, lease_expires_at = NULL {fence}",
                attempt_event_or_cancelled("$7")
            )),
            // A released job keeps its run_at, and so its place in the queue.
            release: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'available' END,
                    finalized_at = CASE WHEN cancel_requested THEN $4::timestamptz END, attempt = attempt - 1, {}, lease_expires_at = NULL {fence}",
                attempt_event_or_cancelled("$5")
            )),
            // Heartbeats never wait for a row lock: a row locked right now is being completed
            // (or cancelled) by someone, so it is skipped here and looked at without a lock
            // (`extend_check`). Waiting instead could deadlock with a completion batch that
            // locks the same rows in another order.
            extend: t("UPDATE {S}.mend_jobs j SET lease_expires_at = $1
                FROM (SELECT j2.id FROM {S}.mend_jobs j2 JOIN unnest($2::uuid[], $3::int4[]) AS u(id, attempt) ON j2.id = u.id
                      WHERE j2.attempt = u.attempt AND j2.lease_owner = $4 AND j2.state = 'running'
                      FOR UPDATE OF j2 SKIP LOCKED) l
                WHERE j.id = l.id
                RETURNING j.id, j.cancel_requested"),
            extend_check: t("SELECT j.id, j.cancel_requested FROM {S}.mend_jobs j
                JOIN unnest($1::uuid[], $2::int4[]) AS u(id, attempt) ON j.id = u.id
                WHERE j.attempt = u.attempt AND j.lease_owner = $3 AND j.state = 'running'"),
            rescue_candidates: t(&format!(
                "SELECT {COLS} FROM {{S}}.mend_jobs WHERE state = 'running'
                   AND (lease_owner = ANY($1) OR lease_expires_at < $2) FOR UPDATE SKIP LOCKED"
            )),
            // A job someone asked to cancel is not run again after its worker died.
            rescue_one: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE $1::text END,
                    finalized_at = CASE WHEN cancel_requested THEN $2::timestamptz ELSE $3::timestamptz END,
                    run_at = $2, lease_expires_at = NULL, {}, {}
                 WHERE id = $5 AND attempt = $6 AND state = 'running' RETURNING {COLS}",
                push_error("$4"),
                attempt_event_or_cancelled("$7")
            )),
            cancel_waiting: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = 'cancelled', finalized_at = $2, {}
                 WHERE id = ANY($1) AND state IN ('scheduled', 'available', 'retryable')",
                push_event("$3::jsonb")
            )),
            cancel_running: t(&format!(
                "UPDATE {{S}}.mend_jobs SET cancel_requested = true, {}
                 WHERE id = ANY($1) AND state = 'running' AND NOT cancel_requested",
                push_event("$2::jsonb")
            )),
            // A plain completion stored no event (the timeline derives it from finalized_at,
            // which the retry clears): write it down first.
            retry_finished: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = 'available', run_at = $2, finalized_at = NULL,
                    cancel_requested = false, max_attempts = greatest(max_attempts, attempt + 1),
                    checkpoint = CASE WHEN state = 'completed' THEN NULL ELSE checkpoint END,
                    events = (CASE WHEN jsonb_typeof(events) <> 'array' THEN '[]'::jsonb
                        WHEN state = 'completed' AND NOT events @> jsonb_build_array(jsonb_build_object('event', 'completed', 'attempt', attempt))
                        THEN events || jsonb_build_array(jsonb_build_object('at', {}, 'event', 'completed', 'attempt', attempt, 'node', lease_owner, 'started_at', {}))
                        ELSE events END) || jsonb_build_array($3::jsonb)
                 WHERE id = ANY($1) AND state IN ('completed', 'cancelled', 'discarded')",
                ts_text("finalized_at"),
                ts_text("attempted_at")
            )),
            get_many: t(&format!("SELECT {COLS} FROM {{S}}.mend_jobs WHERE id = ANY($1)")),
            notify: format!("SELECT pg_notify('{channel}', '')"),
            dead_nodes: t("SELECT n.id, n.last_seen < $2 AS stale,
                    NOT EXISTS (SELECT 1 FROM pg_locks l
                        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                          AND l.classid::int8 = $3 AND l.objid::int8 = n.lock_key) AS unlocked
                 FROM {S}.mend_nodes n WHERE n.id <> $1"),
            discard_bad: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = 'discarded', finalized_at = $2, lease_expires_at = NULL, {} WHERE id = $1",
                push_error("$3")
            )),
        }
    }
}

/// JSON for a jsonb parameter: PostgreSQL's jsonb cannot hold NUL characters, so any in
/// messages become U+FFFD.
fn jsonb<T: serde::Serialize>(v: &T) -> Result<Value> {
    fn scrub(v: &mut Value) {
        match v {
            Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{fffd}"),
            Value::Array(a) => a.iter_mut().for_each(scrub),
            Value::Object(o) => o.values_mut().for_each(scrub),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(v)
        .map_err(|e| StoreError::Database(format!("encoding a record: {e}")))?;
    scrub(&mut v);
    Ok(v)
}

fn row_to_job(r: &Row) -> Result<JobRow> {
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

/// Decodes rows; a row that cannot be decoded is returned apart (id and error), so one
/// damaged row cannot wedge a queue or the rescuer.
fn decode_lenient(rows: &[Row]) -> (Vec<JobRow>, Vec<(Uuid, StoreError)>) {
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

fn decode_all(rows: &[Row]) -> Result<Vec<JobRow>> {
    rows.iter().map(row_to_job).collect()
}

/// Rows returned in the order of `ids`, missing ones left out.
fn in_order(ids: &[Uuid], rows: Vec<JobRow>) -> Vec<JobRow> {
    let mut by_id: HashMap<Uuid, JobRow> = rows.into_iter().map(|j| (j.id, j)).collect();
    ids.iter().filter_map(|id| by_id.remove(id)).collect()
}

fn bound(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Timestamps as PostgreSQL stores them (microseconds), so returned rows equal later reads.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

impl PgStore {
    /// Connect to `url` (`postgres://user:password@host:port/db?schema=NAME`) with default
    /// settings, and migrate.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, PgConfig::default()).await
    }

    /// Connect with explicit settings, and migrate.
    pub async fn open_with(url: &str, mut config: PgConfig) -> Result<Self> {
        let target = redact_url(url);
        let (driver_url, url_schema) = split_schema(url);
        if let Some(s) = url_schema {
            config.schema = s;
        }
        if !valid_schema(&config.schema) {
            return Err(StoreError::Unavailable {
                target,
                detail: format!(
                    "schema name {:?} is not allowed: use 1-48 lowercase letters, digits or _",
                    config.schema
                ),
            });
        }
        let pg =
            tokio_postgres::Config::from_str(&driver_url).map_err(|e| StoreError::Unavailable {
                target: target.clone(),
                detail: format!("{e}; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"),
            })?;
        let mut pg = pg;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(5));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("mend");
        }
        let schema_q = format!("\"{}\"", config.schema);
        let ns = lock_namespace(&config.schema);
        let make_pool = |pg: tokio_postgres::Config, size: usize| {
            let mgr = Manager::from_config(
                pg,
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(mgr)
                .max_size(size.max(1))
                .wait_timeout(Some(config.wait_timeout))
                .create_timeout(Some(Duration::from_secs(5)))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| StoreError::Unavailable {
                    target: target.clone(),
                    detail: format!("cannot build the connection pool: {e}"),
                })
        };
        // Custom plans: the batch statements take arrays whose length the generic plan cannot
        // know (it assumes 10 rows, and then joins a 1000-row batch by scanning every running
        // job per row). Planning each execution costs far less than that.
        // Added to the URL's own `options`, if any.
        let with_options = |extra: &str| {
            let mut c = pg.clone();
            let base = pg.get_options().unwrap_or_default();
            c.options(format!("{base} {extra}").trim().to_owned());
            c
        };
        let pool = make_pool(
            with_options("-c plan_cache_mode=force_custom_plan"),
            config.pool_size,
        )?;
        // Claims must walk the claim index in order and stop at LIMIT. A table that grew
        // from empty has statistics that say "one row", and then the planner prefers a bitmap
        // scan of the whole queue plus a sort (measured: 55 ms per claim at 70k waiting jobs
        // instead of well under 1 ms); without bitmap scans the ordered walk is the cheapest.
        // Claims keep the default plan caching: a claim's generic plan is the ordered index
        // walk, and planning every claim would add most of a millisecond to pickup latency.
        let claim_options = if config.async_claims {
            "-c enable_bitmapscan=off -c synchronous_commit=off"
        } else {
            "-c enable_bitmapscan=off"
        };
        let fast_pg = with_options(claim_options);
        let fast = make_pool(fast_pg, config.claim_pool_size)?;

        // Migrate before the session starts: it needs the lock sequence.
        {
            let mut client = pool.get().await.map_err(|e| map_pool(&target, e))?;
            let tx = client.transaction().await.map_err(|e| map_pg(&target, e))?;
            schema::migrate(&tx, &schema_q, ns, &target).await?;
            tx.commit().await.map_err(|e| map_pg(&target, e))?;
        }

        let wake = Arc::new(Notify::new());
        let session = Arc::new(Session::new(
            pg,
            target.clone(),
            &config.schema,
            schema_q.clone(),
            ns,
            wake.clone(),
        ));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let session_task = tokio::spawn(session.clone().run(ready_tx));
        ready_rx.await.map_err(|_| StoreError::Closed)??;
        let sql = Sql::new(&schema_q, &session.channel);
        Ok(PgStore {
            inner: Arc::new(Inner {
                target,
                schema: config.schema,
                pool,
                fast,
                sql,
                session,
                session_task,
                wake,
                suspects: Mutex::new(HashMap::new()),
                relocked: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The schema holding mend's tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Insert jobs inside the caller's own transaction (or on any client): the jobs exist
    /// only if the caller's transaction commits, and idle workers are woken at its commit.
    ///
    /// ```no_run
    /// # async fn demo(store: &mend_postgres::PgStore, client: &mut mend_postgres::tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let tx = client.transaction().await?;
    /// tx.execute("INSERT INTO orders (id) VALUES (1)", &[]).await?;
    /// store.insert_many_in(&tx, vec![mend::NewJob::new("email", serde_json::json!({"order": 1}))]).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn insert_many_in<C: GenericClient + Sync>(
        &self,
        client: &C,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<JobRow>> {
        self.insert_with(client, self.inner.sql.insert.as_str(), jobs)
            .await
    }

    /// The insert, with its statement given as text (a caller's client) or prepared (ours).
    async fn insert_with<C, S>(
        &self,
        client: &C,
        insert: &S,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<JobRow>>
    where
        C: GenericClient + Sync,
        S: tokio_postgres::ToStatement + ?Sized + Sync + Send,
    {
        let t = &self.inner.target;
        for job in &jobs {
            job.validate()?;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let now = micros(Utc::now());
        let (params, mut rows) = insert_params(&jobs, now)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let inserted: HashSet<Uuid> = client
            .query(insert, &refs)
            .await
            .map_err(|e| map_pg(t, e))?
            .iter()
            .map(|r| r.try_get::<_, Uuid>(0))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| map_pg(t, e))?;
        if inserted.len() < jobs.len() {
            // Jobs whose unique key was taken: return the row that holds it.
            let keys: Vec<String> = jobs
                .iter()
                .filter(|j| !inserted.contains(&j.id))
                .filter_map(|j| j.unique_key.clone())
                .collect();
            let existing = decode_all(
                &client
                    .query(&self.inner.sql.select_unique, &[&keys])
                    .await
                    .map_err(|e| map_pg(t, e))?,
            )?;
            let by_key: HashMap<String, JobRow> = existing
                .into_iter()
                .filter_map(|j| j.unique_key.clone().map(|k| (k, j)))
                .collect();
            for row in rows.iter_mut() {
                if !inserted.contains(&row.id) {
                    let key = row.unique_key.clone().unwrap_or_default();
                    *row = by_key.get(&key).cloned().ok_or_else(|| {
                        StoreError::Database(format!(
                            "job {} was not inserted and no job holds its unique key",
                            row.id
                        ))
                    })?;
                }
            }
        }
        Ok(rows)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| map_pool(&self.inner.target, e))
    }

    async fn fast_client(&self) -> Result<deadpool_postgres::Object> {
        self.inner
            .fast
            .get()
            .await
            .map_err(|e| map_pool(&self.inner.target, e))
    }

    /// Runs `template` (with `{S}` standing for the schema) on a pooled connection.
    async fn query_s(&self, template: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let c = self.client().await?;
        c.query(&template.replace("{S}", &self.inner.sql.schema_q), params)
            .await
            .map_err(self.pg())
    }

    /// Like [`Self::query_s`], for a statement whose row count is all that matters.
    async fn execute_s(&self, template: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let c = self.client().await?;
        c.execute(&template.replace("{S}", &self.inner.sql.schema_q), params)
            .await
            .map_err(self.pg())
    }

    /// Changes a running attempt's pending durable cleanups (fenced; `None` when the attempt
    /// no longer holds the job), optionally recording a timeline event in the same write.
    async fn edit_pending<T>(
        &self,
        id: Uuid,
        attempt: i32,
        lease_owner: &str,
        event: Option<Value>,
        edit: impl FnOnce(&mut Vec<mend::cleanup::DurableCleanup>) -> T,
    ) -> Result<Option<T>> {
        let schema = &self.inner.sql.schema_q;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(self.pg())?;
        let rows = tx
            .query(
                &format!("SELECT pending_cleanups FROM {schema}.mend_jobs WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'running' FOR UPDATE"),
                &[&id, &attempt, &lease_owner],
            )
            .await
            .map_err(self.pg())?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let current: Option<Value> = row.try_get(0).map_err(self.pg())?;
        let mut list: Vec<mend::cleanup::DurableCleanup> = match current {
            Some(v) => {
                serde_json::from_value(v).map_err(|e| decode(Some(id), "pending_cleanups", e))?
            }
            None => Vec::new(),
        };
        let out = edit(&mut list);
        let list = if list.is_empty() {
            None
        } else {
            Some(jsonb(&list)?)
        };
        tx.execute(
            &format!(
                "UPDATE {schema}.mend_jobs SET pending_cleanups = $2, events = CASE WHEN $3::jsonb IS NULL THEN events ELSE {} END WHERE id = $1",
                with_event("$3::jsonb")
            ),
            &[&id, &list, &event],
        )
        .await
        .map_err(self.pg())?;
        tx.commit().await.map_err(self.pg())?;
        Ok(Some(out))
    }

    fn pg(&self) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        move |e| map_pg(&self.inner.target, e)
    }

    /// How PostgreSQL plans each hot statement (claim, promotion, completion, lease
    /// extension, rescue scan), planned as the store's connections plan them (a custom plan
    /// per execution). Tests use it to keep every hot path on an index as the table grows.
    pub async fn explain_hot_paths(&self) -> Result<Vec<(&'static str, String)>> {
        let sql = &self.inner.sql;
        let now = "'2026-01-01T00:00:00Z'";
        let id = "'01900000-0000-7000-8000-000000000000'";
        let cases: [(&'static str, &str, &str, String); 5] = [
            (
                "claim",
                &sql.claim,
                "text, text[], int8, timestamptz, text, timestamptz",
                format!("'q', '{{}}', 10, {now}, 'n', {now}"),
            ),
            ("promote", &sql.promote, "timestamptz", now.to_owned()),
            (
                "complete",
                &sql.complete,
                "timestamptz, uuid[], int4[], text[], json[]",
                format!("{now}, ARRAY[{id}]::uuid[], '{{1}}', '{{n}}', ARRAY[NULL]::json[]"),
            ),
            (
                "extend",
                &sql.extend,
                "timestamptz, uuid[], int4[], text",
                format!("{now}, ARRAY[{id}]::uuid[], '{{1}}', 'n'"),
            ),
            (
                "rescue",
                &sql.rescue_candidates,
                "text[], timestamptz",
                format!("'{{n}}', {now}"),
            ),
        ];
        let c = self.client().await?;
        let mut out = Vec::new();
        for (name, statement, types, values) in cases {
            let script = format!(
                "BEGIN; SET LOCAL plan_cache_mode = force_custom_plan; PREPARE mend_explain ({types}) AS {statement}; EXPLAIN EXECUTE mend_explain ({values}); DEALLOCATE mend_explain; COMMIT;"
            );
            let messages = c.simple_query(&script).await.map_err(self.pg())?;
            let plan: Vec<String> = messages
                .iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .collect();
            out.push((name, plan.join("\n")));
        }
        Ok(out)
    }

    async fn discard_undecodable(
        &self,
        client: &impl GenericClient,
        bad: Vec<(Uuid, StoreError)>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        for (id, e) in bad {
            tracing::error!(error = %e, "discarding a job whose stored row cannot be read");
            let record = jsonb(&AttemptError::unreadable_row(&e, now))?;
            client
                .execute(&self.inner.sql.discard_bad, &[&id, &now, &record])
                .await
                .map_err(self.pg())?;
        }
        Ok(())
    }

    async fn notify_all(&self) {
        self.inner.wake.notify_waiters();
        if let Ok(c) = self.client().await {
            if let Err(e) = c.execute(&self.inner.sql.notify, &[]).await {
                tracing::debug!(error = %e, "notifying other nodes failed; they will poll");
            }
        }
    }
}

type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// The insert statement's array parameters, and the rows the insert will store.
fn insert_params(jobs: &[NewJob], now: DateTime<Utc>) -> Result<(Params, Vec<JobRow>)> {
    let n = jobs.len();
    let (mut ids, mut queues, mut kinds, mut args, mut states) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut trace_parents = Vec::with_capacity(n);
    let (mut prios, mut maxes, mut run_ats, mut keys, mut tags, mut timeouts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut rows = Vec::with_capacity(n);
    for job in jobs {
        let run_at = micros(job.run_at.unwrap_or(now));
        let state = if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Available
        };
        ids.push(job.id);
        queues.push(job.queue.clone());
        kinds.push(job.kind.clone());
        args.push(job.args.clone());
        states.push(state.as_str().to_owned());
        prios.push(job.priority);
        maxes.push(job.max_attempts);
        run_ats.push(run_at);
        keys.push(job.unique_key.clone());
        tags.push(serde_json::json!(job.tags));
        timeouts.push(job.timeout_ms);
        trace_parents.push(job.trace_parent.clone());
        rows.push(job.clone().into_row(state, run_at, now));
    }
    let params: Params = vec![
        Box::new(ids),
        Box::new(queues),
        Box::new(kinds),
        Box::new(args),
        Box::new(states),
        Box::new(prios),
        Box::new(maxes),
        Box::new(run_ats),
        Box::new(now),
        Box::new(keys),
        Box::new(tags),
        Box::new(timeouts),
        Box::new(trace_parents),
    ];
    Ok((params, rows))
}

#[async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(self.pg())?;
        schema::migrate(
            &tx,
            &self.inner.sql.schema_q,
            self.inner.session.ns,
            &self.inner.target,
        )
        .await?;
        tx.commit().await.map_err(self.pg())
    }

    async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobRow>> {
        let c = self.client().await?;
        let insert = c
            .prepare_cached(&self.inner.sql.insert)
            .await
            .map_err(self.pg())?;
        let rows = self.insert_with(&**c, &insert, jobs).await?;
        // Local fetchers at once; other nodes hear the trigger's NOTIFY.
        if rows.iter().any(|r| r.state == JobState::Available) {
            self.inner.wake.notify_waiters();
        }
        Ok(rows)
    }

    async fn claim(&self, p: ClaimParams) -> Result<Vec<JobRow>> {
        if p.limit == 0 {
            return Ok(Vec::new());
        }
        let c = self.fast_client().await?;
        let promote = c
            .prepare_cached(&self.inner.sql.promote)
            .await
            .map_err(self.pg())?;
        let claim = c
            .prepare_cached(&self.inner.sql.claim)
            .await
            .map_err(self.pg())?;
        let now = micros(p.now);
        let lease = chrono::Duration::from_std(p.lease_duration).unwrap_or(chrono::Duration::MAX);
        let expires_at = micros(
            now.checked_add_signed(lease)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        );
        let limit = bound(p.limit);
        // Pipelined: one round trip. The promotion commits before the claim runs, so due
        // jobs promoted here are claimable by this very claim.
        let promote_params: [&(dyn ToSql + Sync); 1] = [&now];
        let claim_params: [&(dyn ToSql + Sync); 6] = [
            &p.queue,
            &p.kinds,
            &limit,
            &now,
            &p.lease_owner,
            &expires_at,
        ];
        let (promoted, rows) = tokio::try_join!(
            c.execute(&promote, &promote_params),
            c.query(&claim, &claim_params)
        )
        .map_err(self.pg())?;
        if promoted > 0 {
            self.inner.wake.notify_waiters();
        }
        let (mut jobs, bad) = decode_lenient(&rows);
        if !bad.is_empty() {
            self.discard_undecodable(&**c, bad, p.now).await?;
        }
        jobs.sort_by_key(|a| (a.priority, a.run_at, a.id));
        Ok(jobs)
    }

    async fn complete_many(&self, p: CompleteParams) -> Result<CompleteResult> {
        if p.outcomes.is_empty() {
            return Ok(CompleteResult::default());
        }
        let requeued = p.outcomes.iter().any(|o| match o.kind {
            OutcomeKind::Release => true,
            OutcomeKind::Snooze { run_at } => run_at <= p.now,
            _ => false,
        });
        let now = micros(p.now);
        let sql = &self.inner.sql;
        // Plain completions go in one statement; the rest (rare) one statement each.
        let (mut ids, mut attempts, mut owners, mut results) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut rare = Vec::new();
        for o in &p.outcomes {
            match &o.kind {
                OutcomeKind::Completed { result } if o.cleanups.is_empty() => {
                    ids.push(o.id);
                    attempts.push(o.attempt);
                    owners.push(o.lease_owner.as_str());
                    results.push(result.clone());
                }
                _ => rare.push(o),
            }
        }
        let mut c = self.client().await?;
        let mut applied: HashSet<Uuid> = HashSet::new();
        // The plain completions: one statement of their own (each outcome is fenced on its
        // own, so they need no transaction with the rare ones).
        if !ids.is_empty() {
            let st = c.prepare_cached(&sql.complete).await.map_err(self.pg())?;
            for r in c
                .query(&st, &[&now, &ids, &attempts, &owners, &results])
                .await
                .map_err(self.pg())?
            {
                applied.insert(r.try_get(0).map_err(self.pg())?);
            }
        }
        if !rare.is_empty() {
            let tx = c.transaction().await.map_err(self.pg())?;
            for o in rare {
                let event = jsonb(&o.timeline_event(now))?;
                let (id, attempt, owner) = (&o.id, &o.attempt, &o.lease_owner);
                let (statement, state, run_at, record, result);
                let params: Vec<&(dyn ToSql + Sync)> = match &o.kind {
                    OutcomeKind::Completed { result: r } => {
                        statement = &sql.completed_event;
                        result = r.clone();
                        vec![id, attempt, owner, &now, &result, &event]
                    }
                    OutcomeKind::Retry { error, run_at: at } => {
                        statement = &sql.retry;
                        record = jsonb(error)?;
                        run_at = micros(*at);
                        vec![id, attempt, owner, &run_at, &record, &now, &event]
                    }
                    OutcomeKind::Discard { error } | OutcomeKind::Cancelled { error } => {
                        statement = &sql.finish_with_error;
                        state = if matches!(o.kind, OutcomeKind::Discard { .. }) {
                            "discarded"
                        } else {
                            "cancelled"
                        };
                        record = jsonb(error)?;
                        vec![id, attempt, owner, &now, &record, &state, &event]
                    }
                    OutcomeKind::Snooze { run_at: at } => {
                        statement = &sql.snooze;
                        run_at = micros(*at);
                        state = if run_at > now {
                            "scheduled"
                        } else {
                            "available"
                        };
                        vec![id, attempt, owner, &run_at, &state, &now, &event]
                    }
                    OutcomeKind::Release => {
                        statement = &sql.release;
                        vec![id, attempt, owner, &now, &event]
                    }
                };
                let st = tx.prepare_cached(statement).await.map_err(self.pg())?;
                if tx.execute(&st, &params).await.map_err(self.pg())? == 1 {
                    applied.insert(o.id);
                }
            }
            tx.commit().await.map_err(self.pg())?;
        }
        let mut result = CompleteResult::default();
        for o in &p.outcomes {
            if applied.contains(&o.id) {
                result.applied.push(o.id);
            } else {
                result.fenced.push(o.id);
            }
        }
        if requeued {
            self.notify_all().await;
        }
        Ok(result)
    }

    async fn defer_durable(&self, p: DeferDurableParams) -> Result<Option<u32>> {
        let (attempt, name, args) = (p.attempt, p.name, p.args);
        self.edit_pending(p.id, p.attempt, &p.lease_owner, None, move |list| {
            let seq = list.iter().map(|c| c.seq).max().unwrap_or(0) + 1;
            list.push(mend::cleanup::DurableCleanup {
                seq,
                attempt,
                name,
                args,
            });
            seq
        })
        .await
    }

    async fn cleanup_done(&self, p: CleanupDoneParams) -> Result<bool> {
        let event = jsonb(&p.event)?;
        let seq = p.seq;
        let done = self
            .edit_pending(p.id, p.attempt, &p.lease_owner, Some(event), move |list| {
                list.retain(|c| c.seq != seq)
            })
            .await?;
        Ok(done.is_some())
    }

    async fn complete_with_effect(
        &self,
        outcome: mend::store::Outcome,
        effect: mend::store::TxEffect,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let Ok(f) = effect.into_inner().downcast::<EffectFn>() else {
            return Err(StoreError::Database(
                "this effect was not built by mend_postgres::effect".into(),
            ));
        };
        let OutcomeKind::Completed { result } = &outcome.kind else {
            return Err(StoreError::Database(
                "effects commit with completions only".into(),
            ));
        };
        let now = micros(now);
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(self.pg())?;
        let rows = tx
            .query(
                &self.inner.sql.complete,
                &[
                    &now,
                    &vec![outcome.id],
                    &vec![outcome.attempt],
                    &vec![outcome.lease_owner.as_str()],
                    &vec![result.clone()],
                ],
            )
            .await
            .map_err(self.pg())?;
        if rows.is_empty() {
            return Ok(false);
        }
        f(&tx)
            .await
            .map_err(|e| StoreError::Database(format!("the job's own write failed: {e}")))?;
        tx.commit().await.map_err(self.pg())?;
        Ok(true)
    }

    async fn checkpoint(&self, p: CheckpointParams) -> Result<bool> {
        let n = self
            .execute_s(
                "UPDATE {S}.mend_jobs SET checkpoint = $4
                 WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'running'",
                &[&p.id, &p.attempt, &p.lease_owner, &p.state],
            )
            .await?;
        Ok(n == 1)
    }

    async fn extend_leases(&self, p: ExtendLeasesParams) -> Result<ExtendLeasesResult> {
        // The main pool: its custom plans size the unnest join by the real batch.
        let c = self.client().await?;
        let st = c
            .prepare_cached(&self.inner.sql.extend)
            .await
            .map_err(self.pg())?;
        let ids: Vec<Uuid> = p.jobs.iter().map(|h| h.id).collect();
        let attempts: Vec<i32> = p.jobs.iter().map(|h| h.attempt).collect();
        let expires = micros(p.expires_at);
        let mut rows = c
            .query(&st, &[&expires, &ids, &attempts, &p.lease_owner])
            .await
            .map_err(self.pg())?;
        if rows.len() < p.jobs.len() {
            // Skipped (locked) or gone: a plain read tells which.
            let returned: HashSet<Uuid> = rows
                .iter()
                .filter_map(|r| r.try_get::<_, Uuid>(0).ok())
                .collect();
            let (rest_ids, rest_attempts): (Vec<Uuid>, Vec<i32>) = p
                .jobs
                .iter()
                .filter(|h| !returned.contains(&h.id))
                .map(|h| (h.id, h.attempt))
                .unzip();
            rows.extend(
                c.query(
                    &self.inner.sql.extend_check,
                    &[&rest_ids, &rest_attempts, &p.lease_owner],
                )
                .await
                .map_err(self.pg())?,
            );
        }
        let mut out = ExtendLeasesResult::default();
        let mut kept = HashSet::new();
        for r in rows {
            let id: Uuid = r.try_get(0).map_err(self.pg())?;
            let cancel: bool = r.try_get(1).map_err(self.pg())?;
            kept.insert(id);
            if cancel {
                out.cancel_requested.push(id);
            }
        }
        out.lost = p
            .jobs
            .iter()
            .filter(|h| !kept.contains(&h.id))
            .copied()
            .collect::<Vec<HeldJob>>();
        Ok(out)
    }

    async fn rescue(&self, p: RescueParams) -> Result<Vec<Rescued>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(self.pg())?;
        let sql = &self.inner.sql;
        let now = micros(p.now);
        let rows = tx
            .query(&sql.rescue_candidates, &[&p.dead_nodes, &now])
            .await
            .map_err(self.pg())?;
        let (candidates, bad) = decode_lenient(&rows);
        self.discard_undecodable(&*tx, bad, now).await?;
        let mut out = Vec::new();
        for job in candidates {
            let d = rescuer::decide(&job, now, p.quarantine_after_lost);
            let finalized = (d.state == JobState::Discarded).then_some(now);
            let record = jsonb(&d.error)?;
            let mut event = TimelineEvent::new(
                now,
                if d.quarantined {
                    "quarantined"
                } else {
                    "rescued"
                },
            )
            .attempt(job.attempt)
            .detail(d.error.message.clone());
            if let Some(owner) = &job.lease_owner {
                event = event.node(owner.clone());
            }
            let event = jsonb(&event)?;
            let rows = tx
                .query(
                    &sql.rescue_one,
                    &[
                        &d.state.as_str(),
                        &now,
                        &finalized,
                        &record,
                        &job.id,
                        &job.attempt,
                        &event,
                    ],
                )
                .await
                .map_err(self.pg())?;
            if let Some(r) = rows.first() {
                out.push(Rescued {
                    job: row_to_job(r)?,
                    quarantined: d.quarantined,
                });
            }
        }
        tx.commit().await.map_err(self.pg())?;
        if !out.is_empty() {
            self.notify_all().await;
        }
        Ok(out)
    }

    async fn cancel(&self, p: CancelParams) -> Result<Vec<JobRow>> {
        let now = micros(p.now);
        let event = |name: &str| jsonb(&TimelineEvent::new(now, name).detail("on request"));
        let (cancelled, requested) = (event("cancelled")?, event("cancel_requested")?);
        let sql = &self.inner.sql;
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(self.pg())?;
        tx.execute(&sql.cancel_waiting, &[&p.ids, &now, &cancelled])
            .await
            .map_err(self.pg())?;
        tx.execute(&sql.cancel_running, &[&p.ids, &requested])
            .await
            .map_err(self.pg())?;
        let rows = decode_all(
            &tx.query(&sql.get_many, &[&p.ids])
                .await
                .map_err(self.pg())?,
        )?;
        tx.commit().await.map_err(self.pg())?;
        Ok(in_order(&p.ids, rows))
    }

    async fn retry(&self, p: RetryParams) -> Result<Vec<JobRow>> {
        let now = micros(p.now);
        let event = jsonb(&TimelineEvent::new(now, "retried").detail("on request"))?;
        let sql = &self.inner.sql;
        let rows = {
            let mut c = self.client().await?;
            let tx = c.transaction().await.map_err(self.pg())?;
            tx.execute(&sql.retry_finished, &[&p.ids, &now, &event])
                .await
                .map_err(self.pg())?;
            let rows = decode_all(
                &tx.query(&sql.get_many, &[&p.ids])
                    .await
                    .map_err(self.pg())?,
            )?;
            tx.execute(&sql.notify, &[]).await.map_err(self.pg())?;
            tx.commit().await.map_err(self.pg())?;
            rows
        };
        self.inner.wake.notify_waiters();
        Ok(in_order(&p.ids, rows))
    }

    async fn get(&self, id: Uuid) -> Result<Option<JobRow>> {
        let c = self.client().await?;
        let rows = c
            .query(&self.inner.sql.get_many, &[&vec![id]])
            .await
            .map_err(self.pg())?;
        rows.first().map(row_to_job).transpose()
    }

    async fn list(&self, p: ListParams) -> Result<JobPage> {
        let limit = p.limit.clamp(1, MAX_PAGE);
        let mut sql = format!(
            "SELECT {COLS} FROM {}.mend_jobs WHERE true",
            self.inner.sql.schema_q
        );
        let mut args: Params = Vec::new();
        if let Some(q) = p.queue {
            args.push(Box::new(q));
            sql.push_str(&format!(" AND queue = ${}", args.len()));
        }
        if !p.states.is_empty() {
            let states: Vec<String> = p.states.iter().map(|s| s.as_str().to_owned()).collect();
            args.push(Box::new(states));
            sql.push_str(&format!(" AND state = ANY(${}::text[])", args.len()));
        }
        if let Some(k) = p.kind {
            args.push(Box::new(k));
            sql.push_str(&format!(" AND kind = ${}", args.len()));
        }
        if let Some(t) = p.tag {
            args.push(Box::new(t));
            sql.push_str(&format!(" AND ${}::text = ANY(tags)", args.len()));
        }
        if let Some(before) = p.before {
            args.push(Box::new(before));
            sql.push_str(&format!(" AND id < ${}", args.len()));
        }
        args.push(Box::new(bound(limit + 1)));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
        let refs: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let c = self.client().await?;
        let mut jobs = decode_all(&c.query(&sql, &refs).await.map_err(self.pg())?)?;
        let next_cursor = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    async fn queue_counts(&self) -> Result<Vec<QueueCount>> {
        let c = self.client().await?;
        // One branch per partial index, so every count is an index scan.
        let sql = self.inner.sql.schema_q.as_str();
        let rows = c
            .query(
                &format!(
                    "SELECT queue, state, count(*)::int8 FROM {sql}.mend_jobs WHERE state = 'available' GROUP BY queue, state
                     UNION ALL
                     SELECT queue, state, count(*)::int8 FROM {sql}.mend_jobs WHERE state IN ('scheduled', 'retryable') GROUP BY queue, state
                     UNION ALL
                     SELECT queue, state, count(*)::int8 FROM {sql}.mend_jobs WHERE state = 'running' GROUP BY queue, state
                     UNION ALL
                     SELECT queue, state, count(*)::int8 FROM {sql}.mend_jobs WHERE finalized_at IS NOT NULL GROUP BY queue, state"
                ),
                &[],
            )
            .await
            .map_err(self.pg())?;
        let mut out = Vec::new();
        for r in rows {
            let queue: String = r.try_get(0).map_err(self.pg())?;
            let state: String = r.try_get(1).map_err(self.pg())?;
            let count: i64 = r.try_get(2).map_err(self.pg())?;
            let state = state
                .parse::<JobState>()
                .map_err(|e| StoreError::Database(e.to_string()))?;
            out.push(QueueCount {
                queue,
                state,
                count: u64::try_from(count).unwrap_or(0),
            });
        }
        out.sort_by(|a, b| (&a.queue, a.state).cmp(&(&b.queue, b.state)));
        Ok(out)
    }

    async fn register_node(&self, node: NodeInfo) -> Result<()> {
        // The lock first: a registered node without its lock would look dead.
        let key = self.inner.session.lock_node(&node.id).await?;
        self.execute_s(
            "INSERT INTO {S}.mend_nodes (id, host, pid, process_key, started_at, last_seen, lock_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, lock_key = excluded.lock_key",
            &[
                &node.id,
                &node.host,
                &i64::from(node.pid),
                &node.process_key,
                &micros(node.started_at),
                &micros(node.last_seen),
                &key,
            ],
        )
        .await?;
        Ok(())
    }

    async fn heartbeat_node(&self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        let c = self.fast_client().await?;
        let n = c
            .execute(
                &format!(
                    "UPDATE {}.mend_nodes SET last_seen = $2 WHERE id = $1",
                    self.inner.sql.schema_q
                ),
                &[&id, &micros(now)],
            )
            .await
            .map_err(self.pg())?;
        Ok(n == 1)
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        let rows = self
            .query_s(
                "SELECT id, host, pid, process_key, started_at, last_seen FROM {S}.mend_nodes ORDER BY id",
                &[],
            )
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let pid: i64 = r.try_get(2).map_err(self.pg())?;
            out.push(NodeInfo {
                id: r.try_get(0).map_err(self.pg())?,
                host: r.try_get(1).map_err(self.pg())?,
                pid: u32::try_from(pid).unwrap_or(0),
                process_key: r.try_get(3).map_err(self.pg())?,
                started_at: r.try_get(4).map_err(self.pg())?,
                last_seen: r.try_get(5).map_err(self.pg())?,
            });
        }
        Ok(out)
    }

    async fn deregister_nodes(&self, ids: Vec<String>) -> Result<()> {
        self.execute_s("DELETE FROM {S}.mend_nodes WHERE id = ANY($1)", &[&ids])
            .await?;
        self.inner.session.unlock_nodes(&ids).await;
        Ok(())
    }

    async fn prune(&self, p: PruneParams) -> Result<u64> {
        self.execute_s(
            "DELETE FROM {S}.mend_jobs WHERE id IN (
                SELECT id FROM {S}.mend_jobs WHERE finalized_at IS NOT NULL AND finalized_at < $1
                ORDER BY finalized_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            &[&p.finalized_before, &bound(p.limit)],
        )
        .await
    }

    async fn set_queue_paused(&self, queue: &str, paused: bool, now: DateTime<Utc>) -> Result<()> {
        self.execute_s(
            "INSERT INTO {S}.mend_queues (name, paused, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
            &[&queue, &paused, &micros(now)],
        )
        .await?;
        if !paused {
            self.notify_all().await;
        }
        Ok(())
    }

    async fn paused_queues(&self) -> Result<Vec<String>> {
        let rows = self
            .query_s(
                "SELECT name FROM {S}.mend_queues WHERE paused ORDER BY name",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(self.pg()))
            .collect()
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    async fn dead_nodes(&self, self_id: &str, stale_before: DateTime<Utc>) -> Result<Vec<String>> {
        let c = self.client().await?;
        let ns = i64::from(self.inner.session.ns);
        let rows = c
            .query(
                &self.inner.sql.dead_nodes,
                &[&self_id, &micros(stale_before), &ns],
            )
            .await
            .map_err(self.pg())?;
        let connection = self.inner.session.up_since();
        let grace_over = self.inner.session.up_for() >= SESSION_GRACE;
        let now = Instant::now();
        let mut suspects = self
            .inner
            .suspects
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut relocked = self
            .inner
            .relocked
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut missing = HashSet::new();
        let mut listed = HashSet::new();
        let mut dead = Vec::new();
        for r in rows {
            let id: String = r.try_get(0).map_err(self.pg())?;
            let stale: bool = r.try_get(1).map_err(self.pg())?;
            let unlocked: bool = r.try_get(2).map_err(self.pg())?;
            listed.insert(id.clone());
            if stale {
                dead.push(id);
            } else if unlocked {
                // A node that took its lock back since our last reconnect and then lost it
                // has died since: no need to wait out the grace meant for slow re-lockers.
                let back_since_reconnect =
                    connection.is_some() && relocked.get(&id) == connection.as_ref();
                let since = *suspects.entry(id.clone()).or_insert(now);
                if (grace_over || back_since_reconnect)
                    && now.duration_since(since) >= CONFIRM_DEAD_AFTER
                {
                    dead.push(id.clone());
                }
                missing.insert(id);
            } else if let Some(c) = connection {
                relocked.insert(id, c);
            }
        }
        suspects.retain(|id, _| missing.contains(id));
        relocked.retain(|id, _| listed.contains(id));
        Ok(dead)
    }

    async fn is_leader(&self) -> Result<bool> {
        self.inner.session.lead().await
    }

    fn rescue_interval(&self) -> Option<Duration> {
        Some(RESCUE_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_redacted() {
        assert_eq!(
            split_schema("postgres://u@h/db?schema=abc&sslmode=disable"),
            (
                "postgres://u@h/db?sslmode=disable".to_owned(),
                Some("abc".to_owned())
            )
        );
        assert_eq!(
            split_schema("postgres://u@h/db?schema=abc"),
            ("postgres://u@h/db".to_owned(), Some("abc".to_owned()))
        );
        assert_eq!(split_schema("postgres://u@h/db").1, None);
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=secret"),
            "postgres://h/db?user=u&password=***"
        );
        assert!(!redact_url("postgres://u:p%40ss@h/db").contains("p%40ss"));
    }

    #[test]
    fn schema_names_are_checked_and_namespaced() {
        assert!(valid_schema("mend"));
        assert!(valid_schema("mend_test_01"));
        assert!(!valid_schema("Mend"));
        assert!(!valid_schema("a\"; DROP TABLE x; --"));
        assert!(!valid_schema(""));
        assert!(!valid_schema(&"a".repeat(49)));
        assert_ne!(lock_namespace("a"), lock_namespace("b"));
        assert!(lock_namespace("mend") >= 0);
    }
}
