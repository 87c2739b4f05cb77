//! Claiming: order, filters, limits, paused queues, and no job handed out twice.

use super::*;

pub async fn claim_order_is_priority_then_run_at_then_id(store: Arc<dyn Store>) {
    let now = Utc::now();
    let past = |s: i64| now - chrono::Duration::seconds(s);
    // Inserted in an order unlike the claim order.
    let a = job("k").with_priority(5).with_run_at(past(100));
    let b = job("k").with_priority(0).with_run_at(past(10));
    let c = job("k").with_priority(0).with_run_at(past(20));
    let d = job("k").with_priority(-1).with_run_at(past(1));
    let e = job("k").with_priority(0).with_run_at(past(10)); // same run_at as b; id decides
    store
        .insert_many(vec![a.clone(), b.clone(), c.clone(), d.clone(), e.clone()])
        .await
        .unwrap();
    let got: Vec<Uuid> = claim(&store, "default", 3)
        .await
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, vec![d.id, c.id, b.id]);
    let got: Vec<Uuid> = claim(&store, "default", 10)
        .await
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, vec![e.id, a.id]);
}

pub async fn claim_respects_queue_kinds_and_limit(store: Arc<dyn Store>) {
    let mut jobs = Vec::new();
    for i in 0..6 {
        jobs.push(job(if i % 2 == 0 { "even" } else { "odd" }));
    }
    jobs.push(job("even").with_queue("other"));
    store.insert_many(jobs).await.unwrap();
    let mut p = claim_params("default", 2, OWNER);
    p.kinds = vec!["even".into()];
    let first = store.claim(p.clone()).await.unwrap();
    assert_eq!(first.len(), 2, "limit");
    assert!(first
        .iter()
        .all(|j| j.kind == "even" && j.queue == "default"));
    for j in &first {
        assert_eq!(j.state, JobState::Running);
        assert_eq!(j.attempt, 1);
        assert_eq!(j.lease_owner.as_deref(), Some(OWNER));
        assert!(j.lease_expires_at.unwrap() > Utc::now());
        assert!(j.attempted_at.is_some());
    }
    p.limit = 10;
    assert_eq!(
        store.claim(p).await.unwrap().len(),
        1,
        "one even job left in default"
    );
    assert_eq!(
        claim(&store, "default", 10).await.len(),
        3,
        "no kind filter: the odd ones"
    );
    assert_eq!(claim(&store, "other", 10).await.len(), 1);
}

pub async fn concurrent_claims_never_share_a_job(store: Arc<dyn Store>) {
    let jobs: Vec<NewJob> = (0..300).map(|_| job("k")).collect();
    store.insert_many(jobs).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim(claim_params("default", 7, &format!("w{w}")))
                    .await
                    .unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 300);
}

pub async fn paused_queues_are_not_claimed(store: Arc<dyn Store>) {
    store
        .insert_many(vec![job("k").with_queue("mail"), job("k")])
        .await
        .unwrap();
    store
        .set_queue_paused("mail", true, Utc::now())
        .await
        .unwrap();
    store
        .set_queue_paused("empty", true, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        store.paused_queues().await.unwrap(),
        vec!["empty".to_string(), "mail".to_string()]
    );
    assert!(
        claim(&store, "mail", 10).await.is_empty(),
        "a paused queue yields nothing"
    );
    assert_eq!(
        claim(&store, "default", 10).await.len(),
        1,
        "other queues go on"
    );
    store
        .set_queue_paused("mail", false, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        store.paused_queues().await.unwrap(),
        vec!["empty".to_string()]
    );
    assert_eq!(claim(&store, "mail", 10).await.len(), 1, "resumed");
}
