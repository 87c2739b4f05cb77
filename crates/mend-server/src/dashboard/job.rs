//! One job: why it is not running (first), every field, its args with secrets masked, its
//! timeline with durations, each attempt's error, durable cleanups still pending, the last
//! checkpoint, the lease and fence; and retry, cancel, enqueue a copy.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use chrono::Utc;
use maud::{html, Markup};
use mend::store::{CountAheadParams, CountStatesParams, LimitSubject, LimitUsageParams};
use mend::{JobRow, JobState, NewJob};
use uuid::Uuid;

use super::html::{
    between, dur_ms, json_block, layout, mask, state_badge, svg, time, time_opt, url_encode, Nav,
};
use super::jobs::{client_err, COUNT_CAP};
use super::why::{why, Answer, Facts, NodeFact};
use super::{PageError, PageResult};
use crate::AppState;

fn parse(id: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(id).map_err(|_| {
        PageError::new(
            StatusCode::NOT_FOUND,
            &format!("{id:?} is not a job id; job ids look like 0193a5c4-…"),
        )
    })
}

async fn load(state: &AppState, id: Uuid) -> Result<JobRow, PageError> {
    state.store.get(id).await?.ok_or_else(|| {
        PageError::new(
            StatusCode::NOT_FOUND,
            &format!("There is no job {id} (it may have been pruned)."),
        )
    })
}

/// The registered nodes as the answers see them.
pub(super) async fn node_facts(state: &AppState) -> Result<Vec<NodeFact>, PageError> {
    let now = Utc::now();
    let stale = chrono::Duration::from_std(mend::runtime::DEFAULT_NODE_STALE_AFTER)
        .unwrap_or(chrono::Duration::seconds(30));
    Ok(state
        .store
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| NodeFact {
            alive: !mend::node::is_dead(&n, now - stale),
            id: n.id,
            kinds: n.kinds,
            last_seen: n.last_seen,
        })
        .collect())
}

/// The answers to "why isn't this job running?" for `job`, from the store's facts.
async fn answers(state: &AppState, job: &JobRow) -> Result<Vec<Answer>, PageError> {
    if job.state.is_final() {
        return Ok(Vec::new());
    }
    let now = Utc::now();
    let paused = state.store.paused_queues().await?.contains(&job.queue);
    let nodes = node_facts(state).await?;
    let slots: u64 = crate::routes::node_views(state)
        .await?
        .iter()
        .filter(|n| n.state != "dead")
        .flat_map(|n| n.queues.iter())
        .filter(|q| q.name == job.queue)
        .map(|q| u64::from(q.concurrency))
        .sum();
    let (ahead, running, holds) = if job.state == JobState::Available {
        let n = state
            .store
            .count_ahead(CountAheadParams {
                id: job.id,
                queue: job.queue.clone(),
                priority: job.priority,
                run_at: job.run_at,
                cap: COUNT_CAP,
            })
            .await?;
        let running = state
            .store
            .count_states(CountStatesParams {
                queue: Some(job.queue.clone()),
                kind: None,
                cap: COUNT_CAP,
                states: vec![JobState::Running],
            })
            .await?
            .into_iter()
            .find(|c| c.state == JobState::Running)
            .map_or(0, |c| c.count);
        let holds = state
            .store
            .limit_usage(LimitUsageParams {
                queue: job.queue.clone(),
                jobs: vec![LimitSubject {
                    kind: job.kind.clone(),
                    args: job.args.clone(),
                    limit_key: job.limit_key.clone(),
                }],
            })
            .await?
            .holds(job, now);
        (Some((n.min(COUNT_CAP), n > COUNT_CAP)), running, holds)
    } else {
        (None, 0, Vec::new())
    };
    Ok(why(&Facts {
        job,
        now,
        queue_paused: paused,
        nodes: &nodes,
        ahead,
        running_in_queue: running,
        slots,
        holds: &holds,
        stale_after: chrono::Duration::from_std(mend::runtime::DEFAULT_NODE_STALE_AFTER)
            .unwrap_or(chrono::Duration::seconds(30)),
    }))
}

/// `GET /jobs/{id}`.
pub(super) async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: Option<axum::Extension<mend::auth::Principal>>,
) -> PageResult {
    let job = load(&state, parse(&id)?).await?;
    let answers = answers(&state, &job).await?;
    // Secrets in clear for admins only; only admins and operators act.
    let role = super::role_of(principal.as_ref());
    let clear = role == mend::auth::Role::Admin;
    let may_act = matches!(role, mend::auth::Role::Admin | mend::auth::Role::Operator);
    let mask = |v: &serde_json::Value| if clear { (v.clone(), 0) } else { mask(v) };
    let (args, masked) = mask(&job.args);
    let now = Utc::now();
    let trace_id = job
        .trace_parent
        .as_deref()
        .and_then(|t| t.split('-').nth(1))
        .map(str::to_owned);
    let body = html! {
        h1 { "Job " code { (job.id) } }
        @if !answers.is_empty() {
            section.why #why data-live aria-labelledby="why-title" {
                h2 #why-title { "Why isn't this job running?" }
                ul { @for a in &answers { li { strong { (a.headline) } " " span.muted { (a.detail) } } } }
            }
        }
        div.actions #job-actions {
            (state_badge(job.state))
            @if !may_act {
            } @else if job.state.is_final() {
                form method="post" action={"/jobs/" (job.id) "/retry"} {
                    button type="submit" { @if job.state == JobState::Completed { "Run again" } @else { "Retry" } }
                }
            } @else {
                form method="post" action={"/jobs/" (job.id) "/cancel"} { button.danger type="submit" { "Cancel" } }
            }
            @if may_act { form method="post" action={"/jobs/" (job.id) "/copy"} { button type="submit" { "Enqueue a copy" } } }
        }
        div.grid {
            section.card #facts data-live {
                h2 { "Facts" }
                dl.facts {
                    dt { "Kind" } dd { a href={"/jobs?kind=" (url_encode(&job.kind))} { (job.kind) } }
                    dt { "Queue" } dd { a href={"/jobs?queue=" (url_encode(&job.queue))} { (job.queue) } }
                    dt { "State" } dd #state data-state=(job.state.as_str()) { (job.state.as_str()) }
                    dt { "Attempt (fence)" } dd { (job.attempt) " of " (job.max_attempts) }
                    dt { "Priority" } dd { (job.priority) }
                    dt { "Created" } dd { (time(job.created_at)) }
                    dt { "Run at" } dd { (time(job.run_at)) }
                    dt { "Last attempt started" } dd { (time_opt(job.attempted_at)) }
                    dt { "Finished" } dd { (time_opt(job.finalized_at)) }
                    dt { "Lease owner" } dd { (job.lease_owner.as_deref().unwrap_or("—")) }
                    dt { "Lease expires" } dd {
                        (time_opt(job.lease_expires_at))
                        @if let Some(e) = job.lease_expires_at { @if e < now { " " span.badge.s-discarded { "expired" } } }
                    }
                    dt { "Cancel requested" } dd { (if job.cancel_requested { "yes" } else { "no" }) }
                    @if let Some(t) = job.timeout_ms { dt { "Timeout" } dd { (dur_ms(t)) } }
                    @if let Some(k) = &job.unique_key { dt { "Unique key" } dd { code { (k) } } }
                    @if let Some(k) = &job.limit_key { dt { "Limit key" } dd { code { (k) } } }
                    @if !job.tags.is_empty() { dt { "Tags" } dd { @for t in &job.tags { a href={"/jobs?tag=" (url_encode(t))} { (t) } " " } } }
                    dt { "Trace id" } dd { @if let Some(t) = &trace_id { code #trace-id { (t) } } @else { "—" } }
                }
                p.muted { "A completion is accepted only from the lease owner of the current attempt (the fence): a late write from an earlier attempt or another node is refused." }
            }
            section.card {
                h2 { "Args" }
                @if masked > 0 { p.muted #masked { (masked) " secret-looking value" @if masked != 1 { "s" } " masked." } }
                (json_block(&args))
                @if let Some(r) = &job.result { h2 { "Result" } (json_block(&mask(r).0)) }
                @if let Some(c) = &job.checkpoint { h2 { "Last checkpoint" } (json_block(&mask(c).0)) }
            }
        }
        @if !job.pending_cleanups.is_empty() {
            h2 { "Durable cleanups still pending" }
            div.scroll { table #pending-cleanups {
                thead { tr { th { "#" } th { "Name" } th { "Written by attempt" } th { "Args" } } }
                tbody { @for c in &job.pending_cleanups { tr {
                    td { (c.seq) } td { (c.name) } td { (c.attempt) } td { code { (mask(&c.args).0.to_string()) } }
                } } }
            } }
        }
        @if !job.errors.is_empty() {
            h2 { "Attempts that failed" }
            div.scroll { table #errors {
                thead { tr { th { "Attempt" } th { "Kind" } th { "When" } th { "Error" } } }
                tbody { @for e in &job.errors { tr {
                    td { (e.attempt) } td { span class={"badge ev-" (e.kind.as_str())} { (e.kind.as_str()) } } td { (time(e.at)) }
                    td { pre { (e.message) } }
                } } }
            } }
        }
        h2 { "Timeline" }
        section #timeline-section data-live { (timeline(&job)) }
    };
    Ok(layout(&format!("Job {}", job.kind), Nav::Jobs, body).into_response())
}

fn timeline(job: &JobRow) -> Markup {
    let events = &job.timeline;
    let Some(first) = events.first() else {
        return html! { p.muted { "No events recorded." } };
    };
    let end = if job.state.is_final() {
        events.last().map_or(first.at, |e| e.at)
    } else {
        Utc::now()
    };
    let span_ms = (end - first.at).num_milliseconds().max(1) as f64;
    // A strip with a tick per event, placed by time, so long waits and quick steps show.
    let mut strip = String::from(
        r#"<svg class="chart" viewBox="0 0 600 24" role="img" aria-label="Events over time"><line class="axis" x1="4" y1="12" x2="596" y2="12"/>"#,
    );
    for e in events {
        let x = 4.0 + 592.0 * (e.at - first.at).num_milliseconds() as f64 / span_ms;
        let class = match e.event.as_str() {
            "completed" => "l-completed",
            "failed" | "panicked" | "discarded" | "timed_out" => "l-failed",
            "rescued" | "lost" => "l-retried",
            _ => "l-lost",
        };
        strip.push_str(&format!(
            r#"<line class="{class}" x1="{x:.1}" y1="3" x2="{x:.1}" y2="21"><title>{}</title></line>"#,
            e.event.replace('<', "")
        ));
    }
    strip.push_str("</svg>");
    html! {
        (svg(strip))
        p.muted { "From " (time(first.at)) ", over " (between(first.at, end)) "." }
        ol.timeline #timeline {
            @for (i, e) in events.iter().enumerate() {
                li class={"ev-" (e.event)} data-event=(e.event) {
                    (time(e.at))
                    @if i > 0 { span.delta { "+" (between(events[i - 1].at, e.at)) } }
                    " " strong { (e.event.replace('_', " ")) }
                    @if let Some(a) = e.attempt { " · attempt " (a) }
                    @if let Some(n) = &e.node { " · on " code { (n) } }
                    @if let (Some(s), true) = (e.started_at, e.event != "started") { " · ran " (between(s, e.at)) }
                    @if let Some(d) = &e.detail { div { pre { (d) } } }
                    @if !e.cleanups.is_empty() {
                        ul.cleanups {
                            @for c in &e.cleanups {
                                li data-cleanup=(c.name) {
                                    "cleanup " code { (c.name) }
                                    @if let Some(t) = &c.told { " told " (t) }
                                    " → " (cleanup_outcome(&c.outcome)) " in " (dur_ms(i64::try_from(c.duration_ms).unwrap_or(i64::MAX)))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn cleanup_outcome(o: &mend::cleanup::CleanupOutcome) -> String {
    match o {
        mend::cleanup::CleanupOutcome::Ok => "ok".into(),
        mend::cleanup::CleanupOutcome::Panicked { message } => format!("panicked: {message}"),
        mend::cleanup::CleanupOutcome::TimedOut => "timed out".into(),
    }
}

/// `POST /jobs/{id}/{action}`: retry, cancel, or enqueue a copy.
pub(super) async fn action(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
) -> PageResult {
    let id = parse(&id)?;
    let job = load(&state, id).await?;
    let client = state.client();
    match action.as_str() {
        "retry" => {
            if !job.state.is_final() {
                return Err(PageError::new(
                    StatusCode::CONFLICT,
                    &format!(
                        "Job {id} is {}; only finished jobs can be retried.",
                        job.state
                    ),
                ));
            }
            client.retry(id).await.map_err(client_err)?;
            tracing::info!(job = %id, "dashboard: retry");
        }
        "cancel" => {
            client.cancel(id).await.map_err(client_err)?;
            tracing::info!(job = %id, "dashboard: cancel");
        }
        "copy" => {
            let mut copy =
                NewJob::new(job.kind.clone(), job.args.clone()).with_queue(job.queue.clone());
            copy.priority = job.priority;
            copy.max_attempts = job.max_attempts;
            copy.tags = job.tags.clone();
            copy.timeout_ms = job.timeout_ms;
            copy.limit_key = job.limit_key.clone();
            let new = client.insert(copy).await.map_err(client_err)?;
            tracing::info!(job = %id, copy = %new.id, "dashboard: enqueued a copy");
            return Ok(Redirect::to(&format!("/jobs/{}", new.id)).into_response());
        }
        other => {
            return Err(PageError::new(
                StatusCode::NOT_FOUND,
                &format!("There is no action {other:?}; use retry, cancel or copy."),
            ))
        }
    }
    Ok(Redirect::to(&format!("/jobs/{id}")).into_response())
}
