//! Checkpoints across `kill -9`: a job that saved steps 1..k and is killed during step k+1
//! resumes at step k+1 in a new process, instead of starting over.

#![expect(clippy::unwrap_used)]

use std::time::Duration;

use mend::{ErrorKind, JobState, NewJob};
use mend_test::env::Env;

async fn killed_mid_job_resumes_after_the_last_checkpoint(env: Env) {
    let job = env
        .insert_one(NewJob::new(
            "steps",
            serde_json::json!({"steps": 6, "step_ms": 300}),
        ))
        .await;
    let mut child = env.spawn(&["--concurrency", "1"]);
    env.wait_for("three steps saved", Duration::from_secs(20), |j| {
        j.iter()
            .any(|j| j.id == job.id && j.checkpoint == Some(serde_json::json!({"done": 3})))
    })
    .await;
    child.kill9(); // SIGKILL, during step 4
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
    child.stop();
}

mend_test::on_both_backends!(killed_mid_job_resumes_after_the_last_checkpoint,);
