//! The store conformance suite, run against SQLite.

#![expect(clippy::expect_used)]

use mend_test::TestStore;

async fn fresh() -> Option<TestStore> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("conformance.db");
    let store = mend_sqlite::SqliteStore::open(path.to_str().expect("utf-8 path"))
        .await
        .expect("open sqlite");
    Some(TestStore::new(store, dir))
}

/// Effects for the transactional-completion check: one that writes (a temp table of its own
/// transaction's connection) and one that fails.
fn effects() -> mend_test::conformance::EffectKit {
    mend_test::conformance::EffectKit {
        ok: || {
            mend_sqlite::effect(|conn| {
                conn.execute_batch("CREATE TEMP TABLE IF NOT EXISTS effect_ran (n INTEGER)")?;
                conn.execute("INSERT INTO effect_ran (n) VALUES (1)", [])?;
                Ok(())
            })
        },
        failing: || mend_sqlite::effect(|conn| conn.execute_batch("SELECT * FROM no_such_table")),
    }
}

mend_test::store_conformance!(fresh, effects = effects());
