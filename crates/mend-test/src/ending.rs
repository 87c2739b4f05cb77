//! How a test handler ends its attempt, as job args: the rows of the guarantee table (return,
//! error, panic, timeout, stopped from outside) as one enum, so every test of what runs after
//! an attempt drives its handler the same way.

use std::time::Duration;

use mend::JobError;
use serde::{Deserialize, Serialize};

/// How a test handler ends its attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ending {
    /// Returns `Ok`.
    Ok,
    /// Returns a retryable error ("it went wrong").
    Err,
    /// Panics ("it blew up").
    Panic,
    /// Sleeps a minute: past any timeout a test sets.
    Hang,
    /// Waits until the test stops it (cancel, shutdown).
    Block,
}

impl Ending {
    /// Ends the attempt this way (the handler's last step).
    pub async fn run(self) -> Result<(), JobError> {
        match self {
            Ending::Ok => Ok(()),
            Ending::Err => Err(JobError::retry("it went wrong")),
            Ending::Panic => panic!("it blew up"),
            Ending::Hang => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }
            Ending::Block => std::future::pending().await,
        }
    }
}
