//! Rescue: dead nodes' and expired leases' jobs come back as `lost`, poison pills are quarantined.

use super::*;

/// Rescues the jobs of the dead node `node` now, quarantining after three losses in a row.
async fn rescue_dead(store: &Arc<dyn Store>, node: &str) -> Vec<mend::store::Rescued> {
    store
        .rescue(RescueParams {
            dead_nodes: vec![node.into()],
            now: Utc::now(),
            quarantine_after_lost: 3,
        })
        .await
        .unwrap()
}

pub async fn rescue_takes_dead_nodes_and_expired_leases_only(store: Arc<dyn Store>) {
    insert_k(&store, 3).await;
    let dead = store
        .claim(claim_params("default", 1, "dead-node"))
        .await
        .unwrap();
    let mut hung_p = claim_params("default", 1, "hung-node");
    hung_p.lease_duration = Duration::from_millis(1);
    let hung = store.claim(hung_p).await.unwrap();
    let live = store
        .claim(claim_params("default", 1, "live-node"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let rescued = rescue_dead(&store, "dead-node").await;
    let ids: HashSet<Uuid> = rescued.iter().map(|r| r.job.id).collect();
    assert_eq!(ids, HashSet::from([dead[0].id, hung[0].id]));
    for r in &rescued {
        assert_eq!(r.job.state, JobState::Retryable);
        assert!(!r.quarantined);
        assert_eq!(r.job.attempt, 1, "a lost attempt counts");
        assert_eq!(r.job.errors.len(), 1);
        assert_eq!(r.job.errors[0].kind, ErrorKind::Lost);
        assert!(
            r.job.errors[0].message.contains("worker lost"),
            "{}",
            r.job.errors[0].message
        );
    }
    assert_eq!(
        get(&store, live[0].id).await.state,
        JobState::Running,
        "a live node's job stays"
    );
    // The dead node's late outcome is refused.
    let late = complete(
        &store,
        vec![outcome(&dead[0], OutcomeKind::Completed { result: None })],
    )
    .await;
    assert_eq!(late.fenced, vec![dead[0].id]);
    // Rescued jobs run again: claimable at once, as attempt 2.
    let again = claim(&store, "default", 10).await;
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|j| j.attempt == 2));
}

pub async fn rescue_quarantines_a_poison_pill(store: Arc<dyn Store>) {
    store
        .insert_many(vec![job("poison").with_max_attempts(10)])
        .await
        .unwrap();
    for round in 1..=3 {
        let c = store
            .claim(claim_params("default", 1, "crashy"))
            .await
            .unwrap();
        assert_eq!(c.len(), 1, "round {round}: the job is claimable");
        let rescued = rescue_dead(&store, "crashy").await;
        assert_eq!(rescued.len(), 1);
        let r = &rescued[0];
        if round < 3 {
            assert_eq!(r.job.state, JobState::Retryable);
            assert!(!r.quarantined);
        } else {
            assert!(r.quarantined);
            assert_eq!(r.job.state, JobState::Discarded);
            let last = r.job.errors.last().unwrap();
            assert_eq!(last.kind, ErrorKind::Lost);
            assert!(last.message.contains("quarantined"), "{}", last.message);
            assert_eq!(r.job.consecutive_lost(), 3);
        }
    }
}

pub async fn rescue_cancels_a_job_whose_cancel_was_requested(store: Arc<dyn Store>) {
    store.insert_many(vec![job("k")]).await.unwrap();
    let c = store
        .claim(claim_params("default", 1, "gone"))
        .await
        .unwrap();
    cancel_now(&store, vec![c[0].id]).await;
    let r = rescue_dead(&store, "gone").await;
    assert_eq!(
        r[0].job.state,
        JobState::Cancelled,
        "a cancel request survives the worker's death"
    );
    assert!(r[0].job.finalized_at.is_some());
    assert!(
        claim(&store, "default", 10).await.is_empty(),
        "it is not run again"
    );
}

pub async fn rescue_discards_when_out_of_attempts(store: Arc<dyn Store>) {
    store
        .insert_many(vec![job("k").with_max_attempts(1)])
        .await
        .unwrap();
    store
        .claim(claim_params("default", 1, "gone"))
        .await
        .unwrap();
    let r = rescue_dead(&store, "gone").await;
    assert_eq!(r[0].job.state, JobState::Discarded);
    assert!(!r[0].quarantined);
}
