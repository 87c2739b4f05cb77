//! `kill -9` of a real worker process mid-job: after a restart every job is rescued (error kind
//! `lost`, counted as an attempt) and completed exactly once; nothing is lost. The same holds
//! for jobs the process had claimed ahead and that were waiting for a slot when it died.

use std::time::Duration;

use mend::{ErrorKind, JobState};
use mend_test::env::Env;
use mend_test::wait::poll;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_job_then_restart_loses_nothing_and_completes_each_job_once() {
    let env = Env::new().await;
    // The first four (claimed first: same priority, earlier run_at/id) take long enough on
    // their first attempt to be killed mid-job; retries and the last two are quick.
    let mut jobs = env.enqueue(4, 30_000, 50).await;
    jobs.extend(env.enqueue(2, 50, 50).await);
    let mut child = env.spawn(&["--concurrency", "4"]);
    env.wait_for("4 jobs running", Duration::from_secs(10), |j| {
        j.iter().filter(|j| j.state == JobState::Running).count() == 4
    })
    .await;
    env.wait_ledger("start", 4, Duration::from_secs(10)).await;
    let started: Vec<String> = env
        .ledger()
        .into_iter()
        .filter(|l| l.starts_with("start"))
        .collect();
    assert_eq!(started.len(), 4, "{started:?}");

    child.kill9(); // SIGKILL
    let after_kill = env.jobs().await;
    assert_eq!(
        after_kill
            .iter()
            .filter(|j| j.state == JobState::Running)
            .count(),
        4,
        "the dead process's jobs are still marked running until someone rescues them"
    );
    assert!(
        !env.ledger()
            .iter()
            .any(|l| l.starts_with("cleanup") || l.starts_with("done")),
        "nothing ran after SIGKILL (no in-memory cleanup can)"
    );

    let mut child = env.spawn(&["--concurrency", "4"]);
    let done = env
        .wait_for("all jobs completed", Duration::from_secs(20), |j| {
            j.len() == 6 && j.iter().all(|j| j.state == JobState::Completed)
        })
        .await;
    for job in &done {
        let was_killed = started.iter().any(|l| l.contains(&job.id.to_string()));
        if was_killed {
            assert_eq!(job.attempt, 2, "lost attempt counts: {job:?}");
            assert_eq!(job.errors.len(), 1);
            assert_eq!(job.errors[0].kind, ErrorKind::Lost);
            assert_eq!(job.errors[0].attempt, 1);
        } else {
            assert_eq!(job.attempt, 1, "{job:?}");
            assert!(job.errors.is_empty());
        }
        assert_eq!(
            env.ledger_count("done", job.id),
            1,
            "job {} completed exactly once",
            job.id
        );
    }
    assert_eq!(jobs.len(), done.len());

    child.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_killing_its_worker_is_quarantined() {
    let env = Env::new().await;
    // Every attempt takes forever, and every time we kill the worker mid-attempt.
    let jobs = env.enqueue(1, 60_000, 60_000).await;
    for round in 1..=3 {
        let mut child = env.spawn(&["--concurrency", "1"]);
        env.wait_for(
            &format!("attempt {round} running"),
            Duration::from_secs(10),
            |j| j[0].state == JobState::Running && j[0].attempt == round,
        )
        .await;
        env.wait_ledger("start", round as usize, Duration::from_secs(10))
            .await;
        child.kill9();
    }
    // The next worker to start rescues it a third time and quarantines it instead of running it.
    let mut child = env.spawn(&["--concurrency", "1"]);
    let j = env
        .wait_for("quarantine", Duration::from_secs(10), |j| {
            j[0].state == JobState::Discarded
        })
        .await;
    assert_eq!(j[0].id, jobs[0].id);
    assert_eq!(j[0].attempt, 3);
    assert_eq!(j[0].consecutive_lost(), 3);
    assert!(
        j[0].errors[2].message.contains("quarantined"),
        "{}",
        j[0].errors[2].message
    );
    // A window for a wrong fourth run to show up: nothing observable marks its absence.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.ledger_count("start", jobs[0].id),
        3,
        "not run a fourth time"
    );
    child.stop();
}

/// Jobs claimed ahead and waiting for a slot when the process is killed are rescued like the
/// running ones: each is retried once as `lost` and completes exactly once, and none of them
/// had started before the kill. Four slots: quick jobs set a pace that claims ahead, then four
/// slow jobs hold every slot while the jobs claimed behind them wait, and the kill comes
/// then. Several such groups follow one another, so a loaded machine that misses one moment
/// (a job waits at most a second before it goes back unstarted) gets another.
async fn jobs_waiting_claimed_ahead_survive_a_sigkill(env: Env) {
    // 924 jobs: `Env::jobs` reads up to a thousand.
    let mut jobs = Vec::new();
    let mut slow_ids = Vec::new();
    for _ in 0..6 {
        jobs.extend(env.enqueue(150, 0, 0).await);
        let slow = env.enqueue(4, 2_000, 0).await;
        slow_ids.extend(slow.iter().map(|j| j.id));
        jobs.extend(slow);
    }
    let mut child = env.spawn(&["--concurrency", "4"]);
    let started = |ledger: &[String], id: uuid::Uuid| {
        let p = format!("start {id} ");
        ledger.iter().any(|l| l.starts_with(&p))
    };
    let seen_waiting: Vec<uuid::Uuid> = poll(
        "jobs waiting claimed ahead",
        Duration::from_secs(60),
        || async {
            let running = env.jobs().await;
            // Read after the rows: a job it shows unstarted had not started when they were read.
            let ledger = env.ledger();
            let slow_running = slow_ids
                .iter()
                .filter(|id| {
                    started(&ledger, **id)
                        && !ledger.iter().any(|l| l.starts_with(&format!("done {id} ")))
                })
                .count();
            let waiting: Vec<uuid::Uuid> = running
                .iter()
                .filter(|j| j.state == JobState::Running && !started(&ledger, j.id))
                .map(|j| j.id)
                .collect();
            if slow_running == 4 && !waiting.is_empty() {
                Ok(waiting)
            } else {
                Err(format!(
                    "{slow_running} slow jobs running, {} waiting",
                    waiting.len()
                ))
            }
        },
    )
    .await;
    child.kill9();
    // Still leased to the dead process: the slow jobs, the waiting ones (unless one went
    // back at its wait limit just before the kill), and quick ones whose outcome was not
    // written yet.
    let running_at_kill: Vec<uuid::Uuid> = env
        .jobs()
        .await
        .into_iter()
        .filter(|j| j.state == JobState::Running)
        .map(|j| j.id)
        .collect();
    let ledger = env.ledger();
    let died_waiting: Vec<uuid::Uuid> = seen_waiting
        .into_iter()
        .filter(|id| running_at_kill.contains(id) && !started(&ledger, *id))
        .collect();
    assert!(
        !died_waiting.is_empty(),
        "no job was waiting claimed ahead at the kill"
    );

    // Enough slots for the slow jobs still queued to run side by side.
    let mut child = env.spawn(&["--concurrency", "32"]);
    let done = env
        .wait_for("all jobs completed", Duration::from_secs(60), |j| {
            j.len() == jobs.len() && j.iter().all(|j| j.state == JobState::Completed)
        })
        .await;
    child.stop();
    for job in &done {
        let runs = env.ledger_count("done", job.id);
        if running_at_kill.contains(&job.id) {
            assert_eq!(job.attempt, 2, "the lost attempt counts: {job:?}");
            assert_eq!(job.errors.len(), 1, "{job:?}");
            assert_eq!(job.errors[0].kind, ErrorKind::Lost);
            assert_eq!(job.errors[0].attempt, 1);
            // One whose handler had returned before the kill runs again (at least once).
            assert!(runs >= 1, "job {} completed", job.id);
        } else {
            assert_eq!(job.attempt, 1, "{job:?}");
            assert!(job.errors.is_empty(), "{job:?}");
            assert_eq!(runs, 1, "job {} ran once", job.id);
        }
    }
    // A job that died waiting had never run: it ran once, as attempt 2.
    let ledger = env.ledger();
    for id in &died_waiting {
        let starts: Vec<&String> = ledger
            .iter()
            .filter(|l| l.starts_with(&format!("start {id} ")))
            .collect();
        assert_eq!(
            starts,
            [&format!("start {id} 2")],
            "job {id} started once, after the kill"
        );
        assert_eq!(env.ledger_count("done", *id), 1, "job {id} completed once");
    }
}

mend_test::on_both_backends!(jobs_waiting_claimed_ahead_survive_a_sigkill);
