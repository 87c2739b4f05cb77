//! Waiting for SIGTERM or SIGINT (Ctrl-C), the signals a supervisor or a person sends to ask a
//! process to stop.

/// Listens for SIGTERM and SIGINT from the moment it is created: a process that says it is
/// ready only after creating this cannot be killed outright by a signal sent right after
/// (before a listener exists, SIGTERM's default action ends the process).
pub struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Starts listening (needs a tokio runtime).
    pub fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(term), Ok(int)) => Signals {
                    streams: Some((term, int)),
                },
                _ => {
                    tracing::warn!("cannot listen for SIGTERM/SIGINT; waiting for Ctrl-C only");
                    Signals { streams: None }
                }
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Completes on the next SIGTERM or SIGINT (on non-Unix systems, Ctrl-C).
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((term, int)) = &mut self.streams {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Completes on the next SIGTERM or SIGINT (on non-Unix systems, Ctrl-C).
pub async fn wait_for_signal() {
    Signals::listen().recv().await
}
