//! Cluster events for the dashboard (`mend_events`): a node joining (with a deploy marker when
//! its build, kinds or queues differ from the previous node on its host), a node leaving (shut
//! down, or declared dead) and a rescue (whose jobs, how many, how long after the last sign of
//! life), and a durable cleanup that failed all its tries. Written rarely and best-effort: a failed event write is logged, never fatal, and
//! never holds up what it describes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::stats::{event_kind, Event, EventsParams, Recorder};
use crate::store::{NodeInfo, Rescued, Store};

/// How far back a joining node looks for the previous node on its host.
const DEPLOY_LOOKBACK: chrono::Duration = chrono::Duration::days(31);

async fn write(store: &dyn Store, event: Event) {
    let kind = event.kind.clone();
    if let Err(e) = store.add_events(vec![event]).await {
        tracing::warn!(error = %e, kind, "recording a dashboard event failed");
    }
}

/// Records a durable cleanup of job `job` that failed all its `tries`, with its last error.
pub async fn cleanup_failed(
    store: &dyn Store,
    node: &str,
    job: &crate::JobRow,
    cleanup: &str,
    tries: u32,
    error: &str,
) {
    let error: String = error.chars().take(500).collect();
    write(
        store,
        Event {
            at: Utc::now(),
            kind: event_kind::CLEANUP_FAILED.to_owned(),
            node: node.to_owned(),
            detail: json!({
                "job": job.id,
                "queue": job.queue,
                "kind": job.kind,
                "attempt": job.attempt,
                "cleanup": cleanup,
                "tries": tries,
                "error": error,
            }),
        },
    )
    .await;
}

/// Records `node` joining. `deploy` in its detail is decided here: true when the previous
/// node that joined on the same host ran another build or served other kinds or queues
/// (false when there was none, with `first: true`).
pub async fn node_joined(store: &dyn Store, node: &NodeInfo) {
    let now = node.started_at;
    let previous = store
        .events(EventsParams {
            since: now - DEPLOY_LOOKBACK,
            until: now + chrono::Duration::seconds(1),
            kinds: vec![event_kind::NODE_JOINED.to_owned()],
            limit: crate::stats::MAX_EVENTS,
        })
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading earlier node events failed; the deploy marker may be missing");
            Vec::new()
        });
    let previous = previous.iter().find(|e| {
        e.node != node.id
            && e.detail.get("host").and_then(|h| h.as_str()) == Some(node.host.as_str())
    });
    let queues = serde_json::to_value(&node.queues).unwrap_or_default();
    let mut detail = json!({
        "host": node.host,
        "pid": node.pid,
        "build": node.build,
        "kinds": node.kinds,
        "queues": queues,
    });
    match previous {
        Some(p) => {
            let d = &p.detail;
            let changed: Vec<&str> = [
                ("build", d.get("build") != Some(&json!(node.build))),
                ("kinds", d.get("kinds") != Some(&json!(node.kinds))),
                ("queues", d.get("queues") != Some(&queues)),
            ]
            .into_iter()
            .filter_map(|(what, differs)| differs.then_some(what))
            .collect();
            detail["deploy"] = json!(!changed.is_empty());
            detail["changed"] = json!(changed);
            detail["previous_node"] = json!(p.node);
            detail["previous_build"] = d.get("build").cloned().unwrap_or_default();
        }
        None => {
            detail["deploy"] = json!(false);
            detail["first"] = json!(true);
        }
    }
    write(
        store,
        Event {
            at: now,
            kind: event_kind::NODE_JOINED.into(),
            node: node.id.clone(),
            detail,
        },
    )
    .await;
}

/// Records node `id` leaving, with `detail` (`reason`: `shutdown` or `dead`).
pub async fn node_left(store: &dyn Store, id: &str, detail: serde_json::Value) {
    write(
        store,
        Event {
            at: Utc::now(),
            kind: event_kind::NODE_LEFT.into(),
            node: id.to_owned(),
            detail,
        },
    )
    .await;
}

/// Who held a rescued job: the node named by the rescue in its timeline, else in its `lost`
/// error ("worker lost (node X ..."), else its lease owner.
fn owner_of(r: &Rescued) -> String {
    let from_timeline = r
        .job
        .timeline
        .iter()
        .rev()
        .find(|e| e.event == "rescued" || e.event == "quarantined")
        .and_then(|e| e.node.clone());
    let from_error = || {
        let e = r.job.errors.last()?;
        let rest = e.message.split_once("(node ")?.1;
        let end = rest.find([' ', ')', ';']).unwrap_or(rest.len());
        Some(rest[..end].to_owned())
    };
    from_timeline
        .or_else(from_error)
        .or_else(|| r.job.lease_owner.clone())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Records a rescue pass: the lost attempts in the history, a `rescue` event per node or
/// worker whose jobs were handed back, and a `node_left` event per dead node. `dead` are the
/// nodes judged dead, as they were registered (for their last heartbeat).
pub async fn rescued(
    store: &dyn Store,
    history: Option<&Recorder>,
    rescued: &[Rescued],
    dead: &[NodeInfo],
    now: DateTime<Utc>,
) {
    if let Some(h) = history {
        for r in rescued {
            h.record(
                &r.job.queue,
                &r.job.kind,
                now,
                crate::stats::Ended::Lost,
                None,
                None,
            );
        }
    }
    let mut by_owner: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in rescued {
        let e = by_owner.entry(owner_of(r)).or_default();
        e.0 += 1;
        if r.quarantined {
            e.1 += 1;
        }
    }
    let mut events = Vec::new();
    for (owner, (jobs, quarantined)) in by_owner {
        let node = dead.iter().find(|n| n.id == owner);
        let mut detail = json!({
            "jobs": jobs,
            "quarantined": quarantined,
            // A node judged dead, or a lease that ran out (a vanished remote worker, a hung
            // process).
            "cause": if node.is_some() { "node_dead" } else { "lease_expired" },
        });
        if let Some(n) = node {
            detail["last_seen"] = json!(n.last_seen);
            detail["since_heartbeat_ms"] = json!((now - n.last_seen).num_milliseconds().max(0));
        }
        events.push(Event {
            at: now,
            kind: event_kind::RESCUE.into(),
            node: owner,
            detail,
        });
    }
    for n in dead {
        events.push(Event {
            at: now,
            kind: event_kind::NODE_LEFT.into(),
            node: n.id.clone(),
            detail: json!({
                "reason": "dead",
                "host": n.host,
                "last_seen": n.last_seen,
                "since_heartbeat_ms": (now - n.last_seen).num_milliseconds().max(0),
            }),
        });
    }
    if events.is_empty() {
        return;
    }
    if let Err(e) = store.add_events(events).await {
        tracing::warn!(error = %e, "recording rescue events failed");
    }
}
