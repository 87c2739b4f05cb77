//! API tokens (`mend_api_tokens`), the audit log (`mend_audit`) and args key checks
//! (`mend_args_keys`): small tables written rarely, read by the server's auth cache, the
//! `/v1/audit` route and start-up.

use chrono::{DateTime, Utc};
use mend::audit::{AuditEntry, AuditParams, NewAuditEntry, PruneAuditParams, MAX_AUDIT_PAGE};
use mend::auth::{ApiToken, CreateTokenParams, RevokeTokenParams, Role};
use mend::secrets::ArgsKeyCheck;
use mend::store::{Result, StoreError};
use rusqlite::{params, Connection};

use crate::error::map_err;
use crate::row::micros;

const TOKEN_CREATE: &str =
    "INSERT INTO mend_api_tokens (name, role, hash, created_at, created_by, revoked_at)
     VALUES (?1, ?2, ?3, ?4, ?5, NULL)
     ON CONFLICT (name) DO UPDATE SET role = excluded.role, hash = excluded.hash,
         created_at = excluded.created_at, created_by = excluded.created_by, revoked_at = NULL
     WHERE mend_api_tokens.revoked_at IS NOT NULL";
const TOKEN_LIST: &str =
    "SELECT name, role, hash, created_at, created_by, revoked_at FROM mend_api_tokens ORDER BY name";
const TOKEN_REVOKE: &str =
    "UPDATE mend_api_tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL";
const AUDIT_ADD: &str = "INSERT INTO mend_audit (at, actor, action, target, detail, remote)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const AUDIT_PRUNE: &str = "DELETE FROM mend_audit WHERE id IN (
     SELECT id FROM mend_audit WHERE at < ?1 ORDER BY at LIMIT ?2)";
const KEYS_LIST: &str = "SELECT kid, check_value FROM mend_args_keys ORDER BY kid";
const KEY_ADD: &str =
    "INSERT INTO mend_args_keys (kid, check_value, created_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (kid) DO NOTHING";

fn time(v: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(v).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn bound(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn token_create(conn: &Connection, path: &str, p: CreateTokenParams) -> Result<bool> {
    let n = conn
        .prepare_cached(TOKEN_CREATE)
        .and_then(|mut s| {
            s.execute(params![
                p.name,
                p.role.as_str(),
                p.hash,
                micros(p.now),
                p.created_by
            ])
        })
        .map_err(|e| map_err(path, e))?;
    Ok(n == 1)
}

pub(crate) fn token_list(conn: &Connection, path: &str) -> Result<Vec<ApiToken>> {
    let mut stmt = conn
        .prepare_cached(TOKEN_LIST)
        .map_err(|e| map_err(path, e))?;
    let mut rows = stmt.query([]).map_err(|e| map_err(path, e))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(|e| map_err(path, e))? {
        let get_s = |i: usize| r.get::<_, String>(i).map_err(|e| map_err(path, e));
        let role = get_s(1)?;
        out.push(ApiToken {
            name: get_s(0)?,
            role: Role::parse(&role).map_err(StoreError::database)?,
            hash: get_s(2)?,
            created_at: time(r.get(3).map_err(|e| map_err(path, e))?),
            created_by: get_s(4)?,
            revoked_at: r
                .get::<_, Option<i64>>(5)
                .map_err(|e| map_err(path, e))?
                .map(time),
        });
    }
    Ok(out)
}

pub(crate) fn token_revoke(conn: &Connection, path: &str, p: RevokeTokenParams) -> Result<bool> {
    let n = conn
        .prepare_cached(TOKEN_REVOKE)
        .and_then(|mut s| s.execute(params![p.name, micros(p.now)]))
        .map_err(|e| map_err(path, e))?;
    Ok(n == 1)
}

pub(crate) fn audit_add(conn: &Connection, path: &str, entries: Vec<NewAuditEntry>) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(AUDIT_ADD)
        .map_err(|e| map_err(path, e))?;
    for e in entries {
        let detail = crate::row::to_json(&e.detail)?;
        stmt.execute(params![
            micros(e.at),
            e.actor,
            e.action,
            e.target,
            detail,
            e.remote
        ])
        .map_err(|err| map_err(path, err))?;
    }
    Ok(())
}

/// The audit read for the filters `p` sets, with only those conditions, so SQLite picks the
/// index that serves them: `(actor, id)` or `(action, id)` for a filter by actor or action,
/// the primary key (newest first) otherwise. Values are always parameters.
fn audit_sql(p: &AuditParams) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut conds = Vec::new();
    let mut values = Vec::new();
    let mut add = |cond: &str, v: Value| {
        values.push(v);
        conds.push(cond.replace('?', &format!("?{}", values.len())));
    };
    if let Some(a) = &p.actor {
        add("actor = ?", Value::Text(a.clone()));
    }
    if let Some(a) = &p.action {
        add("action = ?", Value::Text(a.clone()));
    }
    if let Some(id) = p.before_id {
        add("id < ?", Value::Integer(id));
    }
    if let Some(t) = p.since {
        add("at >= ?", Value::Integer(micros(t)));
    }
    if let Some(t) = p.until {
        add("at < ?", Value::Integer(micros(t)));
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    values.push(Value::Integer(bound(p.limit.min(MAX_AUDIT_PAGE))));
    let sql = format!(
        "SELECT id, at, actor, action, target, detail, remote FROM mend_audit {filter} ORDER BY id DESC LIMIT ?{}",
        values.len()
    );
    (sql, values)
}

pub(crate) fn audit_list(conn: &Connection, path: &str, p: AuditParams) -> Result<Vec<AuditEntry>> {
    let (sql, values) = audit_sql(&p);
    let mut stmt = conn.prepare_cached(&sql).map_err(|e| map_err(path, e))?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(values))
        .map_err(|e| map_err(path, e))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(|e| map_err(path, e))? {
        let get_s = |i: usize| r.get::<_, String>(i).map_err(|e| map_err(path, e));
        let detail = get_s(5)?;
        out.push(AuditEntry {
            id: r.get(0).map_err(|e| map_err(path, e))?,
            at: time(r.get(1).map_err(|e| map_err(path, e))?),
            actor: get_s(2)?,
            action: get_s(3)?,
            target: get_s(4)?,
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
            remote: get_s(6)?,
        });
    }
    Ok(out)
}

pub(crate) fn audit_prune(conn: &Connection, path: &str, p: PruneAuditParams) -> Result<u64> {
    let n = conn
        .prepare_cached(AUDIT_PRUNE)
        .and_then(|mut s| s.execute(params![micros(p.before), bound(p.limit)]))
        .map_err(|e| map_err(path, e))?;
    Ok(n as u64)
}

pub(crate) fn args_keys(conn: &Connection, path: &str) -> Result<Vec<ArgsKeyCheck>> {
    let mut stmt = conn
        .prepare_cached(KEYS_LIST)
        .map_err(|e| map_err(path, e))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(ArgsKeyCheck {
                kid: r.get(0)?,
                check: r.get(1)?,
            })
        })
        .map_err(|e| map_err(path, e))?;
    rows.collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| map_err(path, e))
}

pub(crate) fn args_key_add(conn: &Connection, path: &str, k: ArgsKeyCheck) -> Result<()> {
    conn.prepare_cached(KEY_ADD)
        .and_then(|mut s| s.execute(params![k.kid, k.check, micros(Utc::now())]))
        .map_err(|e| map_err(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(p: AuditParams) -> String {
        let conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&conn, ":memory:").unwrap();
        let (sql, values) = audit_sql(&p);
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), |r| {
                r.get::<_, String>(3)
            })
            .unwrap();
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .unwrap()
            .join("; ")
    }

    #[test]
    fn audit_reads_are_index_backed() {
        let page = |f: fn(&mut AuditParams)| {
            let mut p = AuditParams {
                limit: 100,
                before_id: Some(1000),
                ..Default::default()
            };
            f(&mut p);
            plan(p)
        };
        let newest = page(|_| {});
        assert!(
            newest.contains("INTEGER PRIMARY KEY") && !newest.contains("TEMP B-TREE"),
            "{newest}"
        );
        let by_actor = page(|p| p.actor = Some("ops".into()));
        assert!(
            by_actor.contains("mend_audit_actor") && !by_actor.contains("TEMP B-TREE"),
            "{by_actor}"
        );
        let by_action = page(|p| p.action = Some("job.cancel".into()));
        assert!(
            by_action.contains("mend_audit_action") && !by_action.contains("TEMP B-TREE"),
            "{by_action}"
        );
    }
}
