//! The store conformance checks. Each takes a fresh, empty, migrated store and panics with a
//! clear message when the backend breaks the contract of `mend::store::Store`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mend::job::{AttemptError, ErrorKind, JobRow, JobState, NewJob};
use mend::store::{
    CancelParams, ClaimParams, CompleteParams, ExtendLeasesParams, HeldJob, ListParams, NodeInfo,
    Outcome, OutcomeKind, RescueParams, RetryParams, Store,
};
use serde_json::json;
use uuid::Uuid;

const OWNER: &str = "node-a";

fn job(kind: &str) -> NewJob {
    NewJob::new(kind, json!({"n": 1}))
}

fn claim_params(queue: &str, limit: usize, owner: &str) -> ClaimParams {
    ClaimParams {
        queue: queue.into(),
        kinds: vec![],
        limit,
        lease_owner: owner.into(),
        lease_duration: Duration::from_secs(30),
        now: Utc::now(),
    }
}

async fn claim(store: &Arc<dyn Store>, queue: &str, limit: usize) -> Vec<JobRow> {
    store
        .claim(claim_params(queue, limit, OWNER))
        .await
        .unwrap()
}

async fn get(store: &Arc<dyn Store>, id: Uuid) -> JobRow {
    store.get(id).await.unwrap().expect("job exists")
}

fn err(attempt: i32, kind: ErrorKind, message: &str) -> AttemptError {
    AttemptError {
        attempt,
        kind,
        message: message.into(),
        at: DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap(),
    }
}

fn outcome(job: &JobRow, kind: OutcomeKind) -> Outcome {
    Outcome {
        id: job.id,
        attempt: job.attempt,
        lease_owner: job.lease_owner.clone().expect("claimed job has an owner"),
        kind,
        cleanups: vec![],
    }
}

async fn complete(store: &Arc<dyn Store>, outcomes: Vec<Outcome>) -> mend::store::CompleteResult {
    store
        .complete_many(CompleteParams {
            outcomes,
            now: Utc::now(),
        })
        .await
        .unwrap()
}

fn assert_moved(before: JobState, after: JobState) {
    assert!(
        before == after || before.can_move_to(after),
        "illegal transition {before} -> {after}"
    );
}

pub async fn insert_and_get_round_trip(store: Arc<dyn Store>) {
    let new = job("email")
        .with_queue("mail")
        .with_priority(3)
        .with_max_attempts(7)
        .with_tag("welcome")
        .with_tag("eu")
        .with_timeout(Duration::from_secs(9))
        .with_trace_parent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let rows = store.insert_many(vec![new.clone()]).await.unwrap();
    assert_eq!(rows.len(), 1);
    let stored = get(&store, new.id).await;
    assert_eq!(
        rows[0], stored,
        "insert must return exactly what a read returns"
    );
    assert_eq!(stored.id, new.id);
    assert_eq!(stored.queue, "mail");
    assert_eq!(stored.kind, "email");
    assert_eq!(stored.args, json!({"n": 1}));
    assert_eq!(stored.state, JobState::Available);
    assert_eq!(stored.priority, 3);
    assert_eq!(stored.attempt, 0);
    assert_eq!(stored.max_attempts, 7);
    assert_eq!(stored.tags, vec!["welcome".to_string(), "eu".to_string()]);
    assert_eq!(stored.timeout_ms, Some(9000));
    assert_eq!(
        stored.trace_parent.as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert!(stored.errors.is_empty() && stored.result.is_none() && stored.lease_owner.is_none());
    assert!(store.get(Uuid::now_v7()).await.unwrap().is_none());
    // The worker that claims the job gets its trace context too.
    let claimed = claim(&store, "mail", 1).await;
    assert_eq!(claimed[0].trace_parent, stored.trace_parent);

    // A batch comes back in input order.
    let batch: Vec<NewJob> = (0..50)
        .map(|i| NewJob::new("k", json!({ "i": i })))
        .collect();
    let ids: Vec<Uuid> = batch.iter().map(|j| j.id).collect();
    let rows = store.insert_many(batch).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
}

pub async fn insert_validation_stores_nothing(store: Arc<dyn Store>) {
    let good = job("ok");
    let bad = job("ok").with_max_attempts(0);
    let e = store
        .insert_many(vec![good.clone(), bad])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("max_attempts"), "{e}");
    assert!(
        store.get(good.id).await.unwrap().is_none(),
        "a rejected batch stores nothing"
    );
}

pub async fn unique_key_returns_the_existing_job(store: Arc<dyn Store>) {
    let first = job("charge").with_unique_key("order-1");
    let rows = store.insert_many(vec![first.clone()]).await.unwrap();
    assert_eq!(rows[0].id, first.id);
    let second = job("charge").with_unique_key("order-1");
    let third = job("charge").with_unique_key("order-2");
    let rows = store
        .insert_many(vec![second.clone(), third.clone()])
        .await
        .unwrap();
    assert_eq!(rows[0].id, first.id, "same key returns the original job");
    assert_eq!(rows[1].id, third.id);
    assert!(store.get(second.id).await.unwrap().is_none());
}

pub async fn future_run_at_is_scheduled_and_promoted_when_due(store: Arc<dyn Store>) {
    let later = job("k").with_run_at(Utc::now() + chrono::Duration::hours(1));
    let soon = job("k").with_run_at(Utc::now() + chrono::Duration::milliseconds(300));
    let rows = store
        .insert_many(vec![later.clone(), soon.clone()])
        .await
        .unwrap();
    assert!(rows.iter().all(|r| r.state == JobState::Scheduled));
    assert!(
        claim(&store, "default", 10).await.is_empty(),
        "scheduled jobs are not claimable"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let claimed = claim(&store, "default", 10).await;
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![soon.id]
    );
    assert_eq!(get(&store, later.id).await.state, JobState::Scheduled);
}

pub async fn claim_order_is_priority_then_run_at_then_id(store: Arc<dyn Store>) {
    let now = Utc::now();
    let past = |s: i64| now - chrono::Duration::seconds(s);
    // Inserted in an order unlike the claim order.
    let a = job("k").with_priority(5).with_run_at(past(100));
    let b = job("k").with_priority(0).with_run_at(past(10));
    let c = job("k").with_priority(0).with_run_at(past(20));
    let d = job("k").with_priority(-1).with_run_at(past(1));
    let e = job("k").with_priority(0).with_run_at(past(10)); // same run_at as b; id decides
    store
        .insert_many(vec![a.clone(), b.clone(), c.clone(), d.clone(), e.clone()])
        .await
        .unwrap();
    let got: Vec<Uuid> = claim(&store, "default", 3)
        .await
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, vec![d.id, c.id, b.id]);
    let got: Vec<Uuid> = claim(&store, "default", 10)
        .await
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(got, vec![e.id, a.id]);
}

pub async fn claim_respects_queue_kinds_and_limit(store: Arc<dyn Store>) {
    let mut jobs = Vec::new();
    for i in 0..6 {
        jobs.push(job(if i % 2 == 0 { "even" } else { "odd" }));
    }
    jobs.push(job("even").with_queue("other"));
    store.insert_many(jobs).await.unwrap();
    let mut p = claim_params("default", 2, OWNER);
    p.kinds = vec!["even".into()];
    let first = store.claim(p.clone()).await.unwrap();
    assert_eq!(first.len(), 2, "limit");
    assert!(first
        .iter()
        .all(|j| j.kind == "even" && j.queue == "default"));
    for j in &first {
        assert_eq!(j.state, JobState::Running);
        assert_eq!(j.attempt, 1);
        assert_eq!(j.lease_owner.as_deref(), Some(OWNER));
        assert!(j.lease_expires_at.unwrap() > Utc::now());
        assert!(j.attempted_at.is_some());
    }
    p.limit = 10;
    assert_eq!(
        store.claim(p).await.unwrap().len(),
        1,
        "one even job left in default"
    );
    assert_eq!(
        claim(&store, "default", 10).await.len(),
        3,
        "no kind filter: the odd ones"
    );
    assert_eq!(claim(&store, "other", 10).await.len(), 1);
}

pub async fn concurrent_claims_never_share_a_job(store: Arc<dyn Store>) {
    let jobs: Vec<NewJob> = (0..300).map(|_| job("k")).collect();
    store.insert_many(jobs).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim(claim_params("default", 7, &format!("w{w}")))
                    .await
                    .unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(seen.insert(id), "job {id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 300);
}

pub async fn complete_is_fenced_by_owner_and_attempt(store: Arc<dyn Store>) {
    store.insert_many(vec![job("k"), job("k")]).await.unwrap();
    let claimed = claim(&store, "default", 2).await;
    let (j1, j2) = (&claimed[0], &claimed[1]);
    let done = OutcomeKind::Completed {
        result: Some(json!("ok")),
    };
    let mut wrong_owner = outcome(j1, done.clone());
    wrong_owner.lease_owner = "node-b".into();
    let mut wrong_attempt = outcome(j2, done.clone());
    wrong_attempt.attempt += 1;
    let r = complete(&store, vec![wrong_owner, wrong_attempt]).await;
    assert!(r.applied.is_empty());
    assert_eq!(r.fenced.len(), 2);
    assert_eq!(
        get(&store, j1.id).await.state,
        JobState::Running,
        "a fenced write changes nothing"
    );

    let r = complete(&store, vec![outcome(j1, done.clone())]).await;
    assert_eq!(r.applied, vec![j1.id]);
    let stored = get(&store, j1.id).await;
    assert_eq!(stored.state, JobState::Completed);
    assert_eq!(stored.result, Some(json!("ok")));
    assert!(stored.finalized_at.is_some());
    // The same outcome twice: the second is refused (the job is no longer running).
    let r = complete(&store, vec![outcome(j1, done)]).await;
    assert_eq!(r.fenced, vec![j1.id]);
}

pub async fn outcomes_move_jobs_as_the_state_machine_says(store: Arc<dyn Store>) {
    let jobs: Vec<NewJob> = (0..6).map(|_| job("k")).collect();
    store.insert_many(jobs).await.unwrap();
    let c = claim(&store, "default", 6).await;
    let later = DateTime::from_timestamp_micros(
        (Utc::now() + chrono::Duration::hours(1)).timestamp_micros(),
    )
    .unwrap();
    let e_retry = err(1, ErrorKind::Error, "boom");
    let e_discard = err(1, ErrorKind::Panic, "panicked at x.rs:1:1: no");
    let e_cancel = err(1, ErrorKind::Cancelled, "cancelled on request");
    let r = complete(
        &store,
        vec![
            outcome(&c[0], OutcomeKind::Completed { result: None }),
            outcome(
                &c[1],
                OutcomeKind::Retry {
                    error: e_retry.clone(),
                    run_at: later,
                },
            ),
            outcome(
                &c[2],
                OutcomeKind::Discard {
                    error: e_discard.clone(),
                },
            ),
            outcome(
                &c[3],
                OutcomeKind::Cancelled {
                    error: e_cancel.clone(),
                },
            ),
            outcome(&c[4], OutcomeKind::Snooze { run_at: later }),
            outcome(&c[5], OutcomeKind::Release),
        ],
    )
    .await;
    assert_eq!(r.applied.len(), 6, "all outcomes apply: {r:?}");
    let after: Vec<JobRow> = futures_join(&store, c.iter().map(|j| j.id)).await;
    for a in &after {
        assert_moved(JobState::Running, a.state);
    }
    assert_eq!(after[0].state, JobState::Completed);
    assert_eq!(after[0].result, None);
    assert_eq!(after[1].state, JobState::Retryable);
    assert_eq!(after[1].run_at, later);
    assert_eq!(after[1].errors, vec![e_retry]);
    assert_eq!(after[1].attempt, 1, "a failed attempt counts");
    assert_eq!(after[2].state, JobState::Discarded);
    assert_eq!(after[2].errors, vec![e_discard]);
    assert!(after[2].finalized_at.is_some());
    assert_eq!(after[3].state, JobState::Cancelled);
    assert_eq!(after[3].errors, vec![e_cancel]);
    assert_eq!(after[4].state, JobState::Scheduled);
    assert_eq!(after[4].attempt, 0, "a snooze does not use up an attempt");
    assert_eq!(after[4].run_at, later);
    assert_eq!(after[5].state, JobState::Available);
    assert_eq!(
        after[5].run_at, c[5].run_at,
        "a released job keeps its place in the queue"
    );
    assert_eq!(
        after[5].attempt, 0,
        "a shutdown release does not use up an attempt"
    );
    assert!(after[5].errors.is_empty());
    // The released job is claimable again straight away, as attempt 1.
    let again = claim(&store, "default", 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (c[5].id, 1));
}

async fn futures_join(store: &Arc<dyn Store>, ids: impl Iterator<Item = Uuid>) -> Vec<JobRow> {
    let mut out = Vec::new();
    for id in ids {
        out.push(get(store, id).await);
    }
    out
}

pub async fn extend_leases_reports_lost_and_cancel_requests(store: Arc<dyn Store>) {
    store
        .insert_many(vec![job("k"), job("k"), job("k")])
        .await
        .unwrap();
    let c = claim(&store, "default", 3).await;
    store
        .cancel(CancelParams {
            ids: vec![c[1].id],
            now: Utc::now(),
        })
        .await
        .unwrap();
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

pub async fn rescue_takes_dead_nodes_and_expired_leases_only(store: Arc<dyn Store>) {
    store
        .insert_many((0..3).map(|_| job("k")).collect())
        .await
        .unwrap();
    let dead = store
        .claim(claim_params("default", 1, "dead-node"))
        .await
        .unwrap();
    let mut hung_p = claim_params("default", 1, "hung-node");
    hung_p.lease_duration = Duration::from_millis(1);
    let hung = store.claim(hung_p).await.unwrap();
    let live = store
        .claim(claim_params("default", 1, "live-node"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let rescued = store
        .rescue(RescueParams {
            dead_nodes: vec!["dead-node".into()],
            now: Utc::now(),
            quarantine_after_lost: 3,
        })
        .await
        .unwrap();
    let ids: HashSet<Uuid> = rescued.iter().map(|r| r.job.id).collect();
    assert_eq!(ids, HashSet::from([dead[0].id, hung[0].id]));
    for r in &rescued {
        assert_eq!(r.job.state, JobState::Retryable);
        assert!(!r.quarantined);
        assert_eq!(r.job.attempt, 1, "a lost attempt counts");
        assert_eq!(r.job.errors.len(), 1);
        assert_eq!(r.job.errors[0].kind, ErrorKind::Lost);
        assert!(
            r.job.errors[0].message.contains("worker lost"),
            "{}",
            r.job.errors[0].message
        );
    }
    assert_eq!(
        get(&store, live[0].id).await.state,
        JobState::Running,
        "a live node's job stays"
    );
    // The dead node's late outcome is refused.
    let late = complete(
        &store,
        vec![outcome(&dead[0], OutcomeKind::Completed { result: None })],
    )
    .await;
    assert_eq!(late.fenced, vec![dead[0].id]);
    // Rescued jobs run again: claimable at once, as attempt 2.
    let again = claim(&store, "default", 10).await;
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(|j| j.attempt == 2));
}

pub async fn rescue_quarantines_a_poison_pill(store: Arc<dyn Store>) {
    store
        .insert_many(vec![job("poison").with_max_attempts(10)])
        .await
        .unwrap();
    for round in 1..=3 {
        let c = store
            .claim(claim_params("default", 1, "crashy"))
            .await
            .unwrap();
        assert_eq!(c.len(), 1, "round {round}: the job is claimable");
        let rescued = store
            .rescue(RescueParams {
                dead_nodes: vec!["crashy".into()],
                now: Utc::now(),
                quarantine_after_lost: 3,
            })
            .await
            .unwrap();
        assert_eq!(rescued.len(), 1);
        let r = &rescued[0];
        if round < 3 {
            assert_eq!(r.job.state, JobState::Retryable);
            assert!(!r.quarantined);
        } else {
            assert!(r.quarantined);
            assert_eq!(r.job.state, JobState::Discarded);
            let last = r.job.errors.last().unwrap();
            assert_eq!(last.kind, ErrorKind::Lost);
            assert!(last.message.contains("quarantined"), "{}", last.message);
            assert_eq!(r.job.consecutive_lost(), 3);
        }
    }
}

pub async fn rescue_cancels_a_job_whose_cancel_was_requested(store: Arc<dyn Store>) {
    store.insert_many(vec![job("k")]).await.unwrap();
    let c = store
        .claim(claim_params("default", 1, "gone"))
        .await
        .unwrap();
    store
        .cancel(CancelParams {
            ids: vec![c[0].id],
            now: Utc::now(),
        })
        .await
        .unwrap();
    let r = store
        .rescue(RescueParams {
            dead_nodes: vec!["gone".into()],
            now: Utc::now(),
            quarantine_after_lost: 3,
        })
        .await
        .unwrap();
    assert_eq!(
        r[0].job.state,
        JobState::Cancelled,
        "a cancel request survives the worker's death"
    );
    assert!(r[0].job.finalized_at.is_some());
    assert!(
        claim(&store, "default", 10).await.is_empty(),
        "it is not run again"
    );
}

pub async fn rescue_discards_when_out_of_attempts(store: Arc<dyn Store>) {
    store
        .insert_many(vec![job("k").with_max_attempts(1)])
        .await
        .unwrap();
    store
        .claim(claim_params("default", 1, "gone"))
        .await
        .unwrap();
    let r = store
        .rescue(RescueParams {
            dead_nodes: vec!["gone".into()],
            now: Utc::now(),
            quarantine_after_lost: 3,
        })
        .await
        .unwrap();
    assert_eq!(r[0].job.state, JobState::Discarded);
    assert!(!r[0].quarantined);
}

pub async fn cancel_waiting_and_running_jobs(store: Arc<dyn Store>) {
    let waiting = job("k");
    let scheduled = job("k").with_run_at(Utc::now() + chrono::Duration::hours(1));
    let running = job("k").with_queue("busy");
    store
        .insert_many(vec![waiting.clone(), scheduled.clone(), running.clone()])
        .await
        .unwrap();
    let r = claim(&store, "busy", 1).await;
    let rows = store
        .cancel(CancelParams {
            ids: vec![waiting.id, scheduled.id, running.id, Uuid::now_v7()],
            now: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "missing ids are left out");
    assert_eq!(get(&store, waiting.id).await.state, JobState::Cancelled);
    assert_eq!(get(&store, scheduled.id).await.state, JobState::Cancelled);
    let run = get(&store, running.id).await;
    assert_eq!(
        run.state,
        JobState::Running,
        "a running job is flagged, its worker stops it"
    );
    assert!(run.cancel_requested);
    assert!(
        claim(&store, "default", 10).await.is_empty(),
        "cancelled jobs are never claimed"
    );
    // The worker reports the cancellation.
    let e = err(1, ErrorKind::Cancelled, "cancelled on request");
    complete(
        &store,
        vec![outcome(&r[0], OutcomeKind::Cancelled { error: e })],
    )
    .await;
    assert_eq!(get(&store, running.id).await.state, JobState::Cancelled);
    // Cancelling a finished job changes nothing.
    let before = get(&store, running.id).await;
    store
        .cancel(CancelParams {
            ids: vec![running.id],
            now: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(get(&store, running.id).await, before);
}

pub async fn a_cancel_request_wins_over_retry_snooze_and_release(store: Arc<dyn Store>) {
    store
        .insert_many((0..3).map(|_| job("k")).collect())
        .await
        .unwrap();
    let c = claim(&store, "default", 3).await;
    let ids: Vec<Uuid> = c.iter().map(|j| j.id).collect();
    store
        .cancel(CancelParams {
            ids: ids.clone(),
            now: Utc::now(),
        })
        .await
        .unwrap();
    let later = Utc::now() + chrono::Duration::hours(1);
    let r = complete(
        &store,
        vec![
            outcome(
                &c[0],
                OutcomeKind::Retry {
                    error: err(1, ErrorKind::Error, "failed anyway"),
                    run_at: later,
                },
            ),
            outcome(&c[1], OutcomeKind::Snooze { run_at: later }),
            outcome(&c[2], OutcomeKind::Release),
        ],
    )
    .await;
    assert_eq!(r.applied.len(), 3);
    for id in ids {
        let j = get(&store, id).await;
        assert_eq!(
            j.state,
            JobState::Cancelled,
            "the cancel request is not lost: {j:?}"
        );
        assert!(j.finalized_at.is_some());
    }
    assert!(claim(&store, "default", 10).await.is_empty());
}

pub async fn retry_finished_jobs(store: Arc<dyn Store>) {
    store
        .insert_many(vec![job("k").with_max_attempts(1), job("k")])
        .await
        .unwrap();
    let c = claim(&store, "default", 2).await;
    complete(
        &store,
        vec![
            outcome(
                &c[0],
                OutcomeKind::Discard {
                    error: err(1, ErrorKind::Error, "bad"),
                },
            ),
            outcome(
                &c[1],
                OutcomeKind::Retry {
                    error: err(1, ErrorKind::Error, "later"),
                    run_at: Utc::now() + chrono::Duration::hours(1),
                },
            ),
        ],
    )
    .await;
    let rows = store
        .retry(RetryParams {
            ids: vec![c[0].id, c[1].id],
            now: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(rows[0].state, JobState::Available);
    assert_eq!(
        rows[0].max_attempts, 2,
        "out of attempts: retry grants one more"
    );
    assert!(rows[0].finalized_at.is_none());
    assert_eq!(rows[0].errors.len(), 1, "history is kept");
    assert_eq!(
        rows[1].state,
        JobState::Retryable,
        "only finished jobs are retried by hand"
    );
    let again = claim(&store, "default", 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 2);
}

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
}

pub async fn nodes_register_heartbeat_and_deregister(store: Arc<dyn Store>) {
    let t0 = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let node = NodeInfo {
        id: "n1".into(),
        host: "h".into(),
        pid: 42,
        process_key: "ns|123".into(),
        started_at: t0,
        last_seen: t0,
    };
    store.register_node(node.clone()).await.unwrap();
    store
        .register_node(NodeInfo {
            id: "n2".into(),
            ..node.clone()
        })
        .await
        .unwrap();
    assert_eq!(store.list_nodes().await.unwrap()[0], node);
    let t1 = t0 + chrono::Duration::seconds(5);
    assert!(store.heartbeat_node("n1", t1).await.unwrap());
    assert!(
        !store.heartbeat_node("never-registered", t1).await.unwrap(),
        "an unknown node is reported so it can register again"
    );
    let nodes = store.list_nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes.iter().find(|n| n.id == "n1").unwrap().last_seen, t1);
    store.deregister_nodes(vec!["n1".into()]).await.unwrap();
    let nodes = store.list_nodes().await.unwrap();
    assert_eq!(
        nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        vec!["n2"]
    );
}

pub async fn paused_queues_are_not_claimed(store: Arc<dyn Store>) {
    store
        .insert_many(vec![job("k").with_queue("mail"), job("k")])
        .await
        .unwrap();
    store
        .set_queue_paused("mail", true, Utc::now())
        .await
        .unwrap();
    store
        .set_queue_paused("empty", true, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        store.paused_queues().await.unwrap(),
        vec!["empty".to_string(), "mail".to_string()]
    );
    assert!(
        claim(&store, "mail", 10).await.is_empty(),
        "a paused queue yields nothing"
    );
    assert_eq!(
        claim(&store, "default", 10).await.len(),
        1,
        "other queues go on"
    );
    store
        .set_queue_paused("mail", false, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        store.paused_queues().await.unwrap(),
        vec!["empty".to_string()]
    );
    assert_eq!(claim(&store, "mail", 10).await.len(), 1, "resumed");
}

pub async fn prune_deletes_old_finished_jobs_only(store: Arc<dyn Store>) {
    store
        .insert_many((0..5).map(|_| job("k")).collect())
        .await
        .unwrap();
    let c = claim(&store, "default", 4).await;
    complete(
        &store,
        c[..3]
            .iter()
            .map(|j| outcome(j, OutcomeKind::Completed { result: None }))
            .collect(),
    )
    .await;
    let cutoff = Utc::now() + chrono::Duration::seconds(1);
    let gone = store
        .prune(mend::store::PruneParams {
            finalized_before: cutoff,
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(gone, 2, "bounded by the limit");
    let gone = store
        .prune(mend::store::PruneParams {
            finalized_before: cutoff,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(gone, 1);
    let left = store
        .list(ListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(left.len(), 2, "the running and the available job stay");
    assert!(left.iter().all(|j| !j.state.is_final()));
    let none = store
        .prune(mend::store::PruneParams {
            finalized_before: Utc::now() - chrono::Duration::hours(1),
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(none, 0);
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
    store
        .retry(RetryParams {
            ids: vec![a.id],
            now: Utc::now(),
        })
        .await
        .unwrap();
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
    store
        .cancel(CancelParams {
            ids: vec![b.id],
            now: Utc::now(),
        })
        .await
        .unwrap();
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

pub async fn insert_wakes_idle_fetchers(store: Arc<dyn Store>) {
    let wake = store.wakeup();
    let notified = wake.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let s = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.insert_many(vec![job("k")]).await.unwrap();
    });
    tokio::time::timeout(Duration::from_secs(5), notified)
        .await
        .expect("an insert wakes fetchers waiting on the store");
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
        id: new.id,
        attempt,
        lease_owner: owner.into(),
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
    store
        .retry(RetryParams {
            ids: vec![new.id],
            now: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(get(&store, new.id).await.checkpoint, None);
}
