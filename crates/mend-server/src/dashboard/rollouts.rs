//! The Rollouts pages: every rollout with its state and share, and one rollout with both
//! versions' failure rates over time (its steps and any cut-off marked), the guard's current
//! window, the decision log with its evidence, and pause / resume / promote / abort for the
//! roles that may. The figures are the API's (`routes::rollouts`), so the page and
//! `GET /v1/rollouts/{id}` cannot disagree.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use mend::rollout::{format_share, Action, Request, Rollout, RolloutState, SideStats};
use uuid::Uuid;

use super::chart::{lines, Marker, Series};
use super::html::{dur_ms, layout, short_id, svg, time, time_opt, Nav};
use super::{PageError, PageResult};
use crate::routes::rollouts::{detail, rollout_error, RolloutDetail};
use crate::AppState;

fn page_error(e: crate::ApiError) -> PageError {
    PageError::new(e.status, &e.detail)
}

fn parse(id: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(id).map_err(|_| {
        PageError::new(
            StatusCode::NOT_FOUND,
            &format!("{id:?} is not a rollout id; rollout ids look like 0193a5c4-…"),
        )
    })
}

/// A rollout state as a coloured badge.
fn state_badge(s: RolloutState) -> Markup {
    let class = match s {
        RolloutState::Running => "s-running",
        RolloutState::Paused => "s-retryable",
        RolloutState::RolledBack => "s-discarded",
        RolloutState::Promoted => "s-completed",
        RolloutState::Aborted => "s-cancelled",
    };
    html! { span class={"badge " (class)} data-rollout-state=(s.as_str()) { (s.as_str().replace('_', " ")) } }
}

fn stable_name(r: &Rollout) -> String {
    r.stable
        .clone()
        .unwrap_or_else(|| "(unversioned)".to_owned())
}

/// The steps, the current one in bold while the rollout is active.
fn steps(r: &Rollout) -> Markup {
    html! {
        @for (i, s) in r.steps.iter().enumerate() {
            @if i > 0 { " → " }
            @if r.state.is_active() && i == r.step { strong { (format_share(*s)) } } @else { (format_share(*s)) }
        }
    }
}

/// A p-value: three decimals, or scientific notation when smaller.
fn p_value(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.2e}")
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// `3 / 120 (2.5%)`: failures of attempts over the window.
fn failed(s: &SideStats) -> String {
    if s.attempts == 0 {
        "0 / 0".to_owned()
    } else {
        format!("{} / {} ({})", s.failures, s.attempts, pct(s.failure_rate))
    }
}

fn side_row(name: &str, version: &str, s: &SideStats) -> Markup {
    html! {
        tr data-side=(name) {
            td { (name) } td { code { (version) } }
            td.num data-attempts=(s.attempts) { (s.attempts) }
            td.num data-failures=(s.failures) { (s.failures) }
            td.num { @if s.attempts > 0 { (pct(s.failure_rate)) } @else { "—" } }
            td.num { @match s.p95_ms { Some(p) => { (dur_ms(p.round() as i64)) } None => { "—" } } }
        }
    }
}

/// `GET /rollouts`.
pub(super) async fn list(State(state): State<AppState>) -> PageResult {
    let rollouts = crate::routes::rollouts::summaries(&state)
        .await
        .map_err(page_error)?;
    let body = html! {
        h1 { "Rollouts" }
        @if rollouts.is_empty() {
            p #no-rollouts { "No rollout yet. Start one with " code { "mend rollouts start KIND --version V --steps 5%,25%,100% --every 10m" } " or " code { "POST /v1/rollouts" } "." }
        } @else {
            div.scroll {
                table #rollouts data-live {
                    thead { tr {
                        th { "Rollout" } th { "Kind" } th { "Canary" } th { "Stable" } th { "State" }
                        th.num { "Share" } th { "Steps" } th.num { "Canary failed" } th.num { "Stable failed" }
                        th.hide-sm { "Started" } th.hide-sm { "Ended" }
                    } }
                    tbody {
                        @for summary in &rollouts {
                            @let r = &summary.rollout;
                            tr data-rollout=(r.id) data-kind=(r.kind) {
                                td { a href={"/rollouts/" (r.id)} { (short_id(&r.id)) } }
                                td { (r.kind) }
                                td { code { (r.canary) } }
                                td { code { (stable_name(r)) } }
                                td { (state_badge(r.state)) }
                                td.num data-share=(r.share) { (format_share(r.share)) }
                                td { (steps(r)) }
                                @match &summary.window {
                                    Some(w) => {
                                        td.num data-side="canary" title="over the guard's window" { (failed(&w.evidence.canary)) }
                                        td.num data-side="stable" title="over the guard's window" { (failed(&w.evidence.stable)) }
                                    }
                                    None => { td.num { span.muted { "—" } } td.num { span.muted { "—" } } }
                                }
                                td.hide-sm { (time(r.started_at)) }
                                td.hide-sm { (time_opt(r.finished_at)) }
                            }
                        }
                    }
                }
            }
        }
        p.muted { "Failed: failures / attempts of each version over the guard's window, while the rollout is active. A rollout sends a share of a kind's jobs to a canary version and raises it step by step while the guard finds the canary no worse than stable; a breach cuts the canary off and its failed jobs are retried on stable." }
    };
    Ok(layout("Rollouts", Nav::Rollouts, body).into_response())
}

/// Both versions' failure rates per bucket, the decisions marked where they fell.
fn chart(d: &RolloutDetail) -> String {
    let s = &d.series;
    let n = s.buckets.len().max(1);
    let rate = |side: fn(&crate::routes::rollouts::SeriesBucket) -> Option<f64>| -> Vec<f64> {
        s.buckets
            .iter()
            .map(|b| side(b).map_or(0.0, |r| r * 100.0))
            .collect()
    };
    let index = |at: DateTime<Utc>| -> Option<usize> {
        if at < s.since || at > s.until {
            return None;
        }
        usize::try_from((at - s.since).num_seconds() / s.step_secs.max(1))
            .ok()
            .map(|i| i.min(n - 1))
    };
    let markers: Vec<Marker> = d
        .rollout
        .decisions
        .iter()
        .filter_map(|dec| {
            let at = index(dec.at)?;
            let class = match dec.action {
                Action::CutOff => "marker-cutoff",
                Action::Aborted => "marker-abort",
                _ => "marker-step",
            };
            Some(Marker {
                at,
                class,
                title: format!(
                    "{}: {:?} at {} by {} ({})",
                    dec.at.format("%H:%M:%S"),
                    dec.action,
                    format_share(dec.share),
                    dec.actor,
                    dec.reason
                ),
            })
        })
        .collect();
    let fmt = if s.step_secs < 60 {
        "%H:%M:%S"
    } else {
        "%m-%d %H:%M"
    };
    let first = format!("{} UTC", s.since.format(fmt));
    let last = format!("{} UTC", s.until.format(fmt));
    lines(
        &format!(
            "Failure rate (%) of canary {} and stable {} per {} s",
            d.rollout.canary,
            stable_name(&d.rollout),
            s.step_secs
        ),
        n,
        &[
            Series {
                class: "l-stable",
                name: "stable failure rate %",
                values: rate(|b| b.stable.failure_rate),
            },
            Series {
                class: "l-canary",
                name: "canary failure rate %",
                values: rate(|b| b.canary.failure_rate),
            },
        ],
        [&first, "", &last],
        &markers,
    )
}

/// `GET /rollouts/{id}`.
pub(super) async fn page(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: Option<axum::Extension<mend::auth::Principal>>,
) -> PageResult {
    let id = parse(&id)?;
    let r = state
        .store
        .rollout_get(id)
        .await?
        .ok_or_else(|| PageError::new(StatusCode::NOT_FOUND, &format!("No rollout {id}.")))?;
    let d = detail(&state, r).await.map_err(page_error)?;
    let r = &d.rollout;
    let may_act = matches!(
        super::role_of(principal.as_ref()),
        mend::auth::Role::Admin | mend::auth::Role::Operator
    );
    let actions: &[(&str, &str, bool)] = match r.state {
        RolloutState::Running => &[
            ("pause", "Pause", false),
            ("promote", "Promote now", false),
            ("abort", "Abort", true),
        ],
        RolloutState::Paused => &[
            ("resume", "Resume", false),
            ("promote", "Promote now", false),
            ("abort", "Abort", true),
        ],
        _ => &[],
    };
    let ev = &d.window.evidence;
    let stable = stable_name(r);
    let body = html! {
        h1 { "Rollout of " (r.kind) ": " code { (r.canary) } }
        div.actions #rollout-actions {
            (state_badge(r.state))
            @if may_act {
                @for (action, label, danger) in actions {
                    form method="post" action={"/rollouts/" (r.id) "/" (action)} {
                        @if *danger { button.danger type="submit" data-action=(action) { (label) } }
                        @else { button type="submit" data-action=(action) { (label) } }
                    }
                }
            }
        }
        div.grid {
            section.card #facts data-live {
                h2 { "Facts" }
                dl.facts {
                    dt { "Id" } dd { code { (r.id) } }
                    dt { "Kind" } dd { a href={"/jobs?kind=" (super::html::url_encode(&r.kind))} { (r.kind) } }
                    dt { "Canary" } dd { code { (r.canary) } }
                    dt { "Stable" } dd { code { (stable) } }
                    dt { "State" } dd #state data-state=(r.state.as_str()) { (r.state.as_str()) }
                    dt { "Canary's share" } dd #share data-share=(r.share) { (format_share(r.share)) }
                    dt { "Steps" } dd { (steps(r)) " every " (dur_ms(i64::try_from(r.every_secs).unwrap_or(i64::MAX / 1000).saturating_mul(1000))) }
                    dt { "Next step" } dd { (time_opt(r.next_step_at)) }
                    dt { "Started" } dd { (time(r.started_at)) }
                    dt { "Ended" } dd { (time_opt(r.finished_at)) }
                    dt { "Handed back" } dd { (r.healed) " job(s) the canary failed, retried on stable" }
                    @if let Some(u) = &r.notify_url { dt { "Notified of a cut-off" } dd { code { (u) } } }
                }
            }
            section.card #window data-live data-verdict=(d.window.verdict) {
                h2 { "Guard window" }
                p.muted {
                    "The last " (dur_ms(i64::try_from(ev.window_secs).unwrap_or(0).saturating_mul(1000)))
                    " (" (time(d.window.since)) " to " (time(d.window.until)) "): verdict "
                    strong { (d.window.verdict.replace('_', " ")) }
                    @if let Some(p) = ev.p_value { ", Fisher one-sided p = " (p_value(p)) " against α = " (ev.alpha) }
                    "."
                }
                div.scroll { table {
                    thead { tr { th { "Side" } th { "Version" } th.num { "Attempts" } th.num { "Failures" } th.num { "Failure rate" } th.num { "Run p95" } } }
                    tbody {
                        (side_row("canary", &r.canary, &ev.canary))
                        (side_row("stable", &stable, &ev.stable))
                    }
                } }
                @if !ev.breach.is_empty() { p.error { (ev.breach) } }
                p.muted { "The guard judges nothing before " (r.guard.min_samples) " attempts on each side; steps do not advance on no evidence." }
            }
        }
        section.card #series {
            h2 { "Failure rate over time" }
            div.legend {
                span.k-canary { "— canary " (r.canary) } span.k-stable { "— stable " (stable) }
                span.muted { "┆ step or decision" } span.k-failed { "┃ cut-off" }
            }
            (svg(chart(&d)))
            p.muted { "Per " (d.series.step_secs) " s since the rollout started; a bucket without attempts (or from before the start) is drawn at 0." }
        }
        h2 { "Decisions" }
        div.scroll {
            table #decisions {
                thead { tr { th { "When" } th { "Decision" } th.num { "Share after" } th { "By" } th { "Why" } th { "Evidence" } } }
                tbody {
                    @for dec in r.decisions.iter().rev() {
                        tr data-action=(format!("{:?}", dec.action)) {
                            td { (time(dec.at)) }
                            td { (format!("{:?}", dec.action)) }
                            td.num { (format_share(dec.share)) }
                            td { (dec.actor) }
                            td { (dec.reason) }
                            td {
                                @if let Some(e) = &dec.evidence {
                                    "canary " (e.canary.failures) "/" (e.canary.attempts)
                                    ", stable " (e.stable.failures) "/" (e.stable.attempts)
                                    @if let Some(p) = e.p_value { ", p = " (p_value(p)) }
                                    " over " (e.window_secs) " s"
                                    @if !e.breach.is_empty() { br; strong { (e.breach) } }
                                } @else { span.muted { "—" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout("Rollout", Nav::Rollouts, body).into_response())
}

/// `POST /rollouts/{id}/{pause|resume|promote|abort}`.
pub(super) async fn action(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    principal: Option<axum::Extension<mend::auth::Principal>>,
) -> PageResult {
    let id = parse(&id)?;
    let req = match action.as_str() {
        "pause" => Request::Pause,
        "resume" => Request::Resume,
        "promote" => Request::Promote,
        "abort" => Request::Abort,
        other => {
            return Err(PageError::new(
                StatusCode::NOT_FOUND,
                &format!(
                    "There is no rollout action {other:?}; use pause, resume, promote or abort."
                ),
            ))
        }
    };
    let actor = principal.map_or_else(|| crate::tokens::LOCAL_NAME.to_owned(), |p| p.0.name);
    let r = mend::maintenance::rollouts::request(state.store.as_ref(), id, req, &actor, Utc::now())
        .await
        .map_err(|e| page_error(rollout_error(e)))?;
    tracing::info!(rollout = %id, state = r.state.as_str(), actor = %actor, "dashboard: rollout {action}");
    Ok(Redirect::to(&format!("/rollouts/{id}")).into_response())
}
