//! Transactional effects: the handler's own writes to this database, committed in the same
//! transaction as its job's completion (`JobContext::commit_with_completion`).
//!
//! The completion is the plain fenced batch statement (`sql.complete`) with one row; a
//! fenced-out attempt's effect never runs, and an effect that fails rolls the completion back.

use chrono::{DateTime, Utc};
use mend::store::{Outcome, Result, StoreError, TxEffect};

use crate::row::micros;
use crate::PgStore;

/// The handler's writes, given the transaction that completes the job.
type EffectFuture<'t> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>
            + Send
            + 't,
    >,
>;

/// What [`effect`] wraps: the handler's writes, run inside the transaction that completes the
/// job.
type EffectFn =
    Box<dyn for<'t> FnOnce(&'t tokio_postgres::Transaction<'t>) -> EffectFuture<'t> + Send>;

/// The handler's own writes to this database, to commit with its job's completion
/// (`JobContext::commit_with_completion`): they run inside the transaction that marks the job
/// completed; an error rolls both back.
///
/// ```no_run
/// # fn demo(ctx: &mend::JobContext, order: i64) {
/// ctx.commit_with_completion(mend_postgres::effect(move |tx| {
///     Box::pin(async move {
///         tx.execute("UPDATE orders SET receipt_sent = true WHERE id = $1", &[&order]).await?;
///         Ok(())
///     })
/// }));
/// # }
/// ```
pub fn effect<F>(f: F) -> TxEffect
where
    F: for<'t> FnOnce(&'t tokio_postgres::Transaction<'t>) -> EffectFuture<'t> + Send + 'static,
{
    let f: EffectFn = Box::new(f);
    TxEffect::new(Box::new(f))
}

/// Completes the attempt and runs the effect in one transaction: `false` when the attempt was
/// fenced out (and the effect did not run).
pub(crate) async fn complete_with_effect(
    store: &PgStore,
    outcome: Outcome,
    effect: TxEffect,
    now: DateTime<Utc>,
) -> Result<bool> {
    let (f, result) = effect.unpack::<EffectFn>(&outcome, "mend_postgres::effect")?;
    let now = micros(now);
    let mut c = store.client().await?;
    let tx = c.transaction().await.map_err(store.pg())?;
    let rows = tx
        .query(
            &store.inner.sql.complete,
            &[
                &now,
                &vec![outcome.fence.id],
                &vec![outcome.fence.attempt],
                &vec![outcome.fence.lease_owner.as_str()],
                &vec![result],
            ],
        )
        .await
        .map_err(store.pg())?;
    if rows.is_empty() {
        return Ok(false);
    }
    f(&tx)
        .await
        .map_err(|e| StoreError::database(format!("the job's own write failed: {e}")))?;
    tx.commit().await.map_err(store.pg())?;
    // The effect may have enqueued jobs (`PgStore::insert_many_in` on its transaction): their
    // notification names this store, whose listener leaves the waking to it (see `session`).
    store.inner.wake.notify_waiters();
    Ok(true)
}
