//! What this server remembers of the attempts it handed to remote workers: the few facts the
//! history needs when their outcomes come back (queue, kind, when the job was due and when the
//! attempt started), so `/v1/workers/finish` records them without reading the jobs again.
//!
//! Only a cache: an attempt it does not hold (claimed through another node, forgotten because
//! the worker never reported back, or dropped when full) is read from the store as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mend::rollout::RouteState;
use mend::JobRow;
use uuid::Uuid;

/// Attempts remembered at most; past it, entries older than [`FORGET_AFTER`] go, and if
/// that frees nothing new claims are not remembered (their finish reads the store).
const CAPACITY: usize = 100_000;

/// An attempt whose outcome has not come back after this long is assumed lost (its lease ran
/// out long ago and the rescuer handed the job on): forgetting it bounds the memory a dead
/// worker can leave behind.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// Routes read from the store: when, at which count of changes, and what they were.
type CachedRoutes = (Instant, u64, Arc<Vec<RouteState>>);

/// Counts the store's "routing changed" wake-ups into `changes` while its owner lives.
async fn count_changes(changed: Arc<tokio::sync::Notify>, changes: std::sync::Weak<AtomicU64>) {
    let mut heard = Box::pin(changed.notified());
    heard.as_mut().enable();
    loop {
        heard.as_mut().await;
        // The next wake-up is armed before this one is counted, so none falls between two.
        heard = Box::pin(changed.notified());
        heard.as_mut().enable();
        match changes.upgrade() {
            Some(c) => c.fetch_add(1, Ordering::AcqRel),
            None => return,
        };
    }
}

/// The facts of one claimed attempt that its outcome's history entry needs.
#[derive(Debug, Clone)]
pub(crate) struct ClaimFacts {
    /// The job's queue.
    pub(crate) queue: String,
    /// The job's kind.
    pub(crate) kind: String,
    /// When it was due: the later of its run_at and its creation.
    pub(crate) due: DateTime<Utc>,
    /// When this attempt started.
    pub(crate) started: Option<DateTime<Utc>>,
    /// The handler version a rollout routed it to.
    pub(crate) version: Option<String>,
    /// When this server remembered it (for [`FORGET_AFTER`]).
    at: Instant,
}

/// Attempts handed to remote workers, by (job, attempt).
#[derive(Debug, Default)]
pub struct RemoteClaims {
    held: Mutex<HashMap<(Uuid, i32), ClaimFacts>>,
    /// The stored rollouts' routes, read at most once per [`ROUTES_FOR`], with the
    /// [`changes`](Self::changes) count they were read at.
    routes: Mutex<Option<CachedRoutes>>,
    /// How many times the store said routing changed: a cached read from before the latest
    /// change is not used.
    changes: Arc<AtomicU64>,
    /// The task that counts [`changes`](Self::changes), started at the first read (none on
    /// a store that cannot tell); stopped when this is dropped.
    following: OnceLock<Option<tokio::task::AbortHandle>>,
}

impl Drop for RemoteClaims {
    fn drop(&mut self) {
        if let Some(Some(task)) = self.following.get() {
            task.abort();
        }
    }
}

/// How long remote claims reuse the routes read from the store: a cut-off reaches remote
/// workers within this where the store cannot tell this server of it (SQLite with the
/// change made in another process), as it reaches such nodes within a heartbeat.
const ROUTES_FOR: Duration = Duration::from_secs(1);

impl RemoteClaims {
    /// The routes in force, read from the store when the last read is older than
    /// [`ROUTES_FOR`] or the store said routing changed since (a failed read keeps the last
    /// ones).
    pub(crate) async fn routes(
        &self,
        store: &dyn mend::Store,
    ) -> Result<Arc<Vec<RouteState>>, mend::StoreError> {
        self.following.get_or_init(|| {
            store.routes_wakeup().map(|changed| {
                tokio::spawn(count_changes(changed, Arc::downgrade(&self.changes))).abort_handle()
            })
        });
        let seen = self.changes.load(Ordering::Acquire);
        if let Ok(cached) = self.routes.lock() {
            if let Some((at, read_at, routes)) = cached.as_ref() {
                if at.elapsed() < ROUTES_FOR && *read_at == seen {
                    return Ok(routes.clone());
                }
            }
        }
        let fresh = Arc::new(store.rollout_routes().await?);
        if let Ok(mut cached) = self.routes.lock() {
            *cached = Some((Instant::now(), seen, fresh.clone()));
        }
        Ok(fresh)
    }

    /// Drops the cached routes: a rollout was changed through this server, and its remote
    /// workers obey from their next claim on (a read already in flight may still put the old
    /// routes back, for at most [`ROUTES_FOR`]).
    pub(crate) fn forget_routes(&self) {
        if let Ok(mut cached) = self.routes.lock() {
            *cached = None;
        }
    }

    /// Remembers the attempts of freshly claimed `jobs`.
    pub(crate) fn remember(&self, jobs: &[JobRow]) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        if held.len() + jobs.len() > CAPACITY {
            let now = Instant::now();
            held.retain(|_, f| now.duration_since(f.at) < FORGET_AFTER);
        }
        let at = Instant::now();
        for job in jobs {
            if held.len() >= CAPACITY {
                break;
            }
            held.insert(
                (job.id, job.attempt),
                ClaimFacts {
                    queue: job.queue.clone(),
                    kind: job.kind.clone(),
                    due: job.run_at.max(job.created_at),
                    started: job.attempted_at,
                    version: job.version.clone(),
                    at,
                },
            );
        }
    }

    /// Takes the facts of the given attempts out: those it holds, and the ones it does not
    /// (to be read from the store).
    pub(crate) fn take(
        &self,
        attempts: impl IntoIterator<Item = (Uuid, i32)>,
    ) -> (HashMap<Uuid, ClaimFacts>, Vec<Uuid>) {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        let Ok(mut held) = self.held.lock() else {
            return (found, attempts.into_iter().map(|(id, _)| id).collect());
        };
        for key in attempts {
            match held.remove(&key) {
                Some(f) => {
                    found.insert(key.0, f);
                }
                None => missing.push(key.0),
            }
        }
        (found, missing)
    }

    /// The facts of a job read from the store (for attempts this server did not remember).
    pub(crate) fn facts_of(job: &JobRow) -> ClaimFacts {
        ClaimFacts {
            queue: job.queue.clone(),
            kind: job.kind.clone(),
            due: job.run_at.max(job.created_at),
            started: job.attempted_at,
            version: job.version.clone(),
            at: Instant::now(),
        }
    }

    /// How many attempts it holds (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.lock().map(|h| h.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn job(attempt: i32) -> JobRow {
        let mut row = mend::NewJob::new("k", serde_json::json!({})).into_row(
            mend::JobState::Running,
            Utc::now(),
            Utc::now(),
        );
        row.attempt = attempt;
        row.attempted_at = Some(Utc::now());
        row
    }

    #[test]
    fn an_attempt_is_taken_once_and_only_by_its_own_number() {
        let claims = RemoteClaims::default();
        let a = job(1);
        claims.remember(std::slice::from_ref(&a));
        // Another attempt of the same job is not this one.
        let (found, missing) = claims.take([(a.id, 2)]);
        assert!(found.is_empty());
        assert_eq!(missing, [a.id]);
        let (found, missing) = claims.take([(a.id, 1)]);
        assert_eq!(found[&a.id].kind, "k");
        assert_eq!(found[&a.id].started, a.attempted_at);
        assert!(missing.is_empty());
        let (found, _) = claims.take([(a.id, 1)]);
        assert!(found.is_empty(), "taken once");
        assert_eq!(claims.len(), 0);
    }

    #[test]
    fn it_never_holds_more_than_its_capacity() {
        let claims = RemoteClaims::default();
        let jobs: Vec<JobRow> = (0..CAPACITY + 10).map(|_| job(1)).collect();
        claims.remember(&jobs);
        assert_eq!(claims.len(), CAPACITY);
        // Full of fresh entries: a new claim is not remembered, and its finish reads the store.
        let extra = job(1);
        claims.remember(std::slice::from_ref(&extra));
        assert_eq!(claims.take([(extra.id, 1)]).1, [extra.id]);
    }
}
