//! SQLite-specific behaviour: hot queries are index-backed, bad files give clear errors.

#![expect(clippy::unwrap_used)]

use std::time::Duration;

use mend::store::{ClaimParams, Store, StoreError};
use mend::NewJob;
use mend_sqlite::{SqliteConfig, SqliteStore};

async fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(dir.path().join("t.db").to_str().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn hot_queries_use_indexes_not_table_scans() {
    // The store's own statements, not copies: a change to one is checked here at once.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let plans = store.explain_hot_paths().await.unwrap();
    for (name, plan) in &plans {
        let indexes: &[&str] = match *name {
            "claim" | "claim_kinds" => &["mend_jobs_claim"],
            "claim_probe" => &["mend_jobs_claim", "mend_jobs_due"],
            "due" | "promote" => &["mend_jobs_due"],
            "rescue" | "limit_running" => &["mend_jobs_running"],
            "complete" | "extend" => &["PRIMARY KEY"],
            "limit_bucket" => &["sqlite_autoindex_mend_limit_buckets_1"],
            other => panic!("no expected index for {other}"),
        };
        for index in indexes {
            assert!(
                plan.iter().any(|l| l.contains(index)),
                "{name} does not use {index}: {plan:?}"
            );
        }
        assert!(
            !plan
                .iter()
                .any(|l| l.starts_with("SCAN mend_jobs") && !l.contains("INDEX")),
            "whole-table scan in {name}: {plan:?}"
        );
    }
    for name in ["claim", "claim_kinds"] {
        let (_, plan) = plans.iter().find(|(n, _)| *n == name).unwrap();
        assert!(
            !plan.iter().any(|l| l.contains("TEMP B-TREE")),
            "{name} must not sort: {plan:?}"
        );
    }
    assert_eq!(plans.len(), 10, "{plans:?}");
}

#[tokio::test]
async fn hot_writes_build_no_temporary_tables() {
    // A temporary table per INSERT/UPDATE cost ~10% of the writer's time in profiles (an IN
    // list in a partial index's condition does that); keep them out of the hot path.
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let writes = store.hot_write_opcodes().await.unwrap();
    assert_eq!(
        writes.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        ["insert", "claim", "complete"]
    );
    for (name, ops) in writes {
        assert!(!ops.is_empty(), "{name}: no opcodes");
        assert!(
            !ops.iter().any(|o| o.contains("Ephemeral")),
            "{name}: {ops:?}"
        );
    }
}

#[tokio::test]
async fn a_corrupt_file_gives_a_clear_error() {
    let (_dir, path) = temp_db("corrupt.db");
    std::fs::write(
        &path,
        b"this is not a database, just some bytes that pretend to be one.".repeat(100),
    )
    .unwrap();
    let err = SqliteStore::open(path.to_str().unwrap())
        .await
        .err()
        .expect("must fail");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("corrupt") && msg.contains("backup"), "{msg}");
    // The driver's own error stays reachable as the source.
    let source = std::error::Error::source(&err).expect("the driver's error is the source");
    assert!(
        source.to_string().contains("file is not a database"),
        "{source:?}"
    );
    // The file is left exactly as it was.
    assert!(std::fs::read(&path)
        .unwrap()
        .starts_with(b"this is not a database"));
}

#[tokio::test]
async fn another_programs_database_is_refused() {
    let (_dir, path) = temp_db("other.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY); PRAGMA user_version = 3;")
            .unwrap();
    }
    let err = SqliteStore::open(path.to_str().unwrap())
        .await
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("another program"), "{err}");
    let c = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "the other program's file is left alone");
}

/// The user the read-only check runs as when the suite runs as root (root may write any file).
const NOBODY: u32 = 65534;

#[tokio::test]
async fn a_read_only_file_gives_a_clear_error() {
    // Inner run (see below): open the file as an unprivileged user and check the error.
    if let Ok(path) = std::env::var("MEND_TEST_READ_ONLY_PATH") {
        let err = SqliteStore::open(&path)
            .await
            .err()
            .expect("opening a read-only database for writing must fail");
        assert!(
            matches!(
                err,
                StoreError::ReadOnly { .. } | StoreError::Unavailable { .. }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("read-only") || err.to_string().contains("permissions"),
            "{err}"
        );
        return;
    }
    let (dir, path) = temp_db("ro.db");
    drop(open_at(&path).await);
    // No side files: the open must create them, and cannot.
    for side in ["ro.db-wal", "ro.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(side));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    // Run this same test again in a child process: as `nobody` when we are root (root writes
    // read-only files), as ourselves otherwise.
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "a_read_only_file_gives_a_clear_error",
            "--nocapture",
        ])
        .env("MEND_TEST_READ_ONLY_PATH", &path);
    if is_root() {
        child.uid(NOBODY).gid(NOBODY);
    }
    let out = child.output().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        out.status.success(),
        "the read-only open did not fail clearly:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the inner check ran"
    );
}

#[tokio::test]
async fn a_read_only_open_gives_a_clear_error() {
    // Opening read-only through SQLite's URI is what a read-only mount looks like to SQLite,
    // and it is testable even as root.
    let (_dir, path) = temp_db("ro.db");
    drop(open_at(&path).await);
    let url = format!("file:{}?mode=ro", path.display());
    let err = SqliteStore::open(&url).await.err().expect("must fail");
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains("read-only"), "{err}");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A new temp dir and the path of a database file `name` in it (not created).
fn temp_db(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

async fn open_at(path: &std::path::Path) -> SqliteStore {
    SqliteStore::open(path.to_str().unwrap()).await.unwrap()
}

#[tokio::test]
async fn a_locked_database_times_out_with_a_clear_error_and_loses_nothing() {
    let (_dir, path) = temp_db("locked.db");
    let a = open_at(&path).await;
    let rows = a
        .insert_many(vec![NewJob::new("k", serde_json::json!({}))])
        .await
        .unwrap();
    let b = SqliteStore::open_with(
        path.to_str().unwrap(),
        SqliteConfig {
            busy_timeout: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Hold the write lock from a third connection for longer than b's busy timeout.
    let holder = std::thread::spawn({
        let path = path.clone();
        move || {
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            std::thread::sleep(Duration::from_millis(800));
            drop(c);
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let err = b
        .claim(ClaimParams {
            queue: "default".into(),
            kinds: vec![],
            limit: 1,
            lease_owner: "n".into(),
            lease_duration: Duration::from_secs(30),
            now: chrono::Utc::now(),
            routes: Vec::new(),
            ahead: 0,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
    holder.join().unwrap();
    // After the lock is gone everything works and nothing was lost.
    let job = b.get(rows[0].id).await.unwrap().unwrap();
    assert_eq!(job.state, mend::JobState::Available);
}

#[tokio::test]
async fn a_damaged_row_is_set_aside_instead_of_wedging_the_queue() {
    let (_dir, path) = temp_db("damaged.db");
    let store = open_at(&path).await;
    let rows = store
        .insert_many(vec![
            NewJob::new("k", serde_json::json!({"n": 1})),
            NewJob::new("k", serde_json::json!({"n": 2})),
        ])
        .await
        .unwrap();
    // Someone edits the file by hand and breaks the first job's args.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE mend_jobs SET args = 'not json' WHERE id = ?1",
        [rows[0].id.as_bytes().as_slice()],
    )
    .unwrap();
    let claim = |limit| ClaimParams {
        queue: "default".into(),
        kinds: vec![],
        limit,
        lease_owner: "n".into(),
        lease_duration: Duration::from_secs(30),
        now: chrono::Utc::now(),
        routes: Vec::new(),
        ahead: 0,
    };
    let claimed = store.claim(claim(10)).await.unwrap();
    assert_eq!(claimed.len(), 1, "the healthy job is still claimed");
    assert_eq!(claimed[0].id, rows[1].id);
    let (state, errors): (String, String) = raw
        .query_row(
            "SELECT state, errors FROM mend_jobs WHERE id = ?1",
            [rows[0].id.as_bytes().as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "discarded");
    assert!(errors.contains("cannot be read"), "{errors}");
    // Reading the damaged job says which column is bad instead of panicking.
    let err = store.get(rows[0].id).await.unwrap_err();
    assert!(err.to_string().contains("args"), "{err}");
}

#[tokio::test]
async fn a_node_row_written_by_an_older_mend_reads_with_default_facts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    // The columns an older mend wrote (before queues, build, in_flight, draining).
    let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute(
        "INSERT INTO mend_nodes (id, host, pid, process_key, started_at, last_seen) VALUES ('old', 'h', 1, 'k', 0, 0)",
        [],
    )
    .unwrap();
    let nodes = store.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!(n.id, "old");
    assert!(n.kinds.is_empty() && n.queues.is_empty() && n.build.is_empty());
    assert_eq!((n.in_flight, n.draining), (0, false));
}
