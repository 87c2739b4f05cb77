//! A drill from start to end: start the nodes, enqueue the jobs, inflict the planned faults
//! in order, wait for the jobs to settle, stop the nodes, check the invariants and report.
//! Each step is another module's; this one only puts them in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::args::{ChaosArgs, Drill};
use super::canary;
use super::check::check;
use super::cluster::{stop_all, with_application_name, Cluster};
use super::enqueue::enqueue;
use super::faults;
use super::plan::{plan, Event};
use super::report::{print_human, stats, Report};
use super::watch::{progress_bar, watch_counts, Watch};
use crate::drill::{self, DrillDir};
use crate::duration::as_millis as ms;

/// Runs the drill and prints the report; an error when any invariant fails.
pub(crate) async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let d = Drill::new(args)?;
    drill_run(d).await
}

async fn drill_run(d: Drill) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = plan(&d);
    let root = match &d.args.dir {
        // A directory of its own per run: files of an earlier run must not count.
        Some(p) => p.join(&d.run),
        None => std::env::temp_dir().join(format!("mend-chaos-{}", d.run)),
    };
    let dir = DrillDir { root };
    dir.create()?;
    let config = dir.root.join("mend.toml");
    std::fs::write(
        &config,
        "# mend chaos: nodes take all settings from flags\n",
    )?;

    let store = crate::db::open(&d.database, crate::db::OpenOptions::default()).await?;
    drill::create_ledger(&d.database)
        .await
        .context("creating the drill's ledger table")?;
    // Tag the nodes' PostgreSQL connections so cutting them spares everyone else's.
    let tag = format!("mend-chaos-{}", d.run);
    let node_url = if d.postgres {
        with_application_name(&d.database, &tag)
    } else {
        d.database.clone()
    };
    let cluster = Arc::new(Cluster {
        exe: std::env::current_exe().context("finding the mend executable")?,
        node_url,
        queue: d.queue.clone(),
        concurrency: d.args.concurrency,
        dir: dir.clone(),
        config,
        breakage: d.args.break_on_purpose,
        canaries: crate::drill::Canaries {
            bad: d.args.bad_canary,
            good: d.args.good_canary,
        },
        starts: AtomicUsize::new(0),
    });
    let mut nodes = Vec::with_capacity(d.nodes);
    for i in 0..d.nodes {
        nodes.push(cluster.start(i).await?);
    }

    // The canaries roll out before the first job arrives, and the nodes re-read the routes
    // at their next heartbeat: the shares apply from the first job.
    let rollouts = canary::start(&store, &d).await?;
    if !rollouts.is_empty() {
        tokio::time::sleep(canary::ROUTES_TAKEN).await;
    }

    let bar = progress_bar(plan.jobs.len());
    let watch = Arc::new(Watch::default());
    let stop_watch = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(watch_counts(
        store.clone(),
        d.queue.clone(),
        watch.clone(),
        bar.clone(),
        stop_watch.clone(),
    ));

    let total_faults = plan.fault_counts();
    let enqueuer = tokio::spawn(enqueue(
        store.clone(),
        d.queue.clone(),
        d.args.job_timeout,
        plan.jobs,
        d.args.duration.mul_f64(0.9),
        d.args.good_canary,
    ));

    // The faults, in schedule order.
    let mut sigterms = Vec::new();
    let mut terminated = Vec::new();
    let mut restart = None;
    let mut measurements = Vec::new();
    let n_events = plan.events.len();
    for (done, (at, event)) in plan.events.into_iter().enumerate() {
        let now = started.elapsed();
        if at > now {
            tokio::time::sleep(at - now).await;
        }
        bar.set_message(format!("fault {}/{n_events}: {event:?}", done + 1));
        let at_ms = ms(started.elapsed());
        match event {
            Event::Kill(i) => measurements
                .push(faults::kill(&cluster, &mut nodes, i, &store, d.postgres, at_ms).await?),
            Event::Sigterm(i) => {
                sigterms.push(faults::sigterm(&cluster, &mut nodes, i, at_ms).await?);
            }
            Event::Terminate => {
                terminated.push(faults::cut_connections(&d.database, &tag, at_ms, &bar).await);
            }
            Event::RestartDb => {
                let cmd = d.args.restart_db.clone().unwrap_or_default();
                restart = Some(faults::restart_db(&cmd, &watch, at_ms, &bar).await);
            }
        }
    }
    let enqueued_ids = enqueuer.await.context("the enqueuer failed")??;
    let n = enqueued_ids.len() as u64;
    bar.set_message("faults done; waiting for every job to finish".to_string());
    // Faults may have run late (slow restarts): the settle time counts from their end.
    let deadline = (started + d.args.duration).max(Instant::now()) + d.args.settle;
    while watch.finished.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The guard decides on the samples in its window, which outlive the jobs: a good canary
    // still passes its last steps once the jobs are done.
    if !rollouts.is_empty() {
        bar.set_message("waiting for the guard to decide the canaries".to_string());
        // Without new jobs a step can still pass on the samples it has, one per interval;
        // past the last one's time more waiting cannot change anything.
        let steps = u32::try_from(d.canary_steps.len()).unwrap_or(u32::MAX);
        let enough = Instant::now()
            + Duration::from_secs(d.canary_every_secs) * steps
            + Duration::from_secs(2);
        let deadline = deadline.min(enough);
        while !canary::all_decided(&store, &rollouts).await && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut kill_records = Vec::new();
    for m in measurements {
        kill_records.push(m.await.context("a rescue measurement failed")?);
    }
    bar.set_message("stopping the nodes".to_string());
    let mut stuck_nodes: Vec<String> = sigterms
        .iter()
        .filter(|t| !t.exit_ok)
        .map(|t| {
            format!(
                "node {} did not drain and exit 0 after the SIGTERM at {} ms",
                t.node, t.at_ms
            )
        })
        .collect();
    // All at once: each drains in parallel with the others.
    stuck_nodes.extend(stop_all(&mut nodes).await);
    stop_watch.cancel();
    let _ = watcher.await;
    bar.finish_and_clear();

    let mut checked = check(
        &d,
        &store,
        &dir,
        &enqueued_ids,
        &kill_records,
        &stuck_nodes,
        restart.as_ref(),
    )
    .await?;
    let canary = if rollouts.is_empty() {
        None
    } else {
        let (more, report) = canary::check(&store, &rollouts, &d.queue).await?;
        checked.invariants.extend(more);
        Some(report)
    };
    let recover: Vec<u64> = kill_records.iter().filter_map(|k| k.recover_ms).collect();
    let mut mttr_samples = recover.clone();
    if let Some(r) = restart.as_ref().and_then(|r| r.recover_ms) {
        mttr_samples.push(r);
    }
    let report = Report {
        passed: checked.invariants.iter().all(|i| i.ok),
        seed: d.seed,
        backend: if d.postgres { "postgres" } else { "sqlite" },
        database: crate::db::redact(&d.database),
        run: d.run.clone(),
        nodes: d.nodes,
        jobs: enqueued_ids.len(),
        elapsed_ms: ms(started.elapsed()),
        states: checked.states,
        attempts: checked.attempts,
        faults_planned: total_faults,
        time_to_rescue_ms: stats(kill_records.iter().filter_map(|k| k.rescue_ms).collect()),
        time_to_recover_ms: stats(recover),
        mttr_ms: (!mttr_samples.is_empty())
            .then(|| mttr_samples.iter().sum::<u64>() / mttr_samples.len() as u64),
        kills: kill_records,
        sigterms,
        connections_terminated: terminated,
        db_restart: restart,
        canary,
        invariants: checked.invariants,
        dir: dir.root.display().to_string(),
    };
    if d.args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    if !report.passed {
        let failed: Vec<&str> = report
            .invariants
            .iter()
            .filter(|i| !i.ok)
            .map(|i| i.name)
            .collect();
        bail!(
            "the drill failed: {} (seed {}; node logs and files kept in {})",
            failed.join(", "),
            d.seed,
            dir.root.display()
        );
    }
    if d.args.dir.is_none() && !d.args.keep {
        let _ = std::fs::remove_dir_all(&dir.root);
    }
    Ok(())
}
