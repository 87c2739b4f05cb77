//! `/openapi.json` is generated from the handlers and types; this keeps it true: every
//! documented operation exists on the router (answers something other than "no route" or
//! "method not allowed"), and every route the API has is documented.

mod common;

use std::collections::BTreeSet;

use common::start;
use serde_json::json;

#[tokio::test]
async fn every_documented_operation_exists_and_every_route_is_documented() {
    let s = start(None, None).await;
    let r = s.call("GET", "/openapi.json", None).await;
    assert_eq!(r.status, 200);
    let spec = r.body;
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} documents its answers"
            );
            let mut concrete = path
                .replace("{id}", &uuid::Uuid::now_v7().to_string())
                .replace("{name}", "some-queue")
                .replace("{seq}", "1");
            if concrete == "/debug/pprof/profile" {
                // Not a 10 s profile: a refused `seconds` proves the route is there.
                concrete.push_str("?seconds=0");
            }
            let resp = s
                .call(&method.to_uppercase(), &concrete, Some(json!({})))
                .await;
            assert_ne!(
                resp.status, 405,
                "{method} {path} is documented but not routed"
            );
            let no_route = resp.status == 404
                && resp.body["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("no route"));
            assert!(!no_route, "{method} {path} is documented but not routed");
        }
    }
    // The routes of crate::routes::router(), written out: a route added there without an
    // annotation fails here.
    let routed: BTreeSet<String> = [
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "POST /v1/jobs",
        "GET /v1/jobs",
        "POST /v1/jobs/batch",
        "GET /v1/jobs/{id}",
        "POST /v1/jobs/{id}/cancel",
        "POST /v1/jobs/{id}/retry",
        "POST /v1/jobs/{id}/complete",
        "POST /v1/jobs/{id}/fail",
        "GET /v1/queues",
        "POST /v1/queues/{name}/pause",
        "POST /v1/queues/{name}/resume",
        "POST /v1/workers/claim",
        "POST /v1/workers/heartbeat",
        "POST /v1/workers/finish",
        "POST /v1/jobs/{id}/snooze",
        "POST /v1/jobs/{id}/release",
        "POST /v1/jobs/{id}/checkpoint",
        "POST /v1/jobs/{id}/cleanups",
        "POST /v1/jobs/{id}/cleanups/{seq}/done",
        // Periodic jobs (cron).
        "GET /v1/cron",
        "POST /v1/cron",
        "GET /v1/cron/{name}",
        "PUT /v1/cron/{name}",
        "DELETE /v1/cron/{name}",
        "POST /v1/cron/{name}/pause",
        "POST /v1/cron/{name}/resume",
        // Limits.
        "GET /v1/limits",
        "GET /v1/limits/{name}",
        "PUT /v1/limits/{name}",
        "DELETE /v1/limits/{name}",
        // Looking inside a node (the test server has debug endpoints on, as `mend serve` on
        // loopback; the profile is asked with a bad `seconds`, so it answers 422 at once).
        "GET /debug/attempts",
        "GET /debug/pprof/profile",
        // The dashboard's data.
        "GET /v1/stats",
        "GET /v1/events",
        "GET /v1/nodes",
        // The audit log.
        "GET /v1/audit",
        // Rollouts (gray release).
        "GET /v1/rollouts",
        "POST /v1/rollouts",
        "GET /v1/rollouts/{id}",
        "POST /v1/rollouts/{id}/pause",
        "POST /v1/rollouts/{id}/resume",
        "POST /v1/rollouts/{id}/promote",
        "POST /v1/rollouts/{id}/abort",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(documented, routed);
    for schema in [
        "JobRow",
        "JobState",
        "AttemptError",
        "Problem",
        "EnqueueRequest",
        "ClaimRequest",
        "PeriodicDecl",
        "CronView",
        "Limit",
        "Rate",
        "LimitState",
        "Hold",
        "JobDetail",
    ] {
        assert!(
            spec["components"]["schemas"][schema].is_object(),
            "schema {schema} is described"
        );
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
