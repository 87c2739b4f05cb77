//! The node registry (`mend_nodes`). Registering takes the node's advisory lock first (see
//! `session`): a registered node without its lock would look dead to `liveness`.

use mend::store::{HeartbeatNodeParams, NodeInfo, Result};

use crate::row::micros;
use crate::PgStore;

/// Takes the node's lock, then registers it (or refreshes its `last_seen`).
pub(crate) async fn register(store: &PgStore, node: NodeInfo) -> Result<()> {
    // The lock first: a registered node without its lock would look dead.
    let key = store.inner.session.lock_node(&node.id).await?;
    let c = store.client().await?;
    c.execute(
        &store.inner.sql.register_node,
        &[
            &node.id,
            &node.host,
            &i64::from(node.pid),
            &node.process_key,
            &micros(node.started_at),
            &micros(node.last_seen),
            &key,
            &node.kinds,
            &crate::row::jsonb(&node.queues)?,
            &node.build,
            &i32::try_from(node.in_flight).unwrap_or(i32::MAX),
            &node.draining,
            &crate::row::jsonb(&node.versions)?,
        ],
    )
    .await
    .map_err(store.pg())?;
    Ok(())
}

/// A node's heartbeat, on the fast pool; `false` when the node is no longer registered.
pub(crate) async fn heartbeat(store: &PgStore, p: &HeartbeatNodeParams) -> Result<bool> {
    let c = store.fast_client().await?;
    let in_flight = i32::try_from(p.in_flight).unwrap_or(i32::MAX);
    let n = c
        .execute(
            &store.inner.sql.heartbeat_node,
            &[&p.id, &micros(p.now), &in_flight, &p.draining],
        )
        .await
        .map_err(store.pg())?;
    Ok(n == 1)
}

/// Every registered node.
pub(crate) async fn list(store: &PgStore) -> Result<Vec<NodeInfo>> {
    let ns = i64::from(store.inner.session.ns);
    let rows = store.query(&store.inner.sql.list_nodes, &[&ns]).await?;
    let mut out = Vec::new();
    for r in rows {
        let pid: i64 = r.try_get(2).map_err(store.pg())?;
        let queues: serde_json::Value = r.try_get(7).map_err(store.pg())?;
        let in_flight: i32 = r.try_get(9).map_err(store.pg())?;
        out.push(NodeInfo {
            id: r.try_get(0).map_err(store.pg())?,
            host: r.try_get(1).map_err(store.pg())?,
            pid: u32::try_from(pid).unwrap_or(0),
            process_key: r.try_get(3).map_err(store.pg())?,
            started_at: r.try_get(4).map_err(store.pg())?,
            last_seen: r.try_get(5).map_err(store.pg())?,
            kinds: r.try_get(6).map_err(store.pg())?,
            // A damaged list reads as "not recorded" rather than hiding the node.
            queues: serde_json::from_value(queues).unwrap_or_default(),
            build: r.try_get(8).map_err(store.pg())?,
            in_flight: u32::try_from(in_flight).unwrap_or(0),
            draining: r.try_get(10).map_err(store.pg())?,
            versions: r
                .try_get::<_, serde_json::Value>(11)
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            leader: r.try_get(12).map_err(store.pg())?,
        });
    }
    Ok(out)
}

/// Forgets the nodes `ids`, then lets go of their locks.
pub(crate) async fn deregister(store: &PgStore, ids: Vec<String>) -> Result<()> {
    {
        let c = store.client().await?;
        c.execute(&store.inner.sql.deregister_nodes, &[&ids])
            .await
            .map_err(store.pg())?;
    }
    store.inner.session.unlock_nodes(&ids).await;
    Ok(())
}
