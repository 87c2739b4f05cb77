//! The remote worker protocol through the whole router: long-poll claim, heartbeat, complete
//! and fail, fenced like in-process workers; and queue pause/resume.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::start;
use serde_json::json;

#[tokio::test]
async fn claim_heartbeat_complete_and_fail_are_fenced() {
    let s = start(None, None).await;
    let a = s
        .post("/v1/jobs", json!({"kind": "resize", "args": {"w": 10}}))
        .await;
    let b = s
        .post("/v1/jobs", json!({"kind": "resize", "max_attempts": 1}))
        .await;
    let _other = s.post("/v1/jobs", json!({"kind": "other"})).await;

    let c = s
        .claim(json!({"worker_id": "py-1", "kinds": ["resize"], "limit": 5}))
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let jobs = c.body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "only the kinds asked for");
    assert_eq!(c.body["lease_owner"], "remote:py-1");
    assert!(jobs
        .iter()
        .all(|j| j["state"] == "running" && j["attempt"] == 1));

    let (ida, idb) = (
        a.body["id"].as_str().unwrap(),
        b.body["id"].as_str().unwrap(),
    );
    let hb = s
        .post("/v1/workers/heartbeat", json!({"worker_id": "py-1", "jobs": [{"id": ida, "attempt": 1}, {"id": idb, "attempt": 7}]}))
        .await;
    assert_eq!(hb.status, 200);
    assert_eq!(hb.body["lost"], json!([{"id": idb, "attempt": 7}]));

    // Another worker cannot complete what it does not hold.
    let stolen = s
        .post(
            &format!("/v1/jobs/{ida}/complete"),
            json!({"worker_id": "py-2", "attempt": 1}),
        )
        .await;
    assert!(stolen.problem(409).contains("does not hold"));

    let done = s
        .post(
            &format!("/v1/jobs/{ida}/complete"),
            json!({"worker_id": "py-1", "attempt": 1, "result": {"ok": true}}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body["state"], "completed");
    assert_eq!(done.body["result"], json!({"ok": true}));

    let failed = s
        .post(
            &format!("/v1/jobs/{idb}/fail"),
            json!({"worker_id": "py-1", "attempt": 1, "error": "bad image"}),
        )
        .await;
    assert_eq!(
        failed.body["state"], "discarded",
        "out of attempts: {}",
        failed.body
    );
    assert_eq!(failed.body["errors"][0]["message"], "bad image");
    let twice = s
        .post(
            &format!("/v1/jobs/{idb}/fail"),
            json!({"worker_id": "py-1", "attempt": 1, "error": "x"}),
        )
        .await;
    twice.problem(409);
}

#[tokio::test]
async fn a_failed_attempt_is_retried_after_retry_after_ms() {
    let s = start(None, None).await;
    let a = s.post("/v1/jobs", json!({"kind": "resize"})).await;
    let id = a.body["id"].as_str().unwrap();
    s.claim(json!({"worker_id": "w", "kinds": ["resize"]}))
        .await;
    let failed = s
        .post(&format!("/v1/jobs/{id}/fail"), json!({"worker_id": "w", "attempt": 1, "error": "503 upstream", "retry_after_ms": 60000}))
        .await;
    assert_eq!(failed.body["state"], "retryable");
    let run_at =
        chrono::DateTime::parse_from_rfc3339(failed.body["run_at"].as_str().unwrap()).unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(failed.body["errors"][0]["at"].as_str().unwrap())
        .unwrap();
    let delay = (run_at - at).num_milliseconds();
    assert!(
        (59_000..=61_000).contains(&delay),
        "retry in ~60 s, got {delay} ms"
    );
}

#[tokio::test]
async fn a_long_poll_returns_as_soon_as_a_job_is_enqueued() {
    let s = Arc::new(start(None, None).await);
    let s2 = s.clone();
    let poll = tokio::spawn(async move {
        let t = Instant::now();
        let r = s2
            .claim(json!({"worker_id": "w", "kinds": ["ping"], "wait_ms": 10000}))
            .await;
        (r, t.elapsed())
    });
    // Let the claim park in its long poll first: the enqueue must wake it, not precede it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.post("/v1/jobs", json!({"kind": "ping"})).await;
    let (r, took) = poll.await.unwrap();
    assert_eq!(r.body["jobs"].as_array().unwrap().len(), 1);
    assert!(
        took < Duration::from_secs(5),
        "woken by the enqueue, not the 10 s wait ({took:?})"
    );

    let t = Instant::now();
    let empty = s
        .claim(json!({"worker_id": "w", "kinds": ["ping"], "wait_ms": 300}))
        .await;
    assert_eq!(empty.body["jobs"], json!([]));
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "waited for the whole wait_ms"
    );

    for (bad, field) in [
        (json!({"worker_id": "w", "kinds": []}), "kinds"),
        (
            json!({"worker_id": "no spaces", "kinds": ["x"]}),
            "worker_id",
        ),
    ] {
        assert_eq!(s.claim(bad).await.body["field"], field);
    }
}

#[tokio::test]
async fn a_paused_queue_hands_out_no_jobs_until_resumed() {
    let s = start(None, None).await;
    s.post("/v1/jobs", json!({"kind": "resize", "queue": "img"}))
        .await;
    let p = s.call("POST", "/v1/queues/img/pause", None).await;
    assert_eq!(p.body, json!({"name": "img", "paused": true}));
    let q = s.call("GET", "/v1/queues", None).await;
    assert_eq!(q.body["queues"][0]["paused"], true);
    let c = s
        .claim(json!({"worker_id": "w", "queue": "img", "kinds": ["resize"]}))
        .await;
    assert_eq!(c.body["jobs"], json!([]), "paused");
    let r = s.call("POST", "/v1/queues/img/resume", None).await;
    assert_eq!(r.body["paused"], false);
    let c = s
        .claim(json!({"worker_id": "w", "queue": "img", "kinds": ["resize"]}))
        .await;
    assert_eq!(c.body["jobs"].as_array().unwrap().len(), 1, "resumed");
    let bad = s.call("POST", "/v1/queues/bad%20name/pause", None).await;
    bad.problem(422);
}
