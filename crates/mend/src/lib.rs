//! # mend — durable background jobs that heal themselves
//!
//! Whatever way an attempt ends — return, error, panic, timeout, cancel, SIGTERM, or `kill -9`
//! of the whole process — no job is lost and no in-memory cleanup is skipped:
//!
//! - typed handlers keyed by kind, args as serde types (bad args discard the job, no retries);
//! - retries with exponential backoff and jitter, per-kind policies, per-job `max_attempts`,
//!   "fatal" and "snooze" outcomes;
//! - panic isolation (message and location recorded), attempt timeouts, cancellation;
//! - `ctx.defer(...)` cleanups that run LIFO on every exit short of the process dying;
//! - graceful shutdown: drain, then cancel and release without using an attempt;
//! - crash recovery: jobs of dead processes are rescued; a job that keeps killing its worker is
//!   quarantined; every write of a running job is fenced by (id, attempt, lease owner).
//!
//! Storage is a [`Store`]; `mend-sqlite` is the embedded default.
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use serde::{Deserialize, Serialize};
//! use mend::{Client, JobArgs, JobError, Registry, Worker};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Greet { name: String }
//! impl JobArgs for Greet { const KIND: &'static str = "greet"; }
//!
//! # async fn demo(store: Arc<dyn mend::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! let mut registry = Registry::new();
//! registry.register_fn(|ctx, args: Greet| async move {
//!     ctx.defer(|exit| async move { println!("cleanup after {exit:?}") });
//!     println!("hello, {}", args.name);
//!     Ok::<_, JobError>(())
//! });
//! let worker = Worker::builder(store.clone()).registry(registry).queue("default", 8).build().start().await?;
//! Client::new(store).enqueue(&Greet { name: "world".into() }).await?;
//! worker.run_until_signal(Duration::from_secs(30)).await;
//! # Ok(()) }
//! ```

pub mod audit;
pub mod auth;
pub mod cleanup;
pub mod client;
pub mod cron;
pub mod handler;
pub mod job;
pub mod lenient;
pub mod limits;
pub mod maintenance;
pub mod node;
pub mod panic;
pub mod retry;
pub mod rollout;
pub mod runtime;
pub mod secrets;
pub mod settle;
pub mod stats;
pub mod store;
pub mod trace;
pub mod unique;

pub use cleanup::{AttemptExit, CleanupArgs, CleanupOutcome, CleanupReport, DurableCleanup};
pub use client::{Client, ClientError};
pub use cron::{CatchUp, Periodic};
pub use handler::{Handler, JobArgs, JobContext, JobError, Registry, ResultExt};
pub use job::{AttemptError, ErrorKind, JobRow, JobState, NewJob};
pub use retry::{ExponentialBackoff, FixedDelay, RetryPolicy};
pub use runtime::{
    EventOutcome, JobEvent, LiveAttempt, ShutdownReport, Stats, Worker, WorkerConfig, WorkerHandle,
};
pub use store::{Store, StoreError};
pub use unique::{Enqueued, UniqueOpts};
