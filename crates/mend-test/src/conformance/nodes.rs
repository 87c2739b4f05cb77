//! Nodes: registration, heartbeats, deregistration, dead nodes and leadership.

use super::*;

pub async fn nodes_register_heartbeat_and_deregister(store: Arc<dyn Store>) {
    let t0 = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let node = NodeInfo {
        id: "n1".into(),
        host: "h".into(),
        pid: 42,
        process_key: "ns|123".into(),
        started_at: t0,
        last_seen: t0,
        kinds: vec!["email".into(), "resize".into()],
        ..Default::default()
    };
    store.register_node(node.clone()).await.unwrap();
    store
        .register_node(NodeInfo {
            id: "n2".into(),
            ..node.clone()
        })
        .await
        .unwrap();
    let first = store.list_nodes().await.unwrap()[0].clone();
    // `leader` is read, not written: the backend's to say.
    assert_eq!(
        NodeInfo {
            leader: false,
            ..first
        },
        node
    );
    let t1 = t0 + chrono::Duration::seconds(5);
    assert!(store
        .heartbeat_node(HeartbeatNodeParams {
            id: "n1".into(),
            now: t1,
            in_flight: 0,
            draining: false,
        })
        .await
        .unwrap());
    assert!(
        !store
            .heartbeat_node(HeartbeatNodeParams {
                id: "never-registered".into(),
                now: t1,
                in_flight: 0,
                draining: false,
            })
            .await
            .unwrap(),
        "an unknown node is reported so it can register again"
    );
    let nodes = store.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes.iter().find(|n| n.id == "n1").unwrap().last_seen, t1);
    store.deregister_nodes(vec!["n1".into()]).await.unwrap();
    let nodes = store.list_nodes().await.unwrap();
    assert_eq!(
        nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        vec!["n2"]
    );
}

pub async fn dead_nodes_are_the_stale_ones_never_this_one(store: Arc<dyn Store>) {
    let now = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let hour_ago = now - chrono::Duration::hours(1);
    // Nodes on another host: their processes cannot be checked, only their heartbeats.
    let node = |id: &str, last_seen| NodeInfo {
        id: id.into(),
        host: "elsewhere.invalid".into(),
        pid: 1,
        process_key: "boot|ns|1".into(),
        started_at: hour_ago,
        last_seen,
        kinds: Vec::new(),
        ..Default::default()
    };
    for n in [
        node("me", hour_ago),
        node("stale", hour_ago),
        node("fresh", now),
    ] {
        store.register_node(n).await.unwrap();
    }
    let stale_before = now - chrono::Duration::seconds(60);
    let dead = dead_to(&store, "me", stale_before).await;
    assert_eq!(
        dead,
        vec!["stale".to_owned()],
        "only the node that stopped heartbeating is dead; the asking node never is"
    );
    // A single store leads maintenance (a shared backend elects one leader among its nodes).
    assert!(store.is_leader().await.unwrap());
    store.deregister_nodes(dead).await.unwrap();
    let dead = dead_to(&store, "me", stale_before).await;
    assert!(
        dead.is_empty(),
        "a removed node is not found again: {dead:?}"
    );
}

/// The nodes `self_id` finds dead when they last heartbeated before `stale_before`.
async fn dead_to(
    store: &Arc<dyn Store>,
    self_id: &str,
    stale_before: DateTime<Utc>,
) -> Vec<String> {
    store
        .dead_nodes(DeadNodesParams {
            self_id: self_id.into(),
            stale_before,
        })
        .await
        .unwrap()
}
