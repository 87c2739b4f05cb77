//! Durable cleanups across `kill -9`: a cleanup written down before the work runs after the
//! process is killed mid-attempt — on restart, before the job's next attempt starts — and a
//! completed attempt keeps its effect. Staged files: a killed attempt leaves no temp file
//! behind once recovered, and the completed retry leaves exactly the final file.

#![expect(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mend::{ErrorKind, JobRow, JobState, NewJob};
use mend_test::env::{files_in, Env};

async fn cleanup_of_a_killed_attempt_runs_before_the_retry(env: Env) {
    let dir = env.dir.path().to_str().unwrap().to_owned();
    let job = env
        .insert_one(NewJob::new(
            "marked",
            serde_json::json!({"dir": dir, "first_ms": 60_000}),
        ))
        .await;
    let first_marker = env.dir.path().join(format!("marker-{}-1", job.id));
    let second_marker = env.dir.path().join(format!("marker-{}-1-second", job.id));
    let mut child = env.spawn(&["--concurrency", "1"]);
    env.wait_ledger(&format!("start {}", job.id), 1, Duration::from_secs(20))
        .await;
    child.kill9(); // SIGKILL mid-attempt
    assert!(
        first_marker.exists() && second_marker.exists(),
        "nothing could run after SIGKILL"
    );
    let stored = env.store.get(job.id).await.unwrap().unwrap();
    assert_eq!(
        stored.pending_cleanups.len(),
        2,
        "written down before the work: {stored:?}"
    );

    let mut child = env.spawn(&["--concurrency", "1"]);
    let done = env.wait_completed(job.id).await;
    assert!(
        !first_marker.exists() && !second_marker.exists(),
        "the killed attempt's markers were removed"
    );
    let ledger = env.ledger();
    let cleaned = ledger
        .iter()
        .position(|l| l == &format!("durable-cleanup {}", first_marker.display()))
        .expect("the first durable cleanup ran");
    let cleaned_second = ledger
        .iter()
        .position(|l| l == &format!("durable-cleanup {}", second_marker.display()))
        .expect("the second durable cleanup ran");
    assert!(
        cleaned_second < cleaned,
        "last registered first: {ledger:?}"
    );
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
    child.stop();
}

/// A `staged` job writing into a fresh `out` directory in the test's own; its first attempt
/// hangs `first_ms` after writing the temp file.
async fn staged_job(env: &Env, first_ms: u64) -> (std::path::PathBuf, JobRow) {
    let out = env.dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let job = env
        .insert_one(NewJob::new(
            "staged",
            serde_json::json!({"dir": out.to_str().unwrap(), "first_ms": first_ms}),
        ))
        .await;
    (out, job)
}

async fn a_staged_file_of_a_killed_attempt_leaves_no_temp_file(env: Env) {
    let (out, job) = staged_job(&env, 60_000).await;
    let listing = || files_in(&out);
    let mut child = env.spawn(&["--concurrency", "1"]);
    env.wait_ledger(&format!("staged {} 1", job.id), 1, Duration::from_secs(20))
        .await;
    child.kill9(); // SIGKILL with the temp file written, the job not complete
    let before = listing();
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(
        before[0].ends_with(".tmp"),
        "only the temp file: {before:?}"
    );

    let mut child = env.spawn(&["--concurrency", "1"]);
    env.wait_completed(job.id).await;
    let final_name = format!("out-{}.txt", job.id);
    assert_eq!(
        listing(),
        std::slice::from_ref(&final_name),
        "exactly the final file, no temp left"
    );
    assert_eq!(
        std::fs::read_to_string(out.join(&final_name)).unwrap(),
        "attempt 2"
    );
    child.stop();
}

/// The window between a staged file's rename and the completion's commit, reached by fault
/// injection: the worker dies there; the job is retried and writes the file again.
async fn a_crash_between_rename_and_commit_is_retried(env: Env) {
    let (out, job) = staged_job(&env, 0).await;
    let final_path = out.join(format!("out-{}.txt", job.id));
    let listing = || files_in(&out);
    let mut child = env.spawn_with_env(
        &["--concurrency", "1"],
        &[("MEND_TEST_CRASH", "before-completion")],
    );
    let (code, _) = child.wait_exit(Duration::from_secs(20));
    assert_eq!(code, None, "the worker died by the injected fault");
    assert_eq!(
        std::fs::read_to_string(&final_path).unwrap(),
        "attempt 1",
        "renamed into place before the crash"
    );
    assert_eq!(listing().len(), 1, "no temp file: {:?}", listing());
    let stored = env.store.get(job.id).await.unwrap().unwrap();
    assert_eq!(
        stored.state,
        JobState::Running,
        "the completion never committed"
    );

    let mut child = env.spawn(&["--concurrency", "1"]);
    let done = env.wait_completed(job.id).await;
    assert_eq!(done.attempt, 2);
    assert_eq!(std::fs::read_to_string(&final_path).unwrap(), "attempt 2");
    assert_eq!(
        listing().len(),
        1,
        "exactly the final file: {:?}",
        listing()
    );
    child.stop();
}

mend_test::on_both_backends!(
    a_crash_between_rename_and_commit_is_retried,
    a_staged_file_of_a_killed_attempt_leaves_no_temp_file,
    cleanup_of_a_killed_attempt_runs_before_the_retry,
);
