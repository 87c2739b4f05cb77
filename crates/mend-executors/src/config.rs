//! What an operator configures for the built-in executors: the allow-list of programs the
//! `exec` kind may run. Read from the `[exec]` table of `mend.toml`:
//!
//! ```toml
//! [exec.allow.thumbnail]               # jobs say {"command": "thumbnail", ...}
//! program = "/usr/local/bin/thumbnail" # run as is: no shell
//! args = ["--quality", "80"]           # always passed first
//! job_args = false                     # may jobs add arguments? (default: no)
//! env = { MAGICK_HOME = "/opt/magick" } # extra environment; nothing else is inherited
//! timeout_ms = 60000                   # default and upper limit of a job's timeout_ms
//! ```
//!
//! Versions for gray release (see `mend::rollout`): `[exec.versions.NAME.allow.CMD]` gives
//! version NAME of the `exec` kind its own program (or arguments) for CMD; commands it does not
//! name run as in the base list. `[http.versions.NAME]` (read by `mend serve` into
//! [`ExecutorsConfig::http_versions`]) gives version NAME of the `http` kind its own URL: a
//! job's URL starting with `replace_prefix` is sent to `with` + the rest instead.
//!
//! ```toml
//! [exec.versions.v2.allow.thumbnail]
//! program = "/usr/local/bin/thumbnail-2"
//!
//! [http.versions.v2]
//! replace_prefix = "https://hooks.example.com/v1/"
//! with = "https://hooks.example.com/v2/"
//! ```
//!
//! Allowing a program with `job_args = true` allows every option it has (think `curl -o`,
//! `tar --checkpoint-action`, `find -exec`): only do it for programs whose every argument is
//! safe in a job author's hands. Jobs can always pass data on stdin (`input`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Settings of the built-in executors (the `[exec]` table of `mend.toml`). The default allows
/// no command at all: `exec` jobs are refused until an operator names what may run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorsConfig {
    /// The commands `exec` jobs may run, by the name the jobs use in their `command` field
    /// (`[exec.allow.NAME]` in `mend.toml`; `exec_allow` is accepted too).
    #[serde(default, rename = "allow", alias = "exec_allow")]
    pub exec_allow: BTreeMap<String, ExecCommand>,
    /// Named versions of the `exec` kind (`[exec.versions.NAME.allow.CMD]`).
    #[serde(default)]
    pub versions: BTreeMap<String, ExecVersion>,
    /// Named versions of the `http` kind (the `[http.versions.NAME]` tables of `mend.toml`).
    #[serde(skip)]
    pub http_versions: BTreeMap<String, HttpVersion>,
}

/// One named version of the `exec` kind: the commands it runs differently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecVersion {
    /// Commands by name, replacing the base list's entries of the same name.
    #[serde(default)]
    pub allow: BTreeMap<String, ExecCommand>,
}

impl ExecutorsConfig {
    /// The allow-list version `name` runs with: the base list, its own entries on top.
    pub fn for_version(&self, name: &str) -> ExecutorsConfig {
        let mut out = self.clone();
        if let Some(v) = self.versions.get(name) {
            out.exec_allow
                .extend(v.allow.iter().map(|(k, c)| (k.clone(), c.clone())));
        }
        out
    }
}

/// One named version of the `http` kind: where its requests go instead.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpVersion {
    /// A job's URL starting with this...
    pub replace_prefix: String,
    /// ...is sent here plus the rest of it.
    pub with: String,
}

impl HttpVersion {
    /// `args` with its `url` rewritten when it starts with [`HttpVersion::replace_prefix`].
    pub fn rewrite(&self, mut args: serde_json::Value) -> serde_json::Value {
        if let Some(url) = args.get("url").and_then(|u| u.as_str()) {
            if let Some(rest) = url.strip_prefix(&self.replace_prefix) {
                let moved = format!("{}{rest}", self.with);
                args["url"] = serde_json::Value::String(moved);
            }
        }
        args
    }
}

impl ExecutorsConfig {
    /// Allow `exec` jobs to run `command` under `name` (replacing an earlier one of that name).
    pub fn allow(mut self, name: impl Into<String>, command: ExecCommand) -> Self {
        self.exec_allow.insert(name.into(), command);
        self
    }
}

/// One program the `exec` kind may run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecCommand {
    /// The program: a path, or a bare name looked up on `PATH`. It is run directly, never
    /// through a shell, so the job's args are never interpreted by one (unless the program is
    /// a shell and the operator's `args` make it so).
    pub program: PathBuf,
    /// Arguments put before the job's own `args`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Whether jobs may append arguments of their own (default `false`: a job's `args` are
    /// refused). See the module docs before turning it on.
    #[serde(default)]
    pub job_args: bool,
    /// Environment variables the program gets, besides `PATH`, `LANG`, `TZ` and the job's
    /// `MEND_JOB_ID`/`MEND_JOB_ATTEMPT`. Nothing else of the server's environment (its API
    /// token, its database URL, cloud credentials) is passed on.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long one run may take when the job does not say (`timeout_ms` in `mend.toml`); a
    /// job may ask for less, never for more. `None`: the job's `timeout_ms`, or
    /// [`crate::exec::DEFAULT_TIMEOUT`].
    #[serde(default, rename = "timeout_ms", deserialize_with = "opt_millis")]
    pub timeout: Option<Duration>,
}

impl ExecCommand {
    /// A command running `program` with no fixed args and no timeout of its own.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        ExecCommand {
            program: program.into(),
            args: Vec::new(),
            job_args: false,
            env: BTreeMap::new(),
            timeout: None,
        }
    }

    /// Let jobs append arguments of their own (see the module docs).
    pub fn with_job_args(mut self, allowed: bool) -> Self {
        self.job_args = allowed;
        self
    }

    /// Add an environment variable for the program.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Arguments put before the job's own.
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// The default and upper limit of a job's timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

fn opt_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let ms = Option::<u64>::deserialize(d)?;
    match ms {
        Some(0) => Err(serde::de::Error::custom(
            "timeout_ms must be at least 1 (milliseconds)",
        )),
        other => Ok(other.map(Duration::from_millis)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_exec_table() {
        let config: ExecutorsConfig = serde_json::from_value(json!({
            "allow": {
                "thumb": {"program": "/bin/thumb", "args": ["-q"], "timeout_ms": 1500},
                "echo": {"program": "echo"}
            }
        }))
        .expect("valid config");
        assert_eq!(
            config.exec_allow["thumb"],
            ExecCommand::new("/bin/thumb")
                .with_args(["-q"])
                .with_timeout(Duration::from_millis(1500))
        );
        assert_eq!(config.exec_allow["echo"], ExecCommand::new("echo"));

        let empty: ExecutorsConfig = serde_json::from_value(json!({})).expect("empty is fine");
        assert!(empty.exec_allow.is_empty());
    }

    #[test]
    fn typos_are_refused() {
        let err = serde_json::from_value::<ExecutorsConfig>(json!({
            "allow": {"x": {"program": "/bin/x", "timeout": 5}}
        }))
        .expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
        let err = serde_json::from_value::<ExecutorsConfig>(json!({"alow": {}}))
            .expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `alow`"), "{err}");
        let err = serde_json::from_value::<ExecutorsConfig>(json!({
            "allow": {"x": {"program": "/bin/x", "timeout_ms": 0}}
        }))
        .expect_err("zero timeout");
        assert!(err.to_string().contains("at least 1"), "{err}");
    }
}

#[cfg(test)]
mod version_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn versions_override_commands_and_rewrite_urls() {
        let config: ExecutorsConfig = toml::from_str(
            r#"
            [allow.thumb]
            program = "/bin/thumb"
            [allow.other]
            program = "/bin/other"
            [versions.v2.allow.thumb]
            program = "/bin/thumb-2"
            "#,
        )
        .unwrap();
        let v2 = config.for_version("v2");
        assert_eq!(
            v2.exec_allow["thumb"].program,
            PathBuf::from("/bin/thumb-2")
        );
        assert_eq!(v2.exec_allow["other"].program, PathBuf::from("/bin/other"));
        assert_eq!(
            config.exec_allow["thumb"].program,
            PathBuf::from("/bin/thumb")
        );

        let h = HttpVersion {
            replace_prefix: "https://a.example/v1/".into(),
            with: "https://a.example/v2/".into(),
        };
        let moved = h.rewrite(serde_json::json!({"url": "https://a.example/v1/hook?x=1"}));
        assert_eq!(moved["url"], "https://a.example/v2/hook?x=1");
        let kept = h.rewrite(serde_json::json!({"url": "https://b.example/v1/hook"}));
        assert_eq!(kept["url"], "https://b.example/v1/hook");

        let mut config = config;
        config.http_versions.insert("v2".into(), h);
        let mut registry = mend::Registry::new();
        crate::register(&mut registry, &config);
        let versions = registry.versions();
        assert_eq!(versions["exec"], ["v2"]);
        assert_eq!(versions["http"], ["v2"]);
        assert!(registry.handler_for("exec", Some("v2")).is_some());
        assert!(registry.handler_for("exec", None).is_some());
    }
}
