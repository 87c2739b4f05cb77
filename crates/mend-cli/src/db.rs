//! Opening a store from a database URL, the one place that knows every backend:
//! `sqlite://PATH` (the embedded default) and `postgres://...` (with the `postgres` feature,
//! on by default).

use std::sync::Arc;

use anyhow::{bail, Context};
use mend::Store;

/// Settings that only some backends use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenOptions {
    /// SQLite: `synchronous=FULL` commits (survive power loss).
    pub sqlite_fsync: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { sqlite_fsync: true }
    }
}

/// Whether the URL names a PostgreSQL database.
pub(crate) fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The URL with any password hidden, for output and logs.
pub(crate) use mend_postgres::redact_url as redact;

/// Opens (and migrates) the store at `url`.
pub(crate) async fn open(url: &str, opts: OpenOptions) -> anyhow::Result<Arc<dyn Store>> {
    let shown = redact(url);
    if is_postgres(url) {
        return open_postgres(url, &shown).await;
    }
    if url.contains("://") && !url.starts_with("sqlite:") {
        bail!("unsupported database URL {shown}: use sqlite://PATH or postgres://USER@HOST/DB");
    }
    let config = mend_sqlite::SqliteConfig {
        synchronous_full: opts.sqlite_fsync,
        ..Default::default()
    };
    Ok(Arc::new(
        mend_sqlite::SqliteStore::open_with(url, config)
            .await
            .with_context(|| format!("opening {shown}"))?,
    ))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, shown: &str) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(
        mend_postgres::PgStore::open(url)
            .await
            .with_context(|| format!("opening {shown}"))?,
    ))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str, shown: &str) -> anyhow::Result<Arc<dyn Store>> {
    bail!("{shown}: this mend was built without PostgreSQL support; rebuild with `--features postgres`")
}

/// The newest schema version this build knows for the URL's backend.
pub(crate) fn schema_version(url: &str) -> i64 {
    #[cfg(feature = "postgres")]
    if is_postgres(url) {
        return mend_postgres::SCHEMA_VERSION;
    }
    let _ = url;
    mend_sqlite::SCHEMA_VERSION
}

/// The database URL the admin commands use, as `mend serve` picks it: the flag (or
/// `MEND_DATABASE_URL`), else `database` in the config file (the one named, or `./mend.toml`
/// when it exists), else `sqlite://mend.db`.
pub(crate) fn database_url(
    database: Option<&str>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    if let Some(url) = database {
        return Ok(url.to_owned());
    }
    let path = config.map(std::path::Path::to_path_buf).or_else(|| {
        let p = std::path::PathBuf::from("mend.toml");
        p.exists().then_some(p)
    });
    if let Some(p) = path {
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("reading the config file {}", p.display()))?;
        let value: toml::Value = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid mend.toml", p.display()))?;
        if let Some(url) = value.get("database").and_then(|v| v.as_str()) {
            return Ok(url.to_owned());
        }
    }
    Ok("sqlite://mend.db".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(
            redact("postgres://h/db?user=u&password=pw&schema=s"),
            "postgres://h/db?user=u&password=***&schema=s"
        );
        assert!(is_postgres("postgresql://h/db"));
        assert!(!is_postgres("sqlite://x.db"));
    }
}
