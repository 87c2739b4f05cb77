//! The Jobs page: filters, per-state counts, cursor paging, and bulk retry / cancel / delete
//! behind a confirmation that says how many jobs it touches.

use axum::extract::{Query, RawForm, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};
use mend::store::{CountStatesParams, ListParams};
use mend::{JobRow, JobState};
use serde::Deserialize;
use uuid::Uuid;

use super::html::{count, layout, short_id, state_badge, time, url_encode, Nav};
use super::{PageError, PageResult};
use crate::AppState;

/// Counts per state stop here: a page view never counts a big table.
pub(super) const COUNT_CAP: u64 = 10_000;
/// Rows per page.
const PAGE: usize = 50;
/// Most jobs one bulk action touches (one page's worth, selected by hand).
const MAX_BULK: usize = 500;

/// The page's filters, as the form and the links send them.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct JobsQuery {
    state: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
    tag: Option<String>,
    /// `15m`, `1h`, `24h`, `7d`: jobs created in the last …
    range: Option<String>,
    /// RFC 3339: created at or after.
    since: Option<String>,
    /// RFC 3339: created before.
    until: Option<String>,
    /// A JSON object the args must contain.
    args: Option<String>,
    before: Option<String>,
    /// What the last action did, shown once.
    done: Option<String>,
}

fn some(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl JobsQuery {
    /// The query string of these filters, with `state` replaced (`None`: all states) and
    /// without the cursor.
    fn link(&self, state: Option<&str>) -> String {
        let mut parts = Vec::new();
        if let Some(s) = state {
            parts.push(format!("state={}", url_encode(s)));
        }
        for (k, v) in [
            ("queue", &self.queue),
            ("kind", &self.kind),
            ("tag", &self.tag),
            ("range", &self.range),
            ("since", &self.since),
            ("until", &self.until),
            ("args", &self.args),
        ] {
            if let Some(v) = some(v) {
                parts.push(format!("{k}={}", url_encode(v)));
            }
        }
        if parts.is_empty() {
            "/jobs".to_owned()
        } else {
            format!("/jobs?{}", parts.join("&"))
        }
    }

    fn params(&self, now: DateTime<Utc>) -> Result<ListParams, String> {
        let mut p = ListParams {
            queue: some(&self.queue).map(str::to_owned),
            kind: some(&self.kind).map(str::to_owned),
            tag: some(&self.tag).map(str::to_owned),
            limit: PAGE,
            ..Default::default()
        };
        if let Some(s) = some(&self.state) {
            p.states = s
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<JobState>()
                        .map_err(|_| format!("unknown state {s:?}"))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(r) = some(&self.range) {
            let d = match r {
                "15m" => Duration::minutes(15),
                "1h" => Duration::hours(1),
                "24h" => Duration::hours(24),
                "7d" => Duration::days(7),
                other => {
                    return Err(format!(
                        "unknown time range {other:?}: use 15m, 1h, 24h or 7d"
                    ))
                }
            };
            p.created_after = Some(now - d);
        }
        let at = |name: &str, v: &str| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    format!("{name} must be an RFC 3339 time such as 2026-11-30T09:00:00Z ({e})")
                })
        };
        if let Some(s) = some(&self.since) {
            p.created_after = Some(at("since", s)?);
        }
        if let Some(u) = some(&self.until) {
            p.created_before = Some(at("until", u)?);
        }
        if let Some(a) = some(&self.args) {
            match serde_json::from_str::<serde_json::Value>(a) {
                Ok(serde_json::Value::Object(m)) => p.args_contains = Some(m),
                Ok(_) => return Err("args must be a JSON object such as {\"user\": 42}".into()),
                Err(e) => {
                    return Err(format!(
                        "args is not valid JSON ({e}); write an object such as {{\"user\": 42}}"
                    ))
                }
            }
        }
        if let Some(b) = some(&self.before) {
            p.before =
                Some(Uuid::parse_str(b).map_err(|_| "the page cursor is not a job id".to_owned())?);
        }
        Ok(p)
    }
}

/// `GET /jobs`.
pub(super) async fn page(
    State(state): State<AppState>,
    Query(q): Query<JobsQuery>,
    principal: Option<axum::Extension<mend::auth::Principal>>,
) -> PageResult {
    let now = Utc::now();
    // Bulk actions are for admins and operators; a viewer sees the list only.
    let may_act = matches!(
        super::role_of(principal.as_ref()),
        mend::auth::Role::Admin | mend::auth::Role::Operator
    );
    let (params, problem) = match q.params(now) {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(e)),
    };
    let counts = state
        .store
        .count_states(CountStatesParams {
            queue: some(&q.queue).map(str::to_owned),
            kind: some(&q.kind).map(str::to_owned),
            cap: COUNT_CAP,
            states: vec![],
        })
        .await?;
    let page = match params {
        Some(p) => Some(state.store.list(p).await?),
        None => None,
    };
    let current = some(&q.state);
    let body = html! {
        h1 { "Jobs" }
        @if let Some(done) = some(&q.done) { p.flash role="status" { (done) } }
        @if let Some(e) = &problem { p.error role="alert" { (e) } }
        (filters(&q))
        ul.tabs #state-counts data-live aria-label="Jobs per state" {
            li { a href=(q.link(None)) aria-current=[current.is_none().then_some("true")] { "All" } }
            @for c in &counts {
                li { a href=(q.link(Some(c.state.as_str()))) aria-current=[(current == Some(c.state.as_str())).then_some("true")]
                    data-state=(c.state.as_str()) data-count=(c.count) {
                    (c.state.as_str()) " " span.count { (count(c.count, c.capped)) }
                } }
            }
        }
        p.muted { "Counts are per queue and kind, up to " (count(COUNT_CAP, false)) "; the list below applies every filter." }
        @if let Some(page) = &page {
            form method="post" action="/jobs/bulk" {
                @if may_act { div.actions {
                    span.muted { "With the selected jobs:" }
                    button type="submit" name="action" value="retry" { "Retry" }
                    button type="submit" name="action" value="cancel" { "Cancel" }
                    button.danger type="submit" name="action" value="delete" { "Delete" }
                } }
                (table(&page.jobs, true))
            }
            @if page.jobs.is_empty() { p #no-jobs { "No job matches these filters." } }
            div.actions {
                @if some(&q.before).is_some() { a href=(q.link(current)) { "First page" } }
                @if let Some(next) = page.next_cursor {
                    a rel="next" href={(q.link(current)) (if q.link(current).contains('?') { "&" } else { "?" }) "before=" (next)} { "Next page" }
                }
            }
        }
    };
    let status = if problem.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((status, layout("Jobs", Nav::Jobs, body)).into_response())
}

fn filters(q: &JobsQuery) -> Markup {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let range = some(&q.range).unwrap_or("");
    html! {
        form.filters method="get" action="/jobs" role="search" {
            @if let Some(s) = some(&q.state) { input type="hidden" name="state" value=(s); }
            label { "Queue" input name="queue" value=(v(&q.queue)) size="12"; }
            label { "Kind" input name="kind" value=(v(&q.kind)) size="12"; }
            label { "Tag" input name="tag" value=(v(&q.tag)) size="10"; }
            label { "Created"
                select name="range" {
                    option value="" selected[range.is_empty()] { "any time" }
                    @for (val, text) in [("15m", "last 15 minutes"), ("1h", "last hour"), ("24h", "last 24 hours"), ("7d", "last 7 days")] {
                        option value=(val) selected[range == val] { (text) }
                    }
                }
            }
            label { "Args contain (JSON)" input name="args" value=(v(&q.args)) placeholder="{\"user\": 42}" size="18"; }
            button.primary type="submit" { "Filter" }
            a href="/jobs" { "Clear" }
        }
    }
}

/// The job table; with `select`, a checkbox per row for bulk actions.
pub(super) fn table(jobs: &[JobRow], select: bool) -> Markup {
    html! {
        div.scroll {
            table #jobs {
                thead { tr {
                    @if select { th { input type="checkbox" data-select-all aria-label="Select all"; } }
                    th { "Job" } th { "Kind" } th.hide-sm { "Queue" } th { "State" }
                    th.num { "Attempt" } th.hide-sm { "Created" } th.hide-sm { "Last error" }
                } }
                tbody {
                    @for j in jobs {
                        tr data-id=(j.id) {
                            @if select { td { input type="checkbox" name="id" value=(j.id) aria-label={"Select job " (j.id)}; } }
                            td { a href={"/jobs/" (j.id)} { (short_id(&j.id)) } }
                            td { (j.kind) }
                            td.hide-sm { a href={"/jobs?queue=" (url_encode(&j.queue))} { (j.queue) } }
                            td { (state_badge(j.state)) }
                            td.num { (j.attempt) "/" (j.max_attempts) }
                            td.hide-sm { (time(j.created_at)) }
                            td.hide-sm { @if let Some(e) = j.errors.last() {
                                span title=(e.message) { (e.kind.as_str()) ": " (e.message.chars().take(80).collect::<String>()) }
                            } }
                        }
                    }
                }
            }
        }
    }
}

/// What a bulk action does, in words.
fn verb(action: &str) -> Option<(&'static str, &'static str)> {
    match action {
        "retry" => Some(("Retry", "retried")),
        "cancel" => Some(("Cancel", "cancelled")),
        "delete" => Some(("Delete", "deleted")),
        _ => None,
    }
}

/// `POST /jobs/bulk`: first a confirmation page, then (with `confirm=yes`) the action.
pub(super) async fn bulk(State(state): State<AppState>, RawForm(body): RawForm) -> PageResult {
    let mut ids = Vec::new();
    let mut action = String::new();
    let mut confirmed = false;
    for (k, v) in form_urlencoded::parse(&body) {
        match &*k {
            "id" => ids.push(Uuid::parse_str(&v).map_err(|_| {
                PageError::new(StatusCode::BAD_REQUEST, &format!("{v:?} is not a job id"))
            })?),
            "action" => action = v.into_owned(),
            "confirm" => confirmed = v == "yes",
            _ => {}
        }
    }
    let Some((title, done)) = verb(&action) else {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Choose retry, cancel or delete.",
        ));
    };
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Redirect::to(&format!(
            "/jobs?done={}",
            url_encode("No job was selected; nothing changed.")
        ))
        .into_response());
    }
    if ids.len() > MAX_BULK {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            &format!("At most {MAX_BULK} jobs at once; select fewer."),
        ));
    }
    let client = state.client();
    if !confirmed {
        let mut jobs = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(j) = state.store.get(*id).await? {
                jobs.push(j);
            }
        }
        let n = jobs.len();
        let body = html! {
            h1 { (title) " " (n) " job" @if n != 1 { "s" } "?" }
            p #confirm-summary data-count=(n) {
                "This " (action) "s " strong { (n) " job" @if n != 1 { "s" } } "."
                @if action == "retry" { " Only finished jobs are retried; completed ones run (with their effects) again." }
                @if action == "cancel" { " Running jobs stop at their next heartbeat and run their cleanups." }
                @if action == "delete" { " Only finished jobs are deleted; the others are left alone. This cannot be undone." }
            }
            form method="post" action="/jobs/bulk" {
                input type="hidden" name="action" value=(action);
                input type="hidden" name="confirm" value="yes";
                @for j in &jobs { input type="hidden" name="id" value=(j.id); }
                div.actions {
                    button.primary.danger[action == "delete"] type="submit" { (title) " " (n) " job" @if n != 1 { "s" } }
                    a href="/jobs" { "Go back" }
                }
            }
            (table(&jobs, false))
        };
        return Ok(layout("Confirm", Nav::Jobs, body).into_response());
    }
    let changed = match action.as_str() {
        "retry" => {
            let mut n = 0;
            for id in &ids {
                let before = state.store.get(*id).await?;
                if before.is_some_and(|j| j.state.is_final())
                    && client.retry(*id).await.map_err(client_err)?.is_some()
                {
                    n += 1;
                }
            }
            n
        }
        "cancel" => {
            let mut n = 0;
            for id in &ids {
                if let Some(j) = client.cancel(*id).await.map_err(client_err)? {
                    if !j.state.is_final() || j.state == JobState::Cancelled {
                        n += 1;
                    }
                }
            }
            n
        }
        _ => state.store.delete_final(ids.clone()).await?.len(),
    };
    tracing::info!(action = %action, selected = ids.len(), changed, "dashboard bulk action");
    let msg = format!("{changed} of {} selected jobs {done}.", ids.len());
    Ok(Redirect::to(&format!("/jobs?done={}", url_encode(&msg))).into_response())
}

/// A client error as a page.
pub(super) fn client_err(e: mend::ClientError) -> PageError {
    PageError::new(StatusCode::CONFLICT, &e.to_string())
}
