//! Two processes on one SQLite file: a live process's jobs are never rescued from under it;
//! once it dies, the other rescues and completes its jobs.

use std::time::Duration;

use mend::{ErrorKind, JobState};
use mend_test::env::Env;

/// Both processes: two slots, a rescue pass every 200 ms, a heartbeat every 100 ms.
const FLAGS: [&str; 6] = [
    "--concurrency",
    "2",
    "--rescue-ms",
    "200",
    "--heartbeat-ms",
    "100",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_neighbour_keeps_its_jobs_and_a_dead_one_is_rescued() {
    let env = Env::new().await;
    let jobs = env.enqueue(2, 60_000, 50).await;
    let mut a = env.spawn(&FLAGS);
    env.wait_for("A runs both jobs", Duration::from_secs(10), |j| {
        j.iter().all(|j| j.state == JobState::Running)
    })
    .await;
    let owner_a = env.jobs().await[0].lease_owner.clone().unwrap();

    // B starts (its start-up rescue runs) and keeps rescuing every 200 ms.
    let mut b = env.spawn(&FLAGS);
    // Several of B's rescue passes; what is checked is that none of them touches A's jobs.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for j in env.jobs().await {
        assert_eq!(
            j.state,
            JobState::Running,
            "A is alive: its job must not be rescued"
        );
        assert_eq!(j.lease_owner.as_deref(), Some(owner_a.as_str()));
        assert!(j.errors.is_empty());
    }

    a.kill9();
    let done = env
        .wait_for(
            "B rescues and completes A's jobs",
            Duration::from_secs(15),
            |j| j.iter().all(|j| j.state == JobState::Completed),
        )
        .await;
    for j in &done {
        assert_eq!(j.attempt, 2);
        assert_eq!(j.errors[0].kind, ErrorKind::Lost);
        assert!(
            j.errors[0].message.contains(&owner_a),
            "{}",
            j.errors[0].message
        );
        assert_eq!(env.ledger_count("done", j.id), 1);
    }
    assert_eq!(done.len(), jobs.len());
    b.stop();
}
