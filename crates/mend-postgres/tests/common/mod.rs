//! Test support: a fresh schema per test on the server named by `MEND_TEST_POSTGRES_URL`
//! (see `mend_test::pg`).

#![allow(dead_code)]

use mend_postgres::{PgConfig, PgStore};
pub(crate) use mend_test::pg::{server_url, Schema};

/// A migrated store in a fresh schema, with small pools (the suite runs many at once).
pub(crate) async fn fresh_store(test: &str) -> Option<(PgStore, Schema)> {
    let url = server_url(test)?;
    let guard = Schema::new(&url, "mend_t");
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
pub(crate) async fn client() -> tokio_postgres::Client {
    let url = std::env::var("MEND_TEST_POSTGRES_URL").expect("MEND_TEST_POSTGRES_URL");
    mend_test::pg::connect(&url)
        .await
        .expect("connect to the test server")
}
