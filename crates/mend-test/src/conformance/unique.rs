//! Unique jobs (`mend::unique`): one job per kind, chosen args, queue and period while the
//! existing one is in the options' states; a retry that would take a key another job holds is
//! refused, changing nothing.

use mend::unique::UniqueOpts;
use mend::StoreError;

use super::*;

/// Inserts `job`; whether it was stored as a new row (`false`: the existing job came back).
async fn enqueue(store: &Arc<dyn Store>, job: NewJob) -> (bool, JobRow) {
    let id = job.id;
    let row = store
        .insert_many(vec![job])
        .await
        .unwrap()
        .pop()
        .expect("one row per job");
    (row.id == id, row)
}

fn unique(kind: &str, args: serde_json::Value, opts: &UniqueOpts) -> NewJob {
    NewJob::new(kind, args).with_unique(opts.clone())
}

async fn finish(store: &Arc<dyn Store>, queue: &str) -> JobRow {
    let c = claim(store, queue, 1).await;
    assert_eq!(c.len(), 1, "one job to finish in {queue}");
    complete(
        store,
        vec![outcome(&c[0], OutcomeKind::Completed { result: None })],
    )
    .await;
    get(store, c[0].id).await
}

pub async fn unique_by_kind_and_by_all_args(store: Arc<dyn Store>) {
    let by_args = UniqueOpts::new().by_args();
    let (new, first) = enqueue(
        &store,
        unique("sync", json!({"customer": 1, "full": true}), &by_args),
    )
    .await;
    assert!(new);
    let key = first
        .unique_key
        .clone()
        .expect("a unique job stores its key");
    assert!(key.starts_with("unique:sync:"), "{key}");
    assert_eq!(
        get(&store, first.id).await,
        first,
        "insert returns what a read does"
    );

    let (new, again) = enqueue(
        &store,
        unique("sync", json!({"full": true, "customer": 1}), &by_args),
    )
    .await;
    assert!(!new, "the same args in another order are the same job");
    assert_eq!(
        again, first,
        "the duplicate returns the existing job as stored"
    );
    let (new, _) = enqueue(
        &store,
        unique("sync", json!({"customer": 2, "full": true}), &by_args),
    )
    .await;
    assert!(new, "other args: another job");
    let (new, _) = enqueue(
        &store,
        unique("other", json!({"customer": 1, "full": true}), &by_args),
    )
    .await;
    assert!(new, "another kind: another job");

    // By kind alone, args do not matter.
    let by_kind = UniqueOpts::new();
    let (new, solo) = enqueue(&store, unique("solo", json!({"n": 1}), &by_kind)).await;
    assert!(new);
    let (new, dup) = enqueue(&store, unique("solo", json!({"n": 2}), &by_kind)).await;
    assert!(!new);
    assert_eq!(dup.id, solo.id);

    // Within one batch: the first one is stored, the second returns it.
    let a = unique("pair", json!({"x": 1}), &by_args);
    let b = unique("pair", json!({"x": 1}), &by_args);
    let rows = store.insert_many(vec![a.clone(), b.clone()]).await.unwrap();
    assert_eq!(rows[0].id, a.id);
    assert_eq!(rows[1].id, a.id);
    assert!(store.get(b.id).await.unwrap().is_none());
}

pub async fn unique_by_a_subset_of_args(store: Arc<dyn Store>) {
    let some = UniqueOpts::new().by_arg_keys(["customer", "/order/id"]);
    let args = |v: serde_json::Value| unique("ship", v, &some);
    let (new, first) = enqueue(
        &store,
        args(json!({"customer": 1, "order": {"id": 5, "note": "a"}, "x": 1})),
    )
    .await;
    assert!(new);
    let (new, dup) = enqueue(
        &store,
        args(json!({"customer": 1, "order": {"id": 5, "note": "b"}, "x": 2})),
    )
    .await;
    assert!(!new, "args outside the chosen ones do not count");
    assert_eq!(dup.id, first.id);
    for other in [
        json!({"customer": 1, "order": {"id": 6}}),
        json!({"customer": 2, "order": {"id": 5}}),
        json!({"order": {"id": 5}}),
        json!({"customer": null, "order": {"id": 5}}),
    ] {
        let (new, _) = enqueue(&store, args(other.clone())).await;
        assert!(new, "{other} differs in a chosen arg (absent is not null)");
    }
}

pub async fn unique_per_queue_or_across_queues(store: Arc<dyn Store>) {
    let global = UniqueOpts::new().by_args();
    let (new, first) = enqueue(
        &store,
        unique("report", json!({}), &global).with_queue("q1"),
    )
    .await;
    assert!(new);
    let (new, dup) = enqueue(
        &store,
        unique("report", json!({}), &global).with_queue("q2"),
    )
    .await;
    assert!(!new, "across queues by default");
    assert_eq!((dup.id, dup.queue.as_str()), (first.id, "q1"));

    let per_queue = UniqueOpts::new().by_args().per_queue();
    let (new, _) = enqueue(
        &store,
        unique("digest", json!({}), &per_queue).with_queue("q1"),
    )
    .await;
    assert!(new);
    let (new, _) = enqueue(
        &store,
        unique("digest", json!({}), &per_queue).with_queue("q2"),
    )
    .await;
    assert!(new, "per queue: another queue, another job");
    let (new, _) = enqueue(
        &store,
        unique("digest", json!({}), &per_queue).with_queue("q2"),
    )
    .await;
    assert!(!new, "per queue: the same queue, the same job");
}

pub async fn unique_within_a_period(store: Arc<dyn Store>) {
    let hourly = UniqueOpts::new().period(Duration::from_secs(3600));
    // Hours in the past (the jobs are available at once), counted by run_at.
    let hour = (Utc::now().timestamp() / 3600 - 3) * 3600;
    let at = |minutes: i64| DateTime::from_timestamp(hour + minutes * 60, 0).unwrap();
    let job_at = |minutes| unique("tick", json!({}), &hourly).with_run_at(at(minutes));
    let (new, first) = enqueue(&store, job_at(10)).await;
    assert!(new);
    let (new, dup) = enqueue(&store, job_at(59)).await;
    assert!(!new, "the same hour");
    assert_eq!(dup.id, first.id);
    let (new, second) = enqueue(&store, job_at(60)).await;
    assert!(new, "the next hour: a new job");
    let (new, dup) = enqueue(&store, job_at(119)).await;
    assert!(!new);
    assert_eq!(dup.id, second.id);
    assert_ne!(first.unique_key, second.unique_key);
}

pub async fn unique_states_decide_how_long_a_key_is_held(store: Arc<dyn Store>) {
    // Default: held until the job finishes.
    let until_done = UniqueOpts::new();
    let (_, first) = enqueue(&store, unique("a", json!({}), &until_done).with_queue("a")).await;
    claim(&store, "a", 1).await;
    let (new, dup) = enqueue(&store, unique("a", json!({}), &until_done).with_queue("a")).await;
    assert!(!new, "held while running");
    assert_eq!((dup.id, dup.state), (first.id, JobState::Running));
    complete(
        &store,
        vec![outcome(
            &get(&store, first.id).await,
            OutcomeKind::Completed { result: None },
        )],
    )
    .await;
    let (new, second) = enqueue(&store, unique("a", json!({}), &until_done).with_queue("a")).await;
    assert!(
        new,
        "a completed job frees the key when completed is not in the states"
    );
    assert_eq!(second.unique_key, first.unique_key);
    cancel_now(&store, vec![second.id]).await;
    let (new, _) = enqueue(&store, unique("a", json!({}), &until_done).with_queue("a")).await;
    assert!(new, "so does a cancelled one");

    // Held after completion when asked.
    let and_done = UniqueOpts::new().with_state(JobState::Completed);
    let (_, kept) = enqueue(&store, unique("b", json!({}), &and_done).with_queue("b")).await;
    let done = finish(&store, "b").await;
    assert_eq!(done.state, JobState::Completed);
    let (new, dup) = enqueue(&store, unique("b", json!({}), &and_done).with_queue("b")).await;
    assert!(!new, "completed is in the states: the key is still held");
    assert_eq!((dup.id, dup.state), (kept.id, JobState::Completed));

    // An idempotency key is held in every state, as before unique jobs.
    let (_, idem) = enqueue(&store, job("c").with_queue("c").with_unique_key("order-9")).await;
    finish(&store, "c").await;
    let (new, dup) = enqueue(&store, job("c").with_queue("c").with_unique_key("order-9")).await;
    assert!(!new);
    assert_eq!(dup.id, idem.id);
}

pub async fn retrying_a_finished_job_whose_key_is_taken_is_refused(store: Arc<dyn Store>) {
    let opts = UniqueOpts::new().by_args();
    let (_, old) = enqueue(&store, unique("r", json!({"n": 1}), &opts)).await;
    cancel_now(&store, vec![old.id]).await;
    let (new, holder) = enqueue(&store, unique("r", json!({"n": 1}), &opts)).await;
    assert!(new);
    let before = (get(&store, old.id).await, get(&store, holder.id).await);
    let e = store
        .retry(RetryParams {
            ids: vec![old.id],
            now: Utc::now(),
        })
        .await
        .unwrap_err();
    match &e {
        StoreError::UniqueKeyHeld { id, key, holder: h } => {
            assert_eq!(*id, old.id);
            assert_eq!(Some(key), old.unique_key.as_ref());
            assert_eq!(*h, Some(holder.id));
        }
        other => panic!("expected UniqueKeyHeld, got {other:?}"),
    }
    assert!(e.to_string().contains(&holder.id.to_string()), "{e}");
    assert_eq!(
        (get(&store, old.id).await, get(&store, holder.id).await),
        before,
        "a refused retry changes nothing"
    );

    // Once the holder is done, the retry goes through.
    cancel_now(&store, vec![holder.id]).await;
    let rows = retry_now(&store, vec![old.id]).await;
    assert_eq!(rows[0].state, JobState::Available);

    // Two finished jobs with one key cannot both run again: the request changes nothing.
    cancel_now(&store, vec![old.id]).await;
    let (_, twin) = enqueue(&store, unique("r", json!({"n": 1}), &opts)).await;
    cancel_now(&store, vec![twin.id]).await;
    let e = store
        .retry(RetryParams {
            ids: vec![old.id, twin.id],
            now: Utc::now(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::UniqueKeyHeld { holder: None, .. }),
        "{e:?}"
    );
    assert_eq!(get(&store, old.id).await.state, JobState::Cancelled);
    assert_eq!(get(&store, twin.id).await.state, JobState::Cancelled);

    // A live holder named in the same request (it is not finished, so not retried) is named.
    let (_, live) = enqueue(&store, unique("r", json!({"n": 1}), &opts)).await;
    let e = store
        .retry(RetryParams {
            ids: vec![live.id, old.id],
            now: Utc::now(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::UniqueKeyHeld { holder: Some(h), .. } if h == live.id),
        "{e:?}"
    );
    assert_eq!(get(&store, old.id).await.state, JobState::Cancelled);
}

pub async fn unique_options_are_validated_before_anything_is_stored(store: Arc<dyn Store>) {
    let good = job("ok");
    let both = job("ok")
        .with_unique_key("k")
        .with_unique(UniqueOpts::new());
    let e = store
        .insert_many(vec![good.clone(), both])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::InvalidJob(i) if i.field == "unique"),
        "{e:?}"
    );
    let bad_pointer = job("ok").with_unique(UniqueOpts::new().by_arg_keys(["/a~x"]));
    let e = store.insert_many(vec![bad_pointer]).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::InvalidJob(i) if i.field == "unique.by_args"),
        "{e:?}"
    );
    let too_few_states = job("ok").with_unique(UniqueOpts::new().states([JobState::Completed]));
    let e = store.insert_many(vec![too_few_states]).await.unwrap_err();
    assert!(
        matches!(&e, StoreError::InvalidJob(i) if i.field == "unique.states"),
        "{e:?}"
    );
    assert!(
        store.get(good.id).await.unwrap().is_none(),
        "a refused batch stores nothing"
    );
}
