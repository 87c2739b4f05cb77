//! The Queues page: counts per state, paused or not, and pause / resume.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use maud::html;
use mend::store::SetQueuePausedParams;
use mend::JobState;

use super::chart::sparkline;
use super::html::{count, layout, svg, url_encode, Nav};
use super::{PageError, PageResult};
use crate::routes::node_views;
use crate::AppState;

/// `GET /queues`.
pub(super) async fn page(State(state): State<AppState>) -> PageResult {
    let counts = state.store.queue_counts().await?;
    let paused = state.store.paused_queues().await?;
    let mut queues: BTreeMap<String, BTreeMap<JobState, u64>> = BTreeMap::new();
    for c in counts {
        *queues
            .entry(c.queue)
            .or_default()
            .entry(c.state)
            .or_default() += c.count;
    }
    for p in &paused {
        queues.entry(p.clone()).or_default();
    }
    queues
        .entry(mend::job::DEFAULT_QUEUE.to_owned())
        .or_default();
    // Slots per queue: the concurrency of every live node that works it.
    let mut slots: BTreeMap<String, (u64, Vec<String>)> = BTreeMap::new();
    for n in node_views(&state)
        .await?
        .into_iter()
        .filter(|n| n.state != "dead")
    {
        for q in n.queues {
            let e = slots.entry(q.name.clone()).or_default();
            e.0 += u64::from(q.concurrency);
            e.1.push(format!("{}: {}", n.id, q.concurrency));
            queues.entry(q.name).or_default();
        }
    }
    // Attempts ended per minute over the last hour, per queue.
    let now = chrono::Utc::now();
    let hour = mend::stats::StatsParams {
        since: now - chrono::Duration::hours(1),
        until: now,
        step: std::time::Duration::from_secs(60),
        by: mend::stats::StatsBy::Queue,
        queue: None,
        kind: None,
    }
    .checked()
    .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let history = state.store.stats(hour).await?;
    let minutes =
        usize::try_from((history.until - history.since).num_minutes().max(1)).unwrap_or(60);
    let mut throughput: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for b in &history.buckets {
        let Some(q) = &b.queue else { continue };
        let i = usize::try_from((b.at - history.since).num_minutes())
            .unwrap_or(0)
            .min(minutes - 1);
        throughput
            .entry(q.clone())
            .or_insert_with(|| vec![0.0; minutes])[i] += b.counts.total() as f64;
    }
    let body = html! {
        h1 { "Queues" }
        div.scroll {
            table #queues data-live {
                thead { tr {
                    th { "Queue" }
                    @for s in JobState::ALL { th.num { (s.as_str()) } }
                    th.num { "Slots" } th { "Last hour" }
                    th { "Paused" } th { span.hide-sm { "Action" } }
                } }
                tbody {
                    @for (name, by_state) in &queues {
                        @let is_paused = paused.contains(name);
                        tr data-queue=(name) {
                            td { a href={"/jobs?queue=" (url_encode(name))} { (name) } }
                            @for s in JobState::ALL {
                                td.num data-state=(s.as_str()) {
                                    a href={"/jobs?queue=" (url_encode(name)) "&state=" (s.as_str())} {
                                        (count(by_state.get(&s).copied().unwrap_or(0), false))
                                    }
                                }
                            }
                            @let (n, per_node) = slots.get(name).cloned().unwrap_or_default();
                            td.num data-slots=(n) title=(per_node.join(", ")) { (n) }
                            @let series = throughput.get(name).cloned().unwrap_or_else(|| vec![0.0; minutes]);
                            td data-ended=(series.iter().sum::<f64>()) {
                                (svg(sparkline(&format!("attempts ended per minute in {name}, last hour"), &series)))
                            }
                            td data-paused=(is_paused) { @if is_paused { span.badge.s-retryable { "paused" } } @else { "no" } }
                            td {
                                form method="post" action={"/queues/" (url_encode(name)) "/" (if is_paused { "resume" } else { "pause" })} {
                                    button type="submit" { @if is_paused { "Resume" } @else { "Pause" } }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.muted { "Slots: the concurrency of every live node that works the queue (hover for each node's share). A paused queue hands out no job until it is resumed; running jobs finish." }
    };
    Ok(layout("Queues", Nav::Queues, body).into_response())
}

/// `POST /queues/{name}/{pause|resume}`.
pub(super) async fn action(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
) -> PageResult {
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        other => {
            return Err(PageError::new(
                StatusCode::NOT_FOUND,
                &format!("There is no queue action {other:?}; use pause or resume."),
            ))
        }
    };
    if name.is_empty() || name.len() > 128 {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "A queue name is 1–128 characters.",
        ));
    }
    state
        .store
        .set_queue_paused(SetQueuePausedParams {
            queue: name.clone(),
            paused,
            now: chrono::Utc::now(),
        })
        .await?;
    tracing::info!(queue = %name, paused, "dashboard: queue paused state changed");
    Ok(Redirect::to("/queues").into_response())
}
