//! Turns SQLite errors into [`StoreError`]s that say what a person can do.

use std::sync::Arc;

use mend::store::{DriverError, StoreError};
use rusqlite::ErrorCode;

pub(crate) fn map_err(path: &str, e: rusqlite::Error) -> StoreError {
    let detail = e.to_string();
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    let source: Option<DriverError> = Some(Arc::new(e));
    match code {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_owned(),
            detail,
            source,
        },
        // SQLite writes `-wal` and `-shm` files beside the database: the directory must be
        // writable too, which is the part people miss.
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly {
            path: path.to_owned(),
            detail: format!(
                "{detail}; SQLite also needs to create `-wal` and `-shm` files in the file's directory"
            ),
            source,
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked {
            detail: format!("{detail}; waited for SQLite's busy timeout"),
            source,
        },
        Some(ErrorCode::SystemIoFailure | ErrorCode::DiskFull) => {
            StoreError::Io { detail, source }
        }
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => StoreError::Unavailable {
            target: path.to_owned(),
            detail,
            source,
        },
        _ => StoreError::Database {
            message: detail,
            source,
        },
    }
}

pub(crate) fn decode(id: &[u8], column: &'static str, detail: impl ToString) -> StoreError {
    let id = uuid::Uuid::from_slice(id)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| format!("{id:02x?}"));
    StoreError::Decode {
        id,
        column,
        detail: detail.to_string(),
    }
}
