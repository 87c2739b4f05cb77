//! Node identity and liveness: who this process is, and whether another registered node is
//! still alive.
//!
//! On one host (several processes sharing a SQLite file) a node is dead when its process is
//! gone; the check reads `/proc`, and compares the process start time so a reused pid is not
//! mistaken for the original. For nodes on another host or in another pid namespace, only the
//! heartbeat age can tell; that is the slower path.

use chrono::{DateTime, Utc};

use crate::store::NodeInfo;

/// This process's host name (from the kernel, then `$HOSTNAME`, then "unknown").
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The start time of a process, in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after the last
    // ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}

/// A key that names this very process on this host: pid namespace and start time.
pub fn process_key(pid: u32) -> String {
    format!(
        "{}|{}",
        pid_namespace().unwrap_or_default(),
        process_start(pid).unwrap_or_default()
    )
}

/// A fresh [`NodeInfo`] for this process.
pub fn this_node(now: DateTime<Utc>) -> NodeInfo {
    let pid = std::process::id();
    NodeInfo {
        id: format!("{}-{}", host_name(), uuid::Uuid::now_v7().simple()),
        host: host_name(),
        pid,
        process_key: process_key(pid),
        started_at: now,
        last_seen: now,
    }
}

/// What we can tell about another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its process runs on this host.
    Alive,
    /// Its process is gone (or the pid now belongs to another process).
    Dead,
    /// Not on this host or namespace: judge by heartbeat age.
    Unknown,
}

/// Checks a node's process on this host.
pub fn check_process(node: &NodeInfo) -> Liveness {
    if node.host != host_name() {
        return Liveness::Unknown;
    }
    let Some(ns) = pid_namespace() else {
        return Liveness::Unknown;
    };
    let Some((their_ns, their_start)) = node.process_key.split_once('|') else {
        return Liveness::Unknown;
    };
    if their_ns != ns || their_start.is_empty() {
        return Liveness::Unknown;
    }
    match process_start(node.pid) {
        Some(start) if start == their_start => Liveness::Alive,
        _ => Liveness::Dead,
    }
}

/// Whether a node should be treated as dead: its process is gone, or (when that cannot be
/// checked) it has not heartbeated since `stale_before`.
pub fn is_dead(node: &NodeInfo, stale_before: DateTime<Utc>) -> bool {
    match check_process(node) {
        Liveness::Alive => false,
        Liveness::Dead => true,
        Liveness::Unknown => node.last_seen < stale_before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_gone_one_is_dead() {
        let now = Utc::now();
        let me = this_node(now);
        assert_eq!(check_process(&me), Liveness::Alive);

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let key = process_key(pid);
        child.wait().unwrap();
        let gone = NodeInfo {
            pid,
            process_key: key,
            ..me.clone()
        };
        assert_eq!(check_process(&gone), Liveness::Dead);

        // Same pid, different start time: a reused pid is not the original process.
        let reused = NodeInfo {
            process_key: format!("{}|1", pid_namespace().unwrap()),
            ..me.clone()
        };
        assert_eq!(check_process(&reused), Liveness::Dead);

        let elsewhere = NodeInfo {
            host: "another-host".into(),
            ..me
        };
        assert_eq!(check_process(&elsewhere), Liveness::Unknown);
        assert!(!is_dead(&elsewhere, now - chrono::Duration::seconds(5)));
        assert!(is_dead(&elsewhere, now + chrono::Duration::seconds(5)));
    }
}
