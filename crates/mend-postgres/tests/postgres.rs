//! PostgreSQL-specific behaviour: index-backed hot paths, transactional enqueue, the session
//! lock that tells live nodes from dead ones, concurrent migrations, clear connection errors,
//! and who wakes whom when jobs are inserted.

#![expect(clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use mend::store::{ClaimParams, HeartbeatNodeParams, NodeInfo, Store};
use mend::NewJob;
use mend_postgres::{PgConfig, PgStore};

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        host: "h".into(),
        pid: 1,
        process_key: "k".into(),
        started_at: Utc::now(),
        last_seen: Utc::now(),
        kinds: Vec::new(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_paths_stay_on_indexes_as_the_table_grows() {
    let Some((store, _guard)) = common::fresh_store("hot_paths_stay_on_indexes").await else {
        return;
    };
    // Many finished jobs and a few waiting ones: the shape of a long-running system.
    for _ in 0..4 {
        let jobs: Vec<NewJob> = (0..5000)
            .map(|_| NewJob::new("k", serde_json::json!({})).with_queue("old"))
            .collect();
        store.insert_many(jobs).await.unwrap();
    }
    let c = common::client().await;
    c.batch_execute(&format!(
        "UPDATE \"{0}\".mend_jobs SET state = 'completed', finalized_at = now(); ANALYZE \"{0}\".mend_jobs;",
        store.schema()
    ))
    .await
    .unwrap();
    for (name, plan) in store.explain_hot_paths().await.unwrap() {
        assert!(
            !plan.contains("Seq Scan on mend_jobs"),
            "{name} scans the whole table:\n{plan}"
        );
        // Completions and heartbeats touch running jobs only: by primary key, or through the
        // running jobs' partial index (bounded by total concurrency, not by the table).
        let indexes: &[&str] = match name {
            "claim" | "limit_head" => &["mend_jobs_claim"],
            "promote" => &["mend_jobs_due"],
            "complete" | "extend" => &["mend_jobs_pkey", "mend_jobs_running"],
            "rescue" | "limit_running" => &["mend_jobs_running"],
            "limit_buckets" => &["mend_limit_buckets_pkey"],
            "unique_lookup" | "unique_holders" => &["mend_jobs_unique_held"],
            _ => unreachable!(),
        };
        assert!(
            indexes.iter().any(|i| plan.contains(i)),
            "{name} uses none of {indexes:?}:\n{plan}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_enqueued_in_a_callers_transaction_exist_only_if_it_commits() {
    let Some((store, guard)) = common::fresh_store("transactional_enqueue").await else {
        return;
    };
    let mut c = common::client().await;
    let tx = c.transaction().await.unwrap();
    let rolled_back = store
        .insert_many_in(&tx, vec![NewJob::new("k", serde_json::json!({"n": 1}))])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(store.get(rolled_back[0].id).await.unwrap().is_none());

    // A second store (another node) is woken by the commit, not before.
    let other = PgStore::open(&guard.store_url()).await.unwrap();
    let wake = other.wakeup();
    let woken = wake.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    let tx = c.transaction().await.unwrap();
    let kept = store
        .insert_many_in(&tx, vec![NewJob::new("k", serde_json::json!({"n": 2}))])
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), woken.as_mut())
            .await
            .is_err(),
        "woken before the commit"
    );
    assert!(
        store.get(kept[0].id).await.unwrap().is_none(),
        "visible before the commit"
    );
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), woken)
        .await
        .expect("the commit's NOTIFY wakes other nodes");
    assert!(store.get(kept[0].id).await.unwrap().is_some());
}

/// A store wakes its own fetchers when it inserts, and other stores hear its notification;
/// its own notification does not wake its fetchers a second time (that cost an empty claim
/// for every job picked up while idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stores_own_insert_wakes_its_fetchers_once_and_other_nodes_too() {
    let Some((store, guard)) = common::fresh_store("own_insert_wakes_once").await else {
        return;
    };
    let other = PgStore::open(&guard.store_url()).await.unwrap();
    // Counts the wake-ups of each store's fetchers; the next is armed before one is counted.
    let count = |n: Arc<tokio::sync::Notify>| {
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let mut next = Box::pin(n.clone().notified_owned());
        next.as_mut().enable();
        tokio::spawn(async move {
            loop {
                next.as_mut().await;
                next = Box::pin(n.clone().notified_owned());
                next.as_mut().enable();
                w.fetch_add(1, Ordering::SeqCst);
            }
        });
        woken
    };
    let (here, there) = (count(store.wakeup()), count(other.wakeup()));
    store
        .insert_many(vec![NewJob::new("k", serde_json::json!({"n": 1}))])
        .await
        .unwrap();
    let woken = |c: &Arc<AtomicUsize>, n: usize, what: &'static str| {
        let c = c.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(5), async {
                while c.load(Ordering::SeqCst) < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect(what);
        }
    };
    woken(&there, 1, "its notification wakes another node").await;
    // Well after the notification reached the other store, this one was woken once: by the
    // insert itself, not again by its own notification.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        here.load(Ordering::SeqCst),
        1,
        "woken by its own notification too"
    );
    // And the other way round: another node's insert wakes this store.
    other
        .insert_many(vec![NewJob::new("k", serde_json::json!({"n": 2}))])
        .await
        .unwrap();
    woken(&here, 2, "another node's insert wakes this store").await;
}

/// A job a transactional effect enqueues (its notification names the completing store,
/// which ignores its own) still starts at once on that store's idle node, not at its poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_by_a_transactional_effect_starts_at_once() {
    let Some((store, guard)) = common::fresh_store("effect_enqueue_wakes").await else {
        return;
    };
    let jobs = format!("\"{}\".mend_jobs", guard.name);
    let (ran_tx, mut ran) = tokio::sync::mpsc::unbounded_channel();
    let mut registry = mend::Registry::new();
    registry.register_raw("first", None, move |ctx, _| {
        let jobs = jobs.clone();
        async move {
            ctx.commit_with_completion(mend_postgres::effect(move |tx| {
                Box::pin(async move {
                    tx.execute(
                        &format!("INSERT INTO {jobs} (id, queue, kind, args, state, max_attempts, run_at, created_at) VALUES (gen_random_uuid(), 'default', 'follow', '{{}}', 'available', 3, now(), now())"),
                        &[],
                    )
                    .await
                    .map(drop)
                })
            }));
            Ok(None)
        }
    });
    registry.register_raw("follow", None, move |_, _| {
        let ran = ran_tx.clone();
        async move {
            let _ = ran.send(Instant::now());
            Ok(None)
        }
    });
    let store: Arc<dyn Store> = Arc::new(store);
    let worker = mend::Worker::builder(store.clone())
        .registry(registry)
        .queue("default", 4)
        .configure(|c| c.poll_interval = Duration::from_secs(60))
        .build()
        .start()
        .await
        .expect("start the worker");
    let started = Instant::now();
    store
        .insert_many(vec![NewJob::new("first", serde_json::json!({}))])
        .await
        .unwrap();
    let at = tokio::time::timeout(Duration::from_secs(10), ran.recv())
        .await
        .expect("the follow-up job ran long before the minute's poll")
        .expect("a follow-up");
    println!(
        "the follow-up started {:?} after the first job's enqueue",
        at.duration_since(started)
    );
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_dead_when_its_session_lock_is_gone_and_alive_across_a_cut_session() {
    let Some((leader, guard)) = common::fresh_store("session_lock_liveness").await else {
        return;
    };
    let tag = format!("{}_n", guard.name);
    let url = format!("{}&application_name={tag}", guard.store_url());
    let member = PgStore::open(&url).await.unwrap();
    member.register_node(node("member")).await.unwrap();
    assert!(leader.is_leader().await.unwrap());
    assert!(!member.is_leader().await.unwrap(), "one leader per schema");
    // Let the leader's session be older than its start-up grace.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let far_past = Utc::now() - chrono::Duration::hours(1);
    assert!(leader
        .dead_nodes(dead_before("leader", far_past))
        .await
        .unwrap()
        .is_empty());

    // Cut every connection of the member: its session comes back and takes its lock again
    // before the leader would call it dead.
    let c = common::client().await;
    let cut: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid))::int8 FROM pg_stat_activity WHERE application_name = $1",
            &[&tag],
        )
        .await
        .unwrap()
        .get(0);
    assert!(cut >= 1);
    for _ in 0..10 {
        assert!(
            leader
                .dead_nodes(dead_before("leader", far_past))
                .await
                .unwrap()
                .is_empty(),
            "a node whose session was cut and came back is alive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(member
        .heartbeat_node(HeartbeatNodeParams {
            id: "member".into(),
            now: Utc::now(),
            in_flight: 0,
            draining: false,
        })
        .await
        .unwrap());

    // Drop the member (its session closes, as when the process dies): dead within a second.
    drop(member);
    let start = Instant::now();
    loop {
        if leader
            .dead_nodes(dead_before("leader", far_past))
            .await
            .unwrap()
            == vec!["member".to_owned()]
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the dead node was not seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let Some(url) = common::server_url("migrate_once") else {
        return;
    };
    let guard = common::Schema::new(&url, "mend_t");
    let opens = (0..4).map(|_| {
        let url = guard.store_url();
        tokio::spawn(async move {
            PgStore::open_with(
                &url,
                PgConfig {
                    pool_size: 2,
                    ..PgConfig::default()
                },
            )
            .await
        })
    });
    for open in opens {
        open.await.unwrap().expect("every node opens");
    }
    let c = common::client().await;
    let versions: i64 = c
        .query_one(
            &format!(
                "SELECT count(*)::int8 FROM \"{}\".mend_migrations",
                guard.name
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, mend_postgres::SCHEMA_VERSION);
}

#[tokio::test]
async fn an_unreachable_server_or_a_bad_url_is_a_clear_error() {
    let err = PgStore::open("postgres://postgres:secret@127.0.0.1:1/test")
        .await
        .err()
        .expect("nothing listens on port 1");
    let msg = err.to_string();
    assert!(msg.contains("cannot open the database"), "{msg}");
    assert!(!msg.contains("secret"), "the password leaked: {msg}");
    let err = PgStore::open("postgres://h/db?schema=Bad-Name")
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("schema name"), "{err}");
    let err = PgStore::open("postgres://h/db?bogus_option=1")
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("expected postgres://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_survive_a_cut_connection_pool() {
    let Some((store, guard)) = common::fresh_store("claims_survive_cut").await else {
        return;
    };
    store
        .insert_many(vec![NewJob::new("k", serde_json::json!({}))])
        .await
        .unwrap();
    // Cut the store's pooled connections: the next use fails or reconnects, never panics,
    // and a retry succeeds.
    let c = common::client().await;
    let cut: i64 = c
        .query_one(
            "SELECT count(pg_terminate_backend(pid))::int8 FROM pg_stat_activity WHERE application_name = 'mend' AND query LIKE $1",
            &[&format!("%{}%", guard.name)],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        cut >= 1,
        "no connection of the store was cut; the test would prove nothing"
    );
    let params = ClaimParams {
        queue: "default".into(),
        kinds: vec![],
        limit: 10,
        lease_owner: "n".into(),
        lease_duration: Duration::from_secs(30),
        now: Utc::now(),
        routes: Vec::new(),
        ahead: 0,
    };
    let mut claimed = Vec::new();
    for _ in 0..5 {
        match store.claim(params.clone()).await {
            Ok(jobs) => {
                claimed = jobs;
                break;
            }
            Err(e) => {
                assert!(matches!(e, mend::StoreError::Unavailable { .. }), "{e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(claimed.len(), 1);
}

/// Asks for the nodes other than `me` that are dead, with heartbeats older than `before` stale.
fn dead_before(me: &str, before: chrono::DateTime<Utc>) -> mend::store::DeadNodesParams {
    mend::store::DeadNodesParams {
        self_id: me.into(),
        stale_before: before,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_nodes_marks_the_nodes_of_the_leaders_process() {
    let Some((leader, guard)) = common::fresh_store("leader_nodes").await else {
        return;
    };
    let member = PgStore::open(&guard.store_url()).await.unwrap();
    leader.register_node(node("lead")).await.unwrap();
    member.register_node(node("follow")).await.unwrap();
    assert!(leader.is_leader().await.unwrap());
    assert!(!member.is_leader().await.unwrap());
    // Either process reads the same answer: it comes from pg_locks, not from who asks.
    for store in [&leader, &member] {
        let nodes = store.list_nodes().await.unwrap();
        let leading: Vec<(&str, bool)> = nodes.iter().map(|n| (n.id.as_str(), n.leader)).collect();
        assert_eq!(leading, vec![("follow", false), ("lead", true)]);
    }
}
