//! The audit log: who changed what, when and from where, for every change made through the
//! API or the CLI (enqueue excepted: a job is its own record). Rows are written by the server
//! and the CLI and pruned past their retention like finished jobs; nothing here decides what
//! is audited.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How long audit rows are kept by default: long enough to answer "who paused this queue
/// last quarter", short enough that the table stays small.
pub const DEFAULT_AUDIT_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(90 * 24 * 3600);

/// Most rows one read returns.
pub const MAX_AUDIT_PAGE: usize = 500;

/// Longest `detail` kept (serialised JSON); a longer one is replaced by a note saying so.
pub const MAX_DETAIL_BYTES: usize = 2048;

/// One change to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Who: a token's name, or `cli:<os user>`.
    pub actor: String,
    /// What, as `resource.verb` (`job.cancel`, `queue.pause`, `token.create`).
    pub action: String,
    /// What it was done to (a job id, a queue, a limit or token name); empty when none.
    pub target: String,
    /// A small JSON object with the particulars (at most [`MAX_DETAIL_BYTES`]).
    pub detail: serde_json::Value,
    /// From where: the client's address, or `local` for the CLI.
    pub remote: String,
}

impl NewAuditEntry {
    /// An entry stamped now, with `detail` cut to [`MAX_DETAIL_BYTES`].
    pub fn now(
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        detail: serde_json::Value,
        remote: impl Into<String>,
    ) -> NewAuditEntry {
        let detail = if detail.to_string().len() > MAX_DETAIL_BYTES {
            serde_json::json!({"truncated": true, "note": "the detail was too long to keep"})
        } else {
            detail
        };
        NewAuditEntry {
            at: Utc::now(),
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            detail,
            remote: remote.into(),
        }
    }
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Increasing id; the cursor of the next page.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who: a token's name, or `cli:<os user>`.
    pub actor: String,
    /// What (`job.cancel`, `queue.pause`, ...).
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// The particulars.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
    /// From where.
    pub remote: String,
}

/// Which audit rows to read: newest first, filtered, a page at a time.
#[derive(Debug, Clone, Default)]
pub struct AuditParams {
    /// Only rows with an id below this (the previous page's last id).
    pub before_id: Option<i64>,
    /// Only rows at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only rows before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only this actor's rows.
    pub actor: Option<String>,
    /// Only this action's rows.
    pub action: Option<String>,
    /// Most rows (capped at [`MAX_AUDIT_PAGE`]).
    pub limit: usize,
}

/// Delete audit rows older than `before`, at most `limit` of them.
#[derive(Debug, Clone)]
pub struct PruneAuditParams {
    /// Rows before this go.
    pub before: DateTime<Utc>,
    /// At most this many per call.
    pub limit: usize,
}

/// Who runs the CLI, for the audit log: `cli:` and the OS user (`$USER`, else `cli`).
pub fn cli_actor() -> String {
    match std::env::var("USER").or_else(|_| std::env::var("USERNAME")) {
        Ok(u) if !u.is_empty() => format!("cli:{u}"),
        _ => "cli".to_owned(),
    }
}

/// One pruning pass of the audit log, bounded in time like the job pruner's.
pub async fn prune_audit_once(
    store: &dyn crate::Store,
    now: DateTime<Utc>,
    retention: std::time::Duration,
) -> crate::store::Result<u64> {
    let before = crate::maintenance::pruner::cutoff(now, retention);
    crate::maintenance::pruner::in_batches(|limit| {
        store.audit_prune(PruneAuditParams { before, limit })
    })
    .await
}
