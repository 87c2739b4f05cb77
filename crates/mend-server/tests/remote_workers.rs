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

/// Lets every remote lease (claimed with `lease_ms: 1000`) run out, then rescues the jobs as
/// the server's rescuer would (the fixture runs no worker, so no rescuer either).
#[allow(clippy::unwrap_used, reason = "a test body shared by both backends")]
async fn expire_leases(s: &common::Server) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.state
        .store
        .rescue(mend::store::RescueParams {
            dead_nodes: vec![],
            now: chrono::Utc::now(),
            quarantine_after_lost: 3,
        })
        .await
        .unwrap();
}

#[allow(clippy::unwrap_used, reason = "a test body shared by both backends")]
async fn checkpoint_and_durable_cleanup_outlive_a_lost_worker(s: common::Server) {
    let a = s.post("/v1/jobs", json!({"kind": "upload"})).await;
    let id = a.body["id"].as_str().unwrap();
    let c = s
        .claim(json!({"worker_id": "w1", "kinds": ["upload"], "lease_ms": 1000}))
        .await;
    assert_eq!(c.body["jobs"][0]["checkpoint"], json!(null));
    assert_eq!(c.body["jobs"][0]["pending_cleanups"], json!([]));
    assert_eq!(c.body["jobs"][0]["stop_after_cleanups"], json!(null));

    let d = s
        .post(&format!("/v1/jobs/{id}/cleanups"), json!({"worker_id": "w1", "attempt": 1, "name": "delete_temp", "args": {"path": "/tmp/x"}}))
        .await;
    assert_eq!(d.status, 200, "{}", d.body);
    assert_eq!(d.body["seq"], 1);
    let cp = s
        .post(
            &format!("/v1/jobs/{id}/checkpoint"),
            json!({"worker_id": "w1", "attempt": 1, "state": {"part": 3}}),
        )
        .await;
    assert_eq!(cp.body, json!({"saved": true}));
    // Not the holder: fenced, nothing written.
    s.post(
        &format!("/v1/jobs/{id}/checkpoint"),
        json!({"worker_id": "w2", "attempt": 1, "state": {"part": 99}}),
    )
    .await
    .problem(409);
    s.post(
        &format!("/v1/jobs/{id}/cleanups"),
        json!({"worker_id": "w2", "attempt": 1, "name": "x"}),
    )
    .await
    .problem(409);

    // w1 dies (stops heartbeating); the rescue hands the job back.
    expire_leases(&s).await;
    let c2 = s
        .claim(json!({"worker_id": "w2", "kinds": ["upload"]}))
        .await;
    let job = &c2.body["jobs"][0];
    assert_eq!(job["attempt"], 2, "{}", c2.body);
    assert_eq!(job["checkpoint"], json!({"part": 3}), "resumes from it");
    assert_eq!(
        job["pending_cleanups"],
        json!([{"seq": 1, "attempt": 1, "name": "delete_temp", "args": {"path": "/tmp/x"}}])
    );
    assert_eq!(job["stop_after_cleanups"], json!(null), "attempts left");
    assert_eq!(job["errors"][0]["kind"], "lost");

    // The dead worker's late writes are refused.
    s.post(
        &format!("/v1/jobs/{id}/checkpoint"),
        json!({"worker_id": "w1", "attempt": 1, "state": {}}),
    )
    .await
    .problem(409);
    s.post(
        &format!("/v1/jobs/{id}/cleanups/1/done"),
        json!({"worker_id": "w1", "attempt": 1}),
    )
    .await
    .problem(409);
    let done = s
        .post(
            &format!("/v1/jobs/{id}/cleanups/1/done"),
            json!({"worker_id": "w2", "attempt": 2, "duration_ms": 4}),
        )
        .await;
    assert_eq!(done.body, json!({"done": true}), "{}", done.body);
    let again = s
        .post(
            &format!("/v1/jobs/{id}/cleanups/1/done"),
            json!({"worker_id": "w2", "attempt": 2}),
        )
        .await;
    assert_eq!(again.status, 200, "a repeated report is harmless");
    let got = s.call("GET", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(
        got.body["pending_cleanups"],
        json!(null),
        "none left (a row leaves an empty list out)"
    );
    let timeline = got.body["timeline"].to_string();
    assert!(
        timeline.contains("durable cleanup `delete_temp` of attempt 1 ran (4 ms)"),
        "{timeline}"
    );
    let fin = s
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"worker_id": "w2", "attempt": 2, "result": {"parts": 4}}),
        )
        .await;
    assert_eq!(fin.body["state"], "completed");
}

#[tokio::test]
async fn checkpoint_and_durable_cleanup_outlive_a_lost_worker_sqlite() {
    checkpoint_and_durable_cleanup_outlive_a_lost_worker(start(None, None).await).await;
}

#[tokio::test]
async fn checkpoint_and_durable_cleanup_outlive_a_lost_worker_postgres() {
    let Some(s) = common::start_postgres("remote_checkpoint_cleanup").await else {
        return;
    };
    checkpoint_and_durable_cleanup_outlive_a_lost_worker(s).await;
}

#[allow(clippy::unwrap_used, reason = "a test body shared by both backends")]
async fn one_finish_request_settles_many_attempts(s: common::Server) {
    let mut ids = Vec::new();
    for _ in 0..6 {
        let r = s
            .post("/v1/jobs", json!({"kind": "k", "max_attempts": 3}))
            .await;
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let c = s
        .claim(json!({"worker_id": "b", "kinds": ["k"], "limit": 6}))
        .await;
    assert_eq!(c.body["jobs"].as_array().unwrap().len(), 6);
    s.post(&format!("/v1/jobs/{}/cancel", ids[4]), json!({}))
        .await;
    let hb = s
        .post(
            "/v1/workers/heartbeat",
            json!({"worker_id": "b", "jobs": [{"id": ids[4], "attempt": 1}]}),
        )
        .await;
    assert_eq!(
        hb.body["cancel_requested"],
        json!([ids[4]]),
        "cancellation reaches the running job through the heartbeat"
    );
    let r = s
        .post(
            "/v1/workers/finish",
            json!({"worker_id": "b", "outcomes": [
                {"id": ids[0], "attempt": 1, "outcome": "completed", "result": 7},
                {"id": ids[1], "attempt": 1, "outcome": "failed", "error": "ZeroDivisionError: division by zero", "kind": "panic",
                 "traceback": "Traceback (most recent call last):\n  File \"w.py\", line 3, in h\n    1/0"},
                {"id": ids[2], "attempt": 1, "outcome": "snoozed", "delay_ms": 60000},
                {"id": ids[3], "attempt": 1, "outcome": "released"},
                {"id": ids[4], "attempt": 1, "outcome": "cancelled"},
                {"id": ids[5], "attempt": 1, "outcome": "failed", "error": "bad input", "fatal": true},
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["applied"].as_array().unwrap().len(), 6, "{}", r.body);
    assert_eq!(r.body["fenced"], json!([]));
    let late = s
        .post(
            "/v1/workers/finish",
            json!({"worker_id": "b", "outcomes": [
                {"id": ids[0], "attempt": 1, "outcome": "completed"},
                {"id": ids[3], "attempt": 9, "outcome": "released"},
            ]}),
        )
        .await;
    assert_eq!(
        late.body,
        json!({"applied": [], "fenced": [ids[0], ids[3]]}),
        "already finished, and the wrong attempt"
    );
    let twice = s
        .post(
            "/v1/workers/finish",
            json!({"worker_id": "b", "outcomes": [
                {"id": ids[3], "attempt": 1, "outcome": "released"},
                {"id": ids[3], "attempt": 1, "outcome": "completed"},
            ]}),
        )
        .await;
    assert!(
        twice.problem(422).contains("listed twice"),
        "{}",
        twice.body
    );

    let paths: Vec<String> = ids.iter().map(|id| format!("/v1/jobs/{id}")).collect();
    let get = |i: usize| s.call("GET", &paths[i], None);
    let j = get(0).await.body;
    assert_eq!(
        (j["state"].clone(), j["result"].clone()),
        (json!("completed"), json!(7))
    );
    let j = get(1).await.body;
    assert_eq!(j["state"], "retryable");
    assert_eq!(j["errors"][0]["kind"], "panic");
    let msg = j["errors"][0]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("ZeroDivisionError") && msg.contains("line 3, in h"),
        "message and traceback: {msg}"
    );
    let j = get(2).await.body;
    assert_eq!(j["state"], "scheduled");
    let j = get(3).await.body;
    assert_eq!(j["state"], "available", "released at once");
    assert_eq!(j["errors"], json!([]));
    let j = get(4).await.body;
    assert_eq!(j["state"], "cancelled");
    let j = get(5).await.body;
    assert_eq!(j["state"], "discarded", "fatal");

    // Snoozed and released attempts do not count: the next claim is attempt 1 again.
    let c = s
        .claim(json!({"worker_id": "b", "kinds": ["k"], "limit": 6}))
        .await;
    let again = c.body["jobs"].as_array().unwrap();
    assert_eq!(again.len(), 1, "{}", c.body);
    assert_eq!(again[0]["id"], json!(ids[3]));
    assert_eq!(again[0]["attempt"], 1, "a released attempt does not count");
    let sn = s
        .post(
            &format!("/v1/jobs/{}/snooze", ids[3]),
            json!({"worker_id": "b", "attempt": 1, "delay_ms": 0}),
        )
        .await;
    assert_eq!(sn.body["attempt"], 0, "{}", sn.body);

    // Bad input changes nothing.
    let bad = s
        .post(
            "/v1/workers/finish",
            json!({"worker_id": "b", "outcomes": [{"id": ids[3], "attempt": 1, "outcome": "failed"}]}),
        )
        .await;
    assert_eq!(bad.body["field"], "error");
}

#[tokio::test]
async fn one_finish_request_settles_many_attempts_sqlite() {
    one_finish_request_settles_many_attempts(start(None, None).await).await;
}

#[tokio::test]
async fn one_finish_request_settles_many_attempts_postgres() {
    let Some(s) = common::start_postgres("remote_finish_batch").await else {
        return;
    };
    one_finish_request_settles_many_attempts(s).await;
}

#[tokio::test]
async fn a_job_out_of_attempts_stops_once_its_cleanups_ran() {
    let s = start(None, None).await;
    let a = s
        .post("/v1/jobs", json!({"kind": "k", "max_attempts": 1}))
        .await;
    let id = a.body["id"].as_str().unwrap();
    s.claim(json!({"worker_id": "w1", "kinds": ["k"], "lease_ms": 1000}))
        .await;
    s.post(
        &format!("/v1/jobs/{id}/cleanups"),
        json!({"worker_id": "w1", "attempt": 1, "name": "undo"}),
    )
    .await;
    expire_leases(&s).await;
    let c = s.claim(json!({"worker_id": "w2", "kinds": ["k"]})).await;
    let job = &c.body["jobs"][0];
    assert_eq!(job["attempt"], 2, "kept alive for its cleanup: {}", c.body);
    let stop = job["stop_after_cleanups"].as_str().unwrap();
    assert!(stop.contains("out of attempts"), "{stop}");
    let done = s
        .post(
            &format!("/v1/jobs/{id}/cleanups/1/done"),
            json!({"worker_id": "w2", "attempt": 2}),
        )
        .await;
    assert_eq!(done.status, 200);
    let f = s
        .post(
            &format!("/v1/jobs/{id}/fail"),
            json!({"worker_id": "w2", "attempt": 2, "error": stop, "fatal": true}),
        )
        .await;
    assert_eq!(f.body["state"], "discarded", "{}", f.body);
}

#[tokio::test]
async fn a_bulk_producer_can_ask_for_ids_only() {
    let s = start(None, None).await;
    let body = json!({"jobs": [{"kind": "k"}, {"kind": "k", "idempotency_key": "a"}]});
    let r = s
        .call_with(
            "POST",
            "/v1/jobs/batch",
            Some(body.clone()),
            &[("prefer", "return=minimal")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let jobs = r.body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        jobs[0].as_object().unwrap().len(),
        2,
        "id and duplicate only"
    );
    assert_eq!(jobs[1]["duplicate"], false);
    let again = s
        .call_with(
            "POST",
            "/v1/jobs/batch",
            Some(json!({"jobs": [{"kind": "k", "idempotency_key": "a"}]})),
            &[("prefer", "return=minimal")],
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.body["jobs"],
        json!([{"id": jobs[1]["id"], "duplicate": true}])
    );
}

/// A remote worker names the version it runs: under a rollout it is handed only the jobs of
/// the side it serves, and the claimed job records the version that runs it.
#[tokio::test]
async fn remote_workers_claim_only_the_side_of_a_rollout_they_serve() {
    let s = start(None, None).await;
    for n in 0..60 {
        s.post("/v1/jobs", json!({"kind": "resize", "args": {"n": n}}))
            .await;
    }
    // This server runs no worker, so no node reports what remote workers serve (see
    // `a_version_only_remote_workers_run_can_be_rolled_out`): the rollout is stored directly.
    start_resize_at_half(s.state.store.as_ref()).await;
    let stable = s
        .claim(json!({"worker_id": "old", "kinds": ["resize"], "limit": 100}))
        .await;
    assert_eq!(stable.status, 200, "{}", stable.body);
    let canary = s
        .claim(json!({"worker_id": "new", "kinds": ["resize"], "limit": 100, "versions": [{"kind": "resize", "version": "v2"}]}))
        .await;
    let (stable, canary) = (
        stable.body["jobs"].as_array().unwrap().clone(),
        canary.body["jobs"].as_array().unwrap().clone(),
    );
    assert_eq!(stable.len() + canary.len(), 60);
    assert!(!stable.is_empty() && !canary.is_empty());
    for j in &stable {
        let id: uuid::Uuid = j["id"].as_str().unwrap().parse().unwrap();
        assert!(!mend::rollout::on_canary(id, 5_000));
        assert_eq!(j["version"], "");
    }
    for j in &canary {
        let id: uuid::Uuid = j["id"].as_str().unwrap().parse().unwrap();
        assert!(mend::rollout::on_canary(id, 5_000));
        assert_eq!(j["version"], "v2");
    }
    // A failure carries the version it ran on.
    let id = canary[0]["id"].as_str().unwrap();
    let failed = s
        .post(
            &format!("/v1/jobs/{id}/fail"),
            json!({"worker_id": "new", "attempt": 1, "error": "v2 is broken"}),
        )
        .await;
    assert_eq!(failed.body["errors"][0]["version"], "v2", "{}", failed.body);
    // A version that is not a name is refused.
    let bad = s
        .claim(json!({"worker_id": "x", "kinds": ["resize"], "versions": [{"kind": "resize", "version": ""}]}))
        .await;
    assert!(bad.problem(422).contains("versions"), "{}", bad.body);
}

/// A version only remote workers run can be rolled out through the API: the node they claim
/// through reports their kinds and versions as its own from its next heartbeat; `/metrics`
/// then counts each version's attempts.
#[tokio::test]
async fn a_version_only_remote_workers_run_can_be_rolled_out() {
    let env = mend_test::env::Env::new().await;
    let mut registry = mend::Registry::new();
    registry.register_raw("other", None, |_ctx, _args| async { Ok(None) });
    // `fast`: a heartbeat every 50 ms.
    let worker = env.worker(registry, 1, |_| {}).await;
    let mut state = mend_server::AppState::new(env.store.clone());
    state.worker = Some(worker.clone());
    let app = mend_test::http::App(mend_server::app(state));
    let start = json!({"kind": "resize", "version": "v2", "steps": "10%,100%", "every": "10m"});
    // Nobody serves `resize` yet.
    let refused = app.post("/v1/rollouts", start.clone()).await;
    assert!(
        refused
            .problem(422)
            .contains("no live node serves kind `resize`"),
        "{}",
        refused.body
    );
    // A remote worker running v2 of `resize` claims (nothing is there yet).
    let claimed = app
        .post(
            "/v1/workers/claim",
            json!({"worker_id": "py-2", "kinds": ["resize"], "versions": [{"kind": "resize", "version": "v2"}]}),
        )
        .await;
    assert_eq!(claimed.status, 200, "{}", claimed.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = loop {
        let r = app.post("/v1/rollouts", start.clone()).await;
        if r.status == 201 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(started.status, 201, "{}", started.body);
    assert_eq!(started.body["canary"], "v2");
    let nodes = app.call("GET", "/v1/nodes", None).await;
    let node = &nodes.body["nodes"][0];
    assert_eq!(node["versions"]["resize"], json!(["v2"]), "{}", nodes.body);
    assert_eq!(node["kinds"], json!(["other", "resize"]), "{}", nodes.body);

    // Both sides run remotely; /metrics counts their attempts per version.
    // At least 40 jobs, and at least one on each side (the canary holds a random ~10%).
    let (mut total, mut canary_side) = (0, 0);
    while total < 40 || canary_side == 0 || canary_side == total {
        let r = app
            .post("/v1/jobs", json!({"kind": "resize", "args": {"n": total}}))
            .await;
        let id: uuid::Uuid = r.body["id"].as_str().unwrap().parse().unwrap();
        canary_side += usize::from(mend::rollout::on_canary(id, 1_000));
        total += 1;
        assert!(total < 10_000, "ids never fell on the canary side");
    }
    let mut ran = std::collections::HashMap::new();
    for (worker_id, versions) in [
        ("py-2", json!([{"kind": "resize", "version": "v2"}])),
        ("py-1", json!([])),
    ] {
        let mut jobs = Vec::new();
        loop {
            let claimed = app
                .post(
                    "/v1/workers/claim",
                    json!({"worker_id": worker_id, "kinds": ["resize"], "limit": 100, "versions": versions}),
                )
                .await;
            let got = claimed.body["jobs"].as_array().unwrap().clone();
            if got.is_empty() {
                break;
            }
            jobs.extend(got);
        }
        ran.insert(worker_id, jobs.len());
        for j in jobs {
            let id = j["id"].as_str().unwrap();
            let done = app
                .post(
                    &format!("/v1/jobs/{id}/complete"),
                    json!({"worker_id": worker_id, "attempt": 1}),
                )
                .await;
            assert_eq!(done.status, 200, "{}", done.body);
        }
    }
    assert_eq!(
        ran["py-2"], canary_side,
        "the canary worker ran the canary side"
    );
    assert_eq!(ran["py-1"], total - canary_side);
    let metrics = app.call("GET", "/metrics", None).await;
    let text = metrics.body.as_str().unwrap().to_owned();
    for (version, n) in [("v2", canary_side), ("", total - canary_side)] {
        let line = format!(
            "mend_version_attempts_total{{kind=\"resize\",version=\"{version}\",outcome=\"completed\"}} {n}"
        );
        assert!(text.contains(&line), "no `{line}` in\n{text}");
    }
    assert!(
        text.contains(
            "mend_version_attempts_total{kind=\"resize\",version=\"v2\",outcome=\"failed\"} 0"
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE mend_version_run_seconds histogram"),
        "{text}"
    );
    worker.shutdown(Duration::from_secs(1)).await;
}

/// A rollout aborted elsewhere reaches a server's remote workers at once, not when the
/// server's cached routes (kept a second) run out: on PostgreSQL through another store on the
/// database, as another process would abort it; on SQLite through the server's own store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_elsewhere_reaches_remote_workers_at_once() {
    let sqlite = mend_test::env::Env::new().await;
    let pg =
        mend_test::env::Env::postgres("an_abort_elsewhere_reaches_remote_workers_at_once").await;
    for env in std::iter::once(sqlite).chain(pg) {
        let app = mend_test::http::App(mend_server::app(mend_server::AppState::new(
            env.store.clone(),
        )));
        let rollout = start_resize_at_half(env.store.as_ref()).await;
        for n in 0..40 {
            app.post("/v1/jobs", json!({"kind": "resize", "args": {"n": n}}))
                .await;
        }
        let claim = json!({"worker_id": "old", "kinds": ["resize"], "limit": 100});
        // A worker without the canary takes the stable side only (and the server caches the
        // routes it read).
        let first = app.post("/v1/workers/claim", claim.clone()).await;
        let routes_read = Instant::now();
        let first = first.body["jobs"].as_array().unwrap().len();
        assert!(first > 0 && first < 40, "{first} of 40 on the stable side");

        let elsewhere = match env.schema {
            Some(_) => env.reopen().await,
            None => env.store.clone(),
        };
        mend::maintenance::rollouts::request(
            elsewhere.as_ref(),
            rollout.id,
            mend::rollout::Request::Abort,
            "test",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
        // Aborted, every job is stable's: the same worker now gets the rest before the
        // second the cached routes would otherwise have been kept is over.
        let mut rest = 0;
        while first + rest < 40 && routes_read.elapsed() < Duration::from_secs(5) {
            let r = app.post("/v1/workers/claim", claim.clone()).await;
            rest += r.body["jobs"].as_array().unwrap().len();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(first + rest, 40);
        assert!(
            routes_read.elapsed() < Duration::from_millis(900),
            "the abort reached the server {:?} after it read the routes",
            routes_read.elapsed()
        );
    }
}

/// Stores a rollout of `resize` v2 at half the jobs directly (no live node needs to serve it).
#[allow(
    clippy::expect_used,
    reason = "a test helper: a failed set-up fails the test"
)]
async fn start_resize_at_half(store: &dyn mend::Store) -> mend::rollout::Rollout {
    let spec = mend::rollout::RolloutSpec {
        kind: "resize".into(),
        version: "v2".into(),
        steps: vec![5_000, 10_000],
        every_secs: 3600,
        guard: Default::default(),
        notify_url: None,
    };
    store
        .rollout_start(mend::rollout::Rollout::new(
            spec,
            None,
            "test",
            chrono::Utc::now(),
        ))
        .await
        .expect("store the rollout")
        .expect("no other rollout of resize is active")
}
