//! Gray release: rollouts stored with compare-and-set, routes derived from the latest rollout
//! of each kind, routed claims that take only the side a node serves and record the version,
//! samples, and handing a canary's failed jobs back to stable.

use mend::rollout::{
    on_canary, threshold, GuardConfig, Request, Rollout, RolloutSpec, RolloutState, Route,
    UNVERSIONED,
};
use mend::stats::Sketch;
use mend::store::{HealParams, VersionSample, VersionSamplesParams};

use super::*;

fn spec(kind: &str, version: &str) -> RolloutSpec {
    RolloutSpec {
        kind: kind.into(),
        version: version.into(),
        steps: vec![1_000, 5_000, 10_000],
        every_secs: 60,
        guard: GuardConfig::default(),
        notify_url: None,
    }
}

fn route(kind: &str, share: u32, canary_ok: bool, stable_ok: bool) -> Route {
    Route {
        kind: kind.into(),
        threshold: threshold(share),
        canary: Some("v2".into()),
        stable: None,
        canary_ok,
        stable_ok,
    }
}

async fn routed_claim(store: &Arc<dyn Store>, queue: &str, owner: &str, r: Route) -> Vec<JobRow> {
    let mut p = claim_params(queue, 1000, owner);
    p.routes = vec![r];
    store.claim(p).await.unwrap()
}

pub async fn rollouts_are_stored_compared_and_set_and_routed(store: Arc<dyn Store>) {
    let now = Utc::now();
    let first = Rollout::new(spec("resize", "v2"), None, "alice", now);
    let stored = store
        .rollout_start(first.clone())
        .await
        .unwrap()
        .expect("started");
    assert_eq!(
        stored.stable, None,
        "no earlier rollout: unversioned is stable"
    );
    assert_eq!(stored.share, 1_000);
    // One active rollout per kind.
    let again = Rollout::new(spec("resize", "v3"), None, "bob", now);
    assert!(store.rollout_start(again).await.unwrap().is_none());
    assert_eq!(
        store.rollout_get(stored.id).await.unwrap().as_ref(),
        Some(&stored)
    );
    let routes = store.rollout_routes().await.unwrap();
    assert_eq!(routes.len(), 1);
    assert!(routes[0].active);
    assert_eq!(routes[0].canary.as_deref(), Some("v2"));
    assert_eq!(routes[0].share, 1_000);

    // Compare and set: a change from a stale read is refused and changes nothing.
    let mut paused = stored.clone();
    paused.apply(Request::Pause, "carol", now).unwrap();
    let saved = store.rollout_save(paused).await.unwrap().expect("saved");
    assert_eq!(saved.revision, stored.revision + 1);
    let mut stale = stored.clone();
    stale.apply(Request::Abort, "dave", now).unwrap();
    assert!(store.rollout_save(stale).await.unwrap().is_none());
    let read = store.rollout_get(stored.id).await.unwrap().unwrap();
    assert_eq!(read.state, RolloutState::Paused);
    assert_eq!(read.decisions.len(), 2, "{:?}", read.decisions);

    // Promoted, v2 is pinned as stable, and the next rollout of the kind compares with it.
    let mut promoted = read;
    promoted.apply(Request::Promote, "carol", now).unwrap();
    store.rollout_save(promoted).await.unwrap().expect("saved");
    let routes = store.rollout_routes().await.unwrap();
    assert_eq!(routes[0].stable.as_deref(), Some("v2"));
    assert!(!routes[0].active);
    let later = chrono::Duration::seconds(1);
    let next = store
        .rollout_start(Rollout::new(
            spec("resize", "v3"),
            None,
            "alice",
            now + later,
        ))
        .await
        .unwrap()
        .expect("a new rollout once the last ended");
    assert_eq!(next.stable.as_deref(), Some("v2"));
    let listed = store.rollout_list().await.unwrap();
    assert_eq!(
        listed.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![next.id, stored.id],
        "newest first"
    );
    assert_eq!(store.rollout_get(Uuid::now_v7()).await.unwrap(), None);
}

pub async fn routed_claims_take_only_the_served_side_and_record_the_version(store: Arc<dyn Store>) {
    let q = "routed";
    let jobs: Vec<NewJob> = (0..200).map(|_| job("resize").with_queue(q)).collect();
    let inserted = store.insert_many(jobs).await.unwrap();
    store
        .insert_many(vec![job("mail").with_queue(q)])
        .await
        .unwrap();
    let canary: Vec<Uuid> = inserted
        .iter()
        .filter(|j| on_canary(j.id, 3_000))
        .map(|j| j.id)
        .collect();
    assert!(
        (20..120).contains(&canary.len()),
        "{} of 200 on the canary side at 30%",
        canary.len()
    );

    // A node serving only stable takes every stable job and no canary one; jobs of kinds
    // without a route are claimed as before, with no version.
    let stable_side = routed_claim(
        &store,
        q,
        "stable-node",
        route("resize", 3_000, false, true),
    )
    .await;
    assert_eq!(stable_side.len(), 200 - canary.len() + 1);
    for j in &stable_side {
        if j.kind == "mail" {
            assert_eq!(j.version, None);
        } else {
            assert!(!canary.contains(&j.id));
            assert_eq!(j.version.as_deref(), Some(UNVERSIONED));
            assert_eq!(
                get(&store, j.id).await.version.as_deref(),
                Some(UNVERSIONED)
            );
        }
    }
    // Nothing left for it; the canary node takes the rest, recorded as v2.
    assert!(routed_claim(
        &store,
        q,
        "stable-node",
        route("resize", 3_000, false, true)
    )
    .await
    .is_empty());
    let canary_side = routed_claim(
        &store,
        q,
        "canary-node",
        route("resize", 3_000, true, false),
    )
    .await;
    let mut got: Vec<Uuid> = canary_side.iter().map(|j| j.id).collect();
    got.sort();
    let mut want = canary.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(canary_side
        .iter()
        .all(|j| j.version.as_deref() == Some("v2")));

    // A limited queue routes the same way.
    let lq = "routed-limited";
    store
        .set_limit(mend::store::SetLimitParams {
            limit: mend::limits::Limit {
                name: "routed-limit".into(),
                queue: lq.into(),
                kind: None,
                concurrency: Some(1000),
                rate: None,
                key: None,
            },
            now: Utc::now(),
        })
        .await
        .unwrap();
    let inserted = store
        .insert_many((0..100).map(|_| job("resize").with_queue(lq)).collect())
        .await
        .unwrap();
    let n_canary = inserted.iter().filter(|j| on_canary(j.id, 3_000)).count();
    let got = routed_claim(
        &store,
        lq,
        "stable-node",
        route("resize", 3_000, false, true),
    )
    .await;
    assert_eq!(got.len(), 100 - n_canary);
    assert!(got
        .iter()
        .all(|j| !on_canary(j.id, 3_000) && j.version.as_deref() == Some(UNVERSIONED)));
}

pub async fn a_canarys_failed_jobs_go_back_to_stable_with_their_attempts(store: Arc<dyn Store>) {
    let q = "heal";
    let since = Utc::now() - chrono::Duration::seconds(5);
    let inserted = store
        .insert_many(
            (0..60)
                .map(|_| job("resize").with_queue(q).with_max_attempts(2))
                .collect(),
        )
        .await
        .unwrap();
    assert!(inserted.iter().any(|j| on_canary(j.id, 5_000)));
    // Everything on the canary side at 50% runs v2, the rest unversioned.
    let claimed = routed_claim(&store, q, OWNER, route("resize", 5_000, true, true)).await;
    assert_eq!(claimed.len(), 60);
    let fail = |j: &JobRow, last: bool| {
        let mut e = err(j.attempt, ErrorKind::Error, "boom");
        e.version = j.version.clone();
        let kind = if last {
            OutcomeKind::Discard { error: e }
        } else {
            OutcomeKind::Retry {
                error: e,
                run_at: Utc::now() + chrono::Duration::hours(1),
            }
        };
        outcome(j, kind)
    };
    let (canary, stable): (Vec<&JobRow>, Vec<&JobRow>) = claimed
        .iter()
        .partition(|j| j.version.as_deref() == Some("v2"));
    // Canary: the first half fail for good, the next ones fail once, the rest complete.
    // Stable: all fail once (not the canary's doing: left alone).
    let mut outcomes = Vec::new();
    let (discarded, rest) = canary.split_at(canary.len() / 2);
    let (retried, completed) = rest.split_at(rest.len() / 2);
    outcomes.extend(discarded.iter().map(|j| fail(j, true)));
    outcomes.extend(retried.iter().map(|j| fail(j, false)));
    outcomes.extend(
        completed
            .iter()
            .map(|j| outcome(j, OutcomeKind::Completed { result: None })),
    );
    outcomes.extend(stable.iter().map(|j| fail(j, false)));
    complete(&store, outcomes).await;

    // v2's failures since the rollout started, handed back now.
    let heal = || HealParams {
        kind: "resize".into(),
        canary: "v2".into(),
        since,
        now: Utc::now(),
        limit: 1000,
        event: mend::job::TimelineEvent::new(Utc::now(), "handed_back"),
    };
    let healed = store.rollout_heal(heal()).await.unwrap();
    let mut want: Vec<Uuid> = discarded.iter().chain(retried).map(|j| j.id).collect();
    let mut got = healed.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "exactly the jobs the canary failed");
    for j in discarded.iter().chain(retried) {
        let row = get(&store, j.id).await;
        assert_eq!(row.state, JobState::Available, "{}", j.id);
        assert_eq!(row.max_attempts, 3, "one canary failure given back");
        assert_eq!(row.errors.len(), 1);
        assert_eq!(row.errors[0].version.as_deref(), Some("v2"));
        assert!(row.timeline.iter().any(|e| e.event == "handed_back"));
    }
    for j in completed {
        assert_eq!(get(&store, j.id).await.state, JobState::Completed);
    }
    for j in &stable {
        let row = get(&store, j.id).await;
        assert_eq!(row.state, JobState::Retryable);
        assert_eq!(row.max_attempts, 2);
    }
    // A late write from a canary attempt is fenced: the handed-back job's next attempt has a
    // new number, and the old one's outcome no longer applies.
    let victim = retried
        .first()
        .or(discarded.first())
        .expect("a failed canary job");
    let again = routed_claim(&store, q, OWNER, route("resize", 0, false, true)).await;
    assert!(again.iter().any(|j| j.id == victim.id && j.attempt == 2));
    let late = complete(
        &store,
        vec![outcome(victim, OutcomeKind::Completed { result: None })],
    )
    .await;
    assert_eq!(late.fenced, vec![victim.id]);
    // Nothing more to hand back.
    let none = store.rollout_heal(heal()).await.unwrap();
    assert!(none.is_empty());
}

pub async fn version_samples_add_up_and_are_pruned(store: Arc<dyn Store>) {
    let now = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
    let old = now - chrono::Duration::hours(2);
    let mut run = Sketch::default();
    run.record_ms(12.0);
    let sample = |at, version: &str, attempts, failures| VersionSample {
        at,
        kind: "resize".into(),
        version: Some(version.into()),
        attempts,
        failures,
        run: run.clone(),
    };
    store
        .add_version_samples(vec![
            sample(old, "v2", 5, 5),
            sample(now, "v2", 3, 1),
            sample(now, UNVERSIONED, 10, 0),
        ])
        .await
        .unwrap();
    let read = store
        .version_samples(VersionSamplesParams {
            kind: "resize".into(),
            since: now - chrono::Duration::minutes(1),
        })
        .await
        .unwrap();
    assert_eq!(read.len(), 2);
    let v2 = read
        .iter()
        .find(|s| s.version.as_deref() == Some("v2"))
        .unwrap();
    assert_eq!((v2.attempts, v2.failures), (3, 1));
    assert_eq!(v2.run, run);
    let stable = read.iter().find(|s| s.version.is_none()).unwrap();
    assert_eq!(stable.attempts, 10);
    let all = store
        .version_samples(VersionSamplesParams {
            kind: "resize".into(),
            since: old,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    store
        .prune_history(mend::stats::PruneHistoryParams {
            before: now - chrono::Duration::hours(1),
            limit: 100,
        })
        .await
        .unwrap();
    let left = store
        .version_samples(VersionSamplesParams {
            kind: "resize".into(),
            since: old,
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 2, "the old sample is pruned with the history");
}

pub async fn nodes_report_the_versions_they_serve(store: Arc<dyn Store>) {
    let mut node = mend::node::this_node(Utc::now());
    node.kinds = vec!["resize".into()];
    node.versions
        .insert("resize".into(), vec!["v2".into(), "v3".into()]);
    store.register_node(node.clone()).await.unwrap();
    let listed = store.list_nodes().await.unwrap();
    let found = listed.iter().find(|n| n.id == node.id).unwrap();
    assert_eq!(found.versions, node.versions);
}

/// `mend chaos --bad-canary` found it on SQLite: after a cut-off back to unversioned handlers
/// the claim is the plain one, and a job whose last attempt ran the canary (its retry due
/// before the guard handed it back) kept the canary's version, so the canary ran it again,
/// seconds after the cut-off. A plain claim records no version, whatever the row held.
pub async fn a_plain_claim_forgets_the_version_of_an_earlier_routed_attempt(store: Arc<dyn Store>) {
    let q = "forget-version";
    store
        .insert_many(vec![job("resize").with_queue(q)])
        .await
        .unwrap();
    let ran = routed_claim(
        &store,
        q,
        "canary-node",
        route("resize", 10_000, true, true),
    )
    .await;
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].version.as_deref(), Some("v2"));
    let mut e = err(1, ErrorKind::Error, "the canary failed");
    e.version = Some("v2".into());
    complete(
        &store,
        vec![outcome(
            &ran[0],
            OutcomeKind::Retry {
                error: e,
                run_at: Utc::now() - chrono::Duration::seconds(1),
            },
        )],
    )
    .await;
    let again = claim(&store, q, 10).await;
    assert_eq!(again.len(), 1, "the retry is due");
    assert_eq!(again[0].attempt, 2);
    assert_eq!(
        again[0].version, None,
        "the plain claim runs the unversioned handler"
    );
    assert_eq!(get(&store, again[0].id).await.version, None);
}
