//! The job model: what a job is, which states it moves through, and the one function that
//! says which moves are legal. Every store and the runtime go through [`JobState::can_move_to`];
//! nothing here touches a database.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The queue a job goes to when none is named.
pub const DEFAULT_QUEUE: &str = "default";

/// How many attempts a job gets when neither the job nor its handler says otherwise.
///
/// Twenty-five attempts with the default exponential backoff spread retries over roughly a day,
/// which rides out most outages of a downstream service without retrying forever.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 25;

/// After this many consecutive attempts that ended with the worker lost (the process died
/// mid-attempt), the job is quarantined: discarded with a clear reason instead of crash-looping
/// every worker that picks it up. Three tells a job that kills its process from bad luck.
pub const DEFAULT_QUARANTINE_AFTER_LOST: u32 = 3;

/// Where a job is in its life.
///
/// ```text
///  scheduled ──(due)──▶ available ──(claim)──▶ running ──▶ completed
///      ▲                  ▲   ▲                  │  │ ──▶ discarded (fatal, out of attempts, quarantine)
///      └──── snooze ──────┼───┼──────────────────┘  │ ──▶ cancelled
///                         │   └──(shutdown release)─┘
///  retryable ──(due)──────┘ ◀──(error, panic, timeout, lost)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its `run_at` time.
    Scheduled,
    /// Ready to be claimed by a worker.
    Available,
    /// Claimed by a worker that holds its lease.
    Running,
    /// Failed an attempt; waits for its backoff to pass.
    Retryable,
    /// Finished successfully (terminal).
    Completed,
    /// Cancelled on request (terminal until retried by a person).
    Cancelled,
    /// Failed for good: fatal error, out of attempts, bad args or quarantined (terminal until
    /// retried by a person).
    Discarded,
}

impl JobState {
    /// All states, in the order the dashboard and counts list them.
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Available,
        JobState::Running,
        JobState::Retryable,
        JobState::Completed,
        JobState::Cancelled,
        JobState::Discarded,
    ];

    /// The name stored in the database and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Discarded => "discarded",
        }
    }

    /// The state of a job waiting to run at `run_at` — a new one, or a snoozed one: `scheduled`
    /// while that is in the future, `available` once it is due. Decided here for every backend.
    pub fn waiting_for(run_at: DateTime<Utc>, now: DateTime<Utc>) -> JobState {
        if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Available
        }
    }

    /// Whether the job has stopped moving on its own (only a person can retry it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Cancelled | JobState::Discarded
        )
    }

    /// The state machine, written down once. Stores check their transitions against it in
    /// tests (the conformance suite) and the runtime never asks for a move it rejects.
    pub fn can_move_to(self, to: JobState) -> bool {
        use JobState::*;
        match (self, to) {
            // promotion when due, cancellation while waiting
            (Scheduled | Retryable, Available | Cancelled) => true,
            (Available, Running | Cancelled) => true,
            // outcomes of an attempt; `Available`/`Scheduled` are shutdown release and snooze
            (Running, Completed | Retryable | Discarded | Cancelled | Available | Scheduled) => {
                true
            }
            // a person retries a finished job
            (Completed | Cancelled | Discarded, Available) => true,
            _ => false,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`JobState::ALL`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown job state {0:?}; expected one of scheduled, available, running, retryable, completed, cancelled, discarded")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// How an attempt ended badly; one [`AttemptError`] is stored per failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The handler returned an error.
    Error,
    /// The handler panicked.
    Panic,
    /// The attempt ran past its timeout.
    Timeout,
    /// The worker died mid-attempt (crash, `kill -9`, lost lease); found by recovery.
    Lost,
    /// The job was cancelled while running.
    Cancelled,
}

impl ErrorKind {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Error => "error",
            ErrorKind::Panic => "panic",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Lost => "lost",
            ErrorKind::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest error message stored per attempt; longer ones are cut (on a char boundary) with a
/// note. A job that fails 25 times with a megabyte of error text each would otherwise make
/// every read of it slow.
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// Cuts `message` to [`MAX_ERROR_MESSAGE`] bytes, saying how much was left out.
pub fn bound_message(mut message: String) -> String {
    if message.len() <= MAX_ERROR_MESSAGE {
        return message;
    }
    let total = message.len();
    let mut cut = MAX_ERROR_MESSAGE;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    message.push_str(&format!("… [{} more bytes cut]", total - cut));
    message
}

/// The record of one failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptError {
    /// Which attempt (1-based) this was.
    pub attempt: i32,
    /// How it ended.
    pub kind: ErrorKind,
    /// What went wrong, for a person. Panics include the location.
    pub message: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// The handler version that ran the attempt, when the kind was routed by a rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A canary's failure whose attempt was given back when its rollout ended (the job was
    /// handed back to the stable version with `max_attempts` raised by one per such error).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub given_back: bool,
}

impl AttemptError {
    /// The record a store writes when it sets aside a job whose stored row it cannot read.
    pub fn unreadable_row(why: &dyn fmt::Display, now: DateTime<Utc>) -> Self {
        AttemptError {
            attempt: 0,
            kind: ErrorKind::Error,
            message: format!(
                "the stored job cannot be read ({why}); repair the row, then retry the job"
            ),
            at: now,
            version: None,
            given_back: false,
        }
    }
}

/// Size the stored events of a job are kept near (32 KiB): past it, each new event pushes out
/// the oldest stored one. A job retried hundreds of times keeps its recent history, not an
/// unbounded list.
pub const MAX_TIMELINE_BYTES: usize = 32 * 1024;

/// One step in a job's life, for its timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineEvent {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What happened: `enqueued`, `claimed`, `completed`, `failed`, `discarded`, `cancelled`,
    /// `cancel_requested`, `snoozed`, `released`, `rescued`, `quarantined`, `retried`.
    pub event: String,
    /// The attempt it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// The node (worker) involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Details for a person: the error, the next run time, the dead node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The in-memory cleanups the attempt ran, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cleanups: Vec<crate::cleanup::CleanupReport>,
    /// For an event that ends an attempt: when that attempt started (the store fills it in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

impl TimelineEvent {
    /// An event with no attempt, node or detail yet.
    pub fn new(at: DateTime<Utc>, event: &str) -> Self {
        TimelineEvent {
            at,
            event: event.to_owned(),
            attempt: None,
            node: None,
            detail: None,
            cleanups: Vec::new(),
            started_at: None,
        }
    }

    /// For an attempt.
    pub fn attempt(mut self, attempt: i32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// By or about a node.
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// With details.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Builds a job's whole timeline from what is stored. Stores write events only on the rare
/// paths (failures, rescues, cancels, releases, snoozes, retries by hand, cleanups); the
/// happy path writes none, because growing the row on every claim and completion halved
/// throughput. The steps it leaves out are derived here from columns the row has anyway:
/// `enqueued` from `created_at`, each attempt's `claimed` from the `started_at` of the event
/// that ended it (or from `attempted_at` for the latest attempt), and `completed` from
/// `finalized_at`.
pub fn build_timeline(job: &JobRow, stored: Vec<TimelineEvent>) -> Vec<TimelineEvent> {
    let mut out: Vec<TimelineEvent> = Vec::with_capacity(stored.len() * 2 + 3);
    out.push(TimelineEvent::new(job.created_at, "enqueued"));
    // A derived claim takes its time from a clock read before the claim queued for the writer,
    // which can be a hair older than the enqueue or the previous attempt's end: it is never
    // placed before those. Events of the same attempt (a cancel request) keep their place.
    let mut floor = job.created_at;
    let completed_stored = stored
        .iter()
        .any(|e| e.event == "completed" && e.attempt == Some(job.attempt));
    for e in stored {
        if let Some(start) = e.started_at {
            let mut claimed = TimelineEvent::new(start.max(floor), "claimed");
            claimed.attempt = e.attempt;
            claimed.node = e.node.clone();
            out.push(claimed);
            floor = floor.max(e.at);
        }
        out.push(e);
    }
    // The latest attempt has no stored event while it runs, nor when it completed plainly.
    let open_attempt =
        job.state == JobState::Running || (job.state == JobState::Completed && !completed_stored);
    if let (true, Some(at)) = (open_attempt && job.attempt > 0, job.attempted_at) {
        let at = at.max(floor);
        let mut claimed = TimelineEvent::new(at, "claimed").attempt(job.attempt);
        claimed.node = job.lease_owner.clone();
        if let Some(v) = &job.version {
            claimed.detail = Some(if v.is_empty() {
                "routed to the unversioned handler".to_owned()
            } else {
                format!("handler version {v}")
            });
        }
        out.push(claimed);
        if job.state == JobState::Completed {
            if let Some(done_at) = job.finalized_at {
                let mut done =
                    TimelineEvent::new(done_at.max(at), "completed").attempt(job.attempt);
                done.node = job.lease_owner.clone();
                out.push(done);
            }
        }
    }
    // Stable: equal times keep the order above (a claim before the event that ended it).
    out.sort_by_key(|e| e.at);
    out
}

/// A job as stored. Field names match the database columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRow {
    /// UUIDv7: sorts by creation time.
    pub id: Uuid,
    /// The queue it waits in.
    pub queue: String,
    /// Which handler runs it.
    pub kind: String,
    /// The handler's input.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub args: serde_json::Value,
    /// Where it is in its life.
    pub state: JobState,
    /// Lower runs first; 0 is the default.
    pub priority: i16,
    /// Attempts started so far (the running one included).
    pub attempt: i32,
    /// Attempts allowed before the job is discarded.
    pub max_attempts: i32,
    /// Not claimed before this time.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When the latest attempt started.
    pub attempted_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finalized_at: Option<DateTime<Utc>>,
    /// The node holding the lease while running.
    pub lease_owner: Option<String>,
    /// The lease ends here unless the owner heartbeats.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Someone asked to cancel this running job; its worker stops it.
    pub cancel_requested: bool,
    /// One record per failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// Enqueueing twice with the same key returns the first job.
    pub unique_key: Option<String>,
    /// Free-form labels for filtering.
    pub tags: Vec<String>,
    /// What the handler returned, when it completed.
    #[cfg_attr(feature = "openapi", schema(value_type = Value, required = false))]
    pub result: Option<serde_json::Value>,
    /// Per-job attempt timeout, overriding the handler's.
    pub timeout_ms: Option<i64>,
    /// The W3C `traceparent` of the enqueue, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
    /// The key it counts under for per-key limits, when set at enqueue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_key: Option<String>,
    /// The last checkpoint a handler saved (`JobContext::checkpoint`); the next attempt
    /// starts with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<serde_json::Value>,
    /// Durable cleanups written down and not yet run (a completed attempt drops its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_cleanups: Vec<crate::cleanup::DurableCleanup>,
    /// The handler version of the latest attempt, when a rollout (or a promoted version)
    /// routed its kind; `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What happened to the job, oldest first (see [`build_timeline`]). Jobs handed out by a
    /// claim carry an empty timeline: running them does not need it.
    #[serde(default)]
    pub timeline: Vec<TimelineEvent>,
}

impl JobRow {
    /// How many of the most recent attempts in a row ended with the worker lost.
    pub fn consecutive_lost(&self) -> u32 {
        self.errors
            .iter()
            .rev()
            .take_while(|e| e.kind == ErrorKind::Lost)
            .count() as u32
    }

    /// How many failed attempts ended with the given kind.
    pub fn count_errors(&self, kind: ErrorKind) -> usize {
        self.errors.iter().filter(|e| e.kind == kind).count()
    }
}

/// A job to enqueue. Build one with [`NewJob::new`] and the `with_*` methods, or from typed
/// args with [`crate::JobArgs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// Generated by [`NewJob::new`]; a caller may set its own UUIDv7.
    pub id: Uuid,
    /// The queue; [`DEFAULT_QUEUE`] by default.
    pub queue: String,
    /// Which handler runs it.
    pub kind: String,
    /// The handler's input.
    pub args: serde_json::Value,
    /// Lower runs first.
    pub priority: i16,
    /// Attempts allowed; [`DEFAULT_MAX_ATTEMPTS`] by default.
    pub max_attempts: i32,
    /// When to run; `None` means now. A time in the future makes the job `scheduled`.
    pub run_at: Option<DateTime<Utc>>,
    /// Enqueueing again with the same key returns the existing job.
    pub unique_key: Option<String>,
    /// Labels for filtering.
    pub tags: Vec<String>,
    /// Per-job attempt timeout, overriding the handler's.
    pub timeout_ms: Option<i64>,
    /// The W3C `traceparent` of the enqueue, so the job's attempts join the enqueuer's trace.
    pub trace_parent: Option<String>,
    /// The key this job counts under for every per-key limit of its queue (see
    /// [`crate::limits`]), instead of the key the limit's JSON pointer finds in the args.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_key: Option<String>,
    /// Unique-job options: the store computes the job's key from them (see [`crate::unique`]).
    /// Not together with `unique_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<crate::unique::UniqueOpts>,
}

impl NewJob {
    /// A job of `kind` with `args`, on the default queue, to run now.
    pub fn new(kind: impl Into<String>, args: serde_json::Value) -> Self {
        NewJob {
            id: Uuid::now_v7(),
            queue: DEFAULT_QUEUE.to_owned(),
            kind: kind.into(),
            args,
            priority: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            run_at: None,
            unique_key: None,
            tags: Vec::new(),
            timeout_ms: None,
            trace_parent: None,
            limit_key: None,
            unique: None,
        }
    }

    /// Count under `key` for the per-key limits of its queue (see [`crate::limits`]).
    pub fn with_limit_key(mut self, key: impl Into<String>) -> Self {
        self.limit_key = Some(key.into());
        self
    }

    /// Join the trace of this W3C `traceparent` (the enqueue's span): attempts become part of
    /// it.
    pub fn with_trace_parent(mut self, traceparent: impl Into<String>) -> Self {
        self.trace_parent = Some(traceparent.into());
        self
    }

    /// Put it on another queue.
    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Lower runs first.
    pub fn with_priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Attempts allowed before discarding.
    pub fn with_max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Do not run before `at`.
    pub fn with_run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Do not run before `delay` from now.
    pub fn with_delay(mut self, delay: std::time::Duration) -> Self {
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        self.run_at = Some(
            Utc::now()
                .checked_add_signed(delay)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        );
        self
    }

    /// Enqueueing again with this key returns the existing job instead of a new one.
    pub fn with_unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Make the job unique (see [`crate::unique::UniqueOpts`]): enqueueing a job the options
    /// call the same, while the existing one is in their states, returns the existing job.
    pub fn with_unique(mut self, opts: crate::unique::UniqueOpts) -> Self {
        self.unique = Some(opts);
        self
    }

    /// The `unique_key` and `unique_states` columns a store writes for this job when it is
    /// inserted at `now`: the key computed from the unique options (their period counted by
    /// `run_at`, or `now` when it runs now) and their states mask, or the idempotency key as
    /// given with no mask (held in every state).
    pub fn unique_columns(&self, now: DateTime<Utc>) -> (Option<String>, Option<i32>) {
        match &self.unique {
            Some(u) => (
                Some(u.key(
                    &self.kind,
                    &self.queue,
                    &self.args,
                    self.run_at.unwrap_or(now),
                )),
                Some(u.states_mask()),
            ),
            None => (self.unique_key.clone(), None),
        }
    }

    /// Add a tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Per-job attempt timeout.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout_ms = Some(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
        self
    }

    /// The row a store holds right after inserting this job in `state` at `created_at` (both
    /// already at the store's precision), as a later read would return it.
    pub fn into_row(
        self,
        state: JobState,
        run_at: DateTime<Utc>,
        created_at: DateTime<Utc>,
    ) -> JobRow {
        JobRow {
            id: self.id,
            queue: self.queue,
            kind: self.kind,
            args: self.args,
            state,
            priority: self.priority,
            attempt: 0,
            max_attempts: self.max_attempts,
            run_at,
            created_at,
            attempted_at: None,
            finalized_at: None,
            lease_owner: None,
            lease_expires_at: None,
            cancel_requested: false,
            errors: Vec::new(),
            unique_key: self.unique_key,
            tags: self.tags,
            result: None,
            timeout_ms: self.timeout_ms,
            trace_parent: self.trace_parent,
            limit_key: self.limit_key,
            checkpoint: None,
            pending_cleanups: Vec::new(),
            // The same as a read derives (see build_timeline).
            timeline: vec![TimelineEvent::new(created_at, "enqueued")],
            version: None,
        }
    }

    /// Checks what a store cannot fix later: empty names, nonsense attempt counts.
    pub fn validate(&self) -> Result<(), InvalidJob> {
        if self.kind.trim().is_empty() {
            return Err(InvalidJob::new("kind", "must not be empty"));
        }
        if self.queue.trim().is_empty() {
            return Err(InvalidJob::new("queue", "must not be empty"));
        }
        if self.kind.len() > 255 || self.queue.len() > 255 {
            return Err(InvalidJob::new("kind/queue", "must be at most 255 bytes"));
        }
        if self.max_attempts < 1 {
            return Err(InvalidJob::new("max_attempts", "must be at least 1"));
        }
        if matches!(self.timeout_ms, Some(t) if t <= 0) {
            return Err(InvalidJob::new("timeout_ms", "must be positive"));
        }
        if self.id.get_version_num() != 7 {
            return Err(InvalidJob::new("id", "must be a UUIDv7 (time-ordered)"));
        }
        // Text columns of some databases (PostgreSQL) cannot hold NUL; refuse it everywhere so
        // a job valid on one backend is valid on all.
        let has_nul = |s: &str| s.contains('\0');
        if has_nul(&self.kind) || has_nul(&self.queue) {
            return Err(InvalidJob::new(
                "kind/queue",
                "must not contain NUL characters",
            ));
        }
        if self.unique_key.as_deref().is_some_and(has_nul) {
            return Err(InvalidJob::new(
                "unique_key",
                "must not contain NUL characters",
            ));
        }
        // Unique jobs: the options must make sense, and one job has one key.
        if let Some(u) = &self.unique {
            if self.unique_key.is_some() {
                return Err(InvalidJob::new(
                    "unique",
                    "cannot be combined with an idempotency key (unique_key); use one or the other",
                ));
            }
            u.validate()?;
        }
        if self.tags.iter().any(|t| has_nul(t)) {
            return Err(InvalidJob::new("tags", "must not contain NUL characters"));
        }
        if let Some(key) = &self.limit_key {
            if key.is_empty() || key.chars().count() > 255 || has_nul(key) {
                return Err(InvalidJob::new(
                    "limit_key",
                    "must be 1–255 characters without NUL",
                ));
            }
        }
        if let Some(tp) = &self.trace_parent {
            if crate::trace::TraceParent::parse(tp).is_none() {
                return Err(InvalidJob::new(
                    "trace_parent",
                    "must be a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)",
                ));
            }
        }
        if let Some(run_at) = self.run_at {
            use chrono::Datelike;
            if !(1..=9999).contains(&run_at.year()) {
                return Err(InvalidJob::new(
                    "run_at",
                    "must be between the years 1 and 9999",
                ));
            }
        }
        Ok(())
    }
}

/// A [`NewJob`] that cannot be stored as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job: field `{field}` {problem}")]
pub struct InvalidJob {
    /// Which field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl InvalidJob {
    /// `field` is wrong: `problem` says how.
    pub fn new(field: &'static str, problem: &'static str) -> Self {
        InvalidJob { field, problem }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for st in JobState::ALL {
            assert_eq!(st.as_str().parse::<JobState>().unwrap(), st);
            assert_eq!(serde_json::to_value(st).unwrap(), st.as_str());
        }
        assert!("bogus".parse::<JobState>().is_err());
    }

    #[test]
    fn transition_table() {
        use JobState::*;
        assert!(Available.can_move_to(Running));
        assert!(Running.can_move_to(Completed));
        assert!(Running.can_move_to(Available), "shutdown release");
        assert!(!Completed.can_move_to(Running));
        assert!(!Available.can_move_to(Completed), "must run first");
        assert!(!Scheduled.can_move_to(Running), "must be promoted first");
        assert!(!Cancelled.can_move_to(Completed));
        for st in JobState::ALL {
            assert!(!st.can_move_to(st), "{st} -> {st} is not a move");
        }
    }

    #[test]
    fn consecutive_lost_counts_only_the_tail() {
        let mut job = JobRow {
            id: Uuid::now_v7(),
            queue: "q".into(),
            kind: "k".into(),
            args: serde_json::Value::Null,
            state: JobState::Running,
            priority: 0,
            attempt: 4,
            max_attempts: 10,
            run_at: Utc::now(),
            created_at: Utc::now(),
            attempted_at: None,
            finalized_at: None,
            lease_owner: None,
            lease_expires_at: None,
            cancel_requested: false,
            errors: vec![],
            unique_key: None,
            tags: vec![],
            result: None,
            timeout_ms: None,
            trace_parent: None,
            limit_key: None,
            checkpoint: None,
            pending_cleanups: vec![],
            timeline: vec![],
            version: None,
        };
        let err = |kind| AttemptError {
            attempt: 1,
            kind,
            message: String::new(),
            at: Utc::now(),
            version: None,
            given_back: false,
        };
        job.errors = vec![
            err(ErrorKind::Lost),
            err(ErrorKind::Error),
            err(ErrorKind::Lost),
            err(ErrorKind::Lost),
        ];
        assert_eq!(job.consecutive_lost(), 2);
        assert_eq!(job.count_errors(ErrorKind::Lost), 3);
    }

    #[test]
    fn long_messages_are_bounded_on_a_char_boundary() {
        assert_eq!(bound_message("short".into()), "short");
        let long = "é".repeat(MAX_ERROR_MESSAGE);
        let cut = bound_message(long);
        assert!(cut.len() < MAX_ERROR_MESSAGE + 40, "{}", cut.len());
        assert!(cut.ends_with("more bytes cut]"));
    }

    #[test]
    fn validate_rejects_nonsense() {
        assert!(NewJob::new("k", serde_json::json!({})).validate().is_ok());
        assert_eq!(
            NewJob::new("", serde_json::json!({}))
                .validate()
                .unwrap_err()
                .field,
            "kind"
        );
        let job = NewJob::new("k", serde_json::json!({})).with_max_attempts(0);
        assert_eq!(job.validate().unwrap_err().field, "max_attempts");
        let mut job = NewJob::new("k", serde_json::json!({}));
        job.id = Uuid::nil();
        assert_eq!(job.validate().unwrap_err().field, "id");
        let job = NewJob::new("k\0", serde_json::json!({}));
        assert_eq!(job.validate().unwrap_err().field, "kind/queue");
        let mut job = NewJob::new("k", serde_json::json!({}));
        job.tags = vec!["a\0".into()];
        assert_eq!(job.validate().unwrap_err().field, "tags");
        let mut job = NewJob::new("k", serde_json::json!({}));
        job.run_at = DateTime::<Utc>::from_timestamp(-70_000_000_000, 0);
        assert_eq!(job.validate().unwrap_err().field, "run_at");
    }
}
