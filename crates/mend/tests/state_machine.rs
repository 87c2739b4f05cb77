//! The store never moves a job in a way the state machine forbids: random sequences of store
//! operations (insert, claim, complete with every outcome kind and right or wrong fences,
//! cancel, retry, rescue) run against one SQLite store, and after every step each job's change
//! is checked against `JobState::can_move_to`, plus what each operation promises for the jobs
//! it targets (fenced writes change nothing, other jobs are untouched, and so on).

// Store calls are unwrapped in helpers outside the #[test] fn itself.
#![expect(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mend::store::{
    CancelParams, ClaimParams, CompleteParams, ListParams, Outcome, OutcomeKind, RescueParams,
    RetryParams,
};
use mend::{AttemptError, ErrorKind, JobRow, JobState, NewJob, Store};
use proptest::prelude::*;
use uuid::Uuid;

const OWNERS: [&str; 3] = ["node-a", "node-b", "node-c"];
const QUEUES: [&str; 2] = ["default", "other"];

#[derive(Debug, Clone, Copy)]
enum Fence {
    Right,
    WrongOwner,
    WrongAttempt,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Completed,
    Retry { later: bool },
    Discard,
    Cancelled,
    Snooze { later: bool },
    Release,
}

#[derive(Debug, Clone)]
enum Op {
    /// `schedule`: run an hour from the start instead of now.
    Insert {
        queue: usize,
        max_attempts: i32,
        schedule: bool,
    },
    /// `later`: two hours after the start (promotes scheduled jobs, expires leases).
    Claim {
        queue: usize,
        owner: usize,
        limit: usize,
        short_lease: bool,
        later: bool,
    },
    Complete {
        job: usize,
        kind: Kind,
        fence: Fence,
    },
    Cancel {
        job: usize,
    },
    Retry {
        job: usize,
    },
    Rescue {
        dead: Vec<usize>,
        later: bool,
    },
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Completed),
        any::<bool>().prop_map(|later| Kind::Retry { later }),
        Just(Kind::Discard),
        Just(Kind::Cancelled),
        any::<bool>().prop_map(|later| Kind::Snooze { later }),
        Just(Kind::Release),
    ]
}

fn fence() -> impl Strategy<Value = Fence> {
    prop_oneof![4 => Just(Fence::Right), 1 => Just(Fence::WrongOwner), 1 => Just(Fence::WrongAttempt)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, 1..4i32, prop::bool::weighted(0.2))
            .prop_map(|(queue, max_attempts, schedule)| Op::Insert { queue, max_attempts, schedule }),
        3 => (0..2usize, 0..3usize, 1..4usize, any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(queue, owner, limit, short_lease, later)| Op::Claim { queue, owner, limit, short_lease, later }),
        4 => (any::<usize>(), kind(), fence()).prop_map(|(job, kind, fence)| Op::Complete { job, kind, fence }),
        1 => any::<usize>().prop_map(|job| Op::Cancel { job }),
        1 => any::<usize>().prop_map(|job| Op::Retry { job }),
        1 => (prop::collection::vec(0..3usize, 0..3), prop::bool::weighted(0.3))
            .prop_map(|(dead, later)| Op::Rescue { dead, later }),
    ]
}

/// Whether one operation may take a job from `from` to `to`. A claim first promotes due
/// `scheduled`/`retryable` jobs to `available` and then claims in the same call, so it may show
/// two legal moves at once.
fn allowed(op: &Op, from: JobState, to: JobState) -> bool {
    if from == to || from.can_move_to(to) {
        return true;
    }
    matches!(op, Op::Claim { .. })
        && from.can_move_to(JobState::Available)
        && JobState::Available.can_move_to(to)
}

async fn snapshot(store: &dyn Store) -> HashMap<Uuid, JobRow> {
    let page = store
        .list(ListParams {
            limit: mend::store::MAX_PAGE,
            ..Default::default()
        })
        .await
        .unwrap();
    page.jobs.into_iter().map(|j| (j.id, j)).collect()
}

/// Applies `op` and checks its promises; returns a description for failure messages.
async fn apply(
    store: &dyn Store,
    ids: &mut Vec<Uuid>,
    before: &HashMap<Uuid, JobRow>,
    t0: DateTime<Utc>,
    op: &Op,
) -> Result<(), TestCaseError> {
    let at = |later: bool| {
        if later {
            t0 + chrono::Duration::hours(2)
        } else {
            t0
        }
    };
    let pick = |i: usize, ids: &Vec<Uuid>| (!ids.is_empty()).then(|| ids[i % ids.len()]);
    match op {
        Op::Insert {
            queue,
            max_attempts,
            schedule,
        } => {
            let mut job = NewJob::new("k", serde_json::json!({"n": ids.len()}))
                .with_queue(QUEUES[*queue])
                .with_max_attempts(*max_attempts);
            if *schedule {
                job = job.with_run_at(t0 + chrono::Duration::hours(1));
            }
            let rows = store.insert_many(vec![job]).await.unwrap();
            prop_assert_eq!(rows.len(), 1);
            let row = &rows[0];
            let expected = if *schedule {
                JobState::Scheduled
            } else {
                JobState::Available
            };
            prop_assert_eq!(row.state, expected);
            prop_assert_eq!(row.attempt, 0);
            ids.push(row.id);
        }
        Op::Claim {
            queue,
            owner,
            limit,
            short_lease,
            later,
        } => {
            let lease = if *short_lease {
                Duration::from_millis(1)
            } else {
                Duration::from_secs(3600)
            };
            let claimed = store
                .claim(ClaimParams {
                    queue: QUEUES[*queue].to_owned(),
                    kinds: Vec::new(),
                    limit: *limit,
                    lease_owner: OWNERS[*owner].to_owned(),
                    lease_duration: lease,
                    now: at(*later),
                    routes: Vec::new(),
                    ahead: 0,
                })
                .await
                .unwrap();
            prop_assert!(
                claimed.len() <= *limit,
                "claimed {} > limit {}",
                claimed.len(),
                limit
            );
            for job in &claimed {
                let prev = &before[&job.id];
                prop_assert_eq!(&job.queue, QUEUES[*queue]);
                prop_assert_eq!(job.state, JobState::Running);
                prop_assert_eq!(
                    job.attempt,
                    prev.attempt + 1,
                    "a claim starts the next attempt"
                );
                prop_assert_eq!(job.lease_owner.as_deref(), Some(OWNERS[*owner]));
                // The runtime fences its writes with the returned row: it must be the stored one.
                // (Claims leave the timeline out: running a job does not need it.)
                let mut stored = store.get(job.id).await.unwrap().unwrap();
                prop_assert!(job.timeline.is_empty());
                // (This test's clock stands still for some operations and not for others, so
                // only presence is checked here; the order is checked by the conformance suite.)
                prop_assert!(
                    stored
                        .timeline
                        .iter()
                        .any(|e| e.event == "claimed" && e.attempt == Some(job.attempt)),
                    "the claim is in the timeline: {:?}",
                    stored.timeline
                );
                stored.timeline.clear();
                prop_assert_eq!(
                    &stored,
                    job,
                    "claim returned a row that differs from the stored one"
                );
            }
            // Claim takes available jobs first-come: if it took fewer than asked, none is left.
            if claimed.len() < *limit {
                let left = snapshot(store).await;
                let waiting = left
                    .values()
                    .filter(|j| j.queue == QUEUES[*queue] && j.state == JobState::Available)
                    .count();
                prop_assert_eq!(
                    waiting,
                    0,
                    "claim left available jobs behind although it had room"
                );
            }
        }
        Op::Complete { job, kind, fence } => {
            let Some(id) = pick(*job, ids) else {
                return Ok(());
            };
            let prev = &before[&id];
            let (attempt, owner) = match fence {
                Fence::Right => (
                    prev.attempt,
                    prev.lease_owner.clone().unwrap_or_else(|| "nobody".into()),
                ),
                Fence::WrongOwner => (prev.attempt, "intruder".to_owned()),
                Fence::WrongAttempt => (
                    prev.attempt - 1,
                    prev.lease_owner.clone().unwrap_or_default(),
                ),
            };
            let error = AttemptError {
                attempt,
                kind: ErrorKind::Error,
                message: "boom".into(),
                at: t0,
                version: None,
                given_back: false,
            };
            let run_at =
                |later: bool| at(later) + chrono::Duration::seconds(if later { 1 } else { -1 });
            let outcome_kind = match kind {
                Kind::Completed => OutcomeKind::Completed {
                    result: Some(serde_json::json!(1)),
                },
                Kind::Retry { later } => OutcomeKind::Retry {
                    error,
                    run_at: run_at(*later),
                },
                Kind::Discard => OutcomeKind::Discard { error },
                Kind::Cancelled => OutcomeKind::Cancelled { error },
                Kind::Snooze { later } => OutcomeKind::Snooze {
                    run_at: run_at(*later),
                },
                Kind::Release => OutcomeKind::Release,
            };
            let r = store
                .complete_many(CompleteParams {
                    outcomes: vec![Outcome {
                        fence: mend::store::Fence::new(id, attempt, owner),
                        kind: outcome_kind,
                        cleanups: vec![],
                    }],
                    now: t0,
                })
                .await
                .unwrap();
            let should_apply = prev.state == JobState::Running && matches!(fence, Fence::Right);
            prop_assert_eq!(r.applied.len() + r.fenced.len(), 1);
            prop_assert_eq!(
                !r.applied.is_empty(),
                should_apply,
                "fence decision for {:?} on a {} job",
                fence,
                prev.state
            );
            let now = store.get(id).await.unwrap().unwrap();
            if should_apply {
                let (state, attempt, errors) = match kind {
                    Kind::Completed => (JobState::Completed, prev.attempt, 0),
                    Kind::Retry { .. } => (JobState::Retryable, prev.attempt, 1),
                    Kind::Discard => (JobState::Discarded, prev.attempt, 1),
                    Kind::Cancelled => (JobState::Cancelled, prev.attempt, 1),
                    Kind::Snooze { later: true } => (JobState::Scheduled, prev.attempt - 1, 0),
                    Kind::Snooze { later: false } => (JobState::Available, prev.attempt - 1, 0),
                    Kind::Release => (JobState::Available, prev.attempt - 1, 0),
                };
                // A cancel request made during the attempt wins over retry, snooze and release.
                let state = match kind {
                    Kind::Retry { .. } | Kind::Snooze { .. } | Kind::Release
                        if prev.cancel_requested =>
                    {
                        JobState::Cancelled
                    }
                    _ => state,
                };
                prop_assert_eq!(now.state, state);
                prop_assert_eq!(now.attempt, attempt);
                prop_assert_eq!(now.errors.len(), prev.errors.len() + errors);
                prop_assert_eq!(now.finalized_at.is_some(), state.is_final());
            } else {
                prop_assert_eq!(&now, prev, "a fenced write changed the job");
            }
        }
        Op::Cancel { job } | Op::Retry { job } => {
            let Some(id) = pick(*job, ids) else {
                return Ok(());
            };
            let prev = &before[&id];
            let rows = if matches!(op, Op::Cancel { .. }) {
                store
                    .cancel(CancelParams {
                        ids: vec![id],
                        now: t0,
                    })
                    .await
            } else {
                store
                    .retry(RetryParams {
                        ids: vec![id],
                        now: t0,
                    })
                    .await
            }
            .unwrap();
            prop_assert_eq!(rows.len(), 1);
            let now = &rows[0];
            if matches!(op, Op::Cancel { .. }) {
                match prev.state {
                    JobState::Scheduled | JobState::Available | JobState::Retryable => {
                        prop_assert_eq!(now.state, JobState::Cancelled);
                        prop_assert!(now.finalized_at.is_some());
                    }
                    JobState::Running => {
                        prop_assert_eq!(now.state, JobState::Running);
                        prop_assert!(now.cancel_requested, "a running job is flagged");
                    }
                    _ => prop_assert_eq!(now, prev, "cancelling a finished job changes nothing"),
                }
            } else if prev.state.is_final() {
                prop_assert_eq!(now.state, JobState::Available);
                prop_assert!(now.finalized_at.is_none());
                prop_assert!(!now.cancel_requested);
                prop_assert!(
                    now.max_attempts > now.attempt,
                    "a retried job has an attempt left"
                );
            } else {
                prop_assert_eq!(now, prev, "retrying an unfinished job changes nothing");
            }
        }
        Op::Rescue { dead, later } => {
            let dead: Vec<String> = dead.iter().map(|i| OWNERS[*i].to_owned()).collect();
            let now = at(*later);
            let rescued = store
                .rescue(RescueParams {
                    dead_nodes: dead.clone(),
                    now,
                    quarantine_after_lost: 3,
                })
                .await
                .unwrap();
            for r in &rescued {
                let prev = &before[&r.job.id];
                prop_assert_eq!(
                    prev.state,
                    JobState::Running,
                    "only running jobs are rescued"
                );
                let owner_dead = prev.lease_owner.as_ref().is_some_and(|o| dead.contains(o));
                let expired = prev.lease_expires_at.is_some_and(|t| t < now);
                prop_assert!(
                    owner_dead || expired,
                    "rescued a job of a live owner with a valid lease"
                );
                prop_assert_eq!(r.job.attempt, prev.attempt);
                prop_assert_eq!(r.job.errors.len(), prev.errors.len() + 1);
                prop_assert_eq!(r.job.errors.last().map(|e| e.kind), Some(ErrorKind::Lost));
                let expected = if prev.cancel_requested {
                    // A cancel request survives the worker's death.
                    JobState::Cancelled
                } else if r.quarantined || prev.attempt >= prev.max_attempts {
                    JobState::Discarded
                } else {
                    JobState::Retryable
                };
                prop_assert_eq!(r.job.state, expected);
            }
            // Every running job of a dead owner or with an expired lease was rescued.
            for prev in before.values().filter(|j| j.state == JobState::Running) {
                let owner_dead = prev.lease_owner.as_ref().is_some_and(|o| dead.contains(o));
                let expired = prev.lease_expires_at.is_some_and(|t| t < now);
                if owner_dead || expired {
                    prop_assert!(
                        rescued.iter().any(|r| r.job.id == prev.id),
                        "job {} should have been rescued",
                        prev.id
                    );
                }
            }
        }
    }
    Ok(())
}

/// The job ids an operation may change.
fn targets(op: &Op, ids: &[Uuid]) -> Option<Vec<Uuid>> {
    let pick = |i: usize| (!ids.is_empty()).then(|| ids[i % ids.len()]);
    match op {
        Op::Complete { job, .. } | Op::Cancel { job } | Op::Retry { job } => {
            Some(pick(*job).into_iter().collect())
        }
        // Insert adds one; claim and rescue may touch many.
        _ => None,
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let env = mend_test::env::Env::new().await;
    let store: &dyn Store = &*env.store;
    let t0 = Utc::now();
    let mut ids = Vec::new();
    let mut before = snapshot(store).await;
    for (step, op) in ops.iter().enumerate() {
        apply(store, &mut ids, &before, t0, op)
            .await
            .map_err(|e| TestCaseError::fail(format!("step {step} {op:?}: {e}")))?;
        let after = snapshot(store).await;
        prop_assert_eq!(
            after.len(),
            ids.len(),
            "jobs appeared or vanished at step {}",
            step
        );
        for (id, now) in &after {
            let Some(prev) = before.get(id) else { continue };
            prop_assert!(
                allowed(op, prev.state, now.state),
                "step {} {:?}: job {} moved {} -> {}, which the state machine forbids",
                step,
                op,
                id,
                prev.state,
                now.state
            );
            prop_assert!(
                now.attempt >= 0,
                "negative attempt at step {}: {:?}",
                step,
                now
            );
            prop_assert!(
                now.errors.len() >= prev.errors.len(),
                "errors were lost at step {}",
                step
            );
            if now.state == JobState::Running {
                prop_assert!(
                    now.lease_owner.is_some() && now.lease_expires_at.is_some(),
                    "running without a lease: {:?}",
                    now
                );
            }
            if let Some(targets) = targets(op, &ids) {
                if !targets.contains(id) {
                    prop_assert_eq!(
                        now,
                        prev,
                        "step {} {:?} changed a job it did not target",
                        step,
                        op
                    );
                }
            }
        }
        before = after;
    }
    drop(env);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn store_moves_jobs_only_as_the_state_machine_allows(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
