//! Durable cleanups across `kill -9`: a cleanup written down before the work runs after the
//! process is killed mid-attempt — on restart, before the job's next attempt starts — and a
//! completed attempt keeps its effect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use mend::{ErrorKind, JobState, NewJob};

async fn cleanup_of_a_killed_attempt_runs_before_the_retry(env: Env) {
    let dir = env.dir.path().to_str().unwrap().to_owned();
    let job = env
        .store
        .insert_many(vec![NewJob::new(
            "marked",
            serde_json::json!({"dir": dir, "first_ms": 60_000}),
        )])
        .await
        .unwrap()
        .pop()
        .unwrap();
    let first_marker = env.dir.path().join(format!("marker-{}-1", job.id));
    let mut child = env.spawn(&["--concurrency", "1"]);
    env.wait_ledger(&format!("start {}", job.id), 1, Duration::from_secs(20))
        .await;
    child.kill().unwrap(); // SIGKILL mid-attempt
    child.wait().unwrap();
    assert!(first_marker.exists(), "nothing could run after SIGKILL");
    let stored = env.store.get(job.id).await.unwrap().unwrap();
    assert_eq!(
        stored.pending_cleanups.len(),
        1,
        "written down before the work: {stored:?}"
    );

    let mut child = env.spawn(&["--concurrency", "1"]);
    let done = env
        .wait_for("the job completed", Duration::from_secs(30), |j| {
            j.iter()
                .any(|j| j.id == job.id && j.state == JobState::Completed)
        })
        .await
        .into_iter()
        .find(|j| j.id == job.id)
        .unwrap();
    assert!(
        !first_marker.exists(),
        "the killed attempt's marker was removed"
    );
    let ledger = env.ledger();
    let cleaned = ledger
        .iter()
        .position(|l| l == &format!("durable-cleanup {}", first_marker.display()))
        .expect("the durable cleanup ran");
    let second = ledger
        .iter()
        .position(|l| l == &format!("start {} 2", job.id))
        .expect("the second attempt ran");
    assert!(cleaned < second, "cleanup before the retry: {ledger:?}");
    assert_eq!(done.attempt, 2);
    assert_eq!(done.errors[0].kind, ErrorKind::Lost);
    assert!(done.pending_cleanups.is_empty(), "{done:?}");
    assert!(
        done.timeline.iter().any(|e| e.event == "cleanup"),
        "the run is in the timeline: {:?}",
        done.timeline
    );
    assert!(
        env.dir.path().join(format!("marker-{}-2", job.id)).exists(),
        "a completed attempt keeps its effect (its cleanup is dropped)"
    );
    signal(&child, "TERM");
    let (code, _) = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cleanup_of_a_killed_attempt_runs_before_the_retry() {
    cleanup_of_a_killed_attempt_runs_before_the_retry(Env::new().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cleanup_of_a_killed_attempt_runs_before_the_retry() {
    let Some(env) = Env::postgres("durable_crash").await else {
        return;
    };
    cleanup_of_a_killed_attempt_runs_before_the_retry(env).await;
}
