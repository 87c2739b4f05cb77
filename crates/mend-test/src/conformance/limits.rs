//! Rate limits and per-key concurrency limits: stored, enforced at claim, freed by outcomes
//! and rescues.

use mend::limits::{Limit, Rate};
use mend::store::{LimitSubject, LimitUsageParams, SetLimitParams};

use super::*;

async fn set(store: &Arc<dyn Store>, limit: Limit) -> Result<(), mend::StoreError> {
    store
        .set_limit(SetLimitParams {
            limit,
            now: Utc::now(),
        })
        .await
}

async fn claim_as(store: &Arc<dyn Store>, queue: &str, limit: usize, owner: &str) -> Vec<JobRow> {
    store
        .claim(claim_params(queue, limit, owner))
        .await
        .unwrap()
}

async fn holds(store: &Arc<dyn Store>, job: &JobRow) -> Vec<mend::limits::Hold> {
    store
        .limit_usage(LimitUsageParams {
            queue: job.queue.clone(),
            jobs: vec![LimitSubject {
                kind: job.kind.clone(),
                args: job.args.clone(),
                limit_key: job.limit_key.clone(),
            }],
        })
        .await
        .unwrap()
        .holds(job, Utc::now())
}

pub async fn limits_are_set_listed_replaced_and_deleted(store: Arc<dyn Store>) {
    let limit = Limit::new("per-acct", "q").per_key("/acct").concurrency(2);
    set(&store, limit.clone()).await.unwrap();
    let listed = store.list_limits().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].limit, limit);
    assert_eq!(listed[0].waiting, 0);

    // Refused: nothing changes.
    for bad in [
        Limit::new("per-acct", "q").concurrency(0),
        Limit::new("per-acct", "q").per_key("acct").concurrency(1),
        Limit::new("per-acct", "q"),
        Limit::new("no spaces", "q").concurrency(1),
    ] {
        let e = set(&store, bad.clone()).await.unwrap_err();
        assert!(
            matches!(e, mend::StoreError::InvalidJob(_)),
            "{bad:?} refused as invalid, got {e}"
        );
    }
    assert_eq!(store.list_limits().await.unwrap()[0].limit, limit);

    // Replaced by name.
    let rate = Limit::new("per-acct", "q").rate(Rate::new(5, Duration::from_secs(1)));
    set(&store, rate.clone()).await.unwrap();
    assert_eq!(store.list_limits().await.unwrap()[0].limit, rate);

    // At most 16 per queue.
    for i in 1..mend::limits::MAX_LIMITS_PER_QUEUE {
        set(&store, Limit::new(format!("l{i}"), "q").concurrency(9))
            .await
            .unwrap();
    }
    let e = set(&store, Limit::new("one-too-many", "q").concurrency(1))
        .await
        .unwrap_err();
    assert!(matches!(e, mend::StoreError::InvalidJob(_)), "{e}");
    set(&store, Limit::new("elsewhere", "other").concurrency(1))
        .await
        .unwrap();

    assert!(store.delete_limit("per-acct".into()).await.unwrap());
    assert!(!store.delete_limit("per-acct".into()).await.unwrap());
    let names: Vec<String> = store
        .list_limits()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.limit.name)
        .collect();
    assert!(!names.contains(&"per-acct".to_owned()));
    assert_eq!(names.len(), mend::limits::MAX_LIMITS_PER_QUEUE);
}

pub async fn a_per_key_concurrency_limit_holds_busy_keys_at_claim(store: Arc<dyn Store>) {
    set(
        &store,
        Limit::new("one-per-acct", "q")
            .per_key("/acct")
            .concurrency(1),
    )
    .await
    .unwrap();
    let on_q = |acct: &str| NewJob::new("k", json!({"acct": acct})).with_queue("q");
    let jobs = vec![
        on_q("a"),
        on_q("a"),
        on_q("b"),
        on_q("x").with_limit_key("a"),
        on_q("c"),
    ];
    store.insert_many(jobs.clone()).await.unwrap();

    let first = claim_as(&store, "q", 10, "n1").await;
    let ids: HashSet<Uuid> = first.iter().map(|j| j.id).collect();
    assert_eq!(
        ids,
        HashSet::from([jobs[0].id, jobs[2].id, jobs[4].id]),
        "one job per account; the enqueue key puts the fourth job under account a"
    );
    assert!(
        claim_as(&store, "q", 10, "n2").await.is_empty(),
        "every account is busy, whichever node asks"
    );
    let waiting = store.list_limits().await.unwrap();
    assert_eq!(waiting[0].waiting, 2, "two jobs held back under the limit");
    let held = holds(&store, &get(&store, jobs[1].id).await).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].limit, "one-per-acct");
    assert_eq!(held[0].key, "a");

    // Completing account a's job frees its slot: the next of a starts.
    let a = first.iter().find(|j| j.id == jobs[0].id).unwrap();
    complete(
        &store,
        vec![outcome(a, OutcomeKind::Completed { result: None })],
    )
    .await;
    let next = claim_as(&store, "q", 10, "n2").await;
    assert_eq!(next.len(), 1);
    assert!(
        next[0].id == jobs[1].id || next[0].id == jobs[3].id,
        "a job of account a"
    );

    // A rescued attempt frees its slot too.
    let b = first.iter().find(|j| j.id == jobs[2].id).unwrap();
    let more_b = on_q("b");
    store.insert_many(vec![more_b.clone()]).await.unwrap();
    assert!(claim_as(&store, "q", 10, "n2")
        .await
        .iter()
        .all(|j| j.id != more_b.id));
    store
        .rescue(RescueParams {
            dead_nodes: vec![b.lease_owner.clone().unwrap()],
            now: Utc::now(),
            quarantine_after_lost: 3,
        })
        .await
        .unwrap();
    let after = claim_as(&store, "q", 10, "n3").await;
    assert!(
        after.iter().any(|j| j.id == more_b.id || j.id == b.id),
        "account b runs again once its holder was rescued: {after:?}"
    );
}

pub async fn a_rate_limit_caps_starts_across_claims(store: Arc<dyn Store>) {
    set(
        &store,
        Limit::new("slow", "q").rate(Rate::new(3, Duration::from_secs(3600))),
    )
    .await
    .unwrap();
    let jobs: Vec<NewJob> = (0..10)
        .map(|i| NewJob::new("k", json!({ "i": i })).with_queue("q"))
        .collect();
    store.insert_many(jobs.clone()).await.unwrap();
    assert_eq!(claim_as(&store, "q", 2, "n1").await.len(), 2);
    assert_eq!(
        claim_as(&store, "q", 10, "n2").await.len(),
        1,
        "the burst (3 by default) is shared by every node"
    );
    assert!(claim_as(&store, "q", 10, "n1").await.is_empty());
    let held = holds(&store, &get(&store, jobs[9].id).await).await;
    assert_eq!(held.len(), 1, "{held:?}");
    let until = held[0].until.expect("a rate hold says when");
    assert!(until > Utc::now() + chrono::Duration::minutes(10));

    // Other queues are not limited.
    store
        .insert_many(vec![NewJob::new("k", json!({})).with_queue("free")])
        .await
        .unwrap();
    assert_eq!(claim_as(&store, "free", 10, "n1").await.len(), 1);

    // Without the limit, the queue drains.
    assert!(store.delete_limit("slow".into()).await.unwrap());
    let rest = claim_as(&store, "q", 10, "n1").await;
    assert_eq!(rest.len(), 7);
}

pub async fn a_kind_limit_leaves_other_kinds_of_the_queue_alone(store: Arc<dyn Store>) {
    set(
        &store,
        Limit::new("one-slow", "q").kind("slow").concurrency(1),
    )
    .await
    .unwrap();
    let jobs: Vec<NewJob> = ["slow", "slow", "fast", "fast"]
        .iter()
        .map(|k| NewJob::new(*k, json!({})).with_queue("q"))
        .collect();
    store.insert_many(jobs.clone()).await.unwrap();
    let got = claim_as(&store, "q", 10, "n1").await;
    let kinds: Vec<&str> = got.iter().map(|j| j.kind.as_str()).collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "slow").count(), 1);
}

/// A worker claiming ahead of its free slots takes none ahead from a queue with limits (a job
/// waiting on a node must not hold a limit's place), and all it asked for from one without.
pub async fn a_queue_with_limits_claims_nothing_ahead(store: Arc<dyn Store>) {
    set(&store, Limit::new("wide", "q").concurrency(100))
        .await
        .unwrap();
    for queue in ["q", "open"] {
        let jobs: Vec<NewJob> = (0..10)
            .map(|_| NewJob::new("k", json!({})).with_queue(queue))
            .collect();
        store.insert_many(jobs).await.unwrap();
    }
    let ahead = |queue: &str, limit: usize, ahead: usize| ClaimParams {
        ahead,
        ..claim_params(queue, limit, "n1")
    };
    let limited = store.claim(ahead("q", 6, 4)).await.unwrap();
    assert_eq!(limited.len(), 2, "the free slots only");
    let none = store.claim(ahead("q", 3, 3)).await.unwrap();
    assert!(none.is_empty(), "no free slot, nothing claimed: {none:?}");
    let open = store.claim(ahead("open", 6, 4)).await.unwrap();
    assert_eq!(open.len(), 6, "no limits: ahead too");
}

pub async fn full_rate_buckets_are_pruned_and_spent_ones_kept(store: Arc<dyn Store>) {
    // 1 start per hour: a spent bucket stays spent for an hour.
    set(
        &store,
        Limit::new("hourly", "q")
            .per_key("/k")
            .rate(Rate::new(1, Duration::from_secs(3600))),
    )
    .await
    .unwrap();
    let jobs: Vec<NewJob> = ["a", "b"]
        .iter()
        .map(|k| NewJob::new("k", json!({ "k": k })).with_queue("q"))
        .collect();
    store.insert_many(jobs.clone()).await.unwrap();
    assert_eq!(claim_as(&store, "q", 10, "n1").await.len(), 2);
    let usage = |store: Arc<dyn Store>| async move {
        store
            .limit_usage(LimitUsageParams {
                queue: "q".into(),
                jobs: ["a", "b"]
                    .iter()
                    .map(|k| LimitSubject {
                        kind: "k".into(),
                        args: json!({ "k": k }),
                        limit_key: None,
                    })
                    .collect(),
            })
            .await
            .unwrap()
            .usage
            .buckets
            .len()
    };
    assert_eq!(usage(store.clone()).await, 2, "one spent bucket per key");
    assert_eq!(
        store.prune_limit_buckets(Utc::now(), 100).await.unwrap(),
        0,
        "spent buckets are kept"
    );
    // Two hours on, both have filled up again: the same as no bucket.
    let later = Utc::now() + chrono::Duration::hours(2);
    assert_eq!(
        store.prune_limit_buckets(later, 1).await.unwrap(),
        1,
        "bounded"
    );
    assert_eq!(store.prune_limit_buckets(later, 100).await.unwrap(), 1);
    assert_eq!(usage(store.clone()).await, 0);
}
