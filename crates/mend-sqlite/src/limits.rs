//! Rate limits and per-key concurrency limits on SQLite: the limits table, the token buckets,
//! and the decision a claim of a limited queue takes.
//!
//! Claims run on the single writer, so the decision needs no lock of its own: between reading
//! what is running and the buckets, and writing the starts and the buckets back, nothing else
//! writes. The decision itself is core's ([`mend::limits::admit`]), the same on every backend.

use chrono::{DateTime, Utc};
use mend::job::{InvalidJob, JobRow};
use mend::limits::{self, Bucket, Candidate, Limit, Usage, MAX_LIMITS_PER_QUEUE};
use mend::store::{ClaimParams, LimitState, Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::error::map_err;
use crate::row::{micros, to_json};
use crate::sql;

fn spec(text: &str) -> Result<Limit> {
    serde_json::from_str(text).map_err(|e| StoreError::Decode {
        id: "mend_limits".to_owned(),
        column: "spec",
        detail: e.to_string(),
    })
}

fn at(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The limits of `queue`, with the waiting count each last wrote.
fn of_queue(conn: &Connection, path: &str, queue: &str) -> Result<Vec<(Limit, u32)>> {
    let mut stmt = conn
        .prepare_cached(sql::LIMITS_OF_QUEUE)
        .map_err(|e| map_err(path, e))?;
    let rows = stmt
        .query_map(params![queue], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
        })
        .map_err(|e| map_err(path, e))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| map_err(path, e))?;
    rows.into_iter()
        .map(|(text, waiting)| Ok((spec(&text)?, waiting)))
        .collect()
}

/// What `limits` of `queue` stand at, for the keys of `jobs`.
fn usage_of<'a>(
    conn: &Connection,
    path: &str,
    queue: &str,
    limits: &[Limit],
    jobs: impl Iterator<Item = Candidate<'a>> + Clone,
) -> Result<Usage> {
    let mut usage = Usage::default();
    if limits.iter().any(|l| l.concurrency.is_some()) {
        let mut stmt = conn
            .prepare_cached(sql::RUNNING_OF_QUEUE)
            .map_err(|e| map_err(path, e))?;
        let running = stmt
            .query_map(params![queue], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .map_err(|e| map_err(path, e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| map_err(path, e))?;
        let parsed: Vec<(String, Value, Option<String>)> = running
            .into_iter()
            .map(|(kind, args, key)| {
                (
                    kind,
                    serde_json::from_str(&args).unwrap_or(Value::Null),
                    key,
                )
            })
            .collect();
        usage.count_running(
            limits,
            parsed.iter().map(|(kind, args, key)| Candidate {
                kind,
                args,
                limit_key: key.as_deref(),
            }),
        );
    }
    let mut stmt = conn
        .prepare_cached(sql::BUCKET)
        .map_err(|e| map_err(path, e))?;
    for limit in limits.iter().filter(|l| l.rate.is_some()) {
        for job in jobs.clone().filter(|j| limit.applies_to(j.kind)) {
            let key = limit.key_of(job.args, job.limit_key);
            let slot = (limit.name.clone(), key);
            if usage.buckets.contains_key(&slot) {
                continue;
            }
            let found = stmt
                .query_row(params![slot.0, slot.1], |r| {
                    Ok((r.get::<_, f64>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()
                .map_err(|e| map_err(path, e))?;
            if let Some((tokens, written)) = found {
                usage.buckets.insert(
                    slot,
                    Bucket {
                        tokens,
                        at: at(written),
                    },
                );
            }
        }
    }
    Ok(usage)
}

/// Of `head` (the head of a limited queue, in claim order), the jobs the queue's limits let
/// start now, at most `p.limit`; writes the buckets and the waiting counts. Runs on the
/// writer, inside the claim's transaction.
pub(crate) fn admit(
    conn: &Connection,
    path: &str,
    p: &ClaimParams,
    head: Vec<JobRow>,
) -> Result<Vec<JobRow>> {
    let stated = of_queue(conn, path, &p.queue)?;
    if stated.is_empty() {
        let mut head = head;
        head.truncate(p.limit);
        return Ok(head);
    }
    let limits: Vec<Limit> = stated.iter().map(|(l, _)| l.clone()).collect();
    let candidates: Vec<Candidate<'_>> = head
        .iter()
        .map(|j| Candidate {
            kind: &j.kind,
            args: &j.args,
            limit_key: j.limit_key.as_deref(),
        })
        .collect();
    let usage = usage_of(conn, path, &p.queue, &limits, candidates.iter().cloned())?;
    let now = crate::row::stored(p.now);
    let admission = limits::admit(&limits, &candidates, &usage, now, p.limit);
    let mut save = conn
        .prepare_cached(sql::SAVE_BUCKET)
        .map_err(|e| map_err(path, e))?;
    for (name, key, bucket) in &admission.buckets {
        save.execute(params![name, key, bucket.tokens, micros(bucket.at)])
            .map_err(|e| map_err(path, e))?;
    }
    let mut waiting = conn
        .prepare_cached(sql::SAVE_WAITING)
        .map_err(|e| map_err(path, e))?;
    for (limit, before) in &stated {
        let held = admission
            .held
            .iter()
            .find(|(name, _)| *name == limit.name)
            .map_or(0, |(_, n)| *n);
        if held != *before {
            waiting
                .execute(params![limit.name, held, micros(p.now)])
                .map_err(|e| map_err(path, e))?;
        }
    }
    let mut taken: Vec<Option<JobRow>> = head.into_iter().map(Some).collect();
    Ok(admission
        .take
        .iter()
        .filter_map(|&i| taken.get_mut(i).and_then(Option::take))
        .collect())
}

/// Creates or replaces a limit; its buckets start full.
pub(crate) fn set(conn: &Connection, path: &str, limit: &Limit, now: DateTime<Utc>) -> Result<()> {
    limit.validate()?;
    let others: i64 = conn
        .prepare_cached(sql::OTHER_LIMITS_OF_QUEUE)
        .and_then(|mut s| s.query_row(params![limit.queue, limit.name], |r| r.get(0)))
        .map_err(|e| map_err(path, e))?;
    if others >= MAX_LIMITS_PER_QUEUE as i64 {
        return Err(
            InvalidJob::new("queue", "already has the most limits a queue may have (16)").into(),
        );
    }
    let stored: Option<String> = conn
        .prepare_cached(sql::LIMIT_SPEC)
        .and_then(|mut s| s.query_row(params![limit.name], |r| r.get(0)).optional())
        .map_err(|e| map_err(path, e))?;
    if stored.is_some_and(|text| spec(&text).ok().as_ref() == Some(limit)) {
        // Unchanged (a node restarting with the same configuration): keep the buckets, or
        // every restart would hand out a fresh burst.
        return Ok(());
    }
    let spec = to_json(limit)?;
    conn.prepare_cached(sql::DELETE_BUCKETS)
        .and_then(|mut s| s.execute(params![limit.name]))
        .map_err(|e| map_err(path, e))?;
    conn.prepare_cached(sql::UPSERT_LIMIT)
        .and_then(|mut s| s.execute(params![limit.name, limit.queue, spec, micros(now)]))
        .map_err(|e| map_err(path, e))?;
    Ok(())
}

/// Removes a limit and its buckets; whether there was one.
pub(crate) fn delete(conn: &Connection, path: &str, name: &str) -> Result<bool> {
    let n = conn
        .prepare_cached(sql::DELETE_LIMIT)
        .and_then(|mut s| s.execute(params![name]))
        .map_err(|e| map_err(path, e))?;
    conn.prepare_cached(sql::DELETE_BUCKETS)
        .and_then(|mut s| s.execute(params![name]))
        .map_err(|e| map_err(path, e))?;
    Ok(n > 0)
}

/// Every limit.
pub(crate) fn list(conn: &Connection, path: &str) -> Result<Vec<LimitState>> {
    let mut stmt = conn
        .prepare_cached(sql::LIMITS)
        .map_err(|e| map_err(path, e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .map_err(|e| map_err(path, e))?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| map_err(path, e))?;
    rows.into_iter()
        .map(|(text, waiting, waiting_at)| {
            Ok(LimitState {
                limit: spec(&text)?,
                waiting,
                waiting_at: waiting_at.map(at),
            })
        })
        .collect()
}

/// The limits of `queue` and what they stand at for the keys of `jobs`.
pub(crate) fn usage(
    conn: &Connection,
    path: &str,
    queue: &str,
    jobs: &[(String, Value, Option<String>)],
) -> Result<(Vec<Limit>, Usage)> {
    let limits: Vec<Limit> = of_queue(conn, path, queue)?
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    if limits.is_empty() {
        return Ok((limits, Usage::default()));
    }
    let usage = usage_of(
        conn,
        path,
        queue,
        &limits,
        jobs.iter().map(|(kind, args, key)| Candidate {
            kind,
            args,
            limit_key: key.as_deref(),
        }),
    )?;
    Ok((limits, usage))
}

/// Deletes up to `limit` buckets that are full at `now` (see `Store::prune_limit_buckets`).
pub(crate) fn prune_buckets(
    conn: &Connection,
    path: &str,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<u64> {
    let mut left = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut total = 0u64;
    for state in list(conn, path)? {
        let Some(rate) = &state.limit.rate else {
            continue;
        };
        if left <= 0 {
            break;
        }
        let before = rate.full_if_written_before(now);
        let n = conn
            .prepare_cached(sql::PRUNE_BUCKETS)
            .and_then(|mut s| s.execute(params![state.limit.name, micros(before), left]))
            .map_err(|e| map_err(path, e))?;
        total += n as u64;
        left -= n as i64;
    }
    Ok(total)
}
