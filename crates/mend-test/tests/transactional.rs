//! Transactional completion across `kill -9`: the handler's own write and its job's completion
//! commit in one transaction. Killed mid-transaction, neither is visible; the retry commits
//! both, once.

#![expect(clippy::unwrap_used)]

use std::time::Duration;

use mend::{ErrorKind, JobState, NewJob};
use mend_test::env::Env;
use mend_test::process::EffectTable;

async fn killed_mid_transaction_commits_nothing_and_the_retry_commits_once(env: Env) {
    let ledger = EffectTable::create(&env).await;
    let table = ledger.table();
    let job = env
        .insert_one(NewJob::new(
            "ledgered",
            serde_json::json!({"table": table, "first_ms": 60_000}),
        ))
        .await;
    let mut child = env.spawn(&["--concurrency", "1"]);
    env.wait_ledger(&format!("effect {} 1", job.id), 1, Duration::from_secs(20))
        .await;
    child.kill9(); // SIGKILL inside the transaction
    assert!(ledger.rows().await.is_empty(), "the effect did not commit");
    let stored = env.store.get(job.id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Running, "nor did the completion");

    let mut child = env.spawn(&["--concurrency", "1"]);
    let done = env.wait_completed(job.id).await;
    assert_eq!(done.attempt, 2);
    assert_eq!(done.errors[0].kind, ErrorKind::Lost);
    assert_eq!(
        ledger.rows().await,
        vec![(job.id.to_string(), 2)],
        "exactly one effect, from the attempt that completed"
    );
    child.stop();
}

mend_test::on_both_backends!(killed_mid_transaction_commits_nothing_and_the_retry_commits_once);
