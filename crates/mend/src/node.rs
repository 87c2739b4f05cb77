//! Node identity and liveness: who this process is, and whether another registered node is
//! still alive.
//!
//! On one host (several processes sharing a SQLite file) a node is dead when its process is
//! gone; the check reads `/proc`, and compares the boot id and the process start time so a
//! reused pid or a same-named host is not mistaken for the original. When that cannot be
//! checked (another host, another pid namespace, `hidepid`), only the heartbeat age can tell;
//! that is the slower path.

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

/// Names this boot of this machine: two hosts with the same host name (clones, "localhost")
/// and the same initial pid namespace must not judge each other's pids.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// What `/proc/PID/stat` says about a process.
enum ProcStat {
    /// Running (or sleeping...), with its start time in clock ticks since boot.
    Live(String),
    /// A zombie: exited, not yet reaped.
    Zombie,
    /// No such process.
    Gone,
    /// Cannot tell (no `/proc`, no permission).
    Unreadable,
}

fn proc_stat(pid: u32) -> ProcStat {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ProcStat::Gone,
        Err(_) => return ProcStat::Unreadable,
    };
    // The command name (field 2) may contain spaces and parentheses; fields after the last
    // ')' are plain: state is the first of them, start time the twentieth.
    let Some(close) = stat.rfind(')') else {
        return ProcStat::Unreadable;
    };
    let mut fields = stat[close + 1..].split_whitespace();
    match (fields.next(), fields.nth(18)) {
        (Some("Z") | Some("X"), _) => ProcStat::Zombie,
        (Some(_), Some(start)) => ProcStat::Live(start.to_owned()),
        _ => ProcStat::Unreadable,
    }
}

/// Whether this process can see other processes in `/proc` (not with `hidepid`, where other
/// users' processes look like they do not exist).
fn proc_shows_others() -> bool {
    std::path::Path::new("/proc/1/stat").exists()
}

/// A key that names this very process: boot, pid namespace and start time, so neither a
/// reused pid nor a same-named host is mistaken for it.
pub fn process_key(pid: u32) -> String {
    let start = match proc_stat(pid) {
        ProcStat::Live(start) => start,
        _ => String::new(),
    };
    format!(
        "{}|{}|{}",
        boot_id().unwrap_or_default(),
        pid_namespace().unwrap_or_default(),
        start
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
        kinds: Vec::new(),
        queues: Vec::new(),
        build: crate::store::BUILD.to_owned(),
        in_flight: 0,
        draining: false,
        leader: false,
        versions: Default::default(),
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
    let mut parts = node.process_key.splitn(3, '|');
    let (Some(their_boot), Some(their_ns), Some(their_start)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Liveness::Unknown;
    };
    let (Some(boot), Some(ns)) = (boot_id(), pid_namespace()) else {
        return Liveness::Unknown;
    };
    if their_boot != boot || their_ns != ns || their_start.is_empty() {
        return Liveness::Unknown;
    }
    match proc_stat(node.pid) {
        ProcStat::Live(start) if start == their_start => Liveness::Alive,
        // Same pid, other start time: the pid was reused; the original is gone.
        ProcStat::Live(_) | ProcStat::Zombie => Liveness::Dead,
        ProcStat::Gone if proc_shows_others() => Liveness::Dead,
        ProcStat::Gone | ProcStat::Unreadable => Liveness::Unknown,
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

/// The named handler versions of `kind` that `nodes` serve, in order and without repeats
/// (the unversioned handler is not listed: nodes report named versions only).
pub fn versions_served<'a>(
    nodes: impl IntoIterator<Item = &'a NodeInfo>,
    kind: &str,
) -> std::collections::BTreeSet<&'a str> {
    nodes
        .into_iter()
        .filter_map(|n| n.versions.get(kind))
        .flatten()
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_gone_one_is_dead() {
        let now = Utc::now();
        let me = this_node(now);
        assert_eq!(check_process(&me), Liveness::Alive);

        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        let key = process_key(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        let gone = NodeInfo {
            pid,
            process_key: key,
            ..me.clone()
        };
        assert_eq!(check_process(&gone), Liveness::Dead);

        // Same pid, different start time: a reused pid is not the original process.
        let reused = NodeInfo {
            process_key: format!("{}|{}|1", boot_id().unwrap(), pid_namespace().unwrap()),
            ..me.clone()
        };
        assert_eq!(check_process(&reused), Liveness::Dead);

        // Another boot (or another machine with the same name): cannot judge by pid.
        let other_boot = NodeInfo {
            process_key: me
                .process_key
                .replacen(&boot_id().unwrap(), "another-boot", 1),
            ..me.clone()
        };
        assert_eq!(check_process(&other_boot), Liveness::Unknown);
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
