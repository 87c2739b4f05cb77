//! `mend doctor`: checks a deployment and says what to fix, one finding a line (`ok`, `warn`
//! or `fail`, what was found, and the fix), or with `--json` one document with every finding.
//! Exits 0 when nothing fails, 1 otherwise.
//!
//! It never migrates: the schema version is read first (SQLite opened read-only), and the
//! store is opened only when the schema is exactly this build's. One file per group of
//! checks: `database` (reachable, schema, clock), `disk` (SQLite fsync, free space, WAL),
//! `nodes` (alive, leader, their clocks), `jobs` (unserved kinds, stuck leases, failed
//! cleanups) and `rollouts` (routed handler versions no live node serves).

mod database;
mod disk;
mod jobs;
mod nodes;
mod rollouts;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

/// Arguments of `mend doctor`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  mend doctor
  mend doctor --database postgres://mend@db.internal/mend --json

Exit status: 0 when no check fails (warnings allowed), 1 otherwise. Nothing is changed: the
schema is not migrated, jobs are not touched.")]
pub(crate) struct DoctorArgs {
    /// Database URL (sqlite://PATH or postgres://USER@HOST/DB) [default: `database` in the
    /// config file, else sqlite://mend.db]
    #[arg(long, env = "MEND_DATABASE_URL", value_name = "URL")]
    database: Option<String>,
    /// Configuration file to read `database` from [default: ./mend.toml when it exists]
    #[arg(long, env = "MEND_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print one JSON document `{"database", "ok", "findings": [...]}` instead of lines.
    #[arg(long)]
    json: bool,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Nothing to do.
    Ok,
    /// Worth a look; jobs still run.
    Warn,
    /// Something is broken; the fix says what to do.
    Fail,
}

/// One finding: which check, how it came out, what was found and what to do.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Finding {
    /// The check's name, stable for scripts (e.g. `schema`, `unserved_kind`).
    pub(crate) check: &'static str,
    /// How it came out.
    pub(crate) status: Status,
    /// What was found.
    pub(crate) message: String,
    /// What to do (`None` when nothing is to be done).
    pub(crate) fix: Option<String>,
}

impl Finding {
    /// A passing check.
    pub(crate) fn ok(check: &'static str, message: impl Into<String>) -> Finding {
        Finding {
            check,
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }

    /// A warning with its fix.
    pub(crate) fn warn(
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            status: Status::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// A failure with its fix.
    pub(crate) fn fail(
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The database URL: the flag (or `MEND_DATABASE_URL`), else `database` in the config file,
/// else `sqlite://mend.db`, as `mend serve` picks it.
fn database_url(a: &DoctorArgs) -> anyhow::Result<String> {
    crate::db::database_url(a.database.as_deref(), a.config.as_deref())
}

/// `mend doctor`: run every check that applies and print the findings; exit 1 when one
/// fails.
pub(crate) async fn run(a: DoctorArgs) -> anyhow::Result<()> {
    let url = database_url(&a)?;
    let findings = check_all(&url).await;
    let failed = findings.iter().any(|f| f.status == Status::Fail);
    let shown = crate::db::redact(&url);
    if a.json {
        let doc = serde_json::json!({
            "database": shown,
            "ok": !failed,
            "findings": findings,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).context("printing the findings")?
        );
    } else {
        println!("mend doctor: {shown}");
        for f in &findings {
            println!("{}", line(f));
        }
    }
    if failed {
        // The findings are the whole answer; an `error:` line from main would only repeat
        // them. Exit here, after flushing what was printed.
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    }
    Ok(())
}

/// One finding as a line: status, check, message and fix.
fn line(f: &Finding) -> String {
    let status = match f.status {
        Status::Ok => "ok  ",
        Status::Warn => "warn",
        Status::Fail => "FAIL",
    };
    match &f.fix {
        Some(fix) => format!("{status}  {:<14} {} — fix: {fix}", f.check, f.message),
        None => format!("{status}  {:<14} {}", f.check, f.message),
    }
}

/// Every check, in order; the store-based ones only when the schema is this build's.
async fn check_all(url: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let sqlite = !crate::db::is_postgres(url);
    let schema_ok = database::reachable_and_schema(url, &mut out).await;
    if sqlite {
        disk::check(url, &mut out);
    }
    if !schema_ok {
        return out;
    }
    let store = match crate::db::open(url, crate::db::OpenOptions::default()).await {
        Ok(s) => s,
        Err(e) => {
            out.push(Finding::fail(
                "database",
                format!("cannot open the store: {}", crate::chain(&e)),
                "fix what the error says, then run `mend doctor` again",
            ));
            return out;
        }
    };
    let now = chrono::Utc::now();
    let stats = match store
        .doctor_stats(mend::store::DoctorParams {
            waiting_before: now - chrono::Duration::minutes(1),
            lease_expired_before: now - jobs::STUCK_AFTER,
            discarded_since: now - chrono::Duration::days(1),
            limit: 5,
        })
        .await
    {
        Ok(s) => s,
        Err(e) => {
            out.push(Finding::fail(
                "database",
                format!("reading the jobs failed: {e}"),
                "fix what the error says, then run `mend doctor` again",
            ));
            return out;
        }
    };
    database::clock(&stats, now, &mut out);
    let nodes = match store.list_nodes().await {
        Ok(n) => n,
        Err(e) => {
            out.push(Finding::fail(
                "nodes",
                format!("listing the nodes failed: {e}"),
                "fix what the error says, then run `mend doctor` again",
            ));
            return out;
        }
    };
    let live = nodes::check(&nodes, &stats, now, &mut out);
    jobs::check(&stats, &live, &mut out);
    match store.rollout_routes().await {
        Ok(routes) => rollouts::check(&routes, &live, &mut out),
        Err(e) => out.push(Finding::warn(
            "rollout_versions",
            format!("not checked: reading the rollouts' routes failed: {e}"),
            "fix what the error says, then run `mend doctor` again",
        )),
    }
    // Durable cleanups that failed all their tries, from the events the workers write (the
    // time index serves it); a cleanup failing again and again shows here before anyone
    // reads the discarded jobs.
    let failures = store
        .events(mend::stats::EventsParams {
            since: now - chrono::Duration::days(1),
            until: now + chrono::Duration::minutes(1),
            kinds: vec![mend::stats::event_kind::CLEANUP_FAILED.to_owned()],
            limit: mend::stats::MAX_EVENTS,
        })
        .await;
    match failures {
        Ok(events) => jobs::cleanup_failures(&events, &mut out),
        Err(e) => out.push(Finding::warn(
            "cleanup_failures",
            format!("not checked: reading the cleanup events failed: {e}"),
            "fix what the error says, then run `mend doctor` again",
        )),
    }
    out
}
