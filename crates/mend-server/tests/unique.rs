//! Unique jobs over HTTP: `duplicate` and the status say whether an enqueue made a job (single
//! and per item of a batch); bad options are refused naming the field, storing nothing; a
//! retry whose key another job holds is 409, naming that job.

mod common;

use common::start;
use serde_json::{json, Value};

fn sync_job(customer: i64, note: &str) -> Value {
    json!({"kind": "sync", "queue": "held", "args": {"customer": customer, "note": note},
           "unique": {"by_args": ["customer"]}})
}

#[tokio::test]
async fn a_duplicate_is_answered_200_with_the_existing_job() {
    let s = start(None, None).await;
    let first = s.post("/v1/jobs", sync_job(1, "a")).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["duplicate"], false);
    assert!(first.header("idempotent-replayed").is_none());
    assert!(first.body["unique_key"]
        .as_str()
        .unwrap()
        .starts_with("unique:sync:"));

    let again = s.post("/v1/jobs", sync_job(1, "b")).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(
        again.body["args"]["note"], "a",
        "the existing job, as stored"
    );

    let other = s.post("/v1/jobs", sync_job(2, "a")).await;
    assert_eq!(other.status, 201);
    assert_eq!(s.job_count().await, 2);

    // The idempotency key says so the same way.
    let keyed = s.enqueue_with_key(json!({"kind": "noop"}), "k-1").await;
    assert_eq!(keyed.body["duplicate"], false);
    let keyed = s.enqueue_with_key(json!({"kind": "noop"}), "k-1").await;
    assert_eq!(
        (keyed.status, &keyed.body["duplicate"]),
        (200, &json!(true))
    );
}

#[tokio::test]
async fn a_batch_says_per_item_which_jobs_were_duplicates() {
    let s = start(None, None).await;
    let existing = s.post("/v1/jobs", sync_job(1, "first")).await;
    assert_eq!(existing.status, 201);
    let batch =
        json!({"jobs": [sync_job(1, "x"), sync_job(2, "x"), sync_job(2, "y"), {"kind": "noop"}]});
    let r = s.post("/v1/jobs/batch", batch).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let jobs = r.body["jobs"].as_array().unwrap();
    let flags: Vec<&Value> = jobs.iter().map(|j| &j["duplicate"]).collect();
    assert_eq!(
        flags,
        [&json!(true), &json!(false), &json!(true), &json!(false)]
    );
    assert_eq!(jobs[0]["id"], existing.body["id"]);
    assert_eq!(jobs[2]["id"], jobs[1]["id"], "a duplicate within the batch");
    assert_eq!(s.job_count().await, 3);

    // Every item a duplicate: 200.
    let r = s
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [sync_job(1, "z"), sync_job(2, "z")]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["duplicate"] == true));
    assert_eq!(s.job_count().await, 3);
}

#[tokio::test]
async fn bad_unique_options_name_the_field_and_store_nothing() {
    let s = start(None, None).await;
    let with = |unique: Value| json!({"kind": "sync", "args": {"a": 1}, "unique": unique});
    let cases = [
        (
            with(json!({"period": "1.5h"})),
            "unique.period",
            "whole numbers",
        ),
        (
            with(json!({"period": "0s"})),
            "unique.period",
            "more than 0",
        ),
        (with(json!({"period": "400d"})), "unique.period", "366d"),
        (
            with(json!({"by_args": ["a", "/b~2"]})),
            "unique.by_args[1]",
            "JSON pointer",
        ),
        (with(json!({"by_args": []})), "unique.by_args", "1–32"),
        (
            with(json!({"states": ["available", "finished"]})),
            "unique.states[1]",
            "unknown job state",
        ),
        (
            with(json!({"states": ["completed"]})),
            "unique.states",
            "must include scheduled, available, running and retryable",
        ),
        (
            json!({"kind": "sync", "unique": {}, "idempotency_key": "k"}),
            "unique",
            "not both",
        ),
    ];
    for (body, field, says) in cases {
        let r = s.post("/v1/jobs", body.clone()).await;
        let detail = r.problem(422);
        assert_eq!(r.body["field"], field, "{body}: {}", r.body);
        assert!(detail.contains(says), "{body}: {detail}");
    }
    // The header form of the idempotency key is refused with unique options too.
    let r = s
        .enqueue_with_key(with(json!({"by_args": true})), "k")
        .await;
    r.problem(422);
    assert_eq!(r.body["field"], "unique");
    // An unknown option is a shape error, not ignored.
    let r = s.post("/v1/jobs", with(json!({"by_arg": true}))).await;
    assert!(r.problem(422).contains("by_arg"), "{}", r.body);
    // In a batch the item is named, and the good items are not stored either.
    let r = s
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [sync_job(1, "ok"), with(json!({"period": "soon"}))]}),
        )
        .await;
    r.problem(422);
    assert_eq!(r.body["field"], "jobs[1].unique.period");
    assert_eq!(s.job_count().await, 0, "nothing stored");
}

#[tokio::test]
async fn retrying_a_job_whose_key_another_job_holds_is_a_conflict() {
    let s = start(None, None).await;
    let old = s.post("/v1/jobs", sync_job(1, "old")).await;
    let old_id = old.body["id"].as_str().unwrap().to_owned();
    let c = s
        .call("POST", &format!("/v1/jobs/{old_id}/cancel"), None)
        .await;
    assert_eq!(c.body["state"], "cancelled");
    let holder = s.post("/v1/jobs", sync_job(1, "new")).await;
    assert_eq!(holder.status, 201, "the cancelled job let its key go");
    let holder_id = holder.body["id"].as_str().unwrap().to_owned();

    let r = s
        .call("POST", &format!("/v1/jobs/{old_id}/retry"), None)
        .await;
    let detail = r.problem(409);
    assert!(detail.contains(&holder_id), "{detail}");
    assert!(detail.contains(&old_id), "{detail}");
    let still = s.call("GET", &format!("/v1/jobs/{old_id}"), None).await;
    assert_eq!(still.body["state"], "cancelled", "nothing changed");
    let h = s.call("GET", &format!("/v1/jobs/{holder_id}"), None).await;
    assert_eq!(h.body["state"], "available");
}

#[tokio::test]
async fn the_openapi_document_describes_the_options_and_the_answer() {
    let s = start(None, None).await;
    let spec = s.call("GET", "/openapi.json", None).await.body;
    let schemas = &spec["components"]["schemas"];
    for name in ["Enqueued", "UniqueRequest", "ByArgsRequest"] {
        assert!(schemas[name].is_object(), "{name} is missing: {schemas}");
    }
    let request = &schemas["EnqueueRequest"]["properties"]["unique"];
    assert!(request.to_string().contains("UniqueRequest"), "{request}");
    assert!(
        schemas["Enqueued"].to_string().contains("duplicate"),
        "{}",
        schemas["Enqueued"]
    );
}
