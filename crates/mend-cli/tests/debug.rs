//! Looking inside a real `mend serve`: a CPU profile taken under load decodes as pprof and
//! names mend's own functions, the flame graph is an SVG, one profile runs at a time, and the
//! gate: without the token 401, beyond loopback without `--debug-endpoints` 404 even with it,
//! with the flag (or its variable) 200.

#![expect(clippy::unwrap_used)]

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use pprof::protos::Message;
use serde_json::{json, Value};

mod common;
use common::mend;

/// A `mend serve` child on a fresh SQLite file, killed when dropped.
struct Serve {
    child: Child,
    /// `http://127.0.0.1:PORT`, whatever address it was bound to.
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(bind: &str, extra: &[&str], env: &[(&str, &str)]) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "debug.db");
    let mut child = mend()
        .args(["serve", "--database", &db, "--bind", bind])
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = common::listening_url(&mut child);
    let port = url.rsplit_once(':').unwrap().1.to_owned();
    Serve {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// GET `path`; status, content type and body.
async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut req = client().get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ctype, resp.bytes().await.unwrap().to_vec())
}

/// Enqueues `noop` jobs in batches of a thousand until `until`; how many.
async fn load(base: String, until: Instant) -> usize {
    let http = client();
    let batch: Vec<Value> = (0..1000).map(|_| json!({"kind": "noop"})).collect();
    let body = json!({ "jobs": batch });
    let mut n = 0;
    while Instant::now() < until {
        let resp = http
            .post(format!("{base}/v1/jobs/batch"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
        n += 1000;
    }
    n
}

/// The problem+json body of an error answer.
fn problem(status: u16, got: &(u16, String, Vec<u8>)) -> Value {
    assert_eq!(got.0, status, "{}", String::from_utf8_lossy(&got.2));
    assert_eq!(got.1, "application/problem+json");
    serde_json::from_slice(&got.2).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_under_load_decodes_as_pprof_and_names_mend_and_the_flame_graph_is_svg() {
    // A loopback address: the debug routes are on without a flag.
    let s = serve("127.0.0.1:0", &["--queues", "default=50"], &[]);

    // Bad input names its field and starts nothing.
    let bad = get(&s.base, "/debug/pprof/profile?seconds=0", None).await;
    assert_eq!(problem(422, &bad)["field"], "seconds");
    let bad = get(&s.base, "/debug/pprof/profile?seconds=61", None).await;
    assert_eq!(problem(422, &bad)["field"], "seconds");
    let bad = get(&s.base, "/debug/pprof/profile?format=png", None).await;
    assert_eq!(problem(422, &bad)["field"], "format");

    let until = Instant::now() + Duration::from_secs(3);
    let loading = tokio::spawn(load(s.base.clone(), until));
    let profiling = tokio::spawn({
        let base = s.base.clone();
        async move { get(&base, "/debug/pprof/profile?seconds=3", None).await }
    });
    // While that profile runs, a second one is refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = get(&s.base, "/debug/pprof/profile?seconds=1", None).await;
    let body = problem(409, &second);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("another CPU profile"),
        "{body}"
    );
    let (status, ctype, bytes) = profiling.await.unwrap();
    let enqueued = loading.await.unwrap();
    assert!(
        enqueued >= 2000,
        "only {enqueued} jobs enqueued under the profile"
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(ctype, "application/octet-stream");

    let profile = pprof::protos::Profile::decode(bytes.as_slice()).unwrap();
    assert!(
        !profile.sample.is_empty(),
        "a profile under load has samples"
    );
    let types: Vec<&str> = profile
        .sample_type
        .iter()
        .map(|t| profile.string_table[t.ty as usize].as_str())
        .collect();
    assert_eq!(types, ["samples", "cpu"]);
    let names: Vec<&str> = profile
        .function
        .iter()
        .map(|f| profile.string_table[f.name as usize].as_str())
        .collect();
    let ours: Vec<&&str> = names
        .iter()
        .filter(|n| n.contains("mend::") || n.contains("mend_"))
        .collect();
    assert!(
        !ours.is_empty(),
        "the profile names mend's own functions; it names {} functions, e.g. {:?}",
        names.len(),
        &names[..names.len().min(20)]
    );
    // Every sample points at locations the profile holds.
    let locations: std::collections::HashSet<u64> = profile.location.iter().map(|l| l.id).collect();
    for sample in &profile.sample {
        assert!(sample.location_id.iter().all(|id| locations.contains(id)));
    }

    // The flame graph, under load again.
    let until = Instant::now() + Duration::from_secs(2);
    let loading = tokio::spawn(load(s.base.clone(), until));
    let (status, ctype, bytes) = get(
        &s.base,
        "/debug/pprof/profile?seconds=2&format=flamegraph",
        None,
    )
    .await;
    loading.await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(ctype, "image/svg+xml");
    let svg = String::from_utf8(bytes).unwrap();
    assert!(
        svg.starts_with("<?xml") || svg.starts_with("<svg"),
        "{}",
        &svg[..svg.len().min(200)]
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("mend::") || svg.contains("mend_"),
        "the flame graph names a mend function"
    );

    // The profiler let go: another profile can be taken.
    let (status, _, _) = get(&s.base, "/debug/pprof/profile?seconds=1", None).await;
    assert_eq!(status, 200);
}

/// The 404 of a gated debug route: word for word what an unknown path gets, so it does not
/// even say that debug routes exist.
fn assert_gated(got: &(u16, String, Vec<u8>)) {
    let body = problem(404, got);
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.starts_with("no route /debug/"), "{detail}");
    assert!(!detail.contains("debug-endpoints"), "{detail}");
    assert!(body["request_id"].is_string());
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["detail", "request_id", "status", "title", "type"],
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_the_routes_need_the_token_and_the_flag() {
    const TOKEN: &str = "debug-test-token-0123456789abcdef";
    let path = "/debug/pprof/profile?seconds=1";

    // Bound beyond loopback with a token, no flag: 401 without the token, 404 with it.
    let s = serve("0.0.0.0:0", &["--token", TOKEN], &[]);
    let got = get(&s.base, path, None).await;
    let body = problem(401, &got);
    assert!(
        !body["detail"].as_str().unwrap().contains("debug"),
        "{body}"
    );
    let got = get(&s.base, path, Some("wrong-token")).await;
    problem(401, &got);
    assert_gated(&get(&s.base, path, Some(TOKEN)).await);
    assert_gated(
        &get(
            &s.base,
            "/debug/pprof/profile?format=flamegraph",
            Some(TOKEN),
        )
        .await,
    );
    // The gate is checked before the query: a bad one learns nothing either.
    assert_gated(&get(&s.base, "/debug/pprof/profile?seconds=0", Some(TOKEN)).await);
    // Word for word an unknown path's answer, so nothing tells the routes exist.
    let gated = problem(404, &get(&s.base, "/debug/attempts", Some(TOKEN)).await);
    let unknown = problem(404, &get(&s.base, "/debug/nothing-here", Some(TOKEN)).await);
    assert_eq!(
        gated["detail"]
            .as_str()
            .unwrap()
            .replace("/debug/attempts", "/debug/nothing-here"),
        unknown["detail"].as_str().unwrap()
    );
    assert_eq!(gated["title"], unknown["title"]);
    assert_eq!(gated["type"], unknown["type"]);
    // The rest of the API is served.
    let (status, _, _) = get(&s.base, "/v1/queues", Some(TOKEN)).await;
    assert_eq!(status, 200);
    drop(s);

    // With --debug-endpoints: 401 without the token, 200 with it.
    let s = serve("0.0.0.0:0", &["--token", TOKEN, "--debug-endpoints"], &[]);
    problem(401, &get(&s.base, path, None).await);
    let (status, ctype, bytes) = get(&s.base, path, Some(TOKEN)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(ctype, "application/octet-stream");
    pprof::protos::Profile::decode(bytes.as_slice()).unwrap();
    drop(s);

    // The variable does what the flag does.
    let s = serve(
        "0.0.0.0:0",
        &[],
        &[("MEND_API_TOKEN", TOKEN), ("MEND_DEBUG_ENDPOINTS", "true")],
    );
    let (status, ctype, _) = get(
        &s.base,
        "/debug/pprof/profile?seconds=1&format=flamegraph",
        Some(TOKEN),
    )
    .await;
    assert_eq!((status, ctype.as_str()), (200, "image/svg+xml"));
    drop(s);

    // On loopback with a token, the token is still needed.
    let s = serve("127.0.0.1:0", &["--token", TOKEN], &[]);
    problem(401, &get(&s.base, path, None).await);
    let (status, _, _) = get(&s.base, path, Some(TOKEN)).await;
    assert_eq!(status, 200);
}
