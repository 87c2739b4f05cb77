//! The dashboard's script and stylesheet, compiled into the binary.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small and versioned with the binary: revalidate each load, no stale script after an upgrade.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /assets/app.js`.
pub(super) async fn js() -> Response {
    asset(
        include_str!("assets/app.js"),
        "text/javascript; charset=utf-8",
    )
}

/// `GET /assets/app.css`.
pub(super) async fn css() -> Response {
    asset(include_str!("assets/app.css"), "text/css; charset=utf-8")
}
