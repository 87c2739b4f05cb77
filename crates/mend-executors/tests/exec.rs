//! The `exec` kind through a real worker and SQLite store: exit 0 completes with the stdout
//! tail; a non-zero exit retries with the code and the stderr tail; stdin gets the JSON input;
//! a timeout, a cancel, or the worker's own attempt timeout kills the whole process tree; only
//! allow-listed commands run.

#![expect(
    clippy::expect_used,
    reason = "test set-up fails loudly: a broken fixture is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::Env;
use mend::{ErrorKind, JobState, NewJob};
use mend_executors::{ExecCommand, ExecutorsConfig};
use mend_test::wait::wait_until;
use serde_json::json;

/// `sh` runs its first job arg as a script; `cat` echoes stdin.
fn config() -> ExecutorsConfig {
    ExecutorsConfig::default()
        .allow(
            "sh",
            ExecCommand::new("/bin/sh")
                .with_args(["-c"])
                .with_job_args(true),
        )
        .allow("env", ExecCommand::new("env").with_env("GREETING", "hi"))
        .allow("cat", ExecCommand::new("cat"))
        .allow(
            "missing",
            ExecCommand::new("/nonexistent/mend-test-program"),
        )
}

/// Runs an `exec` job with `args` (at most `max_attempts` attempts) until it is `state`.
async fn exec_until(
    env: &Env,
    args: serde_json::Value,
    max_attempts: i32,
    state: JobState,
) -> mend::JobRow {
    let id = env.enqueue("exec", args, max_attempts).await;
    env.wait_for_state(id, state).await
}

fn no_retry(c: &mut mend::WorkerConfig) {
    c.retry_policy = Arc::new(mend::FixedDelay(Duration::from_secs(3600)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_0_completes_with_the_stdout_tail() {
    let env = Env::start(config()).await;
    let job = exec_until(
        &env,
        json!({"command": "sh", "args": ["echo hello; echo noise >&2; printf '%s' \"$1\"", "sh", "world"]}),
        3,
        JobState::Completed,
    )
    .await;
    assert_eq!(
        job.result,
        Some(json!({"exit_code": 0, "stdout_tail": "hello\nworld"}))
    );
    assert!(job.errors.is_empty(), "{:#?}", job.errors);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_tail_of_a_long_output_is_kept() {
    let env = Env::start(config()).await;
    // 10,000 lines of "line N": far past the 4 KiB tail.
    let script = "i=0; while [ $i -lt 10000 ]; do echo \"line $i\"; i=$((i+1)); done";
    let job = exec_until(
        &env,
        json!({"command": "sh", "args": [script]}),
        1,
        JobState::Completed,
    )
    .await;
    let result = job.result.expect("a result");
    let tail = result["stdout_tail"].as_str().expect("a string");
    assert!(tail.starts_with('…'), "marked as cut: {:?}", &tail[..20]);
    assert!(tail.ends_with("line 9999\n"), "the end is kept");
    assert!(tail.len() <= 4096 + '…'.len_utf8(), "{}", tail.len());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_zero_exit_is_retried_with_code_and_stderr() {
    let env = Env::start(config()).await;
    let job = exec_until(
        &env,
        json!({"command": "sh", "args": ["echo partial; echo 'disk full' >&2; exit 3"]}),
        2,
        JobState::Discarded,
    )
    .await;
    assert_eq!(job.attempt, 2, "retried, then out of attempts");
    assert_eq!(job.errors.len(), 2);
    for (i, e) in job.errors.iter().enumerate() {
        assert_eq!((e.attempt, e.kind), (i as i32 + 1, ErrorKind::Error));
        assert_eq!(
            e.message,
            "command `sh` exited with code 3; stderr tail: disk full\n"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_gets_the_json_input_and_the_env_has_the_job_id() {
    let env = Env::start(config()).await;
    let input = json!({"image": "cat.png", "sizes": [64, 128], "note": "é ✓"});
    let job = exec_until(
        &env,
        json!({"command": "cat", "input": input}),
        1,
        JobState::Completed,
    )
    .await;
    let result = job.result.expect("a result");
    let echoed = result["stdout_tail"].as_str().expect("a string");
    assert!(echoed.ends_with('\n'), "one line: {echoed:?}");
    let got: serde_json::Value = serde_json::from_str(echoed).expect("JSON on stdin");
    assert_eq!(got, input);

    // No input: `null`.
    let job = exec_until(&env, json!({"command": "cat"}), 1, JobState::Completed).await;
    assert_eq!(job.result.expect("a result")["stdout_tail"], "null\n");

    let job = exec_until(
        &env,
        json!({"command": "sh", "args": ["printf '%s/%s' \"$MEND_JOB_ID\" \"$MEND_JOB_ATTEMPT\""]}),
        1,
        JobState::Completed,
    )
    .await;
    let id = job.id;
    assert_eq!(
        job.result.expect("a result")["stdout_tail"],
        format!("{id}/1")
    );
    env.stop().await;
}

/// A script that starts a grandchild `sleep 1000`, writes its pid to `pid_file`, and waits.
fn tree_script(pid_file: &Path) -> String {
    format!(
        "sleep 1000 & echo $! > '{}.tmp' && mv '{0}.tmp' '{0}'; wait",
        pid_file.display()
    )
}

/// Whether a process is running: `/proc/PID` exists and is not a zombie (a killed orphan may
/// stay a zombie until its new parent reaps it; it runs no more).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z" | "X"))
        }
    }
}

/// Wait for the grandchild's pid file and return the pid (checking it runs).
async fn grandchild(pid_file: &PathBuf) -> u32 {
    wait_until(
        "the script wrote its grandchild's pid",
        Duration::from_secs(5),
        || async { pid_file.exists() },
    )
    .await;
    let pid: u32 = std::fs::read_to_string(pid_file)
        .expect("read the pid file")
        .trim()
        .parse()
        .expect("a pid");
    assert!(running(pid), "the grandchild {pid} runs while the job does");
    pid
}

async fn assert_gone(pid: u32) {
    wait_until(
        &format!("grandchild {pid} is gone"),
        Duration::from_secs(3),
        || async { !running(pid) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_process_tree() {
    let env = Env::start_with(config(), no_retry).await;
    let pid_file = env.dir.path().join("grandchild.pid");
    let id = env
        .enqueue(
            "exec",
            json!({"command": "sh", "args": [tree_script(&pid_file)], "timeout_ms": 1000}),
            3,
        )
        .await;
    let pid = grandchild(&pid_file).await;

    let job = env.wait_for_state(id, JobState::Retryable).await;
    let e = &job.errors[0];
    assert_eq!(e.kind, ErrorKind::Error);
    assert!(
        e.message
            .starts_with("command `sh` timed out after 1s, process group killed"),
        "{}",
        e.message
    );
    assert_gone(pid).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_kills_the_whole_process_tree() {
    let env = Env::start(config()).await;
    let pid_file = env.dir.path().join("grandchild.pid");
    let id = env
        .enqueue(
            "exec",
            json!({"command": "sh", "args": [tree_script(&pid_file)]}),
            3,
        )
        .await;
    let pid = grandchild(&pid_file).await;

    env.worker.cancel(id).await.expect("cancel");
    env.wait_for_state(id, JobState::Cancelled).await;
    assert_gone(pid).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_attempt_timeout_kills_the_tree_too() {
    let env = Env::start_with(config(), no_retry).await;
    let pid_file = env.dir.path().join("grandchild.pid");
    // The exec timeout is the 10-minute default; the job's attempt timeout is 1 s.
    let job = NewJob::new(
        "exec",
        json!({"command": "sh", "args": [tree_script(&pid_file)]}),
    )
    .with_timeout(Duration::from_secs(1));
    let id = env.client.insert(job).await.expect("insert").id;
    let pid = grandchild(&pid_file).await;

    let job = env.wait_for_state(id, JobState::Retryable).await;
    assert_eq!(job.errors[0].kind, ErrorKind::Timeout);
    assert_gone(pid).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allow_listed_commands_run() {
    let config = config();
    let err = mend_executors::validate(
        "exec",
        &json!({"command": "rm", "args": ["-rf", "/"]}),
        &config,
    )
    .expect_err("rm is not allowed");
    assert!(
        err.starts_with(
            "command `rm` is not in the exec allow-list; add it to [exec] in mend.toml"
        ),
        "{err}"
    );
    assert!(mend_executors::validate("exec", &json!({"command": "cat"}), &config).is_ok());
    let err = mend_executors::validate("exec", &json!({"command": "cat", "args": [1]}), &config)
        .expect_err("not strings");
    assert!(err.contains("field `args`"), "{err}");

    let env = Env::start(config).await;
    let pid_dir = env.dir.path().join("should-not-exist");
    let job = exec_until(
        &env,
        json!({"command": "mkdir", "args": [pid_dir.display().to_string()]}),
        5,
        JobState::Discarded,
    )
    .await;
    assert_eq!(job.attempt, 1, "fatal: no retry");
    let msg = &job.errors[0].message;
    assert!(
        msg.contains("command `mkdir` is not in the exec allow-list"),
        "{msg}"
    );
    assert!(!pid_dir.exists(), "nothing ran");

    let job = exec_until(&env, json!({"command": "missing"}), 5, JobState::Discarded).await;
    assert_eq!(job.attempt, 1);
    let msg = &job.errors[0].message;
    assert!(
        msg.contains("cannot start command `missing` (/nonexistent/mend-test-program)"),
        "{msg}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_program_gets_a_clean_environment_and_fixed_args() {
    // The server's secrets are in its environment; the program must not see them.
    std::env::set_var("MEND_API_TOKEN", "server-secret-token");
    let config = config();
    let env = Env::start(config.clone()).await;
    let done = exec_until(&env, json!({"command": "env"}), 1, JobState::Completed).await;
    let id = done.id;
    let out = done.result.unwrap()["stdout_tail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!out.contains("server-secret-token"), "{out}");
    assert!(
        out.contains("GREETING=hi"),
        "configured variables are passed: {out}"
    );
    assert!(out.contains(&format!("MEND_JOB_ID={id}")), "{out}");
    // A command without job_args refuses arguments from the job.
    let err = mend_executors::validate(
        "exec",
        &json!({"command": "env", "args": ["-u", "PATH"]}),
        &config,
    )
    .unwrap_err();
    assert!(err.contains("takes no arguments from jobs"), "{err}");
    env.stop().await;
}
