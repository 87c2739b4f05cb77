//! The dashboard's history: per-minute aggregates that add up across flushes and merge into
//! buckets by total, queue or kind with the right percentiles; events; pruning; node facts.

use mend::stats::{
    Counts, Event, EventsParams, PruneHistoryParams, Sketch, StatsBy, StatsDelta, StatsParams,
};
use mend::store::NodeQueue;

use super::*;

fn at_minute(m: i64) -> DateTime<Utc> {
    // A fixed, whole-minute origin well in the past, so nothing else writes there.
    DateTime::from_timestamp(1_700_000_000 / 60 * 60 + m * 60, 0).unwrap()
}

fn delta(m: i64, queue: &str, kind: &str, completed: u64, waits_ms: &[f64]) -> StatsDelta {
    let mut wait = Sketch::default();
    let mut run = Sketch::default();
    for w in waits_ms {
        wait.record_ms(*w);
        run.record_ms(*w * 2.0);
    }
    StatsDelta {
        minute: at_minute(m),
        queue: queue.into(),
        kind: kind.into(),
        counts: Counts {
            completed,
            retried: 1,
            failed: 2,
            cancelled: 0,
            lost: 3,
            snoozed: 0,
        },
        wait,
        run,
    }
}

fn params(since: i64, until: i64, step_min: u64, by: StatsBy) -> StatsParams {
    StatsParams {
        since: at_minute(since),
        until: at_minute(until),
        step: Duration::from_secs(step_min * 60),
        by,
        queue: None,
        kind: None,
    }
    .checked()
    .unwrap()
}

fn within_a_bucket(got: Option<f64>, want: f64) {
    let got = got.expect("a percentile");
    assert!(
        (got / want - 1.0).abs() <= 0.13,
        "percentile {got} ms is not within a bucket (±12.5%) of {want} ms"
    );
}

pub async fn stats_flushes_add_up_and_merge_by_group(store: Arc<dyn Store>) {
    // Two flushes (two nodes, or one node twice) touching the same rows.
    store
        .add_stats(vec![
            delta(0, "q1", "a", 10, &[5.0]),
            delta(0, "q2", "b", 1, &[]),
            delta(1, "q1", "a", 4, &[]),
        ])
        .await
        .unwrap();
    store
        .add_stats(vec![
            delta(0, "q1", "a", 5, &[5.0]),
            delta(2, "q1", "b", 7, &[]),
        ])
        .await
        .unwrap();
    store.add_stats(vec![]).await.unwrap();

    let total = store.stats(params(0, 3, 1, StatsBy::Total)).await.unwrap();
    assert_eq!(total.step_seconds, 60);
    assert_eq!(total.since, at_minute(0));
    assert_eq!(total.until, at_minute(3));
    let per_minute: Vec<(DateTime<Utc>, u64)> = total
        .buckets
        .iter()
        .map(|b| (b.at, b.counts.completed))
        .collect();
    assert_eq!(
        per_minute,
        vec![(at_minute(0), 16), (at_minute(1), 4), (at_minute(2), 7)],
        "counts of the same minute add up across flushes and queues/kinds"
    );
    let m0 = &total.buckets[0];
    assert!(m0.queue.is_none() && m0.kind.is_none());
    assert_eq!(
        (m0.counts.retried, m0.counts.failed, m0.counts.lost),
        (3, 6, 9)
    );
    within_a_bucket(m0.wait_p50_ms, 5.0);
    within_a_bucket(m0.run_p95_ms, 10.0);
    assert_eq!(
        total.buckets[1].wait_p50_ms, None,
        "no attempt timed: no percentile"
    );

    let by_kind = store.stats(params(0, 3, 3, StatsBy::Kind)).await.unwrap();
    let kinds: Vec<(Option<&str>, u64)> = by_kind
        .buckets
        .iter()
        .map(|b| (b.kind.as_deref(), b.counts.completed))
        .collect();
    assert_eq!(
        kinds,
        vec![(Some("a"), 19), (Some("b"), 8)],
        "step = window: one bucket per kind"
    );
    assert!(by_kind
        .buckets
        .iter()
        .all(|b| b.at == at_minute(0) && b.queue.is_none()));

    let by_queue = store.stats(params(0, 3, 1, StatsBy::Queue)).await.unwrap();
    let queues: Vec<(DateTime<Utc>, Option<&str>, u64)> = by_queue
        .buckets
        .iter()
        .map(|b| (b.at, b.queue.as_deref(), b.counts.completed))
        .collect();
    assert_eq!(
        queues,
        vec![
            (at_minute(0), Some("q1"), 15),
            (at_minute(0), Some("q2"), 1),
            (at_minute(1), Some("q1"), 4),
            (at_minute(2), Some("q1"), 7),
        ]
    );

    let only = store
        .stats(
            StatsParams {
                kind: Some("b".into()),
                queue: Some("q1".into()),
                ..params(0, 3, 3, StatsBy::Total)
            }
            .checked()
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(only.buckets.len(), 1);
    assert_eq!(
        only.buckets[0].counts.completed, 7,
        "filters by queue and kind"
    );

    let outside = store
        .stats(params(10, 20, 1, StatsBy::Total))
        .await
        .unwrap();
    assert!(
        outside.buckets.is_empty(),
        "minutes outside the window are not read"
    );
}

pub async fn stats_percentiles_of_a_known_distribution(store: Arc<dyn Store>) {
    // Waits of 1..=1000 ms, spread over two minutes, two queues and two flushes: the merge of
    // every piece must give the distribution's own p50 and p95.
    let waits: Vec<f64> = (1..=1000).map(f64::from).collect();
    let flush = |part: usize| {
        let mut out = Vec::new();
        for (i, chunk) in waits.chunks(250).enumerate() {
            if i % 2 != part {
                continue;
            }
            out.push(delta(
                i as i64 % 2,
                if i < 2 { "q1" } else { "q2" },
                "k",
                0,
                chunk,
            ));
        }
        out
    };
    let (first, second) = (flush(0), flush(1));
    store.add_stats(first).await.unwrap();
    store.add_stats(second).await.unwrap();
    let all = store.stats(params(0, 2, 2, StatsBy::Kind)).await.unwrap();
    assert_eq!(all.buckets.len(), 1);
    let b = &all.buckets[0];
    within_a_bucket(b.wait_p50_ms, 500.0);
    within_a_bucket(b.wait_p95_ms, 950.0);
    within_a_bucket(b.run_p50_ms, 1000.0);
    within_a_bucket(b.run_p95_ms, 1900.0);
}

pub async fn history_pruning_removes_old_minutes_and_events_only(store: Arc<dyn Store>) {
    store
        .add_stats((0..5).map(|m| delta(m, "q", "k", 1, &[1.0])).collect())
        .await
        .unwrap();
    let event = |m: i64| Event {
        at: at_minute(m),
        kind: "rescue".into(),
        node: format!("n{m}"),
        detail: json!({"jobs": m}),
    };
    store.add_events((0..5).map(event).collect()).await.unwrap();
    // A batch of 2 at a time: bounded deletes.
    let first = store
        .prune_history(PruneHistoryParams {
            before: at_minute(3),
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(first, 4, "two minutes and two events");
    let rest = store
        .prune_history(PruneHistoryParams {
            before: at_minute(3),
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(rest, 2);
    let left = store.stats(params(0, 5, 1, StatsBy::Total)).await.unwrap();
    assert_eq!(
        left.buckets.iter().map(|b| b.at).collect::<Vec<_>>(),
        vec![at_minute(3), at_minute(4)]
    );
    let events = store
        .events(EventsParams {
            since: at_minute(0),
            until: at_minute(10),
            kinds: vec![],
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.node.as_str()).collect::<Vec<_>>(),
        vec!["n4", "n3"]
    );
}

pub async fn events_round_trip_newest_first_by_kind(store: Arc<dyn Store>) {
    let e = |m: i64, kind: &str| Event {
        at: at_minute(m),
        kind: kind.into(),
        node: format!("node-{m}"),
        detail: json!({"m": m, "nested": {"deploy": m % 2 == 0}}),
    };
    store
        .add_events(vec![e(1, "rescue"), e(2, "node_joined"), e(3, "node_left")])
        .await
        .unwrap();
    store.add_events(vec![e(4, "rescue")]).await.unwrap();
    let all = store
        .events(EventsParams {
            since: at_minute(0),
            until: at_minute(10),
            kinds: vec![],
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(
        all,
        vec![
            e(4, "rescue"),
            e(3, "node_left"),
            e(2, "node_joined"),
            e(1, "rescue")
        ]
    );
    let some = store
        .events(EventsParams {
            since: at_minute(2),
            until: at_minute(4),
            kinds: vec!["rescue".into(), "node_joined".into()],
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(
        some,
        vec![e(2, "node_joined")],
        "window [since, until) and kinds"
    );
    let one = store
        .events(EventsParams {
            since: at_minute(0),
            until: at_minute(10),
            kinds: vec!["rescue".into()],
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(one, vec![e(4, "rescue")], "limit keeps the newest");
}

pub async fn node_facts_round_trip_and_heartbeats_update_them(store: Arc<dyn Store>) {
    let t0 = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let node = NodeInfo {
        id: "facts".into(),
        host: "h".into(),
        pid: 7,
        process_key: "k".into(),
        started_at: t0,
        last_seen: t0,
        kinds: vec!["email".into()],
        queues: vec![
            NodeQueue {
                name: "default".into(),
                concurrency: 10,
            },
            NodeQueue {
                name: "mail".into(),
                concurrency: 2,
            },
        ],
        build: "9.9.9".into(),
        in_flight: 3,
        draining: false,
        leader: false,
        versions: Default::default(),
    };
    store.register_node(node.clone()).await.unwrap();
    // As an older mend registers: no facts.
    let old = NodeInfo {
        id: "old".into(),
        host: "h".into(),
        pid: 8,
        process_key: "k".into(),
        started_at: t0,
        last_seen: t0,
        ..Default::default()
    };
    store.register_node(old.clone()).await.unwrap();
    let listed = store.list_nodes().await.unwrap();
    let got = |id: &str| listed.iter().find(|n| n.id == id).cloned().unwrap();
    // `leader` is the backend's to say; everything else comes back as written.
    assert_eq!(
        NodeInfo {
            leader: false,
            ..got("facts")
        },
        node
    );
    assert_eq!(
        NodeInfo {
            leader: false,
            ..got("old")
        },
        old
    );
    assert!(got("old").queues.is_empty() && got("old").build.is_empty());

    let t1 = t0 + chrono::Duration::seconds(1);
    assert!(store
        .heartbeat_node(HeartbeatNodeParams {
            id: "facts".into(),
            now: t1,
            in_flight: 9,
            draining: true,
        })
        .await
        .unwrap());
    let after = store.list_nodes().await.unwrap();
    let n = after.iter().find(|n| n.id == "facts").unwrap();
    assert_eq!((n.last_seen, n.in_flight, n.draining), (t1, 9, true));
    assert_eq!(n.queues, node.queues, "a heartbeat keeps the queues");
}
