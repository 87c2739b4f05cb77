//! "Why isn't this job running?": a plain answer computed from the facts the store holds about
//! a job, its queue, the limits and the live nodes. Pure, so every answer is tested from the
//! facts that produce it; the job page gathers the facts and the browser tests produce each
//! situation for real.

use chrono::{DateTime, Utc};
use mend::limits::Hold;
use mend::{JobRow, JobState};

use super::html::between;

/// A node as the answers need it.
#[derive(Debug, Clone)]
pub(crate) struct NodeFact {
    /// Its id (the lease owner of its jobs).
    pub id: String,
    /// The kinds it has handlers for (empty: not recorded).
    pub kinds: Vec<String>,
    /// Last heartbeat.
    pub last_seen: DateTime<Utc>,
    /// Whether it counts as alive.
    pub alive: bool,
}

/// What the answers are computed from.
#[derive(Debug, Clone)]
pub(crate) struct Facts<'a> {
    /// The job.
    pub job: &'a JobRow,
    /// Now.
    pub now: DateTime<Utc>,
    /// Whether the job's queue is paused.
    pub queue_paused: bool,
    /// Every registered node.
    pub nodes: &'a [NodeFact],
    /// Available jobs of the queue claimed before this one, and whether that count was capped.
    pub ahead: Option<(u64, bool)>,
    /// Jobs of the queue running now.
    pub running_in_queue: u64,
    /// The queue's slots: the concurrency of every live node that works it (0: unknown).
    pub slots: u64,
    /// The limits holding it back now.
    pub holds: &'a [Hold],
    /// A node without a heartbeat for this long is dead.
    pub stale_after: chrono::Duration,
}

/// One answer: a headline a person reads first, and what to do or know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Short: what holds the job.
    pub headline: String,
    /// Longer: what it means or what to do.
    pub detail: String,
}

fn answer(headline: impl Into<String>, detail: impl Into<String>) -> Answer {
    Answer {
        headline: headline.into(),
        detail: detail.into(),
    }
}

fn when(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let utc = at.format("%Y-%m-%d %H:%M:%S UTC");
    if at > now {
        format!("{utc} (in {})", between(now, at))
    } else {
        format!("{utc} ({} ago)", between(at, now))
    }
}

/// Whether a live node serves `kind`; `None` when no live node recorded its kinds.
fn served(nodes: &[NodeFact], kind: &str) -> Option<bool> {
    let recorded: Vec<&NodeFact> = nodes
        .iter()
        .filter(|n| n.alive && !n.kinds.is_empty())
        .collect();
    if recorded.is_empty() && nodes.iter().any(|n| n.alive) {
        return None;
    }
    Some(recorded.iter().any(|n| n.kinds.iter().any(|k| k == kind)))
}

fn nobody_serves(f: &Facts<'_>) -> Option<Answer> {
    if served(f.nodes, &f.job.kind) == Some(false) {
        let mut kinds: Vec<&str> = f
            .nodes
            .iter()
            .filter(|n| n.alive)
            .flat_map(|n| n.kinds.iter().map(String::as_str))
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        let live = if kinds.is_empty() {
            "no node is alive".to_owned()
        } else {
            format!("live nodes serve: {}", kinds.join(", "))
        };
        Some(answer(
            format!("No live node serves kind {}.", f.job.kind),
            format!(
                "Start a worker with a handler for {} ({live}). Remote workers that claim over HTTP are not listed as nodes; if one serves this kind, check that it is running.",
                f.job.kind
            ),
        ))
    } else {
        None
    }
}

fn paused(f: &Facts<'_>) -> Option<Answer> {
    f.queue_paused.then(|| {
        answer(
            format!("Its queue {} is paused.", f.job.queue),
            "No job of a paused queue is claimed. Resume the queue on the Queues page (or `mend queues resume`).",
        )
    })
}

/// The answers for `f.job`, most important first; empty when the job is not waiting.
pub(crate) fn why(f: &Facts<'_>) -> Vec<Answer> {
    let job = f.job;
    let mut out = Vec::new();
    match job.state {
        JobState::Scheduled => {
            out.push(answer(
                format!("It is scheduled for {}.", when(job.run_at, f.now)),
                "It becomes available then and is claimed like any other job.",
            ));
            out.extend(paused(f));
            out.extend(nobody_serves(f));
        }
        JobState::Retryable => {
            let last = job.errors.last();
            let failed = match last {
                Some(e) => format!(
                    "Attempt {} failed ({}: {}).",
                    e.attempt,
                    e.kind.as_str(),
                    e.message
                ),
                None => "Its last attempt failed.".to_owned(),
            };
            out.push(answer(
                format!("It waits to retry at {}.", when(job.run_at, f.now)),
                format!(
                    "{failed} It has used {} of {} attempts.",
                    job.attempt, job.max_attempts
                ),
            ));
            out.extend(paused(f));
            out.extend(nobody_serves(f));
        }
        JobState::Available => {
            out.extend(paused(f));
            out.extend(nobody_serves(f));
            for h in f.holds {
                let until = h
                    .until
                    .map(|u| format!(" Next start allowed at {}.", when(u, f.now)))
                    .unwrap_or_default();
                let key = if h.key.is_empty() {
                    String::new()
                } else {
                    format!(" (key {})", h.key)
                };
                out.push(answer(
                    format!("Limit {}{key} holds it: {}.", h.limit, h.reason),
                    format!("It starts when the limit allows.{until}"),
                ));
            }
            if let Some((n, capped)) = f.ahead {
                if n > 0 {
                    let more = if capped { "+" } else { "" };
                    let busy = if f.slots > 0 && f.running_in_queue >= f.slots {
                        format!(
                            "every slot is busy ({} of {} running)",
                            f.running_in_queue, f.slots
                        )
                    } else {
                        format!("{} running now", f.running_in_queue)
                    };
                    out.push(answer(
                        format!("{n}{more} jobs are ahead of it in queue {}; {busy}.", job.queue),
                        "Jobs are claimed by priority, then run_at, then age. Add workers or concurrency to go faster.",
                    ));
                }
            }
            if out.is_empty() {
                out.push(answer(
                    "It is next in line.",
                    "A worker serving its kind should claim it within moments.",
                ));
            }
        }
        JobState::Running => {
            let owner = job.lease_owner.as_deref().unwrap_or("");
            let node = f.nodes.iter().find(|n| n.id == owner);
            let expires = job.lease_expires_at;
            match node {
                Some(n) if !n.alive => {
                    let due = expires
                        .into_iter()
                        .chain([n.last_seen + f.stale_after])
                        .min()
                        .unwrap_or(f.now);
                    out.push(answer(
                        format!(
                            "Its lease holder {owner} died (last heartbeat {}).",
                            when(n.last_seen, f.now)
                        ),
                        format!(
                            "The rescuer hands the job back once the node is declared dead or the lease runs out; rescue is due at {}.",
                            when(due, f.now)
                        ),
                    ));
                }
                _ => {
                    if let Some(exp) = expires.filter(|e| *e < f.now) {
                        out.push(answer(
                            format!("Its lease ran out at {}.", when(exp, f.now)),
                            format!("The holder {owner} stopped renewing it; the rescuer hands the job back on its next pass."),
                        ));
                    }
                }
            }
            if job.cancel_requested {
                out.push(answer(
                    "A cancel was requested.",
                    "The attempt stops at its holder's next heartbeat, then its cleanups run.",
                ));
            }
            if let (Some(t), Some(started)) = (job.timeout_ms, job.attempted_at) {
                let ran = (f.now - started).num_milliseconds();
                if ran > t {
                    out.push(answer(
                        format!(
                            "It has run for {}, past its timeout of {}.",
                            super::html::dur_ms(ran),
                            super::html::dur_ms(t)
                        ),
                        "The holder should have stopped it; if the holder is stuck, its lease runs out and the job is rescued.",
                    ));
                }
            }
        }
        JobState::Completed | JobState::Cancelled | JobState::Discarded => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mend::NewJob;

    fn row(state: JobState) -> JobRow {
        let now = Utc::now();
        let n = NewJob::new("resize", serde_json::json!({}));
        JobRow {
            id: n.id,
            queue: "default".into(),
            kind: "resize".into(),
            args: n.args,
            state,
            priority: 0,
            attempt: 0,
            max_attempts: 25,
            run_at: now,
            created_at: now,
            attempted_at: None,
            finalized_at: None,
            lease_owner: None,
            lease_expires_at: None,
            cancel_requested: false,
            errors: vec![],
            unique_key: None,
            tags: vec![],
            result: None,
            timeout_ms: None,
            trace_parent: None,
            limit_key: None,
            checkpoint: None,
            pending_cleanups: vec![],
            timeline: vec![],
            version: None,
        }
    }

    fn node(id: &str, kinds: &[&str], alive: bool) -> NodeFact {
        NodeFact {
            id: id.into(),
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
            last_seen: Utc::now() - chrono::Duration::seconds(if alive { 1 } else { 120 }),
            alive,
        }
    }

    fn facts<'a>(job: &'a JobRow, nodes: &'a [NodeFact]) -> Facts<'a> {
        Facts {
            job,
            now: Utc::now(),
            queue_paused: false,
            nodes,
            ahead: Some((0, false)),
            running_in_queue: 0,
            slots: 0,
            holds: &[],
            stale_after: chrono::Duration::seconds(30),
        }
    }

    #[test]
    fn a_paused_queue_comes_first() {
        let job = row(JobState::Available);
        let nodes = [node("n1", &["resize"], true)];
        let mut f = facts(&job, &nodes);
        f.queue_paused = true;
        let a = why(&f);
        assert_eq!(a[0].headline, "Its queue default is paused.");
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn no_live_node_serving_the_kind() {
        let job = row(JobState::Available);
        let nodes = [node("n1", &["email"], true), node("n2", &["resize"], false)];
        let a = why(&facts(&job, &nodes));
        assert_eq!(a[0].headline, "No live node serves kind resize.");
        assert!(
            a[0].detail.contains("live nodes serve: email"),
            "{}",
            a[0].detail
        );
        // Nodes that did not record their kinds do not count as "nobody".
        let unknown = [node("n1", &[], true)];
        assert_eq!(
            why(&facts(&job, &unknown))[0].headline,
            "It is next in line."
        );
    }

    #[test]
    fn jobs_ahead_and_limits() {
        let job = row(JobState::Available);
        let nodes = [node("n1", &["resize"], true)];
        let holds = [Hold {
            limit: "per-account".into(),
            key: "acct-1".into(),
            reason: "1 of 1 running".into(),
            until: None,
        }];
        let mut f = facts(&job, &nodes);
        f.ahead = Some((10_000, true));
        f.running_in_queue = 4;
        f.holds = &holds;
        let a = why(&f);
        assert_eq!(
            a[0].headline,
            "Limit per-account (key acct-1) holds it: 1 of 1 running."
        );
        assert_eq!(
            a[1].headline,
            "10000+ jobs are ahead of it in queue default; 4 running now."
        );
    }

    #[test]
    fn scheduled_and_retrying() {
        let mut job = row(JobState::Scheduled);
        job.run_at = Utc::now() + chrono::Duration::minutes(5);
        let nodes = [node("n1", &["resize"], true)];
        assert!(why(&facts(&job, &nodes))[0]
            .headline
            .starts_with("It is scheduled for "));
        job.state = JobState::Retryable;
        job.attempt = 1;
        job.errors.push(mend::AttemptError {
            attempt: 1,
            kind: mend::ErrorKind::Error,
            message: "boom".into(),
            at: Utc::now(),
            version: None,
            given_back: false,
        });
        let a = why(&facts(&job, &nodes));
        assert!(a[0].headline.starts_with("It waits to retry at "));
        assert!(
            a[0].detail.contains("Attempt 1 failed (error: boom)."),
            "{}",
            a[0].detail
        );
    }

    #[test]
    fn a_dead_lease_holder() {
        let mut job = row(JobState::Running);
        job.lease_owner = Some("n2".into());
        job.lease_expires_at = Some(Utc::now() + chrono::Duration::seconds(20));
        let nodes = [
            node("n1", &["resize"], true),
            node("n2", &["resize"], false),
        ];
        let a = why(&facts(&job, &nodes));
        assert!(
            a[0].headline.starts_with("Its lease holder n2 died"),
            "{}",
            a[0].headline
        );
        assert!(a[0].detail.contains("rescue is due at"));
        // A healthy holder: nothing to explain.
        job.lease_owner = Some("n1".into());
        assert!(why(&facts(&job, &nodes)).is_empty());
    }

    #[test]
    fn finished_jobs_need_no_answer() {
        let job = row(JobState::Completed);
        assert!(why(&facts(&job, &[])).is_empty());
    }
}
