//! In-memory cleanups (`ctx.defer`): async actions that run LIFO when an attempt ends, however
//! it ends short of the process dying.
//!
//! The stack lives outside the handler's future, so it survives the future being dropped by a
//! timeout, a cancel or a shutdown, and a panic that unwinds through the handler. Each cleanup
//! is told how the attempt ended, runs with panic isolation and a time limit, and one that fails
//! never stops the rest. Cleanups that must survive `kill -9` are durable ones (another module).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::panic::CatchPanic;

/// How long one cleanup may run before it is abandoned. Cleanups hold up the job's outcome and,
/// at shutdown, the process exit, so they must be short; ten seconds is generous for closing a
/// file or releasing a lock and short enough not to stall a drain.
pub const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Most cleanups run for one attempt: bounds an attempt whose cleanups keep registering new
/// ones, which would otherwise hold the job (and a shutdown) forever.
pub const MAX_CLEANUPS: usize = 10_000;

/// How an attempt ended, as told to each cleanup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "exit", rename_all = "snake_case")]
pub enum AttemptExit {
    /// The handler returned `Ok`.
    Completed,
    /// The handler returned an error.
    Failed {
        /// The error message.
        message: String,
    },
    /// The handler asked to run again later.
    Snoozed,
    /// The handler panicked.
    Panicked {
        /// Message and location.
        message: String,
    },
    /// The attempt ran past its timeout.
    TimedOut,
    /// The job was cancelled on request.
    Cancelled,
    /// Shutdown stopped the attempt; the job goes back to the queue.
    Shutdown,
    /// The worker lost the job's lease (it was rescued elsewhere).
    LeaseLost,
}

impl AttemptExit {
    /// Whether the attempt succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, AttemptExit::Completed)
    }

    /// Its name, as a cleanup's report and span show it: `completed`, `failed`, `snoozed`,
    /// `panicked`, `timed_out`, `cancelled`, `shutdown` or `lease_lost`.
    pub fn name(&self) -> &'static str {
        match self {
            AttemptExit::Completed => "completed",
            AttemptExit::Failed { .. } => "failed",
            AttemptExit::Snoozed => "snoozed",
            AttemptExit::Panicked { .. } => "panicked",
            AttemptExit::TimedOut => "timed_out",
            AttemptExit::Cancelled => "cancelled",
            AttemptExit::Shutdown => "shutdown",
            AttemptExit::LeaseLost => "lease_lost",
        }
    }
}

type CleanupFn = Box<
    dyn FnOnce(AttemptExit) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> + Send + 'static,
>;

struct Deferred {
    name: String,
    run: CleanupFn,
}

/// What happened to one cleanup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CleanupReport {
    /// The name given to `defer_named`, or `defer#N` in registration order.
    pub name: String,
    /// How it ended.
    pub outcome: CleanupOutcome,
    /// How long it ran.
    pub duration_ms: u64,
    /// What it was told about how the attempt ended (see [`AttemptExit::name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub told: Option<String>,
}

/// How one cleanup ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CleanupOutcome {
    /// It finished.
    Ok,
    /// It panicked; the rest still ran.
    Panicked {
        /// Message and location.
        message: String,
    },
    /// It ran past the cleanup timeout and was abandoned.
    TimedOut,
}

impl CleanupOutcome {
    /// `ok`, `panicked` or `timed_out`.
    pub fn name(&self) -> &'static str {
        match self {
            CleanupOutcome::Ok => "ok",
            CleanupOutcome::Panicked { .. } => "panicked",
            CleanupOutcome::TimedOut => "timed_out",
        }
    }
}

/// The defer stack of one attempt.
#[derive(Default)]
pub(crate) struct DeferStack {
    items: Mutex<Vec<Deferred>>,
}

impl DeferStack {
    pub(crate) fn push<F, Fut>(&self, name: Option<String>, f: F)
    where
        F: FnOnce(AttemptExit) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let name = name.unwrap_or_else(|| format!("defer#{}", items.len() + 1));
        items.push(Deferred {
            name,
            run: Box::new(move |exit| Box::pin(f(exit))),
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Runs every registered cleanup, last registered first. Cleanups registered while this
    /// runs (by another cleanup) run too.
    /// `on_start` hears each cleanup's name as it starts (live attempts). Each runs in a span
    /// of its own, `cleanup`, under the attempt's, with what it was told, its outcome and how
    /// long it ran.
    pub(crate) async fn run_all(
        &self,
        exit: &AttemptExit,
        limit: Duration,
        on_start: &(dyn Fn(&str) + Send + Sync),
    ) -> Vec<CleanupReport> {
        let mut reports = Vec::new();
        loop {
            if reports.len() >= MAX_CLEANUPS {
                let left = self.items.lock().unwrap_or_else(|p| p.into_inner()).len();
                tracing::error!(left, "more than {MAX_CLEANUPS} cleanups in one attempt (a cleanup registering cleanups?); skipping the rest");
                break;
            }
            let next = self.items.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(deferred) = next else { break };
            on_start(&deferred.name);
            let started = Instant::now();
            let told = exit.name();
            let span = tracing::info_span!(
                "cleanup",
                cleanup = %deferred.name,
                durable = false,
                told,
                outcome = tracing::field::Empty,
                duration_ms = tracing::field::Empty,
            );
            let exit = exit.clone();
            let run = deferred.run;
            // Building the future runs user code too; keep it inside the panic guard.
            let fut = CatchPanic::new(Box::pin(async move { run(exit).await }));
            let outcome = match tokio::time::timeout(
                limit,
                tracing::Instrument::instrument(fut, span.clone()),
            )
            .await
            {
                Ok(Ok(())) => CleanupOutcome::Ok,
                Ok(Err(p)) => CleanupOutcome::Panicked {
                    message: p.to_string(),
                },
                Err(_) => CleanupOutcome::TimedOut,
            };
            if outcome != CleanupOutcome::Ok {
                tracing::error!(cleanup = %deferred.name, ?outcome, "cleanup did not finish cleanly; the remaining cleanups still run");
            }
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            span.record("outcome", outcome.name());
            span.record("duration_ms", duration_ms);
            reports.push(CleanupReport {
                name: deferred.name,
                outcome,
                duration_ms,
                told: Some(told.to_owned()),
            });
        }
        reports
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex as StdMutex};

    #[tokio::test]
    async fn runs_lifo_and_survives_a_panicking_cleanup() {
        let stack = DeferStack::default();
        let log = Arc::new(StdMutex::new(Vec::new()));
        for i in 1..=3 {
            let log = log.clone();
            stack.push(None, move |exit| async move {
                if i == 2 {
                    panic!("cleanup two broke");
                }
                log.lock().unwrap().push((i, exit));
            });
        }
        let reports = stack
            .run_all(&AttemptExit::TimedOut, Duration::from_secs(1), &|_| {})
            .await;
        assert_eq!(
            *log.lock().unwrap(),
            vec![(3, AttemptExit::TimedOut), (1, AttemptExit::TimedOut)]
        );
        let names: Vec<_> = reports.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["defer#3", "defer#2", "defer#1"]);
        match &reports[1].outcome {
            CleanupOutcome::Panicked { message } => assert!(message.contains("cleanup two broke")),
            other => panic!("expected a panic report, got {other:?}"),
        }
        assert!(stack.is_empty());
    }

    /// Records the fields of `cleanup` spans: (field, value) in the order they were set.
    #[derive(Clone, Default)]
    struct CleanupSpans(Arc<StdMutex<Vec<(String, String)>>>);

    struct Fields(Arc<StdMutex<Vec<(String, String)>>>);

    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0
                .lock()
                .unwrap()
                .push((field.name().to_owned(), format!("{value:?}")));
        }
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0
                .lock()
                .unwrap()
                .push((field.name().to_owned(), value.to_owned()));
        }
    }

    impl<S> tracing_subscriber::Layer<S> for CleanupSpans
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if attrs.metadata().name() == "cleanup" {
                attrs.record(&mut Fields(self.0.clone()));
            }
        }
        fn on_record(
            &self,
            _: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            values.record(&mut Fields(self.0.clone()));
        }
    }

    #[tokio::test]
    async fn each_cleanup_is_a_span_with_what_it_was_told_its_outcome_and_duration() {
        use tracing_subscriber::layer::SubscriberExt;
        let spans = CleanupSpans::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
        let stack = DeferStack::default();
        stack.push(Some("close-file".into()), |_| async {});
        stack.push(Some("unlock".into()), |_| async {
            panic!("lock server gone")
        });
        let started = Arc::new(StdMutex::new(Vec::new()));
        let seen = started.clone();
        let reports = stack
            .run_all(
                &AttemptExit::Failed {
                    message: "boom".into(),
                },
                Duration::from_secs(1),
                &move |name| seen.lock().unwrap().push(name.to_owned()),
            )
            .await;
        assert_eq!(*started.lock().unwrap(), ["unlock", "close-file"]);
        assert!(reports.iter().all(|r| r.told.as_deref() == Some("failed")));
        let fields = spans.0.lock().unwrap().clone();
        let values = |name: &str| -> Vec<String> {
            fields
                .iter()
                .filter(|(f, _)| f == name)
                .map(|(_, v)| v.clone())
                .collect()
        };
        assert_eq!(values("cleanup"), ["unlock", "close-file"], "{fields:?}");
        assert_eq!(values("told"), ["failed", "failed"]);
        assert_eq!(values("outcome"), ["panicked", "ok"]);
        assert_eq!(values("duration_ms").len(), 2, "{fields:?}");
    }

    #[tokio::test]
    async fn a_hung_cleanup_is_abandoned() {
        let stack = DeferStack::default();
        stack.push(Some("hang".into()), |_| std::future::pending::<()>());
        let reports = stack
            .run_all(&AttemptExit::Completed, Duration::from_millis(20), &|_| {})
            .await;
        assert_eq!(reports[0].outcome, CleanupOutcome::TimedOut);
    }
}

/// A cleanup written down with the job before the work it undoes (`JobContext::defer_durable`),
/// so it runs even when the process dies: by the worker that runs the job's next attempt,
/// before that attempt starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DurableCleanup {
    /// Order of registration within the job (cleanups run highest first).
    pub seq: u32,
    /// The attempt that registered it.
    pub attempt: i32,
    /// The registered cleanup action to run (see `Registry::register_cleanup`).
    pub name: String,
    /// Its arguments.
    pub args: serde_json::Value,
}

impl DurableCleanup {
    /// Writes a new cleanup down at the end of a job's `list`, numbered after the last one;
    /// returns its number.
    pub fn push_next(
        list: &mut Vec<DurableCleanup>,
        attempt: i32,
        name: String,
        args: serde_json::Value,
    ) -> u32 {
        let seq = list.iter().map(|c| c.seq).max().unwrap_or(0) + 1;
        list.push(DurableCleanup {
            seq,
            attempt,
            name,
            args,
        });
        seq
    }

    /// Applies `edit` to a job's pending durable cleanups as stored (`None`: none); returns
    /// what `edit` returned and the list to store, `None` when it is left empty (no cleanups
    /// are stored as NULL, not as an empty list).
    pub fn edit_stored<T>(
        stored: Option<Vec<DurableCleanup>>,
        edit: impl FnOnce(&mut Vec<DurableCleanup>) -> T,
    ) -> (T, Option<Vec<DurableCleanup>>) {
        let mut list = stored.unwrap_or_default();
        let out = edit(&mut list);
        (out, Some(list).filter(|l| !l.is_empty()))
    }
}

/// Typed arguments of a durable cleanup action, named like a job kind.
pub trait CleanupArgs: Serialize + serde::de::DeserializeOwned + Send + 'static {
    /// The action's name, unique within a worker's registry.
    const NAME: &'static str;
}

/// A registered durable cleanup action: its arguments in, `Err(message)` when it failed (it is
/// retried, then the job is stopped with the error). Must be idempotent: after a crash it may
/// run again.
pub type CleanupAction = std::sync::Arc<
    dyn Fn(
            serde_json::Value,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// The built-in durable cleanup behind `JobContext::stage_file`: removes the temporary file.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemoveStaged {
    /// The temporary file.
    pub path: String,
}

impl CleanupArgs for RemoveStaged {
    const NAME: &'static str = "mend.remove_staged";
}

pub(crate) async fn remove_staged(c: RemoveStaged) -> Result<(), String> {
    // One small unlink: not worth a blocking-pool round trip.
    match std::fs::remove_file(&c.path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot remove the staged file {}: {e}", c.path)),
    }
}

/// Moves staged files into place: fsync each file, rename it over its final path, fsync the
/// directory, so the rename survives power loss once the completion commits.
pub(crate) async fn promote_staged(
    files: Vec<(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        for (temp, dest) in files {
            let fail = |what: &str, e: std::io::Error| {
                format!(
                    "{what} the staged file {} for {}: {e}",
                    temp.display(),
                    dest.display()
                )
            };
            std::fs::File::open(&temp)
                .and_then(|f| f.sync_all())
                .map_err(|e| fail("cannot sync", e))?;
            std::fs::rename(&temp, &dest).map_err(|e| fail("cannot move", e))?;
            let dir = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| std::path::Path::new("."));
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| fail("cannot sync the directory of", e))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| format!("promoting staged files panicked: {e}"))?
}
