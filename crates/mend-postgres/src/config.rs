//! What the store is opened with: the URL (with mend's own `schema` parameter and the TLS
//! parameters), the settings, and the two connection pools built from them. Building the
//! pools connects to nothing (they open connections on first use); [`connect`] is the one
//! place that connects at once, for tools that need a single connection.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use mend::store::{Result, StoreError};

use crate::tls::{self, MakeRustls};

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// The schema holding mend's tables (created if missing). Default `mend`. A `schema`
    /// parameter in the URL (`?schema=NAME`) overrides it.
    pub schema: String,
    /// Most connections for enqueues, outcomes and reads. Default 8.
    pub pool_size: usize,
    /// Most connections for claims and node heartbeats. Default 4.
    pub claim_pool_size: usize,
    /// Claims and node heartbeats commit without waiting for the WAL flush (see the module
    /// docs).
    /// Default `true`.
    pub async_claims: bool,
    /// How long to wait for a pooled connection before reporting the database unavailable.
    pub wait_timeout: Duration,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            schema: "mend".into(),
            pool_size: 8,
            claim_pool_size: 4,
            async_claims: true,
            wait_timeout: Duration::from_secs(10),
        }
    }
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A database URL with any password (in the user info or a `password` parameter) hidden, for
/// output, logs and errors.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((creds, host)) => match creds.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// Splits mend's own `schema` parameter off a URL; the rest goes to the driver.
pub fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| match p.split_once('=') {
            Some(("schema", v)) => {
                schema = Some(v.to_owned());
                false
            }
            _ => !p.is_empty(),
        })
        .collect();
    if rest.is_empty() {
        (base.to_owned(), schema)
    } else {
        (format!("{base}?{}", rest.join("&")), schema)
    }
}

/// Whether `s` may be used as the schema name (it is quoted into SQL text).
fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 48
}

/// A stable 31-bit number for the schema: the advisory-lock namespace of its nodes, leader
/// and migrations (FNV-1a; the same in every process and version).
fn lock_namespace(schema: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in format!("mend:{schema}").bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h & 0x7fff_ffff) as i32
}

/// Everything the store derives from its URL and settings before touching the database.
pub(crate) struct Connection {
    /// The URL with any password hidden, for errors and logs.
    pub(crate) target: String,
    /// The driver's settings (for the session connection).
    pub(crate) pg: tokio_postgres::Config,
    /// The TLS connector every connection uses (`sslmode`, `sslrootcert`).
    pub(crate) tls: MakeRustls,
    /// The schema name, checked.
    pub(crate) schema: String,
    /// The schema name quoted for SQL text.
    pub(crate) schema_q: String,
    /// The schema's advisory-lock namespace.
    pub(crate) ns: i32,
    /// This store's name in the notifications its own connections send (the `mend.origin`
    /// setting of every pooled connection): its listener ignores them, since the store wakes
    /// its own fetchers itself.
    pub(crate) origin: String,
    /// Enqueues, outcomes and reads.
    pub(crate) pool: Pool,
    /// Claims and node heartbeats.
    pub(crate) fast: Pool,
}

/// What the driver needs to open one connection to a URL: its settings and the TLS connector.
pub(crate) struct Driver {
    /// The URL with any password hidden, for errors and logs.
    pub(crate) target: String,
    /// The driver's settings, TLS mode included.
    pub(crate) pg: tokio_postgres::Config,
    /// The TLS connector for the URL's `sslmode` and `sslrootcert`.
    pub(crate) tls: MakeRustls,
    /// mend's own `schema` parameter, when the URL has one.
    pub(crate) schema: Option<String>,
}

/// Parses `url`: mend's `schema`, the TLS parameters, then the driver's own.
pub(crate) fn driver(url: &str) -> Result<Driver> {
    let target = redact_url(url);
    let bad = |detail: String| StoreError::Unavailable {
        target: target.clone(),
        detail,
        source: None,
    };
    let (driver_url, schema) = split_schema(url);
    let (driver_url, tls_opts) = tls::split_tls(&driver_url).map_err(bad)?;
    let tls = MakeRustls::new(&tls_opts).map_err(bad)?;
    let mut pg =
        tokio_postgres::Config::from_str(&driver_url).map_err(|e| StoreError::Unavailable {
            target: target.clone(),
            detail: format!("{e}; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"),
            source: Some(std::sync::Arc::new(e)),
        })?;
    pg.ssl_mode(tls::driver_mode(tls_opts.mode));
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(5));
    }
    if pg.get_application_name().is_none() {
        pg.application_name("mend");
    }
    Ok(Driver {
        target,
        pg,
        tls,
        schema,
    })
}

/// Checks `url` and `config` and builds the pools.
pub(crate) fn connection(url: &str, mut config: PgConfig) -> Result<Connection> {
    let Driver {
        target,
        pg,
        tls,
        schema: url_schema,
    } = driver(url)?;
    if let Some(s) = url_schema {
        config.schema = s;
    }
    if !valid_schema(&config.schema) {
        return Err(StoreError::Unavailable {
            target,
            detail: format!(
                "schema name {:?} is not allowed: use 1-48 lowercase letters, digits or _",
                config.schema
            ),
            source: None,
        });
    }
    let make_pool = |pg: tokio_postgres::Config, size: usize| {
        let mgr = Manager::from_config(
            pg,
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(mgr)
            .max_size(size.max(1))
            .wait_timeout(Some(config.wait_timeout))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable {
                target: target.clone(),
                detail: format!("cannot build the connection pool: {e}"),
                source: Some(std::sync::Arc::new(e)),
            })
    };
    // Custom plans: the batch statements take arrays whose length the generic plan cannot
    // know (it assumes 10 rows, and then joins a 1000-row batch by scanning every running
    // job per row). Planning each execution costs far less than that.
    // Added to the URL's own `options`, if any.
    // Every pooled connection also says which store it belongs to (see `Connection::origin`).
    let origin = uuid::Uuid::now_v7().simple().to_string();
    let with_options = |extra: &str| {
        let mut c = pg.clone();
        let base = pg.get_options().unwrap_or_default();
        c.options(
            format!("{base} {extra} -c mend.origin={origin}")
                .trim()
                .to_owned(),
        );
        c
    };
    let pool = make_pool(
        with_options("-c plan_cache_mode=force_custom_plan"),
        config.pool_size,
    )?;
    // Claims must walk the claim index in order and stop at LIMIT. A table that grew
    // from empty has statistics that say "one row", and then the planner prefers a bitmap
    // scan of the whole queue plus a sort (measured: 55 ms per claim at 70k waiting jobs
    // instead of well under 1 ms); without bitmap scans the ordered walk is the cheapest.
    // Claims keep the default plan caching: a claim's generic plan is the ordered index
    // walk, and planning every claim would add most of a millisecond to pickup latency.
    let claim_options = if config.async_claims {
        "-c enable_bitmapscan=off -c synchronous_commit=off"
    } else {
        "-c enable_bitmapscan=off"
    };
    let fast = make_pool(with_options(claim_options), config.claim_pool_size)?;
    Ok(Connection {
        schema_q: format!("\"{}\"", config.schema),
        ns: lock_namespace(&config.schema),
        schema: config.schema,
        target,
        pg,
        tls,
        origin,
        pool,
        fast,
    })
}

/// One connection to `url` outside any store (mend's `schema` parameter is ignored), with
/// the URL's `sslmode` and `sslrootcert` honoured like every connection of a store. Its
/// driver task runs on the current runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let d = driver(url)?;
    let (client, conn) =
        d.pg.connect(d.tls)
            .await
            .map_err(|e| crate::error::map_pg(&d.target, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_redacted() {
        assert_eq!(
            split_schema("postgres://u@h/db?schema=abc&sslmode=disable"),
            (
                "postgres://u@h/db?sslmode=disable".to_owned(),
                Some("abc".to_owned())
            )
        );
        assert_eq!(
            split_schema("postgres://u@h/db?schema=abc"),
            ("postgres://u@h/db".to_owned(), Some("abc".to_owned()))
        );
        assert_eq!(split_schema("postgres://u@h/db").1, None);
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=secret"),
            "postgres://h/db?user=u&password=***"
        );
        assert!(!redact_url("postgres://u:p%40ss@h/db").contains("p%40ss"));
    }

    #[test]
    fn redaction_leaves_urls_without_secrets_alone() {
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?sslmode=disable"),
            "postgres://h/db?sslmode=disable"
        );
        assert_eq!(redact_url("sqlite://mend.db"), "sqlite://mend.db");
        assert_eq!(
            redact_url("postgres://h/db?PASSWORD=x&schema=s"),
            "postgres://h/db?PASSWORD=***&schema=s"
        );
    }

    #[test]
    fn schema_names_are_checked_and_namespaced() {
        assert!(valid_schema("mend"));
        assert!(valid_schema("mend_test_01"));
        assert!(!valid_schema("Mend"));
        assert!(!valid_schema("a\"; DROP TABLE x; --"));
        assert!(!valid_schema(""));
        assert!(!valid_schema(&"a".repeat(49)));
        assert_ne!(lock_namespace("a"), lock_namespace("b"));
        assert!(lock_namespace("mend") >= 0);
    }
}
