//! Checks of the jobs: kinds waiting with no live node to run them, running jobs whose leases
//! expired long ago (rescue is not happening), jobs discarded because a durable cleanup
//! failed, and durable cleanups failing again and again (from the workers' events).

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
    // The store looks at DOCTOR_WAITING_SPAN waiting jobs at most: past that, every count is
    // a lower bound.
    let looked_at: u64 = stats.waiting.iter().map(|w| w.count).sum();
    let capped = i64::try_from(looked_at).unwrap_or(i64::MAX) >= mend::store::DOCTOR_WAITING_SPAN;
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
                "{}{} job(s) of kind `{}` in queue `{}` have waited over 1 min and {why}",
                if capped { "at least " } else { "" },
                w.count,
                w.kind,
                w.queue
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

/// How many failed runs (each after all its tries) in a day make a cleanup "failing again and
/// again": one failure is a bad day for one job, the second says the cleanup itself is broken.
pub(super) const REPEATED_FAILURES: usize = 2;

/// Durable cleanups that failed all their tries in the last day, per cleanup name: a warning
/// for each that failed [`REPEATED_FAILURES`] times or more.
pub(super) fn cleanup_failures(events: &[mend::stats::Event], out: &mut Vec<Finding>) {
    struct Seen<'a> {
        runs: usize,
        jobs: BTreeSet<&'a str>,
        last_error: &'a str,
        last_job: &'a str,
    }
    let mut by_name: std::collections::BTreeMap<&str, Seen<'_>> = Default::default();
    // Events come newest first, so the first one seen for a name carries its latest error.
    for e in events {
        let d = &e.detail;
        let (Some(name), Some(job)) = (d["cleanup"].as_str(), d["job"].as_str()) else {
            continue;
        };
        let seen = by_name.entry(name).or_insert(Seen {
            runs: 0,
            jobs: BTreeSet::new(),
            last_error: d["error"].as_str().unwrap_or("-"),
            last_job: job,
        });
        seen.runs += 1;
        seen.jobs.insert(job);
    }
    let failing: Vec<String> = by_name
        .iter()
        .filter(|(_, s)| s.runs >= REPEATED_FAILURES)
        .map(|(name, s)| {
            let error: String = s.last_error.chars().take(120).collect();
            format!(
                "`{name}` failed {} times on {} jobs (latest on job {}: {error})",
                s.runs,
                s.jobs.len(),
                s.last_job
            )
        })
        .collect();
    if failing.is_empty() {
        out.push(Finding::ok(
            "cleanup_failures",
            "no durable cleanup failed repeatedly in the last day",
        ));
    } else {
        out.push(Finding::warn(
            "cleanup_failures",
            format!(
                "durable cleanups failing again and again in the last day: {}",
                failing.join("; ")
            ),
            "fix the cleanup's code or what it talks to (the error says which), deploy it to every worker of the queue, then retry the jobs it stopped (`mend jobs list --state discarded`)",
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

    fn failed(cleanup: &str, job: &str, error: &str) -> mend::stats::Event {
        mend::stats::Event {
            at: chrono::Utc::now(),
            kind: mend::stats::event_kind::CLEANUP_FAILED.into(),
            node: "n1".into(),
            detail: serde_json::json!({"job": job, "cleanup": cleanup, "tries": 3, "error": error}),
        }
    }

    #[test]
    fn a_cleanup_failing_twice_in_a_day_is_named_with_its_latest_error() {
        let mut out = Vec::new();
        cleanup_failures(&[], &mut out);
        assert_eq!(out[0].status, super::super::Status::Ok);

        // One failure of each: a bad day for one job, not a broken cleanup.
        let mut out = Vec::new();
        cleanup_failures(
            &[failed("unlock", "j1", "boom"), failed("refund", "j2", "x")],
            &mut out,
        );
        assert_eq!(out[0].status, super::super::Status::Ok, "{:?}", out[0]);

        let mut out = Vec::new();
        cleanup_failures(
            &[
                failed("unlock", "j2", "connection refused (newest)"),
                failed("refund", "j3", "x"),
                failed("unlock", "j1", "timed out"),
                failed("unlock", "j1", "timed out"),
            ],
            &mut out,
        );
        let f = &out[0];
        assert_eq!(f.status, super::super::Status::Warn, "{f:?}");
        assert!(
            f.message.contains(
                "`unlock` failed 3 times on 2 jobs (latest on job j2: connection refused (newest))"
            ),
            "{}",
            f.message
        );
        assert!(!f.message.contains("refund"), "{}", f.message);
        assert!(f.fix.as_deref().is_some_and(|x| x.contains("retry")));
    }

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
