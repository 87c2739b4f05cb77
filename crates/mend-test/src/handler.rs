//! Test handlers without the ceremony: [`registry_with`] and [`raw_registry_with`] give each
//! call of a handler its own clone of the state it records into (logs, gates, channels), and
//! [`job_args!`](crate::job_args) declares a test's job args type with its kind in one place.
//!
//! Only plumbing lives here: what a handler does, and what a test asserts about it, stay in
//! the test.

use std::future::Future;
use std::time::Duration;

use mend::{JobArgs, JobContext, JobError, Registry};
use serde::Serialize;

/// A registry with one handler, `f` for `A::KIND`; each call of `f` gets its own clone of
/// `state`.
pub fn registry_with<S, A, F, Fut, O>(state: S, f: F) -> Registry
where
    S: Clone + Send + Sync + 'static,
    A: JobArgs,
    F: Fn(S, JobContext, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, JobError>> + Send + 'static,
    O: Serialize + Send + 'static,
{
    let mut registry = Registry::new();
    registry.register_fn(move |ctx: JobContext, args: A| f(state.clone(), ctx, args));
    registry
}

/// A registry with one untyped handler, `f` for `kind` with a per-kind `timeout`; each call of
/// `f` gets its own clone of `state`.
pub fn raw_registry_with<S, F, Fut>(
    kind: &str,
    timeout: Option<Duration>,
    state: S,
    f: F,
) -> Registry
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, JobContext, serde_json::Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<serde_json::Value>, JobError>> + Send + 'static,
{
    let mut registry = Registry::new();
    registry.register_raw(kind, timeout, move |ctx, args| f(state.clone(), ctx, args));
    registry
}

/// Declares a job args type: the struct (serialisable) and its `JobArgs` impl with the kind
/// and, optionally, a `max_attempts` every job of the type starts with. The calling crate
/// needs `serde` (with `derive`) among its dependencies, as any job args type does.
///
/// ```ignore
/// mend_test::job_args! {
///     /// Fails the first `fail` attempts.
///     struct Flaky { fail: i32 } = "flaky", max_attempts = 1
/// }
/// mend_test::job_args!(struct Doomed = "doomed");
/// ```
#[macro_export]
macro_rules! job_args {
    ($(#[$m:meta])* struct $name:ident = $kind:literal $(, max_attempts = $n:expr)?) => {
        $(#[$m])*
        #[derive(::serde::Serialize, ::serde::Deserialize)]
        struct $name;
        $crate::job_args!(@impl $name, $kind $(, $n)?);
    };
    ($(#[$m:meta])* struct $name:ident { $($body:tt)* } = $kind:literal $(, max_attempts = $n:expr)?) => {
        $(#[$m])*
        #[derive(::serde::Serialize, ::serde::Deserialize)]
        struct $name { $($body)* }
        $crate::job_args!(@impl $name, $kind $(, $n)?);
    };
    (@impl $name:ident, $kind:literal) => {
        impl ::mend::JobArgs for $name {
            const KIND: &'static str = $kind;
        }
    };
    (@impl $name:ident, $kind:literal, $n:expr) => {
        impl ::mend::JobArgs for $name {
            const KIND: &'static str = $kind;
            fn configure(job: ::mend::NewJob) -> ::mend::NewJob {
                job.with_max_attempts($n)
            }
        }
    };
}
