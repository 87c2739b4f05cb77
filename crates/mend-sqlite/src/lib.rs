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
//! The crate is laid out like a River driver: this file holds the store type and its
//! [`Store`] impl, which only picks a connection (the writer or a reader) and hands the work
//! to a module per concept: `sql` (every statement), `jobs`, `attempts` (fenced writes and
//! rescue), `nodes`, `queues`, `row` (decoding), `effect` (transactional completion) and
//! `config` (URL and connection settings).
//!
//! ```no_run
//! # async fn demo() -> Result<(), mend::StoreError> {
//! let store = mend_sqlite::SqliteStore::open("sqlite://mend.db").await?;
//! # Ok(()) }
//! ```

mod attempts;
mod config;
mod cron;
pub mod doctor;
mod effect;
mod error;
mod history;
mod jobs;
mod limits;
mod nodes;
mod queues;
mod rollouts;
mod row;
mod schema;
mod security;
mod sql;
mod writer;

use std::collections::HashSet;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mend::job::{JobRow, JobState, NewJob};
use mend::store::{
    CancelParams, CheckpointParams, ClaimParams, CleanupDoneParams, CompleteParams, CompleteResult,
    CompleteWithEffectParams, DeferDurableParams, ExtendLeasesParams, ExtendLeasesResult,
    HeartbeatNodeParams, JobPage, ListParams, NodeInfo, PruneParams, QueueCount, RescueParams,
    Rescued, Result, RetryParams, SetQueuePausedParams, Store, StoreError,
};
use mend::store::{CountAheadParams, CountStatesParams, StateCount};
use mend::store::{LimitState, LimitUsage, LimitUsageParams, SetLimitParams};
use rusqlite::Connection;
use tokio::sync::Notify;
use uuid::Uuid;

pub use config::{parse_url, SqliteConfig, BUSY_TIMEOUT};
pub use effect::effect;
pub use schema::SCHEMA_VERSION;

use error::map_err;
use writer::Command;

/// Read-only connections kept open for `get`, `list` and counts.
const READERS: usize = 4;

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
    idle_queues: Mutex<HashSet<String>>,
    wake: Arc<Notify>,
    /// Woken when a rollout is started or changed through this store (nodes in other
    /// processes re-read the routes at their heartbeats: SQLite has no notifications).
    routes: Arc<Notify>,
    synchronous_full: bool,
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
            let conn = config::open_writer(&p, &config)?;
            config::migrate_in_tx(&conn, &p)?;
            Ok::<_, StoreError>(conn)
        })
        .await
        .map_err(|e| StoreError::database(format!("opening the database panicked: {e}")))??;
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        std::thread::Builder::new()
            .name("mend-sqlite-writer".into())
            .spawn(move || writer::run(conn, p, synchronous_full, rx))
            .map_err(|e| StoreError::Unavailable {
                target: path.clone(),
                detail: format!("cannot start the writer thread: {e}"),
                source: Some(Arc::new(e)),
            })?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: tx,
                busy_timeout,
                readers: Mutex::new(Vec::new()),
                idle_queues: Mutex::new(HashSet::new()),
                wake: Arc::new(Notify::new()),
                routes: Arc::new(Notify::new()),
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

    /// Runs `f` on the writer, in its next transaction; `durable` asks for an fsync at commit.
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

    /// Runs `f` on a pooled read-only connection.
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
                None => config::open_reader(&inner.path, inner.busy_timeout)?,
            };
            let r = f(&conn, &inner.path);
            let mut pool = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READERS {
                pool.push(conn);
            }
            r
        })
        .await
        .map_err(|e| StoreError::database(format!("a read panicked: {e}")))?
    }

    /// How SQLite plans each statement the store runs on the hot path (claim, promotion,
    /// completion, lease extension, rescue scan), by name: the statements themselves, so a
    /// test of their plans tests what runs.
    pub async fn explain_hot_paths(&self) -> Result<Vec<(&'static str, Vec<String>)>> {
        let mut out = Vec::new();
        for (name, sql) in sql::hot_reads() {
            out.push((
                name,
                self.explain_column("EXPLAIN QUERY PLAN", sql, 3).await?,
            ));
        }
        Ok(out)
    }

    /// The VDBE opcodes of each write every job goes through (insert, claim, completion), by
    /// name: the statements the store runs.
    pub async fn hot_write_opcodes(&self) -> Result<Vec<(&'static str, Vec<String>)>> {
        let mut out = Vec::new();
        for (name, sql) in sql::hot_writes() {
            out.push((name, self.explain_column("EXPLAIN", sql, 1).await?));
        }
        Ok(out)
    }

    /// One text column of `{prefix} {sql}`, run with every parameter NULL.
    async fn explain_column(
        &self,
        prefix: &'static str,
        sql: String,
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

    /// Wakes local fetchers: jobs became available.
    fn wake(&self) {
        self.inner.wake.notify_waiters();
    }

    /// Passes on a rollout write's result, telling this process's nodes and servers to
    /// re-read the routes when it stored something.
    fn rollout_written(
        &self,
        written: Option<mend::rollout::Rollout>,
    ) -> Option<mend::rollout::Rollout> {
        if written.is_some() {
            self.inner.routes.notify_waiters();
        }
        written
    }

    /// Whether `queue`'s last claim came back short.
    fn idle(&self, queue: &str) -> bool {
        self.inner
            .idle_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(queue)
    }

    /// Records whether `queue`'s claim came back short.
    fn set_idle(&self, queue: String, idle: bool) {
        let mut set = self
            .inner
            .idle_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if idle {
            set.insert(queue);
        } else {
            set.remove(&queue);
        }
    }
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
            .write(true, move |conn, path| jobs::insert(conn, path, jobs))
            .await?;
        if rows.iter().any(|r| r.state == JobState::Available) {
            self.wake();
        }
        Ok(rows)
    }

    async fn claim(&self, p: ClaimParams) -> Result<Vec<JobRow>> {
        if p.limit == 0 {
            return Ok(Vec::new());
        }
        // An idle queue is probed on a reader first: polling an empty queue then never takes
        // the write lock, which matters when several processes share the file.
        if self.idle(&p.queue) {
            let (queue, now) = (p.queue.clone(), row::micros(p.now));
            let work = self
                .read(move |conn, path| jobs::claim_probe(conn, path, &queue, now))
                .await?;
            if !work {
                return Ok(Vec::new());
            }
        }
        let (queue, limit) = (p.queue.clone(), p.limit);
        let jobs = self
            .write(false, move |conn, path| jobs::claim(conn, path, p))
            .await?;
        self.set_idle(queue, jobs.len() < limit);
        Ok(jobs)
    }

    async fn complete_many(&self, p: CompleteParams) -> Result<CompleteResult> {
        if p.outcomes.is_empty() {
            return Ok(CompleteResult::default());
        }
        // Jobs that go straight back to `available` (released, snoozed by zero) wake fetchers.
        let requeued = p.requeues();
        let result = self
            .write(true, move |conn, path| {
                attempts::complete_many(conn, path, p)
            })
            .await?;
        if requeued {
            self.wake();
        }
        Ok(result)
    }

    async fn complete_with_effect(&self, p: CompleteWithEffectParams) -> Result<bool> {
        let (outcome, now) = (p.outcome, p.now);
        let (f, result) = effect::unpack(&outcome, p.effect)?;
        // One writer command: the completion and the effect share its savepoint, and an error
        // rolls both back.
        self.write(true, move |conn, path| {
            effect::complete_with(conn, path, &outcome, result, f, now)
        })
        .await
    }

    async fn checkpoint(&self, p: CheckpointParams) -> Result<bool> {
        self.write(true, move |conn, path| attempts::checkpoint(conn, path, p))
            .await
    }

    async fn defer_durable(&self, p: DeferDurableParams) -> Result<Option<u32>> {
        self.write(true, move |conn, path| {
            let attempt = p.fence.attempt;
            attempts::edit_pending(conn, path, &p.fence, None, |list| {
                mend::cleanup::DurableCleanup::push_next(list, attempt, p.name, p.args)
            })
        })
        .await
    }

    async fn cleanup_done(&self, p: CleanupDoneParams) -> Result<bool> {
        let event = row::event_json(&p.event)?;
        let done = self
            .write(true, move |conn, path| {
                attempts::edit_pending(conn, path, &p.fence, Some(event), |list| {
                    list.retain(|c| c.seq != p.seq)
                })
            })
            .await?;
        Ok(done.is_some())
    }

    async fn extend_leases(&self, p: ExtendLeasesParams) -> Result<ExtendLeasesResult> {
        self.write(false, move |conn, path| {
            attempts::extend_leases(conn, path, p)
        })
        .await
    }

    async fn rescue(&self, p: RescueParams) -> Result<Vec<Rescued>> {
        self.write(true, move |conn, path| attempts::rescue(conn, path, p))
            .await
    }

    async fn cancel(&self, p: CancelParams) -> Result<Vec<JobRow>> {
        self.write(true, move |conn, path| jobs::cancel(conn, path, p))
            .await
    }

    async fn retry(&self, p: RetryParams) -> Result<Vec<JobRow>> {
        let rows = self
            .write(true, move |conn, path| jobs::retry(conn, path, p))
            .await?;
        self.wake();
        Ok(rows)
    }

    async fn get(&self, id: Uuid) -> Result<Option<JobRow>> {
        self.read(move |conn, path| row::get_job(conn, path, id))
            .await
    }

    async fn list(&self, p: ListParams) -> Result<JobPage> {
        self.read(move |conn, path| jobs::list(conn, path, p)).await
    }

    async fn queue_counts(&self) -> Result<Vec<QueueCount>> {
        self.read(queues::counts).await
    }

    async fn live_queue_counts(&self) -> Result<Vec<QueueCount>> {
        self.read(queues::live_counts).await
    }

    async fn count_states(&self, p: CountStatesParams) -> Result<Vec<StateCount>> {
        self.read(move |conn, path| jobs::count_states(conn, path, p))
            .await
    }

    async fn count_ahead(&self, p: CountAheadParams) -> Result<u64> {
        self.read(move |conn, path| jobs::count_ahead(conn, path, p))
            .await
    }

    async fn delete_final(&self, ids: Vec<Uuid>) -> Result<Vec<Uuid>> {
        self.write(true, move |conn, path| jobs::delete_final(conn, path, ids))
            .await
    }

    async fn queue_heads(&self, queues: Vec<String>) -> Result<Vec<JobRow>> {
        self.read(move |conn, path| jobs::queue_heads(conn, path, queues))
            .await
    }

    async fn register_node(&self, node: NodeInfo) -> Result<()> {
        self.write(true, move |conn, path| nodes::register(conn, path, node))
            .await
    }

    async fn heartbeat_node(&self, p: HeartbeatNodeParams) -> Result<bool> {
        self.write(false, move |conn, path| nodes::heartbeat(conn, path, &p))
            .await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        self.read(nodes::list).await
    }

    async fn deregister_nodes(&self, ids: Vec<String>) -> Result<()> {
        self.write(true, move |conn, path| nodes::deregister(conn, path, ids))
            .await
    }

    async fn prune(&self, p: PruneParams) -> Result<u64> {
        self.write(true, move |conn, path| jobs::prune(conn, path, p))
            .await
    }

    async fn set_queue_paused(&self, p: SetQueuePausedParams) -> Result<()> {
        let paused = p.paused;
        self.write(true, move |conn, path| {
            queues::set_paused(conn, path, &p.queue, p.paused, p.now)
        })
        .await?;
        if !paused {
            self.wake();
        }
        Ok(())
    }

    async fn paused_queues(&self) -> Result<Vec<String>> {
        self.read(queues::paused).await
    }

    async fn set_limit(&self, p: SetLimitParams) -> Result<()> {
        p.limit.validate()?;
        self.write(true, move |conn, path| {
            limits::set(conn, path, &p.limit, p.now)
        })
        .await?;
        self.wake();
        Ok(())
    }

    async fn delete_limit(&self, name: String) -> Result<bool> {
        let gone = self
            .write(true, move |conn, path| limits::delete(conn, path, &name))
            .await?;
        self.wake();
        Ok(gone)
    }

    async fn list_limits(&self) -> Result<Vec<LimitState>> {
        self.read(limits::list).await
    }

    async fn prune_limit_buckets(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<u64> {
        self.write(true, move |conn, path| {
            limits::prune_buckets(conn, path, now, limit)
        })
        .await
    }

    async fn limit_usage(&self, p: LimitUsageParams) -> Result<LimitUsage> {
        let jobs: Vec<_> = p
            .jobs
            .into_iter()
            .map(|j| (j.kind, j.args, j.limit_key))
            .collect();
        let (limits, usage) = self
            .read(move |conn, path| limits::usage(conn, path, &p.queue, &jobs))
            .await?;
        Ok(LimitUsage { limits, usage })
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    fn routes_wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.inner.routes.clone())
    }

    // ---- Periodic jobs (cron): see `cron`. ----

    async fn cron_upsert(&self, p: mend::store::UpsertCronParams) -> Result<mend::cron::CronRow> {
        self.write(true, move |conn, path| cron::upsert(conn, path, p))
            .await
    }

    async fn cron_list(&self) -> Result<Vec<mend::cron::CronRow>> {
        self.read(cron::list).await
    }

    async fn cron_get(&self, name: String) -> Result<Option<mend::cron::CronRow>> {
        self.read(move |conn, path| cron::get(conn, path, &name))
            .await
    }

    async fn cron_set_paused(
        &self,
        p: mend::store::SetCronPausedParams,
    ) -> Result<Option<mend::cron::CronRow>> {
        self.write(true, move |conn, path| cron::set_paused(conn, path, p))
            .await
    }

    async fn cron_delete(&self, name: String) -> Result<bool> {
        self.write(true, move |conn, path| cron::delete(conn, path, &name))
            .await
    }

    async fn cron_due(&self, p: mend::store::DueCronParams) -> Result<Vec<mend::cron::CronRow>> {
        self.read(move |conn, path| cron::due(conn, path, p)).await
    }

    async fn cron_advance(&self, p: mend::store::AdvanceCronParams) -> Result<Option<Vec<JobRow>>> {
        for job in &p.jobs {
            job.validate()?;
        }
        let rows = self
            .write(true, move |conn, path| cron::advance(conn, path, p))
            .await?;
        if rows
            .as_ref()
            .is_some_and(|r| r.iter().any(|j| j.state == JobState::Available))
        {
            self.wake();
        }
        Ok(rows)
    }

    async fn doctor_stats(&self, p: mend::store::DoctorParams) -> Result<mend::store::DoctorStats> {
        self.read(move |conn, path| doctor::stats(conn, path, p))
            .await
    }

    // ---- Dashboard history: see `history`. ----

    async fn add_stats(&self, deltas: Vec<mend::stats::StatsDelta>) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        // Not fsynced on its own: history lost to a power cut costs a few seconds of chart.
        self.write(false, move |conn, path| history::add(conn, path, deltas))
            .await
    }

    async fn stats(&self, p: mend::stats::StatsParams) -> Result<mend::stats::StatsAnswer> {
        self.read(move |conn, path| history::read(conn, path, p))
            .await
    }

    async fn add_events(&self, events: Vec<mend::stats::Event>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(true, move |conn, path| {
            history::add_events(conn, path, events)
        })
        .await
    }

    async fn events(&self, p: mend::stats::EventsParams) -> Result<Vec<mend::stats::Event>> {
        self.read(move |conn, path| history::events(conn, path, p))
            .await
    }

    async fn prune_history(&self, p: mend::stats::PruneHistoryParams) -> Result<u64> {
        self.write(true, move |conn, path| history::prune(conn, path, p))
            .await
    }

    // ---- Tokens, audit log, args key checks: see `security`. ----

    async fn token_create(&self, p: mend::auth::CreateTokenParams) -> Result<bool> {
        self.write(true, move |conn, path| {
            security::token_create(conn, path, p)
        })
        .await
    }

    async fn token_list(&self) -> Result<Vec<mend::auth::ApiToken>> {
        self.read(security::token_list).await
    }

    async fn token_revoke(&self, p: mend::auth::RevokeTokenParams) -> Result<bool> {
        self.write(true, move |conn, path| {
            security::token_revoke(conn, path, p)
        })
        .await
    }

    async fn audit_add(&self, entries: Vec<mend::audit::NewAuditEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write(true, move |conn, path| {
            security::audit_add(conn, path, entries)
        })
        .await
    }

    async fn audit_list(
        &self,
        p: mend::audit::AuditParams,
    ) -> Result<Vec<mend::audit::AuditEntry>> {
        self.read(move |conn, path| security::audit_list(conn, path, p))
            .await
    }

    async fn audit_prune(&self, p: mend::audit::PruneAuditParams) -> Result<u64> {
        self.write(true, move |conn, path| security::audit_prune(conn, path, p))
            .await
    }

    async fn args_keys(&self) -> Result<Vec<mend::secrets::ArgsKeyCheck>> {
        self.read(security::args_keys).await
    }

    async fn args_key_add(&self, k: mend::secrets::ArgsKeyCheck) -> Result<()> {
        self.write(true, move |conn, path| {
            security::args_key_add(conn, path, k)
        })
        .await
    }

    // ---- Gray release: see `rollouts`. ----

    async fn rollout_start(
        &self,
        r: mend::rollout::Rollout,
    ) -> Result<Option<mend::rollout::Rollout>> {
        let started = self
            .write(true, move |conn, path| rollouts::start(conn, path, r))
            .await?;
        Ok(self.rollout_written(started))
    }

    async fn rollout_list(&self) -> Result<Vec<mend::rollout::Rollout>> {
        self.read(rollouts::list).await
    }

    async fn rollout_get(&self, id: uuid::Uuid) -> Result<Option<mend::rollout::Rollout>> {
        self.read(move |conn, path| rollouts::get(conn, path, id))
            .await
    }

    async fn rollout_save(
        &self,
        r: mend::rollout::Rollout,
    ) -> Result<Option<mend::rollout::Rollout>> {
        let saved = self
            .write(true, move |conn, path| rollouts::save(conn, path, r))
            .await?;
        Ok(self.rollout_written(saved))
    }

    async fn rollout_routes(&self) -> Result<Vec<mend::rollout::RouteState>> {
        self.read(rollouts::routes).await
    }

    async fn add_version_samples(&self, samples: Vec<mend::store::VersionSample>) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        // Not fsynced on its own, like the history: a power cut loses half a second of samples.
        self.write(false, move |conn, path| {
            rollouts::add_samples(conn, path, samples)
        })
        .await
    }

    async fn version_samples(
        &self,
        p: mend::store::VersionSamplesParams,
    ) -> Result<Vec<mend::store::VersionSample>> {
        self.read(move |conn, path| rollouts::samples(conn, path, p))
            .await
    }

    async fn rollout_heal(&self, p: mend::store::HealParams) -> Result<Vec<uuid::Uuid>> {
        let ids = self
            .write(true, move |conn, path| rollouts::heal(conn, path, p))
            .await?;
        if !ids.is_empty() {
            self.wake();
        }
        Ok(ids)
    }
}
