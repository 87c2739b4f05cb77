//! `mend bench`: end-to-end throughput and idle latency of the engine on a real database.
//!
//! Phase 1 (throughput): a producer enqueues N no-op jobs in batches while an in-process worker
//! runs them; the clock stops when the worker has completed all N. Phase 2 (latency): with the
//! system idle, single jobs are enqueued one after another and the time from just before the
//! enqueue call to the handler starting is recorded. At the end the store is asked whether all
//! N jobs are `completed`; anything else fails the run.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mend::store::Store;
use mend::{JobState, NewJob, Registry, Worker};
use serde::Serialize;
use tokio::sync::mpsc;

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
    /// Worker concurrency (attempts in flight at once, shared out between the nodes).
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Worker nodes, each with its own store connection(s), session and worker, as separate
    /// processes would have (useful with PostgreSQL).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Jobs per enqueue batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Enqueue→start latency samples (taken one at a time, idle system).
    #[arg(long, default_value_t = 200)]
    latency_samples: usize,
    /// SQLite: commit with synchronous=NORMAL instead of FULL (survives a crash, not power loss).
    #[arg(long)]
    no_fsync: bool,
    /// Put a per-key concurrency limit of 1 on the bench queue, with the jobs spread over this
    /// many keys (the claim then takes the limited path: see `mend::limits`).
    #[arg(long, value_name = "KEYS")]
    limit_keys: Option<usize>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    database: String,
    jobs: usize,
    concurrency: usize,
    nodes: usize,
    batch: usize,
    synchronous: &'static str,
    elapsed_sec: f64,
    jobs_per_sec: f64,
    enqueue_sec: f64,
    enqueue_per_sec: f64,
    latency_samples: usize,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_keys: Option<usize>,
    version: &'static str,
}

const NOOP: &str = "mend.bench.noop";
const PING: &str = "mend.bench.ping";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs the benchmark.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.jobs == 0 || args.batch == 0 || args.concurrency == 0 {
        bail!("--jobs, --batch and --concurrency must be at least 1");
    }
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
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
    let store = stores[0].clone();
    let queue = format!("bench-{}", uuid_short());
    let per_node = args.concurrency.div_ceil(args.nodes);

    if let Some(keys) = args.limit_keys {
        if keys == 0 {
            bail!("--limit-keys must be at least 1");
        }
        store
            .set_limit(mend::store::SetLimitParams {
                limit: mend::limits::Limit::new(format!("{queue}-per-key"), queue.clone())
                    .per_key("/k")
                    .concurrency(1),
                now: chrono::Utc::now(),
            })
            .await?;
    }
    let (ping_tx, mut ping_rx) = mpsc::unbounded_channel::<Instant>();
    let mut workers = Vec::with_capacity(args.nodes);
    for node_store in &stores {
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
                .queue(queue.clone(), per_node)
                .build()
                .start()
                .await
                .context("starting a worker")?,
        );
    }
    let completed_now = || -> usize {
        workers
            .iter()
            .map(|w| w.stats().completed.load(Ordering::Relaxed) as usize)
            .sum()
    };
    let started_now = || -> u64 {
        workers
            .iter()
            .map(|w| w.stats().started.load(Ordering::Relaxed))
            .sum()
    };

    // Phase 1: throughput.
    let progress = Progress::new(args.jobs, !args.json || std::io::stderr().is_terminal());
    let started = Instant::now();
    let producer = {
        let store = store.clone();
        let queue = queue.clone();
        let (jobs, batch, keys) = (args.jobs, args.batch, args.limit_keys);
        tokio::spawn(async move {
            let mut left = jobs;
            while left > 0 {
                let n = left.min(batch);
                let batch: Vec<NewJob> = (0..n)
                    .map(|i| {
                        let args = match keys {
                            Some(k) => serde_json::json!({ "k": (left - i) % k }),
                            None => serde_json::Value::Null,
                        };
                        NewJob::new(NOOP, args).with_queue(queue.clone())
                    })
                    .collect();
                store.insert_many(batch).await?;
                left -= n;
            }
            Ok::<_, mend::StoreError>(started.elapsed())
        })
    };
    let deadline = Duration::from_secs(600);
    loop {
        let done = completed_now();
        progress.show(done);
        if done >= args.jobs {
            break;
        }
        if started.elapsed() > deadline {
            bail!(
                "only {done} of {} jobs completed after {deadline:?}; something is stuck",
                args.jobs
            );
        }
        if producer.is_finished() && started_now() == 0 {
            // The producer failed before anything ran; surface its error below.
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let enqueue_time = producer
        .await
        .context("the producer task panicked")?
        .context("enqueueing failed")?;
    progress.finish();

    // Phase 2: idle latency, one job at a time.
    let mut samples = Vec::with_capacity(args.latency_samples);
    for _ in 0..args.latency_samples {
        let t0 = Instant::now();
        store
            .insert_many(vec![
                NewJob::new(PING, serde_json::Value::Null).with_queue(queue.clone())
            ])
            .await?;
        let t1 = tokio::time::timeout(Duration::from_secs(10), ping_rx.recv())
            .await
            .context("a latency job did not start within 10 s")?
            .context("the worker stopped")?;
        samples.push(t1.duration_since(t0).as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
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
    let mut other = Vec::new();
    for c in counts.iter().filter(|c| c.queue == queue) {
        if c.state == JobState::Completed {
            completed = c.count as usize;
        } else {
            other.push(format!("{} {}", c.count, c.state));
        }
    }
    if completed != expected_total || !other.is_empty() {
        bail!(
            "verification failed: {completed} of {expected_total} bench jobs completed; others: [{}]",
            other.join(", ")
        );
    }

    let report = Report {
        database: crate::db::redact(&args.database),
        jobs: args.jobs,
        concurrency: args.concurrency,
        batch: args.batch,
        nodes: args.nodes,
        synchronous: if crate::db::is_postgres(&args.database) {
            "synchronous_commit=on (claims: off)"
        } else if args.no_fsync {
            "NORMAL"
        } else {
            "FULL"
        },
        elapsed_sec: elapsed.as_secs_f64(),
        jobs_per_sec: args.jobs as f64 / elapsed.as_secs_f64(),
        enqueue_sec: enqueue_time.as_secs_f64(),
        enqueue_per_sec: args.jobs as f64 / enqueue_time.as_secs_f64(),
        latency_samples: samples.len(),
        latency_p50_ms: percentile(&samples, 50.0),
        latency_p99_ms: percentile(&samples, 99.0),
        latency_max_ms: samples.last().copied().unwrap_or(f64::NAN),
        limit_keys: args.limit_keys,
        version: env!("CARGO_PKG_VERSION"),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "mend bench — {} ({} node(s), {})",
            report.database, report.nodes, report.synchronous
        );
        if let Some(k) = report.limit_keys {
            println!("  limit               one running per key, {k} keys");
        }
        println!(
            "  jobs end to end     {:>12}  in {:.2} s",
            report.jobs, report.elapsed_sec
        );
        println!(
            "  throughput          {:>12.0}  jobs/s (enqueue → run → complete)",
            report.jobs_per_sec
        );
        println!(
            "  enqueue             {:>12.0}  rows/s (batches of {}, while the worker ran)",
            report.enqueue_per_sec, report.batch
        );
        println!(
            "  enqueue→start p50   {:>12.3}  ms ({} samples, idle)",
            report.latency_p50_ms, report.latency_samples
        );
        println!("  enqueue→start p99   {:>12.3}  ms", report.latency_p99_ms);
        println!("  verified: all {expected_total} jobs completed");
    }
    Ok(())
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
