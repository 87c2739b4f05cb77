//! Helpers for the process tests: spawn the test worker, wait on the store, read the ledger.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mend::store::{ListParams, Store};
use mend::{JobRow, JobState, NewJob};

pub struct Env {
    pub dir: tempfile::TempDir,
    /// The database the workers open: a SQLite path or a `postgres://` URL.
    pub db: String,
    pub ledger: PathBuf,
    pub store: Arc<dyn Store>,
    /// PostgreSQL: the test's own schema, dropped with the Env.
    pub schema: Option<mend_test::pg::Schema>,
}

impl Env {
    pub async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobs.db").to_str().unwrap().to_owned();
        let ledger = dir.path().join("ledger.txt");
        std::fs::write(&ledger, "").unwrap();
        let store: Arc<dyn Store> = Arc::new(mend_sqlite::SqliteStore::open(&db).await.unwrap());
        Env {
            dir,
            db,
            ledger,
            store,
            schema: None,
        }
    }

    /// An Env on the PostgreSQL server of `MEND_TEST_POSTGRES_URL`, in a schema of its own
    /// (connections tagged with it as their application name, so a test can cut exactly its
    /// own). `None`, with a note, when the variable is not set.
    pub async fn postgres(test: &str) -> Option<Env> {
        let url = mend_test::pg::server_url(test)?;
        let schema = mend_test::pg::Schema::new(&url, "mend_p");
        let name = schema.name.clone();
        let db = format!("{}&application_name={name}", schema.store_url());
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("ledger.txt");
        std::fs::write(&ledger, "").unwrap();
        // The test's own store is not tagged: cutting the workers' connections spares it.
        let store: Arc<dyn Store> = Arc::new(
            mend_postgres::PgStore::open(&schema.store_url())
                .await
                .unwrap(),
        );
        Some(Env {
            dir,
            db,
            ledger,
            store,
            schema: Some(schema),
        })
    }

    /// A plain connection to the test's PostgreSQL server.
    pub async fn pg(&self) -> tokio_postgres::Client {
        let schema = self.schema.as_ref().expect("a PostgreSQL env");
        mend_test::pg::connect(&schema.url).await.unwrap()
    }

    /// Terminates every server connection of this test's workers.
    pub async fn terminate_backends(&self) -> u64 {
        let name = &self.schema.as_ref().expect("a PostgreSQL env").name;
        self.pg()
            .await
            .query_one(
                "SELECT count(pg_terminate_backend(pid))::int8 FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[name],
            )
            .await
            .unwrap()
            .get::<_, i64>(0) as u64
    }

    pub async fn enqueue(&self, n: usize, first_ms: u64, then_ms: u64) -> Vec<JobRow> {
        let jobs = (0..n)
            .map(|_| {
                NewJob::new(
                    "work",
                    serde_json::json!({"first_ms": first_ms, "then_ms": then_ms}),
                )
            })
            .collect();
        self.store.insert_many(jobs).await.unwrap()
    }

    /// Starts a worker process and waits for it to say it is ready. The process is killed when
    /// the guard drops, so a failing test leaves no worker behind.
    pub fn spawn(&self, extra: &[&str]) -> Proc {
        self.spawn_with_env(extra, &[])
    }

    /// [`Env::spawn`] with extra environment variables (fault injection).
    pub fn spawn_with_env(&self, extra: &[&str], vars: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mend-test-worker"))
            .arg(&self.db)
            .arg(&self.ledger)
            .args(extra)
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready"), "worker did not start: {line:?}");
        Proc(child)
    }

    pub async fn jobs(&self) -> Vec<JobRow> {
        self.store
            .list(ListParams {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .jobs
    }

    pub async fn count(&self, state: JobState) -> usize {
        self.jobs()
            .await
            .iter()
            .filter(|j| j.state == state)
            .count()
    }

    /// Polls until `f` holds for the jobs, or panics after `limit` with the jobs' states.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        f: impl Fn(&[JobRow]) -> bool,
    ) -> Vec<JobRow> {
        let start = Instant::now();
        loop {
            let jobs = self.jobs().await;
            if f(&jobs) {
                return jobs;
            }
            if start.elapsed() > limit {
                let states: Vec<_> = jobs.iter().map(|j| (j.state, j.attempt)).collect();
                panic!("timed out after {limit:?} waiting for {what}; jobs: {states:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to 30 s) until the job is completed; returns it.
    pub async fn wait_completed(&self, id: uuid::Uuid) -> JobRow {
        self.wait_for("the job completed", Duration::from_secs(30), |j| {
            j.iter()
                .any(|j| j.id == id && j.state == JobState::Completed)
        })
        .await
        .into_iter()
        .find(|j| j.id == id)
        .expect("the job is listed")
    }

    /// Polls the ledger until `n` lines start with `prefix`.
    pub async fn wait_ledger(&self, prefix: &str, n: usize, limit: Duration) {
        let start = Instant::now();
        while self
            .ledger()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
            < n
        {
            if start.elapsed() > limit {
                panic!(
                    "timed out waiting for {n} ledger lines starting with {prefix:?}: {:?}",
                    self.ledger()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn ledger(&self) -> Vec<String> {
        read_lines(&self.ledger)
    }

    pub fn ledger_count(&self, prefix: &str, id: uuid::Uuid) -> usize {
        let p = format!("{prefix} {id}");
        self.ledger().iter().filter(|l| l.starts_with(&p)).count()
    }
}

/// A worker process, killed on drop.
pub struct Proc(pub Child);

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} failed");
}

/// Waits for the child to exit, up to `limit`; returns its exit code and how long it took.
pub fn wait_exit(child: &mut Child, limit: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("worker process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
