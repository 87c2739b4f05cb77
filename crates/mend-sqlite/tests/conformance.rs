//! The store conformance suite, run against SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use mend_test::TestStore;

async fn fresh() -> Option<TestStore> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("conformance.db");
    let store = mend_sqlite::SqliteStore::open(path.to_str().expect("utf-8 path"))
        .await
        .expect("open sqlite");
    Some(TestStore {
        store: Arc::new(store),
        guard: Box::new(dir),
    })
}

mend_test::store_conformance!(fresh);
