//! `/debug/attempts` on a node running a real worker: a job whose in-memory cleanup hangs
//! shows as "in cleanup NAME" within a second, a cancel shows as it arrives, and with debug
//! endpoints off the route is a plain 404.

#![expect(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mend::{JobContext, JobError, NewJob};
use mend_server::AppState;
use mend_test::env::Env;
use mend_test::http::App;
use serde_json::Value;

mend_test::job_args!(struct Hangs = "hangs");

async fn attempt_of(app: &App, id: &str, until: impl Fn(&Value) -> bool) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let r = app.call("GET", "/debug/attempts", None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if let Some(a) = r.body["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
        {
            if until(a) {
                return (a.clone(), started.elapsed());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not seen in time: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_cleanup_and_a_cancel_show_at_once() {
    let env = Env::new().await;
    let registry =
        mend_test::handler::registry_with((), |(), ctx: JobContext, _: Hangs| async move {
            ctx.defer_named("release-lock", |_exit| async {
                tokio::time::sleep(Duration::from_secs(4)).await;
            });
            Ok::<_, JobError>(())
        });
    let worker = env
        .worker(registry, 2, |c| c.cleanup_timeout = Duration::from_secs(30))
        .await;
    let mut state = AppState::new(env.store.clone());
    state.worker = Some(worker.clone());
    state.debug_endpoints = true;
    let app = App(mend_server::app(state.clone()));

    let job = env
        .insert(NewJob::new("hangs", serde_json::json!(null)))
        .await;
    let id = job.id.to_string();
    // The handler returns at once; the cleanup hangs.
    let (a, _) = attempt_of(&app, &id, |a| a["phase"] == "cleanup").await;
    assert_eq!(a["cleanup"], "release-lock", "{a}");
    assert_eq!(a["kind"], "hangs");
    assert_eq!(a["attempt"], 1);
    assert!(a["lease_expires_at"].is_string(), "{a}");
    assert!(a["stop_requested"].is_null(), "{a}");
    let (a, _) = attempt_of(&app, &id, |a| a["phase_ms"].as_u64().unwrap() >= 1000).await;
    assert!(
        a["doing"]
            .as_str()
            .unwrap()
            .starts_with("in cleanup release-lock for 1."),
        "{a}"
    );

    // A cancel reaches the attempt while its cleanup still runs.
    let c = app
        .call("POST", &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    let (a, took) = attempt_of(&app, &id, |a| a["stop_requested"] == "cancel").await;
    assert!(
        took < Duration::from_secs(1),
        "the cancel showed after {took:?}"
    );
    assert_eq!(a["phase"], "cleanup");

    // Off: a plain 404, nothing about attempts.
    let mut off = state.clone();
    off.debug_endpoints = false;
    let r = App(mend_server::app(off))
        .call("GET", "/debug/attempts", None)
        .await;
    r.problem(404);
    assert!(!r.body.to_string().contains(&id));
    worker.shutdown(Duration::from_millis(100)).await;
}
