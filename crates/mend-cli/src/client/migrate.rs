//! `mend migrate`: opens a database locally (which applies the migrations) and reports the
//! schema version. The only client command that does not talk to a server.

use anyhow::Context;
use serde_json::json;

use super::output::print_json;

/// Arguments of `mend migrate`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  mend migrate
  mend migrate --database sqlite:///var/lib/mend/mend.db

Creates the file when it does not exist. Safe to run any number of times, also while
`mend serve` runs on the same file. `mend serve` migrates at start-up too.")]
pub(crate) struct MigrateArgs {
    /// Database URL (sqlite://PATH or postgres://USER@HOST/DB) [default: sqlite://mend.db]
    #[arg(long, env = "MEND_DATABASE_URL", value_name = "URL")]
    database: Option<String>,
    /// Print `{"database": .., "schema_version": ..}` instead of a sentence.
    #[arg(long)]
    json: bool,
}

/// `mend migrate`: open the database locally (which applies the migrations) and report the
/// schema version.
pub(crate) async fn migrate(a: MigrateArgs) -> anyhow::Result<()> {
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
