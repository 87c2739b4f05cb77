//! The single writer: one thread owns the one read-write connection and runs every mutation.
//!
//! Commands that arrive while a transaction is being written are grouped into the next one
//! (group commit), each inside its own savepoint so one failing command does not undo the
//! others. Callers hear back only after the commit, so nobody sees a success that a crash
//! could undo. Transactions that hold only claims and heartbeats are committed without an
//! fsync (`synchronous=NORMAL`): losing one to power loss just leaves the job `available`,
//! and the next durable commit syncs them anyway.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use mend::store::{Result, StoreError};
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::error::map_err;

/// Most commands grouped in one transaction.
const MAX_GROUP: usize = 256;

type Reply = Box<dyn FnOnce(Result<()>) + Send>;

/// Runs a command against the open transaction (or is told why there is none).
type Run = Box<dyn FnOnce(Result<&Connection>) -> (bool, Reply) + Send>;

pub(crate) struct Command {
    durable: bool,
    run: Run,
}

impl Command {
    /// A command running `f` in the writer's transaction; the receiver hears after commit.
    pub(crate) fn new<T, F>(durable: bool, f: F) -> (Self, oneshot::Receiver<Result<T>>)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move |conn: Result<&Connection>| -> (bool, Reply) {
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    return (
                        false,
                        Box::new(move |_| {
                            let _ = tx.send(Err(e));
                        }),
                    )
                }
            };
            let r = catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
                Err(StoreError::database(
                    "internal error: a store command panicked; it was rolled back",
                ))
            });
            match r {
                Ok(v) => (
                    true,
                    Box::new(move |commit: Result<()>| {
                        let _ = tx.send(commit.map(|()| v));
                    }),
                ),
                Err(e) => (
                    false,
                    Box::new(move |_| {
                        let _ = tx.send(Err(e));
                    }),
                ),
            }
        });
        (Command { durable, run }, rx)
    }
}

pub(crate) fn run(
    conn: Connection,
    path: String,
    synchronous_full: bool,
    rx: mpsc::Receiver<Command>,
) {
    // What `PRAGMA synchronous` is set to right now (open_writer set the configured level).
    let mut full_now = synchronous_full;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        // Durable commands get FULL when the store is configured for it; a group of claims and
        // heartbeats only never waits for the disk.
        let want_full = synchronous_full && group.iter().any(|c| c.durable);
        if want_full != full_now {
            let pragma = if want_full {
                "PRAGMA synchronous=FULL"
            } else {
                "PRAGMA synchronous=NORMAL"
            };
            match conn.execute_batch(pragma) {
                Ok(()) => full_now = want_full,
                Err(e) if want_full => {
                    // Never commit a durable command with weaker durability than promised.
                    let e = map_err(&path, e);
                    tracing::error!(error = %e, "cannot switch to synchronous=FULL; failing this group");
                    fail_all(group, &e);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot switch to synchronous=NORMAL; committing with FULL")
                }
            }
        }
        // A failed COMMIT/ROLLBACK can leave the connection inside a transaction; every later
        // BEGIN would then fail. Start from a clean state.
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            fail_all(group, &map_err(&path, e));
            continue;
        }
        let mut replies = Vec::with_capacity(group.len());
        let mut broken: Option<StoreError> = None;
        for c in group {
            if let Some(e) = &broken {
                let (_, reply) = (c.run)(Err(e.clone()));
                replies.push(reply);
                continue;
            }
            // Each command in its own savepoint, so one failing command does not undo the
            // others. Without a savepoint a failing command could not be undone alone: it
            // does not run at all.
            if let Err(e) = conn.execute_batch("SAVEPOINT cmd") {
                let e = map_err(&path, e);
                let (_, reply) = (c.run)(Err(e.clone()));
                replies.push(reply);
                broken = Some(e);
                continue;
            }
            let (ok, reply) = (c.run)(Ok(&conn));
            let end = if ok {
                "RELEASE cmd"
            } else {
                "ROLLBACK TO cmd; RELEASE cmd"
            };
            if let Err(e) = conn.execute_batch(end) {
                // The command's writes cannot be told apart from the others': undo the group.
                broken = Some(map_err(&path, e));
            }
            replies.push(reply);
        }
        let commit = match broken {
            Some(e) => {
                tracing::error!(error = %e, "a savepoint failed; rolling back the whole group");
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
            None => conn.execute_batch("COMMIT").map_err(|e| map_err(&path, e)),
        };
        if commit.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(commit.clone());
        }
    }
}

fn fail_all(group: Vec<Command>, e: &StoreError) {
    for c in group {
        let (_, reply) = (c.run)(Err(e.clone()));
        reply(Err(e.clone()));
    }
}
