//! Watching the drill as it runs: the finished/completed counts behind the progress bar, and
//! how long each killed node's jobs took to be rescued and to run again. It only reads the
//! store; it never changes a job.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mend::store::{ListParams, Store};
use mend::{JobRow, JobState};

use super::report::KillRecord;
use crate::duration::as_millis as ms;

/// How long one kill's rescue is watched before it counts as never rescued.
pub(super) const RESCUE_LIMIT: Duration = Duration::from_secs(120);

/// Counts shared by the watcher and the fault loop.
#[derive(Default)]
pub(super) struct Watch {
    pub(super) finished: AtomicU64,
    pub(super) completed: AtomicU64,
}

/// The progress line on stderr: jobs finished out of `jobs`, and what the drill is doing.
pub(super) fn progress_bar(jobs: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(jobs as u64),
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed:>4} [{bar:30}] {pos}/{len} jobs finished · {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Keeps the finished/completed counts and the progress bar current.
pub(super) async fn watch_counts(
    store: Arc<dyn Store>,
    queue: String,
    watch: Arc<Watch>,
    bar: indicatif::ProgressBar,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Ok(counts) = store.queue_counts().await {
            let (mut finished, mut completed) = (0, 0);
            for c in counts.iter().filter(|c| c.queue == queue) {
                if c.state.is_final() {
                    finished += c.count;
                }
                if c.state == JobState::Completed {
                    completed += c.count;
                }
            }
            watch.finished.store(finished, Ordering::Relaxed);
            watch.completed.store(completed, Ordering::Relaxed);
            bar.set_position(finished);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Watches a killed node's jobs until they are rescued and running again (or finished).
pub(super) async fn measure_rescue(
    store: Arc<dyn Store>,
    queue: String,
    node_id: String,
    mut held: Option<HashSet<uuid::Uuid>>,
    killed: Instant,
    at_ms: u64,
    node: usize,
) -> KillRecord {
    let mut recovered: HashSet<uuid::Uuid> = HashSet::new();
    let mut rescue_ms = None;
    while killed.elapsed() < RESCUE_LIMIT {
        let running = match running_jobs(store.as_ref(), &queue).await {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let elapsed = ms(killed.elapsed());
        let owned: HashSet<uuid::Uuid> = running
            .iter()
            .filter(|j| j.lease_owner.as_deref() == Some(node_id.as_str()))
            .map(|j| j.id)
            .collect();
        let held = held.get_or_insert_with(|| owned.clone());
        if held.is_empty() {
            return KillRecord {
                at_ms,
                node,
                held: 0,
                rescue_ms: None,
                recover_ms: None,
            };
        }
        if rescue_ms.is_none() && owned.is_empty() {
            rescue_ms = Some(elapsed);
        }
        let by_others: HashMap<uuid::Uuid, &JobRow> = running
            .iter()
            .filter(|j| j.lease_owner.as_deref() != Some(node_id.as_str()))
            .map(|j| (j.id, j))
            .collect();
        for id in held.iter() {
            if recovered.contains(id) {
                continue;
            }
            let back = by_others.contains_key(id)
                || (!owned.contains(id)
                    && matches!(store.get(*id).await, Ok(Some(j)) if j.state.is_final()));
            if back {
                recovered.insert(*id);
            }
        }
        if rescue_ms.is_some() && recovered.len() == held.len() {
            return KillRecord {
                at_ms,
                node,
                held: held.len(),
                rescue_ms,
                recover_ms: Some(elapsed),
            };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    KillRecord {
        at_ms,
        node,
        held: held.map_or(0, |h| h.len()),
        rescue_ms,
        recover_ms: None,
    }
}

/// The run's jobs in `running`, up to one page.
pub(super) async fn running_jobs(
    store: &dyn Store,
    queue: &str,
) -> mend::store::Result<Vec<JobRow>> {
    Ok(store
        .list(ListParams {
            queue: Some(queue.to_owned()),
            states: vec![JobState::Running],
            limit: mend::store::MAX_PAGE,
            ..Default::default()
        })
        .await?
        .jobs)
}
