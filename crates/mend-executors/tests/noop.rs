//! The `noop` kind through a real worker: it sleeps, then completes with no result; bad args
//! discard it at once with the field named.

mod common;

use std::time::{Duration, Instant};

use common::Env;
use mend::JobState;
use mend_executors::ExecutorsConfig;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeps_then_completes_without_a_result() {
    let env = Env::start(ExecutorsConfig::default()).await;
    let started = Instant::now();
    let id = env.enqueue("noop", json!({"sleep_ms": 150}), 3).await;
    let quick = env.enqueue("noop", json!(null), 3).await;

    let job = env.wait_for_state(id, JobState::Completed).await;
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "slept first"
    );
    assert_eq!(job.result, None);
    assert!(job.errors.is_empty());
    let job = env.wait_for_state(quick, JobState::Completed).await;
    assert_eq!(job.result, None);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_args_are_fatal_and_name_the_field() {
    let env = Env::start(ExecutorsConfig::default()).await;
    let wrong_type = env.enqueue("noop", json!({"sleep_ms": "soon"}), 5).await;
    let unknown = env.enqueue("noop", json!({"sleep": 5}), 5).await;

    let job = env.wait_for_state(wrong_type, JobState::Discarded).await;
    assert_eq!(job.attempt, 1);
    let msg = &job.errors[0].message;
    assert!(msg.contains("invalid args for kind `noop`"), "{msg}");
    assert!(
        msg.contains("field `sleep_ms` must be a whole number of milliseconds"),
        "{msg}"
    );
    assert!(msg.contains("got a string"), "{msg}");

    let job = env.wait_for_state(unknown, JobState::Discarded).await;
    assert_eq!(job.attempt, 1);
    assert!(
        job.errors[0].message.contains("unknown field `sleep`"),
        "{}",
        job.errors[0].message
    );

    let config = ExecutorsConfig::default();
    assert!(mend_executors::validate("noop", &json!({"sleep_ms": 10}), &config).is_ok());
    assert!(mend_executors::validate("noop", &json!({"sleep": 10}), &config).is_err());
    assert!(
        mend_executors::validate("someone_elses_kind", &json!("anything"), &config).is_ok(),
        "other kinds are not ours to judge"
    );
    env.stop().await;
}
