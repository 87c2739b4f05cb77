//! The `mend` binary: `mend serve` (HTTP API + workers on one database), the client commands
//! `enqueue`, `jobs` and `queues` (talk to a running server over HTTP), `mend migrate` (bring a
//! database's schema up to date) and `mend bench` (measure the engine on your machine).

mod bench;
mod chaos;
mod client;
mod db;
mod doctor;
mod drill;
mod duration;
mod fill;
mod security;
mod serve;

use clap::{Parser, Subcommand};

/// mend: durable background jobs that heal themselves.
#[derive(Parser)]
#[command(name = "mend", version, about, long_about = None)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` (one object per line) for log
    /// collectors. Filter with RUST_LOG (e.g. RUST_LOG=mend=debug); the default is `warn`, or
    /// `info` for `mend serve`.
    #[arg(
        long,
        global = true,
        env = "MEND_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API and run the workers (built-in executors) on one database.
    ///
    /// Example: MEND_API_TOKEN=$(openssl rand -hex 24) mend serve --bind 0.0.0.0:7878
    Serve(serve::ServeArgs),
    /// Measure throughput and latency: enqueue N no-op jobs in batches, run them in-process,
    /// and report jobs/s end to end, enqueue rows/s, and enqueue→start latency when idle.
    ///
    /// Example: mend bench --database sqlite:///tmp/bench.db --jobs 200000 --json
    Bench(bench::BenchArgs),
    /// Enqueue a job on a running server and print its id.
    Enqueue(client::EnqueueArgs),
    /// List, show, cancel and retry jobs on a running server.
    ///
    /// Example: mend jobs list --state retryable,discarded
    #[command(subcommand)]
    Jobs(client::JobsCommand),
    /// List queues with their job counts per state; pause and resume them.
    ///
    /// Example: mend queues list
    #[command(subcommand)]
    Queues(client::QueuesCommand),
    /// List, set and remove rate limits and per-key concurrency limits.
    ///
    /// Example: mend limits set hooks --queue default --kind http --rate 20/1s
    #[command(subcommand)]
    Limits(client::LimitsCommand),
    /// Gray release: roll a new handler version out step by step, with a guard that cuts a
    /// worse canary off; list, show, start, pause, resume, promote and abort rollouts.
    ///
    /// Example: mend rollouts start resize --version v2 --steps 5%,25%,50%,100% --every 10m
    #[command(subcommand)]
    Rollouts(client::RolloutsCommand),
    /// Look inside a running node: what each attempt is doing right now.
    ///
    /// Example: mend debug attempts
    #[command(subcommand)]
    Debug(client::DebugCommand),
    /// Periodic jobs: list, show, create, pause, resume and delete cron schedules.
    ///
    /// Example: mend cron create nightly --schedule '0 30 2 * * *' --timezone Europe/Berlin --kind report
    #[command(subcommand)]
    Cron(client::CronCommand),
    /// Run the chaos drill: real `mend serve` nodes on one database, SIGKILLs and restarts, a
    /// SIGTERM, injected panics, errors and timeouts, cut database connections; then check
    /// that no job was lost or run twice and no cleanup skipped, and report time to rescue.
    ///
    /// Example: mend chaos --database sqlite:///tmp/chaos.db --jobs 2000 --kills 5 --seed 7
    Chaos(chaos::ChaosArgs),
    /// Create or migrate a database to this build's schema and print the schema version.
    Migrate(client::MigrateArgs),
    /// Check a deployment and say what to fix: database, schema, clocks, disk (SQLite),
    /// nodes, kinds no node serves, stuck leases, failed cleanups. Exits 1 when a check fails.
    ///
    /// Example: mend doctor --database postgres://mend@db.internal/mend --json
    Doctor(doctor::DoctorArgs),
    /// API tokens with roles (admin, operator, producer, worker, viewer): create, list,
    /// revoke. Works on the database directly.
    ///
    /// Example: mend tokens create --name ci-deploy --role producer
    #[command(subcommand)]
    Tokens(security::TokensCommand),
    /// The audit log: who changed what, when and from where, newest first. Works on the
    /// database directly.
    ///
    /// Example: mend audit --action queue.pause
    Audit(security::AuditArgs),
}

/// Logs on stderr (text or JSON), plus OTLP span export when `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. A bad `OTEL_*` setting is an error.
fn init_tracing(filter: tracing_subscriber::EnvFilter, format: LogFormat) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let otlp = match mend_server::otel::OtlpConfig::from_env()? {
        Some(config) => {
            let url = config.traces_url.clone();
            Some((mend_server::otel::layer(config)?, url))
        }
        None => None,
    };
    let (otlp, url) = match otlp {
        Some((layer, url)) => (Some(layer), Some(url)),
        None => (None, None),
    };
    let text = matches!(format, LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json = matches!(format, LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
    });
    // tokio-console (cargo feature `console`, built with RUSTFLAGS="--cfg tokio_unstable"):
    // its layer sees tokio's trace-level task events, so the log filter applies to the other
    // layers only, not to the whole subscriber.
    #[cfg(feature = "console")]
    {
        use tracing_subscriber::Layer;
        tracing_subscriber::registry()
            .with(console_subscriber::spawn())
            .with(Layer::and_then(Layer::and_then(otlp, text), json).with_filter(filter))
            .init();
    }
    #[cfg(not(feature = "console"))]
    tracing_subscriber::registry()
        .with(filter)
        .with(otlp)
        .with(text)
        .with(json)
        .init();
    if let Some(url) = url {
        tracing::info!(%url, "exporting spans over OTLP/HTTP");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        // The drill's own store sees the faults it inflicts (cut connections, a restarted
        // database); its report says what matters, and the nodes log to files.
        Command::Chaos(_) => "error",
        _ => "warn",
    };
    // The OpenTelemetry SDK narrates its life at info and debug; its warnings and errors
    // (a collector that refuses spans, a full export queue) are what an operator needs.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},opentelemetry=warn"))
    });
    if let Err(e) = init_tracing(filter, cli.log_format) {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Bench(args) => bench::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Enqueue(args) => client::enqueue(args).await,
            Command::Jobs(cmd) => client::jobs(cmd).await,
            Command::Queues(cmd) => client::queues(cmd).await,
            Command::Limits(cmd) => client::limits(cmd).await,
            Command::Rollouts(cmd) => client::rollouts(cmd).await,
            Command::Debug(cmd) => client::debug(cmd).await,
            Command::Cron(cmd) => client::cron(cmd).await,
            Command::Migrate(args) => client::migrate(args).await,
            Command::Chaos(args) => chaos::run(args).await,
            Command::Doctor(args) => doctor::run(args).await,
            Command::Tokens(cmd) => security::tokens(cmd).await,
            Command::Audit(args) => security::audit_log(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated like `{:#}`, leaving out a cause whose text the
/// message before it already holds (a store error names what its driver said and keeps the
/// driver's error as its source).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let driver = std::io::Error::other("file is not a database");
        let store = mend::StoreError::Corrupt {
            path: "x.db".into(),
            detail: driver.to_string(),
            source: Some(std::sync::Arc::new(driver)),
        };
        let e = anyhow::Error::new(store).context("opening the store");
        let text = chain(&e);
        assert_eq!(text.matches("file is not a database").count(), 1, "{text}");
        assert!(
            text.starts_with("opening the store: the database at x.db is corrupt"),
            "{text}"
        );
    }
}
