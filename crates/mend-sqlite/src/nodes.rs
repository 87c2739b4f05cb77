//! The node registry (`mend_nodes`): who is running, and since when they were last seen.
//! SQLite tells a dead process from a live one by `last_seen` alone (the rescuer judges);
//! this module only reads and writes the rows.

use chrono::DateTime;
use mend::store::{NodeInfo, Result};
use rusqlite::{params, Connection};

use crate::error::map_err;
use crate::row::micros;
use crate::sql;

/// Registers `node`, or refreshes its `last_seen`.
pub(crate) fn register(conn: &Connection, path: &str, node: NodeInfo) -> Result<()> {
    conn.prepare_cached(sql::REGISTER_NODE)
        .and_then(|mut s| {
            s.execute(params![
                node.id,
                node.host,
                node.pid,
                node.process_key,
                micros(node.started_at),
                micros(node.last_seen),
                crate::row::to_json(&node.kinds).unwrap_or_else(|_| "[]".to_owned()),
                crate::row::to_json(&node.queues).unwrap_or_else(|_| "[]".to_owned()),
                node.build,
                node.in_flight,
                node.draining,
                crate::row::to_json(&node.versions).unwrap_or_else(|_| "{}".to_owned()),
            ])
        })
        .map_err(|e| map_err(path, e))?;
    Ok(())
}

/// A node's heartbeat; `false` when the node is no longer registered.
pub(crate) fn heartbeat(
    conn: &Connection,
    path: &str,
    p: &mend::store::HeartbeatNodeParams,
) -> Result<bool> {
    let n = conn
        .prepare_cached(sql::HEARTBEAT_NODE)
        .and_then(|mut s| s.execute(params![p.id, micros(p.now), p.in_flight, p.draining]))
        .map_err(|e| map_err(path, e))?;
    Ok(n == 1)
}

/// Every readable registered node.
pub(crate) fn list(conn: &Connection, path: &str) -> Result<Vec<NodeInfo>> {
    let mut stmt = conn
        .prepare_cached(sql::LIST_NODES)
        .map_err(|e| map_err(path, e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, u32>(9)?,
                r.get::<_, bool>(10)?,
                r.get::<_, String>(11)?,
            ))
        })
        .map_err(|e| map_err(path, e))?;
    let mut out = Vec::new();
    for row in rows {
        // A damaged node row is skipped (its jobs are still rescued when their leases
        // expire) rather than failing every rescue pass.
        let (
            id,
            host,
            pid,
            process_key,
            started,
            seen,
            kinds,
            queues,
            build,
            in_flight,
            draining,
            versions,
        ) = match row {
            Ok(r) => r,
            Err(
                e @ (rusqlite::Error::FromSqlConversionFailure(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)
                | rusqlite::Error::InvalidColumnType(..)),
            ) => {
                tracing::warn!(error = %e, "skipping an unreadable row in mend_nodes");
                continue;
            }
            Err(e) => return Err(map_err(path, e)),
        };
        let (Some(started_at), Some(last_seen)) = (
            DateTime::from_timestamp_micros(started),
            DateTime::from_timestamp_micros(seen),
        ) else {
            tracing::warn!(node = %id, "skipping a node row with an impossible timestamp");
            continue;
        };
        out.push(NodeInfo {
            started_at,
            last_seen,
            id,
            host,
            pid,
            process_key,
            // A damaged list reads as "not recorded" rather than hiding the node.
            kinds: serde_json::from_str(&kinds).unwrap_or_default(),
            queues: serde_json::from_str(&queues).unwrap_or_default(),
            build,
            in_flight,
            draining,
            versions: serde_json::from_str(&versions).unwrap_or_default(),
            // No election on SQLite: every node runs the (fenced) maintenance.
            leader: true,
        });
    }
    Ok(out)
}

/// Forgets the nodes `ids`.
pub(crate) fn deregister(conn: &Connection, path: &str, ids: Vec<String>) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(sql::DELETE_NODE)
        .map_err(|e| map_err(path, e))?;
    for id in ids {
        stmt.execute(params![id]).map_err(|e| map_err(path, e))?;
    }
    Ok(())
}
