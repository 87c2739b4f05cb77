//! HTTP for tests, without a hand-written protocol: [`App`] calls an axum router in memory
//! (`tower::ServiceExt::oneshot`, no socket), [`Remote`] calls a real server over a socket
//! (reqwest), and both answer with the same [`Resp`]. [`TestServer`] is a scripted server on
//! 127.0.0.1 that records what it received, for code under test that makes requests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

/// An answer: status, headers (names in lower case) and the body as JSON (or as a JSON string
/// when it is not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    /// The status code.
    pub status: u16,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    /// The body, parsed as JSON; a body that is not JSON is a `Value::String`.
    pub body: Value,
}

impl Resp {
    fn new(status: u16, headers: &HeaderMap, body: &[u8]) -> Resp {
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        Resp {
            status,
            headers,
            body,
        }
    }

    /// The first value of a header (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a problem+json answer with this status (carrying a request id) and returns its
    /// detail.
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
        self.body["detail"]
            .as_str()
            .expect("a problem has a detail")
            .to_owned()
    }
}

/// An axum router called in memory: each request goes through the whole middleware stack, as
/// from a client, without a socket.
#[derive(Clone)]
pub struct App(pub Router);

impl App {
    /// A request with raw headers and body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req = req.header("host", "localhost");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-length", b.len());
                Body::from(b.to_vec())
            }
            None => Body::empty(),
        };
        let req = req.body(body).expect("a valid request");
        let resp = self
            .0
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("read the response body");
        Resp::new(parts.status.as_u16(), &parts.headers, &bytes)
    }

    /// A JSON request (`content-type: application/json`), with no body when `body` is `None`.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.call_with(method, path, body, &[]).await
    }

    /// `POST` of the JSON `body`.
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call("POST", path, Some(body)).await
    }

    /// [`App::call`] with extra headers.
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend_from_slice(extra);
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("serialise the body"));
        self.raw(method, path, &headers, bytes.as_deref()).await
    }
}

/// A real server at `base` (e.g. `http://127.0.0.1:8080`), called over a socket.
#[derive(Clone)]
pub struct Remote {
    /// `http://HOST:PORT`, no trailing slash.
    pub base: String,
    client: reqwest::Client,
}

impl Remote {
    /// A client for the server at `base`.
    pub fn new(base: impl Into<String>) -> Remote {
        Remote {
            base: base.into(),
            client: reqwest::Client::new(),
        }
    }

    /// A JSON request with extra headers; `Err` when the server cannot be reached.
    pub async fn try_call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> Result<Resp, reqwest::Error> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        Ok(Resp::new(status, &headers, &bytes))
    }

    /// [`Remote::try_call_with`] from a test without a runtime (a plain `#[test]` driving a
    /// child process): `None` when the server cannot be reached (not started yet, or gone).
    /// Each call has a runtime and a connection of its own, so nothing outlives it.
    pub fn blocking_call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> Option<Resp> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime");
        let one_shot = Remote {
            base: self.base.clone(),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("a test HTTP client"),
        };
        rt.block_on(one_shot.try_call_with(method, path, body, extra))
            .ok()
    }

    /// A JSON request; panics when the server cannot be reached.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.try_call_with(method, path, body, &[])
            .await
            .unwrap_or_else(|e| panic!("{} {path}: {e}", self.base))
    }
}

/// One request as the [`TestServer`] received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// Header names in lower case, with their values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the [`TestServer`] answers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    /// A reply with `status` and `body`.
    pub fn new(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answer only after `delay`.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Script = dyn Fn(&Received, usize) -> Reply + Send + Sync;

/// A scripted HTTP server on 127.0.0.1. The script gets each request and its 0-based number.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// Start a server answering with `script`.
    pub async fn start(script: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let rec = received.clone();
        let app = Router::new().fallback(move |req: Request<Body>| {
            let (rec, script) = (rec.clone(), script.clone());
            async move { answer(req, &rec, &*script).await }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer {
            addr,
            received,
            task,
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<Body>,
    received: &Mutex<Vec<Received>>,
    script: &Script,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let req = Received {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).trim().to_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let nth = {
        let mut all = received.lock().unwrap_or_else(|p| p.into_inner());
        all.push(req.clone());
        all.len() - 1
    };
    let reply = script(&req, nth);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = axum::response::Response::builder()
        .status(StatusCode::from_u16(reply.status).expect("a valid status code"));
    for (n, v) in &reply.headers {
        resp = resp.header(n, v);
    }
    resp.body(Body::from(reply.body))
        .expect("a valid scripted reply")
}
