//! The Queues page: counts per state, paused or not, and pause / resume.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use maud::html;
use mend::store::{CountStatesParams, SetQueuePausedParams};
use mend::JobState;

use super::chart::sparkline;
use super::html::{between, count, layout, svg, url_encode, Nav};
use super::jobs::COUNT_CAP;
use super::{PageError, PageResult};
use crate::routes::node_views;
use crate::AppState;

/// The states a queue's row counts: the work still to do. Finished work is the last hour's
/// history.
const LIVE: [JobState; 4] = [
    JobState::Available,
    JobState::Scheduled,
    JobState::Retryable,
    JobState::Running,
];

/// `GET /queues`.
pub(super) async fn page(
    State(state): State<AppState>,
    principal: Option<axum::Extension<mend::auth::Principal>>,
) -> PageResult {
    // Pausing is for admins and operators; a viewer sees the state only.
    let may_act = matches!(
        super::role_of(principal.as_ref()),
        mend::auth::Role::Admin | mend::auth::Role::Operator
    );
    let now = chrono::Utc::now();
    // Attempts ended per minute over the last hour, per queue.
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
    // The queues: paused ones, those a live node works, those with activity in the last hour,
    // and the default one. (Counting the jobs table by queue would read every finished job.)
    let paused = state.store.paused_queues().await?;
    let mut names: std::collections::BTreeSet<String> = paused.iter().cloned().collect();
    names.insert(mend::job::DEFAULT_QUEUE.to_owned());
    names.extend(history.buckets.iter().filter_map(|b| b.queue.clone()));
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
            names.insert(q.name);
        }
    }
    let mut queues: BTreeMap<String, BTreeMap<JobState, (u64, bool)>> = BTreeMap::new();
    for name in &names {
        let counts = state
            .store
            .count_states(CountStatesParams {
                queue: Some(name.clone()),
                kind: None,
                cap: COUNT_CAP,
                states: LIVE.to_vec(),
            })
            .await?;
        queues.insert(
            name.clone(),
            counts
                .into_iter()
                .map(|c| (c.state, (c.count, c.capped)))
                .collect(),
        );
    }
    // How long the next job of each queue has waited (the head of its line, by claim order).
    let heads: BTreeMap<String, chrono::DateTime<chrono::Utc>> = state
        .store
        .queue_heads(names.iter().cloned().collect())
        .await?
        .into_iter()
        .map(|j| (j.queue, j.run_at.max(j.created_at)))
        .collect();
    let minutes =
        usize::try_from((history.until - history.since).num_minutes().max(1)).unwrap_or(60);
    let mut throughput: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut ended: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for b in &history.buckets {
        let Some(q) = &b.queue else { continue };
        let i = usize::try_from((b.at - history.since).num_minutes())
            .unwrap_or(0)
            .min(minutes - 1);
        throughput
            .entry(q.clone())
            .or_insert_with(|| vec![0.0; minutes])[i] += b.counts.total() as f64;
        let e = ended.entry(q.clone()).or_default();
        e.0 += b.counts.completed;
        e.1 += b.counts.failed;
    }
    let body = html! {
        h1 { "Queues" }
        div.scroll {
            table #queues data-live {
                thead { tr {
                    th { "Queue" }
                    @for s in LIVE { th.num { (s.as_str()) } }
                    th.num { "completed (1 h)" } th.num { "failed (1 h)" }
                    th.num { "Slots" } th.num { "Next job waiting" } th { "Last hour" }
                    th { "Paused" } th { span.hide-sm { "Action" } }
                } }
                tbody {
                    @for (name, by_state) in &queues {
                        @let is_paused = paused.contains(name);
                        tr data-queue=(name) {
                            td { a href={"/jobs?queue=" (url_encode(name))} { (name) } }
                            @for s in LIVE {
                                @let (n, capped) = by_state.get(&s).copied().unwrap_or((0, false));
                                td.num data-state=(s.as_str()) {
                                    a href={"/jobs?queue=" (url_encode(name)) "&state=" (s.as_str())} { (count(n, capped)) }
                                }
                            }
                            @let (done, failed) = ended.get(name).copied().unwrap_or((0, 0));
                            td.num data-completed-hour=(done) { (done) }
                            td.num { (failed) }
                            @let (n, per_node) = slots.get(name).cloned().unwrap_or_default();
                            td.num data-slots=(n) title=(per_node.join(", ")) { (n) }
                            td.num data-head-wait-ms=[heads.get(name).map(|h| (now - *h).num_milliseconds().max(0))] {
                                @match heads.get(name) {
                                    Some(h) => { (between(*h, now)) }
                                    None => { "—" }
                                }
                            }
                            @let series = throughput.get(name).cloned().unwrap_or_else(|| vec![0.0; minutes]);
                            td data-ended=(series.iter().sum::<f64>()) {
                                (svg(sparkline(&format!("attempts ended per minute in {name}, last hour"), &series)))
                            }
                            td data-paused=(is_paused) { @if is_paused { span.badge.s-retryable { "paused" } } @else { "no" } }
                            td {
                                @if may_act {
                                    form method="post" action={"/queues/" (url_encode(name)) "/" (if is_paused { "resume" } else { "pause" })} {
                                        button type="submit" { @if is_paused { "Resume" } @else { "Pause" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        p.muted { "Next job waiting: how long the job the queue hands out next has been due. Slots: the concurrency of every live node that works the queue (hover for each node's share). A paused queue hands out no job until it is resumed; running jobs finish." }
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
