//! The store conformance suite, run against PostgreSQL (one schema per test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use mend_test::TestStore;

async fn fresh() -> Option<TestStore> {
    let (store, guard) = common::fresh_store("postgres conformance").await?;
    Some(TestStore {
        store: Arc::new(store),
        guard: Box::new(guard),
    })
}

mend_test::store_conformance!(fresh);
