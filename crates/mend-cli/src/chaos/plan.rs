//! What the seed decides: every job's work and faults, and when each fault is inflicted on
//! which node. Pure: it draws numbers and nothing else, so a seed always gives one plan.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::args::Drill;
use crate::drill::{DrillArgs, Fault};

/// One scheduled fault.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "fault", content = "node")]
pub(super) enum Event {
    /// SIGKILL node N, then start it again.
    Kill(usize),
    /// SIGTERM node N, wait for it to drain and exit, then start it again.
    Sigterm(usize),
    /// Terminate every database connection of every node.
    Terminate,
    /// Run the --restart-db command.
    RestartDb,
}

/// Everything the seed decides.
pub(super) struct Plan {
    pub(super) jobs: Vec<DrillArgs>,
    pub(super) events: Vec<(Duration, Event)>,
}

impl Plan {
    /// How many faults of each kind the jobs drew (`panic`, `timeout`, `error`).
    pub(super) fn fault_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for j in &self.jobs {
            for f in &j.faults {
                *m.entry(format!("{f:?}").to_lowercase()).or_default() += 1;
            }
        }
        m
    }
}

/// Draws every job's work and faults and the fault schedule from the seed.
pub(super) fn plan(d: &Drill) -> Plan {
    let a = &d.args;
    let max_work_ms = a.max_work_ms();
    let mut rng = fastrand::Rng::with_seed(d.seed);
    let jobs = (0..a.jobs)
        .map(|_| {
            let work_ms = rng.u64(10..=max_work_ms.max(10));
            let mut faults = Vec::new();
            // Attempts fail until one draws "ok"; a few in a row are possible, by design.
            while faults.len() < 8 {
                let r = rng.f64();
                let fault = if r < a.panic_rate {
                    Fault::Panic
                } else if r < a.panic_rate + a.timeout_rate {
                    Fault::Timeout
                } else if r < a.panic_rate + a.timeout_rate + a.error_rate {
                    Fault::Error
                } else {
                    break;
                };
                faults.push(fault);
            }
            DrillArgs {
                run: d.run.clone(),
                work_ms,
                faults,
            }
        })
        .collect();
    let span = a.duration.as_secs_f64();
    let mut at =
        |from: f64, to: f64| Duration::from_secs_f64(span * (from + rng.f64() * (to - from)));
    let mut events = Vec::new();
    for _ in 0..a.kills {
        let t = at(0.05, 0.85);
        events.push((t, Event::Kill(0)));
    }
    if !a.no_sigterm {
        let t = at(0.2, 0.7);
        events.push((t, Event::Sigterm(0)));
    }
    for _ in 0..d.terminations {
        let t = at(0.05, 0.9);
        events.push((t, Event::Terminate));
    }
    if a.restart_db.is_some() {
        let t = at(0.4, 0.6);
        events.push((t, Event::RestartDb));
    }
    events.sort_by_key(|(t, _)| *t);
    // Targets are drawn after the times, in schedule order, so they too follow the seed.
    for (_, e) in &mut events {
        match e {
            Event::Kill(n) | Event::Sigterm(n) => *n = rng.usize(..d.nodes),
            _ => {}
        }
    }
    Plan { jobs, events }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::args::ChaosArgs;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ChaosArgs,
    }

    fn drill(seed: u64) -> Drill {
        drill_with(seed, &[])
    }

    fn drill_with(seed: u64, extra: &[&str]) -> Drill {
        let seed = seed.to_string();
        let argv = [
            "chaos",
            "--database",
            "sqlite:///unused.db",
            "--jobs",
            "500",
            "--kills",
            "4",
            "--seed",
            &seed,
        ];
        let cli = <Cli as clap::Parser>::try_parse_from(argv.iter().chain(extra)).unwrap();
        Drill {
            database: cli.args.database.clone(),
            postgres: false,
            nodes: 3,
            seed: cli.args.seed.unwrap(),
            run: "r".into(),
            queue: "chaos-r".into(),
            terminations: 2,
            canary_steps: vec![1_000, 5_000, 10_000],
            canary_every_secs: 5,
            args: cli.args,
        }
    }

    fn fingerprint(p: &Plan) -> String {
        format!("{}{:?}", serde_json::to_string(&p.jobs).unwrap(), p.events)
    }

    #[test]
    fn the_seed_fixes_the_schedule_and_the_faults() {
        let (a, b, c) = (plan(&drill(5)), plan(&drill(5)), plan(&drill(6)));
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        // 4 kills, 1 SIGTERM, 2 cuts, in time order, within the drill, on existing nodes.
        assert_eq!(a.events.len(), 7);
        assert!(a.events.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(a.events.iter().all(|(t, e)| *t < Duration::from_secs(30)
            && !matches!(e, Event::Kill(n) | Event::Sigterm(n) if *n >= 3)));
        // Faults are drawn at about the configured rates (3% + 2% + 5% per attempt).
        let faulty = a.jobs.iter().filter(|j| !j.faults.is_empty()).count();
        assert!(
            (20..=90).contains(&faulty),
            "{faulty} of 500 jobs have faults"
        );
    }

    #[test]
    fn work_takes_a_duration_and_the_old_work_ms_its_milliseconds() {
        let longest = |extra: &[&str]| {
            let p = plan(&drill_with(5, extra));
            p.jobs.iter().map(|j| j.work_ms).max().unwrap()
        };
        assert!((150..=200).contains(&longest(&[])), "default 200ms");
        assert_eq!(
            fingerprint(&plan(&drill_with(5, &["--work", "2s"]))),
            fingerprint(&plan(&drill_with(5, &["--work-ms", "2000"])))
        );
        assert!(longest(&["--work", "2s"]) > 1000);
        assert_eq!(longest(&["--work", "10ms"]), 10);
        let err =
            <Cli as clap::Parser>::try_parse_from(["chaos", "--database", "x", "--work", "200"])
                .err()
                .unwrap()
                .to_string();
        assert!(err.contains("needs a unit"), "{err}");
        // The drill's own durations still take a bare number of seconds.
        let d = drill_with(5, &["--duration", "12", "--settle", "1m"]);
        assert_eq!(d.args.duration, Duration::from_secs(12));
        assert_eq!(d.args.settle, Duration::from_secs(60));
    }
}
