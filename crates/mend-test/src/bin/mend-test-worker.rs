//! A worker process for crash and signal tests: runs the `work` kind against a SQLite file or a
//! `postgres://` URL and writes what happened to a ledger file, so a test can SIGKILL or
//! SIGTERM it and check the store and the ledger afterwards.
//!
//! `mend-test-worker DB LEDGER [--concurrency N] [--drain-ms N] [--rescue-ms N] [--heartbeat-ms N] [--lease-ms N] [--canary VERSION [--canary-fail-file PATH]]`
//!
//! With `--canary VERSION` the node also serves that version of the `work` kind (gray-release
//! tests): it does what the stable handler does, except that while PATH exists every attempt
//! fails (a canary a test can turn bad at will, on this one node).
//!
//! Prints `ready <node id>` on stdout once it is claiming.

#![expect(
    clippy::expect_used,
    reason = "a test tool: a failed set-up is a failed test, said by the panic"
)]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use mend::{AttemptExit, JobArgs, JobContext, JobError, Registry, Worker};
use serde::{Deserialize, Serialize};

/// Sleep `first_ms` on the first attempt and `then_ms` on later ones, then record `done`.
#[derive(Serialize, Deserialize)]
struct Work {
    first_ms: u64,
    then_ms: u64,
}
impl JobArgs for Work {
    const KIND: &'static str = "work";
}

/// Runs steps `1..=steps`, `step_ms` each, saving a checkpoint after each: a resumed attempt
/// starts after the last saved step.
#[derive(Serialize, Deserialize)]
struct Steps {
    steps: u32,
    step_ms: u64,
}
impl JobArgs for Steps {
    const KIND: &'static str = "steps";
}

#[derive(Serialize, Deserialize)]
struct Progress {
    done: u32,
}

/// Creates a marker file, after writing down a durable cleanup that removes it; the first
/// attempt then hangs `first_ms` (long enough to be killed), later ones finish at once.
#[derive(Serialize, Deserialize)]
struct Marked {
    dir: String,
    first_ms: u64,
}
impl JobArgs for Marked {
    const KIND: &'static str = "marked";
}

/// Writes `dir/out-ID.txt` through a staged file and notes `staged ID ATTEMPT` in the ledger;
/// the first attempt then hangs `first_ms` (long enough to be killed).
#[derive(Serialize, Deserialize)]
struct Staged {
    dir: String,
    first_ms: u64,
}
impl JobArgs for Staged {
    const KIND: &'static str = "staged";
}

/// Inserts a row into `table` (job id, attempt) committed with the job's completion; on the
/// first attempt the commit is held back `first_ms` inside the transaction (long enough to be
/// killed), after noting `effect ID ATTEMPT` in the ledger.
#[derive(Serialize, Deserialize)]
struct Ledgered {
    table: String,
    first_ms: u64,
}
impl JobArgs for Ledgered {
    const KIND: &'static str = "ledgered";
}

/// The durable cleanup: removes the marker (idempotent) and notes it in the ledger.
#[derive(Serialize, Deserialize)]
struct RemoveMarker {
    path: String,
    ledger: String,
}
impl mend::CleanupArgs for RemoveMarker {
    const NAME: &'static str = "remove_marker";
}

fn append(path: &str, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("ledger opens");
    // One write per line: O_APPEND keeps concurrent writers from interleaving.
    f.write_all(format!("{line}\n").as_bytes())
        .expect("ledger write");
}

/// The registry being filled, with the ledger every kind writes to.
struct Kinds {
    registry: Registry,
    ledger: Arc<str>,
}

impl Kinds {
    /// Registers `f` for `A::KIND`, each attempt getting its own handle on the ledger.
    fn add<A, F, Fut>(&mut self, f: F)
    where
        A: JobArgs,
        F: Fn(JobContext, A, Arc<str>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let ledger = self.ledger.clone();
        self.registry
            .register_fn(move |ctx, args: A| f(ctx, args, ledger.clone()));
    }
}

fn text_flag(args: &[String], name: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

fn flag(args: &[String], name: &str, default: u64) -> u64 {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].parse().expect("numeric flag"))
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let args: Vec<String> = std::env::args().collect();
    let db = args
        .get(1)
        .expect("usage: mend-test-worker DB LEDGER")
        .clone();
    let ledger: Arc<str> = args
        .get(2)
        .expect("usage: mend-test-worker DB LEDGER")
        .as_str()
        .into();
    let concurrency = flag(&args, "--concurrency", 4) as usize;
    let drain = Duration::from_millis(flag(&args, "--drain-ms", 5000));
    let rescue = Duration::from_millis(flag(&args, "--rescue-ms", 5000));
    let heartbeat = Duration::from_millis(flag(&args, "--heartbeat-ms", 1000));
    let lease = Duration::from_millis(flag(&args, "--lease-ms", 30_000));

    let store: Arc<dyn mend::Store> = if db.starts_with("postgres://") {
        Arc::new(
            mend_postgres::PgStore::open(&db)
                .await
                .expect("open PostgreSQL"),
        )
    } else {
        Arc::new(mend_sqlite::SqliteStore::open(&db).await.expect("open db"))
    };
    // Fault injection (tests only): die at a chosen point.
    let store: Arc<dyn mend::Store> = match std::env::var("MEND_TEST_CRASH").as_deref() {
        Ok("before-completion") => Arc::new(mend_test::fault::Crashing {
            inner: store,
            at: mend_test::fault::CrashPoint::BeforeCompletion,
        }),
        _ => store,
    };
    let mut kinds = Kinds {
        registry: Registry::new(),
        ledger: ledger.clone(),
    };
    kinds.add(move |ctx, w: Work, ledger| async move {
        let (id, attempt) = (ctx.id(), ctx.attempt());
        let cleanup_ledger = ledger.clone();
        ctx.defer(move |exit: AttemptExit| async move {
            append(&cleanup_ledger, &format!("cleanup {id} {attempt} {exit:?}"));
        });
        append(&ledger, &format!("start {id} {attempt}"));
        let ms = if attempt == 1 { w.first_ms } else { w.then_ms };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        append(&ledger, &format!("done {id} {attempt}"));
        Ok::<_, JobError>(())
    });
    if let Some(version) = text_flag(&args, "--canary") {
        let fail_file = text_flag(&args, "--canary-fail-file");
        let ledger = ledger.clone();
        let name = version.clone();
        kinds
            .registry
            .register_version_fn(version, move |ctx: JobContext, w: Work| {
                let (ledger, fail_file, name) = (ledger.clone(), fail_file.clone(), name.clone());
                async move {
                    let (id, attempt) = (ctx.id(), ctx.attempt());
                    append(&ledger, &format!("start {id} {attempt} {name}"));
                    let ms = if attempt == 1 { w.first_ms } else { w.then_ms };
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if fail_file.is_some_and(|f| std::path::Path::new(&f).exists()) {
                        return Err(JobError::retry(format!("canary {name} fails (test)")));
                    }
                    append(&ledger, &format!("done {id} {attempt} {name}"));
                    Ok::<_, JobError>(())
                }
            });
    }
    kinds.add(move |ctx, s: Steps, ledger| async move {
        let (id, attempt) = (ctx.id(), ctx.attempt());
        let from = ctx.resume::<Progress>()?.map_or(0, |p| p.done);
        for step in from + 1..=s.steps {
            append(&ledger, &format!("step {id} {step} {attempt}"));
            tokio::time::sleep(Duration::from_millis(s.step_ms)).await;
            ctx.checkpoint(&Progress { done: step }).await?;
        }
        append(&ledger, &format!("done {id} {attempt}"));
        Ok::<_, JobError>(())
    });
    kinds
        .registry
        .register_cleanup(|c: RemoveMarker| async move {
            match std::fs::remove_file(&c.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove {}: {e}", c.path)),
            }
            append(&c.ledger, &format!("durable-cleanup {}", c.path));
            Ok(())
        });
    kinds.add(move |ctx, s: Staged, ledger| async move {
        let temp = ctx
            .stage_file(format!("{}/out-{}.txt", s.dir, ctx.id()))
            .await?;
        std::fs::write(&temp, format!("attempt {}", ctx.attempt()))
            .map_err(|e| JobError::retry(e.to_string()))?;
        // A test kills the process once the temp file is written, not merely created.
        append(&ledger, &format!("staged {} {}", ctx.id(), ctx.attempt()));
        let ms = if ctx.attempt() == 1 { s.first_ms } else { 20 };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, JobError>(())
    });
    let on_postgres = db.starts_with("postgres://");
    kinds.add(move |ctx, w: Ledgered, ledger| async move {
        let (id, attempt) = (ctx.id(), ctx.attempt());
        let hold = if attempt == 1 { w.first_ms } else { 0 };
        let sql = format!("INSERT INTO {} (job_id, attempt) VALUES ($1, $2)", w.table);
        if on_postgres {
            ctx.commit_with_completion(mend_postgres::effect(move |tx| {
                Box::pin(async move {
                    tx.execute(&sql, &[&id.to_string(), &attempt]).await?;
                    append(&ledger, &format!("effect {id} {attempt}"));
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                    Ok(())
                })
            }));
        } else {
            ctx.commit_with_completion(mend_sqlite::effect(move |conn| {
                conn.execute(&sql, rusqlite::params![id.to_string(), attempt])?;
                append(&ledger, &format!("effect {id} {attempt}"));
                std::thread::sleep(Duration::from_millis(hold));
                Ok(())
            }));
        }
        Ok::<_, JobError>(())
    });
    kinds.add(move |ctx, m: Marked, ledger| async move {
        let (id, attempt) = (ctx.id(), ctx.attempt());
        // Two markers, each created after its cleanup is written down.
        for n in ["", "-second"] {
            let path = format!("{}/marker-{id}-{attempt}{n}", m.dir);
            ctx.defer_durable(&RemoveMarker {
                path: path.clone(),
                ledger: ledger.to_string(),
            })
            .await?;
            std::fs::write(&path, b"work in progress")
                .map_err(|e| JobError::retry(e.to_string()))?;
        }
        append(&ledger, &format!("start {id} {attempt}"));
        let ms = if attempt == 1 { m.first_ms } else { 20 };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        append(&ledger, &format!("done {id} {attempt}"));
        Ok::<_, JobError>(())
    });
    let handle = Worker::builder(store)
        .registry(kinds.registry)
        .queue("default", concurrency)
        .configure(|c| {
            c.rescue_interval = rescue;
            c.heartbeat_interval = heartbeat;
            c.lease_duration = lease;
            c.poll_interval = Duration::from_millis(20);
        })
        .build()
        .start()
        .await
        .expect("worker starts");
    let signals = mend::runtime::Signals::listen();
    println!("ready {}", handle.node_id());
    let report = handle.run_until(signals, drain).await;
    append(
        &ledger,
        &format!(
            "exit drained={} released={}",
            report.drained, report.released
        ),
    );
}
