//! Shared helpers for the worker-runtime integration tests: a fresh SQLite store per test, a
//! worker tuned for fast tests, bounded polling (`wait_until`, `wait_for_job`), event waiting,
//! and small synchronisation tools (gates, logs) for handlers.
//!
//! Every wait here has a deadline and panics with a message that says what was awaited and
//! what was last seen, so a hung test fails quickly and legibly instead of timing out.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mend::store::{ClaimParams, NodeInfo};
use mend::{
    Client, JobEvent, JobRow, JobState, Registry, Store, Worker, WorkerConfig, WorkerHandle,
};
use mend_sqlite::SqliteStore;
use tempfile::TempDir;
use tokio::sync::{broadcast, mpsc, Semaphore};
use uuid::Uuid;

/// The default bound for every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// Logs from the library while tests run, when `RUST_LOG` is set (e.g. `RUST_LOG=mend=debug`).
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// A fresh, migrated SQLite store in its own temporary directory.
pub struct Env {
    /// Keeps the database directory alive for the test.
    pub dir: TempDir,
    /// The concrete store (for store-level calls).
    pub sqlite: SqliteStore,
    /// The same store as the runtime sees it.
    pub store: Arc<dyn Store>,
    /// A client on the store.
    pub client: Client,
}

impl Env {
    pub async fn new() -> Env {
        init_tracing();
        let dir = tempfile::tempdir().expect("create a temp dir");
        let path = dir.path().join("mend.db");
        let sqlite = SqliteStore::open(path.to_str().expect("utf-8 temp path"))
            .await
            .expect("open the SQLite store");
        let store: Arc<dyn Store> = Arc::new(sqlite.clone());
        let client = Client::new(store.clone());
        Env {
            dir,
            sqlite,
            store,
            client,
        }
    }

    /// A second, independent store on the same file, as another process would open it.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        let path = self.dir.path().join("mend.db");
        Arc::new(
            SqliteStore::open(path.to_str().expect("utf-8 temp path"))
                .await
                .expect("reopen the SQLite store"),
        )
    }

    /// The job as stored now (panics if it does not exist).
    pub async fn job(&self, id: Uuid) -> JobRow {
        self.store
            .get(id)
            .await
            .expect("store.get")
            .unwrap_or_else(|| panic!("job {id} does not exist"))
    }

    /// Start a worker on the default queue with `concurrency` slots and fast test settings,
    /// adjusted further by `tweak`.
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

    /// Insert a job and return its stored row.
    pub async fn insert(&self, job: mend::NewJob) -> JobRow {
        self.client.insert(job).await.expect("insert a job")
    }

    /// Wait until the job satisfies `pred`; returns the row that did. On timeout, panics with
    /// `what` and the last row seen.
    pub async fn wait_for_job(
        &self,
        id: Uuid,
        what: &str,
        pred: impl Fn(&JobRow) -> bool,
    ) -> JobRow {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let job = self.job(id).await;
            if pred(&job) {
                return job;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out after {WAIT:?} waiting for job {id} to be {what}; last seen: {job:#?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait until the job is in `state`.
    pub async fn wait_for_state(&self, id: Uuid, state: JobState) -> JobRow {
        self.wait_for_job(id, state.as_str(), |j| j.state == state)
            .await
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
        };
        self.store
            .register_node(node.clone())
            .await
            .expect("register_node");
        node
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
            })
            .await
            .expect("claim")
    }
}

/// Settings that keep tests fast: quick polls and heartbeats, a short lease, and no periodic
/// rescue pass (start-up rescue still runs) unless a test asks for one.
pub fn fast(c: &mut WorkerConfig) {
    c.poll_interval = Duration::from_millis(10);
    c.heartbeat_interval = Duration::from_millis(50);
    c.lease_duration = Duration::from_secs(5);
    c.rescue_interval = Duration::from_secs(3600);
    c.cleanup_timeout = Duration::from_secs(2);
}

/// Poll `cond` until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Receive events until one for `id` satisfies `pred`; panics on timeout or a closed channel.
pub async fn wait_for_event(
    rx: &mut broadcast::Receiver<JobEvent>,
    id: Uuid,
    what: &str,
    pred: impl Fn(&JobEvent) -> bool,
) -> JobEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("timed out after {WAIT:?} waiting for an event for job {id}: {what}; events seen for it: {seen:#?}"),
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => panic!("event receiver lagged by {n}"),
            Ok(Err(broadcast::error::RecvError::Closed)) => panic!("event channel closed while waiting for {what}"),
            Ok(Ok(ev)) if ev.id == id => {
                if pred(&ev) {
                    return ev;
                }
                seen.push(ev);
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Receive the next value from a channel within [`WAIT`]; panics with `what` otherwise.
pub async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("channel closed while waiting for {what}"),
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// A gate a handler waits at until the test opens it (once per `open`).
#[derive(Clone)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    pub fn new() -> Gate {
        Gate(Arc::new(Semaphore::new(0)))
    }

    /// Wait until opened; consumes one opening.
    pub async fn wait(&self) {
        self.0
            .acquire()
            .await
            .expect("gate semaphore closed")
            .forget();
    }

    /// Let one waiter through (now or when it arrives).
    pub fn open(&self) {
        self.0.add_permits(1);
    }
}

/// A shared, append-only log handlers and cleanups write to.
#[derive(Clone)]
pub struct Log<T>(Arc<Mutex<Vec<T>>>);

impl<T: Clone> Log<T> {
    pub fn new() -> Log<T> {
        Log::default()
    }

    pub fn push(&self, v: T) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(v);
    }

    pub fn snapshot(&self) -> Vec<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Read a `Stats` counter.
pub fn stat(counter: &std::sync::atomic::AtomicU64) -> u64 {
    mend::Stats::get(counter)
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Log(Arc::new(Mutex::new(Vec::new())))
    }
}

/// Wait until the worker's heartbeat has beaten once (its node's `last_seen` moved past its
/// start). With a long `heartbeat_interval`, no further beat happens during the test, so a test
/// can rely on the heartbeat *not* touching its jobs.
pub async fn wait_for_first_heartbeat(env: &Env, worker: &WorkerHandle) {
    let id = worker.node_id().to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let nodes = env.store.list_nodes().await.expect("list_nodes");
        if nodes
            .iter()
            .any(|n| n.id == id && n.last_seen > n.started_at)
        {
            // The beat reads the in-flight set right after this write; give it a moment to see
            // it empty before the test starts any job.
            tokio::task::yield_now().await;
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for the first heartbeat of node {id}; nodes: {nodes:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
