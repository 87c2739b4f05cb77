//! The dashboard's history against a real `mend serve`: jobs that complete, fail then retry,
//! and get discarded (in-process and through remote workers) show up in `/v1/stats` within a
//! few seconds and are still there after the server restarts; a remote worker that claims with
//! a 1 s lease and vanishes produces a `lost` count and a `rescue` event; `/v1/nodes` shows the
//! live node with its queues, concurrency, build and attempts in flight.

#![expect(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mend_test::http::{Remote, Resp};
use serde_json::{json, Value};

mod common;
use common::{serve, Node};

fn call(node: &Node, method: &str, path: &str, body: Option<Value>) -> Resp {
    Remote::new(node.url.clone())
        .blocking_call_with(method, path, body, &[])
        .unwrap_or_else(|| panic!("{method} {path}: the server did not answer"))
}

fn ok(node: &Node, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = call(node, method, path, body);
    assert!(
        (200..300).contains(&r.status),
        "{method} {path}: {} {}",
        r.status,
        r.body
    );
    r.body
}

/// Polls `f` every 200 ms until it returns `Some`, for up to `secs`.
fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Counts per kind over the last hour, one bucket per kind (`step=window`).
fn per_kind(node: &Node) -> std::collections::BTreeMap<String, Value> {
    let body = ok(node, "GET", "/v1/stats?by=kind&step=window", None);
    body["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["kind"].as_str().unwrap().to_owned(), b.clone()))
        .collect()
}

fn counts(b: Option<&Value>) -> [u64; 5] {
    let Some(b) = b else { return [0; 5] };
    ["completed", "retried", "failed", "cancelled", "lost"].map(|k| b[k].as_u64().unwrap())
}

fn claim(node: &Node, worker: &str, kind: &str, lease_ms: u64) -> Value {
    let body = ok(
        node,
        "POST",
        "/v1/workers/claim",
        Some(json!({"worker_id": worker, "kinds": [kind], "wait_ms": 2000, "lease_ms": lease_ms})),
    );
    let job = body["jobs"][0].clone();
    assert!(job.is_object(), "{worker} claimed nothing: {body}");
    job
}

#[test]
fn stats_events_and_nodes_from_a_real_server_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "history.db");
    let node = serve(&db, dir.path());

    // In-process: three complete, one runs long enough for a heartbeat to report it in
    // flight, one is discarded (a webhook to a closed port, with no retry left).
    for _ in 0..3 {
        ok(
            &node,
            "POST",
            "/v1/jobs",
            Some(json!({"kind": "noop", "args": {}})),
        );
    }
    ok(
        &node,
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "http", "args": {"url": "http://127.0.0.1:1/"}, "max_attempts": 1})),
    );
    ok(
        &node,
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "noop", "args": {"sleep_ms": 4000}})),
    );

    // Remote: fail then retry then complete; a fatal failure; a worker that vanishes.
    ok(
        &node,
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "ext", "args": {}, "max_attempts": 3})),
    );
    let j = claim(&node, "w1", "ext", 30_000);
    let path = format!("/v1/jobs/{}/fail", j["id"].as_str().unwrap());
    let failed = ok(
        &node,
        "POST",
        &path,
        Some(
            json!({"worker_id": "w1", "attempt": j["attempt"], "error": "flaky", "retry_after_ms": 0}),
        ),
    );
    assert_eq!(failed["state"], "retryable", "{failed}");
    let j = claim(&node, "w1", "ext", 30_000);
    let path = format!("/v1/jobs/{}/complete", j["id"].as_str().unwrap());
    ok(
        &node,
        "POST",
        &path,
        Some(json!({"worker_id": "w1", "attempt": j["attempt"]})),
    );
    ok(
        &node,
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "ext", "args": {}})),
    );
    let j = claim(&node, "w1", "ext", 30_000);
    let path = format!("/v1/jobs/{}/fail", j["id"].as_str().unwrap());
    let discarded = ok(
        &node,
        "POST",
        &path,
        Some(json!({"worker_id": "w1", "attempt": j["attempt"], "error": "bad", "fatal": true})),
    );
    assert_eq!(discarded["state"], "discarded", "{discarded}");
    // Remote, batched: two attempts claimed in one call and ended in one finish.
    for _ in 0..2 {
        ok(
            &node,
            "POST",
            "/v1/jobs",
            Some(json!({"kind": "batched", "args": {}, "max_attempts": 1})),
        );
    }
    let claimed = ok(
        &node,
        "POST",
        "/v1/workers/claim",
        Some(json!({"worker_id": "w2", "kinds": ["batched"], "limit": 2, "wait_ms": 2000})),
    );
    let jobs = claimed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{claimed}");
    assert!(jobs[0]["checkpoint"].is_null() && jobs[0]["pending_cleanups"] == json!([]));
    assert!(jobs[0]["stop_after_cleanups"].is_null(), "{claimed}");
    let finished = ok(
        &node,
        "POST",
        "/v1/workers/finish",
        Some(json!({"worker_id": "w2", "outcomes": [
            {"id": jobs[0]["id"], "attempt": jobs[0]["attempt"], "outcome": "completed"},
            {"id": jobs[1]["id"], "attempt": jobs[1]["attempt"], "outcome": "failed", "error": "no"},
        ]})),
    );
    assert_eq!(
        finished["applied"].as_array().unwrap().len(),
        2,
        "{finished}"
    );
    ok(
        &node,
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "ghost", "args": {}})),
    );
    claim(&node, "ghost-worker", "ghost", 1000);

    // /v1/nodes: the live node, with its queue, concurrency, build and the long job in flight.
    let n = until(10, "a heartbeat reporting an attempt in flight", || {
        let body = ok(&node, "GET", "/v1/nodes", None);
        let nodes = body["nodes"].as_array().unwrap().clone();
        assert_eq!(nodes.len(), 1, "{body}");
        (nodes[0]["in_flight"].as_u64() >= Some(1)).then(|| nodes[0].clone())
    });
    assert_eq!(n["state"], "alive", "{n}");
    assert_eq!(
        n["leader"], true,
        "SQLite: the live node runs maintenance; {n}"
    );
    assert_eq!(
        n["queues"],
        json!([{"name": "default", "concurrency": 10}]),
        "{n}"
    );
    assert_eq!(n["build"], env!("CARGO_PKG_VERSION"), "{n}");
    assert!(
        n["kinds"].as_array().unwrap().contains(&json!("noop")),
        "{n}"
    );

    // Within a few seconds (flushes every 2 s; the rescuer looks every 5 s).
    let want = |s: &std::collections::BTreeMap<String, Value>| {
        counts(s.get("noop")) == [4, 0, 0, 0, 0]
            && counts(s.get("http")) == [0, 0, 1, 0, 0]
            && counts(s.get("ext")) == [1, 1, 1, 0, 0]
            && counts(s.get("ghost")) == [0, 0, 0, 0, 1]
            && counts(s.get("batched")) == [1, 0, 1, 0, 0]
    };
    let stats = until(30, "the history to count every attempt", || {
        let s = per_kind(&node);
        want(&s).then_some(s)
    });
    let noop = &stats["noop"];
    assert!(noop["run_p50_ms"].as_f64().is_some(), "{noop}");
    assert!(
        noop["run_p95_ms"].as_f64().unwrap() >= 3000.0,
        "the 4 s job is in the p95 of run time: {noop}"
    );
    assert!(noop["wait_p50_ms"].as_f64().is_some(), "{noop}");
    assert!(
        stats["ext"]["run_p50_ms"].as_f64().is_some(),
        "remote attempts are timed too"
    );
    assert!(
        stats["batched"]["run_p50_ms"].as_f64().is_some()
            && stats["batched"]["wait_p50_ms"].as_f64().is_some(),
        "batched remote outcomes are timed from their claim: {}",
        stats["batched"]
    );

    // Per minute by default; totals agree with the per-kind view.
    let total = ok(&node, "GET", "/v1/stats", None);
    assert_eq!(total["step_seconds"], 60);
    let completed: u64 = total["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["completed"].as_u64().unwrap())
        .sum();
    assert_eq!(completed, 6, "{total}");

    // The vanished worker's rescue.
    let events = ok(&node, "GET", "/v1/events?kind=rescue", None);
    let rescue = &events["events"][0];
    assert_eq!(rescue["node"], "remote:ghost-worker", "{events}");
    assert_eq!(rescue["detail"]["jobs"], 1, "{events}");
    assert_eq!(rescue["detail"]["cause"], "lease_expired", "{events}");
    let joined = ok(&node, "GET", "/v1/events?kind=node_joined&limit=10", None);
    assert_eq!(joined["events"].as_array().unwrap().len(), 1, "{joined}");
    assert_eq!(
        joined["events"][0]["detail"]["build"],
        env!("CARGO_PKG_VERSION")
    );

    // Bad parameters are 400 problem+json.
    for bad in [
        "/v1/stats?step=90",
        "/v1/stats?by=node",
        "/v1/stats?since=yesterday",
        "/v1/stats?since=2020-01-01T00:00:00Z&until=2020-03-01T00:00:00Z",
        "/v1/events?limit=0",
    ] {
        let r = call(&node, "GET", bad, None);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{bad}"
        );
    }

    // A restart (a kill: nothing is flushed at exit) keeps what was written; the new node
    // finds the old one dead and says so.
    let first_id = n["id"].as_str().unwrap().to_owned();
    drop(node);
    let node = serve(&db, dir.path());
    let after = per_kind(&node);
    assert!(want(&after), "after a restart: {after:?}");
    let left = until(15, "the dead node's node_left event", || {
        let body = ok(&node, "GET", "/v1/events?kind=node_left", None);
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["node"] == first_id.as_str())
            .cloned()
    });
    assert_eq!(left["detail"]["reason"], "dead", "{left}");
    let joined = ok(&node, "GET", "/v1/events?kind=node_joined", None);
    let newest = &joined["events"][0]["detail"];
    assert_eq!(
        newest["deploy"], false,
        "same build, kinds and queues: no deploy; {newest}"
    );
    assert_eq!(newest["previous_node"], first_id.as_str(), "{newest}");
}
