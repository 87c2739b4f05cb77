//! What a running attempt writes, and what happens to it when its worker is gone: outcomes,
//! checkpoints, pending durable cleanups, lease extensions, rescue. Every write on behalf of
//! an attempt goes through the fence (`sql::FENCE`, or its batch form); a fenced-out write
//! changes nothing and is reported as such, never as an error.

use std::collections::HashSet;

use mend::cleanup::DurableCleanup;
use mend::job::JobState;
use mend::maintenance::rescuer;
use mend::store::{
    CheckpointParams, CompleteParams, CompleteResult, ExtendLeasesParams, ExtendLeasesResult,
    Fence, HeldJob, OutcomeKind, RescueParams, Rescued, Result,
};
use serde_json::Value;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::error::decode;
use crate::jobs::discard_undecodable;
use crate::row::{decode_lenient, jsonb, micros, row_to_job};
use crate::PgStore;

/// Applies a batch of outcomes: plain completions in one statement, the rest (rare) one
/// statement each in one transaction.
pub(crate) async fn complete_many(store: &PgStore, p: CompleteParams) -> Result<CompleteResult> {
    let now = micros(p.now);
    let sql = &store.inner.sql;
    let (mut ids, mut attempts, mut owners, mut results) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rare = Vec::new();
    for o in &p.outcomes {
        match &o.kind {
            OutcomeKind::Completed { result } if o.cleanups.is_empty() => {
                ids.push(o.fence.id);
                attempts.push(o.fence.attempt);
                owners.push(o.fence.lease_owner.as_str());
                results.push(result.clone());
            }
            _ => rare.push(o),
        }
    }
    let mut c = store.client().await?;
    let mut applied: HashSet<Uuid> = HashSet::new();
    // The plain completions: one statement of their own (each outcome is fenced on its
    // own, so they need no transaction with the rare ones).
    if !ids.is_empty() {
        let st = c.prepare_cached(&sql.complete).await.map_err(store.pg())?;
        for r in c
            .query(&st, &[&now, &ids, &attempts, &owners, &results])
            .await
            .map_err(store.pg())?
        {
            applied.insert(r.try_get(0).map_err(store.pg())?);
        }
    }
    if !rare.is_empty() {
        let tx = c.transaction().await.map_err(store.pg())?;
        for o in rare {
            let event = jsonb(&o.timeline_event(now))?;
            let (id, attempt, owner) = (&o.fence.id, &o.fence.attempt, &o.fence.lease_owner);
            let (statement, state, run_at, record, result);
            let params: Vec<&(dyn ToSql + Sync)> = match &o.kind {
                OutcomeKind::Completed { result: r } => {
                    statement = &sql.completed_event;
                    result = r.clone();
                    vec![id, attempt, owner, &now, &result, &event]
                }
                OutcomeKind::Retry { error, run_at: at } => {
                    statement = &sql.retry;
                    record = jsonb(error)?;
                    run_at = micros(*at);
                    vec![id, attempt, owner, &run_at, &record, &now, &event]
                }
                OutcomeKind::Discard { error } | OutcomeKind::Cancelled { error } => {
                    statement = &sql.finish_with_error;
                    state = if matches!(o.kind, OutcomeKind::Discard { .. }) {
                        "discarded"
                    } else {
                        "cancelled"
                    };
                    record = jsonb(error)?;
                    vec![id, attempt, owner, &now, &record, &state, &event]
                }
                OutcomeKind::Snooze { run_at: at } => {
                    statement = &sql.snooze;
                    run_at = micros(*at);
                    state = JobState::waiting_for(run_at, now).as_str();
                    vec![id, attempt, owner, &run_at, &state, &now, &event]
                }
                OutcomeKind::Release => {
                    statement = &sql.release;
                    vec![id, attempt, owner, &now, &event]
                }
            };
            let st = tx.prepare_cached(statement).await.map_err(store.pg())?;
            if tx.execute(&st, &params).await.map_err(store.pg())? == 1 {
                applied.insert(o.fence.id);
            }
        }
        tx.commit().await.map_err(store.pg())?;
    }
    let mut result = CompleteResult::default();
    for o in &p.outcomes {
        if applied.contains(&o.fence.id) {
            result.applied.push(o.fence.id);
        } else {
            result.fenced.push(o.fence.id);
        }
    }
    Ok(result)
}

/// Stores the attempt's checkpoint; `false` when fenced out.
pub(crate) async fn checkpoint(store: &PgStore, p: CheckpointParams) -> Result<bool> {
    let c = store.client().await?;
    let n = c
        .execute(
            &store.inner.sql.checkpoint,
            &[
                &p.fence.id,
                &p.fence.attempt,
                &p.fence.lease_owner,
                &p.state,
            ],
        )
        .await
        .map_err(store.pg())?;
    Ok(n == 1)
}

/// Changes a running attempt's pending durable cleanups (fenced; `None` when the attempt
/// no longer holds the job), optionally recording a timeline event in the same write.
pub(crate) async fn edit_pending<T>(
    store: &PgStore,
    fence: &Fence,
    event: Option<Value>,
    edit: impl FnOnce(&mut Vec<DurableCleanup>) -> T,
) -> Result<Option<T>> {
    let sql = &store.inner.sql;
    let mut c = store.client().await?;
    let tx = c.transaction().await.map_err(store.pg())?;
    let rows = tx
        .query(
            &sql.pending_cleanups,
            &[&fence.id, &fence.attempt, &fence.lease_owner],
        )
        .await
        .map_err(store.pg())?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let current: Option<Value> = row.try_get(0).map_err(store.pg())?;
    let stored = current
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| decode(Some(fence.id), "pending_cleanups", e))?;
    let (out, list) = DurableCleanup::edit_stored(stored, edit);
    let list = list.map(|l| jsonb(&l)).transpose()?;
    tx.execute(&sql.set_pending_cleanups, &[&fence.id, &list, &event])
        .await
        .map_err(store.pg())?;
    tx.commit().await.map_err(store.pg())?;
    Ok(Some(out))
}

/// Extends the leases still held; reports the lost ones and those asked to cancel.
pub(crate) async fn extend_leases(
    store: &PgStore,
    p: ExtendLeasesParams,
) -> Result<ExtendLeasesResult> {
    let sql = &store.inner.sql;
    // The main pool: its custom plans size the unnest join by the real batch.
    let c = store.client().await?;
    let st = c.prepare_cached(&sql.extend).await.map_err(store.pg())?;
    let ids: Vec<Uuid> = p.jobs.iter().map(|h| h.id).collect();
    let attempts: Vec<i32> = p.jobs.iter().map(|h| h.attempt).collect();
    let expires = micros(p.expires_at);
    let mut rows = c
        .query(&st, &[&expires, &ids, &attempts, &p.lease_owner])
        .await
        .map_err(store.pg())?;
    if rows.len() < p.jobs.len() {
        // Skipped (locked) or gone: a plain read tells which.
        let returned: HashSet<Uuid> = rows
            .iter()
            .filter_map(|r| r.try_get::<_, Uuid>(0).ok())
            .collect();
        let (rest_ids, rest_attempts): (Vec<Uuid>, Vec<i32>) = p
            .jobs
            .iter()
            .filter(|h| !returned.contains(&h.id))
            .map(|h| (h.id, h.attempt))
            .unzip();
        rows.extend(
            c.query(
                &sql.extend_check,
                &[&rest_ids, &rest_attempts, &p.lease_owner],
            )
            .await
            .map_err(store.pg())?,
        );
    }
    let mut out = ExtendLeasesResult::default();
    let mut kept = HashSet::new();
    for r in rows {
        let id: Uuid = r.try_get(0).map_err(store.pg())?;
        let cancel: bool = r.try_get(1).map_err(store.pg())?;
        kept.insert(id);
        if cancel {
            out.cancel_requested.push(id);
        }
    }
    out.lost = p
        .jobs
        .iter()
        .filter(|h| !kept.contains(&h.id))
        .copied()
        .collect::<Vec<HeldJob>>();
    Ok(out)
}

/// Takes the running jobs of dead nodes, and of expired leases, away from their workers, in
/// one transaction; wakes every node's fetchers when it rescued any.
pub(crate) async fn rescue(store: &PgStore, p: RescueParams) -> Result<Vec<Rescued>> {
    let mut c = store.client().await?;
    let tx = c.transaction().await.map_err(store.pg())?;
    let sql = &store.inner.sql;
    let now = micros(p.now);
    let rows = tx
        .query(&sql.rescue_candidates, &[&p.dead_nodes, &now])
        .await
        .map_err(store.pg())?;
    let (candidates, bad) = decode_lenient(&rows);
    discard_undecodable(store, &*tx, bad, now).await?;
    // Only a job that ran a named version can be a canary's.
    let routes = if candidates.iter().any(|j| j.version.is_some()) {
        crate::rollouts::routes(store).await?
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for job in candidates {
        let d = rescuer::decide(&job, now, p.quarantine_after_lost, &routes);
        let finalized = (d.state == JobState::Discarded).then_some(now);
        let record = jsonb(&d.error)?;
        let event = jsonb(&d.timeline_event(&job, now))?;
        let rows = tx
            .query(
                &sql.rescue_one,
                &[
                    &d.state.as_str(),
                    &now,
                    &finalized,
                    &record,
                    &job.id,
                    &job.attempt,
                    &event,
                    &micros(d.run_at),
                ],
            )
            .await
            .map_err(store.pg())?;
        if let Some(r) = rows.first() {
            out.push(Rescued {
                job: row_to_job(r)?,
                quarantined: d.quarantined,
            });
        }
    }
    tx.commit().await.map_err(store.pg())?;
    if !out.is_empty() {
        store.notify_all().await;
    }
    Ok(out)
}
