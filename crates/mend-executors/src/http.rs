//! The `http` kind: send one HTTP request (typically a webhook) and judge the answer.
//!
//! Args: `{"method": "POST", "url": "https://…", "headers": {"name": "value"}, "body": <string
//! or JSON>, "timeout_ms": n}`; only `url` is required (`method` defaults to `POST`,
//! `timeout_ms` to [`DEFAULT_TIMEOUT`]). A string `body` is sent as is; any other JSON body is
//! serialized and sent as `application/json` unless `headers` sets a `content-type`.
//!
//! | answer | job |
//! |---|---|
//! | 2xx | completed, result `{"status": n, "body_excerpt": "…"}` (first [`BODY_EXCERPT`] bytes) |
//! | 408, 429, 5xx, connection error, timeout | retried; a `Retry-After` header (seconds or HTTP-date, capped at [`MAX_RETRY_AFTER`]) sets the delay |
//! | 3xx | discarded: redirects are not followed (a `POST` silently turning into a `GET` would be worse) |
//! | other 4xx | discarded, with the status and a body excerpt |
//!
//! Each request carries `mend-job-id` (use it as the idempotency key downstream: a job runs at
//! least once) and `mend-attempt` headers. Header values are never logged nor put in error
//! messages: they often hold credentials.

use std::fmt;
use std::time::{Duration, SystemTime};

use mend::{JobContext, JobError};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

use crate::args::Fields;

/// The kind name.
pub const KIND: &str = "http";

/// Timeout of one request (connect, send, answer and body) when the job does not set
/// `timeout_ms`: long enough for a slow webhook receiver, short enough to free the slot.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Most of the response body kept, in the result or in an error message.
pub const BODY_EXCERPT: usize = 1024;

/// Longest delay a server's `Retry-After` may ask for; longer asks are cut to this, so a
/// misconfigured server cannot park a job for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// The methods a job may use.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

const FIELDS: [&str; 5] = ["method", "url", "headers", "body", "timeout_ms"];

/// What to send with the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// No body.
    Empty,
    /// A string, sent as is.
    Text(String),
    /// JSON, serialized (`application/json` unless the headers say otherwise).
    Json(Value),
}

/// The parsed args of an `http` job. Header values are marked sensitive, so `Debug` does not
/// show them.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// The method (upper case).
    pub method: Method,
    /// The URL; always `http` or `https`.
    pub url: Url,
    /// Headers as given.
    pub headers: HeaderMap,
    /// The body.
    pub body: Body,
    /// Timeout of the whole exchange.
    pub timeout: Duration,
}

impl HttpRequest {
    /// Read and check an `http` job's args. Messages name the field and never contain a
    /// header's value.
    pub fn parse(args: &Value) -> Result<Self, String> {
        let f = Fields::new(args, &FIELDS)?;

        let method = match f.opt_str("method")? {
            None => Method::POST,
            Some(m) => {
                let upper = m.to_ascii_uppercase();
                if !METHODS.contains(&upper.as_str()) {
                    return Err(format!(
                        "field `method` must be one of {}, got {m:?}",
                        METHODS.join(", ")
                    ));
                }
                Method::from_bytes(upper.as_bytes())
                    .map_err(|_| format!("field `method` is not a valid HTTP method: {m:?}"))?
            }
        };

        let raw_url = f.req_str("url")?;
        let url = Url::parse(raw_url)
            .map_err(|e| format!("field `url` is not a valid URL ({e}): {raw_url:?}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "field `url` must be an http:// or https:// URL, got scheme `{}`",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("field `url` has no host".to_owned());
        }

        let mut headers = HeaderMap::new();
        if let Some(map) = f.opt_object("headers")? {
            for (name, value) in map {
                let header = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("field `headers` has an invalid header name {name:?}"))?;
                let Value::String(value) = value else {
                    return Err(format!(
                        "field `headers` must map names to strings, but `{name}` is {}",
                        crate::args::type_name(value)
                    ));
                };
                let mut value = HeaderValue::from_str(value).map_err(|_| {
                    format!(
                        "field `headers` has an invalid value for `{name}` (control characters \
                         or non-ASCII text; the value is not shown)"
                    )
                })?;
                value.set_sensitive(true);
                headers.append(header, value);
            }
        }

        let body = match f.get("body") {
            None => Body::Empty,
            Some(Value::String(s)) => Body::Text(s.clone()),
            Some(v) => Body::Json(v.clone()),
        };

        let timeout = f.opt_millis("timeout_ms", 1)?.unwrap_or(DEFAULT_TIMEOUT);
        Ok(HttpRequest {
            method,
            url,
            headers,
            body,
            timeout,
        })
    }

    /// `POST https://host:port/path`: what error messages and logs call this request. Leaves
    /// out credentials in the URL and the query string, which may carry tokens.
    pub fn target(&self) -> String {
        Target(self).to_string()
    }
}

struct Target<'a>(&'a HttpRequest);

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.0.url;
        write!(
            f,
            "{} {}://{}",
            self.0.method,
            url.scheme(),
            url.host_str().unwrap_or("")
        )?;
        if let Some(port) = url.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(url.path())
    }
}

/// Runs `http` jobs on one shared connection pool.
#[derive(Clone)]
pub struct HttpExecutor {
    client: Result<reqwest::Client, String>,
}

impl fmt::Debug for HttpExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpExecutor").finish_non_exhaustive()
    }
}

impl Default for HttpExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpExecutor {
    /// An executor with its own client: rustls with the webpki roots, no redirects followed,
    /// user agent `mend/<version>`. Should the client fail to build (the TLS set-up), every
    /// attempt fails with a retryable error saying why, instead of the process panicking.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("mend/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| error_chain(&e));
        if let Err(e) = &client {
            tracing::error!(error = %e, "the http executor's client could not be built");
        }
        HttpExecutor { client }
    }

    /// Run one attempt of an `http` job.
    pub async fn run(&self, ctx: JobContext, args: Value) -> Result<Option<Value>, JobError> {
        let req = HttpRequest::parse(&args).map_err(|m| crate::invalid_args(KIND, m))?;
        let client = self
            .client
            .as_ref()
            .map_err(|e| JobError::retry(format!("the HTTP client could not be set up: {e}")))?;
        let target = req.target();
        let timeout = req.timeout;

        let mut builder = client
            .request(req.method.clone(), req.url.clone())
            .timeout(timeout)
            .headers(req.headers)
            .header("mend-job-id", ctx.id().to_string())
            .header("mend-attempt", ctx.attempt().to_string());
        builder = match req.body {
            Body::Empty => builder,
            Body::Text(s) => builder.body(s),
            Body::Json(v) => builder.json(&v),
        };

        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Err(JobError::retry(format!(
                    "{target} timed out after {timeout:?} without an answer"
                )));
            }
            Err(e) => {
                return Err(JobError::retry(format!(
                    "{target} failed: {}",
                    error_chain(&e.without_url())
                )));
            }
        };

        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let excerpt = read_excerpt(response).await;
        tracing::debug!(job = %ctx.id(), attempt = ctx.attempt(), %target, status = status.as_u16(), "http job answered");

        if status.is_success() {
            return Ok(Some(
                json!({"status": status.as_u16(), "body_excerpt": excerpt}),
            ));
        }
        let answered = format!("{target} answered HTTP {}", status_text(status));
        let with_body = if excerpt.is_empty() {
            answered.clone()
        } else {
            format!("{answered}; body: {excerpt}")
        };
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            return Err(match retry_after {
                Some(after) => JobError::retry_after(
                    format!("{with_body} (retrying after {after:?}, as its Retry-After asks)"),
                    after,
                ),
                None => JobError::retry(with_body),
            });
        }
        if status.is_redirection() {
            let to = location.map_or_else(String::new, |l| format!(" to {l}"));
            return Err(JobError::fatal(format!(
                "{answered} (a redirect{to}); redirects are not followed: point `url` at the final address"
            )));
        }
        if status.is_client_error() {
            return Err(JobError::fatal(with_body));
        }
        // 1xx and non-standard codes: nothing says retrying is useless.
        Err(JobError::retry(with_body))
    }
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The delay a `Retry-After` value asks for (delta-seconds or an HTTP-date), capped at
/// [`MAX_RETRY_AFTER`]; `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The first [`BODY_EXCERPT`] bytes of the body as text; reads no further. A body that fails
/// half-way (or times out) gives what arrived.
async fn read_excerpt(mut response: reqwest::Response) -> String {
    let mut buf = Vec::new();
    let mut truncated = false;
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = BODY_EXCERPT - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    crate::text::head(&buf, truncated)
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        let text = source.to_string();
        // hyper and reqwest often repeat their source in their own message.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = source.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(args: Value) -> Result<HttpRequest, String> {
        HttpRequest::parse(&args)
    }

    #[test]
    fn defaults_and_bodies() {
        let req = parse(json!({"url": "https://example.com/hook?token=s3cret"})).expect("ok");
        assert_eq!(req.method, Method::POST);
        assert_eq!(req.timeout, DEFAULT_TIMEOUT);
        assert_eq!(req.body, Body::Empty);
        assert_eq!(
            req.target(),
            "POST https://example.com/hook",
            "no query string"
        );
        let req =
            parse(json!({"url": "http://u:pw@h:81/p", "method": "get", "body": "x"})).expect("ok");
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.body, Body::Text("x".into()));
        assert_eq!(req.target(), "GET http://h:81/p", "no credentials");
        let req = parse(json!({"url": "http://h/", "body": {"a": 1}})).expect("ok");
        assert_eq!(req.body, Body::Json(json!({"a": 1})));
    }

    #[test]
    fn refuses_bad_args_naming_the_field() {
        let cases = [
            (json!({}), "field `url` is required"),
            (json!({"url": 5}), "field `url` must be a string"),
            (
                json!({"url": "not a url"}),
                "field `url` is not a valid URL",
            ),
            (json!({"url": "ftp://h/x"}), "got scheme `ftp`"),
            (json!({"url": "file:///etc/passwd"}), "got scheme `file`"),
            (
                json!({"url": "http://h", "method": "BREW"}),
                "field `method` must be one of",
            ),
            (
                json!({"url": "http://h", "headers": []}),
                "field `headers` must be an object",
            ),
            (
                json!({"url": "http://h", "headers": {"x": 1}}),
                "but `x` is a number",
            ),
            (
                json!({"url": "http://h", "headers": {"bad name": "v"}}),
                "invalid header name",
            ),
            (
                json!({"url": "http://h", "timeout_ms": 0}),
                "field `timeout_ms`",
            ),
            (
                json!({"url": "http://h", "extra": 1}),
                "unknown field `extra`",
            ),
        ];
        for (args, want) in cases {
            let err = parse(args.clone()).expect_err(&args.to_string());
            assert!(err.contains(want), "{args}: {err}");
        }
    }

    #[test]
    fn header_values_never_appear_in_messages_or_debug() {
        let secret = "Bearer s3cret\n";
        let err = parse(json!({"url": "http://h", "headers": {"authorization": secret}}))
            .expect_err("newline in a value");
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains("`authorization`"), "{err}");
        let req = parse(json!({"url": "http://h", "headers": {"authorization": "Bearer s3cret"}}))
            .expect("ok");
        assert!(!format!("{req:?}").contains("s3cret"));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_and_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("99999", now), Some(MAX_RETRY_AFTER));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(
            parse_retry_after(&date, now),
            Some(Duration::from_secs(120))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(120));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
