//! Request middleware: request ids, tracing spans, panic catching, time limits and bearer
//! auth. Written as two small `from_fn` layers so every answer, including a panic's, is
//! problem+json carrying the request id.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::error::ApiError;
use crate::AppState;

/// The request id header, echoed on every response.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// Outermost layer: request id, span, time limit, panic → 500, and the request id in error
/// bodies.
pub(crate) async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert(REQUEST_ID, v);
    }
    // A caller's W3C trace context makes this request part of the caller's trace.
    let traceparent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| mend::trace::TraceParent::parse(v).is_some())
        .map(str::to_owned);
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id, traceparent = traceparent.as_deref());
    if let Some(tp) = &traceparent {
        crate::otel::continue_trace(&span, tp, false);
    }
    // A CPU profile takes as long as it was asked to, on top of the usual time.
    let limit = if req.uri().path() == crate::routes::debug::PROFILE_PATH {
        state.request_timeout + crate::routes::debug::MAX_PROFILE
    } else {
        state.request_timeout
    };
    let run = mend::panic::CatchPanic::new(Box::pin(next.run(req).instrument(span.clone())));
    let mut resp = match tokio::time::timeout(limit, run).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(panic)) => {
            span.in_scope(|| tracing::error!(%panic, "request handler panicked; answering 500 and serving on"));
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server hit a bug while handling this request; nothing was changed by the failed part. Report it with the request id",
            )
            .into_response_with_id(Some(id.clone()))
        }
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {:?}; it may or may not have taken effect, so check before retrying (enqueue with an Idempotency-Key to retry safely)",
                limit
            ),
        )
        .into_response_with_id(Some(id.clone())),
    };
    if is_problem(&resp) {
        resp = add_request_id(resp, &id).await;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

fn is_problem(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == crate::error::PROBLEM_JSON.as_bytes())
}

/// Puts the request id into a problem+json body that was built without it.
async fn add_request_id(resp: Response, id: &str) -> Response {
    let (parts, body) = resp.into_parts();
    // The body is one we built (in memory already); any size is fine.
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    if let Some(obj) = value.as_object_mut() {
        obj.entry("request_id")
            .or_insert_with(|| serde_json::Value::String(id.to_owned()));
    }
    let body = serde_json::to_vec(&value).unwrap_or_else(|_| bytes.to_vec());
    let mut resp = Response::from_parts(parts, Body::from(body));
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp
}

/// Bearer-token auth, when a token is configured. Health probes stay open.
pub(crate) async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = state.token.as_deref() else {
        // Without a token the server listens on loopback only; still, a web page the user
        // visits could reach it (cross-site requests, DNS rebinding). Only loopback hosts and
        // origins get in.
        if let Some(why) = foreign_request(&req) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{why}; without a token this server only answers requests addressed to localhost. Configure MEND_API_TOKEN to serve other hosts"),
            )
            .into_response_with_id(None);
        }
        return next.run(req).await;
    };
    let path = req.uri().path();
    // The dashboard has its own session check (a cookie, not a bearer header).
    if path == "/healthz" || path == "/readyz" || crate::dashboard::is_dashboard_path(path) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme name is case-insensitive (RFC 7235).
            let (scheme, value) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| value.trim())
        });
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => next.run(req).await,
        Some(_) => unauthorized("the bearer token is not valid"),
        None => unauthorized("this server needs a token: send `Authorization: Bearer <token>` (the value of MEND_API_TOKEN on the server)"),
    }
}

fn is_loopback_host(host: &str) -> bool {
    // host[:port], with IPv6 in brackets.
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why a request does not look like it came from this machine's own clients, if it does not.
fn foreign_request(req: &Request) -> Option<&'static str> {
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(host) = host {
        if !is_loopback_host(host) {
            return Some("the Host header names another host");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let hostport = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if origin != "null" && !is_loopback_host(hostport) {
            return Some("the request comes from a web page of another origin");
        }
        if origin == "null" {
            return Some("the request comes from a web page of an opaque origin");
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Some("the request comes from another site");
    }
    None
}

fn unauthorized(detail: &str) -> Response {
    let mut resp =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response_with_id(None);
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right. (The length still shows; tokens should be long and random.)
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn loopback_hosts() {
        use super::is_loopback_host;
        for h in [
            "localhost",
            "localhost:7878",
            "127.0.0.1:7878",
            "[::1]:80",
            "[::1]",
            "127.0.0.2",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "example.com",
            "evil.localhost.example.com:80",
            "10.0.0.1:7878",
            "[2001:db8::1]:80",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn compares_exactly() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
