//! `mend limits list|set|delete`: rate limits and per-key concurrency limits of a running
//! server, as a table, and the requests that set and remove them.

use anyhow::{anyhow, Context};
use reqwest::Method;
use serde_json::{json, Value};

use super::api::{Api, Conn};
use super::output::{array_field, print_json, str_field, Table};

/// `mend limits …`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum LimitsCommand {
    /// List the limits, with how many jobs each held back at the latest claim.
    #[command(after_help = "\
Examples:
  mend limits list
  mend limits list --json")]
    List(LimitsListArgs),
    /// Create a limit or replace the one of that name (its rate buckets start full).
    #[command(after_help = "\
Examples:
  mend limits set hooks --queue default --kind http --rate 20/1s --burst 40
  mend limits set one-per-account --queue billing --key /account --concurrency 1")]
    Set(LimitSetArgs),
    /// Remove a limit.
    #[command(after_help = "\
Example:
  mend limits delete hooks")]
    Delete(LimitNameArgs),
}

/// Arguments of `mend limits list`.
#[derive(clap::Args, Debug)]
pub(crate) struct LimitsListArgs {
    #[command(flatten)]
    conn: Conn,
}

/// Arguments of `mend limits set`.
#[derive(clap::Args, Debug)]
pub(crate) struct LimitSetArgs {
    /// The limit's name (letters, digits, `-`, `_`, `.`).
    #[arg(value_name = "NAME")]
    name: String,
    /// The queue whose claims it holds back.
    #[arg(long)]
    queue: String,
    /// Only jobs of this kind.
    #[arg(long)]
    kind: Option<String>,
    /// Per key: a JSON pointer into the args, e.g. /customer/id.
    #[arg(long, value_name = "POINTER")]
    key: Option<String>,
    /// At most N starts per period: N/DURATION, e.g. 20/1s, 100/1m.
    #[arg(long, value_name = "N/DURATION")]
    rate: Option<String>,
    /// Starts allowed at once after a quiet spell (default: N of --rate).
    #[arg(long, requires = "rate")]
    burst: Option<u32>,
    /// At most this many running at once (per key with --key).
    #[arg(long)]
    concurrency: Option<u32>,
    #[command(flatten)]
    conn: Conn,
}

/// A command on one limit.
#[derive(clap::Args, Debug)]
pub(crate) struct LimitNameArgs {
    /// The limit's name.
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    conn: Conn,
}

/// `mend limits …`.
pub(crate) async fn limits(cmd: LimitsCommand) -> anyhow::Result<()> {
    match cmd {
        LimitsCommand::List(a) => list(a).await,
        LimitsCommand::Set(a) => set(a).await,
        LimitsCommand::Delete(a) => delete(a).await,
    }
}

/// `N/DURATION` as `{"max": N, "per_ms": ms}`.
pub(crate) fn parse_rate(s: &str) -> anyhow::Result<Value> {
    let (n, per) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("--rate takes N/DURATION, e.g. 20/1s (got {s:?})"))?;
    let max: u32 = n
        .trim()
        .parse()
        .with_context(|| format!("--rate: {n:?} is not a whole number of starts"))?;
    let per = crate::duration::parse(per.trim()).map_err(|e| anyhow!("--rate: {e}"))?;
    Ok(json!({ "max": max, "per_ms": crate::duration::as_millis(per) }))
}

async fn set(a: LimitSetArgs) -> anyhow::Result<()> {
    let mut body = json!({ "queue": a.queue });
    if let Some(k) = &a.kind {
        body["kind"] = json!(k);
    }
    if let Some(p) = &a.key {
        body["key"] = json!(p);
    }
    if let Some(r) = &a.rate {
        let mut rate = parse_rate(r)?;
        if let Some(b) = a.burst {
            rate["burst"] = json!(b);
        }
        body["rate"] = rate;
    }
    if let Some(c) = a.concurrency {
        body["concurrency"] = json!(c);
    }
    let api = Api::new(&a.conn)?;
    let reply = api
        .send(
            Method::PUT,
            api.url(&["v1", "limits", &a.name]),
            Some(&body),
            None,
        )
        .await?
        .body;
    if a.conn.json {
        return print_json(&reply);
    }
    println!("limit {} set: {}", a.name, describe(&reply));
    Ok(())
}

async fn delete(a: LimitNameArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let reply = api
        .send(
            Method::DELETE,
            api.url(&["v1", "limits", &a.name]),
            None,
            None,
        )
        .await?
        .body;
    if a.conn.json {
        return print_json(&reply);
    }
    println!("limit {} removed", a.name);
    Ok(())
}

/// A limit in words: `default/http per /customer: 20 per 1000 ms (burst 40), 2 at once`.
fn describe(l: &Value) -> String {
    let mut scope = str_field(l, "queue");
    if let Some(k) = l.get("kind").and_then(Value::as_str) {
        scope.push('/');
        scope.push_str(k);
    }
    if let Some(p) = l.get("key").and_then(Value::as_str) {
        scope.push_str(&format!(" per {p}"));
    }
    let mut what = Vec::new();
    if let Some(r) = l.get("rate") {
        let mut s = format!(
            "{} per {} ms",
            r.get("max").map_or_else(String::new, Value::to_string),
            r.get("per_ms").map_or_else(String::new, Value::to_string)
        );
        if let Some(b) = r.get("burst").filter(|b| !b.is_null()) {
            s.push_str(&format!(" (burst {b})"));
        }
        what.push(s);
    }
    if let Some(c) = l.get("concurrency").filter(|c| !c.is_null()) {
        what.push(format!("{c} at once"));
    }
    format!("{scope}: {}", what.join(", "))
}

async fn list(a: LimitsListArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let body = api.get(api.url(&["v1", "limits"])).await?.body;
    if a.conn.json {
        return print_json(&body);
    }
    let limits = array_field(&body, "limits");
    if limits.is_empty() {
        println!("no limits (set one with `mend limits set NAME --queue Q --rate 20/1s`)");
        return Ok(());
    }
    let mut t = Table::new(&["NAME", "LIMIT", "WAITING"]);
    t.right_from(2);
    for l in &limits {
        t.row(vec![
            str_field(l, "name"),
            describe(l),
            l.get("waiting")
                .map_or_else(|| "0".into(), Value::to_string),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_n_per_duration() {
        assert_eq!(
            parse_rate("20/1s").unwrap(),
            json!({"max": 20, "per_ms": 1000})
        );
        assert_eq!(
            parse_rate("100/1m").unwrap(),
            json!({"max": 100, "per_ms": 60000})
        );
        assert!(parse_rate("20").is_err());
        assert!(parse_rate("x/1s").is_err());
        assert!(parse_rate("20/soon").is_err());
    }

    #[test]
    fn a_limit_reads_in_words() {
        let l = json!({"name": "h", "queue": "default", "kind": "http", "key": "/c",
                       "rate": {"max": 20, "per_ms": 1000, "burst": 40}, "concurrency": 2});
        assert_eq!(
            describe(&l),
            "default/http per /c: 20 per 1000 ms (burst 40), 2 at once"
        );
    }
}
