//! The client commands of `mend`: `enqueue`, `jobs`, `queues` talk to a running `mend serve`
//! over its HTTP API; `migrate` opens a database locally and brings its schema up to date.
//!
//! Output is an aligned table (or a short sentence) for people, or with `--json` the server's
//! JSON answer as is, one document on stdout. Every failure is one line on stderr and a
//! non-zero exit; problem+json answers are shown as `<detail> (HTTP <status>[, field <f>])`.
//! The bearer token is sent, never printed.

use std::io::Read;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Map, Value};

/// Where the server is when neither `--server` nor `MEND_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// Longest wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for a whole answer (the server gives up on a request after 30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach the server, and how to print its answers. Shared by every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct Conn {
    /// URL of the mend server (`mend serve` prints it when it starts).
    #[arg(long, env = "MEND_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    server: String,
    /// Bearer token: the server's MEND_API_TOKEN. Sent, never printed.
    #[arg(
        long,
        env = "MEND_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Print the server's JSON answer as is (one document on stdout) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `mend enqueue`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  mend enqueue noop
  mend enqueue send_email --args '{\"to\":\"a@example.com\"}' --queue mail --tag signup
  mend enqueue report --delay 5m --max-attempts 3 --timeout 30s
  mend enqueue charge --args @charge.json --idempotency-key order-1234
  echo '{\"sleep_ms\":100}' | mend enqueue noop --args -

Prints the new job's id (with --json: the whole job).")]
pub struct EnqueueArgs {
    /// Which handler runs the job (e.g. `noop`, or a kind your workers registered).
    #[arg(value_name = "KIND")]
    kind: String,
    /// The job's input as JSON; `@FILE` reads it from a file, `-` from stdin [default: {}]
    #[arg(long, value_name = "JSON")]
    args: Option<String>,
    /// Queue to put it in [default: default]
    #[arg(long, value_name = "Q")]
    queue: Option<String>,
    /// Lower runs first [default: 0]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i16>,
    /// Attempts allowed before the job is discarded [default: 25]
    #[arg(long, value_name = "N")]
    max_attempts: Option<i32>,
    /// Do not run before this time (RFC 3339, e.g. 2026-11-21T10:00:00Z).
    #[arg(long, value_name = "RFC3339", conflicts_with = "delay")]
    run_at: Option<String>,
    /// Do not run before this long from now (e.g. 30s, 5m, 250ms, 1h30m).
    #[arg(long, value_name = "DURATION")]
    delay: Option<String>,
    /// A label for filtering `mend jobs list --tag`; repeat for several.
    #[arg(long = "tag", value_name = "T")]
    tags: Vec<String>,
    /// Time limit of each attempt (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Enqueueing again with the same key returns the first job instead of a new one.
    #[arg(long, value_name = "K")]
    idempotency_key: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `mend jobs …`.
#[derive(clap::Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first, with filters.
    List(ListArgs),
    /// Show one job: its state, args, result and the error of every failed attempt.
    Show(IdArgs),
    /// Cancel a job: a waiting job is cancelled at once, a running one is asked to stop.
    Cancel(IdArgs),
    /// Run a completed, cancelled or discarded job again.
    Retry(IdArgs),
}

/// Arguments of `mend jobs list`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  mend jobs list
  mend jobs list --queue mail --state retryable,discarded
  mend jobs list --kind send_email --tag signup --limit 20
  mend jobs list --state completed --all --json > completed.json

Without --all, one page is shown; when there are more, stderr says how to get the next one.")]
pub struct ListArgs {
    /// Only jobs in this queue.
    #[arg(long, value_name = "Q")]
    queue: Option<String>,
    /// Only jobs in these states: scheduled, available, running, retryable, completed,
    /// cancelled, discarded (comma-separated or repeated).
    #[arg(long, value_name = "S[,S]", value_delimiter = ',')]
    state: Vec<String>,
    /// Only jobs of this kind.
    #[arg(long, value_name = "K")]
    kind: Option<String>,
    /// Only jobs with this tag.
    #[arg(long, value_name = "T")]
    tag: Option<String>,
    /// Jobs per page [default: 50 (the server's)]
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Start after this cursor (the `next_cursor` of a previous page).
    #[arg(long, value_name = "CURSOR")]
    before: Option<String>,
    /// Follow the pages to the end and show every matching job.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    conn: Conn,
}

/// A command on one job.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  mend jobs show 01933b6e-8f3a-7c2d-9b1e-0a1b2c3d4e5f
  mend jobs cancel 01933b6e-8f3a-7c2d-9b1e-0a1b2c3d4e5f
  mend jobs retry 01933b6e-8f3a-7c2d-9b1e-0a1b2c3d4e5f --json

Job ids are printed by `mend enqueue` and `mend jobs list`.")]
pub struct IdArgs {
    /// The job's id (a UUID).
    #[arg(value_name = "ID")]
    id: String,
    #[command(flatten)]
    conn: Conn,
}

/// `mend queues …`.
#[derive(clap::Subcommand, Debug)]
pub enum QueuesCommand {
    /// List the queues with the count of jobs in each state.
    #[command(after_help = "\
Examples:
  mend queues list
  mend queues list --json")]
    List(QueuesListArgs),
    /// Pause a queue: workers stop claiming its jobs (running ones finish); jobs can still be
    /// enqueued.
    #[command(after_help = "\
Example:
  mend queues pause mail")]
    Pause(QueueArgs),
    /// Resume a paused queue: workers claim its jobs again.
    #[command(after_help = "\
Example:
  mend queues resume mail")]
    Resume(QueueArgs),
}

/// Arguments of `mend queues list`.
#[derive(clap::Args, Debug)]
pub struct QueuesListArgs {
    #[command(flatten)]
    conn: Conn,
}

/// A command on one queue.
#[derive(clap::Args, Debug)]
pub struct QueueArgs {
    /// The queue's name.
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    conn: Conn,
}

/// Arguments of `mend migrate`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  mend migrate
  mend migrate --database sqlite:///var/lib/mend/mend.db

Creates the file when it does not exist. Safe to run any number of times, also while
`mend serve` runs on the same file. `mend serve` migrates at start-up too.")]
pub struct MigrateArgs {
    /// Database URL (sqlite://PATH or postgres://USER@HOST/DB) [default: sqlite://mend.db]
    #[arg(long, env = "MEND_DATABASE_URL", value_name = "URL")]
    database: Option<String>,
    /// Print `{"database": .., "schema_version": ..}` instead of a sentence.
    #[arg(long)]
    json: bool,
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A connection to the server's API.
struct Api {
    http: reqwest::Client,
    /// The base URL, as parsed (with any path prefix).
    base: Url,
    /// The server as the user gave it, for messages.
    shown: String,
    auth: Option<HeaderValue>,
}

/// A successful answer.
struct Reply {
    status: StatusCode,
    body: Value,
}

impl Api {
    fn new(conn: &Conn) -> anyhow::Result<Self> {
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
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends a request and returns the JSON of a 2xx answer, or the error as one line.
    async fn send(
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

    async fn get(&self, url: Url) -> anyhow::Result<Reply> {
        self.send(Method::GET, url, None, None).await
    }

    async fn post(&self, url: Url) -> anyhow::Result<Reply> {
        self.send(Method::POST, url, None, None).await
    }

    /// One line for an error answer: the problem's detail, or what the server sent.
    fn answer_error(&self, status: StatusCode, bytes: &[u8]) -> anyhow::Error {
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

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The start of a body, on one line, for messages.
fn snippet(bytes: &[u8]) -> String {
    let text = one_line(&String::from_utf8_lossy(bytes));
    if text.chars().count() > 200 {
        let cut: String = text.chars().take(200).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v).context("printing the answer")?;
    println!("{text}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Parses a duration such as `250ms`, `30s`, `5m`, `2h`, `1d` or `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration such as 30s, 5m, 250ms or 1h30m, got {s:?}");
    let text = s.trim();
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms_per: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60 * 1000,
            "h" => 3600 * 1000,
            "d" => 24 * 3600 * 1000,
            "" => return Err(format!("{s:?} needs a unit: ms, s, m, h or d (e.g. {n}s)")),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total.saturating_add(n.saturating_mul(ms_per));
    }
    let ms = u64::try_from(total).map_err(|_| format!("{s:?} is too long"))?;
    Ok(Duration::from_millis(ms))
}

/// The `--args` value: JSON text, `@FILE` or `-` (stdin).
fn read_args(raw: &str) -> anyhow::Result<Value> {
    let (text, from) = if raw == "-" {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .map_err(|e| anyhow!("--args -: cannot read stdin: {e}"))?;
        (t, "stdin".to_owned())
    } else if let Some(path) = raw.strip_prefix('@') {
        let t = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("--args @{path}: cannot read the file: {e}"))?;
        (t, path.to_owned())
    } else {
        (raw.to_owned(), String::new())
    };
    serde_json::from_str(&text).map_err(|e| {
        let source = if from.is_empty() { String::new() } else { format!(" (from {from})") };
        anyhow!(
            "--args is not valid JSON{source}: {e}; give a JSON value such as '{{\"to\":\"a@example.com\"}}' (quote it for the shell)"
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Commands

/// `mend enqueue`: POST /v1/jobs.
pub async fn enqueue(a: EnqueueArgs) -> anyhow::Result<()> {
    // Everything the client can check is checked before connecting.
    let mut body = Map::new();
    body.insert("kind".into(), json!(a.kind));
    if let Some(raw) = &a.args {
        body.insert("args".into(), read_args(raw)?);
    }
    if let Some(q) = &a.queue {
        body.insert("queue".into(), json!(q));
    }
    if let Some(p) = a.priority {
        body.insert("priority".into(), json!(p));
    }
    if let Some(m) = a.max_attempts {
        body.insert("max_attempts".into(), json!(m));
    }
    if let Some(t) = &a.run_at {
        body.insert("run_at".into(), json!(t));
    }
    if let Some(d) = &a.delay {
        let d = parse_duration(d).map_err(|e| anyhow!("--delay: {e}"))?;
        body.insert(
            "delay_ms".into(),
            json!(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        );
    }
    if let Some(t) = &a.timeout {
        let d = parse_duration(t).map_err(|e| anyhow!("--timeout: {e}"))?;
        if d.is_zero() {
            bail!("--timeout must be more than 0 (e.g. 30s)");
        }
        body.insert(
            "timeout_ms".into(),
            json!(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        );
    }
    if !a.tags.is_empty() {
        body.insert("tags".into(), json!(a.tags));
    }
    let key = match &a.idempotency_key {
        None => None,
        Some(k) => Some(HeaderValue::from_str(k).map_err(|_| {
            anyhow!("--idempotency-key must be visible ASCII characters (letters, digits, punctuation), got {k:?}")
        })?),
    };
    let api = Api::new(&a.conn)?;
    let body = Value::Object(body);
    let reply = api
        .send(Method::POST, api.url(&["v1", "jobs"]), Some(&body), key)
        .await?;
    if a.conn.json {
        return print_json(&reply.body);
    }
    let id = str_field(&reply.body, "id");
    if id.is_empty() {
        bail!(
            "the server's answer has no job id: {}",
            snippet(reply.body.to_string().as_bytes())
        );
    }
    // 200 instead of 201: the idempotency key matched an existing job.
    if reply.status == StatusCode::OK {
        eprintln!(
            "note: a job with this idempotency key already exists (state {}); no new job was enqueued",
            str_field(&reply.body, "state")
        );
    }
    println!("{id}");
    Ok(())
}

/// `mend jobs …`.
pub async fn jobs(cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::List(a) => list_jobs(a).await,
        JobsCommand::Show(a) => show_job(a).await,
        JobsCommand::Cancel(a) => cancel_job(a).await,
        JobsCommand::Retry(a) => retry_job(a).await,
    }
}

async fn list_jobs(a: ListArgs) -> anyhow::Result<()> {
    if a.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    let api = Api::new(&a.conn)?;
    let mut cursor = a.before.clone();
    let mut all_jobs: Vec<Value> = Vec::new();
    let next = loop {
        let mut url = api.url(&["v1", "jobs"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(v) = &a.queue {
                q.append_pair("queue", v);
            }
            let states: Vec<&str> = a
                .state
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .collect();
            if !states.is_empty() {
                q.append_pair("state", &states.join(","));
            }
            if let Some(v) = &a.kind {
                q.append_pair("kind", v);
            }
            if let Some(v) = &a.tag {
                q.append_pair("tag", v);
            }
            if let Some(v) = a.limit {
                q.append_pair("limit", &v.to_string());
            }
            if let Some(v) = &cursor {
                q.append_pair("before", v);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let page = api.get(url).await?.body;
        if !a.all {
            if a.conn.json {
                return print_json(&page);
            }
            let jobs = page
                .get("jobs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            all_jobs = jobs;
            break page
                .get("next_cursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        if let Some(jobs) = page.get("jobs").and_then(Value::as_array) {
            all_jobs.extend(jobs.iter().cloned());
        }
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(c) if Some(c) != cursor.as_deref() => cursor = Some(c.to_owned()),
            _ => break None,
        }
    };
    if a.conn.json {
        return print_json(&json!({ "jobs": all_jobs, "next_cursor": Value::Null }));
    }
    if all_jobs.is_empty() {
        println!("no jobs match");
    } else {
        let mut t = Table::new(&["ID", "KIND", "QUEUE", "STATE", "ATTEMPT", "RUN AT"]);
        for j in &all_jobs {
            t.row(vec![
                str_field(j, "id"),
                str_field(j, "kind"),
                str_field(j, "queue"),
                str_field(j, "state"),
                format!(
                    "{}/{}",
                    num_field(j, "attempt"),
                    num_field(j, "max_attempts")
                ),
                time_field(j, "run_at"),
            ]);
        }
        print!("{}", t.render());
    }
    if let Some(c) = next {
        eprintln!("more jobs: add --before {c} for the next page, or --all for every page");
    }
    Ok(())
}

async fn show_job(a: IdArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let job = api.get(api.url(&["v1", "jobs", &a.id])).await?.body;
    if a.conn.json {
        return print_json(&job);
    }
    print!("{}", describe_job(&job));
    Ok(())
}

/// A job for people: one `label: value` line per field, then the errors of failed attempts.
fn describe_job(job: &Value) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("id", str_field(job, "id")),
        ("kind", str_field(job, "kind")),
        ("queue", str_field(job, "queue")),
        ("state", str_field(job, "state")),
        (
            "attempt",
            format!(
                "{} of {}",
                num_field(job, "attempt"),
                num_field(job, "max_attempts")
            ),
        ),
        ("priority", num_field(job, "priority")),
        ("run at", time_field(job, "run_at")),
        ("created at", time_field(job, "created_at")),
    ];
    let optional = [
        ("attempted at", "attempted_at"),
        ("finalized at", "finalized_at"),
        ("lease owner", "lease_owner"),
        ("lease until", "lease_expires_at"),
    ];
    let running = job.get("state").and_then(Value::as_str) == Some("running");
    for (label, key) in optional {
        // A finished job keeps its last lease owner in the row; it only means something while
        // the job runs.
        if key.starts_with("lease") && !running {
            continue;
        }
        if job.get(key).is_some_and(|v| !v.is_null()) {
            let v = if key.ends_with("_at") {
                time_field(job, key)
            } else {
                str_field(job, key)
            };
            lines.push((label, v));
        }
    }
    if job.get("cancel_requested").and_then(Value::as_bool) == Some(true) {
        lines.push(("cancel", "requested; the worker stops it".into()));
    }
    if let Some(ms) = job.get("timeout_ms").and_then(Value::as_i64) {
        lines.push(("timeout", format!("{ms} ms per attempt")));
    }
    if let Some(tags) = job
        .get("tags")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        let tags: Vec<String> = tags
            .iter()
            .map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_owned))
            .collect();
        lines.push(("tags", tags.join(", ")));
    }
    if let Some(k) = job.get("unique_key").and_then(Value::as_str) {
        lines.push(("idempotency key", k.to_owned()));
    }
    lines.push((
        "args",
        job.get("args").map_or_else(String::new, Value::to_string),
    ));
    if let Some(r) = job.get("result").filter(|v| !v.is_null()) {
        lines.push(("result", r.to_string()));
    }
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (label, value) in &lines {
        out.push_str(&format!("{:<width$} {value}\n", format!("{label}:")));
    }
    let errors = job
        .get("errors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if errors.is_empty() {
        out.push_str(&format!("{:<width$} none\n", "errors:"));
    } else {
        out.push_str("errors:\n");
        for e in &errors {
            out.push_str(&format!(
                "  attempt {} ({}, {}):",
                num_field(e, "attempt"),
                str_field(e, "kind"),
                time_field(e, "at")
            ));
            let message = str_field(e, "message");
            let mut msg_lines = message.lines();
            out.push_str(&format!(" {}\n", msg_lines.next().unwrap_or("")));
            for l in msg_lines {
                out.push_str(&format!("    {l}\n"));
            }
        }
    }
    let timeline = job
        .get("timeline")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !timeline.is_empty() {
        out.push_str("timeline:\n");
        for e in &timeline {
            let mut line = format!("  {}  {}", time_field(e, "at"), str_field(e, "event"));
            if let Some(a) = e.get("attempt").and_then(Value::as_i64) {
                line.push_str(&format!(" (attempt {a})"));
            }
            if let Some(n) = e.get("node").and_then(Value::as_str) {
                line.push_str(&format!(" on {n}"));
            }
            if let Some(d) = e.get("detail").and_then(Value::as_str) {
                line.push_str(&format!(": {}", d.lines().next().unwrap_or("")));
            }
            out.push_str(&line);
            out.push('\n');
            for c in e
                .get("cleanups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push_str(&format!(
                    "      cleanup {} {} ({} ms)\n",
                    str_field(c, "name"),
                    c.get("outcome")
                        .and_then(|o| o.get("outcome"))
                        .and_then(Value::as_str)
                        .unwrap_or("?"),
                    num_field(c, "duration_ms")
                ));
            }
        }
    }
    out
}

async fn cancel_job(a: IdArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let job = api
        .post(api.url(&["v1", "jobs", &a.id, "cancel"]))
        .await?
        .body;
    if a.conn.json {
        return print_json(&job);
    }
    let id = str_field(&job, "id");
    let state = str_field(&job, "state");
    if state == "cancelled" {
        println!("job {id} cancelled");
    } else if job.get("cancel_requested").and_then(Value::as_bool) == Some(true) {
        println!(
            "job {id} is {state}: cancel requested; its worker stops it, then it is cancelled"
        );
    } else {
        println!("job {id} is already {state}; nothing to cancel");
    }
    Ok(())
}

async fn retry_job(a: IdArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let job = api
        .post(api.url(&["v1", "jobs", &a.id, "retry"]))
        .await?
        .body;
    if a.conn.json {
        return print_json(&job);
    }
    println!(
        "job {} will run again (state {}, {} of {} attempts used)",
        str_field(&job, "id"),
        str_field(&job, "state"),
        num_field(&job, "attempt"),
        num_field(&job, "max_attempts")
    );
    Ok(())
}

/// `mend queues …`.
pub async fn queues(cmd: QueuesCommand) -> anyhow::Result<()> {
    match cmd {
        QueuesCommand::List(a) => list_queues(a).await,
        QueuesCommand::Pause(a) => pause_queue(a, true).await,
        QueuesCommand::Resume(a) => pause_queue(a, false).await,
    }
}

async fn list_queues(a: QueuesListArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let body = api.get(api.url(&["v1", "queues"])).await?.body;
    if a.conn.json {
        return print_json(&body);
    }
    let queues = body
        .get("queues")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if queues.is_empty() {
        println!("no queues yet (a queue appears when a job is enqueued to it)");
        return Ok(());
    }
    // The states in their usual order, then any the server knows and this build does not.
    let mut states: Vec<String> = mend::JobState::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    for q in &queues {
        if let Some(counts) = q.get("counts").and_then(Value::as_object) {
            for k in counts.keys() {
                if !states.contains(k) {
                    states.push(k.clone());
                }
            }
        }
    }
    let show_paused = queues.iter().any(|q| q.get("paused").is_some());
    let mut header: Vec<String> = vec!["NAME".into()];
    if show_paused {
        header.push("PAUSED".into());
    }
    header.extend(states.iter().map(|s| s.to_uppercase()));
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(&header_refs);
    t.right_from(if show_paused { 2 } else { 1 });
    for q in &queues {
        let mut row = vec![str_field(q, "name")];
        if show_paused {
            let p = q.get("paused").and_then(Value::as_bool) == Some(true);
            row.push(if p { "yes" } else { "no" }.into());
        }
        for s in &states {
            let n = q
                .get("counts")
                .and_then(|c| c.get(s))
                .map_or_else(|| "0".to_owned(), Value::to_string);
            row.push(n);
        }
        t.row(row);
    }
    print!("{}", t.render());
    Ok(())
}

async fn pause_queue(a: QueueArgs, pause: bool) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let action = if pause { "pause" } else { "resume" };
    let body = api
        .post(api.url(&["v1", "queues", &a.name, action]))
        .await?
        .body;
    if a.conn.json {
        return print_json(&body);
    }
    let name = body.get("name").and_then(Value::as_str).unwrap_or(&a.name);
    match body.get("paused").and_then(Value::as_bool) {
        Some(true) => println!(
            "queue {name} paused: workers claim none of its jobs until `mend queues resume {name}`"
        ),
        Some(false) => println!("queue {name} resumed: workers claim its jobs again"),
        None => println!("queue {name}: {action} sent"),
    }
    Ok(())
}

/// `mend migrate`: open the database locally (which applies the migrations) and report the
/// schema version.
pub async fn migrate(a: MigrateArgs) -> anyhow::Result<()> {
    let url = a.database.unwrap_or_else(|| "sqlite://mend.db".into());
    let store = crate::db::open(&url, crate::db::OpenOptions::default())
        .await
        .context("migrating")?;
    drop(store);
    let version = crate::db::schema_version(&url);
    let url = crate::db::redact(&url);
    if a.json {
        return print_json(&json!({ "database": url, "schema_version": version }));
    }
    println!("{url}: schema version {version} (up to date)");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Output helpers

fn str_field(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn num_field(v: &Value, key: &str) -> String {
    str_field(v, key)
}

/// An RFC 3339 time shortened to whole seconds in UTC, e.g. `2026-11-21T10:00:00Z`.
fn time_field(v: &Value, key: &str) -> String {
    let raw = str_field(v, key);
    chrono::DateTime::parse_from_rfc3339(&raw)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .unwrap_or(raw)
}

/// A plain text table: columns padded to their widest cell, two spaces apart.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Columns from this index on are right-aligned (numbers).
    right_from: usize,
}

impl Table {
    fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            right_from: usize::MAX,
        }
    }

    fn right_from(&mut self, col: usize) {
        self.right_from = col;
    }

    fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                if i > 0 {
                    line.push_str("  ");
                }
                if i >= self.right_from {
                    line.push_str(&format!("{c:>w$}"));
                } else {
                    line.push_str(&format!("{c:<w$}"));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86400)));
        assert!(parse_duration("30").is_err_and(|e| e.contains("needs a unit")));
        for bad in ["", "s", "5x", "1.5s", "-3s", "5 m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn tables_align_and_numbers_go_right() {
        let mut t = Table::new(&["NAME", "N"]);
        t.right_from(1);
        t.row(vec!["default".into(), "12".into()]);
        t.row(vec!["a".into(), "3".into()]);
        assert_eq!(t.render(), "NAME      N\ndefault  12\na         3\n");
    }

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
