//! `mend debug attempts`: what each attempt on a running node is doing right now, as a table
//! (or the server's JSON with `--json`).

use serde_json::Value;

use super::api::{Api, Conn};
use super::output::{array_field, print_json, str_field, Table};

/// `mend debug …`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum DebugCommand {
    /// List the attempts the server's node is running: phase (handler, which cleanup), for
    /// how long, lease expiry, and any cancel or shutdown that reached them.
    #[command(after_help = "\
Examples:
  mend debug attempts
  mend debug attempts --json")]
    Attempts(DebugArgs),
}

/// Arguments of `mend debug attempts`.
#[derive(clap::Args, Debug)]
pub(crate) struct DebugArgs {
    #[command(flatten)]
    conn: Conn,
}

/// `mend debug …`.
pub(crate) async fn debug(cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Attempts(a) => attempts(a).await,
    }
}

async fn attempts(a: DebugArgs) -> anyhow::Result<()> {
    let api = Api::new(&a.conn)?;
    let body = api.get(api.url(&["debug", "attempts"])).await?.body;
    if a.conn.json {
        return print_json(&body);
    }
    let list = array_field(&body, "attempts");
    if list.is_empty() {
        println!("no attempts running on {}", str_field(&body, "node"));
        return Ok(());
    }
    let mut t = Table::new(&["JOB", "KIND", "ATTEMPT", "RUNNING", "DOING", "STOP"]);
    for at in &list {
        let secs = at
            .get("running_ms")
            .and_then(Value::as_u64)
            .map_or_else(String::new, |ms| format!("{:.1} s", ms as f64 / 1000.0));
        t.row(vec![
            str_field(at, "id"),
            str_field(at, "kind"),
            at.get("attempt").map_or_else(String::new, Value::to_string),
            secs,
            str_field(at, "doing"),
            at.get("stop_requested")
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_owned(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}
