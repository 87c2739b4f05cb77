//! Helpers shared by mend-cli's integration tests: the `mend` binary as a command with the
//! developer's environment cleared, the address a started `mend serve` prints, and a
//! PostgreSQL schema per test. No HTTP client lives here: the shared test client is
//! mend-test's.

// Each test file is its own crate and uses only some of these.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `mend` binary, without the `MEND_*` variables (and HTTP proxies) a developer's shell
/// may have set, so each test says what it means.
pub(crate) fn mend() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mend"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MEND_") {
            c.env_remove(name);
        }
    }
    for v in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
        c.env_remove(v);
    }
    c
}

/// The `sqlite://` URL of the database file `file` in `dir`.
pub(crate) fn sqlite_url(dir: &std::path::Path, file: &str) -> String {
    format!("sqlite://{}", dir.join(file).display())
}

/// A fresh schema on the test PostgreSQL server, dropped (with everything in it) when the
/// returned value is; `None`, after printing SKIPPED, when no server is configured.
pub(crate) fn pg_schema(test: &str, prefix: &str) -> Option<mend_test::pg::Schema> {
    let server = mend_test::pg::server_url(test)?;
    Some(mend_test::pg::Schema::new(&server, prefix))
}

/// The `http://HOST:PORT` a `mend serve` started with a piped stdout prints on its first
/// line; stdout is drained from then on so the server never blocks on it. Kills the child and
/// panics when no such line comes within 30 s.
pub(crate) fn listening_url(child: &mut Child) -> String {
    let stdout = child
        .stdout
        .take()
        .expect("mend serve started with a piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(Ok(l))) => l,
        other => {
            let _ = child.kill();
            panic!("mend serve did not print its address: {other:?}");
        }
    };
    line.trim()
        .strip_prefix("mend listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned()
}

/// A running `mend serve`, killed when dropped.
pub(crate) struct Node {
    pub(crate) child: Child,
    /// `http://HOST:PORT`.
    pub(crate) url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mend serve` on `db`, in `dir` (so no developer's `mend.toml` is read), on a free loopback
/// port, draining fast when stopped.
pub(crate) fn serve(db: &str, dir: &std::path::Path) -> Node {
    let mut child = mend()
        .args(["serve", "--database", db, "--bind", "127.0.0.1:0"])
        .args(["--shutdown-grace", "50ms", "--drain", "500ms"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mend serve");
    let url = listening_url(&mut child);
    Node { child, url }
}
