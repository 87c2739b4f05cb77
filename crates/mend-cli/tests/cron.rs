//! Periodic jobs end to end: three real `mend serve` nodes on one database run a schedule
//! every second for ten seconds while the leader is SIGKILLed in the middle, and exactly one
//! job exists per slot (SQLite and PostgreSQL); bad declarations are refused over HTTP and in
//! `mend.toml` with nothing stored changed; `mend cron` drives the API; and a library worker
//! declared with `.periodic(..)` runs its schedule's jobs.

#![expect(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use mend::store::ListParams;
use mend::Store;
use mend_test::http::Remote;
use serde_json::{json, Value};

mod common;
use common::mend;

/// A `mend serve` process, SIGKILLed on drop if still running.
struct Serve {
    child: Child,
    addr: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn serve(db: &str, config: &Path) -> Serve {
    serve_logged(db, config, None)
}

/// [`serve`], its log (stderr) written to `log` when given.
fn serve_logged(db: &str, config: &Path, log: Option<&Path>) -> Serve {
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::inherit(),
    };
    let mut child = mend()
        .args([
            "serve",
            "--database",
            db,
            "--bind",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(config)
        .args(["--queues", "default=2"])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let addr = common::listening_url(&mut child)
        .trim_start_matches("http://")
        .to_owned();
    Serve { child, addr }
}

fn http(addr: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let r = Remote::new(format!("http://{addr}"))
        .blocking_call_with(method, path, body, &[])
        .expect("the server answers");
    (r.status, r.body)
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn open(db: &str) -> Arc<dyn Store> {
    if db.starts_with("postgres") {
        Arc::new(mend_postgres::PgStore::open(db).await.unwrap())
    } else {
        Arc::new(mend_sqlite::SqliteStore::open(db).await.unwrap())
    }
}

/// Every job of schedule `name`, as its slot (from the unique key), sorted.
fn slots_of(db: &str, name: &str) -> Vec<DateTime<Utc>> {
    block_on(async {
        let store = open(db).await;
        let jobs = store
            .list(ListParams {
                tag: Some(format!("cron:{name}")),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .jobs;
        let mut slots: Vec<_> = jobs
            .iter()
            .map(|j| mend::cron::slot_of(j).unwrap().1)
            .collect();
        slots.sort();
        slots
    })
}

/// A schedule that fires every second for exactly ten seconds from a whole second at least
/// `lead` from now (in one minute, so one expression holds it): its ten slots.
fn ten_second_window(lead: Duration) -> (String, Vec<DateTime<Utc>>) {
    let now = Utc::now();
    let mut start = (now + chrono::Duration::from_std(lead).unwrap())
        .with_nanosecond(0)
        .unwrap()
        + chrono::Duration::seconds(1);
    while start.second() > 50 {
        start += chrono::Duration::seconds(1);
    }
    let s = start.second();
    let expr = format!(
        "{}-{} {} {} {} {} *",
        s,
        s + 9,
        start.minute(),
        start.hour(),
        start.format("%-d"),
        start.format("%-m")
    );
    let slots = (0..10)
        .map(|i| start + chrono::Duration::seconds(i))
        .collect();
    (expr, slots)
}

/// Three nodes, the one that leads SIGKILLed after four slots: ten slots, ten jobs.
fn three_nodes_one_job_per_slot(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    // Long enough for three nodes to start before the first slot.
    let (expr, slots) = ten_second_window(Duration::from_secs(6));
    let config = dir.path().join("mend.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[cron]]
name = "tick"
schedule = "{expr}"
kind = "noop"
queue = "cron-e2e"
catch_up = "all"
"#
        ),
    )
    .unwrap();
    // The first node takes the lead at start (its start-up rescue asks for it).
    let logs: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("node{i}.log")))
        .collect();
    let mut leader = serve_logged(db, &config, Some(&logs[0]));
    let _b = serve_logged(db, &config, Some(&logs[1]));
    let _c = serve_logged(db, &config, Some(&logs[2]));
    let leads = |i: usize| {
        std::fs::read_to_string(&logs[i])
            .unwrap()
            .contains("now leads maintenance")
    };
    let postgres = db.starts_with("postgres");
    if postgres {
        // On SQLite every node schedules (the compare-and-set keeps one job per slot); on
        // PostgreSQL one leads, and it must be the node this test kills.
        assert!(leads(0) && !leads(1) && !leads(2), "the first node leads");
    }
    assert!(
        Utc::now() < slots[0],
        "the nodes started after the first slot; slow machine"
    );
    // Kill the leader in the middle, just after the fifth slot.
    let kill_at = slots[4] + chrono::Duration::milliseconds(300);
    while Utc::now() < kill_at {
        std::thread::sleep(Duration::from_millis(20));
    }
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();
    let killed_at = Utc::now();
    // Wait past the last slot for the others to take over and catch up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = slots_of(db, "tick");
        if got.len() >= 10 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2)); // a late duplicate would show up here
    if postgres {
        assert!(leads(1) || leads(2), "another node took the lead");
    }
    let got = slots_of(db, "tick");
    assert_eq!(
        got, slots,
        "exactly one job per slot (the leader was killed at {killed_at})"
    );
    let row = block_on(async { open(db).await.cron_get("tick".into()).await.unwrap() }).unwrap();
    assert_eq!(row.last_slot, Some(slots[9]));
    assert!(
        row.skipped.is_empty(),
        "policy all skips nothing: {:?}",
        row.skipped
    );
}

#[test]
fn every_second_for_ten_seconds_across_three_nodes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "cron.db");
    three_nodes_one_job_per_slot(&db);
}

#[test]
fn every_second_for_ten_seconds_across_three_nodes_on_postgres() {
    let Some(schema) = common::pg_schema(
        "every_second_for_ten_seconds_across_three_nodes_on_postgres",
        "cron3",
    ) else {
        return;
    };
    three_nodes_one_job_per_slot(&schema.store_url());
}

#[test]
fn bad_declarations_are_refused_over_http_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "http.db");
    let config = dir.path().join("mend.toml");
    std::fs::write(&config, "").unwrap();
    let s = serve(&db, &config);
    let good = json!({"name": "nightly", "schedule": "0 30 2 * * *", "timezone": "Europe/Berlin", "kind": "noop"});
    let (status, created) = http(&s.addr, "POST", "/v1/cron", Some(good.clone()));
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["catch_up"], "latest");
    let before = http(&s.addr, "GET", "/v1/cron/nightly", None).1;

    let bad = |patch: Value| {
        let mut body = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (patch, field) in [
        (json!({"schedule": "every tuesday"}), "schedule"),
        (json!({"schedule": "* * * * * * * *"}), "schedule"),
        (json!({"timezone": "Europe/Atlantis"}), "timezone"),
        (json!({"name": ""}), "name"),
        (json!({"catch_up": "sometimes"}), "catch_up"),
        (json!({"catch_up_max": 0}), "catch_up_max"),
        (json!({"args": {"bogus": 1}}), "args"),
    ] {
        let body = bad(patch.clone());
        let (status, problem) = http(&s.addr, "POST", "/v1/cron", Some(json!(body)));
        assert_eq!(status, 422, "{patch} → {problem}");
        assert_eq!(problem["field"], field, "{patch} → {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "the detail names the field: {problem}"
        );
        // A replacement with the same fault changes nothing stored either.
        let (status, _) = http(&s.addr, "PUT", "/v1/cron/nightly", Some(body));
        assert_eq!(status, 422);
    }
    let (status, _) = http(&s.addr, "POST", "/v1/cron", Some(good.clone()));
    assert_eq!(status, 409, "the name is taken");
    assert_eq!(
        http(&s.addr, "GET", "/v1/cron/nightly", None).1,
        before,
        "nothing stored changed"
    );
    let list = http(&s.addr, "GET", "/v1/cron", None).1;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_cron_tables_in_mend_toml_are_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "toml.db");
    let config = dir.path().join("mend.toml");
    let table = |name: &str, schedule: &str, extra: &str| {
        format!(
            "[[cron]]\nname = \"{name}\"\nschedule = \"{schedule}\"\nkind = \"noop\"\n{extra}\n"
        )
    };
    // A good declaration is stored at start.
    std::fs::write(&config, table("hourly", "@hourly", "")).unwrap();
    let s = serve(&db, &config);
    let (_, stored) = http(&s.addr, "GET", "/v1/cron/hourly", None);
    assert_eq!(stored["schedule"], "@hourly");
    drop(s);

    for (bad, field) in [
        (table("broken", "61 * * * *", ""), "schedule"),
        (
            table("zoned", "@daily", "timezone = \"Nowhere/Special\""),
            "timezone",
        ),
        (table("", "@daily", ""), "name"),
        (
            table("lazy", "@daily", "catch_up = \"whenever\""),
            "catch_up",
        ),
    ] {
        // The good one changed too: a refused file must not store even that change.
        let text = format!("{}\n{bad}", table("hourly", "@daily", ""));
        std::fs::write(&config, text).unwrap();
        let out = mend()
            .args([
                "serve",
                "--database",
                &db,
                "--bind",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "a bad [[cron]] table must stop mend serve"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("[[cron]] table #2") && err.contains(&format!("{field}:")),
            "the error names the table and the field {field}: {err}"
        );
    }
    let rows = block_on(async { open(&db).await.cron_list().await.unwrap() });
    assert_eq!(rows.len(), 1, "nothing else stored");
    assert_eq!(rows[0].periodic.schedule, "@hourly", "nothing changed");
}

/// `mend cron …` against a server: create, list, show, pause, resume, delete.
#[test]
fn the_cron_commands_drive_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "cli.db");
    let config = dir.path().join("mend.toml");
    std::fs::write(&config, "").unwrap();
    let s = serve(&db, &config);
    let server = format!("http://{}", s.addr);
    let run = |args: &[&str]| {
        let out = mend()
            .arg("cron")
            .args(args)
            .args(["--server", &server])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&[
        "create",
        "beat",
        "--schedule",
        "* * * * * *",
        "--kind",
        "noop",
        "--catch-up",
        "all",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("schedule beat stored; next slot"), "{out}");
    let (ok, _, err) = run(&["create", "bad", "--schedule", "nope", "--kind", "noop"]);
    assert!(!ok);
    assert!(err.contains("schedule"), "{err}");

    // Wait for a few runs, then the list and the detail show them with their jobs' states.
    let deadline = Instant::now() + Duration::from_secs(10);
    while slots_of(&db, "beat").len() < 2 {
        assert!(Instant::now() < deadline, "the schedule never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, out, _) = run(&["list"]);
    assert!(ok);
    assert!(
        out.contains("NAME") && out.contains("beat") && out.contains("* * * * * *"),
        "{out}"
    );
    let (ok, out, _) = run(&["show", "beat"]);
    assert!(ok);
    assert!(out.contains("recent runs (newest first):"), "{out}");
    let (ok, out, _) = run(&["show", "beat", "--json"]);
    assert!(ok);
    let shown: Value = serde_json::from_str(&out).unwrap();
    let run0 = &shown["runs"][0];
    assert!(
        run0["job_id"].is_string() && run0["state"].is_string(),
        "{shown}"
    );

    let (ok, out, _) = run(&["pause", "beat"]);
    assert!(ok && out.contains("paused"), "{out}");
    std::thread::sleep(Duration::from_millis(600)); // a pass in flight finishes
    let paused_at = slots_of(&db, "beat").len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        slots_of(&db, "beat").len(),
        paused_at,
        "a paused schedule inserts nothing"
    );
    let (ok, out, _) = run(&["resume", "beat"]);
    assert!(ok && out.contains("resumed"), "{out}");
    let (ok, out, _) = run(&["delete", "beat"]);
    assert!(ok && out.contains("deleted"), "{out}");
    let (ok, _, err) = run(&["show", "beat"]);
    assert!(!ok && err.contains("no schedule"), "{err}");
}

/// `Worker::builder(..).periodic(..)`: the schedule is stored at start and its jobs run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_worker_runs_its_periodic_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "lib.db");
    let store = open(&db).await;
    let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut registry = mend::Registry::new();
    {
        let ran = ran.clone();
        registry.register_raw("beat", None, move |ctx: mend::JobContext, _args: Value| {
            let ran = ran.clone();
            async move {
                ran.lock().unwrap().push(ctx.id());
                Ok::<_, mend::JobError>(None)
            }
        });
    }
    // An invalid declaration stops the start, naming the field; nothing is stored.
    let refused = mend::Worker::builder(store.clone())
        .registry(registry.clone())
        .periodic(mend::Periodic::new("ok", "* * * * * *", "beat", json!({})))
        .periodic(mend::Periodic::new("x", "* * * * * *", "beat", json!({})).timezone("Nope/Nope"))
        .build()
        .start()
        .await;
    let err = refused
        .err()
        .expect("an invalid declaration stops the start")
        .to_string();
    assert!(err.contains("timezone"), "{err}");
    assert!(
        store.cron_list().await.unwrap().is_empty(),
        "nothing stored"
    );
    let worker = mend::Worker::builder(store.clone())
        .registry(registry)
        .periodic(
            mend::Periodic::new("beat", "* * * * * *", "beat", json!({}))
                .catch_up(mend::CatchUp::All, 5),
        )
        .build()
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ran.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the periodic job never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.shutdown(Duration::from_secs(5)).await;
    let row = store.cron_get("beat".into()).await.unwrap().unwrap();
    assert!(row.recent_runs.len() >= 2);
    for run in &row.recent_runs {
        let job = store.get(run.job_id).await.unwrap().unwrap();
        assert_eq!(mend::cron::slot_of(&job), Some(("beat".into(), run.slot)));
    }
}
