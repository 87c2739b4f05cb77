//! `mend tokens` (create, list, revoke API tokens with roles) and `mend audit` (read the audit
//! log): admin commands that work on the database directly, like `mend migrate`, so the first
//! token can be made before any server runs. Every token change is written to the audit log
//! as `cli:<os user>`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use mend::audit::{AuditParams, NewAuditEntry, MAX_AUDIT_PAGE};
use mend::auth::{CreateTokenParams, RevokeTokenParams, Role};

/// Where the database is: like `mend doctor`.
#[derive(clap::Args, Debug)]
pub(crate) struct DatabaseArgs {
    /// Database URL (sqlite://PATH or postgres://USER@HOST/DB) [default: `database` in the
    /// config file, else sqlite://mend.db]
    #[arg(long, env = "MEND_DATABASE_URL", value_name = "URL")]
    database: Option<String>,
    /// Configuration file to read `database` from [default: ./mend.toml when it exists]
    #[arg(long, env = "MEND_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl DatabaseArgs {
    /// The URL, as `mend serve` picks it.
    fn url(&self) -> anyhow::Result<String> {
        crate::db::database_url(self.database.as_deref(), self.config.as_deref())
    }

    async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn mend::Store>> {
        crate::db::open(&self.url()?, crate::db::OpenOptions::default()).await
    }
}

/// `mend tokens ...`.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum TokensCommand {
    /// Make a token with a role and print it (once: only its SHA-256 is stored).
    ///
    /// Example: mend tokens create --name ci-deploy --role producer
    Create {
        /// Its name (letters, digits, '-', '_', '.'), shown in the audit log.
        #[arg(long)]
        name: String,
        /// admin, operator, producer, worker or viewer.
        #[arg(long, value_parser = |s: &str| Role::parse(s))]
        role: Role,
        /// Print `{"name", "role", "token"}`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List the tokens (never the tokens themselves).
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
        /// Show revoked tokens too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Revoke a token: servers refuse it within 2 seconds.
    Revoke {
        /// The token's name.
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// `mend audit`: who changed what, newest first.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  mend audit --since 2026-11-30T00:00:00Z --action job.cancel
  mend audit --actor ci-deploy --json")]
pub(crate) struct AuditArgs {
    /// Only rows at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Only rows before this time (RFC 3339).
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// Only this actor's rows.
    #[arg(long)]
    actor: Option<String>,
    /// Only this action's rows (job.cancel, queue.pause, token.create, ...).
    #[arg(long)]
    action: Option<String>,
    /// Rows older than this id (the last id of the previous page).
    #[arg(long)]
    before: Option<i64>,
    /// Most rows [default: 100, at most 500].
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print a JSON array.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    db: DatabaseArgs,
}

fn audit(actor: &str, action: &str, target: &str, detail: serde_json::Value) -> NewAuditEntry {
    NewAuditEntry::now(actor, action, target, detail, "local")
}

/// `mend tokens ...`.
pub(crate) async fn tokens(cmd: TokensCommand) -> anyhow::Result<()> {
    let actor = mend::audit::cli_actor();
    match cmd {
        TokensCommand::Create {
            name,
            role,
            json,
            db,
        } => {
            mend::auth::validate_token_name(&name).map_err(anyhow::Error::msg)?;
            if name == mend_server::tokens::CONFIGURED_TOKEN_NAME
                || name == mend_server::tokens::LOCAL_NAME
            {
                bail!("the name {name} is reserved (it names the configured token or a local caller in the audit log); choose another");
            }
            let store = db.open().await?;
            let token = mend::auth::generate_token();
            let created = store
                .token_create(CreateTokenParams {
                    name: name.clone(),
                    role,
                    hash: mend::auth::hash_token(&token),
                    now: Utc::now(),
                    created_by: actor.clone(),
                })
                .await
                .context("storing the token")?;
            if !created {
                bail!("a token named {name} exists and is not revoked; revoke it first (`mend tokens revoke {name}`) or choose another name");
            }
            store
                .audit_add(vec![audit(
                    &actor,
                    "token.create",
                    &name,
                    serde_json::json!({"role": role}),
                )])
                .await
                .context("writing the audit row")?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": name, "role": role, "token": token})
                );
            } else {
                println!("{token}");
                eprintln!("token {name} ({role}) created; it is shown only this once: keep it in a secret store");
            }
            Ok(())
        }
        TokensCommand::List { json, all, db } => {
            let store = db.open().await?;
            let tokens: Vec<_> = store
                .token_list()
                .await?
                .into_iter()
                .filter(|t| all || t.revoked_at.is_none())
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<9} {:<20} {:<20} REVOKED",
                "NAME", "ROLE", "CREATED", "BY"
            );
            for t in tokens {
                println!(
                    "{:<24} {:<9} {:<20} {:<20} {}",
                    t.name,
                    t.role,
                    t.created_at.format("%Y-%m-%d %H:%M:%S"),
                    t.created_by,
                    t.revoked_at.map_or("-".to_owned(), |r| r
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string())
                );
            }
            Ok(())
        }
        TokensCommand::Revoke { name, db } => {
            let store = db.open().await?;
            let revoked = store
                .token_revoke(RevokeTokenParams {
                    name: name.clone(),
                    now: Utc::now(),
                })
                .await?;
            if !revoked {
                bail!("there is no token named {name} that is not revoked already (`mend tokens list --all` shows them)");
            }
            store
                .audit_add(vec![audit(
                    &actor,
                    "token.revoke",
                    &name,
                    serde_json::json!({}),
                )])
                .await
                .context("writing the audit row")?;
            eprintln!(
                "token {name} revoked; servers refuse it within {} s",
                mend_server::tokens::TOKEN_CACHE_TTL.as_secs()
            );
            Ok(())
        }
    }
}

/// `mend audit`.
pub(crate) async fn audit_log(a: AuditArgs) -> anyhow::Result<()> {
    if a.limit == 0 || a.limit > MAX_AUDIT_PAGE {
        bail!("--limit must be between 1 and {MAX_AUDIT_PAGE}");
    }
    let store = a.db.open().await?;
    let rows = store
        .audit_list(AuditParams {
            before_id: a.before,
            since: a.since,
            until: a.until,
            actor: a.actor,
            action: a.action,
            limit: a.limit,
        })
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<8} {:<20} {:<20} {:<16} {:<38} {:<16} DETAIL",
        "ID", "AT", "ACTOR", "ACTION", "TARGET", "FROM"
    );
    for r in rows {
        println!(
            "{:<8} {:<20} {:<20} {:<16} {:<38} {:<16} {}",
            r.id,
            r.at.format("%Y-%m-%d %H:%M:%S"),
            r.actor,
            r.action,
            r.target,
            r.remote,
            mend::secrets::mask(&r.detail).0
        );
    }
    Ok(())
}
