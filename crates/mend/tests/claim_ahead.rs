//! Claiming ahead: while a queue of short jobs is busy, the fetcher claims more jobs than it has
//! free slots, and those wait in their executors for a slot. Nothing of such a job runs before
//! it has one: shutdown releases it unstarted without using an attempt, and a cancel reaches
//! it before its handler does.

#![expect(
    clippy::expect_used,
    reason = "test set-up fails loudly: a broken fixture is a failed test"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mend::{JobState, LiveAttempt, WorkerHandle};
use mend_test::env::Env;
use mend_test::handler::registry_with;
use mend_test::sync::Log;
use mend_test::wait::{wait_until, WAIT};
use uuid::Uuid;

mend_test::job_args! {
    struct Quick {} = "quick"
}

/// Slots of the test's worker; it claims up to four jobs per slot ahead.
const SLOTS: usize = 4;
/// Jobs that return at once, so the queue gets busy and claims ahead, before every later job
/// blocks until it is stopped, so the jobs claimed ahead behind them wait for good.
const FAST_JOBS: usize = 400;

/// Starts a worker whose handler logs each job it starts, and enqueues `FAST_JOBS` + 200 jobs.
async fn rig(env: &Env) -> (WorkerHandle, Log<Uuid>, Vec<Uuid>) {
    let started = Log::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let registry = registry_with(
        (started.clone(), calls),
        |(started, calls), ctx, _: Quick| async move {
            started.push(ctx.id());
            if calls.fetch_add(1, Ordering::AcqRel) >= FAST_JOBS {
                ctx.cancelled().await;
                return Err(mend::JobError::retry("stopped"));
            }
            Ok(())
        },
    );
    let worker = env.worker(registry, SLOTS, |_| {}).await;
    let rows = env
        .client
        .enqueue_many(&(0..FAST_JOBS + 200).map(|_| Quick {}).collect::<Vec<_>>())
        .await
        .expect("enqueue");
    (worker, started, rows.iter().map(|r| r.id).collect())
}

/// Waits until every slot runs a blocked job and some jobs wait behind them; returns those.
async fn waiting(worker: &WorkerHandle) -> Vec<LiveAttempt> {
    wait_until(
        "the slots to fill with blocked jobs and jobs claimed ahead to wait behind them",
        WAIT,
        || async {
            let a = worker.attempts();
            a.iter().filter(|a| a.phase == "handler").count() == SLOTS
                && a.iter().any(|a| a.phase == "waiting")
        },
    )
    .await;
    worker
        .attempts()
        .into_iter()
        .filter(|a| a.phase == "waiting")
        .collect()
}

/// A job that waited for a slot: back in the queue, its handler never called, no attempt used.
async fn back_unstarted(env: &Env, started: &Log<Uuid>, id: Uuid) {
    assert!(
        !started.snapshot().contains(&id),
        "job {id} claimed ahead ran"
    );
    let job = env.job(id).await;
    assert_eq!(job.state, JobState::Available, "{job:#?}");
    assert_eq!(job.attempt, 0, "its claim used no attempt: {job:#?}");
    assert!(job.errors.is_empty(), "{:#?}", job.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_jobs_claimed_ahead_without_running_them_or_using_an_attempt() {
    let env = Env::new().await;
    let (worker, started, ids) = rig(&env).await;
    let ahead = waiting(&worker).await;
    assert!(
        ahead.len() <= 4 * SLOTS,
        "claimed ahead within the cap: {ahead:?}"
    );
    assert!(ahead.iter().all(|a| a.doing().starts_with("claimed ahead")));

    let report = worker.shutdown(Duration::from_millis(100)).await;
    // The running ones, cancelled past the drain, and those waiting (a claim in flight at the
    // look may add some).
    // (`drained` counts the quick jobs whose outcomes were still being written.)
    assert!(report.released >= SLOTS + ahead.len(), "{report:?}");
    for a in &ahead {
        back_unstarted(&env, &started, a.id).await;
    }
    // Only the quick jobs and the blocked ones ever started: nothing claimed ahead ran.
    assert_eq!(started.len(), FAST_JOBS + SLOTS);
    // Nothing else is left claimed: the quick jobs are done, every other one is back.
    let mut completed = 0;
    for id in ids {
        let job = env.job(id).await;
        match job.state {
            JobState::Completed => completed += 1,
            JobState::Available => assert_eq!(job.attempt, 0, "{job:#?}"),
            _ => panic!("left claimed: {job:#?}"),
        }
    }
    assert_eq!(completed, FAST_JOBS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_claimed_ahead_go_back_when_the_queue_slows_and_claiming_ahead_stops() {
    let env = Env::new().await;
    let (worker, started, _) = rig(&env).await;
    let ahead = waiting(&worker).await;
    // Every slot is blocked now: the jobs waiting behind them go back after a second, and the
    // queue's new pace claims none ahead again.
    wait_until("no job waits for a slot any more", WAIT, || async {
        worker.attempts().iter().all(|a| a.phase != "waiting")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again: Vec<_> = worker
        .attempts()
        .into_iter()
        .filter(|a| a.phase == "waiting")
        .collect();
    assert!(again.is_empty(), "claimed ahead again: {again:?}");
    for a in &ahead {
        back_unstarted(&env, &started, a.id).await;
    }
    worker.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_a_job_claimed_ahead_before_its_handler_runs() {
    let env = Env::new().await;
    let (worker, started, _) = rig(&env).await;
    let ahead = waiting(&worker).await;
    let id = ahead[0].id;
    worker.cancel(id).await.expect("cancel");
    let job = env.wait_for_state(id, JobState::Cancelled).await;
    assert!(!started.snapshot().contains(&id), "its handler never ran");
    // Cancelled as the attempt it was claimed as, not released first (a job that went back
    // unstarted, then was cancelled in the queue, would show attempt 0).
    assert_eq!(job.attempt, 1, "{job:#?}");
    worker.shutdown(Duration::from_millis(100)).await;
}
