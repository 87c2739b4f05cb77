//! The dashboard: HTML pages under `/` for seeing every job, queue and node and acting on them,
//! served by `mend serve` on the API's port.
//!
//! Pages are rendered on the server (maud) from the same store the API reads, with one small
//! script of our own (`assets/app.js`) for local times and live refresh, so the dashboard is
//! part of the binary, needs no build step, and works without JavaScript. The gate in this
//! module adds the browser protections the API does not need: a session cookie instead of a
//! bearer header, an Origin check on every change, and a strict Content-Security-Policy.

mod assets;
mod auth;
mod chart;
mod html;
mod job;
mod jobs;
mod nodes;
mod overview;
mod queues;
mod rollouts;
pub(crate) mod why;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

/// Whether `path` belongs to the dashboard (and so is guarded by [`gate`], not by the API's
/// bearer check).
pub(crate) fn is_dashboard_path(path: &str) -> bool {
    let first = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .next()
        .unwrap_or("");
    matches!(
        first,
        "" | "jobs" | "queues" | "nodes" | "rollouts" | "login" | "logout" | "assets"
    )
}

/// The dashboard's routes, behind [`gate`].
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/jobs", get(jobs::page))
        .route("/jobs/bulk", post(jobs::bulk))
        .route("/jobs/{id}", get(job::page))
        .route("/jobs/{id}/{action}", post(job::action))
        .route("/queues", get(queues::page))
        .route("/queues/{name}/{action}", post(queues::action))
        .route("/nodes", get(nodes::page))
        .route("/rollouts", get(rollouts::list))
        .route("/rollouts/{id}", get(rollouts::page))
        .route("/rollouts/{id}/{action}", post(rollouts::action))
        .route("/login", get(auth::form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/app.js", get(assets::js))
        .route("/assets/app.css", get(assets::css))
        .route_layer(axum::middleware::from_fn(gate))
}

/// Content-Security-Policy of every dashboard answer: our own script and styles only, no
/// inline code, no framing, forms post to this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Browser protections for every dashboard request: cross-site changes are refused, pages
/// need a session when the server has a token, and every answer carries the security headers.
async fn gate(req: Request, next: Next) -> Response {
    let mut resp = match refuse(&req) {
        None => next.run(req).await,
        Some(resp) => resp,
    };
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // Not no-referrer: under it browsers send `Origin: null` on form posts, and the
    // Origin check above needs the real one.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The answer that refuses `req`, if it must be refused.
fn refuse(req: &Request) -> Option<Response> {
    let path = req.uri().path();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if let Some(why) = auth::cross_site(req) {
            return Some(html::error_page(
                StatusCode::FORBIDDEN,
                &format!(
                    "Refused: {why}. Changes can only be made from the dashboard's own pages."
                ),
            ));
        }
    }
    // The auth middleware put the session's principal here (or `local` without any token).
    if req.extensions().get::<mend::auth::Principal>().is_some()
        || path == "/login"
        || path.starts_with("/assets/")
    {
        return None;
    }
    if req.method() == Method::GET || req.method() == Method::HEAD {
        let next = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let to = format!("/login?next={}", html::url_encode(&next));
        return Some(Redirect::to(&to).into_response());
    }
    Some(html::error_page(
        StatusCode::UNAUTHORIZED,
        "Your session has ended. Log in again, then repeat the action.",
    ))
}

pub(crate) use auth::session_principal;

/// The page refusing a logged-in person whose role may not do what they asked.
pub(crate) fn forbidden(detail: &str) -> Response {
    html::error_page(
        StatusCode::FORBIDDEN,
        &format!("Refused: {detail}. Ask an admin for a token with that role."),
    )
}

/// The caller's role, from the auth middleware (admin without any token).
pub(crate) fn role_of(
    principal: Option<&axum::Extension<mend::auth::Principal>>,
) -> mend::auth::Role {
    principal.map_or(mend::auth::Role::Admin, |p| p.role)
}

/// What a dashboard handler answers when it cannot show its page.
pub(crate) struct PageError(Box<Response>);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<mend::StoreError> for PageError {
    fn from(e: mend::StoreError) -> Self {
        tracing::warn!(error = %e, "dashboard page could not read the store");
        PageError(Box::new(html::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("The database did not answer: {e}. The page will work again once it does."),
        )))
    }
}

impl PageError {
    fn new(status: StatusCode, message: &str) -> Self {
        PageError(Box::new(html::error_page(status, message)))
    }
}

/// A dashboard handler's result.
type PageResult = Result<Response, PageError>;

#[cfg(test)]
mod tests {
    use super::is_dashboard_path;

    #[test]
    fn dashboard_paths_are_not_api_paths() {
        for p in [
            "/",
            "/jobs",
            "/jobs/1",
            "/queues",
            "/nodes",
            "/rollouts",
            "/rollouts/1",
            "/login",
            "/assets/app.js",
        ] {
            assert!(is_dashboard_path(p), "{p}");
        }
        for p in [
            "/v1/jobs",
            "/metrics",
            "/healthz",
            "/debug/attempts",
            "/openapi.json",
            "/jobsx",
            "/v1/rollouts",
        ] {
            assert!(!is_dashboard_path(p), "{p}");
        }
    }
}
