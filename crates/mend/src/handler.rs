//! Typed handlers: what a job's args look like ([`JobArgs`]), the code that runs it
//! ([`Handler`], or a plain async fn), how it reports failure ([`JobError`]), and what it can
//! see while it runs ([`JobContext`]).
//!
//! Handlers are type-erased into a [`Registry`] keyed by kind; the runtime only sees JSON in and
//! JSON out. Args that do not deserialize discard the job at once: retrying cannot fix them.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cleanup::{AttemptExit, DeferStack};
use crate::job::NewJob;
use crate::retry::RetryPolicy;

/// Typed job arguments, tied to a kind.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// #[derive(Serialize, Deserialize)]
/// struct SendEmail { to: String }
/// impl mend::JobArgs for SendEmail { const KIND: &'static str = "send_email"; }
/// ```
pub trait JobArgs: Serialize + DeserializeOwned + Send + 'static {
    /// The kind string stored with the job; handlers are found by it.
    const KIND: &'static str;

    /// Adjust how jobs of this kind are enqueued (queue, priority, attempts...). The default
    /// leaves the defaults.
    fn configure(job: NewJob) -> NewJob {
        job
    }

    /// The [`NewJob`] to enqueue for these args.
    fn to_new_job(&self) -> Result<NewJob, serde_json::Error> {
        Ok(Self::configure(NewJob::new(
            Self::KIND,
            serde_json::to_value(self)?,
        )))
    }
}

/// Why an attempt did not succeed, as the handler sees it. Any `std::error::Error` converts
/// into a retryable `JobError` with `?`; use [`ResultExt::fatal`] or [`JobError::fatal`] for
/// failures that retrying cannot fix.
#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    /// Try again after the retry policy's backoff (or `after`, when given).
    Retry {
        /// What went wrong.
        message: String,
        /// Overrides the policy's delay (e.g. from a `Retry-After` header).
        after: Option<Duration>,
    },
    /// Do not retry; discard the job with this message.
    Fatal {
        /// What went wrong.
        message: String,
    },
    /// Not an error: run again after `delay`, without using up an attempt.
    Snooze {
        /// How long to wait.
        delay: Duration,
    },
}

impl JobError {
    /// A retryable error.
    pub fn retry(message: impl fmt::Display) -> Self {
        JobError::Retry {
            message: message.to_string(),
            after: None,
        }
    }

    /// A retryable error with an explicit delay.
    pub fn retry_after(message: impl fmt::Display, after: Duration) -> Self {
        JobError::Retry {
            message: message.to_string(),
            after: Some(after),
        }
    }

    /// A permanent failure: the job is discarded.
    pub fn fatal(message: impl fmt::Display) -> Self {
        JobError::Fatal {
            message: message.to_string(),
        }
    }

    /// Run again after `delay`; the attempt does not count.
    pub fn snooze(delay: Duration) -> Self {
        JobError::Snooze { delay }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Retry { message, .. } => f.write_str(message),
            JobError::Fatal { message } => write!(f, "fatal: {message}"),
            JobError::Snooze { delay } => write!(f, "snoozed for {delay:?}"),
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(e: E) -> Self {
        JobError::retry(error_chain(&e))
    }
}

/// `.fatal()` and `.retryable()` on any `Result` whose error is displayable.
pub trait ResultExt<T> {
    /// Turn the error into a permanent failure.
    fn fatal(self) -> Result<T, JobError>;
    /// Turn the error into a retryable failure.
    fn retryable(self) -> Result<T, JobError>;
}

impl<T, E: fmt::Display> ResultExt<T> for Result<T, E> {
    fn fatal(self) -> Result<T, JobError> {
        self.map_err(JobError::fatal)
    }
    fn retryable(self) -> Result<T, JobError> {
        self.map_err(JobError::retry)
    }
}

/// Runs jobs of one kind.
///
/// A handler holds whatever it needs (a pool, a client) and receives the typed args and a
/// [`JobContext`] for each attempt.
pub trait Handler: Send + Sync + 'static {
    /// The args this handler takes; their `KIND` is the kind it handles.
    type Args: JobArgs;
    /// What a successful attempt returns; stored as the job's result (`()` stores nothing).
    type Output: Serialize + Send + 'static;

    /// Run one attempt.
    fn run(
        &self,
        ctx: JobContext,
        args: Self::Args,
    ) -> impl Future<Output = Result<Self::Output, JobError>> + Send;

    /// The attempt timeout for this kind (`None`: the worker's default). A job's own
    /// `timeout_ms` wins over both.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// The retry policy for this kind (`None`: the worker's default).
    fn retry_policy(&self) -> Option<Arc<dyn RetryPolicy>> {
        None
    }
}

/// What an attempt can see and do while it runs. Cheap to clone.
#[derive(Clone)]
pub struct JobContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    id: Uuid,
    queue: String,
    kind: String,
    attempt: i32,
    max_attempts: i32,
    cancel: CancellationToken,
    defers: DeferStack,
    /// Where checkpoints go: the store and this attempt's lease owner (`None` outside a
    /// worker, e.g. in unit tests of a handler).
    persist: Option<(Arc<dyn crate::Store>, String)>,
    /// The last checkpoint: the stored one at claim, then each one saved.
    checkpoint: std::sync::Mutex<Option<serde_json::Value>>,
    /// Durable cleanups this attempt wrote down, in order.
    durable: std::sync::Mutex<Vec<crate::cleanup::DurableCleanup>>,
    /// Staged files: (temporary path, final path).
    staged: std::sync::Mutex<Vec<(std::path::PathBuf, std::path::PathBuf)>>,
    /// Writes to commit with the completion.
    effect: std::sync::Mutex<Option<crate::store::TxEffect>>,
}

impl JobContext {
    /// `persist` (the store and this attempt's lease owner) lets `checkpoint`,
    /// `defer_durable` and `stage_file` write; `last_checkpoint` is what `resume` starts from.
    pub(crate) fn new(
        id: Uuid,
        queue: String,
        kind: String,
        (attempt, max_attempts): (i32, i32),
        cancel: CancellationToken,
        persist: Option<(Arc<dyn crate::Store>, String)>,
        last_checkpoint: Option<serde_json::Value>,
    ) -> Self {
        JobContext {
            inner: Arc::new(ContextInner {
                id,
                queue,
                kind,
                attempt,
                max_attempts,
                cancel,
                defers: DeferStack::default(),
                persist,
                checkpoint: std::sync::Mutex::new(last_checkpoint),
                durable: std::sync::Mutex::new(Vec::new()),
                staged: std::sync::Mutex::new(Vec::new()),
                effect: std::sync::Mutex::new(None),
            }),
        }
    }

    /// This attempt's fence, held by `owner`.
    fn fence(&self, owner: &str) -> crate::store::Fence {
        crate::store::Fence::new(self.inner.id, self.inner.attempt, owner)
    }

    /// Saves `state` with the job, durably, before returning: the next attempt (after an
    /// error, a timeout, a panic, or a crash of the whole process) starts with it, so a long
    /// job resumes where it was instead of starting over. Fenced like every write of a
    /// running job: once this attempt has lost the job the save is refused, and the returned
    /// error stops the attempt.
    pub async fn checkpoint<T: Serialize + ?Sized>(&self, state: &T) -> Result<(), JobError> {
        let value = serde_json::to_value(state)
            .map_err(|e| JobError::fatal(format!("the checkpoint cannot be encoded: {e}")))?;
        if let Some((store, owner)) = &self.inner.persist {
            let saved = store
                .checkpoint(crate::store::CheckpointParams {
                    fence: self.fence(owner),
                    state: value.clone(),
                })
                .await
                .map_err(|e| JobError::retry(format!("saving a checkpoint failed: {e}")))?;
            if !saved {
                return Err(JobError::retry(
                    "checkpoint refused: this attempt no longer holds the job (rescued or cancelled elsewhere)",
                ));
            }
        }
        *self
            .inner
            .checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(value);
        Ok(())
    }

    /// Writes a cleanup down with the job, durably, before returning — call it before the work
    /// it undoes. If the attempt fails, panics, times out, is cancelled or is stopped by
    /// shutdown, it runs (after the in-memory `defer`s, last registered first); if the whole
    /// process dies, it runs before the job's next attempt, on whichever worker claims it. It
    /// is dropped when the attempt completes. The action must be registered on every worker
    /// of the queue (`Registry::register_cleanup`) and be idempotent.
    pub async fn defer_durable<A: crate::cleanup::CleanupArgs>(
        &self,
        args: &A,
    ) -> Result<(), JobError> {
        let value = serde_json::to_value(args).map_err(|e| {
            JobError::fatal(format!("the cleanup's arguments cannot be encoded: {e}"))
        })?;
        let Some((store, owner)) = &self.inner.persist else {
            return Ok(());
        };
        let saved = store
            .defer_durable(crate::store::DeferDurableParams {
                fence: self.fence(owner),
                name: A::NAME.to_owned(),
                args: value.clone(),
            })
            .await
            .map_err(|e| JobError::retry(format!("writing down a durable cleanup failed: {e}")))?;
        let Some(seq) = saved else {
            return Err(JobError::retry(
                "durable cleanup refused: this attempt no longer holds the job",
            ));
        };
        self.inner
            .durable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(crate::cleanup::DurableCleanup {
                seq,
                attempt: self.inner.attempt,
                name: A::NAME.to_owned(),
                args: value,
            });
        Ok(())
    }

    /// A temporary path, on the same filesystem as `final_path`, to write a file the job
    /// produces. When the attempt completes, the file is moved into place (fsync of the file,
    /// atomic rename, fsync of the directory) just before the completion is committed; when it
    /// fails in any way, or the process dies, the temporary file is removed (a durable cleanup,
    /// written down before this returns). A crash between the rename and the commit leaves the
    /// final file in place and the job is retried, which writes it again.
    pub async fn stage_file(
        &self,
        final_path: impl AsRef<std::path::Path>,
    ) -> Result<std::path::PathBuf, JobError> {
        let final_path = final_path.as_ref().to_path_buf();
        let name = final_path
            .file_name()
            .ok_or_else(|| {
                JobError::fatal(format!(
                    "stage_file needs a file path, got {}",
                    final_path.display()
                ))
            })?
            .to_string_lossy()
            .into_owned();
        let dir = final_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| std::path::Path::new("."));
        let temp = dir.join(format!(
            ".{name}.mend-{}-{}.tmp",
            self.inner.id, self.inner.attempt
        ));
        self.defer_durable(&crate::cleanup::RemoveStaged {
            path: temp.to_string_lossy().into_owned(),
        })
        .await?;
        self.inner
            .staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((temp.clone(), final_path));
        Ok(temp)
    }

    /// Commit `effect` — the handler's own writes to the job's database, built with
    /// `mend_sqlite::effect` or `mend_postgres::effect` — in the same transaction that marks
    /// the job completed, if this attempt completes: the effect and the completion land
    /// together or not at all (a crash in between leaves neither, and the retry does both
    /// once). If the effect fails, nothing is written and the attempt is retried. A second
    /// call replaces the first.
    pub fn commit_with_completion(&self, effect: crate::store::TxEffect) {
        *self.inner.effect.lock().unwrap_or_else(|p| p.into_inner()) = Some(effect);
    }

    pub(crate) fn take_effect(&self) -> Option<crate::store::TxEffect> {
        self.inner
            .effect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub(crate) fn staged_files(&self) -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
        self.inner
            .staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn durable_cleanups(&self) -> Vec<crate::cleanup::DurableCleanup> {
        self.inner
            .durable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last checkpoint saved for this job, by this attempt or an earlier one; `None` when
    /// there is none (the first attempt, or a job retried by hand after completing).
    pub fn resume<T: DeserializeOwned>(&self) -> Result<Option<T>, JobError> {
        let last = self
            .inner
            .checkpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        last.map(|v| {
            serde_json::from_value(v).map_err(|e| {
                JobError::fatal(format!(
                    "the saved checkpoint does not match the type asked for: {e}"
                ))
            })
        })
        .transpose()
    }

    /// The job's id: use it as an idempotency key for effects outside the job's database.
    pub fn id(&self) -> Uuid {
        self.inner.id
    }
    /// The job's queue.
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }
    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.inner.kind
    }
    /// This attempt's number, from 1.
    pub fn attempt(&self) -> i32 {
        self.inner.attempt
    }
    /// Attempts allowed.
    pub fn max_attempts(&self) -> i32 {
        self.inner.max_attempts
    }

    /// Cancelled when the attempt must stop (cancel request, shutdown past the drain deadline,
    /// lost lease) and, in any case, when the attempt is over (returned, failed, panicked or
    /// timed out). The handler's future is dropped when a stop is requested; pass a child of
    /// this token to work the handler spawns so it stops with the attempt.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.inner.cancel
    }

    /// Completes when the attempt is told to stop.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await
    }

    /// Register a cleanup that runs when this attempt ends, whatever the way short of the
    /// process dying: returned, failed, panicked, timed out, cancelled or shut down. Cleanups
    /// run last-registered first, each told how the attempt ended.
    pub fn defer<F, Fut>(&self, cleanup: F)
    where
        F: FnOnce(AttemptExit) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner.defers.push(None, cleanup);
    }

    /// [`defer`](Self::defer) with a name that appears in reports and logs.
    pub fn defer_named<F, Fut>(&self, name: impl Into<String>, cleanup: F)
    where
        F: FnOnce(AttemptExit) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner.defers.push(Some(name.into()), cleanup);
    }

    pub(crate) fn defers(&self) -> &DeferStack {
        &self.inner.defers
    }
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.inner.id)
            .field("kind", &self.inner.kind)
            .field("attempt", &self.inner.attempt)
            .finish_non_exhaustive()
    }
}

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A handler with its types erased: JSON args in, optional JSON result out.
pub trait ErasedHandler: Send + Sync + 'static {
    /// Run one attempt on raw args.
    fn call(
        &self,
        ctx: JobContext,
        args: serde_json::Value,
    ) -> BoxFuture<Result<Option<serde_json::Value>, JobError>>;
    /// See [`Handler::timeout`].
    fn timeout(&self) -> Option<Duration>;
    /// See [`Handler::retry_policy`].
    fn retry_policy(&self) -> Option<Arc<dyn RetryPolicy>>;
}

struct Typed<H>(Arc<H>);

fn args_error(kind: &str, e: &serde_json::Error) -> JobError {
    JobError::fatal(format!(
        "args do not match kind `{kind}`: {e}; fix the enqueued args, then retry the job"
    ))
}

fn encode_output<O: Serialize>(out: O) -> Result<Option<serde_json::Value>, JobError> {
    match serde_json::to_value(out) {
        Ok(serde_json::Value::Null) => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(e) => Err(JobError::fatal(format!(
            "the handler's result cannot be stored as JSON: {e}"
        ))),
    }
}

impl<H: Handler> ErasedHandler for Typed<H> {
    fn call(
        &self,
        ctx: JobContext,
        args: serde_json::Value,
    ) -> BoxFuture<Result<Option<serde_json::Value>, JobError>> {
        let handler = self.0.clone();
        Box::pin(async move {
            let args: H::Args =
                serde_json::from_value(args).map_err(|e| args_error(H::Args::KIND, &e))?;
            encode_output(handler.run(ctx, args).await?)
        })
    }
    fn timeout(&self) -> Option<Duration> {
        self.0.timeout()
    }
    fn retry_policy(&self) -> Option<Arc<dyn RetryPolicy>> {
        self.0.retry_policy()
    }
}

struct FnHandler<A, F> {
    f: F,
    _args: std::marker::PhantomData<fn() -> A>,
}

impl<A, F, Fut, O> Handler for FnHandler<A, F>
where
    A: JobArgs,
    F: Fn(JobContext, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, JobError>> + Send + 'static,
    O: Serialize + Send + 'static,
{
    type Args = A;
    type Output = O;
    fn run(&self, ctx: JobContext, args: A) -> impl Future<Output = Result<O, JobError>> + Send {
        (self.f)(ctx, args)
    }
}

struct RawHandler<F> {
    f: F,
    timeout: Option<Duration>,
}

impl<F, Fut> ErasedHandler for RawHandler<F>
where
    F: Fn(JobContext, serde_json::Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<serde_json::Value>, JobError>> + Send + 'static,
{
    fn call(
        &self,
        ctx: JobContext,
        args: serde_json::Value,
    ) -> BoxFuture<Result<Option<serde_json::Value>, JobError>> {
        Box::pin((self.f)(ctx, args))
    }
    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    fn retry_policy(&self) -> Option<Arc<dyn RetryPolicy>> {
        None
    }
}

/// A kind's named handler versions, in the order they were registered.
type Versions = Vec<(String, Arc<dyn ErasedHandler>)>;

/// Handlers by kind (and named versions of them, for gray release: see
/// [`crate::rollout`]), and durable cleanup actions by name.
#[derive(Clone)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn ErasedHandler>>,
    /// Named versions per kind.
    versions: HashMap<String, Versions>,
    cleanups: HashMap<String, crate::cleanup::CleanupAction>,
}

impl Default for Registry {
    /// No handlers; the built-in cleanup actions (staged files).
    fn default() -> Self {
        let mut registry = Registry {
            handlers: HashMap::new(),
            versions: HashMap::new(),
            cleanups: HashMap::new(),
        };
        registry.register_cleanup(crate::cleanup::remove_staged);
        registry
    }
}

impl Registry {
    /// No handlers yet; the built-in cleanup actions are registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a [`Handler`] for its args' kind (replacing any earlier one).
    pub fn register<H: Handler>(&mut self, handler: H) -> &mut Self {
        self.handlers
            .insert(H::Args::KIND.to_owned(), Arc::new(Typed(Arc::new(handler))));
        self
    }

    /// Register an async fn for `A::KIND`.
    pub fn register_fn<A, F, Fut, O>(&mut self, f: F) -> &mut Self
    where
        A: JobArgs,
        F: Fn(JobContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, JobError>> + Send + 'static,
        O: Serialize + Send + 'static,
    {
        self.register(FnHandler {
            f,
            _args: std::marker::PhantomData,
        })
    }

    /// Register an untyped handler on raw JSON (built-in executors, dynamic kinds).
    pub fn register_raw<F, Fut>(
        &mut self,
        kind: impl Into<String>,
        timeout: Option<Duration>,
        f: F,
    ) -> &mut Self
    where
        F: Fn(JobContext, serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<serde_json::Value>, JobError>> + Send + 'static,
    {
        self.handlers
            .insert(kind.into(), Arc::new(RawHandler { f, timeout }));
        self
    }

    /// Register a named version of a [`Handler`] for its args' kind, beside the kind's
    /// unversioned handler and other versions (replacing an earlier one of the same name).
    /// Which version runs a job is decided by the kind's rollout (see [`crate::rollout`]);
    /// without one, the unversioned handler runs, or else the version registered first.
    pub fn register_version<H: Handler>(
        &mut self,
        version: impl Into<String>,
        handler: H,
    ) -> &mut Self {
        self.insert_version(
            H::Args::KIND.to_owned(),
            version.into(),
            Arc::new(Typed(Arc::new(handler))),
        )
    }

    /// Register an async fn as a named version of `A::KIND` (see [`Registry::register_version`]).
    pub fn register_version_fn<A, F, Fut, O>(
        &mut self,
        version: impl Into<String>,
        f: F,
    ) -> &mut Self
    where
        A: JobArgs,
        F: Fn(JobContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, JobError>> + Send + 'static,
        O: Serialize + Send + 'static,
    {
        self.register_version(
            version,
            FnHandler {
                f,
                _args: std::marker::PhantomData,
            },
        )
    }

    /// Register an untyped handler on raw JSON as a named version of `kind`.
    pub fn register_raw_version<F, Fut>(
        &mut self,
        kind: impl Into<String>,
        version: impl Into<String>,
        timeout: Option<Duration>,
        f: F,
    ) -> &mut Self
    where
        F: Fn(JobContext, serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<serde_json::Value>, JobError>> + Send + 'static,
    {
        self.insert_version(
            kind.into(),
            version.into(),
            Arc::new(RawHandler { f, timeout }),
        )
    }

    fn insert_version(
        &mut self,
        kind: String,
        version: String,
        handler: Arc<dyn ErasedHandler>,
    ) -> &mut Self {
        let list = self.versions.entry(kind).or_default();
        match list.iter_mut().find(|(v, _)| *v == version) {
            Some(slot) => slot.1 = handler,
            None => list.push((version, handler)),
        }
        self
    }

    /// The handler that runs an attempt of `kind` recorded with `version` (`None`: not
    /// routed, so the unversioned handler, or else the version registered first).
    pub fn handler_for(
        &self,
        kind: &str,
        version: Option<&str>,
    ) -> Option<&Arc<dyn ErasedHandler>> {
        match version.filter(|v| *v != crate::rollout::UNVERSIONED) {
            Some(v) => self
                .versions
                .get(kind)
                .and_then(|l| l.iter().find(|(name, _)| name == v))
                .map(|(_, h)| h),
            None => self.handlers.get(kind).or_else(|| {
                self.versions
                    .get(kind)
                    .and_then(|l| l.first())
                    .map(|(_, h)| h)
            }),
        }
    }

    /// What this registry serves per kind, for routing: `None` stands for the unversioned
    /// handler.
    pub fn served(&self) -> crate::rollout::Served {
        let mut out = crate::rollout::Served::new();
        for kind in self.handlers.keys() {
            out.entry(kind.clone()).or_default().push(None);
        }
        for (kind, list) in &self.versions {
            let entry = out.entry(kind.clone()).or_default();
            entry.extend(list.iter().map(|(v, _)| Some(v.clone())));
        }
        out
    }

    /// The named versions per kind (kinds with only an unversioned handler left out), as a
    /// node reports them.
    pub fn versions(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        self.versions
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(k, l)| (k.clone(), l.iter().map(|(v, _)| v.clone()).collect()))
            .collect()
    }

    /// Register a durable cleanup action (see `JobContext::defer_durable`). It must be
    /// idempotent: after a crash it may run a second time.
    pub fn register_cleanup<A, F, Fut>(&mut self, f: F) -> &mut Self
    where
        A: crate::cleanup::CleanupArgs,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let f = Arc::new(f);
        let action: crate::cleanup::CleanupAction = Arc::new(move |raw: serde_json::Value| {
            let f = f.clone();
            Box::pin(async move {
                let args: A = serde_json::from_value(raw)
                    .map_err(|e| format!("the cleanup's stored arguments do not decode: {e}"))?;
                f(args).await
            })
        });
        self.cleanups.insert(A::NAME.to_owned(), action);
        self
    }

    /// The durable cleanup action of that name.
    pub fn cleanup(&self, name: &str) -> Option<&crate::cleanup::CleanupAction> {
        self.cleanups.get(name)
    }

    /// The handler for a kind when no rollout routes it (see [`Registry::handler_for`]).
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn ErasedHandler>> {
        self.handler_for(kind, None)
    }

    /// The kinds registered (unversioned or in any version), sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<_> = self
            .handlers
            .keys()
            .chain(self.versions.keys())
            .cloned()
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }
    impl JobArgs for Add {
        const KIND: &'static str = "add";
    }

    fn ctx() -> JobContext {
        JobContext::new(
            Uuid::now_v7(),
            "q".into(),
            "add".into(),
            (1, 3),
            CancellationToken::new(),
            None,
            None,
        )
    }

    #[tokio::test]
    async fn typed_fn_gets_args_and_stores_output() {
        let mut reg = Registry::new();
        reg.register_fn(|_ctx, args: Add| async move { Ok::<_, JobError>(args.a + args.b) });
        let h = reg.get("add").unwrap();
        let out = h
            .call(ctx(), serde_json::json!({"a": 2, "b": 3}))
            .await
            .unwrap();
        assert_eq!(out, Some(serde_json::json!(5)));
    }

    #[tokio::test]
    async fn bad_args_are_fatal_and_say_so() {
        let mut reg = Registry::new();
        reg.register_fn(|_ctx, args: Add| async move { Ok::<_, JobError>(args.a) });
        let err = reg
            .get("add")
            .unwrap()
            .call(ctx(), serde_json::json!({"a": "x"}))
            .await
            .unwrap_err();
        match err {
            JobError::Fatal { message } => assert!(
                message.contains("args do not match kind `add`"),
                "{message}"
            ),
            other => panic!("expected fatal, got {other:?}"),
        }
    }

    #[test]
    fn question_mark_makes_retryable_errors_with_the_chain() {
        fn parse() -> Result<i32, JobError> {
            Ok("x".parse::<i32>()?)
        }
        assert!(matches!(parse(), Err(JobError::Retry { .. })));
        let r: Result<(), &str> = Err("nope");
        assert_eq!(r.fatal().unwrap_err(), JobError::fatal("nope"));
    }
}
