//! `mend queues list|pause|resume`: their flags, the table of queues with a column per job
//! state, and the pause/resume requests.

use serde_json::Value;

use super::api::{Api, Conn};
use super::output::{array_field, print_json, str_field, Table};

/// `mend queues …`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum QueuesCommand {
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
pub(crate) struct QueuesListArgs {
    #[command(flatten)]
    conn: Conn,
}

/// A command on one queue.
#[derive(clap::Args, Debug)]
pub(crate) struct QueueArgs {
    /// The queue's name.
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    conn: Conn,
}

/// `mend queues …`.
pub(crate) async fn queues(cmd: QueuesCommand) -> anyhow::Result<()> {
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
    let queues = array_field(&body, "queues");
    if queues.is_empty() {
        println!("no queues yet (a queue appears when a job is enqueued to it)");
        return Ok(());
    }
    // The states still to run, in their usual order (the server counts no others), then any
    // the server knows and this build does not.
    let mut states: Vec<String> = mend::JobState::ALL
        .iter()
        .filter(|s| !s.is_final())
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
