//! The raw-SQL limit of mend's SQLite job cycle: a plain rusqlite program doing the work
//! `mend bench` makes the store do, and nothing else, so `mend bench`'s figure can be set
//! against what the same disk allows.
//!
//! ```sh
//! cargo run --release -p mend-sqlite --example raw_limit -- /tmp/raw.db 100000
//! ```
//!
//! Arguments: PATH (a new file; mend's schema is created in it by opening a `SqliteStore`
//! once, so the table, indexes and triggers are mend's own), JOBS [100000], ENQUEUE_BATCH
//! [1000], CLAIM_BATCH [512: `mend bench`'s default concurrency], and `--merge`.
//!
//! Same durability as mend: WAL, enqueue and completion transactions with `synchronous=FULL`,
//! claim transactions with `NORMAL` (as mend's writer commits a group of claims only). The
//! statements are copies of mend-sqlite's `sql::INSERT`, `CLAIM`, `CLAIM_ONE` and
//! `COMPLETED` (kept in step by hand: the example cannot see the crate's private items), run
//! with the same parameters, one prepared statement execution per job, as mend does. What
//! it leaves out is all of mend around the SQL: the writer thread and its channel, the
//! runtime's tasks, slots and batching, decoding rows into `JobRow`s, history.
//!
//! Phases, each clocked: enqueue JOBS no-op jobs in transactions of ENQUEUE_BATCH; then
//! drain: claim CLAIM_BATCH in one transaction, complete them in the next, until none is
//! left. With `--merge`, each transaction completes the previous batch and claims the next
//! (what mend's group commit does at best), one fsync per batch instead of two commits.
//! Prints one JSON line: enqueue, drain and end to end (JOBS / (enqueue + drain)) per second.

use std::time::Instant;

use rusqlite::{params, Connection};

const INSERT: &str = "INSERT INTO mend_jobs (id, queue, kind, args, state, priority, max_attempts, run_at, created_at, unique_key, tags, timeout_ms, trace_parent, unique_states, limit_key)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
     ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND (unique_states IS NULL OR (unique_states & CASE state WHEN 'scheduled' THEN 1 WHEN 'available' THEN 2 WHEN 'running' THEN 4 WHEN 'retryable' THEN 8 WHEN 'completed' THEN 16 WHEN 'cancelled' THEN 32 ELSE 64 END) <> 0) DO NOTHING";
const CLAIM: &str = "SELECT id, queue, kind, args, state, priority, attempt, max_attempts, run_at, created_at, attempted_at, finalized_at, lease_owner, lease_expires_at, cancel_requested, errors, unique_key, tags, result, timeout_ms, NULL, trace_parent, checkpoint, pending_cleanups, limit_key FROM mend_jobs WHERE state = 'available' AND queue = ?1 ORDER BY priority, run_at, id LIMIT ?2";
const CLAIM_ONE: &str =
    "UPDATE mend_jobs SET state = 'running', attempt = attempt + 1, attempted_at = ?2,
        lease_owner = ?3, lease_expires_at = ?4 WHERE id = ?1 AND state = 'available'";
const COMPLETED: &str = "UPDATE mend_jobs SET state = 'completed', finalized_at = ?4, result = ?5, lease_expires_at = NULL, pending_cleanups = NULL WHERE id = ?1 AND attempt = ?2 AND lease_owner = ?3 AND state = 'running'";

const QUEUE: &str = "raw";
const KIND: &str = "mend.bench.noop";
const OWNER: &str = "raw-limit-node";

fn micros_now() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A claimed job: what its completion's fence needs.
struct Claimed {
    id: Vec<u8>,
    attempt: i32,
}

fn claim(conn: &Connection, n: usize) -> rusqlite::Result<Vec<Claimed>> {
    let now = micros_now();
    let mut select = conn.prepare_cached(CLAIM)?;
    let mut rows = select.query(params![QUEUE, n as i64])?;
    let mut picked = Vec::with_capacity(n);
    while let Some(r) = rows.next()? {
        // Read what a claim hands to a worker (mend decodes every column of the row).
        let id: Vec<u8> = r.get(0)?;
        let _args: Option<String> = r.get(3)?;
        let attempt: i32 = r.get(6)?;
        picked.push(Claimed { id, attempt });
    }
    drop(rows);
    let mut one = conn.prepare_cached(CLAIM_ONE)?;
    let mut claimed = Vec::with_capacity(picked.len());
    for c in picked {
        if one.execute(params![c.id, now, OWNER, now + 60_000_000])? == 1 {
            claimed.push(Claimed {
                id: c.id,
                attempt: c.attempt + 1,
            });
        }
    }
    Ok(claimed)
}

fn complete(conn: &Connection, jobs: &[Claimed]) -> rusqlite::Result<()> {
    let now = micros_now();
    let mut done = conn.prepare_cached(COMPLETED)?;
    for j in jobs {
        let n = done.execute(params![j.id, j.attempt, OWNER, now, None::<String>])?;
        assert_eq!(n, 1, "a claimed job was not running");
    }
    Ok(())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let merge = all.iter().any(|a| a == "--merge");
    let args: Vec<String> = all.into_iter().filter(|a| a != "--merge").collect();
    let path = args
        .first()
        .ok_or("usage: raw_limit PATH [JOBS] [ENQUEUE_BATCH] [CLAIM_BATCH] [--merge]")?;
    let jobs: usize = arg(&args, 1, 100_000);
    let enqueue_batch: usize = arg(&args, 2, 1000).max(1);
    let claim_batch: usize = arg(&args, 3, 512).max(1);

    // mend's own schema, then mend is gone: only this connection touches the file.
    drop(mend_sqlite::SqliteStore::open(&format!("sqlite://{path}")).await?);
    let conn = Connection::open(path)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    assert!(mode.eq_ignore_ascii_case("wal"), "journal_mode is {mode}");
    conn.execute_batch(
        "PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;",
    )?;

    // Enqueue.
    let t0 = Instant::now();
    let mut left = jobs;
    while left > 0 {
        let n = left.min(enqueue_batch);
        let now = micros_now();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        {
            let mut insert = conn.prepare_cached(INSERT)?;
            for _ in 0..n {
                let job = mend::NewJob::new(KIND, serde_json::Value::Null);
                let args = serde_json::to_string(&job.args)?;
                let tags = serde_json::to_string(&job.tags)?;
                insert.execute(params![
                    job.id.as_bytes().as_slice(),
                    QUEUE,
                    job.kind,
                    args,
                    "available",
                    job.priority,
                    job.max_attempts,
                    now,
                    now,
                    None::<String>,
                    tags,
                    job.timeout_ms,
                    job.trace_parent,
                    None::<i64>,
                    job.limit_key,
                ])?;
            }
        }
        conn.execute_batch("COMMIT")?;
        left -= n;
    }
    let enqueue_s = t0.elapsed().as_secs_f64();

    // Drain.
    let t1 = Instant::now();
    let mut done = 0;
    if merge {
        let mut pending: Vec<Claimed> = Vec::new();
        loop {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            complete(&conn, &pending)?;
            done += pending.len();
            pending = claim(&conn, claim_batch)?;
            conn.execute_batch("COMMIT")?;
            if pending.is_empty() {
                break;
            }
        }
    } else {
        loop {
            conn.execute_batch("PRAGMA synchronous=NORMAL; BEGIN IMMEDIATE")?;
            let batch = claim(&conn, claim_batch)?;
            conn.execute_batch("COMMIT; PRAGMA synchronous=FULL")?;
            if batch.is_empty() {
                break;
            }
            conn.execute_batch("BEGIN IMMEDIATE")?;
            complete(&conn, &batch)?;
            conn.execute_batch("COMMIT")?;
            done += batch.len();
        }
    }
    let drain_s = t1.elapsed().as_secs_f64();
    assert_eq!(done, jobs, "every job claimed and completed once");
    let left: i64 = conn.query_row(
        "SELECT count(*) FROM mend_jobs WHERE queue = ?1 AND state <> 'completed'",
        [QUEUE],
        |r| r.get(0),
    )?;
    assert_eq!(left, 0);
    println!(
        "{}",
        serde_json::json!({
            "program": "raw_limit",
            "jobs": jobs,
            "enqueue_batch": enqueue_batch,
            "claim_batch": claim_batch,
            "merge": merge,
            "synchronous": "FULL (claims: NORMAL)",
            "enqueue_s": enqueue_s,
            "drain_s": drain_s,
            "enqueue_per_sec": jobs as f64 / enqueue_s,
            "drain_per_sec": jobs as f64 / drain_s,
            "end_to_end_per_sec": jobs as f64 / (enqueue_s + drain_s),
        })
    );
    Ok(())
}
