//! `/metrics` in the Prometheus text format: what the workers did since start (counters),
//! how deep each queue is (gauges, read from the store), and latency histograms.
//!
//! Names follow Prometheus conventions (`mend_` prefix, `_total` counters, `_seconds`
//! histograms) and labels stay low-cardinality (queue, state, outcome; never job ids).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A counter with one sample per value of the label `label`, or one unlabelled sample where
/// `label` is empty.
fn counter(out: &mut String, (name, help, label, samples): Counter<'_>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, v) in samples {
        if label.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {v}");
        }
    }
}

/// A counter's name, help, label name and samples (label value, count).
type Counter<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, u64)]);

fn histogram(out: &mut String, name: &str, help: &str, h: &mend::runtime::histogram::Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    histogram_series(out, name, "", h);
}

/// One histogram's series; `labels` (already escaped, e.g. `kind="a",`) go before `le`.
fn histogram_series(
    out: &mut String,
    name: &str,
    labels: &str,
    h: &mend::runtime::histogram::Histogram,
) {
    let (buckets, sum, count) = h.snapshot();
    for (le, c) in buckets {
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {c}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
    let braces = |l: &str| {
        if l.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", l.trim_end_matches(','))
        }
    };
    let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
    let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
}

/// Attempts per kind and handler version (routed kinds only): outcomes and run times.
fn versions(w: &mend::WorkerHandle, out: &mut String) {
    let all = w.version_stats().all();
    if all.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP mend_version_attempts_total Attempts of kinds routed by a rollout, by kind, the handler version that ran them (empty: the unversioned handler) and outcome.\n# TYPE mend_version_attempts_total counter"
    );
    for ((kind, version), c) in &all {
        for (outcome, n) in c.outcomes() {
            let _ = writeln!(
                out,
                "mend_version_attempts_total{{kind=\"{}\",version=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(kind),
                escape(version)
            );
        }
    }
    let name = "mend_version_run_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} How long attempts of routed kinds ran, by kind and handler version.\n# TYPE {name} histogram"
    );
    for ((kind, version), c) in &all {
        let labels = format!("kind=\"{}\",version=\"{}\",", escape(kind), escape(version));
        histogram_series(out, name, &labels, &c.run_time);
    }
}

/// Renders the metrics.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut out = String::with_capacity(4096);
    counter(
        &mut out,
        (
            "mend_jobs_enqueued_total",
            "Jobs enqueued through this server's API.",
            "",
            &[("", state.enqueued.load(Ordering::Relaxed))],
        ),
    );
    if let Some(w) = &state.worker {
        let s = w.stats();
        let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let counters: [Counter<'_>; 6] = [
            (
                "mend_attempts_started_total",
                "Attempts started.",
                "",
                &[("", g(&s.started))],
            ),
            (
                "mend_attempt_outcomes_total",
                "Attempt outcomes written to the store, by outcome.",
                "outcome",
                &[
                    ("completed", g(&s.completed)),
                    ("retried", g(&s.retried)),
                    ("discarded", g(&s.discarded)),
                    ("cancelled", g(&s.cancelled)),
                    ("snoozed", g(&s.snoozed)),
                    ("released", g(&s.released)),
                ],
            ),
            (
                "mend_attempts_failed_total",
                "Failed attempts, by kind of failure.",
                "kind",
                &[
                    ("error", g(&s.errors)),
                    ("panic", g(&s.panics)),
                    ("timeout", g(&s.timeouts)),
                ],
            ),
            (
                "mend_jobs_rescued_total",
                "Jobs rescued from dead workers or expired leases.",
                "",
                &[("", g(&s.rescued))],
            ),
            (
                "mend_outcomes_fenced_total",
                "Outcomes refused because the worker had lost the job.",
                "",
                &[("", g(&s.fenced))],
            ),
            (
                "mend_cleanups_total",
                "In-memory cleanups run, by outcome.",
                "outcome",
                &[
                    ("ok", g(&s.cleanups_ok)),
                    ("panicked", g(&s.cleanups_panicked)),
                    ("timed_out", g(&s.cleanups_timed_out)),
                ],
            ),
        ];
        for c in counters {
            counter(&mut out, c);
        }
        let _ = writeln!(
            out,
            "# HELP mend_attempts_in_flight Attempts running now.\n# TYPE mend_attempts_in_flight gauge\nmend_attempts_in_flight {}",
            w.in_flight()
        );
        histogram(
            &mut out,
            "mend_enqueue_to_start_seconds",
            "From when a job was due to its attempt starting.",
            &s.enqueue_to_start,
        );
        histogram(
            &mut out,
            "mend_run_seconds",
            "How long attempts ran.",
            &s.run_time,
        );
        versions(w, &mut out);
    }
    // The states still to run: a scrape must not read every finished job kept (finished work
    // is counted by mend_attempt_outcomes_total and the other counters). Every live state of
    // every known queue, zeros included, so a series does not vanish when a queue empties.
    let paused = state.store.paused_queues().await?;
    let table = super::queues::live_table(&state, &paused).await?;
    let _ = writeln!(
        out,
        "# HELP mend_queue_jobs Jobs per queue in the states still to run (scheduled, available, running, retryable).\n# TYPE mend_queue_jobs gauge"
    );
    for (queue, row) in table {
        for (state, n) in row {
            let _ = writeln!(
                out,
                "mend_queue_jobs{{queue=\"{}\",state=\"{}\"}} {}",
                escape(&queue),
                state,
                n
            );
        }
    }
    let limits = state.store.list_limits().await?;
    if !limits.is_empty() {
        let _ = writeln!(
            out,
            "# HELP mend_limit_waiting Jobs at the head of a queue that its latest claim held back under each limit.\n# TYPE mend_limit_waiting gauge"
        );
        for l in &limits {
            let _ = writeln!(
                out,
                "mend_limit_waiting{{limit=\"{}\",queue=\"{}\"}} {}",
                escape(&l.limit.name),
                escape(&l.limit.queue),
                l.waiting
            );
        }
    }
    rollouts(&state, &mut out).await?;
    let mut resp = out.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

/// The rollouts' series, from the rollouts table (at most 500 rows) and, for each active
/// rollout, the guard's window (one read of its kind's samples): the share, the state of the
/// latest rollout of each (kind, canary), the cut-offs stored per kind, and both versions'
/// attempts and failures over the guard's window.
async fn rollouts(state: &AppState, out: &mut String) -> Result<(), ApiError> {
    let all = state.store.rollout_list().await?;
    if all.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now();
    let _ = writeln!(
        out,
        "# HELP mend_rollout_share The canary's share of its kind's jobs (0 to 1), per active rollout.\n# TYPE mend_rollout_share gauge"
    );
    for r in all.iter().filter(|r| r.state.is_active()) {
        let _ = writeln!(
            out,
            "mend_rollout_share{{kind=\"{}\",canary=\"{}\"}} {}",
            escape(&r.kind),
            escape(&r.canary),
            f64::from(r.share) / f64::from(mend::rollout::FULL_SHARE)
        );
    }
    let _ = writeln!(
        out,
        "# HELP mend_rollout_cutoffs_total Rollouts the guard cut off (rolled back), per kind, among those stored.\n# TYPE mend_rollout_cutoffs_total counter"
    );
    let mut cutoffs: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for r in &all {
        let n = cutoffs.entry(r.kind.as_str()).or_default();
        if r.state == mend::rollout::RolloutState::RolledBack {
            *n += 1;
        }
    }
    for (kind, n) in cutoffs {
        let _ = writeln!(
            out,
            "mend_rollout_cutoffs_total{{kind=\"{}\"}} {n}",
            escape(kind)
        );
    }
    let _ = writeln!(
        out,
        "# HELP mend_rollout_state The state of the latest rollout of each kind and canary version: 1 for its state, 0 for the others.\n# TYPE mend_rollout_state gauge"
    );
    const STATES: [mend::rollout::RolloutState; 5] = [
        mend::rollout::RolloutState::Running,
        mend::rollout::RolloutState::Paused,
        mend::rollout::RolloutState::RolledBack,
        mend::rollout::RolloutState::Promoted,
        mend::rollout::RolloutState::Aborted,
    ];
    for r in super::rollouts::latest_per_canary(&all) {
        for s in STATES {
            let _ = writeln!(
                out,
                "mend_rollout_state{{kind=\"{}\",canary=\"{}\",state=\"{}\"}} {}",
                escape(&r.kind),
                escape(&r.canary),
                s.as_str(),
                u8::from(r.state == s)
            );
        }
    }
    let active: Vec<_> = all.iter().filter(|r| r.state.is_active()).collect();
    if active.is_empty() {
        return Ok(());
    }
    let mut windows = Vec::with_capacity(active.len());
    for r in &active {
        let w = super::rollouts::window(state, r, now).await?;
        windows.push((*r, w));
    }
    for (name, help, failures) in [
        (
            "mend_rollout_attempts",
            "Attempts that ended over the guard's window, per active rollout's version (side: canary or stable; version empty: the unversioned handler).",
            false,
        ),
        (
            "mend_rollout_failures",
            "Of those, the ones that failed.",
            true,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (r, w) in &windows {
            for (side, version, stats) in [
                ("canary", r.canary.as_str(), &w.evidence.canary),
                (
                    "stable",
                    r.stable.as_deref().unwrap_or(mend::rollout::UNVERSIONED),
                    &w.evidence.stable,
                ),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{}\",version=\"{}\",side=\"{side}\"}} {}",
                    escape(&r.kind),
                    escape(version),
                    if failures { stats.failures } else { stats.attempts }
                );
            }
        }
    }
    Ok(())
}
