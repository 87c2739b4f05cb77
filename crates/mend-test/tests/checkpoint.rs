//! Checkpoints across `kill -9`: a job that saved steps 1..k and is killed during step k+1
//! resumes at step k+1 in a new process, instead of starting over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use mend::{ErrorKind, JobState, NewJob};

async fn killed_mid_job_resumes_after_the_last_checkpoint(env: Env) {
    let job = env
        .store
        .insert_many(vec![NewJob::new(
            "steps",
            serde_json::json!({"steps": 6, "step_ms": 300}),
        )])
        .await
        .unwrap()
        .pop()
        .unwrap();
    let mut child = env.spawn(&["--concurrency", "1"]);
    env.wait_for("three steps saved", Duration::from_secs(20), |j| {
        j.iter()
            .any(|j| j.id == job.id && j.checkpoint == Some(serde_json::json!({"done": 3})))
    })
    .await;
    child.kill().unwrap(); // SIGKILL, during step 4
    child.wait().unwrap();
    // What the dead attempt managed to save (step 4 may have been saved just before the kill).
    let saved = env
        .store
        .get(job.id)
        .await
        .unwrap()
        .unwrap()
        .checkpoint
        .unwrap()["done"]
        .as_u64()
        .unwrap();
    assert!((3..6).contains(&saved), "saved {saved}");

    let mut child = env.spawn(&["--concurrency", "1"]);
    let done = env
        .wait_for("the job completed", Duration::from_secs(30), |j| {
            j.iter()
                .any(|j| j.id == job.id && j.state == JobState::Completed)
        })
        .await;
    let done = done.into_iter().find(|j| j.id == job.id).unwrap();
    assert_eq!(done.attempt, 2, "{done:?}");
    assert_eq!(done.errors.len(), 1);
    assert_eq!(done.errors[0].kind, ErrorKind::Lost);
    let second: Vec<u64> = env
        .ledger()
        .iter()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split(' ').collect();
            (parts[0] == "step" && parts[1] == job.id.to_string() && parts[3] == "2")
                .then(|| parts[2].parse().unwrap())
        })
        .collect();
    let expected: Vec<u64> = (saved + 1..=6).collect();
    assert_eq!(
        second, expected,
        "the second attempt resumed after step {saved}"
    );
    assert_eq!(env.ledger_count("done", job.id), 1);
    signal(&child, "TERM");
    let (code, _) = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_mid_job_resumes_after_the_last_checkpoint() {
    killed_mid_job_resumes_after_the_last_checkpoint(Env::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_job_resumes_after_the_last_checkpoint() {
    let Some(env) = Env::postgres("checkpoint_resume").await else {
        return;
    };
    killed_mid_job_resumes_after_the_last_checkpoint(env).await;
}
