//! # mend-executors — built-in job kinds that do real work without writing Rust
//!
//! `mend serve` registers these so that any language can enqueue useful jobs over HTTP:
//!
//! | kind   | args                                                                     | does |
//! |--------|--------------------------------------------------------------------------|------|
//! | `noop` | `{"sleep_ms": n}` (optional)                                             | sleeps, then completes; for tests and benchmarks |
//! | `http` | `{"method", "url", "headers", "body", "timeout_ms"}`                     | sends one HTTP request (a webhook); 2xx completes, 429/5xx/network errors retry (honouring `Retry-After`), other 4xx discard |
//! | `exec` | `{"command", "args", "input", "timeout_ms"}`                             | runs an allow-listed program with `input` as JSON on stdin; exit 0 completes, anything else retries; timeouts kill the whole process group |
//!
//! Every kind checks its args the same way at enqueue time ([`validate`]) and when it runs
//! (bad args discard the job at once with a message that names the field): unknown fields and
//! wrong types are refused, not ignored.
//!
//! ```
//! use mend_executors::{ExecCommand, ExecutorsConfig};
//!
//! let config = ExecutorsConfig::default()
//!     .allow("thumbnail", ExecCommand::new("/usr/local/bin/thumbnail").with_args(["--fast"]));
//! let mut registry = mend::Registry::new();
//! mend_executors::register(&mut registry, &config);
//! assert_eq!(registry.kinds(), ["exec", "http", "noop"]);
//!
//! // At enqueue time, refuse what could never run:
//! let args = serde_json::json!({"command": "rm", "args": ["-rf", "/"]});
//! let err = mend_executors::validate("exec", &args, &config).unwrap_err();
//! assert!(err.contains("not in the exec allow-list"));
//! ```
//!
//! In `mend.toml` the allow-list is the `[exec.allow.NAME]` tables (see [`ExecutorsConfig`]).

mod args;
pub mod config;
pub mod exec;
pub mod http;
pub mod noop;
mod text;

use std::sync::Arc;

pub use config::{ExecCommand, ExecVersion, ExecutorsConfig, HttpVersion};

/// The kinds [`register`] adds, in the order listed in the crate docs.
pub const KINDS: [&str; 3] = [noop::KIND, http::KIND, exec::KIND];

/// Register the built-in kinds (`noop`, `http`, `exec`) on `registry`, replacing any handler
/// already registered under those names.
///
/// None of them sets a per-kind attempt timeout: each enforces the `timeout_ms` of its args
/// itself (with a clear message), and the worker's attempt timeout (or the job's own
/// `timeout_ms`) still applies on top of it. When that one fires first, an `exec` job's
/// process group is killed all the same.
pub fn register(registry: &mut mend::Registry, config: &ExecutorsConfig) {
    registry.register_raw(noop::KIND, None, noop::run);

    let http = http::HttpExecutor::new();

    for (name, version) in &config.http_versions {
        let http = http.clone();
        let version = version.clone();
        registry.register_raw_version(http::KIND, name, None, move |ctx, args| {
            let http = http.clone();
            let args = version.rewrite(args);
            async move { http.run(ctx, args).await }
        });
    }

    registry.register_raw(http::KIND, None, move |ctx, args| {
        let http = http.clone();
        async move { http.run(ctx, args).await }
    });

    for name in config.versions.keys() {
        let versioned = Arc::new(config.for_version(name));
        registry.register_raw_version(exec::KIND, name, None, move |ctx, args| {
            let config = versioned.clone();
            async move { exec::run(&config, ctx, args).await }
        });
    }
    let config = Arc::new(config.clone());
    registry.register_raw(exec::KIND, None, move |ctx, args| {
        let config = config.clone();
        async move { exec::run(&config, ctx, args).await }
    });
}

/// Check a job's args for one of the built-in kinds before it is enqueued, so a client hears
/// about a mistake at once instead of finding a discarded job later.
///
/// Returns `Ok(())` for kinds this crate does not own (they may be handled by other workers).
/// The error names the field and what was expected, e.g. ``field `url` must be an http:// or
/// https:// URL, got scheme `ftp` ``; it never contains header values.
pub fn validate(
    kind: &str,
    args: &serde_json::Value,
    config: &ExecutorsConfig,
) -> Result<(), String> {
    match kind {
        noop::KIND => noop::NoopArgs::parse(args).map(drop),
        http::KIND => http::HttpRequest::parse(args).map(drop),
        exec::KIND => exec::ExecRequest::parse(args, config).map(drop),
        _ => Ok(()),
    }
}

/// The fatal error for args that do not fit their kind.
fn invalid_args(kind: &str, message: String) -> mend::JobError {
    mend::JobError::fatal(format!(
        "invalid args for kind `{kind}`: {message}; fix the args, then retry the job"
    ))
}
