//! Leases and what rides on them: heartbeats report lost attempts and cancel requests; checkpoints are fenced.

use super::*;

pub async fn extend_leases_reports_lost_and_cancel_requests(store: Arc<dyn Store>) {
    store
        .insert_many(vec![job("k"), job("k"), job("k")])
        .await
        .unwrap();
    let c = claim(&store, "default", 3).await;
    cancel_now(&store, vec![c[1].id]).await;
    let until = Utc::now() + chrono::Duration::minutes(10);
    let r = store
        .extend_leases(ExtendLeasesParams {
            lease_owner: OWNER.into(),
            jobs: vec![
                HeldJob {
                    id: c[0].id,
                    attempt: c[0].attempt,
                },
                HeldJob {
                    id: c[1].id,
                    attempt: c[1].attempt,
                },
                HeldJob {
                    id: c[2].id,
                    attempt: c[2].attempt + 1,
                }, // not the attempt we hold
            ],
            expires_at: until,
        })
        .await
        .unwrap();
    assert_eq!(r.cancel_requested, vec![c[1].id]);
    assert_eq!(
        r.lost,
        vec![HeldJob {
            id: c[2].id,
            attempt: c[2].attempt + 1
        }]
    );
    let extended = get(&store, c[0].id).await.lease_expires_at.unwrap();
    assert!(
        (extended - until).num_milliseconds().abs() < 2,
        "lease extended to {until}, got {extended}"
    );
    let other = store
        .extend_leases(ExtendLeasesParams {
            lease_owner: "node-b".into(),
            jobs: vec![HeldJob {
                id: c[0].id,
                attempt: c[0].attempt,
            }],
            expires_at: until,
        })
        .await
        .unwrap();
    assert_eq!(
        other.lost,
        vec![HeldJob {
            id: c[0].id,
            attempt: c[0].attempt
        }],
        "another node cannot extend our lease"
    );
}

pub async fn checkpoints_are_fenced_and_reach_the_next_attempt(store: Arc<dyn Store>) {
    use mend::store::CheckpointParams;
    let new = job("long").with_queue("cp");
    store.insert_many(vec![new.clone()]).await.unwrap();
    let first = claim(&store, "cp", 1).await.pop().unwrap();
    assert_eq!(
        first.checkpoint, None,
        "a first attempt starts from nothing"
    );
    let save = |attempt: i32, owner: &str, step: i32| CheckpointParams {
        fence: Fence::new(new.id, attempt, owner),
        state: json!({"step": step}),
    };
    assert!(
        !store.checkpoint(save(1, "someone-else", 9)).await.unwrap(),
        "another owner is fenced"
    );
    assert!(
        !store.checkpoint(save(2, OWNER, 9)).await.unwrap(),
        "another attempt is fenced"
    );
    assert!(store.checkpoint(save(1, OWNER, 1)).await.unwrap());
    assert!(store.checkpoint(save(1, OWNER, 2)).await.unwrap());
    assert_eq!(
        get(&store, new.id).await.checkpoint,
        Some(json!({"step": 2}))
    );

    // The attempt fails; the next one is handed the last checkpoint with the claim.
    let r = complete(
        &store,
        vec![outcome(
            &first,
            OutcomeKind::Retry {
                error: err(1, ErrorKind::Error, "boom"),
                run_at: Utc::now() - chrono::Duration::seconds(1),
            },
        )],
    )
    .await;
    assert_eq!(r.applied, vec![new.id]);
    let second = claim(&store, "cp", 1).await.pop().unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(second.checkpoint, Some(json!({"step": 2})));
    assert!(
        !store.checkpoint(save(1, OWNER, 7)).await.unwrap(),
        "the old attempt is fenced"
    );
    assert!(store.checkpoint(save(2, OWNER, 3)).await.unwrap());

    // Completed, then retried by hand: the job starts over.
    complete(
        &store,
        vec![outcome(&second, OutcomeKind::Completed { result: None })],
    )
    .await;
    assert_eq!(
        get(&store, new.id).await.checkpoint,
        Some(json!({"step": 3}))
    );
    retry_now(&store, vec![new.id]).await;
    assert_eq!(get(&store, new.id).await.checkpoint, None);
}
