//! The storage contract: one small, batch-first trait with a params struct per operation.
//!
//! Every backend (SQLite, PostgreSQL) implements [`Store`] and is checked by the same
//! conformance suite in `mend-test`. Backend differences stay behind this trait: the runtime
//! never learns which database it talks to. Every mutation of a running job is fenced by
//! (job id, attempt, lease owner), so a worker that lost its lease cannot write any more.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::job::{AttemptError, InvalidJob, JobRow, JobState, NewJob};
pub use crate::stats::{
    Event, EventsParams, PruneHistoryParams, StatsAnswer, StatsDelta, StatsParams,
};

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The driver's own error behind a [`StoreError`], kept as its `source()` so a caller (or a
/// log with `{:#}`-style chains) can walk down to what the database said.
pub type DriverError = Arc<dyn std::error::Error + Send + Sync>;

/// What can go wrong talking to a store. Each variant says what a person can do about it, in
/// words true of every backend; a backend adds its own advice to `detail`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database is not a mend database or is damaged.
    #[error("the database at {path} is corrupt or is not a mend database ({detail}); restore it from a backup or point mend at another database")]
    Corrupt {
        /// Where the database is (without secrets).
        path: String,
        /// What went wrong.
        detail: String,
        /// The driver's error.
        #[source]
        source: Option<DriverError>,
    },
    /// The database cannot be written.
    #[error("the database at {path} is read-only ({detail}); check that mend may write to it")]
    ReadOnly {
        /// Where the database is (without secrets).
        path: String,
        /// What went wrong.
        detail: String,
        /// The driver's error.
        #[source]
        source: Option<DriverError>,
    },
    /// Another process holds a lock the write needs, for longer than the store waits.
    #[error("the database is locked by another process for longer than mend waits; is a long transaction or a backup holding it? ({detail})")]
    Locked {
        /// What went wrong.
        detail: String,
        /// The driver's error.
        #[source]
        source: Option<DriverError>,
    },
    /// The database cannot be opened or reached.
    #[error("cannot open the database {target}: {detail}")]
    Unavailable {
        /// The file or URL (without secrets).
        target: String,
        /// What went wrong.
        detail: String,
        /// The driver's error.
        #[source]
        source: Option<DriverError>,
    },
    /// Reading or writing the disk failed at the operating-system level.
    #[error("the database could not be read or written ({detail}); check free disk space and the disk's health")]
    Io {
        /// What went wrong.
        detail: String,
        /// The driver's error.
        #[source]
        source: Option<DriverError>,
    },
    /// The schema was written by a newer mend.
    #[error("the database schema is at version {found} but this mend knows versions up to {known}; upgrade mend")]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// A job failed validation before being stored.
    #[error(transparent)]
    InvalidJob(#[from] InvalidJob),
    /// The store has been closed (its writer stopped).
    #[error("the store is closed")]
    Closed,
    /// A stored value could not be decoded. Reads of that job fail with this error; claims and
    /// rescues set such a job aside (`discarded`, with the error) instead of failing.
    #[error("stored job {id} has an unreadable column {column}: {detail}")]
    Decode {
        /// The job.
        id: String,
        /// The column.
        column: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// Any other database error.
    #[error("database error: {message}")]
    Database {
        /// What went wrong.
        message: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<DriverError>,
    },
    /// A finished job was not retried: another job holds its unique key (see
    /// [`crate::unique`]). Nothing was changed.
    #[error("{}", unique_held_message(.id, .key, .holder))]
    UniqueKeyHeld {
        /// The job that was to run again.
        id: Uuid,
        /// Its unique key.
        key: String,
        /// The job holding the key now; `None` when it was another job of the same retry.
        holder: Option<Uuid>,
    },
}

fn unique_held_message(id: &Uuid, key: &str, holder: &Option<Uuid>) -> String {
    let who = match holder {
        Some(h) => format!("job {h} holds it now"),
        None => "another job of the same request takes it".to_owned(),
    };
    format!("job {id} cannot run again: its unique key {key:?} is taken ({who}); wait for that job to finish or cancel it, then retry")
}

impl StoreError {
    /// A database error with no driver error behind it.
    pub fn database(message: impl Into<String>) -> StoreError {
        StoreError::Database {
            message: message.into(),
            source: None,
        }
    }
}

/// Create or replace a limit.
#[derive(Debug, Clone)]
pub struct SetLimitParams {
    /// The limit.
    pub limit: crate::limits::Limit,
    /// The current time.
    pub now: DateTime<Utc>,
}

/// A limit as stored, with what it held back at the latest claim of its queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitState {
    /// The limit.
    #[serde(flatten)]
    pub limit: crate::limits::Limit,
    /// Jobs at the head of the queue that the latest claim held back under this limit.
    pub waiting: u32,
    /// When that claim ran.
    pub waiting_at: Option<DateTime<Utc>>,
}

/// A waiting job, as [`Store::limit_usage`] needs it: what its keys are made of.
#[derive(Debug, Clone)]
pub struct LimitSubject {
    /// Its kind.
    pub kind: String,
    /// Its args.
    pub args: serde_json::Value,
    /// The key set at enqueue.
    pub limit_key: Option<String>,
}

/// Ask what the limits of a queue stand at.
#[derive(Debug, Clone)]
pub struct LimitUsageParams {
    /// The queue.
    pub queue: String,
    /// The jobs whose keys' rate buckets to read.
    pub jobs: Vec<LimitSubject>,
}

/// The limits of a queue and what they stand at.
#[derive(Debug, Clone, Default)]
pub struct LimitUsage {
    /// The queue's limits.
    pub limits: Vec<crate::limits::Limit>,
    /// Running attempts per key, and the buckets of the asked jobs' keys.
    pub usage: crate::limits::Usage,
}

impl LimitUsage {
    /// Why `job` is held back right now (empty: no limit holds it).
    pub fn holds(&self, job: &JobRow, now: DateTime<Utc>) -> Vec<crate::limits::Hold> {
        crate::limits::holds(
            &self.limits,
            &job.kind,
            &job.args,
            job.limit_key.as_deref(),
            &self.usage,
            now,
        )
    }
}

/// Claim up to `limit` available jobs of one queue for one worker.
#[derive(Debug, Clone)]
pub struct ClaimParams {
    /// Which queue.
    pub queue: String,
    /// Only these kinds (the ones the worker has handlers for). Empty means any kind.
    pub kinds: Vec<String>,
    /// At most this many.
    pub limit: usize,
    /// The node that will hold the leases.
    pub lease_owner: String,
    /// How long the lease lasts without a heartbeat.
    pub lease_duration: Duration,
    /// The current time (so tests can control it).
    pub now: DateTime<Utc>,
    /// How kinds under a rollout (or pinned to a version) are routed: only the jobs whose
    /// side this node serves are claimed, and the version that runs each is recorded on it.
    /// Empty: the plain claim, no version recorded.
    pub routes: Vec<crate::rollout::Route>,
    /// Of `limit`, how many the worker claims ahead of its free slots (they would wait on it
    /// for one). A queue with limits claims at most `limit - ahead`: a job waiting on a node
    /// must not hold a place in a concurrency limit, nor spend a start of a rate limit.
    pub ahead: usize,
}

/// How an attempt ended, as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub enum OutcomeKind {
    /// Completed, with an optional result.
    Completed {
        /// What the handler returned.
        result: Option<serde_json::Value>,
    },
    /// Failed; retry at `run_at`.
    Retry {
        /// The attempt's error record.
        error: AttemptError,
        /// When to try again.
        run_at: DateTime<Utc>,
    },
    /// Failed for good.
    Discard {
        /// The attempt's error record.
        error: AttemptError,
    },
    /// Cancelled while running.
    Cancelled {
        /// The attempt's error record (kind `cancelled`).
        error: AttemptError,
    },
    /// The handler asked to run again later; the attempt does not count.
    Snooze {
        /// When to run again.
        run_at: DateTime<Utc>,
    },
    /// Shutdown stopped the attempt; back to `available`, the attempt does not count.
    Release,
}

impl OutcomeKind {
    /// The error recorded for the attempt, to amend it.
    pub fn error_mut(&mut self) -> Option<&mut AttemptError> {
        match self {
            OutcomeKind::Retry { error, .. }
            | OutcomeKind::Discard { error }
            | OutcomeKind::Cancelled { error } => Some(error),
            OutcomeKind::Completed { .. } | OutcomeKind::Snooze { .. } | OutcomeKind::Release => {
                None
            }
        }
    }

    /// The error recorded for the attempt, if it failed or was cancelled.
    pub fn error(&self) -> Option<&AttemptError> {
        match self {
            OutcomeKind::Retry { error, .. }
            | OutcomeKind::Discard { error }
            | OutcomeKind::Cancelled { error } => Some(error),
            OutcomeKind::Completed { .. } | OutcomeKind::Snooze { .. } | OutcomeKind::Release => {
                None
            }
        }
    }
}

/// Which attempt a write of a running job is for. Every such write applies only while this
/// attempt is still the job's current one and `lease_owner` still holds its lease: a worker
/// that lost the job (its lease ran out and it was rescued, or a person cancelled or retried
/// it) can no longer change it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The job.
    pub id: Uuid,
    /// The attempt the worker runs.
    pub attempt: i32,
    /// The worker's node.
    pub lease_owner: String,
}

impl Fence {
    /// The fence of `job`'s current attempt, as claimed by `lease_owner`.
    pub fn new(id: Uuid, attempt: i32, lease_owner: impl Into<String>) -> Fence {
        Fence {
            id,
            attempt,
            lease_owner: lease_owner.into(),
        }
    }
}

/// One attempt's outcome, fenced by (id, attempt, lease owner).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The attempt the worker ran; the write applies only while it still holds the job.
    pub fence: Fence,
    /// What happened.
    pub kind: OutcomeKind,
    /// The in-memory cleanups the attempt ran (recorded in the job's timeline).
    pub cleanups: Vec<crate::cleanup::CleanupReport>,
}

impl Outcome {
    /// The timeline event every store records for this outcome.
    pub fn timeline_event(&self, at: DateTime<Utc>) -> crate::job::TimelineEvent {
        use crate::job::TimelineEvent;
        let base = |name: &str| {
            TimelineEvent::new(at, name)
                .attempt(self.fence.attempt)
                .node(self.fence.lease_owner.clone())
        };
        let mut event = match &self.kind {
            OutcomeKind::Completed { .. } => base("completed"),
            OutcomeKind::Retry { error, run_at } => base("failed").detail(format!(
                "{}: {}; retry at {run_at}",
                error.kind, error.message
            )),
            OutcomeKind::Discard { error } => {
                base("discarded").detail(format!("{}: {}", error.kind, error.message))
            }
            OutcomeKind::Cancelled { .. } => base("cancelled"),
            OutcomeKind::Snooze { run_at } => base("snoozed").detail(format!("until {run_at}")),
            OutcomeKind::Release => base("released")
                .detail("stopped by shutdown; back in the queue, the attempt does not count"),
        };
        event.cleanups = self.cleanups.clone();
        event
    }
}

/// Save a running attempt's checkpoint, fenced by (id, attempt, lease owner).
#[derive(Debug, Clone)]
pub struct CheckpointParams {
    /// The attempt saving it.
    pub fence: Fence,
    /// The state to resume from.
    pub state: serde_json::Value,
}

/// Write a durable cleanup down with a running job, fenced by (id, attempt, lease owner).
#[derive(Debug, Clone)]
pub struct DeferDurableParams {
    /// The attempt registering it.
    pub fence: Fence,
    /// The cleanup action.
    pub name: String,
    /// Its arguments.
    pub args: serde_json::Value,
}

/// A durable cleanup ran: remove it from the job and record the run in the timeline, fenced by
/// the running attempt (which may be a later one than the cleanup's).
#[derive(Debug, Clone)]
pub struct CleanupDoneParams {
    /// The attempt that ran it (the job's current one, perhaps later than the cleanup's).
    pub fence: Fence,
    /// Which cleanup.
    pub seq: u32,
    /// The run, for the timeline.
    pub event: crate::job::TimelineEvent,
}

/// Record one completion together with the handler's own writes (see
/// [`Store::complete_with_effect`]).
#[derive(Debug)]
pub struct CompleteWithEffectParams {
    /// The completion, fenced like any outcome.
    pub outcome: Outcome,
    /// The handler's writes, built by the backend's `effect` function.
    pub effect: TxEffect,
    /// The current time.
    pub now: DateTime<Utc>,
}

/// Record that a node is alive.
#[derive(Debug, Clone)]
pub struct HeartbeatNodeParams {
    /// The node.
    pub id: String,
    /// The current time (its new `last_seen`).
    pub now: DateTime<Utc>,
    /// Attempts running on it now.
    pub in_flight: u32,
    /// Its shutdown has begun.
    pub draining: bool,
}

/// Pause or resume a queue.
#[derive(Debug, Clone)]
pub struct SetQueuePausedParams {
    /// The queue.
    pub queue: String,
    /// `true` pauses, `false` resumes.
    pub paused: bool,
    /// The current time.
    pub now: DateTime<Utc>,
}

/// Find the dead nodes (see [`Store::dead_nodes`]).
#[derive(Debug, Clone)]
pub struct DeadNodesParams {
    /// The asking node, never reported.
    pub self_id: String,
    /// A node on another host without a heartbeat since this time is dead.
    pub stale_before: DateTime<Utc>,
}

/// The handler's own database writes, to commit in the same transaction as its job's
/// completion (`JobContext::commit_with_completion`). Built by the backend's `effect`
/// function (`mend_sqlite::effect`, `mend_postgres::effect`), which knows what is inside.
pub struct TxEffect(std::sync::Mutex<Box<dyn std::any::Any + Send>>);

impl TxEffect {
    /// Wraps a backend's effect (the backend downcasts it back).
    pub fn new(inner: Box<dyn std::any::Any + Send>) -> Self {
        TxEffect(std::sync::Mutex::new(inner))
    }

    /// The backend's effect.
    pub fn into_inner(self) -> Box<dyn std::any::Any + Send> {
        self.0.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend's effect `F` (built by the backend's `effect` function, named in
    /// `built_by` for the error) and the result of the completion it commits with. Effects
    /// commit with completions only.
    pub fn unpack<F: 'static>(
        self,
        outcome: &Outcome,
        built_by: &str,
    ) -> Result<(F, Option<serde_json::Value>)> {
        let Ok(f) = self.into_inner().downcast::<F>() else {
            return Err(StoreError::database(format!(
                "this effect was not built by {built_by}"
            )));
        };
        let OutcomeKind::Completed { result } = &outcome.kind else {
            return Err(StoreError::database("effects commit with completions only"));
        };
        Ok((*f, result.clone()))
    }
}

impl std::fmt::Debug for TxEffect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TxEffect(..)")
    }
}

/// Record many outcomes in few transactions.
#[derive(Debug, Clone)]
pub struct CompleteParams {
    /// The outcomes.
    pub outcomes: Vec<Outcome>,
    /// The current time.
    pub now: DateTime<Utc>,
}

impl CompleteParams {
    /// Whether some job goes straight back to `available` (released, or snoozed until a time
    /// already passed): idle fetchers should be woken for it.
    pub fn requeues(&self) -> bool {
        self.outcomes.iter().any(|o| match o.kind {
            OutcomeKind::Release => true,
            OutcomeKind::Snooze { run_at } => run_at <= self.now,
            _ => false,
        })
    }
}

/// Which outcomes landed. Ones missing from `applied` were fenced out: the job had moved on
/// (lease lost, rescued, cancelled by a person) and the worker's write was refused.
#[derive(Debug, Clone, Default)]
pub struct CompleteResult {
    /// Ids whose outcome was recorded.
    pub applied: Vec<Uuid>,
    /// Ids whose outcome was refused by the fence.
    pub fenced: Vec<Uuid>,
}

/// A running job a worker still holds, for a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldJob {
    /// The job.
    pub id: Uuid,
    /// The attempt being run.
    pub attempt: i32,
}

/// Extend the leases of jobs a node is running.
#[derive(Debug, Clone)]
pub struct ExtendLeasesParams {
    /// The node.
    pub lease_owner: String,
    /// The jobs it runs.
    pub jobs: Vec<HeldJob>,
    /// New lease end.
    pub expires_at: DateTime<Utc>,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Default)]
pub struct ExtendLeasesResult {
    /// Attempts the node no longer holds (rescued or finished by someone else): stop them.
    pub lost: Vec<HeldJob>,
    /// Jobs someone asked to cancel: cancel them.
    pub cancel_requested: Vec<Uuid>,
}

/// Rescue running jobs whose worker is gone.
#[derive(Debug, Clone)]
pub struct RescueParams {
    /// Nodes known dead: all their running jobs are rescued.
    pub dead_nodes: Vec<String>,
    /// Also rescue running jobs whose lease expired before this time (hung workers).
    pub now: DateTime<Utc>,
    /// Quarantine a job after this many consecutive `lost` attempts.
    pub quarantine_after_lost: u32,
}

/// A rescued job and what became of it.
#[derive(Debug, Clone)]
pub struct Rescued {
    /// The job after the rescue.
    pub job: JobRow,
    /// It was quarantined as a poison pill.
    pub quarantined: bool,
}

/// Filters and paging for [`Store::list`]. Newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListParams {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only these states (empty: all).
    pub states: Vec<JobState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only jobs with this tag.
    pub tag: Option<String>,
    /// Jobs older than this id (the previous page's `next_cursor`).
    pub before: Option<Uuid>,
    /// Page size (capped by the store at [`MAX_PAGE`]).
    pub limit: usize,
    /// Only jobs created at or after this time.
    #[serde(default)]
    pub created_after: Option<DateTime<Utc>>,
    /// Only jobs created before this time.
    #[serde(default)]
    pub created_before: Option<DateTime<Utc>>,
    /// Only jobs whose args contain this JSON object: every key it names has the same value in
    /// the job's args (top level). Searched among the newest [`ARGS_SEARCH_SPAN`] jobs that match
    /// the other filters, so a search answers in bounded time on any table.
    #[serde(default)]
    pub args_contains: Option<serde_json::Map<String, serde_json::Value>>,
}

/// How many of the newest jobs matching the other filters an args search looks through.
pub const ARGS_SEARCH_SPAN: usize = 20_000;

/// Per-state counts of the jobs that match a filter, each capped (see [`Store::count_states`]).
#[derive(Debug, Clone, Default)]
pub struct CountStatesParams {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Count at most this many per state: a page view must not count a million rows.
    pub cap: u64,
    /// Only these states (empty: all).
    pub states: Vec<JobState>,
}

/// With a queue or kind filter, the states without an index on queue (all but available and
/// running) are counted among their newest this many jobs; past it the count says "at least".
pub const COUNT_SCAN_SPAN: u64 = 20_000;

impl CountStatesParams {
    /// The states asked for.
    pub fn states(&self) -> Vec<JobState> {
        if self.states.is_empty() {
            JobState::ALL.to_vec()
        } else {
            self.states.clone()
        }
    }

    /// Whether `state` is counted among its newest [`COUNT_SCAN_SPAN`] jobs: a filter is set
    /// and no index of the state leads with the queue.
    pub fn spans(&self, state: JobState) -> bool {
        (self.queue.is_some() || self.kind.is_some())
            && !matches!(state, JobState::Available | JobState::Running)
    }
}

/// How many jobs of one state match, up to the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StateCount {
    /// The state.
    pub state: JobState,
    /// How many (at most the cap).
    pub count: u64,
    /// There are more than `count`.
    pub capped: bool,
}

impl StateCount {
    /// A state's count from the rows a capped query read (`cap + 1` means "more").
    pub fn from_capped(state: JobState, read: u64, cap: u64) -> StateCount {
        StateCount {
            state,
            count: read.min(cap),
            capped: read > cap,
        }
    }
}

/// Where an available job stands in its queue (see [`Store::count_ahead`]).
#[derive(Debug, Clone)]
pub struct CountAheadParams {
    /// The job.
    pub id: Uuid,
    /// Its queue.
    pub queue: String,
    /// Its priority.
    pub priority: i16,
    /// Its run_at.
    pub run_at: DateTime<Utc>,
    /// Count at most this many.
    pub cap: u64,
}

/// The largest page [`Store::list`] returns.
pub const MAX_PAGE: usize = 1000;

/// A page of jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<JobRow>,
    /// Pass as `before` for the next page; `None` on the last page.
    pub next_cursor: Option<Uuid>,
}

impl JobPage {
    /// A page from `jobs` fetched with one row more than `limit` (newest first): the extra row
    /// only says that another page follows.
    pub fn from_overfetch(mut jobs: Vec<JobRow>, limit: usize) -> JobPage {
        let next_cursor = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        JobPage { jobs, next_cursor }
    }
}

/// Count of jobs in one queue and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCount {
    /// The queue.
    pub queue: String,
    /// The state.
    pub state: JobState,
    /// How many.
    pub count: u64,
}

impl QueueCount {
    /// The counts from `(queue, state, count)` rows as a store reads them, sorted by queue
    /// then state.
    pub fn from_rows(
        rows: impl IntoIterator<Item = (String, String, i64)>,
    ) -> Result<Vec<QueueCount>> {
        let mut out = rows
            .into_iter()
            .map(|(queue, state, count)| {
                Ok(QueueCount {
                    queue,
                    state: state
                        .parse::<JobState>()
                        .map_err(|e| StoreError::database(e.to_string()))?,
                    count: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| (&a.queue, a.state).cmp(&(&b.queue, b.state)));
        Ok(out)
    }
}

/// Cancel jobs: waiting ones become `cancelled` at once; running ones are flagged and their
/// worker stops them. A flagged job whose attempt then ends in a retry, snooze or release is
/// `cancelled` instead: the request is never lost.
#[derive(Debug, Clone)]
pub struct CancelParams {
    /// The jobs.
    pub ids: Vec<Uuid>,
    /// The current time.
    pub now: DateTime<Utc>,
}

/// Send finished (completed, cancelled, discarded) jobs back to `available`.
#[derive(Debug, Clone)]
pub struct RetryParams {
    /// The jobs.
    pub ids: Vec<Uuid>,
    /// The current time.
    pub now: DateTime<Utc>,
}

/// Delete finished jobs older than a cutoff, a bounded batch at a time.
#[derive(Debug, Clone)]
pub struct PruneParams {
    /// Completed, cancelled and discarded jobs finalized before this go.
    pub finalized_before: DateTime<Utc>,
    /// At most this many per call (keeps each transaction, and its lock, short).
    pub limit: usize,
}

/// A process (or one worker inside it) that runs jobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique per worker start.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Identity of the process on its host (pid namespace and start time) so a reused pid is
    /// not mistaken for the original process.
    pub process_key: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Last heartbeat.
    pub last_seen: DateTime<Utc>,
    /// The job kinds this node's worker has handlers for (empty: not recorded, as for nodes
    /// registered by an older mend).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// The queues it works, with its concurrency in each (empty: not recorded).
    #[serde(default)]
    pub queues: Vec<NodeQueue>,
    /// The mend build it runs, [`BUILD`] (empty: not recorded).
    #[serde(default)]
    pub build: String,
    /// Attempts running on it at its last heartbeat.
    #[serde(default)]
    pub in_flight: u32,
    /// Its shutdown has begun: it claims nothing more and drains what runs.
    #[serde(default)]
    pub draining: bool,
    /// The named handler versions it serves, per kind (kinds with only an unversioned
    /// handler are not listed).
    #[serde(default)]
    pub versions: std::collections::BTreeMap<String, Vec<String>>,
    /// Filled in by [`Store::list_nodes`], ignored when registering: its process runs the
    /// maintenance (rescues, pruning, cron). PostgreSQL: its process holds the leader lock.
    /// SQLite has no election (every node rescues, fenced), so every node reads `true`.
    #[serde(default)]
    pub leader: bool,
}

/// The mend build a node runs: this crate's version.
pub const BUILD: &str = env!("CARGO_PKG_VERSION");

/// A queue a node works, and how many of its attempts may run there at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeQueue {
    /// The queue.
    pub name: String,
    /// Its concurrency on this node.
    pub concurrency: u32,
}

// ---- Periodic jobs (cron) ----

/// Store a schedule, or replace the declaration of one with the same name (see
/// [`Store::cron_upsert`]).
#[derive(Debug, Clone)]
pub struct UpsertCronParams {
    /// The declaration (already checked by `Periodic::validate`).
    pub periodic: crate::cron::Periodic,
    /// Its first slot after `now`: the next slot of a new schedule, or of one whose
    /// expression or time zone changed.
    pub next_slot: DateTime<Utc>,
    /// The current time.
    pub now: DateTime<Utc>,
}

/// Pause or resume a schedule.
#[derive(Debug, Clone)]
pub struct SetCronPausedParams {
    /// The schedule.
    pub name: String,
    /// `true` pauses, `false` resumes.
    pub paused: bool,
    /// A resumed schedule's next slot (its first slot after now): slots passed while it was
    /// paused are not caught up.
    pub next_slot: DateTime<Utc>,
    /// The current time.
    pub now: DateTime<Utc>,
}

/// The schedules with a slot due.
#[derive(Debug, Clone)]
pub struct DueCronParams {
    /// Schedules not paused whose next slot is at or before this time.
    pub now: DateTime<Utc>,
    /// At most this many, earliest next slot first.
    pub limit: usize,
}

/// Move a schedule past its due slots and insert their jobs, in one transaction, only while
/// its next slot is still `expected_next_slot` (a compare-and-set: of two schedulers racing,
/// one advances and inserts, the other changes nothing).
#[derive(Debug, Clone)]
pub struct AdvanceCronParams {
    /// The schedule.
    pub name: String,
    /// The next slot the caller read; the advance applies only while it is unchanged and the
    /// schedule is not paused.
    pub expected_next_slot: DateTime<Utc>,
    /// The new next slot.
    pub next_slot: DateTime<Utc>,
    /// The slots to run, oldest first, with their jobs (`jobs[i]` is `slots[i]`'s).
    pub slots: Vec<DateTime<Utc>>,
    /// The jobs, keyed by slot (`cron::job_for`): a slot's job already stored is returned.
    pub jobs: Vec<NewJob>,
    /// The runs recorded before, to which these slots' runs are appended
    /// (`cron::merge_runs`).
    pub runs_before: Vec<crate::cron::CronRun>,
    /// The skipped slots to store (already merged, `cron::merge_skipped`).
    pub skipped: Vec<DateTime<Utc>>,
    /// The current time.
    pub now: DateTime<Utc>,
}

// ---- Health checks (`mend doctor`) ----

/// What [`Store::doctor_stats`] looks at.
#[derive(Debug, Clone)]
pub struct DoctorParams {
    /// Available jobs due before this count as waiting too long.
    pub waiting_before: DateTime<Utc>,
    /// Running jobs whose lease expired before this count as stuck (rescue is not happening).
    pub lease_expired_before: DateTime<Utc>,
    /// Jobs discarded because a durable cleanup failed since this are reported.
    pub discarded_since: DateTime<Utc>,
    /// At most this many examples per finding.
    pub limit: usize,
}

/// How many waiting jobs [`Store::doctor_stats`] looks at (any of them, in index order): enough
/// to find the kinds left behind in any real backlog without reading all of a huge one. When
/// the counts add up to it, each is a lower bound.
pub const DOCTOR_WAITING_SPAN: i64 = 100_000;

/// Available jobs of one queue and kind that have waited past [`DoctorParams::waiting_before`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingKind {
    /// The queue.
    pub queue: String,
    /// The kind.
    pub kind: String,
    /// How many.
    pub count: u64,
}

/// One job named by a health finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorJob {
    /// The job.
    pub id: Uuid,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// When its lease expired (stuck jobs) or it was discarded (failed cleanups).
    pub at: Option<DateTime<Utc>>,
    /// Its lease owner (stuck jobs) or last error (failed cleanups).
    pub detail: Option<String>,
}

/// What [`Store::doctor_stats`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DoctorStats {
    /// The database server's clock, when it has one (PostgreSQL `now()`).
    pub database_now: Option<DateTime<Utc>>,
    /// Whether some process holds the maintenance leader's lock; `None` where the backend
    /// has no leader (every SQLite node rescues).
    pub leader_held: Option<bool>,
    /// Available jobs waiting too long, per queue and kind.
    pub waiting: Vec<WaitingKind>,
    /// Running jobs with leases expired too long ago (at most `limit`).
    pub stuck: Vec<DoctorJob>,
    /// Jobs discarded because a durable cleanup failed (at most `limit`).
    pub cleanup_failed: Vec<DoctorJob>,
}

/// The storage contract. See the module docs.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Bring the schema up to date. Safe to call from several processes at once.
    async fn migrate(&self) -> Result<()>;

    /// Insert jobs in one transaction. A job whose `unique_key` is already taken is not
    /// inserted; the existing row is returned in its place. Rows come back in input order.
    /// Unique options ([`NewJob::unique`]) become the key and states mask of
    /// [`NewJob::unique_columns`], computed at the store's `now`; a job holding that key in
    /// one of its states is returned the same way.
    async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobRow>>;

    /// Move due `scheduled`/`retryable` jobs to `available`, then claim up to `limit` available
    /// jobs in priority → run_at → id order, in one transaction. A paused queue yields none.
    async fn claim(&self, params: ClaimParams) -> Result<Vec<JobRow>>;

    /// Record outcomes, fenced. See [`CompleteResult`].
    async fn complete_many(&self, params: CompleteParams) -> Result<CompleteResult>;

    /// Record one completion and the handler's own writes in one transaction: both commit or
    /// neither does. `Ok(false)` when fenced (nothing written); an error when the effect or
    /// the store failed (nothing written either). Backends without effects refuse.
    async fn complete_with_effect(&self, params: CompleteWithEffectParams) -> Result<bool> {
        let _ = params;
        Err(StoreError::database(
            "this store cannot commit a job's own writes with its completion",
        ))
    }

    /// Save a checkpoint durably; `false` when the fence refused it (the attempt lost the job).
    async fn checkpoint(&self, params: CheckpointParams) -> Result<bool>;

    /// Append a durable cleanup to the job's pending ones; returns its `seq`, or `None` when
    /// fenced.
    async fn defer_durable(&self, params: DeferDurableParams) -> Result<Option<u32>>;

    /// Remove a pending durable cleanup that ran; `false` when fenced.
    async fn cleanup_done(&self, params: CleanupDoneParams) -> Result<bool>;

    /// Extend leases; report jobs lost and cancel requests.
    async fn extend_leases(&self, params: ExtendLeasesParams) -> Result<ExtendLeasesResult>;

    /// Rescue running jobs of dead nodes and expired leases: record a `lost` error, then make
    /// them retryable now, or discard them when out of attempts or quarantined.
    async fn rescue(&self, params: RescueParams) -> Result<Vec<Rescued>>;

    /// Cancel jobs; returns the rows after the change (missing ids are left out).
    async fn cancel(&self, params: CancelParams) -> Result<Vec<JobRow>>;

    /// Retry finished jobs now; returns the rows after the change. When a job's unique key is
    /// held by another job now (see [`crate::unique`]), nothing changes and the error is
    /// [`StoreError::UniqueKeyHeld`].
    async fn retry(&self, params: RetryParams) -> Result<Vec<JobRow>>;

    /// One job.
    async fn get(&self, id: Uuid) -> Result<Option<JobRow>>;

    /// Several jobs, in the order of `ids`, missing ones left out. The default asks for each;
    /// a networked backend answers in one round trip.
    async fn get_many(&self, ids: Vec<Uuid>) -> Result<Vec<JobRow>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(job) = self.get(id).await? {
                out.push(job);
            }
        }
        Ok(out)
    }

    /// A page of jobs, newest first.
    async fn list(&self, params: ListParams) -> Result<JobPage>;

    /// Counts per queue and state (states with no jobs are left out). Counting the finished
    /// states reads every retained finished job: for drills and benches, not for anything
    /// polled on a big table (see [`Store::live_queue_counts`]).
    async fn queue_counts(&self) -> Result<Vec<QueueCount>>;

    /// Counts per queue of the states still to run — scheduled, available, running and
    /// retryable — served by their partial indexes, so the cost follows the backlog and not
    /// the finished jobs kept: what `/metrics` and `GET /v1/queues` show. The default filters
    /// [`Store::queue_counts`] (correct, not cheap); the backends override it.
    async fn live_queue_counts(&self) -> Result<Vec<QueueCount>> {
        Ok(self
            .queue_counts()
            .await?
            .into_iter()
            .filter(|c| !c.state.is_final())
            .collect())
    }

    /// Per-state counts of the jobs matching a filter, each counted up to `cap` through an
    /// index (the dashboard shows "10,000+" rather than counting a big table on every view).
    /// With a filter, states that [`CountStatesParams::spans`] are counted among their newest
    /// [`COUNT_SCAN_SPAN`] jobs, and `capped` says when older ones were not looked at.
    async fn count_states(&self, params: CountStatesParams) -> Result<Vec<StateCount>>;

    /// How many available jobs of the same queue are claimed before this one (claim order:
    /// priority, run_at, id), counted up to `cap + 1`: an answer above `cap` means "more".
    async fn count_ahead(&self, params: CountAheadParams) -> Result<u64>;

    /// The job each of `queues` hands out next (claim order: priority, run_at, id), if any:
    /// the head of the line, whose `run_at` says how long the queue has kept work waiting.
    /// One index lookup per queue.
    async fn queue_heads(&self, queues: Vec<String>) -> Result<Vec<JobRow>>;

    /// Deletes the jobs among `ids` that are in a final state (completed, cancelled,
    /// discarded); jobs still in flight are left alone. Returns the ids deleted.
    async fn delete_final(&self, ids: Vec<Uuid>) -> Result<Vec<Uuid>>;

    /// Register or refresh a node.
    async fn register_node(&self, node: NodeInfo) -> Result<()>;

    /// Record that a node is alive. Returns `false` when the node is not registered (another
    /// process removed it as dead); the caller registers again.
    async fn heartbeat_node(&self, params: HeartbeatNodeParams) -> Result<bool>;

    /// All registered nodes.
    async fn list_nodes(&self) -> Result<Vec<NodeInfo>>;

    /// Remove a node (graceful shutdown, or after its jobs were rescued).
    async fn deregister_nodes(&self, ids: Vec<String>) -> Result<()>;

    /// Delete up to `limit` finished jobs finalized before the cutoff; returns how many went.
    async fn prune(&self, params: PruneParams) -> Result<u64>;

    /// Pause (`true`) or resume (`false`) a queue: a paused queue's jobs are not claimed;
    /// running ones finish. Pausing a queue that has no jobs yet is allowed.
    async fn set_queue_paused(&self, params: SetQueuePausedParams) -> Result<()>;

    /// The paused queues, sorted.
    async fn paused_queues(&self) -> Result<Vec<String>>;

    /// Create a limit, or replace the one of the same name (see [`crate::limits`]). Refused
    /// with [`StoreError::InvalidJob`] when it does not validate or its queue already has
    /// [`MAX_LIMITS_PER_QUEUE`](crate::limits::MAX_LIMITS_PER_QUEUE) others. A changed limit's
    /// rate buckets start full.
    async fn set_limit(&self, params: SetLimitParams) -> Result<()>;

    /// Remove a limit; whether there was one.
    async fn delete_limit(&self, name: String) -> Result<bool>;

    /// Every limit, by name.
    async fn list_limits(&self) -> Result<Vec<LimitState>>;

    /// The limits of a queue and what they stand at for the keys of some jobs (for "why
    /// isn't this job running?").
    async fn limit_usage(&self, params: LimitUsageParams) -> Result<LimitUsage>;

    /// Delete up to `limit` rate buckets that are full at `now` (written longer ago than
    /// their rate takes to fill one: the same as no bucket), so buckets of keys no longer
    /// used do not pile up. Returns how many went.
    async fn prune_limit_buckets(&self, now: DateTime<Utc>, limit: usize) -> Result<u64>;

    /// Woken when jobs are inserted (in this process, or by the backend's notifications), so
    /// idle fetchers start within milliseconds instead of waiting for their poll.
    fn wakeup(&self) -> Arc<Notify>;

    /// Registered nodes (other than the asking one) that are dead. The default asks the
    /// operating system about nodes on this host and falls back to heartbeat age (`last_seen`
    /// before `stale_before`) for the rest; a server backend can tell faster (PostgreSQL: the
    /// node's session lock is gone).
    async fn dead_nodes(&self, params: DeadNodesParams) -> Result<Vec<String>> {
        Ok(self
            .list_nodes()
            .await?
            .into_iter()
            .filter(|n| n.id != params.self_id && crate::node::is_dead(n, params.stale_before))
            .map(|n| n.id)
            .collect())
    }

    /// Whether this process should run the rescuer now. The default is always: rescues are
    /// fenced, so several rescuers are safe. A backend shared by many nodes elects one leader
    /// so the work is not repeated by all of them.
    async fn is_leader(&self) -> Result<bool> {
        Ok(true)
    }

    /// How often the rescuer should look for dead nodes on this backend, when it can tell
    /// cheaply and faster than [`WorkerConfig`](crate::WorkerConfig)'s `rescue_interval`.
    fn rescue_interval(&self) -> Option<Duration> {
        None
    }

    /// What wakes the rescuer for a pass before its next interval, on a backend that can tell
    /// early that a node may have died (PostgreSQL: a watched node's lock was released, or a
    /// suspect's confirmation is due). `None`: the rescuer only keeps its interval.
    fn rescue_wakeup(&self) -> Option<Arc<Notify>> {
        None
    }

    /// What wakes a node to re-read the stored routes before its next heartbeat, on a backend
    /// that hears routing change (PostgreSQL: a rollout row's trigger notifies every node; a
    /// store in one process: its own writes). `None`: nodes re-read them at their heartbeats.
    fn routes_wakeup(&self) -> Option<Arc<Notify>> {
        None
    }

    // ---- Periodic jobs (cron) ----

    /// Store a schedule (new: with `next_slot`), or replace the declaration of the one with
    /// the same name, keeping its paused flag and history. Its next slot is kept unless its
    /// expression or time zone changed (then it becomes `next_slot`). Returns the stored row.
    async fn cron_upsert(&self, params: UpsertCronParams) -> Result<crate::cron::CronRow>;

    /// Every schedule, by name.
    async fn cron_list(&self) -> Result<Vec<crate::cron::CronRow>>;

    /// One schedule.
    async fn cron_get(&self, name: String) -> Result<Option<crate::cron::CronRow>>;

    /// Pause or resume a schedule; `None` when there is no such schedule. Resuming a paused
    /// schedule moves its next slot to `next_slot`; resuming a running one changes nothing.
    async fn cron_set_paused(
        &self,
        params: SetCronPausedParams,
    ) -> Result<Option<crate::cron::CronRow>>;

    /// Delete a schedule (its jobs stay); `false` when there was none.
    async fn cron_delete(&self, name: String) -> Result<bool>;

    /// Schedules not paused with a slot due, earliest first (index-backed).
    async fn cron_due(&self, params: DueCronParams) -> Result<Vec<crate::cron::CronRow>>;

    /// See [`AdvanceCronParams`]: `None` when the compare-and-set failed (nothing written),
    /// else the slots' jobs in slot order (ones already stored are returned as they are).
    async fn cron_advance(&self, params: AdvanceCronParams) -> Result<Option<Vec<JobRow>>>;

    // ---- Health checks (`mend doctor`) ----

    /// Read-only figures for `mend doctor`: the database's clock, the leader lock, waiting
    /// jobs per queue and kind, stuck leases and failed durable cleanups (index-backed).
    async fn doctor_stats(&self, params: DoctorParams) -> Result<DoctorStats>;

    // ---- Dashboard history (see `crate::stats`) ----

    /// Add per-minute deltas to the aggregate rows, in one write: counts add up, sketches
    /// merge. Rows of the same (minute, queue, kind) from several nodes add up.
    async fn add_stats(&self, deltas: Vec<StatsDelta>) -> Result<()>;

    /// The aggregates of a window, merged into buckets as `params` asks (already checked by
    /// [`StatsParams::checked`]); reads only the aggregate table, by minute.
    async fn stats(&self, params: StatsParams) -> Result<StatsAnswer>;

    /// Record cluster events.
    async fn add_events(&self, events: Vec<Event>) -> Result<()>;

    /// Events in a window, newest first (index on `at`).
    async fn events(&self, params: EventsParams) -> Result<Vec<Event>>;

    /// Delete up to `limit` aggregate rows and up to `limit` events older than the cutoff;
    /// returns how many went.
    async fn prune_history(&self, params: PruneHistoryParams) -> Result<u64>;

    // ---- API tokens, the audit log and args key checks: see `crate::auth`, `crate::audit`,
    // `crate::secrets`. ----

    /// Stores a token's hash under its name; `false` (nothing stored) when a token that is not
    /// revoked has the name. A revoked token's name may be used again.
    async fn token_create(&self, params: crate::auth::CreateTokenParams) -> Result<bool>;

    /// Every token, revoked ones too, by name.
    async fn token_list(&self) -> Result<Vec<crate::auth::ApiToken>>;

    /// Revokes the named token; `false` when there is no such token that is not revoked.
    async fn token_revoke(&self, params: crate::auth::RevokeTokenParams) -> Result<bool>;

    /// Records audit entries in one transaction.
    async fn audit_add(&self, entries: Vec<crate::audit::NewAuditEntry>) -> Result<()>;

    /// Audit rows, newest first (by id), filtered as `params` says.
    async fn audit_list(
        &self,
        params: crate::audit::AuditParams,
    ) -> Result<Vec<crate::audit::AuditEntry>>;

    /// Deletes up to `limit` audit rows older than `before`; returns how many went.
    async fn audit_prune(&self, params: crate::audit::PruneAuditParams) -> Result<u64>;

    /// The stored args key checks.
    async fn args_keys(&self) -> Result<Vec<crate::secrets::ArgsKeyCheck>>;

    /// Stores a key check unless its key id has one already.
    async fn args_key_add(&self, check: crate::secrets::ArgsKeyCheck) -> Result<()>;

    // ---- Gray release (see `crate::rollout`) ----

    /// Stores a new rollout. Its `stable` is set here from the kind's latest rollout (a
    /// promoted one's canary, else that one's stable; none: unversioned), in the same
    /// transaction. `None` when the kind already has an active (running or paused) rollout.
    async fn rollout_start(&self, rollout: Rollout) -> Result<Option<Rollout>>;

    /// The rollouts, newest first, at most [`MAX_ROLLOUTS_LISTED`].
    async fn rollout_list(&self) -> Result<Vec<Rollout>>;

    /// One rollout.
    async fn rollout_get(&self, id: Uuid) -> Result<Option<Rollout>>;

    /// Replaces a rollout if its stored revision is still `rollout.revision` (compare and
    /// set: a leader change or an operator racing the guard cannot lose a decision). Returns
    /// the stored rollout with its revision bumped, or `None` if it moved on (or is gone).
    async fn rollout_save(&self, rollout: Rollout) -> Result<Option<Rollout>>;

    /// How each kind that ever had a rollout is routed now: its latest rollout's
    /// [`Rollout::route_state`]. Read by every node at every heartbeat.
    async fn rollout_routes(&self) -> Result<Vec<RouteState>>;

    /// Stores the samples of versioned attempts one node gathered (insert only: readers add
    /// them up).
    async fn add_version_samples(&self, samples: Vec<VersionSample>) -> Result<()>;

    /// The samples of `kind` since `since`, oldest first, at most [`MAX_SAMPLE_ROWS`].
    async fn version_samples(&self, params: VersionSamplesParams) -> Result<Vec<VersionSample>>;

    /// Hands jobs the canary failed back to stable: jobs of `kind` whose latest attempt ran
    /// `canary` (since `since`) and that wait to run again or were discarded go back to
    /// `available` now, with `max_attempts` raised by the canary's failures not given back
    /// yet (each then marked `given_back`), and an event in their timeline. Returns their ids
    /// (at most `limit`).
    async fn rollout_heal(&self, params: HealParams) -> Result<Vec<Uuid>>;
}

pub use crate::rollout::{Rollout, RouteState};

/// What every store does in [`Store::rollout_start`] once it holds the kind's latest rollout
/// `prev`: `None` when that one is still active, else `rollout` ready to insert (its stable
/// version taken from `prev`, revision 1); an error when its canary is already stable.
pub fn rollout_to_start(prev: Option<Rollout>, mut rollout: Rollout) -> Result<Option<Rollout>> {
    if let Some(prev) = prev {
        if prev.state.is_active() {
            return Ok(None);
        }
        rollout.stable = prev.route_state().stable;
    }
    if rollout.stable.as_deref() == Some(rollout.canary.as_str()) {
        return Err(StoreError::database(format!(
            "version {} of {} is already the stable version",
            rollout.canary, rollout.kind
        )));
    }
    rollout.revision = 1;
    Ok(Some(rollout))
}

/// Most rollouts [`Store::rollout_list`] returns.
pub const MAX_ROLLOUTS_LISTED: usize = 500;

/// Most sample rows one [`Store::version_samples`] read returns.
pub const MAX_SAMPLE_ROWS: usize = 100_000;

/// What the attempts of one (kind, version) did during one flush on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionSample {
    /// When the flush ran.
    pub at: DateTime<Utc>,
    /// The kind.
    pub kind: String,
    /// The version (`None`: unversioned).
    pub version: Option<String>,
    /// Attempts that ended.
    pub attempts: u64,
    /// Of those, the ones that failed (errors, panics, timeouts, lost).
    pub failures: u64,
    /// Their run times.
    pub run: crate::stats::Sketch,
}

/// Which samples to read.
#[derive(Debug, Clone)]
pub struct VersionSamplesParams {
    /// The kind.
    pub kind: String,
    /// From this time on.
    pub since: DateTime<Utc>,
}

/// Jobs to hand back to stable (see [`Store::rollout_heal`]).
#[derive(Debug, Clone)]
pub struct HealParams {
    /// The kind.
    pub kind: String,
    /// The canary version.
    pub canary: String,
    /// Only attempts that started at or after this (the rollout's start).
    pub since: DateTime<Utc>,
    /// The current time.
    pub now: DateTime<Utc>,
    /// At most this many jobs per call.
    pub limit: usize,
    /// The timeline event each job gets.
    pub event: crate::job::TimelineEvent,
}
