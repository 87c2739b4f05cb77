//! Args encrypted at rest per kind, through the whole router on a real store: the stored row
//! holds an envelope (no plaintext in the PostgreSQL row or in the SQLite file), the API
//! answers the args in clear, and a wrong or missing key is refused before anything changes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use mend::secrets::{check_keys, ArgsKeys, EncryptedArgs};
use mend_server::AppState;
use mend_test::env::Env;
use mend_test::http::App;
use serde_json::json;

const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4=";

/// The router on `env`'s store with kind `payment` encrypted; returns it and the ids of a
/// `payment` job and a plain one.
async fn enqueue_both(env: &Env) -> (App, String, String) {
    let keys = ArgsKeys::parse(&format!("k1:{K1}")).unwrap();
    check_keys(env.store.as_ref(), Some(&keys), true)
        .await
        .unwrap();
    let store: Arc<dyn mend::Store> = Arc::new(EncryptedArgs::new(
        env.store.clone(),
        Arc::new(keys),
        ["payment".to_owned()].into(),
    ));
    let app = App(mend_server::app(AppState::new(store)));
    let secret = app
        .post(
            "/v1/jobs",
            json!({"kind": "payment", "queue": "elsewhere", "args": {"card": "CARD-4111-SECRET"}}),
        )
        .await;
    assert_eq!(secret.status, 201, "{}", secret.body);
    let plain = app
        .post(
            "/v1/jobs",
            json!({"kind": "note", "queue": "elsewhere", "args": {"text": "PLAIN-VISIBLE"}}),
        )
        .await;
    let (s, p) = (
        secret.body["id"].as_str().unwrap().to_owned(),
        plain.body["id"].as_str().unwrap().to_owned(),
    );
    let got = app.call("GET", &format!("/v1/jobs/{s}"), None).await;
    assert_eq!(got.body["args"]["card"], "CARD-4111-SECRET", "{}", got.body);
    let listed = app.call("GET", "/v1/jobs?queue=elsewhere", None).await;
    assert!(
        listed.body.to_string().contains("CARD-4111-SECRET"),
        "{}",
        listed.body
    );
    // Unique by args cannot work on an envelope: refused, not silently ignored.
    let unique = app
        .post(
            "/v1/jobs",
            json!({"kind": "payment", "args": {}, "unique": {"by_args": true}}),
        )
        .await;
    assert!(
        unique.problem(422).contains("encrypted at rest"),
        "{}",
        unique.body
    );
    (app, s, p)
}

/// Wrong, unlisted and missing keys are refused, and the stored checks stay as they were.
async fn wrong_keys_are_refused(env: &Env) {
    let before = env.store.args_keys().await.unwrap();
    assert_eq!(before.len(), 1);
    for (spec, says) in [
        (Some(format!("k1:{K2}")), "is not the one"),
        (Some(format!("k2:{K1}")), "does not list"),
        (None, "MEND_ARGS_KEYS"),
    ] {
        let keys = spec.map(|s| ArgsKeys::parse(&s).unwrap());
        let err = check_keys(env.store.as_ref(), keys.as_ref(), true)
            .await
            .unwrap_err();
        assert!(
            err.0.contains(says) && err.0.contains("nothing was changed"),
            "{err}"
        );
        assert_eq!(env.store.args_keys().await.unwrap(), before);
    }
    // Rotation: the new key first, the old one kept.
    let rotated = ArgsKeys::parse(&format!("k2:{K2},k1:{K1}")).unwrap();
    check_keys(env.store.as_ref(), Some(&rotated), false)
        .await
        .unwrap();
    assert_eq!(
        env.store.args_keys().await.unwrap(),
        before,
        "keys given only to read leave no trace"
    );
    check_keys(env.store.as_ref(), Some(&rotated), true)
        .await
        .unwrap();
    assert_eq!(env.store.args_keys().await.unwrap().len(), 2);
}

#[tokio::test]
async fn encrypted_args_sqlite() {
    let env = Env::new().await;
    let (_app, _, _) = enqueue_both(&env).await;
    let mut bytes = std::fs::read(&env.db).unwrap();
    if let Ok(wal) = std::fs::read(format!("{}-wal", env.db)) {
        bytes.extend(wal);
    }
    let has = |s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("PLAIN-VISIBLE"), "the raw read sees plain args");
    assert!(
        !has("CARD-4111-SECRET"),
        "encrypted args are not in the file"
    );
    wrong_keys_are_refused(&env).await;
}

#[tokio::test]
async fn encrypted_args_postgres() {
    let Some(env) = Env::postgres("encrypted_args_postgres").await else {
        return;
    };
    let (_app, secret, plain) = enqueue_both(&env).await;
    let schema = &env.schema.as_ref().unwrap().name;
    let c = env.pg().await;
    let raw = |id: String| {
        let c = &c;
        async move {
            let row = c
                .query_one(
                    &format!("SELECT args::text FROM \"{schema}\".mend_jobs WHERE id = $1"),
                    &[&id.parse::<uuid::Uuid>().unwrap()],
                )
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    assert!(raw(plain).await.contains("PLAIN-VISIBLE"));
    let stored = raw(secret).await;
    assert!(!stored.contains("CARD-4111-SECRET"), "{stored}");
    assert!(
        stored.contains("$mend_enc") && stored.contains("\"k1\""),
        "{stored}"
    );
    wrong_keys_are_refused(&env).await;
}
