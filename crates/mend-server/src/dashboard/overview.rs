//! The Overview page: attempts ended per minute over the last hour or day with rescues and
//! deploys marked, failure rate and latency per kind, queue depth, the nodes and the leader,
//! and the recent rescues. Everything comes from the per-minute history every node writes
//! (`mend::stats`) and from capped counts: no page view scans the jobs table.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use maud::html;
use mend::stats::{EventsParams, StatsAnswer, StatsBy, StatsParams};
use mend::store::CountStatesParams;
use serde::Deserialize;

use super::chart::{lines, Marker, Series};
use super::html::{count, dur_ms, layout, svg, time, Nav};
use super::jobs::COUNT_CAP;
use super::{PageError, PageResult};
use crate::routes::node_views;
use crate::AppState;

/// `?window=`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct OverviewQuery {
    window: Option<String>,
}

/// The window shown and its bucket width.
fn window(q: &OverviewQuery) -> (&'static str, chrono::Duration, Duration) {
    match q.window.as_deref() {
        Some("24h") => (
            "24h",
            chrono::Duration::hours(24),
            Duration::from_secs(1800),
        ),
        _ => ("1h", chrono::Duration::hours(1), Duration::from_secs(60)),
    }
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "—".into()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / whole as f64)
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |v| dur_ms(v.round() as i64))
}

async fn stats(
    state: &AppState,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    step: Duration,
    by: StatsBy,
    whole_window: bool,
) -> Result<StatsAnswer, PageError> {
    let mut params = StatsParams {
        since,
        until,
        step,
        by,
        queue: None,
        kind: None,
    }
    .checked()
    .map_err(|e| PageError::new(axum::http::StatusCode::BAD_REQUEST, &e.to_string()))?;
    if whole_window {
        // One bucket per group: the checked window is whole minutes, so is its length.
        params.step = (params.until - params.since).to_std().unwrap_or(step);
    }
    Ok(state.store.stats(params).await?)
}

/// `GET /`.
pub(super) async fn page(
    State(state): State<AppState>,
    Query(q): Query<OverviewQuery>,
) -> PageResult {
    let now = Utc::now();
    let (name, span, step) = window(&q);
    let since = now - span;
    let total = stats(&state, since, now, step, StatsBy::Total, false).await?;
    let per_kind = stats(&state, since, now, step, StatsBy::Kind, true).await?;
    let events = state
        .store
        .events(EventsParams {
            since,
            until: now,
            kinds: vec![],
            limit: 200,
        })
        .await?;
    let counts = state
        .store
        .count_states(CountStatesParams {
            queue: None,
            kind: None,
            cap: COUNT_CAP,
            states: vec![],
        })
        .await?;
    let nodes = node_views(&state).await?;
    let alive = nodes.iter().filter(|n| n.state != "dead").count();

    // One value per bucket, empty buckets included, so the time axis is even.
    let step_s = i64::try_from(total.step_seconds.max(60)).unwrap_or(60);
    let buckets =
        usize::try_from(((total.until - total.since).num_seconds() / step_s).max(1)).unwrap_or(1);
    let index = |at: DateTime<Utc>| {
        usize::try_from((at - total.since).num_seconds() / step_s)
            .ok()
            .filter(|i| *i < buckets)
    };
    let mut completed = vec![0.0; buckets];
    let mut retried = vec![0.0; buckets];
    let mut failed = vec![0.0; buckets];
    let mut lost = vec![0.0; buckets];
    for b in &total.buckets {
        if let Some(i) = index(b.at) {
            completed[i] += b.counts.completed as f64;
            retried[i] += b.counts.retried as f64;
            failed[i] += b.counts.failed as f64;
            lost[i] += b.counts.lost as f64;
        }
    }
    let rescues: Vec<&mend::stats::Event> = events.iter().filter(|e| e.kind == "rescue").collect();
    let deploys: Vec<&mend::stats::Event> = events
        .iter()
        .filter(|e| e.kind == "node_joined" && e.detail["deploy"] == true)
        .collect();
    let mut markers = Vec::new();
    for e in &rescues {
        if let Some(i) = index(e.at) {
            markers.push(Marker {
                at: i,
                class: "marker-rescue",
                title: format!("rescue: {} job(s) of {}", e.detail["jobs"], e.node),
            });
        }
    }
    for e in &deploys {
        if let Some(i) = index(e.at) {
            markers.push(Marker {
                at: i,
                class: "marker-deploy",
                title: format!("deploy: {} joined ({})", e.node, e.detail["build"]),
            });
        }
    }
    let unit = if step_s == 60 { "minute" } else { "half hour" };
    let chart = lines(
        &format!("Attempts ended per {unit}, last {name}"),
        buckets,
        &[
            Series {
                class: "l-completed",
                name: "completed",
                values: completed,
            },
            Series {
                class: "l-retried",
                name: "retried",
                values: retried,
            },
            Series {
                class: "l-failed",
                name: "failed",
                values: failed,
            },
            Series {
                class: "l-lost",
                name: "lost",
                values: lost,
            },
        ],
        [&format!("-{name}"), "", "now"],
        &markers,
    );
    let ended_total: u64 = total.buckets.iter().map(|b| b.counts.total()).sum();
    let failures_total: u64 = total
        .buckets
        .iter()
        .map(|b| b.counts.failed + b.counts.retried + b.counts.lost)
        .sum();

    let body = html! {
        h1 { "Overview" }
        div.actions {
            span.muted { "Window:" }
            a href="/?window=1h" aria-current=[(name == "1h").then_some("page")] { "last hour" }
            a href="/?window=24h" aria-current=[(name == "24h").then_some("page")] { "last day" }
        }
        div.grid #overview-figures data-live {
            @for c in &counts {
                a.card href={"/jobs?state=" (c.state.as_str())} data-state=(c.state.as_str()) {
                    div.muted { (c.state.as_str()) }
                    div.figure { (count(c.count, c.capped)) }
                }
            }
            a.card href="/nodes" #nodes-alive {
                div.muted { "nodes alive" }
                div.figure { (alive) " / " (nodes.len()) }
                @for n in nodes.iter().filter(|n| n.leader) { div.muted { "leader: " code { (n.id) } } }
            }
        }
        section.card #throughput data-live data-ended=(ended_total) {
            h2 { "Attempts ended, last " (name) }
            div.legend {
                span.k-completed { "— completed" } span.k-retried { "— retried" }
                span.k-failed { "— failed" } span.k-lost { "— lost (rescued)" }
                span.muted { "┆ rescue or deploy" }
            }
            (svg(chart))
            p.muted { (ended_total) " attempts ended; failure rate " (pct(failures_total, ended_total)) "." }
        }
        h2 { "Per kind, last " (name) }
        div.scroll {
            table #kinds data-live {
                thead { tr {
                    th { "Kind" } th.num { "Completed" } th.num { "Retried" } th.num { "Failed" } th.num { "Lost" }
                    th.num { "Failure rate" } th.num { "Wait p50" } th.num { "Wait p95" } th.num.hide-sm { "Run p50" } th.num.hide-sm { "Run p95" }
                } }
                tbody {
                    @for b in &per_kind.buckets {
                        @let kind = b.kind.clone().unwrap_or_default();
                        tr data-kind=(kind) data-completed=(b.counts.completed) {
                            td { a href={"/jobs?kind=" (super::html::url_encode(&kind))} { (kind) } }
                            td.num { (b.counts.completed) } td.num { (b.counts.retried) } td.num { (b.counts.failed) } td.num { (b.counts.lost) }
                            td.num { (pct(b.counts.failed + b.counts.retried + b.counts.lost, b.counts.total())) }
                            td.num { (ms(b.wait_p50_ms)) } td.num { (ms(b.wait_p95_ms)) }
                            td.num.hide-sm { (ms(b.run_p50_ms)) } td.num.hide-sm { (ms(b.run_p95_ms)) }
                        }
                    }
                }
            }
        }
        @if per_kind.buckets.is_empty() { p.muted { "No attempt ended in this window." } }
        h2 { "Recent rescues" }
        @if rescues.is_empty() {
            p.muted #rescues { "No rescue in this window: no node or worker died." }
        } @else {
            div.scroll { table #rescues data-live {
                thead { tr { th { "When" } th { "Node or worker that died" } th.num { "Jobs" } th { "Cause" } th.num { "Time to rescue" } } }
                tbody { @for e in rescues.iter().take(20) { tr {
                    td { (time(e.at)) } td { code { (e.node) } } td.num { (e.detail["jobs"]) }
                    td { (e.detail["cause"].as_str().unwrap_or("")) }
                    td.num { @if let Some(ms) = e.detail["since_heartbeat_ms"].as_i64() { (dur_ms(ms)) } @else { "—" } }
                } } }
            } }
        }
        @if !deploys.is_empty() {
            h2 { "Deploys" }
            ul #deploys { @for e in deploys.iter().take(20) {
                li { (time(e.at)) " " code { (e.node) } " joined with build " (e.detail["build"].as_str().unwrap_or("?")) }
            } }
        }
    };
    Ok(layout("Overview", Nav::Overview, body).into_response())
}
