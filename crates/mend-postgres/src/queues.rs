//! Queues: pausing (`mend_queues`) and the per-queue counts of jobs by state.

use chrono::{DateTime, Utc};
use mend::store::{QueueCount, Result};

use crate::row::micros;
use crate::PgStore;

/// How many jobs each queue holds in each state (`live`: the states still to run only).
pub(crate) async fn counts(store: &PgStore, live: bool) -> Result<Vec<QueueCount>> {
    let sql = if live {
        &store.inner.sql.live_queue_counts
    } else {
        &store.inner.sql.queue_counts
    };
    let rows = store.query(sql, &[]).await?;
    let rows = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<std::result::Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(store.pg())?;
    QueueCount::from_rows(rows)
}

/// Pauses or resumes `queue`; a resumed queue wakes every node's fetchers.
pub(crate) async fn set_paused(
    store: &PgStore,
    queue: &str,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    {
        let c = store.client().await?;
        c.execute(
            &store.inner.sql.set_queue_paused,
            &[&queue, &paused, &micros(now)],
        )
        .await
        .map_err(store.pg())?;
    }
    if !paused {
        store.notify_all().await;
    }
    Ok(())
}

/// The paused queues, by name.
pub(crate) async fn paused(store: &PgStore) -> Result<Vec<String>> {
    let rows = store.query(&store.inner.sql.paused_queues, &[]).await?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(store.pg()))
        .collect()
}
