//! The contract `/openapi.json` states, checked against the server itself: the bearer scheme,
//! 401/403 and the other shared answers on every authenticated operation (and each one really
//! answers 401 without a token), the health probes open, and the request schemas carrying the
//! rules the server enforces. schemathesis (scripts/test-contract.sh) explores the same
//! document much further; this keeps a regression visible in nextest too.

#![allow(clippy::unwrap_used)]

mod common;

use common::start;
use serde_json::{json, Value};

const TOKEN: &str = "contract-test-token";

fn operations(spec: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    out
}

fn statuses(op: &Value) -> Vec<String> {
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// A concrete URL for a documented path.
fn concrete(path: &str) -> String {
    path.replace("{id}", &uuid::Uuid::now_v7().to_string())
        .replace("{name}", "some-name")
        .replace("{seq}", "1")
}

#[tokio::test]
async fn the_document_declares_the_bearer_scheme_and_every_operation_answers_401_without_it() {
    let s = start(Some(TOKEN), None).await;
    // The document is behind the token like every route but the probes.
    let spec = s.call("GET", "/openapi.json", None).await;
    assert_eq!(spec.status, 401);
    let spec = s
        .call_with(
            "GET",
            "/openapi.json",
            None,
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await
        .body;

    let scheme = &spec["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    assert_eq!(spec["security"], json!([{"bearer": []}]));

    let mut secured = 0;
    for (method, path, op) in operations(&spec) {
        let declared = statuses(&op);
        let open = op["security"] == json!([{}]);
        if path == "/healthz" || path == "/readyz" {
            assert!(open, "{method} {path} must stay open for probes");
            assert!(
                declared.iter().any(|d| d == "403"),
                "{method} {path}: {declared:?}"
            );
            let r = s.call(&method, &path, None).await;
            assert_eq!(r.status, 200, "{method} {path} answers without a token");
            continue;
        }
        assert!(
            !open,
            "{method} {path} is open but the server wants a token"
        );
        secured += 1;
        for status in ["401", "403", "500", "503"] {
            assert!(
                declared.iter().any(|d| d == status),
                "{method} {path} does not declare {status}: {declared:?}"
            );
        }
        if op.get("requestBody").is_some() {
            for status in ["400", "413", "415", "422"] {
                assert!(
                    declared.iter().any(|d| d == status),
                    "{method} {path} takes a body but does not declare {status}: {declared:?}"
                );
            }
        }
        // Not just written down: the server answers 401, with the scheme to use.
        let r = s.call(&method, &concrete(&path), Some(json!({}))).await;
        assert_eq!(r.status, 401, "{method} {path} without a token");
        let r = s
            .call_with(
                &method,
                &concrete(&path),
                Some(json!({})),
                &[("authorization", "Bearer not-the-token")],
            )
            .await;
        assert_eq!(r.status, 401, "{method} {path} with a wrong token");
    }
    assert!(
        secured >= 30,
        "only {secured} authenticated operations found"
    );

    // Every shared answer points at a response the document defines.
    let responses = spec["components"]["responses"].as_object().unwrap();
    for name in [
        "Unauthorized",
        "Forbidden",
        "PayloadTooLarge",
        "UnsupportedMediaType",
    ] {
        assert_eq!(
            responses[name]["content"]["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem",
            "{name}"
        );
    }
}

#[tokio::test]
async fn request_schemas_carry_the_rules_the_server_enforces() {
    let s = start(None, None).await;
    let spec = s.call("GET", "/openapi.json", None).await.body;
    let schemas = &spec["components"]["schemas"];

    // The examples: an empty worker_id or kind is refused, and the document says so.
    let claim = &schemas["ClaimRequest"];
    assert_eq!(claim["additionalProperties"], false);
    let worker_id = claim["properties"]["worker_id"]["pattern"]
        .as_str()
        .unwrap();
    assert!(worker_id.contains("{1,128}"), "{worker_id}");
    assert_eq!(claim["properties"]["kinds"]["minItems"], 1);
    assert_eq!(claim["properties"]["lease_ms"]["minimum"], 1000);
    let enqueue = &schemas["EnqueueRequest"];
    assert!(enqueue["properties"]["kind"]["pattern"]
        .as_str()
        .unwrap()
        .contains("{1,128}"));
    assert_eq!(enqueue["properties"]["max_attempts"]["maximum"], 10_000);
    assert_eq!(enqueue["properties"]["tags"]["maxItems"], 32);
    assert_eq!(
        schemas["BatchRequest"]["properties"]["jobs"]["maxItems"],
        1000
    );
    // An integer field has its Rust type's range (a number past it is refused).
    let attempt = &schemas["CompleteRequest"]["properties"]["attempt"];
    assert_eq!(attempt["maximum"], i64::from(i32::MAX), "{attempt}");

    // And the server refuses what the document refuses, accepts what it accepts.
    let r = s
        .post(
            "/v1/workers/claim",
            json!({"worker_id": "", "kinds": ["k"]}),
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["field"], "worker_id");
    let r = s.post("/v1/jobs", json!({"kind": ""})).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["field"], "kind");
    // A whole number written with a fraction is an integer to JSON Schema, and to the server.
    let r = s
        .post(
            "/v1/jobs",
            json!({"kind": "k", "max_attempts": 3.0, "args": [1, 2]}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["max_attempts"], 3);
    assert_eq!(r.body["args"], json!([1, 2]), "args may be any JSON");
    let r = s
        .post("/v1/jobs", json!({"kind": "k", "max_attempts": 2.5}))
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);

    // The PUT bodies take the name from the path.
    for (path, schema) in [
        ("/v1/cron/{name}", "CronSpec"),
        ("/v1/limits/{name}", "LimitSpec"),
    ] {
        assert_eq!(
            spec["paths"][path]["put"]["requestBody"]["content"]["application/json"]["schema"]
                ["$ref"],
            format!("#/components/schemas/{schema}")
        );
        assert!(
            schemas[schema]["properties"].get("name").is_none(),
            "{schema}"
        );
    }
}
