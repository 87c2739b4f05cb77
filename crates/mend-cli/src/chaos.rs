//! `mend chaos`: the drill that proves the guarantees. It starts real `mend serve` nodes on one
//! database, enqueues drill jobs (see `drill.rs`), and while they run it SIGKILLs and restarts
//! nodes, sends one SIGTERM, injects panics, errors and timeouts into attempts, cuts database
//! connections (PostgreSQL) and optionally restarts the database. Then it checks the
//! invariants, measures how fast each kill was healed, and reports.
//!
//! The fault schedule and the jobs' faults come from `--seed`; process scheduling does not, so
//! two runs with one seed inflict the same faults at the same offsets, not the same
//! interleaving.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mend::store::{ListParams, Store};
use mend::{ErrorKind, JobRow, JobState, NewJob};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::drill::{self, Breakage, DrillArgs, DrillDir, Fault};

/// Arguments of `mend chaos`.
#[derive(clap::Args)]
pub struct ChaosArgs {
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB?schema=NAME. Each run uses a
    /// queue of its own, so a database can hold several runs.
    #[arg(long)]
    database: String,
    /// `mend serve` nodes to run [default: 1 on SQLite, 3 on PostgreSQL]
    #[arg(long)]
    nodes: Option<usize>,
    /// Jobs to enqueue (spread over the first 90% of --duration).
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// SIGKILLs of random nodes, each followed by a restart.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Over how long faults are inflicted (e.g. 30s, 2m, 500ms).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Fixes the fault schedule and every job's faults [default: random, printed in the report]
    #[arg(long)]
    seed: Option<u64>,
    /// Jobs each node runs at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Chance that an attempt panics.
    #[arg(long, default_value_t = 0.03)]
    panic_rate: f64,
    /// Chance that an attempt hangs past its timeout.
    #[arg(long, default_value_t = 0.02)]
    timeout_rate: f64,
    /// Chance that an attempt returns an error.
    #[arg(long, default_value_t = 0.05)]
    error_rate: f64,
    /// Longest work of one attempt, in ms (each job draws 10..=this).
    #[arg(long, default_value_t = 200)]
    work_ms: u64,
    /// The attempt timeout of drill jobs (what an injected hang runs into).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    job_timeout: Duration,
    /// Times every connection of every node is terminated (`pg_terminate_backend`)
    /// [default: 3 on PostgreSQL; not available on SQLite]
    #[arg(long)]
    terminations: Option<usize>,
    /// A shell command that restarts the database server, run once mid-drill, e.g.
    /// 'pg_ctlcluster 15 main restart'.
    #[arg(long)]
    restart_db: Option<String>,
    /// Do not send the mid-drill SIGTERM.
    #[arg(long)]
    no_sigterm: bool,
    /// After --duration, how long jobs may take to finish before the rest count as stuck.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    settle: Duration,
    /// Where the drill keeps its files (markers, outputs, node logs) [default: a new
    /// directory under the system's temp dir, removed after a passing run]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the drill directory after a passing run.
    #[arg(long)]
    keep: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Run the nodes with a bug on purpose, to see the drill catch it (tests only).
    #[arg(long, hide = true)]
    break_on_purpose: Option<Breakage>,
}

/// Parses `500ms`, `30s`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. 500ms, 30s, 2m, 1h"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// One scheduled fault.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "fault", content = "node")]
enum Event {
    /// SIGKILL node N, then start it again.
    Kill(usize),
    /// SIGTERM node N, wait for it to drain and exit, then start it again.
    Sigterm(usize),
    /// Terminate every database connection of every node.
    Terminate,
    /// Run the --restart-db command.
    RestartDb,
}

/// Everything the seed decides.
struct Plan {
    jobs: Vec<DrillArgs>,
    events: Vec<(Duration, Event)>,
}

/// The settings a drill runs with, after defaults and checks.
struct Drill {
    database: String,
    postgres: bool,
    nodes: usize,
    seed: u64,
    run: String,
    queue: String,
    terminations: usize,
    args: ChaosArgs,
}

const MAX_ATTEMPTS: i32 = 25;
const DRAIN: Duration = Duration::from_secs(3);
/// A PostgreSQL node comes back after this, so the others' rescue is what is measured.
const PG_RESTART_DELAY: Duration = Duration::from_millis(500);
/// How long one kill's rescue is watched before it counts as never rescued.
const RESCUE_LIMIT: Duration = Duration::from_secs(120);

fn plan(d: &Drill) -> Plan {
    let a = &d.args;
    let mut rng = fastrand::Rng::with_seed(d.seed);
    let jobs = (0..a.jobs)
        .map(|_| {
            let work_ms = rng.u64(10..=a.work_ms.max(10));
            let mut faults = Vec::new();
            // Attempts fail until one draws "ok"; a few in a row are possible, by design.
            while faults.len() < 8 {
                let r = rng.f64();
                let fault = if r < a.panic_rate {
                    Fault::Panic
                } else if r < a.panic_rate + a.timeout_rate {
                    Fault::Timeout
                } else if r < a.panic_rate + a.timeout_rate + a.error_rate {
                    Fault::Error
                } else {
                    break;
                };
                faults.push(fault);
            }
            DrillArgs {
                run: d.run.clone(),
                work_ms,
                faults,
            }
        })
        .collect();
    let span = a.duration.as_secs_f64();
    let mut at =
        |from: f64, to: f64| Duration::from_secs_f64(span * (from + rng.f64() * (to - from)));
    let mut events = Vec::new();
    for _ in 0..a.kills {
        let t = at(0.05, 0.85);
        events.push((t, Event::Kill(0)));
    }
    if !a.no_sigterm {
        let t = at(0.2, 0.7);
        events.push((t, Event::Sigterm(0)));
    }
    for _ in 0..d.terminations {
        let t = at(0.05, 0.9);
        events.push((t, Event::Terminate));
    }
    if a.restart_db.is_some() {
        let t = at(0.4, 0.6);
        events.push((t, Event::RestartDb));
    }
    events.sort_by_key(|(t, _)| *t);
    // Targets are drawn after the times, in schedule order, so they too follow the seed.
    for (_, e) in &mut events {
        match e {
            Event::Kill(n) | Event::Sigterm(n) => *n = rng.usize(..d.nodes),
            _ => {}
        }
    }
    Plan { jobs, events }
}

/// A running `mend serve` node.
struct Node {
    child: Child,
    /// Held open while the node should live.
    _lifeline: Option<tokio::process::ChildStdin>,
    id: String,
    pid: u32,
}

/// Starts and stops the nodes.
struct Cluster {
    exe: PathBuf,
    node_url: String,
    queue: String,
    concurrency: usize,
    dir: DrillDir,
    config: PathBuf,
    breakage: Option<Breakage>,
    starts: AtomicUsize,
}

impl Cluster {
    /// Starts node `index`, trying again for a while: a node started while the database
    /// restarts fails to open it, as it would in production under a supervisor.
    async fn start(&self, index: usize) -> anyhow::Result<Node> {
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
            .args(["--bind", "127.0.0.1:0", "--retention-hours", "0"])
            .arg("--queues")
            .arg(format!("{}={}", self.queue, self.concurrency))
            .arg("--drain-ms")
            .arg(DRAIN.as_millis().to_string())
            .args(["--shutdown-grace-ms", "100"])
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

fn signal(pid: u32, sig: rustix::process::Signal) -> anyhow::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .context("bad pid")?;
    rustix::process::kill_process(pid, sig).context("sending a signal to a node")?;
    Ok(())
}

/// How one kill was healed.
#[derive(Debug, Clone, Serialize)]
struct KillRecord {
    /// Offset into the drill.
    at_ms: u64,
    node: usize,
    /// Jobs the node was running when it died.
    held: usize,
    /// Kill → none of its jobs still `running` under its lease.
    rescue_ms: Option<u64>,
    /// Kill → each of its jobs running again elsewhere or finished.
    recover_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
struct SigtermRecord {
    at_ms: u64,
    node: usize,
    /// Signal → process exit.
    stop_ms: u64,
    exit_ok: bool,
}

#[derive(Debug, Clone, Serialize)]
struct CutRecord {
    at_ms: u64,
    /// Connections terminated.
    connections: u64,
}

#[derive(Debug, Clone, Serialize)]
struct RestartRecord {
    at_ms: u64,
    command_ok: bool,
    command_ms: u64,
    /// Command finished → the next job completed.
    recover_ms: Option<u64>,
}

/// Counts shared by the watcher and the fault loop.
#[derive(Default)]
struct Watch {
    finished: AtomicU64,
    completed: AtomicU64,
}

/// The drill's report.
#[derive(Debug, Serialize)]
struct Report {
    passed: bool,
    seed: u64,
    backend: &'static str,
    database: String,
    run: String,
    nodes: usize,
    jobs: usize,
    elapsed_ms: u64,
    states: BTreeMap<String, usize>,
    attempts: BTreeMap<String, usize>,
    faults_planned: BTreeMap<String, usize>,
    kills: Vec<KillRecord>,
    sigterms: Vec<SigtermRecord>,
    connections_terminated: Vec<CutRecord>,
    db_restart: Option<RestartRecord>,
    time_to_rescue_ms: Option<Stats>,
    time_to_recover_ms: Option<Stats>,
    /// Mean time to recovery over every kill that held jobs and the database restart.
    mttr_ms: Option<u64>,
    invariants: Vec<Invariant>,
    dir: String,
}

#[derive(Debug, Serialize)]
struct Stats {
    min: u64,
    p50: u64,
    max: u64,
}

fn stats(mut v: Vec<u64>) -> Option<Stats> {
    v.sort_unstable();
    Some(Stats {
        min: *v.first()?,
        p50: v[v.len() / 2],
        max: *v.last()?,
    })
}

#[derive(Debug, Serialize)]
struct Invariant {
    name: &'static str,
    ok: bool,
    detail: String,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs the drill and prints the report; an error when any invariant fails.
pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let postgres = crate::db::is_postgres(&args.database);
    let nodes = args.nodes.unwrap_or(if postgres { 3 } else { 1 });
    if nodes == 0 || args.jobs == 0 || args.concurrency == 0 {
        bail!("--nodes, --jobs and --concurrency must be at least 1");
    }
    let rates = [args.panic_rate, args.timeout_rate, args.error_rate];
    if rates.iter().any(|r| !(0.0..=1.0).contains(r)) || rates.iter().sum::<f64>() > 0.9 {
        bail!("--panic-rate, --timeout-rate and --error-rate are chances between 0 and 1, together at most 0.9 (jobs must be able to finish)");
    }
    let terminations = match (args.terminations, postgres) {
        (Some(n), true) => n,
        (None, true) => 3,
        (Some(n), false) if n > 0 => {
            bail!("--terminations cuts PostgreSQL connections; a SQLite database has none")
        }
        _ => 0,
    };
    let run = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    let d = Drill {
        database: args.database.clone(),
        postgres,
        nodes,
        seed: args.seed.unwrap_or_else(|| fastrand::u64(..)),
        queue: format!("chaos-{run}"),
        run,
        terminations,
        args,
    };
    drill_run(d).await
}

async fn drill_run(d: Drill) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = plan(&d);
    let root = match &d.args.dir {
        // A directory of its own per run: files of an earlier run must not count.
        Some(p) => p.join(&d.run),
        None => std::env::temp_dir().join(format!("mend-chaos-{}", d.run)),
    };
    let dir = DrillDir { root };
    dir.create()?;
    let config = dir.root.join("mend.toml");
    std::fs::write(
        &config,
        "# mend chaos: nodes take all settings from flags\n",
    )?;

    let store = crate::db::open(&d.database, crate::db::OpenOptions::default()).await?;
    drill::create_ledger(&d.database)
        .await
        .context("creating the drill's ledger table")?;
    // Tag the nodes' PostgreSQL connections so cutting them spares everyone else's.
    let tag = format!("mend-chaos-{}", d.run);
    let node_url = if d.postgres {
        with_application_name(&d.database, &tag)
    } else {
        d.database.clone()
    };
    let cluster = Arc::new(Cluster {
        exe: std::env::current_exe().context("finding the mend executable")?,
        node_url,
        queue: d.queue.clone(),
        concurrency: d.args.concurrency,
        dir: dir.clone(),
        config,
        breakage: d.args.break_on_purpose,
        starts: AtomicUsize::new(0),
    });
    let mut nodes = Vec::with_capacity(d.nodes);
    for i in 0..d.nodes {
        nodes.push(cluster.start(i).await?);
    }

    let bar = indicatif::ProgressBar::with_draw_target(
        Some(plan.jobs.len() as u64),
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed:>4} [{bar:30}] {pos}/{len} jobs finished · {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let watch = Arc::new(Watch::default());
    let stop_watch = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(watch_counts(
        store.clone(),
        d.queue.clone(),
        watch.clone(),
        bar.clone(),
        stop_watch.clone(),
    ));

    let total_faults: BTreeMap<String, usize> = {
        let mut m = BTreeMap::new();
        for j in &plan.jobs {
            for f in &j.faults {
                *m.entry(format!("{f:?}").to_lowercase()).or_default() += 1;
            }
        }
        m
    };
    let enqueuer = tokio::spawn(enqueue(
        store.clone(),
        d.queue.clone(),
        d.args.job_timeout,
        plan.jobs,
        d.args.duration.mul_f64(0.9),
    ));

    // The faults, in schedule order.
    let mut sigterms = Vec::new();
    let mut terminated = Vec::new();
    let mut restart = None;
    let mut measurements = Vec::new();
    let n_events = plan.events.len();
    for (done, (at, event)) in plan.events.into_iter().enumerate() {
        let now = started.elapsed();
        if at > now {
            tokio::time::sleep(at - now).await;
        }
        bar.set_message(format!("fault {}/{n_events}: {event:?}", done + 1));
        let at_ms = ms(started.elapsed());
        match event {
            Event::Kill(i) => {
                let node = &mut nodes[i];
                signal(node.pid, rustix::process::Signal::KILL)?;
                let killed = Instant::now();
                let _ = node.child.wait().await;
                // Its jobs, read once it is dead and before anything can rescue them (its
                // replacement is not started yet; a PostgreSQL leader waits for the lock to be
                // missing a while).
                let held: Option<HashSet<uuid::Uuid>> = running_jobs(store.as_ref(), &d.queue)
                    .await
                    .ok()
                    .map(|jobs| {
                        jobs.into_iter()
                            .filter(|j| j.lease_owner.as_deref() == Some(node.id.as_str()))
                            .map(|j| j.id)
                            .collect()
                    });
                measurements.push(tokio::spawn(measure_rescue(
                    store.clone(),
                    d.queue.clone(),
                    node.id.clone(),
                    held,
                    killed,
                    at_ms,
                    i,
                )));
                if d.postgres {
                    tokio::time::sleep(PG_RESTART_DELAY).await;
                }
                nodes[i] = cluster.start(i).await?;
            }
            Event::Sigterm(i) => {
                let node = &mut nodes[i];
                signal(node.pid, rustix::process::Signal::TERM)?;
                let sent = Instant::now();
                let status =
                    tokio::time::timeout(DRAIN + Duration::from_secs(15), node.child.wait()).await;
                let exit_ok = matches!(&status, Ok(Ok(s)) if s.success());
                if status.is_err() {
                    let _ = node.child.kill().await;
                }
                sigterms.push(SigtermRecord {
                    at_ms,
                    node: i,
                    stop_ms: ms(sent.elapsed()),
                    exit_ok,
                });
                nodes[i] = cluster.start(i).await?;
            }
            Event::Terminate => {
                let n = drill::terminate_backends(&d.database, &tag)
                    .await
                    .unwrap_or_else(|e| {
                        bar.suspend(|| eprintln!("warning: terminating connections failed: {e:#}"));
                        0
                    });
                terminated.push(CutRecord {
                    at_ms,
                    connections: n,
                });
            }
            Event::RestartDb => {
                let cmd = d.args.restart_db.clone().unwrap_or_default();
                let t = Instant::now();
                let status = tokio::time::timeout(
                    Duration::from_secs(300),
                    Command::new("sh")
                        .arg("-c")
                        .arg(&cmd)
                        .stdin(Stdio::null())
                        .kill_on_drop(true)
                        .status(),
                )
                .await;
                let command_ms = ms(t.elapsed());
                let command_ok = matches!(&status, Ok(Ok(s)) if s.success());
                if !command_ok {
                    bar.suspend(|| {
                        eprintln!("warning: --restart-db command {cmd:?} failed: {status:?}")
                    });
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
                restart = Some(RestartRecord {
                    at_ms,
                    command_ok,
                    command_ms,
                    recover_ms,
                });
            }
        }
    }
    let enqueued_ids = enqueuer.await.context("the enqueuer failed")??;
    let n = enqueued_ids.len() as u64;
    bar.set_message("faults done; waiting for every job to finish".to_string());
    // Faults may have run late (slow restarts): the settle time counts from their end.
    let deadline = (started + d.args.duration).max(Instant::now()) + d.args.settle;
    while watch.finished.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut kill_records = Vec::new();
    for m in measurements {
        kill_records.push(m.await.context("a rescue measurement failed")?);
    }
    bar.set_message("stopping the nodes".to_string());
    let mut stuck_nodes: Vec<String> = sigterms
        .iter()
        .filter(|t| !t.exit_ok)
        .map(|t| {
            format!(
                "node {} did not drain and exit 0 after the SIGTERM at {} ms",
                t.node, t.at_ms
            )
        })
        .collect();
    // All at once: each drains in parallel with the others.
    for node in &nodes {
        let _ = signal(node.pid, rustix::process::Signal::TERM);
    }
    let limit = DRAIN + Duration::from_secs(15);
    for (i, node) in nodes.iter_mut().enumerate() {
        match tokio::time::timeout(limit, node.child.wait()).await {
            Ok(Ok(s)) if s.success() => {}
            Ok(other) => stuck_nodes.push(format!("node {i} exited with {other:?}")),
            Err(_) => {
                let _ = node.child.kill().await;
                stuck_nodes.push(format!("node {i} did not stop within {limit:?} of SIGTERM"));
            }
        }
    }
    stop_watch.cancel();
    let _ = watcher.await;
    bar.finish_and_clear();

    let checked = check(
        &d,
        &store,
        &dir,
        &enqueued_ids,
        &kill_records,
        &stuck_nodes,
        restart.as_ref(),
    )
    .await?;
    let recover: Vec<u64> = kill_records.iter().filter_map(|k| k.recover_ms).collect();
    let mut mttr_samples = recover.clone();
    if let Some(r) = restart.as_ref().and_then(|r| r.recover_ms) {
        mttr_samples.push(r);
    }
    let report = Report {
        passed: checked.invariants.iter().all(|i| i.ok),
        seed: d.seed,
        backend: if d.postgres { "postgres" } else { "sqlite" },
        database: crate::db::redact(&d.database),
        run: d.run.clone(),
        nodes: d.nodes,
        jobs: enqueued_ids.len(),
        elapsed_ms: ms(started.elapsed()),
        states: checked.states,
        attempts: checked.attempts,
        faults_planned: total_faults,
        time_to_rescue_ms: stats(kill_records.iter().filter_map(|k| k.rescue_ms).collect()),
        time_to_recover_ms: stats(recover),
        mttr_ms: (!mttr_samples.is_empty())
            .then(|| mttr_samples.iter().sum::<u64>() / mttr_samples.len() as u64),
        kills: kill_records,
        sigterms,
        connections_terminated: terminated,
        db_restart: restart,
        invariants: checked.invariants,
        dir: dir.root.display().to_string(),
    };
    if d.args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    if !report.passed {
        let failed: Vec<&str> = report
            .invariants
            .iter()
            .filter(|i| !i.ok)
            .map(|i| i.name)
            .collect();
        bail!(
            "the drill failed: {} (seed {}; node logs and files kept in {})",
            failed.join(", "),
            d.seed,
            dir.root.display()
        );
    }
    if d.args.dir.is_none() && !d.args.keep {
        let _ = std::fs::remove_dir_all(&dir.root);
    }
    Ok(())
}

/// The URL with `application_name` set to `tag` (replacing one that is there).
fn with_application_name(url: &str, tag: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("application_name="))
        .collect();
    let name = format!("application_name={tag}");
    params.push(&name);
    format!("{base}?{}", params.join("&"))
}

/// Enqueues the jobs in batches spread over `over`; returns their ids.
async fn enqueue(
    store: Arc<dyn Store>,
    queue: String,
    timeout: Duration,
    jobs: Vec<DrillArgs>,
    over: Duration,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    const TICK: Duration = Duration::from_millis(50);
    let ticks = (over.as_millis() / TICK.as_millis()).max(1) as usize;
    let per_tick = jobs.len().div_ceil(ticks).max(1);
    let start = Instant::now();
    let mut ids = Vec::with_capacity(jobs.len());
    let total = jobs.len();
    for (i, chunk) in jobs.chunks(per_tick).enumerate() {
        // Arrivals spread evenly over the whole window, so faults late in it still hit work.
        let due = over.mul_f64((i * per_tick) as f64 / total as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let mut batch = Vec::with_capacity(chunk.len());
        for args in chunk {
            batch.push(
                NewJob::new(drill::KIND, serde_json::to_value(args)?)
                    .with_queue(queue.clone())
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_timeout(timeout),
            );
        }
        ids.extend(batch.iter().map(|j| j.id));
        insert_surely(store.as_ref(), batch).await?;
    }
    Ok(ids)
}

/// Inserts a batch through connection cuts and database restarts. A failed insert may still
/// have committed (the reply was lost), so a retry sends only the jobs that are not there.
async fn insert_surely(store: &dyn Store, mut batch: Vec<NewJob>) -> anyhow::Result<()> {
    let give_up = Instant::now() + RESCUE_LIMIT;
    loop {
        match store.insert_many(batch.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > give_up => {
                return Err(e).context("enqueueing drill jobs kept failing for 2 minutes")
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut missing = Vec::with_capacity(batch.len());
                for job in batch {
                    match store.get(job.id).await {
                        Ok(Some(_)) => {}
                        _ => missing.push(job),
                    }
                }
                batch = missing;
                if batch.is_empty() {
                    return Ok(());
                }
            }
        }
    }
}

/// Keeps the finished/completed counts and the progress bar current.
async fn watch_counts(
    store: Arc<dyn Store>,
    queue: String,
    watch: Arc<Watch>,
    bar: indicatif::ProgressBar,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Ok(counts) = store.queue_counts().await {
            let (mut finished, mut completed) = (0, 0);
            for c in counts.iter().filter(|c| c.queue == queue) {
                if c.state.is_final() {
                    finished += c.count;
                }
                if c.state == JobState::Completed {
                    completed += c.count;
                }
            }
            watch.finished.store(finished, Ordering::Relaxed);
            watch.completed.store(completed, Ordering::Relaxed);
            bar.set_position(finished);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Watches a killed node's jobs until they are rescued and running again (or finished).
async fn measure_rescue(
    store: Arc<dyn Store>,
    queue: String,
    node_id: String,
    mut held: Option<HashSet<uuid::Uuid>>,
    killed: Instant,
    at_ms: u64,
    node: usize,
) -> KillRecord {
    let mut recovered: HashSet<uuid::Uuid> = HashSet::new();
    let mut rescue_ms = None;
    while killed.elapsed() < RESCUE_LIMIT {
        let running = match running_jobs(store.as_ref(), &queue).await {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let elapsed = ms(killed.elapsed());
        let owned: HashSet<uuid::Uuid> = running
            .iter()
            .filter(|j| j.lease_owner.as_deref() == Some(node_id.as_str()))
            .map(|j| j.id)
            .collect();
        let held = held.get_or_insert_with(|| owned.clone());
        if held.is_empty() {
            return KillRecord {
                at_ms,
                node,
                held: 0,
                rescue_ms: None,
                recover_ms: None,
            };
        }
        if rescue_ms.is_none() && owned.is_empty() {
            rescue_ms = Some(elapsed);
        }
        let by_others: HashMap<uuid::Uuid, &JobRow> = running
            .iter()
            .filter(|j| j.lease_owner.as_deref() != Some(node_id.as_str()))
            .map(|j| (j.id, j))
            .collect();
        for id in held.iter() {
            if recovered.contains(id) {
                continue;
            }
            let back = by_others.contains_key(id)
                || (!owned.contains(id)
                    && matches!(store.get(*id).await, Ok(Some(j)) if j.state.is_final()));
            if back {
                recovered.insert(*id);
            }
        }
        if rescue_ms.is_some() && recovered.len() == held.len() {
            return KillRecord {
                at_ms,
                node,
                held: held.len(),
                rescue_ms,
                recover_ms: Some(elapsed),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    KillRecord {
        at_ms,
        node,
        held: held.map_or(0, |h| h.len()),
        rescue_ms,
        recover_ms: None,
    }
}

async fn running_jobs(store: &dyn Store, queue: &str) -> mend::store::Result<Vec<JobRow>> {
    Ok(store
        .list(ListParams {
            queue: Some(queue.to_owned()),
            states: vec![JobState::Running],
            limit: mend::store::MAX_PAGE,
            ..Default::default()
        })
        .await?
        .jobs)
}

/// Every job of the run's queue.
async fn all_jobs(store: &dyn Store, queue: &str) -> anyhow::Result<Vec<JobRow>> {
    let mut jobs = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list(ListParams {
                queue: Some(queue.to_owned()),
                before,
                limit: mend::store::MAX_PAGE,
                ..Default::default()
            })
            .await
            .context("reading the drill's jobs")?;
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(c) => before = Some(c),
            None => return Ok(jobs),
        }
    }
}

struct Checked {
    states: BTreeMap<String, usize>,
    attempts: BTreeMap<String, usize>,
    invariants: Vec<Invariant>,
}

/// Lists up to five examples.
fn examples<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let all: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    let shown = all.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if all.len() > 5 {
        format!("{shown}, … ({} in all)", all.len())
    } else {
        shown
    }
}

async fn check(
    d: &Drill,
    store: &Arc<dyn Store>,
    dir: &DrillDir,
    enqueued: &[uuid::Uuid],
    kills: &[KillRecord],
    stuck_nodes: &[String],
    restart: Option<&RestartRecord>,
) -> anyhow::Result<Checked> {
    let jobs = all_jobs(store.as_ref(), &d.queue).await?;
    let by_id: HashMap<uuid::Uuid, &JobRow> = jobs.iter().map(|j| (j.id, j)).collect();
    let mut inv = Vec::new();
    let mut push = |name: &'static str, bad: Vec<String>, what: &str, good: String| {
        inv.push(Invariant {
            name,
            ok: bad.is_empty(),
            detail: if bad.is_empty() {
                good
            } else {
                format!("{} {what}: {}", bad.len(), examples(bad))
            },
        });
    };

    let lost: Vec<String> = enqueued
        .iter()
        .filter(|id| !by_id.contains_key(id))
        .map(|id| id.to_string())
        .collect();
    push(
        "no job lost",
        lost,
        "enqueued jobs are missing",
        format!("all {} enqueued jobs are in the database", enqueued.len()),
    );

    let unfinished: Vec<String> = jobs
        .iter()
        .filter(|j| !j.state.is_final())
        .map(|j| format!("{} ({})", j.id, j.state))
        .collect();
    push(
        "every job terminal",
        unfinished,
        "jobs are not finished (stuck)",
        "every job is completed, discarded or cancelled".into(),
    );

    // Effects: exactly one ledger row per completed job, written by its completing attempt.
    let ledger = drill::read_ledger(&d.database, &d.run).await?;
    let mut rows: HashMap<uuid::Uuid, Vec<i32>> = HashMap::new();
    let mut foreign = Vec::new();
    for (id, attempt) in &ledger {
        match id.parse::<uuid::Uuid>() {
            Ok(id) => rows.entry(id).or_default().push(*attempt),
            Err(_) => foreign.push(id.clone()),
        }
    }
    let completed: Vec<&JobRow> = jobs
        .iter()
        .filter(|j| j.state == JobState::Completed)
        .collect();
    let dup: Vec<String> = rows
        .iter()
        .filter(|(_, a)| a.len() > 1)
        .map(|(id, a)| format!("{id} (attempts {a:?})"))
        .collect();
    push(
        "effects exactly once",
        dup,
        "jobs have more than one ledger row",
        format!("{} ledger rows, none twice", ledger.len()),
    );
    let mut mismatched: Vec<String> = completed
        .iter()
        .filter(|j| rows.get(&j.id).is_none_or(|a| !a.contains(&j.attempt)))
        .map(|j| format!("{} completed without its effect", j.id))
        .collect();
    mismatched.extend(
        rows.keys()
            .filter(|id| by_id.get(id).is_none_or(|j| j.state != JobState::Completed))
            .map(|id| format!("{id} has an effect but is not completed")),
    );
    mismatched.extend(foreign.into_iter().map(|id| format!("unknown job {id:?}")));
    push(
        "effects match completions",
        mismatched,
        "ledger rows and completions disagree",
        format!(
            "{} completed jobs, {} ledger rows, one each, from the completing attempt",
            completed.len(),
            ledger.len()
        ),
    );

    // Files: exactly the completed jobs' outputs, from their completing attempt.
    let mut file_problems = Vec::new();
    let mut outputs = HashSet::new();
    for entry in std::fs::read_dir(dir.out()).context("reading the drill's output directory")? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if drill::is_temporary(&name) {
            file_problems.push(format!("staged file left behind: {name}"));
            continue;
        }
        match drill::output_id(&path).and_then(|id| by_id.get(&id).map(|j| (id, j))) {
            Some((id, j)) if j.state == JobState::Completed => {
                outputs.insert(id);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if text.trim() != format!("{id} attempt {}", j.attempt) {
                    file_problems.push(format!(
                        "{name} holds {:?}, not the completing attempt {}",
                        text.trim(),
                        j.attempt
                    ));
                }
            }
            Some((_, j)) => file_problems.push(format!("{name} promoted for a {} job", j.state)),
            None => file_problems.push(format!("unexpected file {name}")),
        }
    }
    file_problems.extend(
        completed
            .iter()
            .filter(|j| !outputs.contains(&j.id))
            .map(|j| format!("{} completed without its output file", j.id)),
    );
    push(
        "staged files promoted once, temporaries gone",
        file_problems,
        "file problems",
        format!("{} output files, no temporaries", outputs.len()),
    );

    // Durable cleanups: every marker of every attempt removed; none left pending or failed.
    let mut cleanup_problems: Vec<String> = std::fs::read_dir(dir.markers())
        .context("reading the drill's marker directory")?
        .filter_map(|e| e.ok())
        .map(|e| format!("marker left: {}", e.file_name().to_string_lossy()))
        .collect();
    cleanup_problems.extend(
        jobs.iter()
            .filter(|j| !j.pending_cleanups.is_empty())
            .map(|j| {
                format!(
                    "{} still has {} pending cleanups",
                    j.id,
                    j.pending_cleanups.len()
                )
            }),
    );
    cleanup_problems.extend(
        jobs.iter()
            // The executor's words when it stops a job whose cleanups keep failing.
            .filter(|j| {
                j.errors
                    .iter()
                    .any(|e| e.message.starts_with("cleanup failed:"))
            })
            .map(|j| format!("{} stopped by a failing cleanup", j.id)),
    );
    let failed_attempts: usize = jobs.iter().map(|j| j.errors.len()).sum();
    push(
        "durable cleanups ran",
        cleanup_problems,
        "cleanup problems",
        format!("no marker left after {failed_attempts} failed or lost attempts"),
    );

    let unrescued: Vec<String> = kills
        .iter()
        .filter(|k| k.held > 0 && k.recover_ms.is_none())
        .map(|k| {
            format!(
                "kill of node {} at {} ms ({} jobs)",
                k.node, k.at_ms, k.held
            )
        })
        .collect();
    push(
        "every kill healed",
        unrescued,
        "kills whose jobs were not back within 2 minutes",
        format!(
            "{} kills, {} with jobs in flight, all rescued",
            kills.len(),
            kills.iter().filter(|k| k.held > 0).count()
        ),
    );
    push(
        "nodes stop on SIGTERM",
        stuck_nodes.to_vec(),
        "nodes did not stop cleanly",
        "every node drained and exited 0".into(),
    );
    // Drill jobs have attempts to spare and quarantine is off on drill nodes: a job given up
    // on before its last attempt was dropped by mistake.
    let given_up: Vec<String> = jobs
        .iter()
        .filter(|j| {
            j.state != JobState::Completed && j.state.is_final() && j.attempt < j.max_attempts
        })
        .map(|j| {
            let why = j
                .errors
                .last()
                .map_or("no error recorded", |e| e.message.as_str());
            format!("{} {} after {} attempts: {why}", j.id, j.state, j.attempt)
        })
        .collect();
    push(
        "jobs complete unless out of attempts",
        given_up,
        "jobs were given up early",
        format!("{} of {} completed", completed.len(), jobs.len()),
    );
    if let Some(r) = restart {
        let mut bad = Vec::new();
        if !r.command_ok {
            bad.push("the --restart-db command failed".to_owned());
        }
        if r.recover_ms.is_none() {
            bad.push("no job completed within 2 minutes of the restart".to_owned());
        }
        push(
            "database restart healed",
            bad,
            "problems",
            format!(
                "restarted in {} ms; jobs completing again {} ms later",
                r.command_ms,
                r.recover_ms.unwrap_or_default()
            ),
        );
    }

    let mut states = BTreeMap::new();
    for j in &jobs {
        *states.entry(j.state.to_string()).or_default() += 1;
    }
    let mut attempts = BTreeMap::new();
    attempts.insert("ok".to_owned(), completed.len());
    for kind in [
        ErrorKind::Error,
        ErrorKind::Panic,
        ErrorKind::Timeout,
        ErrorKind::Lost,
        ErrorKind::Cancelled,
    ] {
        attempts.insert(
            kind.as_str().to_owned(),
            jobs.iter().map(|j| j.count_errors(kind)).sum(),
        );
    }
    Ok(Checked {
        states,
        attempts,
        invariants: inv,
    })
}

fn print_human(r: &Report) {
    println!(
        "mend chaos — {} ({}), {} node(s), {} jobs, seed {}, {:.1} s",
        r.backend,
        r.database,
        r.nodes,
        r.jobs,
        r.seed,
        r.elapsed_ms as f64 / 1000.0
    );
    println!();
    println!("invariants");
    for i in &r.invariants {
        println!(
            "  {} {:<44} {}",
            if i.ok { "ok  " } else { "FAIL" },
            i.name,
            i.detail
        );
    }
    println!();
    let join = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    println!("jobs       {}", join(&r.states));
    println!("attempts   {}", join(&r.attempts));
    println!(
        "planned    {} (faults drawn for attempts; a killed attempt uses one up)",
        join(&r.faults_planned)
    );
    let held = r.kills.iter().filter(|k| k.held > 0).count();
    println!(
        "faults     {} kills ({held} with jobs in flight) · {} SIGTERM · {} connection cuts ({} connections){}",
        r.kills.len(),
        r.sigterms.len(),
        r.connections_terminated.len(),
        r.connections_terminated
            .iter()
            .map(|c| c.connections)
            .sum::<u64>(),
        match &r.db_restart {
            Some(x) => format!(" · database restart ({} ms, ok: {})", x.command_ms, x.command_ok),
            None => String::new(),
        }
    );
    let show = |s: &Option<Stats>| match s {
        Some(s) => format!("min {} · p50 {} · max {} ms", s.min, s.p50, s.max),
        None => "n/a (no kill hit a node with jobs in flight)".into(),
    };
    println!("rescue     {}", show(&r.time_to_rescue_ms));
    println!("recovery   {}", show(&r.time_to_recover_ms));
    match r.mttr_ms {
        Some(m) => println!("MTTR       {m} ms"),
        None => println!("MTTR       n/a"),
    }
    println!();
    println!(
        "{} (seed {}; files in {})",
        if r.passed { "PASSED" } else { "FAILED" },
        r.seed,
        r.dir
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ChaosArgs,
    }

    fn drill(seed: u64) -> Drill {
        let seed = seed.to_string();
        let cli = <Cli as clap::Parser>::try_parse_from([
            "chaos",
            "--database",
            "sqlite:///unused.db",
            "--jobs",
            "500",
            "--kills",
            "4",
            "--seed",
            &seed,
        ])
        .unwrap();
        Drill {
            database: cli.args.database.clone(),
            postgres: false,
            nodes: 3,
            seed: cli.args.seed.unwrap(),
            run: "r".into(),
            queue: "chaos-r".into(),
            terminations: 2,
            args: cli.args,
        }
    }

    fn fingerprint(p: &Plan) -> String {
        format!("{}{:?}", serde_json::to_string(&p.jobs).unwrap(), p.events)
    }

    #[test]
    fn the_seed_fixes_the_schedule_and_the_faults() {
        let (a, b, c) = (plan(&drill(5)), plan(&drill(5)), plan(&drill(6)));
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        // 4 kills, 1 SIGTERM, 2 cuts, in time order, within the drill, on existing nodes.
        assert_eq!(a.events.len(), 7);
        assert!(a.events.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(a.events.iter().all(|(t, e)| *t < Duration::from_secs(30)
            && !matches!(e, Event::Kill(n) | Event::Sigterm(n) if *n >= 3)));
        // Faults are drawn at about the configured rates (3% + 2% + 5% per attempt).
        let faulty = a.jobs.iter().filter(|j| !j.faults.is_empty()).count();
        assert!(
            (20..=90).contains(&faulty),
            "{faulty} of 500 jobs have faults"
        );
    }

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
