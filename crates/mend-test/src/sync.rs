//! Small synchronisation tools for test handlers: a [`Gate`] a handler waits at until the test
//! opens it, and a [`Log`] handlers and cleanups append to. They let a test wait on what a
//! handler did instead of sleeping.

use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// A gate a handler waits at until the test opens it (once per `open`).
#[derive(Clone)]
pub struct Gate(Arc<Semaphore>);

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate(Arc::new(Semaphore::new(0)))
    }

    /// Wait until opened; consumes one opening.
    pub async fn wait(&self) {
        self.0
            .acquire()
            .await
            .expect("gate semaphore closed")
            .forget();
    }

    /// Let one waiter through (now or when it arrives).
    pub fn open(&self) {
        self.0.add_permits(1);
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

/// A shared, append-only log handlers and cleanups write to.
#[derive(Clone)]
pub struct Log<T>(Arc<Mutex<Vec<T>>>);

impl<T: Clone> Log<T> {
    /// An empty log.
    pub fn new() -> Log<T> {
        Log::default()
    }

    /// Append one entry.
    pub fn push(&self, v: T) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(v);
    }

    /// The entries so far.
    pub fn snapshot(&self) -> Vec<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Log(Arc::new(Mutex::new(Vec::new())))
    }
}
