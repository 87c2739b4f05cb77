//! Turns PostgreSQL and pool errors into [`StoreError`]s that say what a person can do.

use mend::store::StoreError;

/// Maps a driver error. `target` is the redacted URL.
pub(crate) fn map_pg(target: &str, e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let detail = format!("{} (SQLSTATE {code})", db.message());
        return match code.get(..2) {
            // Connection exceptions and operator intervention (shutdown, terminated backend).
            Some("08") | Some("57") => StoreError::Unavailable {
                target: target.to_owned(),
                detail: format!("{detail}; mend reconnects and retries"),
            },
            Some("53") => StoreError::Database(format!(
                "{detail}; the PostgreSQL server is out of resources (connections, memory or disk)"
            )),
            Some("3F") | Some("42") if code == "3F000" || code == "42P01" => StoreError::Database(
                format!("{detail}; the mend schema is missing: run `mend migrate --database URL`"),
            ),
            Some("40") => StoreError::Locked { detail },
            _ => StoreError::Database(detail),
        };
    }
    if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) {
        return StoreError::Unavailable {
            target: target.to_owned(),
            detail: format!("{e}; is PostgreSQL running and reachable?"),
        };
    }
    StoreError::Database(e.to_string())
}

/// Maps a pool error (no connection could be had).
pub(crate) fn map_pool(target: &str, e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => map_pg(target, e),
        PoolError::Timeout(_) => StoreError::Unavailable {
            target: target.to_owned(),
            detail: "timed out waiting for a database connection; is PostgreSQL up, and is max_connections large enough for every node's pool?".into(),
        },
        PoolError::Closed => StoreError::Closed,
        other => StoreError::Unavailable {
            target: target.to_owned(),
            detail: other.to_string(),
        },
    }
}

/// A row that cannot be decoded.
pub(crate) fn decode(
    id: Option<uuid::Uuid>,
    column: &'static str,
    detail: impl ToString,
) -> StoreError {
    StoreError::Decode {
        id: id.map_or_else(|| "?".to_owned(), |u| u.to_string()),
        column,
        detail: detail.to_string(),
    }
}
