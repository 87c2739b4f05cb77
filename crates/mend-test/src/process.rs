//! Process control for crash and signal tests: spawn a binary and wait for its ready line, send
//! it a signal, wait for its exit; plus the test worker (`mend-test-worker`) run against an
//! [`Env`] and the ledger it writes. A spawned process is killed when its guard drops, so a
//! failing test leaves nothing behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mend::{JobRow, NewJob};
use uuid::Uuid;

use crate::env::Env;
use crate::wait::poll;

/// A child process, killed (SIGKILL) and reaped on drop if it is still running.
pub struct Proc(pub Child);

impl Proc {
    /// Spawns `cmd` with its stdout piped and waits for its first line to start with `ready`.
    pub fn spawn_ready(mut cmd: Command) -> Proc {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        // Guard first: a process that never says ready is still killed.
        let mut proc = Proc(child);
        let mut line = String::new();
        BufReader::new(proc.0.stdout.as_mut().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the ready line");
        assert!(line.starts_with("ready"), "process did not start: {line:?}");
        proc
    }

    /// Sends `sig` (`TERM`, `INT`, `KILL`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        signal(&self.0, sig);
    }

    /// Waits for the process to exit, up to `limit`; returns its exit code and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        wait_exit(&mut self.0, limit)
    }

    /// SIGTERM, then asserts a graceful exit: code 0 within ten seconds.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let (code, took) = self.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(0), "graceful shutdown exits 0 (took {took:?})");
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        self.0.kill().expect("SIGKILL the process");
        self.0.wait().expect("reap the process");
    }
}

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

/// Sends `sig` (`TERM`, `INT`, `KILL`, ...) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} failed");
}

/// Waits for the child to exit, up to `limit` (then kills it and panics); returns its exit code
/// and how long it took.
pub fn wait_exit(child: &mut Child, limit: Duration) -> (Option<i32>, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (status.code(), start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The lines of a file.
pub fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The test worker binary, `mend-test-worker`, built beside the running test.
pub fn test_worker_bin() -> PathBuf {
    // nextest names a package's binaries at run time; `cargo test` only at compile time, in the
    // test crate itself, so fall back to the target directory the test runs from.
    for var in [
        "NEXTEST_BIN_EXE_mend-test-worker",
        "CARGO_BIN_EXE_mend-test-worker",
    ] {
        if let Some(p) = std::env::var_os(var) {
            return p.into();
        }
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> -> target/<profile>/mend-test-worker
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    dir.join(format!("mend-test-worker{}", std::env::consts::EXE_SUFFIX))
}

impl Env {
    /// Enqueue `n` jobs of the test worker's `work` kind: sleep `first_ms` on the first
    /// attempt and `then_ms` on later ones.
    pub async fn enqueue(&self, n: usize, first_ms: u64, then_ms: u64) -> Vec<JobRow> {
        let jobs = (0..n)
            .map(|_| {
                NewJob::new(
                    "work",
                    serde_json::json!({"first_ms": first_ms, "then_ms": then_ms}),
                )
            })
            .collect();
        self.store.insert_many(jobs).await.expect("insert jobs")
    }

    /// Insert one job and return its stored row (through the store, as the process tests do).
    pub async fn insert_one(&self, job: NewJob) -> JobRow {
        self.store
            .insert_many(vec![job])
            .await
            .expect("insert a job")
            .pop()
            .expect("one row back")
    }

    /// Starts a test worker process on this Env's database and waits for it to say it is
    /// ready. `extra` are its flags (see the binary's docs).
    pub fn spawn(&self, extra: &[&str]) -> Proc {
        self.spawn_with_env(extra, &[])
    }

    /// [`Env::spawn`] with extra environment variables (fault injection).
    pub fn spawn_with_env(&self, extra: &[&str], vars: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(test_worker_bin());
        cmd.arg(&self.db)
            .arg(self.ledger_path())
            .args(extra)
            .envs(vars.iter().copied());
        Proc::spawn_ready(cmd)
    }

    /// The test worker's ledger, one entry per line.
    pub fn ledger(&self) -> Vec<String> {
        read_lines(&self.ledger_path())
    }

    /// How many ledger lines start with `PREFIX ID`.
    pub fn ledger_count(&self, prefix: &str, id: Uuid) -> usize {
        let p = format!("{prefix} {id}");
        self.ledger().iter().filter(|l| l.starts_with(&p)).count()
    }

    /// Polls the ledger until `n` lines start with `prefix`.
    pub async fn wait_ledger(&self, prefix: &str, n: usize, limit: Duration) {
        poll(
            &format!("{n} ledger lines start with {prefix:?}"),
            limit,
            || async {
                let lines = self.ledger();
                if lines.iter().filter(|l| l.starts_with(prefix)).count() >= n {
                    Ok(())
                } else {
                    Err(lines)
                }
            },
        )
        .await
    }
}

/// Runs a process test (an `async fn(Env)`) on both backends: generates a module named after
/// the test with `#[tokio::test]`s `sqlite` and `postgres`. The PostgreSQL one prints SKIPPED
/// and passes when `MEND_TEST_POSTGRES_URL` is not set.
///
/// (`macro_rules!` cannot glue identifiers, so the tests are `NAME::sqlite` and
/// `NAME::postgres` rather than `NAME_sqlite`; filters on either word still work.)
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$test($crate::env::Env::new().await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some(env) = $crate::env::Env::postgres(stringify!($test)).await else {
                        return;
                    };
                    super::$test(env).await;
                }
            }
        )*
    };
}

/// The table the test worker's `ledgered` kind writes in its completion's transaction, on the
/// test's backend: (job id, attempt) pairs.
pub enum EffectTable {
    /// The SQLite file.
    Sqlite(String),
    /// A connection and the schema-qualified table name.
    Postgres(tokio_postgres::Client, String),
}

impl EffectTable {
    /// Creates the (empty) table.
    pub async fn create(env: &Env) -> EffectTable {
        match &env.schema {
            None => {
                rusqlite::Connection::open(&env.db)
                    .expect("the effect table")
                    .execute_batch(
                        "CREATE TABLE ledger (job_id TEXT NOT NULL, attempt INTEGER NOT NULL)",
                    )
                    .expect("the effect table");
                EffectTable::Sqlite(env.db.clone())
            }
            Some(schema) => {
                let table = format!("\"{}\".ledger", schema.name);
                let pg = env.pg().await;
                pg.batch_execute(&format!(
                    "CREATE TABLE {table} (job_id text NOT NULL, attempt integer NOT NULL)"
                ))
                .await
                .expect("the effect table");
                EffectTable::Postgres(pg, table)
            }
        }
    }

    /// The table's name as the handler writes to it.
    pub fn table(&self) -> &str {
        match self {
            EffectTable::Sqlite(_) => "ledger",
            EffectTable::Postgres(_, table) => table,
        }
    }

    /// Every row.
    pub async fn rows(&self) -> Vec<(String, i32)> {
        match self {
            EffectTable::Sqlite(db) => {
                let conn = rusqlite::Connection::open(db).expect("the effect table");
                let mut stmt = conn
                    .prepare("SELECT job_id, attempt FROM ledger")
                    .expect("the effect table");
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .expect("the effect table")
                    .map(|r| r.expect("an effect row"))
                    .collect()
            }
            EffectTable::Postgres(pg, table) => pg
                .query(&format!("SELECT job_id, attempt FROM {table}"), &[])
                .await
                .expect("the effect table")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
        }
    }
}
