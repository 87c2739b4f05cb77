//! `mend enqueue`: its flags, reading `--args` (JSON, `@FILE` or stdin), and the POST that
//! enqueues one job. Every input the client can check is checked before connecting.

use std::io::Read;

use anyhow::{anyhow, bail};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::api::{Api, Conn};
use super::output::{print_json, snippet, str_field};
use crate::duration;

/// Arguments of `mend enqueue`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  mend enqueue noop
  mend enqueue send_email --args '{\"to\":\"a@example.com\"}' --queue mail --tag signup
  mend enqueue report --delay 5m --max-attempts 3 --timeout 30s
  mend enqueue charge --args @charge.json --idempotency-key order-1234
  mend enqueue sync --args '{\"customer\":7}' --unique-by-arg customer --unique-period 1h
  echo '{\"sleep_ms\":100}' | mend enqueue noop --args -

Prints the new job's id (with --json: the whole job).")]
pub(crate) struct EnqueueArgs {
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
    unique: UniqueFlags,
    #[command(flatten)]
    conn: Conn,
}

/// The unique-job flags of `mend enqueue`; any of them makes the job unique.
#[derive(clap::Args, Debug, Default)]
pub(crate) struct UniqueFlags {
    /// Make the job unique by its kind: while a job of this kind has not finished, enqueueing
    /// another returns it instead. The other --unique-* flags refine what counts.
    #[arg(long, conflicts_with = "idempotency_key")]
    unique: bool,
    /// Unique by all args too (implies --unique).
    #[arg(long, conflicts_with_all = ["idempotency_key", "unique_by_arg"])]
    unique_by_args: bool,
    /// Unique by this arg too: a top-level key or a JSON pointer (/order/id); repeat for
    /// several (implies --unique).
    #[arg(long, value_name = "KEY", conflicts_with = "idempotency_key")]
    unique_by_arg: Vec<String>,
    /// One per queue rather than one across queues (implies --unique).
    #[arg(long, conflicts_with = "idempotency_key")]
    unique_per_queue: bool,
    /// One per period of this length, e.g. 1h (implies --unique).
    #[arg(long, value_name = "DURATION", conflicts_with = "idempotency_key")]
    unique_period: Option<String>,
    /// Also hold the key while the existing job is in these finished states:
    /// completed, cancelled, discarded (comma-separated; implies --unique).
    #[arg(
        long,
        value_name = "STATES",
        value_delimiter = ',',
        conflicts_with = "idempotency_key"
    )]
    unique_also: Vec<String>,
}

impl UniqueFlags {
    /// The request's `unique` object, or `None` when no flag asks for it.
    fn to_json(&self) -> anyhow::Result<Option<Value>> {
        let wanted = self.unique
            || self.unique_by_args
            || !self.unique_by_arg.is_empty()
            || self.unique_per_queue
            || self.unique_period.is_some()
            || !self.unique_also.is_empty();
        if !wanted {
            return Ok(None);
        }
        let mut u = Map::new();
        if self.unique_by_args {
            u.insert("by_args".into(), json!(true));
        } else if !self.unique_by_arg.is_empty() {
            u.insert("by_args".into(), json!(self.unique_by_arg));
        }
        if self.unique_per_queue {
            u.insert("per_queue".into(), json!(true));
        }
        if let Some(p) = &self.unique_period {
            let d = duration::parse(p).map_err(|e| anyhow!("--unique-period: {e}"))?;
            if d.is_zero() {
                bail!("--unique-period must be more than 0 (e.g. 1h)");
            }
            u.insert("period".into(), json!(p));
        }
        if !self.unique_also.is_empty() {
            let mut states = vec!["scheduled", "available", "running", "retryable"];
            for s in &self.unique_also {
                match s.trim() {
                    st @ ("completed" | "cancelled" | "discarded") => states.push(st),
                    other => bail!(
                        "--unique-also: {other:?} is not a finished state; use completed, cancelled or discarded"
                    ),
                }
            }
            u.insert("states".into(), json!(states));
        }
        Ok(Some(Value::Object(u)))
    }
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

/// `mend enqueue`: POST /v1/jobs.
pub(crate) async fn enqueue(a: EnqueueArgs) -> anyhow::Result<()> {
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
        let d = duration::parse(d).map_err(|e| anyhow!("--delay: {e}"))?;
        body.insert("delay_ms".into(), json!(duration::as_millis(d)));
    }
    if let Some(t) = &a.timeout {
        let d = duration::parse(t).map_err(|e| anyhow!("--timeout: {e}"))?;
        if d.is_zero() {
            bail!("--timeout must be more than 0 (e.g. 30s)");
        }
        body.insert("timeout_ms".into(), json!(duration::as_millis(d)));
    }
    if !a.tags.is_empty() {
        body.insert("tags".into(), json!(a.tags));
    }
    if let Some(u) = a.unique.to_json()? {
        body.insert("unique".into(), u);
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
    // 200 instead of 201: the idempotency key or the unique options matched an existing job.
    if reply.status == StatusCode::OK {
        let what = if body.get("unique").is_some() {
            "a job the unique options call the same"
        } else {
            "a job with this idempotency key"
        };
        eprintln!(
            "note: {what} already exists (state {}); no new job was enqueued",
            str_field(&reply.body, "state")
        );
    }
    println!("{id}");
    Ok(())
}
