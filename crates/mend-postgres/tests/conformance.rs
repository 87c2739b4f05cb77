//! The store conformance suite, run against PostgreSQL (one schema per test).

#![expect(clippy::expect_used)]

mod common;

use mend_test::TestStore;

async fn fresh() -> Option<TestStore> {
    let (store, guard) = common::fresh_store("postgres conformance").await?;
    Some(TestStore::new(store, guard))
}

/// Effects for the transactional-completion check: one that writes (a temp table of its own
/// transaction) and one that fails.
fn effects() -> mend_test::conformance::EffectKit {
    mend_test::conformance::EffectKit {
        ok: || {
            mend_postgres::effect(|tx| {
                Box::pin(async move {
                    tx.batch_execute(
                        "CREATE TEMP TABLE IF NOT EXISTS effect_ran (n int); INSERT INTO effect_ran VALUES (1)",
                    )
                    .await
                })
            })
        },
        failing: || {
            mend_postgres::effect(|tx| {
                Box::pin(async move { tx.batch_execute("SELECT * FROM no_such_table").await })
            })
        },
    }
}

mend_test::store_conformance!(fresh, effects = effects());
