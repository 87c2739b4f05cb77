//! The drill job kind that `mend chaos` runs on its `mend serve` nodes (registered only when a
//! node is started with `--drill-dir`). Each attempt leaves exactly the traces the drill's
//! invariants check: a marker file guarded by a durable cleanup, a staged output file promoted
//! on completion, and a ledger row committed in the completion's own transaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mend::{JobContext, JobError, Registry};
use serde::{Deserialize, Serialize};

/// The drill's job kind.
pub(crate) const KIND: &str = "mend.drill";
/// The drill's second kind, the same work under another name: with `--good-canary`, half the
/// jobs are of this kind and its good canary rolls out beside the bad one of [`KIND`] (a kind
/// has one rollout at a time).
pub(crate) const TWIN_KIND: &str = "mend.drill.twin";
/// The version of [`KIND`] that fails at `--bad-canary`'s rate.
pub(crate) const BAD_CANARY: &str = "bad-canary";
/// The version of [`TWIN_KIND`] that does exactly what the stable handler does.
pub(crate) const GOOD_CANARY: &str = "good-canary";
/// The messages of a bad canary's injected failures start with this.
pub(crate) const CANARY_FAULT: &str = "injected canary fault";
/// The table of effects, one row per completion (no unique key on purpose: a duplicate must
/// be visible to the checker, not refused by the database).
pub(crate) const LEDGER_TABLE: &str = "mend_drill_ledger";

/// What one attempt does, fixed at enqueue time from the drill's seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Fault {
    /// Finish normally.
    Ok,
    /// Return a retryable error.
    Error,
    /// Panic mid-attempt.
    Panic,
    /// Hang past the job's timeout.
    Timeout,
}

/// A drill job's arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DrillArgs {
    /// The drill run, so a database can hold several runs.
    pub run: String,
    /// How long the attempt works before its fault (if any) strikes.
    pub work_ms: u64,
    /// What attempt `n` does is `faults[n - 1]`; attempts past the end finish normally.
    pub faults: Vec<Fault>,
}

impl mend::JobArgs for DrillArgs {
    const KIND: &'static str = KIND;
}

/// A bug put in on purpose, so a test can show the drill's checker catches it. Never use
/// outside such a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Breakage {
    /// Commit the ledger row on its own connection before the work, instead of in the
    /// completion's transaction: a failed or killed attempt leaves a row behind and its retry
    /// writes another.
    EffectOutsideTransaction,
    /// The marker's durable cleanup reports success without removing anything.
    CleanupDoesNothing,
}

impl Breakage {
    /// The name on the command line (clap's, so the two cannot drift apart).
    pub(crate) fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// The durable cleanup of a marker: removes it (idempotent).
#[derive(Serialize, Deserialize)]
struct RemoveMarker {
    path: String,
}

impl mend::CleanupArgs for RemoveMarker {
    const NAME: &'static str = "mend.drill.remove_marker";
}

/// Where a drill keeps its files.
#[derive(Debug, Clone)]
pub(crate) struct DrillDir {
    /// The root.
    pub root: PathBuf,
}

impl DrillDir {
    /// Markers of attempts in progress.
    pub(crate) fn markers(&self) -> PathBuf {
        self.root.join("markers")
    }
    /// Promoted output files (and, while attempts run, their staged temporaries).
    pub(crate) fn out(&self) -> PathBuf {
        self.root.join("out")
    }
    /// The final output file of a job.
    pub(crate) fn output(&self, id: uuid::Uuid) -> PathBuf {
        self.out().join(format!("{id}.out"))
    }
    /// Creates the directories.
    pub(crate) fn create(&self) -> anyhow::Result<()> {
        for d in [self.markers(), self.out(), self.root.join("logs")] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(())
    }
}

/// Where the ledger lives for a database URL: the table name to use in SQL.
pub(crate) fn ledger_table(database: &str) -> String {
    #[cfg(feature = "postgres")]
    if crate::db::is_postgres(database) {
        let schema = mend_postgres::split_schema(database)
            .1
            .unwrap_or_else(|| "mend".into());
        return format!("\"{schema}\".{LEDGER_TABLE}");
    }
    let _ = database;
    LEDGER_TABLE.to_owned()
}

/// Creates the ledger table if it is missing (the store, and so its schema, must exist).
pub(crate) async fn create_ledger(database: &str) -> anyhow::Result<()> {
    let table = ledger_table(database);
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {table} (run TEXT NOT NULL, job_id TEXT NOT NULL, attempt INTEGER NOT NULL)"
    );
    #[cfg(feature = "postgres")]
    if crate::db::is_postgres(database) {
        return pg_execute(database, &ddl, &[]).await;
    }
    {
        let path = mend_sqlite::parse_url(database)?;
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            sqlite_conn(&path)?.execute(&ddl, [])?;
            Ok(())
        })
        .await?
    }
}

/// Every ledger row of a run: (job id, attempt).
pub(crate) async fn read_ledger(database: &str, run: &str) -> anyhow::Result<Vec<(String, i32)>> {
    let sql = format!(
        "SELECT job_id, attempt FROM {} WHERE run = $1",
        ledger_table(database)
    );
    #[cfg(feature = "postgres")]
    if crate::db::is_postgres(database) {
        return pg_query(database, &sql, run).await;
    }
    {
        let path = mend_sqlite::parse_url(database)?;
        let run = run.to_owned();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(String, i32)>> {
            let conn = sqlite_conn(&path)?;
            let mut stmt = conn.prepare(&sql.replace("$1", "?1"))?;
            let rows = stmt
                .query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?
    }
}

fn sqlite_conn(path: &str) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)
        .with_context(|| format!("opening {path} for the ledger"))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    Ok(conn)
}

#[cfg(feature = "postgres")]
async fn pg_client(database: &str) -> anyhow::Result<mend_postgres::tokio_postgres::Client> {
    mend_postgres::connect(database)
        .await
        .with_context(|| format!("connecting to {}", crate::db::redact(database)))
}

#[cfg(feature = "postgres")]
async fn pg_execute(
    database: &str,
    sql: &str,
    params: &[&(dyn mend_postgres::tokio_postgres::types::ToSql + Sync)],
) -> anyhow::Result<()> {
    pg_client(database).await?.execute(sql, params).await?;
    Ok(())
}

#[cfg(feature = "postgres")]
async fn pg_query(database: &str, sql: &str, run: &str) -> anyhow::Result<Vec<(String, i32)>> {
    let rows = pg_client(database).await?.query(sql, &[&run]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Terminates every server connection whose application name is `tag` (the drill's nodes),
/// and returns how many there were.
#[cfg(feature = "postgres")]
pub(crate) async fn terminate_backends(database: &str, tag: &str) -> anyhow::Result<u64> {
    let n: i64 = pg_client(database)
        .await?
        .query_one(
            "SELECT count(pg_terminate_backend(pid))::int8 FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&tag],
        )
        .await?
        .get(0);
    Ok(n.max(0) as u64)
}

/// Without PostgreSQL support there is nothing to terminate.
#[cfg(not(feature = "postgres"))]
pub async fn terminate_backends(_database: &str, _tag: &str) -> anyhow::Result<u64> {
    Ok(0)
}

/// The handler versions a drill node serves besides the stable drill kind (`mend chaos
/// --bad-canary / --good-canary`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Canaries {
    /// Serve [`BAD_CANARY`] of [`KIND`], failing this share of its attempts.
    pub bad: Option<f64>,
    /// Serve [`TWIN_KIND`] and its [`GOOD_CANARY`].
    pub good: bool,
}

/// Registers the drill kind and its cleanup, for a node on `database` keeping files in `dir`,
/// the canary versions asked for, and the kind again as the named handler `version` (the same
/// code) when given.
pub(crate) fn register(
    registry: &mut Registry,
    database: &str,
    dir: DrillDir,
    breakage: Option<Breakage>,
    canaries: Canaries,
    version: Option<&str>,
) -> anyhow::Result<()> {
    let shared = Arc::new(Drill {
        database: database.to_owned(),
        table: ledger_table(database),
        postgres: crate::db::is_postgres(database),
        sqlite_path: if crate::db::is_postgres(database) {
            None
        } else {
            Some(mend_sqlite::parse_url(database)?)
        },
        dir,
        breakage,
    });
    let d = shared.clone();
    registry.register_fn(move |ctx, args: DrillArgs| {
        let d = d.clone();
        async move { d.run(ctx, args).await }
    });
    if let Some(rate) = canaries.bad {
        let d = shared.clone();
        registry.register_version_fn(BAD_CANARY, move |ctx, args: DrillArgs| {
            let d = d.clone();
            async move { d.run_bad_canary(ctx, args, rate).await }
        });
    }
    if canaries.good {
        // The twin kind's stable handler and its good canary run the very same code: a
        // canary no worse than stable, which the guard must let through.
        for version in [None, Some(GOOD_CANARY)] {
            let d = shared.clone();
            let run = move |ctx: JobContext, args: serde_json::Value| {
                let d = d.clone();
                async move {
                    let args: DrillArgs = serde_json::from_value(args)
                        .map_err(|e| JobError::fatal(format!("bad drill args: {e}")))?;
                    d.run(ctx, args).await.map(|()| None)
                }
            };
            match version {
                None => registry.register_raw(TWIN_KIND, None, run),
                Some(v) => registry.register_raw_version(TWIN_KIND, v, None, run),
            };
        }
    }
    if let Some(v) = version {
        let d = shared.clone();
        registry.register_version_fn(v, move |ctx, args: DrillArgs| {
            let d = d.clone();
            async move { d.run(ctx, args).await }
        });
    }
    let lazy = breakage == Some(Breakage::CleanupDoesNothing);
    registry.register_cleanup(move |c: RemoveMarker| async move {
        if lazy {
            return Ok(());
        }
        match std::fs::remove_file(&c.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("cannot remove {}: {e}", c.path)),
        }
    });
    Ok(())
}

struct Drill {
    database: String,
    table: String,
    postgres: bool,
    sqlite_path: Option<String>,
    dir: DrillDir,
    breakage: Option<Breakage>,
}

impl Drill {
    async fn run(&self, ctx: JobContext, args: DrillArgs) -> Result<(), JobError> {
        let (id, attempt) = (ctx.id(), ctx.attempt());
        let io = |e: std::io::Error| JobError::retry(e.to_string());
        if self.breakage == Some(Breakage::EffectOutsideTransaction) {
            self.insert_alone(&args.run, id, attempt)
                .await
                .map_err(|e| JobError::retry(format!("{e:#}")))?;
        }
        // The marker stands for work in progress that must not outlive a failed attempt; it
        // is created only once its cleanup is written down.
        let marker = self.dir.markers().join(format!("{id}.{attempt}"));
        ctx.defer_durable(&RemoveMarker {
            path: marker.to_string_lossy().into_owned(),
        })
        .await?;
        std::fs::write(&marker, b"in progress").map_err(io)?;
        let temp = ctx.stage_file(self.dir.output(id)).await?;
        std::fs::write(&temp, format!("{id} attempt {attempt}\n")).map_err(io)?;
        tokio::time::sleep(Duration::from_millis(args.work_ms)).await;
        let fault = usize::try_from(attempt - 1)
            .ok()
            .and_then(|i| args.faults.get(i).copied())
            .unwrap_or(Fault::Ok);
        match fault {
            Fault::Ok => {}
            Fault::Error => {
                return Err(JobError::retry_after(
                    "injected error (mend chaos)",
                    Duration::from_millis(50),
                ))
            }
            Fault::Panic => panic!("injected panic (mend chaos)"),
            Fault::Timeout => std::future::pending::<()>().await,
        }
        match std::fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if self.breakage != Some(Breakage::EffectOutsideTransaction) {
            self.insert_with_completion(&ctx, args.run, id, attempt);
        }
        Ok(())
    }

    fn insert_with_completion(&self, ctx: &JobContext, run: String, id: uuid::Uuid, attempt: i32) {
        let sql = format!(
            "INSERT INTO {} (run, job_id, attempt) VALUES ($1, $2, $3)",
            self.table
        );
        if self.postgres {
            #[cfg(feature = "postgres")]
            ctx.commit_with_completion(mend_postgres::effect(move |tx| {
                Box::pin(async move {
                    tx.execute(&sql, &[&run, &id.to_string(), &attempt]).await?;
                    Ok(())
                })
            }));
        } else {
            ctx.commit_with_completion(mend_sqlite::effect(move |conn| {
                conn.execute(
                    &sql.replace('$', "?"),
                    rusqlite::params![run, id.to_string(), attempt],
                )?;
                Ok(())
            }));
        }
    }

    /// The bad canary: at `rate`, an attempt fails after its work, one of an error, a panic
    /// or a hang past the timeout (a third each); otherwise it is the stable handler. A
    /// failure strikes before the attempt leaves any trace the drill checks, so the checks
    /// of the stable side hold for the attempts that heal the job.
    async fn run_bad_canary(
        &self,
        ctx: JobContext,
        args: DrillArgs,
        rate: f64,
    ) -> Result<(), JobError> {
        if fastrand::f64() >= rate {
            return self.run(ctx, args).await;
        }
        tokio::time::sleep(Duration::from_millis(args.work_ms)).await;
        match fastrand::u8(0..3) {
            0 => Err(JobError::retry_after(
                format!("{CANARY_FAULT}: error (mend chaos --bad-canary)"),
                Duration::from_millis(50),
            )),
            1 => panic!("{CANARY_FAULT}: panic (mend chaos --bad-canary)"),
            _ => {
                std::future::pending::<()>().await;
                Ok(())
            }
        }
    }

    /// The broken way: the effect commits on its own, whatever becomes of the attempt.
    async fn insert_alone(&self, run: &str, id: uuid::Uuid, attempt: i32) -> anyhow::Result<()> {
        let sql = format!(
            "INSERT INTO {} (run, job_id, attempt) VALUES ($1, $2, $3)",
            self.table
        );
        #[cfg(feature = "postgres")]
        if self.postgres {
            let id = id.to_string();
            return pg_execute(&self.database, &sql, &[&run, &id, &attempt]).await;
        }
        let path = self
            .sqlite_path
            .clone()
            .context("no SQLite path for the ledger")?;
        let run = run.to_owned();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            sqlite_conn(&path)?.execute(
                &sql.replace('$', "?"),
                rusqlite::params![run, id.to_string(), attempt],
            )?;
            Ok(())
        })
        .await?
    }
}

/// Whether a file name in the output directory is a staged temporary (see
/// `JobContext::stage_file`).
pub(crate) fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// The job id of a final output file's name.
pub(crate) fn output_id(path: &Path) -> Option<uuid::Uuid> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".out")?.parse().ok()
}
