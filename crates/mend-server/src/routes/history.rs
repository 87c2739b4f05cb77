//! The dashboard's data: per-minute history merged into buckets (`/v1/stats`), cluster events
//! (`/v1/events`) and the nodes with their facts (`/v1/nodes`). Reads only: the history is
//! written off the hot path by each node's flusher (see `mend::stats`), and these routes read
//! the aggregate and event tables by time, never the jobs table.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use mend::stats::{EventsParams, StatsBy, StatsParams};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Problem};
use crate::AppState;

/// Events returned when `limit` is not given.
const DEFAULT_EVENTS: usize = 100;

/// A 400 about one query parameter.
fn bad(field: &str, detail: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "invalid-parameter",
        detail: detail.into(),
        field: Some(field.to_owned()),
    }
}

fn time(field: &str, v: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    bad(
                        field,
                        format!("{field} must be an RFC 3339 time such as 2026-01-02T15:04:05Z, not {:?}", s.chars().take(60).collect::<String>()),
                    )
                })
        })
        .transpose()
}

fn name(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v.filter(|s| !s.is_empty()) {
        Some(n) if !super::jobs::valid_name(&n) => Err(bad(
            field,
            format!("{field} must be 1–128 letters, digits, _ - . : /"),
        )),
        other => Ok(other),
    }
}

/// Query of `GET /v1/stats`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct StatsQuery {
    /// Start (RFC 3339; default: an hour before `until`), rounded down to a minute.
    #[param(value_type = Option<DateTime<Utc>>)]
    since: Option<String>,
    /// End, exclusive (RFC 3339; default: now), rounded up to a minute.
    #[param(value_type = Option<DateTime<Utc>>)]
    until: Option<String>,
    /// Bucket width in seconds, a multiple of 60 (default 60), or `window` for one bucket
    /// per group over the whole window.
    #[param(pattern = r"^(?:|window|all|[0-9]+)$")]
    step: Option<String>,
    /// `total` (default), `queue` or `kind`.
    #[param(pattern = r"^(?:|total|queue|kind)$")]
    by: Option<String>,
    /// Only this queue.
    #[param(pattern = r"^(?:|[A-Za-z0-9_.:/-]{1,128})$")]
    queue: Option<String>,
    /// Only this kind.
    #[param(pattern = r"^(?:|[A-Za-z0-9_.:/-]{1,128})$")]
    kind: Option<String>,
}

/// Completed / retried / failed / cancelled / lost attempts and wait and run-time
/// percentiles, per bucket of time and per group, merged on the server from the per-minute
/// aggregates every node writes. Buckets without activity are left out.
#[utoipa::path(get, path = "/v1/stats", tag = "history", params(StatsQuery),
    responses((status = 200, body = mend::stats::StatsAnswer),
              (status = 400, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn stats(
    State(state): State<AppState>,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<mend::stats::StatsAnswer>, ApiError> {
    let Query(q) = q.map_err(|e| bad("query", e.body_text()))?;
    let until = time("until", q.until.as_deref())?.unwrap_or_else(Utc::now);
    let since =
        time("since", q.since.as_deref())?.unwrap_or_else(|| until - chrono::Duration::hours(1));
    let by = match q.by.as_deref() {
        None | Some("") | Some("total") => StatsBy::Total,
        Some("queue") => StatsBy::Queue,
        Some("kind") => StatsBy::Kind,
        Some(other) => {
            return Err(bad(
                "by",
                format!(
                    "by must be total, queue or kind, not {:?}",
                    other.chars().take(40).collect::<String>()
                ),
            ))
        }
    };
    let whole = |since: DateTime<Utc>, until: DateTime<Utc>| {
        // The window as `checked` will align it.
        let p = StatsParams {
            since,
            until,
            step: Duration::from_secs(60),
            by,
            queue: None,
            kind: None,
        }
        .checked();
        p.map(|p| {
            (p.until - p.since)
                .to_std()
                .unwrap_or(Duration::from_secs(60))
        })
        .unwrap_or(Duration::from_secs(60))
    };
    let step = match q.step.as_deref() {
        None | Some("") => Duration::from_secs(60),
        Some("window") | Some("all") => whole(since, until),
        Some(s) => Duration::from_secs(s.parse::<u64>().map_err(|_| {
            bad(
                "step",
                "step must be a number of seconds (a multiple of 60) or `window`",
            )
        })?),
    };
    let params = StatsParams {
        since,
        until,
        step,
        by,
        queue: name("queue", q.queue)?,
        kind: name("kind", q.kind)?,
    }
    .checked()
    .map_err(|e| bad(e.field, e.message))?;
    Ok(Json(state.store.stats(params).await?))
}

/// Query of `GET /v1/events` (`kind` may be repeated).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, reason = "documents the query; parsed from the raw pairs")]
pub(super) struct EventsQuery {
    /// Start (RFC 3339; default: a day before `until`).
    #[param(value_type = Option<DateTime<Utc>>)]
    since: Option<String>,
    /// End, exclusive (RFC 3339; default: now).
    #[param(value_type = Option<DateTime<Utc>>)]
    until: Option<String>,
    /// Only these kinds (`rescue`, `node_joined`, `node_left`); repeat for several.
    #[param(value_type = Option<Vec<super::contract::EventKinds>>)]
    kind: Option<Vec<String>>,
    /// At most this many, newest first (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `{"events": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct EventsView {
    /// Newest first.
    events: Vec<mend::stats::Event>,
}

/// Cluster events, newest first: rescues (which node or worker, how many jobs, how long
/// after its last heartbeat), nodes joining (with `deploy: true` when the build, kinds or
/// queues differ from the previous node on the host) and leaving.
#[utoipa::path(get, path = "/v1/events", tag = "history", params(EventsQuery),
    responses((status = 200, body = EventsView),
              (status = 400, body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn events(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<EventsView>, ApiError> {
    let Query(pairs) = q.map_err(|e| bad("query", e.body_text()))?;
    let (mut since, mut until, mut limit, mut kinds) = (None, None, None, Vec::new());
    for (k, v) in pairs {
        match k.as_str() {
            "since" => since = time("since", Some(&v))?,
            "until" => until = time("until", Some(&v))?,
            "limit" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| bad("limit", "limit must be a number"))?;
                if n == 0 || n > mend::stats::MAX_EVENTS {
                    return Err(bad(
                        "limit",
                        format!("limit must be between 1 and {}", mend::stats::MAX_EVENTS),
                    ));
                }
                limit = Some(n);
            }
            "kind" => {
                for k in v.split(',').filter(|k| !k.is_empty()) {
                    if name("kind", Some(k.to_owned()))?.is_some() {
                        kinds.push(k.to_owned());
                    }
                }
            }
            other => {
                return Err(bad(
                    "query",
                    format!(
                        "unknown parameter {:?}; use since, until, kind, limit",
                        other.chars().take(40).collect::<String>()
                    ),
                ))
            }
        }
    }
    let until = until.unwrap_or_else(Utc::now);
    let since = since.unwrap_or_else(|| until - chrono::Duration::days(1));
    if since >= until {
        return Err(bad("since", "since must be before until"));
    }
    let events = state
        .store
        .events(EventsParams {
            since,
            until,
            kinds,
            limit: limit.unwrap_or(DEFAULT_EVENTS),
        })
        .await?;
    Ok(Json(EventsView { events }))
}

/// One node as `/v1/nodes` (and the dashboard) shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NodeView {
    pub(crate) id: String,
    pub(crate) host: String,
    pub(crate) pid: u32,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) last_seen: DateTime<Utc>,
    /// Kinds it has handlers for.
    pub(crate) kinds: Vec<String>,
    /// The named handler versions it serves, per kind (gray release; kinds with only an
    /// unversioned handler are left out).
    pub(crate) versions: std::collections::BTreeMap<String, Vec<String>>,
    /// Queues it works, with its concurrency in each.
    pub(crate) queues: Vec<mend::store::NodeQueue>,
    /// The mend version it runs (empty: an older mend).
    pub(crate) build: String,
    /// Attempts running at its last heartbeat.
    pub(crate) in_flight: u32,
    /// `alive`, `draining` (shutdown begun) or `dead` (not seen within the rescuer's liveness
    /// window, or its process is gone; its jobs are rescued).
    pub(crate) state: &'static str,
    /// Its process runs the maintenance: on PostgreSQL it holds the leader lock; SQLite has no
    /// election (every live node rescues, fenced), so every live node is marked.
    pub(crate) leader: bool,
}

/// `{"nodes": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct NodesView {
    nodes: Vec<NodeView>,
}

/// How long without a heartbeat makes a node dead, as this server's rescuer sees it.
pub(crate) fn stale_after(state: &AppState) -> Duration {
    state
        .worker
        .as_ref()
        .map_or(mend::runtime::DEFAULT_NODE_STALE_AFTER, |w| {
            w.node_stale_after()
        })
}

/// Every registered node with its state and facts.
pub(crate) async fn node_views(state: &AppState) -> Result<Vec<NodeView>, mend::StoreError> {
    let now = Utc::now();
    let stale_before = now
        - chrono::Duration::from_std(stale_after(state)).unwrap_or(chrono::Duration::seconds(30));
    Ok(state
        .store
        .list_nodes()
        .await?
        .into_iter()
        .map(|n| {
            let state = if mend::node::is_dead(&n, stale_before) {
                "dead"
            } else if n.draining {
                "draining"
            } else {
                "alive"
            };
            NodeView {
                leader: n.leader && state != "dead",
                id: n.id,
                host: n.host,
                pid: n.pid,
                started_at: n.started_at,
                last_seen: n.last_seen,
                kinds: n.kinds,
                versions: n.versions,
                queues: n.queues,
                build: n.build,
                in_flight: n.in_flight,
                state,
            }
        })
        .collect())
}

/// Every registered node with its state, leadership, kinds, queues, build and attempts in
/// flight.
#[utoipa::path(get, path = "/v1/nodes", tag = "history",
    responses((status = 200, body = NodesView)))]
pub(crate) async fn nodes(State(state): State<AppState>) -> Result<Json<NodesView>, ApiError> {
    Ok(Json(NodesView {
        nodes: node_views(&state).await?,
    }))
}
