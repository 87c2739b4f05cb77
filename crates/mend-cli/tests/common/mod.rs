//! Helpers shared by mend-cli's integration tests (`cli.rs`, `serve.rs`, `chaos.rs`): the
//! `mend` binary as a command with the developer's environment cleared, and a PostgreSQL
//! schema per test. No HTTP client lives here: the shared test client is mend-test's.

// Each test file is its own crate and uses only some of these.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

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
