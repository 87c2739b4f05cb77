//! PostgreSQL for tests: the server named by `MEND_TEST_POSTGRES_URL`, one schema per test
//! (dropped when the test ends), so the suite runs in parallel on one server. Without the
//! variable, tests say they were skipped instead of pretending to pass.

/// The server URL, or `None` (and a SKIPPED note on stderr) when it is not set.
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

/// A schema of its own for one test; dropped (with everything in it) on drop.
pub struct Schema {
    /// The server.
    pub url: String,
    /// The schema's name (`PREFIX_` + random hex).
    pub name: String,
}

impl Schema {
    /// A fresh name on `url`; mend creates the schema when a store opens it.
    pub fn new(url: &str, prefix: &str) -> Self {
        let name = format!(
            "{prefix}_{}",
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        Schema {
            url: url.to_owned(),
            name,
        }
    }

    /// The server URL with this schema selected (`?schema=NAME`).
    pub fn store_url(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={}", self.url, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop may run inside a test's runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(client) = connect(&url).await {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A connection to `url` as mend makes them (`sslmode` and `sslrootcert` honoured; its
/// driver task runs on the current runtime).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, mend::store::StoreError> {
    mend_postgres::connect(url).await
}
