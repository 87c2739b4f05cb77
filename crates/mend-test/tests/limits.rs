//! Limits across real worker processes sharing one database: a per-key concurrency limit of 1
//! with three nodes never runs two jobs of one key at once while other keys run in parallel,
//! and a rate limit of 20 starts a second holds three nodes to it without starving them.

#![expect(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use mend::limits::{Limit, Rate};
use mend::store::SetLimitParams;
use mend::{JobState, NewJob};
use mend_test::env::Env;

async fn set(env: &Env, limit: Limit) {
    env.store
        .set_limit(SetLimitParams {
            limit,
            now: Utc::now(),
        })
        .await
        .unwrap();
}

async fn one_job_per_key_at_once_across_three_nodes(env: Env) {
    set(
        &env,
        Limit::new("one-per-account", "default")
            .per_key("/account")
            .concurrency(1),
    )
    .await;
    let accounts = ["a", "b", "c", "d"];
    let jobs: Vec<NewJob> = (0..5)
        .flat_map(|_| {
            accounts.iter().map(|acct| {
                NewJob::new(
                    "work",
                    serde_json::json!({"first_ms": 150, "then_ms": 150, "account": acct}),
                )
            })
        })
        .collect();
    let account_of: HashMap<String, String> = jobs
        .iter()
        .map(|j| {
            (
                j.id.to_string(),
                j.args["account"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    env.store.insert_many(jobs).await.unwrap();
    let _nodes: Vec<_> = (0..3).map(|_| env.spawn(&["--concurrency", "8"])).collect();
    env.wait_ledger("done", 20, Duration::from_secs(60)).await;

    // The ledger is appended in the order things happened, by every node.
    let mut running: HashMap<&String, String> = HashMap::new();
    let mut most_accounts_at_once = 0;
    for line in env.ledger() {
        let mut parts = line.split(' ');
        let (Some(what), Some(id)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(acct) = account_of.get(id) else {
            continue;
        };
        match what {
            "start" => {
                if let Some(other) = running.insert(acct, id.to_owned()) {
                    panic!("account {acct}: job {id} started while {other} was running");
                }
                most_accounts_at_once = most_accounts_at_once.max(running.len());
            }
            "done" => {
                assert_eq!(running.remove(acct).as_deref(), Some(id), "{line}");
            }
            _ => {}
        }
    }
    assert!(
        most_accounts_at_once >= 2,
        "different accounts run in parallel (at most {most_accounts_at_once} at once)"
    );
    env.wait_for("all 20 completed", Duration::from_secs(30), |jobs| {
        jobs.iter()
            .filter(|j| j.state == JobState::Completed)
            .count()
            == 20
    })
    .await;
}

async fn a_rate_limit_holds_three_nodes_to_it(env: Env) {
    const PER_SECOND: u32 = 20;
    set(
        &env,
        Limit::new("twenty-a-second", "default")
            .rate(Rate::new(PER_SECOND, Duration::from_secs(1))),
    )
    .await;
    let jobs: Vec<NewJob> = (0..1000)
        .map(|_| NewJob::new("work", serde_json::json!({"first_ms": 0, "then_ms": 0})))
        .collect();
    env.store.insert_many(jobs).await.unwrap();
    let _nodes: Vec<_> = (0..3)
        .map(|_| env.spawn(&["--concurrency", "16"]))
        .collect();
    // Ten seconds of starts, and a little more so the last of them are written.
    tokio::time::sleep(Duration::from_millis(11_500)).await;

    let mut starts: Vec<DateTime<Utc>> = env
        .jobs()
        .await
        .iter()
        .filter_map(|j| j.attempted_at)
        .collect();
    starts.sort();
    let t0 = *starts.first().expect("jobs started");
    let window = chrono::Duration::seconds(10);
    let in_ten = starts.iter().filter(|t| **t < t0 + window).count() as u32;
    // A token bucket of PER_SECOND tokens: at most the burst plus the rate over any window.
    let most = PER_SECOND * 10 + PER_SECOND;
    assert!(
        in_ten <= most,
        "{in_ten} starts in 10 s, over the limit (at most {most})"
    );
    assert!(
        in_ten >= PER_SECOND * 10 * 9 / 10,
        "{in_ten} starts in 10 s: the limit starves the queue (want at least 90% of {})",
        PER_SECOND * 10
    );
    for (i, t) in starts.iter().enumerate() {
        let in_a_second = starts[i..]
            .iter()
            .take_while(|u| **u < *t + chrono::Duration::seconds(1))
            .count() as u32;
        assert!(
            in_a_second <= 2 * PER_SECOND,
            "{in_a_second} starts in the second after {t}"
        );
    }
    let nodes: HashSet<String> = env
        .jobs()
        .await
        .iter()
        .filter(|j| j.attempted_at.is_some())
        .filter_map(|j| j.lease_owner.clone())
        .collect();
    assert!(nodes.len() >= 2, "the nodes share the work: {nodes:?}");
}

mend_test::on_both_backends!(
    one_job_per_key_at_once_across_three_nodes,
    a_rate_limit_holds_three_nodes_to_it
);
