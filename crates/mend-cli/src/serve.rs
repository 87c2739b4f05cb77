//! `mend serve`: the HTTP API and the workers (built-in executors) on one database, with
//! configuration from flags, `MEND_*` environment variables and an optional `mend.toml`
//! (in that order of precedence), and graceful shutdown on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

use crate::duration;

/// Arguments of `mend serve`. Each has an environment variable; `mend.toml` fills in what
/// neither flag nor variable sets.
#[derive(clap::Args, Default)]
pub(crate) struct ServeArgs {
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB?schema=NAME [default: sqlite://mend.db]
    #[arg(long, env = "MEND_DATABASE_URL")]
    database: Option<String>,
    /// Address to listen on [default: 127.0.0.1:7878]; port 0 picks a free port.
    #[arg(long, env = "MEND_BIND")]
    bind: Option<String>,
    /// An admin bearer token the API accepts (more tokens, with roles: `mend tokens create`).
    /// Without it or a stored token, only a loopback address is allowed.
    #[arg(long, env = "MEND_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Queues to work, as NAME=CONCURRENCY, comma-separated [default: default=10]
    #[arg(long, env = "MEND_QUEUES", value_delimiter = ',')]
    queues: Vec<String>,
    /// How long in-flight jobs may run on after SIGTERM before they are cancelled and
    /// released, e.g. 30s, 2m [default: 30s]. The old --drain-ms N (MEND_DRAIN_MS,
    /// drain_ms in mend.toml), in milliseconds, still works; this one wins over it.
    #[arg(long, env = "MEND_DRAIN", value_name = "DURATION", value_parser = duration::parse)]
    drain: Option<Duration>,
    /// The old name of --drain, in milliseconds.
    #[arg(long, env = "MEND_DRAIN_MS", value_name = "MS", hide = true)]
    drain_ms: Option<u64>,
    /// How long readiness reports false before new connections are refused, e.g. 1s, 500ms
    /// [default: 1s]. The old --shutdown-grace-ms N (MEND_SHUTDOWN_GRACE_MS,
    /// shutdown_grace_ms in mend.toml), in milliseconds, still works.
    #[arg(
        long,
        env = "MEND_SHUTDOWN_GRACE",
        value_name = "DURATION",
        value_parser = duration::parse
    )]
    shutdown_grace: Option<Duration>,
    /// The old name of --shutdown-grace, in milliseconds.
    #[arg(long, env = "MEND_SHUTDOWN_GRACE_MS", value_name = "MS", hide = true)]
    shutdown_grace_ms: Option<u64>,
    /// Largest request body in bytes [default: 1 MiB]
    #[arg(long, env = "MEND_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Delete completed, cancelled and discarded jobs this long after they finish, e.g. 168h,
    /// 7d; 0 keeps them forever [default: 168h, a week]. The old --retention-hours N
    /// (MEND_RETENTION_HOURS, retention_hours in mend.toml), in hours, still works.
    #[arg(
        long,
        env = "MEND_RETENTION",
        value_name = "DURATION",
        value_parser = duration::parse
    )]
    retention: Option<Duration>,
    /// The old name of --retention, in hours.
    #[arg(long, env = "MEND_RETENTION_HOURS", value_name = "HOURS", hide = true)]
    retention_hours: Option<u64>,
    /// Delete the dashboard's per-minute history and events this long after they happen,
    /// e.g. 7d, 24h; 0 keeps them forever [default: 7d]
    #[arg(
        long,
        env = "MEND_HISTORY_RETENTION",
        value_name = "DURATION",
        value_parser = duration::parse
    )]
    history_retention: Option<Duration>,
    /// Delete audit rows this long after they were written, e.g. 90d; 0 keeps them forever
    /// [default: 90d]
    #[arg(
        long,
        env = "MEND_AUDIT_RETENTION",
        value_name = "DURATION",
        value_parser = duration::parse
    )]
    audit_retention: Option<Duration>,
    /// Kinds whose args are encrypted at rest (AES-256-GCM), comma-separated; the keys come
    /// from MEND_ARGS_KEYS="ID:BASE64[,ID:BASE64...]" (the first encrypts, all decrypt).
    #[arg(long, env = "MEND_ENCRYPT_KINDS", value_delimiter = ',')]
    encrypt_kinds: Vec<String>,
    /// Configuration file [default: ./mend.toml when it exists]
    #[arg(long, env = "MEND_CONFIG")]
    config: Option<PathBuf>,
    /// Also run `mend chaos`'s drill kind, keeping its files here (set by `mend chaos`).
    #[arg(long, hide = true)]
    drill_dir: Option<PathBuf>,
    /// A bug the drill kind should have, to prove the drill catches it (tests only).
    #[arg(long, hide = true, requires = "drill_dir")]
    drill_break: Option<crate::drill::Breakage>,
    /// Also serve a canary version of the drill kind failing this share of its attempts
    /// (set by `mend chaos --bad-canary`).
    #[arg(long, hide = true, requires = "drill_dir", value_name = "RATE")]
    drill_bad_canary: Option<f64>,
    /// Also serve the drill's twin kind and a good canary version of it (set by `mend chaos
    /// --good-canary`).
    #[arg(long, hide = true, requires = "drill_dir")]
    drill_good_canary: bool,
    /// Also serve the drill kind as this named handler version (the same code), so a
    /// rollout of it can be started against a real node (tests and demos of gray release).
    #[arg(long, hide = true, requires = "drill_dir")]
    drill_version: Option<String>,
    /// Serve the /debug/* routes (CPU profiles) on a non-loopback address too; they are always
    /// on for a loopback address. The token still guards them.
    #[arg(long, env = "MEND_DEBUG_ENDPOINTS")]
    debug_endpoints: bool,
    /// How often this node looks for dead nodes' jobs after start-up, e.g. 5s [default: 5s;
    /// PostgreSQL's leader may look sooner]. Every node rescues at start-up regardless.
    #[arg(long, env = "MEND_RESCUE_INTERVAL", value_name = "DURATION", value_parser = duration::parse)]
    rescue_interval: Option<Duration>,
    /// Claim only as many jobs as there are free slots. By default a busy queue of short jobs
    /// also claims what runs in two claims' round trips (at most four per slot), which wait
    /// on this node for a slot; this turns that off.
    #[arg(long, env = "MEND_NO_CLAIM_AHEAD")]
    no_claim_ahead: bool,
}

/// How long in-flight jobs may finish after SIGTERM when nothing says otherwise.
const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
/// How long readiness reports false before connections are refused, when nothing says.
const DEFAULT_GRACE: Duration = Duration::from_secs(1);
/// How long finished jobs are kept when nothing says: a week, long enough to look into last
/// week's failures.
const DEFAULT_RETENTION: Duration = Duration::from_secs(168 * 3600);

/// The `[http]` table of `mend.toml`: versions of the `http` kind for gray release.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfig {
    #[serde(default)]
    versions: std::collections::BTreeMap<String, mend_executors::HttpVersion>,
}

/// `mend.toml`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database: Option<String>,
    bind: Option<String>,
    token: Option<String>,
    queues: Option<std::collections::BTreeMap<String, usize>>,
    /// A duration such as "30s" (see `duration.rs`).
    drain: Option<String>,
    /// The old `drain`, in milliseconds.
    drain_ms: Option<u64>,
    shutdown_grace: Option<String>,
    /// The old `shutdown_grace`, in milliseconds.
    shutdown_grace_ms: Option<u64>,
    max_body_bytes: Option<usize>,
    /// "0" keeps finished jobs forever.
    retention: Option<String>,
    /// The old `retention`, in hours.
    retention_hours: Option<u64>,
    /// "0" keeps the dashboard history forever.
    history_retention: Option<String>,
    /// "0" keeps audit rows forever.
    audit_retention: Option<String>,
    /// `--encrypt-kinds`.
    encrypt_kinds: Option<Vec<String>>,
    /// The built-in executors' settings (`[exec.allow.NAME]` tables).
    exec: Option<mend_executors::ExecutorsConfig>,
    /// Versions of the `http` kind (`[http.versions.NAME]` tables).
    http: Option<HttpConfig>,
    /// Periodic jobs (`[[cron]]` tables), stored at start.
    cron: Option<Vec<mend::cron::PeriodicDecl>>,
    /// Rate and concurrency limits (`[[limits]]` tables), set at start.
    limits: Option<Vec<LimitConfig>>,
    /// `--debug-endpoints`.
    debug_endpoints: Option<bool>,
}

/// One `[[limits]]` table of `mend.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitConfig {
    name: String,
    queue: String,
    kind: Option<String>,
    /// A JSON pointer into the args.
    key: Option<String>,
    /// `N/DURATION`, e.g. "20/1s".
    rate: Option<String>,
    burst: Option<u32>,
    concurrency: Option<u32>,
}

impl LimitConfig {
    /// The limit, checked; errors name the table and the key.
    fn into_limit(self) -> anyhow::Result<mend::limits::Limit> {
        let name = self.name.clone();
        let mut limit = mend::limits::Limit::new(self.name, self.queue);
        limit.kind = self.kind;
        limit.key = self.key;
        limit.concurrency = self.concurrency;
        if let Some(r) = &self.rate {
            let parsed = crate::client::parse_rate(r)
                .with_context(|| format!("[[limits]] {name:?}: rate"))?;
            let mut rate: mend::limits::Rate = serde_json::from_value(parsed)
                .with_context(|| format!("[[limits]] {name:?}: rate {r:?}"))?;
            rate.burst = self.burst;
            limit.rate = Some(rate);
        } else if self.burst.is_some() {
            bail!("[[limits]] {name:?}: burst needs a rate (rate = \"20/1s\")");
        }
        limit
            .validate()
            .map_err(|e| anyhow::anyhow!("[[limits]] {name:?}: {e}"))?;
        Ok(limit)
    }
}

/// The settings in force.
struct Settings {
    database: String,
    bind: String,
    token: Option<String>,
    queues: Vec<(String, usize)>,
    drain: Duration,
    grace: Duration,
    max_body_bytes: usize,
    retention: Option<Duration>,
    history_retention: Option<Duration>,
    audit_retention: Option<Duration>,
    encrypt_kinds: Vec<String>,
    executors: mend_executors::ExecutorsConfig,
    limits: Vec<mend::limits::Limit>,
    drill: Option<(
        PathBuf,
        Option<crate::drill::Breakage>,
        crate::drill::Canaries,
    )>,
    /// `--drill-version`: the drill kind also served as this named version.
    drill_version: Option<String>,
    /// The `[[cron]]` schedules, checked.
    periodic: Vec<mend::Periodic>,
    /// `--debug-endpoints` (or its variable, or the file's key): the debug routes on any
    /// address, not only on loopback.
    debug_endpoints: bool,
    /// `--rescue-interval`.
    rescue_interval: Option<Duration>,
    /// Not `--no-claim-ahead`.
    claim_ahead: bool,
}

impl std::fmt::Debug for Settings {
    // Written out so the token can never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("database", &self.database)
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("queues", &self.queues)
            .field("drain", &self.drain)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// One duration setting from wherever it is given, first found first: the flag (or its
/// variable), the old flag in its old unit, the `mend.toml` key, the old key in its old unit.
struct DurationSources<'a> {
    /// The `mend.toml` key (the flag without `--`, `-` for `_`).
    key: &'static str,
    old_key: &'static str,
    flag: Option<Duration>,
    old_flag: Option<Duration>,
    file: Option<&'a str>,
    old_file: Option<Duration>,
}

impl DurationSources<'_> {
    fn resolve(self, config: &std::path::Path) -> anyhow::Result<Option<Duration>> {
        let (key, old_key) = (self.key, self.old_key);
        if self.file.is_some() && self.old_file.is_some() {
            bail!(
                "{} sets both {key} and {old_key} (its old name); keep {key}",
                config.display()
            );
        }
        let file = self
            .file
            .map(|text| {
                duration::parse(text).map_err(|e| anyhow!("{key} in {}: {e}", config.display()))
            })
            .transpose()?;
        Ok(self.flag.or(self.old_flag).or(file).or(self.old_file))
    }
}

fn load(args: ServeArgs) -> anyhow::Result<Settings> {
    let path = args.config.clone().or_else(|| {
        let p = PathBuf::from("mend.toml");
        p.exists().then_some(p)
    });
    let file: FileConfig = match &path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("{} is not a valid mend.toml", p.display()))?
        }
        None => FileConfig::default(),
    };
    let config = path.as_deref().unwrap_or(std::path::Path::new("mend.toml"));
    let drain = DurationSources {
        key: "drain",
        old_key: "drain_ms",
        flag: args.drain,
        old_flag: args.drain_ms.map(Duration::from_millis),
        file: file.drain.as_deref(),
        old_file: file.drain_ms.map(Duration::from_millis),
    }
    .resolve(config)?;
    let grace = DurationSources {
        key: "shutdown_grace",
        old_key: "shutdown_grace_ms",
        flag: args.shutdown_grace,
        old_flag: args.shutdown_grace_ms.map(Duration::from_millis),
        file: file.shutdown_grace.as_deref(),
        old_file: file.shutdown_grace_ms.map(Duration::from_millis),
    }
    .resolve(config)?;
    let hours = |h: u64| Duration::from_secs(h.saturating_mul(3600));
    let retention = DurationSources {
        key: "retention",
        old_key: "retention_hours",
        flag: args.retention,
        old_flag: args.retention_hours.map(hours),
        file: file.retention.as_deref(),
        old_file: file.retention_hours.map(hours),
    }
    .resolve(config)?;
    let history_retention = DurationSources {
        key: "history_retention",
        old_key: "history_retention (old name)",
        flag: args.history_retention,
        old_flag: None,
        file: file.history_retention.as_deref(),
        old_file: None,
    }
    .resolve(config)?;
    let audit_retention = DurationSources {
        key: "audit_retention",
        old_key: "audit_retention (old name)",
        flag: args.audit_retention,
        old_flag: None,
        file: file.audit_retention.as_deref(),
        old_file: None,
    }
    .resolve(config)?;
    let queues = if !args.queues.is_empty() {
        args.queues
            .iter()
            .map(|q| {
                let (name, n) = q
                    .split_once('=')
                    .with_context(|| format!("--queues takes NAME=CONCURRENCY, got {q:?}"))?;
                let n: usize = n.parse().with_context(|| {
                    format!("concurrency of queue {name:?} must be a whole number, got {n:?}")
                })?;
                Ok((name.to_owned(), n))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    } else if let Some(q) = file.queues {
        q.into_iter().collect()
    } else {
        vec![("default".to_owned(), 10)]
    };
    if queues.iter().any(|(_, n)| *n == 0) {
        bail!("queue concurrency must be at least 1");
    }
    // Periodic jobs: every [[cron]] table is checked before anything is stored.
    let periodic = file
        .cron
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, decl)| {
            let name = decl.name.clone().unwrap_or_default();
            decl.into_periodic().map_err(|e| {
                anyhow!(
                    "{} [[cron]] table #{} ({name:?}): {}: {}",
                    config.display(),
                    i + 1,
                    e.field,
                    e.message
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let limits = file
        .limits
        .unwrap_or_default()
        .into_iter()
        .map(LimitConfig::into_limit)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Settings {
        database: args
            .database
            .or(file.database)
            .unwrap_or_else(|| "sqlite://mend.db".into()),
        bind: args
            .bind
            .or(file.bind)
            .unwrap_or_else(|| "127.0.0.1:7878".into()),
        token: args
            .token
            .or(file.token)
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()),
        queues,
        drain: drain.unwrap_or(DEFAULT_DRAIN),
        grace: grace.unwrap_or(DEFAULT_GRACE),
        max_body_bytes: args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(mend_server::DEFAULT_MAX_BODY_BYTES),
        // Zero keeps finished jobs forever.
        retention: Some(retention.unwrap_or(DEFAULT_RETENTION)).filter(|r| !r.is_zero()),
        history_retention: Some(
            history_retention.unwrap_or(mend::stats::DEFAULT_HISTORY_RETENTION),
        )
        .filter(|r| !r.is_zero()),
        audit_retention: Some(audit_retention.unwrap_or(mend::audit::DEFAULT_AUDIT_RETENTION))
            .filter(|r| !r.is_zero()),
        encrypt_kinds: if args.encrypt_kinds.is_empty() {
            file.encrypt_kinds.unwrap_or_default()
        } else {
            args.encrypt_kinds
        }
        .into_iter()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .collect(),
        executors: {
            let mut executors = file.exec.unwrap_or_default();
            executors.http_versions = file.http.map(|h| h.versions).unwrap_or_default();
            executors
        },
        limits,
        drill: args.drill_dir.map(|d| {
            let canaries = crate::drill::Canaries {
                bad: args.drill_bad_canary,
                good: args.drill_good_canary,
            };
            (d, args.drill_break, canaries)
        }),
        drill_version: args.drill_version,
        periodic,
        debug_endpoints: args.debug_endpoints || file.debug_endpoints.unwrap_or(false),
        rescue_interval: args.rescue_interval.filter(|d| !d.is_zero()),
        claim_ahead: !args.no_claim_ahead,
    })
}

/// Runs the server until SIGTERM/SIGINT.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let s = load(args)?;
    let addr: SocketAddr = s.bind.parse().with_context(|| {
        format!(
            "--bind must be IP:PORT such as 127.0.0.1:7878, got {:?}",
            s.bind
        )
    })?;
    let keys = mend::secrets::ArgsKeys::from_env()?;
    if !s.encrypt_kinds.is_empty() && keys.is_none() {
        bail!(
            "--encrypt-kinds ({}) needs the keys in {}: ID:BASE64 with a 32-byte key, e.g. {}=k1:$(openssl rand -base64 32)",
            s.encrypt_kinds.join(", "),
            mend::secrets::KEYS_ENV,
            mend::secrets::KEYS_ENV
        );
    }
    let store = crate::db::open(&s.database, crate::db::OpenOptions::default()).await?;
    let stored_tokens = store
        .token_list()
        .await
        .context("reading the API tokens")?
        .iter()
        .any(|t| t.revoked_at.is_none());
    if s.token.is_none() && !stored_tokens && !addr.ip().is_loopback() {
        bail!(
            "refusing to serve on {addr} without a token: anyone who can reach it could run jobs. \
             Set MEND_API_TOKEN (or --token, or token in mend.toml) to a long random value, create one with \
             `mend tokens create --name NAME --role admin`, or bind to 127.0.0.1"
        );
    }
    // A wrong or missing key is refused before anything is read or written.
    mend::secrets::check_keys(store.as_ref(), keys.as_ref(), !s.encrypt_kinds.is_empty()).await?;
    let store: Arc<dyn mend::Store> = match keys {
        Some(keys) => {
            tracing::info!(kinds = ?s.encrypt_kinds, key_ids = ?keys.ids(), "args of these kinds are encrypted at rest");
            Arc::new(mend::secrets::EncryptedArgs::new(
                store,
                Arc::new(keys),
                s.encrypt_kinds.iter().cloned().collect(),
            ))
        }
        None => store,
    };

    // Listen first: if the port is taken, fail before any job is claimed.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (in use? try another --bind)"))?;
    let mut registry = mend::Registry::new();
    mend_executors::register(&mut registry, &s.executors);
    if let Some((dir, breakage, canaries)) = &s.drill {
        let dir = crate::drill::DrillDir { root: dir.clone() };
        dir.create()?;
        if s.drill_version.is_some() {
            // Without `mend chaos` (which makes it first) a drill job needs its ledger.
            crate::drill::create_ledger(&s.database).await?;
        }
        crate::drill::register(
            &mut registry,
            &s.database,
            dir,
            *breakage,
            *canaries,
            s.drill_version.as_deref(),
        )?;
        // A drill node must not outlive its drill: `mend chaos` holds our stdin open.
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            eprintln!("mend chaos is gone (stdin closed); this drill node exits");
            std::process::exit(3);
        });
        if let Some(b) = breakage {
            tracing::warn!(
                breakage = b.name(),
                "the drill kind runs with a bug put in on purpose"
            );
        }
    }
    let retention = s.retention;
    let rescue_interval = s.rescue_interval;
    let claim_ahead = s.claim_ahead;
    let history_retention = s.history_retention;
    let audit_retention = s.audit_retention;
    let drilling = s.drill.is_some();
    let mut builder = mend::Worker::builder(store.clone())
        .registry(registry)
        .configure(|c| {
            c.retention = retention;
            if let Some(every) = rescue_interval {
                c.rescue_interval = every;
            }
            c.claim_ahead = claim_ahead;
            c.history_retention = history_retention;
            c.audit_retention = audit_retention;
            if drilling {
                // A drill's kills come fast, and may hit one job three times in a row; a
                // quarantine would then discard a healthy job.
                c.quarantine_after_lost = 0;
                // A drill injects thousands of failures; production backoff (seconds to an
                // hour) would leave it waiting instead of exercising recovery.
                c.retry_policy = Arc::new(mend::retry::ExponentialBackoff {
                    base: Duration::from_millis(50),
                    factor: 2.0,
                    max: Duration::from_secs(1),
                    jitter: 0.25,
                });
            }
        });
    for (q, n) in &s.queues {
        builder = builder.queue(q.clone(), *n);
    }
    for limit in &s.limits {
        builder = builder.limit(limit.clone());
    }
    for p in &s.periodic {
        builder = builder.periodic(p.clone());
    }
    let worker = builder
        .build()
        .start()
        .await
        .context("starting the workers")?;

    let mut state = mend_server::AppState::new(store);
    state.token = s.token.as_deref().map(Arc::from);
    state.max_body_bytes = s.max_body_bytes;
    let executors = s.executors.clone();
    state.validator = Some(Arc::new(move |kind: &str, args: &serde_json::Value| {
        mend_executors::validate(kind, args, &executors)
    }));
    state.worker = Some(worker.clone());
    // Profiles and live attempts show what the process does; a loopback address only reaches
    // this machine.
    state.debug_endpoints = s.debug_endpoints || addr.ip().is_loopback();
    let app = mend_server::app(state);

    let local = listener.local_addr()?;
    // Before the ready lines: a SIGTERM right after them must drain, not kill.
    let signals = mend::runtime::Signals::listen();
    // Scripts and tests read these lines to find the port and the node. Whoever started us
    // may have closed stdout after reading what it needed: that must not stop the server.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "mend listening on http://{local}")
            .and_then(|()| writeln!(out, "mend node {}", worker.node_id()))
            .and_then(|()| out.flush());
    }
    tracing::info!(%local, queues = ?s.queues, auth = s.token.is_some() || stored_tokens, "serving");

    let http_stop = tokio_util::sync::CancellationToken::new();
    let http_wait = http_stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { http_wait.cancelled().await })
        .await
    });

    // The library's signal-driven stop: readiness off, the grace period (load balancers stop
    // sending new work before connections are refused), HTTP stops taking requests, drain.
    // Signals keep escalating until the connections are closed and the traces flushed.
    let finish = |drained| async move {
        match tokio::time::timeout(Duration::from_secs(10), server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Err(_) => tracing::warn!("HTTP connections still open after 10 s; closing them"),
        }
        tracing::info!(?drained, "stopped");
        // Spans of the last jobs and of the shutdown itself.
        mend_server::otel::flush(Duration::from_secs(2));
    };
    worker
        .run_until_with(signals, s.drain, s.grace, || http_stop.cancel(), finish)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mend.toml");
        std::fs::write(
            &path,
            "bind = \"127.0.0.1:9000\"\ndrain_ms = 5\n[queues]\nmail = 3\n\n[exec.allow.report]\nprogram = \"/bin/echo\"\nargs = [\"hi\"]\n",
        )
        .unwrap();
        let s = load(ServeArgs {
            config: Some(path.clone()),
            drain_ms: Some(7),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.bind, "127.0.0.1:9000");
        assert_eq!(s.drain, Duration::from_millis(7));
        assert_eq!(s.queues, vec![("mail".to_owned(), 3)]);
        assert_eq!(s.database, "sqlite://mend.db");
        assert!(s.executors.exec_allow.contains_key("report"));
        std::fs::write(&path, "bnid = 1\n").unwrap();
        let err = load(ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("bnid"), "{err:#}");
    }

    #[test]
    fn limits_come_from_the_file_and_bad_ones_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mend.toml");
        let load_text = |text: &str| {
            std::fs::write(&path, text).unwrap();
            load(ServeArgs {
                config: Some(path.clone()),
                ..Default::default()
            })
        };
        let s = load_text(
            "[[limits]]\nname = \"hooks\"\nqueue = \"default\"\nkind = \"http\"\nrate = \"20/1s\"\nburst = 40\n\n[[limits]]\nname = \"acct\"\nqueue = \"default\"\nkey = \"/account\"\nconcurrency = 1\n",
        )
        .unwrap();
        let hooks = mend::limits::Limit::new("hooks", "default")
            .kind("http")
            .rate(mend::limits::Rate::new(20, Duration::from_secs(1)).with_burst(40));
        let acct = mend::limits::Limit::new("acct", "default")
            .per_key("/account")
            .concurrency(1);
        assert_eq!(s.limits, vec![hooks, acct]);
        for (text, says) in [
            (
                "[[limits]]\nname = \"z\"\nqueue = \"q\"\nconcurrency = 0\n",
                "concurrency",
            ),
            (
                "[[limits]]\nname = \"p\"\nqueue = \"q\"\nkey = \"account\"\nconcurrency = 1\n",
                "key",
            ),
            (
                "[[limits]]\nname = \"r\"\nqueue = \"q\"\nrate = \"20 per second\"\n",
                "rate",
            ),
            ("[[limits]]\nname = \"n\"\nqueue = \"q\"\n", "rate"),
            (
                "[[limits]]\nname = \"b\"\nqueue = \"q\"\nburst = 3\nconcurrency = 1\n",
                "burst",
            ),
            (
                "[[limits]]\nname = \"t\"\nqueue = \"q\"\nconcurency = 1\n",
                "concurency",
            ),
        ] {
            let err = format!("{:#}", load_text(text).unwrap_err());
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = std::iter::once("serve").chain(flags.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).map(|c| c.args)
    }

    /// Settings from `flags` and a mend.toml holding `toml`.
    fn settings(flags: &[&str], toml: &str) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mend.toml");
        std::fs::write(&path, toml).unwrap();
        let mut args = parse(flags).unwrap();
        args.config = Some(path);
        load(args)
    }

    #[test]
    fn durations_take_units_and_the_old_names_keep_theirs() {
        let s = settings(&["--drain", "2s", "--shutdown-grace", "250ms"], "").unwrap();
        assert_eq!(s.drain, Duration::from_secs(2));
        assert_eq!(s.grace, Duration::from_millis(250));
        assert_eq!(s.retention, Some(Duration::from_secs(168 * 3600)));
        let s = settings(
            &[
                "--drain-ms",
                "1500",
                "--shutdown-grace-ms",
                "50",
                "--retention-hours",
                "2",
            ],
            "",
        )
        .unwrap();
        assert_eq!(s.drain, Duration::from_millis(1500));
        assert_eq!(s.grace, Duration::from_millis(50));
        assert_eq!(s.retention, Some(Duration::from_secs(7200)));
        // Zero keeps finished jobs forever, in either spelling.
        assert_eq!(settings(&["--retention", "0"], "").unwrap().retention, None);
        assert_eq!(
            settings(&["--retention-hours", "0"], "").unwrap().retention,
            None
        );
        // The new name wins over the old one.
        let s = settings(&["--drain", "1m", "--drain-ms", "5"], "").unwrap();
        assert_eq!(s.drain, Duration::from_secs(60));
        // Defaults.
        let s = settings(&[], "").unwrap();
        assert_eq!((s.drain, s.grace), (DEFAULT_DRAIN, DEFAULT_GRACE));
    }

    #[test]
    fn mend_toml_durations_take_units_and_the_old_keys_keep_theirs() {
        let s = settings(
            &[],
            "drain = \"1m30s\"\nshutdown_grace = \"2s\"\nretention = \"7d\"\n",
        )
        .unwrap();
        assert_eq!(s.drain, Duration::from_secs(90));
        assert_eq!(s.grace, Duration::from_secs(2));
        assert_eq!(s.retention, Some(Duration::from_secs(7 * 86400)));
        let s = settings(&[], "drain_ms = 40\nretention_hours = 0\n").unwrap();
        assert_eq!(s.drain, Duration::from_millis(40));
        assert_eq!(s.retention, None);
        // A flag beats the file, whichever names either uses.
        let s = settings(&["--drain-ms", "7"], "drain = \"1h\"\n").unwrap();
        assert_eq!(s.drain, Duration::from_millis(7));
        let err = settings(&[], "drain = \"30\"\n").unwrap_err().to_string();
        assert!(
            err.contains("drain in ") && err.contains("needs a unit"),
            "{err}"
        );
        let err = settings(&[], "retention = \"a week\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("retention in ") && err.contains("1h30m"),
            "{err}"
        );
        let err = settings(&[], "drain = \"1s\"\ndrain_ms = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("both drain and drain_ms"), "{err}");
    }

    #[test]
    fn debug_endpoints_come_from_the_flag_or_the_file() {
        assert!(!settings(&[], "").unwrap().debug_endpoints);
        assert!(
            settings(&["--debug-endpoints"], "")
                .unwrap()
                .debug_endpoints
        );
        assert!(
            settings(&[], "debug_endpoints = true\n")
                .unwrap()
                .debug_endpoints
        );
        assert!(
            !settings(&[], "debug_endpoints = false\n")
                .unwrap()
                .debug_endpoints
        );
        assert!(
            settings(&["--debug-endpoints"], "debug_endpoints = false\n")
                .unwrap()
                .debug_endpoints
        );
    }

    #[test]
    fn a_bad_duration_flag_says_what_is_accepted() {
        for (flag, value) in [
            ("--drain", "30"),
            ("--shutdown-grace", "soon"),
            ("--retention", "1w"),
        ] {
            let err = parse(&[flag, value]).err().unwrap().to_string();
            assert!(err.contains(flag), "{err}");
            assert!(err.contains("e.g.") && err.contains("30s"), "{err}");
        }
        // The old names take plain numbers, as they always did.
        assert!(parse(&["--drain-ms", "2s"]).is_err());
    }
}
