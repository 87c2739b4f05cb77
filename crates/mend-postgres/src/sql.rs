//! Every SQL statement the PostgreSQL store runs, named, in one place, with the schema filled
//! in once at open (River keeps its driver's SQL the same way, in per-table files beside a
//! thin driver).
//!
//! The pieces several statements share are written once here: the attempt fence ([`FENCE`]),
//! "a pending cancel request wins" ([`cancel_wins`]), and the expressions that append to the
//! `events` and `errors` columns. This module holds text only: it runs nothing and decodes
//! nothing, so the plan tests can EXPLAIN exactly what the store runs.

/// Size the stored events of a job are kept near, as PostgreSQL measures it
/// (`pg_column_size`, the stored size of the jsonb): past it, each new event pushes out the
/// oldest stored one. It is core's bound ([`mend::job::MAX_TIMELINE_BYTES`], 32 KiB), so a
/// job's history is cut at about the same size whichever store holds it: enough for the
/// recent attempts of a job retried hundreds of times, small enough that reading a job never
/// drags an unbounded list along.
pub(crate) const MAX_TIMELINE_BYTES: usize = mend::job::MAX_TIMELINE_BYTES;

/// Whether a row holds its unique key (unique jobs, `mend::unique`): it has a key, and its
/// state is one of its `unique_states` (bit `1 << i` for the i-th state of
/// `mend::JobState::ALL`; NULL: every state). `alias` prefixes the columns (`""` or `"h."`).
/// The unique index (migration 7) is partial on exactly this text with no alias, and the
/// insert's ON CONFLICT names it, so PostgreSQL can infer the index.
pub(crate) fn unique_held(alias: &str) -> String {
    format!(
        "{alias}unique_key IS NOT NULL AND ({alias}unique_states IS NULL OR ({alias}unique_states & CASE {alias}state WHEN 'scheduled' THEN 1 WHEN 'available' THEN 2 WHEN 'running' THEN 4 WHEN 'retryable' THEN 8 WHEN 'completed' THEN 16 WHEN 'cancelled' THEN 32 ELSE 64 END) <> 0)"
    )
}

/// Every column of `mend_jobs`, in the order `row::row_to_job` reads them.
/// A job id's rollout bucket (`mend::rollout::bucket`): its last two bytes.
const BUCKET: &str = "(get_byte(uuid_send(j.id), 14) * 256 + get_byte(uuid_send(j.id), 15))";

/// The claim: the head of a queue, `FOR UPDATE SKIP LOCKED`, marked running. Routed, it
/// takes the routes as arrays (`$7`..`$12`: kind, threshold, canary ok, stable ok, canary
/// version, stable version) and skips jobs on a side this node does not serve; plain, it
/// records no version, so a queue without rollouts pays nothing for them.
fn claim_sql(routed: bool) -> String {
    let (routes, skip, version) = if routed {
        (
            "routes AS (SELECT * FROM unnest($7::text[], $8::int4[], $9::bool[], $10::bool[], $11::text[], $12::text[])
                 AS r(kind, threshold, canary_ok, stable_ok, canary, stable)), ",
            format!(
                "AND NOT EXISTS (SELECT 1 FROM routes r WHERE r.kind = j.kind
                     AND CASE WHEN {BUCKET} < r.threshold THEN NOT r.canary_ok ELSE NOT r.stable_ok END)"
            ),
            format!(
                "(SELECT CASE WHEN {BUCKET} < r.threshold THEN coalesce(r.canary, '') ELSE coalesce(r.stable, '') END FROM routes r WHERE r.kind = j.kind)"
            ),
        )
    } else {
        ("", String::new(), "NULL".to_owned())
    };
    format!(
        "WITH {routes}picked AS MATERIALIZED (
            SELECT j.id FROM {{S}}.mend_jobs j
            WHERE state = 'available' AND queue = $1 AND (cardinality($2::text[]) = 0 OR kind = ANY($2::text[]))
              AND NOT EXISTS (SELECT 1 FROM {{S}}.mend_queues q WHERE q.name = $1 AND q.paused)
              -- A limited queue is claimed by `limits::claim` only, never here.
              AND NOT EXISTS (SELECT 1 FROM {{S}}.mend_limits l WHERE l.queue = $1)
              {skip}
            ORDER BY priority, run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
         UPDATE {{S}}.mend_jobs j SET state = 'running', attempt = j.attempt + 1, attempted_at = $4,
             lease_owner = $5, lease_expires_at = $6, version = {version}
         FROM picked WHERE j.id = picked.id
         RETURNING {}",
        // Running a job does not need its history.
        COLS.split(", ")
            .map(|c| if c == "events" { "NULL::jsonb".to_owned() } else { format!("j.{c}") })
            .collect::<Vec<_>>()
            .join(", ")
    )
}

pub(crate) const COLS: &str = "id, queue, kind, args, state, priority, attempt, max_attempts, run_at, created_at, attempted_at, finalized_at, lease_owner, lease_expires_at, cancel_requested, errors, unique_key, tags, result, timeout_ms, events, trace_parent, checkpoint, pending_cleanups, limit_key, version";

/// The fence every write on behalf of a running attempt carries: the job, the attempt and the
/// lease owner as parameters 1, 2 and 3. A worker that lost its lease matches no row.
pub(crate) const FENCE: &str =
    "WHERE id = $1 AND attempt = $2 AND lease_owner = $3 AND state = 'running'";

/// The payload of a "jobs became available" notification: the sending connection's store
/// (its `mend.origin` setting), or empty from any other connection. A store ignores its own,
/// having woken its fetchers itself (see `session`). Migration 13's insert trigger sends the
/// same.
const ORIGIN: &str = "coalesce(current_setting('mend.origin', true), '')";

/// Most due scheduled/retryable jobs promoted per claim.
const PROMOTE_BATCH: i64 = 1000;

/// `state` and `finalized_at` for an outcome a pending cancel request overrides: the job is
/// `cancelled` (finalized at `finalized_param`) instead of going to `state`, finalized at
/// `otherwise_finalized`.
fn cancel_wins(state: &str, finalized_param: &str, otherwise_finalized: &str) -> String {
    format!(
        "state = CASE WHEN cancel_requested THEN 'cancelled' ELSE {state} END,
                    finalized_at = CASE WHEN cancel_requested THEN {finalized_param}::timestamptz ELSE {otherwise_finalized} END"
    )
}

/// A timestamp as the RFC 3339 text serde reads back exactly (microseconds, UTC).
fn ts_text(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

/// `events` with one more event; past [`MAX_TIMELINE_BYTES`] the oldest stored event makes
/// room, and a damaged column starts over. The one place that builds this expression.
fn with_event(event: &str) -> String {
    format!(
        "(CASE WHEN jsonb_typeof(events) <> 'array' THEN '[]'::jsonb WHEN pg_column_size(events) > {MAX_TIMELINE_BYTES} THEN events - 0 ELSE events END) || jsonb_build_array({event})"
    )
}

/// The assignment that appends one event (see [`with_event`]).
fn push_event(event: &str) -> String {
    format!("events = {}", with_event(event))
}

/// An event that ends an attempt records when the attempt started (see `mend::job`).
fn attempt_event(param: &str) -> String {
    push_event(&format!(
        "({param}::jsonb || jsonb_build_object('started_at', {}))",
        ts_text("attempted_at")
    ))
}

/// Like [`attempt_event`] for outcomes a pending cancel request turns into `cancelled`.
fn attempt_event_or_cancelled(param: &str) -> String {
    push_event(&format!(
        "({param}::jsonb || jsonb_build_object('started_at', {}) || CASE WHEN cancel_requested THEN '{{\"event\":\"cancelled\"}}'::jsonb ELSE '{{}}'::jsonb END)",
        ts_text("attempted_at")
    ))
}

/// The errors column with the record in `param` appended (a damaged column starts over).
fn push_error(param: &str) -> String {
    format!("errors = (CASE WHEN jsonb_typeof(errors) = 'array' THEN errors ELSE '[]'::jsonb END) || jsonb_build_array({param}::jsonb)")
}

/// The SQL of every statement, with the schema filled in once at open. Parameters are named
/// in each field's comment where they are not obvious.
pub(crate) struct Sql {
    /// The quoted schema name.
    pub(crate) schema_q: String,

    // mend_jobs: inserts and reads.
    /// Inserts a batch (arrays) and returns the ids actually inserted.
    pub(crate) insert: String,
    /// The jobs holding the unique keys `$1`.
    pub(crate) select_unique: String,
    /// Finished jobs `$1` with unique keys, and who holds each key now (unique jobs).
    pub(crate) unique_holders: String,
    /// Jobs by id (`$1`, an array).
    pub(crate) get_many: String,
    /// The start of a job listing; `jobs::list` appends filters, order and limit.
    pub(crate) list: String,
    /// Counts per queue and state.
    pub(crate) queue_counts: String,
    /// The same without the finished states.
    pub(crate) live_queue_counts: String,
    /// Deletes up to `$2` jobs finalized before `$1`.
    pub(crate) prune: String,
    /// Takes a row that cannot be decoded out of circulation.
    pub(crate) discard_bad: String,

    // mend_jobs: claims.
    /// Makes due jobs available (and notifies).
    pub(crate) promote: String,
    /// Claims the head of a queue.
    pub(crate) claim: String,
    /// The claim of a queue with kinds under a rollout: takes only the jobs whose side this
    /// node serves and records the version that runs each.
    pub(crate) claim_routed: String,

    // mend_jobs: what a running attempt writes (fenced).
    /// Plain completions, as one batch of arrays.
    pub(crate) complete: String,
    /// A completion that writes a timeline event.
    pub(crate) completed_event: String,
    /// Back to `retryable`.
    pub(crate) retry: String,
    /// Finalized with an error (`discarded` or `cancelled`).
    pub(crate) finish_with_error: String,
    /// Put off without using up the attempt.
    pub(crate) snooze: String,
    /// Given back without using up the attempt.
    pub(crate) release: String,
    /// Stores a checkpoint.
    pub(crate) checkpoint: String,
    /// The attempt's pending durable cleanups, locked.
    pub(crate) pending_cleanups: String,
    /// Replaces the pending durable cleanups, with an optional event.
    pub(crate) set_pending_cleanups: String,
    /// Extends leases, skipping locked rows.
    pub(crate) extend: String,
    /// Reads, without locking, the leases `extend` skipped.
    pub(crate) extend_check: String,

    // mend_jobs: rescue, cancel, retry on request.
    /// Running jobs of dead nodes or with expired leases, locked.
    pub(crate) rescue_candidates: String,
    /// Takes one attempt away from its lost worker.
    pub(crate) rescue_one: String,
    /// Cancels jobs that are not running.
    pub(crate) cancel_waiting: String,
    /// Asks running jobs' workers to cancel.
    pub(crate) cancel_running: String,
    /// Runs finished jobs again.
    pub(crate) retry_finished: String,
    /// Hands jobs a canary failed back to stable (see `Store::rollout_heal`).
    pub(crate) heal: String,

    // mend_nodes, and liveness.
    /// Registers a node with its lock key.
    pub(crate) register_node: String,
    /// A node's heartbeat.
    pub(crate) heartbeat_node: String,
    /// Every registered node.
    pub(crate) list_nodes: String,
    /// Forgets nodes `$1`.
    pub(crate) deregister_nodes: String,
    /// Every other node, whether it is stale and whether its advisory lock is gone.
    pub(crate) dead_nodes: String,

    // mend_queues, and notification.
    /// Pauses or resumes a queue.
    pub(crate) set_queue_paused: String,
    /// The paused queues.
    pub(crate) paused_queues: String,
    /// Wakes the other nodes' fetchers.
    pub(crate) notify: String,

    /// The limits' statements.
    pub(crate) limits: crate::limits::LimitSql,
    /// The dashboard history's statements.
    pub(crate) history: crate::history::HistorySql,
}

impl Sql {
    /// Every statement for the schema `schema_q` (quoted) and the notification `channel`.
    pub(crate) fn new(schema_q: &str, channel: &str) -> Self {
        let t = |s: &str| s.replace("{S}", schema_q);
        Sql {
            schema_q: schema_q.to_owned(),
            insert: t(&format!("INSERT INTO {{S}}.mend_jobs (id, queue, kind, args, state, priority, max_attempts, run_at, created_at, unique_key, tags, timeout_ms, trace_parent, unique_states, limit_key)
                SELECT u.id, u.queue, u.kind, u.args, u.state, u.priority, u.max_attempts, u.run_at, $9, u.unique_key,
                       ARRAY(SELECT json_array_elements_text(u.tags)), u.timeout_ms, u.trace_parent, u.unique_states, u.limit_key
                FROM unnest($1::uuid[], $2::text[], $3::text[], $4::json[], $5::text[], $6::int2[], $7::int4[], $8::timestamptz[], $10::text[], $11::json[], $12::int8[], $13::text[], $14::int4[], $15::text[])
                    AS u(id, queue, kind, args, state, priority, max_attempts, run_at, unique_key, tags, timeout_ms, trace_parent, unique_states, limit_key)
                ON CONFLICT (unique_key) WHERE {} DO NOTHING
                RETURNING id", unique_held(""))),
            // Only the row holding a key: finished jobs that let theirs go may share it.
            select_unique: t(&format!("SELECT {COLS} FROM {{S}}.mend_jobs WHERE unique_key = ANY($1) AND {}", unique_held(""))),
            // For a retry refused by the unique index: each finished job of `$1` with a key,
            // and the job holding that key now, if any.
            unique_holders: t(&format!(
                "SELECT r.id, r.unique_key, h.id FROM {{S}}.mend_jobs r
                 LEFT JOIN LATERAL (SELECT h.id FROM {{S}}.mend_jobs h
                     WHERE h.unique_key = r.unique_key AND h.id <> r.id AND {} LIMIT 1) h ON true
                 WHERE r.id = ANY($1) AND r.unique_key IS NOT NULL AND r.state IN ('completed', 'cancelled', 'discarded')",
                unique_held("h.")
            )),
            get_many: t(&format!("SELECT {COLS} FROM {{S}}.mend_jobs WHERE id = ANY($1)")),
            list: t(&format!("SELECT {COLS} FROM {{S}}.mend_jobs WHERE true")),
            // One branch per partial index, so every count is an index scan.
            live_queue_counts: t("SELECT queue, state, count(*)::int8 FROM {S}.mend_jobs WHERE state = 'available' GROUP BY queue, state
                     UNION ALL
                     SELECT queue, state, count(*)::int8 FROM {S}.mend_jobs WHERE state IN ('scheduled', 'retryable') GROUP BY queue, state
                     UNION ALL
                     SELECT queue, state, count(*)::int8 FROM {S}.mend_jobs WHERE state = 'running' GROUP BY queue, state"),
            queue_counts: t("SELECT queue, state, count(*)::int8 FROM {S}.mend_jobs WHERE state = 'available' GROUP BY queue, state
                     UNION ALL
                     SELECT queue, state, count(*)::int8 FROM {S}.mend_jobs WHERE state IN ('scheduled', 'retryable') GROUP BY queue, state
                     UNION ALL
                     SELECT queue, state, count(*)::int8 FROM {S}.mend_jobs WHERE state = 'running' GROUP BY queue, state
                     UNION ALL
                     SELECT queue, state, count(*)::int8 FROM {S}.mend_jobs WHERE finalized_at IS NOT NULL GROUP BY queue, state"),
            prune: t("DELETE FROM {S}.mend_jobs WHERE id IN (
                SELECT id FROM {S}.mend_jobs WHERE finalized_at IS NOT NULL AND finalized_at < $1
                ORDER BY finalized_at LIMIT $2 FOR UPDATE SKIP LOCKED)"),
            discard_bad: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = 'discarded', finalized_at = $2, lease_expires_at = NULL, {} WHERE id = $1",
                push_error("$3")
            )),
            promote: format!(
                "WITH due AS MATERIALIZED (SELECT id FROM {schema_q}.mend_jobs WHERE state IN ('scheduled', 'retryable') AND run_at <= $1
                    ORDER BY run_at LIMIT {PROMOTE_BATCH} FOR UPDATE SKIP LOCKED)
                 UPDATE {schema_q}.mend_jobs j SET state = 'available' FROM due
                 WHERE j.id = due.id AND j.state IN ('scheduled', 'retryable')
                 RETURNING pg_notify('{channel}', {ORIGIN})"
            ),
            claim: t(&claim_sql(false)),
            claim_routed: t(&claim_sql(true)),
            // A completed attempt's durable cleanups are dropped with it.
            complete: t("UPDATE {S}.mend_jobs j SET state = 'completed', finalized_at = $1, result = u.result, lease_expires_at = NULL, pending_cleanups = NULL
                FROM unnest($2::uuid[], $3::int4[], $4::text[], $5::json[]) AS u(id, attempt, owner, result)
                WHERE j.id = u.id AND j.attempt = u.attempt AND j.lease_owner = u.owner AND j.state = 'running'
                RETURNING j.id"),
            completed_event: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = 'completed', finalized_at = $4, result = $5::json, lease_expires_at = NULL, pending_cleanups = NULL, {} {FENCE}",
                attempt_event("$6")
            )),
            // A cancel request that arrived during the attempt wins over retry, snooze and release.
            retry: t(&format!(
                "UPDATE {{S}}.mend_jobs SET {}, run_at = $4, {}, {}, lease_expires_at = NULL {FENCE}",
                cancel_wins("'retryable'", "$6", "NULL"),
                push_error("$5"),
                attempt_event_or_cancelled("$7")
            )),
            finish_with_error: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = $6, finalized_at = $4, {}, {}, lease_expires_at = NULL {FENCE}",
                push_error("$5"),
                attempt_event("$7")
            )),
            snooze: t(&format!(
                "UPDATE {{S}}.mend_jobs SET {}, run_at = $4, attempt = attempt - 1, {}, lease_expires_at = NULL {FENCE}",
                cancel_wins("$5::text", "$6", "NULL"),
                attempt_event_or_cancelled("$7")
            )),
            // A released job keeps its run_at, and so its place in the queue.
            release: t(&format!(
                "UPDATE {{S}}.mend_jobs SET {}, attempt = attempt - 1, {}, lease_expires_at = NULL {FENCE}",
                cancel_wins("'available'", "$4", "NULL"),
                attempt_event_or_cancelled("$5")
            )),
            checkpoint: t(&format!("UPDATE {{S}}.mend_jobs SET checkpoint = $4 {FENCE}")),
            pending_cleanups: t(&format!(
                "SELECT pending_cleanups FROM {{S}}.mend_jobs {FENCE} FOR UPDATE"
            )),
            set_pending_cleanups: t(&format!(
                "UPDATE {{S}}.mend_jobs SET pending_cleanups = $2, events = CASE WHEN $3::jsonb IS NULL THEN events ELSE {} END WHERE id = $1",
                with_event("$3::jsonb")
            )),
            // Heartbeats never wait for a row lock: a row locked right now is being completed
            // (or cancelled) by someone, so it is skipped here and looked at without a lock
            // (`extend_check`). Waiting instead could deadlock with a completion batch that
            // locks the same rows in another order.
            extend: t("UPDATE {S}.mend_jobs j SET lease_expires_at = $1
                FROM (SELECT j2.id FROM {S}.mend_jobs j2 JOIN unnest($2::uuid[], $3::int4[]) AS u(id, attempt) ON j2.id = u.id
                      WHERE j2.attempt = u.attempt AND j2.lease_owner = $4 AND j2.state = 'running'
                      FOR UPDATE OF j2 SKIP LOCKED) l
                WHERE j.id = l.id
                RETURNING j.id, j.cancel_requested"),
            extend_check: t("SELECT j.id, j.cancel_requested FROM {S}.mend_jobs j
                JOIN unnest($1::uuid[], $2::int4[]) AS u(id, attempt) ON j.id = u.id
                WHERE j.attempt = u.attempt AND j.lease_owner = $3 AND j.state = 'running'"),
            rescue_candidates: t(&format!(
                "SELECT {COLS} FROM {{S}}.mend_jobs WHERE state = 'running'
                   AND (lease_owner = ANY($1) OR lease_expires_at < $2) FOR UPDATE SKIP LOCKED"
            )),
            // A job someone asked to cancel is not run again after its worker died. Fenced by
            // attempt only: the owner is the one that is gone.
            rescue_one: t(&format!(
                "UPDATE {{S}}.mend_jobs SET {},
                    run_at = $8, lease_expires_at = NULL, {}, {}
                 WHERE id = $5 AND attempt = $6 AND state = 'running' RETURNING {COLS}",
                cancel_wins("$1::text", "$2", "$3::timestamptz"),
                push_error("$4"),
                attempt_event_or_cancelled("$7")
            )),
            cancel_waiting: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = 'cancelled', finalized_at = $2, {}
                 WHERE id = ANY($1) AND state IN ('scheduled', 'available', 'retryable')",
                push_event("$3::jsonb")
            )),
            cancel_running: t(&format!(
                "UPDATE {{S}}.mend_jobs SET cancel_requested = true, {}
                 WHERE id = ANY($1) AND state = 'running' AND NOT cancel_requested",
                push_event("$2::jsonb")
            )),
            // A plain completion stored no event (the timeline derives it from finalized_at,
            // which the retry clears): write it down first.
            retry_finished: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = 'available', run_at = $2, finalized_at = NULL,
                    cancel_requested = false, max_attempts = greatest(max_attempts, attempt + 1),
                    checkpoint = CASE WHEN state = 'completed' THEN NULL ELSE checkpoint END,
                    events = (CASE WHEN jsonb_typeof(events) <> 'array' THEN '[]'::jsonb
                        WHEN state = 'completed' AND NOT events @> jsonb_build_array(jsonb_build_object('event', 'completed', 'attempt', attempt))
                        THEN events || jsonb_build_array(jsonb_build_object('at', {}, 'event', 'completed', 'attempt', attempt, 'node', lease_owner, 'started_at', {}))
                        ELSE events END) || jsonb_build_array($3::jsonb)
                 WHERE id = ANY($1) AND state IN ('completed', 'cancelled', 'discarded')",
                ts_text("finalized_at"),
                ts_text("attempted_at")
            )),
            // The attempts the canary failed are given back by raising `max_attempts`, never
            // by lowering `attempt`, so the fence of a late canary write still refuses it;
            // each error given back is marked, so a job handed back twice is not paid twice.
            heal: t(&format!(
                "UPDATE {{S}}.mend_jobs SET state = 'available', run_at = $4, finalized_at = NULL, lease_expires_at = NULL,
                    max_attempts = max_attempts + (SELECT count(*)::int4 FROM jsonb_array_elements(
                        CASE WHEN jsonb_typeof(errors) = 'array' THEN errors ELSE '[]'::jsonb END) e
                        WHERE e->>'version' = $2 AND NOT coalesce((e->>'given_back')::bool, false)),
                    errors = CASE WHEN jsonb_typeof(errors) = 'array' THEN (SELECT coalesce(jsonb_agg(CASE
                        WHEN e->>'version' = $2 THEN e || jsonb_build_object('given_back', true) ELSE e END ORDER BY i), '[]'::jsonb)
                        FROM jsonb_array_elements(errors) WITH ORDINALITY AS x(e, i)) ELSE errors END,
                    version = NULL, {}
                 WHERE id = ANY(ARRAY(SELECT id FROM {{S}}.mend_jobs WHERE kind = $1 AND version = $2
                     AND state IN ('scheduled', 'available', 'retryable', 'discarded') AND attempted_at >= $3 ORDER BY attempted_at LIMIT $5))
                   AND state IN ('scheduled', 'available', 'retryable', 'discarded')
                 RETURNING id",
                push_event("$6::jsonb")
            )),
            register_node: t("INSERT INTO {S}.mend_nodes (id, host, pid, process_key, started_at, last_seen, lock_key, kinds, queues, build, in_flight, draining, versions)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, lock_key = excluded.lock_key, kinds = excluded.kinds,
                 queues = excluded.queues, build = excluded.build, in_flight = excluded.in_flight, draining = excluded.draining,
                 versions = excluded.versions"),
            heartbeat_node: t("UPDATE {S}.mend_nodes SET last_seen = $2, in_flight = $3, draining = $4 WHERE id = $1"),
            // `leader`: the session holding the node's lock ($1 is the lock namespace) also
            // holds the maintenance leader's lock (key 0), i.e. the node's process leads.
            list_nodes: t("SELECT n.id, n.host, n.pid, n.process_key, n.started_at, n.last_seen, n.kinds, n.queues, n.build, n.in_flight, n.draining, n.versions,
                    EXISTS (SELECT 1 FROM pg_locks nl JOIN pg_locks ll ON ll.pid = nl.pid AND ll.database = nl.database
                        WHERE nl.locktype = 'advisory' AND nl.granted AND nl.objsubid = 2
                          AND nl.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                          AND nl.classid::int8 = $1 AND nl.objid::int8 = n.lock_key
                          AND ll.locktype = 'advisory' AND ll.granted AND ll.objsubid = 2
                          AND ll.classid::int8 = $1 AND ll.objid = 0) AS leader
                 FROM {S}.mend_nodes n ORDER BY n.id"),
            deregister_nodes: t("DELETE FROM {S}.mend_nodes WHERE id = ANY($1)"),
            dead_nodes: t("SELECT n.id, n.last_seen < $2 AS stale,
                    NOT EXISTS (SELECT 1 FROM pg_locks l
                        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                          AND l.classid::int8 = $3 AND l.objid::int8 = n.lock_key) AS unlocked,
                    n.lock_key
                 FROM {S}.mend_nodes n WHERE n.id <> $1"),
            set_queue_paused: t("INSERT INTO {S}.mend_queues (name, paused, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at"),
            paused_queues: t("SELECT name FROM {S}.mend_queues WHERE paused ORDER BY name"),
            notify: format!("SELECT pg_notify('{channel}', {ORIGIN})"),
            limits: crate::limits::LimitSql::new(schema_q),
            history: crate::history::HistorySql::new(schema_q),
        }
    }

    /// The hot statements, by name, with their parameter types and sample values, for the
    /// plan test ([`crate::PgStore::explain_hot_paths`]).
    pub(crate) fn hot_paths(&self) -> [(&'static str, &str, &'static str, String); 10] {
        let now = "'2026-01-01T00:00:00Z'";
        let id = "'01900000-0000-7000-8000-000000000000'";
        [
            (
                "claim",
                &self.claim,
                "text, text[], int8, timestamptz, text, timestamptz",
                format!("'q', '{{}}', 10, {now}, 'n', {now}"),
            ),
            ("promote", &self.promote, "timestamptz", now.to_owned()),
            (
                "complete",
                &self.complete,
                "timestamptz, uuid[], int4[], text[], json[]",
                format!("{now}, ARRAY[{id}]::uuid[], '{{1}}', '{{n}}', ARRAY[NULL]::json[]"),
            ),
            (
                "extend",
                &self.extend,
                "timestamptz, uuid[], int4[], text",
                format!("{now}, ARRAY[{id}]::uuid[], '{{1}}', 'n'"),
            ),
            (
                "rescue",
                &self.rescue_candidates,
                "text[], timestamptz",
                format!("'{{n}}', {now}"),
            ),
            (
                "limit_head",
                &self.limits.head,
                "text, text[], int8",
                "'q', '{}', 512".to_owned(),
            ),
            (
                "limit_running",
                &self.limits.running,
                "text",
                "'q'".to_owned(),
            ),
            (
                "limit_buckets",
                &self.limits.buckets,
                "text[], text[]",
                "'{l}', '{k1,k2}'".to_owned(),
            ),
            // Unique jobs: a duplicate's lookup, and a refused retry's.
            (
                "unique_lookup",
                &self.select_unique,
                "text[]",
                "'{unique:k:0}'".to_owned(),
            ),
            (
                "unique_holders",
                &self.unique_holders,
                "uuid[]",
                format!("ARRAY[{id}]::uuid[]"),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_bound_appears_once_per_event_append() {
        let sql = Sql::new("\"mend\"", "mend_mend");
        let bound = MAX_TIMELINE_BYTES.to_string();
        for (text, appends) in [
            (&sql.completed_event, 1),
            (&sql.retry, 1),
            (&sql.snooze, 1),
            (&sql.release, 1),
            (&sql.rescue_one, 1),
            (&sql.cancel_waiting, 1),
            (&sql.set_pending_cleanups, 1),
            (&sql.complete, 0),
        ] {
            assert_eq!(text.matches(&bound).count(), appends, "{text}");
        }
    }

    #[test]
    fn the_unique_index_and_the_insert_name_the_same_predicate() {
        // PostgreSQL infers the index of ON CONFLICT only when the predicates match.
        let sql = Sql::new("\"mend\"", "mend_mend");
        let held = unique_held("");
        assert!(sql.insert.contains(&format!("WHERE {held} DO NOTHING")));
        assert!(crate::schema::unique_index_migration().contains(&format!("WHERE {held};")));
    }

    #[test]
    fn fenced_writes_carry_the_fence_and_the_schema() {
        let sql = Sql::new("\"mend\"", "mend_mend");
        for text in [
            &sql.completed_event,
            &sql.retry,
            &sql.finish_with_error,
            &sql.snooze,
            &sql.release,
            &sql.checkpoint,
            &sql.pending_cleanups,
        ] {
            assert!(text.contains(FENCE), "{text}");
            assert!(text.contains("\"mend\".mend_jobs"), "{text}");
            assert!(!text.contains("{S}"), "{text}");
        }
    }
}
