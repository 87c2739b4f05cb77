//! Job rows outside a running attempt: insert (also in a caller's transaction), claim, read,
//! list, cancel, retry on request, prune. Statements come from `sql`; which pool runs them is
//! decided here (claims on the fast pool, the rest on the main one).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use mend::job::{AttemptError, JobRow, JobState, NewJob, TimelineEvent};
use mend::store::{
    CancelParams, ClaimParams, CountAheadParams, CountStatesParams, JobPage, ListParams,
    PruneParams, Result, RetryParams, StateCount, StoreError, MAX_PAGE,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::row::{
    bound, decode_all, decode_lenient, in_order, jsonb, micros, row_to_job, Undecodable,
};
use crate::PgStore;

/// Boxed statement parameters, for statements whose parameter list is built at run time.
type Params = Vec<Box<dyn ToSql + Sync + Send>>;

/// Borrows boxed parameters the way the driver takes them.
fn refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Inserts `jobs` on `client` with the insert statement given as text (a caller's client) or
/// prepared (ours); a job whose unique key is taken returns the row holding it.
pub(crate) async fn insert_with<C, S>(
    store: &PgStore,
    client: &C,
    insert: &S,
    jobs: Vec<NewJob>,
) -> Result<Vec<JobRow>>
where
    C: GenericClient + Sync,
    S: tokio_postgres::ToStatement + ?Sized + Sync + Send,
{
    for job in &jobs {
        job.validate()?;
    }
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let now = micros(Utc::now());
    let (params, mut rows) = insert_params(&jobs, now)?;
    let mut inserted = run_insert(store, client, insert, &params).await?;
    // Jobs whose unique key was taken: return the row that holds it. The holder may leave its
    // unique states (finish) between the insert and this read, freeing the key: such jobs are
    // inserted again, a bounded number of times (each round needs another job to finish).
    let mut pending: Vec<usize> = (0..jobs.len())
        .filter(|&i| !inserted.contains(&jobs[i].id))
        .collect();
    for round in 0.. {
        if pending.is_empty() {
            break;
        }
        let keys: Vec<String> = pending
            .iter()
            .filter_map(|&i| rows[i].unique_key.clone())
            .collect();
        let existing = decode_all(
            &client
                .query(&store.inner.sql.select_unique, &[&keys])
                .await
                .map_err(store.pg())?,
        )?;
        let by_key: HashMap<String, JobRow> = existing
            .into_iter()
            .filter_map(|j| j.unique_key.clone().map(|k| (k, j)))
            .collect();
        pending.retain(|&i| {
            let held = rows[i].unique_key.as_ref().and_then(|k| by_key.get(k));
            match held {
                Some(row) => {
                    rows[i] = row.clone();
                    false
                }
                None => true,
            }
        });
        if pending.is_empty() {
            break;
        }
        if round == 3 {
            return Err(StoreError::database(format!(
                "job {} was not inserted and no job holds its unique key",
                jobs[pending[0]].id
            )));
        }
        let again: Vec<NewJob> = pending.iter().map(|&i| jobs[i].clone()).collect();
        let (params, _) = insert_params(&again, now)?;
        inserted = run_insert(store, client, insert, &params).await?;
        pending.retain(|&i| !inserted.contains(&jobs[i].id));
    }
    Ok(rows)
}

/// Runs the insert; the ids actually inserted.
async fn run_insert<C, S>(
    store: &PgStore,
    client: &C,
    insert: &S,
    params: &Params,
) -> Result<HashSet<Uuid>>
where
    C: GenericClient + Sync,
    S: tokio_postgres::ToStatement + ?Sized + Sync + Send,
{
    client
        .query(insert, &refs(params))
        .await
        .map_err(store.pg())?
        .iter()
        .map(|r| r.try_get::<_, Uuid>(0))
        .collect::<std::result::Result<_, _>>()
        .map_err(store.pg())
}

/// The insert statement's array parameters, and the rows the insert will store.
fn insert_params(jobs: &[NewJob], now: DateTime<Utc>) -> Result<(Params, Vec<JobRow>)> {
    // Where and when each job starts: due now (`available`) or later (`scheduled`).
    let placed: Vec<(DateTime<Utc>, JobState)> = jobs
        .iter()
        .map(|job| {
            let run_at = micros(job.run_at.unwrap_or(now));
            (run_at, JobState::waiting_for(run_at, now))
        })
        .collect();
    // Unique jobs: the key computed from their options, and the states that hold it.
    let unique: Vec<(Option<String>, Option<i32>)> =
        jobs.iter().map(|j| j.unique_columns(now)).collect();
    // One array per column, in the statement's parameter order ($9 is `now`).
    fn column<T>(jobs: &[NewJob], f: impl Fn(&NewJob) -> T) -> Vec<T> {
        jobs.iter().map(f).collect()
    }
    let params: Params = vec![
        Box::new(column(jobs, |j| j.id)),
        Box::new(column(jobs, |j| j.queue.clone())),
        Box::new(column(jobs, |j| j.kind.clone())),
        Box::new(column(jobs, |j| j.args.clone())),
        Box::new(
            placed
                .iter()
                .map(|(_, state)| state.as_str().to_owned())
                .collect::<Vec<_>>(),
        ),
        Box::new(column(jobs, |j| j.priority)),
        Box::new(column(jobs, |j| j.max_attempts)),
        Box::new(placed.iter().map(|(run_at, _)| *run_at).collect::<Vec<_>>()),
        Box::new(now),
        Box::new(unique.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()),
        Box::new(column(jobs, |j| serde_json::json!(j.tags))),
        Box::new(column(jobs, |j| j.timeout_ms)),
        Box::new(column(jobs, |j| j.trace_parent.clone())),
        Box::new(unique.iter().map(|(_, m)| *m).collect::<Vec<_>>()),
        Box::new(column(jobs, |j| j.limit_key.clone())),
    ];
    let rows = jobs
        .iter()
        .zip(&placed)
        .zip(unique)
        .map(|((job, (run_at, state)), (key, _))| {
            let mut row = job.clone().into_row(*state, *run_at, now);
            row.unique_key = key;
            row
        })
        .collect();
    Ok((params, rows))
}

/// Inserts `jobs` on a pooled connection and wakes local fetchers.
pub(crate) async fn insert(store: &PgStore, jobs: Vec<NewJob>) -> Result<Vec<JobRow>> {
    let c = store.client().await?;
    let insert = c
        .prepare_cached(&store.inner.sql.insert)
        .await
        .map_err(store.pg())?;
    let rows = insert_with(store, &**c, &insert, jobs).await?;
    // Local fetchers at once; other nodes hear the trigger's NOTIFY.
    if rows.iter().any(|r| r.state == JobState::Available) {
        store.inner.wake.notify_waiters();
    }
    Ok(rows)
}

/// Promotes due jobs and claims the head of a queue, pipelined in one round trip.
pub(crate) async fn claim(store: &PgStore, p: ClaimParams) -> Result<Vec<JobRow>> {
    let c = store.fast_client().await?;
    let sql = &store.inner.sql;
    let promote = c.prepare_cached(&sql.promote).await.map_err(store.pg())?;
    let routed = !p.routes.is_empty();
    let claim = c
        .prepare_cached(if routed {
            &sql.claim_routed
        } else {
            &sql.claim
        })
        .await
        .map_err(store.pg())?;
    let now = micros(p.now);
    let lease = chrono::Duration::from_std(p.lease_duration).unwrap_or(chrono::Duration::MAX);
    let expires_at = micros(
        now.checked_add_signed(lease)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    );
    let limit = bound(p.limit);
    // Pipelined: one round trip. The promotion commits before the claim runs, so due
    // jobs promoted here are claimable by this very claim.
    let promote_params: [&(dyn ToSql + Sync); 1] = [&now];
    let r = &p.routes;
    let route_kinds: Vec<&str> = r.iter().map(|r| r.kind.as_str()).collect();
    let thresholds: Vec<i32> = r
        .iter()
        .map(|r| i32::try_from(r.threshold).unwrap_or(i32::MAX))
        .collect();
    let canary_ok: Vec<bool> = r.iter().map(|r| r.canary_ok).collect();
    let stable_ok: Vec<bool> = r.iter().map(|r| r.stable_ok).collect();
    let canary: Vec<Option<&str>> = r.iter().map(|r| r.canary.as_deref()).collect();
    let stable: Vec<Option<&str>> = r.iter().map(|r| r.stable.as_deref()).collect();
    let mut claim_params: Vec<&(dyn ToSql + Sync)> = vec![
        &p.queue,
        &p.kinds,
        &limit,
        &now,
        &p.lease_owner,
        &expires_at,
    ];
    if routed {
        claim_params.extend([
            &route_kinds as &(dyn ToSql + Sync),
            &thresholds,
            &canary_ok,
            &stable_ok,
            &canary,
            &stable,
        ]);
    }
    let (promoted, rows) = tokio::join!(
        c.execute(&promote, &promote_params),
        c.query(&claim, &claim_params)
    );
    // The promotion commits on its own, even when the claim then fails; its notification
    // names this store, which therefore wakes its fetchers itself either way.
    if promoted.as_ref().is_ok_and(|n| *n > 0) {
        store.inner.wake.notify_waiters();
    }
    promoted.map_err(store.pg())?;
    let rows = rows.map_err(store.pg())?;
    let (mut jobs, bad) = decode_lenient(&rows);
    if !bad.is_empty() {
        discard_undecodable(store, &**c, bad, p.now).await?;
    }
    jobs.sort_by_key(|a| (a.priority, a.run_at, a.id));
    Ok(jobs)
}

/// Takes damaged rows out of circulation: `discarded`, with the decode error recorded, so a
/// person can see and repair them instead of every claim or rescue failing on them.
pub(crate) async fn discard_undecodable(
    store: &PgStore,
    client: &impl GenericClient,
    bad: Vec<Undecodable>,
    now: DateTime<Utc>,
) -> Result<()> {
    for (id, e) in bad {
        tracing::error!(error = %e, "discarding a job whose stored row cannot be read");
        let record = jsonb(&AttemptError::unreadable_row(&e, now))?;
        client
            .execute(&store.inner.sql.discard_bad, &[&id, &now, &record])
            .await
            .map_err(store.pg())?;
    }
    Ok(())
}

/// Cancels waiting jobs at once and asks running ones' workers to stop, in one transaction.
pub(crate) async fn cancel(store: &PgStore, p: CancelParams) -> Result<Vec<JobRow>> {
    let now = micros(p.now);
    let event = |name: &str| jsonb(&TimelineEvent::new(now, name).detail("on request"));
    let (cancelled, requested) = (event("cancelled")?, event("cancel_requested")?);
    let sql = &store.inner.sql;
    let mut c = store.client().await?;
    let tx = c.transaction().await.map_err(store.pg())?;
    tx.execute(&sql.cancel_waiting, &[&p.ids, &now, &cancelled])
        .await
        .map_err(store.pg())?;
    tx.execute(&sql.cancel_running, &[&p.ids, &requested])
        .await
        .map_err(store.pg())?;
    let rows = get_many(store, &*tx, &p.ids).await?;
    tx.commit().await.map_err(store.pg())?;
    Ok(rows)
}

/// Runs finished jobs again, and wakes every node's fetchers. A job whose unique key another
/// job holds now is not run again: the whole request changes nothing and says who holds it.
pub(crate) async fn retry(store: &PgStore, p: RetryParams) -> Result<Vec<JobRow>> {
    let now = micros(p.now);
    let event = jsonb(&TimelineEvent::new(now, "retried").detail("on request"))?;
    let sql = &store.inner.sql;
    let mut round = 0;
    let rows = loop {
        let mut c = store.client().await?;
        let tx = c.transaction().await.map_err(store.pg())?;
        match tx
            .execute(&sql.retry_finished, &[&p.ids, &now, &event])
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) && round < 3 => {
                drop(tx);
                if let Some(held) = unique_conflict(store, &**c, &p.ids).await? {
                    return Err(held);
                }
                // The holder finished in the meantime: try again.
                round += 1;
                continue;
            }
            Err(e) => return Err(store.pg()(e)),
        }
        let rows = get_many(store, &*tx, &p.ids).await?;
        tx.execute(&sql.notify, &[]).await.map_err(store.pg())?;
        tx.commit().await.map_err(store.pg())?;
        break rows;
    };
    store.inner.wake.notify_waiters();
    Ok(rows)
}

/// Why retrying `ids` broke the unique index: the first job whose key another job holds, or
/// (when none does) two jobs of the request that share a key. `None`: no conflict is left.
async fn unique_conflict(
    store: &PgStore,
    client: &impl GenericClient,
    ids: &[Uuid],
) -> Result<Option<StoreError>> {
    let rows = client
        .query(&store.inner.sql.unique_holders, &[&ids])
        .await
        .map_err(store.pg())?;
    let mut seen: HashMap<String, Uuid> = HashMap::new();
    let mut twin = None;
    for r in &rows {
        let (id, key, holder): (Uuid, String, Option<Uuid>) = (
            r.try_get(0).map_err(store.pg())?,
            r.try_get(1).map_err(store.pg())?,
            r.try_get(2).map_err(store.pg())?,
        );
        if let Some(holder) = holder {
            return Ok(Some(StoreError::UniqueKeyHeld {
                id,
                key,
                holder: Some(holder),
            }));
        }
        if seen.insert(key.clone(), id).is_some() && twin.is_none() {
            twin = Some(StoreError::UniqueKeyHeld {
                id,
                key,
                holder: None,
            });
        }
    }
    Ok(twin)
}

/// The jobs `ids` as `client` sees them (inside a transaction: as it just changed them), in
/// the order of `ids`, missing ones left out.
async fn get_many(
    store: &PgStore,
    client: &impl GenericClient,
    ids: &[Uuid],
) -> Result<Vec<JobRow>> {
    let rows = client
        .query(&store.inner.sql.get_many, &[&ids])
        .await
        .map_err(store.pg())?;
    Ok(in_order(ids, decode_all(&rows)?))
}

/// Several jobs by id, in one statement.
pub(crate) async fn get_many_by_id(store: &PgStore, ids: Vec<Uuid>) -> Result<Vec<JobRow>> {
    let rows = store.query(&store.inner.sql.get_many, &[&ids]).await?;
    Ok(in_order(&ids, decode_all(&rows)?))
}

/// One job by id.
pub(crate) async fn get(store: &PgStore, id: Uuid) -> Result<Option<JobRow>> {
    let rows = store.query(&store.inner.sql.get_many, &[&vec![id]]).await?;
    rows.first().map(row_to_job).transpose()
}

/// One page of jobs, newest first.
pub(crate) async fn list(store: &PgStore, p: ListParams) -> Result<JobPage> {
    let limit = p.limit.clamp(1, MAX_PAGE);
    let mut sql = store.inner.sql.list.clone();
    let mut args: Params = Vec::new();
    let mut filters = String::new();
    if let Some(q) = p.queue {
        args.push(Box::new(q));
        filters.push_str(&format!(" AND queue = ${}", args.len()));
    }
    if !p.states.is_empty() {
        let states: Vec<String> = p.states.iter().map(|s| s.as_str().to_owned()).collect();
        args.push(Box::new(states));
        filters.push_str(&format!(" AND state = ANY(${}::text[])", args.len()));
    }
    if let Some(k) = p.kind {
        args.push(Box::new(k));
        filters.push_str(&format!(" AND kind = ${}", args.len()));
    }
    if let Some(t) = p.tag {
        args.push(Box::new(t));
        filters.push_str(&format!(" AND ${}::text = ANY(tags)", args.len()));
    }
    if let Some(after) = p.created_after {
        args.push(Box::new(after));
        filters.push_str(&format!(" AND created_at >= ${}", args.len()));
    }
    if let Some(before) = p.created_before {
        args.push(Box::new(before));
        filters.push_str(&format!(" AND created_at < ${}", args.len()));
    }
    if let Some(before) = p.before {
        args.push(Box::new(before));
        filters.push_str(&format!(" AND id < ${}", args.len()));
    }
    sql.push_str(&filters);
    if let Some(contains) = p.args_contains {
        // Bounded: the newest span of jobs matching the other filters, then the JSON test.
        args.push(Box::new(bound(mend::store::ARGS_SEARCH_SPAN)));
        sql.push_str(&format!(
            " AND id IN (SELECT id FROM {}.mend_jobs WHERE true{filters} ORDER BY id DESC LIMIT ${})",
            store.inner.sql.schema_q,
            args.len()
        ));
        args.push(Box::new(serde_json::Value::Object(contains)));
        sql.push_str(&format!(" AND args::jsonb @> ${}::jsonb", args.len()));
    }
    args.push(Box::new(bound(limit + 1)));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    let jobs = decode_all(&store.query(&sql, &refs(&args)).await?)?;
    Ok(JobPage::from_overfetch(jobs, limit))
}

/// Per-state counts, each a `LIMIT cap + 1` walk of an index: the claim, due and running
/// indexes for the live states, `mend_jobs_final_state_id` for the finished ones. With a
/// filter, a state without an index on queue is counted among its newest jobs only.
pub(crate) async fn count_states(store: &PgStore, p: CountStatesParams) -> Result<Vec<StateCount>> {
    let mut args: Params = Vec::new();
    let mut filters = String::new();
    if let Some(q) = p.queue.clone() {
        args.push(Box::new(q));
        filters.push_str(&format!(" AND queue = ${}", args.len()));
    }
    if let Some(k) = p.kind.clone() {
        args.push(Box::new(k));
        filters.push_str(&format!(" AND kind = ${}", args.len()));
    }
    let cap = i64::try_from(p.cap).unwrap_or(i64::MAX - 1);
    args.push(Box::new(cap + 1));
    let limit = args.len();
    let span = i64::try_from(mend::store::COUNT_SCAN_SPAN).unwrap_or(i64::MAX);
    let s = &store.inner.sql.schema_q;
    let states = p.states();
    // PostgreSQL wants exactly the parameters a statement names: the span only when used.
    if states.iter().any(|st| p.spans(*st)) {
        args.push(Box::new(span));
    }
    let span_at = args.len();
    let parts: Vec<String> = states
        .iter()
        .map(|state| {
            let st = state.as_str();
            // The newest finished jobs, or the next due waiting ones: each walks its index.
            let order = if state.is_final() { "id DESC" } else { "run_at" };
            if p.spans(*state) {
                format!(
                    "SELECT '{st}'::text, (SELECT count(*) FROM (SELECT 1 FROM (SELECT queue, kind FROM {s}.mend_jobs WHERE state = '{st}' ORDER BY {order} LIMIT ${span_at}) n WHERE true{filters} LIMIT ${limit}) c)::int8,
                        (SELECT count(*) FROM (SELECT 1 FROM {s}.mend_jobs WHERE state = '{st}' LIMIT ${span_at}) m)::int8"
                )
            } else {
                format!(
                    "SELECT '{st}'::text, (SELECT count(*) FROM (SELECT 1 FROM {s}.mend_jobs WHERE state = '{st}'{filters} LIMIT ${limit}) c)::int8, 0::int8"
                )
            }
        })
        .collect();
    let rows = store
        .query(&parts.join(" UNION ALL "), &refs(&args))
        .await?;
    let mut out = Vec::with_capacity(states.len());
    for r in &rows {
        let state: String = r.try_get(0).map_err(store.pg())?;
        let n: i64 = r.try_get(1).map_err(store.pg())?;
        let scanned: i64 = r.try_get(2).map_err(store.pg())?;
        if let Some(state) = JobState::ALL.into_iter().find(|s| s.as_str() == state) {
            let mut c = StateCount::from_capped(state, u64::try_from(n).unwrap_or(0), p.cap);
            c.capped |= scanned >= span;
            out.push(c);
        }
    }
    Ok(out)
}

/// How many available jobs of the queue come before this one in claim order.
pub(crate) async fn count_ahead(store: &PgStore, p: CountAheadParams) -> Result<u64> {
    let cap = i64::try_from(p.cap).unwrap_or(i64::MAX - 1);
    let sql = format!(
        "SELECT count(*)::int8 FROM (SELECT 1 FROM {}.mend_jobs WHERE state = 'available' AND queue = $1
            AND (priority, run_at, id) < ($2, $3, $4) LIMIT $5) c",
        store.inner.sql.schema_q
    );
    let rows = store
        .query(&sql, &[&p.queue, &p.priority, &p.run_at, &p.id, &(cap + 1)])
        .await?;
    let n: i64 = match rows.first() {
        Some(r) => r.try_get(0).map_err(store.pg())?,
        None => 0,
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The next job each queue hands out.
pub(crate) async fn queue_heads(store: &PgStore, queues: Vec<String>) -> Result<Vec<JobRow>> {
    // A lateral LIMIT 1 per queue walks the claim index from its head.
    let sql = format!(
        "SELECT h.* FROM unnest($1::text[]) AS q(name), LATERAL (
            SELECT {COLS} FROM {s}.mend_jobs WHERE state = 'available' AND queue = q.name
            ORDER BY priority, run_at, id LIMIT 1) h",
        COLS = crate::sql::COLS,
        s = store.inner.sql.schema_q
    );
    decode_all(&store.query(&sql, &[&queues]).await?)
}

/// Deletes the final jobs among `ids`.
pub(crate) async fn delete_final(store: &PgStore, ids: Vec<Uuid>) -> Result<Vec<Uuid>> {
    let sql = format!(
        "DELETE FROM {}.mend_jobs WHERE id = ANY($1) AND state IN ('completed', 'cancelled', 'discarded') RETURNING id",
        store.inner.sql.schema_q
    );
    let rows = store.query(&sql, &[&ids]).await?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(store.pg()))
        .collect()
}

/// Deletes the oldest finalized jobs.
pub(crate) async fn prune(store: &PgStore, p: PruneParams) -> Result<u64> {
    let c = store.client().await?;
    c.execute(
        &store.inner.sql.prune,
        &[&p.finalized_before, &bound(p.limit)],
    )
    .await
    .map_err(store.pg())
}
