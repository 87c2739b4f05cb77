//! Turns SQLite errors into [`StoreError`]s that say what a person can do.

use mend::store::StoreError;
use rusqlite::ErrorCode;

pub(crate) fn map_err(path: &str, e: rusqlite::Error) -> StoreError {
    let detail = e.to_string();
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.code {
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => {
                return StoreError::Corrupt {
                    path: path.to_owned(),
                    detail,
                }
            }
            ErrorCode::ReadOnly => {
                return StoreError::ReadOnly {
                    path: path.to_owned(),
                    detail,
                }
            }
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return StoreError::Locked { detail }
            }
            ErrorCode::SystemIoFailure | ErrorCode::DiskFull => return StoreError::Io { detail },
            ErrorCode::CannotOpen | ErrorCode::PermissionDenied => {
                return StoreError::Unavailable {
                    target: path.to_owned(),
                    detail,
                }
            }
            _ => {}
        }
    }
    StoreError::Database(detail)
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
