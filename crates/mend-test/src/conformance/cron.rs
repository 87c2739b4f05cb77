//! Periodic job schedules: upsert, list, pause, delete; the advance as a compare-and-set; one
//! job per slot however many schedulers race; and the scheduler's catch-up policies after a
//! gap, driven with an explicit `now`.

use mend::cron::{self, CatchUp, Periodic};
use mend::maintenance::scheduler;
use mend::store::{AdvanceCronParams, DueCronParams, SetCronPausedParams, UpsertCronParams};

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn upsert(store: &Arc<dyn Store>, p: Periodic, now: DateTime<Utc>) -> cron::CronRow {
    let schedule = p.validate().unwrap();
    store
        .cron_upsert(UpsertCronParams {
            next_slot: schedule.next_after(now).unwrap(),
            periodic: p,
            now,
        })
        .await
        .unwrap()
}

async fn due(store: &Arc<dyn Store>, now: DateTime<Utc>) -> Vec<String> {
    store
        .cron_due(DueCronParams { now, limit: 100 })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.periodic.name)
        .collect()
}

/// The jobs of schedule `name`, oldest slot first, as (slot, id).
async fn cron_jobs(store: &Arc<dyn Store>, name: &str) -> Vec<(DateTime<Utc>, Uuid)> {
    let page = store
        .list(ListParams {
            tag: Some(format!("cron:{name}")),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out: Vec<_> = page
        .jobs
        .iter()
        .map(|j| {
            let (n, slot) = cron::slot_of(j).expect("a cron job's key names its slot");
            assert_eq!(n, name);
            (slot, j.id)
        })
        .collect();
    out.sort();
    out
}

pub async fn cron_schedules_upsert_list_pause_and_delete(store: Arc<dyn Store>) {
    let now = t("2026-01-01T00:00:00.5Z");
    let p = Periodic::new("tick", "*/10 * * * * *", "k", json!({"a": 1}))
        .queue("q")
        .tag("x")
        .catch_up(CatchUp::All, 7);
    let row = upsert(&store, p.clone(), now).await;
    assert_eq!(row.periodic, p, "the declaration round-trips");
    assert_eq!(row.next_slot, t("2026-01-01T00:00:10Z"));
    assert!(!row.paused && row.last_slot.is_none() && row.recent_runs.is_empty());
    upsert(
        &store,
        Periodic::new("other", "@hourly", "k", json!({})),
        now,
    )
    .await;
    let names: Vec<String> = store
        .cron_list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.periodic.name)
        .collect();
    assert_eq!(names, ["other", "tick"], "listed by name");
    assert_eq!(
        store
            .cron_get("tick".into())
            .await
            .unwrap()
            .unwrap()
            .periodic,
        p
    );
    assert!(store.cron_get("nope".into()).await.unwrap().is_none());

    // A new declaration with the same expression keeps the next slot; a new expression
    // starts over from its own next slot.
    let later = t("2026-01-01T00:00:42Z");
    let same = upsert(&store, p.clone().priority(3), later).await;
    assert_eq!(same.periodic.priority, 3);
    assert_eq!(same.next_slot, t("2026-01-01T00:00:10Z"), "next slot kept");
    let changed = Periodic {
        schedule: "*/15 * * * * *".into(),
        ..p.clone()
    };
    let changed = upsert(&store, changed, later).await;
    assert_eq!(
        changed.next_slot,
        t("2026-01-01T00:00:45Z"),
        "next slot recomputed"
    );
    assert_eq!(changed.created_at, row.created_at, "created_at kept");

    // Due: by next slot, paused ones left out.
    assert_eq!(due(&store, t("2026-01-01T00:00:45Z")).await, ["tick"]);
    let paused = store
        .cron_set_paused(SetCronPausedParams {
            name: "tick".into(),
            paused: true,
            next_slot: t("2026-01-01T00:09:00Z"),
            now: later,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(paused.paused);
    assert_eq!(
        paused.next_slot,
        t("2026-01-01T00:00:45Z"),
        "pausing keeps the slot"
    );
    assert!(due(&store, t("2026-01-01T00:05:00Z")).await.is_empty());
    // Upserting a paused schedule keeps it paused.
    assert!(upsert(&store, p.clone(), later).await.paused);
    let resumed = store
        .cron_set_paused(SetCronPausedParams {
            name: "tick".into(),
            paused: false,
            next_slot: t("2026-01-01T00:09:00Z"),
            now: later,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(!resumed.paused);
    assert_eq!(
        resumed.next_slot,
        t("2026-01-01T00:09:00Z"),
        "resuming starts at the next slot after now: paused slots are not caught up"
    );
    let again = store
        .cron_set_paused(SetCronPausedParams {
            name: "tick".into(),
            paused: false,
            next_slot: t("2026-01-01T01:00:00Z"),
            now: later,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.next_slot, resumed.next_slot,
        "resuming a running one changes nothing"
    );
    assert!(store
        .cron_set_paused(SetCronPausedParams {
            name: "nope".into(),
            paused: true,
            next_slot: later,
            now: later,
        })
        .await
        .unwrap()
        .is_none());

    assert!(store.cron_delete("tick".into()).await.unwrap());
    assert!(!store.cron_delete("tick".into()).await.unwrap());
    assert!(store.cron_get("tick".into()).await.unwrap().is_none());
    assert_eq!(store.cron_list().await.unwrap().len(), 1);
}

fn advance_params(
    row: &cron::CronRow,
    expected: DateTime<Utc>,
    slots: Vec<DateTime<Utc>>,
    next: DateTime<Utc>,
) -> AdvanceCronParams {
    AdvanceCronParams {
        name: row.periodic.name.clone(),
        expected_next_slot: expected,
        next_slot: next,
        jobs: slots.iter().map(|s| row.job_for(*s)).collect(),
        slots,
        runs_before: row.recent_runs.clone(),
        skipped: vec![t("2026-01-01T00:00:01Z")],
        now: next,
    }
}

pub async fn cron_advance_is_a_compare_and_set(store: Arc<dyn Store>) {
    let now = t("2026-01-01T00:00:00Z");
    let row = upsert(
        &store,
        Periodic::new("cas", "* * * * * *", "k", json!({})),
        now,
    )
    .await;
    let s1 = t("2026-01-01T00:00:01Z");
    let (s2, s3) = (t("2026-01-01T00:00:02Z"), t("2026-01-01T00:00:03Z"));

    // A stale expectation changes nothing and inserts nothing.
    let stale = store
        .cron_advance(advance_params(&row, s2, vec![s2], s3))
        .await
        .unwrap();
    assert!(stale.is_none(), "a stale next slot must not advance");
    assert!(cron_jobs(&store, "cas").await.is_empty(), "nor insert");

    let jobs = store
        .cron_advance(advance_params(&row, s1, vec![s1, s2], s3))
        .await
        .unwrap()
        .expect("the expected next slot advances");
    assert_eq!(jobs.len(), 2);
    let after = store.cron_get("cas".into()).await.unwrap().unwrap();
    assert_eq!(after.next_slot, s3);
    assert_eq!(after.last_slot, Some(s2));
    assert_eq!(
        after.recent_runs,
        vec![
            cron::CronRun {
                slot: s1,
                job_id: jobs[0].id
            },
            cron::CronRun {
                slot: s2,
                job_id: jobs[1].id
            },
        ],
        "each run names its slot and job"
    );
    assert_eq!(after.skipped, vec![t("2026-01-01T00:00:01Z")]);
    assert_eq!(
        cron_jobs(&store, "cas").await,
        vec![(s1, jobs[0].id), (s2, jobs[1].id)]
    );
    let job = get(&store, jobs[0].id).await;
    assert_eq!(job.run_at, s1, "a slot's job runs at its slot");
    assert_eq!(job.state, JobState::Available);

    // The same expectation again (a second scheduler that read the row before) loses.
    assert!(store
        .cron_advance(advance_params(&row, s1, vec![s1, s2], s3))
        .await
        .unwrap()
        .is_none());
    // A paused schedule does not advance.
    store
        .cron_set_paused(SetCronPausedParams {
            name: "cas".into(),
            paused: true,
            next_slot: s3,
            now: s3,
        })
        .await
        .unwrap();
    assert!(store
        .cron_advance(advance_params(
            &after,
            s3,
            vec![s3],
            t("2026-01-01T00:00:04Z")
        ))
        .await
        .unwrap()
        .is_none());
    assert_eq!(cron_jobs(&store, "cas").await.len(), 2);
}

pub async fn cron_one_job_per_slot_when_schedulers_race(store: Arc<dyn Store>) {
    let now = t("2026-01-01T00:00:00Z");
    let row = upsert(
        &store,
        Periodic::new("race", "* * * * * *", "k", json!({})),
        now,
    )
    .await;
    let slots: Vec<_> = (1..=5)
        .map(|i| now + chrono::Duration::seconds(i))
        .collect();
    let next = now + chrono::Duration::seconds(6);
    // Eight schedulers advance the same due slots at once: one wins, the rest change nothing.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, p) = (
            store.clone(),
            advance_params(&row, slots[0], slots.clone(), next),
        );
        tasks.push(tokio::spawn(async move { store.cron_advance(p).await }));
    }
    let mut winners = 0;
    for task in tasks {
        if task.await.unwrap().unwrap().is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one advance wins");
    let jobs = cron_jobs(&store, "race").await;
    assert_eq!(
        jobs.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        slots,
        "one job per slot"
    );

    // Two plain inserts of a slot's job racing (say, from an older scheduler) give one job.
    let slot = next;
    let (a, b) = tokio::join!(
        store.insert_many(vec![row.job_for(slot)]),
        store.insert_many(vec![row.job_for(slot)])
    );
    assert_eq!(
        a.unwrap()[0].id,
        b.unwrap()[0].id,
        "the second insert returns the first job"
    );
    assert_eq!(cron_jobs(&store, "race").await.len(), 6);
}

pub async fn cron_scheduler_catches_up_by_policy(store: Arc<dyn Store>) {
    // Created at 00:00:00.5; the scheduler was down for five slots (10 s … 50 s) and comes
    // back at 00:00:57, 7 s after the last one (beyond the on-time grace of `none`).
    let created = t("2026-01-01T00:00:00.5Z");
    let back = t("2026-01-01T00:00:57Z");
    let missed: Vec<DateTime<Utc>> = (1..=5)
        .map(|i| t("2026-01-01T00:00:00Z") + chrono::Duration::seconds(10 * i))
        .collect();
    for (name, policy, max) in [
        ("all", CatchUp::All, 24),
        ("all2", CatchUp::All, 2),
        ("latest", CatchUp::Latest, 24),
        ("none", CatchUp::None, 24),
    ] {
        upsert(
            &store,
            Periodic::new(name, "*/10 * * * * *", "k", json!({})).catch_up(policy, max),
            created,
        )
        .await;
    }
    let report = scheduler::pass(store.as_ref(), back).await.unwrap();
    assert_eq!(report.inserted, 5 + 2 + 1);
    assert_eq!(report.skipped, 3 + 4 + 5);
    let expect = [
        ("all", &missed[..], &missed[..0]),
        ("all2", &missed[3..], &missed[..3]),
        ("latest", &missed[4..], &missed[..4]),
        ("none", &missed[..0], &missed[..]),
    ];
    for (name, ran, skipped) in expect {
        let jobs = cron_jobs(&store, name).await;
        assert_eq!(
            jobs.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            ran,
            "{name}: the slots that ran"
        );
        let row = store.cron_get(name.into()).await.unwrap().unwrap();
        assert_eq!(
            row.skipped, skipped,
            "{name}: every skipped slot is recorded"
        );
        assert_eq!(row.next_slot, t("2026-01-01T00:01:00Z"), "{name}");
        assert_eq!(row.recent_runs.len(), ran.len(), "{name}");
        assert_eq!(row.last_slot, ran.last().copied(), "{name}");
    }
    // A second pass at the same time finds nothing due; the next slot, on time, runs under
    // every policy.
    let again = scheduler::pass(store.as_ref(), back).await.unwrap();
    assert_eq!(again, scheduler::PassReport::default());
    let on_time = t("2026-01-01T00:01:00.2Z");
    let report = scheduler::pass(store.as_ref(), on_time).await.unwrap();
    assert_eq!(report.inserted, 4);
    assert_eq!(report.skipped, 0);
}
