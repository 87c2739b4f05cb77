//! `mend doctor` end to end, with the real binary: a healthy SQLite deployment with a running
//! node passes; an unreachable PostgreSQL server fails with the database finding and its fix;
//! a database one migration behind fails with "run `mend migrate`" (and doctor leaves it
//! behind: it never migrates); jobs of a kind no live node serves are warned about, by kind
//! and queue; `--json` lists the same findings as the lines. Both backends where the check
//! reads the store.

#![expect(clippy::unwrap_used)]

use std::process::Output;
use std::time::Duration;

use mend_test::http::Remote;
use serde_json::{json, Value};

mod common;
use common::{mend, serve, Node};

/// `mend doctor --database db [extra]`, run in `dir`.
fn doctor(db: &str, dir: &std::path::Path, extra: &[&str]) -> Output {
    mend()
        .args(["doctor", "--database", db])
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The finding lines (after the heading), and the check named on each.
fn checks_of_lines(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect()
}

/// The findings of `--json`, after checking they are the same checks (with the same
/// statuses) as the lines of a plain run just before.
fn json_matches_lines(db: &str, dir: &std::path::Path, lines: &str) -> Value {
    let o = doctor(db, dir, &["--json"]);
    let doc: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}): {}", stdout(&o)));
    let findings = doc["findings"].as_array().unwrap();
    let checks: Vec<String> = findings
        .iter()
        .map(|f| f["check"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(checks, checks_of_lines(lines), "{doc:#}\n{lines}");
    let fails = findings.iter().filter(|f| f["status"] == "fail").count();
    assert_eq!(fails, lines.matches("\nFAIL").count(), "{doc:#}");
    assert_eq!(doc["ok"], json!(fails == 0));
    assert_eq!(o.status.code(), Some(if fails == 0 { 0 } else { 1 }));
    doc
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Enqueues a job of kind `nobody` in queue `default` through the node, and returns its id.
fn enqueue_nobody(node: &Node) -> String {
    let resp = runtime().block_on(Remote::new(node.url.clone()).call(
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "nobody", "queue": "default"})),
    ));
    assert!(resp.status < 300, "{resp:?}");
    resp.body["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_healthy_sqlite_deployment_with_a_running_node_passes() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "ok.db");
    let _node = serve(&db, dir.path());
    let o = doctor(&db, dir.path(), &[]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    for check in ["database", "schema", "fsync", "disk_space", "wal", "nodes"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "no ok {check}: {text}"
        );
    }
    // The node's kinds are recorded and shown.
    assert!(text.contains("kinds exec,http,noop"), "{text}");
    let doc = json_matches_lines(&db, dir.path(), &text);
    assert_eq!(doc["ok"], json!(true));
}

#[test]
fn an_unreachable_postgres_server_fails_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let db = "postgres://postgres@127.0.0.1:1/test";
    let o = doctor(db, dir.path(), &[]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("database"))
        .unwrap_or_else(|| panic!("no failing database line: {text}"));
    assert!(line.contains("fix: start PostgreSQL"), "{line}");
    json_matches_lines(db, dir.path(), &text);
}

#[test]
fn a_missing_sqlite_file_fails_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "missing.db");
    let o = doctor(&db, dir.path(), &[]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("database") && l.contains("mend migrate")),
        "{text}"
    );
    assert!(!dir.path().join("missing.db").exists());
}

/// Doctor on a database one migration behind: fails with "run `mend migrate`", and leaves it
/// behind; after `mend migrate` it passes.
fn one_migration_behind(db: &str, dir: &std::path::Path, version: impl Fn() -> i64) {
    let behind = version();
    let o = doctor(db, dir, &[]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("FAIL")
            && l.contains("schema")
            && l.contains("run `mend migrate`")),
        "{text}"
    );
    json_matches_lines(db, dir, &text);
    assert_eq!(version(), behind, "doctor must not migrate");
    let m = mend()
        .args(["migrate", "--database", db])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(m.status.success(), "{m:?}");
    assert_eq!(version(), behind + 1);
    let o = doctor(db, dir, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn a_sqlite_database_one_migration_behind_says_run_mend_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "old.db");
    let path = dir.path().join("old.db");
    let m = mend()
        .args(["migrate", "--database", &db])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(m.status.success(), "{m:?}");
    {
        // Undo the last migration (gray release: the job's version, nodes' versions,
        // rollouts and their samples) and its version.
        let conn = rusqlite::Connection::open(&path).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, mend_sqlite::SCHEMA_VERSION);
        conn.execute_batch(&format!(
            "DROP INDEX mend_jobs_canary_failed; ALTER TABLE mend_jobs DROP COLUMN version;
             ALTER TABLE mend_nodes DROP COLUMN versions; DROP TABLE mend_rollouts;
             DROP TABLE mend_version_samples; PRAGMA user_version = {}",
            v - 1
        ))
        .unwrap();
    }
    one_migration_behind(&db, dir.path(), || {
        rusqlite::Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    });
}

#[test]
fn a_postgres_database_one_migration_behind_says_run_mend_migrate() {
    let Some(schema) = common::pg_schema(
        "a_postgres_database_one_migration_behind_says_run_mend_migrate",
        "doctor_behind",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = schema.store_url();
    let m = mend()
        .args(["migrate", "--database", &db])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(m.status.success(), "{m:?}");
    let s = format!("\"{}\"", schema.name);
    let server = schema.url.clone();
    let sql = move |q: String| -> i64 {
        runtime().block_on(async {
            let c = mend_test::pg::connect(&server).await.unwrap();
            c.batch_execute(&q).await.unwrap();
            c.query_one(
                &format!("SELECT coalesce(max(version), 0)::int8 FROM {s}.mend_migrations"),
                &[],
            )
            .await
            .unwrap()
            .get(0)
        })
    };
    let name = format!("\"{}\"", schema.name);
    // Undo the last migration (the rollouts table's trigger that notifies every node of a
    // change of routing) and its row.
    let v = sql(format!(
        "DROP TRIGGER mend_rollouts_notify ON {name}.mend_rollouts; DROP FUNCTION {name}.mend_notify_routes();
         DELETE FROM {name}.mend_migrations WHERE version = {}",
        mend_postgres::SCHEMA_VERSION
    ));
    assert_eq!(v, mend_postgres::SCHEMA_VERSION - 1);
    one_migration_behind(&db, dir.path(), || sql(String::new()));
}

/// A job of kind `nobody` waiting 10 min, with a live node serving other kinds: warned about
/// by kind and queue, and nothing fails.
fn unserved_kind(db: &str, dir: &std::path::Path, leader: bool, age_jobs: impl Fn()) {
    let node = serve(db, dir);
    enqueue_nobody(&node);
    enqueue_nobody(&node);
    // Just enqueued: not waiting long enough to warn about.
    let o = doctor(db, dir, &[]);
    let text = stdout(&o);
    assert!(!text.contains("`nobody`"), "{text}");
    age_jobs();
    let o = doctor(db, dir, &[]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("warn") && l.contains("unserved_kind"))
        .unwrap_or_else(|| panic!("no unserved_kind warning: {text}"));
    assert!(
        line.contains("2 job(s) of kind `nobody` in queue `default`"),
        "{line}"
    );
    assert!(
        line.contains("fix: start a node with a handler for `nobody`"),
        "{line}"
    );
    let doc = json_matches_lines(db, dir, &text);
    let warned: Vec<&Value> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "unserved_kind")
        .collect();
    assert_eq!(warned.len(), 1, "{doc:#}");
    assert_eq!(warned[0]["status"], "warn");
    assert!(warned[0]["message"].as_str().unwrap().contains("`nobody`"));
    if leader {
        // PostgreSQL: the running node takes the maintenance leader's lock soon after start.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let text = stdout(&doctor(db, dir, &[]));
            if text
                .lines()
                .any(|l| l.starts_with("ok") && l.contains("leader"))
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no leader: {text}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(node);
}

#[test]
fn sqlite_jobs_of_a_kind_no_live_node_serves_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "kinds.db");
    let path = dir.path().join("kinds.db");
    unserved_kind(&db, dir.path(), false, || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let n = conn
            .execute(
                "UPDATE mend_jobs SET run_at = run_at - 600000000, created_at = created_at - 600000000 WHERE kind = 'nobody'",
                [],
            )
            .unwrap();
        assert_eq!(n, 2);
    });
}

#[test]
fn postgres_jobs_of_a_kind_no_live_node_serves_are_warned_about() {
    let Some(schema) = common::pg_schema(
        "postgres_jobs_of_a_kind_no_live_node_serves_are_warned_about",
        "doctor_kinds",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = schema.store_url();
    let (server, name) = (schema.url.clone(), schema.name.clone());
    unserved_kind(&db, dir.path(), true, || {
        runtime().block_on(async {
            let c = mend_test::pg::connect(&server).await.unwrap();
            let n = c
                .execute(
                    &format!(
                        "UPDATE \"{name}\".mend_jobs SET run_at = run_at - interval '10 minutes',
                         created_at = created_at - interval '10 minutes' WHERE kind = 'nobody'"
                    ),
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(n, 2);
        })
    });
}

#[test]
fn a_lease_expired_long_ago_fails_and_a_failed_cleanup_warns() {
    use mend::store::{ClaimParams, CompleteParams, Fence, Outcome, OutcomeKind};
    use mend::Store;
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "stuck.db");
    let path = dir.path().join("stuck.db");
    let (stuck, discarded) = runtime().block_on(async {
        let store = mend_sqlite::SqliteStore::open(&db).await.unwrap();
        store
            .insert_many(vec![
                mend::NewJob::new("k", json!({})),
                mend::NewJob::new("k", json!({})),
            ])
            .await
            .unwrap();
        let claimed = store
            .claim(ClaimParams {
                queue: "default".into(),
                kinds: vec![],
                limit: 2,
                lease_owner: "gone-node".into(),
                lease_duration: Duration::from_secs(30),
                now: chrono::Utc::now(),
                routes: Vec::new(),
                ahead: 0,
            })
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        let gone = &claimed[1];
        store
            .complete_many(CompleteParams {
                outcomes: vec![Outcome {
                    fence: Fence::new(gone.id, gone.attempt, "gone-node"),
                    kind: OutcomeKind::Discard {
                        error: mend::AttemptError {
                            attempt: 1,
                            kind: mend::ErrorKind::Error,
                            message: "cleanup failed: durable cleanup `undo` failed 3 times: boom"
                                .into(),
                            at: chrono::Utc::now(),
                            version: None,
                            given_back: false,
                        },
                    },
                    cleanups: vec![],
                }],
                now: chrono::Utc::now(),
            })
            .await
            .unwrap();
        // What a worker writes when a durable cleanup fails all its tries (the runtime's own
        // test, mend/tests/durable.rs, checks that it does): `undo` twice, `other` once.
        let failed = |cleanup: &str, job: uuid::Uuid| mend::stats::Event {
            at: chrono::Utc::now(),
            kind: mend::stats::event_kind::CLEANUP_FAILED.into(),
            node: "gone-node".into(),
            detail: json!({"job": job, "queue": "default", "kind": "k", "attempt": 1,
                           "cleanup": cleanup, "tries": 3, "error": "boom"}),
        };
        store
            .add_events(vec![
                failed("undo", gone.id),
                failed("undo", claimed[0].id),
                failed("other", gone.id),
            ])
            .await
            .unwrap();
        (claimed[0].id, gone.id)
    });
    // Before the lease is old: a warning for the cleanup only, exit 0.
    let o = doctor(&db, dir.path(), &[]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("warn") && l.contains("cleanups"))
        .unwrap_or_else(|| panic!("no cleanup warning: {text}"));
    assert!(line.contains(&discarded.to_string()), "{line}");
    assert!(
        line.contains(&format!("mend jobs retry {discarded}")),
        "{line}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("warn") && l.contains("cleanup_failures"))
        .unwrap_or_else(|| panic!("no repeated-failure warning: {text}"));
    assert!(line.contains("`undo` failed 2 times on 2 jobs"), "{line}");
    assert!(
        !line.contains("`other`"),
        "one failure is not 'again and again': {line}"
    );
    // The lease ran out 10 minutes ago and nobody rescued the job.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n = conn
        .execute(
            "UPDATE mend_jobs SET lease_expires_at = ?1 WHERE state = 'running'",
            [(chrono::Utc::now() - chrono::Duration::minutes(10)).timestamp_micros()],
        )
        .unwrap();
    assert_eq!(n, 1);
    let o = doctor(&db, dir.path(), &[]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("stuck_leases"))
        .unwrap_or_else(|| panic!("no stuck lease failure: {text}"));
    assert!(
        line.contains(&stuck.to_string()) && line.contains("gone-node"),
        "{line}"
    );
    assert!(
        line.contains("fix: keep at least one `mend serve` node running"),
        "{line}"
    );
    json_matches_lines(&db, dir.path(), &text);
}

#[test]
fn the_database_comes_from_mend_toml_when_no_flag_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "from-config.db");
    let m = mend()
        .args(["migrate", "--database", &db])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(m.status.success(), "{m:?}");
    let config = dir.path().join("other.toml");
    std::fs::write(&config, format!("database = {db:?}\n")).unwrap();
    let o = mend()
        .args(["doctor", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = stdout(&o);
    assert!(text.starts_with(&format!("mend doctor: {db}\n")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("schema")),
        "{text}"
    );
    // ./mend.toml is read when no --config is given.
    std::fs::rename(&config, dir.path().join("mend.toml")).unwrap();
    let o = mend()
        .arg("doctor")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        stdout(&o).starts_with(&format!("mend doctor: {db}\n")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_promoted_version_no_live_node_serves_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "pinned.db");
    let _node = serve(&db, dir.path());
    let text = stdout(&doctor(&db, dir.path(), &[]));
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok") && l.contains("rollout_versions")),
        "{text}"
    );
    // Version v9 of `noop` was rolled out and promoted, and then the nodes were deployed
    // without it (this node serves only the unversioned `noop`).
    runtime().block_on(async {
        let store = mend_sqlite::SqliteStore::open(&db).await.unwrap();
        let store: &dyn mend::Store = &store;
        let spec = mend::rollout::RolloutSpec {
            kind: "noop".into(),
            version: "v9".into(),
            steps: vec![10_000],
            every_secs: 60,
            guard: Default::default(),
            notify_url: None,
        };
        let now = chrono::Utc::now();
        let mut r = store
            .rollout_start(mend::rollout::Rollout::new(spec, None, "test", now))
            .await
            .unwrap()
            .unwrap();
        r.promote(now, "test", "by hand".into(), None);
        store.rollout_save(r).await.unwrap().unwrap();
    });
    let o = doctor(&db, dir.path(), &[]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "a warning, not a failure: {text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("warn") && l.contains("rollout_versions"))
        .unwrap_or_else(|| panic!("no rollout_versions warning: {text}"));
    assert!(
        line.contains("kind `noop` runs only on version `v9`")
            && line.contains("no live node serves it"),
        "{line}"
    );
    assert!(
        line.contains("fix: deploy a node with version `v9`"),
        "{line}"
    );
    json_matches_lines(&db, dir.path(), &text);
}
