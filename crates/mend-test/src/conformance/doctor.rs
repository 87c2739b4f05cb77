//! Health figures for `mend doctor` (`Store::doctor_stats`): waiting jobs per queue and kind,
//! running jobs past their lease, and jobs discarded because a durable cleanup failed.

use super::*;
use mend::store::{DoctorParams, OutcomeKind};

fn params(now: DateTime<Utc>) -> DoctorParams {
    DoctorParams {
        waiting_before: now,
        lease_expired_before: now,
        discarded_since: now - chrono::Duration::days(1),
        limit: 5,
    }
}

pub async fn doctor_stats_find_waiting_kinds_stuck_leases_and_failed_cleanups(
    store: Arc<dyn Store>,
) {
    let t0 = Utc::now();
    let mut jobs = vec![job("a"), job("a"), job("b")];
    jobs.push(NewJob {
        queue: "other".into(),
        ..job("a")
    });
    store.insert_many(jobs).await.unwrap();
    let later = Utc::now() + chrono::Duration::seconds(1);

    // Nothing waited since before t0; everything inserted is waiting by `later`.
    let none = store
        .doctor_stats(params(t0 - chrono::Duration::minutes(1)))
        .await
        .unwrap();
    assert!(none.waiting.is_empty(), "{none:?}");
    assert!(
        none.stuck.is_empty() && none.cleanup_failed.is_empty(),
        "{none:?}"
    );
    let s = store.doctor_stats(params(later)).await.unwrap();
    let waiting: Vec<(String, String, u64)> = s
        .waiting
        .iter()
        .map(|w| (w.queue.clone(), w.kind.clone(), w.count))
        .collect();
    assert_eq!(
        waiting,
        vec![
            ("default".into(), "a".into(), 2),
            ("default".into(), "b".into(), 1),
            ("other".into(), "a".into(), 1),
        ]
    );

    // Two claimed jobs: one discarded for a failed cleanup, one left running (lease 30 s).
    let claimed = claim(&store, "default", 2).await;
    assert_eq!(claimed.len(), 2);
    let (gone, running) = (&claimed[0], &claimed[1]);
    complete(
        &store,
        vec![outcome(
            gone,
            OutcomeKind::Discard {
                error: err(
                    1,
                    ErrorKind::Error,
                    "cleanup failed: durable cleanup `x` failed 3 times: boom",
                ),
            },
        )],
    )
    .await;
    let s = store.doctor_stats(params(later)).await.unwrap();
    assert!(s.stuck.is_empty(), "a live lease is not stuck: {s:?}");
    assert_eq!(s.cleanup_failed.len(), 1, "{s:?}");
    assert_eq!(s.cleanup_failed[0].id, gone.id);
    assert!(s.cleanup_failed[0]
        .detail
        .as_deref()
        .unwrap_or_default()
        .starts_with("cleanup failed:"));
    // Jobs claimed are no longer waiting.
    assert_eq!(s.waiting.iter().map(|w| w.count).sum::<u64>(), 2, "{s:?}");

    // An hour on, the running job's lease is long expired.
    let hour = Utc::now() + chrono::Duration::hours(1);
    let s = store
        .doctor_stats(DoctorParams {
            lease_expired_before: hour,
            ..params(later)
        })
        .await
        .unwrap();
    assert_eq!(s.stuck.len(), 1, "{s:?}");
    assert_eq!(s.stuck[0].id, running.id);
    assert_eq!(s.stuck[0].detail.as_deref(), Some(OWNER));
    assert!(s.stuck[0].at.is_some());

    // A discard for another reason is not a failed cleanup.
    let other = claim(&store, "default", 1).await;
    complete(
        &store,
        vec![outcome(
            &other[0],
            OutcomeKind::Discard {
                error: err(1, ErrorKind::Error, "bad args"),
            },
        )],
    )
    .await;
    let s = store.doctor_stats(params(later)).await.unwrap();
    assert_eq!(s.cleanup_failed.len(), 1, "{s:?}");
}
