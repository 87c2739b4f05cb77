//! Test support: a fresh schema per test on the server named by `MEND_TEST_POSTGRES_URL`,
//! dropped when the test ends. Without the variable the tests say they were skipped.

#![allow(dead_code)]

use mend_postgres::{PgConfig, PgStore};

/// The server URL, or `None` (and a note on stderr) when the tests cannot run here.
pub fn server_url(test: &str) -> Option<String> {
    match std::env::var("MEND_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED {test}: MEND_TEST_POSTGRES_URL is not set (CI sets it; see .ci/run)"
            );
            None
        }
    }
}

/// Drops its schema on drop.
pub struct SchemaGuard {
    pub url: String,
    pub schema: String,
}

impl SchemaGuard {
    pub fn new(url: &str) -> Self {
        let schema = format!(
            "mend_t_{}",
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        SchemaGuard {
            url: url.to_owned(),
            schema,
        }
    }

    /// The URL with this schema selected.
    pub fn store_url(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={}", self.url, self.schema)
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop runs inside the test's runtime; use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A migrated store in a fresh schema, with small pools (the suite runs many at once).
pub async fn fresh_store(test: &str) -> Option<(PgStore, SchemaGuard)> {
    let url = server_url(test)?;
    let guard = SchemaGuard::new(&url);
    let store = PgStore::open_with(
        &guard.store_url(),
        PgConfig {
            pool_size: 3,
            claim_pool_size: 2,
            ..PgConfig::default()
        },
    )
    .await
    .expect("open the PostgreSQL store (is MEND_TEST_POSTGRES_URL reachable?)");
    Some((store, guard))
}

/// A plain connection to the test server (call only after `server_url` said it is set).
pub async fn client() -> tokio_postgres::Client {
    let url = std::env::var("MEND_TEST_POSTGRES_URL").expect("MEND_TEST_POSTGRES_URL");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(conn);
    client
}
