//! Tokens with roles, the audit log and masked secrets, through the whole router on a real
//! store (SQLite, and PostgreSQL when `MEND_TEST_POSTGRES_URL` is set): every route of the
//! server's own OpenAPI document with every role, an audit row for every change, secrets
//! masked for everyone but admin, and bad tokens refused with nothing stored changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::Utc;
use mend::auth::{CreateTokenParams, RevokeTokenParams, Role};
use mend::JobState;
use serde_json::{json, Value};

use common::{start, start_postgres, Server};

/// Makes one token per role (named after it) and returns them by role.
async fn tokens(s: &Server) -> BTreeMap<Role, String> {
    let mut out = BTreeMap::new();
    for role in Role::ALL {
        let token = mend::auth::generate_token();
        let made = s
            .state
            .store
            .token_create(CreateTokenParams {
                name: role.as_str().to_owned(),
                role,
                hash: mend::auth::hash_token(&token),
                now: Utc::now(),
                created_by: "test".into(),
            })
            .await
            .unwrap();
        assert!(made);
        out.insert(role, token);
    }
    s.state.tokens.invalidate().await;
    out
}

async fn as_role(
    s: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> mend_test::http::Resp {
    let auth = format!("Bearer {token}");
    s.call_with(method, path, body, &[("authorization", &auth)])
        .await
}

/// Walks every operation of `/openapi.json` with every role: 403 exactly when the role table
/// says the role may not call it, and 401 without a token.
async fn every_route_with_every_role(s: Server) {
    let tokens = tokens(&s).await;
    let spec = as_role(&s, &tokens[&Role::Viewer], "GET", "/openapi.json", None).await;
    assert_eq!(spec.status, 200, "{}", spec.body);
    let mut walked = 0;
    // What the brief asks, written out, so a wrong table fails here too.
    let expected: BTreeMap<(&str, &str), &[Role]> = BTreeMap::from([
        (("POST", "/v1/jobs"), &[Role::Admin, Role::Producer][..]),
        (
            ("POST", "/v1/jobs/{id}/cancel"),
            &[Role::Admin, Role::Operator][..],
        ),
        (
            ("POST", "/v1/queues/{name}/pause"),
            &[Role::Admin, Role::Operator][..],
        ),
        (
            ("POST", "/v1/workers/claim"),
            &[Role::Admin, Role::Worker][..],
        ),
        (
            ("GET", "/v1/jobs"),
            &[Role::Admin, Role::Operator, Role::Viewer][..],
        ),
        (
            ("GET", "/v1/audit"),
            &[Role::Admin, Role::Operator, Role::Viewer][..],
        ),
    ]);
    for (path, ops) in spec.body["paths"].as_object().unwrap() {
        for (method, _) in ops.as_object().unwrap() {
            let method = method.to_uppercase();
            let listed = mend_server::roles::ROUTES
                .iter()
                .find(|r| r.method == method && r.path == path)
                .unwrap_or_else(|| panic!("{method} {path} is missing from the role table"));
            let mut concrete = path
                .replace("{id}", &uuid::Uuid::now_v7().to_string())
                .replace("{name}", "some-queue")
                .replace("{seq}", "1");
            if concrete == "/debug/pprof/profile" {
                concrete.push_str("?seconds=0");
            }
            if !listed.is_open() {
                let anon = s.call(&method, &concrete, Some(json!({}))).await;
                assert_eq!(
                    anon.status, 401,
                    "{method} {path} without a token: {}",
                    anon.body
                );
            }
            for role in Role::ALL {
                let resp = as_role(&s, &tokens[&role], &method, &concrete, Some(json!({}))).await;
                let allowed = listed.allows(role);
                if let Some(want) = expected.get(&(method.as_str(), path.as_str())) {
                    assert_eq!(allowed, want.contains(&role), "{method} {path} for {role}");
                }
                if allowed {
                    assert_ne!(
                        resp.status, 403,
                        "{method} {path} refused {role}: {}",
                        resp.body
                    );
                    assert_ne!(
                        resp.status, 401,
                        "{method} {path} refused {role}: {}",
                        resp.body
                    );
                } else {
                    let detail = resp.problem(403);
                    assert!(
                        detail.contains("needs the role")
                            && detail.contains(&format!("has the role {role}")),
                        "{method} {path} for {role}: {detail}"
                    );
                }
                walked += 1;
            }
        }
    }
    assert!(
        walked >= 39 * Role::ALL.len(),
        "walked {walked} route × role pairs"
    );
}

#[tokio::test]
async fn every_route_with_every_role_sqlite() {
    every_route_with_every_role(start(None, None).await).await;
}

#[tokio::test]
async fn every_route_with_every_role_postgres() {
    let Some(s) = start_postgres("every_route_with_every_role_postgres").await else {
        return;
    };
    every_route_with_every_role(s).await;
}

/// Every kind of change made through the API is in the audit log, with who, what, target
/// and when; a refused or failed change is not; a viewer reads it page by page.
async fn audit_rows_for_every_change(s: Server) {
    let t = tokens(&s).await;
    let op = &t[&Role::Operator];
    let before = Utc::now();
    let job = as_role(
        &s,
        &t[&Role::Producer],
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "noop", "queue": "audited"})),
    )
    .await;
    assert_eq!(job.status, 201, "{}", job.body);
    let id = job.body["id"].as_str().unwrap().to_owned();
    let changes: Vec<(&str, String, Option<Value>, &str)> = vec![
        ("POST", format!("/v1/jobs/{id}/cancel"), None, "job.cancel"),
        ("POST", format!("/v1/jobs/{id}/retry"), None, "job.retry"),
        (
            "POST",
            "/v1/queues/audited/pause".into(),
            None,
            "queue.pause",
        ),
        (
            "POST",
            "/v1/queues/audited/resume".into(),
            None,
            "queue.resume",
        ),
        (
            "PUT",
            "/v1/limits/one".into(),
            Some(json!({"queue": "audited", "concurrency": 1})),
            "limit.set",
        ),
        ("DELETE", "/v1/limits/one".into(), None, "limit.delete"),
        (
            "POST",
            "/v1/cron".into(),
            Some(
                json!({"name": "nightly", "schedule": "0 30 2 * * *", "kind": "noop", "args": {"password": "p"}}),
            ),
            "cron.create",
        ),
        (
            "PUT",
            "/v1/cron/nightly".into(),
            Some(json!({"name": "nightly", "schedule": "0 0 3 * * *", "kind": "noop"})),
            "cron.replace",
        ),
        ("POST", "/v1/cron/nightly/pause".into(), None, "cron.pause"),
        (
            "POST",
            "/v1/cron/nightly/resume".into(),
            None,
            "cron.resume",
        ),
        ("DELETE", "/v1/cron/nightly".into(), None, "cron.delete"),
    ];
    for (method, path, body, _) in &changes {
        let r = as_role(&s, op, method, path, body.clone()).await;
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
    }
    // Refused (wrong role) and failed (no such job) changes leave no row.
    let refused = as_role(
        &s,
        &t[&Role::Viewer],
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!(refused.status, 403);
    let missing = as_role(
        &s,
        op,
        "POST",
        &format!("/v1/jobs/{}/cancel", uuid::Uuid::now_v7()),
        None,
    )
    .await;
    assert_eq!(missing.status, 404);

    let mut rows = Vec::new();
    let mut cursor: Option<i64> = None;
    loop {
        let path = match cursor {
            Some(c) => format!("/v1/audit?limit=4&before={c}"),
            None => "/v1/audit?limit=4".into(),
        };
        let page = as_role(&s, &t[&Role::Viewer], "GET", &path, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        rows.extend(page.body["entries"].as_array().unwrap().clone());
        match page.body["next_cursor"].as_i64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let actions: Vec<&str> = rows.iter().map(|r| r["action"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = changes.iter().map(|c| c.3).collect();
    want.reverse();
    assert_eq!(
        actions, want,
        "newest first, one row per change, none for refused or failed ones"
    );
    for r in &rows {
        assert_eq!(r["actor"], "operator", "{r}");
        assert_eq!(
            r["detail"]["status"].as_u64().map(|s| s < 300),
            Some(true),
            "{r}"
        );
        let at: chrono::DateTime<Utc> = serde_json::from_value(r["at"].clone()).unwrap();
        assert!(
            at >= before - chrono::Duration::seconds(1) && at <= Utc::now(),
            "{r}"
        );
    }
    assert_eq!(rows.last().unwrap()["target"], id.as_str());
    let created = rows.iter().find(|r| r["action"] == "cron.create").unwrap();
    assert_eq!(
        created["target"], "nightly",
        "a create names its target from the body"
    );
    assert_eq!(
        created["detail"]["body"]["args"]["password"],
        mend::secrets::MASK,
        "secrets in a change's body are never stored"
    );
    // Filters.
    let only = as_role(
        &s,
        &t[&Role::Admin],
        "GET",
        "/v1/audit?action=queue.pause&actor=operator",
        None,
    )
    .await;
    assert_eq!(
        only.body["entries"].as_array().unwrap().len(),
        1,
        "{}",
        only.body
    );
    assert_eq!(only.body["entries"][0]["target"], "audited");
    let none = as_role(&s, &t[&Role::Admin], "GET", "/v1/audit?actor=nobody", None).await;
    assert_eq!(none.body["entries"].as_array().unwrap().len(), 0);
    let bad = as_role(
        &s,
        &t[&Role::Admin],
        "GET",
        "/v1/audit?since=yesterday",
        None,
    )
    .await;
    assert!(bad.problem(400).contains("RFC 3339"));
    // Producers and workers do not read the audit log.
    for role in [Role::Producer, Role::Worker] {
        assert_eq!(
            as_role(&s, &t[&role], "GET", "/v1/audit", None)
                .await
                .status,
            403
        );
    }
}

#[tokio::test]
async fn audit_rows_for_every_change_sqlite() {
    audit_rows_for_every_change(start(None, None).await).await;
}

#[tokio::test]
async fn audit_rows_for_every_change_postgres() {
    let Some(s) = start_postgres("audit_rows_for_every_change_postgres").await else {
        return;
    };
    audit_rows_for_every_change(s).await;
}

/// A viewer, an operator and a producer see secrets masked; an admin and the worker running
/// the job see them in clear.
async fn secrets_masked_unless_admin(s: Server) {
    let t = tokens(&s).await;
    let args = json!({"user": "ann", "password": "hunter2", "nested": {"api_key": "k-123"}});
    let made = as_role(
        &s,
        &t[&Role::Producer],
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "noop", "args": args, "queue": "masked"})),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let id = made.body["id"].as_str().unwrap().to_owned();
    for role in [Role::Viewer, Role::Operator, Role::Producer] {
        let got = as_role(&s, &t[&role], "GET", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(got.status, 200, "{}", got.body);
        let text = got.body.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("k-123"),
            "{role}: {text}"
        );
        assert_eq!(got.body["args"]["user"], "ann");
        assert_eq!(got.body["args"]["password"], mend::secrets::MASK);
    }
    let list = as_role(&s, &t[&Role::Viewer], "GET", "/v1/jobs?queue=masked", None).await;
    assert!(!list.body.to_string().contains("hunter2"), "{}", list.body);
    assert_eq!(
        list.body["jobs"][0]["args"]["nested"]["api_key"],
        mend::secrets::MASK
    );
    let admin = as_role(&s, &t[&Role::Admin], "GET", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(admin.body["args"], args);
    let claimed = as_role(
        &s,
        &t[&Role::Worker],
        "POST",
        "/v1/workers/claim",
        Some(json!({"queue": "masked", "worker_id": "w1", "limit": 1, "kinds": ["noop"]})),
    )
    .await;
    assert_eq!(claimed.status, 200, "{}", claimed.body);
    assert_eq!(
        claimed.body["jobs"][0]["args"], args,
        "the worker needs the args: {}",
        claimed.body
    );
}

#[tokio::test]
async fn secrets_masked_unless_admin_sqlite() {
    secrets_masked_unless_admin(start(None, None).await).await;
}

#[tokio::test]
async fn secrets_masked_unless_admin_postgres() {
    let Some(s) = start_postgres("secrets_masked_unless_admin_postgres").await else {
        return;
    };
    secrets_masked_unless_admin(s).await;
}

/// A revoked token, a token of the wrong role and garbled Authorization headers are each
/// refused with a message that says what to do, and nothing stored changes.
#[tokio::test]
async fn bad_tokens_are_refused_and_change_nothing() {
    let s = start(None, None).await;
    let t = tokens(&s).await;
    let made = as_role(
        &s,
        &t[&Role::Producer],
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "noop"})),
    )
    .await;
    let id = made.body["id"].as_str().unwrap().to_owned();
    let cancel = format!("/v1/jobs/{id}/cancel");

    let wrong = as_role(&s, &t[&Role::Producer], "POST", &cancel, None).await;
    let detail = wrong.problem(403);
    assert!(
        detail.contains("needs the role admin or operator"),
        "{detail}"
    );
    assert!(
        detail.contains("`producer` has the role producer"),
        "{detail}"
    );

    for header in [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwdw==",
        "Token abc",
        "bearer-x",
    ] {
        let r = s
            .call_with("POST", &cancel, None, &[("authorization", header)])
            .await;
        let detail = r.problem(401);
        assert!(
            detail.contains("not `Bearer <token>`"),
            "{header:?}: {detail}"
        );
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let unknown = as_role(&s, "mend_not-a-token", "POST", &cancel, None).await;
    assert!(unknown.problem(401).contains("unknown or was revoked"));

    // Revoked: refused within the cache's bound.
    let op = t[&Role::Operator].clone();
    assert_eq!(as_role(&s, &op, "GET", "/v1/jobs", None).await.status, 200);
    let revoked = s
        .state
        .store
        .token_revoke(RevokeTokenParams {
            name: "operator".into(),
            now: Utc::now(),
        })
        .await
        .unwrap();
    assert!(revoked);
    let started = Instant::now();
    // Polled with a harmless read: before the cache expires the token still works.
    while as_role(&s, &op, "GET", "/v1/jobs", None).await.status != 401 {
        assert!(
            started.elapsed() < mend_server::tokens::TOKEN_CACHE_TTL + Duration::from_secs(1),
            "a revoked token still works after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = as_role(&s, &op, "POST", &cancel, None).await;
    assert!(r.problem(401).contains("revoked"));
    let job = s
        .state
        .store
        .get(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        job.state,
        JobState::Available,
        "no refused call changed the job"
    );
    let rows = s
        .state
        .store
        .audit_list(mend::audit::AuditParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        rows.is_empty(),
        "no refused call left an audit row: {rows:?}"
    );
}

/// With only stored tokens (no configured one) the server needs a token; the configured
/// token is an admin named MEND_API_TOKEN in the audit log.
#[tokio::test]
async fn the_configured_token_is_an_admin_and_stored_tokens_turn_auth_on() {
    let s = start(Some("configured-secret"), None).await;
    let paused = as_role(&s, "configured-secret", "POST", "/v1/queues/q/pause", None).await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    let rows = s
        .state
        .store
        .audit_list(mend::audit::AuditParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows[0].actor, "MEND_API_TOKEN");

    let open = start(None, None).await;
    assert_eq!(
        open.call("GET", "/v1/jobs", None).await.status,
        200,
        "no token at all: loopback is open"
    );
    let _ = tokens(&open).await;
    assert_eq!(
        open.call("GET", "/v1/jobs", None).await.status,
        401,
        "a stored token turns auth on"
    );
    let names: BTreeSet<String> = open
        .state
        .store
        .token_list()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names.len(), Role::ALL.len());
}

/// Logs in to the dashboard with `token`; returns the `Cookie` header value.
async fn login(s: &Server, token: &str) -> String {
    let body = format!("token={token}&next=%2Fjobs");
    let r = s
        .raw(
            "POST",
            "/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(body.as_bytes()),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r.header("set-cookie").unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

async fn page(
    s: &Server,
    cookie: &str,
    method: &str,
    path: &str,
    form: Option<&str>,
) -> mend_test::http::Resp {
    let mut headers = vec![("cookie", cookie)];
    if form.is_some() {
        headers.push(("content-type", "application/x-www-form-urlencoded"));
    }
    s.raw(method, path, &headers, form.map(str::as_bytes)).await
}

/// The dashboard session carries the token's role: a viewer sees masked args and no actions,
/// and is refused a bulk action; an admin sees secrets in clear, and its bulk action is
/// audited once (when confirmed).
#[tokio::test]
async fn dashboard_sessions_carry_the_role() {
    let s = start(None, None).await;
    let t = tokens(&s).await;
    let made = as_role(
        &s,
        &t[&Role::Admin],
        "POST",
        "/v1/jobs",
        Some(json!({"kind": "noop", "queue": "dash", "args": {"password": "hunter2"}})),
    )
    .await;
    let id = made.body["id"].as_str().unwrap().to_owned();
    let job_page = format!("/jobs/{id}");

    let bad = s
        .raw(
            "POST",
            "/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(b"token=mend_nope&next=%2F"),
        )
        .await;
    assert_eq!(bad.status, 401);
    assert_eq!(
        page(
            &s,
            "mend_session=9999999999.admin.forged",
            "GET",
            "/jobs",
            None
        )
        .await
        .status,
        303,
        "a forged session goes to the login page"
    );

    let viewer = login(&s, &t[&Role::Viewer]).await;
    let html = page(&s, &viewer, "GET", &job_page, None).await;
    assert_eq!(html.status, 200);
    let text = html.body.as_str().unwrap();
    assert!(
        !text.contains("hunter2") && text.contains(mend::secrets::MASK),
        "viewer sees masked args"
    );
    assert!(
        !text.contains(&format!("/jobs/{id}/cancel")),
        "no cancel button for a viewer"
    );
    let list = page(&s, &viewer, "GET", "/jobs?queue=dash", None).await;
    assert!(!list
        .body
        .as_str()
        .unwrap()
        .contains("With the selected jobs"));
    let queues = page(&s, &viewer, "GET", "/queues", None).await;
    let queues = queues.body.as_str().unwrap();
    assert!(
        queues.contains("default") && !queues.contains("/queues/default/pause"),
        "no pause button for a viewer"
    );
    let form = format!("action=cancel&id={id}&confirm=yes");
    let refused = page(&s, &viewer, "POST", "/jobs/bulk", Some(&form)).await;
    assert_eq!(refused.status, 403);
    assert!(refused
        .body
        .as_str()
        .unwrap()
        .contains("needs the role admin or operator"));

    let operator = login(&s, &t[&Role::Operator]).await;
    let text = page(&s, &operator, "GET", &job_page, None).await.body;
    let text = text.as_str().unwrap();
    assert!(
        !text.contains("hunter2") && text.contains(&format!("/jobs/{id}/cancel")),
        "operator: masked, with actions"
    );

    let queues = page(&s, &operator, "GET", "/queues", None).await;
    assert!(
        queues
            .body
            .as_str()
            .unwrap()
            .contains("/queues/default/pause"),
        "an operator may pause"
    );
    let admin = login(&s, &t[&Role::Admin]).await;
    assert!(
        page(&s, &admin, "GET", &job_page, None)
            .await
            .body
            .as_str()
            .unwrap()
            .contains("hunter2"),
        "admin sees secrets"
    );
    let ask = page(
        &s,
        &admin,
        "POST",
        "/jobs/bulk",
        Some(&format!("action=cancel&id={id}")),
    )
    .await;
    assert_eq!(ask.status, 200, "the confirmation page");
    let done = page(&s, &admin, "POST", "/jobs/bulk", Some(&form)).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let job = s
        .state
        .store
        .get(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    let rows = s
        .state
        .store
        .audit_list(mend::audit::AuditParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].actor.as_str(), rows[0].action.as_str()),
        ("admin", "dashboard.bulk")
    );
    assert!(rows[0].detail["body"].as_str().unwrap().contains(&id));

    // Revoking the token ends its sessions.
    s.state
        .store
        .token_revoke(RevokeTokenParams {
            name: "admin".into(),
            now: Utc::now(),
        })
        .await
        .unwrap();
    s.state.tokens.invalidate().await;
    assert_eq!(page(&s, &admin, "GET", "/jobs", None).await.status, 303);
}

/// When the token table cannot be read, API calls get 503 saying so, and the health probes
/// still answer (they never read it).
#[tokio::test]
async fn probes_answer_when_the_tokens_cannot_be_read() {
    let Some(env) =
        mend_test::env::Env::postgres("probes_answer_when_the_tokens_cannot_be_read").await
    else {
        return;
    };
    let app = mend_test::http::App(mend_server::app(mend_server::AppState::new(
        env.store.clone(),
    )));
    let schema = &env.schema.as_ref().unwrap().name;
    env.pg()
        .await
        .batch_execute(&format!("DROP TABLE \"{schema}\".mend_api_tokens"))
        .await
        .unwrap();
    assert_eq!(app.call("GET", "/healthz", None).await.status, 200);
    let r = app.call("GET", "/v1/jobs", None).await;
    assert!(r.problem(503).contains("cannot check tokens"), "{}", r.body);
}
