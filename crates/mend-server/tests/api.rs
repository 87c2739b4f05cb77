//! The HTTP API over real HTTP: the router bound to a real socket on 127.0.0.1, a real SQLite
//! store, and a minimal HTTP/1.1 client, so what is tested is what a client sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use mend_server::{app_with, AppState};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    addr: std::net::SocketAddr,
    state: AppState,
    _dir: tempfile::TempDir,
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a problem+json answer with this status and returns its detail.
    fn problem(&self, status: u16) -> String {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.header("content-type"), Some("application/problem+json"));
        assert!(self.body["request_id"].is_string(), "problem carries the request id: {}", self.body);
        assert_eq!(self.body["status"], status);
        self.body["detail"].as_str().unwrap().to_owned()
    }
}

async fn start(token: Option<&str>, max_body: Option<usize>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = mend_sqlite::SqliteStore::open(dir.path().join("api.db").to_str().unwrap())
        .await
        .unwrap();
    let mut state = AppState::new(Arc::new(store));
    state.token = token.map(Arc::from);
    if let Some(m) = max_body {
        state.max_body_bytes = m;
    }
    state.validator = Some(Arc::new(|kind: &str, args: &Value| {
        if kind == "noop" && args.get("sleep_ms").is_some_and(|v| !v.is_u64()) {
            return Err("noop: sleep_ms must be a whole number".into());
        }
        Ok(())
    }));
    let extra: Router<AppState> = Router::new().route(
        "/test/panic",
        get(|| async {
            if true {
                panic!("a bug in a handler");
            }
            "unreachable"
        }),
    );
    let app = app_with(state.clone(), extra);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        addr,
        state,
        _dir: dir,
    }
}

impl Server {
    async fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("content-length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        // The server may answer (413) before reading the whole body; a write error then is fine.
        let _ = stream.write_all(&bytes).await;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").expect("a full HTTP response");
        let mut lines = head.lines();
        let status: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        let body = if headers.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked") {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Resp { status, headers, body }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.call_with(method, path, body, &[]).await
    }

    async fn call_with(&self, method: &str, path: &str, body: Option<Value>, extra: &[(&str, &str)]) -> Resp {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend_from_slice(extra);
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.raw(method, path, &headers, bytes.as_deref()).await
    }

    async fn job_count(&self) -> usize {
        self.state
            .store
            .list(mend::store::ListParams { limit: 1000, ..Default::default() })
            .await
            .unwrap()
            .jobs
            .len()
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

#[tokio::test]
async fn enqueue_then_get_list_cancel_and_retry() {
    let s = start(None, None).await;
    let r = s
        .call("POST", "/v1/jobs", Some(json!({"kind": "noop", "args": {"sleep_ms": 5}, "queue": "mail", "tags": ["vip"]})))
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

    let l = s.call("GET", "/v1/jobs?queue=mail&state=available&tag=vip&kind=noop", None).await;
    assert_eq!(l.status, 200);
    assert_eq!(l.body["jobs"].as_array().unwrap().len(), 1);

    let q = s.call("GET", "/v1/queues", None).await;
    assert_eq!(q.body["queues"][0]["name"], "mail");
    assert_eq!(q.body["queues"][0]["counts"]["available"], 1);
    assert_eq!(q.body["queues"][0]["counts"]["completed"], 0);

    let retry_early = s.call("POST", &format!("/v1/jobs/{id}/retry"), None).await;
    assert!(retry_early.problem(409).contains("only completed, cancelled or discarded"));

    let c = s.call("POST", &format!("/v1/jobs/{id}/cancel"), None).await;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["state"], "cancelled");

    let r2 = s.call("POST", &format!("/v1/jobs/{id}/retry"), None).await;
    assert_eq!(r2.status, 200);
    assert_eq!(r2.body["state"], "available");

    let missing = s.call("GET", &format!("/v1/jobs/{}", uuid::Uuid::now_v7()), None).await;
    missing.problem(404);
    let bad_id = s.call("POST", "/v1/jobs/not-a-uuid/cancel", None).await;
    assert!(bad_id.problem(400).contains("not a job id"));
}

#[tokio::test]
async fn batches_are_all_or_nothing_and_pages_have_no_gaps() {
    let s = start(None, None).await;
    let jobs: Vec<Value> = (0..25).map(|i| json!({"kind": "noop", "args": {"i": i}})).collect();
    let r = s.call("POST", "/v1/jobs/batch", Some(json!({ "jobs": jobs }))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["jobs"].as_array().unwrap().len(), 25);

    let bad = s
        .call(
            "POST",
            "/v1/jobs/batch",
            Some(json!({"jobs": [{"kind": "noop"}, {"kind": "noop", "queue": "no spaces please"}]})),
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
        seen.extend(page.body["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()));
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
    let first = s.call_with("POST", "/v1/jobs", Some(body.clone()), &[("idempotency-key", "order-42")]).await;
    assert_eq!(first.status, 201);
    let again = s.call_with("POST", "/v1/jobs", Some(body.clone()), &[("idempotency-key", "order-42")]).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["id"], first.body["id"]);

    let mut tasks = Vec::new();
    for _ in 0..10 {
        let s = s.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            s.call_with("POST", "/v1/jobs", Some(body), &[("idempotency-key", "race")]).await
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
    let ok = s.call("POST", "/v1/jobs", Some(json!({"kind": "noop"}))).await;
    assert_eq!(ok.status, 201);
    let id = ok.body["id"].as_str().unwrap().to_owned();

    let malformed = s
        .raw("POST", "/v1/jobs", &[("content-type", "application/json")], Some(b"{\"kind\": "))
        .await;
    assert!(malformed.problem(400).contains("not valid JSON"));

    let wrong_type = s.call("POST", "/v1/jobs", Some(json!({"kind": "noop", "priority": "high"}))).await;
    assert!(wrong_type.problem(422).contains("priority"));

    let unknown = s.call("POST", "/v1/jobs", Some(json!({"kind": "noop", "queeue": "x"}))).await;
    assert!(unknown.problem(422).contains("unknown field `queeue`"));

    let bad_time = s.call("POST", "/v1/jobs", Some(json!({"kind": "noop", "run_at": "tomorrow"}))).await;
    assert!(bad_time.problem(422).contains("RFC 3339"));
    assert_eq!(bad_time.body["field"], "run_at");

    let both = s
        .call("POST", "/v1/jobs", Some(json!({"kind": "noop", "run_at": "2030-01-01T00:00:00Z", "delay_ms": 5})))
        .await;
    both.problem(422);

    let bad_args = s.call("POST", "/v1/jobs", Some(json!({"kind": "noop", "args": {"sleep_ms": "soon"}}))).await;
    assert_eq!(bad_args.problem(422), "noop: sleep_ms must be a whole number");
    assert_eq!(bad_args.body["field"], "args");

    let bad_attempts = s.call("POST", "/v1/jobs", Some(json!({"kind": "noop", "max_attempts": 0}))).await;
    assert_eq!(bad_attempts.body["field"], "max_attempts");

    let no_ct = s.raw("POST", "/v1/jobs", &[], Some(b"{\"kind\":\"noop\"}")).await;
    assert!(no_ct.problem(415).contains("Content-Type"));

    let big = json!({"kind": "noop", "args": {"blob": "x".repeat(10_000)}});
    let too_big = s.call("POST", "/v1/jobs", Some(big)).await;
    assert!(too_big.problem(413).contains("larger than"));

    let bad_state = s.call("GET", "/v1/jobs?state=done", None).await;
    assert!(bad_state.problem(422).contains("expected one of"));

    assert_eq!(s.job_count().await, 1, "no bad request stored a job");
    let unchanged = s.call("GET", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(unchanged.body, ok.body, "nor changed one");
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    let s = start(None, None).await;
    let r = s.call_with("GET", "/test/panic", None, &[("x-request-id", "req-123")]).await;
    assert!(r.problem(500).contains("bug"));
    assert_eq!(r.body["request_id"], "req-123");
    assert_eq!(r.header("x-request-id"), Some("req-123"));
    let after = s.call("GET", "/healthz", None).await;
    assert_eq!(after.status, 200);
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let s = start(Some("s3cret-token-value"), None).await;
    let none = s.call("POST", "/v1/jobs", Some(json!({"kind": "noop"}))).await;
    assert!(none.problem(401).contains("Authorization: Bearer"));
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = s
        .call_with("POST", "/v1/jobs", Some(json!({"kind": "noop"})), &[("authorization", "Bearer nope")])
        .await;
    wrong.problem(401);
    assert!(!wrong.body.to_string().contains("s3cret"), "the token never appears in answers");
    let right = s
        .call_with(
            "POST",
            "/v1/jobs",
            Some(json!({"kind": "noop"})),
            &[("authorization", "Bearer s3cret-token-value")],
        )
        .await;
    assert_eq!(right.status, 201);
    assert_eq!(s.call("GET", "/healthz", None).await.status, 200, "probes stay open");
    assert_eq!(s.job_count().await, 1);
}

#[tokio::test]
async fn readiness_turns_off_at_shutdown_and_enqueues_are_refused() {
    let s = start(None, None).await;
    assert_eq!(s.call("GET", "/readyz", None).await.status, 200);
    s.state.ready.store(false, Ordering::Release);
    assert_eq!(s.call("GET", "/readyz", None).await.status, 503);
    let r = s.call("POST", "/v1/jobs", Some(json!({"kind": "noop"}))).await;
    assert!(r.problem(503).contains("shutting down"));
    assert_eq!(s.call("GET", "/healthz", None).await.status, 200, "still alive");
}
