//! Inflicting one fault of the plan and recording what it did: a SIGKILL (and the node's
//! restart), a SIGTERM (and the wait for the drain), cutting the nodes' database connections,
//! and running the --restart-db command. When a fault happens is the plan's business, not
//! this module's.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mend::store::Store;
use tokio::process::Command;
use tokio::task::JoinHandle;

use super::cluster::{signal, Cluster, Node, STOP_LIMIT};
use super::report::{CutRecord, KillRecord, RestartRecord, SigtermRecord};
use super::watch::{measure_rescue, running_jobs, Watch, RESCUE_LIMIT};
use crate::drill;
use crate::duration::as_millis as ms;

/// A PostgreSQL node comes back after this, so the others' rescue is what is measured.
const PG_RESTART_DELAY: Duration = Duration::from_millis(500);

/// SIGKILLs node `i`, starts watching its jobs' rescue, then starts it again. The returned
/// task ends with the kill's record.
pub(super) async fn kill(
    cluster: &Cluster,
    nodes: &mut [Node],
    i: usize,
    store: &Arc<dyn Store>,
    postgres: bool,
    at_ms: u64,
) -> anyhow::Result<JoinHandle<KillRecord>> {
    let node = &mut nodes[i];
    signal(node.pid, rustix::process::Signal::KILL)?;
    let killed = Instant::now();
    let _ = node.child.wait().await;
    // Its jobs, read once it is dead and before anything can rescue them (its replacement is
    // not started yet; a PostgreSQL leader waits for the lock to be missing a while).
    let held: Option<HashSet<uuid::Uuid>> = running_jobs(store.as_ref(), &cluster.queue)
        .await
        .ok()
        .map(|jobs| {
            jobs.into_iter()
                .filter(|j| j.lease_owner.as_deref() == Some(node.id.as_str()))
                .map(|j| j.id)
                .collect()
        });
    let measurement = tokio::spawn(measure_rescue(
        store.clone(),
        cluster.queue.clone(),
        node.id.clone(),
        held,
        killed,
        at_ms,
        i,
    ));
    if postgres {
        tokio::time::sleep(PG_RESTART_DELAY).await;
    }
    nodes[i] = cluster.start(i).await?;
    Ok(measurement)
}

/// SIGTERMs node `i`, waits for it to drain and exit, then starts it again.
pub(super) async fn sigterm(
    cluster: &Cluster,
    nodes: &mut [Node],
    i: usize,
    at_ms: u64,
) -> anyhow::Result<SigtermRecord> {
    let node = &mut nodes[i];
    signal(node.pid, rustix::process::Signal::TERM)?;
    let sent = Instant::now();
    let status = tokio::time::timeout(STOP_LIMIT, node.child.wait()).await;
    let exit_ok = matches!(&status, Ok(Ok(s)) if s.success());
    if status.is_err() {
        let _ = node.child.kill().await;
    }
    let record = SigtermRecord {
        at_ms,
        node: i,
        stop_ms: ms(sent.elapsed()),
        exit_ok,
    };
    nodes[i] = cluster.start(i).await?;
    Ok(record)
}

/// Terminates every database connection tagged `tag` (the nodes'); a failure is a warning.
pub(super) async fn cut_connections(
    database: &str,
    tag: &str,
    at_ms: u64,
    bar: &indicatif::ProgressBar,
) -> CutRecord {
    let n = drill::terminate_backends(database, tag)
        .await
        .unwrap_or_else(|e| {
            bar.suspend(|| eprintln!("warning: terminating connections failed: {e:#}"));
            0
        });
    CutRecord {
        at_ms,
        connections: n,
    }
}

/// Runs the --restart-db command, then waits for the next job to complete.
pub(super) async fn restart_db(
    cmd: &str,
    watch: &Watch,
    at_ms: u64,
    bar: &indicatif::ProgressBar,
) -> RestartRecord {
    let t = Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(300),
        Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await;
    let command_ms = ms(t.elapsed());
    let command_ok = matches!(&status, Ok(Ok(s)) if s.success());
    if !command_ok {
        bar.suspend(|| eprintln!("warning: --restart-db command {cmd:?} failed: {status:?}"));
    }
    let before = watch.completed.load(Ordering::Relaxed);
    let back = Instant::now();
    let mut recover_ms = None;
    while back.elapsed() < RESCUE_LIMIT {
        if watch.completed.load(Ordering::Relaxed) > before {
            recover_ms = Some(ms(back.elapsed()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    RestartRecord {
        at_ms,
        command_ok,
        command_ms,
        recover_ms,
    }
}
