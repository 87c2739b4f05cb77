//! The Overview page: queue depth and nodes at a glance.

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::Utc;
use maud::html;
use mend::store::CountStatesParams;

use super::html::{count, layout, Nav};
use super::jobs::COUNT_CAP;
use super::PageResult;
use crate::AppState;

/// `GET /`.
pub(super) async fn page(State(state): State<AppState>) -> PageResult {
    let now = Utc::now();
    let stale = chrono::Duration::from_std(mend::runtime::DEFAULT_NODE_STALE_AFTER)
        .unwrap_or(chrono::Duration::seconds(30));
    let counts = state
        .store
        .count_states(CountStatesParams {
            queue: None,
            kind: None,
            cap: COUNT_CAP,
        })
        .await?;
    let nodes = state.store.list_nodes().await?;
    let alive = nodes
        .iter()
        .filter(|n| !mend::node::is_dead(n, now - stale))
        .count();
    let body = html! {
        h1 { "Overview" }
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
            }
        }
    };
    Ok(layout("Overview", Nav::Overview, body).into_response())
}
