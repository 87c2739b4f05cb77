//! Limits over HTTP: set, list, replace and remove them; bad ones refused with the field named
//! and nothing stored; a held job says which limit holds it; the gauge counts what waits.

mod common;

use common::start;
use serde_json::json;

#[tokio::test]
async fn limits_are_managed_over_http_and_explain_held_jobs() {
    let s = start(None, None).await;
    let put = s
        .call(
            "PUT",
            "/v1/limits/one-per-account",
            Some(json!({"queue": "billing", "key": "/account", "concurrency": 1})),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["name"], "one-per-account");

    // Refused, each naming its field; nothing stored changes.
    for (body, field) in [
        (json!({"queue": "billing", "concurrency": 0}), "concurrency"),
        (
            json!({"queue": "billing", "key": "account", "concurrency": 1}),
            "key",
        ),
        (json!({"queue": "billing"}), "rate"),
        (
            json!({"queue": "billing", "rate": {"max": 0, "per_ms": 1000}}),
            "rate.max",
        ),
        (json!({"queue": "billing", "concurency": 1}), "body"),
        (
            json!({"name": "other", "queue": "billing", "concurrency": 1}),
            "name",
        ),
    ] {
        let r = s
            .call("PUT", "/v1/limits/one-per-account", Some(body.clone()))
            .await;
        let detail = r.problem(422);
        assert_eq!(r.body["field"], field, "{body}: {detail}");
    }
    let bad_name = s
        .call(
            "PUT",
            "/v1/limits/no%20spaces",
            Some(json!({"queue": "q", "concurrency": 1})),
        )
        .await;
    assert_eq!(bad_name.body["field"], "name", "{}", bad_name.body);
    let listed = s.call("GET", "/v1/limits", None).await;
    assert_eq!(listed.body["limits"].as_array().unwrap().len(), 1);
    assert_eq!(listed.body["limits"][0]["concurrency"], 1);
    assert_eq!(listed.body["limits"][0]["key"], "/account");

    // Two jobs of one account: a worker gets one, the other is held, and says so.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = s
            .post(
                "/v1/jobs",
                json!({"kind": "noop", "queue": "billing", "args": {"account": "acme"}}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let other = s
        .post(
            "/v1/jobs",
            json!({"kind": "noop", "queue": "billing", "args": {"account": "x"}, "limit_key": "globex"}),
        )
        .await;
    assert_eq!(other.body["limit_key"], "globex");
    let claimed = s
        .claim(json!({"worker_id": "w1", "queue": "billing", "kinds": ["noop"], "limit": 10}))
        .await;
    assert_eq!(claimed.status, 200, "{}", claimed.body);
    let got: Vec<&str> = claimed.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(got.len(), 2, "one of acme, and globex: {got:?}");
    assert!(got.contains(&ids[0].as_str()));
    let held = s.call("GET", &format!("/v1/jobs/{}", ids[1]), None).await;
    assert_eq!(held.body["state"], "available");
    assert_eq!(
        held.body["held_by"][0]["limit"], "one-per-account",
        "{}",
        held.body
    );
    assert_eq!(held.body["held_by"][0]["key"], "acme");
    let running = s.call("GET", &format!("/v1/jobs/{}", ids[0]), None).await;
    assert!(running.body.get("held_by").is_none(), "{}", running.body);
    let metrics = s.call("GET", "/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or_default().to_owned();
    assert!(
        text.contains("mend_limit_waiting{limit=\"one-per-account\",queue=\"billing\"} 1"),
        "{text}"
    );

    let bad_key = s
        .post("/v1/jobs", json!({"kind": "noop", "limit_key": ""}))
        .await;
    bad_key.problem(422);
    assert_eq!(bad_key.body["field"], "limit_key");

    // Replaced, then removed: the held job is claimable.
    let rate = s
        .call(
            "PUT",
            "/v1/limits/one-per-account",
            Some(json!({"queue": "billing", "rate": {"max": 5, "per_ms": 1000, "burst": 2}})),
        )
        .await;
    assert_eq!(rate.status, 200, "{}", rate.body);
    let one = s.call("GET", "/v1/limits/one-per-account", None).await;
    assert_eq!(one.body["rate"]["burst"], 2);
    assert!(one.body.get("concurrency").is_none());
    let del = s.call("DELETE", "/v1/limits/one-per-account", None).await;
    assert_eq!(del.status, 200, "{}", del.body);
    s.call("DELETE", "/v1/limits/one-per-account", None)
        .await
        .problem(404);
    s.call("GET", "/v1/limits/one-per-account", None)
        .await
        .problem(404);
    let rest = s
        .claim(json!({"worker_id": "w2", "queue": "billing", "kinds": ["noop"], "limit": 10}))
        .await;
    assert_eq!(
        rest.body["jobs"].as_array().unwrap().len(),
        1,
        "{}",
        rest.body
    );
}
