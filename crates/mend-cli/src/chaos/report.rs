//! The drill's report: what each fault did and how fast it was healed, the invariants' verdicts,
//! and how they are printed (a summary for people, or JSON). It measures and checks nothing
//! itself.

use serde::Serialize;
use std::collections::BTreeMap;

/// How one kill was healed.
#[derive(Debug, Clone, Serialize)]
pub(super) struct KillRecord {
    /// Offset into the drill.
    pub(super) at_ms: u64,
    pub(super) node: usize,
    /// Jobs the node was running when it died.
    pub(super) held: usize,
    /// Kill → none of its jobs still `running` under its lease.
    pub(super) rescue_ms: Option<u64>,
    /// Kill → each of its jobs running again elsewhere or finished.
    pub(super) recover_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct SigtermRecord {
    pub(super) at_ms: u64,
    pub(super) node: usize,
    /// Signal → process exit.
    pub(super) stop_ms: u64,
    pub(super) exit_ok: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct CutRecord {
    pub(super) at_ms: u64,
    /// Connections terminated.
    pub(super) connections: u64,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct RestartRecord {
    pub(super) at_ms: u64,
    pub(super) command_ok: bool,
    pub(super) command_ms: u64,
    /// Command finished → the next job completed.
    pub(super) recover_ms: Option<u64>,
}

/// The drill's report.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) passed: bool,
    pub(super) seed: u64,
    pub(super) backend: &'static str,
    pub(super) database: String,
    pub(super) run: String,
    pub(super) nodes: usize,
    pub(super) jobs: usize,
    pub(super) elapsed_ms: u64,
    pub(super) states: BTreeMap<String, usize>,
    pub(super) attempts: BTreeMap<String, usize>,
    pub(super) faults_planned: BTreeMap<String, usize>,
    pub(super) kills: Vec<KillRecord>,
    pub(super) sigterms: Vec<SigtermRecord>,
    pub(super) connections_terminated: Vec<CutRecord>,
    pub(super) db_restart: Option<RestartRecord>,
    pub(super) time_to_rescue_ms: Option<Stats>,
    pub(super) time_to_recover_ms: Option<Stats>,
    /// Mean time to recovery over every kill that held jobs and the database restart.
    pub(super) mttr_ms: Option<u64>,
    /// The canaries' rollouts (`--bad-canary`, `--good-canary`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) canary: Option<super::canary::CanaryReport>,
    pub(super) invariants: Vec<Invariant>,
    pub(super) dir: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Stats {
    pub(super) min: u64,
    pub(super) p50: u64,
    pub(super) max: u64,
}

/// Min, median and max of the samples; `None` when there are none.
pub(super) fn stats(mut v: Vec<u64>) -> Option<Stats> {
    v.sort_unstable();
    Some(Stats {
        min: *v.first()?,
        p50: v[v.len() / 2],
        max: *v.last()?,
    })
}

/// One invariant's verdict.
#[derive(Debug, Serialize)]
pub(super) struct Invariant {
    pub(super) name: &'static str,
    pub(super) ok: bool,
    pub(super) detail: String,
}

/// The report for people, on stdout.
pub(super) fn print_human(r: &Report) {
    println!(
        "mend chaos — {} ({}), {} node(s), {} jobs, seed {}, {:.1} s",
        r.backend,
        r.database,
        r.nodes,
        r.jobs,
        r.seed,
        r.elapsed_ms as f64 / 1000.0
    );
    println!();
    println!("invariants");
    for i in &r.invariants {
        println!(
            "  {} {:<44} {}",
            if i.ok { "ok  " } else { "FAIL" },
            i.name,
            i.detail
        );
    }
    println!();
    let join = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    println!("jobs       {}", join(&r.states));
    println!("attempts   {}", join(&r.attempts));
    println!(
        "planned    {} (faults drawn for attempts; a killed attempt uses one up)",
        join(&r.faults_planned)
    );
    let held = r.kills.iter().filter(|k| k.held > 0).count();
    println!(
        "faults     {} kills ({held} with jobs in flight) · {} SIGTERM · {} connection cuts ({} connections){}",
        r.kills.len(),
        r.sigterms.len(),
        r.connections_terminated.len(),
        r.connections_terminated
            .iter()
            .map(|c| c.connections)
            .sum::<u64>(),
        match &r.db_restart {
            Some(x) => format!(" · database restart ({} ms, ok: {})", x.command_ms, x.command_ok),
            None => String::new(),
        }
    );
    let show = |s: &Option<Stats>| match s {
        Some(s) => format!("min {} · p50 {} · max {} ms", s.min, s.p50, s.max),
        None => "n/a (no kill hit a node with jobs in flight)".into(),
    };
    println!("rescue     {}", show(&r.time_to_rescue_ms));
    println!("recovery   {}", show(&r.time_to_recover_ms));
    match r.mttr_ms {
        Some(m) => println!("MTTR       {m} ms"),
        None => println!("MTTR       n/a"),
    }
    if let Some(c) = &r.canary {
        print_canary(c);
    }
    println!();
    println!(
        "{} (seed {}; files in {})",
        if r.passed { "PASSED" } else { "FAILED" },
        r.seed,
        r.dir
    );
}

fn print_canary(c: &super::canary::CanaryReport) {
    let secs =
        |ms: Option<u64>| ms.map_or("n/a".to_owned(), |m| format!("{:.2} s", m as f64 / 1000.0));
    if let Some(b) = &c.bad {
        println!(
            "canary     bad ({:.0}% failing): {} · cut off {} after its start, {} after its first failure · {} canary attempts seen ({} failed) against stable's {} ({} failed)",
            b.rate * 100.0,
            b.state.as_str(),
            secs(b.cut_off_ms_from_start),
            secs(b.cut_off_ms_from_first_failure),
            b.canary_attempts_seen.unwrap_or_default(),
            b.canary_failures_seen.unwrap_or_default(),
            b.stable_attempts_seen.unwrap_or_default(),
            b.stable_failures_seen.unwrap_or_default(),
        );
        println!(
            "           {} jobs hurt · {} canary failures before the cut-off, {} after (begun within {} of it) · {} handed back to stable, {} of the hurt jobs given their attempts back",
            b.jobs_hurt,
            b.canary_failures_before,
            b.canary_failures_after,
            secs(b.last_canary_start_after_cut_off_ms),
            b.jobs_handed_back,
            b.jobs_given_attempts_back
        );
    }
    if let Some(g) = &c.good {
        println!(
            "canary     good: {} · {} steps passed · promoted {} after its start · {} of its kind's {} jobs finished on it",
            g.state.as_str(),
            g.steps_passed,
            secs(g.promoted_ms_from_start),
            g.jobs_on_canary,
            g.jobs
        );
    }
}
