//! Rollouts (`mend_rollouts`), the samples of versioned attempts the guard reads
//! (`mend_version_samples`), and handing the jobs a canary failed back to stable. What a
//! rollout decides is core's (`mend::rollout`); this module only stores it. A rollout is kept
//! as its JSON body beside the columns the statements filter on.

use chrono::{DateTime, Utc};
use mend::rollout::{Rollout, RouteState};
use mend::stats::Sketch;
use mend::store::{
    HealParams, Result, StoreError, VersionSample, VersionSamplesParams, MAX_ROLLOUTS_LISTED,
    MAX_SAMPLE_ROWS,
};
use serde_json::Value;
use uuid::Uuid;

use crate::row::micros;
use crate::PgStore;

fn decode(body: Value) -> Result<Rollout> {
    serde_json::from_value(body)
        .map_err(|e| StoreError::database(format!("a stored rollout cannot be read: {e}")))
}

fn table(store: &PgStore, name: &str) -> String {
    format!("{}.{name}", store.inner.sql.schema_q)
}

/// Inserts `rollout` with its stable version taken from the kind's latest rollout, in one
/// transaction that holds the kind's latest row; `None` when the kind has an active one.
pub(crate) async fn start(store: &PgStore, rollout: Rollout) -> Result<Option<Rollout>> {
    let t = table(store, "mend_rollouts");
    let mut c = store.client().await?;
    let tx = c.transaction().await.map_err(store.pg())?;
    // Two starts of one kind at once: the second waits here for the first to commit.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("{t}/{}", rollout.kind)],
    )
    .await
    .map_err(store.pg())?;
    let prev = tx
        .query_opt(
            &format!(
                "SELECT body FROM {t} WHERE kind = $1 ORDER BY started_at DESC, id DESC LIMIT 1"
            ),
            &[&rollout.kind],
        )
        .await
        .map_err(store.pg())?;
    let prev = match prev {
        Some(row) => Some(decode(row.try_get(0).map_err(store.pg())?)?),
        None => None,
    };
    let Some(rollout) = mend::store::rollout_to_start(prev, rollout)? else {
        return Ok(None);
    };
    let body = crate::row::jsonb(&rollout)?;
    tx.execute(
        &format!("INSERT INTO {t} (id, kind, state, started_at, revision, body) VALUES ($1, $2, $3, $4, $5, $6)"),
        &[
            &rollout.id,
            &rollout.kind,
            &rollout.state.as_str(),
            &micros(rollout.started_at),
            &rollout.revision,
            &body,
        ],
    )
    .await
    .map_err(store.pg())?;
    tx.commit().await.map_err(store.pg())?;
    Ok(Some(rollout))
}

pub(crate) async fn list(store: &PgStore) -> Result<Vec<Rollout>> {
    let t = table(store, "mend_rollouts");
    let rows = store
        .query(
            &format!("SELECT body FROM {t} ORDER BY started_at DESC, id DESC LIMIT $1"),
            &[&(MAX_ROLLOUTS_LISTED as i64)],
        )
        .await?;
    rows.iter()
        .map(|r| decode(r.try_get(0).map_err(store.pg())?))
        .collect()
}

pub(crate) async fn get(store: &PgStore, id: Uuid) -> Result<Option<Rollout>> {
    let t = table(store, "mend_rollouts");
    let rows = store
        .query(&format!("SELECT body FROM {t} WHERE id = $1"), &[&id])
        .await?;
    rows.first()
        .map(|r| decode(r.try_get(0).map_err(store.pg())?))
        .transpose()
}

/// Compare and set on the revision.
pub(crate) async fn save(store: &PgStore, mut rollout: Rollout) -> Result<Option<Rollout>> {
    let t = table(store, "mend_rollouts");
    let read = rollout.revision;
    rollout.revision = read + 1;
    let body = crate::row::jsonb(&rollout)?;
    let c = store.client().await?;
    let n = c
        .execute(
            &format!("UPDATE {t} SET state = $2, revision = $3, body = $4 WHERE id = $1 AND revision = $5"),
            &[
                &rollout.id,
                &rollout.state.as_str(),
                &rollout.revision,
                &body,
                &read,
            ],
        )
        .await
        .map_err(store.pg())?;
    Ok((n == 1).then_some(rollout))
}

/// The latest rollout of each kind, as routes (on the fast pool: every node reads this at
/// every heartbeat).
pub(crate) async fn routes(store: &PgStore) -> Result<Vec<RouteState>> {
    let t = table(store, "mend_rollouts");
    let c = store.fast_client().await?;
    let stmt = c
        .prepare_cached(&format!(
            "SELECT DISTINCT ON (kind) body FROM {t} ORDER BY kind, started_at DESC, id DESC"
        ))
        .await
        .map_err(store.pg())?;
    let rows = c.query(&stmt, &[]).await.map_err(store.pg())?;
    rows.iter()
        .map(|r| decode(r.try_get(0).map_err(store.pg())?).map(|r| r.route_state()))
        .collect()
}

pub(crate) async fn add_samples(store: &PgStore, samples: Vec<VersionSample>) -> Result<()> {
    let t = table(store, "mend_version_samples");
    let at: Vec<DateTime<Utc>> = samples.iter().map(|s| micros(s.at)).collect();
    let kinds: Vec<&str> = samples.iter().map(|s| s.kind.as_str()).collect();
    let versions: Vec<&str> = samples
        .iter()
        .map(|s| s.version.as_deref().unwrap_or(""))
        .collect();
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let attempts: Vec<i64> = samples.iter().map(|s| n(s.attempts)).collect();
    let failures: Vec<i64> = samples.iter().map(|s| n(s.failures)).collect();
    let runs: Vec<String> = samples.iter().map(|s| s.run.to_text()).collect();
    let c = store.client().await?;
    c.execute(
        &format!(
            "INSERT INTO {t} (at, kind, version, attempts, failures, run)
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[])"
        ),
        &[&at, &kinds, &versions, &attempts, &failures, &runs],
    )
    .await
    .map_err(store.pg())?;
    Ok(())
}

pub(crate) async fn samples(
    store: &PgStore,
    p: VersionSamplesParams,
) -> Result<Vec<VersionSample>> {
    let t = table(store, "mend_version_samples");
    let rows = store
        .query(
            &format!(
                "SELECT at, version, attempts, failures, run FROM {t}
                 WHERE kind = $1 AND at >= $2 ORDER BY at LIMIT $3"
            ),
            &[&p.kind, &p.since, &(MAX_SAMPLE_ROWS as i64)],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let version: String = r.try_get(1).map_err(store.pg())?;
        let run: String = r.try_get(4).map_err(store.pg())?;
        out.push(VersionSample {
            at: r.try_get(0).map_err(store.pg())?,
            kind: p.kind.clone(),
            version: (!version.is_empty()).then_some(version),
            attempts: u64::try_from(r.try_get::<_, i64>(2).map_err(store.pg())?).unwrap_or(0),
            failures: u64::try_from(r.try_get::<_, i64>(3).map_err(store.pg())?).unwrap_or(0),
            // A damaged sketch loses its run times, not the counts.
            run: Sketch::from_text(&run).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Deletes samples older than `before`, at most `limit`.
pub(crate) async fn prune_samples(
    store: &PgStore,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    let t = table(store, "mend_version_samples");
    let c = store.client().await?;
    c.execute(
        &format!("DELETE FROM {t} WHERE id = ANY(ARRAY(SELECT id FROM {t} WHERE at < $1 ORDER BY at LIMIT $2))"),
        &[&before, &limit],
    )
    .await
    .map_err(store.pg())
}

pub(crate) async fn heal(store: &PgStore, p: HealParams) -> Result<Vec<Uuid>> {
    let event = crate::row::jsonb(&p.event)?;
    let limit = crate::row::bound(p.limit);
    let rows = store
        .query(
            &store.inner.sql.heal,
            &[
                &p.kind,
                &p.canary,
                &micros(p.since),
                &micros(p.now),
                &limit,
                &event,
            ],
        )
        .await?;
    let ids = rows
        .iter()
        .filter_map(|r| r.try_get::<_, Uuid>(0).ok())
        .collect::<Vec<_>>();
    if !ids.is_empty() {
        store.notify_all().await;
    }
    Ok(ids)
}
