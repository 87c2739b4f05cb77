//! `mend serve` as a real process: SIGTERM with jobs in flight (readiness off first, exit 0,
//! nothing lost), refusal to serve on a public address without a token, and a remote worker
//! that vanishes having its jobs rescued.

#![expect(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mend_test::http::Remote;
use serde_json::{json, Value};

mod common;
use common::mend;

struct Serve {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn serve(extra: &[&str]) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "serve.db");
    serve_on(&db, dir, extra)
}

fn serve_on(db: &str, dir: tempfile::TempDir, extra: &[&str]) -> Serve {
    serve_with_env(db, dir, extra, &[])
}

fn serve_with_env(db: &str, dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut child = mend()
        .args(["serve", "--database", db, "--bind", "127.0.0.1:0"])
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr = common::listening_url(&mut child)
        .trim_start_matches("http://")
        .to_owned();
    Serve {
        child,
        addr,
        _dir: dir,
    }
}

/// One request to the server at `addr`; returns (status, JSON body). `None` when the server
/// refuses the connection.
fn http(addr: &str, method: &str, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
    http_with(addr, method, path, body, &[])
}

/// Enqueues `job` (`POST /v1/jobs`, answered 201); the new job's id.
fn enqueue(addr: &str, job: Value) -> String {
    let (status, row) = http(addr, "POST", "/v1/jobs", Some(job)).unwrap();
    assert_eq!(status, 201, "{row}");
    row["id"].as_str().unwrap().to_owned()
}

/// [`http`] with extra headers.
fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Option<(u16, Value)> {
    let r =
        Remote::new(format!("http://{addr}")).blocking_call_with(method, path, body, headers)?;
    Some((r.status, r.body))
}

/// Waits up to `limit` for the process to exit; its exit code (`None`: killed by a signal).
fn exit_code(child: &mut Child, limit: Duration, what: &str) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        assert!(started.elapsed() < limit, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success());
}

/// The stored state and attempt of each job in the SQLite database at `db`, in `ids` order.
fn stored(db: &std::path::Path, ids: &[&str]) -> Vec<(mend::JobState, i32)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = mend_sqlite::SqliteStore::open(db.to_str().unwrap())
            .await
            .unwrap();
        let mut states = Vec::new();
        for id in ids {
            let job = mend::Store::get(&store, id.parse().unwrap())
                .await
                .unwrap()
                .unwrap();
            states.push((job.state, job.attempt));
        }
        states
    })
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_turns_readiness_off_drains_in_flight_jobs_and_exits_zero() {
    let mut s = serve(&[
        "--shutdown-grace",
        "700ms",
        "--drain",
        "10s",
        "--queues",
        "default=2",
    ]);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(enqueue(
            &s.addr,
            json!({"kind": "noop", "args": {"sleep_ms": 1500}}),
        ));
    }
    wait_until("two jobs running", Duration::from_secs(10), || {
        let (_, page) = http(&s.addr, "GET", "/v1/jobs?state=running", None).unwrap();
        page["jobs"].as_array().unwrap().len() == 2
    });
    signal(&s.child, "TERM");
    // During the grace period the server still answers, but is no longer ready.
    wait_until("readiness off", Duration::from_secs(2), || {
        matches!(http(&s.addr, "GET", "/readyz", None), Some((503, _)))
    });
    let (status, _) = http(&s.addr, "GET", "/healthz", None).unwrap();
    assert_eq!(status, 200, "alive while draining");
    let code = exit_code(
        &mut s.child,
        Duration::from_secs(15),
        "mend serve did not exit",
    );
    assert_eq!(code, Some(0), "graceful shutdown exits 0");

    // Nothing lost: reopen the database and look.
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let states = stored(&s._dir.path().join("serve.db"), &ids);
    let completed = states
        .iter()
        .filter(|(s, _)| *s == mend::JobState::Completed)
        .count();
    let waiting = states
        .iter()
        .filter(|(s, a)| *s == mend::JobState::Available && *a == 0)
        .count();
    assert_eq!(
        (completed, waiting),
        (2, 2),
        "in-flight jobs finished, the rest wait: {states:?}"
    );
}

/// Runs `mend ARGS --database sqlite://...` to the end on a new database file, with the
/// variables `env` set.
fn on_a_fresh_database(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    mend()
        .args(args)
        .arg("--database")
        .arg(common::sqlite_url(dir.path(), "t.db"))
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn refuses_a_public_address_without_a_token() {
    // `mend()` has cleared MEND_API_TOKEN.
    let out = on_a_fresh_database(&["serve", "--bind", "0.0.0.0:0"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without a token") && err.contains("MEND_API_TOKEN"),
        "{err}"
    );
}

#[test]
fn a_remote_worker_that_vanishes_has_its_jobs_rescued() {
    let s = serve(&[]);
    let id = enqueue(&s.addr, json!({"kind": "remote_only"}));
    let (status, claim) = http(
        &s.addr,
        "POST",
        "/v1/workers/claim",
        Some(json!({"worker_id": "gone", "kinds": ["remote_only"], "lease_ms": 1000})),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(claim["jobs"][0]["id"], id.as_str());
    // The worker never heartbeats again; the server's rescuer takes the job back.
    wait_until("the rescue", Duration::from_secs(20), || {
        let (_, j) = http(&s.addr, "GET", &format!("/v1/jobs/{id}"), None).unwrap();
        j["state"] != "running"
    });
    let (_, j) = http(&s.addr, "GET", &format!("/v1/jobs/{id}"), None).unwrap();
    assert_eq!(j["errors"][0]["kind"], "lost", "{j}");
    // A late completion from the vanished worker is refused.
    let (status, _) = http(
        &s.addr,
        "POST",
        &format!("/v1/jobs/{id}/complete"),
        Some(json!({"worker_id": "gone", "attempt": 1})),
    )
    .unwrap();
    assert_eq!(status, 409);
}

/// Parses the Prometheus text format strictly enough to catch a malformed exposition: every
/// sample belongs to a metric declared by a `# TYPE` line before it and has a numeric value.
fn parse_metrics(text: &str) -> std::collections::HashMap<String, f64> {
    let mut declared = std::collections::HashSet::new();
    let mut samples = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            declared.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
            .unwrap_or(name);
        assert!(
            declared.contains(family),
            "sample {name} has no # TYPE before it"
        );
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_owned(), v);
    }
    samples
}

fn scrape(addr: &str) -> std::collections::HashMap<String, f64> {
    let r = Remote::new(format!("http://{addr}"))
        .blocking_call_with("GET", "/metrics", None, &[])
        .unwrap_or_else(|| panic!("the server at {addr} does not answer /metrics"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.headers
    );
    let Value::String(body) = &r.body else {
        panic!("the metrics are text, not {}", r.body)
    };
    parse_metrics(body)
}

#[test]
fn metrics_parse_and_move_as_jobs_run() {
    let s = serve(&[]);
    let before = scrape(&s.addr);
    let get =
        |m: &std::collections::HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    for _ in 0..5 {
        http(&s.addr, "POST", "/v1/jobs", Some(json!({"kind": "noop"}))).unwrap();
    }
    let (_, bad) = http(
        &s.addr,
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "exec", "args": {"command": "rm"}})),
    )
    .unwrap();
    assert_eq!(
        bad["status"], 422,
        "exec outside the allow-list is refused at enqueue: {bad}"
    );
    wait_until("five completions", Duration::from_secs(10), || {
        get(
            &scrape(&s.addr),
            "mend_attempt_outcomes_total{outcome=\"completed\"}",
        ) >= 5.0
    });
    let after = scrape(&s.addr);
    assert_eq!(
        get(&after, "mend_jobs_enqueued_total") - get(&before, "mend_jobs_enqueued_total"),
        5.0
    );
    assert_eq!(
        get(&after, "mend_attempts_started_total") - get(&before, "mend_attempts_started_total"),
        5.0
    );
    // The queue gauge covers the states still to run only (counting finished jobs would read
    // every one kept); finished work is in the outcome counters above.
    assert_eq!(
        after.get("mend_queue_jobs{queue=\"default\",state=\"completed\"}"),
        None
    );
    assert_eq!(
        get(
            &after,
            "mend_queue_jobs{queue=\"default\",state=\"available\"}"
        ),
        0.0
    );
    assert_eq!(get(&after, "mend_run_seconds_count"), 5.0);
    assert_eq!(
        get(&after, "mend_enqueue_to_start_seconds_bucket{le=\"+Inf\"}"),
        5.0
    );
    assert_eq!(get(&after, "mend_attempts_in_flight"), 0.0);
    assert_eq!(
        after.get("mend_queue_jobs{queue=\"default\",state=\"running\"}"),
        Some(&0.0),
        "empty states are reported as zero, not left out"
    );
}

#[test]
fn a_second_signal_releases_running_jobs_and_exits_at_once() {
    // The old flag names, in their old unit (milliseconds), still work.
    let mut s = serve(&["--shutdown-grace-ms", "5000", "--drain-ms", "60000"]);
    let id = enqueue(
        &s.addr,
        json!({"kind": "noop", "args": {"sleep_ms": 60000}}),
    );
    wait_until("the job running", Duration::from_secs(10), || {
        let (_, j) = http(&s.addr, "GET", &format!("/v1/jobs/{id}"), None).unwrap();
        j["state"] == "running"
    });
    signal(&s.child, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "still in its grace period"
    );
    signal(&s.child, "INT");
    let code = exit_code(
        &mut s.child,
        Duration::from_secs(10),
        "the second signal did not stop it",
    );
    assert_eq!(code, Some(0));
    assert_eq!(
        stored(&s._dir.path().join("serve.db"), &[&id]),
        [(mend::JobState::Available, 0)],
        "released, attempt not used"
    );
}

#[test]
fn a_third_signal_exits_at_once_even_while_connections_close() {
    let mut s = serve(&["--shutdown-grace", "0s", "--drain", "60s"]);
    // A remote worker's long poll keeps one request open: after the drain, the server waits
    // for it (up to 10 s) before it exits.
    let addr = s.addr.clone();
    let poll = std::thread::spawn(move || {
        let claim = json!({"worker_id": "w1", "kinds": ["nothing"], "wait_ms": 20000});
        http(&addr, "POST", "/v1/workers/claim", Some(claim))
    });
    // Part of the scenario: the poll must be parked before the signal stops new requests.
    std::thread::sleep(Duration::from_millis(500));
    signal(&s.child, "TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "still waiting for the open long poll"
    );
    signal(&s.child, "TERM");
    std::thread::sleep(Duration::from_millis(100));
    signal(&s.child, "TERM");
    let code = exit_code(
        &mut s.child,
        Duration::from_secs(5),
        "the third signal did not stop it",
    );
    assert_eq!(code, Some(130), "the third signal exits at once with 130");
    let _ = poll.join();
}

#[test]
fn json_logs_are_one_object_per_line() {
    let out = on_a_fresh_database(
        &["--log-format", "json", "migrate"],
        &[("RUST_LOG", "info")],
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "applied migration" && l["level"] == "INFO"),
        "{stderr}"
    );
}

#[test]
fn serves_and_runs_jobs_on_postgres() {
    let Some(schema) = common::pg_schema("serve on postgres", "mend_serve") else {
        return;
    };
    let db = schema.store_url();
    let mut s = serve_on(&db, tempfile::tempdir().unwrap(), &[]);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(enqueue(
            &s.addr,
            json!({"kind": "noop", "args": {"sleep_ms": 10 * i}}),
        ));
    }
    wait_until("three jobs completed", Duration::from_secs(15), || {
        ids.iter().all(|id| {
            http(&s.addr, "GET", &format!("/v1/jobs/{id}"), None)
                .is_some_and(|(_, j)| j["state"] == "completed")
        })
    });
    signal(&s.child, "TERM");
    let status = s.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = mend_test::pg::connect(&schema.url).await.unwrap();
        // The node deregistered on its way out.
        let nodes: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM \"{}\".mend_nodes", schema.name),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(nodes, 0, "a graceful shutdown deregisters the node");
    });
}

/// A stand-in OTLP/HTTP collector: accepts `POST /v1/traces` (protobuf or JSON) and keeps
/// every span, as OTLP JSON.
struct Collector {
    addr: String,
    spans: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    /// The content type of the last export.
    protocol: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = spans.clone();
        let protocol = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let seen = protocol.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let (mut line, mut length, mut path) = (String::new(), 0usize, String::new());
                let mut content_type = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(p) = line.split_whitespace().nth(1) {
                    path = p.to_owned();
                }
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap();
                        }
                        if k.eq_ignore_ascii_case("content-type") {
                            content_type = v.trim().to_owned();
                        }
                    }
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                assert_eq!(path, "/v1/traces");
                let doc: Value = match content_type.as_str() {
                    "application/x-protobuf" => {
                        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
                        use prost::Message;
                        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                        serde_json::to_value(&req).unwrap()
                    }
                    "application/json" => serde_json::from_slice(&body).unwrap(),
                    other => panic!("unexpected OTLP content type {other:?}"),
                };
                *seen.lock().unwrap() = content_type;
                for rs in doc["resourceSpans"].as_array().unwrap() {
                    let service = rs["resource"]["attributes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|a| a["key"] == "service.name")
                        .map(|a| a["value"]["stringValue"].clone());
                    assert_eq!(service, Some(json!("mend")));
                    for ss in rs["scopeSpans"].as_array().unwrap() {
                        kept.lock()
                            .unwrap()
                            .extend(ss["spans"].as_array().unwrap().iter().cloned());
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                );
            }
        });
        Collector {
            addr,
            spans,
            protocol,
        }
    }

    fn find(&self, f: impl Fn(&Value) -> bool) -> Option<Value> {
        self.spans.lock().unwrap().iter().find(|s| f(s)).cloned()
    }
}

#[test]
fn otlp_export_shows_enqueue_and_attempts_in_the_callers_trace() {
    otlp_export("http/protobuf", "application/x-protobuf");
}

#[test]
fn otlp_export_speaks_json_when_asked() {
    otlp_export("http/json", "application/json");
}

fn otlp_export(protocol: &str, content_type: &str) {
    let collector = Collector::start();
    let endpoint = format!("http://{}", collector.addr);
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "serve.db");
    let s = serve_with_env(
        &db,
        dir,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ],
    );
    let (trace, caller) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let (status, job) = http_with(
        &s.addr,
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "noop"})),
        &[("traceparent", &format!("00-{trace}-{caller}-01"))],
    )
    .unwrap();
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let stored = job["trace_parent"].as_str().unwrap().to_owned();
    assert!(
        stored.starts_with(&format!("00-{trace}-")),
        "the job carries the caller's trace: {stored}"
    );
    let mut enqueue = None;
    let mut attempt = None;
    wait_until(
        "the enqueue and attempt spans",
        Duration::from_secs(15),
        || {
            let attr = |s: &Value, k: &str| {
                s["attributes"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["key"] == k))
                    .map(|x| x["value"]["stringValue"].clone())
            };
            enqueue = collector.find(|s| s["name"] == "enqueue" && s["traceId"] == trace);
            attempt = collector.find(|s| s["name"] == "job" && attr(s, "id") == Some(json!(id)));
            enqueue.is_some() && attempt.is_some()
        },
    );
    let (enqueue, attempt) = (enqueue.unwrap(), attempt.unwrap());
    // The request span hangs under the caller's span, the enqueue under the request.
    let request = collector
        .find(|s| s["name"] == "request" && s["spanId"] == enqueue["parentSpanId"])
        .unwrap_or_else(|| panic!("the enqueue span's parent is the request span"));
    assert_eq!(request["traceId"], trace);
    assert_eq!(request["parentSpanId"], caller);
    // The stored context is the enqueue span's; the attempt is in the same trace, under the
    // enqueue span, and links to it.
    assert_eq!(
        stored,
        format!("00-{trace}-{}-01", enqueue["spanId"].as_str().unwrap())
    );
    assert_eq!(attempt["traceId"], trace);
    assert_eq!(attempt["parentSpanId"], enqueue["spanId"]);
    let links: Vec<(Value, Value)> = attempt["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["traceId"].clone(), l["spanId"].clone()))
        .collect();
    assert_eq!(links, vec![(json!(trace), enqueue["spanId"].clone())]);
    assert_eq!(*collector.protocol.lock().unwrap(), content_type);
}

#[test]
fn a_bad_sampler_setting_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "serve.db");
    for (var, value, says) in [
        (
            "OTEL_TRACES_SAMPLER",
            "sometimes",
            "OTEL_TRACES_SAMPLER=\"sometimes\"",
        ),
        (
            "OTEL_TRACES_SAMPLER_ARG",
            "2",
            "OTEL_TRACES_SAMPLER_ARG=\"2\"",
        ),
    ] {
        let out = mend()
            .args(["serve", "--database", &db, "--bind", "127.0.0.1:0"])
            .env("OTEL_TRACES_SAMPLER", "traceidratio")
            .env(var, value)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
    assert!(
        !dir.path().join("serve.db").exists(),
        "nothing was started or created"
    );
}

#[test]
fn a_callers_unsampled_trace_stays_unexported_down_to_the_attempts() {
    let collector = Collector::start();
    let endpoint = format!("http://{}", collector.addr);
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "serve.db");
    let s = serve_with_env(
        &db,
        dir,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        ],
    );
    let (dropped, kept) = (
        "0af7651916cd43dd8448eb211c80319c",
        "4bf92f3577b34da6a3ce929d0e0e4736",
    );
    let mut ids = Vec::new();
    // The unsampled caller first: by the time the sampled job's attempt is exported, the
    // unsampled one (enqueued earlier, same queue) has run as well.
    for (trace, flags) in [(dropped, "00"), (kept, "01")] {
        let (status, job) = http_with(
            &s.addr,
            "POST",
            "/v1/jobs",
            Some(json!({"kind": "noop"})),
            &[(
                "traceparent",
                &format!("00-{trace}-00f067aa0ba902b7-{flags}"),
            )],
        )
        .unwrap();
        assert_eq!(status, 201, "{job}");
        assert!(
            job["trace_parent"]
                .as_str()
                .unwrap()
                .ends_with(&format!("-{flags}")),
            "the stored context keeps the caller's sampled flag: {job}"
        );
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    wait_until(
        "the sampled job's attempt span",
        Duration::from_secs(15),
        || {
            collector
                .find(|s| s["name"] == "job" && s["traceId"] == kept)
                .is_some()
        },
    );
    wait_until(
        "the unsampled job to complete",
        Duration::from_secs(15),
        || {
            http_with(&s.addr, "GET", &format!("/v1/jobs/{}", ids[0]), None, &[])
                .is_some_and(|(_, job)| job["state"] == "completed")
        },
    );
    // Longer than the exporter's batch delay (200 ms): anything still queued has gone out.
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        collector.find(|s| s["traceId"] == dropped).is_none(),
        "nothing of the unsampled trace is exported"
    );
    assert!(collector
        .find(|s| s["name"] == "enqueue" && s["traceId"] == kept)
        .is_some());
}
