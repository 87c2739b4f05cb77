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
//!   whose lock is gone, about a fifth of a second after their death (see `liveness` and
//!   `watch`).
//! - Everything lives in one schema (`mend` unless configured), migrated under an advisory
//!   lock by whichever node starts first.
//!
//! The crate is laid out like a River driver: this file holds the store type and its
//! [`Store`] impl, which hands each operation to a module per concept: `sql` (every
//! statement), `jobs`, `attempts` (fenced writes and rescue), `nodes`, `queues`, `liveness`
//! (judging nodes dead), `watch` (waiting on other nodes' locks), `row` (decoding), `effect` (transactional completion) and `config`
//! (URL, settings, pools).
//!
//! ```no_run
//! # async fn demo() -> Result<(), mend::StoreError> {
//! let store = mend_postgres::PgStore::open("postgres://postgres@127.0.0.1/app?schema=mend").await?;
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
mod liveness;
mod nodes;
mod queues;
mod rollouts;
mod row;
mod schema;
mod security;
mod session;
mod sql;
pub mod tls;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mend::job::{JobRow, NewJob};
use mend::store::{
    CancelParams, CheckpointParams, ClaimParams, CleanupDoneParams, CompleteParams, CompleteResult,
    CompleteWithEffectParams, DeadNodesParams, DeferDurableParams, ExtendLeasesParams,
    ExtendLeasesResult, HeartbeatNodeParams, JobPage, ListParams, NodeInfo, PruneParams,
    QueueCount, RescueParams, Rescued, Result, RetryParams, SetQueuePausedParams, Store,
    StoreError,
};
use mend::store::{CountAheadParams, CountStatesParams, StateCount};
use mend::store::{LimitState, LimitUsage, LimitUsageParams, SetLimitParams};
use tokio::sync::Notify;
use tokio_postgres::GenericClient;
use uuid::Uuid;

pub use config::{connect, is_postgres_url, redact_url, split_schema, PgConfig};
pub use effect::effect;
pub use schema::SCHEMA_VERSION;
/// The driver, re-exported so callers of [`PgStore::insert_many_in`] use the same version.
pub use tokio_postgres;

use deadpool_postgres::Pool;
use error::{map_pg, map_pool};
use liveness::Liveness;
use session::Session;
use sql::Sql;

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
    liveness: Liveness,
    /// The leader's waits on the other nodes' locks (see `watch`).
    watchers: watch::Watchers,
    limited: limits::LimitedQueues,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.session_task.abort();
    }
}

impl PgStore {
    /// Connect to `url` (`postgres://user:password@host:port/db?schema=NAME`) with default
    /// settings, and migrate.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, PgConfig::default()).await
    }

    /// Connect with explicit settings, and migrate.
    pub async fn open_with(url: &str, config: PgConfig) -> Result<Self> {
        let config::Connection {
            target,
            pg,
            tls,
            schema,
            schema_q,
            ns,
            origin,
            pool,
            fast,
        } = config::connection(url, config)?;

        // Migrate before the session starts: it needs the lock sequence.
        {
            let mut client = pool.get().await.map_err(|e| map_pool(&target, e))?;
            let tx = client.transaction().await.map_err(|e| map_pg(&target, e))?;
            schema::migrate(&tx, &schema_q, ns, &target).await?;
            tx.commit().await.map_err(|e| map_pg(&target, e))?;
        }

        let session = Arc::new(Session::new(
            pg,
            tls,
            target.clone(),
            &schema,
            schema_q.clone(),
            ns,
            origin,
        ));
        let wake = session.wake.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let session_task = tokio::spawn(session.clone().run(ready_tx));
        ready_rx.await.map_err(|_| StoreError::Closed)??;
        let sql = Sql::new(&schema_q, &session.channel);
        Ok(PgStore {
            inner: Arc::new(Inner {
                target,
                schema,
                pool,
                fast,
                sql,
                session,
                session_task,
                wake,
                liveness: Liveness::default(),
                watchers: watch::Watchers::new(),
                limited: limits::LimitedQueues::default(),
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
        jobs::insert_with(self, client, self.inner.sql.insert.as_str(), jobs).await
    }

    /// How PostgreSQL plans each hot statement (claim, promotion, completion, lease
    /// extension, rescue scan), planned as the store's connections plan them (a custom plan
    /// per execution). Tests use it to keep every hot path on an index as the table grows.
    pub async fn explain_hot_paths(&self) -> Result<Vec<(&'static str, String)>> {
        let c = self.client().await?;
        let mut out = Vec::new();
        for (name, statement, types, values) in self.inner.sql.hot_paths() {
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

    /// A connection from the main pool (enqueues, outcomes, reads).
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.checkout(&self.inner.pool).await
    }

    /// A connection from the fast pool (claims, node heartbeats).
    async fn fast_client(&self) -> Result<deadpool_postgres::Object> {
        self.checkout(&self.inner.fast).await
    }

    /// A connection from `pool`, its error naming this database.
    async fn checkout(&self, pool: &Pool) -> Result<deadpool_postgres::Object> {
        pool.get()
            .await
            .map_err(|e| map_pool(&self.inner.target, e))
    }

    /// Runs one statement that returns rows on a connection from the main pool.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let c = self.client().await?;
        c.query(sql, params).await.map_err(self.pg())
    }

    /// Maps a driver error to a [`StoreError`] naming this database.
    fn pg(&self) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        move |e| map_pg(&self.inner.target, e)
    }

    /// Wakes local fetchers, and other nodes' through NOTIFY.
    async fn notify_all(&self) {
        self.inner.wake.notify_waiters();
        if let Ok(c) = self.client().await {
            if let Err(e) = c.execute(&self.inner.sql.notify, &[]).await {
                tracing::debug!(error = %e, "notifying other nodes failed; they will poll");
            }
        }
    }
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
        jobs::insert(self, jobs).await
    }

    async fn claim(&self, p: ClaimParams) -> Result<Vec<JobRow>> {
        if p.limit == 0 {
            return Ok(Vec::new());
        }
        if limits::is_limited(self, &p.queue).await? {
            let limit = p.limit.saturating_sub(p.ahead);
            if limit == 0 {
                return Ok(Vec::new());
            }
            return limits::claim(self, ClaimParams { limit, ..p }).await;
        }
        jobs::claim(self, p).await
    }

    async fn set_limit(&self, p: SetLimitParams) -> Result<()> {
        limits::set(self, p.limit, p.now).await
    }

    async fn delete_limit(&self, name: String) -> Result<bool> {
        limits::delete(self, &name).await
    }

    async fn list_limits(&self) -> Result<Vec<LimitState>> {
        limits::list(self).await
    }

    async fn prune_limit_buckets(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<u64> {
        limits::prune_buckets(self, now, limit).await
    }

    async fn limit_usage(&self, p: LimitUsageParams) -> Result<LimitUsage> {
        let jobs: Vec<_> = p
            .jobs
            .into_iter()
            .map(|j| (j.kind, j.args, j.limit_key))
            .collect();
        let (limits, usage) = limits::usage(self, &p.queue, &jobs).await?;
        Ok(LimitUsage { limits, usage })
    }

    async fn complete_many(&self, p: CompleteParams) -> Result<CompleteResult> {
        if p.outcomes.is_empty() {
            return Ok(CompleteResult::default());
        }
        let requeued = p.requeues();
        let result = attempts::complete_many(self, p).await?;
        if requeued {
            self.notify_all().await;
        }
        Ok(result)
    }

    async fn defer_durable(&self, p: DeferDurableParams) -> Result<Option<u32>> {
        let attempt = p.fence.attempt;
        attempts::edit_pending(self, &p.fence, None, |list| {
            mend::cleanup::DurableCleanup::push_next(list, attempt, p.name, p.args)
        })
        .await
    }

    async fn cleanup_done(&self, p: CleanupDoneParams) -> Result<bool> {
        let event = row::jsonb(&p.event)?;
        let done = attempts::edit_pending(self, &p.fence, Some(event), |list| {
            list.retain(|c| c.seq != p.seq)
        })
        .await?;
        Ok(done.is_some())
    }

    async fn complete_with_effect(&self, p: CompleteWithEffectParams) -> Result<bool> {
        effect::complete_with_effect(self, p.outcome, p.effect, p.now).await
    }

    async fn checkpoint(&self, p: CheckpointParams) -> Result<bool> {
        attempts::checkpoint(self, p).await
    }

    async fn extend_leases(&self, p: ExtendLeasesParams) -> Result<ExtendLeasesResult> {
        attempts::extend_leases(self, p).await
    }

    async fn rescue(&self, p: RescueParams) -> Result<Vec<Rescued>> {
        attempts::rescue(self, p).await
    }

    async fn cancel(&self, p: CancelParams) -> Result<Vec<JobRow>> {
        jobs::cancel(self, p).await
    }

    async fn retry(&self, p: RetryParams) -> Result<Vec<JobRow>> {
        jobs::retry(self, p).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<JobRow>> {
        jobs::get(self, id).await
    }

    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<JobRow>> {
        jobs::get_many_by_id(self, ids).await
    }

    async fn list(&self, p: ListParams) -> Result<JobPage> {
        jobs::list(self, p).await
    }

    async fn queue_counts(&self) -> Result<Vec<QueueCount>> {
        queues::counts(self, false).await
    }

    async fn live_queue_counts(&self) -> Result<Vec<QueueCount>> {
        queues::counts(self, true).await
    }

    async fn count_states(&self, p: CountStatesParams) -> Result<Vec<StateCount>> {
        jobs::count_states(self, p).await
    }

    async fn count_ahead(&self, p: CountAheadParams) -> Result<u64> {
        jobs::count_ahead(self, p).await
    }

    async fn delete_final(&self, ids: Vec<Uuid>) -> Result<Vec<Uuid>> {
        jobs::delete_final(self, ids).await
    }

    async fn queue_heads(&self, queues: Vec<String>) -> Result<Vec<JobRow>> {
        jobs::queue_heads(self, queues).await
    }

    async fn register_node(&self, node: NodeInfo) -> Result<()> {
        nodes::register(self, node).await
    }

    async fn heartbeat_node(&self, p: HeartbeatNodeParams) -> Result<bool> {
        nodes::heartbeat(self, &p).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        nodes::list(self).await
    }

    async fn deregister_nodes(&self, ids: Vec<String>) -> Result<()> {
        nodes::deregister(self, ids).await
    }

    async fn prune(&self, p: PruneParams) -> Result<u64> {
        jobs::prune(self, p).await
    }

    async fn set_queue_paused(&self, p: SetQueuePausedParams) -> Result<()> {
        queues::set_paused(self, &p.queue, p.paused, p.now).await
    }

    async fn paused_queues(&self) -> Result<Vec<String>> {
        queues::paused(self).await
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    async fn dead_nodes(&self, p: DeadNodesParams) -> Result<Vec<String>> {
        liveness::dead_nodes(self, &p.self_id, p.stale_before).await
    }

    async fn is_leader(&self) -> Result<bool> {
        let leads = self.inner.session.lead().await;
        match leads {
            // The leader's watchers follow the nodes it sees (see `liveness::dead_nodes`).
            Ok(true) => {}
            // Others watch only the leader's lock, to take the lead the moment it dies.
            Ok(false) => self.inner.watchers.watch_leader(&self.inner.session),
            Err(_) => self.inner.watchers.stop_all(),
        }
        leads
    }

    fn rescue_interval(&self) -> Option<Duration> {
        Some(liveness::RESCUE_EVERY)
    }

    fn rescue_wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.inner.watchers.rescue.clone())
    }

    fn routes_wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.inner.session.routes.clone())
    }

    // ---- Periodic jobs (cron): see `cron`. ----

    async fn cron_upsert(&self, p: mend::store::UpsertCronParams) -> Result<mend::cron::CronRow> {
        cron::upsert(self, p).await
    }

    async fn cron_list(&self) -> Result<Vec<mend::cron::CronRow>> {
        cron::list(self).await
    }

    async fn cron_get(&self, name: String) -> Result<Option<mend::cron::CronRow>> {
        cron::get(self, &name).await
    }

    async fn cron_set_paused(
        &self,
        p: mend::store::SetCronPausedParams,
    ) -> Result<Option<mend::cron::CronRow>> {
        cron::set_paused(self, p).await
    }

    async fn cron_delete(&self, name: String) -> Result<bool> {
        cron::delete(self, &name).await
    }

    async fn cron_due(&self, p: mend::store::DueCronParams) -> Result<Vec<mend::cron::CronRow>> {
        cron::due(self, p).await
    }

    async fn cron_advance(&self, p: mend::store::AdvanceCronParams) -> Result<Option<Vec<JobRow>>> {
        cron::advance(self, p).await
    }

    async fn doctor_stats(&self, p: mend::store::DoctorParams) -> Result<mend::store::DoctorStats> {
        doctor::stats(self, p).await
    }

    // ---- Dashboard history: see `history`. ----

    async fn add_stats(&self, deltas: Vec<mend::stats::StatsDelta>) -> Result<()> {
        history::add(self, deltas).await
    }

    async fn stats(&self, p: mend::stats::StatsParams) -> Result<mend::stats::StatsAnswer> {
        history::read(self, p).await
    }

    async fn add_events(&self, events: Vec<mend::stats::Event>) -> Result<()> {
        history::add_events(self, events).await
    }

    async fn events(&self, p: mend::stats::EventsParams) -> Result<Vec<mend::stats::Event>> {
        history::events(self, p).await
    }

    async fn prune_history(&self, p: mend::stats::PruneHistoryParams) -> Result<u64> {
        history::prune(self, p).await
    }

    // ---- Tokens, audit log, args key checks: see `security`. ----

    async fn token_create(&self, p: mend::auth::CreateTokenParams) -> Result<bool> {
        security::token_create(self, p).await
    }

    async fn token_list(&self) -> Result<Vec<mend::auth::ApiToken>> {
        security::token_list(self).await
    }

    async fn token_revoke(&self, p: mend::auth::RevokeTokenParams) -> Result<bool> {
        security::token_revoke(self, p).await
    }

    async fn audit_add(&self, entries: Vec<mend::audit::NewAuditEntry>) -> Result<()> {
        security::audit_add(self, entries).await
    }

    async fn audit_list(
        &self,
        p: mend::audit::AuditParams,
    ) -> Result<Vec<mend::audit::AuditEntry>> {
        security::audit_list(self, p).await
    }

    async fn audit_prune(&self, p: mend::audit::PruneAuditParams) -> Result<u64> {
        security::audit_prune(self, p).await
    }

    async fn args_keys(&self) -> Result<Vec<mend::secrets::ArgsKeyCheck>> {
        security::args_keys(self).await
    }

    async fn args_key_add(&self, k: mend::secrets::ArgsKeyCheck) -> Result<()> {
        security::args_key_add(self, k).await
    }

    // ---- Gray release: see `rollouts`. ----

    async fn rollout_start(
        &self,
        r: mend::rollout::Rollout,
    ) -> Result<Option<mend::rollout::Rollout>> {
        rollouts::start(self, r).await
    }

    async fn rollout_list(&self) -> Result<Vec<mend::rollout::Rollout>> {
        rollouts::list(self).await
    }

    async fn rollout_get(&self, id: uuid::Uuid) -> Result<Option<mend::rollout::Rollout>> {
        rollouts::get(self, id).await
    }

    async fn rollout_save(
        &self,
        r: mend::rollout::Rollout,
    ) -> Result<Option<mend::rollout::Rollout>> {
        rollouts::save(self, r).await
    }

    async fn rollout_routes(&self) -> Result<Vec<mend::rollout::RouteState>> {
        rollouts::routes(self).await
    }

    async fn add_version_samples(&self, samples: Vec<mend::store::VersionSample>) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        rollouts::add_samples(self, samples).await
    }

    async fn version_samples(
        &self,
        p: mend::store::VersionSamplesParams,
    ) -> Result<Vec<mend::store::VersionSample>> {
        rollouts::samples(self, p).await
    }

    async fn rollout_heal(&self, p: mend::store::HealParams) -> Result<Vec<uuid::Uuid>> {
        rollouts::heal(self, p).await
    }
}
