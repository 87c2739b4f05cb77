//! SIGTERM to a real worker process: in-flight jobs finish within the drain deadline and the
//! process exits 0; past the deadline the job is cancelled, its cleanups run, and it is back in
//! `available` with its attempt count unchanged. Nothing is lost either way.

use std::time::Duration;

use mend::JobState;
use mend_test::env::Env;

/// Starts a worker with 2 slots and `--drain-ms drain_ms`, sends it SIGTERM once `running`
/// holds for the stored jobs, and checks that it exits 0 after writing `exit_line` (what it
/// drained and released) to the ledger; how long the exit took.
async fn term_once_running(
    env: &Env,
    drain_ms: &str,
    exit_line: &str,
    running: impl Fn(&[mend::JobRow]) -> bool,
) -> Duration {
    let mut child = env.spawn(&["--concurrency", "2", "--drain-ms", drain_ms]);
    env.wait_for("2 jobs running", Duration::from_secs(10), running)
        .await;
    child.signal("TERM");
    let (code, took) = child.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "graceful shutdown exits 0");
    assert!(
        env.ledger().iter().any(|l| l == exit_line),
        "{:?}",
        env.ledger()
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_jobs_and_exits_zero() {
    let env = Env::new().await;
    let jobs = env.enqueue(5, 800, 800).await;
    let took = term_once_running(&env, "10000", "exit drained=2 released=0", |j| {
        j.iter().filter(|j| j.state == JobState::Running).count() == 2
    })
    .await;
    assert!(
        took < Duration::from_secs(5),
        "exited within the drain ({took:?})"
    );
    let after = env.jobs().await;
    assert_eq!(after.len(), jobs.len(), "nothing lost");
    assert_eq!(
        after
            .iter()
            .filter(|j| j.state == JobState::Completed)
            .count(),
        2,
        "the two in-flight jobs finished"
    );
    assert_eq!(
        after
            .iter()
            .filter(|j| j.state == JobState::Available && j.attempt == 0)
            .count(),
        3,
        "no new job was claimed after the signal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_deadline_jobs_are_released_without_using_an_attempt() {
    let env = Env::new().await;
    let jobs = env.enqueue(2, 60_000, 60_000).await;
    let took = term_once_running(&env, "300", "exit drained=0 released=2", |j| {
        j.iter().all(|j| j.state == JobState::Running)
    })
    .await;
    assert!(
        took < Duration::from_secs(5),
        "the drain deadline bounds the exit ({took:?})"
    );
    let after = env.jobs().await;
    assert_eq!(after.len(), 2);
    for job in &after {
        assert_eq!(job.state, JobState::Available, "{job:?}");
        assert_eq!(
            job.attempt, 0,
            "a shutdown release does not use up an attempt"
        );
        assert!(job.errors.is_empty());
        assert_eq!(env.ledger_count("done", job.id), 0);
        let cleanup = format!("cleanup {} 1 Shutdown", job.id);
        assert!(
            env.ledger().contains(&cleanup),
            "in-memory cleanup ran: {:?}",
            env.ledger()
        );
    }
    // A later worker picks them up as attempt 1.
    let _ = jobs;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_cuts_the_drain_short() {
    let env = Env::new().await;
    env.enqueue(1, 60_000, 60_000).await;
    let mut child = env.spawn(&["--concurrency", "1", "--drain-ms", "60000"]);
    env.wait_for("job running", Duration::from_secs(10), |j| {
        j[0].state == JobState::Running
    })
    .await;
    child.signal("TERM");
    // A window in which a process that ignored the drain would exit: what is checked is that
    // nothing happens.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "still draining after the first signal"
    );
    child.signal("INT");
    let (code, took) = child.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "{took:?}");
    let after = env.jobs().await;
    assert_eq!((after[0].state, after[0].attempt), (JobState::Available, 0));
}
