//! The `exec` kind: run one allow-listed program and judge its exit.
//!
//! Args: `{"command": "name", "args": ["…"], "input": <JSON>, "timeout_ms": n}`; only
//! `command` is required, and it must be a key of [`ExecutorsConfig::exec_allow`] (the
//! `[exec.allow.NAME]` tables of `mend.toml`). The program runs directly (no shell) with the
//! operator's args followed by the job's, `input` (or `null`) written to its stdin as one line
//! of JSON, and `MEND_JOB_ID` / `MEND_JOB_ATTEMPT` in its environment (use the id as the
//! idempotency key of effects elsewhere: a job runs at least once).
//!
//! | how it ends | job |
//! |---|---|
//! | exit 0 | completed, result `{"exit_code": 0, "stdout_tail": "…"}` (last [`STDOUT_TAIL`] bytes) |
//! | another exit code, or killed by a signal | retried; the error has the code and the last [`STDERR_TAIL`] bytes of stderr |
//! | past its timeout | retried: "timed out after …, process group killed" |
//! | the attempt is cancelled, shut down or timed out by the worker | the process group is killed |
//!
//! The program runs in a process group of its own, and the whole group is killed (`SIGKILL`)
//! when the attempt ends, whichever way: nothing the program started (a grandchild, a
//! background job) outlives its attempt.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mend::{JobContext, JobError};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::args::Fields;
use crate::config::{ExecCommand, ExecutorsConfig};
use crate::text::Tail;

/// The kind name.
pub const KIND: &str = "exec";

/// Timeout of one run when neither the job nor the allow-list entry sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Bytes of stdout kept for the result (the end of the output).
pub const STDOUT_TAIL: usize = 4096;

/// Bytes of stderr kept for an error message (the end of the output).
pub const STDERR_TAIL: usize = 2048;

/// How long the output pipes may stay open once the program has exited and its group was
/// killed (only a process that left the group can hold them longer).
const PIPE_GRACE: Duration = Duration::from_millis(500);

/// How long reaping a killed program may take before the attempt gives up waiting.
const REAP_GRACE: Duration = Duration::from_secs(5);

const FIELDS: [&str; 4] = ["command", "args", "input", "timeout_ms"];

/// The parsed args of an `exec` job, resolved against the allow-list.
#[derive(Debug, Clone)]
pub struct ExecRequest<'c> {
    /// The allow-list name the job used.
    pub name: String,
    /// What that name runs.
    pub command: &'c ExecCommand,
    /// The job's own args (after the operator's).
    pub args: Vec<String>,
    /// Written to stdin as JSON.
    pub input: Value,
    /// How long the run may take.
    pub timeout: Duration,
}

impl<'c> ExecRequest<'c> {
    /// Read and check an `exec` job's args against `config`'s allow-list.
    pub fn parse(args: &Value, config: &'c ExecutorsConfig) -> Result<Self, String> {
        let f = Fields::new(args, &FIELDS)?;
        let name = f.req_str("command")?;
        let Some(command) = config.exec_allow.get(name) else {
            let allowed = if config.exec_allow.is_empty() {
                "no command is allowed yet".to_owned()
            } else {
                let names: Vec<_> = config.exec_allow.keys().map(|k| format!("`{k}`")).collect();
                format!("allowed: {}", names.join(", "))
            };
            return Err(format!(
                "command `{name}` is not in the exec allow-list; add it to [exec] in mend.toml \
                 (as [exec.allow.{name}]) or use an allowed command ({allowed})"
            ));
        };
        let job_args = f.str_array("args")?;
        if !job_args.is_empty() && !command.job_args {
            return Err(format!(
                "field `args`: command `{name}` takes no arguments from jobs (its allow-list entry \
                 fixes them); pass data in `input` instead, or set job_args = true in \
                 [exec.allow.{name}] if every option of the program is safe for job authors"
            ));
        }
        if let Some(i) = job_args.iter().position(|a| a.contains('\0')) {
            return Err(format!("field `args`: item {i} contains a NUL byte"));
        }
        let input = f.get("input").cloned().unwrap_or(Value::Null);
        let timeout = match (f.opt_millis("timeout_ms", 1)?, command.timeout) {
            (Some(asked), Some(limit)) if asked > limit => {
                return Err(format!(
                    "field `timeout_ms` asks for {asked:?}, more than the {limit:?} that \
                     mend.toml allows command `{name}`"
                ));
            }
            (Some(asked), _) => asked,
            (None, Some(limit)) => limit,
            (None, None) => DEFAULT_TIMEOUT,
        };
        Ok(ExecRequest {
            name: name.to_owned(),
            command,
            args: job_args,
            input,
            timeout,
        })
    }
}

/// The only variables of the server's environment an `exec` program inherits.
const INHERITED_ENV: [&str; 4] = ["PATH", "LANG", "LC_ALL", "TZ"];

/// Run one attempt of an `exec` job.
pub async fn run(
    config: &ExecutorsConfig,
    ctx: JobContext,
    args: Value,
) -> Result<Option<Value>, JobError> {
    let req = ExecRequest::parse(&args, config).map_err(|m| crate::invalid_args(KIND, m))?;
    let name = &req.name;
    let program = &req.command.program;

    let mut cmd = tokio::process::Command::new(program);
    // A clean environment: the server's own (its API token, database URL, credentials) stays
    // with the server.
    cmd.env_clear();
    for key in INHERITED_ENV {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd.envs(&req.command.env);
    cmd.args(&req.command.args)
        .args(&req.args)
        .env("MEND_JOB_ID", ctx.id().to_string())
        .env("MEND_JOB_ATTEMPT", ctx.attempt().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            return Err(JobError::fatal(format!(
                "cannot start command `{name}` ({}): {e}; fix [exec.allow.{name}] in mend.toml",
                program.display()
            )));
        }
        Err(e) => {
            return Err(JobError::retry(format!(
                "cannot start command `{name}` ({}): {e}",
                program.display()
            )));
        }
    };
    // From here on, the group dies with this attempt, even if this future is dropped (the
    // worker cancelled or timed out the attempt).
    let mut group = ProcessGroup::new(child.id());
    tracing::debug!(job = %ctx.id(), attempt = ctx.attempt(), command = %name, pid = ?child.id(), "exec job started");

    let stdin = child.stdin.take().map(|mut stdin| {
        let mut line = serde_json::to_vec(&req.input).unwrap_or_else(|_| b"null".to_vec());
        line.push(b'\n');
        // The program may never read it, or exit first: a broken pipe is not an error.
        AbortOnDrop(tokio::spawn(async move {
            let _ = stdin.write_all(&line).await;
            let _ = stdin.shutdown().await;
        }))
    });
    let mut stdout = Collector::spawn(child.stdout.take(), STDOUT_TAIL);
    let mut stderr = Collector::spawn(child.stderr.take(), STDERR_TAIL);

    let ended = tokio::select! {
        status = child.wait() => Ended::Exited(status),
        () = tokio::time::sleep(req.timeout) => Ended::TimedOut,
        () = ctx.cancelled() => Ended::Cancelled,
    };
    // Whichever way it went, nothing the program started outlives the attempt.
    group.kill();
    if !matches!(ended, Ended::Exited(_)) {
        let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
    }
    let deadline = tokio::time::Instant::now() + PIPE_GRACE;
    stdout.finish(deadline).await;
    stderr.finish(deadline).await;
    drop(stdin);

    let stderr_tail = || {
        let t = stderr.text();
        if t.trim().is_empty() {
            "(stderr was empty)".to_owned()
        } else {
            format!("stderr tail: {t}")
        }
    };
    match ended {
        Ended::Exited(Ok(status)) if status.success() => {
            Ok(Some(json!({"exit_code": 0, "stdout_tail": stdout.text()})))
        }
        Ended::Exited(Ok(status)) => Err(JobError::retry(format!(
            "command `{name}` {}; {}",
            describe_exit(status),
            stderr_tail()
        ))),
        Ended::Exited(Err(e)) => Err(JobError::retry(format!(
            "waiting for command `{name}` failed: {e}; process group killed"
        ))),
        Ended::TimedOut => Err(JobError::retry(format!(
            "command `{name}` timed out after {:?}, process group killed; {}",
            req.timeout,
            stderr_tail()
        ))),
        Ended::Cancelled => Err(JobError::retry(format!(
            "command `{name}` was stopped with its attempt, process group killed"
        ))),
    }
}

enum Ended {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("was killed by signal {sig} ({s})"),
            Err(_) => format!("was killed by signal {sig}"),
        },
        (None, None) => format!("ended with {status}"),
    }
}

/// The process group of one run (its id is the program's pid). Killed once, explicitly or
/// when dropped.
struct ProcessGroup {
    pgid: Option<Pid>,
}

impl ProcessGroup {
    fn new(pid: Option<u32>) -> Self {
        ProcessGroup {
            pgid: pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw),
        }
    }

    fn kill(&mut self) {
        let Some(pgid) = self.pgid.take() else {
            return;
        };
        match killpg(pgid, Signal::SIGKILL) {
            // ESRCH: every process of the group has already gone.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(pgid = pgid.as_raw(), error = %e, "could not kill an exec job's process group")
            }
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads one output pipe to its end, keeping its tail.
struct Collector {
    tail: Arc<Mutex<Tail>>,
    task: Option<AbortOnDrop>,
}

impl Collector {
    fn spawn<R: AsyncRead + Unpin + Send + 'static>(pipe: Option<R>, cap: usize) -> Self {
        let tail = Arc::new(Mutex::new(Tail::new(cap)));
        let task = pipe.map(|mut pipe| {
            let tail = tail.clone();
            AbortOnDrop(tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                    lock(&tail).push(&buf[..n]);
                }
            }))
        });
        Collector { tail, task }
    }

    /// Wait until the pipe is read to its end, or `deadline`; then stop reading.
    async fn finish(&mut self, deadline: tokio::time::Instant) {
        if let Some(mut task) = self.task.take() {
            let _ = tokio::time::timeout_at(deadline, &mut task.0).await;
        }
    }

    fn text(&self) -> String {
        lock(&self.tail).text()
    }
}

fn lock(tail: &Mutex<Tail>) -> MutexGuard<'_, Tail> {
    tail.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> ExecutorsConfig {
        ExecutorsConfig::default()
            .allow("echo", ExecCommand::new("/bin/echo").with_job_args(true))
            .allow(
                "limited",
                ExecCommand::new("/bin/true").with_timeout(Duration::from_secs(5)),
            )
    }

    #[test]
    fn resolves_the_allow_list_and_timeouts() {
        let config = config();
        let req = ExecRequest::parse(&json!({"command": "echo", "args": ["hi"]}), &config)
            .expect("allowed");
        assert_eq!(req.command.program, std::path::Path::new("/bin/echo"));
        assert_eq!(req.args, ["hi"]);
        assert_eq!(req.input, Value::Null);
        assert_eq!(req.timeout, DEFAULT_TIMEOUT);
        let req = ExecRequest::parse(&json!({"command": "limited"}), &config).expect("allowed");
        assert_eq!(req.timeout, Duration::from_secs(5), "the entry's timeout");
        let req = ExecRequest::parse(&json!({"command": "limited", "timeout_ms": 100}), &config)
            .expect("less is fine");
        assert_eq!(req.timeout, Duration::from_millis(100));
        let err = ExecRequest::parse(&json!({"command": "limited", "timeout_ms": 6000}), &config)
            .expect_err("more than the entry allows");
        assert!(err.contains("field `timeout_ms` asks for 6s"), "{err}");
    }

    #[test]
    fn refuses_what_is_not_allowed_or_malformed() {
        let config = config();
        let err = ExecRequest::parse(&json!({"command": "rm"}), &config).expect_err("not allowed");
        assert!(
            err.starts_with(
                "command `rm` is not in the exec allow-list; add it to [exec] in mend.toml"
            ),
            "{err}"
        );
        assert!(err.contains("allowed: `echo`, `limited`"), "{err}");
        let err = ExecRequest::parse(&json!({"command": "rm"}), &ExecutorsConfig::default())
            .expect_err("nothing allowed");
        assert!(err.contains("no command is allowed yet"), "{err}");
        for (args, want) in [
            (json!({}), "field `command` is required"),
            (
                json!({"command": "echo", "args": "hi"}),
                "field `args` must be an array",
            ),
            (json!({"command": "echo", "args": ["a\u{0}b"]}), "NUL"),
            (
                json!({"command": "echo", "timeout_ms": "1"}),
                "field `timeout_ms`",
            ),
            (
                json!({"command": "echo", "stdin": 1}),
                "unknown field `stdin`",
            ),
        ] {
            let err = ExecRequest::parse(&args, &config).expect_err(&args.to_string());
            assert!(err.contains(want), "{args}: {err}");
        }
    }
}
