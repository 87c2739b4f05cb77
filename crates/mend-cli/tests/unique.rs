//! Unique jobs end to end: real `mend serve` processes (three on one PostgreSQL schema, one on a
//! SQLite file) taking 100 racing enqueues of one unique job, which must make exactly one job;
//! after its period a new one is accepted. And the `mend enqueue --unique*` flags.

#![expect(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use mend_test::http::{Remote, Resp};
use serde_json::{json, Value};

mod common;
use common::{mend, serve, Node};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// `n` enqueues of `body`, spread round-robin over `nodes`, all released at once.
fn race(nodes: &[Node], n: usize, body: Value) -> Vec<Resp> {
    runtime().block_on(async {
        let remotes: Vec<Remote> = nodes.iter().map(|s| Remote::new(s.url.clone())).collect();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(n));
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let remote = remotes[i % remotes.len()].clone();
                let (start, body) = (start.clone(), body.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    remote.call("POST", "/v1/jobs", Some(body)).await
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
}

/// One request.
fn call(node: &Node, method: &str, path: &str, body: Option<Value>) -> Resp {
    runtime().block_on(Remote::new(node.url.clone()).call(method, path, body))
}

/// How many jobs of `kind` are stored.
fn count(node: &Node, kind: &str) -> usize {
    let page = call(
        node,
        "GET",
        &format!("/v1/jobs?kind={kind}&limit=1000"),
        None,
    );
    assert_eq!(page.status, 200, "{}", page.body);
    page.body["jobs"].as_array().unwrap().len()
}

/// The race and the period, on `nodes` (one database).
fn one_job_from_a_hundred_racing_enqueues(nodes: &[Node]) {
    // The queue `held` is served by no node: the job stays put and keeps its key. The period
    // is counted by run_at, given here (an hour in the past), so no clock edge can split the
    // race into two periods.
    let hour = (chrono::Utc::now().timestamp() / 3600 - 2) * 3600;
    let at = |h: i64| {
        chrono::DateTime::from_timestamp(hour + h * 3600 + 60, 0)
            .unwrap()
            .to_rfc3339()
    };
    let body = |run_at: String| {
        json!({"kind": "race", "queue": "held", "args": {"order": 7, "note": "x"}, "run_at": run_at,
               "unique": {"by_args": ["order"], "period": "1h"}})
    };
    let answers = race(nodes, 100, body(at(0)));
    let created: Vec<&Resp> = answers.iter().filter(|r| r.status == 201).collect();
    assert_eq!(created.len(), 1, "exactly one enqueue creates the job");
    let id = created[0].body["id"].as_str().unwrap().to_owned();
    for r in &answers {
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
        assert_eq!(r.body["id"], id.as_str(), "every answer is the one job");
        assert_eq!(r.body["duplicate"], r.status == 200, "{}", r.body);
    }
    assert_eq!(count(&nodes[0], "race"), 1, "one job stored");

    // The next period: a new job.
    let next = call(
        &nodes[1 % nodes.len()],
        "POST",
        "/v1/jobs",
        Some(body(at(1))),
    );
    assert_eq!(next.status, 201, "{}", next.body);
    assert_eq!(next.body["duplicate"], false);
    assert_ne!(next.body["id"], id.as_str());
    assert_eq!(count(&nodes[0], "race"), 2);

    // Counted by the clock when the job runs now: a 1s period lets a new job in a second later.
    let now_body = json!({"kind": "tick", "queue": "held", "unique": {"period": "1s"}});
    let first = call(&nodes[0], "POST", "/v1/jobs", Some(now_body.clone()));
    assert_eq!(first.status, 201, "{}", first.body);
    std::thread::sleep(Duration::from_millis(1100));
    let later = call(&nodes[nodes.len() - 1], "POST", "/v1/jobs", Some(now_body));
    assert_eq!(later.status, 201, "after its period: {}", later.body);
    assert_ne!(later.body["id"], first.body["id"]);
}

#[test]
fn three_postgres_nodes_make_one_job_from_a_hundred_racing_enqueues() {
    let Some(schema) = common::pg_schema("unique race on postgres", "mend_unique") else {
        return;
    };
    let db = schema.store_url();
    let dir = tempfile::tempdir().unwrap();
    // The first one migrates; the others find the schema ready.
    let first = serve(&db, dir.path());
    let nodes = vec![first, serve(&db, dir.path()), serve(&db, dir.path())];
    one_job_from_a_hundred_racing_enqueues(&nodes);
}

#[test]
fn a_sqlite_server_makes_one_job_from_a_hundred_racing_enqueues() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "unique.db");
    let nodes = vec![serve(&db, dir.path())];
    one_job_from_a_hundred_racing_enqueues(&nodes);
}

/// `mend ARGS --server URL`: exit code, stdout, stderr.
fn cli(node: &Node, args: &[&str]) -> (Option<i32>, String, String) {
    let out = mend()
        .args(args)
        .args(["--server", &node.url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn mend_enqueue_unique_flags() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "cli.db");
    let node = serve(&db, dir.path());
    let enqueue = |args: &str| {
        cli(
            &node,
            &[
                "enqueue",
                "sync",
                "--queue",
                "held",
                "--args",
                args,
                "--unique-by-arg",
                "customer",
                "--unique-per-queue",
                "--unique-period",
                "1h",
                "--unique-also",
                "completed,cancelled",
            ],
        )
    };
    let (code, first, err) = enqueue(r#"{"customer": 1, "n": 1}"#);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    let (code, again, err) = enqueue(r#"{"customer": 1, "n": 2}"#);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(again, first, "the same customer: the same job");
    assert!(err.contains("already exists"), "{err}");
    let (_, other, _) = enqueue(r#"{"customer": 2}"#);
    assert_ne!(other, first);

    // The job carries its computed key; cancelled is in the states, so it keeps it.
    let id = first.trim();
    let cancelled = call(&node, "POST", &format!("/v1/jobs/{id}/cancel"), None);
    assert_eq!(cancelled.body["state"], "cancelled");
    assert!(cancelled.body["unique_key"]
        .as_str()
        .unwrap()
        .starts_with("unique:sync:"));
    let (_, after_cancel, err) = enqueue(r#"{"customer": 1}"#);
    assert_eq!(after_cancel, first, "{err}");

    // Bad flags are refused before any request.
    for (flags, says) in [
        (&["--unique-also", "running"][..], "not a finished state"),
        (&["--unique-period", "1.5h"][..], "--unique-period"),
        (
            &["--unique", "--idempotency-key", "k"][..],
            "cannot be used with",
        ),
    ] {
        let mut args = vec!["enqueue", "sync"];
        args.extend_from_slice(flags);
        let (code, out, err) = cli(&node, &args);
        assert_ne!(code, Some(0), "{out}");
        assert!(err.contains(says), "{flags:?}: {err}");
    }
    // A bad pointer is the server's to refuse: the problem names the field.
    let (code, _, err) = cli(&node, &["enqueue", "sync", "--unique-by-arg", "/a~2"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("unique.by_args[0]"), "{err}");
    assert_eq!(count(&node, "sync"), 2, "refused enqueues stored nothing");
}
