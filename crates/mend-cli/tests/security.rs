//! Tokens, the audit log and args encryption with real `mend` processes: `mend tokens` and
//! `mend audit` on the database, a `mend serve` that resolves the tokens (and stops taking a
//! revoked one), and encrypted args that are unreadable in the SQLite file, readable through
//! the API, and a wrong or missing key refused at start-up with nothing stored changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{listening_url, mend, sqlite_url, Node};
use mend_test::http::Remote;
use serde_json::{json, Value};

const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4=";

fn run(args: &[&str], db: &str, dir: &std::path::Path) -> Output {
    mend()
        .args(args)
        .args(["--database", db])
        .current_dir(dir)
        .env("USER", "tester")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn create(db: &str, dir: &std::path::Path, name: &str, role: &str) -> String {
    let out = ok(&run(
        &["tokens", "create", "--name", name, "--role", role, "--json"],
        db,
        dir,
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["role"], role);
    v["token"].as_str().unwrap().to_owned()
}

fn serve_with(
    db: &str,
    dir: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Child {
    let mut c = mend();
    c.args(["serve", "--database", db, "--bind", "127.0.0.1:0"])
        .args([
            "--shutdown-grace",
            "50ms",
            "--drain",
            "500ms",
            "--queues",
            "default=1",
        ])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().expect("spawn mend serve")
}

fn node(child: std::process::Child) -> Node {
    let mut child = child;
    let url = listening_url(&mut child);
    Node { child, url }
}

fn call(
    n: &Node,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> mend_test::http::Resp {
    let auth = format!("Bearer {token}");
    Remote::new(n.url.clone())
        .blocking_call_with(method, path, body, &[("authorization", &auth)])
        .expect("the server answers")
}

fn tokens_and_audit(db: &str, dir: &std::path::Path) {
    let ops = create(db, dir, "ops", "operator");
    let viewer = create(db, dir, "dash", "viewer");
    let again = run(
        &["tokens", "create", "--name", "ops", "--role", "admin"],
        db,
        dir,
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists and is not revoked"));
    let bad_role = run(
        &["tokens", "create", "--name", "x", "--role", "root"],
        db,
        dir,
    );
    assert!(String::from_utf8_lossy(&bad_role.stderr)
        .contains("admin, operator, producer, worker, viewer"));
    let list = ok(&run(&["tokens", "list", "--json"], db, dir));
    assert!(!list.contains(&ops) && !list.contains("hash"), "{list}");
    let names: Vec<String> = serde_json::from_str::<Vec<Value>>(&list)
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["dash", "ops"]);

    // Stored tokens turn auth on, even on loopback.
    let n = node(serve_with(db, dir, &[], &[]));
    assert_eq!(
        Remote::new(n.url.clone())
            .blocking_call_with("GET", "/v1/jobs", None, &[])
            .unwrap()
            .status,
        401
    );
    assert_eq!(
        call(&n, &ops, "POST", "/v1/queues/mail/pause", None).status,
        200
    );
    let refused = call(&n, &viewer, "POST", "/v1/queues/mail/resume", None);
    assert!(refused
        .problem(403)
        .contains("needs the role admin or operator"));

    ok(&run(&["tokens", "revoke", "ops"], db, dir));
    let started = Instant::now();
    while call(&n, &ops, "GET", "/v1/queues", None).status != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a revoked token still works"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let revoked_again = run(&["tokens", "revoke", "ops"], db, dir);
    assert!(String::from_utf8_lossy(&revoked_again.stderr).contains("no token named ops"));

    let audit: Vec<Value> = serde_json::from_str(&ok(&run(&["audit", "--json"], db, dir))).unwrap();
    let summary: Vec<(String, String, String)> = audit
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_owned(),
                r["action"].as_str().unwrap().to_owned(),
                r["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let s = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        summary,
        [
            s("cli:tester", "token.revoke", "ops"),
            s("ops", "queue.pause", "mail"),
            s("cli:tester", "token.create", "dash"),
            s("cli:tester", "token.create", "ops"),
        ]
    );
    assert_eq!(audit[1]["remote"], "127.0.0.1", "{}", audit[1]);
    let filtered = ok(&run(&["audit", "--action", "queue.pause"], db, dir));
    assert!(
        filtered.contains("queue.pause") && !filtered.contains("token.create"),
        "{filtered}"
    );
}

#[test]
fn tokens_revocation_and_audit_with_real_processes_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    tokens_and_audit(&sqlite_url(dir.path(), "t.db"), dir.path());
}

#[test]
fn tokens_revocation_and_audit_with_real_processes_postgres() {
    let Some(schema) = common::pg_schema(
        "tokens_revocation_and_audit_with_real_processes_postgres",
        "tokens",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    tokens_and_audit(&schema.store_url(), dir.path());
}

/// Everything the SQLite database holds on disk (the file and its write-ahead log).
fn raw_bytes(dir: &std::path::Path, file: &str) -> Vec<u8> {
    let mut out = std::fs::read(dir.join(file)).unwrap();
    if let Ok(wal) = std::fs::read(dir.join(format!("{file}-wal"))) {
        out.extend(wal);
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn stored_state(path: &std::path::Path) -> (Vec<(String, String)>, Vec<String>) {
    let c = rusqlite::Connection::open(path).unwrap();
    let keys = c
        .prepare("SELECT kid, check_value FROM mend_args_keys ORDER BY kid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let args = c
        .prepare("SELECT args FROM mend_jobs ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (keys, args)
}

#[test]
fn encrypted_args_are_unreadable_on_disk_readable_through_the_api_and_a_wrong_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path(), "enc.db");
    let path = dir.path().join("enc.db");
    let keys1 = format!("k1:{K1}");
    let flags = ["--token", "admin-secret", "--encrypt-kinds", "payment"];
    let n = node(serve_with(
        &db,
        dir.path(),
        &flags,
        &[("MEND_ARGS_KEYS", &keys1)],
    ));
    let enqueue = |kind: &str, args: Value| {
        let r = call(
            &n,
            "admin-secret",
            "POST",
            "/v1/jobs",
            Some(json!({"kind": kind, "queue": "elsewhere", "args": args})),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    };
    let secret = enqueue(
        "payment",
        json!({"card": "CARD-4111-SECRET", "password": "pw"}),
    );
    let plain = enqueue("note", json!({"text": "PLAIN-VISIBLE"}));
    let got = call(
        &n,
        "admin-secret",
        "GET",
        &format!("/v1/jobs/{secret}"),
        None,
    );
    assert_eq!(got.body["args"]["card"], "CARD-4111-SECRET", "{}", got.body);
    assert_eq!(
        call(
            &n,
            "admin-secret",
            "GET",
            &format!("/v1/jobs/{plain}"),
            None
        )
        .body["args"]["text"],
        "PLAIN-VISIBLE"
    );
    drop(n);
    let bytes = raw_bytes(dir.path(), "enc.db");
    assert!(
        contains(&bytes, "PLAIN-VISIBLE"),
        "the raw read sees plain args"
    );
    assert!(
        !contains(&bytes, "CARD-4111-SECRET"),
        "encrypted args are not in the file"
    );
    let before = stored_state(&path);
    assert!(
        before
            .1
            .iter()
            .any(|a| a.contains("$mend_enc") && a.contains("\"k1\"")),
        "{:?}",
        before.1
    );

    // A wrong key, and no key at all: refused at start-up, nothing stored changed.
    for (env, says) in [
        (
            vec![("MEND_ARGS_KEYS", format!("k1:{K2}"))],
            "is not the one",
        ),
        (vec![], "MEND_ARGS_KEYS"),
        (
            vec![("MEND_ARGS_KEYS", format!("k9:{K1}"))],
            "does not list",
        ),
        (vec![("MEND_ARGS_KEYS", "k1:short".to_owned())], "32"),
    ] {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let o = serve_with(&db, dir.path(), &["--token", "admin-secret"], &env)
            .wait_with_output()
            .unwrap();
        assert!(!o.status.success(), "{env:?} started");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(says), "{env:?}: {err}");
        assert_eq!(
            stored_state(&path),
            before,
            "{env:?} changed what is stored"
        );
    }

    // Rotation: a new key first, the old one kept; old args still read, new ones use the new key.
    let rotated = format!("k2:{K2},k1:{K1}");
    let n = node(serve_with(
        &db,
        dir.path(),
        &flags,
        &[("MEND_ARGS_KEYS", &rotated)],
    ));
    assert_eq!(
        call(
            &n,
            "admin-secret",
            "GET",
            &format!("/v1/jobs/{secret}"),
            None
        )
        .body["args"]["card"],
        "CARD-4111-SECRET"
    );
    let r = call(
        &n,
        "admin-secret",
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "payment", "queue": "elsewhere", "args": {"card": "NEW-CARD"}})),
    );
    let newer = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        call(
            &n,
            "admin-secret",
            "GET",
            &format!("/v1/jobs/{newer}"),
            None
        )
        .body["args"]["card"],
        "NEW-CARD"
    );
    drop(n);
    let after = stored_state(&path);
    assert!(
        after.1.iter().any(|a| a.contains("\"k2\"")),
        "{:?}",
        after.1
    );
    assert_eq!(after.0.len(), 2, "a check for each key id");
}

/// A stored token counts as a token: `mend serve` binds beyond loopback with one, and refuses
/// to without any.
#[test]
fn a_stored_token_lets_mend_serve_bind_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path(), "bind.db");
    ok(&run(&["migrate"], &db, dir.path()));
    let refused = mend()
        .args(["serve", "--database", &db, "--bind", "0.0.0.0:0"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("mend tokens create"));
    let admin = create(&db, dir.path(), "root", "admin");
    let mut child = mend()
        .args([
            "serve",
            "--database",
            &db,
            "--bind",
            "0.0.0.0:0",
            "--shutdown-grace",
            "50ms",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = listening_url(&mut child).replace("0.0.0.0", "127.0.0.1");
    let n = Node { child, url };
    assert_eq!(call(&n, &admin, "GET", "/v1/jobs", None).status, 200);
}
