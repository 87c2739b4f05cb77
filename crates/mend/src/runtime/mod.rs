//! The worker runtime: claims jobs, runs them with panic isolation, timeouts and cleanups,
//! records outcomes in batches, keeps leases alive, rescues dead nodes' jobs, and shuts down
//! gracefully.
//!
//! Pieces, one file each: the fetcher (one per queue, claims as many jobs as there are free
//! slots), the executor (one task per attempt), the completer (batches outcomes into few
//! transactions), the heartbeater (leases, cancel requests, node liveness, rescue). Shutdown is
//! a token tree plus a task tracker, with "drain" then "cancel" as two explicit steps.

mod completer;
mod executor;
mod fetcher;
mod heartbeat;
pub mod histogram;
mod live;
mod remote;
mod signal;
pub mod versions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use live::LiveAttempt;
pub use signal::{wait_for_signal, Signals};

use crate::cleanup::{CleanupReport, DEFAULT_CLEANUP_TIMEOUT};
use crate::handler::Registry;
use crate::job::{AttemptError, DEFAULT_QUARANTINE_AFTER_LOST};
use crate::retry::{ExponentialBackoff, RetryPolicy};
use crate::settle::Stop;
use crate::store::{NodeInfo, Outcome, OutcomeKind, Store, StoreError};

/// How long a claimed job's lease lasts without a heartbeat. A worker that stops heartbeating
/// for this long is taken as hung and its jobs are rescued; thirty seconds rides out a long GC
/// pause or a slow disk without letting a truly hung job sit for minutes.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(30);

/// How often leases are extended and cancel requests from other processes are picked up. One
/// second bounds how long a cancel from another process takes to reach a running job.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// How often an idle fetcher looks for work when no wake-up arrives (jobs enqueued by another
/// process on SQLite, scheduled jobs falling due). In-process enqueues wake it at once.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often dead nodes are looked for after start-up (start-up always rescues first).
pub const DEFAULT_RESCUE_INTERVAL: Duration = Duration::from_secs(5);

/// A node on another host (whose process cannot be checked) is dead after this long without a
/// heartbeat: many heartbeats missed, not one slow one.
pub const DEFAULT_NODE_STALE_AFTER: Duration = Duration::from_secs(30);

/// How long shutdown waits, beyond the cleanup timeout, for cancelled attempts to wind down.
const FINAL_GRACE: Duration = Duration::from_secs(5);

/// Attempt timeout when neither the job nor its handler sets one: long enough for real batch
/// work, short enough that a stuck job does not hold a slot forever.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Highest concurrency per queue (a semaphore cannot hold more permits than this, and no
/// machine runs more attempts at once).
pub const MAX_CONCURRENCY: usize = 1 << 20;

/// Most jobs claimed in one statement; bounds one transaction's size.
pub const MAX_CLAIM_BATCH: usize = 1000;

/// How a worker is tuned. Every field has a named default above.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to work and their concurrency.
    pub queues: Vec<(String, usize)>,
    /// See [`DEFAULT_LEASE_DURATION`].
    pub lease_duration: Duration,
    /// See [`DEFAULT_HEARTBEAT_INTERVAL`].
    pub heartbeat_interval: Duration,
    /// See [`DEFAULT_POLL_INTERVAL`].
    pub poll_interval: Duration,
    /// See [`DEFAULT_RESCUE_INTERVAL`].
    pub rescue_interval: Duration,
    /// See [`DEFAULT_NODE_STALE_AFTER`].
    pub node_stale_after: Duration,
    /// See [`DEFAULT_ATTEMPT_TIMEOUT`].
    pub default_timeout: Duration,
    /// See [`DEFAULT_CLEANUP_TIMEOUT`].
    pub cleanup_timeout: Duration,
    /// See [`DEFAULT_QUARANTINE_AFTER_LOST`].
    pub quarantine_after_lost: u32,
    /// Used for kinds whose handler has no policy of its own.
    pub retry_policy: Arc<dyn RetryPolicy>,
    /// Finished jobs older than this are deleted (`None`: keep them forever). See
    /// [`crate::maintenance::pruner::DEFAULT_RETENTION`].
    pub retention: Option<Duration>,
    /// Per-minute history and events older than this are deleted (`None`: keep them). See
    /// [`crate::stats::DEFAULT_HISTORY_RETENTION`].
    pub history_retention: Option<Duration>,
    /// Audit rows older than this are deleted (`None`: keep them). See
    /// [`crate::audit::DEFAULT_AUDIT_RETENTION`].
    pub audit_retention: Option<Duration>,
    /// See [`crate::stats::DEFAULT_FLUSH_INTERVAL`].
    pub history_flush_interval: Duration,
    /// While a queue is busy, also claim what runs during two claims' round trips (at most
    /// four jobs per slot), so short jobs on few slots do not wait a round trip each time the
    /// slots empty. Those jobs wait leased to this node for a slot; shutdown, or a wait past a
    /// second, releases them unstarted without using an attempt, and a `kill -9` loses them
    /// like running ones. Nothing is claimed ahead while a rollout routes the node's claims.
    /// On by default.
    pub claim_ahead: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            queues: Vec::new(),
            lease_duration: DEFAULT_LEASE_DURATION,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            poll_interval: DEFAULT_POLL_INTERVAL,
            rescue_interval: DEFAULT_RESCUE_INTERVAL,
            node_stale_after: DEFAULT_NODE_STALE_AFTER,
            default_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            cleanup_timeout: DEFAULT_CLEANUP_TIMEOUT,
            quarantine_after_lost: DEFAULT_QUARANTINE_AFTER_LOST,
            retry_policy: Arc::new(ExponentialBackoff::default()),
            retention: Some(crate::maintenance::pruner::DEFAULT_RETENTION),
            history_retention: Some(crate::stats::DEFAULT_HISTORY_RETENTION),
            audit_retention: Some(crate::audit::DEFAULT_AUDIT_RETENTION),
            history_flush_interval: crate::stats::DEFAULT_FLUSH_INTERVAL,
            claim_ahead: true,
        }
    }
}

/// What happened to one attempt, published after its outcome was written (or refused).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// The attempt.
    pub attempt: i32,
    /// How the attempt ended.
    pub outcome: EventOutcome,
    /// The error recorded for the attempt, if it failed.
    pub error: Option<AttemptError>,
    /// What each in-memory cleanup did, in the order they ran.
    pub cleanups: Vec<CleanupReport>,
    /// The store refused the write: the worker had lost the job.
    pub fenced: bool,
}

/// The short form of an attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// Completed.
    Completed,
    /// Failed; will retry.
    Retried,
    /// Failed for good.
    Discarded,
    /// Cancelled on request.
    Cancelled,
    /// Snoozed.
    Snoozed,
    /// Released at shutdown.
    Released,
}

impl From<&OutcomeKind> for EventOutcome {
    fn from(kind: &OutcomeKind) -> Self {
        match kind {
            OutcomeKind::Completed { .. } => EventOutcome::Completed,
            OutcomeKind::Retry { .. } => EventOutcome::Retried,
            OutcomeKind::Discard { .. } => EventOutcome::Discarded,
            OutcomeKind::Cancelled { .. } => EventOutcome::Cancelled,
            OutcomeKind::Snooze { .. } => EventOutcome::Snoozed,
            OutcomeKind::Release => EventOutcome::Released,
        }
    }
}

/// Counters since the worker started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Attempts started.
    pub started: AtomicU64,
    /// Jobs completed.
    pub completed: AtomicU64,
    /// Attempts that failed and will retry.
    pub retried: AtomicU64,
    /// Jobs discarded.
    pub discarded: AtomicU64,
    /// Jobs cancelled while running.
    pub cancelled: AtomicU64,
    /// Attempts snoozed.
    pub snoozed: AtomicU64,
    /// Jobs released without using an attempt: at shutdown, and jobs claimed ahead that went
    /// back unstarted (see [`WorkerConfig::claim_ahead`]).
    pub released: AtomicU64,
    /// Outcomes refused by the fence.
    pub fenced: AtomicU64,
    /// Handler panics caught.
    pub panics: AtomicU64,
    /// Attempts that timed out.
    pub timeouts: AtomicU64,
    /// Jobs rescued from dead nodes or expired leases.
    pub rescued: AtomicU64,
    /// Attempts whose handler returned an error.
    pub errors: AtomicU64,
    /// In-memory cleanups that finished.
    pub cleanups_ok: AtomicU64,
    /// In-memory cleanups that panicked.
    pub cleanups_panicked: AtomicU64,
    /// In-memory cleanups abandoned at their timeout.
    pub cleanups_timed_out: AtomicU64,
    /// From when a job was due (enqueued, or its run_at) to its attempt starting.
    pub enqueue_to_start: histogram::Histogram,
    /// How long attempts ran (handler only, cleanups excluded).
    pub run_time: histogram::Histogram,
}

impl Stats {
    /// Read a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// An attempt's stop request lives in an atomic, so the heartbeater, a cancel and a shutdown
/// can set it while the executor reads it: 0 is none, else a [`Stop`]. The first one wins.
fn request_stop(cell: &AtomicU8, stop: Stop) {
    let code = match stop {
        Stop::Cancel => 1,
        Stop::Shutdown => 2,
        Stop::LeaseLost => 3,
    };
    let _ = cell.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
}

/// The stop requested of an attempt, if any (see [`request_stop`]).
fn stop_of(cell: &AtomicU8) -> Option<Stop> {
    match cell.load(Ordering::Acquire) {
        1 => Some(Stop::Cancel),
        2 => Some(Stop::Shutdown),
        3 => Some(Stop::LeaseLost),
        _ => None,
    }
}

struct InFlight {
    attempt: i32,
    /// What it is doing right now (`/debug/attempts`).
    live: Arc<live::Live>,
    token: CancellationToken,
    reason: Arc<AtomicU8>,
    /// The attempt has ended and its outcome is waiting for the completer; it keeps its lease
    /// (so heartbeats go on) but there is nothing left to stop.
    ended: Arc<AtomicBool>,
}

impl InFlight {
    fn stop(&self, reason: Stop) -> bool {
        if self.ended.load(Ordering::Acquire) {
            return false;
        }
        request_stop(&self.reason, reason);
        self.token.cancel();
        true
    }
}

struct Pending {
    outcome: Outcome,
    kind: String,
    queue: String,
    /// The handler version that ran the attempt, when a route recorded one.
    version: Option<String>,
    /// A place in the completer's backlog, held until the outcome is written (see
    /// [`OUTCOME_BACKLOG`]); `None` when the backlog was already full (an outcome is never held
    /// back for want of one).
    _backlog: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Writes to commit with a completion (written alone, not in a batch).
    effect: Option<crate::store::TxEffect>,
    /// The attempt's facts, to settle it again if its completion's own writes fail.
    facts: crate::settle::Attempt,
    /// How long it waited and ran, for the dashboard's history.
    timing: Timing,
}

/// How long an attempt waited to start (unknown when the clock went back) and ran.
#[derive(Debug, Clone, Copy)]
struct Timing {
    wait: Option<Duration>,
    run: Duration,
}

/// Most outcomes waiting to be written before fetchers stop claiming. A slot is freed as soon
/// as its attempt ends (the next job starts while the outcome is written in a batch), so a
/// store whose writes fall behind its claims (PostgreSQL claims on their own connections)
/// would otherwise pile up claimed jobs whose outcomes wait in memory, and heartbeats that
/// grow with them.
pub(crate) const OUTCOME_BACKLOG: usize = 2 * 1000;

pub(crate) struct Shared {
    /// Places in the completer's backlog; fetchers wait for one before claiming.
    backlog: Arc<tokio::sync::Semaphore>,
    store: Arc<dyn Store>,
    registry: Registry,
    config: WorkerConfig,
    node: NodeInfo,
    /// Keyed by (job, attempt): a rescued job may be claimed again here while its stale
    /// attempt is still winding down, and the two must not be confused.
    inflight: Mutex<HashMap<(Uuid, i32), InFlight>>,
    outcomes: mpsc::UnboundedSender<Pending>,
    stats: Stats,
    events: broadcast::Sender<JobEvent>,
    tracker: TaskTracker,
    ready: AtomicBool,
    /// Parent of every attempt's token: cancelled when a shutdown passes its drain deadline.
    hard_stop: CancellationToken,
    /// Per-minute history, flushed to the store off the hot path (see [`crate::stats`]).
    history: Arc<crate::stats::Recorder>,
    /// What this node serves per kind, for routing (see [`crate::rollout`]).
    served: crate::rollout::Served,
    /// How claims are routed now: refreshed from the stored rollouts at every heartbeat, and
    /// sooner when the store or this node's guard says routing changed.
    plan: std::sync::RwLock<Arc<crate::rollout::Plan>>,
    /// Held from a read of the routes to its plan's store, so a read that began earlier can
    /// never put its older plan in place of a newer one.
    replanning: tokio::sync::Mutex<()>,
    /// Outcomes of attempts of kinds under an active rollout, for the guard.
    samples: Arc<crate::rollout::SampleRecorder>,
    /// What remote workers claiming through this node serve, reported as this node's own.
    remote: remote::RemoteServed,
    /// Attempts per kind and handler version, for `/metrics`.
    versions: versions::VersionStats,
    /// Jobs claimed ahead that shutdown released before they started.
    released_unstarted: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// The claim plan in force.
    fn plan(&self) -> Arc<crate::rollout::Plan> {
        self.plan.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the stored rollouts and replans; a failure keeps the plan in force.
    async fn refresh_plan(&self) {
        let _one_at_a_time = self.replanning.lock().await;
        match self.store.rollout_routes().await {
            Ok(states) => {
                let plan = Arc::new(crate::rollout::plan(&states, &self.served));
                let mut slot = self.plan.write().unwrap_or_else(|p| p.into_inner());
                if **slot != *plan {
                    tracing::info!(routes = ?plan.routes, "routing of handler versions changed");
                    *slot = plan;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading rollouts failed; routing stays as it was")
            }
        }
    }

    /// Re-reads the stored routes in a task of its own, now rather than at the next heartbeat.
    fn replan_soon(self: &Arc<Self>) {
        let shared = self.clone();
        tokio::spawn(async move { shared.refresh_plan().await });
    }

    /// Attempts running now: those in flight, less the jobs claimed ahead that wait for a slot.
    fn running(&self) -> usize {
        self.inflight()
            .values()
            .filter(|f| !f.live.is_waiting())
            .count()
    }

    fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<(Uuid, i32), InFlight>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every running attempt of job `id` for `reason`; returns whether one was running.
    pub(crate) fn stop_job(&self, id: Uuid, reason: Stop) -> bool {
        let guard = self.inflight();
        let mut stopped = false;
        for ((_, _), f) in guard.iter().filter(|((job, _), _)| *job == id) {
            stopped |= f.stop(reason);
        }
        stopped
    }

    /// Stops one attempt; returns whether it was running.
    fn stop_attempt(&self, id: Uuid, attempt: i32, reason: Stop) -> bool {
        self.inflight()
            .get(&(id, attempt))
            .is_some_and(|f| f.stop(reason))
    }
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    store: Arc<dyn Store>,
    registry: Registry,
    config: WorkerConfig,
    limits: Vec<crate::limits::Limit>,
    /// Periodic jobs declared in code, stored at start.
    periodic: Vec<crate::cron::Periodic>,
}

impl WorkerBuilder {
    /// Use these handlers.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Work `queue` with up to `concurrency` attempts at once.
    pub fn queue(mut self, queue: impl Into<String>, concurrency: usize) -> Self {
        self.config
            .queues
            .push((queue.into(), concurrency.clamp(1, MAX_CONCURRENCY)));
        self
    }

    /// Replace the whole configuration (queues included).
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Set this limit when the worker starts (create it, or replace the stored one of the same
    /// name; an unchanged limit keeps its rate buckets). See [`crate::limits`]. The store
    /// enforces it for every node, whether or not they declare it.
    pub fn limit(mut self, limit: crate::limits::Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// Adjust the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut WorkerConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Declare a periodic job: stored (or its declaration updated) when the worker starts;
    /// the leader inserts a job for each of its slots. See [`crate::cron`].
    pub fn periodic(mut self, periodic: crate::cron::Periodic) -> Self {
        self.periodic.push(periodic);
        self
    }

    /// The worker.
    pub fn build(mut self) -> Worker {
        if self.config.queues.is_empty() {
            self.config
                .queues
                .push((crate::job::DEFAULT_QUEUE.to_owned(), 10));
        }
        Worker {
            store: self.store,
            registry: self.registry,
            config: self.config,
            limits: self.limits,
            periodic: self.periodic,
        }
    }
}

/// Runs jobs from a store. Start it with [`Worker::start`].
pub struct Worker {
    store: Arc<dyn Store>,
    registry: Registry,
    config: WorkerConfig,
    limits: Vec<crate::limits::Limit>,
    periodic: Vec<crate::cron::Periodic>,
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The store failed during registration or start-up rescue.
    #[error("worker start-up failed: {0}")]
    Store(#[from] StoreError),
    /// No handlers were registered.
    #[error("no handlers registered: register at least one kind before starting the worker")]
    NoHandlers,
    /// A periodic job's declaration was refused, or could not be stored.
    #[error("periodic jobs: {0}")]
    Periodic(#[from] crate::maintenance::scheduler::DeclareError),
}

impl Worker {
    /// A builder for a worker on `store`.
    pub fn builder(store: Arc<dyn Store>) -> WorkerBuilder {
        WorkerBuilder {
            store,
            registry: Registry::new(),
            config: WorkerConfig::default(),
            limits: Vec::new(),
            periodic: Vec::new(),
        }
    }

    /// Register this node, rescue jobs left running by dead processes, then start claiming.
    pub async fn start(self) -> Result<WorkerHandle, StartError> {
        if self.registry.kinds().is_empty() {
            return Err(StartError::NoHandlers);
        }
        let now = Utc::now();
        for limit in &self.limits {
            self.store
                .set_limit(crate::store::SetLimitParams {
                    limit: limit.clone(),
                    now,
                })
                .await?;
        }
        if !self.periodic.is_empty() {
            crate::maintenance::scheduler::declare(self.store.as_ref(), &self.periodic, now)
                .await?;
        }
        let mut node = crate::node::this_node(now);
        // Recorded so `mend doctor` can tell which kinds no live node serves.
        node.kinds = self.registry.kinds();
        node.versions = self.registry.versions();
        let served = self.registry.served();
        // Routing is known before the first claim: a canary-only node must not take stable
        // jobs in its first second.
        let states = self.store.rollout_routes().await?;
        let plan = Arc::new(crate::rollout::plan(&states, &served));
        node.queues = self
            .config
            .queues
            .iter()
            .map(|(name, c)| crate::store::NodeQueue {
                name: name.clone(),
                concurrency: u32::try_from(*c).unwrap_or(u32::MAX),
            })
            .collect();
        self.store.register_node(node.clone()).await?;
        crate::maintenance::history::node_joined(self.store.as_ref(), &node).await;
        let history = crate::stats::Recorder::new();
        let rescued = crate::maintenance::rescuer::rescue_once(
            self.store.as_ref(),
            &node.id,
            now,
            self.config.node_stale_after,
            self.config.quarantine_after_lost,
            Some(&*history),
        )
        .await?;

        // One token tree: the worker's root, with a child per stage that shutdown stops in
        // order (claims; attempts past the drain deadline; the completer; heartbeats and
        // maintenance).
        let root = CancellationToken::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            store: self.store,
            registry: self.registry,
            config: self.config,
            node,
            inflight: Mutex::new(HashMap::new()),
            outcomes: tx,
            backlog: Arc::new(tokio::sync::Semaphore::new(OUTCOME_BACKLOG)),
            stats: Stats::default(),
            events,
            tracker: TaskTracker::new(),
            ready: AtomicBool::new(true),
            hard_stop: root.child_token(),
            history,
            served,
            plan: std::sync::RwLock::new(plan),
            replanning: tokio::sync::Mutex::new(()),
            samples: Arc::new(crate::rollout::SampleRecorder::default()),
            remote: remote::RemoteServed::default(),
            versions: versions::VersionStats::default(),
            released_unstarted: std::sync::atomic::AtomicUsize::new(0),
        });
        shared
            .stats
            .rescued
            .fetch_add(rescued.len() as u64, Ordering::Relaxed);
        tracing::info!(node = %shared.node.id, queues = ?shared.config.queues, kinds = ?shared.registry.kinds(), rescued = rescued.len(), "worker started");

        let fetch_stop = root.child_token();
        let completer_stop = root.child_token();
        let heartbeat_stop = root.child_token();
        let fetchers = shared
            .config
            .queues
            .iter()
            .map(|(queue, concurrency)| {
                tokio::spawn(fetcher::run(
                    shared.clone(),
                    queue.clone(),
                    *concurrency,
                    fetch_stop.clone(),
                ))
            })
            .collect();
        let completer = tokio::spawn(completer::run(shared.clone(), rx, completer_stop.clone()));
        let heartbeat = tokio::spawn(heartbeat::run(shared.clone(), heartbeat_stop.clone()));
        // Maintenance runs in tasks of its own (a long pass must never delay heartbeats, or
        // leases would lapse) that shutdown waits for.
        let maintenance = TaskTracker::new();
        let every = match shared.store.rescue_interval() {
            Some(hint) => hint.min(shared.config.rescue_interval),
            None => shared.config.rescue_interval,
        };
        maintenance.spawn(crate::maintenance::rescuer::run(
            shared.store.clone(),
            shared.node.id.clone(),
            every,
            shared.config.node_stale_after,
            shared.config.quarantine_after_lost,
            shared.history.clone(),
            {
                let shared = shared.clone();
                move |rescued: &[crate::store::Rescued]| {
                    shared
                        .stats
                        .rescued
                        .fetch_add(rescued.len() as u64, Ordering::Relaxed);
                    // A lost attempt of a routed kind counts against the version that ran it.
                    for r in rescued {
                        if let Some(v) = &r.job.version {
                            shared
                                .versions
                                .record(&r.job.kind, v, crate::stats::Ended::Lost, None);
                        }
                    }
                }
            },
            heartbeat_stop.clone(),
        ));
        if shared.config.retention.is_some()
            || shared.config.history_retention.is_some()
            || shared.config.audit_retention.is_some()
        {
            maintenance.spawn(crate::maintenance::pruner::run(
                shared.store.clone(),
                shared.config.retention,
                shared.config.history_retention,
                shared.config.audit_retention,
                heartbeat_stop.clone(),
            ));
        }
        maintenance.spawn(crate::stats::run_flusher(
            shared.history.clone(),
            shared.store.clone(),
            shared.config.history_flush_interval,
            heartbeat_stop.clone(),
        ));
        maintenance.spawn(crate::maintenance::scheduler::run(
            shared.store.clone(),
            heartbeat_stop.clone(),
        ));
        maintenance.spawn(crate::rollout::run_sample_flusher(
            shared.samples.clone(),
            shared.store.clone(),
            heartbeat_stop.clone(),
        ));
        // A decision of this node's guard reaches its own claims at once; other nodes' as
        // soon as the store tells them (below), or else at their next heartbeat.
        let replan_for = Arc::downgrade(&shared);
        let replan: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(shared) = replan_for.upgrade() {
                shared.replan_soon();
            }
        });
        maintenance.spawn(crate::maintenance::rollouts::run(
            shared.store.clone(),
            heartbeat_stop.clone(),
            replan,
        ));
        if let Some(changed) = shared.store.routes_wakeup() {
            maintenance.spawn(follow_routes(
                shared.clone(),
                changed,
                heartbeat_stop.clone(),
            ));
        }
        maintenance.close();
        Ok(WorkerHandle {
            shared,
            fetch_stop,
            completer_stop,
            heartbeat_stop,
            cut_drain: root.child_token(),
            tasks: Arc::new(tokio::sync::Mutex::new(Some(Tasks {
                fetchers,
                completer,
                heartbeat,
                maintenance,
            }))),
        })
    }
}

/// Replans each time the store says the stored routing changed, until `stop`: a cut-off
/// reaches this node's claims within a notification's round trip instead of a heartbeat.
async fn follow_routes(
    shared: Arc<Shared>,
    changed: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    // Listening before the first read: a change made after the worker read its first plan
    // (before this task ran) is caught by this read, a later one by the wake-up. Each wake-up
    // arms the next before it reads, so none falls between two.
    let mut heard = Box::pin(changed.notified());
    heard.as_mut().enable();
    shared.replan_soon();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = &mut heard => {}
        }
        heard = Box::pin(changed.notified());
        heard.as_mut().enable();
        shared.replan_soon();
    }
}

struct Tasks {
    fetchers: Vec<JoinHandle<()>>,
    completer: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    /// The rescuer and the pruner.
    maintenance: TaskTracker,
}

/// Controls a running worker. Cheap to clone.
#[derive(Clone)]
pub struct WorkerHandle {
    shared: Arc<Shared>,
    fetch_stop: CancellationToken,
    completer_stop: CancellationToken,
    heartbeat_stop: CancellationToken,
    cut_drain: CancellationToken,
    tasks: Arc<tokio::sync::Mutex<Option<Tasks>>>,
}

/// What a shutdown did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Attempts that finished on their own during the drain.
    pub drained: usize,
    /// Attempts cancelled at the deadline and released back to `available`.
    pub released: usize,
}

impl WorkerHandle {
    /// This worker's node id (the lease owner of its jobs).
    pub fn node_id(&self) -> &str {
        &self.shared.node.id
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Records a remote worker's attempt of `kind` run by `version`: in the per-version
    /// counts ([`WorkerHandle::version_stats`]) and, while the kind is under an active
    /// rollout, for the rollout guard (as for this node's own attempts).
    pub fn record_version_sample(
        &self,
        kind: &str,
        version: &str,
        ended: crate::stats::Ended,
        run: Option<Duration>,
    ) {
        self.shared.versions.record(kind, version, ended, run);
        if self.shared.plan().sampled.iter().any(|k| k == kind) {
            self.shared.samples.record(kind, version, ended, run);
        }
    }

    /// Attempts per kind and the handler version that ran them, since start: this node's own
    /// and those its remote workers reported (kinds that were never routed are not counted).
    pub fn version_stats(&self) -> &versions::VersionStats {
        &self.shared.versions
    }

    /// Records that a remote worker claiming through this node (over HTTP) serves these kinds
    /// and versions (`None`: its unversioned handler). This node reports them as its own kinds
    /// and versions from its next heartbeat until a minute after the last claim that named
    /// them, so a rollout of a version only remote workers run can be started, and `mend
    /// doctor` counts their kinds as served.
    pub fn note_remote_served(&self, served: &crate::rollout::Served) {
        self.shared.remote.note(served, std::time::Instant::now());
    }

    /// The dashboard history's accumulator: whatever else ends attempts in this process (the
    /// remote-worker routes) records into it, and this worker flushes it.
    pub fn history(&self) -> Arc<crate::stats::Recorder> {
        self.shared.history.clone()
    }

    /// How long a node may go without a heartbeat before the rescuer takes it for dead.
    pub fn node_stale_after(&self) -> Duration {
        self.shared.config.node_stale_after
    }

    /// Re-reads the stored rollout routes now instead of at the next heartbeat: for a process
    /// that has just changed a rollout (the API does), so its own claims obey at once.
    pub fn replan(&self) {
        self.shared.replan_soon();
    }

    /// Attempts running right now.
    pub fn in_flight(&self) -> usize {
        self.shared.running()
    }

    /// What each attempt on this node is doing right now, longest-running first: in its
    /// handler, in which cleanup and for how long, and whether a cancel or a shutdown has
    /// reached it.
    pub fn attempts(&self) -> Vec<LiveAttempt> {
        let shutting_down = !self.is_ready();
        let mut out: Vec<LiveAttempt> = self
            .shared
            .inflight()
            .values()
            .map(|f| f.live.view(stop_of(&f.reason), shutting_down))
            .collect();
        out.sort_by_key(|a| std::cmp::Reverse(a.running_ms));
        out
    }

    /// False once shutdown has begun (for readiness probes).
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Subscribe to attempt outcomes.
    pub fn events(&self) -> broadcast::Receiver<JobEvent> {
        self.shared.events.subscribe()
    }

    /// A [`crate::Client`] on this worker's store that also stops this worker's attempts of a
    /// job it cancels at once.
    pub fn client(&self) -> crate::Client {
        crate::Client::with_worker(self.shared.store.clone(), Arc::downgrade(&self.shared))
    }

    /// Cancel a job; the same as [`crate::Client::cancel`] on [`WorkerHandle::client`].
    pub async fn cancel(&self, id: Uuid) -> Result<Option<crate::JobRow>, StoreError> {
        self.client().cancel_job(id).await
    }

    /// Cut a running drain short: attempts still running are cancelled and released now.
    pub fn cut_drain(&self) {
        self.cut_drain.cancel();
    }

    /// Stop claiming, let running attempts finish for up to `drain`, then cancel the rest
    /// (their cleanups run and they go back to `available` without using an attempt), flush
    /// outcomes and deregister. Calling it again waits for nothing and returns an empty report.
    pub async fn shutdown(&self, drain: Duration) -> ShutdownReport {
        let Some(tasks) = self.tasks.lock().await.take() else {
            return ShutdownReport::default();
        };
        let shared = &self.shared;
        shared.ready.store(false, Ordering::Release);
        self.fetch_stop.cancel();
        // Shown at once as draining (the heartbeat would say so within a second anyway).
        let in_flight = u32::try_from(shared.running()).unwrap_or(u32::MAX);
        let _ = shared
            .store
            .heartbeat_node(crate::store::HeartbeatNodeParams {
                id: shared.node.id.clone(),
                now: Utc::now(),
                in_flight,
                draining: true,
            })
            .await;
        for f in tasks.fetchers {
            let _ = f.await;
        }
        shared.tracker.close();
        // The attempts this shutdown drains: those in flight when it began (one may finish
        // while the heartbeat and the fetchers are awaited), or more if a fetcher finished a
        // claim meanwhile.
        let running = usize::try_from(in_flight)
            .unwrap_or(usize::MAX)
            .max(shared.running());
        tracing::info!(running, ?drain, "shutdown: draining");
        let drained_in_time = tokio::select! {
            _ = shared.tracker.wait() => true,
            _ = tokio::time::sleep(drain) => false,
            _ = self.cut_drain.cancelled() => false,
        };
        let mut released = 0;
        if !drained_in_time {
            released = shared
                .inflight()
                .values()
                .filter(|f| !f.ended.load(Ordering::Acquire))
                .count();
            // Through the token tree, so attempts spawned but not yet registered stop too.
            shared.hard_stop.cancel();
            tracing::warn!(
                released,
                "shutdown: drain deadline passed; cancelling the rest and releasing them"
            );
            // Cleanups are bounded by their own timeout; a handler that blocks its thread
            // cannot be stopped at all, so bound the wait and leave such a job to the rescuer.
            let bound = shared.config.cleanup_timeout + FINAL_GRACE;
            if tokio::time::timeout(bound, shared.tracker.wait())
                .await
                .is_err()
            {
                tracing::error!(?bound, "shutdown: attempts still running after cancellation (a handler blocking its thread?); leaving them to be rescued as lost");
            }
        }
        // Outcomes first, while heartbeats still keep the leases alive; then the heartbeat.
        self.completer_stop.cancel();
        let _ = tasks.completer.await;
        self.heartbeat_stop.cancel();
        let _ = tasks.heartbeat.await;
        // A pass in flight finishes its store call; bounded like the attempts above, so a
        // store that hangs cannot hold the process.
        if tokio::time::timeout(FINAL_GRACE, tasks.maintenance.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: a maintenance pass is still running; leaving it");
        }
        // What the last outcomes added (the flusher stopped with the maintenance).
        if let Err(e) = crate::stats::flush_once(&shared.history, shared.store.as_ref()).await {
            tracing::warn!(error = %e, "shutdown: writing the last dashboard history failed; it is lost");
        }
        // Jobs claimed ahead and released unstarted were never among `running`: released,
        // not drained.
        let drained = running.saturating_sub(released);
        let released = released + shared.released_unstarted.load(Ordering::Acquire);
        crate::maintenance::history::node_left(
            shared.store.as_ref(),
            &shared.node.id,
            serde_json::json!({"reason": "shutdown", "drained": drained, "released": released}),
        )
        .await;
        if let Err(e) = shared
            .store
            .deregister_nodes(vec![shared.node.id.clone()])
            .await
        {
            tracing::warn!(error = %e, "could not deregister node; it will be cleaned up as dead");
        }
        tracing::info!("shutdown complete");
        ShutdownReport { drained, released }
    }

    /// Run until SIGTERM or SIGINT, then shut down with `drain`. A second signal cuts the
    /// drain short (running attempts are cancelled and released at once); a third exits the
    /// process at once with status 130 (leases then lapse and the jobs are rescued).
    pub async fn run_until_signal(&self, drain: Duration) -> ShutdownReport {
        self.run_until(Signals::listen(), drain).await
    }

    /// [`WorkerHandle::run_until_signal`] with listeners made earlier: create them before the
    /// process reports itself ready, so a signal sent right after cannot kill it outright.
    pub async fn run_until(&self, signals: Signals, drain: Duration) -> ShutdownReport {
        self.run_until_with(signals, drain, Duration::ZERO, || {}, |_| async {})
            .await
    }

    /// The whole signal-driven stop of a process that also takes work in another way (an
    /// HTTP server): on the first signal readiness goes false ([`WorkerHandle::is_ready`]);
    /// after `grace` (so load balancers stop sending work first) `stop_intake` is called, then
    /// the worker shuts down with `drain`, then `finish` runs (closing connections, flushing
    /// traces) with the shutdown's report. Until `finish` returns, a second signal skips what
    /// is left of the grace and cuts the drain short, and a third exits the process at once
    /// with status 130.
    pub async fn run_until_with<F: std::future::Future<Output = ()>>(
        &self,
        mut signals: Signals,
        drain: Duration,
        grace: Duration,
        stop_intake: impl FnOnce(),
        finish: impl FnOnce(ShutdownReport) -> F,
    ) -> ShutdownReport {
        signals.recv().await;
        tracing::info!(
            "signal received: readiness off, draining (send another signal to stop at once)"
        );
        self.shared.ready.store(false, Ordering::Release);
        let me = self.clone();
        let second = tokio::spawn(async move {
            signals.recv().await;
            tracing::warn!("second signal: cancelling in-flight jobs and releasing them now (a third exits at once)");
            me.cut_drain();
            signals.recv().await;
            tracing::error!("third signal: exiting now");
            std::process::exit(130);
        });
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = self.cut_drain.cancelled() => {}
        }
        stop_intake();
        let report = self.shutdown(drain).await;
        finish(report.clone()).await;
        second.abort();
        report
    }
}
