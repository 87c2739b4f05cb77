//! Transactional effects: the handler's own writes to this database, committed in the same
//! transaction as its job's completion (`JobContext::commit_with_completion`).
//!
//! The completion is the plain fenced one (`sql::COMPLETED`); a fenced-out attempt's effect
//! never runs. This module must not commit or roll back itself: the writer's savepoint does.

use chrono::{DateTime, Utc};
use mend::store::{Outcome, Result, StoreError, TxEffect};
use rusqlite::{params, Connection};

use crate::attempts::execute_fenced;
use crate::error::map_err;
use crate::row::micros;
use crate::sql;

/// What [`effect`] wraps: the handler's writes, run on the store's connection inside the
/// transaction that completes the job.
pub(crate) type EffectFn = Box<dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send>;

/// The handler's own writes to this database, to commit with its job's completion
/// (`JobContext::commit_with_completion`): they run on the store's writer connection inside
/// the transaction that marks the job completed; an error rolls both back.
///
/// ```no_run
/// # fn demo(ctx: &mend::JobContext, order: i64) {
/// ctx.commit_with_completion(mend_sqlite::effect(move |conn| {
///     conn.execute("UPDATE orders SET receipt_sent = 1 WHERE id = ?1", [order])?;
///     Ok(())
/// }));
/// # }
/// ```
pub fn effect(f: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static) -> TxEffect {
    let f: EffectFn = Box::new(f);
    TxEffect::new(Box::new(f))
}

/// The effect's writes and the completion's result, or why this pair cannot commit together.
pub(crate) fn unpack(outcome: &Outcome, effect: TxEffect) -> Result<(EffectFn, Option<String>)> {
    let (f, result) = effect.unpack::<EffectFn>(outcome, "mend_sqlite::effect")?;
    Ok((f, result.map(|v| v.to_string())))
}

/// Completes the attempt and runs `f`, in the writer's current transaction: `false` when the
/// attempt was fenced out (and `f` did not run), an error when `f` failed (the caller's
/// savepoint then rolls back the completion too).
pub(crate) fn complete_with(
    conn: &Connection,
    path: &str,
    outcome: &Outcome,
    result: Option<String>,
    f: EffectFn,
    now: DateTime<Utc>,
) -> Result<bool> {
    let n = execute_fenced(
        conn,
        &sql::COMPLETED,
        &outcome.fence,
        params![micros(now), result],
    )
    .map_err(|e| map_err(path, e))?;
    if n == 0 {
        return Ok(false);
    }
    f(conn).map_err(|e| StoreError::database(format!("the job's own write failed: {e}")))?;
    Ok(true)
}
