//! The PostgreSQL schema and its versioned migrations, kept in their own schema (`mend` by
//! default). Applied under a transaction-level advisory lock, so nodes that start together
//! migrate exactly once.

use mend::store::{Result, StoreError};

use crate::error::map_pg;

/// Migrations in order; index + 1 is the version each one brings the schema to. `{S}` stands
/// for the quoted schema name.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE {S}.mend_jobs (
    id               uuid PRIMARY KEY,
    queue            text NOT NULL,
    kind             text NOT NULL,
    -- json (not jsonb): the caller's document is kept exactly, NUL escapes included.
    args             json NOT NULL,
    state            text NOT NULL CHECK (state IN ('scheduled', 'available', 'running', 'retryable', 'completed', 'cancelled', 'discarded')),
    priority         smallint NOT NULL DEFAULT 0,
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    run_at           timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    attempted_at     timestamptz,
    finalized_at     timestamptz,
    lease_owner      text,
    lease_expires_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    errors           jsonb NOT NULL DEFAULT '[]',
    unique_key       text,
    tags             text[] NOT NULL DEFAULT '{}',
    result           json,
    timeout_ms       bigint,
    events           jsonb NOT NULL DEFAULT '[]'
) WITH (fillfactor = 85, autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);

-- claim: the head of one queue's available jobs, in priority -> run_at -> id order.
CREATE INDEX mend_jobs_claim ON {S}.mend_jobs (queue, priority, run_at, id) WHERE state = 'available';
-- promotion of due scheduled and retryable jobs.
CREATE INDEX mend_jobs_due ON {S}.mend_jobs (run_at) WHERE state IN ('scheduled', 'retryable');
-- rescue and heartbeats: only running jobs, a set bounded by total concurrency.
CREATE INDEX mend_jobs_running ON {S}.mend_jobs (lease_owner) WHERE state = 'running';
-- finished jobs, for counts and pruning by age.
CREATE INDEX mend_jobs_finished ON {S}.mend_jobs (finalized_at) WHERE finalized_at IS NOT NULL;
CREATE UNIQUE INDEX mend_jobs_unique ON {S}.mend_jobs (unique_key) WHERE unique_key IS NOT NULL;

CREATE SEQUENCE {S}.mend_node_lock_seq AS integer MINVALUE 1 CYCLE;

CREATE TABLE {S}.mend_nodes (
    id          text PRIMARY KEY,
    host        text NOT NULL,
    pid         bigint NOT NULL,
    process_key text NOT NULL,
    started_at  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    -- The session-level advisory lock (namespace, lock_key) the node holds while alive.
    lock_key    integer NOT NULL
);

CREATE TABLE {S}.mend_queues (
    name       text PRIMARY KEY,
    paused     boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL
);

-- Wakes idle fetchers on every node when available jobs are inserted, by any client: the
-- store, a caller's own transaction (at its commit), or plain SQL.
CREATE FUNCTION {S}.mend_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE state = 'available') THEN
        PERFORM pg_notify('mend_' || TG_TABLE_SCHEMA, '');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER mend_jobs_notify AFTER INSERT ON {S}.mend_jobs
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION {S}.mend_notify_inserted();
"#,
    // 2: the enqueue's W3C trace context.
    r#"
ALTER TABLE {S}.mend_jobs ADD COLUMN trace_parent text;
"#,
    // 3: checkpoints.
    r#"
ALTER TABLE {S}.mend_jobs ADD COLUMN checkpoint json;
"#,
    // 4: durable cleanups not yet run.
    r#"
ALTER TABLE {S}.mend_jobs ADD COLUMN pending_cleanups jsonb;
"#,
    // 5: cron schedules (periodic jobs; see mend::cron).
    r#"
CREATE TABLE {S}.mend_cron (
    name         text PRIMARY KEY,
    schedule     text NOT NULL,
    timezone     text NOT NULL,
    kind         text NOT NULL,
    queue        text NOT NULL,
    args         jsonb NOT NULL,
    priority     smallint NOT NULL,
    max_attempts integer NOT NULL,
    tags         jsonb NOT NULL,
    catch_up     text NOT NULL,
    catch_up_max integer NOT NULL,
    paused       boolean NOT NULL DEFAULT false,
    next_slot    timestamptz NOT NULL,
    last_slot    timestamptz,
    recent_runs  jsonb NOT NULL DEFAULT '[]',
    skipped      jsonb NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
-- the scheduler's look for due slots: only schedules that are not paused.
CREATE INDEX mend_cron_due ON {S}.mend_cron (next_slot) WHERE NOT paused;
"#,
    // 6: rate limits and per-key concurrency limits.
    r#"
ALTER TABLE {S}.mend_jobs ADD COLUMN limit_key text;
-- One row per limit; `spec` is the limit as the API shows it (mend::limits::Limit).
CREATE TABLE {S}.mend_limits (
    name       text PRIMARY KEY,
    queue      text NOT NULL,
    spec       jsonb NOT NULL,
    -- Jobs the latest claim of the queue held back under this limit, and when.
    waiting    integer NOT NULL DEFAULT 0,
    waiting_at timestamptz,
    updated_at timestamptz NOT NULL
);
CREATE INDEX mend_limits_queue ON {S}.mend_limits (queue);
-- Rate limits' token buckets, one per (limit, key) that has started jobs. A missing row is a
-- full bucket.
CREATE TABLE {S}.mend_limit_buckets (
    limit_name text NOT NULL,
    key        text NOT NULL,
    tokens     float8 NOT NULL,
    at         timestamptz NOT NULL,
    PRIMARY KEY (limit_name, key)
);
"#,
    // 7: unique jobs. A key is held only while the row's state is one of its unique_states
    // (bit 1 << i for the i-th state in mend::JobState::ALL; NULL, as every existing row has:
    // all states, today's idempotency keys). The predicate is `sql::unique_held("")`, word
    // for word (a test checks), so the insert's ON CONFLICT infers this index.
    r#"
ALTER TABLE {S}.mend_jobs ADD COLUMN unique_states integer;
CREATE UNIQUE INDEX mend_jobs_unique_held ON {S}.mend_jobs (unique_key) WHERE unique_key IS NOT NULL AND (unique_states IS NULL OR (unique_states & CASE state WHEN 'scheduled' THEN 1 WHEN 'available' THEN 2 WHEN 'running' THEN 4 WHEN 'retryable' THEN 8 WHEN 'completed' THEN 16 WHEN 'cancelled' THEN 32 ELSE 64 END) <> 0);
DROP INDEX {S}.mend_jobs_unique;
"#,
    // 8: kinds each node serves, for `mend doctor`.
    r#"
ALTER TABLE {S}.mend_nodes ADD COLUMN kinds text[] NOT NULL DEFAULT '{}';
"#,
    // 9: the dashboard's history. Per-minute aggregates per (minute, queue, kind): counts per
    // outcome and latency sketches (bucket counts of mend::stats::Sketch, merged by adding
    // arrays), keyed by minute first so a window's read and pruning walk the primary key.
    // Cluster events by time. Node facts: queues with concurrency, build, in flight, draining.
    r#"
CREATE TABLE {S}.mend_stats (
    minute    timestamptz NOT NULL,
    queue     text NOT NULL,
    kind      text NOT NULL,
    completed int8 NOT NULL DEFAULT 0,
    retried   int8 NOT NULL DEFAULT 0,
    failed    int8 NOT NULL DEFAULT 0,
    cancelled int8 NOT NULL DEFAULT 0,
    lost      int8 NOT NULL DEFAULT 0,
    snoozed   int8 NOT NULL DEFAULT 0,
    wait      int8[] NOT NULL DEFAULT '{}',
    run       int8[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (minute, queue, kind)
);
CREATE TABLE {S}.mend_events (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL,
    kind   text NOT NULL,
    node   text NOT NULL,
    detail jsonb NOT NULL
);
CREATE INDEX mend_events_at ON {S}.mend_events (at);
ALTER TABLE {S}.mend_nodes
    ADD COLUMN queues jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN build text NOT NULL DEFAULT '',
    ADD COLUMN in_flight integer NOT NULL DEFAULT 0,
    ADD COLUMN draining boolean NOT NULL DEFAULT false;
"#,
    // 10: the dashboard lists and counts finished jobs by state, newest first, on any table
    // size. Finished rows only: the live states have their own partial indexes, and an index
    // over running rows would tempt the planner away from the primary key when completing.
    r#"
CREATE INDEX mend_jobs_final_state_id ON {S}.mend_jobs (state, id) WHERE state IN ('completed', 'cancelled', 'discarded');
"#,
    // 11: API tokens with roles (only a SHA-256 of each token is kept), the audit log (paged
    // newest first by id; time, actor and action filters each have an index), and one check
    // value per args encryption key id, so a wrong key is refused at start-up.
    r#"
CREATE TABLE {S}.mend_api_tokens (
    name       text PRIMARY KEY,
    role       text NOT NULL,
    hash       text NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    revoked_at timestamptz
);
CREATE TABLE {S}.mend_audit (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL,
    actor  text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail jsonb NOT NULL,
    remote text NOT NULL
);
CREATE INDEX mend_audit_at ON {S}.mend_audit (at);
CREATE INDEX mend_audit_actor ON {S}.mend_audit (actor, id);
CREATE INDEX mend_audit_action ON {S}.mend_audit (action, id);
CREATE TABLE {S}.mend_args_keys (
    kid         text PRIMARY KEY,
    check_value text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
"#,
    // 12: gray release. The handler version of each job's latest attempt (set by routed
    // claims only), with a partial index that finds the jobs a canary failed (waiting to run again, or
    // discarded); the versions
    // each node serves; rollouts as JSON bodies, at most one active per kind; and the samples
    // of versioned attempts the guard reads, insert only, by kind and time.
    r#"
ALTER TABLE {S}.mend_jobs ADD COLUMN version text;
CREATE INDEX mend_jobs_canary_failed ON {S}.mend_jobs (kind, version, attempted_at)
    WHERE version IS NOT NULL AND state IN ('scheduled', 'available', 'retryable', 'discarded');
ALTER TABLE {S}.mend_nodes ADD COLUMN versions jsonb NOT NULL DEFAULT '{}';
CREATE TABLE {S}.mend_rollouts (
    id         uuid PRIMARY KEY,
    kind       text NOT NULL,
    state      text NOT NULL,
    started_at timestamptz NOT NULL,
    revision   bigint NOT NULL,
    body       jsonb NOT NULL
);
CREATE UNIQUE INDEX mend_rollouts_active ON {S}.mend_rollouts (kind) WHERE state IN ('running', 'paused');
CREATE INDEX mend_rollouts_kind ON {S}.mend_rollouts (kind, started_at);
CREATE TABLE {S}.mend_version_samples (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL,
    kind     text NOT NULL,
    version  text NOT NULL,
    attempts bigint NOT NULL,
    failures bigint NOT NULL,
    run      text NOT NULL
);
CREATE INDEX mend_version_samples_kind ON {S}.mend_version_samples (kind, at);
CREATE INDEX mend_version_samples_at ON {S}.mend_version_samples (at);
"#,
    // 13: every node hears a change of routing at once (a rollout started, stepped, cut off,
    // promoted or aborted), not at its next heartbeat: the channel the fetchers listen on,
    // with the payload `routes`. Only changes that move routing notify (a heal count does not).
    // And "jobs inserted" names the store whose connection inserted them (its `mend.origin`
    // setting; empty from other connections), so that store, which woke its own fetchers
    // already, does not wake them twice.
    r#"
CREATE OR REPLACE FUNCTION {S}.mend_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted WHERE state = 'available') THEN
        PERFORM pg_notify('mend_' || TG_TABLE_SCHEMA, coalesce(current_setting('mend.origin', true), ''));
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION {S}.mend_notify_routes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE'
       OR OLD.state IS DISTINCT FROM NEW.state
       OR OLD.body->'share' IS DISTINCT FROM NEW.body->'share'
       OR OLD.body->'canary' IS DISTINCT FROM NEW.body->'canary'
       OR OLD.body->'stable' IS DISTINCT FROM NEW.body->'stable' THEN
        PERFORM pg_notify('mend_' || TG_TABLE_SCHEMA, 'routes');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER mend_rollouts_notify AFTER INSERT OR UPDATE OR DELETE ON {S}.mend_rollouts
    FOR EACH ROW EXECUTE FUNCTION {S}.mend_notify_routes();
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

/// Brings the schema up to date inside `tx` (which the caller commits).
pub(crate) async fn migrate(
    tx: &tokio_postgres::Transaction<'_>,
    schema_q: &str,
    lock_ns: i32,
    target: &str,
) -> Result<()> {
    let pg = |e| map_pg(target, e);
    // Every node starting at once queues here; the first migrates, the rest find it done.
    tx.execute("SELECT pg_advisory_xact_lock($1, -1)", &[&lock_ns])
        .await
        .map_err(pg)?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema_q};
         CREATE TABLE IF NOT EXISTS {schema_q}.mend_migrations (
             version    integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await
    .map_err(pg)?;
    let current: i64 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0)::int8 FROM {schema_q}.mend_migrations"),
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(&sql.replace("{S}", schema_q))
            .await
            .map_err(pg)?;
        let version = i as i32 + 1;
        tx.execute(
            &format!("INSERT INTO {schema_q}.mend_migrations (version) VALUES ($1)"),
            &[&version],
        )
        .await
        .map_err(pg)?;
        tracing::info!(version, schema = %schema_q, "applied migration");
    }
    Ok(())
}
