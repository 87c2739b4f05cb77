//! Gray release across real worker processes on one PostgreSQL schema: three nodes, only one
//! serving the canary version. A rollout's share goes to that node alone and the rest to all
//! nodes; SIGKILL of the leader mid-rollout loses neither the rollout nor its decisions, and
//! the new leader keeps judging: when the canary turns bad it cuts it off, and the jobs the
//! canary failed complete on the stable version.

#![expect(clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::Utc;
use mend::rollout::{on_canary, Action, GuardConfig, RolloutSpec, RolloutState, UNVERSIONED};
use mend::{JobRow, JobState, NewJob};
use mend_test::env::Env;
use mend_test::process::Proc;
use mend_test::wait::poll;

/// The canary's share: 20%, in basis points.
const SHARE: u32 = 2_000;
/// Jobs per batch (two batches; `Env::jobs` reads up to a thousand).
const BATCH: usize = 400;

async fn enqueue(env: &Env, n: usize) -> Vec<uuid::Uuid> {
    let jobs: Vec<NewJob> = (0..n)
        .map(|_| NewJob::new("work", serde_json::json!({"first_ms": 5, "then_ms": 5})))
        .collect();
    env.store
        .insert_many(jobs)
        .await
        .expect("insert jobs")
        .into_iter()
        .map(|j| j.id)
        .collect()
}

fn all_completed(ids: &[uuid::Uuid]) -> impl Fn(&[JobRow]) -> bool + '_ {
    move |jobs| {
        ids.iter().all(|id| {
            jobs.iter()
                .any(|j| j.id == *id && j.state == JobState::Completed)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_canary_node_shares_hold_and_a_new_leader_cuts_the_canary_off() {
    let Some(env) = Env::postgres("rollout_nodes").await else {
        return;
    };
    let fail_file = env.dir.path().join("canary-fails");
    let fail_path = fail_file.to_str().expect("utf-8 path").to_owned();
    // Routes are re-read at every heartbeat: a short one makes the nodes obey quickly.
    let common = ["--concurrency", "8", "--heartbeat-ms", "200"];
    // The first node started takes the leader lock; the canary node starts second so that
    // killing the leader leaves the canary running and the guard with something to judge.
    let mut nodes: Vec<Proc> = vec![env.spawn(&common)];
    poll("the first node leads", Duration::from_secs(15), || async {
        let nodes = env.store.list_nodes().await.expect("list nodes");
        if nodes.iter().any(|n| n.leader) {
            Ok(())
        } else {
            Err(nodes)
        }
    })
    .await;
    let canary_args: Vec<&str> = common
        .iter()
        .copied()
        .chain(["--canary", "v2", "--canary-fail-file", &fail_path])
        .collect();
    nodes.push(env.spawn(&canary_args));
    nodes.push(env.spawn(&common));
    let infos = env.store.list_nodes().await.expect("list nodes");
    assert_eq!(infos.len(), 3, "{infos:?}");
    let canary_node = infos
        .iter()
        .find(|n| {
            n.versions
                .get("work")
                .is_some_and(|v| v.contains(&"v2".into()))
        })
        .expect("the canary node reports v2")
        .id
        .clone();
    let leader = infos.iter().find(|n| n.leader).expect("a leader").clone();
    assert_ne!(leader.id, canary_node, "the first node started leads");

    let spec = RolloutSpec {
        kind: "work".into(),
        version: "v2".into(),
        steps: vec![SHARE, 10_000],
        // No step is due during the test: what moves the rollout is the guard.
        every_secs: 3_600,
        guard: GuardConfig::default(),
        notify_url: None,
    };
    let rollout = mend::maintenance::rollouts::start(env.store.as_ref(), spec, "test", Utc::now())
        .await
        .expect("the rollout starts");
    // Every node re-reads the routes within a heartbeat (200 ms).
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Batch 1: a healthy canary.
    let first = enqueue(&env, BATCH).await;
    let jobs = env
        .wait_for(
            "the first batch completed",
            Duration::from_secs(60),
            all_completed(&first),
        )
        .await;
    let by_id: HashMap<uuid::Uuid, &JobRow> = jobs.iter().map(|j| (j.id, j)).collect();
    let mut on_canary_side = 0;
    let mut stable_owners = BTreeSet::new();
    for id in &first {
        let job = by_id[id];
        if on_canary(*id, SHARE) {
            on_canary_side += 1;
            assert_eq!(job.version.as_deref(), Some("v2"), "{job:?}");
            assert_eq!(
                job.lease_owner.as_deref(),
                Some(canary_node.as_str()),
                "a canary job ran off the canary node: {job:?}"
            );
        } else {
            assert_eq!(job.version.as_deref(), Some(UNVERSIONED), "{job:?}");
            stable_owners.insert(job.lease_owner.clone().expect("a lease owner"));
        }
    }
    // 20% of 400 is 80, with a standard deviation of 8: six of them either way.
    assert!(
        (32..=128).contains(&on_canary_side),
        "{on_canary_side} of {BATCH} jobs on the canary at 20%"
    );
    assert!(
        stable_owners.len() >= 2,
        "stable jobs ran on {stable_owners:?} only"
    );
    // The ledger agrees: the canary ran exactly the canary side's jobs.
    let canary_done = env
        .ledger()
        .iter()
        .filter(|l| l.starts_with("done ") && l.ends_with(" v2"))
        .count();
    assert_eq!(canary_done, on_canary_side);

    // Kill the leader mid-rollout; then the canary turns bad.
    let victim = nodes
        .iter()
        .position(|p| p.id() == leader.pid)
        .expect("the leader is one of ours");
    nodes[victim].kill9();
    let killed = std::time::Instant::now();
    std::fs::write(&fail_file, b"fail").expect("turn the canary bad");
    let second = enqueue(&env, BATCH).await;

    // A new leader keeps judging and cuts the canary off.
    let cut = poll(
        "the canary cut off by the new leader",
        Duration::from_secs(60),
        || async {
            let r = env
                .store
                .rollout_get(rollout.id)
                .await
                .expect("read the rollout")
                .expect("the rollout survives the leader's death");
            if r.state == RolloutState::RolledBack {
                Ok(r)
            } else {
                Err((r.state, r.share))
            }
        },
    )
    .await;
    let kill_to_cut = killed.elapsed();
    let decisions: Vec<Action> = cut.decisions.iter().map(|d| d.action).collect();
    assert_eq!(decisions, [Action::Started, Action::CutOff], "{cut:#?}");
    let decision = &cut.decisions[1];
    assert_eq!(decision.actor, "guard");
    let evidence = decision.evidence.as_ref().expect("the evidence is stored");
    assert!(evidence.canary.failures > 0, "{evidence:?}");
    assert!(
        evidence.p_value.is_some_and(|p| p < evidence.alpha),
        "{evidence:?}"
    );
    assert_eq!(cut.share, 0);
    let leader_now = env
        .store
        .list_nodes()
        .await
        .expect("list nodes")
        .into_iter()
        .find(|n| n.leader)
        .expect("a new leader");
    assert_ne!(leader_now.id, leader.id);

    // Every job completes; the ones the canary failed complete on the stable version.
    let jobs = env
        .wait_for(
            "the second batch completed",
            Duration::from_secs(60),
            all_completed(&second),
        )
        .await;
    let hurt: Vec<&JobRow> = jobs
        .iter()
        .filter(|j| j.errors.iter().any(|e| e.version.as_deref() == Some("v2")))
        .collect();
    assert!(!hurt.is_empty(), "the bad canary failed no job");
    for job in &hurt {
        assert!(
            second.contains(&job.id),
            "a first-batch job failed: {job:?}"
        );
        assert_eq!(job.state, JobState::Completed, "{job:?}");
        assert_ne!(job.version.as_deref(), Some("v2"), "{job:?}");
    }
    eprintln!(
        "canary jobs {on_canary_side}/{BATCH} at 20%; cut off by {} {kill_to_cut:?} after the leader's SIGKILL, after {} canary failures (p = {:?}); {} jobs hurt, all completed on stable",
        leader_now.id,
        evidence.canary.failures,
        evidence.p_value,
        hurt.len()
    );
}
