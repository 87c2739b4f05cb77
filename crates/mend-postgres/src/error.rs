//! Turns PostgreSQL and pool errors into [`StoreError`]s that say what a person can do.

use std::sync::Arc;

use mend::store::{DriverError, StoreError};

/// Maps a driver error, kept as the source. `target` is the redacted URL.
pub(crate) fn map_pg(target: &str, e: tokio_postgres::Error) -> StoreError {
    let db = e
        .as_db_error()
        .map(|db| (db.code().code().to_owned(), db.message().to_owned()));
    let unreachable =
        e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    // The driver's message names only the kind of failure ("error performing TLS
    // handshake"); the cause says which.
    let plain = match std::error::Error::source(&e) {
        Some(cause) if db.is_none() => format!("{e}: {cause}"),
        _ => e.to_string(),
    };
    let tls = plain.starts_with("error performing TLS handshake");
    let source: Option<DriverError> = Some(Arc::new(e));
    let database = |message: String| StoreError::Database {
        message,
        source: source.clone(),
    };
    let Some((code, message)) = db else {
        return if tls {
            StoreError::Unavailable {
                target: target.to_owned(),
                detail: format!(
                    "{plain}; check sslmode and sslrootcert in the database URL (verify-ca needs the CA that signed the server's certificate, verify-full also a certificate naming the URL's host)"
                ),
                source,
            }
        } else if unreachable {
            StoreError::Unavailable {
                target: target.to_owned(),
                detail: format!("{plain}; is PostgreSQL running and reachable?"),
                source,
            }
        } else {
            database(plain)
        };
    };
    let detail = format!("{message} (SQLSTATE {code})");
    match code.get(..2) {
        // Connection exceptions and operator intervention (shutdown, terminated backend).
        Some("08") | Some("57") => StoreError::Unavailable {
            target: target.to_owned(),
            detail: format!("{detail}; mend reconnects and retries"),
            source,
        },
        Some("53") => database(format!(
            "{detail}; the PostgreSQL server is out of resources (connections, memory or disk)"
        )),
        Some("3F") | Some("42") if code == "3F000" || code == "42P01" => database(format!(
            "{detail}; the mend schema is missing: run `mend migrate --database URL`"
        )),
        Some("40") => StoreError::Locked { detail, source },
        _ => database(detail),
    }
}

/// Maps a pool error (no connection could be had).
pub(crate) fn map_pool(target: &str, e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => map_pg(target, e),
        PoolError::Timeout(_) => StoreError::Unavailable {
            target: target.to_owned(),
            detail: "timed out waiting for a database connection; is PostgreSQL up, and is max_connections large enough for every node's pool?".into(),
            source: None,
        },
        PoolError::Closed => StoreError::Closed,
        other => StoreError::Unavailable {
            target: target.to_owned(),
            detail: other.to_string(),
            source: Some(Arc::new(other)),
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
