//! The Nodes page: every registered node with its state (alive, draining, dead), the leader,
//! the kinds, handler versions and queues it serves, its build, its attempts in flight and its heartbeat.

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::Utc;
use maud::html;

use super::html::{between, layout, time, Nav};
use super::PageResult;
use crate::routes::node_views;
use crate::AppState;

/// `GET /nodes`.
pub(super) async fn page(State(state): State<AppState>) -> PageResult {
    let now = Utc::now();
    let nodes = node_views(&state).await?;
    let me = state.worker.as_ref().map(|w| w.node_id().to_owned());
    let body = html! {
        h1 { "Nodes" }
        div.scroll {
            table #nodes data-live {
                thead { tr {
                    th { "Node" } th { "State" } th { "Kinds served" } th { "Versions served" } th { "Queues (concurrency)" }
                    th.num { "In flight" } th.hide-sm { "Build" } th.hide-sm { "Host / pid" }
                    th.hide-sm { "Started" } th { "Last heartbeat" }
                } }
                tbody {
                    @for n in &nodes {
                        tr data-node=(n.id) data-alive=(n.state != "dead") data-state=(n.state) {
                            td {
                                code { (n.id) }
                                @if me.as_deref() == Some(n.id.as_str()) { " " span.badge { "this node" } }
                                @if n.leader { " " span.badge.s-running #leader { "leader" } }
                            }
                            td { @match n.state {
                                "alive" => span.badge.s-completed { "alive" },
                                "draining" => span.badge.s-retryable { "draining" },
                                _ => span.badge.s-discarded { "dead" },
                            } }
                            td { (n.kinds.join(", ")) }
                            td data-versions=(serde_json::to_string(&n.versions).unwrap_or_default()) {
                                @if n.versions.is_empty() { span.muted { "—" } }
                                @for (i, (kind, versions)) in n.versions.iter().enumerate() {
                                    @if i > 0 { "; " }
                                    (kind) ": " @for (j, v) in versions.iter().enumerate() { @if j > 0 { ", " } code { (v) } }
                                }
                            }
                            td { @for (i, q) in n.queues.iter().enumerate() {
                                @if i > 0 { ", " }
                                a href={"/jobs?queue=" (super::html::url_encode(&q.name))} { (q.name) } " (" (q.concurrency) ")"
                            } }
                            td.num { (n.in_flight) }
                            td.hide-sm { (if n.build.is_empty() { "—" } else { n.build.as_str() }) }
                            td.hide-sm { (n.host) " / " (n.pid) }
                            td.hide-sm { (time(n.started_at)) }
                            td { (time(n.last_seen)) span.delta { (between(n.last_seen, now)) " ago" } }
                        }
                    }
                }
            }
        }
        @if nodes.is_empty() { p { "No node is registered: start one with " code { "mend serve" } "." } }
        p.muted { "A dead node's running jobs are rescued by the leader; remote workers that claim over HTTP are not nodes and do not appear here." }
    };
    Ok(layout("Nodes", Nav::Nodes, body).into_response())
}
