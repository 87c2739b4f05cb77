//! The invariants a drill must keep, checked once the drill is over: no job lost, every job
//! finished, effects exactly once, staged files promoted once, durable cleanups run, kills
//! healed, nodes stopping on SIGTERM, jobs given up only when out of attempts, the database
//! restart healed (the canaries' are `canary`'s). It reads; it repairs nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use anyhow::Context;
use mend::store::{ListParams, Store};
use mend::{ErrorKind, JobRow, JobState};

use super::args::Drill;
use super::report::{Invariant, KillRecord, RestartRecord};
use crate::drill::{self, DrillDir};

/// Every job of the run's queue.
pub(super) async fn all_jobs(store: &dyn Store, queue: &str) -> anyhow::Result<Vec<JobRow>> {
    let mut jobs = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list(ListParams {
                queue: Some(queue.to_owned()),
                before,
                limit: mend::store::MAX_PAGE,
                ..Default::default()
            })
            .await
            .context("reading the drill's jobs")?;
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(c) => before = Some(c),
            None => return Ok(jobs),
        }
    }
}

/// The invariants' verdicts and the counts the report shows.
pub(super) struct Checked {
    pub(super) states: BTreeMap<String, usize>,
    pub(super) attempts: BTreeMap<String, usize>,
    pub(super) invariants: Vec<Invariant>,
}

/// Lists up to five examples.
fn examples<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let all: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    let shown = all.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if all.len() > 5 {
        format!("{shown}, … ({} in all)", all.len())
    } else {
        shown
    }
}

/// Checks every invariant against the store, the ledger and the drill's files.
pub(super) async fn check(
    d: &Drill,
    store: &Arc<dyn Store>,
    dir: &DrillDir,
    enqueued: &[uuid::Uuid],
    kills: &[KillRecord],
    stuck_nodes: &[String],
    restart: Option<&RestartRecord>,
) -> anyhow::Result<Checked> {
    let jobs = all_jobs(store.as_ref(), &d.queue).await?;
    let by_id: HashMap<uuid::Uuid, &JobRow> = jobs.iter().map(|j| (j.id, j)).collect();
    let mut inv = Vec::new();
    let mut push = |name: &'static str, bad: Vec<String>, what: &str, good: String| {
        inv.push(Invariant {
            name,
            ok: bad.is_empty(),
            detail: if bad.is_empty() {
                good
            } else {
                format!("{} {what}: {}", bad.len(), examples(bad))
            },
        });
    };

    let lost: Vec<String> = enqueued
        .iter()
        .filter(|id| !by_id.contains_key(id))
        .map(|id| id.to_string())
        .collect();
    push(
        "no job lost",
        lost,
        "enqueued jobs are missing",
        format!("all {} enqueued jobs are in the database", enqueued.len()),
    );

    let unfinished: Vec<String> = jobs
        .iter()
        .filter(|j| !j.state.is_final())
        .map(|j| format!("{} ({})", j.id, j.state))
        .collect();
    push(
        "every job terminal",
        unfinished,
        "jobs are not finished (stuck)",
        "every job is completed, discarded or cancelled".into(),
    );

    // Effects: exactly one ledger row per completed job, written by its completing attempt.
    let ledger = drill::read_ledger(&d.database, &d.run).await?;
    let mut rows: HashMap<uuid::Uuid, Vec<i32>> = HashMap::new();
    let mut foreign = Vec::new();
    for (id, attempt) in &ledger {
        match id.parse::<uuid::Uuid>() {
            Ok(id) => rows.entry(id).or_default().push(*attempt),
            Err(_) => foreign.push(id.clone()),
        }
    }
    let completed: Vec<&JobRow> = jobs
        .iter()
        .filter(|j| j.state == JobState::Completed)
        .collect();
    let dup: Vec<String> = rows
        .iter()
        .filter(|(_, a)| a.len() > 1)
        .map(|(id, a)| format!("{id} (attempts {a:?})"))
        .collect();
    push(
        "effects exactly once",
        dup,
        "jobs have more than one ledger row",
        format!("{} ledger rows, none twice", ledger.len()),
    );
    let mut mismatched: Vec<String> = completed
        .iter()
        .filter(|j| rows.get(&j.id).is_none_or(|a| !a.contains(&j.attempt)))
        .map(|j| format!("{} completed without its effect", j.id))
        .collect();
    mismatched.extend(
        rows.keys()
            .filter(|id| by_id.get(id).is_none_or(|j| j.state != JobState::Completed))
            .map(|id| format!("{id} has an effect but is not completed")),
    );
    mismatched.extend(foreign.into_iter().map(|id| format!("unknown job {id:?}")));
    push(
        "effects match completions",
        mismatched,
        "ledger rows and completions disagree",
        format!(
            "{} completed jobs, {} ledger rows, one each, from the completing attempt",
            completed.len(),
            ledger.len()
        ),
    );

    // Files: exactly the completed jobs' outputs, from their completing attempt.
    let mut file_problems = Vec::new();
    let mut outputs = HashSet::new();
    for entry in std::fs::read_dir(dir.out()).context("reading the drill's output directory")? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if drill::is_temporary(&name) {
            file_problems.push(format!("staged file left behind: {name}"));
            continue;
        }
        match drill::output_id(&path).and_then(|id| by_id.get(&id).map(|j| (id, j))) {
            Some((id, j)) if j.state == JobState::Completed => {
                outputs.insert(id);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if text.trim() != format!("{id} attempt {}", j.attempt) {
                    file_problems.push(format!(
                        "{name} holds {:?}, not the completing attempt {}",
                        text.trim(),
                        j.attempt
                    ));
                }
            }
            Some((_, j)) => file_problems.push(format!("{name} promoted for a {} job", j.state)),
            None => file_problems.push(format!("unexpected file {name}")),
        }
    }
    file_problems.extend(
        completed
            .iter()
            .filter(|j| !outputs.contains(&j.id))
            .map(|j| format!("{} completed without its output file", j.id)),
    );
    push(
        "staged files promoted once, temporaries gone",
        file_problems,
        "file problems",
        format!("{} output files, no temporaries", outputs.len()),
    );

    // Durable cleanups: every marker of every attempt removed; none left pending or failed.
    let mut cleanup_problems: Vec<String> = std::fs::read_dir(dir.markers())
        .context("reading the drill's marker directory")?
        .filter_map(|e| e.ok())
        .map(|e| format!("marker left: {}", e.file_name().to_string_lossy()))
        .collect();
    cleanup_problems.extend(
        jobs.iter()
            .filter(|j| !j.pending_cleanups.is_empty())
            .map(|j| {
                format!(
                    "{} still has {} pending cleanups",
                    j.id,
                    j.pending_cleanups.len()
                )
            }),
    );
    cleanup_problems.extend(
        jobs.iter()
            // The executor's words when it stops a job whose cleanups keep failing.
            .filter(|j| {
                j.errors
                    .iter()
                    .any(|e| e.message.starts_with("cleanup failed:"))
            })
            .map(|j| format!("{} stopped by a failing cleanup", j.id)),
    );
    let failed_attempts: usize = jobs.iter().map(|j| j.errors.len()).sum();
    push(
        "durable cleanups ran",
        cleanup_problems,
        "cleanup problems",
        format!("no marker left after {failed_attempts} failed or lost attempts"),
    );

    let unrescued: Vec<String> = kills
        .iter()
        .filter(|k| k.held > 0 && k.recover_ms.is_none())
        .map(|k| {
            format!(
                "kill of node {} at {} ms ({} jobs)",
                k.node, k.at_ms, k.held
            )
        })
        .collect();
    push(
        "every kill healed",
        unrescued,
        "kills whose jobs were not back within 2 minutes",
        format!(
            "{} kills, {} with jobs in flight, all rescued",
            kills.len(),
            kills.iter().filter(|k| k.held > 0).count()
        ),
    );
    push(
        "nodes stop on SIGTERM",
        stuck_nodes.to_vec(),
        "nodes did not stop cleanly",
        "every node drained and exited 0".into(),
    );
    // Drill jobs have attempts to spare and quarantine is off on drill nodes: a job given up
    // on before its last attempt was dropped by mistake.
    let given_up: Vec<String> = jobs
        .iter()
        .filter(|j| {
            j.state != JobState::Completed && j.state.is_final() && j.attempt < j.max_attempts
        })
        .map(|j| {
            let why = j
                .errors
                .last()
                .map_or("no error recorded", |e| e.message.as_str());
            format!("{} {} after {} attempts: {why}", j.id, j.state, j.attempt)
        })
        .collect();
    push(
        "jobs complete unless out of attempts",
        given_up,
        "jobs were given up early",
        format!("{} of {} completed", completed.len(), jobs.len()),
    );
    if let Some(r) = restart {
        let mut bad = Vec::new();
        if !r.command_ok {
            bad.push("the --restart-db command failed".to_owned());
        }
        if r.recover_ms.is_none() {
            bad.push("no job completed within 2 minutes of the restart".to_owned());
        }
        push(
            "database restart healed",
            bad,
            "problems",
            format!(
                "restarted in {} ms; jobs completing again {} ms later",
                r.command_ms,
                r.recover_ms.unwrap_or_default()
            ),
        );
    }

    let mut states = BTreeMap::new();
    for j in &jobs {
        *states.entry(j.state.to_string()).or_default() += 1;
    }
    let mut attempts = BTreeMap::new();
    attempts.insert("ok".to_owned(), completed.len());
    for kind in [
        ErrorKind::Error,
        ErrorKind::Panic,
        ErrorKind::Timeout,
        ErrorKind::Lost,
        ErrorKind::Cancelled,
    ] {
        attempts.insert(
            kind.as_str().to_owned(),
            jobs.iter().map(|j| j.count_errors(kind)).sum(),
        );
    }
    Ok(Checked {
        states,
        attempts,
        invariants: inv,
    })
}
