//! The flags of `mend chaos` and the settings a drill runs with once they are checked. Only
//! parsing and validation live here; nothing is started.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::drill::Breakage;
use crate::duration;
use mend::rollout::GuardConfig;

/// Arguments of `mend chaos`.
#[derive(clap::Args)]
pub(crate) struct ChaosArgs {
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB?schema=NAME. Each run uses a
    /// queue of its own, so a database can hold several runs.
    #[arg(long)]
    pub(super) database: String,
    /// `mend serve` nodes to run [default: 1 on SQLite, 3 on PostgreSQL]
    #[arg(long)]
    pub(super) nodes: Option<usize>,
    /// Jobs to enqueue (spread over the first 90% of --duration).
    #[arg(long, default_value_t = 1000)]
    pub(super) jobs: usize,
    /// SIGKILLs of random nodes, each followed by a restart.
    #[arg(long, default_value_t = 5)]
    pub(super) kills: usize,
    /// Over how long faults are inflicted (e.g. 30s, 2m, 500ms; a bare number is seconds).
    #[arg(long, default_value = "30s", value_parser = duration::parse_bare_seconds)]
    pub(super) duration: Duration,
    /// Fixes the fault schedule and every job's faults [default: random, printed in the report]
    #[arg(long)]
    pub(super) seed: Option<u64>,
    /// Jobs each node runs at once.
    #[arg(long, default_value_t = 16)]
    pub(super) concurrency: usize,
    /// Chance that an attempt panics.
    #[arg(long, default_value_t = 0.03)]
    pub(super) panic_rate: f64,
    /// Chance that an attempt hangs past its timeout.
    #[arg(long, default_value_t = 0.02)]
    pub(super) timeout_rate: f64,
    /// Chance that an attempt returns an error.
    #[arg(long, default_value_t = 0.05)]
    pub(super) error_rate: f64,
    /// Longest work of one attempt (each job draws from 10ms up to this), e.g. 200ms, 2s.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    work: Option<Duration>,
    /// The old name of --work, in milliseconds [default: 200]
    #[arg(long, value_name = "MS", hide = true)]
    work_ms: Option<u64>,
    /// The attempt timeout of drill jobs (what an injected hang runs into); a bare number is
    /// seconds.
    #[arg(long, default_value = "2s", value_parser = duration::parse_bare_seconds)]
    pub(super) job_timeout: Duration,
    /// Times every connection of every node is terminated (`pg_terminate_backend`)
    /// [default: 3 on PostgreSQL; not available on SQLite]
    #[arg(long)]
    pub(super) terminations: Option<usize>,
    /// A shell command that restarts the database server, run once mid-drill, e.g.
    /// 'pg_ctlcluster 15 main restart'.
    #[arg(long)]
    pub(super) restart_db: Option<String>,
    /// Do not send the mid-drill SIGTERM.
    #[arg(long)]
    pub(super) no_sigterm: bool,
    /// After --duration, how long jobs may take to finish before the rest count as stuck; a
    /// bare number is seconds.
    #[arg(long, default_value = "120s", value_parser = duration::parse_bare_seconds)]
    pub(super) settle: Duration,
    /// Where the drill keeps its files (markers, outputs, node logs) [default: a new
    /// directory under the system's temp dir, removed after a passing run]
    #[arg(long)]
    pub(super) dir: Option<PathBuf>,
    /// Keep the drill directory after a passing run.
    #[arg(long)]
    pub(super) keep: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
    /// Roll out a canary version of the drill kind that fails at this rate (each failure an
    /// error, a panic or a hang past the timeout, a third each), e.g. 1 or 0.3: the guard must
    /// cut it off, every job it hurt must complete on the stable version, and the report
    /// says how fast it was cut off.
    #[arg(long, value_name = "RATE")]
    pub(super) bad_canary: Option<f64>,
    /// Give half the jobs a second drill kind and roll out a good canary of it (the same code
    /// as its stable version): it must be promoted, and a cut-off fails the drill.
    #[arg(long)]
    pub(super) good_canary: bool,
    /// The canaries' steps (the last one promotes).
    #[arg(long, default_value = "10%,50%,100%", value_name = "SHARES")]
    pub(super) canary_steps: String,
    /// How long each canary step lasts, in whole seconds [default: a sixth of --duration, at
    /// least 1 s]
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_bare_seconds)]
    pub(super) canary_every: Option<Duration>,
    /// Run the nodes with a bug on purpose, to see the drill catch it (tests only).
    #[arg(long, hide = true)]
    pub(super) break_on_purpose: Option<Breakage>,
}

impl ChaosArgs {
    /// The longest work of one attempt, in ms: --work, else the old --work-ms.
    pub(super) fn max_work_ms(&self) -> u64 {
        self.work
            .map(duration::as_millis)
            .or(self.work_ms)
            .unwrap_or(200)
    }
}

/// The settings a drill runs with, after defaults and checks.
pub(super) struct Drill {
    pub(super) database: String,
    pub(super) postgres: bool,
    pub(super) nodes: usize,
    pub(super) seed: u64,
    pub(super) run: String,
    pub(super) queue: String,
    pub(super) terminations: usize,
    /// The canaries' steps, in basis points (checked).
    pub(super) canary_steps: Vec<u32>,
    /// Seconds per canary step.
    pub(super) canary_every_secs: u64,
    pub(super) args: ChaosArgs,
}

impl Drill {
    /// Fills in the defaults that depend on the backend and refuses settings that cannot work.
    pub(super) fn new(args: ChaosArgs) -> anyhow::Result<Drill> {
        let postgres = crate::db::is_postgres(&args.database);
        let nodes = args.nodes.unwrap_or(if postgres { 3 } else { 1 });
        if nodes == 0 || args.jobs == 0 || args.concurrency == 0 {
            bail!("--nodes, --jobs and --concurrency must be at least 1");
        }
        let rates = [args.panic_rate, args.timeout_rate, args.error_rate];
        if rates.iter().any(|r| !(0.0..=1.0).contains(r)) || rates.iter().sum::<f64>() > 0.9 {
            bail!("--panic-rate, --timeout-rate and --error-rate are chances between 0 and 1, together at most 0.9 (jobs must be able to finish)");
        }
        let terminations = match (args.terminations, postgres) {
            (Some(n), true) => n,
            (None, true) => 3,
            (Some(n), false) if n > 0 => {
                bail!("--terminations cuts PostgreSQL connections; a SQLite database has none")
            }
            _ => 0,
        };
        if let Some(rate) = args.bad_canary {
            if !(rate > 0.0 && rate <= 1.0) {
                bail!("--bad-canary is the share of the canary's attempts that fail: above 0, at most 1 (got {rate})");
            }
        }
        let canary_steps = mend::rollout::parse_steps(&args.canary_steps)
            .map_err(|e| anyhow::anyhow!("--canary-steps: {e}"))?;
        let canary_every_secs = match args.canary_every {
            Some(d) if d.subsec_nanos() != 0 || d.is_zero() => {
                bail!("--canary-every is whole seconds, at least 1 (a rollout's steps are)")
            }
            Some(d) => d.as_secs(),
            None => args.duration.as_secs().div_ceil(6).max(1),
        };
        // The rest of the steps' rules (rising, ending at 100%) are the rollout's own.
        mend::rollout::RolloutSpec {
            kind: crate::drill::KIND.into(),
            version: crate::drill::BAD_CANARY.into(),
            steps: canary_steps.clone(),
            every_secs: canary_every_secs,
            guard: GuardConfig::default(),
            notify_url: None,
        }
        .validate()
        .map_err(|e| anyhow::anyhow!("--canary-steps/--canary-every: {e}"))?;
        if args.good_canary {
            // The guard passes no step before it has seen its minimum sample of the canary:
            // too few twin jobs at the first step and the good canary can never be promoted.
            let min = GuardConfig::default().min_samples;
            let first = canary_steps.first().copied().unwrap_or(0);
            let expected = (args.jobs / 2) as u64 * u64::from(first) / 10_000;
            if expected < 3 * min {
                bail!(
                    "--good-canary: half of --jobs {} at a first step of {} gives its canary about {expected} jobs; the guard needs {min} attempts before it passes a step, so give it at least {} (more --jobs or a larger first step)",
                    args.jobs,
                    mend::rollout::format_share(first),
                    3 * min
                );
            }
        }
        let run = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
        Ok(Drill {
            database: args.database.clone(),
            postgres,
            nodes,
            seed: args.seed.unwrap_or_else(|| fastrand::u64(..)),
            queue: format!("chaos-{run}"),
            run,
            terminations,
            canary_steps,
            canary_every_secs,
            args,
        })
    }
}
