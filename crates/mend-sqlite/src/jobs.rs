//! Job rows outside a running attempt: insert, claim, read, list, cancel, retry on request,
//! prune. Each function runs on the connection it is given (the writer's, inside its
//! transaction, or a reader's) and decides nothing about which; `lib.rs` does.

use chrono::{DateTime, Utc};
use mend::job::{AttemptError, JobRow, JobState, NewJob, TimelineEvent};
use mend::store::{
    CancelParams, ClaimParams, CountAheadParams, CountStatesParams, JobPage, ListParams,
    PruneParams, Result, RetryParams, StateCount, StoreError, MAX_PAGE,
};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::error::map_err;
use crate::row::{
    error_json, event_json, get_job, micros, query_jobs, query_jobs_lenient, stored, to_json,
    Undecodable,
};
use crate::sql;

/// Most due scheduled/retryable jobs promoted per claim; bounds one claim's transaction.
const PROMOTE_BATCH: i64 = 10_000;

/// Inserts `jobs` (already validated); a job whose unique key is taken returns the row
/// holding it.
pub(crate) fn insert(conn: &Connection, path: &str, jobs: Vec<NewJob>) -> Result<Vec<JobRow>> {
    let now = Utc::now();
    let mut stmt = conn
        .prepare_cached(sql::INSERT)
        .map_err(|e| map_err(path, e))?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let run_at = job.run_at.unwrap_or(now);
        let state = JobState::waiting_for(run_at, now);
        let args = to_json(&job.args)?;
        let tags = to_json(&job.tags)?;
        // Unique jobs: the key computed from their options, and the states that hold it.
        let (unique_key, unique_states) = job.unique_columns(now);
        let n = stmt
            .execute(params![
                job.id.as_bytes().as_slice(),
                job.queue,
                job.kind,
                args,
                state.as_str(),
                job.priority,
                job.max_attempts,
                micros(run_at),
                micros(now),
                unique_key,
                tags,
                job.timeout_ms,
                job.trace_parent,
                unique_states,
                job.limit_key,
            ])
            .map_err(|e| map_err(path, e))?;
        if n == 0 {
            let existing = query_jobs(conn, path, &sql::BY_UNIQUE_KEY, params![unique_key])?
                .pop()
                .ok_or_else(|| StoreError::database("unique key conflict without a row"))?;
            out.push(existing);
        } else {
            // Stored with microsecond precision; return what a read would.
            let mut row = job.into_row(state, stored(run_at), stored(now));
            row.unique_key = unique_key;
            out.push(row);
        }
    }
    Ok(out)
}

/// Whether a claim on `queue` at `now` could find anything (run on a reader, so polling an
/// idle queue never takes the write lock).
pub(crate) fn claim_probe(conn: &Connection, path: &str, queue: &str, now: i64) -> Result<bool> {
    conn.prepare_cached(sql::CLAIM_PROBE)
        .and_then(|mut s| s.query_row(params![queue, now], |r| r.get::<_, bool>(0)))
        .map_err(|e| map_err(path, e))
}

/// Promotes due jobs, then claims up to `p.limit` available jobs of `p.queue` for
/// `p.lease_owner`. Runs on the writer.
pub(crate) fn claim(conn: &Connection, path: &str, p: ClaimParams) -> Result<Vec<JobRow>> {
    let paused: bool = conn
        .prepare_cached(sql::QUEUE_PAUSED)
        .and_then(|mut s| s.query_row(params![p.queue], |r| r.get(0)))
        .map_err(|e| map_err(path, e))?;
    if paused {
        return Ok(Vec::new());
    }
    let limited: bool = conn
        .prepare_cached(sql::QUEUE_LIMITED)
        .and_then(|mut s| s.query_row(params![p.queue], |r| r.get(0)))
        .map_err(|e| map_err(path, e))?;
    let mut p = p;
    if limited {
        // Nothing claimed ahead of free slots holds a place in a limit.
        p.limit = p.limit.saturating_sub(p.ahead);
        if p.limit == 0 {
            return Ok(Vec::new());
        }
    }
    let now = micros(p.now);
    // Promote due jobs only when there are some: the probe is one index seek, while
    // the bounded UPDATE builds a temporary table even when nothing is due.
    let due: bool = conn
        .prepare_cached(sql::DUE_EXISTS)
        .and_then(|mut s| s.query_row(params![now], |r| r.get(0)))
        .map_err(|e| map_err(path, e))?;
    if due {
        conn.prepare_cached(sql::PROMOTE)
            .and_then(|mut s| s.execute(params![now, PROMOTE_BATCH]))
            .map_err(|e| map_err(path, e))?;
    }
    let lease = chrono::Duration::from_std(p.lease_duration).unwrap_or(chrono::Duration::MAX);
    let expires_at = p
        .now
        .checked_add_signed(lease)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    // A limited or routed queue looks further down its head: jobs held back by a per-key
    // limit, or on a side of a rollout this node does not serve, must not hide the ones
    // behind them.
    let routed = !p.routes.is_empty();
    let limit = if limited || routed {
        i64::try_from(mend::limits::CLAIM_WINDOW).unwrap_or(i64::MAX)
    } else {
        i64::try_from(p.limit).unwrap_or(i64::MAX)
    };
    // Select, then update by primary key: the writer holds the write lock, so nothing
    // can change in between, and this avoids the temporary tables that
    // `UPDATE .. WHERE id IN (SELECT ..) RETURNING` builds on every claim.
    let (mut jobs, bad) = if p.kinds.is_empty() {
        query_jobs_lenient(conn, path, &sql::CLAIM, params![p.queue, limit])?
    } else {
        let mut args: Vec<rusqlite::types::Value> = vec![p.queue.clone().into(), limit.into()];
        args.extend(
            p.kinds
                .iter()
                .map(|k| rusqlite::types::Value::from(k.clone())),
        );
        query_jobs_lenient(
            conn,
            path,
            &sql::claim_kinds(p.kinds.len()),
            rusqlite::params_from_iter(args),
        )?
    };
    discard_undecodable(conn, path, bad, p.now)?;
    if routed {
        jobs.retain_mut(
            |job| match mend::rollout::admit(&p.routes, &job.kind, job.id) {
                Some(version) => {
                    job.version = version.map(str::to_owned);
                    true
                }
                None => false,
            },
        );
    } else {
        // A plain claim runs the unversioned handler, as PostgreSQL's records NULL: a
        // version left on the row by an earlier routed attempt (a canary cut off since)
        // must not choose the handler of this one.
        for job in &mut jobs {
            job.version = None;
        }
    }
    if limited {
        jobs = crate::limits::admit(conn, path, &p, jobs)?;
    } else {
        jobs.truncate(p.limit);
    }
    let mut stmt = conn
        .prepare_cached(sql::CLAIM_ONE)
        .map_err(|e| map_err(path, e))?;
    let stored_now = DateTime::from_timestamp_micros(now).unwrap_or(p.now);
    let stored_expiry = stored(expires_at);
    for job in &mut jobs {
        let n = stmt
            .execute(params![
                job.id.as_bytes().as_slice(),
                now,
                p.lease_owner,
                micros(expires_at),
                job.version
            ])
            .map_err(|e| map_err(path, e))?;
        if n != 1 {
            // Cannot happen while this thread holds the write lock; if it ever does,
            // the job was not claimed and must not be returned as ours.
            return Err(StoreError::database(format!(
                "job {} changed while being claimed",
                job.id
            )));
        }
        job.state = JobState::Running;
        job.attempt += 1;
        job.attempted_at = Some(stored_now);
        job.lease_owner = Some(p.lease_owner.clone());
        job.lease_expires_at = Some(stored_expiry);
    }
    Ok(jobs)
}

/// Takes damaged rows out of circulation: `discarded`, with the decode error recorded, so a
/// person can see and repair them instead of every claim or rescue failing on them.
pub(crate) fn discard_undecodable(
    conn: &Connection,
    path: &str,
    bad: Vec<Undecodable>,
    now: DateTime<Utc>,
) -> Result<()> {
    for (id, e) in bad {
        tracing::error!(error = %e, "discarding a job whose stored row cannot be read");
        let record = error_json(&AttemptError::unreadable_row(&e, now))?;
        conn.prepare_cached(&sql::DISCARD_UNREADABLE)
            .and_then(|mut s| s.execute(params![id, micros(now), record]))
            .map_err(|e| map_err(path, e))?;
    }
    Ok(())
}

/// Cancels waiting jobs at once and asks running ones' workers to stop.
pub(crate) fn cancel(conn: &Connection, path: &str, p: CancelParams) -> Result<Vec<JobRow>> {
    let now = micros(p.now);
    let stored_now = stored(p.now);
    let event = |name: &str| event_json(&TimelineEvent::new(stored_now, name).detail("on request"));
    let (cancelled, requested) = (event("cancelled")?, event("cancel_requested")?);
    let mut out = Vec::new();
    for id in p.ids {
        let key = id.as_bytes().to_vec();
        conn.prepare_cached(&sql::CANCEL_WAITING)
            .and_then(|mut s| s.execute(params![key, now, cancelled]))
            .map_err(|e| map_err(path, e))?;
        conn.prepare_cached(&sql::CANCEL_RUNNING)
            .and_then(|mut s| s.execute(params![key, requested]))
            .map_err(|e| map_err(path, e))?;
        if let Some(job) = get_job(conn, path, id)? {
            out.push(job);
        }
    }
    Ok(out)
}

/// Runs finished jobs again. A job whose unique key another job holds now is not run again:
/// the error says who holds it, and the writer rolls the whole request back.
pub(crate) fn retry(conn: &Connection, path: &str, p: RetryParams) -> Result<Vec<JobRow>> {
    let now = micros(p.now);
    let event = event_json(&TimelineEvent::new(stored(p.now), "retried").detail("on request"))?;
    let mut out = Vec::new();
    // Jobs of this request already run again (a later one sharing their key is refused
    // naming no holder, as PostgreSQL does: it sees the request's effect undone).
    let mut retried: Vec<uuid::Uuid> = Vec::new();
    for &id in &p.ids {
        // Checked before the write (the writer holds the lock, so nothing moves in between):
        // the index would refuse it too, but without saying who holds the key.
        let holder = conn
            .prepare_cached(&sql::UNIQUE_HOLDER)
            .and_then(|mut s| {
                s.query_row(params![id.as_bytes().as_slice()], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
                })
                .optional()
            })
            .map_err(|e| map_err(path, e))?;
        if let Some((key, Some(holder))) = holder {
            let holder = uuid::Uuid::from_slice(&holder)
                .map_err(|e| StoreError::database(format!("a job id is not a UUID: {e}")))?;
            return Err(StoreError::UniqueKeyHeld {
                id,
                key,
                holder: (!retried.contains(&holder)).then_some(holder),
            });
        }
        let n = conn
            .prepare_cached(&sql::RETRY_FINISHED)
            .and_then(|mut s| s.execute(params![id.as_bytes().as_slice(), now, event]))
            .map_err(|e| map_err(path, e))?;
        if n > 0 {
            retried.push(id);
        }
        if let Some(job) = get_job(conn, path, id)? {
            out.push(job);
        }
    }
    Ok(out)
}

/// One page of jobs, newest first.
pub(crate) fn list(conn: &Connection, path: &str, p: ListParams) -> Result<JobPage> {
    let limit = p.limit.clamp(1, MAX_PAGE);
    let mut sql = sql::LIST.clone();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut filters = String::new();
    if let Some(q) = p.queue {
        args.push(q.into());
        filters.push_str(&format!(" AND queue = ?{}", args.len()));
    }
    if !p.states.is_empty() {
        // Literals (from the enum, never from the caller): a parameter would hide the state
        // from the planner, which then cannot use the state's partial index.
        let states: Vec<String> = p
            .states
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let single_final = match p.states.as_slice() {
            [one] if one.is_final() => Some(*one),
            _ => None,
        };
        if let Some(one) = single_final {
            // One finished state: `=`, as SQLite proves a partial index's condition from `=`
            // only. (For a live state the primary key, newest first, is the better walk.)
            filters.push_str(&format!(" AND state = '{}'", one.as_str()));
        } else {
            filters.push_str(&format!(" AND state IN ({})", states.join(", ")));
        }
        if let [one] = p.states.as_slice() {
            if one.is_final() {
                // Without statistics SQLite would rather walk the whole primary key backwards
                // than this index, which holds exactly the state's rows newest first.
                sql = sql.replacen(
                    "FROM mend_jobs WHERE",
                    &format!("FROM mend_jobs {FINAL_INDEX} WHERE"),
                    1,
                );
            }
        }
    }
    if let Some(k) = p.kind {
        args.push(k.into());
        filters.push_str(&format!(" AND kind = ?{}", args.len()));
    }
    if let Some(t) = p.tag {
        args.push(t.into());
        filters.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?{})",
            args.len()
        ));
    }
    if let Some(after) = p.created_after {
        args.push(micros(after).into());
        filters.push_str(&format!(" AND created_at >= ?{}", args.len()));
    }
    if let Some(before) = p.created_before {
        args.push(micros(before).into());
        filters.push_str(&format!(" AND created_at < ?{}", args.len()));
    }
    if let Some(before) = p.before {
        args.push(before.as_bytes().to_vec().into());
        filters.push_str(&format!(" AND id < ?{}", args.len()));
    }
    sql.push_str(&filters);
    if let Some(contains) = p.args_contains {
        // Bounded: the newest span of jobs matching the other filters, then the JSON test.
        args.push(
            i64::try_from(mend::store::ARGS_SEARCH_SPAN)
                .unwrap_or(i64::MAX)
                .into(),
        );
        sql.push_str(&format!(
            " AND id IN (SELECT id FROM mend_jobs WHERE 1{filters} ORDER BY id DESC LIMIT ?{})",
            args.len()
        ));
        for (key, value) in contains {
            args.push(format!("$.\"{}\"", key.replace('"', "\\\"")).into());
            let path_at = args.len();
            args.push(value.to_string().into());
            sql.push_str(&format!(
                " AND json_extract(args, ?{path_at}) IS json_extract(?{}, '$')",
                args.len()
            ));
        }
    }
    args.push(i64::try_from(limit + 1).unwrap_or(i64::MAX).into());
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
    let jobs = query_jobs(conn, path, &sql, rusqlite::params_from_iter(args))?;
    Ok(JobPage::from_overfetch(jobs, limit))
}

/// The index of finished jobs by state, newest first.
const FINAL_INDEX: &str = "INDEXED BY mend_jobs_final_state_id";

/// Per-state counts, each a `LIMIT cap + 1` walk of an index: the claim, due and running
/// indexes for the live states, `mend_jobs_final_state_id` for the finished ones. With a
/// filter, a state without an index on queue is counted among its newest jobs only.
pub(crate) fn count_states(
    conn: &Connection,
    path: &str,
    p: CountStatesParams,
) -> Result<Vec<StateCount>> {
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut filters = String::new();
    if let Some(q) = p.queue.clone() {
        args.push(q.into());
        filters.push_str(&format!(" AND queue = ?{}", args.len()));
    }
    if let Some(k) = p.kind.clone() {
        args.push(k.into());
        filters.push_str(&format!(" AND kind = ?{}", args.len()));
    }
    let cap = i64::try_from(p.cap).unwrap_or(i64::MAX - 1);
    args.push((cap + 1).into());
    let limit = args.len();
    let span = i64::try_from(mend::store::COUNT_SCAN_SPAN).unwrap_or(i64::MAX);
    args.push(span.into());
    let span_at = args.len();
    let mut out = Vec::new();
    for state in p.states() {
        // The state is a literal (from the enum), so the planner can pick its partial index.
        let st = state.as_str();
        // The newest finished jobs, or the next due waiting ones: each walks its index.
        let order = if state.is_final() {
            "id DESC"
        } else {
            "run_at"
        };
        let hint = if state.is_final() { FINAL_INDEX } else { "" };
        let sql = if p.spans(state) {
            format!(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM (SELECT queue, kind FROM mend_jobs {hint} WHERE state = '{st}' ORDER BY {order} LIMIT ?{span_at}) WHERE 1{filters} LIMIT ?{limit})),
                        (SELECT count(*) FROM (SELECT 1 FROM mend_jobs WHERE state = '{st}' LIMIT ?{span_at}))"
            )
        } else {
            format!(
                "SELECT (SELECT count(*) FROM (SELECT 1 FROM mend_jobs WHERE state = '{st}'{filters} LIMIT ?{limit})), 0"
            )
        };
        // rusqlite wants exactly the parameters a statement names.
        let used = if p.spans(state) {
            &args[..]
        } else {
            &args[..span_at - 1]
        };
        let (n, scanned): (i64, i64) = conn
            .prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_row(rusqlite::params_from_iter(used.iter()), |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
            })
            .map_err(|e| map_err(path, e))?;
        let mut c = StateCount::from_capped(state, u64::try_from(n).unwrap_or(0), p.cap);
        c.capped |= scanned >= span;
        out.push(c);
    }
    Ok(out)
}

/// How many available jobs of the queue come before this one in claim order.
pub(crate) fn count_ahead(conn: &Connection, path: &str, p: CountAheadParams) -> Result<u64> {
    let cap = i64::try_from(p.cap).unwrap_or(i64::MAX - 1);
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM mend_jobs WHERE state = 'available' AND queue = ?1
                AND (priority, run_at, id) < (?2, ?3, ?4) LIMIT ?5)",
        )
        .and_then(|mut s| {
            s.query_row(
                params![
                    p.queue,
                    p.priority,
                    micros(p.run_at),
                    p.id.as_bytes().to_vec(),
                    cap + 1
                ],
                |r| r.get(0),
            )
        })
        .map_err(|e| map_err(path, e))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The next job each queue hands out: one walk of the claim index per queue.
pub(crate) fn queue_heads(
    conn: &Connection,
    path: &str,
    queues: Vec<String>,
) -> Result<Vec<JobRow>> {
    let sql = format!(
        "{} AND state = 'available' AND queue = ?1 ORDER BY priority, run_at, id LIMIT 1",
        *sql::LIST
    );
    let mut out = Vec::new();
    for q in queues {
        out.extend(query_jobs(conn, path, &sql, params![q])?);
    }
    Ok(out)
}

/// Deletes the final jobs among `ids`.
pub(crate) fn delete_final(conn: &Connection, path: &str, ids: Vec<Uuid>) -> Result<Vec<Uuid>> {
    let mut out = Vec::new();
    let mut stmt = conn
        .prepare_cached(
            "DELETE FROM mend_jobs WHERE id = ?1 AND state IN ('completed', 'cancelled', 'discarded') RETURNING id",
        )
        .map_err(|e| map_err(path, e))?;
    for id in ids {
        let deleted = stmt
            .query_row(params![id.as_bytes().to_vec()], |_| Ok(()))
            .optional()
            .map_err(|e| map_err(path, e))?;
        if deleted.is_some() {
            out.push(id);
        }
    }
    Ok(out)
}

/// Deletes the oldest finalized jobs.
pub(crate) fn prune(conn: &Connection, path: &str, p: PruneParams) -> Result<u64> {
    let n = conn
        .prepare_cached(sql::PRUNE)
        .and_then(|mut s| {
            s.execute(params![
                micros(p.finalized_before),
                i64::try_from(p.limit).unwrap_or(i64::MAX)
            ])
        })
        .map_err(|e| map_err(path, e))?;
    Ok(n as u64)
}
