//! Rate limits and per-key concurrency limits: what a limit is, and which jobs a claim may
//! start under the limits in force.
//!
//! A limit belongs to one queue (optionally to one kind in it) and may apply per key, the key
//! taken from each job's args by a JSON pointer or set at enqueue
//! ([`NewJob::limit_key`](crate::NewJob::limit_key)). It caps starts per period (a token
//! bucket shared by every node) and/or attempts running at once. Both backends decide a claim
//! on a limited queue with [`admit`], while holding what keeps other claims of that queue out
//! (a row lock on PostgreSQL, the single writer on SQLite), so the decision is race-free
//! across nodes. A queue without limits never reaches this module: its claim is the plain one.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::InvalidJob;

/// Most limits one queue may have (each one is consulted by every claim of the queue).
pub const MAX_LIMITS_PER_QUEUE: usize = 16;

/// How many jobs at the head of a limited queue a claim looks at. Jobs held back by a
/// per-key limit do not block others behind them within this window; past it they do, so a
/// single hot key with more waiting jobs than this can delay other keys until it drains.
pub const CLAIM_WINDOW: usize = 512;

/// At most `max` starts per `per`, shared by every node; up to `burst` at once after a quiet
/// spell (a token bucket of `burst` tokens refilled at `max / per`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Starts allowed per period (at least 1).
    #[serde(deserialize_with = "crate::lenient::int")]
    pub max: u32,
    /// The period, in milliseconds (at least 1).
    #[serde(deserialize_with = "crate::lenient::int")]
    pub per_ms: u64,
    /// Starts allowed at once after a quiet spell; `max` when not set.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::lenient::opt_int"
    )]
    pub burst: Option<u32>,
}

impl Rate {
    /// `max` starts per `per`.
    pub fn new(max: u32, per: Duration) -> Self {
        Rate {
            max,
            per_ms: u64::try_from(per.as_millis()).unwrap_or(u64::MAX),
            burst: None,
        }
    }

    /// Allow up to `burst` starts at once after a quiet spell.
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The bucket's size.
    pub fn capacity(&self) -> f64 {
        f64::from(self.burst.unwrap_or(self.max))
    }

    /// Tokens gained per millisecond.
    fn refill_per_ms(&self) -> f64 {
        f64::from(self.max) / self.per_ms.max(1) as f64
    }

    /// How long an empty bucket takes to fill: a bucket written longer ago than this is full,
    /// the same as no bucket at all, and can be deleted.
    pub fn fills_in(&self) -> Duration {
        Duration::from_secs_f64((self.capacity() / self.refill_per_ms()).ceil() / 1000.0)
    }

    /// Buckets written before this time are full at `now` (see [`Rate::fills_in`]).
    pub fn full_if_written_before(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let fills = chrono::Duration::from_std(self.fills_in()).unwrap_or(chrono::Duration::MAX);
        now.checked_sub_signed(fills)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// A limit on one queue (or one kind in it), optionally per key. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Its name (1–100 characters: letters, digits, `-`, `_`, `.`), unique across queues.
    pub name: String,
    /// The queue whose claims it holds back.
    pub queue: String,
    /// Only jobs of this kind; every kind of the queue when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Per key: a JSON pointer (RFC 6901, e.g. `/customer/id`) into each job's args. A job's
    /// own `limit_key`, set at enqueue, takes precedence; a job with neither shares the key
    /// `null`. Not set: one count for the whole queue (or kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Starts per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Attempts running at once (per key when `key` is set).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::lenient::opt_int"
    )]
    pub concurrency: Option<u32>,
}

impl Limit {
    /// A limit named `name` on `queue` that limits nothing yet: add a rate and/or a
    /// concurrency.
    pub fn new(name: impl Into<String>, queue: impl Into<String>) -> Self {
        Limit {
            name: name.into(),
            queue: queue.into(),
            kind: None,
            key: None,
            rate: None,
            concurrency: None,
        }
    }

    /// Only jobs of `kind`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Per key, the key at this JSON pointer into the args.
    pub fn per_key(mut self, pointer: impl Into<String>) -> Self {
        self.key = Some(pointer.into());
        self
    }

    /// At most this rate of starts.
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// At most `n` running at once.
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = Some(n);
        self
    }

    /// Refuses what would make the limit meaningless or unreadable, naming the field.
    pub fn validate(&self) -> Result<(), InvalidJob> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 100
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(InvalidJob::new(
                "name",
                "must be 1–100 characters: letters, digits, '-', '_' or '.'",
            ));
        }
        // Characters, as the API's schema counts them; NUL cannot be stored by PostgreSQL.
        let bad = |s: &str| s.trim().is_empty() || s.chars().count() > 255 || s.contains('\0');
        if bad(&self.queue) {
            return Err(InvalidJob::new(
                "queue",
                "must be 1–255 characters, not blank, without NUL",
            ));
        }
        if let Some(kind) = &self.kind {
            if bad(kind) {
                return Err(InvalidJob::new(
                    "kind",
                    "must be 1–255 characters, not blank, without NUL, when set",
                ));
            }
        }
        if let Some(pointer) = &self.key {
            check_pointer(pointer).map_err(|why| InvalidJob::new("key", why))?;
        }
        if self.rate.is_none() && self.concurrency.is_none() {
            return Err(InvalidJob::new(
                "rate",
                "a limit needs a rate, a concurrency, or both",
            ));
        }
        if let Some(rate) = &self.rate {
            if rate.max == 0 {
                return Err(InvalidJob::new(
                    "rate.max",
                    "must be at least 1 (pause the queue to stop it)",
                ));
            }
            if rate.per_ms == 0 {
                return Err(InvalidJob::new("rate.per_ms", "must be at least 1 ms"));
            }
            if rate.per_ms > 366 * 24 * 3_600_000 {
                return Err(InvalidJob::new("rate.per_ms", "must be at most a year"));
            }
            if rate.burst == Some(0) {
                return Err(InvalidJob::new("rate.burst", "must be at least 1 when set"));
            }
        }
        if self.concurrency == Some(0) {
            return Err(InvalidJob::new(
                "concurrency",
                "must be at least 1 (pause the queue to stop it)",
            ));
        }
        Ok(())
    }

    /// Whether this limit applies to a job of `kind` on its queue.
    pub fn applies_to(&self, kind: &str) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
    }

    /// The key a job counts under (`""` for a limit that is not per key).
    pub fn key_of(&self, args: &serde_json::Value, limit_key: Option<&str>) -> String {
        if self.key.is_none() {
            return String::new();
        }
        if let Some(k) = limit_key {
            return k.to_owned();
        }
        match self.key.as_deref().and_then(|p| args.pointer(p)) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "null".to_owned(),
        }
    }
}

/// Checks a JSON pointer's syntax (RFC 6901).
fn check_pointer(pointer: &str) -> Result<(), &'static str> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err("must be a JSON pointer: empty or starting with '/', e.g. /customer/id");
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err("'~' in a JSON pointer must be followed by 0 or 1 (~0 is '~', ~1 is '/')");
        }
    }
    Ok(())
}

/// A rate limit's bucket for one key, as stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Tokens left when it was written.
    pub tokens: f64,
    /// When it was written.
    pub at: DateTime<Utc>,
}

impl Bucket {
    /// The tokens it holds at `now`, refilled since it was written.
    pub fn tokens_at(&self, rate: &Rate, now: DateTime<Utc>) -> f64 {
        let elapsed = (now - self.at)
            .num_microseconds()
            .unwrap_or(i64::MAX)
            .max(0) as f64
            / 1000.0;
        (self.tokens + elapsed * rate.refill_per_ms()).min(rate.capacity())
    }
}

/// A job at the head of a limited queue, as the claim sees it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Its kind.
    pub kind: &'a str,
    /// Its args (for per-key limits).
    pub args: &'a serde_json::Value,
    /// The key set at enqueue, if any.
    pub limit_key: Option<&'a str>,
}

/// What the limits of one queue stand at: attempts running per (limit, key) and the rate
/// buckets that have been written.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Attempts running, by (limit name, key).
    pub running: HashMap<(String, String), u32>,
    /// Rate buckets, by (limit name, key). A missing bucket is full.
    pub buckets: HashMap<(String, String), Bucket>,
}

impl Usage {
    /// Counts the running attempts `running` (kind, args, enqueue key) against `limits`.
    pub fn count_running<'a>(
        &mut self,
        limits: &[Limit],
        running: impl IntoIterator<Item = Candidate<'a>>,
    ) {
        for job in running {
            for limit in limits.iter().filter(|l| l.concurrency.is_some()) {
                if limit.applies_to(job.kind) {
                    *self
                        .running
                        .entry((limit.name.clone(), limit.key_of(job.args, job.limit_key)))
                        .or_default() += 1;
                }
            }
        }
    }
}

/// A claim's decision on a limited queue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Admission {
    /// Indexes into the candidates, in their order: the jobs to start.
    pub take: Vec<usize>,
    /// The buckets to write back, by (limit name, key), as they stand after the starts.
    pub buckets: Vec<(String, String, Bucket)>,
    /// Candidates each limit held back, by limit name (only limits that held some).
    pub held: Vec<(String, u32)>,
}

/// Which of `candidates` (the head of the queue, in claim order) may start at `now`, at most
/// `want`, under `limits`, given `usage`. Walks the candidates in order and takes each one
/// every applicable limit has room for; a held job never holds back a job behind it with
/// other keys.
pub fn admit(
    limits: &[Limit],
    candidates: &[Candidate<'_>],
    usage: &Usage,
    now: DateTime<Utc>,
    want: usize,
) -> Admission {
    let mut running = usage.running.clone();
    // Tokens per (limit, key), refilled to `now`, as the walk spends them.
    let mut tokens: HashMap<(String, String), f64> = HashMap::new();
    let mut held: HashMap<&str, u32> = HashMap::new();
    let mut take = Vec::new();
    for (i, job) in candidates.iter().enumerate() {
        if take.len() >= want {
            break;
        }
        let applicable: Vec<(&Limit, String)> = limits
            .iter()
            .filter(|l| l.applies_to(job.kind))
            .map(|l| (l, l.key_of(job.args, job.limit_key)))
            .collect();
        let blocked_by = applicable.iter().find(|(limit, key)| {
            let slot = (limit.name.clone(), key.clone());
            let full = limit
                .concurrency
                .is_some_and(|max| running.get(&slot).copied().unwrap_or(0) >= max);
            let dry = limit.rate.as_ref().is_some_and(|rate| {
                let have = *tokens.entry(slot.clone()).or_insert_with(|| {
                    usage
                        .buckets
                        .get(&slot)
                        .map_or(rate.capacity(), |b| b.tokens_at(rate, now))
                });
                have < 1.0
            });
            full || dry
        });
        if let Some((limit, _)) = blocked_by {
            *held.entry(limit.name.as_str()).or_default() += 1;
            continue;
        }
        for (limit, key) in applicable {
            let slot = (limit.name.clone(), key);
            if limit.concurrency.is_some() {
                *running.entry(slot.clone()).or_default() += 1;
            }
            if limit.rate.is_some() {
                if let Some(t) = tokens.get_mut(&slot) {
                    *t -= 1.0;
                }
            }
        }
        take.push(i);
    }
    let mut buckets: Vec<(String, String, Bucket)> = tokens
        .into_iter()
        .filter(|(slot, t)| {
            // Untouched full buckets need no row; touched ones do.
            let limit = limits.iter().find(|l| l.name == slot.0);
            let cap = limit
                .and_then(|l| l.rate.as_ref())
                .map_or(0.0, Rate::capacity);
            *t < cap || usage.buckets.contains_key(slot)
        })
        .map(|((name, key), t)| {
            // Claims on several nodes take `now` before they queue for the limit's lock, so
            // they can arrive out of order: a bucket's time never goes back, or the time
            // between the two would be refilled twice.
            let at = usage
                .buckets
                .get(&(name.clone(), key.clone()))
                .map_or(now, |b| b.at.max(now));
            (name, key, Bucket { tokens: t, at })
        })
        .collect();
    buckets.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let mut held: Vec<(String, u32)> = held.into_iter().map(|(n, c)| (n.to_owned(), c)).collect();
    held.sort();
    Admission {
        take,
        buckets,
        held,
    }
}

/// Why a waiting job is held back by a limit right now, for "why isn't this job running?".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hold {
    /// The limit.
    pub limit: String,
    /// The key the job counts under (empty for a limit that is not per key).
    pub key: String,
    /// What is exhausted, in words.
    pub reason: String,
    /// When a start is next allowed, for a rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

/// The limits that would hold back a job of `kind` with `args` and `limit_key` at `now`.
pub fn holds(
    limits: &[Limit],
    kind: &str,
    args: &serde_json::Value,
    limit_key: Option<&str>,
    usage: &Usage,
    now: DateTime<Utc>,
) -> Vec<Hold> {
    let mut out = Vec::new();
    for limit in limits.iter().filter(|l| l.applies_to(kind)) {
        let key = limit.key_of(args, limit_key);
        let slot = (limit.name.clone(), key.clone());
        if let Some(max) = limit.concurrency {
            let n = usage.running.get(&slot).copied().unwrap_or(0);
            if n >= max {
                out.push(Hold {
                    limit: limit.name.clone(),
                    key: key.clone(),
                    reason: format!("{n} running, at most {max} at once"),
                    until: None,
                });
            }
        }
        if let (Some(rate), Some(bucket)) = (&limit.rate, usage.buckets.get(&slot)) {
            let have = bucket.tokens_at(rate, now);
            if have < 1.0 {
                let wait_ms = ((1.0 - have) / rate.refill_per_ms()).ceil() as i64;
                out.push(Hold {
                    limit: limit.name.clone(),
                    key,
                    reason: format!("{} starts per {} ms used up", rate.max, rate.per_ms),
                    until: Some(now + chrono::Duration::milliseconds(wait_ms)),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap_or_default()
    }

    fn cands(args: &[serde_json::Value]) -> Vec<Candidate<'_>> {
        args.iter()
            .map(|a| Candidate {
                kind: "k",
                args: a,
                limit_key: None,
            })
            .collect()
    }

    #[test]
    fn a_concurrency_limit_per_key_skips_busy_keys_but_not_the_jobs_behind_them() {
        let limits = [Limit::new("acct", "q").per_key("/a").concurrency(1)];
        let args = [
            json!({"a": 1}),
            json!({"a": 1}),
            json!({"a": 2}),
            json!({"a": 3}),
        ];
        let mut usage = Usage::default();
        usage.count_running(&limits, cands(&[json!({"a": 3})]));
        let got = admit(&limits, &cands(&args), &usage, t(0), 10);
        assert_eq!(got.take, vec![0, 2]);
        assert_eq!(got.held, vec![("acct".to_owned(), 2)]);
    }

    #[test]
    fn a_rate_limit_spends_the_burst_then_refills_at_its_rate() {
        let limits =
            [Limit::new("r", "q").rate(Rate::new(10, Duration::from_secs(1)).with_burst(3))];
        let args = vec![json!({}); 20];
        let got = admit(&limits, &cands(&args), &Usage::default(), t(0), 20);
        assert_eq!(got.take.len(), 3);
        let (_, _, bucket) = got.buckets[0].clone();
        assert!(bucket.tokens.abs() < 1e-9);
        let mut usage = Usage::default();
        usage.buckets.insert(("r".into(), String::new()), bucket);
        // 10 per second: 450 ms later 4.5 tokens have come back, capped at the burst.
        let later = admit(&limits, &cands(&args), &usage, t(450), 20);
        assert_eq!(later.take.len(), 3);
        let sooner = admit(&limits, &cands(&args), &usage, t(250), 20);
        assert_eq!(sooner.take.len(), 2);
        let hold = holds(&limits, "k", &json!({}), None, &usage, t(50));
        assert_eq!(hold.len(), 1);
        assert_eq!(hold[0].until, Some(t(100)));
    }

    #[test]
    fn a_claim_that_took_its_time_before_the_last_one_refills_nothing() {
        let limits =
            [Limit::new("r", "q").rate(Rate::new(10, Duration::from_secs(1)).with_burst(1))];
        let args = vec![json!({}); 3];
        let mut usage = Usage::default();
        usage.buckets.insert(
            ("r".into(), String::new()),
            Bucket {
                tokens: 0.0,
                at: t(1000),
            },
        );
        // A claim that read the clock at 950 ms but ran after the one at 1000 ms.
        let late = admit(&limits, &cands(&args), &usage, t(950), 3);
        assert!(late.take.is_empty());
        assert_eq!(late.buckets[0].2.at, t(1000), "the bucket's time stays put");
        // 100 ms after the bucket's time, one token is back.
        assert_eq!(
            admit(&limits, &cands(&args), &usage, t(1100), 3).take.len(),
            1
        );
    }

    #[test]
    fn an_empty_bucket_fills_in_burst_over_rate() {
        let rate = Rate::new(10, Duration::from_secs(1)).with_burst(30);
        assert_eq!(rate.fills_in(), Duration::from_secs(3));
        let empty = Bucket {
            tokens: 0.0,
            at: t(0),
        };
        assert!((empty.tokens_at(&rate, t(3000)) - rate.capacity()).abs() < 1e-9);
        assert!(empty.tokens_at(&rate, t(2999)) < rate.capacity());
    }

    #[test]
    fn a_kind_limit_leaves_other_kinds_alone_and_want_caps_the_take() {
        let limits = [Limit::new("one", "q").kind("slow").concurrency(1)];
        let args = [json!({}), json!({}), json!({})];
        let jobs: Vec<Candidate<'_>> = ["slow", "slow", "fast"]
            .iter()
            .zip(&args)
            .map(|(k, a)| Candidate {
                kind: k,
                args: a,
                limit_key: None,
            })
            .collect();
        assert_eq!(
            admit(&limits, &jobs, &Usage::default(), t(0), 10).take,
            vec![0, 2]
        );
        assert_eq!(
            admit(&limits, &jobs, &Usage::default(), t(0), 1).take,
            vec![0]
        );
    }

    #[test]
    fn the_enqueue_key_wins_over_the_pointer_and_a_missing_key_is_null() {
        let limit = Limit::new("l", "q").per_key("/tenant/id").concurrency(1);
        let args = json!({"tenant": {"id": 7}});
        assert_eq!(limit.key_of(&args, None), "7");
        assert_eq!(limit.key_of(&args, Some("vip")), "vip");
        assert_eq!(limit.key_of(&json!({}), None), "null");
        assert_eq!(
            Limit::new("l", "q").concurrency(1).key_of(&args, Some("x")),
            ""
        );
    }

    #[test]
    fn bad_limits_name_the_field() {
        let field = |l: Limit| l.validate().err().map(|e| e.field);
        assert_eq!(field(Limit::new("", "q").concurrency(1)), Some("name"));
        assert_eq!(field(Limit::new("a b", "q").concurrency(1)), Some("name"));
        assert_eq!(field(Limit::new("l", " ").concurrency(1)), Some("queue"));
        assert_eq!(field(Limit::new("l", "q")), Some("rate"));
        assert_eq!(
            field(Limit::new("l", "q").concurrency(0)),
            Some("concurrency")
        );
        assert_eq!(
            field(Limit::new("l", "q").rate(Rate::new(0, Duration::from_secs(1)))),
            Some("rate.max")
        );
        assert_eq!(
            field(Limit::new("l", "q").rate(Rate::new(1, Duration::ZERO))),
            Some("rate.per_ms")
        );
        assert_eq!(
            field(Limit::new("l", "q").per_key("customer").concurrency(1)),
            Some("key")
        );
        assert_eq!(
            field(Limit::new("l", "q").per_key("/a~2").concurrency(1)),
            Some("key")
        );
        assert!(Limit::new("l", "q")
            .per_key("/a~1b")
            .concurrency(1)
            .validate()
            .is_ok());
    }

    proptest::proptest! {
        /// Whatever the candidates and the usage, a take never puts a key over its
        /// concurrency, never spends more tokens than the bucket holds, and keeps claim order.
        #[test]
        fn admit_never_oversteps(keys in proptest::collection::vec(0u8..5, 0..60),
                                 running in proptest::collection::vec(0u8..5, 0..6),
                                 max in 1u32..4, burst in 1u32..8, want in 0usize..40) {
            let limits = [
                Limit::new("c", "q").per_key("/k").concurrency(max),
                Limit::new("r", "q").rate(Rate::new(5, Duration::from_secs(1)).with_burst(burst)),
            ];
            let args: Vec<_> = keys.iter().map(|k| json!({"k": k})).collect();
            let run_args: Vec<_> = running.iter().map(|k| json!({"k": k})).collect();
            let mut usage = Usage::default();
            usage.count_running(&limits, cands(&run_args));
            let got = admit(&limits, &cands(&args), &usage, t(0), want);
            proptest::prop_assert!(got.take.len() <= want);
            proptest::prop_assert!(got.take.len() as u32 <= burst);
            proptest::prop_assert!(got.take.windows(2).all(|w| w[0] < w[1]));
            for k in 0u8..5 {
                let before = running.iter().filter(|r| **r == k).count() as u32;
                let taken = got.take.iter().filter(|i| keys[**i] == k).count() as u32;
                proptest::prop_assert!(taken == 0 || before + taken <= max);
            }
        }
    }
}
