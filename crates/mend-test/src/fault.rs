//! Fault injection for crash tests: a [`Store`] wrapper that kills the process at a chosen
//! point, so a test can reach a window a real crash would only hit by chance (for example
//! between a staged file's rename and the completion's commit).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mend::store::*;
use mend::{JobRow, NewJob};
use tokio::sync::Notify;
use uuid::Uuid;

/// Where to crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Just before writing any completion: its attempt's effects outside the store (a staged
    /// file's rename) have happened, its commit has not.
    BeforeCompletion,
}

/// Delegates everything to the inner store, and aborts the process at the crash point.
pub struct Crashing {
    /// The real store.
    pub inner: Arc<dyn Store>,
    /// Where to die.
    pub at: CrashPoint,
}

#[async_trait]
impl Store for Crashing {
    async fn migrate(&self) -> Result<()> {
        self.inner.migrate().await
    }
    async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobRow>> {
        self.inner.insert_many(jobs).await
    }
    async fn claim(&self, params: ClaimParams) -> Result<Vec<JobRow>> {
        self.inner.claim(params).await
    }
    async fn complete_many(&self, params: CompleteParams) -> Result<CompleteResult> {
        if self.at == CrashPoint::BeforeCompletion
            && params
                .outcomes
                .iter()
                .any(|o| matches!(o.kind, OutcomeKind::Completed { .. }))
        {
            eprintln!("fault injection: crashing before the completion commits");
            std::process::abort();
        }
        self.inner.complete_many(params).await
    }
    async fn checkpoint(&self, params: CheckpointParams) -> Result<bool> {
        self.inner.checkpoint(params).await
    }
    async fn defer_durable(&self, params: DeferDurableParams) -> Result<Option<u32>> {
        self.inner.defer_durable(params).await
    }
    async fn cleanup_done(&self, params: CleanupDoneParams) -> Result<bool> {
        self.inner.cleanup_done(params).await
    }
    async fn extend_leases(&self, params: ExtendLeasesParams) -> Result<ExtendLeasesResult> {
        self.inner.extend_leases(params).await
    }
    async fn rescue(&self, params: RescueParams) -> Result<Vec<Rescued>> {
        self.inner.rescue(params).await
    }
    async fn cancel(&self, params: CancelParams) -> Result<Vec<JobRow>> {
        self.inner.cancel(params).await
    }
    async fn retry(&self, params: RetryParams) -> Result<Vec<JobRow>> {
        self.inner.retry(params).await
    }
    async fn get(&self, id: Uuid) -> Result<Option<JobRow>> {
        self.inner.get(id).await
    }
    async fn list(&self, params: ListParams) -> Result<JobPage> {
        self.inner.list(params).await
    }
    async fn queue_counts(&self) -> Result<Vec<QueueCount>> {
        self.inner.queue_counts().await
    }

    async fn live_queue_counts(&self) -> Result<Vec<QueueCount>> {
        self.inner.live_queue_counts().await
    }
    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<JobRow>> {
        self.inner.get_many(ids).await
    }
    async fn count_states(&self, p: CountStatesParams) -> Result<Vec<StateCount>> {
        self.inner.count_states(p).await
    }
    async fn count_ahead(&self, p: CountAheadParams) -> Result<u64> {
        self.inner.count_ahead(p).await
    }
    async fn delete_final(&self, ids: Vec<Uuid>) -> Result<Vec<Uuid>> {
        self.inner.delete_final(ids).await
    }
    async fn queue_heads(&self, queues: Vec<String>) -> Result<Vec<JobRow>> {
        self.inner.queue_heads(queues).await
    }
    async fn register_node(&self, node: NodeInfo) -> Result<()> {
        self.inner.register_node(node).await
    }
    async fn heartbeat_node(&self, params: HeartbeatNodeParams) -> Result<bool> {
        self.inner.heartbeat_node(params).await
    }
    async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        self.inner.list_nodes().await
    }
    async fn deregister_nodes(&self, ids: Vec<String>) -> Result<()> {
        self.inner.deregister_nodes(ids).await
    }
    async fn prune(&self, params: PruneParams) -> Result<u64> {
        self.inner.prune(params).await
    }
    async fn set_queue_paused(&self, params: SetQueuePausedParams) -> Result<()> {
        self.inner.set_queue_paused(params).await
    }
    async fn paused_queues(&self) -> Result<Vec<String>> {
        self.inner.paused_queues().await
    }
    async fn set_limit(&self, params: SetLimitParams) -> Result<()> {
        self.inner.set_limit(params).await
    }
    async fn delete_limit(&self, name: String) -> Result<bool> {
        self.inner.delete_limit(name).await
    }
    async fn list_limits(&self) -> Result<Vec<LimitState>> {
        self.inner.list_limits().await
    }
    async fn limit_usage(&self, params: LimitUsageParams) -> Result<LimitUsage> {
        self.inner.limit_usage(params).await
    }
    async fn prune_limit_buckets(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<u64> {
        self.inner.prune_limit_buckets(now, limit).await
    }
    async fn cron_upsert(&self, params: UpsertCronParams) -> Result<mend::cron::CronRow> {
        self.inner.cron_upsert(params).await
    }
    async fn cron_list(&self) -> Result<Vec<mend::cron::CronRow>> {
        self.inner.cron_list().await
    }
    async fn cron_get(&self, name: String) -> Result<Option<mend::cron::CronRow>> {
        self.inner.cron_get(name).await
    }
    async fn cron_set_paused(
        &self,
        params: SetCronPausedParams,
    ) -> Result<Option<mend::cron::CronRow>> {
        self.inner.cron_set_paused(params).await
    }
    async fn cron_delete(&self, name: String) -> Result<bool> {
        self.inner.cron_delete(name).await
    }
    async fn cron_due(&self, params: DueCronParams) -> Result<Vec<mend::cron::CronRow>> {
        self.inner.cron_due(params).await
    }
    async fn cron_advance(&self, params: AdvanceCronParams) -> Result<Option<Vec<JobRow>>> {
        self.inner.cron_advance(params).await
    }
    async fn doctor_stats(&self, params: DoctorParams) -> Result<DoctorStats> {
        self.inner.doctor_stats(params).await
    }
    async fn add_stats(&self, deltas: Vec<StatsDelta>) -> Result<()> {
        self.inner.add_stats(deltas).await
    }
    async fn stats(&self, params: StatsParams) -> Result<StatsAnswer> {
        self.inner.stats(params).await
    }
    async fn add_events(&self, events: Vec<Event>) -> Result<()> {
        self.inner.add_events(events).await
    }
    async fn events(&self, params: EventsParams) -> Result<Vec<Event>> {
        self.inner.events(params).await
    }
    async fn prune_history(&self, params: PruneHistoryParams) -> Result<u64> {
        self.inner.prune_history(params).await
    }
    fn wakeup(&self) -> Arc<Notify> {
        self.inner.wakeup()
    }
    fn routes_wakeup(&self) -> Option<Arc<Notify>> {
        self.inner.routes_wakeup()
    }
    fn rescue_wakeup(&self) -> Option<Arc<Notify>> {
        self.inner.rescue_wakeup()
    }
    async fn dead_nodes(&self, params: DeadNodesParams) -> Result<Vec<String>> {
        self.inner.dead_nodes(params).await
    }
    async fn is_leader(&self) -> Result<bool> {
        self.inner.is_leader().await
    }
    fn rescue_interval(&self) -> Option<Duration> {
        self.inner.rescue_interval()
    }
    async fn token_create(&self, p: mend::auth::CreateTokenParams) -> Result<bool> {
        self.inner.token_create(p).await
    }
    async fn token_list(&self) -> Result<Vec<mend::auth::ApiToken>> {
        self.inner.token_list().await
    }
    async fn token_revoke(&self, p: mend::auth::RevokeTokenParams) -> Result<bool> {
        self.inner.token_revoke(p).await
    }
    async fn audit_add(&self, entries: Vec<mend::audit::NewAuditEntry>) -> Result<()> {
        self.inner.audit_add(entries).await
    }
    async fn audit_list(
        &self,
        p: mend::audit::AuditParams,
    ) -> Result<Vec<mend::audit::AuditEntry>> {
        self.inner.audit_list(p).await
    }
    async fn audit_prune(&self, p: mend::audit::PruneAuditParams) -> Result<u64> {
        self.inner.audit_prune(p).await
    }
    async fn args_keys(&self) -> Result<Vec<mend::secrets::ArgsKeyCheck>> {
        self.inner.args_keys().await
    }
    async fn args_key_add(&self, k: mend::secrets::ArgsKeyCheck) -> Result<()> {
        self.inner.args_key_add(k).await
    }

    async fn rollout_start(
        &self,
        r: mend::rollout::Rollout,
    ) -> Result<Option<mend::rollout::Rollout>> {
        self.inner.rollout_start(r).await
    }
    async fn rollout_list(&self) -> Result<Vec<mend::rollout::Rollout>> {
        self.inner.rollout_list().await
    }
    async fn rollout_get(&self, id: uuid::Uuid) -> Result<Option<mend::rollout::Rollout>> {
        self.inner.rollout_get(id).await
    }
    async fn rollout_save(
        &self,
        r: mend::rollout::Rollout,
    ) -> Result<Option<mend::rollout::Rollout>> {
        self.inner.rollout_save(r).await
    }
    async fn rollout_routes(&self) -> Result<Vec<mend::rollout::RouteState>> {
        self.inner.rollout_routes().await
    }
    async fn add_version_samples(&self, s: Vec<mend::store::VersionSample>) -> Result<()> {
        self.inner.add_version_samples(s).await
    }
    async fn version_samples(
        &self,
        p: mend::store::VersionSamplesParams,
    ) -> Result<Vec<mend::store::VersionSample>> {
        self.inner.version_samples(p).await
    }
    async fn rollout_heal(&self, p: mend::store::HealParams) -> Result<Vec<uuid::Uuid>> {
        self.inner.rollout_heal(p).await
    }
}
