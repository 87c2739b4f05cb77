//! What each attempt on this node is doing right now, for `/debug/attempts` and
//! [`WorkerHandle::attempts`](super::WorkerHandle::attempts): in its handler, in which cleanup
//! and for how long, or handing its outcome over; and whether a cancel or a shutdown has
//! reached it. A hung cleanup shows here at once, long before its lease runs out.
//!
//! The executor moves an attempt from step to step; a step change is one uncontended lock,
//! a few times per attempt.

use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::settle::Stop;

/// Where an attempt is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Claimed ahead, waiting for a slot (its handler has not started).
    Waiting,
    /// Running its durable cleanups left by a lost attempt, before the handler.
    Recovering(String),
    /// In its handler.
    Handler,
    /// In one of its in-memory cleanups.
    Cleanup(String),
    /// In one of its durable cleanups.
    DurableCleanup(String),
    /// Done; its outcome waits for the completer.
    Reporting,
}

/// One attempt's live facts, shared between its executor and the readers.
pub(crate) struct Live {
    pub(crate) id: Uuid,
    pub(crate) kind: String,
    pub(crate) queue: String,
    pub(crate) attempt: i32,
    started_at: DateTime<Utc>,
    started: Instant,
    state: Mutex<(Step, Instant)>,
    lease_expires_at: Mutex<Option<DateTime<Utc>>>,
}

impl Live {
    pub(crate) fn new(job: &crate::JobRow) -> Self {
        Live {
            id: job.id,
            kind: job.kind.clone(),
            queue: job.queue.clone(),
            attempt: job.attempt,
            started_at: Utc::now(),
            started: Instant::now(),
            state: Mutex::new((Step::Handler, Instant::now())),
            lease_expires_at: Mutex::new(job.lease_expires_at),
        }
    }

    /// Whether it is a job claimed ahead, still waiting for a slot.
    pub(crate) fn is_waiting(&self) -> bool {
        matches!(
            self.state.lock().unwrap_or_else(|p| p.into_inner()).0,
            Step::Waiting
        )
    }

    /// The attempt moved on to `step`.
    pub(crate) fn set(&self, step: Step) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (step, Instant::now());
    }

    /// A heartbeat extended the lease to `until`.
    pub(crate) fn leased_until(&self, until: DateTime<Utc>) {
        *self
            .lease_expires_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    /// The view of it now; `stop` is what was asked of it, `shutting_down` whether the
    /// worker is shutting down.
    pub(crate) fn view(&self, stop: Option<Stop>, shutting_down: bool) -> LiveAttempt {
        let (step, since) = self.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (phase, cleanup) = match step {
            Step::Waiting => ("waiting", None),
            Step::Recovering(name) => ("recovering", Some(name)),
            Step::Handler => ("handler", None),
            Step::Cleanup(name) => ("cleanup", Some(name)),
            Step::DurableCleanup(name) => ("durable_cleanup", Some(name)),
            Step::Reporting => ("reporting", None),
        };
        let ms = |i: Instant| u64::try_from(i.elapsed().as_millis()).unwrap_or(u64::MAX);
        LiveAttempt {
            id: self.id,
            kind: self.kind.clone(),
            queue: self.queue.clone(),
            attempt: self.attempt,
            started_at: self.started_at,
            running_ms: ms(self.started),
            lease_expires_at: *self
                .lease_expires_at
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            phase,
            cleanup,
            phase_ms: ms(since),
            stop_requested: stop.map(|s| match s {
                Stop::Cancel => "cancel",
                Stop::Shutdown => "shutdown",
                Stop::LeaseLost => "lease_lost",
            }),
            shutting_down,
        }
    }
}

/// One attempt running on this node, as `/debug/attempts` shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LiveAttempt {
    /// The job.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Which attempt.
    pub attempt: i32,
    /// When this node started it.
    pub started_at: DateTime<Utc>,
    /// How long it has run, in milliseconds.
    pub running_ms: u64,
    /// Until when this node holds the job (the latest heartbeat's extension).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// `waiting` (claimed ahead, waiting for a slot), `recovering` (a lost attempt's durable
    /// cleanups), `handler`, `cleanup` (in-memory), `durable_cleanup`, or `reporting` (done,
    /// its outcome being written).
    pub phase: &'static str,
    /// The cleanup it is in, for the cleanup phases.
    pub cleanup: Option<String>,
    /// How long it has been in this phase, in milliseconds.
    pub phase_ms: u64,
    /// `cancel`, `shutdown` or `lease_lost` once one has reached it.
    pub stop_requested: Option<&'static str>,
    /// Whether the worker is shutting down.
    pub shutting_down: bool,
}

impl LiveAttempt {
    /// The attempt in words, e.g. `in cleanup release-lock for 3.2 s`.
    pub fn doing(&self) -> String {
        let secs = self.phase_ms as f64 / 1000.0;
        match (self.phase, &self.cleanup) {
            ("handler", _) => format!("in its handler for {secs:.1} s"),
            ("waiting", _) => format!("claimed ahead, waiting for a slot for {secs:.1} s"),
            ("cleanup", Some(name)) => format!("in cleanup {name} for {secs:.1} s"),
            ("durable_cleanup", Some(name)) => {
                format!("in durable cleanup {name} for {secs:.1} s")
            }
            ("recovering", Some(name)) => {
                format!("running a lost attempt's durable cleanup {name} for {secs:.1} s")
            }
            _ => format!("writing its outcome for {secs:.1} s"),
        }
    }
}
