//! Queues: pausing (`mend_queues`) and the per-queue counts of jobs by state.

use chrono::{DateTime, Utc};
use mend::job::JobState;
use mend::store::{QueueCount, Result, StoreError};

use crate::row::micros;
use crate::PgStore;

/// How many jobs each queue holds in each state.
pub(crate) async fn counts(store: &PgStore) -> Result<Vec<QueueCount>> {
    let c = store.client().await?;
    let rows = c
        .query(&store.inner.sql.queue_counts, &[])
        .await
        .map_err(store.pg())?;
    let mut out = Vec::new();
    for r in rows {
        let queue: String = r.try_get(0).map_err(store.pg())?;
        let state: String = r.try_get(1).map_err(store.pg())?;
        let count: i64 = r.try_get(2).map_err(store.pg())?;
        let state = state
            .parse::<JobState>()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        out.push(QueueCount {
            queue,
            state,
            count: u64::try_from(count).unwrap_or(0),
        });
    }
    out.sort_by(|a, b| (&a.queue, a.state).cmp(&(&b.queue, b.state)));
    Ok(out)
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
    let c = store.client().await?;
    let rows = c
        .query(&store.inner.sql.paused_queues, &[])
        .await
        .map_err(store.pg())?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(store.pg()))
        .collect()
}
