//! Unique jobs from the library: `Client::insert_unique` says whether an enqueue was a
//! duplicate, typed args can make all their jobs unique in `JobArgs::configure`, and a retry
//! whose key another job holds comes back as `StoreError::UniqueKeyHeld`.

use mend::{Client, ClientError, JobArgs, NewJob, StoreError, UniqueOpts};
use mend_test::env::Env;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct SyncCustomer {
    customer: u64,
    note: String,
}

impl JobArgs for SyncCustomer {
    const KIND: &'static str = "sync_customer";
    fn configure(job: NewJob) -> NewJob {
        job.with_queue("held")
            .with_unique(UniqueOpts::new().by_arg_keys(["customer"]))
    }
}

fn sync(customer: u64, note: &str) -> SyncCustomer {
    SyncCustomer {
        customer,
        note: note.into(),
    }
}

#[tokio::test]
async fn the_client_says_whether_an_enqueue_was_a_duplicate() {
    let env = Env::new().await;
    let client = Client::new(env.store.clone());
    let first = client
        .insert_unique(sync(1, "a").to_new_job().unwrap())
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = client
        .insert_unique(sync(1, "b").to_new_job().unwrap())
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.job, env.job(first.job.id).await, "the existing job");
    assert_eq!(again.job.args["note"], "a");
    // Plain `enqueue` goes through `configure` too, and returns the existing job.
    let row = client.enqueue(&sync(1, "c")).await.unwrap();
    assert_eq!(row.id, first.job.id);

    let many = client
        .insert_many_unique(vec![
            sync(2, "x").to_new_job().unwrap(),
            sync(2, "y").to_new_job().unwrap(),
            NewJob::new("plain", serde_json::json!({})).with_unique_key("order-1"),
            NewJob::new("plain", serde_json::json!({})).with_unique_key("order-1"),
        ])
        .await
        .unwrap();
    let flags: Vec<bool> = many.iter().map(|e| e.duplicate).collect();
    assert_eq!(flags, [false, true, false, true]);
    assert_eq!(env.jobs().await.len(), 3);
}

#[tokio::test]
async fn a_retry_whose_key_is_held_names_the_holder() {
    let env = Env::new().await;
    let client = Client::new(env.store.clone());
    let old = client.enqueue(&sync(1, "old")).await.unwrap();
    client.cancel(old.id).await.unwrap();
    let holder = client
        .insert_unique(sync(1, "new").to_new_job().unwrap())
        .await
        .unwrap();
    assert!(!holder.duplicate, "a cancelled job lets its key go");
    match client.retry(old.id).await {
        Err(ClientError::Store(StoreError::UniqueKeyHeld { id, holder: h, .. })) => {
            assert_eq!((id, h), (old.id, Some(holder.job.id)));
        }
        other => panic!("expected UniqueKeyHeld, got {other:?}"),
    }
    assert_eq!(env.job(old.id).await.state, mend::JobState::Cancelled);
}
