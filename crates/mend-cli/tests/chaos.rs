//! `mend chaos` as a user runs it: short drills on SQLite and PostgreSQL that must pass, and
//! drills against nodes with a bug put in on purpose that must fail on the invariant that
//! guards against that bug (proof that the checker can fail).

#![expect(clippy::unwrap_used)]

use std::process::Output;

use serde_json::Value;

mod common;
use common::mend;

/// Runs `mend chaos --json` with `args` on `database`, files in `dir`; returns the process
/// output and the parsed report.
fn drill(database: &str, dir: &std::path::Path, args: &[&str]) -> (Output, Value) {
    let out = mend()
        .args(["chaos", "--json", "--database", database, "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

fn failed_invariants(report: &Value) -> Vec<String> {
    report["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["ok"] != Value::Bool(true))
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

/// What a passing short drill must show: it passed, the faults really happened and hit work.
fn assert_passed(out: &Output, report: &Value, jobs: u64, kills: usize) {
    assert!(
        out.status.success() && report["passed"] == Value::Bool(true),
        "drill failed: {:?}\n{report:#}\nstderr:\n{}",
        failed_invariants(report),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["jobs"], jobs);
    assert_eq!(report["invariants"].as_array().unwrap().len(), 9);
    let k = report["kills"].as_array().unwrap();
    assert_eq!(k.len(), kills, "{report:#}");
    assert!(
        k.iter().any(|k| k["held"].as_u64().unwrap() > 0),
        "no kill hit a node with jobs in flight: {report:#}"
    );
    let attempts = &report["attempts"];
    assert!(attempts["lost"].as_u64().unwrap() > 0, "{attempts}");
    assert!(attempts["panic"].as_u64().unwrap() > 0, "{attempts}");
    assert!(attempts["error"].as_u64().unwrap() > 0, "{attempts}");
    let completed = report["states"]["completed"].as_u64().unwrap();
    assert_eq!(attempts["ok"].as_u64().unwrap(), completed);
    assert!(completed > jobs * 9 / 10, "{report:#}");
    assert_eq!(report["sigterms"][0]["exit_ok"], Value::Bool(true));
    assert!(report["time_to_rescue_ms"]["max"].as_u64().is_some());
    assert!(report["mttr_ms"].as_u64().is_some());
}

/// The suite's short drill: 300 jobs, 3 kills, seed 7; work long enough that kills land on
/// jobs in flight.
fn short_drill(database: &str, dir: &std::path::Path, duration: &str) -> (Output, Value) {
    drill(
        database,
        dir,
        &[
            "--jobs",
            "300",
            "--kills",
            "3",
            "--duration",
            duration,
            "--seed",
            "7",
            "--work",
            "500ms",
        ],
    )
}

#[test]
fn short_drill_on_sqlite_passes() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "chaos.db");
    let (out, report) = short_drill(&db, &dir.path().join("drill"), "6s");
    assert_passed(&out, &report, 300, 3);
    assert_eq!(report["seed"], 7);
    assert_eq!(report["nodes"], 1);
}

#[test]
fn short_drill_on_postgres_passes() {
    let Some(schema) = common::pg_schema("short_drill_on_postgres_passes", "mend_chaos") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = short_drill(&schema.store_url(), dir.path(), "8s");
    assert_passed(&out, &report, 300, 3);
    assert_eq!(report["nodes"], 3);
    let cut: u64 = report["connections_terminated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["connections"].as_u64().unwrap())
        .sum();
    assert!(cut > 0, "no connection was cut: {report:#}");
}

/// A short SQLite drill on nodes with `breakage`: it must fail, and `invariant` must be among
/// the failed ones. Returns the failing invariant's detail and the drill's stderr.
fn broken_drill_fails_on(breakage: &str, invariant: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "chaos.db");
    let (out, report) = drill(
        &db,
        &dir.path().join("drill"),
        &[
            "--jobs",
            "150",
            "--kills",
            "1",
            "--duration",
            "3s",
            "--seed",
            "3",
            "--break-on-purpose",
            breakage,
        ],
    );
    assert!(!out.status.success(), "a broken build passed the drill");
    assert_eq!(report["passed"], Value::Bool(false));
    let failed = failed_invariants(&report);
    assert!(
        failed.iter().any(|f| f == invariant),
        "{failed:?}\n{report:#}"
    );
    let detail = report["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == invariant)
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    (detail, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn an_effect_committed_outside_the_completion_is_caught() {
    let (detail, stderr) =
        broken_drill_fails_on("effect-outside-transaction", "effects exactly once");
    assert!(detail.contains("more than one ledger row"), "{detail}");
    assert!(
        stderr.contains("the drill failed: ")
            && stderr.contains("effects exactly once")
            && stderr.contains("seed 3"),
        "{stderr}"
    );
}

#[test]
fn a_cleanup_that_does_nothing_is_caught() {
    let (detail, _) = broken_drill_fails_on("cleanup-does-nothing", "durable cleanups ran");
    assert!(detail.contains("marker left"), "{detail}");
}

#[test]
fn bad_drill_settings_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "chaos.db");
    for (flag, value, says) in [
        ("--panic-rate", "0.95", "at most 0.9"),
        ("--terminations", "2", "SQLite"),
        ("--duration", "soon", "not a duration"),
        ("--settle", "1.5s", "not a duration"),
        ("--work", "500", "needs a unit"),
    ] {
        let out = mend()
            .args(["chaos", "--database", &db, flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
    }
}

/// A short drill with a bad canary failing every attempt and a good one: the drill rolls both
/// out at 10%, 600 jobs so that the good canary gets about 30 (the guard passes no step before
/// 10); returns the process output and the report.
fn canary_drill(database: &str, dir: &std::path::Path, duration: &str) -> (Output, Value) {
    drill(
        database,
        dir,
        &[
            "--jobs",
            "600",
            "--kills",
            "1",
            "--duration",
            duration,
            "--seed",
            "11",
            "--work",
            "300ms",
            "--bad-canary",
            "1",
            "--good-canary",
            "--canary-every",
            "2",
        ],
    )
}

/// What a passing canary drill must show: the drill's own invariants and the canaries' held,
/// the bad canary was cut off by the guard with figures, it hurt jobs that all completed on
/// stable, and the good one was promoted with jobs run on it.
fn assert_canaries_held(out: &Output, report: &Value) {
    assert!(
        out.status.success() && report["passed"] == Value::Bool(true),
        "drill failed: {:?}\n{report:#}\nstderr:\n{}",
        failed_invariants(report),
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<&str> = report["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    for name in [
        "bad canary cut off",
        "nodes obeyed the cut-off",
        "jobs the canary hurt completed on stable",
        "good canary promoted, not cut off",
    ] {
        assert!(names.contains(&name), "{name} not checked: {names:?}");
    }
    let bad = &report["canary"]["bad"];
    assert_eq!(bad["state"], "rolled_back", "{bad:#}");
    assert!(
        bad["breach"].as_str().unwrap().contains("canary"),
        "{bad:#}"
    );
    let seen = bad["canary_attempts_seen"].as_u64().unwrap();
    assert!(seen >= 10, "judged before the minimum sample: {bad:#}");
    assert_eq!(bad["canary_failures_seen"].as_u64().unwrap(), seen);
    assert!(bad["jobs_hurt"].as_u64().unwrap() > 0, "{bad:#}");
    let from_start = bad["cut_off_ms_from_start"].as_u64().unwrap();
    let from_failure = bad["cut_off_ms_from_first_failure"].as_u64().unwrap();
    assert!(from_failure <= from_start, "{bad:#}");
    let good = &report["canary"]["good"];
    assert_eq!(good["state"], "promoted", "{good:#}");
    assert_eq!(good["steps_passed"], 2, "{good:#}");
    assert!(good["jobs_on_canary"].as_u64().unwrap() > 0, "{good:#}");
    assert_eq!(good["jobs"], 300, "half the jobs are of the twin kind");
}

#[test]
fn bad_canary_drill_on_sqlite_cuts_it_off_and_heals_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "chaos.db");
    let (out, report) = canary_drill(&db, &dir.path().join("drill"), "10s");
    assert_canaries_held(&out, &report);
}

#[test]
fn bad_canary_drill_on_postgres_cuts_it_off_and_heals_its_jobs() {
    let Some(schema) = common::pg_schema("bad_canary_drill_on_postgres", "mend_chaos_canary")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = canary_drill(&schema.store_url(), dir.path(), "10s");
    assert_canaries_held(&out, &report);
    assert_eq!(report["nodes"], 3);
}

/// A canary failing 2% of its attempts is no worse than the drill's stable version (which
/// fails about 10% of first attempts by design): the guard rightly lets it through, and the
/// drill must say the bad canary was not cut off (proof that this invariant can fail).
#[test]
fn a_canary_the_guard_cannot_tell_from_stable_fails_the_drill() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "chaos.db");
    let (out, report) = drill(
        &db,
        &dir.path().join("drill"),
        &[
            "--jobs",
            "150",
            "--kills",
            "0",
            "--no-sigterm",
            "--duration",
            "4s",
            "--seed",
            "5",
            "--bad-canary",
            "0.02",
            "--canary-every",
            "1",
        ],
    );
    assert!(!out.status.success(), "an undetectable canary passed");
    let failed = failed_invariants(&report);
    assert!(
        failed.contains(&"bad canary cut off".to_owned()),
        "{failed:?}\n{report:#}"
    );
    assert_ne!(report["canary"]["bad"]["state"], "rolled_back");
}

#[test]
fn bad_canary_settings_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::sqlite_url(dir.path(), "chaos.db");
    for (flags, says) in [
        (&["--bad-canary", "0"][..], "above 0, at most 1"),
        (&["--bad-canary", "1.5"][..], "above 0, at most 1"),
        (&["--canary-steps", "10%,50%"][..], "must be 100%"),
        (&["--canary-steps", "50%,10%,100%"][..], "rise strictly"),
        (&["--canary-every", "2500ms"][..], "whole seconds"),
        (
            &["--good-canary", "--jobs", "300"][..],
            "gives its canary about 15 jobs",
        ),
    ] {
        let out = mend()
            .args(["chaos", "--database", &db])
            .args(flags)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(stderr.contains(says), "{flags:?}: {stderr}");
    }
}
