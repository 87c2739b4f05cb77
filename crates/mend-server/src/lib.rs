//! The mend HTTP API: JSON over axum, versioned under `/v1`, so any language can enqueue,
//! inspect, cancel and retry jobs.
//!
//! [`app`] builds the router with its middleware: request ids (`x-request-id`), tracing spans,
//! panic catching (a handler panic answers 500 problem+json and the server keeps serving),
//! per-request timeouts, a body-size limit (413), and bearer-token auth when a token is
//! configured. Every error is RFC 9457 problem+json ([`error::ApiError`]). Bad input never
//! reaches the store: requests are validated first, and a batch is stored all or nothing.

pub mod error;
mod middleware;
pub mod otel;
pub mod routes;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use mend::Store;

pub use error::ApiError;
pub use routes::ApiDoc;

/// Default request body limit: a batch of a thousand jobs with modest args fits.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Default per-request time limit.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Most jobs in one batch request.
pub const MAX_BATCH: usize = 1000;

/// Checks a job's args for a kind before it is stored (the built-in executors' rules); `Err`
/// carries a message naming the field and what was expected.
pub type ArgsValidator = Arc<dyn Fn(&str, &serde_json::Value) -> Result<(), String> + Send + Sync>;

/// What the API needs.
#[derive(Clone)]
pub struct AppState {
    /// The job store.
    pub store: Arc<dyn Store>,
    /// Bearer token; `None` means no auth (only allowed on loopback, see `mend serve`).
    pub token: Option<Arc<str>>,
    /// False once shutdown has begun: `/readyz` answers 503.
    pub ready: Arc<AtomicBool>,
    /// Per-kind args checks at enqueue time.
    pub validator: Option<ArgsValidator>,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// Per-request time limit.
    pub request_timeout: Duration,
    /// The in-process workers, for `/metrics` (none when the server only serves the API).
    pub worker: Option<mend::WorkerHandle>,
    /// Jobs enqueued through this server.
    pub enqueued: Arc<std::sync::atomic::AtomicU64>,
}

impl AppState {
    /// State with defaults: no token, ready, no validator.
    pub fn new(store: Arc<dyn Store>) -> Self {
        AppState {
            store,
            token: None,
            ready: Arc::new(AtomicBool::new(true)),
            validator: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            worker: None,
            enqueued: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Whether the server accepts work.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The router with all routes and middleware.
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// [`app`] plus extra routes (tests add a route that panics), under the same middleware.
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    let limit = state.max_body_bytes;
    routes::router()
        .merge(extra)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::auth,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::guard,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}
