//! Gray release in a live worker, on SQLite and on PostgreSQL: a canary failing half its
//! attempts at a 10% share is cut off by the guard with its evidence stored, and every job it
//! hurt completes on the stable version with its attempts given back; one that never fails but
//! is slow is cut off by the run-time rule; a canary as good as
//! stable is never cut off over 2,000 jobs; a good canary advances step by step and becomes
//! stable; an abort made elsewhere reaches a node before its next heartbeat; bad requests are refused with nothing stored; a lost canary attempt counts against
//! its version.

#![expect(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use mend::maintenance::rollouts::{start, StartError};
use mend::retry::FixedDelay;
use mend::rollout::{Action, GuardConfig, RolloutError, RolloutSpec, RolloutState, Verdict};
use mend::{JobArgs, JobContext, JobError, JobState, NewJob, Registry};
use mend_test::env::Env;
use mend_test::wait::poll;

mend_test::job_args!(struct Gr { n: u64 } = "gray");

/// A handler failing the first attempt (every attempt when `always`) of `1 in every` jobs
/// (by `n`), 0 = never.
fn failing(
    every: u64,
    always: bool,
) -> impl Fn(JobContext, Gr) -> std::future::Ready<Result<(), JobError>> + Send + Sync + 'static {
    move |ctx: JobContext, g: Gr| {
        let fails = every > 0 && g.n % every == 0 && (always || ctx.attempt() == 1);
        std::future::ready(if fails {
            Err(JobError::retry("this attempt fails"))
        } else {
            Ok(())
        })
    }
}

/// Stable fails the first attempt of 1 job in `stable_every`; canary v2 of 1 in
/// `canary_every`, every attempt when `always` (a bad version fails its jobs for good).
fn registry(stable_every: u64, canary_every: u64, always: bool) -> Registry {
    let mut r = Registry::new();
    r.register_fn(failing(stable_every, false));
    r.register_version_fn("v2", failing(canary_every, always));
    r
}

fn spec(steps: Vec<u32>, every_secs: u64) -> RolloutSpec {
    RolloutSpec {
        kind: Gr::KIND.into(),
        version: "v2".into(),
        steps,
        every_secs,
        guard: GuardConfig::default(),
        notify_url: None,
    }
}

async fn worker(env: &Env, reg: Registry) -> mend::WorkerHandle {
    env.worker(reg, 16, |c| {
        c.retry_policy = Arc::new(FixedDelay(Duration::from_millis(20)));
    })
    .await
}

async fn enqueue(env: &Env, range: std::ops::Range<u64>) {
    let jobs: Vec<NewJob> = range.map(|n| Gr { n }.to_new_job().unwrap()).collect();
    for chunk in jobs.chunks(500) {
        env.client.insert_many(chunk.to_vec()).await.unwrap();
    }
}

async fn rollout(env: &Env) -> mend::rollout::Rollout {
    env.store.rollout_list().await.unwrap().remove(0)
}

/// Every stored job (the Env's own read stops at one page).
async fn every_job(env: &Env) -> Vec<mend::JobRow> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = env
            .store
            .list(mend::store::ListParams {
                limit: 1000,
                before,
                ..Default::default()
            })
            .await
            .unwrap();
        out.extend(page.jobs);
        match page.next_cursor {
            Some(c) => before = Some(c),
            None => return out,
        }
    }
}

/// Starts a rollout of v2 at 10% (then 100% after an hour) and gives every node a heartbeat to
/// pick its route up.
async fn start_at_ten_percent(env: &Env) {
    start(
        env.store.as_ref(),
        spec(vec![1_000, 10_000], 3_600),
        "test",
        Utc::now(),
    )
    .await
    .expect("start the rollout");
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Waits for the guard to cut the `what` canary off; returns the rollout as stored then.
async fn cut_off(env: &Env, what: &str) -> mend::rollout::Rollout {
    poll(
        &format!("the {what} canary cut off"),
        Duration::from_secs(60),
        || async {
            let r = rollout(env).await;
            if r.state == RolloutState::RolledBack {
                Ok(r)
            } else {
                Err((r.state, r.share))
            }
        },
    )
    .await
}

async fn all_completed(env: &Env, n: usize, within: Duration) -> Vec<mend::JobRow> {
    poll(&format!("{n} jobs completed"), within, || async {
        // The gray jobs only (a cut-off's notification is an `http` job beside them).
        let jobs: Vec<_> = every_job(env)
            .await
            .into_iter()
            .filter(|j| j.kind == Gr::KIND)
            .collect();
        let done = jobs
            .iter()
            .filter(|j| j.state == JobState::Completed)
            .count();
        if jobs.len() == n && done == n {
            Ok(jobs)
        } else {
            Err((jobs.len(), done))
        }
    })
    .await
}

async fn bad_canary_is_cut_off(env: Env) {
    // Stable fails 1% of first attempts, the canary 50%.
    let w = worker(&env, registry(100, 2, true)).await;
    let hook = "http://127.0.0.1:9/mend-cut-off";
    let r = start(
        env.store.as_ref(),
        RolloutSpec {
            notify_url: Some(hook.into()),
            ..spec(vec![1_000, 10_000], 3_600)
        },
        "test",
        Utc::now(),
    )
    .await
    .expect("start the rollout");
    assert_eq!(r.stable, None);
    // Every node picks the route up within a heartbeat.
    tokio::time::sleep(Duration::from_millis(200)).await;
    enqueue(&env, 0..2_000).await;
    let cut = cut_off(&env, "bad").await;
    let jobs = all_completed(&env, 2_000, Duration::from_secs(60)).await;
    w.shutdown(Duration::from_secs(5)).await;

    // The decision and its evidence are stored.
    let decision = cut.decisions.last().unwrap();
    assert_eq!(decision.action, Action::CutOff);
    assert_eq!(decision.actor, "guard");
    assert_eq!(cut.share, 0);
    let ev = decision.evidence.as_ref().expect("evidence");
    assert!(ev.p_value.unwrap() < ev.alpha, "{ev:?}");
    assert!(ev.canary.failure_rate > ev.stable.failure_rate, "{ev:?}");
    assert!(ev.canary.attempts >= GuardConfig::default().min_samples);
    assert!(ev.breach.contains("Fisher"), "{}", ev.breach);
    eprintln!(
        "cut off after {} canary attempts ({} failed) against {} stable ones",
        ev.canary.attempts, ev.canary.failures, ev.stable.attempts
    );

    // Every job the canary hurt completed on stable, its canary attempts given back.
    let hurt: Vec<_> = jobs
        .iter()
        .filter(|j| j.errors.iter().any(|e| e.version.as_deref() == Some("v2")))
        .collect();
    assert!(!hurt.is_empty());
    let mut healed_jobs = 0;
    let mut fully_given_back = 0;
    for j in &hurt {
        assert_eq!(j.state, JobState::Completed);
        assert_ne!(
            j.version.as_deref(),
            Some("v2"),
            "{}: completed on stable",
            j.id
        );
        // Each canary failure was given back, once: a canary's retry waits for the guard
        // (CANARY_RETRY_FLOOR), so a retry reaches stable before it is handed back only when a
        // guard pass is slowed past the floor (a loaded machine): nearly all, checked below.
        let canary_failures = j
            .errors
            .iter()
            .filter(|e| e.version.as_deref() == Some("v2"))
            .count();
        let given_back = j.errors.iter().filter(|e| e.given_back).count();
        assert!(given_back <= canary_failures, "{}: {:?}", j.id, j.errors);
        fully_given_back += usize::from(given_back == canary_failures);
        assert!(
            j.errors
                .iter()
                .filter(|e| e.given_back)
                .all(|e| e.version.as_deref() == Some("v2")),
            "{}: only canary failures are given back",
            j.id
        );
        assert_eq!(
            j.max_attempts,
            NewJob::new("k", serde_json::json!({})).max_attempts + given_back as i32,
            "{}: attempts given back",
            j.id
        );
        healed_jobs += usize::from(given_back > 0);
    }
    assert!(
        fully_given_back * 10 >= hurt.len() * 9,
        "{fully_given_back} of {} hurt jobs had every canary attempt given back",
        hurt.len()
    );
    let stored = rollout(&env).await;
    assert!(
        stored.healed >= healed_jobs as u64,
        "{} < {healed_jobs}",
        stored.healed
    );
    // The event log says so.
    let events = env
        .store
        .events(mend::stats::EventsParams {
            since: Utc::now() - chrono::Duration::hours(1),
            until: Utc::now() + chrono::Duration::hours(1),
            kinds: vec![mend::stats::event_kind::ROLLOUT_CUT_OFF.into()],
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    // And the rollout's notify_url gets the decision: one `http` job posting it there (this
    // worker runs no `http` handler, so it waits; the built-in executor delivers it).
    let hooks: Vec<_> = every_job(&env)
        .await
        .into_iter()
        .filter(|j| j.kind == "http")
        .collect();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let args = &hooks[0].args;
    assert_eq!(args["method"], "POST", "{args}");
    assert_eq!(args["url"], hook, "{args}");
    let body = &args["body"];
    assert_eq!(body["rollout"], serde_json::json!(cut.id), "{body}");
    assert_eq!(body["kind"], Gr::KIND, "{body}");
    assert_eq!(body["canary"], "v2", "{body}");
    assert_eq!(body["state"], "rolled_back", "{body}");
    assert_eq!(body["decision"]["action"], "cut_off", "{body}");
    assert_eq!(
        body["decision"]["evidence"]["p_value"].as_f64(),
        ev.p_value,
        "{body}"
    );
}

async fn equal_canary_is_never_cut_off(env: Env) {
    // Both fail the first attempt of 1 job in 20.
    let w = worker(&env, registry(20, 20, false)).await;
    start_at_ten_percent(&env).await;
    enqueue(&env, 0..2_000).await;
    let jobs = all_completed(&env, 2_000, Duration::from_secs(90)).await;
    // The guard has seen the last samples.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    w.shutdown(Duration::from_secs(5)).await;
    let r = rollout(&env).await;
    assert_eq!(r.state, RolloutState::Running, "{:?}", r.decisions);
    let on_canary = jobs
        .iter()
        .filter(|j| j.version.as_deref() == Some("v2"))
        .count();
    assert!(
        (120..300).contains(&on_canary),
        "{on_canary} of 2000 jobs ran on the canary at 10%"
    );
    // The guard did look: both sides have enough samples, and it passed them.
    let (canary, stable) = mend::maintenance::rollouts::window(env.store.as_ref(), &r, Utc::now())
        .await
        .unwrap();
    let (verdict, ev) = mend::rollout::judge(&r.guard, &canary, &stable);
    assert_eq!(verdict, Verdict::Pass, "{ev:?}");
    assert!(canary.attempts >= on_canary as u64, "{canary:?}");
}

async fn good_canary_is_promoted(env: Env) {
    let w = worker(&env, registry(0, 0, false)).await;
    start(
        env.store.as_ref(),
        spec(vec![2_000, 10_000], 1),
        "test",
        Utc::now(),
    )
    .await
    .unwrap();
    // Jobs keep coming until the canary is promoted.
    let mut n = 0;
    let promoted = poll("the canary promoted", Duration::from_secs(60), || {
        let env = &env;
        n += 50;
        let range = n - 50..n;
        async move {
            enqueue(env, range).await;
            let r = rollout(env).await;
            if r.state == RolloutState::Promoted {
                Ok(r)
            } else {
                Err((r.state, r.share, r.decisions.len()))
            }
        }
    })
    .await;
    assert_eq!(promoted.share, mend::rollout::FULL_SHARE);
    assert_eq!(promoted.decisions.last().unwrap().action, Action::Promoted);
    assert!(promoted.decisions.last().unwrap().evidence.is_some());
    // Once every node knows, new jobs run on v2.
    tokio::time::sleep(Duration::from_millis(300)).await;
    enqueue(&env, 1_000_000..1_000_100).await;
    let jobs = poll(
        "the last 100 jobs completed",
        Duration::from_secs(30),
        || async {
            let jobs = every_job(&env).await;
            let waiting = jobs
                .iter()
                .filter(|j| j.state != JobState::Completed)
                .count();
            if waiting == 0 {
                Ok(jobs)
            } else {
                Err(waiting)
            }
        },
    )
    .await;
    w.shutdown(Duration::from_secs(5)).await;
    let late: Vec<_> = jobs
        .iter()
        .filter(|j| serde_json::from_value::<Gr>(j.args.clone()).unwrap().n >= 1_000_000)
        .collect();
    assert_eq!(late.len(), 100);
    assert!(late.iter().all(|j| j.version.as_deref() == Some("v2")));
}

async fn bad_requests_store_nothing(env: Env) {
    let w = worker(&env, registry(0, 0, false)).await;
    let now = Utc::now();
    let invalid = |e: StartError| match e {
        StartError::Rollout(RolloutError::Invalid(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let mut unknown_kind = spec(vec![10_000], 60);
    unknown_kind.kind = "nope".into();
    let m = invalid(
        start(env.store.as_ref(), unknown_kind, "t", now)
            .await
            .unwrap_err(),
    );
    assert!(m.contains("no live node serves kind `nope`"), "{m}");
    let mut unknown_version = spec(vec![10_000], 60);
    unknown_version.version = "v9".into();
    let m = invalid(
        start(env.store.as_ref(), unknown_version, "t", now)
            .await
            .unwrap_err(),
    );
    assert!(m.contains("v9") && m.contains("v2"), "{m}");
    let m = invalid(
        start(env.store.as_ref(), spec(vec![500, 2_000], 60), "t", now)
            .await
            .unwrap_err(),
    );
    assert!(m.contains("100%"), "{m}");
    let m = invalid(
        start(env.store.as_ref(), spec(vec![10_000], 0), "t", now)
            .await
            .unwrap_err(),
    );
    assert!(m.contains("interval"), "{m}");
    let mut negative = spec(vec![10_000], 60);
    negative.guard.window_secs = 0;
    invalid(
        start(env.store.as_ref(), negative, "t", now)
            .await
            .unwrap_err(),
    );
    assert!(env.store.rollout_list().await.unwrap().is_empty());
    // One active rollout per kind.
    start(env.store.as_ref(), spec(vec![10_000], 60), "t", now)
        .await
        .unwrap();
    let e = start(env.store.as_ref(), spec(vec![10_000], 60), "t", now)
        .await
        .unwrap_err();
    assert!(
        matches!(e, StartError::Rollout(RolloutError::Conflict(_))),
        "{e:?}"
    );
    assert_eq!(env.store.rollout_list().await.unwrap().len(), 1);
    w.shutdown(Duration::from_secs(5)).await;
}

/// A canary attempt whose worker vanished is rescued as lost, and the node that rescued it
/// counts it against the version that ran it (`mend_version_attempts_total{outcome="lost"}`).
async fn a_lost_canary_attempt_counts_against_its_version(env: Env) {
    let w = env
        .worker(registry(0, 0, false), 4, |c| {
            c.rescue_interval = Duration::from_millis(50);
        })
        .await;
    start(
        env.store.as_ref(),
        spec(vec![10_000], 3_600),
        "test",
        Utc::now(),
    )
    .await
    .expect("start the rollout");
    // A worker elsewhere (on a queue this node does not work) claims a job of the kind on the
    // canary side with a lease that lapses at once, and is never heard of again.
    let job = Gr { n: 1 }.to_new_job().unwrap().with_queue("elsewhere");
    env.store.insert_many(vec![job]).await.unwrap();
    let served: mend::rollout::Served = [(Gr::KIND.to_owned(), vec![Some("v2".to_owned())])]
        .into_iter()
        .collect();
    let plan = mend::rollout::plan(&env.store.rollout_routes().await.unwrap(), &served);
    let claimed = env
        .store
        .claim(mend::store::ClaimParams {
            queue: "elsewhere".into(),
            kinds: plan.kinds,
            limit: 1,
            lease_owner: "ghost".into(),
            lease_duration: Duration::from_millis(1),
            now: Utc::now(),
            routes: plan.routes,
            ahead: 0,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].version.as_deref(), Some("v2"));
    let lost = poll(
        "the lost attempt counted",
        Duration::from_secs(10),
        || async {
            let counts = w.version_stats().all();
            let lost = counts
                .iter()
                .find(|((k, v), _)| k == Gr::KIND && v == "v2")
                .map(|(_, c)| c.outcomes()[4]);
            match lost {
                Some(("lost", n)) if n > 0 => Ok(n),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(lost, 1);
    w.shutdown(Duration::from_secs(5)).await;
    // Its retry waits as a failed canary attempt's does, so the guard can hand it back to
    // stable before anything claims it.
    let job = env.job(claimed[0].id).await;
    let error = job.errors.last().expect("the lost attempt's error");
    assert_eq!(error.kind, mend::ErrorKind::Lost);
    assert_eq!(error.version.as_deref(), Some("v2"));
    let floor = chrono::Duration::from_std(mend::rollout::CANARY_RETRY_FLOOR).unwrap();
    // Stored to the microsecond; the error's time keeps nanoseconds.
    let tick = chrono::Duration::microseconds(1);
    assert!(
        job.run_at + tick >= error.at + floor,
        "retry at {} for a loss at {}",
        job.run_at,
        error.at
    );
}

/// Stable never fails and takes no time; canary v2 never fails and takes 200 ms.
fn slow_canary() -> Registry {
    let mut reg = Registry::new();
    reg.register_fn(failing(0, false));
    reg.register_version_fn("v2", |_ctx: JobContext, _g: Gr| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<(), JobError>(())
    });
    reg
}

/// After a cut-off of the 600 jobs' rollout: `after` later, enqueues 100 more, waits for all
/// 700, stops `w`, and checks that none of the 100 ran canary v2. Returns the 700.
async fn late_jobs_run_stable(
    env: &Env,
    w: mend::WorkerHandle,
    after: Duration,
) -> Vec<mend::JobRow> {
    tokio::time::sleep(after).await;
    enqueue(env, 600..700).await;
    let jobs = all_completed(env, 700, Duration::from_secs(60)).await;
    w.shutdown(Duration::from_secs(5)).await;
    let late: Vec<uuid::Uuid> = jobs
        .iter()
        .filter(|j| j.args["n"].as_u64().is_some_and(|n| n >= 600))
        .filter(|j| j.version.as_deref() == Some("v2"))
        .map(|j| j.id)
        .collect();
    assert!(
        late.is_empty(),
        "ran the canary after its cut-off: {late:?}"
    );
    jobs
}

/// The node whose guard cuts a canary off stops claiming for it at once, not at its next
/// heartbeat (a minute away here).
async fn the_deciding_node_stops_claiming_the_canary_at_once(env: Env) {
    // Stored before the worker starts, so its first plan routes it (a rollout starts only
    // while some live node serves the canary: a short-lived one here).
    let first = worker(&env, slow_canary()).await;
    start_at_ten_percent(&env).await;
    first.shutdown(Duration::from_secs(5)).await;
    let w = env
        .worker(slow_canary(), 16, |c| {
            c.heartbeat_interval = Duration::from_secs(60);
            c.lease_duration = Duration::from_secs(300);
        })
        .await;
    enqueue(&env, 0..600).await;
    cut_off(&env, "slow").await;
    let _ = late_jobs_run_stable(&env, w, Duration::from_millis(300)).await;
}

/// An abort made elsewhere reaches a node at once, not at its next heartbeat (a minute away
/// here): on PostgreSQL through another store on the database, as another process would make
/// it (the rollouts table's trigger notifies every node); on SQLite through the node's own
/// store (a change made in another process waits for the heartbeat there).
async fn an_abort_elsewhere_reaches_the_node_at_once(env: Env) {
    // A canary as good as stable: the guard never cuts it off before the test aborts it.
    let first = worker(&env, registry(0, 0, false)).await;
    start_at_ten_percent(&env).await;
    first.shutdown(Duration::from_secs(5)).await;
    let w = env
        .worker(registry(0, 0, false), 16, |c| {
            c.heartbeat_interval = Duration::from_secs(60);
            c.lease_duration = Duration::from_secs(300);
        })
        .await;
    // The node routes the canary: some of a first hundred run it.
    enqueue(&env, 0..100).await;
    let jobs = all_completed(&env, 100, Duration::from_secs(60)).await;
    let on_canary = jobs
        .iter()
        .filter(|j| j.version.as_deref() == Some("v2"))
        .count();
    assert!(on_canary > 0, "no job of the first hundred ran the canary");

    let elsewhere = match env.schema {
        Some(_) => env.reopen().await,
        None => env.store.clone(),
    };
    let id = rollout(&env).await.id;
    let aborted = mend::maintenance::rollouts::request(
        elsewhere.as_ref(),
        id,
        mend::rollout::Request::Abort,
        "test",
        Utc::now(),
    )
    .await
    .expect("abort the rollout");
    assert_eq!(aborted.state, RolloutState::Aborted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    enqueue(&env, 100..300).await;
    let jobs = all_completed(&env, 300, Duration::from_secs(60)).await;
    w.shutdown(Duration::from_secs(5)).await;
    let late: Vec<uuid::Uuid> = jobs
        .iter()
        .filter(|j| j.args["n"].as_u64().is_some_and(|n| n >= 100))
        .filter(|j| j.version.as_deref() == Some("v2"))
        .map(|j| j.id)
        .collect();
    assert!(late.is_empty(), "ran the canary after its abort: {late:?}");
}

/// A canary that never fails but takes 200 ms where stable takes none is cut off by the
/// run-time rule alone, and the jobs enqueued after the cut-off all run on stable.
async fn slow_canary_is_cut_off(env: Env) {
    let w = worker(&env, slow_canary()).await;
    start_at_ten_percent(&env).await;
    enqueue(&env, 0..600).await;
    let cut = cut_off(&env, "slow").await;
    let decision = cut.decisions.last().unwrap();
    assert_eq!(decision.action, Action::CutOff);
    assert_eq!(decision.actor, "guard");
    let ev = decision.evidence.as_ref().expect("evidence");
    assert!(
        ev.breach.contains("p95"),
        "the run-time rule: {}",
        ev.breach
    );
    assert_eq!(ev.canary.failures, 0, "{ev:?}");
    assert!(ev.canary.p95_ms.unwrap() >= 150.0, "{ev:?}");
    assert!(ev.canary.attempts >= GuardConfig::default().min_samples);

    // Nodes pick the cut-off up at their next heartbeat (every 50 ms here): a second is
    // twenty of them, a margin for a loaded machine.
    let jobs = late_jobs_run_stable(&env, w, Duration::from_secs(1)).await;
    // Nothing failed, so nothing was handed back.
    assert!(jobs.iter().all(|j| j.errors.is_empty()));
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Env::new().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(env) = Env::postgres(stringify!($name)).await {
                    super::$name(env).await;
                }
            }
        }
    };
}

both!(bad_canary_is_cut_off);
both!(slow_canary_is_cut_off);
both!(the_deciding_node_stops_claiming_the_canary_at_once);
both!(an_abort_elsewhere_reaches_the_node_at_once);
both!(equal_canary_is_never_cut_off);
both!(good_canary_is_promoted);
both!(bad_requests_store_nothing);
both!(a_lost_canary_attempt_counts_against_its_version);
