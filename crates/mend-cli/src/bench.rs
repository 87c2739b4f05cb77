//! `mend bench`: end-to-end throughput and idle latency of the engine on a real database.
//!
//! Phase 1 (throughput), in one of two scenarios. `concurrent` (the default): a producer
//! enqueues N no-op jobs in batches while an in-process worker runs them; the clock stops when
//! the worker has completed all N. `drain` (the peers' workload): the producer enqueues all N
//! first (clocked alone), then the workers start and the drain is clocked from their start to
//! the last outcome written; end to end is N / (enqueue + drain), as the peers' harness
//! computes it. The producer calls the store directly (`--via direct`) or posts the batches to
//! a `mend serve` (`--via http`: `POST /v1/jobs/batch` with `Prefer: return=minimal`, as a
//! producer in another language would), either one given with `--server` or one the bench
//! starts as a child process on the same database. Either way the jobs run in this process.
//! Phase 2 (latency): with the system idle, single jobs are enqueued one after another (each
//! once the previous one's outcome is written, and 5 ms later) and the time from just before
//! the enqueue call to the handler starting is recorded, with the enqueue call's own share. At the end the
//! store is asked whether all N jobs are `completed`; anything else fails the run.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mend::store::Store;
use mend::{JobState, NewJob, Registry, Worker, WorkerHandle};
use serde::Serialize;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// What phase 1 measures.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scenario {
    /// Enqueue while the workers run; one clock, end to end.
    Concurrent,
    /// Enqueue everything, then start the workers; enqueue and drain clocked apart (the
    /// workload of the peers' harness).
    Drain,
}

/// Worker slots when `--concurrency` is not given.
const DEFAULT_CONCURRENCY: usize = 512;
/// Jobs per enqueue batch when `--batch` is not given.
const DEFAULT_BATCH: usize = 1000;

/// How the producer enqueues.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Via {
    /// `Store::insert_many` in this process.
    Direct,
    /// `POST /v1/jobs/batch` on a `mend serve` (`--server`, or one the bench starts).
    Http,
}

/// Arguments of `mend bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// Database URL (sqlite://PATH or postgres://USER@HOST/DB). Jobs go to a fresh queue, so an
    /// existing database is fine.
    #[arg(
        long,
        env = "MEND_DATABASE_URL",
        default_value = "sqlite://mend-bench.db"
    )]
    database: String,
    /// Jobs to run end to end.
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// `concurrent`: enqueue while the workers run. `drain`: enqueue all, then start the
    /// workers, and clock the two apart (what the peers' harness measures).
    #[arg(long, value_enum, default_value_t = Scenario::Concurrent)]
    scenario: Scenario,
    /// `direct`: the producer calls the store in this process. `http`: it posts batches to a
    /// `mend serve`'s `/v1/jobs/batch` (the one of `--server`, else one the bench starts on
    /// the same database and stops at the end); the jobs still run in this process.
    #[arg(long, value_enum, default_value_t = Via::Direct)]
    via: Via,
    /// With `--via http`: the base URL of a running `mend serve` on the same database (e.g.
    /// http://127.0.0.1:7878). Without it the bench starts its own.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// With `--via http`: the bearer token for the server (needs the enqueue role).
    #[arg(long, env = "MEND_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Worker concurrency (attempts in flight at once, shared out between the nodes).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Worker nodes, each with its own store connection(s), session and worker, as separate
    /// processes would have (useful with PostgreSQL).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Jobs per enqueue batch (at most 1000 with `--via http`, the endpoint's limit).
    #[arg(long, default_value_t = DEFAULT_BATCH)]
    batch: usize,
    /// Enqueue→start latency samples (taken one at a time, idle system; 0 skips the phase).
    #[arg(long, default_value_t = 200)]
    latency_samples: usize,
    /// SQLite: commit with synchronous=NORMAL instead of FULL (survives a crash, not power loss).
    #[arg(long)]
    no_fsync: bool,
    /// Claim only as many jobs as there are free slots (turns off the worker's claiming ahead,
    /// `WorkerConfig::claim_ahead`), to measure what it gains.
    #[arg(long)]
    no_claim_ahead: bool,
    /// Put a per-key concurrency limit of 1 on the bench queue, with the jobs spread over this
    /// many keys (the claim then takes the limited path: see `mend::limits`).
    #[arg(long, value_name = "KEYS")]
    limit_keys: Option<usize>,
    /// Store this many finished jobs (on a queue of their own) before the clocks start, to
    /// see whether the cost per job stays flat as the table grows. Rows already stored by an
    /// earlier run are kept, so fill once and alternate runs against a filled and an empty
    /// database.
    #[arg(long, value_name = "N", default_value_t = 0)]
    finished: u64,
    /// Print one JSON object on stdout instead of a table. Its `jobs_per_sec` is end to end in
    /// the concurrent scenario and the drain alone in the drain scenario (as the peers' harness
    /// reports it); `end_to_end_per_sec` is end to end in both.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    /// Always "mend": the peers' harness (`MEND_DRAIN_CMD`) tells its lines apart by this.
    peer: &'static str,
    scenario: Scenario,
    via: Via,
    /// "default" when the worker runs with the bench's defaults (the peers' harness's word for
    /// it), else the settings that differ, e.g. "nodes=3".
    config: String,
    /// The settings of the run, as the peers' harness reports its own.
    settings: serde_json::Value,
    database: String,
    jobs: usize,
    concurrency: usize,
    nodes: usize,
    batch: usize,
    synchronous: &'static str,
    elapsed_sec: f64,
    jobs_per_sec: f64,
    end_to_end_per_sec: f64,
    enqueue_sec: f64,
    enqueue_per_sec: f64,
    /// Drain scenario only: from the workers' start to the last outcome written.
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_sec: Option<f64>,
    /// The peers' harness's names for the two clocks and the check.
    enqueue_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_s: Option<f64>,
    processed: usize,
    left_in_queue: usize,
    ok: bool,
    latency_samples: usize,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
    /// Of the latency, the enqueue call alone (its commit included), median.
    latency_enqueue_p50_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_keys: Option<usize>,
    /// Finished jobs stored in the database besides the run's (`--finished`).
    finished: u64,
    /// The bench process's peak resident memory (Linux's `VmHWM`), in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_rss_mib: Option<f64>,
    version: &'static str,
    versions: serde_json::Value,
}

/// The pause between latency samples, after the previous job's outcome is written: long
/// enough for the wake-ups a pickup causes (the insert's NOTIFY reaching the fetcher after it
/// has claimed) to come and go.
const IDLE_BETWEEN_SAMPLES: Duration = Duration::from_millis(5);

const NOOP: &str = "mend.bench.noop";
const PING: &str = "mend.bench.ping";
/// The batch endpoint's limit (`MAX_BATCH` in mend-server).
const HTTP_MAX_BATCH: usize = 1000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Where the producer's batches go.
#[derive(Clone)]
enum Producer {
    Direct(Arc<dyn Store>),
    Http {
        client: reqwest::Client,
        /// `{base}/v1/jobs/batch`.
        url: String,
        token: Option<String>,
    },
}

impl Producer {
    /// Enqueues `n` jobs of `kind` on `queue`; with `keys`, job `i` gets args `{"k": (seq-i) % keys}`.
    async fn enqueue(
        &self,
        kind: &str,
        queue: &str,
        n: usize,
        seq: usize,
        keys: Option<usize>,
    ) -> anyhow::Result<()> {
        let args_of = |i: usize| match keys {
            Some(k) => serde_json::json!({ "k": (seq - i) % k }),
            None => serde_json::Value::Null,
        };
        match self {
            Producer::Direct(store) => {
                let batch: Vec<NewJob> = (0..n)
                    .map(|i| NewJob::new(kind, args_of(i)).with_queue(queue.to_owned()))
                    .collect();
                store.insert_many(batch).await?;
            }
            Producer::Http { client, url, token } => {
                // Built as a client in another language would: one JSON document per batch.
                let jobs: Vec<serde_json::Value> = (0..n)
                    .map(|i| {
                        let mut job = serde_json::json!({ "kind": kind, "queue": queue });
                        if keys.is_some() {
                            job["args"] = args_of(i);
                        }
                        job
                    })
                    .collect();
                let mut req = client
                    .post(url.as_str())
                    .header("prefer", "return=minimal")
                    .json(&serde_json::json!({ "jobs": jobs }));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let resp = req.send().await.with_context(|| format!("POST {url}"))?;
                let status = resp.status();
                if status != reqwest::StatusCode::CREATED {
                    let body = resp.text().await.unwrap_or_default();
                    bail!("POST {url} answered {status}: {body}");
                }
                // Read the (small) answer, as a client would before its next call.
                resp.bytes().await.context("reading the batch answer")?;
            }
        }
        Ok(())
    }
}

/// A `mend serve` the bench started; stopped with SIGTERM when dropped via [`OwnServer::stop`].
struct OwnServer {
    child: tokio::process::Child,
    url: String,
}

impl OwnServer {
    /// Starts `mend serve` (this very binary) on `database`, on a free loopback port, and
    /// waits for its "listening on" line.
    async fn start(database: &str) -> anyhow::Result<OwnServer> {
        let exe = std::env::current_exe().context("finding the mend binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["serve", "--database", database, "--bind", "127.0.0.1:0"])
            // Its per-request info lines would go to our stderr; warnings still do.
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting mend serve")?;
        let stdout = child.stdout.take().context("mend serve's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    return Ok::<_, std::io::Error>(Some(url.to_owned()));
                }
            }
            Ok(None)
        })
        .await
        .context("mend serve did not say where it listens within 60 s")?
        .context("reading mend serve's stdout")?
        .context("mend serve exited before listening (its error is above)")?;
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(OwnServer { child, url })
    }

    /// SIGTERM, then up to 10 s for it to exit, then SIGKILL.
    async fn stop(mut self) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Starts one worker per store on `queue`, `per_node` slots each.
async fn start_workers(
    stores: &[Arc<dyn Store>],
    queue: &str,
    per_node: usize,
    claim_ahead: bool,
    ping_tx: &mpsc::UnboundedSender<Instant>,
) -> anyhow::Result<Vec<WorkerHandle>> {
    let mut workers = Vec::with_capacity(stores.len());
    for node_store in stores {
        let mut registry = Registry::new();
        registry.register_raw(NOOP, None, |_ctx, _args| async { Ok(None) });
        let ping_tx = ping_tx.clone();
        registry.register_raw(PING, None, move |_ctx, _args| {
            let _ = ping_tx.send(Instant::now());
            async { Ok(None) }
        });
        workers.push(
            Worker::builder(node_store.clone())
                .registry(registry)
                .queue(queue.to_owned(), per_node)
                .configure(|c| c.claim_ahead = claim_ahead)
                .build()
                .start()
                .await
                .context("starting a worker")?,
        );
    }
    Ok(workers)
}

/// Enqueues `jobs` no-op jobs in batches of `batch`; answers the time it took.
async fn produce(
    producer: Producer,
    queue: String,
    jobs: usize,
    batch: usize,
    keys: Option<usize>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut left = jobs;
    while left > 0 {
        let n = left.min(batch);
        producer.enqueue(NOOP, &queue, n, left, keys).await?;
        left -= n;
    }
    Ok(started.elapsed())
}

/// Runs the benchmark.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.jobs == 0 || args.batch == 0 || args.concurrency == 0 {
        bail!("--jobs, --batch and --concurrency must be at least 1");
    }
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if args.via == Via::Http && args.batch > HTTP_MAX_BATCH {
        bail!("--via http takes batches of at most {HTTP_MAX_BATCH} (the endpoint's limit)");
    }
    if args.server.is_some() && args.via != Via::Http {
        bail!("--server is for --via http");
    }
    let opts = crate::db::OpenOptions {
        sqlite_fsync: !args.no_fsync,
    };
    // Each node is its own store (its own connections, session and locks) and worker, as
    // separate processes would be; the slots are shared out between them.
    let mut stores: Vec<Arc<dyn Store>> = Vec::with_capacity(args.nodes);
    for _ in 0..args.nodes {
        stores.push(crate::db::open(&args.database, opts).await?);
    }
    crate::fill::finished(&args.database, args.finished).await?;
    let store = stores[0].clone();
    let queue = format!("bench-{}", uuid_short());
    let per_node = args.concurrency.div_ceil(args.nodes);

    // The server starts before any clock; its start-up is not the producer's cost.
    let mut own_server = None;
    let producer = match args.via {
        Via::Direct => Producer::Direct(store.clone()),
        Via::Http => {
            let base = match &args.server {
                Some(url) => url.trim_end_matches('/').to_owned(),
                None => {
                    let server = OwnServer::start(&args.database).await?;
                    let url = server.url.trim_end_matches('/').to_owned();
                    own_server = Some(server);
                    url
                }
            };
            Producer::Http {
                client: reqwest::Client::builder()
                    .build()
                    .context("building the HTTP client")?,
                url: format!("{base}/v1/jobs/batch"),
                token: args.token.clone(),
            }
        }
    };
    let result = measure(&args, &stores, &store, &queue, per_node, &producer).await;
    if let Some(server) = own_server {
        server.stop().await;
    }
    let report = result?;
    print_report(&args, &report)?;
    Ok(())
}

/// Phases 1 and 2 and the check; answers the report.
async fn measure(
    args: &BenchArgs,
    stores: &[Arc<dyn Store>],
    store: &Arc<dyn Store>,
    queue: &str,
    per_node: usize,
    producer: &Producer,
) -> anyhow::Result<Report> {
    if let Some(keys) = args.limit_keys {
        if keys == 0 {
            bail!("--limit-keys must be at least 1");
        }
        store
            .set_limit(mend::store::SetLimitParams {
                limit: mend::limits::Limit::new(format!("{queue}-per-key"), queue.to_owned())
                    .per_key("/k")
                    .concurrency(1),
                now: chrono::Utc::now(),
            })
            .await?;
    }
    let (ping_tx, mut ping_rx) = mpsc::unbounded_channel::<Instant>();
    let progress = Progress::new(args.jobs, !args.json || std::io::stderr().is_terminal());
    let deadline = Duration::from_secs(600);

    // Phase 1: throughput.
    let (workers, elapsed, enqueue_time, drain_time) = match args.scenario {
        Scenario::Concurrent => {
            let workers =
                start_workers(stores, queue, per_node, !args.no_claim_ahead, &ping_tx).await?;
            let started = Instant::now();
            let producer = tokio::spawn(produce(
                producer.clone(),
                queue.to_owned(),
                args.jobs,
                args.batch,
                args.limit_keys,
            ));
            wait_completed(&workers, args.jobs, started, deadline, &progress, || {
                producer.is_finished()
            })
            .await?;
            let elapsed = started.elapsed();
            let enqueue_time = producer
                .await
                .context("the producer task panicked")?
                .context("enqueueing failed")?;
            (workers, elapsed, enqueue_time, None)
        }
        Scenario::Drain => {
            let enqueue_time = produce(
                producer.clone(),
                queue.to_owned(),
                args.jobs,
                args.batch,
                args.limit_keys,
            )
            .await
            .context("enqueueing failed")?;
            // The drain clock includes the workers' start-up, as a real start would.
            let started = Instant::now();
            let workers =
                start_workers(stores, queue, per_node, !args.no_claim_ahead, &ping_tx).await?;
            wait_completed(&workers, args.jobs, started, deadline, &progress, || false).await?;
            let drain = started.elapsed();
            (workers, enqueue_time + drain, enqueue_time, Some(drain))
        }
    };
    progress.finish();
    let completed_now = || -> usize {
        workers
            .iter()
            .map(|w| w.stats().completed.load(Ordering::Relaxed) as usize)
            .sum()
    };

    // Phase 2: idle latency, one job at a time. Idle means idle: each sample waits until the
    // previous job's outcome is written and the wake-ups it caused have passed, so a sample
    // never shares the database with the last one's completion.
    let mut samples = Vec::with_capacity(args.latency_samples);
    let mut enqueue_samples = Vec::with_capacity(args.latency_samples);
    for i in 0..args.latency_samples {
        let settle_until = Instant::now() + Duration::from_secs(10);
        while completed_now() < args.jobs + i && Instant::now() < settle_until {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::time::sleep(IDLE_BETWEEN_SAMPLES).await;
        let t0 = Instant::now();
        producer.enqueue(PING, queue, 1, 1, None).await?;
        let enqueued = t0.elapsed();
        let t1 = tokio::time::timeout(Duration::from_secs(10), ping_rx.recv())
            .await
            .context("a latency job did not start within 10 s")?
            .context("the worker stopped")?;
        samples.push(t1.duration_since(t0).as_secs_f64() * 1000.0);
        enqueue_samples.push(enqueued.as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    enqueue_samples.sort_by(f64::total_cmp);
    let expected_total = args.jobs + args.latency_samples;
    // Wait for the last outcomes to be written, then verify from the store itself.
    let wait_until = Instant::now() + Duration::from_secs(30);
    loop {
        if completed_now() >= expected_total || Instant::now() > wait_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for worker in &workers {
        worker.shutdown(Duration::from_secs(10)).await;
    }
    if args.limit_keys.is_some() {
        store.delete_limit(format!("{queue}-per-key")).await?;
    }
    let counts = store.queue_counts().await?;
    let mut completed = 0;
    let mut left = 0;
    let mut other = Vec::new();
    for c in counts.iter().filter(|c| c.queue == queue) {
        if c.state == JobState::Completed {
            completed = c.count as usize;
        } else {
            left += c.count as usize;
            other.push(format!("{} {}", c.count, c.state));
        }
    }
    if completed != expected_total || !other.is_empty() {
        bail!(
            "verification failed: {completed} of {expected_total} bench jobs completed; others: [{}]",
            other.join(", ")
        );
    }
    let end_to_end = args.jobs as f64 / elapsed.as_secs_f64();
    Ok(Report {
        peer: "mend",
        scenario: args.scenario,
        via: args.via,
        config: config_of(args),
        settings: serde_json::json!({
            "scenario": args.scenario,
            "via": args.via,
            "concurrency": args.concurrency,
            "nodes": args.nodes,
            "batch": args.batch,
            "processes": if args.via == Via::Http { "bench (workers) + mend serve (enqueue)" } else { "bench (producer and workers)" },
        }),
        database: crate::db::redact(&args.database),
        jobs: args.jobs,
        concurrency: args.concurrency,
        batch: args.batch,
        nodes: args.nodes,
        synchronous: if crate::db::is_postgres(&args.database) {
            "synchronous_commit=on (claims: off)"
        } else if args.no_fsync && args.via == Via::Direct {
            "NORMAL"
        } else if args.no_fsync {
            "NORMAL (the server's enqueues: FULL)"
        } else {
            "FULL"
        },
        elapsed_sec: elapsed.as_secs_f64(),
        jobs_per_sec: match drain_time {
            Some(d) => args.jobs as f64 / d.as_secs_f64(),
            None => end_to_end,
        },
        end_to_end_per_sec: end_to_end,
        enqueue_sec: enqueue_time.as_secs_f64(),
        enqueue_per_sec: args.jobs as f64 / enqueue_time.as_secs_f64(),
        drain_sec: drain_time.map(|d| d.as_secs_f64()),
        enqueue_s: enqueue_time.as_secs_f64(),
        drain_s: drain_time.map(|d| d.as_secs_f64()),
        processed: completed - args.latency_samples,
        left_in_queue: left,
        ok: true,
        latency_samples: samples.len(),
        latency_p50_ms: percentile(&samples, 50.0),
        latency_p99_ms: percentile(&samples, 99.0),
        latency_enqueue_p50_ms: percentile(&enqueue_samples, 50.0),
        latency_max_ms: samples.last().copied().unwrap_or(f64::NAN),
        limit_keys: args.limit_keys,
        finished: args.finished,
        peak_rss_mib: peak_rss_mib(),
        version: env!("CARGO_PKG_VERSION"),
        versions: serde_json::json!({ "mend": env!("CARGO_PKG_VERSION") }),
    })
}

/// "default", or the worker settings that differ from the bench's defaults.
fn config_of(args: &BenchArgs) -> String {
    let mut differ = Vec::new();
    if args.concurrency != DEFAULT_CONCURRENCY {
        differ.push(format!("concurrency={}", args.concurrency));
    }
    if args.nodes != 1 {
        differ.push(format!("nodes={}", args.nodes));
    }
    if args.batch != DEFAULT_BATCH {
        differ.push(format!("batch={}", args.batch));
    }
    if args.no_claim_ahead {
        differ.push("no-claim-ahead".to_owned());
    }
    if args.no_fsync {
        differ.push("no-fsync".to_owned());
    }
    if let Some(k) = args.limit_keys {
        differ.push(format!("limit-keys={k}"));
    }
    if args.finished > 0 {
        differ.push(format!("finished={}", args.finished));
    }
    if differ.is_empty() {
        "default".to_owned()
    } else {
        differ.join(",")
    }
}

/// Waits until the workers have completed `total` jobs (outcomes written); fails after
/// `deadline`, or when `producer_done()` and nothing ever started (the producer failed: its
/// error is surfaced by the caller).
async fn wait_completed(
    workers: &[WorkerHandle],
    total: usize,
    started: Instant,
    deadline: Duration,
    progress: &Progress,
    producer_done: impl Fn() -> bool,
) -> anyhow::Result<()> {
    loop {
        let done: usize = workers
            .iter()
            .map(|w| w.stats().completed.load(Ordering::Relaxed) as usize)
            .sum();
        progress.show(done);
        if done >= total {
            return Ok(());
        }
        if started.elapsed() > deadline {
            bail!("only {done} of {total} jobs completed after {deadline:?}; something is stuck");
        }
        let started_any = workers
            .iter()
            .any(|w| w.stats().started.load(Ordering::Relaxed) > 0);
        if producer_done() && !started_any {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn print_report(args: &BenchArgs, report: &Report) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    let via = match report.via {
        Via::Direct => "direct",
        Via::Http => "over HTTP",
    };
    println!(
        "mend bench — {} ({} node(s), {})",
        report.database, report.nodes, report.synchronous
    );
    if let Some(k) = report.limit_keys {
        println!("  limit               one running per key, {k} keys");
    }
    match report.drain_sec {
        None => {
            println!(
                "  jobs end to end     {:>12}  in {:.2} s",
                report.jobs, report.elapsed_sec
            );
            println!(
                "  throughput          {:>12.0}  jobs/s (enqueue → run → complete)",
                report.jobs_per_sec
            );
            println!(
                "  enqueue             {:>12.0}  rows/s (batches of {}, {via}, while the worker ran)",
                report.enqueue_per_sec, report.batch
            );
        }
        Some(drain) => {
            println!(
                "  enqueue             {:>12.0}  rows/s ({} jobs in {:.2} s, batches of {}, {via}, no worker running)",
                report.enqueue_per_sec, report.jobs, report.enqueue_sec, report.batch
            );
            println!(
                "  drain               {:>12.0}  jobs/s (in {drain:.2} s from the workers' start)",
                report.jobs_per_sec
            );
            println!(
                "  end to end          {:>12.0}  jobs/s (jobs / (enqueue + drain))",
                report.end_to_end_per_sec
            );
        }
    }
    if report.latency_samples > 0 {
        println!(
            "  enqueue→start p50   {:>12.3}  ms ({} samples, idle, {via})",
            report.latency_p50_ms, report.latency_samples
        );
        println!("  enqueue→start p99   {:>12.3}  ms", report.latency_p99_ms);
        println!(
            "  of which enqueue    {:>12.3}  ms (p50, the enqueue call with its commit)",
            report.latency_enqueue_p50_ms
        );
    }
    if report.finished > 0 {
        println!(
            "  finished jobs kept  {:>12}  (besides the run's)",
            report.finished
        );
    }
    if let Some(mib) = report.peak_rss_mib {
        println!("  peak memory         {mib:>12.1}  MiB (this process)");
    }
    println!(
        "  verified: all {} jobs completed",
        report.jobs + report.latency_samples
    );
    Ok(())
}

/// This process's peak resident set, from `/proc/self/status` (Linux only).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn uuid_short() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 8..].to_owned()
}

/// Hides a password in a URL (`scheme://user:secret@host` → `scheme://user:***@host`).
struct Progress {
    total: usize,
    enabled: bool,
}

impl Progress {
    fn new(total: usize, want: bool) -> Self {
        Progress {
            total,
            enabled: want && std::io::stderr().is_terminal(),
        }
    }
    fn show(&self, done: usize) {
        if !self.enabled {
            return;
        }
        let width = 40;
        let filled = (done.min(self.total) * width) / self.total.max(1);
        eprint!(
            "\r[{}{}] {done}/{} jobs",
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.total
        );
    }
    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_redaction() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
    }
}
