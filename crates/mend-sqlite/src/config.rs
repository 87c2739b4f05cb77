//! What the store is opened with: the URL, the settings, and how each connection is set up
//! (WAL, durability, busy timeout). It opens connections and runs nothing else on them.

use std::time::Duration;

use mend::store::{Result, StoreError};
use rusqlite::{Connection, OpenFlags};

use crate::error::map_err;
use crate::schema;

/// How long a statement waits for another process's write lock before giving up. Five seconds
/// covers a checkpoint or a large batch from a neighbour; longer would hide a stuck process.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// `synchronous=FULL` for durable commits (enqueue, outcomes): survives power loss. With
    /// `false`, commits survive a process crash but not power loss. Default `true`.
    pub synchronous_full: bool,
    /// How long to wait for another process's write lock; [`BUSY_TIMEOUT`] by default.
    pub busy_timeout: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            synchronous_full: true,
            busy_timeout: BUSY_TIMEOUT,
        }
    }
}

/// Accepts `sqlite://path`, `sqlite:path` or a plain path.
pub fn parse_url(url: &str) -> Result<String> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() {
        return Err(StoreError::Unavailable {
            target: url.to_owned(),
            detail: "no file path; use sqlite://PATH, e.g. sqlite://mend.db".into(),
            source: None,
        });
    }
    if path.contains(":memory:") {
        return Err(StoreError::Unavailable {
            target: url.to_owned(),
            detail: "in-memory databases cannot be shared by the writer and readers; use a file (a temporary directory is fine for tests)".into(),
 source: None,
});
    }
    Ok(path.to_owned())
}

/// The writer's read-write connection, in WAL mode with the configured durability.
pub(crate) fn open_writer(path: &str, config: &SqliteConfig) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| map_err(path, e))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(|e| map_err(path, e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| map_err(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::ReadOnly {
            path: path.to_owned(),
            detail: format!("could not switch to WAL mode (journal_mode is {mode})"),
            source: None,
        });
    }
    let sync = if config.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    // temp_store=MEMORY keeps savepoint journals and sorter scratch off the disk.
    conn.execute_batch(&format!(
        "PRAGMA synchronous={sync}; PRAGMA foreign_keys=OFF; PRAGMA temp_store=MEMORY;"
    ))
    .map_err(|e| map_err(path, e))?;
    conn.set_prepared_statement_cache_capacity(64);
    // A read-only file (or mount, or `mode=ro`) opens "successfully" and would only fail on
    // the first write; say so now instead.
    if conn
        .is_readonly(rusqlite::DatabaseName::Main)
        .map_err(|e| map_err(path, e))?
    {
        return Err(StoreError::ReadOnly {
            path: path.to_owned(),
            detail: "SQLite opened the file read-only; check the file's and its directory's permissions (SQLite also needs to create `-wal` and `-shm` files beside it)".into(),
            source: None,
        });
    }
    Ok(conn)
}

/// A read-only connection for the reader pool.
pub(crate) fn open_reader(path: &str, busy_timeout: Duration) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| map_err(path, e))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| map_err(path, e))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Migrates in one immediate transaction, before the writer thread takes the connection.
pub(crate) fn migrate_in_tx(conn: &Connection, path: &str) -> Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| map_err(path, e))?;
    match schema::migrate(conn, path) {
        Ok(()) => conn.execute_batch("COMMIT").map_err(|e| map_err(path, e)),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
