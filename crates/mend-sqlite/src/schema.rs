//! The SQLite schema and its versioned migrations. The version lives in `PRAGMA user_version`,
//! read and bumped inside the same `BEGIN IMMEDIATE` transaction, so several processes
//! starting at once migrate exactly once.

use mend::store::{Result, StoreError};
use rusqlite::Connection;

use crate::error::map_err;

/// Migrations in order; index + 1 is the version each one brings the schema to.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE mend_jobs (
    id               BLOB PRIMARY KEY,
    queue            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    args             TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    attempted_at     INTEGER,
    finalized_at     INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    errors           TEXT NOT NULL DEFAULT '[]',
    unique_key       TEXT,
    tags             TEXT NOT NULL DEFAULT '[]',
    result           TEXT,
    timeout_ms       INTEGER
) WITHOUT ROWID;

-- claim: the head of one queue's available jobs, in priority -> run_at -> id order;
-- kind is carried so the kind filter needs no table lookup.
CREATE INDEX mend_jobs_claim ON mend_jobs (queue, priority, run_at, id, kind)
    WHERE state = 'available';
-- promotion of due scheduled and retryable jobs.
-- (OR rather than IN: an IN list makes every INSERT and UPDATE build a temporary table to
-- evaluate the index's condition.)
CREATE INDEX mend_jobs_due ON mend_jobs (run_at) WHERE state = 'scheduled' OR state = 'retryable';
-- rescue and heartbeats: only running jobs, a set bounded by total concurrency.
CREATE INDEX mend_jobs_running ON mend_jobs (lease_owner) WHERE state = 'running';
-- finished jobs (finalized_at is set exactly in the final states), for counts per queue and
-- state and for pruning by age. There is no index over every state: each one costs two
-- b-tree writes per state change on the hot path.
CREATE INDEX mend_jobs_finished ON mend_jobs (finalized_at, queue, state)
    WHERE finalized_at IS NOT NULL;
CREATE UNIQUE INDEX mend_jobs_unique ON mend_jobs (unique_key) WHERE unique_key IS NOT NULL;

CREATE TABLE mend_nodes (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    process_key TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
);
"#,
    // 2: queues that can be paused.
    r#"
CREATE TABLE mend_queues (
    name       TEXT PRIMARY KEY,
    paused     INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);
"#,
    // 3: the per-job timeline.
    r#"
ALTER TABLE mend_jobs ADD COLUMN events TEXT NOT NULL DEFAULT '[]';
"#,
    // 4: the enqueue's W3C trace context.
    r#"
ALTER TABLE mend_jobs ADD COLUMN trace_parent TEXT;
"#,
    // 5: checkpoints.
    r#"
ALTER TABLE mend_jobs ADD COLUMN checkpoint TEXT;
"#,
    // 6: durable cleanups not yet run.
    r#"
ALTER TABLE mend_jobs ADD COLUMN pending_cleanups TEXT;
"#,
    // 7: cron schedules (periodic jobs; see mend::cron). Times in microseconds; args, tags,
    // recent_runs and skipped as JSON text.
    r#"
CREATE TABLE mend_cron (
    name         TEXT PRIMARY KEY,
    schedule     TEXT NOT NULL,
    timezone     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    queue        TEXT NOT NULL,
    args         TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    tags         TEXT NOT NULL,
    catch_up     TEXT NOT NULL,
    catch_up_max INTEGER NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0,
    next_slot    INTEGER NOT NULL,
    last_slot    INTEGER,
    recent_runs  TEXT NOT NULL DEFAULT '[]',
    skipped      TEXT NOT NULL DEFAULT '[]',
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
-- the scheduler's look for due slots: only schedules that are not paused.
CREATE INDEX mend_cron_due ON mend_cron (next_slot) WHERE paused = 0;
"#,
    // 8: rate limits and per-key concurrency limits.
    r#"
ALTER TABLE mend_jobs ADD COLUMN limit_key TEXT;
-- One row per limit; `spec` is the limit as the API shows it (mend::limits::Limit), as JSON.
CREATE TABLE mend_limits (
    name       TEXT PRIMARY KEY,
    queue      TEXT NOT NULL,
    spec       TEXT NOT NULL,
    -- Jobs the latest claim of the queue held back under this limit, and when.
    waiting    INTEGER NOT NULL DEFAULT 0,
    waiting_at INTEGER,
    updated_at INTEGER NOT NULL
);
CREATE INDEX mend_limits_queue ON mend_limits (queue);
-- Rate limits' token buckets, one per (limit, key) that has started jobs. A missing row is a
-- full bucket.
CREATE TABLE mend_limit_buckets (
    limit_name TEXT NOT NULL,
    key        TEXT NOT NULL,
    tokens     REAL NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (limit_name, key)
);
"#,
    // 9: unique jobs. A key is held only while the row's state is one of its unique_states
    // (bit 1 << i for the i-th state in mend::JobState::ALL; NULL, as every existing row has:
    // all states, today's idempotency keys). The predicate is `sql::UNIQUE_HELD`, word for
    // word (a test checks), so the insert's ON CONFLICT finds this index.
    r#"
ALTER TABLE mend_jobs ADD COLUMN unique_states INTEGER;
DROP INDEX mend_jobs_unique;
CREATE UNIQUE INDEX mend_jobs_unique_held ON mend_jobs (unique_key) WHERE unique_key IS NOT NULL AND (unique_states IS NULL OR (unique_states & CASE state WHEN 'scheduled' THEN 1 WHEN 'available' THEN 2 WHEN 'running' THEN 4 WHEN 'retryable' THEN 8 WHEN 'completed' THEN 16 WHEN 'cancelled' THEN 32 ELSE 64 END) <> 0);
"#,
    // 10: kinds each node serves (JSON array of strings), for `mend doctor`.
    r#"
ALTER TABLE mend_nodes ADD COLUMN kinds TEXT NOT NULL DEFAULT '[]';
"#,
    // 11: the dashboard's history. Per-minute aggregates per (minute, queue, kind): counts
    // per outcome and latency sketches (mend::stats::Sketch's sparse text), keyed by minute
    // first so a window's read and pruning walk the primary key. Cluster events by time.
    // Node facts: queues with concurrency (JSON), build, attempts in flight, draining.
    r#"
CREATE TABLE mend_stats (
    minute    INTEGER NOT NULL,
    queue     TEXT NOT NULL,
    kind      TEXT NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    retried   INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    lost      INTEGER NOT NULL DEFAULT 0,
    snoozed   INTEGER NOT NULL DEFAULT 0,
    wait      TEXT NOT NULL DEFAULT '',
    run       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (minute, queue, kind)
) WITHOUT ROWID;
CREATE TABLE mend_events (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    node   TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX mend_events_at ON mend_events (at);
ALTER TABLE mend_nodes ADD COLUMN queues TEXT NOT NULL DEFAULT '[]';
ALTER TABLE mend_nodes ADD COLUMN build TEXT NOT NULL DEFAULT '';
ALTER TABLE mend_nodes ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mend_nodes ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;
"#,
    // 12: the dashboard lists and counts finished jobs by state, newest first, on any table
    // size. Finished rows only: the live states have their own partial indexes, and an index
    // over running rows would tempt the planner away from the primary key when completing.
    r#"
CREATE INDEX mend_jobs_final_state_id ON mend_jobs (state, id) WHERE state = 'completed' OR state = 'cancelled' OR state = 'discarded';
"#,
    // 13: API tokens with roles (only a SHA-256 of each token is kept), the audit log (paged
    // newest first by id; time, actor and action filters each have an index), and one check
    // value per args encryption key id, so a wrong key is refused at start-up.
    r#"
CREATE TABLE mend_api_tokens (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL,
    hash       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE mend_audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    remote TEXT NOT NULL
);
CREATE INDEX mend_audit_at ON mend_audit (at);
CREATE INDEX mend_audit_actor ON mend_audit (actor, id);
CREATE INDEX mend_audit_action ON mend_audit (action, id);
CREATE TABLE mend_args_keys (
    kid        TEXT PRIMARY KEY,
    check_value TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"#,
    // 14: gray release. The handler version of each job's latest attempt (set by routed
    // claims only), with a partial index that finds the jobs a canary failed (waiting to run again, or
    // discarded); the versions
    // each node serves; rollouts as JSON bodies, at most one active per kind; and the samples
    // of versioned attempts the guard reads, insert only, by kind and time.
    r#"
ALTER TABLE mend_jobs ADD COLUMN version TEXT;
-- Waiting or discarded, spelt with <> so that inserting a job builds no temporary table
-- (an IN list, or ORs SQLite turns into one, would).
CREATE INDEX mend_jobs_canary_failed ON mend_jobs (kind, version, attempted_at)
    WHERE version IS NOT NULL
      AND state <> 'running' AND state <> 'completed' AND state <> 'cancelled';
ALTER TABLE mend_nodes ADD COLUMN versions TEXT NOT NULL DEFAULT '{}';
CREATE TABLE mend_rollouts (
    id         BLOB PRIMARY KEY,
    kind       TEXT NOT NULL,
    state      TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    revision   INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE UNIQUE INDEX mend_rollouts_active ON mend_rollouts (kind) WHERE state IN ('running', 'paused');
CREATE INDEX mend_rollouts_kind ON mend_rollouts (kind, started_at);
CREATE TABLE mend_version_samples (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    version  TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    run      TEXT NOT NULL
);
CREATE INDEX mend_version_samples_kind ON mend_version_samples (kind, at);
CREATE INDEX mend_version_samples_at ON mend_version_samples (at);
"#,
];

/// The migration that makes unique keys depend on state (for the test that it names the
/// insert's predicate).
#[cfg(test)]
pub(crate) fn unique_index_migration() -> &'static str {
    MIGRATIONS
        .iter()
        .find(|m| m.contains("mend_jobs_unique_held"))
        .copied()
        .unwrap_or_default()
}

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) fn migrate(conn: &Connection, path: &str) -> Result<()> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| map_err(path, e))?;
    if current < 0 {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: format!("user_version is {current}; this file belongs to another program"),
            source: None,
        });
    }
    if current > 0 {
        // Not ours? A mend database always has mend_jobs once migrated.
        let has_jobs: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'mend_jobs'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| map_err(path, e))?;
        if !has_jobs {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                detail: format!("user_version is {current} but there is no mend_jobs table; this file belongs to another program"),
                source: None,
            });
        }
    }
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        conn.execute_batch(sql).map_err(|e| map_err(path, e))?;
        conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(|e| map_err(path, e))?;
        tracing::info!(version = i + 1, "applied migration");
    }
    Ok(())
}
