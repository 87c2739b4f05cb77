//! Rollouts over HTTP, through the whole router on a real store (SQLite, and PostgreSQL when
//! `MEND_TEST_POSTGRES_URL` is set): every kind of bad start request refused with its field
//! named and nothing stored; a start, the detail with the guard's window and the series from
//! stored samples; pause, resume, promote and abort with their conflicts; the audit rows; the
//! roles; `/metrics`; and the nodes answer showing the versions served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::Utc;
use mend::auth::{CreateTokenParams, Role};
use mend::stats::Sketch;
use mend::store::VersionSample;
use serde_json::{json, Value};

use common::{start, start_postgres, Server};

/// Registers a live node serving `kind` unversioned and in `versions`.
async fn serve_kind(s: &Server, kind: &str, versions: &[&str]) {
    let mut node = mend::node::this_node(Utc::now());
    node.kinds = vec![kind.to_owned(), "noop".to_owned()];
    node.versions.insert(
        kind.to_owned(),
        versions.iter().map(|v| (*v).to_owned()).collect(),
    );
    s.state.store.register_node(node).await.unwrap();
}

fn sample(
    kind: &str,
    version: Option<&str>,
    attempts: u64,
    failures: u64,
    ms: f64,
) -> VersionSample {
    let mut run = Sketch::default();
    for _ in 0..attempts {
        run.record_ms(ms);
    }
    VersionSample {
        at: Utc::now(),
        kind: kind.to_owned(),
        version: version.map(str::to_owned),
        attempts,
        failures,
        run,
    }
}

fn good() -> Value {
    json!({"kind": "resize", "version": "v2", "steps": "5%,25%,100%", "every": "10m"})
}

/// `good()` with `key` set to `value` (or removed when `value` is null).
fn with(key: &str, value: Value) -> Value {
    let mut b = good();
    if value.is_null() {
        b.as_object_mut().unwrap().remove(key);
    } else {
        b[key] = value;
    }
    b
}

async fn rollouts_over_http(s: Server) {
    serve_kind(&s, "resize", &["v2"]).await;

    // Refused, each naming its field; nothing stored.
    let cases: Vec<(Value, &str)> = vec![
        (with("kind", json!("thumbnail")), "kind"),
        (with("kind", json!("")), "kind"),
        (with("version", json!("v9")), "version"),
        (with("steps", json!("5%,25%,50%")), "steps"),
        (with("steps", json!("25%,5%,100%")), "steps"),
        (with("steps", json!("0%,100%")), "steps"),
        (with("steps", json!("5%,150%")), "steps"),
        (with("steps", json!(["5%", "lots"])), "steps"),
        (with("steps", json!([])), "steps"),
        (with("steps", json!({"a": 1})), "steps"),
        (with("every", json!("0s")), "every"),
        (with("every", json!("-5m")), "every"),
        (with("every", json!("10")), "every"),
        (with("every", json!("1500ms")), "every"),
        (with("every", json!("31d")), "every"),
        (with("guard", json!({"window": "0s"})), "guard.window"),
        (with("guard", json!({"window": "-1m"})), "guard.window"),
        (with("guard", json!({"alpha": 0.7})), "guard.alpha"),
        (
            with("guard", json!({"min_samples": 0})),
            "guard.min_samples",
        ),
        (
            with("guard", json!({"max_failure_rate": 1.5})),
            "guard.max_failure_rate",
        ),
        (with("notify_url", json!("ftp://x")), "notify_url"),
    ];
    for (body, field) in cases {
        let r = s.post("/v1/rollouts", body.clone()).await;
        let detail = r.problem(422);
        assert_eq!(r.body["field"], field, "{body}: {detail}");
    }
    // Shapes serde refuses: an unknown field, a missing one, a wrong type.
    for body in [
        with("colour", json!("red")),
        with("every", Value::Null),
        with("version", json!(2)),
        with("guard", json!({"windw": "1m"})),
    ] {
        s.post("/v1/rollouts", body.clone()).await.problem(422);
    }
    let malformed = s
        .raw(
            "POST",
            "/v1/rollouts",
            &[("content-type", "application/json")],
            Some(b"{\"kind\": "),
        )
        .await;
    assert!(malformed.problem(400).contains("not valid JSON"));
    assert!(s.state.store.rollout_list().await.unwrap().is_empty());

    // Started at its first step.
    let started = s
        .post(
            "/v1/rollouts",
            with("guard", json!({"window": "5m", "min_samples": 3})),
        )
        .await;
    assert_eq!(started.status, 201, "{}", started.body);
    let b = &started.body;
    assert_eq!(b["state"], "running");
    assert_eq!(b["share"], 500);
    assert_eq!(b["steps"], json!([500, 2_500, 10_000]));
    assert_eq!(b["every_secs"], 600);
    assert_eq!(b["guard"]["window_secs"], 300);
    assert_eq!(b["guard"]["min_samples"], 3);
    assert_eq!(b["decisions"][0]["action"], "started");
    assert_eq!(b["decisions"][0]["actor"], "local");
    assert_eq!(b["window"]["verdict"], "not_enough");
    let id = b["id"].as_str().unwrap().to_owned();

    let again = s.post("/v1/rollouts", good()).await;
    assert!(again.problem(409).contains("already has an active rollout"));
    assert_eq!(s.state.store.rollout_list().await.unwrap().len(), 1);

    // The window and the series come from the stored samples.
    s.state
        .store
        .add_version_samples(vec![
            sample("resize", Some("v2"), 8, 2, 40.0),
            sample("resize", Some(""), 20, 1, 30.0),
            sample("resize", Some("v7"), 50, 50, 10.0),
        ])
        .await
        .unwrap();
    let one = s.call("GET", &format!("/v1/rollouts/{id}"), None).await;
    assert_eq!(one.status, 200, "{}", one.body);
    let w = &one.body["window"];
    assert_eq!(w["evidence"]["canary"]["attempts"], 8);
    assert_eq!(w["evidence"]["canary"]["failures"], 2);
    assert_eq!(w["evidence"]["stable"]["attempts"], 20, "{w}");
    assert_eq!(w["evidence"]["window_secs"], 300);
    assert_eq!(w["verdict"], "pass", "{w}");
    assert!(w["evidence"]["p_value"].as_f64().unwrap() > 0.001);
    let series = &one.body["series"];
    assert_eq!(series["step_secs"], 10);
    let buckets = series["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 6, "a young rollout draws a few buckets");
    let sum =
        |side: &str, f: &str| -> u64 { buckets.iter().map(|b| b[side][f].as_u64().unwrap()).sum() };
    assert_eq!(
        (sum("canary", "attempts"), sum("canary", "failures")),
        (8, 2)
    );
    assert_eq!(
        (sum("stable", "attempts"), sum("stable", "failures")),
        (20, 1),
        "another version's samples are not stable's"
    );
    let last = buckets.last().unwrap();
    assert_eq!(last["canary"]["failure_rate"], 0.25, "{last}");
    assert!(last["canary"]["p95_ms"].as_f64().unwrap() > 30.0);

    let listed = s.call("GET", "/v1/rollouts", None).await;
    assert_eq!(listed.body["rollouts"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["rollouts"][0]["id"], id.as_str());
    assert_eq!(
        listed.body["rollouts"][0]["window"]["evidence"]["canary"]["attempts"], 8,
        "an active rollout is listed with its window"
    );
    assert_eq!(
        listed.body["rollouts"][0]["decisions"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the latest decision only"
    );

    // Unknown and malformed ids.
    let unknown = uuid::Uuid::now_v7();
    s.call("GET", &format!("/v1/rollouts/{unknown}"), None)
        .await
        .problem(404);
    s.post(&format!("/v1/rollouts/{unknown}/pause"), json!({}))
        .await
        .problem(404);
    s.call("GET", "/v1/rollouts/not-an-id", None)
        .await
        .problem(400);

    // Pause, resume, promote; each refused where the state does not allow it.
    let act = |a: &'static str| {
        let path = format!("/v1/rollouts/{id}/{a}");
        let s = &s;
        async move { s.call("POST", &path, None).await }
    };
    s.post(&format!("/v1/rollouts/{id}/resume"), json!({}))
        .await
        .problem(409);
    let paused = act("pause").await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(paused.body["state"], "paused");
    assert!(act("pause").await.problem(409).contains("it is paused"));
    assert_eq!(act("resume").await.body["state"], "running");
    let promoted = act("promote").await;
    assert_eq!(promoted.body["state"], "promoted");
    assert_eq!(promoted.body["share"], 10_000);
    act("abort").await.problem(409);
    act("promote").await.problem(409);
    let log: Vec<&str> = promoted.body["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(log, ["started", "paused", "resumed", "promoted"]);

    // v2 is stable now: rolling it out again is refused; a new canary aborted hands back.
    assert!(s
        .post("/v1/rollouts", good())
        .await
        .problem(422)
        .contains("already the stable version"));
    serve_kind(&s, "resize", &["v2", "v3"]).await;
    let v3 = s.post("/v1/rollouts", with("version", json!("v3"))).await;
    assert_eq!(v3.status, 201, "{}", v3.body);
    assert_eq!(v3.body["stable"], "v2");
    let v3_id = v3.body["id"].as_str().unwrap().to_owned();
    // Samples from before this rollout began are not in its window; these are.
    s.state
        .store
        .add_version_samples(vec![
            sample("resize", Some("v2"), 8, 2, 40.0),
            sample("resize", Some("v3"), 4, 0, 40.0),
        ])
        .await
        .unwrap();

    // /metrics: the share, the states, the window's figures.
    let metrics = s.call("GET", "/metrics", None).await;
    let text = metrics.body.as_str().unwrap();
    for line in [
        "mend_rollout_share{kind=\"resize\",canary=\"v3\"} 0.05",
        "mend_rollout_state{kind=\"resize\",canary=\"v3\",state=\"running\"} 1",
        "mend_rollout_state{kind=\"resize\",canary=\"v2\",state=\"promoted\"} 1",
        "mend_rollout_state{kind=\"resize\",canary=\"v2\",state=\"running\"} 0",
        "mend_rollout_cutoffs_total{kind=\"resize\"} 0",
        "mend_rollout_attempts{kind=\"resize\",version=\"v3\",side=\"canary\"} 4",
        "mend_rollout_attempts{kind=\"resize\",version=\"v2\",side=\"stable\"} 8",
        "mend_rollout_failures{kind=\"resize\",version=\"v2\",side=\"stable\"} 2",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    let listed = s.call("GET", "/v1/rollouts", None).await;
    assert!(
        listed.body["rollouts"][1]["window"].is_null(),
        "an ended rollout has no current window: {}",
        listed.body
    );
    let aborted = s
        .call("POST", &format!("/v1/rollouts/{v3_id}/abort"), None)
        .await;
    assert_eq!(aborted.body["state"], "aborted");
    assert_eq!(aborted.body["share"], 0);

    // The nodes answer shows the versions served.
    let nodes = s.call("GET", "/v1/nodes", None).await;
    assert!(
        nodes.body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["versions"]["resize"] == json!(["v2", "v3"])),
        "{}",
        nodes.body
    );

    // One audit row per change made, none for refused ones.
    let rows = s
        .state
        .store
        .audit_list(mend::audit::AuditParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .rev()
        .map(|r| (r.action.as_str(), r.target.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("rollout.start", "resize"),
            ("rollout.pause", id.as_str()),
            ("rollout.resume", id.as_str()),
            ("rollout.promote", id.as_str()),
            ("rollout.start", "resize"),
            ("rollout.abort", v3_id.as_str()),
        ]
    );
}

#[tokio::test]
async fn rollouts_over_http_sqlite() {
    rollouts_over_http(start(None, None).await).await;
}

#[tokio::test]
async fn rollouts_over_http_postgres() {
    let Some(s) = start_postgres("rollouts_over_http_postgres").await else {
        return;
    };
    rollouts_over_http(s).await;
}

/// Viewers read rollouts; only operators and admins change them, and a refused request
/// changes nothing.
#[tokio::test]
async fn rollout_roles() {
    let s = start(None, None).await;
    serve_kind(&s, "resize", &["v2"]).await;
    let mut tokens = std::collections::BTreeMap::new();
    for role in Role::ALL {
        let token = mend::auth::generate_token();
        s.state
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
        tokens.insert(role, format!("Bearer {token}"));
    }
    s.state.tokens.invalidate().await;
    let call = |role: Role, method: &'static str, path: String, body: Option<Value>| {
        let auth = tokens[&role].clone();
        let s = &s;
        async move {
            s.call_with(method, &path, body, &[("authorization", &auth)])
                .await
        }
    };
    for role in [Role::Viewer, Role::Producer, Role::Worker] {
        let r = call(role, "POST", "/v1/rollouts".into(), Some(good())).await;
        assert!(r.problem(403).contains("needs the role admin or operator"));
    }
    assert!(s.state.store.rollout_list().await.unwrap().is_empty());
    let made = call(Role::Operator, "POST", "/v1/rollouts".into(), Some(good())).await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.body["decisions"][0]["actor"], "operator");
    let id = made.body["id"].as_str().unwrap().to_owned();
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        assert_eq!(
            call(role, "GET", format!("/v1/rollouts/{id}"), None)
                .await
                .status,
            200
        );
        assert_eq!(
            call(role, "GET", "/v1/rollouts".into(), None).await.status,
            200
        );
    }
    for role in [Role::Producer, Role::Worker] {
        call(role, "GET", "/v1/rollouts".into(), None)
            .await
            .problem(403);
    }
    for action in ["pause", "resume", "promote", "abort"] {
        call(
            Role::Viewer,
            "POST",
            format!("/v1/rollouts/{id}/{action}"),
            None,
        )
        .await
        .problem(403);
    }
    let r = s
        .state
        .store
        .rollout_get(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.state,
        mend::rollout::RolloutState::Running,
        "nothing changed"
    );
    let paused = call(
        Role::Admin,
        "POST",
        format!("/v1/rollouts/{id}/pause"),
        None,
    )
    .await;
    assert_eq!(paused.body["state"], "paused", "{}", paused.body);
    assert_eq!(paused.body["decisions"][1]["actor"], "admin");
}

/// Logs in to the dashboard with `token`; returns the `Cookie` header value.
async fn login(s: &Server, token: &str) -> String {
    let body = format!("token={token}&next=%2Frollouts");
    let r = s
        .raw(
            "POST",
            "/login",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(body.as_bytes()),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    r.header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The Rollouts pages: the list, a rollout with its chart, window and log; the buttons only
/// for roles that may act, and a pause from the page changes the rollout and is audited. The
/// Nodes page shows the versions served.
#[tokio::test]
async fn rollout_pages() {
    let s = start(None, None).await;
    serve_kind(&s, "resize", &["v2"]).await;
    let admin = mend::auth::generate_token();
    let viewer = mend::auth::generate_token();
    for (name, role, token) in [("ada", Role::Admin, &admin), ("vic", Role::Viewer, &viewer)] {
        s.state
            .store
            .token_create(CreateTokenParams {
                name: name.into(),
                role,
                hash: mend::auth::hash_token(token),
                now: Utc::now(),
                created_by: "test".into(),
            })
            .await
            .unwrap();
    }
    s.state.tokens.invalidate().await;
    let admin_cookie = login(&s, &admin).await;
    let viewer_cookie = login(&s, &viewer).await;
    let get = |cookie: &str, path: &str| {
        let cookie = cookie.to_owned();
        let path = path.to_owned();
        let s = &s;
        async move { s.raw("GET", &path, &[("cookie", &cookie)], None).await }
    };
    let empty = get(&viewer_cookie, "/rollouts").await;
    assert_eq!(empty.status, 200);
    assert!(empty.body.as_str().unwrap().contains("No rollout yet"));

    let auth = format!("Bearer {admin}");
    let made = s
        .call_with(
            "POST",
            "/v1/rollouts",
            Some(good()),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let id = made.body["id"].as_str().unwrap().to_owned();
    s.state
        .store
        .add_version_samples(vec![sample("resize", Some("v2"), 5, 1, 20.0)])
        .await
        .unwrap();

    let list = get(&viewer_cookie, "/rollouts").await;
    let text = list.body.as_str().unwrap();
    assert!(text.contains(&format!("href=\"/rollouts/{id}\"")), "{text}");
    assert!(text.contains("data-rollout-state=\"running\""));
    assert!(
        text.contains("1 / 5 (20.0%)"),
        "the canary's failures in the window: {text}"
    );
    assert!(text.contains("href=\"/rollouts\""), "in the nav");

    let page = get(&viewer_cookie, &format!("/rollouts/{id}")).await;
    assert_eq!(page.status, 200);
    let text = page.body.as_str().unwrap();
    assert!(text.contains("<svg class=\"chart\""), "the chart");
    assert!(text.contains("class=\"l-canary\"") && text.contains("class=\"l-stable\""));
    assert!(text.contains("marker marker-step"), "the start is marked");
    assert!(text.contains("data-attempts=\"5\"") && text.contains("data-failures=\"1\""));
    assert!(
        text.contains("canary v2 at 5% of resize"),
        "the decision log"
    );
    assert!(
        !text.contains(&format!("/rollouts/{id}/pause")),
        "no buttons for a viewer"
    );
    let refused = s
        .raw(
            "POST",
            &format!("/rollouts/{id}/pause"),
            &[("cookie", &viewer_cookie)],
            None,
        )
        .await;
    assert_eq!(refused.status, 403);

    let page = get(&admin_cookie, &format!("/rollouts/{id}")).await;
    let text = page.body.as_str().unwrap();
    for action in ["pause", "promote", "abort"] {
        assert!(
            text.contains(&format!("/rollouts/{id}/{action}")),
            "{action}"
        );
    }
    assert!(!text.contains(&format!("/rollouts/{id}/resume")));
    let paused = s
        .raw(
            "POST",
            &format!("/rollouts/{id}/pause"),
            &[("cookie", &admin_cookie)],
            None,
        )
        .await;
    assert_eq!(paused.status, 303, "{}", paused.body);
    let r = s
        .state
        .store
        .rollout_get(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.state, mend::rollout::RolloutState::Paused);
    assert_eq!(r.decisions.last().unwrap().actor, "ada");
    let again = s
        .raw(
            "POST",
            &format!("/rollouts/{id}/pause"),
            &[("cookie", &admin_cookie)],
            None,
        )
        .await;
    assert_eq!(again.status, 409, "pausing a paused rollout");
    let bogus = s
        .raw(
            "POST",
            &format!("/rollouts/{id}/explode"),
            &[("cookie", &admin_cookie)],
            None,
        )
        .await;
    assert_eq!(bogus.status, 404);
    let rows = s
        .state
        .store
        .audit_list(mend::audit::AuditParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (rows[0].action.as_str(), rows[0].target.as_str()),
        ("rollout.pause", id.as_str())
    );

    let nodes = get(&viewer_cookie, "/nodes").await;
    let text = nodes.body.as_str().unwrap();
    assert!(
        text.contains("Versions served") && text.contains("<code>v2</code>"),
        "{text}"
    );
}

/// A canary the guard cuts off: the API shows the cut-off with its evidence, `/metrics`
/// counts it, and the rollout's page marks it on the chart.
#[tokio::test]
async fn a_cut_off_is_shown_counted_and_marked() {
    let s = start(None, None).await;
    serve_kind(&s, "resize", &["v2"]).await;
    let made = s
        .post("/v1/rollouts", with("guard", json!({"min_samples": 20})))
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let id = made.body["id"].as_str().unwrap().to_owned();
    s.state
        .store
        .add_version_samples(vec![
            sample("resize", Some("v2"), 30, 24, 40.0),
            sample("resize", None, 60, 1, 40.0),
        ])
        .await
        .unwrap();
    let report = mend::maintenance::rollouts::pass(s.state.store.as_ref(), Utc::now())
        .await
        .unwrap();
    assert_eq!(report.cut_off, 1, "{report:?}");

    let one = s.call("GET", &format!("/v1/rollouts/{id}"), None).await;
    assert_eq!(one.body["state"], "rolled_back");
    assert_eq!(one.body["share"], 0);
    let last = one.body["decisions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "cut_off");
    assert_eq!(last["actor"], "guard");
    assert_eq!(last["evidence"]["canary"]["failures"], 24, "{last}");
    assert!(last["evidence"]["p_value"].as_f64().unwrap() < 0.001);
    // The window stops where the rollout ended: it still shows what the guard saw.
    assert_eq!(
        one.body["window"]["verdict"], "breach",
        "{}",
        one.body["window"]
    );
    s.call("POST", &format!("/v1/rollouts/{id}/resume"), None)
        .await
        .problem(409);

    let metrics = s.call("GET", "/metrics", None).await;
    let text = metrics.body.as_str().unwrap();
    for line in [
        "mend_rollout_cutoffs_total{kind=\"resize\"} 1",
        "mend_rollout_state{kind=\"resize\",canary=\"v2\",state=\"rolled_back\"} 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(
        !text.contains("mend_rollout_share{"),
        "no share for a rollout that ended:\n{text}"
    );

    let page = s.call("GET", &format!("/rollouts/{id}"), None).await;
    let html = page.body.as_str().unwrap();
    assert!(
        html.contains("marker marker-cutoff"),
        "the cut-off is marked"
    );
    assert!(
        html.contains("Fisher exact, one-sided"),
        "the breach in words"
    );
    assert!(
        !html.contains("data-action=\"pause\""),
        "nothing to steer any more"
    );
}
