//! Checks of the nodes: which are alive (a recent heartbeat), what kinds they serve, whether
//! their clocks agree with this host's, and (PostgreSQL) whether one leads maintenance.

use chrono::{DateTime, Utc};
use mend::store::{DoctorStats, NodeInfo};

use super::Finding;

/// A node whose heartbeat is older than this is not counted as alive (nodes beat every few
/// seconds and are judged dead after 30 s by default).
pub(super) const LIVE_WITHIN: chrono::Duration = chrono::Duration::seconds(60);
/// A heartbeat this far in the future means the node's clock is ahead of this host's.
const AHEAD_WARN: chrono::Duration = chrono::Duration::seconds(5);

/// Reports the nodes and returns the live ones.
pub(super) fn check(
    nodes: &[NodeInfo],
    stats: &DoctorStats,
    now: DateTime<Utc>,
    out: &mut Vec<Finding>,
) -> Vec<NodeInfo> {
    let live: Vec<NodeInfo> = nodes
        .iter()
        .filter(|n| n.last_seen >= now - LIVE_WITHIN)
        .cloned()
        .collect();
    let stale = nodes.len() - live.len();
    if live.is_empty() {
        out.push(Finding::warn(
            "nodes",
            format!(
                "no live node ({} registered, none seen in the last {} s): no jobs run",
                nodes.len(),
                LIVE_WITHIN.num_seconds()
            ),
            "start `mend serve` (or your worker) on this database",
        ));
    } else {
        let shown: Vec<String> = live.iter().map(describe).collect();
        out.push(Finding::ok(
            "nodes",
            format!("{} live: {}", live.len(), shown.join("; ")),
        ));
    }
    if stale > 0 {
        out.push(Finding::warn(
            "stale_nodes",
            format!(
                "{stale} registered node(s) not seen in the last {} s",
                LIVE_WITHIN.num_seconds()
            ),
            "nothing to do if they were stopped or crashed (a live node rescues their jobs and removes them); otherwise check those hosts",
        ));
    }
    for n in nodes.iter().filter(|n| n.last_seen > now + AHEAD_WARN) {
        out.push(Finding::warn(
            "node_clock",
            format!(
                "node {} on {} reported a heartbeat {} s in the future: its clock is ahead of this host's",
                n.id,
                n.host,
                (n.last_seen - now).num_seconds()
            ),
            "run NTP (chrony or systemd-timesyncd) on every host",
        ));
    }
    match stats.leader_held {
        Some(true) => out.push(Finding::ok("leader", "a node leads maintenance (rescue)")),
        Some(false) if !live.is_empty() => out.push(Finding::warn(
            "leader",
            "no process holds the maintenance leader's lock: dead nodes' jobs wait for their leases to expire",
            "restart one node; if this persists, check that the nodes' connections to PostgreSQL stay up",
        )),
        Some(false) => {}
        // SQLite: no leader, every node rescues.
        None => {}
    }
    live
}

/// One node for people: id, host, pid and kinds.
fn describe(n: &NodeInfo) -> String {
    let kinds = if n.kinds.is_empty() {
        "kinds not recorded".to_owned()
    } else {
        format!("kinds {}", n.kinds.join(","))
    };
    format!("{} (host {}, pid {}, {kinds})", n.id, n.host, n.pid)
}
