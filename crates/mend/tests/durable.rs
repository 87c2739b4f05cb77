//! Durable cleanups (`ctx.defer_durable`) in a live process: written down before the work,
//! run last-registered first when the attempt fails, panics, times out, is cancelled or is
//! stopped by shutdown, dropped when it completes; one that keeps failing stops the job with
//! a clear error instead of being lost. Staged files and writes committed with the
//! completion, in a live process. (Across `kill -9`: `crates/mend-test/tests/durable_crash.rs`
//! and `transactional.rs`.)

#![expect(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mend::{CleanupArgs, ErrorKind, JobArgs, JobContext, JobError, JobState, Registry};
use mend_test::ending::Ending;
use mend_test::env::{files_in, Env};
use mend_test::sync::Log;
use serde::{Deserialize, Serialize};

mend_test::job_args!(struct Work { ending: Ending } = "durable_work", max_attempts = 1);

#[derive(Serialize, Deserialize)]
struct Undo {
    tag: String,
}
impl CleanupArgs for Undo {
    const NAME: &'static str = "undo";
}

/// How cleanup `b` behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Broken {
    No,
    Fails,
    Panics,
}

fn registry(log: &Log<String>, broken: Broken) -> Registry {
    let mut registry = Registry::new();
    let undo_log = log.clone();
    registry.register_cleanup(move |u: Undo| {
        let log = undo_log.clone();
        async move {
            if u.tag == "b" && broken != Broken::No {
                log.push("b failed".into());
                if broken == Broken::Panics {
                    panic!("the cleanup blew up");
                }
                return Err("the disk is gone".to_owned());
            }
            log.push(u.tag);
            Ok(())
        }
    });
    registry.register_fn(move |ctx: JobContext, w: Work| async move {
        ctx.defer_durable(&Undo { tag: "a".into() }).await?;
        ctx.defer_durable(&Undo { tag: "b".into() }).await?;
        w.ending.run().await
    });
    registry
}

async fn run(ending: Ending, broken: Broken) -> (Vec<String>, mend::JobRow) {
    let env = Env::new().await;
    let log = Log::new();
    let mut job = Work { ending }.to_new_job().expect("encode");
    if matches!(ending, Ending::Hang) {
        job = job.with_timeout(Duration::from_millis(100));
    }
    let (row, _) = env.run_to_end(registry(&log, broken), 2, |_| {}, job).await;
    (log.snapshot(), row)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_cleanups_run_lifo_when_the_attempt_fails_panics_or_times_out() {
    for ending in [Ending::Err, Ending::Panic, Ending::Hang] {
        let (log, job) = run(ending, Broken::No).await;
        assert_eq!(log, ["b", "a"], "{ending:?}: last registered first");
        assert_eq!(job.state, JobState::Discarded, "{ending:?}");
        assert!(job.pending_cleanups.is_empty(), "{ending:?}: {job:?}");
        let runs = job.timeline.iter().filter(|e| e.event == "cleanup").count();
        assert_eq!(
            runs, 2,
            "{ending:?}: each run is in the timeline: {:?}",
            job.timeline
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_cleanups_are_dropped_when_the_attempt_completes() {
    let (log, job) = run(Ending::Ok, Broken::No).await;
    assert!(log.is_empty(), "{log:?}");
    assert_eq!(job.state, JobState::Completed);
    assert!(job.pending_cleanups.is_empty(), "{job:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanup_that_keeps_failing_stops_the_job_and_stays_written_down() {
    for (broken, why) in [
        (Broken::Fails, "the disk is gone"),
        (Broken::Panics, "the cleanup blew up"),
    ] {
        check_broken_cleanup(broken, why).await;
    }
}

async fn check_broken_cleanup(broken: Broken, why: &str) {
    let env = Env::new().await;
    let ran = Log::new();
    let new = Work {
        ending: Ending::Err,
    }
    .to_new_job()
    .expect("encode");
    let (job, _) = env.run_to_end(registry(&ran, broken), 2, |_| {}, new).await;
    let log = ran.snapshot();
    assert_eq!(
        log,
        ["b failed", "b failed", "b failed", "a"],
        "tried three times; the remaining cleanup still ran"
    );
    assert_eq!(job.state, JobState::Discarded);
    let last = job.errors.last().expect("an error");
    assert_eq!(last.kind, ErrorKind::Error);
    assert!(last.message.contains("cleanup failed"), "{}", last.message);
    assert!(last.message.contains(why), "{}", last.message);
    let pending: Vec<(&str, u32)> = job
        .pending_cleanups
        .iter()
        .map(|c| (c.name.as_str(), c.seq))
        .collect();
    assert_eq!(
        pending,
        [("undo", 2)],
        "only the failing one (b) stays listed, for a person"
    );
    // The failure is also an event, which `mend doctor` counts per cleanup.
    let now = chrono::Utc::now();
    let events = env
        .store
        .events(mend::stats::EventsParams {
            since: now - chrono::Duration::minutes(5),
            until: now + chrono::Duration::minutes(1),
            kinds: vec![mend::stats::event_kind::CLEANUP_FAILED.into()],
            limit: 10,
        })
        .await
        .expect("read events");
    assert_eq!(events.len(), 1, "{events:?}");
    let d = &events[0].detail;
    assert_eq!(d["cleanup"], "undo", "{d}");
    assert_eq!(d["job"], job.id.to_string(), "{d}");
    assert_eq!(d["tries"], 3, "{d}");
    assert!(d["error"].as_str().is_some_and(|e| e.contains(why)), "{d}");
}

mend_test::job_args!(struct Produce { dir: String, fail: bool } = "produce", max_attempts = 1);

async fn produce(fail: bool) -> (tempfile::TempDir, mend::JobRow) {
    let env = Env::new().await;
    let out = tempfile::tempdir().unwrap();
    let mut registry = Registry::new();
    registry.register_fn(|ctx: JobContext, p: Produce| async move {
        let temp = ctx
            .stage_file(std::path::Path::new(&p.dir).join("report.csv"))
            .await?;
        std::fs::write(&temp, "a,b\n1,2\n").map_err(|e| JobError::retry(e.to_string()))?;
        if p.fail {
            return Err(JobError::retry("the report is wrong"));
        }
        Ok(())
    });
    let job = Produce {
        dir: out.path().to_string_lossy().into_owned(),
        fail,
    }
    .to_new_job()
    .unwrap();
    let (row, _) = env.run_to_end(registry, 1, |_| {}, job).await;
    (out, row)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_file_is_moved_into_place_when_the_attempt_completes() {
    let (out, job) = produce(false).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(
        files_in(out.path()),
        ["report.csv"],
        "exactly the final file, no temp"
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("report.csv")).unwrap(),
        "a,b\n1,2\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_file_is_removed_when_the_attempt_fails() {
    let (out, job) = produce(true).await;
    assert_eq!(job.state, JobState::Discarded);
    assert!(
        files_in(out.path()).is_empty(),
        "{:?}",
        files_in(out.path())
    );
    assert!(job.pending_cleanups.is_empty());
}

mend_test::job_args!(struct Record { bad_sql: bool } = "record", max_attempts = 1);

async fn record(bad_sql: bool) -> (Env, mend::JobRow) {
    let env = Env::new().await;
    let db = env.dir.path().join("mend.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE effects (job_id TEXT NOT NULL)")
        .unwrap();
    let mut registry = Registry::new();
    registry.register_fn(|ctx: JobContext, r: Record| async move {
        let id = ctx.id().to_string();
        let table = if r.bad_sql {
            "no_such_table"
        } else {
            "effects"
        };
        ctx.commit_with_completion(mend_sqlite::effect(move |conn| {
            conn.execute(&format!("INSERT INTO {table} (job_id) VALUES (?1)"), [id])?;
            Ok(())
        }));
        Ok(())
    });
    let job = Record { bad_sql }.to_new_job().unwrap();
    let (row, _) = env.run_to_end(registry, 1, |_| {}, job).await;
    (env, row)
}

fn effects(env: &Env) -> Vec<String> {
    let conn = rusqlite::Connection::open(env.dir.path().join("mend.db")).unwrap();
    let mut stmt = conn.prepare("SELECT job_id FROM effects").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handlers_own_write_commits_with_the_completion() {
    let (env, job) = record(false).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(effects(&env), [job.id.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_leaves_neither_it_nor_the_completion() {
    let (env, job) = record(true).await;
    assert_eq!(
        job.state,
        JobState::Discarded,
        "out of attempts after the failed commit"
    );
    assert!(effects(&env).is_empty());
    let message = &job.errors.last().unwrap().message;
    assert!(
        message.contains("did not commit with its completion"),
        "{message}"
    );
    assert!(message.contains("no_such_table"), "{message}");
}

/// Starts a blocking job and waits until both durable cleanups are written down.
async fn blocked(env: &Env, log: &Log<String>) -> (mend::WorkerHandle, uuid::Uuid) {
    let worker = env.worker(registry(log, Broken::No), 2, |_| {}).await;
    let id = env
        .insert(
            Work {
                ending: Ending::Block,
            }
            .to_new_job()
            .unwrap(),
        )
        .await
        .id;
    env.wait_for_job(id, "running with both cleanups written down", |j| {
        j.state == JobState::Running && j.pending_cleanups.len() == 2
    })
    .await;
    (worker, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_cleanups_run_lifo_when_the_job_is_cancelled() {
    let env = Env::new().await;
    let log = Log::new();
    let (worker, id) = blocked(&env, &log).await;
    worker.cancel(id).await.unwrap();
    let job = env.wait_for_state(id, JobState::Cancelled).await;
    assert_eq!(log.snapshot(), ["b", "a"]);
    assert!(job.pending_cleanups.is_empty(), "{job:?}");
    worker.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_cleanups_run_lifo_when_shutdown_passes_its_deadline() {
    let env = Env::new().await;
    let log = Log::new();
    let (worker, id) = blocked(&env, &log).await;
    let report = worker.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.released, 1);
    assert_eq!(log.snapshot(), ["b", "a"]);
    let job = env.job(id).await;
    assert_eq!(
        job.state,
        JobState::Available,
        "released without using an attempt"
    );
    assert!(job.pending_cleanups.is_empty(), "{job:?}");
}
