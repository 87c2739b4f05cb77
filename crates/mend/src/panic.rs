//! Panic isolation: a future wrapper that turns a panic into a value, with the panic's message
//! and source location.
//!
//! `catch_unwind` alone gives the payload but not the location, so a process-wide panic hook
//! (installed once, chaining to the previous hook) records the location of panics that happen
//! while a job or cleanup is being polled. Panics elsewhere go to the previous hook unchanged.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

/// A panic caught in a job or cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaughtPanic {
    /// The panic message (or a note that the payload was not a string).
    pub message: String,
    /// `file:line:column`, when the hook saw it.
    pub location: Option<String>,
}

impl std::fmt::Display for CaughtPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "panicked at {loc}: {}", self.message),
            None => write!(f, "panicked: {}", self.message),
        }
    }
}

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    static LAST: RefCell<Option<(String, Option<String>)>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if INSIDE.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                let message = payload_message(info.payload());
                LAST.with(|last| *last.borrow_mut() = Some((message, location)));
            } else {
                previous(info);
            }
        }));
    });
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic payload is not a string".to_owned()
    }
}

/// Polls a boxed future and turns a panic into `Err(CaughtPanic)`.
pub struct CatchPanic<T> {
    inner: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
}

impl<T> CatchPanic<T> {
    /// Wrap a future.
    pub fn new(fut: Pin<Box<dyn Future<Output = T> + Send>>) -> Self {
        install_hook();
        CatchPanic { inner: Some(fut) }
    }
}

impl<T> Future for CatchPanic<T> {
    type Output = Result<T, CaughtPanic>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(fut) = self.inner.as_mut() else {
            return Poll::Ready(Err(CaughtPanic {
                message: "polled after it panicked".to_owned(),
                location: None,
            }));
        };
        // A panic the handler caught itself earlier must not be mistaken for this one.
        LAST.with(|last| last.borrow_mut().take());
        let was_inside = INSIDE.with(|i| i.replace(true));
        let polled = catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx)));
        INSIDE.with(|i| i.set(was_inside));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => {
                // Dropping a panicked future may panic again; contain that too.
                let fut = self.inner.take();
                let _ = catch_unwind(AssertUnwindSafe(move || drop(fut)));
                let (message, location) = LAST
                    .with(|last| last.borrow_mut().take())
                    .unwrap_or_else(|| (payload_message(payload.as_ref()), None));
                Poll::Ready(Err(CaughtPanic { message, location }))
            }
        }
    }
}

impl<T> Drop for CatchPanic<T> {
    fn drop(&mut self) {
        // A timeout or a stop drops the handler's future early; its destructors are user code
        // and may panic too. Contain that here instead of unwinding into the executor.
        if let Some(fut) = self.inner.take() {
            let was_inside = INSIDE.with(|i| i.replace(true));
            if catch_unwind(AssertUnwindSafe(move || drop(fut))).is_err() {
                tracing::error!(
                    "a handler's future panicked while being dropped (after a timeout or stop)"
                );
            }
            INSIDE.with(|i| i.set(was_inside));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn catches_message_and_location() {
        let caught = CatchPanic::new(Box::pin(async {
            tokio::task::yield_now().await;
            panic!("boom {}", 42);
        }))
        .await
        .unwrap_err();
        assert_eq!(caught.message, "boom 42");
        let loc = caught.location.unwrap();
        assert!(loc.contains("panic.rs"), "{loc}");
    }

    #[tokio::test]
    async fn a_panicking_destructor_is_contained() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("destructor boom");
            }
        }
        let fut = CatchPanic::new(Box::pin(async {
            let _bomb = Bomb;
            std::future::pending::<()>().await;
        }));
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(5), fut).await;
        assert!(
            timed_out.is_err(),
            "the future was dropped by the timeout without unwinding"
        );
    }

    #[tokio::test]
    async fn passes_values_through() {
        assert_eq!(CatchPanic::new(Box::pin(async { 7 })).await.unwrap(), 7);
    }
}
