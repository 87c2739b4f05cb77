//! The Nodes page: every registered node, alive or dead, with the kinds it serves.

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::Utc;
use maud::html;

use super::html::{between, layout, time, Nav};
use super::PageResult;
use crate::AppState;

/// `GET /nodes`.
pub(super) async fn page(State(state): State<AppState>) -> PageResult {
    let now = Utc::now();
    let stale = chrono::Duration::from_std(mend::runtime::DEFAULT_NODE_STALE_AFTER)
        .unwrap_or(chrono::Duration::seconds(30));
    let nodes = state.store.list_nodes().await?;
    let me = state.worker.as_ref().map(|w| w.node_id().to_owned());
    let body = html! {
        h1 { "Nodes" }
        div.scroll {
            table #nodes data-live {
                thead { tr { th { "Node" } th { "State" } th { "Host" } th.num { "Pid" } th { "Kinds" } th { "Started" } th { "Last heartbeat" } } }
                tbody {
                    @for n in &nodes {
                        @let alive = !mend::node::is_dead(n, now - stale);
                        tr data-node=(n.id) data-alive=(alive) {
                            td { code { (n.id) } @if me.as_deref() == Some(n.id.as_str()) { " " span.badge { "this node" } } }
                            td { @if alive { span.badge.s-completed { "alive" } } @else { span.badge.s-discarded { "dead" } } }
                            td { (n.host) } td.num { (n.pid) }
                            td { (n.kinds.join(", ")) }
                            td { (time(n.started_at)) }
                            td { (time(n.last_seen)) span.delta { (between(n.last_seen, now)) " ago" } }
                        }
                    }
                }
            }
        }
        @if nodes.is_empty() { p { "No node is registered: start one with " code { "mend serve" } "." } }
    };
    Ok(layout("Nodes", Nav::Nodes, body).into_response())
}
