//! Every SQL statement the SQLite store runs, named, in one place (River keeps its driver's SQL
//! the same way, in per-table files beside a thin driver).
//!
//! The pieces several statements share are written once here: the attempt fence
//! ([`FENCE`]), "a pending cancel request wins" ([`cancel_wins`]), and the expressions that
//! append to the `events` and `errors` JSON columns. This module holds text only: it runs
//! nothing and decodes nothing, so the plan tests can EXPLAIN exactly what the store runs.

use std::sync::LazyLock;

/// Size the stored events of a job are kept near, as SQLite measures it (`octet_length` of the
/// JSON text): past it, each new event pushes out the oldest stored one. It is core's bound
/// ([`mend::job::MAX_TIMELINE_BYTES`], 32 KiB), so a job's history is cut at the same size
/// whichever store holds it: enough for the recent attempts of a job retried hundreds of
/// times, small enough that reading a job never drags an unbounded list along.
pub(crate) const MAX_TIMELINE_BYTES: usize = mend::job::MAX_TIMELINE_BYTES;

/// Every column of `mend_jobs`, in the order `row::row_to_job` reads them.
pub(crate) const COLS: &str = "id, queue, kind, args, state, priority, attempt, max_attempts, run_at, created_at, attempted_at, finalized_at, lease_owner, lease_expires_at, cancel_requested, errors, unique_key, tags, result, timeout_ms, events, trace_parent, checkpoint, pending_cleanups, limit_key, version";

/// [`COLS`] without the stored events, for claims: running a job does not need its history.
const COLS_TO_RUN: &str = "id, queue, kind, args, state, priority, attempt, max_attempts, run_at, created_at, attempted_at, finalized_at, lease_owner, lease_expires_at, cancel_requested, errors, unique_key, tags, result, timeout_ms, NULL, trace_parent, checkpoint, pending_cleanups, limit_key, version";

/// The fence every write on behalf of a running attempt carries: the job, the attempt and the
/// lease owner as parameters 1, 2 and 3. A worker that lost its lease matches no row.
pub(crate) const FENCE: &str =
    "WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?3 AND state = 'running'";

/// `state` and `finalized_at` for an outcome a pending cancel request overrides: the job is
/// `cancelled` (finalized at `finalized_param`) instead of going to `state`, finalized at
/// `otherwise_finalized`.
fn cancel_wins(state: &str, finalized_param: &str, otherwise_finalized: &str) -> String {
    format!(
        "state = CASE WHEN cancel_requested THEN 'cancelled' ELSE {state} END, \
         finalized_at = CASE WHEN cancel_requested THEN {finalized_param} ELSE {otherwise_finalized} END"
    )
}

/// `events` with the JSON value `event` appended; past [`MAX_TIMELINE_BYTES`] the oldest stored
/// event makes room, and a damaged column starts over. The one place that builds this
/// expression. Only rare paths write events (see [`mend::job::build_timeline`]).
fn with_event(event: &str) -> String {
    format!(
        "json_insert(CASE WHEN NOT json_valid(events) THEN '[]' WHEN octet_length(events) > {MAX_TIMELINE_BYTES} THEN json_remove(events, '$[0]') ELSE events END, '$[#]', {event})"
    )
}

/// The assignment that appends the JSON event in parameter `param`.
fn push_event(param: &str) -> String {
    format!("events = {}", with_event(&format!("json({param})")))
}

/// `column` (microseconds) as the RFC 3339 text serde reads back exactly.
fn ts_text(column: &str) -> String {
    format!("strftime('%Y-%m-%dT%H:%M:%S', {column} / 1000000, 'unixepoch') || '.' || printf('%06d', {column} % 1000000) || 'Z'")
}

/// Like [`push_event`], for an event that ends an attempt: it records when the attempt started
/// (from `attempted_at`, to the microsecond), so the timeline can show the attempt's claim
/// without the claim having written anything.
fn push_attempt_event(param: &str) -> String {
    format!(
        "events = {}",
        with_event(&format!(
            "json_set(json({param}), '$.started_at', {})",
            ts_text("attempted_at")
        ))
    )
}

/// Like [`push_attempt_event`] for outcomes a pending cancel request turns into `cancelled`
/// (retry, snooze, release, rescue): the event then says so, matching the state.
fn push_attempt_event_or_cancelled(param: &str) -> String {
    format!(
        "events = {}",
        with_event(&format!(
            "json_set(json({param}), '$.started_at', {}, '$.event', CASE WHEN cancel_requested THEN 'cancelled' ELSE json_extract({param}, '$.event') END)",
            ts_text("attempted_at")
        ))
    )
}

/// The errors column with the JSON record in `param` appended (a damaged column starts over
/// rather than failing).
fn push_error(param: &str) -> String {
    format!("errors = json_insert(CASE WHEN json_valid(errors) THEN errors ELSE '[]' END, '$[#]', json({param}))")
}

// --- mend_jobs: inserts and reads -------------------------------------------------------------

/// Whether a row holds its unique key (unique jobs, `mend::unique`): it has a key, and its
/// state is one of its `unique_states` (bit `1 << i` for the i-th state of
/// `mend::JobState::ALL`; NULL: every state). The unique index (migration 9) is partial on
/// exactly this text and the insert's ON CONFLICT repeats it: SQLite matches the two word for
/// word (a test checks). CASE rather than IN, which would build a temporary table per write.
pub(crate) const UNIQUE_HELD: &str = "unique_key IS NOT NULL AND (unique_states IS NULL OR (unique_states & CASE state WHEN 'scheduled' THEN 1 WHEN 'available' THEN 2 WHEN 'running' THEN 4 WHEN 'retryable' THEN 8 WHEN 'completed' THEN 16 WHEN 'cancelled' THEN 32 ELSE 64 END) <> 0)";

/// Inserts one job; a taken unique key inserts nothing.
pub(crate) const INSERT: &str = "INSERT INTO mend_jobs (id, queue, kind, args, state, priority, max_attempts, run_at, created_at, unique_key, tags, timeout_ms, trace_parent, unique_states, limit_key)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
     ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND (unique_states IS NULL OR (unique_states & CASE state WHEN 'scheduled' THEN 1 WHEN 'available' THEN 2 WHEN 'running' THEN 4 WHEN 'retryable' THEN 8 WHEN 'completed' THEN 16 WHEN 'cancelled' THEN 32 ELSE 64 END) <> 0) DO NOTHING";

/// The job holding unique key `?1` (finished jobs that let it go may share it).
pub(crate) static BY_UNIQUE_KEY: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLS} FROM mend_jobs WHERE unique_key = ?1 AND {UNIQUE_HELD}")
});

/// For a retry of finished job `?1` with a unique key: its key, and the job holding that key
/// now, if any.
pub(crate) static UNIQUE_HOLDER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT r.unique_key, (SELECT id FROM mend_jobs WHERE unique_key = r.unique_key AND id <> r.id AND {UNIQUE_HELD} LIMIT 1)
         FROM mend_jobs r WHERE r.id = ?1 AND r.unique_key IS NOT NULL AND r.state IN ('completed', 'cancelled', 'discarded')"
    )
});

/// One job by id.
pub(crate) static GET: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLS} FROM mend_jobs WHERE id = ?1"));

/// The start of a job listing; `jobs::list` appends its filters, order and limit.
pub(crate) static LIST: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {COLS} FROM mend_jobs WHERE 1 = 1"));

/// Counts per queue and state: one branch per partial index, so every count is an index scan.
/// [`QUEUE_COUNTS`] without the finished states (one branch per live partial index).
pub(crate) const LIVE_QUEUE_COUNTS: &str =
    "SELECT queue, 'available', count(*) FROM mend_jobs WHERE state = 'available' GROUP BY queue
     UNION ALL
     SELECT queue, state, count(*) FROM mend_jobs WHERE (state = 'scheduled' OR state = 'retryable') GROUP BY queue, state
     UNION ALL
     SELECT queue, 'running', count(*) FROM mend_jobs WHERE state = 'running' GROUP BY queue";

pub(crate) const QUEUE_COUNTS: &str =
    "SELECT queue, 'available', count(*) FROM mend_jobs WHERE state = 'available' GROUP BY queue
     UNION ALL
     SELECT queue, state, count(*) FROM mend_jobs WHERE (state = 'scheduled' OR state = 'retryable') GROUP BY queue, state
     UNION ALL
     SELECT queue, 'running', count(*) FROM mend_jobs WHERE state = 'running' GROUP BY queue
     UNION ALL
     SELECT queue, state, count(*) FROM mend_jobs WHERE finalized_at IS NOT NULL GROUP BY queue, state";

/// Deletes up to `?2` jobs finalized before `?1`, oldest first.
pub(crate) const PRUNE: &str = "DELETE FROM mend_jobs WHERE id IN (
        SELECT id FROM mend_jobs WHERE finalized_at IS NOT NULL AND finalized_at < ?1
        ORDER BY finalized_at LIMIT ?2)";

/// Takes a row that cannot be decoded out of circulation, with the error record `?3`.
pub(crate) static DISCARD_UNREADABLE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE mend_jobs SET state = 'discarded', finalized_at = ?2, lease_expires_at = NULL, {} WHERE id = ?1",
        push_error("?3")
    )
});

// --- mend_jobs: claims ------------------------------------------------------------------------

/// Whether queue `?1` has available jobs or any queue has due ones: an idle queue is probed
/// with this on a reader before its claim takes the write lock.
pub(crate) const CLAIM_PROBE: &str =
    "SELECT EXISTS (SELECT 1 FROM mend_jobs WHERE state = 'available' AND queue = ?1)
         OR EXISTS (SELECT 1 FROM mend_jobs WHERE (state = 'scheduled' OR state = 'retryable') AND run_at <= ?2)";

/// Whether any scheduled or retryable job is due at `?1` (one index seek).
pub(crate) const DUE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM mend_jobs WHERE (state = 'scheduled' OR state = 'retryable') AND run_at <= ?1)";

/// Makes up to `?2` jobs due at `?1` available, the longest-waiting first.
pub(crate) const PROMOTE: &str = "UPDATE mend_jobs SET state = 'available' WHERE id IN (
        SELECT id FROM mend_jobs WHERE (state = 'scheduled' OR state = 'retryable') AND run_at <= ?1
        ORDER BY run_at LIMIT ?2)";

/// The head of a claim: available jobs of queue `?1`.
static CLAIM_HEAD: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {COLS_TO_RUN} FROM mend_jobs WHERE state = 'available' AND queue = ?1")
});

/// The order (and limit `?2`) a claim takes jobs in, which the claim index serves.
const CLAIM_ORDER: &str = " ORDER BY priority, run_at, id LIMIT ?2";

/// The next `?2` available jobs of queue `?1`, of any kind.
pub(crate) static CLAIM: LazyLock<String> =
    LazyLock::new(|| format!("{}{CLAIM_ORDER}", *CLAIM_HEAD));

/// Like [`CLAIM`], for jobs of `kinds` kinds only (parameters 3 onwards).
pub(crate) fn claim_kinds(kinds: usize) -> String {
    let placeholders: Vec<String> = (0..kinds).map(|i| format!("?{}", i + 3)).collect();
    format!(
        "{} AND kind IN ({}){CLAIM_ORDER}",
        *CLAIM_HEAD,
        placeholders.join(", ")
    )
}

/// Marks one selected job running for lease owner `?3` until `?4`, run by handler version
/// `?5` (NULL: not routed).
pub(crate) const CLAIM_ONE: &str =
    "UPDATE mend_jobs SET state = 'running', attempt = attempt + 1, attempted_at = ?2,
        lease_owner = ?3, lease_expires_at = ?4, version = ?5 WHERE id = ?1 AND state = 'available'";

/// Hands jobs of kind `?1` whose latest attempt ran canary `?2` (started at or after `?3`)
/// and failed back to stable at `?4`: at most `?5`, each with event `?6`. The attempts the
/// canary failed are given back by raising `max_attempts`, never by lowering `attempt`, so
/// the fence of a late canary write still refuses it; each error given back is marked, so a
/// job handed back twice (a canary attempt still running at the cut-off) is not paid twice.
pub(crate) static HEAL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE mend_jobs SET state = 'available', run_at = ?4, finalized_at = NULL, lease_expires_at = NULL,
            max_attempts = max_attempts + (SELECT count(*) FROM json_each(CASE WHEN json_valid(errors) THEN errors ELSE '[]' END)
                                           WHERE json_extract(value, '$.version') = ?2
                                             AND coalesce(json_extract(value, '$.given_back'), 0) = 0),
            errors = CASE WHEN json_valid(errors) THEN (SELECT json_group_array(CASE
                         WHEN json_extract(value, '$.version') = ?2 THEN json_set(value, '$.given_back', json('true'))
                         ELSE json(value) END) FROM (SELECT value FROM json_each(errors) ORDER BY key)) ELSE errors END,
            version = NULL, {}
         WHERE id IN (SELECT id FROM mend_jobs WHERE kind = ?1 AND version = ?2 AND version IS NOT NULL
                      AND state <> 'running' AND state <> 'completed' AND state <> 'cancelled'
                      AND attempted_at >= ?3 ORDER BY attempted_at LIMIT ?5)
         RETURNING id",
        push_event("?6")
    )
});

// --- mend_jobs: what a running attempt writes (all fenced) -----------------------------------

/// The hot path: completion writes no event (the timeline derives it from `finalized_at`).
/// A completed attempt's durable cleanups are dropped with it.
pub(crate) static COMPLETED: LazyLock<String> = LazyLock::new(|| {
    format!("UPDATE mend_jobs SET state = 'completed', finalized_at = ?4, result = ?5, lease_expires_at = NULL, pending_cleanups = NULL {FENCE}")
});

/// A completion whose attempt ran cleanups: they are worth a timeline event (`?6`).
pub(crate) static COMPLETED_WITH_EVENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE mend_jobs SET state = 'completed', finalized_at = ?4, result = ?5, pending_cleanups = NULL, {}, lease_expires_at = NULL {FENCE}",
        push_attempt_event("?6")
    )
});

/// Back to `retryable` at `?4` with error `?5`. A cancel request that arrived during the
/// attempt wins over retry, snooze and release.
pub(crate) static RETRY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE mend_jobs SET {}, run_at = ?4, {}, {}, lease_expires_at = NULL {FENCE}",
        cancel_wins("'retryable'", "?6", "NULL"),
        push_error("?5"),
        push_attempt_event_or_cancelled("?7")
    )
});

/// Finalized (`discarded` or `cancelled`, in `?6`) with error `?5`.
pub(crate) static FINISH_WITH_ERROR: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE mend_jobs SET state = ?6, finalized_at = ?4, {}, {}, lease_expires_at = NULL {FENCE}",
        push_error("?5"),
        push_attempt_event("?7")
    )
});

/// Put off to `?4` (state `?5`) without using up the attempt.
pub(crate) static SNOOZE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE mend_jobs SET {}, run_at = ?4, attempt = attempt - 1, {}, lease_expires_at = NULL {FENCE}",
        cancel_wins("?5", "?6", "NULL"),
        push_attempt_event_or_cancelled("?7")
    )
});

/// Given back unfinished (graceful shutdown) without using up the attempt. A released job
/// keeps its run_at, and so its place in the queue.
pub(crate) static RELEASE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE mend_jobs SET {}, attempt = attempt - 1, {}, lease_expires_at = NULL {FENCE}",
        cancel_wins("'available'", "?4", "NULL"),
        push_attempt_event_or_cancelled("?5")
    )
});

/// Stores the attempt's checkpoint `?4`.
pub(crate) static CHECKPOINT: LazyLock<String> =
    LazyLock::new(|| format!("UPDATE mend_jobs SET checkpoint = ?4 {FENCE}"));

/// The attempt's pending durable cleanups.
pub(crate) static PENDING_CLEANUPS: LazyLock<String> =
    LazyLock::new(|| format!("SELECT pending_cleanups FROM mend_jobs {FENCE}"));

/// Replaces a job's pending durable cleanups with `?2`, appending event `?3` unless it is NULL
/// (the caller has just read them through the fence, in the same write).
pub(crate) static SET_PENDING_CLEANUPS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE mend_jobs SET pending_cleanups = ?2, events = CASE WHEN ?3 IS NULL THEN events ELSE {} END WHERE id = ?1",
        with_event("json(?3)")
    )
});

/// Extends the attempt's lease to `?4`, returning whether a cancel was requested.
pub(crate) static EXTEND_LEASE: LazyLock<String> = LazyLock::new(|| {
    format!("UPDATE mend_jobs SET lease_expires_at = ?4 {FENCE} RETURNING cancel_requested")
});

// --- mend_jobs: rescue, cancel, retry on request ---------------------------------------------

/// Running jobs of the dead nodes in JSON array `?1`, or whose lease expired before `?2`.
pub(crate) static RESCUE_CANDIDATES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLS} FROM mend_jobs WHERE state = 'running'
         AND (lease_owner IN (SELECT value FROM json_each(?1)) OR lease_expires_at < ?2)"
    )
});

/// Takes one running attempt (`?5`, `?6`) away from its lost worker: to state `?1`, with
/// error `?4` and event `?7`, to run again at `?8`. Fenced by attempt only: the owner is the one that is gone. A
/// job someone asked to cancel is not run again after its worker died.
pub(crate) static RESCUE_ONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE mend_jobs SET {}, run_at = ?8, lease_expires_at = NULL, {}, {} WHERE id = ?5 AND attempt = ?6 AND state = 'running'",
        cancel_wins("?1", "?2", "?3"),
        push_error("?4"),
        push_attempt_event_or_cancelled("?7")
    )
});

/// Cancels a job that is not running, with event `?3`.
pub(crate) static CANCEL_WAITING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE mend_jobs SET state = 'cancelled', finalized_at = ?2, {} WHERE id = ?1 AND state IN ('scheduled', 'available', 'retryable')",
        push_event("?3")
    )
});

/// Asks a running job's worker to cancel it, with event `?2`.
pub(crate) static CANCEL_RUNNING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE mend_jobs SET cancel_requested = 1, {} WHERE id = ?1 AND state = 'running' AND cancel_requested = 0",
        push_event("?2")
    )
});

/// Runs a finished job again at `?2`, with event `?3`. A plain completion stored no event (the
/// timeline derived it from finalized_at, which the retry clears): it is written down first.
pub(crate) static RETRY_FINISHED: LazyLock<String> = LazyLock::new(|| {
    let completed = format!(
        "json_insert(events, '$[#]', json_object('at', {}, 'event', 'completed', 'attempt', attempt, 'node', lease_owner, 'started_at', {}))",
        ts_text("finalized_at"),
        ts_text("attempted_at")
    );
    format!(
        "UPDATE mend_jobs SET state = 'available', run_at = ?2, finalized_at = NULL,
            cancel_requested = 0, max_attempts = max(max_attempts, attempt + 1),
            checkpoint = CASE WHEN state = 'completed' THEN NULL ELSE checkpoint END,
            events = json_insert(CASE WHEN NOT json_valid(events) THEN '[]'
                WHEN state = 'completed' AND NOT EXISTS (SELECT 1 FROM json_each(events)
                    WHERE json_extract(value, '$.event') = 'completed' AND json_extract(value, '$.attempt') = attempt)
                THEN {completed}
                ELSE events END, '$[#]', json(?3))
         WHERE id = ?1 AND state IN ('completed', 'cancelled', 'discarded')"
    )
});

// --- mend_nodes ---------------------------------------------------------------------------------

/// Registers a node, or refreshes its `last_seen`.
pub(crate) const REGISTER_NODE: &str = "INSERT INTO mend_nodes (id, host, pid, process_key, started_at, last_seen, kinds, queues, build, in_flight, draining, versions) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
     ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, kinds = excluded.kinds, queues = excluded.queues, build = excluded.build, in_flight = excluded.in_flight, draining = excluded.draining, versions = excluded.versions";

/// A node's liveness heartbeat, with its attempts in flight and whether it drains.
pub(crate) const HEARTBEAT_NODE: &str =
    "UPDATE mend_nodes SET last_seen = ?2, in_flight = ?3, draining = ?4 WHERE id = ?1";

/// Every registered node.
pub(crate) const LIST_NODES: &str =
    "SELECT id, host, pid, process_key, started_at, last_seen, kinds, queues, build, in_flight, draining, versions FROM mend_nodes ORDER BY id";

// --- mend_stats, mend_events (dashboard history) ------------------------------------------------

/// The sketches of one aggregate row, to merge a delta into.
pub(crate) const STATS_SKETCHES: &str =
    "SELECT wait, run FROM mend_stats WHERE minute = ?1 AND queue = ?2 AND kind = ?3";

/// Adds a delta to an aggregate row (the sketches, merged by the caller, are replaced).
pub(crate) const STATS_ADD: &str = "INSERT INTO mend_stats (minute, queue, kind, completed, retried, failed, cancelled, lost, snoozed, wait, run)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
     ON CONFLICT (minute, queue, kind) DO UPDATE SET completed = completed + excluded.completed,
        retried = retried + excluded.retried, failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled, lost = lost + excluded.lost,
        snoozed = snoozed + excluded.snoozed, wait = excluded.wait, run = excluded.run";

/// The aggregate rows of a window (by the primary key's leading `minute`), optionally of one
/// queue (`?3`) and one kind (`?4`).
pub(crate) const STATS_READ: &str = "SELECT minute, queue, kind, completed, retried, failed, cancelled, lost, snoozed, wait, run
     FROM mend_stats WHERE minute >= ?1 AND minute < ?2 AND (?3 IS NULL OR queue = ?3) AND (?4 IS NULL OR kind = ?4)";

/// Deletes up to `?2` aggregate rows before minute `?1`, oldest first.
pub(crate) const STATS_PRUNE: &str = "DELETE FROM mend_stats WHERE (minute, queue, kind) IN
     (SELECT minute, queue, kind FROM mend_stats WHERE minute < ?1 ORDER BY minute LIMIT ?2)";

/// Records one event.
pub(crate) const EVENT_ADD: &str =
    "INSERT INTO mend_events (at, kind, node, detail) VALUES (?1, ?2, ?3, ?4)";

/// Events in a window, newest first; `?3` is a JSON array of kinds or NULL for all.
pub(crate) const EVENTS_READ: &str = "SELECT at, kind, node, detail FROM mend_events
     WHERE at >= ?1 AND at < ?2 AND (?3 IS NULL OR kind IN (SELECT value FROM json_each(?3)))
     ORDER BY at DESC, id DESC LIMIT ?4";

/// Deletes up to `?2` events before `?1`, oldest first.
pub(crate) const EVENTS_PRUNE: &str =
    "DELETE FROM mend_events WHERE id IN (SELECT id FROM mend_events WHERE at < ?1 ORDER BY at LIMIT ?2)";

/// Forgets one node.
pub(crate) const DELETE_NODE: &str = "DELETE FROM mend_nodes WHERE id = ?1";

// --- mend_queues --------------------------------------------------------------------------------

/// Whether queue `?1` is paused.
pub(crate) const QUEUE_PAUSED: &str =
    "SELECT EXISTS (SELECT 1 FROM mend_queues WHERE name = ?1 AND paused = 1)";

/// Pauses or resumes a queue.
pub(crate) const SET_QUEUE_PAUSED: &str =
    "INSERT INTO mend_queues (name, paused, updated_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at";

/// The paused queues, by name.
pub(crate) const PAUSED_QUEUES: &str =
    "SELECT name FROM mend_queues WHERE paused = 1 ORDER BY name";

// --- mend_limits, mend_limit_buckets --------------------------------------------------------

/// Whether queue `?1` has limits (one probe of a tiny table per claim).
pub(crate) const QUEUE_LIMITED: &str = "SELECT EXISTS (SELECT 1 FROM mend_limits WHERE queue = ?1)";

/// The limits of queue `?1`, with the waiting count each last wrote.
pub(crate) const LIMITS_OF_QUEUE: &str =
    "SELECT spec, waiting FROM mend_limits WHERE queue = ?1 ORDER BY name";

/// Every limit.
pub(crate) const LIMITS: &str = "SELECT spec, waiting, waiting_at FROM mend_limits ORDER BY name";

/// What the running attempts of queue `?1` count under (bounded by the attempts running).
pub(crate) const RUNNING_OF_QUEUE: &str =
    "SELECT kind, args, limit_key FROM mend_jobs WHERE state = 'running' AND queue = ?1";

/// One bucket, by limit `?1` and key `?2`.
pub(crate) const BUCKET: &str =
    "SELECT tokens, at FROM mend_limit_buckets WHERE limit_name = ?1 AND key = ?2";

/// Writes one bucket.
pub(crate) const SAVE_BUCKET: &str =
    "INSERT INTO mend_limit_buckets (limit_name, key, tokens, at) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (limit_name, key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at";

/// Writes how many jobs limit `?1` held back, at `?3`.
pub(crate) const SAVE_WAITING: &str =
    "UPDATE mend_limits SET waiting = ?2, waiting_at = ?3 WHERE name = ?1";

/// How many limits queue `?1` has besides `?2`.
pub(crate) const OTHER_LIMITS_OF_QUEUE: &str =
    "SELECT count(*) FROM mend_limits WHERE queue = ?1 AND name <> ?2";

/// Limit `?1` as stored.
pub(crate) const LIMIT_SPEC: &str = "SELECT spec FROM mend_limits WHERE name = ?1";

/// Creates or replaces a limit.
pub(crate) const UPSERT_LIMIT: &str =
    "INSERT INTO mend_limits (name, queue, spec, updated_at) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, spec = excluded.spec, updated_at = excluded.updated_at";

/// Removes limit `?1`.
pub(crate) const DELETE_LIMIT: &str = "DELETE FROM mend_limits WHERE name = ?1";

/// Deletes up to `?3` buckets of limit `?1` written before `?2` (full by now).
pub(crate) const PRUNE_BUCKETS: &str = "DELETE FROM mend_limit_buckets WHERE rowid IN (
    SELECT rowid FROM mend_limit_buckets WHERE limit_name = ?1 AND at < ?2 LIMIT ?3)";

/// Removes limit `?1`'s buckets.
pub(crate) const DELETE_BUCKETS: &str = "DELETE FROM mend_limit_buckets WHERE limit_name = ?1";

/// The statements on the hot path, by name, for the plan tests
/// ([`crate::SqliteStore::explain_hot_paths`]): what they must stay index-backed.
pub(crate) fn hot_reads() -> Vec<(&'static str, String)> {
    vec![
        ("claim", CLAIM.clone()),
        ("claim_kinds", claim_kinds(2)),
        ("claim_probe", CLAIM_PROBE.to_owned()),
        ("due", DUE_EXISTS.to_owned()),
        ("promote", PROMOTE.to_owned()),
        ("rescue", RESCUE_CANDIDATES.clone()),
        ("complete", COMPLETED.clone()),
        ("extend", EXTEND_LEASE.clone()),
        ("limit_running", RUNNING_OF_QUEUE.to_owned()),
        ("limit_bucket", BUCKET.to_owned()),
    ]
}

/// The writes every job goes through, for the test that keeps temporary tables out of them
/// ([`crate::SqliteStore::hot_write_opcodes`]). Lease extension is not one: its `RETURNING`
/// builds a temporary table, once per held job per heartbeat, not once per job.
pub(crate) fn hot_writes() -> Vec<(&'static str, String)> {
    vec![
        ("insert", INSERT.to_owned()),
        ("claim", CLAIM_ONE.to_owned()),
        ("complete", COMPLETED.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_bound_appears_once_per_event_append() {
        let bound = MAX_TIMELINE_BYTES.to_string();
        for (sql, appends) in [
            (&*COMPLETED_WITH_EVENT, 1),
            (&*RETRY, 1),
            (&*SNOOZE, 1),
            (&*RELEASE, 1),
            (&*RESCUE_ONE, 1),
            (&*CANCEL_WAITING, 1),
            (&*SET_PENDING_CLEANUPS, 1),
            (&*COMPLETED, 0),
        ] {
            assert_eq!(sql.matches(&bound).count(), appends, "{sql}");
        }
    }

    #[test]
    fn the_unique_index_and_the_insert_name_the_same_predicate() {
        // SQLite uses the index for ON CONFLICT only when the two match word for word.
        assert!(INSERT.contains(&format!("WHERE {UNIQUE_HELD} DO NOTHING")));
        assert!(crate::schema::unique_index_migration().contains(&format!("WHERE {UNIQUE_HELD};")));
    }

    #[test]
    fn unique_key_lookups_use_the_unique_index() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::schema::migrate(&conn, ":memory:").unwrap();
        for sql in [&*BY_UNIQUE_KEY, &*UNIQUE_HOLDER] {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([b"k".as_slice()], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().any(|l| l.contains("mend_jobs_unique_held")),
                "{sql}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|l| l.starts_with("SCAN")),
                "{sql}: {plan:?}"
            );
        }
    }

    #[test]
    fn fenced_writes_carry_the_fence() {
        for sql in [
            &*COMPLETED,
            &*COMPLETED_WITH_EVENT,
            &*RETRY,
            &*FINISH_WITH_ERROR,
            &*SNOOZE,
            &*RELEASE,
            &*CHECKPOINT,
            &*PENDING_CLEANUPS,
            &*EXTEND_LEASE,
        ] {
            assert!(sql.contains(FENCE), "{sql}");
        }
    }
}
