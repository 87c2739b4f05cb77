//! `mend rollouts list|show|start|pause|resume|promote|abort`: gray releases of a running
//! server, as tables and sentences, and the requests that start and steer them. The server
//! checks everything; this only checks the durations early, so a typo is caught before a
//! request is sent.

use anyhow::anyhow;
use reqwest::Method;
use serde_json::{json, Value};

use super::api::{Api, Conn};
use super::output::{array_field, print_json, str_field, time_field, Table};

/// `mend rollouts …`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum RolloutsCommand {
    /// List the rollouts, newest first, with their state, the canary's share, and both
    /// versions' failures over the guard's window while active.
    #[command(after_help = "\
Examples:
  mend rollouts list
  mend rollouts list --json")]
    List(RolloutsListArgs),
    /// Show one rollout: its steps, the guard's current window for both versions, and its
    /// decision log with the evidence behind each guard decision.
    #[command(after_help = "\
Example:
  mend rollouts show 01937a4e-...")]
    Show(RolloutIdArgs),
    /// Start rolling out a canary version of a kind: it takes the first step's share of the
    /// kind's jobs, and each step lasts --every while the guard passes it.
    #[command(after_help = "\
Examples:
  mend rollouts start resize --version v2 --steps 5%,25%,50%,100% --every 10m
  mend rollouts start resize --version v2 --steps 1%,10%,100% --every 30m --window 15m --min-samples 50 --alpha 0.0001 --notify-url https://hooks.example.com/rollouts")]
    Start(RolloutStartArgs),
    /// Pause a running rollout: steps stop advancing; the guard keeps watching.
    #[command(after_help = "\
Example:
  mend rollouts pause 01937a4e-...")]
    Pause(RolloutIdArgs),
    /// Resume a paused rollout.
    #[command(after_help = "\
Example:
  mend rollouts resume 01937a4e-...")]
    Resume(RolloutIdArgs),
    /// Make the canary the stable version now.
    #[command(after_help = "\
Example:
  mend rollouts promote 01937a4e-...")]
    Promote(RolloutIdArgs),
    /// Stop a rollout: the canary's share goes to zero and the jobs it failed are retried on
    /// the stable version.
    #[command(after_help = "\
Example:
  mend rollouts abort 01937a4e-...")]
    Abort(RolloutIdArgs),
}

/// Arguments of `mend rollouts list`.
#[derive(clap::Args, Debug)]
pub(crate) struct RolloutsListArgs {
    #[command(flatten)]
    conn: Conn,
}

/// A command on one rollout.
#[derive(clap::Args, Debug)]
pub(crate) struct RolloutIdArgs {
    /// The rollout's id (`mend rollouts list` shows them).
    #[arg(value_name = "ID")]
    id: String,
    #[command(flatten)]
    conn: Conn,
}

/// Arguments of `mend rollouts start`.
#[derive(clap::Args, Debug)]
pub(crate) struct RolloutStartArgs {
    /// The kind to roll out.
    #[arg(value_name = "KIND")]
    kind: String,
    /// The canary version (a live node must serve it).
    #[arg(long)]
    version: String,
    /// The canary's share at each step, rising to 100%, e.g. 5%,25%,50%,100%.
    #[arg(long)]
    steps: String,
    /// How long each step lasts before the guard may advance it, e.g. 10m.
    #[arg(long, value_name = "DURATION")]
    every: String,
    /// The window the guard compares both versions over (default 10m).
    #[arg(long, value_name = "DURATION")]
    window: Option<String>,
    /// Attempts each version needs in the window before the guard judges (default 10).
    #[arg(long, value_name = "N")]
    min_samples: Option<u64>,
    /// Significance of the guard's test on failure rates (default 0.001).
    #[arg(long, value_name = "A")]
    alpha: Option<f64>,
    /// Also cut the canary off when its failure rate is significantly above this (0 to 1).
    #[arg(long, value_name = "RATE")]
    max_failure_rate: Option<f64>,
    /// A URL told of a cut-off (an `http` job posts the decision to it).
    #[arg(long, value_name = "URL")]
    notify_url: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `mend rollouts …`.
pub(crate) async fn rollouts(cmd: RolloutsCommand) -> anyhow::Result<()> {
    match cmd {
        RolloutsCommand::List(a) => list(a).await,
        RolloutsCommand::Show(a) => show(a).await,
        RolloutsCommand::Start(a) => start(a).await,
        RolloutsCommand::Pause(a) => act(a, "pause").await,
        RolloutsCommand::Resume(a) => act(a, "resume").await,
        RolloutsCommand::Promote(a) => act(a, "promote").await,
        RolloutsCommand::Abort(a) => act(a, "abort").await,
    }
}

/// Checks a duration flag here (the same grammar as the server's) and passes its text on.
fn duration_flag(flag: &str, text: &str) -> anyhow::Result<String> {
    crate::duration::parse(text).map_err(|e| anyhow!("--{flag}: {e}"))?;
    Ok(text.to_owned())
}

/// The body of `POST /v1/rollouts` for `a`.
fn start_body(a: &RolloutStartArgs) -> anyhow::Result<Value> {
    let mut body = json!({
        "kind": a.kind,
        "version": a.version,
        "steps": a.steps,
        "every": duration_flag("every", &a.every)?,
    });
    let mut guard = serde_json::Map::new();
    if let Some(w) = &a.window {
        guard.insert("window".into(), json!(duration_flag("window", w)?));
    }
    if let Some(n) = a.min_samples {
        guard.insert("min_samples".into(), json!(n));
    }
    if let Some(x) = a.alpha {
        guard.insert("alpha".into(), json!(x));
    }
    if let Some(x) = a.max_failure_rate {
        guard.insert("max_failure_rate".into(), json!(x));
    }
    if !guard.is_empty() {
        body["guard"] = Value::Object(guard);
    }
    if let Some(u) = &a.notify_url {
        body["notify_url"] = json!(u);
    }
    Ok(body)
}

/// A share in basis points as a percentage.
fn share(v: &Value) -> String {
    v.as_u64()
        .and_then(|s| u32::try_from(s).ok())
        .map_or_else(|| "-".into(), mend::rollout::format_share)
}

/// The steps as `5%,25%,100%`, the current one in brackets while it is active.
fn steps(r: &Value) -> String {
    let current = r.get("step").and_then(Value::as_u64);
    let active = matches!(
        r.get("state").and_then(Value::as_str),
        Some("running" | "paused")
    );
    array_field(r, "steps")
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if active && Some(i as u64) == current {
                format!("[{}]", share(s))
            } else {
                share(s)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn stable(r: &Value) -> String {
    match r.get("stable").and_then(Value::as_str) {
        Some(s) => s.to_owned(),
        None => "(unversioned)".into(),
    }
}

async fn list(a: RolloutsListArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let body = api.get(api.url(&["v1", "rollouts"])).await?.body;
    if a.conn.json {
        return print_json(&body);
    }
    let rollouts = array_field(&body, "rollouts");
    if rollouts.is_empty() {
        println!(
            "no rollouts (start one with `mend rollouts start KIND --version V --steps 5%,25%,100% --every 10m`)"
        );
        return Ok(());
    }
    let mut t = Table::new(&[
        "ID",
        "KIND",
        "CANARY",
        "STABLE",
        "STATE",
        "SHARE",
        "STEPS",
        "CANARY FAILED",
        "STABLE FAILED",
        "STARTED",
    ]);
    for r in &rollouts {
        // Over the guard's window, while the rollout is active.
        let failed = |side: &str| {
            r.get("window")
                .and_then(|w| w.get("evidence"))
                .and_then(|e| e.get(side))
                .map_or_else(|| "-".to_owned(), short_side)
        };
        t.row(vec![
            str_field(r, "id"),
            str_field(r, "kind"),
            str_field(r, "canary"),
            stable(r),
            str_field(r, "state"),
            share(r.get("share").unwrap_or(&Value::Null)),
            steps(r),
            failed("canary"),
            failed("stable"),
            time_field(r, "started_at"),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// One side's failures over the window, short: `3/120 (2.5%)`.
fn short_side(s: &Value) -> String {
    let attempts = s.get("attempts").and_then(Value::as_u64).unwrap_or(0);
    let failures = s.get("failures").and_then(Value::as_u64).unwrap_or(0);
    if attempts == 0 {
        "0/0".to_owned()
    } else {
        format!(
            "{failures}/{attempts} ({:.1}%)",
            100.0 * failures as f64 / attempts as f64
        )
    }
}

/// One side's figures over the window in words: `3 of 120 failed (2.5%), p95 40 ms`.
fn side(s: &Value) -> String {
    let attempts = s.get("attempts").and_then(Value::as_u64).unwrap_or(0);
    let failures = s.get("failures").and_then(Value::as_u64).unwrap_or(0);
    let mut out = format!("{failures} of {attempts} failed");
    if attempts > 0 {
        out.push_str(&format!(
            " ({:.1}%)",
            100.0 * failures as f64 / attempts as f64
        ));
    }
    if let Some(p) = s.get("p95_ms").and_then(Value::as_f64) {
        out.push_str(&format!(", p95 {p:.0} ms"));
    }
    out
}

fn print_rollout(r: &Value) {
    let id = str_field(r, "id");
    println!("rollout {id}");
    println!(
        "  kind       {}: canary {} against stable {}",
        str_field(r, "kind"),
        str_field(r, "canary"),
        stable(r)
    );
    println!(
        "  state      {} at {} (steps {}, every {} s)",
        str_field(r, "state"),
        share(r.get("share").unwrap_or(&Value::Null)),
        steps(r),
        str_field(r, "every_secs")
    );
    println!("  started    {}", time_field(r, "started_at"));
    if r.get("next_step_at").is_some_and(|v| !v.is_null()) {
        println!("  next step  {}", time_field(r, "next_step_at"));
    }
    if r.get("finished_at").is_some_and(|v| !v.is_null()) {
        println!("  ended      {}", time_field(r, "finished_at"));
    }
    if r.get("healed").and_then(Value::as_u64).unwrap_or(0) > 0 {
        println!(
            "  handed back {} jobs the canary failed to the stable version",
            str_field(r, "healed")
        );
    }
    if let Some(w) = r.get("window") {
        let ev = w.get("evidence").unwrap_or(&Value::Null);
        println!(
            "  window     {} s, verdict {}{}",
            str_field(ev, "window_secs"),
            str_field(w, "verdict"),
            ev.get("p_value")
                .and_then(Value::as_f64)
                .map_or_else(String::new, |p| format!(" (p = {p:.2e})"))
        );
        println!(
            "    canary   {}",
            side(ev.get("canary").unwrap_or(&Value::Null))
        );
        println!(
            "    stable   {}",
            side(ev.get("stable").unwrap_or(&Value::Null))
        );
    }
    println!("decisions:");
    let mut t = Table::new(&["AT", "ACTION", "SHARE", "BY", "WHY"]);
    for d in array_field(r, "decisions") {
        t.row(vec![
            time_field(&d, "at"),
            str_field(&d, "action"),
            share(d.get("share").unwrap_or(&Value::Null)),
            str_field(&d, "actor"),
            str_field(&d, "reason"),
        ]);
    }
    for line in t.render().lines() {
        println!("  {line}");
    }
}

async fn show(a: RolloutIdArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let body = api.get(api.url(&["v1", "rollouts", &a.id])).await?.body;
    if a.conn.json {
        return print_json(&body);
    }
    print_rollout(&body);
    Ok(())
}

async fn start(a: RolloutStartArgs) -> anyhow::Result<()> {
    let body = start_body(&a)?;
    let api = Api::new(&a.conn)?;
    let reply = api
        .send(
            Method::POST,
            api.url(&["v1", "rollouts"]),
            Some(&body),
            None,
        )
        .await?
        .body;
    if a.conn.json {
        return print_json(&reply);
    }
    println!(
        "rollout {} started: canary {} of {} at {} (steps {}); `mend rollouts show {}` follows it",
        str_field(&reply, "id"),
        str_field(&reply, "canary"),
        str_field(&reply, "kind"),
        share(reply.get("share").unwrap_or(&Value::Null)),
        steps(&reply),
        str_field(&reply, "id"),
    );
    Ok(())
}

async fn act(a: RolloutIdArgs, action: &str) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let reply = api
        .post(api.url(&["v1", "rollouts", &a.id, action]))
        .await?
        .body;
    if a.conn.json {
        return print_json(&reply);
    }
    println!(
        "rollout {} {}: canary {} of {} at {}",
        a.id,
        str_field(&reply, "state"),
        str_field(&reply, "canary"),
        str_field(&reply, "kind"),
        share(reply.get("share").unwrap_or(&Value::Null)),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_mark_the_current_one() {
        let r = json!({"steps": [500, 2500, 10000], "step": 1, "state": "running"});
        assert_eq!(steps(&r), "5%,[25%],100%");
        let done = json!({"steps": [500, 10000], "step": 1, "state": "promoted"});
        assert_eq!(steps(&done), "5%,100%");
    }

    #[test]
    fn sides_read_in_words() {
        let s = json!({"attempts": 120, "failures": 3, "p95_ms": 40.2});
        assert_eq!(side(&s), "3 of 120 failed (2.5%), p95 40 ms");
        assert_eq!(
            side(&json!({"attempts": 0, "failures": 0})),
            "0 of 0 failed"
        );
    }
}
