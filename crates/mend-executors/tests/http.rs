//! The `http` kind through a real worker and SQLite store, against a scripted server on
//! 127.0.0.1: 2xx completes with the status and a body excerpt; 5xx and 429 retry (429 after
//! its `Retry-After`); 404 discards at once; timeouts and refused connections retry; redirects
//! are not followed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Env;
use mend::{ErrorKind, JobState};
use mend_executors::ExecutorsConfig;
use mend_test::http::{Reply, TestServer};
use serde_json::json;

/// A retry delay far longer than any test: a job that fails stays `retryable` to be looked at.
fn no_retry(c: &mut mend::WorkerConfig) {
    c.retry_policy = Arc::new(mend::FixedDelay(Duration::from_secs(3600)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_completes_with_status_and_body_and_sends_what_was_asked() {
    let server = TestServer::start(|_, _| Reply::new(201, "created ok")).await;
    let env = Env::start(ExecutorsConfig::default()).await;
    let id = env
        .enqueue(
            "http",
            json!({
                "method": "PUT",
                "url": server.url("/hooks/1?x=1"),
                "headers": {"Authorization": "Bearer s3cret", "X-Trace": "abc"},
                "body": {"event": "paid", "amount": 42},
                "timeout_ms": 5000
            }),
            3,
        )
        .await;

    let job = env.wait_for_state(id, JobState::Completed).await;
    assert_eq!(
        job.result,
        Some(json!({"status": 201, "body_excerpt": "created ok"}))
    );
    assert_eq!(job.attempt, 1);
    assert!(job.errors.is_empty(), "{:#?}", job.errors);

    let got = server.received();
    assert_eq!(got.len(), 1, "exactly one request: {got:#?}");
    let req = &got[0];
    assert_eq!(req.method, "PUT");
    assert_eq!(req.path, "/hooks/1?x=1");
    assert_eq!(req.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(req.header("x-trace"), Some("abc"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("mend-job-id"), Some(id.to_string().as_str()));
    assert_eq!(req.header("mend-attempt"), Some("1"));
    let body: serde_json::Value = serde_json::from_slice(&req.body).expect("a JSON body");
    assert_eq!(body, json!({"event": "paid", "amount": 42}));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_body_is_sent_as_is_and_long_bodies_are_cut() {
    let long = "x".repeat(5000);
    let reply = long.clone();
    let server = TestServer::start(move |_, _| Reply::new(200, &reply)).await;
    let env = Env::start(ExecutorsConfig::default()).await;
    let id = env
        .enqueue(
            "http",
            json!({
                "url": server.url("/plain"),
                "headers": {"content-type": "text/plain"},
                "body": "hello there"
            }),
            1,
        )
        .await;

    let job = env.wait_for_state(id, JobState::Completed).await;
    let result = job.result.expect("a result");
    let excerpt = result["body_excerpt"].as_str().expect("a string excerpt");
    assert_eq!(excerpt, format!("{}…", &long[..1024]), "bounded to 1 KiB");
    let req = &server.received()[0];
    assert_eq!(req.method, "POST", "the default method");
    assert_eq!(req.header("content-type"), Some("text/plain"));
    assert_eq!(req.body, b"hello there");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_and_completes_on_attempt_2() {
    let server = TestServer::start(|_, nth| {
        if nth == 0 {
            Reply::new(500, "database is down")
        } else {
            Reply::new(200, "ok")
        }
    })
    .await;
    let env = Env::start(ExecutorsConfig::default()).await;
    let id = env
        .enqueue("http", json!({"url": server.url("/flaky")}), 3)
        .await;

    let job = env.wait_for_state(id, JobState::Completed).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(
        job.result,
        Some(json!({"status": 200, "body_excerpt": "ok"}))
    );
    assert_eq!(job.errors.len(), 1, "{:#?}", job.errors);
    let e = &job.errors[0];
    assert_eq!((e.attempt, e.kind), (1, ErrorKind::Error));
    assert!(
        e.message.contains("HTTP 500 Internal Server Error"),
        "{}",
        e.message
    );
    assert!(e.message.contains("database is down"), "{}", e.message);
    assert_eq!(server.received().len(), 2);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_waits_for_its_retry_after() {
    let server = TestServer::start(|_, nth| {
        if nth == 0 {
            Reply::new(429, "slow down").header("Retry-After", "1")
        } else {
            Reply::new(204, "")
        }
    })
    .await;
    // The worker's own retry delay is an hour: only Retry-After can bring the job back.
    let env = Env::start_with(ExecutorsConfig::default(), no_retry).await;
    let id = env
        .enqueue("http", json!({"url": server.url("/limited")}), 3)
        .await;

    let job = env.wait_for_state(id, JobState::Retryable).await;
    let e = &job.errors[0];
    assert!(
        e.message.contains("HTTP 429 Too Many Requests"),
        "{}",
        e.message
    );
    assert!(e.message.contains("Retry-After"), "{}", e.message);
    let delay = job.run_at - e.at;
    assert!(
        delay >= chrono::Duration::milliseconds(999)
            && delay <= chrono::Duration::milliseconds(1200),
        "run_at is about 1 s after the failure: {delay}"
    );

    let job = env.wait_for_state(id, JobState::Completed).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(job.result, Some(json!({"status": 204, "body_excerpt": ""})));
    let started = job.attempted_at.expect("attempted_at");
    assert!(
        started >= job.errors[0].at + chrono::Duration::milliseconds(999),
        "attempt 2 started at {started}, before Retry-After passed"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_is_discarded_after_one_attempt() {
    let server = TestServer::start(|_, _| Reply::new(404, "no such hook")).await;
    let env = Env::start(ExecutorsConfig::default()).await;
    let id = env
        .enqueue("http", json!({"url": server.url("/gone")}), 5)
        .await;

    let job = env.wait_for_state(id, JobState::Discarded).await;
    assert_eq!(job.attempt, 1, "attempts were left, yet no retry");
    assert_eq!(job.errors.len(), 1);
    let msg = &job.errors[0].message;
    assert!(msg.contains("HTTP 404 Not Found"), "{msg}");
    assert!(msg.contains("no such hook"), "{msg}");
    assert!(msg.contains("/gone"), "{msg}");
    assert_eq!(server.received().len(), 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_times_out_and_the_job_is_retryable() {
    let server =
        TestServer::start(|_, _| Reply::new(200, "too late").after(Duration::from_secs(3))).await;
    let env = Env::start_with(ExecutorsConfig::default(), no_retry).await;
    let id = env
        .enqueue(
            "http",
            json!({"url": server.url("/slow"), "timeout_ms": 200}),
            3,
        )
        .await;

    let job = env.wait_for_state(id, JobState::Retryable).await;
    assert_eq!(job.attempt, 1);
    let msg = &job.errors[0].message;
    assert!(msg.contains("timed out after 200ms"), "{msg}");
    assert_eq!(job.errors[0].kind, ErrorKind::Error);
    let failed_after = job.errors[0].at - job.attempted_at.expect("attempted_at");
    assert!(
        failed_after < chrono::Duration::seconds(2),
        "gave up at the timeout, not when the server answered: {failed_after}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retryable() {
    // A port that was just free: nothing listens there any more.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let env = Env::start_with(ExecutorsConfig::default(), no_retry).await;
    let id = env
        .enqueue(
            "http",
            json!({"url": format!("http://127.0.0.1:{port}/x")}),
            3,
        )
        .await;

    let job = env.wait_for_state(id, JobState::Retryable).await;
    let msg = &job.errors[0].message;
    assert!(
        msg.starts_with(&format!("POST http://127.0.0.1:{port}/x failed")),
        "{msg}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let server =
        TestServer::start(|_, _| Reply::new(302, "").header("Location", "/elsewhere")).await;
    let env = Env::start(ExecutorsConfig::default()).await;
    let id = env
        .enqueue("http", json!({"url": server.url("/moved")}), 5)
        .await;

    let job = env.wait_for_state(id, JobState::Discarded).await;
    let msg = &job.errors[0].message;
    assert!(msg.contains("HTTP 302 Found"), "{msg}");
    assert!(msg.contains("to /elsewhere"), "{msg}");
    assert!(msg.contains("redirects are not followed"), "{msg}");
    assert_eq!(server.received().len(), 1, "no request to the new location");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_args_discard_at_once_and_validate_refuses_them() {
    let env = Env::start(ExecutorsConfig::default()).await;
    let config = ExecutorsConfig::default();
    let args = json!({"url": "ftp://127.0.0.1/file"});
    let err = mend_executors::validate("http", &args, &config).expect_err("not http(s)");
    assert!(
        err.contains("field `url` must be an http:// or https:// URL"),
        "{err}"
    );

    let id = env.enqueue("http", args, 5).await;
    let job = env.wait_for_state(id, JobState::Discarded).await;
    assert_eq!(job.attempt, 1);
    let msg = &job.errors[0].message;
    assert!(msg.contains("invalid args for kind `http`"), "{msg}");
    assert!(msg.contains("got scheme `ftp`"), "{msg}");
    env.stop().await;
}
