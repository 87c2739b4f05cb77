//! The client commands as a user runs them: a real `mend serve` child process on a temporary
//! database, and the `mend` binary run as a subprocess for each command, checked on its stdout,
//! stderr and exit code.

#![expect(clippy::unwrap_used)]

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::mend as mend_cmd;

const TOKEN: &str = "t0k3n-value";

/// A running `mend serve`, killed when dropped.
struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "t.db");
    let mut child = mend_cmd()
        .args(["serve", "--database", &db, "--bind", "127.0.0.1:0"])
        .args(["--shutdown-grace", "50ms", "--drain", "500ms"])
        .args(extra)
        // No ./mend.toml of the developer's is picked up.
        .current_dir(dir.path())
        // Held open while the server lives: a drill node exits when its stdin closes.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let url = common::listening_url(&mut child);
    Server {
        child,
        url,
        _dir: dir,
    }
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "expected success; stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts a failure reported as exactly one `error: …` line on stderr; returns that line.
    fn fails(&self) -> &str {
        assert_ne!(
            self.code,
            Some(0),
            "expected failure; stdout: {}",
            self.stdout
        );
        assert!(
            self.code.is_some(),
            "killed by a signal; stderr: {}",
            self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr, got: {:?}", self.stderr);
        assert!(lines[0].starts_with("error: "), "{:?}", lines[0]);
        assert!(
            self.stdout.is_empty(),
            "nothing on stdout: {:?}",
            self.stdout
        );
        lines[0]
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {:?}", self.stdout))
    }
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Out {
    let out = mend_cmd()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

impl Server {
    /// `mend ARGS --server URL`.
    fn mend(&self, args: &[&str]) -> Out {
        let mut all = args.to_vec();
        all.extend(["--server", &self.url]);
        run(&all, &[])
    }

    fn job(&self, id: &str) -> Value {
        self.mend(&["jobs", "show", id, "--json"]).ok().json()
    }

    fn wait_for_state(&self, id: &str, state: &str) -> Value {
        let start = Instant::now();
        loop {
            let job = self.job(id);
            if job["state"] == state {
                return job;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "job {id} never became {state}: {job}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn enqueue_list_show_cancel_and_retry_over_http() {
    let s = start(&[]);

    // enqueue prints the id and nothing else; `noop` on the worked queue completes.
    let out = s.mend(&["enqueue", "noop"]).ok();
    let done = out.stdout.trim().to_owned();
    assert!(is_uuid(&done), "{:?}", out.stdout);
    assert_eq!(out.stdout, format!("{done}\n"));

    // Every option reaches the server. The `mail` queue has no workers, so its job waits.
    let out = s
        .mend(&[
            "enqueue",
            "noop",
            "--queue",
            "mail",
            "--args",
            r#"{"sleep_ms": 1}"#,
            "--priority",
            "-3",
            "--max-attempts",
            "5",
            "--delay",
            "1h",
            "--tag",
            "vip",
            "--tag",
            "eu",
            "--timeout",
            "1m",
        ])
        .ok();
    let waiting = out.stdout.trim().to_owned();
    let job = s.job(&waiting);
    assert_eq!(job["queue"], "mail");
    assert_eq!(job["args"]["sleep_ms"], 1);
    assert_eq!(job["priority"], -3);
    assert_eq!(job["max_attempts"], 5);
    assert_eq!(job["tags"], serde_json::json!(["vip", "eu"]));
    assert_eq!(job["timeout_ms"], 60_000);
    assert_eq!(job["state"], "scheduled", "delayed by an hour");

    // --json gives the job as the server sent it.
    let out = s
        .mend(&["enqueue", "report", "--queue", "mail", "--json"])
        .ok();
    let j = out.json();
    assert_eq!(j["kind"], "report");
    assert_eq!(j["state"], "available");
    let available = j["id"].as_str().unwrap().to_owned();

    // The same idempotency key gives the same job, and says so on stderr.
    let enqueue_keyed = || {
        s.mend(&[
            "enqueue",
            "report",
            "--queue",
            "mail",
            "--idempotency-key",
            "order-1",
        ])
        .ok()
    };
    let first = enqueue_keyed();
    let again = enqueue_keyed();
    assert_eq!(first.stdout, again.stdout);
    assert!(first.stderr.is_empty(), "{}", first.stderr);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    let keyed = first.stdout.trim().to_owned();
    assert_eq!(s.job(&keyed)["unique_key"], "order-1");

    // jobs show: the state, and once the worker ran it, completed.
    s.wait_for_state(&done, "completed");
    let out = s.mend(&["jobs", "show", &done]).ok();
    assert_state_line(&out.stdout, "completed");
    assert!(out.stdout.contains(&done));

    // jobs list: a table with the columns and every job.
    let out = s.mend(&["jobs", "list"]).ok();
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        ["ID", "KIND", "QUEUE", "STATE", "ATTEMPT", "RUN AT"]
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 4, "{}", out.stdout);
    let row = rows.iter().find(|r| r.starts_with(&done)).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[1..5],
        ["noop", "default", "completed", "1/25"],
        "{row}"
    );
    assert!(out.stderr.is_empty(), "one page, no hint: {}", out.stderr);

    // Filters reach the server.
    let ids = |out: Out| -> Vec<String> {
        out.ok().json()["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mail = ids(s.mend(&["jobs", "list", "--queue", "mail", "--json"]));
    assert_eq!(mail.len(), 3);
    assert!(!mail.contains(&done));
    assert_eq!(
        ids(s.mend(&["jobs", "list", "--state", "completed", "--json"])),
        vec![done.clone()]
    );
    assert_eq!(
        ids(s.mend(&["jobs", "list", "--state", "scheduled,completed", "--json"])).len(),
        2
    );
    assert_eq!(
        ids(s.mend(&["jobs", "list", "--kind", "noop", "--tag", "vip", "--json"])),
        vec![waiting.clone()]
    );
    let empty = s
        .mend(&["jobs", "list", "--kind", "nothing-like-this"])
        .ok();
    assert_eq!(empty.stdout, "no jobs match\n");

    // Paging: one page says there is more; --all follows the cursor to the end.
    let out = s.mend(&["jobs", "list", "--limit", "1"]).ok();
    assert_eq!(
        out.stdout.lines().count(),
        2,
        "header and one row: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("--before") && out.stderr.contains("--all"),
        "{}",
        out.stderr
    );
    let page = s
        .mend(&["jobs", "list", "--limit", "1", "--json"])
        .ok()
        .json();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let second = ids(s.mend(&[
        "jobs", "list", "--limit", "1", "--before", &cursor, "--json",
    ]));
    assert_eq!(second.len(), 1);
    assert_ne!(second[0], page["jobs"][0]["id"].as_str().unwrap());
    let all = s
        .mend(&["jobs", "list", "--limit", "1", "--all", "--json"])
        .ok()
        .json();
    assert_eq!(all["jobs"].as_array().unwrap().len(), 4);
    assert!(all["next_cursor"].is_null());
    let all_table = s.mend(&["jobs", "list", "--limit", "2", "--all"]).ok();
    assert_eq!(all_table.stdout.lines().count(), 5);

    // Cancel a waiting job, then retry it.
    let out = s.mend(&["jobs", "cancel", &available]).ok();
    assert!(out.stdout.contains("cancelled"), "{}", out.stdout);
    assert_eq!(s.job(&available)["state"], "cancelled");
    let out = s.mend(&["jobs", "retry", &available]).ok();
    assert!(out.stdout.contains("will run again"), "{}", out.stdout);
    assert_eq!(s.job(&available)["state"], "available");
    let j = s
        .mend(&["jobs", "cancel", &available, "--json"])
        .ok()
        .json();
    assert_eq!(j["state"], "cancelled");

    // Errors of the server are one line with the detail and the status.
    let server_errors: [(&[&str], &str, &str); 5] = [
        (
            &["jobs", "retry", &waiting],
            "only completed, cancelled or discarded",
            "(HTTP 409)",
        ),
        (
            &["jobs", "show", "01933b6e-8f3a-7c2d-9b1e-0a1b2c3d4e5f"],
            "no job",
            "(HTTP 404)",
        ),
        (
            &["jobs", "list", "--state", "sleeping"],
            "unknown job state",
            "(HTTP 422, field state)",
        ),
        (
            &["enqueue", "noop", "--run-at", "tomorrow"],
            "RFC 3339",
            "(HTTP 422, field run_at)",
        ),
        (
            &["enqueue", "noop", "--args", r#"{"sleep_ms": "soon"}"#],
            "sleep_ms",
            "(HTTP 422, field args)",
        ),
    ];
    for (args, says, ends) in server_errors {
        let line = s.mend(args).fails().to_owned();
        assert!(
            line.contains(says) && line.ends_with(ends),
            "{args:?}: {line}"
        );
    }

    // queues list: a row per queue, a column per state.
    let out = s.mend(&["queues", "list"]).ok();
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header[0], "NAME");
    // The states still to run; finished jobs are not counted (that would read every one kept).
    for st in ["SCHEDULED", "AVAILABLE", "RUNNING", "RETRYABLE"] {
        assert!(header.contains(&st), "{header:?}");
    }
    for st in ["COMPLETED", "CANCELLED", "DISCARDED"] {
        assert!(!header.contains(&st), "{header:?}");
    }
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let mail_row = rows.iter().find(|r| r[0] == "mail").unwrap();
    assert_eq!(mail_row[col("SCHEDULED")], "1");
    assert_eq!(mail_row[col("AVAILABLE")], "1");
    assert_eq!(mail_row[col("RUNNING")], "0");
    let q = s.mend(&["queues", "list", "--json"]).ok().json();
    let names: Vec<&str> = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"mail"), "{q}");
}

#[test]
fn failed_attempts_show_their_errors_and_retry_runs_again() {
    let s = start(&[]);
    // An attempt that outlives its time limit fails; with one attempt allowed, it is discarded.
    let id = s
        .mend(&[
            "enqueue",
            "noop",
            "--args",
            r#"{"sleep_ms": 5000}"#,
            "--timeout",
            "50ms",
            "--max-attempts",
            "1",
        ])
        .ok()
        .stdout
        .trim()
        .to_owned();
    s.wait_for_state(&id, "discarded");
    let out = s.mend(&["jobs", "show", &id]).ok();
    let timeline = out
        .stdout
        .split_once("timeline:\n")
        .map(|(_, t)| t)
        .unwrap_or_default();
    let steps: Vec<&str> = timeline
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        steps,
        ["enqueued", "claimed", "discarded"],
        "{}",
        out.stdout
    );
    assert_state_line(&out.stdout, "discarded");
    let errors = out
        .stdout
        .split_once("errors:\n")
        .map(|(_, e)| e)
        .unwrap_or_default();
    assert!(
        errors.contains("attempt 1 (timeout") && errors.contains("timed out after 50ms"),
        "{}",
        out.stdout
    );

    let out = s.mend(&["jobs", "retry", &id]).ok();
    assert!(out.stdout.contains("will run again"), "{}", out.stdout);
    // It runs again (and times out again): a second attempt, a second error.
    let start = Instant::now();
    loop {
        let j = s.job(&id);
        if j["errors"].as_array().unwrap().len() == 2 && j["state"] == "discarded" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no second attempt: {j}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let out = s.mend(&["jobs", "show", &id]).ok();
    assert!(out.stdout.contains("attempt 2 (timeout"), "{}", out.stdout);
}

#[test]
fn queues_pause_and_resume() {
    let s = start(&[]);
    s.mend(&["enqueue", "noop", "--queue", "mail"]).ok();
    let out = s.mend(&["queues", "pause", "mail"]).ok();
    assert!(out.stdout.contains("queue mail paused"), "{}", out.stdout);
    let j = s.mend(&["queues", "pause", "mail", "--json"]).ok().json();
    assert_eq!(j, serde_json::json!({"name": "mail", "paused": true}));
    let q = s.mend(&["queues", "list", "--json"]).ok().json();
    let mail = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "mail")
        .unwrap()
        .clone();
    assert_eq!(mail["paused"], true, "{q}");
    let out = s.mend(&["queues", "resume", "mail"]).ok();
    assert!(out.stdout.contains("queue mail resumed"), "{}", out.stdout);
    let j = s.mend(&["queues", "resume", "mail", "--json"]).ok().json();
    assert_eq!(j["paused"], false);
    // A name with a slash stays one path segment.
    let j = s
        .mend(&["queues", "pause", "team/mail", "--json"])
        .ok()
        .json();
    assert_eq!(j["name"], "team/mail");
}

#[test]
fn limits_set_list_delete_and_debug_attempts() {
    let s = start(&[]);
    let out = s
        .mend(&[
            "limits", "set", "hooks", "--queue", "default", "--kind", "http", "--rate", "20/1s",
            "--burst", "40",
        ])
        .ok();
    assert!(
        out.stdout
            .contains("limit hooks set: default/http: 20 per 1000 ms (burst 40)"),
        "{}",
        out.stdout
    );
    s.mend(&[
        "limits",
        "set",
        "one-per-account",
        "--queue",
        "billing",
        "--key",
        "/account",
        "--concurrency",
        "1",
    ])
    .ok();
    let out = s.mend(&["limits", "list"]).ok();
    assert!(out.stdout.contains("hooks"), "{}", out.stdout);
    assert!(
        out.stdout.contains("billing per /account: 1 at once"),
        "{}",
        out.stdout
    );
    let j = s.mend(&["limits", "list", "--json"]).ok().json();
    assert_eq!(j["limits"].as_array().unwrap().len(), 2, "{j}");
    // A bad limit is refused by the server, naming the field; nothing changes.
    let out = s.mend(&[
        "limits",
        "set",
        "z",
        "--queue",
        "q",
        "--key",
        "account",
        "--concurrency",
        "1",
    ]);
    let bad = out.fails();
    assert!(bad.contains("field key"), "{bad}");
    let out = s.mend(&["limits", "set", "z", "--queue", "q", "--rate", "fast"]);
    let bad = out.fails();
    assert!(bad.contains("N/DURATION"), "{bad}");
    s.mend(&["limits", "delete", "hooks"]).ok();
    let j = s.mend(&["limits", "list", "--json"]).ok().json();
    assert_eq!(j["limits"].as_array().unwrap().len(), 1, "{j}");
    s.mend(&["limits", "delete", "hooks"]).fails();

    // A running job shows in `mend debug attempts` with what it is doing.
    let id = s
        .mend(&["enqueue", "noop", "--args", r#"{"sleep_ms": 3000}"#])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = s.mend(&["debug", "attempts"]).ok();
        if out.stdout.contains(&id) {
            assert!(out.stdout.contains("in its handler for"), "{}", out.stdout);
            break;
        }
        assert!(Instant::now() < deadline, "not listed: {}", out.stdout);
        std::thread::sleep(Duration::from_millis(50));
    }
    let j = s.mend(&["debug", "attempts", "--json"]).ok().json();
    assert_eq!(j["attempts"][0]["id"], id.as_str(), "{j}");
    assert_eq!(j["attempts"][0]["phase"], "handler");
}

#[test]
fn rollouts_start_list_show_and_steer() {
    let drill = tempfile::tempdir().unwrap();
    let dir = drill.path().to_str().unwrap();
    let s = start(&["--drill-dir", dir, "--drill-version", "v2"]);
    let out = s.mend(&["rollouts", "list"]).ok();
    assert!(out.stdout.starts_with("no rollouts"), "{}", out.stdout);
    // Refused: each is one line naming the field; a bad duration before any request.
    let base = ["rollouts", "start", "mend.drill", "--steps", "5%,25%,100%"];
    let refused = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend(extra);
        s.mend(&args).fails().to_owned()
    };
    let e = refused(&["--version", "v9", "--every", "10m"]);
    assert!(
        e.contains("no live node serves version `v9`") && e.contains("field version"),
        "{e}"
    );
    let e = refused(&["--version", "v2", "--every", "10"]);
    assert!(e.contains("--every") && e.contains("needs a unit"), "{e}");
    let e = refused(&["--version", "v2", "--every", "0s"]);
    assert!(e.contains("HTTP 422, field every"), "{e}");
    let mut args = vec![
        "rollouts",
        "start",
        "mend.drill",
        "--version",
        "v2",
        "--steps",
    ];
    args.extend(["5%,50%", "--every", "10m"]);
    assert!(s.mend(&args).fails().contains("field steps"));
    assert!(
        s.mend(&["rollouts", "list", "--json"]).ok().json()["rollouts"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let mut args = base.to_vec();
    args.extend([
        "--version",
        "v2",
        "--every",
        "10m",
        "--window",
        "5m",
        "--min-samples",
        "20",
    ]);
    let out = s.mend(&args).ok();
    assert!(
        out.stdout
            .contains("canary v2 of mend.drill at 5% (steps [5%],25%,100%)"),
        "{}",
        out.stdout
    );
    let j = s.mend(&["rollouts", "list", "--json"]).ok().json();
    let id = j["rollouts"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(j["rollouts"][0]["guard"]["window_secs"], 300);
    assert_eq!(j["rollouts"][0]["guard"]["min_samples"], 20);
    let table = s.mend(&["rollouts", "list"]).ok().stdout;
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("SHARE") && header.contains("CANARY FAILED"),
        "{table}"
    );
    assert!(table.contains(&id) && table.contains("running"), "{table}");
    let shown = s.mend(&["rollouts", "show", &id]).ok().stdout;
    for want in [
        "against stable (unversioned)",
        "window     300 s, verdict not_enough",
        "decisions:",
        "started",
    ] {
        assert!(shown.contains(want), "{want} in {shown}");
    }
    let out = s.mend(&["rollouts", "pause", &id]).ok();
    assert!(out.stdout.contains("paused"), "{}", out.stdout);
    let e = s.mend(&["rollouts", "pause", &id]).fails().to_owned();
    assert!(e.contains("it is paused") && e.contains("HTTP 409"), "{e}");
    s.mend(&["rollouts", "resume", &id]).ok();
    let j = s.mend(&["rollouts", "promote", &id, "--json"]).ok().json();
    assert_eq!(j["state"], "promoted");
    assert_eq!(j["share"], 10_000);
    s.mend(&["rollouts", "abort", &id]).fails();
    let e = s
        .mend(&["rollouts", "show", "01937a4e-0000-7000-8000-000000000000"])
        .fails()
        .to_owned();
    assert!(e.contains("HTTP 404"), "{e}");
}

#[test]
fn bad_input_is_one_clear_line_before_any_request() {
    // No server: these must fail on the input, not on the connection.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("@{}", dir.path().join("missing.json").display());
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["enqueue", "noop", "--args", "{to: a}"],
            &["--args is not valid JSON"],
        ),
        (
            &["enqueue", "noop", "--args", "not json"],
            &["--args is not valid JSON"],
        ),
        (&["enqueue", "noop", "--delay", "soon"], &["--delay", "30s"]),
        (&["enqueue", "noop", "--timeout", "30"], &["needs a unit"]),
        (
            &["enqueue", "noop", "--timeout", "1.5s"],
            &["--timeout", "not a duration", "1h30m"],
        ),
        (
            &["enqueue", "noop", "--args", &missing],
            &["cannot read the file"],
        ),
        (
            &["jobs", "list", "--server", "ftp://example.com"],
            &["http://"],
        ),
    ];
    for (args, says) in cases {
        let mut all = args.to_vec();
        if !all.contains(&"--server") {
            all.extend(["--server", &nowhere]);
        }
        let line = run(&all, &[]).fails().to_owned();
        assert!(says.iter().all(|s| line.contains(s)), "{args:?}: {line}");
    }
}

/// `mend serve` with `args`, a mend.toml holding `toml` and `env`, expected to refuse to start:
/// its stderr.
fn serve_refuses(args: &[&str], toml: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mend.toml"), toml).unwrap();
    let db = common::sqlite_url(dir.path(), "t.db");
    let out = mend_cmd()
        .args(["serve", "--database", &db, "--bind", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{args:?} {toml:?} {env:?} was accepted"
    );
    assert!(out.stdout.is_empty(), "it never listened");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn serve_durations_take_units_and_bad_ones_say_what_is_accepted() {
    // A bad value anywhere stops `mend serve` before it listens, naming the setting and the
    // forms it takes.
    let err = serve_refuses(&["--drain", "30"], "", &[]);
    assert!(
        err.contains("--drain") && err.contains("needs a unit") && err.contains("30s"),
        "{err}"
    );
    let err = serve_refuses(&["--shutdown-grace", "a bit"], "", &[]);
    assert!(
        err.contains("--shutdown-grace") && err.contains("500ms, 30s, 2m, 1h30m"),
        "{err}"
    );
    let err = serve_refuses(&[], "", &[("MEND_RETENTION", "1w")]);
    assert!(
        err.contains("--retention") && err.contains("unknown unit"),
        "{err}"
    );
    let err = serve_refuses(&[], "drain = \"1 minute\"\n", &[]);
    assert!(err.contains("drain in ") && err.contains("1h30m"), "{err}");
    // The old names take plain numbers, as they always did.
    let err = serve_refuses(&["--drain-ms", "2s"], "", &[]);
    assert!(err.contains("--drain-ms"), "{err}");
    let err = serve_refuses(&[], "retention_hours = \"1h\"\n", &[]);
    assert!(err.contains("retention_hours"), "{err}");

    // Good values start it, in the new spelling and the old; `start` itself uses the new flags.
    drop(start(&["--retention", "7d"]));
    drop(start(&["--retention-hours", "0"]));
    let help = run(&["serve", "--help"], &[]).ok().stdout;
    for flag in [
        "--drain <DURATION>",
        "--shutdown-grace <DURATION>",
        "--retention <DURATION>",
        "MEND_DRAIN",
    ] {
        assert!(help.contains(flag), "{flag}:\n{help}");
    }
}

#[test]
fn a_server_that_is_not_running_is_reported_as_not_reachable() {
    let url = format!("http://127.0.0.1:{}", free_port());
    for out in [
        run(&["jobs", "list", "--server", &url], &[]),
        run(&["enqueue", "noop"], &[("MEND_SERVER", url.as_str())]),
        run(&["queues", "list"], &[("MEND_SERVER", url.as_str())]),
    ] {
        let line = out.fails();
        assert!(line.contains(&format!("not reachable at {url}")), "{line}");
        assert!(
            line.contains("mend serve") && line.contains("MEND_SERVER"),
            "{line}"
        );
    }
}

#[test]
fn the_token_is_sent_and_never_shown() {
    let s = start(&["--token", TOKEN]);
    let mut outputs = Vec::new();

    let out = s.mend(&["jobs", "list"]);
    let line = out.fails().to_owned();
    assert!(
        line.contains("needs a token") && line.contains("(HTTP 401)") && line.contains("--token"),
        "{line}"
    );
    outputs.push(out);

    let out = s.mend(&["jobs", "list", "--token", "wrong-token"]);
    let line = out.fails().to_owned();
    assert!(
        line.contains("not valid") && line.contains("(HTTP 401)"),
        "{line}"
    );
    outputs.push(out);

    let out = s.mend(&["enqueue", "noop", "--token", TOKEN]).ok();
    assert!(is_uuid(out.stdout.trim()));
    outputs.push(out);
    let out = s.mend(&["jobs", "list", "--token", TOKEN]).ok();
    assert!(out.stdout.contains("noop"));
    outputs.push(out);
    let out = s.mend(&["jobs", "list", "--token", TOKEN, "--json"]).ok();
    outputs.push(out);
    let out = run(
        &["queues", "list", "--server", &s.url],
        &[("MEND_API_TOKEN", TOKEN)],
    )
    .ok();
    assert!(out.stdout.contains("default"));
    outputs.push(out);

    // Help shows that the variable is used, not its value.
    for args in [
        &["jobs", "list", "--help"][..],
        &["enqueue", "--help"],
        &["queues", "list", "--help"],
    ] {
        let out = run(args, &[("MEND_API_TOKEN", TOKEN)]).ok();
        assert!(out.stdout.contains("MEND_API_TOKEN"), "{}", out.stdout);
        outputs.push(out);
    }
    // Nor is it shown when the server is unreachable.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let out = run(
        &["jobs", "list", "--server", &nowhere, "--token", TOKEN],
        &[],
    );
    out.fails();
    outputs.push(out);

    for o in &outputs {
        assert!(
            !o.stdout.contains(TOKEN) && !o.stderr.contains(TOKEN),
            "token shown: {}{}",
            o.stdout,
            o.stderr
        );
    }
}

#[test]
fn migrate_creates_a_fresh_database_at_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let url = common::sqlite_url(dir.path(), "fresh.db");
    let out = run(&["migrate", "--database", &url], &[]).ok();
    assert_eq!(
        out.stdout,
        format!(
            "{url}: schema version {} (up to date)\n",
            mend_sqlite::SCHEMA_VERSION
        )
    );
    assert!(dir.path().join("fresh.db").exists());
    // Again, from the environment, with --json: nothing to do, same version.
    let out = run(
        &["migrate", "--json"],
        &[("MEND_DATABASE_URL", url.as_str())],
    )
    .ok();
    let j = out.json();
    assert_eq!(j["schema_version"], mend_sqlite::SCHEMA_VERSION);
    assert_eq!(j["database"], url.as_str());
    let line = run(&["migrate", "--database", "mysql://localhost/x"], &[])
        .fails()
        .to_owned();
    assert!(
        line.contains("sqlite://") && line.contains("postgres://"),
        "{line}"
    );
}

#[test]
fn migrate_brings_a_postgres_schema_up_and_hides_the_password() {
    let Some(schema) = common::pg_schema("migrate on postgres", "mend_cli") else {
        return;
    };
    let url = schema.store_url();
    let out = run(&["migrate", "--database", &url, "--json"], &[]).ok();
    let j = out.json();
    assert_eq!(j["schema_version"], mend_postgres::SCHEMA_VERSION);
    // A wrong password never shows in the error.
    let bad = "postgres://postgres:hunter2@127.0.0.1:1/test";
    let line = run(&["migrate", "--database", bad], &[]).fails().to_owned();
    assert!(line.contains("cannot open the database"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
}

#[test]
fn every_command_teaches_in_its_help() {
    for args in [
        &["enqueue"][..],
        &["jobs", "list"],
        &["jobs", "show"],
        &["jobs", "cancel"],
        &["jobs", "retry"],
        &["queues", "list"],
        &["queues", "pause"],
        &["queues", "resume"],
        &["rollouts", "list"],
        &["rollouts", "show"],
        &["rollouts", "start"],
        &["rollouts", "pause"],
        &["rollouts", "resume"],
        &["rollouts", "promote"],
        &["rollouts", "abort"],
        &["migrate"],
    ] {
        let mut all = args.to_vec();
        all.push("--help");
        let out = run(&all, &[]).ok();
        assert!(
            out.stdout.contains("Example"),
            "{args:?} --help has no example:\n{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(&format!("mend {}", args.join(" "))),
            "{args:?}:\n{}",
            out.stdout
        );
    }
    for group in ["jobs", "queues", "rollouts"] {
        let out = run(&[group, "--help"], &[]).ok();
        assert!(
            out.stdout.contains("Example"),
            "{group} --help:\n{}",
            out.stdout
        );
    }
}

/// `mend jobs show` printed `state:` followed by `state`.
fn assert_state_line(stdout: &str, state: &str) {
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("state:") && l.ends_with(state)),
        "{stdout}"
    );
}
