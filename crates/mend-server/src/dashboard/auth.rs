//! Dashboard sessions and cross-site protection.
//!
//! A person logs in once with a token (the configured one or one from `mend tokens create`);
//! the answer is a session cookie (`HttpOnly`, `SameSite=Strict`) holding the token's name and
//! an expiry, signed with HMAC-SHA-256 under the token's SHA-256. It is stateless, so it holds
//! on every node that shares the database and across restarts; the session has the token's
//! role, and revoking or changing the token ends it (within the token cache's period).

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Utc;
use hmac::{KeyInit, Mac};
use maud::html;
use serde::Deserialize;

use super::html::{layout_bare, Nav};
use crate::middleware::constant_time_eq;
use crate::AppState;

/// The session cookie's name.
const COOKIE: &str = "mend_session";
/// How long a session lasts.
const SESSION_SECS: i64 = 12 * 3600;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn mac(key: &str, name: &str, expires: i64) -> Option<String> {
    let mut m = HmacSha256::new_from_slice(key.as_bytes()).ok()?;
    m.update(b"mend dashboard session v2\0");
    m.update(name.as_bytes());
    m.update(b"\0");
    m.update(expires.to_string().as_bytes());
    Some(
        m.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// The cookie value of `name`'s session that ends at `expires` (unix seconds), signed with
/// `key` (the token's SHA-256: only the server knows it, and revoking the token ends the
/// session).
fn session_value(key: &str, name: &str, expires: i64) -> Option<String> {
    Some(format!("{expires}.{name}.{}", mac(key, name, expires)?))
}

/// The session's token name and expiry, unchecked.
fn session_parts(value: &str) -> Option<(&str, i64, &str)> {
    let (expires, rest) = value.split_once('.')?;
    let (name, sig) = rest.rsplit_once('.')?;
    Some((name, expires.parse().ok()?, sig))
}

fn valid_session(key: &str, value: &str, now: i64) -> bool {
    let Some((name, expires, sig)) = session_parts(value) else {
        return false;
    };
    expires > now
        && mac(key, name, expires)
            .is_some_and(|want| constant_time_eq(want.as_bytes(), sig.as_bytes()))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Who the session cookie says the caller is, if it is valid and its token still is.
pub(crate) async fn session_principal(
    state: &AppState,
    headers: &HeaderMap,
) -> Option<mend::auth::Principal> {
    let value = cookie(headers, COOKIE)?;
    let (name, _, _) = session_parts(&value)?;
    let (principal, key) = state
        .tokens
        .by_name(state.token.as_deref(), name)
        .await
        .ok()??;
    valid_session(&key, &value, Utc::now().timestamp()).then_some(principal)
}

/// Why a state-changing request looks cross-site, if it does. Browsers send `Origin` on every
/// POST; it must name this server (the `Host` it was sent to). `Sec-Fetch-Site` says the same
/// where it is sent. A request with neither comes from a program, not a page, and is let
/// through to the session check.
pub(super) fn cross_site(req: &Request) -> Option<&'static str> {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return Some("the request came from another site");
        }
    }
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let hostport = origin.split_once("://").map_or("", |(_, rest)| rest);
    if origin == "null" || hostport.is_empty() || !hostport.eq_ignore_ascii_case(host) {
        return Some("the request came from a page of another origin");
    }
    None
}

/// `?next=` of the login page.
#[derive(Deserialize)]
pub(super) struct Next {
    next: Option<String>,
}

/// Only a path on this server: never another host (`//evil`, `https://…`).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

fn login_page(next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        div.login {
            h1 { "Log in to mend" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label for="token" { "API token (MEND_API_TOKEN, or one from `mend tokens create`)" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button.primary type="submit" { "Log in" }
            }
            p.muted { "The session lasts 12 hours, in a cookie only this server can read." }
        }
    };
    (status, layout_bare("Log in", Nav::None, body)).into_response()
}

/// `GET /login`.
pub(super) async fn form(State(state): State<AppState>, Query(q): Query<Next>) -> Response {
    if !state
        .tokens
        .any(state.token.as_deref())
        .await
        .unwrap_or(true)
    {
        return Redirect::to("/").into_response();
    }
    login_page(safe_next(q.next.as_deref()), None, StatusCode::OK)
}

/// The login form.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `POST /login`: checks the token and sets the session cookie.
pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let next = safe_next(f.next.as_deref()).to_owned();
    let configured = state.token.as_deref();
    if !state.tokens.any(configured).await.unwrap_or(true) {
        return Redirect::to(&next).into_response();
    }
    let found = match state.tokens.resolve(configured, f.token.trim()).await {
        Ok(found) => found,
        Err(e) => {
            return login_page(
                &next,
                Some(&format!(
                    "The database did not answer ({e}); try again shortly."
                )),
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    };
    let Some(principal) = found else {
        tracing::warn!("dashboard login with a wrong token");
        return login_page(
            &next,
            Some("That token is not this server's: it is unknown or was revoked. Use MEND_API_TOKEN or a token from `mend tokens create`."),
            StatusCode::UNAUTHORIZED,
        );
    };
    let key = match (principal.name.as_str(), configured) {
        (crate::tokens::CONFIGURED_TOKEN_NAME, Some(t)) => mend::auth::hash_token(t),
        _ => mend::auth::hash_token(f.token.trim()),
    };
    let expires = Utc::now().timestamp() + SESSION_SECS;
    let Some(value) = session_value(&key, &principal.name, expires) else {
        return login_page(
            &next,
            Some("Could not start a session."),
            StatusCode::INTERNAL_SERVER_ERROR,
        );
    };
    // Behind a TLS-terminating proxy the browser must only send the cookie over TLS.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{}",
        if secure { "; Secure" } else { "" }
    );
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /logout`: forgets the session in this browser.
pub(super) async fn logout() -> Response {
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("mend_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_signed_and_expire() {
        let now = 1_000_000;
        let v = session_value("secret", "ops.team", now + 60).unwrap_or_default();
        assert_eq!(session_parts(&v).map(|p| p.0), Some("ops.team"));
        assert!(valid_session("secret", &v, now));
        assert!(!valid_session("secret", &v, now + 61), "expired");
        assert!(!valid_session("other", &v, now), "another token");
        let forged = v.replacen(&(now + 60).to_string(), &(now + 999_999).to_string(), 1);
        assert!(!valid_session("secret", &forged, now), "expiry changed");
        let renamed = v.replacen("ops.team", "admin", 1);
        assert!(!valid_session("secret", &renamed, now), "name changed");
        assert!(!valid_session("secret", "garbage", now));
    }

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(
            safe_next(Some("/jobs?state=running")),
            "/jobs?state=running"
        );
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
