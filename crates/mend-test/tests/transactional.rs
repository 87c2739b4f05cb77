//! Transactional completion across `kill -9`: the handler's own write and its job's completion
//! commit in one transaction. Killed mid-transaction, neither is visible; the retry commits
//! both, once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use mend::{ErrorKind, JobState, NewJob};

/// `rows` reads the ledger table: (job id, attempt) pairs.
async fn killed_mid_transaction_commits_nothing_and_the_retry_commits_once<F, Fut>(
    env: Env,
    table: &str,
    rows: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<(String, i32)>>,
{
    let job = env
        .store
        .insert_many(vec![NewJob::new(
            "ledgered",
            serde_json::json!({"table": table, "first_ms": 60_000}),
        )])
        .await
        .unwrap()
        .pop()
        .unwrap();
    let mut child = env.spawn(&["--concurrency", "1"]);
    env.wait_ledger(&format!("effect {} 1", job.id), 1, Duration::from_secs(20))
        .await;
    child.kill().unwrap(); // SIGKILL inside the transaction
    child.wait().unwrap();
    assert!(rows().await.is_empty(), "the effect did not commit");
    let stored = env.store.get(job.id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Running, "nor did the completion");

    let mut child = env.spawn(&["--concurrency", "1"]);
    let done = env.wait_completed(job.id).await;
    assert_eq!(done.attempt, 2);
    assert_eq!(done.errors[0].kind, ErrorKind::Lost);
    assert_eq!(
        rows().await,
        vec![(job.id.to_string(), 2)],
        "exactly one effect, from the attempt that completed"
    );
    signal(&child, "TERM");
    let (code, _) = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_mid_transaction_commits_nothing_and_the_retry_commits_once() {
    let env = Env::new().await;
    let db = env.db.clone();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE ledger (job_id TEXT NOT NULL, attempt INTEGER NOT NULL)")
        .unwrap();
    let rows = move || {
        let db = db.clone();
        async move {
            let conn = rusqlite::Connection::open(&db).unwrap();
            let mut stmt = conn.prepare("SELECT job_id, attempt FROM ledger").unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        }
    };
    killed_mid_transaction_commits_nothing_and_the_retry_commits_once(env, "ledger", rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_transaction_commits_nothing_and_the_retry_commits_once() {
    let Some(env) = Env::postgres("transactional").await else {
        return;
    };
    let table = format!("\"{}\".ledger", env.schema.as_ref().unwrap().name);
    let pg = env.pg().await;
    pg.batch_execute(&format!(
        "CREATE TABLE {table} (job_id text NOT NULL, attempt integer NOT NULL)"
    ))
    .await
    .unwrap();
    let pg = std::sync::Arc::new(pg);
    let select = format!("SELECT job_id, attempt FROM {table}");
    let rows = move || {
        let (pg, select) = (pg.clone(), select.clone());
        async move {
            pg.query(&select, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        }
    };
    killed_mid_transaction_commits_nothing_and_the_retry_commits_once(env, &table, rows).await;
}
