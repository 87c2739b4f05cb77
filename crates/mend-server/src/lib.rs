//! The mend HTTP API: JSON over axum, versioned under `/v1`, so any language can enqueue,
//! inspect, cancel and retry jobs.
//!
//! [`app`] builds the router with its middleware: request ids (`x-request-id`), tracing spans,
//! panic catching (a handler panic answers 500 problem+json and the server keeps serving),
//! per-request timeouts, a body-size limit (413), and bearer-token auth with roles when any
//! token exists ([`roles`] says which role each route needs; [`tokens`] resolves a token),
//! with changes written to the audit log and secrets masked for everyone but admins. Every
//! error is RFC 9457 problem+json ([`error::ApiError`]). Bad input never reaches the store:
//! requests are validated first, and a batch is stored all or nothing.

mod dashboard;
pub mod error;
mod middleware;
pub mod otel;
mod remote;
pub mod roles;
pub mod routes;
pub mod tokens;

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
    /// The configured admin bearer token (`--token`); with neither it nor a stored token the
    /// server answers loopback callers only (see `mend serve`).
    pub token: Option<Arc<str>>,
    /// The stored tokens (`mend tokens create`), cached; see [`tokens`].
    pub tokens: tokens::Tokens,
    /// Per-kind args checks at enqueue time.
    pub validator: Option<ArgsValidator>,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// Per-request time limit.
    pub request_timeout: Duration,
    /// The in-process worker, for `/metrics`, readiness and cancels (none when the server only
    /// serves the API).
    pub worker: Option<mend::WorkerHandle>,
    /// Jobs enqueued through this server.
    pub enqueued: Arc<std::sync::atomic::AtomicU64>,
    /// Whether the `/debug/*` routes (CPU profiles, live attempts) answer; when false they
    /// answer 404. `mend serve` turns them on for a loopback address or `--debug-endpoints`.
    pub debug_endpoints: bool,
    /// The attempts handed to remote workers, remembered for their outcomes' history.
    pub remote_claims: Arc<remote::RemoteClaims>,
}

impl AppState {
    /// State with defaults: no token, ready, no validator, debug endpoints off.
    pub fn new(store: Arc<dyn Store>) -> Self {
        AppState {
            tokens: tokens::Tokens::new(store.clone()),
            store,
            token: None,
            validator: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            worker: None,
            enqueued: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            debug_endpoints: false,
            remote_claims: Arc::default(),
        }
    }

    /// Whether the server accepts work: the worker's readiness, which goes false when its
    /// shutdown begins (one flag for both; a server without a worker is always ready).
    pub fn is_ready(&self) -> bool {
        self.worker.as_ref().is_none_or(|w| w.is_ready())
    }

    /// The client every route that changes a job goes through: the worker's own when this
    /// server runs one (a cancel then stops a running attempt here at once).
    pub fn client(&self) -> mend::Client {
        match &self.worker {
            Some(w) => w.client(),
            None => mend::Client::new(self.store.clone()),
        }
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
        .merge(dashboard::router())
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
