//! Request middleware: request ids, tracing spans, panic catching, time limits and bearer
//! auth. Written as two small `from_fn` layers so every answer, including a panic's, is
//! problem+json carrying the request id.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use mend::audit::NewAuditEntry;
use mend::auth::{Principal, Role};

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

/// Who the caller is and whether its role may call the route (see [`crate::roles`]); then,
/// for the routes the role table marks, secrets masked in the answer (unless admin) and the
/// change written to the audit log. Without any token (configured or stored) only loopback
/// callers get in, as `local` with every right. Health probes stay open; dashboard pages
/// carry a session cookie instead of a bearer header.
pub(crate) async fn auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let rule = crate::roles::rule(
        req.method(),
        req.extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str()),
    );
    // Before anything reads the token table: probes answer even when the database does not.
    if rule.is_some_and(|r| r.is_open()) {
        return next.run(req).await;
    }
    let configured = state.token.as_deref();
    let any = match state.tokens.any(configured).await {
        Ok(any) => any,
        Err(e) => return store_down(&e),
    };
    let path = req.uri().path().to_owned();
    let dashboard = crate::dashboard::is_dashboard_path(&path);
    let principal = if !any {
        // Without a token the server listens on loopback only; still, a web page the user
        // visits could reach it (cross-site requests, DNS rebinding). Only loopback hosts and
        // origins get in.
        if let Some(why) = foreign_request(&req) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{why}; without a token this server only answers requests addressed to localhost. Configure MEND_API_TOKEN or create a token with `mend tokens create` to serve other hosts"),
            )
            .into_response_with_id(None);
        }
        Principal {
            name: crate::tokens::LOCAL_NAME.to_owned(),
            role: Role::Admin,
        }
    } else if dashboard {
        match crate::dashboard::session_principal(&state, req.headers()).await {
            Some(p) => p,
            // The dashboard's gate sends the browser to the login page.
            None => return next.run(req).await,
        }
    } else {
        match bearer(&req) {
            Bearer::Missing => return unauthorized("this server needs a token: send `Authorization: Bearer <token>` (MEND_API_TOKEN on the server, or one made with `mend tokens create`)"),
            Bearer::Garbled => return unauthorized("the Authorization header is not `Bearer <token>`: send the scheme `Bearer`, one space, then the token"),
            Bearer::Token(given) => match state.tokens.resolve(configured, &given).await {
                Ok(Some(p)) => p,
                Ok(None) => return unauthorized("the bearer token is not valid: it is unknown or was revoked (`mend tokens list` shows the tokens)"),
                Err(e) => return store_down(&e),
            },
        }
    };
    if let Some(rule) = rule {
        if !rule.allows(principal.role) {
            let detail = format!(
                "{} {} needs the role {}; the token `{}` has the role {}",
                rule.method,
                rule.path,
                crate::roles::roles_text(rule),
                principal.name,
                principal.role
            );
            if dashboard {
                return crate::dashboard::forbidden(&detail);
            }
            return ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
                .into_response_with_id(None);
        }
    }
    req.extensions_mut().insert(principal.clone());
    let Some(rule) = rule else {
        return next.run(req).await;
    };
    let audit = match rule.action {
        Some(action) => {
            let (parts, body) = req.into_parts();
            let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
                Ok(b) => b,
                Err(_) => return crate::error::too_large().into_response_with_id(None),
            };
            let confirmed = !rule.confirmed_only
                || form_urlencoded::parse(&bytes).any(|(k, v)| k == "confirm" && v == "yes");
            let entry = confirmed.then(|| audit_entry(&parts, rule, action, &principal, &bytes));
            req = Request::from_parts(parts, Body::from(bytes));
            entry
        }
        None => None,
    };
    let resp = next.run(req).await;
    if let Some(mut entry) = audit {
        if resp.status().is_success() || resp.status().is_redirection() {
            if let Some(obj) = entry.detail.as_object_mut() {
                obj.insert("status".into(), resp.status().as_u16().into());
            }
            if let Err(e) = state.store.audit_add(vec![entry]).await {
                tracing::warn!(error = %e, "the change was made but its audit row could not be written");
            }
        }
    }
    if rule.mask && principal.role != Role::Admin {
        return mask_answer(resp).await;
    }
    resp
}

/// What the Authorization header holds.
enum Bearer {
    Missing,
    Garbled,
    Token(String),
}

fn bearer(req: &Request) -> Bearer {
    let Some(v) = req.headers().get(header::AUTHORIZATION) else {
        return Bearer::Missing;
    };
    let Ok(v) = v.to_str() else {
        return Bearer::Garbled;
    };
    // The scheme name is case-insensitive (RFC 7235).
    match v.split_once(' ') {
        Some((scheme, value))
            if scheme.eq_ignore_ascii_case("bearer") && !value.trim().is_empty() =>
        {
            Bearer::Token(value.trim().to_owned())
        }
        _ => Bearer::Garbled,
    }
}

fn store_down(e: &mend::StoreError) -> Response {
    tracing::warn!(error = %e, "cannot read the API tokens");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("the server cannot check tokens right now (the database did not answer: {e}); try again shortly"),
    )
    .into_response_with_id(None)
}

/// The audit row of a change, before it is made: the action with its path parameters filled
/// in, the target, the query and the (masked) body as detail.
fn audit_entry(
    parts: &axum::http::request::Parts,
    rule: &crate::roles::Rule,
    action: &str,
    principal: &Principal,
    body: &[u8],
) -> NewAuditEntry {
    let params = path_params(parts);
    let mut action = action.to_owned();
    for (k, v) in &params {
        action = action.replace(&format!("{{{k}}}"), v);
    }
    let mut target = rule
        .target
        .and_then(|t| params.iter().find(|(k, _)| k == t))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut detail = serde_json::Map::new();
    if let Some(q) = parts.uri.query() {
        detail.insert("query".into(), q.into());
    }
    if !body.is_empty() {
        let value = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(v) => mend::secrets::mask(&v).0,
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                serde_json::Value::String(text.chars().take(512).collect())
            }
        };
        // A create names its target in the body (`POST /v1/cron` with `name`; a rollout,
        // which has no id until it is stored, by its `kind`).
        if target.is_empty() {
            if let Some(name) = value
                .get("name")
                .or_else(|| value.get("kind"))
                .and_then(|n| n.as_str())
            {
                target = name.to_owned();
            }
        }
        detail.insert("body".into(), value);
    }
    let remote = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
    NewAuditEntry::now(
        principal.name.clone(),
        action,
        target,
        serde_json::Value::Object(detail),
        remote,
    )
}

/// The request's path parameters, decoded.
fn path_params(parts: &axum::http::request::Parts) -> Vec<(String, String)> {
    let Some(matched) = parts.extensions.get::<axum::extract::MatchedPath>() else {
        return Vec::new();
    };
    let names = matched.as_str().split('/');
    let values = parts.uri.path().split('/');
    names
        .zip(values)
        .filter_map(|(n, v)| {
            let n = n.strip_prefix('{')?.strip_suffix('}')?;
            let v: String =
                form_urlencoded::parse(format!("v={}", v.replace('+', "%2B")).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_else(|| v.to_owned());
            Some((n.to_owned(), v))
        })
        .collect()
}

/// A JSON answer with the values under secret-looking keys masked ([`mend::secrets::mask`]).
async fn mask_answer(resp: Response) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    if !mend::secrets::may_hold_secrets(&bytes) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let masked = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .map(|v| mend::secrets::mask(&v))
        .filter(|(_, n)| *n > 0)
        .and_then(|(v, _)| serde_json::to_vec(&v).ok());
    let mut resp =
        Response::from_parts(parts, Body::from(masked.unwrap_or_else(|| bytes.to_vec())));
    resp.headers_mut().remove(header::CONTENT_LENGTH);
    resp
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
    mend::auth::constant_time_eq(a, b)
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
