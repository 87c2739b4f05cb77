//! Reads: listing with filters and cursor paging, counts per queue and state, the timeline.

use super::*;

pub async fn list_filters_and_pages_without_gaps(store: Arc<dyn Store>) {
    let mut all = Vec::new();
    for i in 0..25 {
        let mut j = job(if i % 3 == 0 { "a" } else { "b" }).with_queue(if i % 2 == 0 {
            "q1"
        } else {
            "q2"
        });
        if i % 5 == 0 {
            j = j.with_tag("vip");
        }
        all.push(j);
    }
    store.insert_many(all.clone()).await.unwrap();
    // Page through everything, 7 at a time.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list(ListParams {
                before,
                limit: 7,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.jobs.len() <= 7);
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next_cursor {
            Some(c) => before = Some(c),
            None => break,
        }
    }
    let mut expected: Vec<Uuid> = all.iter().map(|j| j.id).collect();
    expected.reverse(); // newest first
    assert_eq!(seen, expected, "pages cover every job once, newest first");

    let count = |p: ListParams| {
        let store = store.clone();
        async move {
            store
                .list(ListParams { limit: 100, ..p })
                .await
                .unwrap()
                .jobs
                .len()
        }
    };
    assert_eq!(
        count(ListParams {
            queue: Some("q1".into()),
            ..Default::default()
        })
        .await,
        13
    );
    assert_eq!(
        count(ListParams {
            kind: Some("a".into()),
            ..Default::default()
        })
        .await,
        9
    );
    assert_eq!(
        count(ListParams {
            tag: Some("vip".into()),
            ..Default::default()
        })
        .await,
        5
    );
    claim(&store, "q1", 4).await;
    assert_eq!(
        count(ListParams {
            states: vec![JobState::Running],
            ..Default::default()
        })
        .await,
        4
    );
    assert_eq!(
        count(ListParams {
            queue: Some("q1".into()),
            states: vec![JobState::Available, JobState::Running],
            ..Default::default()
        })
        .await,
        13
    );
}

pub async fn queue_counts_per_state(store: Arc<dyn Store>) {
    let mut jobs: Vec<NewJob> = (0..5).map(|_| job("k")).collect();
    jobs.push(job("k").with_queue("mail"));
    jobs.push(
        job("k")
            .with_queue("mail")
            .with_run_at(Utc::now() + chrono::Duration::hours(1)),
    );
    store.insert_many(jobs).await.unwrap();
    let c = claim(&store, "default", 2).await;
    complete(
        &store,
        vec![outcome(&c[0], OutcomeKind::Completed { result: None })],
    )
    .await;
    let counts = store.queue_counts().await.unwrap();
    let get_count = |q: &str, s: JobState| {
        counts
            .iter()
            .find(|c| c.queue == q && c.state == s)
            .map(|c| c.count)
            .unwrap_or(0)
    };
    assert_eq!(get_count("default", JobState::Available), 3);
    assert_eq!(get_count("default", JobState::Running), 1);
    assert_eq!(get_count("default", JobState::Completed), 1);
    assert_eq!(get_count("mail", JobState::Available), 1);
    assert_eq!(get_count("mail", JobState::Scheduled), 1);
    assert_eq!(counts.iter().map(|c| c.count).sum::<u64>(), 7);
    // The live counts: the same without the finished states.
    let mut live = store.live_queue_counts().await.unwrap();
    let mut want: Vec<_> = counts.into_iter().filter(|c| !c.state.is_final()).collect();
    let key = |c: &mend::store::QueueCount| (c.queue.clone(), c.state.as_str());
    live.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(live, want);
    assert_eq!(live.iter().map(|c| c.count).sum::<u64>(), 6);
}

fn steps(job: &JobRow) -> Vec<(String, Option<i32>)> {
    job.timeline
        .iter()
        .map(|e| (e.event.clone(), e.attempt))
        .collect()
}

fn expect(steps: &[(&str, Option<i32>)]) -> Vec<(String, Option<i32>)> {
    steps.iter().map(|(e, a)| (e.to_string(), *a)).collect()
}

pub async fn timeline_tells_each_jobs_story(store: Arc<dyn Store>) {
    // Completes, is retried by hand, completes again: both runs stay in the story.
    let a = job("k");
    store.insert_many(vec![a.clone()]).await.unwrap();
    assert_eq!(
        steps(&get(&store, a.id).await),
        expect(&[("enqueued", None)])
    );
    let c = claim(&store, "default", 1).await;
    assert!(c[0].timeline.is_empty(), "claims leave the timeline out");
    assert_eq!(
        steps(&get(&store, a.id).await),
        expect(&[("enqueued", None), ("claimed", Some(1))])
    );
    complete(
        &store,
        vec![outcome(&c[0], OutcomeKind::Completed { result: None })],
    )
    .await;
    retry_now(&store, vec![a.id]).await;
    let c = claim(&store, "default", 1).await;
    complete(
        &store,
        vec![outcome(&c[0], OutcomeKind::Completed { result: None })],
    )
    .await;
    let done = get(&store, a.id).await;
    assert_eq!(
        steps(&done),
        expect(&[
            ("enqueued", None),
            ("claimed", Some(1)),
            ("completed", Some(1)),
            ("retried", None),
            ("claimed", Some(2)),
            ("completed", Some(2)),
        ]),
        "{:#?}",
        done.timeline
    );
    assert!(done.timeline.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(done.timeline[1].node.as_deref(), Some(OWNER));

    // A cancel request lands while it runs, then the attempt fails: it ends cancelled, and
    // the story says so.
    let b = job("k");
    store.insert_many(vec![b.clone()]).await.unwrap();
    let c = claim(&store, "default", 1).await;
    cancel_now(&store, vec![b.id]).await;
    let later = Utc::now() + chrono::Duration::hours(1);
    complete(
        &store,
        vec![outcome(
            &c[0],
            OutcomeKind::Retry {
                error: err(1, ErrorKind::Error, "boom"),
                run_at: later,
            },
        )],
    )
    .await;
    let b = get(&store, b.id).await;
    assert_eq!(b.state, JobState::Cancelled);
    assert_eq!(
        steps(&b),
        expect(&[
            ("enqueued", None),
            ("claimed", Some(1)),
            ("cancel_requested", None),
            ("cancelled", Some(1)),
        ]),
        "{:#?}",
        b.timeline
    );
}
