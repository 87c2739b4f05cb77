//! The test environment: a temporary directory and a fresh, migrated store in it (SQLite), or in
//! a PostgreSQL schema of its own (see [`crate::pg`]), plus the reads and bounded waits tests do
//! on stored jobs. One `Env` serves in-process worker tests and process tests alike; the process
//! side (spawning the test worker, its ledger) is in [`crate::process`].
//!
//! Every wait has a deadline and panics naming what it awaited and what it last saw.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mend::store::{ClaimParams, ListParams, NodeInfo, RescueParams, Rescued};
use mend::{
    Client, ErrorKind, JobArgs, JobEvent, JobRow, JobState, NewJob, Registry, Store, Worker,
    WorkerConfig, WorkerHandle,
};
use tempfile::TempDir;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::pg::Schema;
use crate::wait::{poll, WAIT};

/// The SQLite file's name in the test's directory.
const SQLITE_FILE: &str = "mend.db";

/// A fresh store for one test and the directory its files live in.
pub struct Env {
    /// The test's own directory (SQLite file, ledger, files the jobs write); removed on drop.
    pub dir: TempDir,
    /// What a worker opens: a SQLite path or a `postgres://` URL. On PostgreSQL the URL tags
    /// connections with the schema's name as their application name, so a test can cut exactly
    /// its workers' connections ([`Env::terminate_backends`]).
    pub db: String,
    /// The store as the runtime sees it.
    pub store: Arc<dyn Store>,
    /// A client on the store.
    pub client: Client,
    /// PostgreSQL: the test's own schema, dropped with the Env.
    pub schema: Option<Schema>,
}

/// Logs from the library while tests run, when `RUST_LOG` is set (e.g. `RUST_LOG=mend=debug`).
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// Worker settings that keep tests fast: quick polls and heartbeats, a short lease, and no
/// periodic rescue pass (start-up rescue still runs) unless a test asks for one.
pub fn fast(c: &mut WorkerConfig) {
    c.poll_interval = Duration::from_millis(10);
    c.heartbeat_interval = Duration::from_millis(50);
    c.lease_duration = Duration::from_secs(5);
    c.rescue_interval = Duration::from_secs(3600);
    c.cleanup_timeout = Duration::from_secs(2);
}

impl Env {
    /// A fresh SQLite store in a new temporary directory.
    pub async fn new() -> Env {
        init_tracing();
        let dir = tempfile::tempdir().expect("create a temp dir");
        let db = dir
            .path()
            .join(SQLITE_FILE)
            .to_str()
            .expect("utf-8 temp path")
            .to_owned();
        let store: Arc<dyn Store> = Arc::new(
            mend_sqlite::SqliteStore::open(&db)
                .await
                .expect("open the SQLite store"),
        );
        Env::with(dir, db, store, None)
    }

    /// A fresh store on the PostgreSQL server of `MEND_TEST_POSTGRES_URL`, in a schema of its
    /// own. `None`, with a SKIPPED note naming `test`, when the variable is not set.
    pub async fn postgres(test: &str) -> Option<Env> {
        init_tracing();
        let url = crate::pg::server_url(test)?;
        let schema = Schema::new(&url, "mend_p");
        let db = format!("{}&application_name={}", schema.store_url(), schema.name);
        // The test's own store is not tagged: cutting the workers' connections spares it.
        let store: Arc<dyn Store> = Arc::new(
            mend_postgres::PgStore::open(&schema.store_url())
                .await
                .expect("open the PostgreSQL store (is MEND_TEST_POSTGRES_URL reachable?)"),
        );
        let dir = tempfile::tempdir().expect("create a temp dir");
        Some(Env::with(dir, db, store, Some(schema)))
    }

    fn with(dir: TempDir, db: String, store: Arc<dyn Store>, schema: Option<Schema>) -> Env {
        let env = Env {
            client: Client::new(store.clone()),
            dir,
            db,
            store,
            schema,
        };
        std::fs::write(env.ledger_path(), "").expect("create the ledger file");
        env
    }

    /// The file the test worker writes what happened to (see [`crate::process`]).
    pub fn ledger_path(&self) -> PathBuf {
        self.dir.path().join("ledger.txt")
    }

    /// A second, independent store on the same database, as another process would open it.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        match &self.schema {
            None => Arc::new(
                mend_sqlite::SqliteStore::open(&self.db)
                    .await
                    .expect("reopen the SQLite store"),
            ),
            Some(schema) => Arc::new(
                mend_postgres::PgStore::open(&schema.store_url())
                    .await
                    .expect("reopen the PostgreSQL store"),
            ),
        }
    }

    /// A plain connection to the test's PostgreSQL server (panics on SQLite).
    pub async fn pg(&self) -> tokio_postgres::Client {
        let schema = self.schema.as_ref().expect("a PostgreSQL env");
        crate::pg::connect(&schema.url)
            .await
            .expect("connect to the test server")
    }

    /// Terminates every server connection of this test's workers; returns how many.
    pub async fn terminate_backends(&self) -> u64 {
        let name = &self.schema.as_ref().expect("a PostgreSQL env").name;
        self.pg()
            .await
            .query_one(
                "SELECT count(pg_terminate_backend(pid))::int8 FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[name],
            )
            .await
            .expect("terminate the workers' connections")
            .get::<_, i64>(0) as u64
    }

    /// Start an in-process worker on the default queue with `concurrency` slots and [`fast`]
    /// settings, adjusted further by `tweak`.
    pub async fn worker(
        &self,
        registry: Registry,
        concurrency: usize,
        tweak: impl FnOnce(&mut WorkerConfig),
    ) -> WorkerHandle {
        Worker::builder(self.store.clone())
            .registry(registry)
            .queue(mend::job::DEFAULT_QUEUE, concurrency)
            .configure(fast)
            .configure(tweak)
            .build()
            .start()
            .await
            .expect("start the worker")
    }

    /// Start a worker as [`Env::worker`] does, subscribe to its events, then enqueue `args`;
    /// returns the worker, the events (none missed) and the job's id.
    pub async fn start_watched<A: JobArgs>(
        &self,
        registry: Registry,
        concurrency: usize,
        tweak: impl FnOnce(&mut WorkerConfig),
        args: &A,
    ) -> (WorkerHandle, broadcast::Receiver<JobEvent>, Uuid) {
        let worker = self.worker(registry, concurrency, tweak).await;
        let events = worker.events();
        let id = self.client.enqueue(args).await.expect("enqueue").id;
        (worker, events, id)
    }

    /// Insert a job and return its stored row.
    pub async fn insert(&self, job: NewJob) -> JobRow {
        self.client.insert(job).await.expect("insert a job")
    }

    /// The job as stored now (panics if it does not exist).
    pub async fn job(&self, id: Uuid) -> JobRow {
        self.store
            .get(id)
            .await
            .expect("store.get")
            .unwrap_or_else(|| panic!("job {id} does not exist"))
    }

    /// Wait until the job satisfies `pred`; returns the row that did. On timeout, panics with
    /// `what` and the last row seen.
    pub async fn wait_for_job(
        &self,
        id: Uuid,
        what: &str,
        pred: impl Fn(&JobRow) -> bool,
    ) -> JobRow {
        poll(&format!("job {id} is {what}"), WAIT, || async {
            let job = self.job(id).await;
            if pred(&job) {
                Ok(job)
            } else {
                Err(job)
            }
        })
        .await
    }

    /// Wait until the job is in a final state (completed, cancelled or discarded).
    pub async fn wait_final(&self, id: Uuid) -> JobRow {
        self.wait_for_job(id, "finished", |j| j.state.is_final())
            .await
    }

    /// Runs `job` on a worker of its own ([`Env::worker`] with `registry`, `slots` and
    /// `tweak`) until it is final, then shuts the worker down; returns the final row and the
    /// stopped worker (for its stats).
    pub async fn run_to_end(
        &self,
        registry: Registry,
        slots: usize,
        tweak: impl FnOnce(&mut WorkerConfig),
        job: NewJob,
    ) -> (JobRow, WorkerHandle) {
        let worker = self.worker(registry, slots, tweak).await;
        let id = self.insert(job).await.id;
        let row = self.wait_final(id).await;
        worker.shutdown(Duration::from_secs(5)).await;
        (row, worker)
    }

    /// Wait until the job is in `state`.
    pub async fn wait_for_state(&self, id: Uuid, state: JobState) -> JobRow {
        self.wait_for_job(id, state.as_str(), |j| j.state == state)
            .await
    }

    /// Every stored job (up to a thousand), newest first.
    pub async fn jobs(&self) -> Vec<JobRow> {
        self.store
            .list(ListParams {
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("list jobs")
            .jobs
    }

    /// How many stored jobs are in `state`.
    pub async fn count(&self, state: JobState) -> usize {
        self.jobs()
            .await
            .iter()
            .filter(|j| j.state == state)
            .count()
    }

    /// Polls until `f` holds for the stored jobs, or panics after `limit` with their states.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        f: impl Fn(&[JobRow]) -> bool,
    ) -> Vec<JobRow> {
        poll(what, limit, || async {
            let jobs = self.jobs().await;
            if f(&jobs) {
                Ok(jobs)
            } else {
                Err(jobs
                    .iter()
                    .map(|j| (j.state, j.attempt))
                    .collect::<Vec<_>>())
            }
        })
        .await
    }

    /// Waits (up to 30 s) until the job is completed; returns it.
    pub async fn wait_completed(&self, id: Uuid) -> JobRow {
        self.wait_for("the job completed", Duration::from_secs(30), |j| {
            j.iter()
                .any(|j| j.id == id && j.state == JobState::Completed)
        })
        .await
        .into_iter()
        .find(|j| j.id == id)
        .expect("the job is listed")
    }

    /// Register a node record for another (fake) process.
    pub async fn register_node(&self, id: &str, pid: u32, process_key: String) -> NodeInfo {
        let now = chrono::Utc::now();
        let node = NodeInfo {
            id: id.to_owned(),
            host: mend::node::host_name(),
            pid,
            process_key,
            started_at: now,
            last_seen: now,
            kinds: Vec::new(),
            ..Default::default()
        };
        self.store
            .register_node(node.clone())
            .await
            .expect("register_node");
        node
    }

    /// Declares the `nodes` dead now, as the rescuer does for crashed processes (a job lost
    /// three times is quarantined); returns what was rescued.
    pub async fn rescue_dead(&self, nodes: &[&str]) -> Vec<Rescued> {
        self.store
            .rescue(RescueParams {
                dead_nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
                now: chrono::Utc::now(),
                quarantine_after_lost: 3,
            })
            .await
            .expect("rescue")
    }

    /// Claim up to ten jobs of the default queue as `owner`, with a lease of `lease`.
    pub async fn claim_as(&self, owner: &str, lease: Duration) -> Vec<JobRow> {
        self.claim_in(mend::job::DEFAULT_QUEUE, owner, lease).await
    }

    /// Claim up to ten jobs of `queue` as `owner`, with a lease of `lease`.
    pub async fn claim_in(&self, queue: &str, owner: &str, lease: Duration) -> Vec<JobRow> {
        self.store
            .claim(ClaimParams {
                queue: queue.to_owned(),
                kinds: Vec::new(),
                limit: 10,
                lease_owner: owner.to_owned(),
                lease_duration: lease,
                now: chrono::Utc::now(),
                routes: Vec::new(),
                ahead: 0,
            })
            .await
            .expect("claim")
    }

    /// Wait until the worker's heartbeat has beaten once (its node's `last_seen` moved past its
    /// start). With a long `heartbeat_interval`, no further beat happens during the test, so a
    /// test can rely on the heartbeat *not* touching its jobs.
    pub async fn wait_for_first_heartbeat(&self, worker: &WorkerHandle) {
        let id = worker.node_id().to_owned();
        poll(
            &format!("the first heartbeat of node {id}"),
            WAIT,
            || async {
                let nodes = self.store.list_nodes().await.expect("list_nodes");
                if nodes
                    .iter()
                    .any(|n| n.id == id && n.last_seen > n.started_at)
                {
                    Ok(())
                } else {
                    Err(nodes)
                }
            },
        )
        .await;
        // The beat reads the in-flight set right after this write; give it a moment to see it
        // empty before the test starts any job.
        tokio::task::yield_now().await;
    }
}

/// Each recorded error of the job as `(attempt, kind)`, in order.
pub fn attempt_errors(job: &JobRow) -> Vec<(i32, ErrorKind)> {
    job.errors.iter().map(|e| (e.attempt, e.kind)).collect()
}

/// Read a `Stats` counter.
pub fn stat(counter: &std::sync::atomic::AtomicU64) -> u64 {
    mend::Stats::get(counter)
}

/// The names of the files in `dir`, sorted (what a job left behind).
pub fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}
