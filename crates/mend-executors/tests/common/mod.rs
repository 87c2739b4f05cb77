//! Shared helpers for the executor tests: a fresh SQLite store per test with a real worker
//! running the built-in kinds, bounded waits on stored job state, and a tiny scripted HTTP/1.1
//! server on 127.0.0.1 that records what it received.
//!
//! Every wait has a deadline and panics with what it awaited and what it last saw.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mend::{Client, JobRow, JobState, NewJob, Registry, Store, Worker, WorkerConfig, WorkerHandle};
use mend_executors::ExecutorsConfig;
use mend_sqlite::SqliteStore;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// The default bound for every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh store in a temporary directory and a worker running the built-in executors.
pub struct Env {
    /// Keeps the database directory alive for the test.
    pub dir: TempDir,
    /// The store.
    pub store: Arc<dyn Store>,
    /// A client on the store.
    pub client: Client,
    /// The worker (shut down by [`Env::stop`]).
    pub worker: WorkerHandle,
}

impl Env {
    /// A store and a worker on the default queue with fast polling and a 50 ms fixed retry
    /// delay, so retries happen within the test.
    pub async fn start(config: ExecutorsConfig) -> Env {
        Self::start_with(config, |_| {}).await
    }

    /// Like [`Env::start`], with further adjustments of the worker's settings.
    pub async fn start_with(config: ExecutorsConfig, tweak: impl FnOnce(&mut WorkerConfig)) -> Env {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let path = dir.path().join("mend.db");
        let sqlite = SqliteStore::open(path.to_str().expect("utf-8 temp path"))
            .await
            .expect("open the SQLite store");
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let mut registry = Registry::new();
        mend_executors::register(&mut registry, &config);
        let worker = Worker::builder(store.clone())
            .registry(registry)
            .queue(mend::job::DEFAULT_QUEUE, 4)
            .configure(|c| {
                c.poll_interval = Duration::from_millis(10);
                c.heartbeat_interval = Duration::from_millis(50);
                c.lease_duration = Duration::from_secs(5);
                c.rescue_interval = Duration::from_secs(3600);
                c.cleanup_timeout = Duration::from_secs(2);
                c.retry_policy = Arc::new(mend::FixedDelay(Duration::from_millis(50)));
            })
            .configure(tweak)
            .build()
            .start()
            .await
            .expect("start the worker");
        let client = Client::new(store.clone());
        Env {
            dir,
            store,
            client,
            worker,
        }
    }

    /// Enqueue a job of `kind` with `args` and at most `max_attempts` attempts.
    pub async fn enqueue(&self, kind: &str, args: serde_json::Value, max_attempts: i32) -> Uuid {
        self.client
            .insert(NewJob::new(kind, args).with_max_attempts(max_attempts))
            .await
            .expect("insert a job")
            .id
    }

    /// The job as stored now.
    pub async fn job(&self, id: Uuid) -> JobRow {
        self.store
            .get(id)
            .await
            .expect("store.get")
            .unwrap_or_else(|| panic!("job {id} does not exist"))
    }

    /// Wait until the job satisfies `pred`; returns the row that did.
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

    /// Shut the worker down.
    pub async fn stop(self) {
        self.worker.shutdown(Duration::from_secs(5)).await;
    }
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

/// One request as the test server received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the test server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    /// A reply with `status` and `body`.
    pub fn new(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answer only after `delay`.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Script = dyn Fn(&Received, usize) -> Reply + Send + Sync;

/// A scripted HTTP/1.1 server on 127.0.0.1 (one request per connection). The script gets each
/// request and its 0-based number.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Start a server answering with `script`.
    pub async fn start(script: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let rec = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (rec, script) = (rec.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = serve_one(stream, rec, script).await;
                });
            }
        });
        TestServer {
            addr,
            received,
            task,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    mut stream: TcpStream,
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Script>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_owned();
    let path = request_line.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let req = Received {
        method,
        path,
        headers,
        body,
    };
    let nth = {
        let mut all = received.lock().unwrap_or_else(|p| p.into_inner());
        all.push(req.clone());
        all.len() - 1
    };
    let reply = script(&req, nth);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut out = format!(
        "HTTP/1.1 {} Test\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (n, v) in &reply.headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}
