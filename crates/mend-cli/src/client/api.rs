//! The HTTP side of the client commands: how `--server`/`--token` become requests, and how a
//! failed request or an error answer becomes one line a person can act on. It prints nothing.

use std::time::Duration;

use anyhow::{anyhow, bail};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use super::output::{one_line, snippet};

/// Where the server is when neither `--server` nor `MEND_SERVER` says.
pub(super) const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// Longest wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for a whole answer (the server gives up on a request after 30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach the server, and how to print its answers. Shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub(super) struct Conn {
    /// URL of the mend server (`mend serve` prints it when it starts).
    #[arg(long, env = "MEND_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub(super) server: String,
    /// Bearer token: the server's MEND_API_TOKEN. Sent, never printed.
    #[arg(
        long,
        env = "MEND_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(super) token: Option<String>,
    /// Print the server's JSON answer as is (one document on stdout) instead of a table.
    #[arg(long)]
    pub(super) json: bool,
}

/// A connection to the server's API.
pub(super) struct Api {
    http: reqwest::Client,
    /// The base URL, as parsed (with any path prefix).
    base: Url,
    /// The server as the user gave it, for messages.
    shown: String,
    auth: Option<HeaderValue>,
}

/// A successful answer.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Value,
}

impl Api {
    pub(super) fn new(conn: &Conn) -> anyhow::Result<Self> {
        let raw = conn.server.trim();
        let with_scheme = if raw.contains("://") {
            raw.to_owned()
        } else {
            format!("http://{raw}")
        };
        let base = Url::parse(&with_scheme).map_err(|e| {
            anyhow!(
                "--server / MEND_SERVER must be a URL such as {DEFAULT_SERVER} ({e}; got {raw:?})"
            )
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--server / MEND_SERVER must be an http:// or https:// URL such as {DEFAULT_SERVER} (got {raw:?})");
        }
        let auth = match conn.token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    anyhow!("the token (--token / MEND_API_TOKEN) has characters that cannot be sent in an HTTP header; use visible ASCII")
                })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("mend-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow!("cannot set up the HTTP client: {}", root_cause(&e)))?;
        Ok(Api {
            http,
            base,
            shown: raw.trim_end_matches('/').to_owned(),
            auth,
        })
    }

    /// The URL of `segments` under the base, each segment percent-encoded (so a queue named
    /// `a/b` stays one segment).
    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends a request and returns the JSON of a 2xx answer, or the error as one line.
    pub(super) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        idempotency_key: Option<HeaderValue>,
    ) -> anyhow::Result<Reply> {
        let mut req = self.http.request(method, url);
        if let Some(a) = &self.auth {
            req = req.header(AUTHORIZATION, a.clone());
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            let body = serde_json::from_slice(&bytes).map_err(|_| {
                anyhow!(
                    "the server at {} answered HTTP {} with something that is not JSON; is it a mend server? ({})",
                    self.shown,
                    status.as_u16(),
                    snippet(&bytes)
                )
            })?;
            return Ok(Reply { status, body });
        }
        Err(self.answer_error(status, &bytes))
    }

    pub(super) async fn get(&self, url: Url) -> anyhow::Result<Reply> {
        self.send(Method::GET, url, None, None).await
    }

    pub(super) async fn post(&self, url: Url) -> anyhow::Result<Reply> {
        self.send(Method::POST, url, None, None).await
    }

    /// One line for an error answer: the problem's detail, or what the server sent.
    pub(super) fn answer_error(&self, status: StatusCode, bytes: &[u8]) -> anyhow::Error {
        let problem: Option<Value> = serde_json::from_slice(bytes).ok();
        let detail = problem
            .as_ref()
            .and_then(|p| p.get("detail"))
            .and_then(Value::as_str)
            .map(one_line);
        let Some(detail) = detail else {
            let reason = status.canonical_reason().unwrap_or("error");
            return if bytes.is_empty() {
                anyhow!(
                    "the server at {} answered HTTP {} {reason} with no details",
                    self.shown,
                    status.as_u16()
                )
            } else {
                anyhow!(
                    "the server at {} answered HTTP {} {reason}: {}",
                    self.shown,
                    status.as_u16(),
                    snippet(bytes)
                )
            };
        };
        let field = problem
            .as_ref()
            .and_then(|p| p.get("field"))
            .and_then(Value::as_str)
            .map(|f| format!(", field {f}"))
            .unwrap_or_default();
        let hint = if status == StatusCode::UNAUTHORIZED {
            if self.auth.is_some() {
                "; check --token / MEND_API_TOKEN against the server's MEND_API_TOKEN"
            } else {
                "; give it with --token or MEND_API_TOKEN"
            }
        } else {
            ""
        };
        anyhow!("{detail} (HTTP {}{field}){hint}", status.as_u16())
    }

    /// One line for a failure to talk to the server at all.
    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        let cause = root_cause(e);
        if e.is_connect() {
            anyhow!(
                "the mend server is not reachable at {} ({cause}); start it with `mend serve`, or point --server / MEND_SERVER at a running one",
                self.shown
            )
        } else if e.is_timeout() {
            anyhow!(
                "the mend server at {} did not answer within {} s; it may be overloaded or stuck (a request it got may still take effect)",
                self.shown,
                REQUEST_TIMEOUT.as_secs()
            )
        } else {
            anyhow!(
                "talking to the mend server at {} failed: {cause}",
                self.shown
            )
        }
    }
}

/// The innermost cause of an error, which says what actually happened ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    one_line(&cur.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_segments_whole() {
        let conn = Conn {
            server: "localhost:7878/prefix/".into(),
            token: None,
            json: false,
        };
        let api = Api::new(&conn).unwrap();
        assert_eq!(
            api.url(&["v1", "queues", "a/b", "pause"]).as_str(),
            "http://localhost:7878/prefix/v1/queues/a%2Fb/pause"
        );
    }

    #[test]
    fn problems_become_one_line() {
        let conn = Conn {
            server: DEFAULT_SERVER.into(),
            token: None,
            json: false,
        };
        let api = Api::new(&conn).unwrap();
        let body = br#"{"type":"x","title":"Unprocessable Entity","status":422,"detail":"run_at must be\nRFC 3339","field":"run_at"}"#;
        let e = api.answer_error(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(
            e.to_string(),
            "run_at must be RFC 3339 (HTTP 422, field run_at)"
        );
        let e = api.answer_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert!(
            e.to_string().contains("HTTP 502 Bad Gateway: <html>"),
            "{e}"
        );
    }
}
