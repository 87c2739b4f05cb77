//! The drill's `mend serve` nodes as child processes: starting one (and waiting for it to say
//! it is ready), signalling one, and stopping them all at the end. It decides nothing about
//! when a fault happens; that is the plan's.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::drill::{Breakage, Canaries, DrillDir};

/// How long a node drains on SIGTERM (its --drain).
pub(super) const DRAIN: Duration = Duration::from_secs(3);

/// How long a node may take to exit after SIGTERM before it counts as stuck.
pub(super) const STOP_LIMIT: Duration = Duration::from_secs(DRAIN.as_secs() + 15);

/// A running `mend serve` node.
pub(super) struct Node {
    pub(super) child: Child,
    /// Held open while the node should live.
    _lifeline: Option<tokio::process::ChildStdin>,
    pub(super) id: String,
    pub(super) pid: u32,
}

/// Starts and stops the nodes.
pub(super) struct Cluster {
    pub(super) exe: PathBuf,
    pub(super) node_url: String,
    pub(super) queue: String,
    pub(super) concurrency: usize,
    pub(super) dir: DrillDir,
    pub(super) config: PathBuf,
    pub(super) breakage: Option<Breakage>,
    /// The canary versions every node serves.
    pub(super) canaries: Canaries,
    pub(super) starts: AtomicUsize,
}

impl Cluster {
    /// Starts node `index`, trying again for a while: a node started while the database
    /// restarts fails to open it, as it would in production under a supervisor.
    pub(super) async fn start(&self, index: usize) -> anyhow::Result<Node> {
        let mut tries = 0;
        loop {
            match self.start_once(index).await {
                Ok(node) => return Ok(node),
                Err(e) if tries >= 10 => return Err(e),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn start_once(&self, index: usize) -> anyhow::Result<Node> {
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        let log_path = self
            .dir
            .root
            .join("logs")
            .join(format!("node-{index}-{n}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("serve")
            .arg("--database")
            .arg(&self.node_url)
            .args(["--bind", "127.0.0.1:0", "--retention", "0"])
            .arg("--queues")
            .arg(format!("{}={}", self.queue, self.concurrency))
            .arg("--drain")
            .arg(format!("{}ms", DRAIN.as_millis()))
            .args(["--shutdown-grace", "100ms"])
            .arg("--config")
            .arg(&self.config)
            .arg("--drill-dir")
            .arg(&self.dir.root)
            .env_remove("MEND_DATABASE_URL")
            .env_remove("MEND_QUEUES")
            // A drill node exits when this pipe closes: when `mend chaos` dies, so do its nodes.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        if let Some(b) = self.breakage {
            cmd.arg("--drill-break").arg(b.name());
        }
        if let Some(rate) = self.canaries.bad {
            cmd.arg("--drill-bad-canary").arg(rate.to_string());
        }
        if self.canaries.good {
            cmd.arg("--drill-good-canary");
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} serve", self.exe.display()))?;
        let pid = child.id().context("the node exited at once")?;
        let stdout = child.stdout.take().context("no stdout from the node")?;
        let mut lines = BufReader::new(stdout).lines();
        let id = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(id) = line.strip_prefix("mend node ") {
                    return Ok(id.trim().to_owned());
                }
            }
            anyhow::bail!(
                "node {index} exited before it was ready; see {}",
                log_path.display()
            )
        })
        .await
        .with_context(|| {
            format!(
                "node {index} not ready after 60 s; see {}",
                log_path.display()
            )
        })??;
        // Keep reading, so the node never writes into a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let lifeline = child.stdin.take();
        Ok(Node {
            child,
            _lifeline: lifeline,
            id,
            pid,
        })
    }
}

/// Sends `sig` to a node process.
pub(super) fn signal(pid: u32, sig: rustix::process::Signal) -> anyhow::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .context("bad pid")?;
    rustix::process::kill_process(pid, sig).context("sending a signal to a node")?;
    Ok(())
}
/// The URL with `application_name` set to `tag` (replacing one that is there).
pub(super) fn with_application_name(url: &str, tag: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("application_name="))
        .collect();
    let name = format!("application_name={tag}");
    params.push(&name);
    format!("{base}?{}", params.join("&"))
}

/// Sends SIGTERM to every node at once, so they drain in parallel, and waits for each to exit;
/// returns a line for each node that did not exit 0 in time.
pub(super) async fn stop_all(nodes: &mut [Node]) -> Vec<String> {
    let mut stuck = Vec::new();
    for node in nodes.iter() {
        let _ = signal(node.pid, rustix::process::Signal::TERM);
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        match tokio::time::timeout(STOP_LIMIT, node.child.wait()).await {
            Ok(Ok(s)) if s.success() => {}
            Ok(other) => stuck.push(format!("node {i} exited with {other:?}")),
            Err(_) => {
                let _ = node.child.kill().await;
                stuck.push(format!(
                    "node {i} did not stop within {STOP_LIMIT:?} of SIGTERM"
                ));
            }
        }
    }
    stuck
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_name_is_replaced_not_doubled() {
        assert_eq!(
            with_application_name("postgres://h/db?schema=s&application_name=x", "t"),
            "postgres://h/db?schema=s&application_name=t"
        );
        assert_eq!(
            with_application_name("postgres://h/db", "t"),
            "postgres://h/db?application_name=t"
        );
    }
}
