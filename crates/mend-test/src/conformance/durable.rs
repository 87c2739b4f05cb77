//! Durable cleanups and transactional completion: both are fenced by (id, attempt, lease
//! owner) like every other write of a running job.

use super::*;
use mend::store::{CleanupDoneParams, DeferDurableParams};

fn defer(job: &JobRow, owner: &str, attempt: i32, name: &str) -> DeferDurableParams {
    DeferDurableParams {
        id: job.id,
        attempt,
        lease_owner: owner.into(),
        name: name.into(),
        args: json!({"path": name}),
    }
}

fn done(job: &JobRow, owner: &str, seq: u32) -> CleanupDoneParams {
    CleanupDoneParams {
        id: job.id,
        attempt: job.attempt,
        lease_owner: owner.into(),
        seq,
        event: mend::job::TimelineEvent::new(Utc::now(), "cleanup")
            .attempt(job.attempt)
            .detail(format!("durable cleanup #{seq} ran")),
    }
}

pub async fn durable_cleanups_are_written_down_fenced_and_removed_when_run(store: Arc<dyn Store>) {
    store.insert_many(vec![job("k")]).await.unwrap();
    let j = claim(&store, "default", 1).await.remove(0);
    let first = store.defer_durable(defer(&j, OWNER, 1, "a")).await.unwrap();
    let second = store.defer_durable(defer(&j, OWNER, 1, "b")).await.unwrap();
    let (Some(first), Some(second)) = (first, second) else {
        panic!("the lease holder can write cleanups down: {first:?} {second:?}");
    };
    assert!(
        second > first,
        "sequence numbers grow: {first} then {second}"
    );
    assert_eq!(
        store
            .defer_durable(defer(&j, "node-b", 1, "c"))
            .await
            .unwrap(),
        None,
        "another node cannot write a cleanup down"
    );
    assert_eq!(
        store.defer_durable(defer(&j, OWNER, 2, "c")).await.unwrap(),
        None,
        "another attempt cannot write a cleanup down"
    );
    let pending = get(&store, j.id).await.pending_cleanups;
    assert_eq!(
        pending
            .iter()
            .map(|c| (c.name.as_str(), c.seq, c.attempt))
            .collect::<Vec<_>>(),
        vec![("a", first, 1), ("b", second, 1)]
    );
    assert_eq!(pending[0].args, json!({"path": "a"}));

    assert!(
        !store
            .cleanup_done(done(&j, "node-b", second))
            .await
            .unwrap(),
        "a run reported by a node without the lease is refused"
    );
    assert_eq!(get(&store, j.id).await.pending_cleanups.len(), 2);
    assert!(store.cleanup_done(done(&j, OWNER, second)).await.unwrap());
    let after = get(&store, j.id).await;
    assert_eq!(
        after
            .pending_cleanups
            .iter()
            .map(|c| c.seq)
            .collect::<Vec<_>>(),
        vec![first]
    );
    assert!(
        after
            .timeline
            .iter()
            .any(|e| e.event == "cleanup" && e.attempt == Some(1)),
        "the run is in the timeline: {:?}",
        after.timeline
    );

    // A completed job's cleanups are forgotten with the completion: the work stands.
    let r = complete(
        &store,
        vec![outcome(&j, OutcomeKind::Completed { result: None })],
    )
    .await;
    assert_eq!(r.applied, vec![j.id]);
    assert!(get(&store, j.id).await.pending_cleanups.is_empty());
}

/// Effects a backend's tests hand to [`completion_commits_with_its_effect_or_not_at_all`]:
/// one that commits and one that fails (each backend builds them with its own `effect`).
pub struct EffectKit {
    /// An effect whose writes succeed.
    pub ok: fn() -> mend::store::TxEffect,
    /// An effect that fails (its transaction must roll back).
    pub failing: fn() -> mend::store::TxEffect,
}

pub async fn completion_commits_with_its_effect_or_not_at_all(
    store: Arc<dyn Store>,
    kit: EffectKit,
) {
    store.insert_many(vec![job("k"), job("k")]).await.unwrap();
    let c = claim(&store, "default", 2).await;
    let completed = |j: &JobRow| {
        outcome(
            j,
            OutcomeKind::Completed {
                result: Some(json!(7)),
            },
        )
    };

    // A failing effect writes nothing: the job is still running under the same lease.
    assert!(store
        .complete_with_effect(completed(&c[0]), (kit.failing)(), Utc::now())
        .await
        .is_err());
    let still = get(&store, c[0].id).await;
    assert_eq!(
        (still.state, still.attempt, still.lease_owner.as_deref()),
        (JobState::Running, 1, Some(OWNER))
    );

    // Fenced: another node's completion (with its effect) is refused and changes nothing.
    let mut foreign = completed(&c[1]);
    foreign.lease_owner = "node-b".into();
    assert!(!store
        .complete_with_effect(foreign, (kit.ok)(), Utc::now())
        .await
        .unwrap());
    assert_eq!(get(&store, c[1].id).await.state, JobState::Running);

    // The holder's completion commits with its effect.
    for j in &c {
        assert!(store
            .complete_with_effect(completed(j), (kit.ok)(), Utc::now())
            .await
            .unwrap());
        let row = get(&store, j.id).await;
        assert_eq!(row.state, JobState::Completed);
        assert_eq!(row.result, Some(json!(7)));
    }
}
