//! Test helpers: the router on a real socket and a minimal HTTP/1.1 client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use mend_server::{app_with, AppState};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Server {
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    _dir: tempfile::TempDir,
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a problem+json answer with this status and returns its detail.
    pub fn problem(&self, status: u16) -> String {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert!(
            self.body["request_id"].is_string(),
            "problem carries the request id: {}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        self.body["detail"].as_str().unwrap().to_owned()
    }
}

pub async fn start(token: Option<&str>, max_body: Option<usize>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = mend_sqlite::SqliteStore::open(dir.path().join("api.db").to_str().unwrap())
        .await
        .unwrap();
    let mut state = AppState::new(Arc::new(store));
    state.token = token.map(Arc::from);
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
    let app = app_with(state.clone(), extra);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        addr,
        state,
        _dir: dir,
    }
}

impl Server {
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str("host: localhost\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("content-length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        // The server may answer (413) before reading the whole body; a write error then is fine.
        let _ = stream.write_all(&bytes).await;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").expect("a full HTTP response");
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        let body = if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
        {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.call_with(method, path, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend_from_slice(extra);
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.raw(method, path, &headers, bytes.as_deref()).await
    }

    pub async fn job_count(&self) -> usize {
        self.state
            .store
            .list(mend::store::ListParams {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .jobs
            .len()
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}
