//! History for the dashboard: per-minute aggregates of how attempts ended, with latency
//! sketches, and a small log of cluster events (rescues, nodes joining and leaving).
//!
//! The runtime never writes history on its hot path. Every place an attempt ends (the
//! completer, the remote-worker routes, the rescuer) feeds a [`Recorder`]: an in-memory
//! accumulator keyed by (minute, queue, kind) that costs a mutex and a few additions per
//! outcome, with no I/O and no allocation once a key exists. A flusher ([`run_flusher`])
//! writes what accumulated every [`DEFAULT_FLUSH_INTERVAL`] as one store call
//! ([`Store::add_stats`](crate::store::Store::add_stats)) that adds to the rows already
//! there, so every node flushes its own and the rows add up across nodes. A failed flush puts
//! its counts back (bounded by [`MAX_PENDING_KEYS`]); shutdown flushes once more.
//!
//! Latencies are kept as [`Sketch`]es: counts in fixed log-scale buckets (each 1.25× the one
//! before), so sketches of many minutes, queues, kinds and nodes merge by addition and a
//! percentile read off the merge is within one bucket (±12%) of the true one. Reads
//! ([`Store::stats`](crate::store::Store::stats)) merge on the server: percentiles cannot be
//! summed by a client.
//!
//! This module must not do I/O on the recording side; only the flusher talks to the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{Result, Store};

/// Buckets in a [`Sketch`]: from under 0.1 ms to about 44 hours at 1.25× per bucket.
pub const SKETCH_BUCKETS: usize = 96;
/// Upper bound of the first bucket, in milliseconds.
const SKETCH_BASE_MS: f64 = 0.1;
/// Each bucket's bound is this many times the one before: a percentile read off a sketch is
/// within half a bucket's width (about ±12%) of the true value.
pub const SKETCH_GROWTH: f64 = 1.25;

/// How often a node writes what it accumulated. A few seconds keeps the charts live and the
/// writes rare (one statement per flush, however many jobs ran).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// How long per-minute aggregates and events are kept by default: a week, the same as
/// finished jobs, which is what the dashboard's longest chart (a day) and a look back at last
/// week's incident need.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most (minute, queue, kind) rows held in memory while the store refuses flushes. Beyond it
/// the oldest minutes are dropped (and the loss logged): an outage of the database must not
/// grow the process without bound.
pub const MAX_PENDING_KEYS: usize = 50_000;

/// Longest window [`StatsParams`] may ask for.
pub const MAX_STATS_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

/// Most buckets (per group) one stats read may return.
pub const MAX_STATS_BUCKETS: u64 = 10_000;

/// Counts of durations in fixed log-scale buckets; merges by addition.
#[derive(Clone, PartialEq, Eq)]
pub struct Sketch {
    counts: [u64; SKETCH_BUCKETS],
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            counts: [0; SKETCH_BUCKETS],
        }
    }
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sketch({})", self.to_text())
    }
}

impl Sketch {
    /// The bucket a duration of `ms` milliseconds falls in.
    pub fn bucket_of(ms: f64) -> usize {
        if ms.is_nan() || ms < SKETCH_BASE_MS {
            return 0;
        }
        let i = ((ms / SKETCH_BASE_MS).ln() / SKETCH_GROWTH.ln()).floor() as usize + 1;
        i.min(SKETCH_BUCKETS - 1)
    }

    /// The value a bucket stands for, in milliseconds: the geometric middle of its bounds.
    pub fn bucket_value_ms(i: usize) -> f64 {
        if i == 0 {
            return SKETCH_BASE_MS / 2.0;
        }
        SKETCH_BASE_MS * SKETCH_GROWTH.powf(i as f64 - 0.5)
    }

    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        self.record_ms(d.as_secs_f64() * 1000.0);
    }

    /// Records one duration given in milliseconds.
    pub fn record_ms(&mut self, ms: f64) {
        self.counts[Self::bucket_of(ms)] += 1;
    }

    /// Adds `other`'s counts to this one's.
    pub fn merge(&mut self, other: &Sketch) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// How many recorded durations stand above `ms` (by their bucket's value, like
    /// [`Sketch::quantile_ms`]).
    pub fn count_above_ms(&self, ms: f64) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .filter(|(i, _)| Self::bucket_value_ms(*i) > ms)
            .map(|(_, c)| *c)
            .sum()
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|c| *c == 0)
    }

    /// The `q` quantile (0..=1) in milliseconds; `None` when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The rank of the quantile, 1-based: p50 of 1..=100 is the 50th value.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::bucket_value_ms(i));
            }
        }
        Some(Self::bucket_value_ms(SKETCH_BUCKETS - 1))
    }

    /// Sparse text form, `bucket:count` pairs separated by commas (empty when empty): what
    /// SQLite stores.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&format!("{i}:{c}"));
        }
        out
    }

    /// Reads [`Sketch::to_text`]'s form.
    pub fn from_text(s: &str) -> std::result::Result<Sketch, String> {
        let mut out = Sketch::default();
        for pair in s.split(',').filter(|p| !p.is_empty()) {
            let (i, c) = pair
                .split_once(':')
                .ok_or_else(|| format!("sketch entry {pair:?} is not bucket:count"))?;
            let i: usize = i
                .parse()
                .map_err(|_| format!("sketch bucket {i:?} is not a number"))?;
            let c: u64 = c
                .parse()
                .map_err(|_| format!("sketch count {c:?} is not a number"))?;
            let slot = out
                .counts
                .get_mut(i)
                .ok_or_else(|| format!("sketch bucket {i} is past the last ({SKETCH_BUCKETS})"))?;
            *slot = slot.saturating_add(c);
        }
        Ok(out)
    }

    /// Dense form up to the last non-zero bucket: what PostgreSQL stores (an `int8[]`, merged
    /// element by element in SQL).
    pub fn to_dense(&self) -> Vec<i64> {
        let len = self
            .counts
            .iter()
            .rposition(|c| *c > 0)
            .map_or(0, |i| i + 1);
        self.counts[..len]
            .iter()
            .map(|c| i64::try_from(*c).unwrap_or(i64::MAX))
            .collect()
    }

    /// Reads [`Sketch::to_dense`]'s form; entries past the last bucket fold into it, negative
    /// ones (a damaged row) count as zero.
    pub fn from_dense(counts: &[i64]) -> Sketch {
        let mut out = Sketch::default();
        for (i, c) in counts.iter().enumerate() {
            let slot = &mut out.counts[i.min(SKETCH_BUCKETS - 1)];
            *slot = slot.saturating_add(u64::try_from(*c).unwrap_or(0));
        }
        out
    }
}

/// How one attempt ended, as the history counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Completed.
    Completed,
    /// Failed with a retry left.
    Retried,
    /// Failed for good (discarded).
    Failed,
    /// Cancelled while running.
    Cancelled,
    /// Its worker died or vanished and the rescuer handed the job back.
    Lost,
    /// The handler asked to run again later.
    Snoozed,
}

impl Ended {
    /// Every way an attempt ends, in declaration order (`ended as usize` is its index).
    pub const ALL: [Ended; 6] = [
        Ended::Completed,
        Ended::Retried,
        Ended::Failed,
        Ended::Cancelled,
        Ended::Lost,
        Ended::Snoozed,
    ];

    /// Its name in the history's columns and in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Ended::Completed => "completed",
            Ended::Retried => "retried",
            Ended::Failed => "failed",
            Ended::Cancelled => "cancelled",
            Ended::Lost => "lost",
            Ended::Snoozed => "snoozed",
        }
    }

    /// How an outcome the store recorded counts; `None` for a release at shutdown (the
    /// attempt does not count).
    pub fn of(kind: &crate::store::OutcomeKind) -> Option<Ended> {
        use crate::store::OutcomeKind;
        match kind {
            OutcomeKind::Completed { .. } => Some(Ended::Completed),
            OutcomeKind::Retry { .. } => Some(Ended::Retried),
            OutcomeKind::Discard { .. } => Some(Ended::Failed),
            OutcomeKind::Cancelled { .. } => Some(Ended::Cancelled),
            OutcomeKind::Snooze { .. } => Some(Ended::Snoozed),
            OutcomeKind::Release => None,
        }
    }
}

/// Counts per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counts {
    /// Completed.
    pub completed: u64,
    /// Failed with a retry left.
    pub retried: u64,
    /// Failed for good (discarded).
    pub failed: u64,
    /// Cancelled while running.
    pub cancelled: u64,
    /// Rescued after their node or worker died.
    pub lost: u64,
    /// Snoozed by their handler.
    pub snoozed: u64,
}

impl Counts {
    fn bump(&mut self, ended: Ended) {
        let c = match ended {
            Ended::Completed => &mut self.completed,
            Ended::Retried => &mut self.retried,
            Ended::Failed => &mut self.failed,
            Ended::Cancelled => &mut self.cancelled,
            Ended::Lost => &mut self.lost,
            Ended::Snoozed => &mut self.snoozed,
        };
        *c += 1;
    }

    /// Adds `other` to these.
    pub fn add(&mut self, other: &Counts) {
        self.completed += other.completed;
        self.retried += other.retried;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
        self.lost += other.lost;
        self.snoozed += other.snoozed;
    }

    /// The total.
    pub fn total(&self) -> u64 {
        self.completed + self.retried + self.failed + self.cancelled + self.lost + self.snoozed
    }
}

/// What happened in one (minute, queue, kind): one row of the aggregate table, or the part
/// of it one flush adds.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsDelta {
    /// The minute (whole, UTC).
    pub minute: DateTime<Utc>,
    /// The queue.
    pub queue: String,
    /// The kind.
    pub kind: String,
    /// Attempts ended per outcome.
    pub counts: Counts,
    /// From when each attempt's job was due (its run_at, or when it was enqueued) to the
    /// attempt starting.
    pub wait: Sketch,
    /// From each attempt's start to its end.
    pub run: Sketch,
}

/// The start of the minute `at` falls in.
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    let s = at.timestamp().div_euclid(60) * 60;
    DateTime::from_timestamp(s, 0).unwrap_or(at)
}

#[derive(Default)]
struct Delta {
    counts: Counts,
    wait: Sketch,
    run: Sketch,
}

/// Minute (unix seconds) → delta, per kind, per queue: looked up with borrowed names, so a
/// key that already exists costs no allocation.
type Pending = HashMap<String, HashMap<String, HashMap<i64, Box<Delta>>>>;

/// The in-memory accumulator the places where attempts end feed (see the module docs).
#[derive(Default)]
pub struct Recorder {
    pending: Mutex<(Pending, usize)>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("keys", &self.lock().1)
            .finish()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Pending, usize)> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one attempt of `kind` in `queue` that ended at `at` as `ended`, having waited
    /// `wait` to start and run for `run` (either unknown: not recorded in its sketch).
    pub fn record(
        &self,
        queue: &str,
        kind: &str,
        at: DateTime<Utc>,
        ended: Ended,
        wait: Option<Duration>,
        run: Option<Duration>,
    ) {
        let mut guard = self.lock();
        let Some(d) = entry(&mut guard, queue, kind, at.timestamp().div_euclid(60) * 60) else {
            return;
        };
        d.counts.bump(ended);
        if let Some(w) = wait {
            d.wait.record(w);
        }
        if let Some(r) = run {
            d.run.record(r);
        }
    }

    /// Everything accumulated since the last take, emptied.
    pub fn take(&self) -> Vec<StatsDelta> {
        let (pending, _) = std::mem::take(&mut *self.lock());
        let mut out = Vec::new();
        for (queue, kinds) in pending {
            for (kind, minutes) in kinds {
                for (minute, d) in minutes {
                    let Some(minute) = DateTime::from_timestamp(minute, 0) else {
                        continue;
                    };
                    let d = *d;
                    out.push(StatsDelta {
                        minute,
                        queue: queue.clone(),
                        kind: kind.clone(),
                        counts: d.counts,
                        wait: d.wait,
                        run: d.run,
                    });
                }
            }
        }
        out.sort_by(|a, b| (a.minute, &a.queue, &a.kind).cmp(&(b.minute, &b.queue, &b.kind)));
        out
    }

    /// Puts back deltas a flush could not write, to go with the next one. Past
    /// [`MAX_PENDING_KEYS`] the oldest minutes are dropped; returns how many attempts that
    /// lost.
    pub fn restore(&self, mut deltas: Vec<StatsDelta>) -> u64 {
        let mut guard = self.lock();
        // Newest first: when over the bound, what is left out is the oldest.
        deltas.sort_by_key(|d| std::cmp::Reverse(d.minute));
        let mut dropped = 0;
        for delta in deltas {
            if guard.1 >= MAX_PENDING_KEYS {
                dropped += delta.counts.total();
                continue;
            }
            let Some(d) = entry(
                &mut guard,
                &delta.queue,
                &delta.kind,
                delta.minute.timestamp(),
            ) else {
                continue;
            };
            d.counts.add(&delta.counts);
            d.wait.merge(&delta.wait);
            d.run.merge(&delta.run);
        }
        dropped
    }
}

/// The delta of (queue, kind, minute), made when missing; the names are copied only then.
fn entry<'a>(
    pending: &'a mut (Pending, usize),
    queue: &str,
    kind: &str,
    minute: i64,
) -> Option<&'a mut Delta> {
    let (map, keys) = pending;
    if !map.contains_key(queue) {
        map.insert(queue.to_owned(), HashMap::new());
    }
    let kinds = map.get_mut(queue)?;
    if !kinds.contains_key(kind) {
        kinds.insert(kind.to_owned(), HashMap::new());
    }
    let minutes = kinds.get_mut(kind)?;
    Some(minutes.entry(minute).or_insert_with(|| {
        *keys += 1;
        Box::default()
    }))
}

/// Writes what `recorder` accumulated; on failure puts it back for the next flush. Returns
/// how many rows were written.
pub async fn flush_once(recorder: &Recorder, store: &dyn Store) -> Result<usize> {
    let deltas = recorder.take();
    if deltas.is_empty() {
        return Ok(0);
    }
    let n = deltas.len();
    match store.add_stats(deltas.clone()).await {
        Ok(()) => Ok(n),
        Err(e) => {
            let dropped = recorder.restore(deltas);
            if dropped > 0 {
                tracing::error!(dropped, "dashboard history: too many minutes waiting to be written while the store fails; dropped the oldest");
            }
            Err(e)
        }
    }
}

/// Flushes every `every` until `stop`, then once more.
pub async fn run_flusher(
    recorder: Arc<Recorder>,
    store: Arc<dyn Store>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = ticker.tick() => false,
        };
        if let Err(e) = flush_once(&recorder, store.as_ref()).await {
            tracing::warn!(error = %e, "writing dashboard history failed; keeping it for the next flush");
        }
        if stopping {
            return;
        }
    }
}

// ---- Reading ----

/// How [`StatsParams`] groups buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatsBy {
    /// One series for everything.
    #[default]
    Total,
    /// One series per queue.
    Queue,
    /// One series per kind.
    Kind,
}

/// Read merged buckets of the aggregates (see [`Store::stats`](crate::store::Store::stats)).
#[derive(Debug, Clone)]
pub struct StatsParams {
    /// First minute (rounded down to a whole minute).
    pub since: DateTime<Utc>,
    /// End of the window, exclusive (rounded up to a whole minute).
    pub until: DateTime<Utc>,
    /// Bucket width: a whole number of minutes; the whole window gives one bucket per group.
    pub step: Duration,
    /// Grouping.
    pub by: StatsBy,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
}

/// Why [`StatsParams`] were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BadStatsParams {
    /// The parameter at fault.
    pub field: &'static str,
    /// What to do about it.
    pub message: String,
}

impl StatsParams {
    /// The window aligned to whole minutes, checked: `since < until`, a step that is a whole,
    /// positive number of minutes, at most [`MAX_STATS_WINDOW`] and [`MAX_STATS_BUCKETS`].
    pub fn checked(mut self) -> std::result::Result<StatsParams, BadStatsParams> {
        self.since = minute_of(self.since);
        let up = minute_of(self.until);
        self.until = if up == self.until {
            up
        } else {
            up + chrono::Duration::minutes(1)
        };
        if self.since >= self.until {
            return Err(BadStatsParams {
                field: "since",
                message: "since must be before until".into(),
            });
        }
        let window = (self.until - self.since).to_std().unwrap_or(Duration::MAX);
        if window > MAX_STATS_WINDOW {
            return Err(BadStatsParams {
                field: "since",
                message: format!(
                    "the window is {} days; ask for at most {} days at once",
                    window.as_secs() / 86_400,
                    MAX_STATS_WINDOW.as_secs() / 86_400
                ),
            });
        }
        let step = self.step.as_secs();
        if step == 0 || step % 60 != 0 || self.step.subsec_nanos() != 0 {
            return Err(BadStatsParams {
                field: "step",
                message: format!(
                    "step must be a whole number of minutes in seconds (60, 300, 3600…), not {}s",
                    self.step.as_secs_f64()
                ),
            });
        }
        let buckets = window.as_secs().div_ceil(step);
        if buckets > MAX_STATS_BUCKETS {
            return Err(BadStatsParams {
                field: "step",
                message: format!("{buckets} buckets asked; at most {MAX_STATS_BUCKETS}: use a larger step or a shorter window"),
            });
        }
        Ok(self)
    }
}

/// One merged bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsBucket {
    /// Start of the bucket.
    pub at: DateTime<Utc>,
    /// The queue (grouped by queue), else `null`.
    pub queue: Option<String>,
    /// The kind (grouped by kind), else `null`.
    pub kind: Option<String>,
    /// Attempts ended per outcome.
    #[serde(flatten)]
    pub counts: Counts,
    /// Median wait from due to start, in milliseconds (`null`: no attempt started).
    pub wait_p50_ms: Option<f64>,
    /// 95th percentile of the wait.
    pub wait_p95_ms: Option<f64>,
    /// Median run time in milliseconds.
    pub run_p50_ms: Option<f64>,
    /// 95th percentile of the run time.
    pub run_p95_ms: Option<f64>,
}

/// What [`Store::stats`](crate::store::Store::stats) answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsAnswer {
    /// The bucket width.
    pub step_seconds: u64,
    /// Start of the window (a whole minute).
    pub since: DateTime<Utc>,
    /// End of the window, exclusive.
    pub until: DateTime<Utc>,
    /// Buckets with activity, by time then group; empty buckets are left out.
    pub buckets: Vec<StatsBucket>,
}

/// A bucket's start (unix seconds) and its group (queue, kind).
type GroupKey = (i64, Option<String>, Option<String>);

/// Merges stored rows into buckets as `params` asks; backends feed it the rows of the window.
#[derive(Debug)]
pub struct Merger {
    params: StatsParams,
    groups: std::collections::BTreeMap<GroupKey, (Counts, Sketch, Sketch)>,
}

impl Merger {
    /// A merger for `params` (already [`StatsParams::checked`]).
    pub fn new(params: StatsParams) -> Merger {
        Merger {
            params,
            groups: Default::default(),
        }
    }

    /// Adds one stored row.
    pub fn add(&mut self, row: &StatsDelta) {
        let p = &self.params;
        if row.minute < p.since || row.minute >= p.until {
            return;
        }
        let step = p.step.as_secs() as i64;
        let offset = (row.minute - p.since).num_seconds().div_euclid(step) * step;
        let at = p.since.timestamp() + offset;
        let (queue, kind) = match p.by {
            StatsBy::Total => (None, None),
            StatsBy::Queue => (Some(row.queue.clone()), None),
            StatsBy::Kind => (None, Some(row.kind.clone())),
        };
        let g = self.groups.entry((at, queue, kind)).or_default();
        g.0.add(&row.counts);
        g.1.merge(&row.wait);
        g.2.merge(&row.run);
    }

    /// The answer.
    pub fn finish(self) -> StatsAnswer {
        let buckets = self
            .groups
            .into_iter()
            .filter_map(|((at, queue, kind), (counts, wait, run))| {
                Some(StatsBucket {
                    at: DateTime::from_timestamp(at, 0)?,
                    queue,
                    kind,
                    counts,
                    wait_p50_ms: wait.quantile_ms(0.5),
                    wait_p95_ms: wait.quantile_ms(0.95),
                    run_p50_ms: run.quantile_ms(0.5),
                    run_p95_ms: run.quantile_ms(0.95),
                })
            })
            .collect();
        StatsAnswer {
            step_seconds: self.params.step.as_secs(),
            since: self.params.since,
            until: self.params.until,
            buckets,
        }
    }
}

// ---- Events ----

/// Event kinds the runtime writes.
pub mod event_kind {
    /// The rescuer handed back a dead node's or a vanished worker's jobs.
    pub const RESCUE: &str = "rescue";
    /// A node registered.
    pub const NODE_JOINED: &str = "node_joined";
    /// A node deregistered (shutdown) or was declared dead.
    pub const NODE_LEFT: &str = "node_left";
    /// A durable cleanup failed every one of its tries (`mend doctor` counts these per
    /// cleanup to find one failing again and again).
    pub const CLEANUP_FAILED: &str = "cleanup_failed";
    /// A rollout's guard cut its canary off (detail: the rollout and the evidence).
    pub const ROLLOUT_CUT_OFF: &str = "rollout_cut_off";
    /// A rollout's canary became stable.
    pub const ROLLOUT_PROMOTED: &str = "rollout_promoted";
}

/// One cluster event (a rescue, a node joining or leaving).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// `rescue`, `node_joined`, `node_left` or `cleanup_failed` (see [`event_kind`]).
    pub kind: String,
    /// The node it is about (the dead node, the vanished worker's lease owner).
    pub node: String,
    /// Details, by kind (see the README's "History and events").
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
}

/// Read events (see [`Store::events`](crate::store::Store::events)), newest first.
#[derive(Debug, Clone)]
pub struct EventsParams {
    /// At or after this.
    pub since: DateTime<Utc>,
    /// Before this.
    pub until: DateTime<Utc>,
    /// Only these kinds (empty: all).
    pub kinds: Vec<String>,
    /// At most this many (capped at [`MAX_EVENTS`]).
    pub limit: usize,
}

/// Most events one read returns.
pub const MAX_EVENTS: usize = 1000;

/// Delete aggregates and events older than a cutoff, a bounded batch at a time.
#[derive(Debug, Clone)]
pub struct PruneHistoryParams {
    /// Minutes and events before this go.
    pub before: DateTime<Utc>,
    /// At most this many rows of each table per call.
    pub limit: usize,
}

/// One pruning pass of the history: batches until a short one (bounded in time like the
/// job pruner's).
pub async fn prune_history_once(
    store: &dyn Store,
    now: DateTime<Utc>,
    retention: Duration,
) -> Result<u64> {
    let before = crate::maintenance::pruner::cutoff(now, retention);
    crate::maintenance::pruner::in_batches(|limit| {
        store.prune_history(PruneHistoryParams { before, limit })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_a_quarter_and_quantiles_stay_within_one() {
        let mut s = Sketch::default();
        for ms in 1..=1000 {
            s.record_ms(ms as f64);
        }
        let p50 = s.quantile_ms(0.5).unwrap();
        let p95 = s.quantile_ms(0.95).unwrap();
        assert!((p50 / 500.0 - 1.0).abs() < 0.13, "p50 {p50}");
        assert!((p95 / 950.0 - 1.0).abs() < 0.13, "p95 {p95}");
        assert_eq!(Sketch::bucket_of(0.05), 0);
        assert_eq!(Sketch::bucket_of(1e12), SKETCH_BUCKETS - 1);
    }

    #[test]
    fn text_and_dense_forms_round_trip_and_merge_adds() {
        let mut a = Sketch::default();
        a.record_ms(3.0);
        a.record_ms(3.0);
        a.record_ms(4000.0);
        assert_eq!(Sketch::from_text(&a.to_text()).unwrap(), a);
        assert_eq!(Sketch::from_dense(&a.to_dense()), a);
        assert_eq!(Sketch::from_text("").unwrap(), Sketch::default());
        assert!(Sketch::from_text("999:1").is_err());
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.count(), 6);
    }

    #[test]
    fn recorder_takes_what_was_recorded_and_restores_within_bound() {
        let r = Recorder::default();
        let at = DateTime::from_timestamp(120 + 7, 0).unwrap();
        r.record(
            "q",
            "k",
            at,
            Ended::Completed,
            Some(Duration::from_millis(2)),
            Some(Duration::from_millis(9)),
        );
        r.record("q", "k", at, Ended::Retried, None, None);
        let taken = r.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].minute.timestamp(), 120);
        assert_eq!(taken[0].counts.completed, 1);
        assert_eq!(taken[0].counts.retried, 1);
        assert_eq!(taken[0].wait.count(), 1);
        assert!(r.take().is_empty());
        assert_eq!(r.restore(taken.clone()), 0);
        assert_eq!(r.take(), taken);
    }

    #[test]
    fn params_are_aligned_and_bounded() {
        let t = |s| DateTime::from_timestamp(s, 0).unwrap();
        let p = StatsParams {
            since: t(61),
            until: t(119),
            step: Duration::from_secs(60),
            by: StatsBy::Total,
            queue: None,
            kind: None,
        };
        let c = p.clone().checked().unwrap();
        assert_eq!((c.since, c.until), (t(60), t(120)));
        let bad = StatsParams {
            step: Duration::from_secs(90),
            ..p.clone()
        };
        assert_eq!(bad.checked().unwrap_err().field, "step");
        let long = StatsParams {
            until: t(40 * 86_400),
            ..p.clone()
        };
        assert_eq!(long.checked().unwrap_err().field, "since");
        let many = StatsParams {
            until: t(20 * 86_400),
            ..p
        };
        assert!(many.checked().unwrap_err().message.contains("buckets"));
    }
}
