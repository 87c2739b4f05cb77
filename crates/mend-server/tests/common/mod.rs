//! The server fixture: the whole router (every middleware layer) on a fresh SQLite store,
//! called in memory through [`mend_test::http::App`] — no socket, no hand-written client. Only
//! what is particular to mend-server lives here (a validator and a route that panics); the
//! harness itself is `mend_test`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use mend_server::{app_with, AppState};
use mend_test::env::Env;
use mend_test::http::{App, Resp};
use serde_json::Value;

pub(crate) struct Server {
    pub app: App,
    pub state: AppState,
    env: Env,
}

impl std::ops::Deref for Server {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

pub(crate) async fn start(token: Option<&str>, max_body: Option<usize>) -> Server {
    start_with(Env::new().await, token, max_body)
}

/// The same server on PostgreSQL; `None` (with a SKIPPED note) when
/// `MEND_TEST_POSTGRES_URL` is not set.
pub(crate) async fn start_postgres(test: &str) -> Option<Server> {
    Some(start_with(Env::postgres(test).await?, None, None))
}

fn start_with(env: Env, token: Option<&str>, max_body: Option<usize>) -> Server {
    let mut state = AppState::new(env.store.clone());
    state.token = token.map(Arc::from);
    // As `mend serve` on loopback: the debug routes answer.
    state.debug_endpoints = true;
    if let Some(m) = max_body {
        state.max_body_bytes = m;
    }
    state.validator = Some(Arc::new(|kind: &str, args: &Value| {
        if kind == "noop" && args.get("sleep_ms").is_some_and(|v| !v.is_u64()) {
            return Err("noop: sleep_ms must be a whole number".into());
        }
        Ok(())
    }));
    let extra: Router<AppState> = Router::new().route(
        "/test/panic",
        get(|| async {
            if true {
                panic!("a bug in a handler");
            }
            "unreachable"
        }),
    );
    Server {
        app: App(app_with(state.clone(), extra)),
        state,
        env,
    }
}

impl Server {
    /// `POST /v1/jobs` with an `idempotency-key`.
    pub(crate) async fn enqueue_with_key(&self, body: Value, key: &str) -> Resp {
        self.call_with("POST", "/v1/jobs", Some(body), &[("idempotency-key", key)])
            .await
    }

    /// A remote worker's claim (`POST /v1/workers/claim`).
    pub(crate) async fn claim(&self, body: Value) -> Resp {
        self.post("/v1/workers/claim", body).await
    }

    pub(crate) async fn job_count(&self) -> usize {
        self.env.jobs().await.len()
    }
}
