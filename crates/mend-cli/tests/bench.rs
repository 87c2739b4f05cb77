//! `mend bench`'s scenarios and producers, run small on SQLite and (when configured)
//! PostgreSQL: every job completes and the figures the report prints hold together. These
//! check the bench's arithmetic and its paths, not speed (no timed assertions).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::Value;

const JOBS: u64 = 1500;

/// Runs `mend bench` with `extra` flags in `dir`; answers its JSON report.
fn bench(db: &str, dir: &std::path::Path, extra: &[&str]) -> Value {
    let out = common::mend()
        .args([
            "bench",
            "--database",
            db,
            "--json",
            "--latency-samples",
            "5",
        ])
        .args(["--jobs", &JOBS.to_string(), "--batch", "400"])
        .args(extra)
        .current_dir(dir)
        .output()
        .expect("run mend bench");
    assert!(
        out.status.success(),
        "mend bench {extra:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in {stdout:?}"));
    serde_json::from_str(line).unwrap()
}

fn num(r: &Value, field: &str) -> f64 {
    r[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {r}"))
}

/// The checks every report must pass: all jobs ran, and the rates are the counts over the
/// clocks printed beside them.
fn assert_sane(r: &Value, scenario: &str, via: &str) {
    assert_eq!(r["peer"], "mend", "{r}");
    assert_eq!(r["scenario"], scenario, "{r}");
    assert_eq!(r["via"], via, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["jobs"].as_u64(), Some(JOBS), "{r}");
    assert_eq!(r["processed"].as_u64(), Some(JOBS), "{r}");
    assert_eq!(r["left_in_queue"].as_u64(), Some(0), "{r}");
    assert_eq!(r["latency_samples"].as_u64(), Some(5), "{r}");
    let n = JOBS as f64;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
    let enqueue = num(r, "enqueue_s");
    assert!(enqueue > 0.0 && enqueue < 120.0, "{r}");
    assert!(close(num(r, "enqueue_per_sec"), n / enqueue), "{r}");
    let elapsed = num(r, "elapsed_sec");
    assert!(close(num(r, "end_to_end_per_sec"), n / elapsed), "{r}");
    let p50 = num(r, "latency_p50_ms");
    let p99 = num(r, "latency_p99_ms");
    assert!(
        p50 > 0.0 && p50 <= p99 && p99 <= num(r, "latency_max_ms"),
        "{r}"
    );
    match scenario {
        "drain" => {
            let drain = num(r, "drain_s");
            assert!(drain > 0.0 && drain < 120.0, "{r}");
            assert!(close(elapsed, enqueue + drain), "{r}");
            assert!(close(num(r, "jobs_per_sec"), n / drain), "{r}");
            // Drain alone is faster than enqueue-then-drain.
            assert!(num(r, "jobs_per_sec") > num(r, "end_to_end_per_sec"), "{r}");
        }
        _ => {
            assert!(r.get("drain_s").is_none(), "{r}");
            assert!(close(num(r, "jobs_per_sec"), n / elapsed), "{r}");
            // The producer runs inside the clocked window.
            assert!(enqueue <= elapsed + 1e-6, "{r}");
        }
    }
}

/// The value of an unlabelled Prometheus counter in `text`.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// The scenarios and producers on one database: drain direct, drain over HTTP through a
/// server the bench starts, concurrent over HTTP through a server given with `--server`
/// (whose enqueue counter must have grown by every job and latency sample).
fn scenarios(db: &str, dir: &std::path::Path) {
    let r = bench(db, dir, &["--scenario", "drain"]);
    assert_sane(&r, "drain", "direct");
    let r = bench(db, dir, &["--scenario", "drain", "--via", "http"]);
    assert_sane(&r, "drain", "http");
    let r = bench(db, dir, &["--concurrency", "4", "--no-claim-ahead"]);
    assert_sane(&r, "concurrent", "direct");
    assert_eq!(r["config"], "concurrency=4,batch=400,no-claim-ahead", "{r}");

    let node = common::serve(db, dir);
    let remote = mend_test::http::Remote::new(node.url.clone());
    let enqueued = || {
        let resp = remote
            .blocking_call_with("GET", "/metrics", None, &[])
            .expect("the server answers");
        counter(resp.body.as_str().unwrap(), "mend_jobs_enqueued_total")
    };
    let before = enqueued();
    let r = bench(db, dir, &["--via", "http", "--server", &node.url]);
    assert_sane(&r, "concurrent", "http");
    assert_eq!(
        enqueued() - before,
        JOBS + 5,
        "every job went through the server"
    );
}

#[test]
fn bench_scenarios_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenarios(&common::sqlite_url(dir.path(), "b.db"), dir.path());
}

#[test]
fn bench_scenarios_on_postgres() {
    let Some(schema) = common::pg_schema("bench_scenarios_on_postgres", "bench") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    scenarios(&schema.store_url(), dir.path());
}

#[test]
fn bench_refuses_what_it_cannot_measure() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "b.db");
    for (flags, says) in [
        (&["--via", "http", "--batch", "1001"][..], "at most 1000"),
        (
            &["--server", "http://127.0.0.1:1"][..],
            "--server is for --via http",
        ),
    ] {
        let out = common::mend()
            .args(["bench", "--database", &db, "--jobs", "10"])
            .args(flags)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flags:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flags:?}: {err}");
    }
}

/// Jobs per queue and state, read through a store on `db`.
fn counts(db: &str) -> Vec<(String, String, u64)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store: Box<dyn mend::Store> = if db.starts_with("postgres") {
            Box::new(mend_postgres::PgStore::open(db).await.unwrap())
        } else {
            Box::new(mend_sqlite::SqliteStore::open(db).await.unwrap())
        };
        store
            .queue_counts()
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.queue, c.state.to_string(), c.count))
            .collect()
    })
}

/// `--finished N` stores N completed jobs on a queue of their own before the run, once: a
/// second run finds them there and adds none, a larger N adds only the rest; the run's own
/// jobs are unaffected.
fn finished_jobs(db: &str, dir: &std::path::Path) {
    let history = |db: &str| -> Vec<(String, u64)> {
        counts(db)
            .into_iter()
            .filter(|(q, _, _)| q == "bench-history")
            .map(|(_, state, n)| (state, n))
            .collect()
    };
    for _ in 0..2 {
        let r = bench(db, dir, &["--scenario", "drain", "--finished", "1000"]);
        assert_sane(&r, "drain", "direct");
        assert_eq!(r["finished"].as_u64(), Some(1000), "{r}");
        assert_eq!(r["config"], "batch=400,finished=1000", "{r}");
        assert!(num(&r, "peak_rss_mib") > 1.0, "{r}");
        assert_eq!(history(db), [("completed".to_owned(), 1000)]);
    }
    // Asking for more later adds only the missing rows (the chunk is stored in part).
    let r = bench(db, dir, &["--scenario", "drain", "--finished", "1500"]);
    assert_sane(&r, "drain", "direct");
    assert_eq!(history(db), [("completed".to_owned(), 1500)]);
}

#[test]
fn bench_keeps_finished_jobs_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    finished_jobs(&common::sqlite_url(dir.path(), "f.db"), dir.path());
}

#[test]
fn bench_keeps_finished_jobs_on_postgres() {
    let Some(schema) = common::pg_schema("bench_keeps_finished_jobs_on_postgres", "benchf") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    finished_jobs(&schema.store_url(), dir.path());
}
