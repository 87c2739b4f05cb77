//! The executor fixture: a fresh store ([`mend_test::env::Env`]) with a real worker running the
//! built-in kinds, retrying after a fixed 50 ms so retries happen within a test. Only what is
//! particular to the executors lives here; the harness (waits, the scripted HTTP server) is
//! `mend_test`.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use mend::{NewJob, Registry, WorkerConfig, WorkerHandle};
use mend_executors::ExecutorsConfig;
use uuid::Uuid;

/// A store and a worker running the built-in executors.
pub(crate) struct Env {
    /// The store, its directory and the waits on it.
    pub env: mend_test::env::Env,
    /// The worker (shut down by [`Env::stop`]).
    pub worker: WorkerHandle,
}

impl std::ops::Deref for Env {
    type Target = mend_test::env::Env;
    fn deref(&self) -> &mend_test::env::Env {
        &self.env
    }
}

impl Env {
    /// A store and a worker on the default queue with 4 slots.
    pub(crate) async fn start(config: ExecutorsConfig) -> Env {
        Self::start_with(config, |_| {}).await
    }

    /// Like [`Env::start`], with further adjustments of the worker's settings.
    pub(crate) async fn start_with(
        config: ExecutorsConfig,
        tweak: impl FnOnce(&mut WorkerConfig),
    ) -> Env {
        let env = mend_test::env::Env::new().await;
        let mut registry = Registry::new();
        mend_executors::register(&mut registry, &config);
        let worker = env
            .worker(registry, 4, |c| {
                c.retry_policy = Arc::new(mend::FixedDelay(Duration::from_millis(50)));
                tweak(c);
            })
            .await;
        Env { env, worker }
    }

    /// Enqueue a job of `kind` with `args` and at most `max_attempts` attempts.
    pub(crate) async fn enqueue(
        &self,
        kind: &str,
        args: serde_json::Value,
        max_attempts: i32,
    ) -> Uuid {
        self.insert(NewJob::new(kind, args).with_max_attempts(max_attempts))
            .await
            .id
    }

    /// Shut the worker down.
    pub(crate) async fn stop(self) {
        self.worker.shutdown(Duration::from_secs(5)).await;
    }
}
