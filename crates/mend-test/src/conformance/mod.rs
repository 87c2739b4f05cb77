//! The store conformance checks. Each takes a fresh, empty, migrated store and panics with a
//! clear message when the backend breaks the contract of `mend::store::Store`. One file per
//! concern (as River's `riverdrivertest`); the helpers they share live here.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mend::job::{AttemptError, ErrorKind, JobRow, JobState, NewJob};
use mend::store::{
    CancelParams, ClaimParams, CompleteParams, DeadNodesParams, ExtendLeasesParams, Fence,
    HeartbeatNodeParams, HeldJob, ListParams, NodeInfo, Outcome, OutcomeKind, RescueParams,
    RetryParams, Store,
};
use serde_json::json;
use uuid::Uuid;

mod claims;
mod cron;
mod dashboard;
mod doctor;
mod durable;
mod history;
mod inserts;
mod leases;
mod limits;
mod maintenance;
mod nodes;
mod operator;
mod outcomes;
mod reads;
mod rescue;
mod rollouts;
mod unique;

pub use claims::*;
pub use cron::*;
pub use dashboard::*;
pub use doctor::*;
pub use durable::*;
pub use history::*;
pub use inserts::*;
pub use leases::*;
pub use limits::*;
pub use maintenance::*;
pub use nodes::*;
pub use operator::*;
pub use outcomes::*;
pub use reads::*;
pub use rescue::*;
pub use rollouts::*;
pub use unique::*;

const OWNER: &str = "node-a";

fn job(kind: &str) -> NewJob {
    NewJob::new(kind, json!({"n": 1}))
}

fn claim_params(queue: &str, limit: usize, owner: &str) -> ClaimParams {
    ClaimParams {
        queue: queue.into(),
        kinds: vec![],
        limit,
        lease_owner: owner.into(),
        lease_duration: Duration::from_secs(30),
        now: Utc::now(),
        routes: Vec::new(),
        ahead: 0,
    }
}

async fn claim(store: &Arc<dyn Store>, queue: &str, limit: usize) -> Vec<JobRow> {
    store
        .claim(claim_params(queue, limit, OWNER))
        .await
        .unwrap()
}

async fn get(store: &Arc<dyn Store>, id: Uuid) -> JobRow {
    store.get(id).await.unwrap().expect("job exists")
}

/// Inserts `n` jobs of kind `k` on the default queue.
async fn insert_k(store: &Arc<dyn Store>, n: usize) -> Vec<JobRow> {
    store
        .insert_many((0..n).map(|_| job("k")).collect())
        .await
        .unwrap()
}

/// Asks now to cancel `ids`; the jobs found, as they are afterwards.
async fn cancel_now(store: &Arc<dyn Store>, ids: Vec<Uuid>) -> Vec<JobRow> {
    store
        .cancel(CancelParams {
            ids,
            now: Utc::now(),
        })
        .await
        .unwrap()
}

/// Retries `ids` now; the jobs found, as they are afterwards.
async fn retry_now(store: &Arc<dyn Store>, ids: Vec<Uuid>) -> Vec<JobRow> {
    store
        .retry(RetryParams {
            ids,
            now: Utc::now(),
        })
        .await
        .unwrap()
}

fn err(attempt: i32, kind: ErrorKind, message: &str) -> AttemptError {
    AttemptError {
        attempt,
        kind,
        message: message.into(),
        at: DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap(),
        version: None,
        given_back: false,
    }
}

/// Pauses (`true`) or resumes `queue` now.
fn pause(queue: &str, paused: bool) -> mend::store::SetQueuePausedParams {
    mend::store::SetQueuePausedParams {
        queue: queue.into(),
        paused,
        now: Utc::now(),
    }
}

fn outcome(job: &JobRow, kind: OutcomeKind) -> Outcome {
    Outcome {
        fence: Fence::new(
            job.id,
            job.attempt,
            job.lease_owner.clone().expect("claimed job has an owner"),
        ),
        kind,
        cleanups: vec![],
    }
}

async fn complete(store: &Arc<dyn Store>, outcomes: Vec<Outcome>) -> mend::store::CompleteResult {
    store
        .complete_many(CompleteParams {
            outcomes,
            now: Utc::now(),
        })
        .await
        .unwrap()
}

fn assert_moved(before: JobState, after: JobState) {
    assert!(
        before == after || before.can_move_to(after),
        "illegal transition {before} -> {after}"
    );
}
