//! Background upkeep, one small service per file. Each is safe to run from several processes
//! at once: every store call in a pass is idempotent, so two passes racing do no harm.

pub mod history;
pub mod pruner;
pub mod rescuer;
pub mod rollouts;
pub mod scheduler;

/// Runs `pass` every `tick` while this process leads, until `stop`. A failure is logged once
/// (naming `what`) until a pass succeeds again: several warnings a second about one outage
/// would bury everything else.
pub(crate) async fn while_leading<F, Fut>(
    store: std::sync::Arc<dyn crate::store::Store>,
    what: &str,
    tick: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
    mut pass: F,
) where
    F: FnMut(std::sync::Arc<dyn crate::store::Store>) -> Fut,
    Fut: std::future::Future<Output = crate::store::Result<()>>,
{
    let mut failing = false;
    loop {
        let result = match store.is_leader().await {
            Ok(true) => pass(store.clone()).await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "{what} failed; will keep trying");
            }
            Err(e) => tracing::debug!(error = %e, "{what} still fails"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
    }
}
