//! Crash recovery: jobs left `running` by a process that died are rescued (error kind `lost`,
//! the attempt counts) and run again; a live process's jobs are left alone; a job that keeps
//! killing its worker is quarantined.

#![expect(
    clippy::expect_used,
    reason = "test set-up fails loudly: a broken fixture is a failed test"
)]

use std::time::Duration;

use chrono::Utc;
use mend::node::{check_process, process_key, Liveness};
use mend::store::NodeInfo;
use mend::{ErrorKind, JobError, JobState, NewJob, Registry};
use mend_test::env::{attempt_errors, stat, Env};
use mend_test::handler::raw_registry_with;
use mend_test::sync::Log;
use uuid::Uuid;

const KIND: &str = "survivor";

/// A handler that logs `(id, attempt)` and completes.
fn registry(runs: &Log<(Uuid, i32)>) -> Registry {
    raw_registry_with(KIND, None, runs.clone(), |runs, ctx, _args| async move {
        runs.push((ctx.id(), ctx.attempt()));
        Ok::<_, JobError>(Some(serde_json::json!({"attempt": ctx.attempt()})))
    })
}

/// Registers a node for a process that has exited and been reaped: a crashed worker.
async fn dead_node(env: &Env, id: &str) -> NodeInfo {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn `sleep`");
    let pid = child.id();
    // Read the identity while the process runs, then kill it: a crashed worker.
    let key = process_key(pid);
    child.kill().expect("kill `sleep`");
    child.wait().expect("wait for `sleep`");
    let node = env.register_node(id, pid, key).await;
    assert_eq!(
        check_process(&node),
        Liveness::Dead,
        "test setup: {node:?} should look dead"
    );
    node
}

/// Inserts a job and claims it as `owner` with a lease that will not run out during the test.
async fn running_job_of(env: &Env, owner: &str, job: NewJob) -> Uuid {
    let id = env.insert(job).await.id;
    let claimed = env.claim_as(owner, Duration::from_secs(3600)).await;
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), [id]);
    assert_eq!(claimed[0].state, JobState::Running);
    id
}

fn new_job() -> NewJob {
    NewJob::new(KIND, serde_json::json!({}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_process_job_is_rescued_at_start_up_and_completed() {
    let env = Env::new().await;
    let crashed = dead_node(&env, "crashed-node").await;
    let id = running_job_of(&env, &crashed.id, new_job()).await;

    let runs = Log::new();
    let worker = env.worker(registry(&runs), 2, |_| {}).await;
    // Start-up rescue has already happened when `start` returns (periodic passes are off).
    assert_eq!(stat(&worker.stats().rescued), 1);

    let job = env.wait_for_state(id, JobState::Completed).await;
    assert_eq!(job.attempt, 2, "the lost attempt counts");
    assert_eq!(job.errors.len(), 1);
    let e = &job.errors[0];
    assert_eq!((e.attempt, e.kind), (1, ErrorKind::Lost));
    assert!(e.message.contains("worker lost"), "{}", e.message);
    assert!(
        e.message.contains("crashed-node"),
        "the message names the lost node: {}",
        e.message
    );
    assert_eq!(job.lease_owner.as_deref(), Some(worker.node_id()));
    assert_eq!(runs.snapshot(), [(id, 2)]);
    let nodes = env.store.list_nodes().await.unwrap();
    assert!(
        nodes.iter().all(|n| n.id != crashed.id),
        "the dead node is removed: {nodes:?}"
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_live_process_are_not_rescued() {
    let env = Env::new().await;
    let me = std::process::id();
    let alive = env.register_node("busy-node", me, process_key(me)).await;
    assert_eq!(check_process(&alive), Liveness::Alive);
    let busy = running_job_of(&env, &alive.id, new_job()).await;

    let runs = Log::new();
    // Periodic rescue passes on, to show they leave the live node alone too.
    let worker = env
        .worker(registry(&runs), 2, |c| {
            c.rescue_interval = Duration::from_millis(50);
            c.heartbeat_interval = Duration::from_millis(20);
        })
        .await;
    assert_eq!(
        stat(&worker.stats().rescued),
        0,
        "nothing rescued at start-up"
    );

    // A job of a process that dies after the worker started, on a queue this worker does not
    // work (so only a rescue pass can touch it): once a periodic pass has rescued it, passes
    // have run while the live node's job was there to be (wrongly) taken. The job is claimed
    // before its node is registered: a pass that found the dead node with no jobs yet would
    // remove it, and the job would then wait for its lease to run out.
    let late = env.insert(new_job().with_queue("elsewhere")).await.id;
    let claimed = env
        .claim_in("elsewhere", "later-crash", Duration::from_secs(3600))
        .await;
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), [late]);
    dead_node(&env, "later-crash").await;
    let rescued = env
        .wait_for_job(late, "rescued by a periodic pass", |j| {
            // Retryable, or already promoted to available by a claim (promotion is global).
            j.state != JobState::Running && !j.errors.is_empty()
        })
        .await;
    assert_eq!(rescued.errors[0].kind, ErrorKind::Lost);
    mend_test::wait::wait_until(
        "the worker counts the rescue",
        mend_test::wait::WAIT,
        || async { stat(&worker.stats().rescued) == 1 },
    )
    .await;

    let job = env.job(busy).await;
    assert_eq!(
        job.state,
        JobState::Running,
        "a live worker's job stays with it"
    );
    assert_eq!(job.lease_owner.as_deref(), Some("busy-node"));
    assert_eq!(job.attempt, 1);
    assert!(job.errors.is_empty());
    assert!(!runs.snapshot().iter().any(|(id, _)| *id == busy));
    let nodes = env.store.list_nodes().await.unwrap();
    assert!(
        nodes.iter().any(|n| n.id == "busy-node"),
        "a live node stays registered"
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_lost_three_times_in_a_row_is_quarantined() {
    let env = Env::new().await;
    let id = env.insert(new_job()).await.id;
    // Two earlier crashes, each rescued by someone else.
    for n in 1..=2 {
        let owner = format!("crash-{n}");
        let claimed = env.claim_as(&owner, Duration::from_secs(3600)).await;
        assert_eq!(claimed.len(), 1);
        let rescued = env.rescue_dead(&[&owner]).await;
        assert_eq!(rescued.len(), 1);
        assert!(!rescued[0].quarantined);
        assert_eq!(rescued[0].job.state, JobState::Retryable);
    }
    assert_eq!(env.job(id).await.consecutive_lost(), 2);
    // The third attempt kills its process too.
    let crashed = dead_node(&env, "crash-3").await;
    let claimed = env.claim_as(&crashed.id, Duration::from_secs(3600)).await;
    assert_eq!(
        claimed
            .iter()
            .map(|j| (j.id, j.attempt))
            .collect::<Vec<_>>(),
        [(id, 3)]
    );

    let runs = Log::new();
    let worker = env.worker(registry(&runs), 2, |_| {}).await;
    let job = env.wait_for_state(id, JobState::Discarded).await;
    assert_eq!(job.attempt, 3);
    assert!(
        job.max_attempts > 3,
        "discarded by quarantine, not for running out of attempts"
    );
    let lost = ErrorKind::Lost;
    assert_eq!(attempt_errors(&job), [(1, lost), (2, lost), (3, lost)]);
    assert!(
        job.errors[2].message.contains("quarantined"),
        "{}",
        job.errors[2].message
    );
    assert!(job.finalized_at.is_some());
    assert!(
        runs.snapshot().is_empty(),
        "a quarantined job is not run again"
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_job_out_of_attempts_is_discarded_not_retried() {
    let env = Env::new().await;
    let crashed = dead_node(&env, "crashed-node").await;
    let id = running_job_of(&env, &crashed.id, new_job().with_max_attempts(1)).await;

    let runs = Log::new();
    let worker = env.worker(registry(&runs), 2, |_| {}).await;
    let job = env.wait_for_state(id, JobState::Discarded).await;
    assert_eq!(job.attempt, 1);
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].kind, ErrorKind::Lost);
    assert!(
        !job.errors[0].message.contains("quarantined"),
        "{}",
        job.errors[0].message
    );
    assert!(runs.snapshot().is_empty());
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_of_a_node_that_cannot_be_checked_is_rescued() {
    let env = Env::new().await;
    // A node on another host, still heartbeating: its process cannot be checked here, and it is
    // not stale; but its lease on this job has run out (it hung).
    let now = Utc::now();
    env.store
        .register_node(NodeInfo {
            id: "remote-node".into(),
            host: "some-other-host".into(),
            pid: 1,
            process_key: "elsewhere|1".into(),
            started_at: now,
            last_seen: now,
            kinds: Vec::new(),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = env.insert(new_job()).await.id;
    let claimed = env.claim_as("remote-node", Duration::ZERO).await;
    assert_eq!(claimed.len(), 1);

    let runs = Log::new();
    let worker = env.worker(registry(&runs), 2, |_| {}).await;
    assert_eq!(stat(&worker.stats().rescued), 1);
    let job = env.wait_for_state(id, JobState::Completed).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(job.errors[0].kind, ErrorKind::Lost);
    let nodes = env.store.list_nodes().await.unwrap();
    assert!(
        nodes.iter().any(|n| n.id == "remote-node"),
        "a live remote node is not removed"
    );
    worker.shutdown(Duration::from_secs(5)).await;
}
