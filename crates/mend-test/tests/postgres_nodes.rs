//! Several real worker processes on one PostgreSQL database: a SIGKILLed node's jobs are
//! rescued by the others within about a second; no job runs twice among live nodes (a ledger
//! row written in each completion's transaction, and a ledger file written by each run);
//! cutting every database connection mid-run loses nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mend::{ErrorKind, JobState};
use mend_test::env::Env;
use mend_test::process::{EffectTable, Proc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_sigkill_one_and_the_others_rescue_its_jobs_within_seconds() {
    let Some(env) = Env::postgres("three_nodes_sigkill").await else {
        return;
    };
    let mut nodes: Vec<Proc> = (0..3).map(|_| env.spawn(&["--concurrency", "8"])).collect();
    // First attempts hang (a minute); a rescued job's second attempt is quick.
    let jobs = env.enqueue(12, 60_000, 20).await;
    let running = env
        .wait_for("12 jobs running", Duration::from_secs(15), |j| {
            j.iter().filter(|j| j.state == JobState::Running).count() == 12
        })
        .await;
    let mut by_owner: HashMap<String, Vec<uuid::Uuid>> = HashMap::new();
    for j in &running {
        by_owner
            .entry(j.lease_owner.clone().unwrap())
            .or_default()
            .push(j.id);
    }
    let node_ids: Vec<String> = env
        .store
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(
        node_ids.len(),
        3,
        "three worker nodes registered: {node_ids:?}"
    );
    // The victim: a node holding jobs. Node ids end with the pid.
    let (victim_node, victim_jobs) = by_owner
        .iter()
        .max_by_key(|(_, v)| v.len())
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let node_pid = env
        .store
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.id == victim_node)
        .unwrap()
        .pid;
    let victim = nodes.iter_mut().position(|p| p.id() == node_pid).unwrap();

    // Steady state: every session older than the leader's start-up grace (a new leader does
    // not judge nodes by their locks while sessions may still be reconnecting).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    nodes[victim].kill9();
    let rescued = env
        .wait_for(
            "the dead node's jobs rescued",
            Duration::from_secs(15),
            |j| {
                j.iter().filter(|j| victim_jobs.contains(&j.id)).all(|j| {
                    j.lease_owner.as_deref() != Some(&victim_node) || j.state != JobState::Running
                })
            },
        )
        .await;
    let time_to_rescue = killed_at.elapsed();
    eprintln!(
        "time to rescue after SIGKILL: {time_to_rescue:?} ({} jobs)",
        victim_jobs.len()
    );
    assert!(
        time_to_rescue < Duration::from_secs(10),
        "rescue took {time_to_rescue:?}"
    );
    let _ = rescued;
    // The survivors run the rescued jobs (second attempts are quick).
    let done = env
        .wait_for("the rescued jobs completed", Duration::from_secs(15), |j| {
            j.iter()
                .filter(|j| victim_jobs.contains(&j.id))
                .all(|j| j.state == JobState::Completed)
        })
        .await;
    for job in done.iter().filter(|j| victim_jobs.contains(&j.id)) {
        assert_eq!(job.attempt, 2, "{job:?}");
        assert_eq!(job.errors.len(), 1);
        assert_eq!(job.errors[0].kind, ErrorKind::Lost);
        assert_ne!(job.lease_owner.as_deref(), Some(victim_node.as_str()));
        assert_eq!(
            env.ledger_count("done", job.id),
            1,
            "completed once: {job:?}"
        );
    }
    // The survivors' own jobs were never touched.
    for job in done.iter().filter(|j| !victim_jobs.contains(&j.id)) {
        assert_eq!(job.state, JobState::Running, "{job:?}");
        assert_eq!(job.attempt, 1);
    }
    assert!(
        !env.store
            .list_nodes()
            .await
            .unwrap()
            .iter()
            .any(|n| n.id == victim_node),
        "the dead node was removed from the registry"
    );
    assert_eq!(jobs.len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_nodes_run_each_job_once_even_when_their_connections_are_cut() -> Result<(), String> {
    let Some(env) = Env::postgres("each_job_once").await else {
        return Ok(());
    };
    let nodes: Vec<Proc> = (0..3)
        .map(|_| env.spawn(&["--concurrency", "6", "--lease-ms", "5000"]))
        .collect();
    // Jobs whose effect is a ledger row written in their completion's transaction.
    let effects = EffectTable::create(&env).await;
    let table = effects.table();
    let ledgered: Vec<mend::NewJob> = (0..100)
        .map(|_| {
            mend::NewJob::new(
                "ledgered",
                serde_json::json!({"table": table, "first_ms": 0}),
            )
        })
        .collect();
    let ledgered = env.store.insert_many(ledgered).await.unwrap();
    let n = 300;
    let jobs = env.enqueue(n, 15, 15).await;
    // Cut every connection of every node a few times while they work.
    let mut cuts = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        cuts += env.terminate_backends().await;
    }
    assert!(cuts > 0, "the test cut no connection; it proves nothing");
    let done = env
        .wait_for("all jobs completed", Duration::from_secs(60), |j| {
            j.len() == n + ledgered.len() && j.iter().all(|j| j.state == JobState::Completed)
        })
        .await;
    drop(nodes);
    // The verdict is returned rather than panicked, so that it closes the test's output
    // (after the nodes' logs, without a backtrace) where a CI log's tail shows it.
    // Each ledgered job's row committed exactly once, with the completion that stands.
    let mut rows: HashMap<String, i64> = HashMap::new();
    for (job_id, _) in effects.rows().await {
        *rows.entry(job_id).or_default() += 1;
    }
    if rows.len() != ledgered.len() {
        return Err(format!(
            "{} ledgered jobs have {} with a ledger row; want one row each",
            ledgered.len(),
            rows.len()
        ));
    }
    if let Some((job_id, count)) = rows.iter().find(|(_, c)| **c != 1) {
        return Err(format!("job {job_id} has {count} ledger rows"));
    }
    let ledger = env.ledger();
    for job in done.iter().filter(|j| j.kind == "work") {
        let id = job.id.to_string();
        // Everything the nodes noted about this job, for the failure messages.
        let lines: Vec<&String> = ledger.iter().filter(|l| l.contains(&id)).collect();
        let runs = lines.iter().filter(|l| l.starts_with("done")).count();
        let starts = lines.iter().filter(|l| l.starts_with("start")).count();
        if runs != 1 || starts != 1 {
            return Err(format!(
                "job {id} was started {starts} times and ran to completion {runs} times: {lines:?} {job:?}"
            ));
        }
        // A claim whose reply was cut off leaves its job leased to a node that never ran
        // it; the lease lapses and the job is rescued as `lost`. Nothing else may fail.
        if job.errors.iter().any(|e| e.kind != ErrorKind::Lost) {
            return Err(format!(
                "job {id} failed other than by a lost claim: {job:?}"
            ));
        }
    }
    assert_eq!(jobs.len() + ledgered.len(), done.len());
    Ok(())
}
