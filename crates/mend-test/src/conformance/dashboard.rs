//! The reads and the one delete the dashboard needs: args and time filters, capped per-state
//! counts, a job's place in its queue, deleting finished jobs only.

use super::*;
use mend::store::{CountAheadParams, CountStatesParams};

pub async fn dashboard_filters_counts_and_deletes(store: Arc<dyn Store>) {
    let before = Utc::now() - chrono::Duration::seconds(1);
    let jobs: Vec<NewJob> = (0..6)
        .map(|i| {
            NewJob::new(
                "a",
                json!({"user": i, "plan": if i % 2 == 1 { "pro" } else { "free" }}),
            )
            .with_queue("q1")
        })
        .collect();
    let rows = store.insert_many(jobs).await.unwrap();
    let list = |p: ListParams| {
        let store = store.clone();
        async move {
            store
                .list(ListParams { limit: 100, ..p })
                .await
                .unwrap()
                .jobs
        }
    };
    let contains = |v: serde_json::Value| match v {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    };
    let pro = list(ListParams {
        args_contains: contains(json!({"plan": "pro"})),
        ..Default::default()
    })
    .await;
    assert_eq!(pro.len(), 3, "three pro jobs");
    assert!(pro.iter().all(|j| j.args["plan"] == "pro"));
    let one = list(ListParams {
        args_contains: contains(json!({"plan": "pro", "user": 3})),
        ..Default::default()
    })
    .await;
    assert_eq!(
        one.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![rows[3].id]
    );
    let typed = list(ListParams {
        args_contains: contains(json!({"user": "3"})),
        ..Default::default()
    })
    .await;
    assert!(typed.is_empty(), "a string does not match a number");
    let none = list(ListParams {
        args_contains: contains(json!({"plan": "pro"})),
        kind: Some("other".into()),
        ..Default::default()
    })
    .await;
    assert!(
        none.is_empty(),
        "args search combines with the other filters"
    );

    let later = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(
        list(ListParams {
            created_after: Some(before),
            created_before: Some(later),
            ..Default::default()
        })
        .await
        .len(),
        6
    );
    assert!(list(ListParams {
        created_after: Some(later),
        ..Default::default()
    })
    .await
    .is_empty());
    assert!(list(ListParams {
        created_before: Some(before),
        ..Default::default()
    })
    .await
    .is_empty());

    // One running, one cancelled, four available.
    let running = claim(&store, "q1", 1).await;
    assert_eq!(running.len(), 1);
    let cancelled = rows[5].id;
    cancel_now(&store, vec![cancelled]).await;

    let counts = store
        .count_states(CountStatesParams {
            queue: Some("q1".into()),
            kind: None,
            cap: 3,
            states: vec![],
        })
        .await
        .unwrap();
    let of = |s: JobState| {
        counts
            .iter()
            .find(|c| c.state == s)
            .copied()
            .expect("every state is counted")
    };
    assert_eq!(counts.len(), JobState::ALL.len());
    assert_eq!(
        (
            of(JobState::Available).count,
            of(JobState::Available).capped
        ),
        (3, true)
    );
    assert_eq!(
        (of(JobState::Running).count, of(JobState::Running).capped),
        (1, false)
    );
    assert_eq!(
        (
            of(JobState::Cancelled).count,
            of(JobState::Cancelled).capped
        ),
        (1, false)
    );
    assert_eq!(of(JobState::Completed).count, 0);
    let uncapped = store
        .count_states(CountStatesParams {
            queue: Some("q1".into()),
            kind: Some("a".into()),
            cap: 100,
            states: vec![],
        })
        .await
        .unwrap();
    let available = uncapped
        .iter()
        .find(|c| c.state == JobState::Available)
        .map(|c| (c.count, c.capped));
    assert_eq!(available, Some((4, false)));
    // Without a filter every state is counted exactly (up to the cap), each by its index.
    let everything = store
        .count_states(CountStatesParams {
            queue: None,
            kind: None,
            cap: 100,
            states: vec![],
        })
        .await
        .unwrap();
    let exact: Vec<(JobState, u64, bool)> = everything
        .iter()
        .filter(|c| c.count > 0)
        .map(|c| (c.state, c.count, c.capped))
        .collect();
    assert_eq!(
        exact,
        vec![
            (JobState::Available, 4, false),
            (JobState::Running, 1, false),
            (JobState::Cancelled, 1, false)
        ]
    );
    let only_running = store
        .count_states(CountStatesParams {
            queue: Some("q1".into()),
            kind: None,
            cap: 100,
            states: vec![JobState::Running],
        })
        .await
        .unwrap();
    assert_eq!(only_running.len(), 1);
    assert_eq!(only_running[0].count, 1);
    let other_queue = store
        .count_states(CountStatesParams {
            queue: Some("q2".into()),
            kind: None,
            cap: 100,
            states: vec![],
        })
        .await
        .unwrap();
    assert!(other_queue.iter().all(|c| c.count == 0));

    // The newest available job waits behind the three other available ones.
    let last = get(&store, rows[4].id).await;
    assert_eq!(last.state, JobState::Available);
    let ahead = |cap| {
        let store = store.clone();
        let last = last.clone();
        async move {
            store
                .count_ahead(CountAheadParams {
                    id: last.id,
                    queue: last.queue.clone(),
                    priority: last.priority,
                    run_at: last.run_at,
                    cap,
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(ahead(100).await, 3);
    assert_eq!(ahead(1).await, 2, "capped at cap + 1");

    // The head of q1's line is the oldest available job in claim order; q2 has none.
    let heads = store
        .queue_heads(vec!["q1".into(), "q2".into()])
        .await
        .unwrap();
    assert_eq!(
        heads.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![rows[1].id]
    );

    // Only finished jobs are deleted.
    let deleted = store
        .delete_final(vec![cancelled, running[0].id, rows[4].id])
        .await
        .unwrap();
    assert_eq!(deleted, vec![cancelled]);
    assert!(store.get(cancelled).await.unwrap().is_none());
    assert_eq!(get(&store, running[0].id).await.state, JobState::Running);
    assert_eq!(get(&store, rows[4].id).await.state, JobState::Available);
}
