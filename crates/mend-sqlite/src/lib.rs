//! The embedded SQLite store for mend: one file, nothing to install.
//!
//! - Bundled SQLite in WAL mode; readers on their own connections never block the writer.
//! - One writer thread owns the only read-write connection and groups concurrent commands into
//!   one transaction (see `writer`), so throughput grows with load instead of with fsyncs.
//! - Every hot query is served by a partial index (see `schema`): claim walks the head of one
//!   queue's available jobs; rescue and heartbeats touch only running jobs.
//! - Several processes may share one file (say `mend serve` and an app embedding the library):
//!   SQLite's file locks serialise their writers, and the node registry tells a dead process
//!   from a live one.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mend::StoreError> {
//! let store = mend_sqlite::SqliteStore::open("sqlite://mend.db").await?;
//! # Ok(()) }
//! ```

mod error;
mod schema;
mod writer;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mend::job::{AttemptError, JobRow, JobState, NewJob, TimelineEvent};
use mend::maintenance::rescuer;
use mend::store::{
    CancelParams, CheckpointParams, ClaimParams, CleanupDoneParams, CompleteParams, CompleteResult,
    DeferDurableParams, ExtendLeasesParams, ExtendLeasesResult, JobPage, ListParams, NodeInfo,
    OutcomeKind, PruneParams, QueueCount, RescueParams, Rescued, Result, RetryParams, Store,
    StoreError, MAX_PAGE,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use tokio::sync::Notify;
use uuid::Uuid;

pub use schema::SCHEMA_VERSION;

use error::{decode, map_err};
use writer::Command;

/// How long a statement waits for another process's write lock before giving up. Five seconds
/// covers a checkpoint or a large batch from a neighbour; longer would hide a stuck process.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read-only connections kept open for `get`, `list` and counts.
const READERS: usize = 4;

/// Most due scheduled/retryable jobs promoted per claim; bounds one claim's transaction.
const PROMOTE_BATCH: i64 = 10_000;

/// Appends the JSON event in parameter `$p` to the job's stored events. Past
/// [`mend::job::MAX_TIMELINE_BYTES`] the oldest stored event makes room. Only rare paths
/// write events (see [`mend::job::build_timeline`]).
macro_rules! push_event {
    ($p:literal) => {
        concat!("events = json_insert(CASE WHEN NOT json_valid(events) THEN '[]' WHEN octet_length(events) > 32768 THEN json_remove(events, '$[0]') ELSE events END, '$[#]', json(", $p, "))")
    };
}

/// Like `push_event!`, for an event that ends an attempt: it records when the attempt started
/// (from `attempted_at`, to the microsecond), so the timeline can show the attempt's claim
/// without the claim having written anything.
macro_rules! push_attempt_event {
    ($p:literal) => {
        concat!(
            "events = json_insert(CASE WHEN NOT json_valid(events) THEN '[]' WHEN octet_length(events) > 32768 THEN json_remove(events, '$[0]') ELSE events END, '$[#]', ",
            "json_set(json(", $p, "), '$.started_at', ", started_at_sql!(), "))"
        )
    };
}

/// Like `push_attempt_event!` for outcomes a pending cancel request turns into `cancelled`
/// (retry, snooze, release, rescue): the event then says so, matching the state.
macro_rules! push_attempt_event_or_cancelled {
    ($p:literal) => {
        concat!(
            "events = json_insert(CASE WHEN NOT json_valid(events) THEN '[]' WHEN octet_length(events) > 32768 THEN json_remove(events, '$[0]') ELSE events END, '$[#]', ",
            "json_set(json(", $p, "), '$.started_at', ", started_at_sql!(),
            ", '$.event', CASE WHEN cancel_requested THEN 'cancelled' ELSE json_extract(", $p, ", '$.event') END))"
        )
    };
}

/// `attempted_at` (microseconds) as the RFC 3339 text serde reads back exactly.
macro_rules! started_at_sql {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%S', attempted_at / 1000000, 'unixepoch') || '.' || printf('%06d', attempted_at % 1000000) || 'Z'"
    };
}

/// The errors column with one more record (a damaged column starts over rather than failing).
macro_rules! push_error {
    ($p:literal) => {
        concat!("errors = json_insert(CASE WHEN json_valid(errors) THEN errors ELSE '[]' END, '$[#]', json(", $p, "))")
    };
}

/// The hot path: completion writes no event (the timeline derives it from `finalized_at`).
// A completed attempt's durable cleanups are dropped with it.
const SQL_COMPLETED: &str = "UPDATE mend_jobs SET state = 'completed', finalized_at = ?4, result = ?5, lease_expires_at = NULL, pending_cleanups = NULL WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?3 AND state = 'running'";
/// A completion whose attempt ran cleanups: they are worth a timeline event.
const SQL_COMPLETED_WITH_EVENT: &str = concat!(
    "UPDATE mend_jobs SET state = 'completed', finalized_at = ?4, result = ?5, pending_cleanups = NULL, ",
    push_attempt_event!("?6"),
    ", lease_expires_at = NULL WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?3 AND state = 'running'"
);
// A cancel request that arrived during the attempt wins over retry, snooze and release.
const SQL_RETRY: &str = concat!(
    "UPDATE mend_jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'retryable' END, finalized_at = CASE WHEN cancel_requested THEN ?6 END, run_at = ?4, ",
    push_error!("?5"), ", ", push_attempt_event_or_cancelled!("?7"),
    ", lease_expires_at = NULL WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?3 AND state = 'running'"
);
const SQL_FINISH_WITH_ERROR: &str = concat!(
    "UPDATE mend_jobs SET state = ?6, finalized_at = ?4, ",
    push_error!("?5"), ", ", push_attempt_event!("?7"),
    ", lease_expires_at = NULL WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?3 AND state = 'running'"
);
const SQL_SNOOZE: &str = concat!(
    "UPDATE mend_jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE ?5 END, finalized_at = CASE WHEN cancel_requested THEN ?6 END, run_at = ?4, attempt = attempt - 1, ",
    push_attempt_event_or_cancelled!("?7"),
    ", lease_expires_at = NULL WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?3 AND state = 'running'"
);
// A released job keeps its run_at, and so its place in the queue.
const SQL_RELEASE: &str = concat!(
    "UPDATE mend_jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'available' END, finalized_at = CASE WHEN cancel_requested THEN ?4 END, attempt = attempt - 1, ",
    push_attempt_event_or_cancelled!("?5"),
    ", lease_expires_at = NULL WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?3 AND state = 'running'"
);
const COLS: &str = "id, queue, kind, args, state, priority, attempt, max_attempts, run_at, created_at, attempted_at, finalized_at, lease_owner, lease_expires_at, cancel_requested, errors, unique_key, tags, result, timeout_ms, events, trace_parent, checkpoint, pending_cleanups";

/// [`COLS`] without the stored events, for claims: running a job does not need its history.
const COLS_TO_RUN: &str = "id, queue, kind, args, state, priority, attempt, max_attempts, run_at, created_at, attempted_at, finalized_at, lease_owner, lease_expires_at, cancel_requested, errors, unique_key, tags, result, timeout_ms, NULL, trace_parent, checkpoint, pending_cleanups";

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// `synchronous=FULL` for durable commits (enqueue, outcomes): survives power loss. With
    /// `false`, commits survive a process crash but not power loss. Default `true`.
    pub synchronous_full: bool,
    /// How long to wait for another process's write lock; [`BUSY_TIMEOUT`] by default.
    pub busy_timeout: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            synchronous_full: true,
            busy_timeout: BUSY_TIMEOUT,
        }
    }
}

/// The SQLite [`Store`]. Cheap to clone; the writer thread stops when the last clone drops.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: String,
    writer: mpsc::Sender<Command>,
    busy_timeout: Duration,
    readers: Mutex<Vec<Connection>>,
    /// Queues whose last claim came back short (see `claim`).
    idle_queues: Mutex<std::collections::HashSet<String>>,
    wake: Arc<Notify>,
    synchronous_full: bool,
}

/// What [`effect`] wraps: the handler's writes, run on the store's connection inside the
/// transaction that completes the job.
type EffectFn = Box<dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send>;

/// The handler's own writes to this database, to commit with its job's completion
/// (`JobContext::commit_with_completion`): they run on the store's writer connection inside
/// the transaction that marks the job completed; an error rolls both back.
///
/// ```no_run
/// # fn demo(ctx: &mend::JobContext, order: i64) {
/// ctx.commit_with_completion(mend_sqlite::effect(move |conn| {
///     conn.execute("UPDATE orders SET receipt_sent = 1 WHERE id = ?1", [order])?;
///     Ok(())
/// }));
/// # }
/// ```
pub fn effect(
    f: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static,
) -> mend::store::TxEffect {
    let f: EffectFn = Box::new(f);
    mend::store::TxEffect::new(Box::new(f))
}

/// Accepts `sqlite://path`, `sqlite:path` or a plain path.
pub fn parse_url(url: &str) -> Result<String> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() {
        return Err(StoreError::Unavailable {
            target: url.to_owned(),
            detail: "no file path; use sqlite://PATH, e.g. sqlite://mend.db".into(),
        });
    }
    if path.contains(":memory:") {
        return Err(StoreError::Unavailable {
            target: url.to_owned(),
            detail: "in-memory databases cannot be shared by the writer and readers; use a file (a temporary directory is fine for tests)".into(),
        });
    }
    Ok(path.to_owned())
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn open_writer(path: &str, config: &SqliteConfig) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| map_err(path, e))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(|e| map_err(path, e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| map_err(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::ReadOnly {
            path: path.to_owned(),
            detail: format!("could not switch to WAL mode (journal_mode is {mode})"),
        });
    }
    let sync = if config.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    // temp_store=MEMORY keeps savepoint journals and sorter scratch off the disk.
    conn.execute_batch(&format!(
        "PRAGMA synchronous={sync}; PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;"
    ))
    .map_err(|e| map_err(path, e))?;
    conn.set_prepared_statement_cache_capacity(64);
    // A read-only file (or mount, or `mode=ro`) opens "successfully" and would only fail on
    // the first write; say so now instead.
    if conn
        .is_readonly(rusqlite::DatabaseName::Main)
        .map_err(|e| map_err(path, e))?
    {
        return Err(StoreError::ReadOnly {
            path: path.to_owned(),
            detail: "SQLite opened the file read-only".into(),
        });
    }
    Ok(conn)
}

fn open_reader(path: &str, busy_timeout: Duration) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| map_err(path, e))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| map_err(path, e))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

fn migrate_in_tx(conn: &Connection, path: &str) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| map_err(path, e))?;
    match schema::migrate(conn, path) {
        Ok(()) => conn.execute_batch("COMMIT").map_err(|e| map_err(path, e)),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

impl SqliteStore {
    /// Open (creating if needed) and migrate the database at `url` with default settings.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, SqliteConfig::default()).await
    }

    /// Open with explicit settings.
    pub async fn open_with(url: &str, config: SqliteConfig) -> Result<Self> {
        let path = parse_url(url)?;
        let p = path.clone();
        let synchronous_full = config.synchronous_full;
        let busy_timeout = config.busy_timeout;
        let conn = tokio::task::spawn_blocking(move || {
            let conn = open_writer(&p, &config)?;
            migrate_in_tx(&conn, &p)?;
            Ok::<_, StoreError>(conn)
        })
        .await
        .map_err(|e| StoreError::Database(format!("opening the database panicked: {e}")))??;
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        std::thread::Builder::new()
            .name("mend-sqlite-writer".into())
            .spawn(move || writer::run(conn, p, synchronous_full, rx))
            .map_err(|e| StoreError::Unavailable {
                target: path.clone(),
                detail: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: tx,
                busy_timeout,
                readers: Mutex::new(Vec::new()),
                idle_queues: Mutex::new(std::collections::HashSet::new()),
                wake: Arc::new(Notify::new()),
                synchronous_full,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// Whether durable commits use `synchronous=FULL`.
    pub fn synchronous_full(&self) -> bool {
        self.inner.synchronous_full
    }

    async fn write<T, F>(&self, durable: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> Result<T> + Send + 'static,
    {
        let path = self.inner.path.clone();
        let (cmd, rx) = Command::new(durable, move |conn| f(conn, &path));
        self.inner
            .writer
            .send(cmd)
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_reader(&inner.path, inner.busy_timeout)?,
            };
            let r = f(&conn, &inner.path);
            let mut pool = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READERS {
                pool.push(conn);
            }
            r
        })
        .await
        .map_err(|e| StoreError::Database(format!("a read panicked: {e}")))?
    }

    /// Changes a running attempt's pending durable cleanups (fenced; `None` when the attempt
    /// no longer holds the job), optionally recording a timeline event in the same write.
    async fn edit_pending<T, F>(
        &self,
        id: uuid::Uuid,
        attempt: i32,
        lease_owner: String,
        event: Option<String>,
        edit: F,
    ) -> Result<Option<T>>
    where
        T: Send + 'static,
        F: FnOnce(&mut Vec<mend::cleanup::DurableCleanup>) -> T + Send + 'static,
    {
        self.write(true, move |conn, path| {
            let key = id.as_bytes().to_vec();
            let current: Option<Option<String>> = conn
                .prepare_cached(
                    "SELECT pending_cleanups FROM mend_jobs
                     WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?3 AND state = 'running'",
                )
                .and_then(|mut s| {
                    s.query_row(params![key, attempt, lease_owner], |r| r.get(0))
                        .optional()
                })
                .map_err(|e| map_err(path, e))?;
            let Some(current) = current else {
                return Ok(None);
            };
            let mut list: Vec<mend::cleanup::DurableCleanup> = match current {
                Some(s) => json(&key, "pending_cleanups", &s)?,
                None => Vec::new(),
            };
            let out = edit(&mut list);
            let text = if list.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&list).map_err(|e| StoreError::Database(e.to_string()))?)
            };
            conn.prepare_cached(concat!(
                "UPDATE mend_jobs SET pending_cleanups = ?2, events = CASE WHEN ?3 IS NULL THEN events ELSE ",
                "json_insert(CASE WHEN NOT json_valid(events) THEN '[]' WHEN octet_length(events) > 32768 THEN json_remove(events, '$[0]') ELSE events END, '$[#]', json(?3))",
                " END WHERE id = ?1"
            ))
            .and_then(|mut s| s.execute(params![key, text, event]))
            .map_err(|e| map_err(path, e))?;
            Ok(Some(out))
        })
        .await
    }

    /// The VDBE opcodes of a statement (diagnostics: tests check that hot writes build no
    /// temporary tables).
    pub async fn opcodes(&self, sql: &'static str) -> Result<Vec<String>> {
        self.explain_column("EXPLAIN", sql, 1).await
    }

    /// How SQLite plans a query; used by tests that keep hot queries index-backed.
    pub async fn explain(&self, sql: &'static str) -> Result<Vec<String>> {
        self.explain_column("EXPLAIN QUERY PLAN", sql, 3).await
    }

    /// One text column of `{prefix} {sql}`, run with every parameter NULL.
    async fn explain_column(
        &self,
        prefix: &'static str,
        sql: &'static str,
        column: usize,
    ) -> Result<Vec<String>> {
        self.read(move |conn, path| {
            let mut stmt = conn
                .prepare(&format!("{prefix} {sql}"))
                .map_err(|e| map_err(path, e))?;
            let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
            let rows = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| {
                    r.get::<_, String>(column)
                })
                .map_err(|e| map_err(path, e))?;
            rows.collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| map_err(path, e))
        })
        .await
    }
}

fn ts(id: &[u8], column: &'static str, v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| decode(id, column, format!("timestamp {v} out of range")))
}

fn opt_ts(id: &[u8], column: &'static str, v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(|v| ts(id, column, v)).transpose()
}

fn json<T: serde::de::DeserializeOwned>(id: &[u8], column: &'static str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| decode(id, column, e))
}

fn row_to_job(r: &Row<'_>) -> Result<JobRow> {
    let raw = |e: rusqlite::Error| StoreError::Database(format!("reading a job row: {e}"));
    let id: Vec<u8> = r.get(0).map_err(raw)?;
    // NULL when the query left the events out (claims): no timeline then.
    let events: Option<String> = r.get(20).map_err(raw)?;
    let uuid = Uuid::from_slice(&id).map_err(|e| decode(&id, "id", e))?;
    let state: String = r.get(4).map_err(raw)?;
    let args: String = r.get(3).map_err(raw)?;
    let errors: String = r.get(15).map_err(raw)?;
    let tags: String = r.get(17).map_err(raw)?;
    let result: Option<String> = r.get(18).map_err(raw)?;
    let checkpoint: Option<String> = r.get(22).map_err(raw)?;
    let pending_cleanups: Option<String> = r.get(23).map_err(raw)?;
    let mut job = JobRow {
        id: uuid,
        queue: r.get(1).map_err(raw)?,
        kind: r.get(2).map_err(raw)?,
        args: json(&id, "args", &args)?,
        state: state.parse().map_err(|e| decode(&id, "state", e))?,
        priority: r.get(5).map_err(raw)?,
        attempt: r.get(6).map_err(raw)?,
        max_attempts: r.get(7).map_err(raw)?,
        run_at: ts(&id, "run_at", r.get(8).map_err(raw)?)?,
        created_at: ts(&id, "created_at", r.get(9).map_err(raw)?)?,
        attempted_at: opt_ts(&id, "attempted_at", r.get(10).map_err(raw)?)?,
        finalized_at: opt_ts(&id, "finalized_at", r.get(11).map_err(raw)?)?,
        lease_owner: r.get(12).map_err(raw)?,
        lease_expires_at: opt_ts(&id, "lease_expires_at", r.get(13).map_err(raw)?)?,
        cancel_requested: r.get(14).map_err(raw)?,
        errors: json(&id, "errors", &errors)?,
        unique_key: r.get(16).map_err(raw)?,
        tags: json(&id, "tags", &tags)?,
        result: result.map(|s| json(&id, "result", &s)).transpose()?,
        timeout_ms: r.get(19).map_err(raw)?,
        trace_parent: r.get(21).map_err(raw)?,
        checkpoint: None,
        pending_cleanups: Vec::new(),
        timeline: Vec::new(),
    };
    job.checkpoint = checkpoint
        .map(|s| json(&id, "checkpoint", &s))
        .transpose()?;
    if let Some(list) = pending_cleanups {
        job.pending_cleanups = json(&id, "pending_cleanups", &list)?;
    }
    if let Some(events) = events {
        // History that cannot be read must not make the job itself unreadable.
        let stored: Vec<TimelineEvent> = serde_json::from_str(&events).unwrap_or_else(|e| {
            tracing::warn!(id = %job.id, error = %e, "the job's stored timeline cannot be read; showing the derived steps only");
            Vec::new()
        });
        job.timeline = mend::job::build_timeline(&job, stored);
    }
    Ok(job)
}

/// A stored row that could not be decoded: its raw id and why.
type Undecodable = (Vec<u8>, StoreError);

/// Like [`query_jobs`], but a row that cannot be decoded does not fail the whole query: it
/// is returned apart (id and error), so one damaged row cannot wedge a queue or the rescuer.
fn query_jobs_lenient(
    conn: &Connection,
    path: &str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<(Vec<JobRow>, Vec<Undecodable>)> {
    let mut stmt = conn.prepare_cached(sql).map_err(|e| map_err(path, e))?;
    let mut rows = stmt.query(params).map_err(|e| map_err(path, e))?;
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    while let Some(r) = rows.next().map_err(|e| map_err(path, e))? {
        match row_to_job(r) {
            Ok(job) => good.push(job),
            Err(e) => bad.push((r.get::<_, Vec<u8>>(0).unwrap_or_default(), e)),
        }
    }
    Ok((good, bad))
}

/// Takes damaged rows out of circulation: `discarded`, with the decode error recorded, so a
/// person can see and repair them instead of every claim or rescue failing on them.
fn discard_undecodable(
    conn: &Connection,
    path: &str,
    bad: Vec<(Vec<u8>, StoreError)>,
    now: DateTime<Utc>,
) -> Result<()> {
    for (id, e) in bad {
        tracing::error!(error = %e, "discarding a job whose stored row cannot be read");
        let record = error_json(&AttemptError::unreadable_row(&e, now))?;
        conn.prepare_cached(
            "UPDATE mend_jobs SET state = 'discarded', finalized_at = ?2, lease_expires_at = NULL,
                errors = json_insert(CASE WHEN json_valid(errors) THEN errors ELSE '[]' END, '$[#]', json(?3))
             WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![id, micros(now), record]))
        .map_err(|e| map_err(path, e))?;
    }
    Ok(())
}

fn query_jobs(
    conn: &Connection,
    path: &str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<JobRow>> {
    let mut stmt = conn.prepare_cached(sql).map_err(|e| map_err(path, e))?;
    let mut rows = stmt.query(params).map_err(|e| map_err(path, e))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(|e| map_err(path, e))? {
        out.push(row_to_job(r)?);
    }
    Ok(out)
}

fn get_job(conn: &Connection, path: &str, id: Uuid) -> Result<Option<JobRow>> {
    Ok(query_jobs(
        conn,
        path,
        &format!("SELECT {COLS} FROM mend_jobs WHERE id = ?1"),
        params![id.as_bytes().as_slice()],
    )?
    .pop())
}

fn error_json(e: &AttemptError) -> Result<String> {
    serde_json::to_string(e)
        .map_err(|e| StoreError::Database(format!("encoding an attempt error: {e}")))
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        self.write(true, schema::migrate).await
    }

    async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobRow>> {
        for job in &jobs {
            job.validate()?;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .write(true, move |conn, path| {
                let now = Utc::now();
                let mut stmt = conn
                    .prepare_cached(
                        "INSERT INTO mend_jobs (id, queue, kind, args, state, priority, max_attempts, run_at, created_at, unique_key, tags, timeout_ms, trace_parent)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                         ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING",
                    )
                    .map_err(|e| map_err(path, e))?;
                let mut out = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let run_at = job.run_at.unwrap_or(now);
                    let state = if run_at > now { JobState::Scheduled } else { JobState::Available };
                    let args = serde_json::to_string(&job.args).map_err(|e| StoreError::Database(e.to_string()))?;
                    let tags = serde_json::to_string(&job.tags).map_err(|e| StoreError::Database(e.to_string()))?;
                    let stored_now = DateTime::from_timestamp_micros(micros(now)).unwrap_or(now);
                    let n = stmt
                        .execute(params![
                            job.id.as_bytes().as_slice(),
                            job.queue,
                            job.kind,
                            args,
                            state.as_str(),
                            job.priority,
                            job.max_attempts,
                            micros(run_at),
                            micros(now),
                            job.unique_key,
                            tags,
                            job.timeout_ms,
                            job.trace_parent,
                        ])
                        .map_err(|e| map_err(path, e))?;
                    if n == 0 {
                        let existing = query_jobs(
                            conn,
                            path,
                            &format!("SELECT {COLS} FROM mend_jobs WHERE unique_key = ?1"),
                            params![job.unique_key],
                        )?
                        .pop()
                        .ok_or_else(|| StoreError::Database("unique key conflict without a row".into()))?;
                        out.push(existing);
                    } else {
                        // Stored with microsecond precision; return what a read would.
                        let run_at = DateTime::from_timestamp_micros(micros(run_at)).unwrap_or(run_at);
                        out.push(job.into_row(state, run_at, stored_now));
                    }
                }
                Ok(out)
            })
            .await?;
        if rows.iter().any(|r| r.state == JobState::Available) {
            self.inner.wake.notify_waiters();
        }
        Ok(rows)
    }

    async fn claim(&self, p: ClaimParams) -> Result<Vec<JobRow>> {
        if p.limit == 0 {
            return Ok(Vec::new());
        }
        // An idle queue is probed on a reader first: polling an empty queue then never takes
        // the write lock, which matters when several processes share the file.
        let was_idle = self
            .inner
            .idle_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&p.queue);
        if was_idle {
            let (queue, now) = (p.queue.clone(), micros(p.now));
            let work = self
                .read(move |conn, path| {
                    conn.prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM mend_jobs WHERE state = 'available' AND queue = ?1)
                             OR EXISTS (SELECT 1 FROM mend_jobs WHERE (state = 'scheduled' OR state = 'retryable') AND run_at <= ?2)",
                    )
                    .and_then(|mut s| s.query_row(params![queue, now], |r| r.get::<_, bool>(0)))
                    .map_err(|e| map_err(path, e))
                })
                .await?;
            if !work {
                return Ok(Vec::new());
            }
        }
        let queue = p.queue.clone();
        let limit = p.limit;
        let jobs = self.write(false, move |conn, path| {
            let paused: bool = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM mend_queues WHERE name = ?1 AND paused = 1)")
                .and_then(|mut s| s.query_row(params![p.queue], |r| r.get(0)))
                .map_err(|e| map_err(path, e))?;
            if paused {
                return Ok(Vec::new());
            }
            let now = micros(p.now);
            // Promote due jobs only when there are some: the probe is one index seek, while
            // the bounded UPDATE builds a temporary table even when nothing is due.
            let due: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM mend_jobs WHERE (state = 'scheduled' OR state = 'retryable') AND run_at <= ?1)",
                )
                .and_then(|mut s| s.query_row(params![now], |r| r.get(0)))
                .map_err(|e| map_err(path, e))?;
            if due {
                conn.prepare_cached(
                    "UPDATE mend_jobs SET state = 'available' WHERE id IN (
                        SELECT id FROM mend_jobs WHERE (state = 'scheduled' OR state = 'retryable') AND run_at <= ?1
                        ORDER BY run_at LIMIT ?2)",
                )
                .and_then(|mut s| s.execute(params![now, PROMOTE_BATCH]))
                .map_err(|e| map_err(path, e))?;
            }
            let lease = chrono::Duration::from_std(p.lease_duration).unwrap_or(chrono::Duration::MAX);
            let expires_at = p.now.checked_add_signed(lease).unwrap_or(DateTime::<Utc>::MAX_UTC);
            let limit = i64::try_from(p.limit).unwrap_or(i64::MAX);
            // Select, then update by primary key: the writer holds the write lock, so nothing
            // can change in between, and this avoids the temporary tables that
            // `UPDATE .. WHERE id IN (SELECT ..) RETURNING` builds on every claim.
            let (mut jobs, bad) = if p.kinds.is_empty() {
                query_jobs_lenient(
                    conn,
                    path,
                    &format!(
                        "SELECT {COLS_TO_RUN} FROM mend_jobs WHERE state = 'available' AND queue = ?1
                         ORDER BY priority, run_at, id LIMIT ?2"
                    ),
                    params![p.queue, limit],
                )?
            } else {
                let placeholders: Vec<String> = (0..p.kinds.len()).map(|i| format!("?{}", i + 3)).collect();
                let sql = format!(
                    "SELECT {COLS_TO_RUN} FROM mend_jobs WHERE state = 'available' AND queue = ?1
                     AND kind IN ({}) ORDER BY priority, run_at, id LIMIT ?2",
                    placeholders.join(", ")
                );
                let mut args: Vec<rusqlite::types::Value> = vec![p.queue.clone().into(), limit.into()];
                args.extend(p.kinds.iter().map(|k| rusqlite::types::Value::from(k.clone())));
                query_jobs_lenient(conn, path, &sql, rusqlite::params_from_iter(args))?
            };
            discard_undecodable(conn, path, bad, p.now)?;
            let mut stmt = conn
                .prepare_cached(
                    concat!(
                        "UPDATE mend_jobs SET state = 'running', attempt = attempt + 1, attempted_at = ?2,
                            lease_owner = ?3, lease_expires_at = ?4",
                        " WHERE id = ?1 AND state = 'available'"
                    ),
                )
                .map_err(|e| map_err(path, e))?;
            let stored_now = DateTime::from_timestamp_micros(now).unwrap_or(p.now);
            let stored_expiry = DateTime::from_timestamp_micros(micros(expires_at)).unwrap_or(expires_at);
            for job in &mut jobs {
                let n = stmt
                    .execute(params![job.id.as_bytes().as_slice(), now, p.lease_owner, micros(expires_at)])
                    .map_err(|e| map_err(path, e))?;
                if n != 1 {
                    // Cannot happen while this thread holds the write lock; if it ever does,
                    // the job was not claimed and must not be returned as ours.
                    return Err(StoreError::Database(format!("job {} changed while being claimed", job.id)));
                }
                job.state = JobState::Running;
                job.attempt += 1;
                job.attempted_at = Some(stored_now);
                job.lease_owner = Some(p.lease_owner.clone());
                job.lease_expires_at = Some(stored_expiry);
            }
            Ok(jobs)
        })
        .await?;
        let mut idle = self
            .inner
            .idle_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if jobs.len() < limit {
            idle.insert(queue);
        } else {
            idle.remove(&queue);
        }
        Ok(jobs)
    }

    async fn complete_many(&self, p: CompleteParams) -> Result<CompleteResult> {
        if p.outcomes.is_empty() {
            return Ok(CompleteResult::default());
        }
        // Jobs that go straight back to `available` (released, snoozed by zero) wake fetchers.
        let requeued = p.outcomes.iter().any(|o| match o.kind {
            OutcomeKind::Release => true,
            OutcomeKind::Snooze { run_at } => run_at <= p.now,
            _ => false,
        });
        let result = self
            .write(true, move |conn, path| {
                let now = micros(p.now);
                let mut result = CompleteResult::default();
                // The common outcome's statement is looked up once per batch, not per row.
                let mut completed = conn
                    .prepare_cached(SQL_COMPLETED)
                    .map_err(|e| map_err(path, e))?;
                let stored_now = DateTime::from_timestamp_micros(now).unwrap_or(p.now);
                for o in p.outcomes {
                    let id = o.id.as_bytes().as_slice();
                    // A plain completion writes no event: the timeline derives it.
                    let quiet =
                        matches!(o.kind, OutcomeKind::Completed { .. }) && o.cleanups.is_empty();
                    let event = if quiet {
                        String::new()
                    } else {
                        serde_json::to_string(&o.timeline_event(stored_now))
                            .map_err(|e| StoreError::Database(e.to_string()))?
                    };
                    let n = match &o.kind {
                        OutcomeKind::Completed { result } if quiet => {
                            let result = result.as_ref().map(|v| v.to_string());
                            completed.execute(params![id, o.attempt, o.lease_owner, now, result])
                        }
                        OutcomeKind::Completed { result } => {
                            let result = result.as_ref().map(|v| v.to_string());
                            conn.prepare_cached(SQL_COMPLETED_WITH_EVENT)
                                .and_then(|mut s| {
                                    s.execute(params![
                                        id,
                                        o.attempt,
                                        o.lease_owner,
                                        now,
                                        result,
                                        event
                                    ])
                                })
                        }
                        OutcomeKind::Retry { error, run_at } => {
                            let record = error_json(error)?;
                            conn.prepare_cached(SQL_RETRY).and_then(|mut s| {
                                s.execute(params![
                                    id,
                                    o.attempt,
                                    o.lease_owner,
                                    micros(*run_at),
                                    record,
                                    now,
                                    event
                                ])
                            })
                        }
                        OutcomeKind::Discard { error } | OutcomeKind::Cancelled { error } => {
                            let state = if matches!(o.kind, OutcomeKind::Discard { .. }) {
                                "discarded"
                            } else {
                                "cancelled"
                            };
                            let record = error_json(error)?;
                            conn.prepare_cached(SQL_FINISH_WITH_ERROR)
                                .and_then(|mut s| {
                                    s.execute(params![
                                        id,
                                        o.attempt,
                                        o.lease_owner,
                                        now,
                                        record,
                                        state,
                                        event
                                    ])
                                })
                        }
                        OutcomeKind::Snooze { run_at } => {
                            let state = if micros(*run_at) > now {
                                "scheduled"
                            } else {
                                "available"
                            };
                            conn.prepare_cached(SQL_SNOOZE).and_then(|mut s| {
                                s.execute(params![
                                    id,
                                    o.attempt,
                                    o.lease_owner,
                                    micros(*run_at),
                                    state,
                                    now,
                                    event
                                ])
                            })
                        }
                        OutcomeKind::Release => {
                            conn.prepare_cached(SQL_RELEASE).and_then(|mut s| {
                                s.execute(params![id, o.attempt, o.lease_owner, now, event])
                            })
                        }
                    }
                    .map_err(|e| map_err(path, e))?;
                    if n == 1 {
                        result.applied.push(o.id);
                    } else {
                        result.fenced.push(o.id);
                    }
                }
                Ok(result)
            })
            .await?;
        if requeued {
            self.inner.wake.notify_waiters();
        }
        Ok(result)
    }

    async fn complete_with_effect(
        &self,
        outcome: mend::store::Outcome,
        effect: mend::store::TxEffect,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let Ok(f) = effect.into_inner().downcast::<EffectFn>() else {
            return Err(StoreError::Database(
                "this effect was not built by mend_sqlite::effect".into(),
            ));
        };
        let OutcomeKind::Completed { result } = &outcome.kind else {
            return Err(StoreError::Database(
                "effects commit with completions only".into(),
            ));
        };
        let result = result.as_ref().map(|v| v.to_string());
        // One writer command: the completion and the effect share its savepoint, and an error
        // rolls both back.
        self.write(true, move |conn, path| {
            let n = conn
                .prepare_cached(SQL_COMPLETED)
                .and_then(|mut s| {
                    s.execute(params![
                        outcome.id.as_bytes().as_slice(),
                        outcome.attempt,
                        outcome.lease_owner,
                        micros(now),
                        result
                    ])
                })
                .map_err(|e| map_err(path, e))?;
            if n == 0 {
                return Ok(false);
            }
            f(conn)
                .map_err(|e| StoreError::Database(format!("the job's own write failed: {e}")))?;
            Ok(true)
        })
        .await
    }

    async fn checkpoint(&self, p: CheckpointParams) -> Result<bool> {
        let state = p.state.to_string();
        self.write(true, move |conn, path| {
            let n = conn
                .prepare_cached(
                    "UPDATE mend_jobs SET checkpoint = ?4
                     WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?3 AND state = 'running'",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        p.id.as_bytes().as_slice(),
                        p.attempt,
                        p.lease_owner,
                        state
                    ])
                })
                .map_err(|e| map_err(path, e))?;
            Ok(n == 1)
        })
        .await
    }

    async fn defer_durable(&self, p: DeferDurableParams) -> Result<Option<u32>> {
        let (attempt, name, args) = (p.attempt, p.name, p.args);
        self.edit_pending(p.id, p.attempt, p.lease_owner, None, move |list| {
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
        let event =
            serde_json::to_string(&p.event).map_err(|e| StoreError::Database(e.to_string()))?;
        let seq = p.seq;
        let done = self
            .edit_pending(p.id, p.attempt, p.lease_owner, Some(event), move |list| {
                list.retain(|c| c.seq != seq)
            })
            .await?;
        Ok(done.is_some())
    }

    async fn extend_leases(&self, p: ExtendLeasesParams) -> Result<ExtendLeasesResult> {
        self.write(false, move |conn, path| {
            let mut out = ExtendLeasesResult::default();
            let mut stmt = conn
                .prepare_cached(
                    "UPDATE mend_jobs SET lease_expires_at = ?1
                     WHERE id = ?2 AND attempt = ?3 AND lease_owner = ?4 AND state = 'running'
                     RETURNING cancel_requested",
                )
                .map_err(|e| map_err(path, e))?;
            for held in p.jobs {
                let cancel: Option<bool> = stmt
                    .query_row(
                        params![
                            micros(p.expires_at),
                            held.id.as_bytes().as_slice(),
                            held.attempt,
                            p.lease_owner
                        ],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(|e| map_err(path, e))?;
                match cancel {
                    None => out.lost.push(held),
                    Some(true) => out.cancel_requested.push(held.id),
                    Some(false) => {}
                }
            }
            Ok(out)
        })
        .await
    }

    async fn rescue(&self, p: RescueParams) -> Result<Vec<Rescued>> {
        self.write(true, move |conn, path| {
            let dead = serde_json::to_string(&p.dead_nodes).map_err(|e| StoreError::Database(e.to_string()))?;
            let now = micros(p.now);
            let (candidates, bad) = query_jobs_lenient(
                conn,
                path,
                &format!(
                    "SELECT {COLS} FROM mend_jobs WHERE state = 'running'
                     AND (lease_owner IN (SELECT value FROM json_each(?1)) OR lease_expires_at < ?2)"
                ),
                params![dead, now],
            )?;
            discard_undecodable(conn, path, bad, p.now)?;
            let mut out = Vec::new();
            for job in candidates {
                let d = rescuer::decide(&job, p.now, p.quarantine_after_lost);
                let finalized = (d.state == JobState::Discarded).then_some(now);
                let record = error_json(&d.error)?;
                let stored_now = DateTime::from_timestamp_micros(now).unwrap_or(p.now);
                let mut event = TimelineEvent::new(stored_now, if d.quarantined { "quarantined" } else { "rescued" })
                    .attempt(job.attempt)
                    .detail(d.error.message.clone());
                if let Some(owner) = &job.lease_owner {
                    event = event.node(owner.clone());
                }
                let event = serde_json::to_string(&event).map_err(|e| StoreError::Database(e.to_string()))?;
                let n = conn
                    .prepare_cached(concat!(
                        // A job someone asked to cancel is not run again after its worker died.
                        "UPDATE mend_jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE ?1 END,
                            finalized_at = CASE WHEN cancel_requested THEN ?2 ELSE ?3 END,
                            run_at = ?2, lease_expires_at = NULL, ",
                        push_error!("?4"),
                        ", ",
                        push_attempt_event_or_cancelled!("?7"),
                        " WHERE id = ?5 AND attempt = ?6 AND state = 'running'"
                    ))
                    .and_then(|mut s| {
                        s.execute(params![d.state.as_str(), now, finalized, record, job.id.as_bytes().as_slice(), job.attempt, event])
                    })
                    .map_err(|e| map_err(path, e))?;
                if n == 1 {
                    if let Some(job) = get_job(conn, path, job.id)? {
                        out.push(Rescued { job, quarantined: d.quarantined });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn cancel(&self, p: CancelParams) -> Result<Vec<JobRow>> {
        self.write(true, move |conn, path| {
            let now = micros(p.now);
            let stored_now = DateTime::from_timestamp_micros(now).unwrap_or(p.now);
            let event = |name: &str| {
                serde_json::to_string(&TimelineEvent::new(stored_now, name).detail("on request"))
                    .map_err(|e| StoreError::Database(e.to_string()))
            };
            let (cancelled, requested) = (event("cancelled")?, event("cancel_requested")?);
            let mut out = Vec::new();
            for id in p.ids {
                let key = id.as_bytes().to_vec();
                conn.prepare_cached(concat!(
                    "UPDATE mend_jobs SET state = 'cancelled', finalized_at = ?2, ",
                    push_event!("?3"),
                    " WHERE id = ?1 AND state IN ('scheduled', 'available', 'retryable')"
                ))
                .and_then(|mut s| s.execute(params![key, now, cancelled]))
                .map_err(|e| map_err(path, e))?;
                conn.prepare_cached(concat!(
                    "UPDATE mend_jobs SET cancel_requested = 1, ",
                    push_event!("?2"),
                    " WHERE id = ?1 AND state = 'running' AND cancel_requested = 0"
                ))
                .and_then(|mut s| s.execute(params![key, requested]))
                .map_err(|e| map_err(path, e))?;
                if let Some(job) = get_job(conn, path, id)? {
                    out.push(job);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn retry(&self, p: RetryParams) -> Result<Vec<JobRow>> {
        let rows = self
            .write(true, move |conn, path| {
                let now = micros(p.now);
                let stored_now = DateTime::from_timestamp_micros(now).unwrap_or(p.now);
                let event = serde_json::to_string(
                    &TimelineEvent::new(stored_now, "retried").detail("on request"),
                )
                .map_err(|e| StoreError::Database(e.to_string()))?;
                let mut out = Vec::new();
                for id in p.ids {
                    conn.prepare_cached(concat!(
                        "UPDATE mend_jobs SET state = 'available', run_at = ?2, finalized_at = NULL,
                            cancel_requested = 0, max_attempts = max(max_attempts, attempt + 1),
                            checkpoint = CASE WHEN state = 'completed' THEN NULL ELSE checkpoint END, ",
                        // A plain completion stored no event (the timeline derived it from
                        // finalized_at, which the retry clears): write it down first.
                        "events = json_insert(CASE WHEN NOT json_valid(events) THEN '[]'
                            WHEN state = 'completed' AND NOT EXISTS (SELECT 1 FROM json_each(events)
                                WHERE json_extract(value, '$.event') = 'completed' AND json_extract(value, '$.attempt') = attempt)
                            THEN json_insert(events, '$[#]', json_object(
                                'at', strftime('%Y-%m-%dT%H:%M:%S', finalized_at / 1000000, 'unixepoch') || '.' || printf('%06d', finalized_at % 1000000) || 'Z',
                                'event', 'completed', 'attempt', attempt, 'node', lease_owner, 'started_at', ",
                        started_at_sql!(),
                        "))
                            ELSE events END, '$[#]', json(?3))",
                        " WHERE id = ?1 AND state IN ('completed', 'cancelled', 'discarded')"
                    ))
                    .and_then(|mut s| s.execute(params![id.as_bytes().as_slice(), now, event]))
                    .map_err(|e| map_err(path, e))?;
                    if let Some(job) = get_job(conn, path, id)? {
                        out.push(job);
                    }
                }
                Ok(out)
            })
            .await?;
        self.inner.wake.notify_waiters();
        Ok(rows)
    }

    async fn get(&self, id: Uuid) -> Result<Option<JobRow>> {
        self.read(move |conn, path| get_job(conn, path, id)).await
    }

    async fn list(&self, p: ListParams) -> Result<JobPage> {
        self.read(move |conn, path| {
            let limit = p.limit.clamp(1, MAX_PAGE);
            let mut sql = format!("SELECT {COLS} FROM mend_jobs WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(q) = p.queue {
                args.push(q.into());
                sql.push_str(&format!(" AND queue = ?{}", args.len()));
            }
            if !p.states.is_empty() {
                let states: Vec<&str> = p.states.iter().map(|s| s.as_str()).collect();
                args.push(serde_json::to_string(&states).unwrap_or_default().into());
                sql.push_str(&format!(
                    " AND state IN (SELECT value FROM json_each(?{}))",
                    args.len()
                ));
            }
            if let Some(k) = p.kind {
                args.push(k.into());
                sql.push_str(&format!(" AND kind = ?{}", args.len()));
            }
            if let Some(t) = p.tag {
                args.push(t.into());
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?{})",
                    args.len()
                ));
            }
            if let Some(before) = p.before {
                args.push(before.as_bytes().to_vec().into());
                sql.push_str(&format!(" AND id < ?{}", args.len()));
            }
            args.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
            sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
            let mut jobs = query_jobs(conn, path, &sql, rusqlite::params_from_iter(args))?;
            let next_cursor = if jobs.len() > limit {
                jobs.truncate(limit);
                jobs.last().map(|j| j.id)
            } else {
                None
            };
            Ok(JobPage { jobs, next_cursor })
        })
        .await
    }

    async fn queue_counts(&self) -> Result<Vec<QueueCount>> {
        self.read(|conn, path| {
            let mut stmt = conn
                .prepare_cached(
                    // One branch per partial index, so every count is an index scan.
                    "SELECT queue, 'available', count(*) FROM mend_jobs WHERE state = 'available' GROUP BY queue
                     UNION ALL
                     SELECT queue, state, count(*) FROM mend_jobs WHERE (state = 'scheduled' OR state = 'retryable') GROUP BY queue, state
                     UNION ALL
                     SELECT queue, 'running', count(*) FROM mend_jobs WHERE state = 'running' GROUP BY queue
                     UNION ALL
                     SELECT queue, state, count(*) FROM mend_jobs WHERE finalized_at IS NOT NULL GROUP BY queue, state",
                )
                .map_err(|e| map_err(path, e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))
                .map_err(|e| map_err(path, e))?;
            let mut out = Vec::new();
            for row in rows {
                let (queue, state, count) = row.map_err(|e| map_err(path, e))?;
                let state = state.parse::<JobState>().map_err(|e| StoreError::Database(e.to_string()))?;
                out.push(QueueCount {
                    queue,
                    state,
                    count: u64::try_from(count).unwrap_or(0),
                });
            }
            out.sort_by(|a, b| (&a.queue, a.state).cmp(&(&b.queue, b.state)));
            Ok(out)
        })
        .await
    }

    async fn register_node(&self, node: NodeInfo) -> Result<()> {
        self.write(true, move |conn, path| {
            conn.prepare_cached(
                "INSERT INTO mend_nodes (id, host, pid, process_key, started_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
            )
            .and_then(|mut s| {
                s.execute(params![node.id, node.host, node.pid, node.process_key, micros(node.started_at), micros(node.last_seen)])
            })
            .map_err(|e| map_err(path, e))?;
            Ok(())
        })
        .await
    }

    async fn heartbeat_node(&self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        let id = id.to_owned();
        self.write(false, move |conn, path| {
            let n = conn
                .prepare_cached("UPDATE mend_nodes SET last_seen = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id, micros(now)]))
                .map_err(|e| map_err(path, e))?;
            Ok(n == 1)
        })
        .await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        self.read(|conn, path| {
            let mut stmt = conn
                .prepare_cached("SELECT id, host, pid, process_key, started_at, last_seen FROM mend_nodes ORDER BY id")
                .map_err(|e| map_err(path, e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .map_err(|e| map_err(path, e))?;
            let mut out = Vec::new();
            for row in rows {
                // A damaged node row is skipped (its jobs are still rescued when their leases
                // expire) rather than failing every rescue pass.
                let (id, host, pid, process_key, started, seen) = match row {
                    Ok(r) => r,
                    Err(
                        e @ (rusqlite::Error::FromSqlConversionFailure(..)
                        | rusqlite::Error::IntegralValueOutOfRange(..)
                        | rusqlite::Error::InvalidColumnType(..)),
                    ) => {
                        tracing::warn!(error = %e, "skipping an unreadable row in mend_nodes");
                        continue;
                    }
                    Err(e) => return Err(map_err(path, e)),
                };
                let (Some(started_at), Some(last_seen)) =
                    (DateTime::from_timestamp_micros(started), DateTime::from_timestamp_micros(seen))
                else {
                    tracing::warn!(node = %id, "skipping a node row with an impossible timestamp");
                    continue;
                };
                out.push(NodeInfo {
                    started_at,
                    last_seen,
                    id,
                    host,
                    pid,
                    process_key,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn deregister_nodes(&self, ids: Vec<String>) -> Result<()> {
        self.write(true, move |conn, path| {
            let mut stmt = conn
                .prepare_cached("DELETE FROM mend_nodes WHERE id = ?1")
                .map_err(|e| map_err(path, e))?;
            for id in ids {
                stmt.execute(params![id]).map_err(|e| map_err(path, e))?;
            }
            Ok(())
        })
        .await
    }

    async fn prune(&self, p: PruneParams) -> Result<u64> {
        self.write(true, move |conn, path| {
            let n = conn
                .prepare_cached(
                    "DELETE FROM mend_jobs WHERE id IN (
                        SELECT id FROM mend_jobs WHERE finalized_at IS NOT NULL AND finalized_at < ?1
                        ORDER BY finalized_at LIMIT ?2)",
                )
                .and_then(|mut s| {
                    s.execute(params![micros(p.finalized_before), i64::try_from(p.limit).unwrap_or(i64::MAX)])
                })
                .map_err(|e| map_err(path, e))?;
            Ok(n as u64)
        })
        .await
    }

    async fn set_queue_paused(&self, queue: &str, paused: bool, now: DateTime<Utc>) -> Result<()> {
        let queue = queue.to_owned();
        self.write(true, move |conn, path| {
            conn.prepare_cached(
                "INSERT INTO mend_queues (name, paused, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| s.execute(params![queue, paused, micros(now)]))
            .map_err(|e| map_err(path, e))?;
            Ok(())
        })
        .await?;
        if !paused {
            self.inner.wake.notify_waiters();
        }
        Ok(())
    }

    async fn paused_queues(&self) -> Result<Vec<String>> {
        self.read(|conn, path| {
            let mut stmt = conn
                .prepare_cached("SELECT name FROM mend_queues WHERE paused = 1 ORDER BY name")
                .map_err(|e| map_err(path, e))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| map_err(path, e))?;
            rows.collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| map_err(path, e))
        })
        .await
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }
}
