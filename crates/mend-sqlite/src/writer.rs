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
                Err(StoreError::Database(
                    "internal error: a store command panicked; it was rolled back".into(),
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

pub(crate) fn run(conn: Connection, path: String, rx: mpsc::Receiver<Command>) {
    let mut synchronous_full = true;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        let durable = group.iter().any(|c| c.durable);
        if durable != synchronous_full {
            let pragma = if durable {
                "PRAGMA synchronous=FULL"
            } else {
                "PRAGMA synchronous=NORMAL"
            };
            if conn.execute_batch(pragma).is_ok() {
                synchronous_full = durable;
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let e = map_err(&path, e);
            for c in group {
                let (_, reply) = (c.run)(Err(e.clone()));
                reply(Err(e.clone()));
            }
            continue;
        }
        let mut replies = Vec::with_capacity(group.len());
        for c in group {
            let savepoint = conn.execute_batch("SAVEPOINT cmd");
            let (ok, reply) = (c.run)(Ok(&conn));
            if savepoint.is_ok() {
                let end = if ok {
                    "RELEASE cmd"
                } else {
                    "ROLLBACK TO cmd; RELEASE cmd"
                };
                if let Err(e) = conn.execute_batch(end) {
                    tracing::error!(error = %e, "savepoint cleanup failed");
                }
            }
            replies.push(reply);
        }
        let commit = conn.execute_batch("COMMIT").map_err(|e| map_err(&path, e));
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(commit.clone());
        }
    }
}
