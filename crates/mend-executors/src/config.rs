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
