//! Waits with a deadline: poll a condition, receive an event or a channel value. Every wait
//! panics with a message naming what was awaited (and what was last seen), so a hung test fails
//! quickly and legibly instead of hitting the harness's timeout.
//!
//! Nothing here sleeps for a fixed time to "let things happen": each helper returns as soon as
//! the awaited fact is observable.

use std::future::Future;
use std::time::Duration;

use mend::JobEvent;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

/// The default bound for a wait in tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often a poll re-checks its condition.
const POLL: Duration = Duration::from_millis(10);

/// Poll `cond` until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll(what, timeout, || {
        let fut = cond();
        async move { fut.await.then_some(()).ok_or("not yet") }
    })
    .await
}

/// Poll `probe` until it returns `Ok(value)`; panics with `what` and the last `Err` it gave
/// (what was seen instead) after `timeout`.
pub async fn poll<T, E, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting until {what}; last seen: {seen:#?}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Receive events until one for `id` satisfies `pred`; panics on timeout or a closed channel.
pub async fn wait_for_event(
    rx: &mut broadcast::Receiver<JobEvent>,
    id: Uuid,
    what: &str,
    pred: impl Fn(&JobEvent) -> bool,
) -> JobEvent {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("timed out after {WAIT:?} waiting for an event for job {id}: {what}; events seen for it: {seen:#?}"),
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => panic!("event receiver lagged by {n}"),
            Ok(Err(broadcast::error::RecvError::Closed)) => panic!("event channel closed while waiting for {what}"),
            Ok(Ok(ev)) if ev.id == id => {
                if pred(&ev) {
                    return ev;
                }
                seen.push(ev);
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Receive the next value from a channel within [`WAIT`]; panics with `what` otherwise.
pub async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(v)) => v,
        Ok(None) => panic!("channel closed while waiting for {what}"),
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}
