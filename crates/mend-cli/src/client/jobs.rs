//! `mend jobs list|show|cancel|retry`: their flags, paging through `GET /v1/jobs`, and one
//! short sentence per action. How one job is laid out is `describe`'s.

use anyhow::bail;
use serde_json::{json, Value};

use super::api::{Api, Conn};
use super::describe::describe_job;
use super::output::{array_field, num_field, print_json, str_field, time_field, Table};

/// `mend jobs …`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum JobsCommand {
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
pub(crate) struct ListArgs {
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
pub(crate) struct IdArgs {
    /// The job's id (a UUID).
    #[arg(value_name = "ID")]
    id: String,
    #[command(flatten)]
    conn: Conn,
}

/// `mend jobs …`.
pub(crate) async fn jobs(cmd: JobsCommand) -> anyhow::Result<()> {
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
            all_jobs = array_field(&page, "jobs");
            break page
                .get("next_cursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        all_jobs.extend(array_field(&page, "jobs"));
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

/// `POST /v1/jobs/ID/ACTION`: the job as answered, or `None` when --json printed it as is.
async fn job_action(a: &IdArgs, action: &str) -> anyhow::Result<Option<Value>> {
    let api = Api::new(&a.conn)?;
    let job = api
        .post(api.url(&["v1", "jobs", &a.id, action]))
        .await?
        .body;
    if a.conn.json {
        print_json(&job)?;
        return Ok(None);
    }
    Ok(Some(job))
}

async fn cancel_job(a: IdArgs) -> anyhow::Result<()> {
    let Some(job) = job_action(&a, "cancel").await? else {
        return Ok(());
    };
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
    let Some(job) = job_action(&a, "retry").await? else {
        return Ok(());
    };
    println!(
        "job {} will run again (state {}, {} of {} attempts used)",
        str_field(&job, "id"),
        str_field(&job, "state"),
        num_field(&job, "attempt"),
        num_field(&job, "max_attempts")
    );
    Ok(())
}
