//! Checks of the jobs: kinds waiting with no live node to run them, running jobs whose leases
//! expired long ago (rescue is not happening), and jobs discarded because a durable cleanup
//! failed.

use std::collections::BTreeSet;

use mend::store::{DoctorJob, DoctorStats, NodeInfo};

use super::Finding;

/// A running job whose lease expired this long ago should have been rescued long since
/// (rescue runs every few seconds).
pub(super) const STUCK_AFTER: chrono::Duration = chrono::Duration::minutes(5);

/// The three job checks.
pub(super) fn check(stats: &DoctorStats, live: &[NodeInfo], out: &mut Vec<Finding>) {
    unserved(stats, live, out);
    if stats.stuck.is_empty() {
        out.push(Finding::ok(
            "stuck_leases",
            format!(
                "no running job's lease expired over {} min ago",
                STUCK_AFTER.num_minutes()
            ),
        ));
    } else {
        out.push(Finding::fail(
            "stuck_leases",
            format!(
                "running jobs with leases expired over {} min ago (rescue is not happening): {}",
                STUCK_AFTER.num_minutes(),
                examples(&stats.stuck, "owner")
            ),
            "keep at least one `mend serve` node running on this database (it rescues these), and check that its clock is right",
        ));
    }
    if stats.cleanup_failed.is_empty() {
        out.push(Finding::ok(
            "cleanups",
            "no job discarded for a failed durable cleanup in the last day",
        ));
    } else {
        let id = stats.cleanup_failed[0].id;
        out.push(Finding::warn(
            "cleanups",
            format!(
                "jobs discarded in the last day because a durable cleanup failed: {}",
                examples(&stats.cleanup_failed, "error")
            ),
            format!("fix the cleanup (see `mend jobs show {id}`), then `mend jobs retry {id}`"),
        ));
    }
}

/// Available jobs waiting over a minute of kinds no live node serves.
fn unserved(stats: &DoctorStats, live: &[NodeInfo], out: &mut Vec<Finding>) {
    if live.iter().any(|n| n.kinds.is_empty()) {
        out.push(Finding::ok(
            "unserved_kinds",
            "not checked: a live node does not record its kinds (started by an older mend)",
        ));
        return;
    }
    let served: BTreeSet<&str> = live
        .iter()
        .flat_map(|n| n.kinds.iter().map(String::as_str))
        .collect();
    // A node that records its queues serves a kind only in those queues (older nodes, which
    // record none, count for every queue).
    let works =
        |n: &NodeInfo, queue: &str| n.queues.is_empty() || n.queues.iter().any(|q| q.name == queue);
    let mut found = false;
    for w in stats.waiting.iter().filter(|w| {
        !live
            .iter()
            .any(|n| n.kinds.contains(&w.kind) && works(n, &w.queue))
    }) {
        found = true;
        let why = if served.contains(w.kind.as_str()) {
            let mut queues: Vec<&str> = live
                .iter()
                .filter(|n| n.kinds.contains(&w.kind))
                .flat_map(|n| n.queues.iter().map(|q| q.name.as_str()))
                .collect();
            queues.sort_unstable();
            queues.dedup();
            format!(
                "the live nodes that serve kind `{}` work only queue(s) {}",
                w.kind,
                queues.join(", ")
            )
        } else {
            format!("no live node serves kind `{}`", w.kind)
        };
        out.push(Finding::warn(
            "unserved_kind",
            format!(
                "{} job(s) of kind `{}` in queue `{}` have waited over 1 min and {why}",
                w.count, w.kind, w.queue
            ),
            format!(
                "start a node with a handler for `{}` on queue `{}`, or cancel the jobs if nothing should run them",
                w.kind, w.queue
            ),
        ));
    }
    if !found {
        out.push(Finding::ok(
            "unserved_kinds",
            "every kind waiting over 1 min has a live node serving it",
        ));
    }
}

/// Up to the first few jobs, `id (queue/kind, <label> ...)`.
fn examples(jobs: &[DoctorJob], label: &str) -> String {
    let shown: Vec<String> = jobs
        .iter()
        .map(|j| {
            let detail = j.detail.as_deref().unwrap_or("-");
            let detail: String = detail.chars().take(120).collect();
            format!("{} ({}/{}, {label} {detail})", j.id, j.queue, j.kind)
        })
        .collect();
    let more = if jobs.len() >= 5 { ", and more" } else { "" };
    format!("{}{more}", shown.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mend::store::{NodeQueue, WaitingKind};

    #[test]
    fn a_kind_is_served_only_in_the_queues_its_nodes_work() {
        let node = |queues: Vec<&str>| NodeInfo {
            id: "n".into(),
            kinds: vec!["email".into()],
            queues: queues
                .into_iter()
                .map(|q| NodeQueue {
                    name: q.into(),
                    concurrency: 1,
                })
                .collect(),
            ..Default::default()
        };
        let stats = DoctorStats {
            waiting: vec![
                WaitingKind {
                    queue: "default".into(),
                    kind: "email".into(),
                    count: 1,
                },
                WaitingKind {
                    queue: "mail".into(),
                    kind: "email".into(),
                    count: 2,
                },
            ],
            ..Default::default()
        };
        let mut out = Vec::new();
        unserved(&stats, &[node(vec!["default"])], &mut out);
        let warned: Vec<&str> = out
            .iter()
            .filter(|f| f.check == "unserved_kind")
            .map(|f| f.message.as_str())
            .collect();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains("2 job(s) of kind `email` in queue `mail`")
                && warned[0].contains("work only queue(s) default"),
            "{warned:?}"
        );
        // A node that records no queues (an older mend) serves its kinds everywhere.
        let mut out = Vec::new();
        unserved(&stats, &[node(vec![])], &mut out);
        assert!(out.iter().all(|f| f.check != "unserved_kind"), "{out:?}");
    }
}
