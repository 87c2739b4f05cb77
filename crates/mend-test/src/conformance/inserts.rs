//! Enqueueing: inserts, validation, idempotency keys, scheduled jobs and the wake-up of idle fetchers.

use super::*;

pub async fn insert_and_get_round_trip(store: Arc<dyn Store>) {
    let new = job("email")
        .with_queue("mail")
        .with_priority(3)
        .with_max_attempts(7)
        .with_tag("welcome")
        .with_tag("eu")
        .with_timeout(Duration::from_secs(9))
        .with_trace_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let rows = store.insert_many(vec![new.clone()]).await.unwrap();
    assert_eq!(rows.len(), 1);
    let stored = get(&store, new.id).await;
    assert_eq!(
        rows[0], stored,
        "insert must return exactly what a read returns"
    );
    assert_eq!(stored.id, new.id);
    assert_eq!(stored.queue, "mail");
    assert_eq!(stored.kind, "email");
    assert_eq!(stored.args, json!({"n": 1}));
    assert_eq!(stored.state, JobState::Available);
    assert_eq!(stored.priority, 3);
    assert_eq!(stored.attempt, 0);
    assert_eq!(stored.max_attempts, 7);
    assert_eq!(stored.tags, vec!["welcome".to_string(), "eu".to_string()]);
    assert_eq!(stored.timeout_ms, Some(9000));
    assert_eq!(
        stored.trace_parent.as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert!(stored.errors.is_empty() && stored.result.is_none() && stored.lease_owner.is_none());
    assert!(store.get(Uuid::now_v7()).await.unwrap().is_none());
    // The worker that claims the job gets its trace context too.
    let claimed = claim(&store, "mail", 1).await;
    assert_eq!(claimed[0].trace_parent, stored.trace_parent);

    // A batch comes back in input order.
    let batch: Vec<NewJob> = (0..50)
        .map(|i| NewJob::new("k", json!({ "i": i })))
        .collect();
    let ids: Vec<Uuid> = batch.iter().map(|j| j.id).collect();
    let rows = store.insert_many(batch).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
}

pub async fn insert_validation_stores_nothing(store: Arc<dyn Store>) {
    let good = job("ok");
    let bad = job("ok").with_max_attempts(0);
    let e = store
        .insert_many(vec![good.clone(), bad])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("max_attempts"), "{e}");
    assert!(
        store.get(good.id).await.unwrap().is_none(),
        "a rejected batch stores nothing"
    );
}

pub async fn unique_key_returns_the_existing_job(store: Arc<dyn Store>) {
    let first = job("charge").with_unique_key("order-1");
    let rows = store.insert_many(vec![first.clone()]).await.unwrap();
    assert_eq!(rows[0].id, first.id);
    let second = job("charge").with_unique_key("order-1");
    let third = job("charge").with_unique_key("order-2");
    let rows = store
        .insert_many(vec![second.clone(), third.clone()])
        .await
        .unwrap();
    assert_eq!(rows[0].id, first.id, "same key returns the original job");
    assert_eq!(rows[1].id, third.id);
    assert!(store.get(second.id).await.unwrap().is_none());
}

pub async fn future_run_at_is_scheduled_and_promoted_when_due(store: Arc<dyn Store>) {
    let later = job("k").with_run_at(Utc::now() + chrono::Duration::hours(1));
    let soon = job("k").with_run_at(Utc::now() + chrono::Duration::milliseconds(300));
    let rows = store
        .insert_many(vec![later.clone(), soon.clone()])
        .await
        .unwrap();
    assert!(rows.iter().all(|r| r.state == JobState::Scheduled));
    assert!(
        claim(&store, "default", 10).await.is_empty(),
        "scheduled jobs are not claimable"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let claimed = claim(&store, "default", 10).await;
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![soon.id]
    );
    assert_eq!(get(&store, later.id).await.state, JobState::Scheduled);
}

pub async fn insert_wakes_idle_fetchers(store: Arc<dyn Store>) {
    let wake = store.wakeup();
    let notified = wake.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let s = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.insert_many(vec![job("k")]).await.unwrap();
    });
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .expect("an insert wakes fetchers waiting on the store");
}
