//! `mend cron list|show|create|pause|resume|delete`: periodic jobs over `/v1/cron`. The server
//! checks every field of a declaration; this file only sends what was typed and lays out the
//! answers (a table of schedules; one schedule with its recent runs and skipped slots).

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::api::{Api, Conn};
use super::output::{array_field, print_json, str_field, time_field, Table};

/// `mend cron …`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum CronCommand {
    /// List the schedules with their next slot and latest run.
    #[command(after_help = "\
Examples:
  mend cron list
  mend cron list --json")]
    List(CronListArgs),
    /// Show one schedule: its declaration, next slot, recent runs with their jobs' states,
    /// and the slots skipped after downtime.
    #[command(after_help = "\
Example:
  mend cron show nightly-report")]
    Show(CronNameArgs),
    /// Create a schedule (or replace one with --replace).
    #[command(after_help = "\
Examples:
  mend cron create nightly-report --schedule '0 30 2 * * *' --timezone Europe/Berlin \\
      --kind report --args '{\"scope\": \"daily\"}' --catch-up latest
  mend cron create heartbeat --schedule '*/10 * * * * *' --kind ping --catch-up all --catch-up-max 100

Catch-up after downtime: none (run only a slot at most 5 s late), latest (the most recent
missed slot), all (every missed slot, up to --catch-up-max, default 24).")]
    Create(CronCreateArgs),
    /// Pause a schedule: no jobs are inserted for its slots until it is resumed.
    #[command(after_help = "\
Example:
  mend cron pause nightly-report")]
    Pause(CronNameArgs),
    /// Resume a paused schedule from its next slot (slots passed while paused do not run).
    #[command(after_help = "\
Example:
  mend cron resume nightly-report")]
    Resume(CronNameArgs),
    /// Delete a schedule (the jobs it inserted stay).
    #[command(after_help = "\
Example:
  mend cron delete nightly-report")]
    Delete(CronNameArgs),
}

/// Arguments of `mend cron list`.
#[derive(clap::Args, Debug)]
pub(crate) struct CronListArgs {
    #[command(flatten)]
    conn: Conn,
}

/// A command on one schedule.
#[derive(clap::Args, Debug)]
pub(crate) struct CronNameArgs {
    /// The schedule's name.
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    conn: Conn,
}

/// Arguments of `mend cron create`.
#[derive(clap::Args, Debug)]
pub(crate) struct CronCreateArgs {
    /// The schedule's name (letters, digits, _ - . /).
    #[arg(value_name = "NAME")]
    name: String,
    /// Cron expression: 5 fields, 6 with seconds first, or @hourly/@daily/@weekly/...
    #[arg(long, value_name = "EXPR")]
    schedule: String,
    /// The job kind each slot enqueues.
    #[arg(long, value_name = "K")]
    kind: String,
    /// IANA time zone the expression is read in [default: UTC]
    #[arg(long, value_name = "TZ")]
    timezone: Option<String>,
    /// The queue [default: default]
    #[arg(long, value_name = "Q")]
    queue: Option<String>,
    /// The job's args as JSON [default: {}]
    #[arg(long, value_name = "JSON")]
    args: Option<String>,
    /// Priority (lower runs first) [default: 0]
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i16>,
    /// Attempts per job [default: 25]
    #[arg(long, value_name = "N")]
    max_attempts: Option<i32>,
    /// Tags for the jobs (repeat for several).
    #[arg(long, value_name = "T")]
    tag: Vec<String>,
    /// none, latest or all [default: latest]
    #[arg(long, value_name = "POLICY")]
    catch_up: Option<String>,
    /// Most missed slots `all` runs [default: 24]
    #[arg(long, value_name = "N")]
    catch_up_max: Option<u32>,
    /// Replace the schedule if one by this name exists (keeps its history and paused flag).
    #[arg(long)]
    replace: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `mend cron …`.
pub(crate) async fn cron(cmd: CronCommand) -> anyhow::Result<()> {
    match cmd {
        CronCommand::List(a) => list(a).await,
        CronCommand::Show(a) => show(a).await,
        CronCommand::Create(a) => create(a).await,
        CronCommand::Pause(a) => set_paused(a, true).await,
        CronCommand::Resume(a) => set_paused(a, false).await,
        CronCommand::Delete(a) => delete(a).await,
    }
}

/// The latest run of a schedule as `slot (state)`, or `-`.
fn latest_run(s: &Value) -> String {
    array_field(s, "runs").first().map_or_else(
        || "-".to_owned(),
        |r| format!("{} ({})", time_field(r, "slot"), state_of(r)),
    )
}

fn state_of(run: &Value) -> String {
    match run.get("state") {
        Some(Value::String(s)) => s.clone(),
        _ => "pruned".to_owned(),
    }
}

async fn list(a: CronListArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let body = api.get(api.url(&["v1", "cron"])).await?.body;
    if a.conn.json {
        return print_json(&body);
    }
    let schedules = array_field(&body, "schedules");
    if schedules.is_empty() {
        println!("no schedules yet (create one with `mend cron create`, in mend.toml [[cron]], or in code)");
        return Ok(());
    }
    let mut t = Table::new(&[
        "NAME", "SCHEDULE", "TIMEZONE", "KIND", "PAUSED", "NEXT", "LAST RUN", "SKIPPED",
    ]);
    for s in &schedules {
        let paused = s.get("paused").and_then(Value::as_bool) == Some(true);
        t.row(vec![
            str_field(s, "name"),
            str_field(s, "schedule"),
            str_field(s, "timezone"),
            str_field(s, "kind"),
            if paused { "yes" } else { "no" }.into(),
            time_field(s, "next_slot"),
            latest_run(s),
            array_field(s, "skipped").len().to_string(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

fn describe(s: &Value) {
    let paused = s.get("paused").and_then(Value::as_bool) == Some(true);
    println!("schedule   {}", str_field(s, "name"));
    println!(
        "cron       {} ({})",
        str_field(s, "schedule"),
        str_field(s, "timezone")
    );
    println!(
        "job        kind {} on queue {}, args {}",
        str_field(s, "kind"),
        str_field(s, "queue"),
        s.get("args")
            .map_or_else(|| "{}".to_owned(), Value::to_string)
    );
    println!(
        "catch-up   {} (all runs at most {})",
        str_field(s, "catch_up"),
        str_field(s, "catch_up_max")
    );
    println!("state      {}", if paused { "paused" } else { "active" });
    println!("next slot  {}", time_field(s, "next_slot"));
    println!("last slot  {}", time_field(s, "last_slot"));
    let runs = array_field(s, "runs");
    if runs.is_empty() {
        println!("runs       none yet");
    } else {
        println!("recent runs (newest first):");
        let mut t = Table::new(&["SLOT", "JOB", "STATE"]);
        for r in &runs {
            t.row(vec![
                time_field(r, "slot"),
                str_field(r, "job_id"),
                state_of(r),
            ]);
        }
        print!("{}", t.render());
    }
    let skipped = array_field(s, "skipped");
    if !skipped.is_empty() {
        let shown: Vec<String> = skipped
            .iter()
            .map(|v| time_field(&json!({ "t": v }), "t"))
            .collect();
        println!(
            "skipped slots (catch-up policy, oldest first): {}",
            shown.join(", ")
        );
    }
}

async fn show(a: CronNameArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let body = api.get(api.url(&["v1", "cron", &a.name])).await?.body;
    if a.conn.json {
        return print_json(&body);
    }
    describe(&body);
    Ok(())
}

async fn create(a: CronCreateArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let mut decl = Map::new();
    decl.insert("schedule".into(), json!(a.schedule));
    decl.insert("kind".into(), json!(a.kind));
    if let Some(v) = &a.args {
        let args: Value =
            serde_json::from_str(v).with_context(|| format!("--args is not JSON: {v}"))?;
        decl.insert("args".into(), args);
    }
    let mut put = |key: &str, v: Option<Value>| {
        if let Some(v) = v {
            decl.insert(key.into(), v);
        }
    };
    put("timezone", a.timezone.map(Value::from));
    put("queue", a.queue.map(Value::from));
    put("priority", a.priority.map(Value::from));
    put("max_attempts", a.max_attempts.map(Value::from));
    put(
        "tags",
        (!a.tag.is_empty()).then(|| Value::from(a.tag.clone())),
    );
    put("catch_up", a.catch_up.map(Value::from));
    put("catch_up_max", a.catch_up_max.map(Value::from));
    let reply = if a.replace {
        let body = Value::Object(decl);
        api.send(
            Method::PUT,
            api.url(&["v1", "cron", &a.name]),
            Some(&body),
            None,
        )
        .await?
    } else {
        decl.insert("name".into(), json!(a.name));
        let body = Value::Object(decl);
        api.send(Method::POST, api.url(&["v1", "cron"]), Some(&body), None)
            .await?
    };
    if a.conn.json {
        return print_json(&reply.body);
    }
    println!(
        "schedule {} stored; next slot {}",
        str_field(&reply.body, "name"),
        time_field(&reply.body, "next_slot")
    );
    Ok(())
}

async fn set_paused(a: CronNameArgs, pause: bool) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let action = if pause { "pause" } else { "resume" };
    let body = api
        .post(api.url(&["v1", "cron", &a.name, action]))
        .await?
        .body;
    if a.conn.json {
        return print_json(&body);
    }
    if pause {
        println!(
            "schedule {} paused: no jobs for its slots until `mend cron resume {}`",
            a.name, a.name
        );
    } else {
        println!(
            "schedule {} resumed; next slot {}",
            a.name,
            time_field(&body, "next_slot")
        );
    }
    Ok(())
}

async fn delete(a: CronNameArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let body = api
        .send(
            Method::DELETE,
            api.url(&["v1", "cron", &a.name]),
            None,
            None,
        )
        .await?
        .body;
    if a.conn.json {
        return print_json(&body);
    }
    println!("schedule {} deleted (its jobs stay)", a.name);
    Ok(())
}
