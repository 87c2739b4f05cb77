//! Fencing: every write for a running job is checked against (id, attempt, lease owner), so a
//! worker whose job was taken away (rescued as lost) cannot complete it any more.

#![expect(
    clippy::expect_used,
    reason = "test set-up fails loudly: a broken fixture is a failed test"
)]

use std::time::Duration;

use chrono::Utc;
use mend::store::{CompleteParams, Outcome, OutcomeKind};
use mend::{
    AttemptExit, ErrorKind, EventOutcome, JobError, JobState, NewJob, Registry, WorkerHandle,
};
use mend_test::env::{stat, Env};
use mend_test::handler::registry_with;
use mend_test::sync::{Gate, Log};
use mend_test::wait::{recv, wait_for_event};
use tokio::sync::mpsc;
use uuid::Uuid;

mend_test::job_args!(struct Held = "held");

/// Attempts up to `block_through` wait at `gate` (each needs its own opening, or a stop);
/// later attempts complete at once. Every attempt reports `(attempt, exit)` to `exits`.
fn registry(
    block_through: i32,
    gate: &Gate,
    exits: &Log<(i32, AttemptExit)>,
    started: mpsc::UnboundedSender<i32>,
) -> Registry {
    let state = (gate.clone(), exits.clone(), started);
    registry_with(
        state,
        move |(gate, exits, started), ctx, _: Held| async move {
            let attempt = ctx.attempt();
            ctx.defer(move |exit| async move { exits.push((attempt, exit)) });
            let _ = started.send(attempt);
            if attempt <= block_through {
                gate.wait().await;
            }
            Ok::<_, JobError>(format!("done by attempt {attempt}"))
        },
    )
}

async fn take_the_lease_away(env: &Env, node: &str) {
    let rescued = env.rescue_dead(&[node]).await;
    assert_eq!(rescued.len(), 1, "the running job was rescued");
    assert_eq!(rescued[0].job.state, JobState::Retryable);
}

/// One `Held` job whose attempt 1 has started, on a worker with `slots` slots (attempts up to
/// `slots` wait at the gate) and a heartbeat every `heartbeat` (its first beat already done),
/// with the worker's events subscribed before the enqueue.
struct Running {
    env: Env,
    gate: Gate,
    exits: Log<(i32, AttemptExit)>,
    started: mpsc::UnboundedReceiver<i32>,
    worker: WorkerHandle,
    events: tokio::sync::broadcast::Receiver<mend::JobEvent>,
    id: Uuid,
}

async fn start_held(slots: usize, heartbeat: Duration) -> Running {
    let env = Env::new().await;
    let (gate, exits) = (Gate::new(), Log::new());
    let (tx, mut started) = mpsc::unbounded_channel();
    let block_through = i32::try_from(slots).expect("a few slots");
    let worker = env
        .worker(registry(block_through, &gate, &exits, tx), slots, |c| {
            c.heartbeat_interval = heartbeat
        })
        .await;
    env.wait_for_first_heartbeat(&worker).await;
    let events = worker.events();
    let id = env.client.enqueue(&Held).await.expect("enqueue").id;
    assert_eq!(recv(&mut started, "attempt 1 to start").await, 1);
    Running {
        env,
        gate,
        exits,
        started,
        worker,
        events,
        id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_the_lease_cannot_complete_the_job() {
    // One slot, so the rescued job cannot be claimed again while attempt 1 still holds it; a
    // heartbeat too slow to notice the lost lease, so attempt 1 really tries to write.
    let mut r = start_held(1, Duration::from_secs(3600)).await;

    take_the_lease_away(&r.env, r.worker.node_id()).await;
    r.gate.open(); // attempt 1 finishes and tries to complete the job

    let ev = wait_for_event(&mut r.events, r.id, "attempt 1's outcome", |e| {
        e.attempt == 1
    })
    .await;
    assert_eq!(
        ev.outcome,
        EventOutcome::Completed,
        "attempt 1 did try to complete"
    );
    assert!(ev.fenced, "the store refused attempt 1's completion");
    assert!(stat(&r.worker.stats().fenced) >= 1);

    // The job's history shows the lost attempt; the job is finished by attempt 2, not 1.
    let job = r.env.wait_for_state(r.id, JobState::Completed).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(job.result, Some(serde_json::json!("done by attempt 2")));
    assert_eq!(job.errors.len(), 1);
    assert_eq!(
        (job.errors[0].attempt, job.errors[0].kind),
        (1, ErrorKind::Lost)
    );
    let ev = wait_for_event(&mut r.events, r.id, "attempt 2's outcome", |e| {
        e.attempt == 2
    })
    .await;
    assert!(!ev.fenced);
    assert_eq!(
        stat(&r.worker.stats().completed),
        1,
        "only attempt 2's completion counts"
    );
    r.worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_stops_an_attempt_whose_lease_was_lost() {
    let mut r = start_held(1, Duration::from_millis(50)).await;

    take_the_lease_away(&r.env, r.worker.node_id()).await;
    // The gate is never opened: only the heartbeat can end attempt 1.
    let job = r.env.wait_for_state(r.id, JobState::Completed).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(job.result, Some(serde_json::json!("done by attempt 2")));
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].kind, ErrorKind::Lost);
    assert_eq!(
        r.exits.snapshot(),
        [(1, AttemptExit::LeaseLost), (2, AttemptExit::Completed)],
        "attempt 1 was stopped and its defers told the lease was lost"
    );
    // Attempt 1 wrote nothing: the only event is attempt 2's.
    let ev = wait_for_event(&mut r.events, r.id, "an outcome", |_| true).await;
    assert_eq!(
        (ev.attempt, ev.outcome, ev.fenced),
        (2, EventOutcome::Completed, false)
    );
    r.worker.shutdown(Duration::from_secs(5)).await;
}

/// The same worker may claim a rescued job again while its stale attempt is still running
/// (that is what happens after a long pause). When the stale attempt ends, the worker must still
/// track the new one: count it in flight, and be able to cancel it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_stale_attempt_ending_does_not_untrack_the_new_attempt() {
    // Two slots so the rescued job can be claimed again while attempt 1 still runs; no
    // heartbeat during the test, so attempt 1 is not stopped for its lost lease.
    let mut r = start_held(2, Duration::from_secs(3600)).await;

    take_the_lease_away(&r.env, r.worker.node_id()).await;
    assert_eq!(recv(&mut r.started, "attempt 2 to start").await, 2);
    // One opening: the gate is first-come first-served, so it lets attempt 1 through.
    r.gate.open();
    let ev = wait_for_event(&mut r.events, r.id, "an outcome", |_| true).await;
    assert_eq!(ev.attempt, 1, "{ev:#?}");
    assert!(ev.fenced, "attempt 1's completion is refused");

    // Attempt 2 is still running and still ours.
    let job = r.env.job(r.id).await;
    assert_eq!((job.state, job.attempt), (JobState::Running, 2));
    assert_eq!(r.worker.in_flight(), 1, "the worker still tracks attempt 2");
    r.worker.cancel(r.id).await.unwrap();
    let job = r
        .env
        .wait_for_job(r.id, "cancelled", |j| j.state.is_final())
        .await;
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(
        r.exits.snapshot(),
        [(1, AttemptExit::Completed), (2, AttemptExit::Cancelled)]
    );
    r.worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_many_fences_wrong_owner_and_wrong_attempt() {
    let env = Env::new().await;
    let ids: Vec<Uuid> = env
        .client
        .insert_many(
            (0..3)
                .map(|_| NewJob::new("held", serde_json::json!(null)))
                .collect(),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    let claimed = env.claim_as("node-a", Duration::from_secs(60)).await;
    assert_eq!(claimed.len(), 3);
    assert!(claimed
        .iter()
        .all(|j| j.attempt == 1 && j.lease_owner.as_deref() == Some("node-a")));

    let outcome = |id: Uuid, attempt: i32, owner: &str| Outcome {
        fence: mend::store::Fence::new(id, attempt, owner),
        kind: OutcomeKind::Completed {
            result: Some(serde_json::json!("x")),
        },
        cleanups: vec![],
    };
    let result = env
        .store
        .complete_many(CompleteParams {
            outcomes: vec![
                outcome(ids[0], 1, "node-b"), // wrong owner
                outcome(ids[1], 2, "node-a"), // wrong attempt
                outcome(ids[2], 1, "node-a"), // right
            ],
            now: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(result.fenced, [ids[0], ids[1]]);
    assert_eq!(result.applied, [ids[2]]);
    for id in &ids[..2] {
        let job = env.job(*id).await;
        assert_eq!(
            job.state,
            JobState::Running,
            "a fenced write changes nothing"
        );
        assert_eq!(job.result, None);
    }
    assert_eq!(env.job(ids[2]).await.state, JobState::Completed);

    // Every outcome kind is fenced the same way, and so is a write for a finished job.
    let error = mend::AttemptError {
        attempt: 1,
        kind: ErrorKind::Error,
        message: "nope".into(),
        at: Utc::now(),
        version: None,
        given_back: false,
    };
    let kinds = [
        OutcomeKind::Retry {
            error: error.clone(),
            run_at: Utc::now(),
        },
        OutcomeKind::Discard {
            error: error.clone(),
        },
        OutcomeKind::Cancelled { error },
        OutcomeKind::Snooze { run_at: Utc::now() },
        OutcomeKind::Release,
    ];
    for kind in kinds {
        let stale = vec![
            Outcome {
                kind: kind.clone(),
                ..outcome(ids[0], 1, "node-b")
            },
            Outcome {
                kind: kind.clone(),
                ..outcome(ids[1], 0, "node-a")
            },
            Outcome {
                kind: kind.clone(),
                ..outcome(ids[2], 1, "node-a")
            }, // already completed
        ];
        let r = env
            .store
            .complete_many(CompleteParams {
                outcomes: stale,
                now: Utc::now(),
            })
            .await
            .unwrap();
        assert!(
            r.applied.is_empty(),
            "{kind:?} was applied despite the fence: {:?}",
            r.applied
        );
        assert_eq!(r.fenced.len(), 3);
    }
    for (id, state) in [
        (ids[0], JobState::Running),
        (ids[1], JobState::Running),
        (ids[2], JobState::Completed),
    ] {
        let job = env.job(id).await;
        assert_eq!(job.state, state);
        assert_eq!(job.attempt, 1);
        assert!(job.errors.is_empty());
    }

    // After a rescue, the old owner's write is refused even with the right attempt.
    assert_eq!(env.rescue_dead(&["node-a"]).await.len(), 2);
    let r = env
        .store
        .complete_many(CompleteParams {
            outcomes: vec![outcome(ids[0], 1, "node-a")],
            now: Utc::now(),
        })
        .await
        .unwrap();
    assert_eq!(r.fenced, [ids[0]]);
    let job = env.job(ids[0]).await;
    assert_eq!(job.state, JobState::Retryable);
    assert_eq!(job.errors[0].kind, ErrorKind::Lost);
}

mend_test::job_args!(struct Produce { dir: String } = "fenced_produce");

/// A handler that finishes its work after its lease was taken away must not move its staged
/// file into place: the file belongs to whichever attempt completes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_lost_its_lease_does_not_promote_its_staged_file() {
    let env = Env::new().await;
    let out = tempfile::tempdir().unwrap();
    let final_path = out.path().join("out.txt");
    let (gate, exits) = (Gate::new(), Log::new());
    let (tx, mut ended) = mpsc::unbounded_channel();
    let (staged_tx, mut staged) = mpsc::unbounded_channel();
    let state = (gate.clone(), exits.clone(), tx, staged_tx);
    let registry = registry_with(
        state,
        |(gate, exits, ended, staged), ctx, p: Produce| async move {
            let attempt = ctx.attempt();
            ctx.defer(move |exit| async move {
                exits.push((attempt, exit));
                let _ = ended.send(attempt);
            });
            let temp = ctx
                .stage_file(std::path::Path::new(&p.dir).join("out.txt"))
                .await?;
            std::fs::write(&temp, format!("attempt {attempt}")).unwrap();
            let _ = staged.send(attempt);
            if attempt == 1 {
                // Told the lease is gone, it finishes anyway, as a handler that does not
                // watch its token would.
                ctx.cancelled().await;
            } else {
                gate.wait().await;
            }
            Ok::<_, JobError>(())
        },
    );
    let worker = env
        .worker(registry, 1, |c| {
            c.heartbeat_interval = Duration::from_millis(50)
        })
        .await;
    env.wait_for_first_heartbeat(&worker).await;
    let dir = out.path().to_string_lossy().into_owned();
    let id = env.client.enqueue(&Produce { dir }).await.unwrap().id;
    assert_eq!(recv(&mut staged, "attempt 1 to stage its file").await, 1);

    take_the_lease_away(&env, worker.node_id()).await;
    assert_eq!(recv(&mut ended, "attempt 1 to end").await, 1);
    assert_eq!(exits.snapshot(), [(1, AttemptExit::LeaseLost)]);
    assert!(
        !final_path.exists(),
        "attempt 1 moved its file into place after losing the job"
    );

    gate.open();
    let job = env.wait_for_state(id, JobState::Completed).await;
    assert_eq!(job.attempt, 2);
    assert_eq!(std::fs::read_to_string(&final_path).unwrap(), "attempt 2");
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "attempt 1's temporary file was removed");
    worker.shutdown(Duration::from_secs(5)).await;
}
