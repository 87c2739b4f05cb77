//! One job for people (`mend jobs show`): a `label: value` line per field, the errors of failed
//! attempts, and the timeline with its cleanups. Pure formatting of the server's JSON.

use serde_json::Value;

use super::output::{array_field, num_field, str_field, time_field};

/// A job for people: one `label: value` line per field, then the errors of failed attempts.
pub(super) fn describe_job(job: &Value) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("id", str_field(job, "id")),
        ("kind", str_field(job, "kind")),
        ("queue", str_field(job, "queue")),
        ("state", str_field(job, "state")),
        (
            "attempt",
            format!(
                "{} of {}",
                num_field(job, "attempt"),
                num_field(job, "max_attempts")
            ),
        ),
        ("priority", num_field(job, "priority")),
        ("run at", time_field(job, "run_at")),
        ("created at", time_field(job, "created_at")),
    ];
    let optional = [
        ("attempted at", "attempted_at"),
        ("finalized at", "finalized_at"),
        ("lease owner", "lease_owner"),
        ("lease until", "lease_expires_at"),
    ];
    let running = job.get("state").and_then(Value::as_str) == Some("running");
    for (label, key) in optional {
        // A finished job keeps its last lease owner in the row; it only means something while
        // the job runs.
        if key.starts_with("lease") && !running {
            continue;
        }
        if job.get(key).is_some_and(|v| !v.is_null()) {
            let v = if key.ends_with("_at") {
                time_field(job, key)
            } else {
                str_field(job, key)
            };
            lines.push((label, v));
        }
    }
    if job.get("cancel_requested").and_then(Value::as_bool) == Some(true) {
        lines.push(("cancel", "requested; the worker stops it".into()));
    }
    if let Some(ms) = job.get("timeout_ms").and_then(Value::as_i64) {
        lines.push(("timeout", format!("{ms} ms per attempt")));
    }
    if let Some(tags) = job
        .get("tags")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        let tags: Vec<String> = tags
            .iter()
            .map(|t| t.as_str().map_or_else(|| t.to_string(), str::to_owned))
            .collect();
        lines.push(("tags", tags.join(", ")));
    }
    if let Some(k) = job.get("unique_key").and_then(Value::as_str) {
        lines.push(("idempotency key", k.to_owned()));
    }
    lines.push((
        "args",
        job.get("args").map_or_else(String::new, Value::to_string),
    ));
    if let Some(r) = job.get("result").filter(|v| !v.is_null()) {
        lines.push(("result", r.to_string()));
    }
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (label, value) in &lines {
        out.push_str(&format!("{:<width$} {value}\n", format!("{label}:")));
    }
    let errors = array_field(job, "errors");
    if errors.is_empty() {
        out.push_str(&format!("{:<width$} none\n", "errors:"));
    } else {
        out.push_str("errors:\n");
        for e in &errors {
            out.push_str(&format!(
                "  attempt {} ({}, {}):",
                num_field(e, "attempt"),
                str_field(e, "kind"),
                time_field(e, "at")
            ));
            let message = str_field(e, "message");
            let mut msg_lines = message.lines();
            out.push_str(&format!(" {}\n", msg_lines.next().unwrap_or("")));
            for l in msg_lines {
                out.push_str(&format!("    {l}\n"));
            }
        }
    }
    let timeline = array_field(job, "timeline");
    if !timeline.is_empty() {
        out.push_str("timeline:\n");
        for e in &timeline {
            let mut line = format!("  {}  {}", time_field(e, "at"), str_field(e, "event"));
            if let Some(a) = e.get("attempt").and_then(Value::as_i64) {
                line.push_str(&format!(" (attempt {a})"));
            }
            if let Some(n) = e.get("node").and_then(Value::as_str) {
                line.push_str(&format!(" on {n}"));
            }
            if let Some(d) = e.get("detail").and_then(Value::as_str) {
                line.push_str(&format!(": {}", d.lines().next().unwrap_or("")));
            }
            out.push_str(&line);
            out.push('\n');
            for c in e
                .get("cleanups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push_str(&format!(
                    "      cleanup {} {} ({} ms)\n",
                    str_field(c, "name"),
                    c.get("outcome")
                        .and_then(|o| o.get("outcome"))
                        .and_then(Value::as_str)
                        .unwrap_or("?"),
                    num_field(c, "duration_ms")
                ));
            }
        }
    }
    out
}
