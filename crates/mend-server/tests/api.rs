//! The HTTP API as a client sees it: the whole router, every middleware layer included, called
//! in memory (`tower::ServiceExt::oneshot`) on a real SQLite store.

mod common;

use std::sync::Arc;

use common::start;
use serde_json::{json, Value};

#[tokio::test]
async fn enqueue_then_get_list_cancel_and_retry() {
    let s = start(None, None).await;
    let r = s
        .post(
            "/v1/jobs",
            json!({"kind": "noop", "args": {"sleep_ms": 5}, "queue": "mail", "tags": ["vip"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.header("x-request-id").is_some());
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["state"], "available");
    assert_eq!(r.body["attempt"], 0);
    assert_eq!(r.body["queue"], "mail");

    let g = s.call("GET", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body["id"], id.as_str());
    assert_eq!(g.body["errors"], json!([]));

    let l = s
        .call(
            "GET",
            "/v1/jobs?queue=mail&state=available&tag=vip&kind=noop",
            None,
        )
        .await;
    assert_eq!(l.status, 200);
    assert_eq!(l.body["jobs"].as_array().unwrap().len(), 1);

    let q = s.call("GET", "/v1/queues", None).await;
    assert_eq!(q.body["queues"][0]["name"], "mail");
    assert_eq!(q.body["queues"][0]["counts"]["available"], 1);
    assert_eq!(q.body["queues"][0]["counts"]["running"], 0);
    assert!(
        q.body["queues"][0]["counts"].get("completed").is_none(),
        "only the states still to run are counted: {}",
        q.body
    );

    let retry_early = s.call("POST", &format!("/v1/jobs/{id}/retry"), None).await;
    assert!(retry_early
        .problem(409)
        .contains("only completed, cancelled or discarded"));

    let c = s.call("POST", &format!("/v1/jobs/{id}/cancel"), None).await;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["state"], "cancelled");

    let r2 = s.call("POST", &format!("/v1/jobs/{id}/retry"), None).await;
    assert_eq!(r2.status, 200);
    assert_eq!(r2.body["state"], "available");

    let missing = s
        .call("GET", &format!("/v1/jobs/{}", uuid::Uuid::now_v7()), None)
        .await;
    missing.problem(404);
    let bad_id = s.call("POST", "/v1/jobs/not-a-uuid/cancel", None).await;
    assert!(bad_id.problem(400).contains("not a job id"));
}

#[tokio::test]
async fn batches_are_all_or_nothing_and_pages_have_no_gaps() {
    let s = start(None, None).await;
    let jobs: Vec<Value> = (0..25)
        .map(|i| json!({"kind": "noop", "args": {"i": i}}))
        .collect();
    let r = s.post("/v1/jobs/batch", json!({ "jobs": jobs })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["jobs"].as_array().unwrap().len(), 25);

    let bad = s
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "noop"}, {"kind": "noop", "queue": "no spaces please"}]}),
        )
        .await;
    bad.problem(422);
    assert_eq!(bad.body["field"], "jobs[1].queue");
    assert_eq!(s.job_count().await, 25, "a rejected batch stores nothing");

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit=10&before={c}"),
            None => "/v1/jobs?limit=10".to_owned(),
        };
        let page = s.call("GET", &path, None).await;
        assert_eq!(page.status, 200);
        seen.extend(
            page.body["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned()),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (25, 25));
}

#[tokio::test]
async fn idempotency_key_returns_the_first_job_even_under_concurrency() {
    let s = Arc::new(start(None, None).await);
    let body = json!({"kind": "noop"});
    let first = s.enqueue_with_key(body.clone(), "order-42").await;
    assert_eq!(first.status, 201);
    let again = s.enqueue_with_key(body.clone(), "order-42").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["id"], first.body["id"]);

    let mut tasks = Vec::new();
    for _ in 0..10 {
        let s = s.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            s.enqueue_with_key(body, "race").await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
        created += usize::from(r.status == 201);
        ids.insert(r.body["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "ten racing requests, one job");
    assert_eq!(created, 1);
    assert_eq!(s.job_count().await, 2);
}

#[tokio::test]
async fn bad_input_gets_a_clear_problem_and_changes_nothing() {
    let s = start(None, Some(4096)).await;
    let ok = s.post("/v1/jobs", json!({"kind": "noop"})).await;
    assert_eq!(ok.status, 201);
    let id = ok.body["id"].as_str().unwrap().to_owned();

    let malformed = s
        .raw(
            "POST",
            "/v1/jobs",
            &[("content-type", "application/json")],
            Some(b"{\"kind\": "),
        )
        .await;
    assert!(malformed.problem(400).contains("not valid JSON"));

    // (body, what the detail says, the field it names)
    let cases = [
        (
            json!({"kind": "noop", "priority": "high"}),
            "priority",
            None,
        ),
        (
            json!({"kind": "noop", "queeue": "x"}),
            "unknown field `queeue`",
            None,
        ),
        (
            json!({"kind": "noop", "run_at": "tomorrow"}),
            "RFC 3339",
            Some("run_at"),
        ),
        (
            json!({"kind": "noop", "run_at": "2030-01-01T00:00:00Z", "delay_ms": 5}),
            "",
            None,
        ),
        (
            json!({"kind": "noop", "args": {"sleep_ms": "soon"}}),
            "noop: sleep_ms must be a whole number",
            Some("args"),
        ),
        (
            json!({"kind": "noop", "max_attempts": 0}),
            "",
            Some("max_attempts"),
        ),
    ];
    for (body, detail, field) in cases {
        let r = s.post("/v1/jobs", body.clone()).await;
        let got = r.problem(422);
        assert!(got.contains(detail), "{body}: {got}");
        if let Some(field) = field {
            assert_eq!(r.body["field"], field, "{body}");
        }
    }
    // A validator's message is passed on as it is.
    let bad_args = s
        .post(
            "/v1/jobs",
            json!({"kind": "noop", "args": {"sleep_ms": "soon"}}),
        )
        .await;
    assert_eq!(
        bad_args.problem(422),
        "noop: sleep_ms must be a whole number"
    );

    let no_ct = s
        .raw("POST", "/v1/jobs", &[], Some(b"{\"kind\":\"noop\"}"))
        .await;
    assert!(no_ct.problem(415).contains("Content-Type"));

    let big = json!({"kind": "noop", "args": {"blob": "x".repeat(10_000)}});
    let too_big = s.post("/v1/jobs", big).await;
    assert!(too_big.problem(413).contains("larger than"));

    let bad_state = s.call("GET", "/v1/jobs?state=done", None).await;
    assert!(bad_state.problem(422).contains("expected one of"));

    assert_eq!(s.job_count().await, 1, "no bad request stored a job");
    let unchanged = s.call("GET", &format!("/v1/jobs/{id}"), None).await;
    // The enqueue's answer is the job plus whether it was a duplicate.
    let mut enqueued = ok.body.clone();
    assert_eq!(enqueued["duplicate"], false);
    enqueued.as_object_mut().unwrap().remove("duplicate");
    assert_eq!(unchanged.body, enqueued, "nor changed one");
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    let s = start(None, None).await;
    let r = s
        .call_with("GET", "/test/panic", None, &[("x-request-id", "req-123")])
        .await;
    assert!(r.problem(500).contains("bug"));
    assert_eq!(r.body["request_id"], "req-123");
    assert_eq!(r.header("x-request-id"), Some("req-123"));
    let after = s.call("GET", "/healthz", None).await;
    assert_eq!(after.status, 200);
}

/// Enqueues a `noop` job with `authorization` as the Authorization header.
async fn enqueue_noop_as(s: &common::Server, authorization: &str) -> mend_test::http::Resp {
    s.call_with(
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "noop"})),
        &[("authorization", authorization)],
    )
    .await
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let s = start(Some("s3cret-token-value"), None).await;
    let none = s.post("/v1/jobs", json!({"kind": "noop"})).await;
    assert!(none.problem(401).contains("Authorization: Bearer"));
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = enqueue_noop_as(&s, "Bearer nope").await;
    wrong.problem(401);
    assert!(
        !wrong.body.to_string().contains("s3cret"),
        "the token never appears in answers"
    );
    let right = enqueue_noop_as(&s, "Bearer s3cret-token-value").await;
    assert_eq!(right.status, 201);
    assert_eq!(
        s.call("GET", "/healthz", None).await.status,
        200,
        "probes stay open"
    );
    assert_eq!(s.job_count().await, 1);
}

#[tokio::test]
async fn readiness_turns_off_at_shutdown_and_enqueues_are_still_stored() {
    let env = mend_test::env::Env::new().await;
    let mut registry = mend::Registry::new();
    registry.register_raw("other", None, |_ctx, _args| async { Ok(None) });
    let worker = mend::Worker::builder(env.store.clone())
        .registry(registry)
        .build()
        .start()
        .await
        .unwrap();
    let mut state = mend_server::AppState::new(env.store.clone());
    state.worker = Some(worker.clone());
    let app = mend_test::http::App(mend_server::app(state));
    assert_eq!(app.call("GET", "/readyz", None).await.status, 200);
    // The one readiness flag is the worker's: its shutdown turns /readyz off.
    worker.shutdown(std::time::Duration::ZERO).await;
    assert_eq!(app.call("GET", "/readyz", None).await.status, 503);
    // Load balancers stop sending work when readiness goes off; what still arrives during the
    // grace period is stored (durably, for the next start) rather than refused.
    let r = app.post("/v1/jobs", json!({"kind": "noop"})).await;
    assert_eq!(r.status, 201);
    assert_eq!(
        app.call("GET", "/healthz", None).await.status,
        200,
        "still alive"
    );
}

#[tokio::test]
async fn wrong_methods_foreign_hosts_and_huge_values_get_clear_problems() {
    let s = start(None, None).await;
    let r = s.call("GET", "/v1/jobs/batch", None).await;
    assert!(r.problem(405).contains("does not take GET"));

    // Without a token, only requests addressed to loopback get in (DNS rebinding, CSRF).
    // (method, path, header, status, what the detail says)
    let cases = [
        (
            "GET",
            "/v1/queues",
            ("host", "evil.example.com"),
            403,
            "localhost",
        ),
        (
            "POST",
            "/v1/queues/default/pause",
            ("origin", "https://evil.example.com"),
            403,
            "",
        ),
        (
            "GET",
            "/v1/queues",
            ("sec-fetch-site", "cross-site"),
            403,
            "",
        ),
        (
            "GET",
            "/v1/queues",
            ("origin", "http://localhost:3000"),
            200,
            "",
        ),
    ];
    for (method, path, header, status, detail) in cases {
        let r = s.raw(method, path, &[header], None).await;
        if status == 200 {
            assert_eq!(r.status, 200, "{header:?}: {}", r.body);
        } else {
            assert!(r.problem(status).contains(detail), "{header:?}: {}", r.body);
        }
    }

    let huge = "x".repeat(200_000);
    let r = s.post("/v1/jobs", json!({"kind": huge})).await;
    let detail = r.problem(422);
    assert!(
        detail.len() < 400,
        "the bad value is cut in the answer: {} bytes",
        detail.len()
    );
}

#[tokio::test]
async fn cancel_of_a_finished_job_and_retry_of_a_completed_one_are_refused() {
    let s = start(None, None).await;
    let id = s.post("/v1/jobs", json!({"kind": "remote"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.claim(json!({"worker_id": "w", "kinds": ["remote"]}))
        .await;
    let done = s
        .post(
            &format!("/v1/jobs/{id}/complete"),
            json!({"worker_id": "w", "attempt": 1}),
        )
        .await;
    assert_eq!(done.body["state"], "completed");
    let r = s.call("POST", &format!("/v1/jobs/{id}/cancel"), None).await;
    assert!(r.problem(409).contains("already completed"));
    let r = s.call("POST", &format!("/v1/jobs/{id}/retry"), None).await;
    assert!(r.problem(409).contains("force=true"));
    let r = s
        .call("POST", &format!("/v1/jobs/{id}/retry?force=true"), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["state"], "available");
}
