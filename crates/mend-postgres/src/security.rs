//! API tokens (`mend_api_tokens`), the audit log (`mend_audit`) and args key checks
//! (`mend_args_keys`): small tables written rarely, read by the server's auth cache, the
//! `/v1/audit` route and start-up. Their statements are built per call: none is on a hot path.

use chrono::{DateTime, Utc};
use mend::audit::{AuditEntry, AuditParams, NewAuditEntry, PruneAuditParams, MAX_AUDIT_PAGE};
use mend::auth::{ApiToken, CreateTokenParams, RevokeTokenParams, Role};
use mend::secrets::ArgsKeyCheck;
use mend::store::{Result, StoreError};

use crate::row::{bound, micros};
use crate::PgStore;

fn sql(store: &PgStore, text: &str) -> String {
    text.replace("{S}", &store.inner.sql.schema_q)
}

pub(crate) async fn token_create(store: &PgStore, p: CreateTokenParams) -> Result<bool> {
    let c = store.client().await?;
    let n = c
        .execute(
            &sql(store, "INSERT INTO {S}.mend_api_tokens AS t (name, role, hash, created_at, created_by, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, NULL)
                 ON CONFLICT (name) DO UPDATE SET role = excluded.role, hash = excluded.hash,
                     created_at = excluded.created_at, created_by = excluded.created_by, revoked_at = NULL
                 WHERE t.revoked_at IS NOT NULL"),
            &[&p.name, &p.role.as_str(), &p.hash, &micros(p.now), &p.created_by],
        )
        .await
        .map_err(store.pg())?;
    Ok(n == 1)
}

pub(crate) async fn token_list(store: &PgStore) -> Result<Vec<ApiToken>> {
    let rows = store
        .query(
            &sql(store, "SELECT name, role, hash, created_at, created_by, revoked_at FROM {S}.mend_api_tokens ORDER BY name"),
            &[],
        )
        .await?;
    let pg = store.pg();
    rows.iter()
        .map(|r| {
            let role: String = r.try_get(1).map_err(&pg)?;
            Ok(ApiToken {
                name: r.try_get(0).map_err(&pg)?,
                role: Role::parse(&role).map_err(StoreError::database)?,
                hash: r.try_get(2).map_err(&pg)?,
                created_at: r.try_get(3).map_err(&pg)?,
                created_by: r.try_get(4).map_err(&pg)?,
                revoked_at: r.try_get(5).map_err(&pg)?,
            })
        })
        .collect()
}

pub(crate) async fn token_revoke(store: &PgStore, p: RevokeTokenParams) -> Result<bool> {
    let c = store.client().await?;
    let n = c
        .execute(
            &sql(
                store,
                "UPDATE {S}.mend_api_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
            ),
            &[&p.name, &micros(p.now)],
        )
        .await
        .map_err(store.pg())?;
    Ok(n == 1)
}

pub(crate) async fn audit_add(store: &PgStore, entries: Vec<NewAuditEntry>) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let at: Vec<DateTime<Utc>> = entries.iter().map(|e| micros(e.at)).collect();
    let actors: Vec<&str> = entries.iter().map(|e| e.actor.as_str()).collect();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    let targets: Vec<&str> = entries.iter().map(|e| e.target.as_str()).collect();
    let details = entries
        .iter()
        .map(|e| crate::row::jsonb(&e.detail))
        .collect::<Result<Vec<_>>>()?;
    let remotes: Vec<&str> = entries.iter().map(|e| e.remote.as_str()).collect();
    let c = store.client().await?;
    c.execute(
        &sql(store, "INSERT INTO {S}.mend_audit (at, actor, action, target, detail, remote)
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[])"),
        &[&at, &actors, &actions, &targets, &details, &remotes],
    )
    .await
    .map_err(store.pg())?;
    Ok(())
}

pub(crate) async fn audit_list(store: &PgStore, p: AuditParams) -> Result<Vec<AuditEntry>> {
    // Only the conditions the filters set, so the planner can use `(actor, id)`, `(action,
    // id)` or the primary key; values are always parameters.
    let limit = bound(p.limit.min(MAX_AUDIT_PAGE));
    let mut conds: Vec<String> = Vec::new();
    let mut values: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
    if let Some(a) = &p.actor {
        values.push(a);
        conds.push(format!("actor = ${}", values.len()));
    }
    if let Some(a) = &p.action {
        values.push(a);
        conds.push(format!("action = ${}", values.len()));
    }
    if let Some(id) = &p.before_id {
        values.push(id);
        conds.push(format!("id < ${}", values.len()));
    }
    if let Some(t) = &p.since {
        values.push(t);
        conds.push(format!("at >= ${}", values.len()));
    }
    if let Some(t) = &p.until {
        values.push(t);
        conds.push(format!("at < ${}", values.len()));
    }
    values.push(&limit);
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    let rows = store
        .query(
            &sql(
                store,
                &format!(
                    "SELECT id, at, actor, action, target, detail, remote FROM {{S}}.mend_audit
                     {filter} ORDER BY id DESC LIMIT ${}",
                    values.len()
                ),
            ),
            &values,
        )
        .await?;
    let pg = store.pg();
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.try_get(0).map_err(&pg)?,
                at: r.try_get(1).map_err(&pg)?,
                actor: r.try_get(2).map_err(&pg)?,
                action: r.try_get(3).map_err(&pg)?,
                target: r.try_get(4).map_err(&pg)?,
                detail: r.try_get(5).map_err(&pg)?,
                remote: r.try_get(6).map_err(&pg)?,
            })
        })
        .collect()
}

pub(crate) async fn audit_prune(store: &PgStore, p: PruneAuditParams) -> Result<u64> {
    let c = store.client().await?;
    c.execute(
        &sql(
            store,
            "DELETE FROM {S}.mend_audit WHERE id = ANY(ARRAY(
                 SELECT id FROM {S}.mend_audit WHERE at < $1 ORDER BY at LIMIT $2))",
        ),
        &[&p.before, &bound(p.limit)],
    )
    .await
    .map_err(store.pg())
}

pub(crate) async fn args_keys(store: &PgStore) -> Result<Vec<ArgsKeyCheck>> {
    let rows = store
        .query(
            &sql(
                store,
                "SELECT kid, check_value FROM {S}.mend_args_keys ORDER BY kid",
            ),
            &[],
        )
        .await?;
    let pg = store.pg();
    rows.iter()
        .map(|r| {
            Ok(ArgsKeyCheck {
                kid: r.try_get(0).map_err(&pg)?,
                check: r.try_get(1).map_err(&pg)?,
            })
        })
        .collect()
}

pub(crate) async fn args_key_add(store: &PgStore, k: ArgsKeyCheck) -> Result<()> {
    let c = store.client().await?;
    c.execute(
        &sql(
            store,
            "INSERT INTO {S}.mend_args_keys (kid, check_value) VALUES ($1, $2) ON CONFLICT (kid) DO NOTHING",
        ),
        &[&k.kid, &k.check],
    )
    .await
    .map_err(store.pg())?;
    Ok(())
}
