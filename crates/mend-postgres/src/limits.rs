//! Rate limits and per-key concurrency limits on PostgreSQL: the limits table, the token
//! buckets, and the claim of a limited queue.
//!
//! A limited queue is claimed in one transaction that first locks the queue's limit rows, so
//! the claims of that queue from every node take turns: each one reads what is running and
//! the buckets, decides with [`mend::limits::admit`], starts the admitted jobs and writes the
//! buckets back before the next one looks. The plain claim refuses a queue that has limits
//! (a `NOT EXISTS` on this table in the same statement), so a node whose idea of which queues
//! are limited is a moment old can only claim less, never more. A queue without limits pays
//! one index probe of a tiny table per claim.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mend::job::{InvalidJob, JobRow};
use mend::limits::{self, Bucket, Candidate, Limit, Usage, CLAIM_WINDOW, MAX_LIMITS_PER_QUEUE};
use mend::store::{ClaimParams, LimitState, Result, StoreError};
use serde_json::Value;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::jobs::discard_undecodable;
use crate::row::{bound, decode_lenient, micros};
use crate::sql::COLS;
use crate::PgStore;

/// How long a node trusts its list of limited queues before reading it again. A limit set on
/// this node is seen at once; one set elsewhere within this long (claims meanwhile find
/// nothing on that queue: the plain claim refuses limited queues).
const LIMITED_QUEUES_TTL: Duration = Duration::from_secs(1);

/// The statements, with the schema filled in.
pub(crate) struct LimitSql {
    lock_queue: String,
    paused: String,
    pub(crate) head: String,
    pub(crate) running: String,
    pub(crate) buckets: String,
    start: String,
    save_buckets: String,
    save_waiting: String,
    count_for_queue: String,
    spec_of: String,
    upsert: String,
    delete: String,
    delete_buckets: String,
    list: String,
    limited_queues: String,
    for_queue: String,
    prune_buckets: String,
}

impl LimitSql {
    /// The statements for the quoted schema `schema_q`.
    pub(crate) fn new(schema_q: &str) -> Self {
        let t = |s: &str| s.replace("{S}", schema_q);
        LimitSql {
            paused: t("SELECT 1 FROM {S}.mend_queues WHERE name = $1 AND paused"),
            lock_queue: t("SELECT spec, waiting FROM {S}.mend_limits WHERE queue = $1 ORDER BY name FOR UPDATE"),
            // The claim index serves this (the head of one queue's available jobs). No row
            // locks: the limit rows' lock keeps other claims of this queue out, and `start`
            // checks each job is still available.
            head: t("SELECT id, kind, args, limit_key FROM {S}.mend_jobs
                WHERE state = 'available' AND queue = $1 AND (cardinality($2::text[]) = 0 OR kind = ANY($2::text[]))
                ORDER BY priority, run_at, id LIMIT $3"),
            // Bounded by the attempts running at once (the partial index on running jobs).
            running: t("SELECT kind, args, limit_key FROM {S}.mend_jobs WHERE state = 'running' AND queue = $1"),
            buckets: t("SELECT limit_name, key, tokens, at FROM {S}.mend_limit_buckets
                WHERE limit_name = ANY($1) AND key = ANY($2)"),
            start: t(&format!(
                "UPDATE {{S}}.mend_jobs j SET state = 'running', attempt = j.attempt + 1, attempted_at = $2,
                    lease_owner = $3, lease_expires_at = $4, version = u.version
                 FROM unnest($1::uuid[], $5::text[]) AS u(id, version)
                 WHERE j.id = u.id AND j.state = 'available'
                 RETURNING {}",
                COLS.split(", ")
                    .map(|c| if c == "events" { "NULL::jsonb".to_owned() } else { format!("j.{c}") })
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            save_buckets: t("INSERT INTO {S}.mend_limit_buckets (limit_name, key, tokens, at)
                SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::timestamptz[])
                ON CONFLICT (limit_name, key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at"),
            save_waiting: t("UPDATE {S}.mend_limits l SET waiting = coalesce(u.n, 0), waiting_at = $3
                FROM (SELECT name FROM {S}.mend_limits WHERE queue = $4) q
                LEFT JOIN unnest($1::text[], $2::int4[]) AS u(name, n) ON u.name = q.name
                WHERE l.name = q.name"),
            count_for_queue: t("SELECT count(*)::int8 FROM {S}.mend_limits WHERE queue = $1 AND name <> $2"),
            spec_of: t("SELECT spec FROM {S}.mend_limits WHERE name = $1 FOR UPDATE"),
            upsert: t("INSERT INTO {S}.mend_limits (name, queue, spec, updated_at) VALUES ($1, $2, $3, $4)
                ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, spec = excluded.spec, updated_at = excluded.updated_at"),
            delete: t("DELETE FROM {S}.mend_limits WHERE name = $1"),
            delete_buckets: t("DELETE FROM {S}.mend_limit_buckets WHERE limit_name = $1"),
            list: t("SELECT spec, waiting, waiting_at FROM {S}.mend_limits ORDER BY name"),
            limited_queues: t("SELECT DISTINCT queue FROM {S}.mend_limits"),
            for_queue: t("SELECT spec, waiting FROM {S}.mend_limits WHERE queue = $1 ORDER BY name"),
            prune_buckets: t("DELETE FROM {S}.mend_limit_buckets WHERE (limit_name, key) IN (
                SELECT limit_name, key FROM {S}.mend_limit_buckets WHERE limit_name = $1 AND at < $2 LIMIT $3)"),
        }
    }
}

/// Which queues have limits, as this node last read it.
#[derive(Default)]
pub(crate) struct LimitedQueues(Mutex<Option<(Instant, HashSet<String>)>>);

impl LimitedQueues {
    fn fresh(&self, queue: &str) -> Option<bool> {
        let guard = self.0.lock().ok()?;
        let (at, queues) = guard.as_ref()?;
        (at.elapsed() < LIMITED_QUEUES_TTL).then(|| queues.contains(queue))
    }

    fn set(&self, queues: HashSet<String>) {
        if let Ok(mut guard) = self.0.lock() {
            *guard = Some((Instant::now(), queues));
        }
    }

    /// Forget the list: the next claim reads it again.
    pub(crate) fn forget(&self) {
        if let Ok(mut guard) = self.0.lock() {
            *guard = None;
        }
    }
}

/// Whether `queue` has limits, from the cached list (read again when it is old).
pub(crate) async fn is_limited(store: &PgStore, queue: &str) -> Result<bool> {
    let cache = &store.inner.limited;
    if let Some(known) = cache.fresh(queue) {
        return Ok(known);
    }
    let rows = store
        .query(&store.inner.sql.limits.limited_queues, &[])
        .await?;
    let queues: HashSet<String> = rows
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(store.pg())?;
    let limited = queues.contains(queue);
    cache.set(queues);
    Ok(limited)
}

fn spec(store: &PgStore, value: Value) -> Result<Limit> {
    serde_json::from_value(value).map_err(|e| StoreError::Decode {
        id: store.inner.schema.clone(),
        column: "mend_limits.spec",
        detail: e.to_string(),
    })
}

/// Claims from a limited queue (see the module docs). Falls back to the plain claim when the
/// queue's limits are gone.
pub(crate) async fn claim(store: &PgStore, p: ClaimParams) -> Result<Vec<JobRow>> {
    let sql = &store.inner.sql;
    let mut c = store.fast_client().await?;
    let tx = c.transaction().await.map_err(store.pg())?;
    let rows = tx
        .query(&sql.limits.lock_queue, &[&p.queue])
        .await
        .map_err(store.pg())?;
    if rows.is_empty() {
        tx.commit().await.map_err(store.pg())?;
        store.inner.limited.forget();
        return crate::jobs::claim(store, p).await;
    }
    let mut limits = Vec::with_capacity(rows.len());
    let mut waiting_before = Vec::with_capacity(rows.len());
    for r in &rows {
        let limit = spec(store, r.try_get(0).map_err(store.pg())?)?;
        waiting_before.push((
            limit.name.clone(),
            r.try_get::<_, i32>(1).map_err(store.pg())?,
        ));
        limits.push(limit);
    }
    let paused = tx
        .query_opt(&sql.limits.paused, &[&p.queue])
        .await
        .map_err(store.pg())?
        .is_some();
    if paused {
        tx.commit().await.map_err(store.pg())?;
        return Ok(Vec::new());
    }
    let now = micros(p.now);
    let promoted = tx
        .execute(&sql.promote, &[&now])
        .await
        .map_err(store.pg())?;

    let head = tx
        .query(
            &sql.limits.head,
            &[&p.queue, &p.kinds, &bound(CLAIM_WINDOW)],
        )
        .await
        .map_err(store.pg())?;
    let mut ids = Vec::with_capacity(head.len());
    let mut versions: Vec<Option<String>> = Vec::with_capacity(head.len());
    let mut heads: Vec<(String, Value, Option<String>)> = Vec::with_capacity(head.len());
    for r in &head {
        let id = r.try_get::<_, Uuid>(0).map_err(store.pg())?;
        let kind: String = r.try_get(1).map_err(store.pg())?;
        // A job on a side of a rollout this node does not serve is not a candidate here.
        let Some(version) = mend::rollout::admit(&p.routes, &kind, id) else {
            continue;
        };
        versions.push(version.map(str::to_owned));
        ids.push(id);
        // A job whose args cannot be read is left to the plain decode path below (it counts
        // under the key `null`).
        heads.push((
            r.try_get(1).map_err(store.pg())?,
            r.try_get(2).unwrap_or(Value::Null),
            r.try_get(3).map_err(store.pg())?,
        ));
    }
    let usage = usage_in(store, &*tx, &p.queue, &limits, &heads).await?;
    let candidates: Vec<Candidate<'_>> = heads
        .iter()
        .map(|(kind, args, key)| Candidate {
            kind,
            args,
            limit_key: key.as_deref(),
        })
        .collect();
    let admission = limits::admit(&limits, &candidates, &usage, now, p.limit);

    let chosen: Vec<Uuid> = admission.take.iter().map(|&i| ids[i]).collect();
    let chosen_versions: Vec<Option<String>> = admission
        .take
        .iter()
        .map(|&i| versions[i].clone())
        .collect();
    let lease = chrono::Duration::from_std(p.lease_duration).unwrap_or(chrono::Duration::MAX);
    let expires_at = micros(
        now.checked_add_signed(lease)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    );
    let started = if chosen.is_empty() {
        Vec::new()
    } else {
        tx.query(
            &sql.limits.start,
            &[&chosen, &now, &p.lease_owner, &expires_at, &chosen_versions],
        )
        .await
        .map_err(store.pg())?
    };
    if !admission.buckets.is_empty() {
        let (mut names, mut keys, mut tokens, mut ats) = (vec![], vec![], vec![], vec![]);
        for (name, key, b) in &admission.buckets {
            names.push(name.clone());
            keys.push(key.clone());
            tokens.push(b.tokens);
            ats.push(b.at);
        }
        tx.execute(&sql.limits.save_buckets, &[&names, &keys, &tokens, &ats])
            .await
            .map_err(store.pg())?;
    }
    // The waiting counts change rarely; write them only when they do.
    let waiting_now: Vec<(String, i32)> = limits
        .iter()
        .map(|l| {
            let n = admission
                .held
                .iter()
                .find(|(name, _)| *name == l.name)
                .map_or(0, |(_, n)| i32::try_from(*n).unwrap_or(i32::MAX));
            (l.name.clone(), n)
        })
        .collect();
    if waiting_now != waiting_before {
        let (names, counts): (Vec<String>, Vec<i32>) = waiting_now.into_iter().unzip();
        tx.execute(&sql.limits.save_waiting, &[&names, &counts, &now, &p.queue])
            .await
            .map_err(store.pg())?;
    }
    let (mut jobs, bad) = decode_lenient(&started);
    if !bad.is_empty() {
        discard_undecodable(store, &*tx, bad, p.now).await?;
    }
    tx.commit().await.map_err(store.pg())?;
    if promoted > 0 {
        store.inner.wake.notify_waiters();
    }
    jobs.sort_by_key(|a| (a.priority, a.run_at, a.id));
    Ok(jobs)
}

/// What `limits` of `queue` stand at: the running attempts counted per key, and the buckets
/// of the keys `heads` (kind, args, enqueue key) count under.
async fn usage_in(
    store: &PgStore,
    client: &impl GenericClient,
    queue: &str,
    limits: &[Limit],
    heads: &[(String, Value, Option<String>)],
) -> Result<Usage> {
    let sql = &store.inner.sql.limits;
    let mut usage = Usage::default();
    if limits.iter().any(|l| l.concurrency.is_some()) {
        let rows = client
            .query(&sql.running, &[&queue])
            .await
            .map_err(store.pg())?;
        let mut running = Vec::with_capacity(rows.len());
        for r in &rows {
            running.push((
                r.try_get::<_, String>(0).map_err(store.pg())?,
                r.try_get::<_, Value>(1).unwrap_or(Value::Null),
                r.try_get::<_, Option<String>>(2).map_err(store.pg())?,
            ));
        }
        usage.count_running(
            limits,
            running.iter().map(|(kind, args, key)| Candidate {
                kind,
                args,
                limit_key: key.as_deref(),
            }),
        );
    }
    let rated: Vec<&Limit> = limits.iter().filter(|l| l.rate.is_some()).collect();
    if !rated.is_empty() {
        let names: Vec<String> = rated.iter().map(|l| l.name.clone()).collect();
        let keys: Vec<String> = rated
            .iter()
            .flat_map(|l| {
                heads
                    .iter()
                    .filter(|(kind, _, _)| l.applies_to(kind))
                    .map(|(_, args, key)| l.key_of(args, key.as_deref()))
            })
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !keys.is_empty() {
            let rows = client
                .query(&sql.buckets, &[&names, &keys])
                .await
                .map_err(store.pg())?;
            for r in &rows {
                usage.buckets.insert(
                    (
                        r.try_get(0).map_err(store.pg())?,
                        r.try_get(1).map_err(store.pg())?,
                    ),
                    Bucket {
                        tokens: r.try_get(2).map_err(store.pg())?,
                        at: r.try_get(3).map_err(store.pg())?,
                    },
                );
            }
        }
    }
    Ok(usage)
}

/// Creates or replaces a limit (at most [`MAX_LIMITS_PER_QUEUE`] per queue). Its buckets
/// start full again when its rate changes.
pub(crate) async fn set(store: &PgStore, limit: Limit, now: DateTime<Utc>) -> Result<()> {
    limit.validate()?;
    let spec = serde_json::to_value(&limit)
        .map_err(|e| StoreError::database(format!("encoding a limit: {e}")))?;
    let sql = &store.inner.sql.limits;
    let mut c = store.client().await?;
    let tx = c.transaction().await.map_err(store.pg())?;
    // Serialises with the claims of the queue, so none decides on half a change.
    tx.query(&sql.lock_queue, &[&limit.queue])
        .await
        .map_err(store.pg())?;
    let others: i64 = tx
        .query_one(&sql.count_for_queue, &[&limit.queue, &limit.name])
        .await
        .map_err(store.pg())?
        .get(0);
    if others >= MAX_LIMITS_PER_QUEUE as i64 {
        return Err(
            InvalidJob::new("queue", "already has the most limits a queue may have (16)").into(),
        );
    }
    let stored = tx
        .query_opt(&sql.spec_of, &[&limit.name])
        .await
        .map_err(store.pg())?;
    if let Some(row) = stored {
        let current: Value = row.try_get(0).map_err(store.pg())?;
        if current == spec {
            // Unchanged (a node restarting with the same configuration): keep the buckets,
            // or every restart would hand out a fresh burst.
            return tx.commit().await.map_err(store.pg());
        }
    }
    tx.execute(&sql.delete_buckets, &[&limit.name])
        .await
        .map_err(store.pg())?;
    tx.execute(
        &sql.upsert,
        &[&limit.name, &limit.queue, &spec, &micros(now)],
    )
    .await
    .map_err(store.pg())?;
    tx.commit().await.map_err(store.pg())?;
    store.inner.limited.forget();
    store.notify_all().await;
    Ok(())
}

/// Removes a limit and its buckets; whether there was one.
pub(crate) async fn delete(store: &PgStore, name: &str) -> Result<bool> {
    let sql = &store.inner.sql.limits;
    let mut c = store.client().await?;
    let tx = c.transaction().await.map_err(store.pg())?;
    let n = tx
        .execute(&sql.delete, &[&name])
        .await
        .map_err(store.pg())?;
    tx.execute(&sql.delete_buckets, &[&name])
        .await
        .map_err(store.pg())?;
    tx.commit().await.map_err(store.pg())?;
    store.inner.limited.forget();
    if n > 0 {
        store.notify_all().await;
    }
    Ok(n > 0)
}

/// Every limit, with what it held back at the latest claim of its queue.
pub(crate) async fn list(store: &PgStore) -> Result<Vec<LimitState>> {
    let rows = store.query(&store.inner.sql.limits.list, &[]).await?;
    rows.iter()
        .map(|r| {
            Ok(LimitState {
                limit: spec(store, r.try_get(0).map_err(store.pg())?)?,
                waiting: u32::try_from(r.try_get::<_, i32>(1).map_err(store.pg())?).unwrap_or(0),
                waiting_at: r.try_get(2).map_err(store.pg())?,
            })
        })
        .collect()
}

/// The limits of `queue` and what they stand at, for the keys of `jobs` (kind, args, enqueue
/// key).
pub(crate) async fn usage(
    store: &PgStore,
    queue: &str,
    jobs: &[(String, Value, Option<String>)],
) -> Result<(Vec<Limit>, Usage)> {
    let c = store.client().await?;
    let rows = c
        .query(&store.inner.sql.limits.for_queue, &[&queue])
        .await
        .map_err(store.pg())?;
    let limits = rows
        .iter()
        .map(|r| spec(store, r.try_get(0).map_err(store.pg())?))
        .collect::<Result<Vec<_>>>()?;
    if limits.is_empty() {
        return Ok((limits, Usage::default()));
    }
    let usage = usage_in(store, &**c, queue, &limits, jobs).await?;
    Ok((limits, usage))
}

/// Deletes up to `limit` buckets that are full at `now` (see `Store::prune_limit_buckets`).
pub(crate) async fn prune_buckets(
    store: &PgStore,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<u64> {
    let mut left = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut total = 0;
    let c = store.client().await?;
    for state in list(store).await? {
        let Some(rate) = &state.limit.rate else {
            continue;
        };
        if left <= 0 {
            break;
        }
        let before = rate.full_if_written_before(now);
        let n = c
            .execute(
                &store.inner.sql.limits.prune_buckets,
                &[&state.limit.name, &before, &left],
            )
            .await
            .map_err(store.pg())?;
        total += n;
        left -= i64::try_from(n).unwrap_or(i64::MAX);
    }
    Ok(total)
}
