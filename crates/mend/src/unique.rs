//! Unique jobs: at most one job per (kind, chosen args, queue or not, period) while that job is
//! in given states. This module owns the options ([`UniqueOpts`]), their validation, and the
//! pure function that turns them into the key and state mask a store writes
//! ([`UniqueOpts::key`], [`UniqueOpts::states_mask`]). It touches no database: the stores
//! enforce uniqueness with a partial unique index over those two columns, so two nodes
//! inserting the same job at once get one row, decided by the database.
//!
//! How the index decides: a row takes part when its `unique_key` is set and its `state` is one
//! of its `unique_states` (bit `1 << i` for the i-th state of [`JobState::ALL`]; NULL means
//! every state, which is what an idempotency key, [`crate::NewJob::with_unique_key`], does). A
//! job that moves out of its unique states (by default: when it finishes) frees its key without
//! any other statement. The unique states always include the four unfinished ones, so a row is
//! in the index from its insert until it finishes, and can only come back by a retry by hand
//! (which the stores refuse, clearly, while another job holds the key).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::job::{InvalidJob, JobRow, JobState};

/// The readable start of every key this module makes, so a person can tell a computed key
/// from an idempotency key at a glance.
pub const KEY_PREFIX: &str = "unique:";

/// The states a unique job holds its key in unless told otherwise: until it finishes.
pub const DEFAULT_STATES: [JobState; 4] = [
    JobState::Scheduled,
    JobState::Available,
    JobState::Running,
    JobState::Retryable,
];

/// Longest period accepted (a year and a day): past it, "one per period" means "one ever"
/// and a person should say so with states instead.
pub const MAX_PERIOD: Duration = Duration::from_secs(366 * 24 * 3600);

/// Most args chosen for a key; more is a sign that `by_args` (all of them) was meant.
pub const MAX_ARG_KEYS: usize = 32;

/// Which args make two jobs the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ByArgs {
    /// Args do not matter: one job per kind (and queue, and period).
    #[default]
    None,
    /// All args (compared as canonical JSON: key order and spacing do not matter).
    All,
    /// Only these: top-level keys (`customer`) or JSON pointers (`/order/id`, RFC 6901). A key
    /// and the pointer to it (`customer`, `/customer`) are the same choice. An absent value
    /// differs from `null`.
    Keys(Vec<String>),
}

/// How a job is unique. Build with [`UniqueOpts::new`] and the builder methods; attach with
/// [`crate::NewJob::with_unique`].
///
/// ```
/// use std::time::Duration;
/// use mend::{JobState, NewJob, unique::UniqueOpts};
/// let job = NewJob::new("sync_customer", serde_json::json!({"customer": 7, "full": true}))
///     .with_unique(UniqueOpts::new()
///         .by_arg_keys(["customer"])          // same customer: same job
///         .per_queue()                       // one per queue, not across queues
///         .period(Duration::from_secs(3600)) // one per hour
///         .with_state(JobState::Completed)); // and not again the same hour once done
/// assert!(job.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueOpts {
    /// Which args count.
    #[serde(default)]
    pub by_args: ByArgs,
    /// Unique within the job's queue (default: across all queues).
    #[serde(default)]
    pub per_queue: bool,
    /// Unique within each period of this length, counted from the Unix epoch in UTC, by the
    /// job's `run_at` (its enqueue time when it runs now). `None`: no period.
    #[serde(default)]
    pub period: Option<Duration>,
    /// While the existing job is in one of these, a new one is a duplicate. Must include the
    /// unfinished states ([`DEFAULT_STATES`]); add `completed`, `cancelled` or `discarded` to
    /// keep the key after the job finishes (until it is pruned).
    #[serde(default = "default_states")]
    pub states: Vec<JobState>,
}

fn default_states() -> Vec<JobState> {
    DEFAULT_STATES.to_vec()
}

impl Default for UniqueOpts {
    fn default() -> Self {
        UniqueOpts::new()
    }
}

impl UniqueOpts {
    /// One job per kind, across queues, with no period, while it has not finished.
    pub fn new() -> Self {
        UniqueOpts {
            by_args: ByArgs::None,
            per_queue: false,
            period: None,
            states: default_states(),
        }
    }

    /// All args count.
    pub fn by_args(mut self) -> Self {
        self.by_args = ByArgs::All;
        self
    }

    /// Only these args count: top-level keys or JSON pointers.
    pub fn by_arg_keys<S: Into<String>>(mut self, keys: impl IntoIterator<Item = S>) -> Self {
        self.by_args = ByArgs::Keys(keys.into_iter().map(Into::into).collect());
        self
    }

    /// One per queue instead of one across queues.
    pub fn per_queue(mut self) -> Self {
        self.per_queue = true;
        self
    }

    /// One per period (see [`UniqueOpts::period`]).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = Some(period);
        self
    }

    /// The whole set of states the existing job holds its key in (must include the unfinished
    /// ones, [`DEFAULT_STATES`]).
    pub fn states(mut self, states: impl IntoIterator<Item = JobState>) -> Self {
        self.states = states.into_iter().collect();
        self
    }

    /// Also hold the key in `state` (e.g. [`JobState::Completed`]).
    pub fn with_state(mut self, state: JobState) -> Self {
        if !self.states.contains(&state) {
            self.states.push(state);
        }
        self
    }

    /// The states as the stored bitmask: bit `1 << i` for `JobState::ALL[i]`.
    pub fn states_mask(&self) -> i32 {
        self.states.iter().fold(0, |m, s| m | state_bit(*s))
    }

    /// Checks what would make the options meaningless; the field is named as the HTTP API
    /// names it.
    pub fn validate(&self) -> Result<(), InvalidJob> {
        if let ByArgs::Keys(keys) = &self.by_args {
            if keys.is_empty() || keys.len() > MAX_ARG_KEYS {
                return Err(InvalidJob {
                    field: "unique.by_args",
                    problem: "must list 1 to 32 args (top-level keys or JSON pointers), or be true for all args",
                });
            }
            if keys.iter().any(|k| arg_pointer(k).is_err()) {
                return Err(InvalidJob {
                    field: "unique.by_args",
                    problem: "must be top-level keys (customer) or JSON pointers (/order/id; `~` only as ~0 or ~1)",
                });
            }
        }
        if let Some(p) = self.period {
            if p.is_zero() || p > MAX_PERIOD {
                return Err(InvalidJob {
                    field: "unique.period",
                    problem: "must be more than 0 and at most 366d",
                });
            }
        }
        if DEFAULT_STATES.iter().any(|s| !self.states.contains(s)) {
            return Err(InvalidJob {
                field: "unique.states",
                problem: "must include scheduled, available, running and retryable (a job is unique from its enqueue until it finishes); add completed, cancelled or discarded to keep the key after that",
            });
        }
        Ok(())
    }

    /// The key of a job of `kind` on `queue` with `args`, to run at `run_at`: `unique:<kind>:`
    /// and the SHA-256 (hex) of what the options say counts. Pure: the same inputs give the
    /// same key on every node and every version of this format.
    pub fn key(
        &self,
        kind: &str,
        queue: &str,
        args: &serde_json::Value,
        run_at: DateTime<Utc>,
    ) -> String {
        let queue = if self.per_queue {
            serde_json::Value::String(queue.to_owned())
        } else {
            serde_json::Value::Null
        };
        let args = match &self.by_args {
            ByArgs::None => serde_json::Value::Null,
            ByArgs::All => args.clone(),
            ByArgs::Keys(keys) => {
                let mut chosen = serde_json::Map::new();
                for k in keys {
                    // Validated before any key is made; an invalid one selects nothing.
                    if let Ok(p) = arg_pointer(k) {
                        if let Some(v) = args.pointer(&p) {
                            chosen.insert(p, v.clone());
                        }
                    }
                }
                serde_json::Value::Object(chosen)
            }
        };
        let bucket = match self.period {
            Some(p) => {
                let ms = i64::try_from(p.as_millis()).unwrap_or(i64::MAX).max(1);
                serde_json::Value::from(run_at.timestamp_millis().div_euclid(ms) * ms)
            }
            None => serde_json::Value::Null,
        };
        // A versioned, self-delimiting document: no two different inputs share it.
        let doc = serde_json::json!(["mend-unique-1", kind, queue, args, bucket]);
        let mut text = String::new();
        canonical(&doc, &mut text);
        let digest = Sha256::digest(text.as_bytes());
        let mut key = String::with_capacity(KEY_PREFIX.len() + kind.len() + 65);
        key.push_str(KEY_PREFIX);
        key.push_str(kind);
        key.push(':');
        for b in digest.iter() {
            key.push_str(&format!("{b:02x}"));
        }
        key
    }
}

/// The bit of `state` in a unique-states mask.
pub fn state_bit(state: JobState) -> i32 {
    let i = JobState::ALL.iter().position(|s| *s == state).unwrap_or(0);
    1 << i
}

/// The states of a stored mask, in [`JobState::ALL`] order; `None` (every state) stays `None`.
pub fn states_of_mask(mask: Option<i32>) -> Option<Vec<JobState>> {
    mask.map(|m| {
        JobState::ALL
            .into_iter()
            .filter(|s| m & state_bit(*s) != 0)
            .collect()
    })
}

/// A chosen arg as a JSON pointer: a pointer is checked (RFC 6901: `~` only as `~0`, `~1`);
/// a top-level key becomes the pointer to it.
pub fn arg_pointer(key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("an empty arg name; give a top-level key such as customer or a JSON pointer such as /order/id".into());
    }
    if let Some(rest) = key.strip_prefix('/') {
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "{key:?} is not a JSON pointer: `~` must be written ~0 and `/` inside a name ~1"
                ));
            }
        }
        Ok(key.to_owned())
    } else {
        Ok(format!("/{}", key.replace('~', "~0").replace('/', "~1")))
    }
}

/// Writes `v` as canonical JSON: object keys sorted by their bytes, no spaces, and whole
/// numbers written the same whether they came as `1` or `1.0`.
fn canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => out.push_str(&v.to_string()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                out.push_str(&(f as i64).to_string())
            }
            _ => out.push_str(&n.to_string()),
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(item, out);
            }
            out.push('}');
        }
    }
}

/// Parses a period in the project's duration grammar: whole numbers with units `ms`, `s`,
/// `m`, `h`, `d`, no spaces (`500ms`, `30s`, `1h30m`, `7d`) — the grammar of every duration in
/// the CLI and `mend.toml`, kept here too so the server needs no CLI code.
pub fn parse_period(s: &str) -> Result<Duration, String> {
    const ACCEPTED: &str =
        "use a whole number with a unit (ms, s, m, h or d), e.g. 500ms, 30s, 1h, 1h30m";
    let bad = || format!("{s:?} is not a duration; {ACCEPTED}");
    if s.is_empty() || s.len() > 64 {
        return Err(bad());
    }
    if s.contains('.') {
        return Err(format!(
            "{s:?} is not a duration: whole numbers only (90m, not 1.5h); {ACCEPTED}"
        ));
    }
    if s.contains(char::is_whitespace) {
        return Err(format!(
            "{s:?} is not a duration: no spaces (1h30m, not 1h 30m); {ACCEPTED}"
        ));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let per_ms: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("{s:?} needs a unit; {ACCEPTED}")),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = total.saturating_add(n.saturating_mul(per_ms));
    }
    Ok(Duration::from_millis(
        u64::try_from(total).unwrap_or(u64::MAX),
    ))
}

/// The result of enqueueing one job when duplicates are possible (unique options or an
/// idempotency key): the job stored, and whether it was already there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Enqueued {
    /// The new job, or the existing one that made this enqueue a duplicate.
    #[serde(flatten)]
    pub job: JobRow,
    /// `true` when no job was inserted because an existing one holds the key.
    pub duplicate: bool,
}

impl Enqueued {
    /// Pairs what [`crate::Store::insert_many`] returned with the ids of the jobs asked for (in
    /// the same order): a row with another id is the existing job holding the key.
    pub fn from_rows(asked: &[uuid::Uuid], rows: Vec<JobRow>) -> Vec<Enqueued> {
        rows.into_iter()
            .zip(asked)
            .map(|(job, id)| Enqueued {
                duplicate: job.id != *id,
                job,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn keys_depend_on_exactly_what_the_options_say() {
        let t = at("2026-01-01T10:15:00Z");
        let by_kind = UniqueOpts::new();
        let a = json!({"customer": 7, "n": 1});
        let b = json!({"customer": 7, "n": 2});
        assert_eq!(
            by_kind.key("k", "q", &a, t),
            by_kind.key("k", "other", &b, t)
        );
        assert_ne!(by_kind.key("k", "q", &a, t), by_kind.key("k2", "q", &a, t));
        assert!(by_kind.key("k", "q", &a, t).starts_with("unique:k:"));

        let all = UniqueOpts::new().by_args();
        assert_ne!(all.key("k", "q", &a, t), all.key("k", "q", &b, t));
        let reordered: serde_json::Value =
            serde_json::from_str(r#"{ "n": 1.0, "customer": 7 }"#).unwrap();
        assert_eq!(all.key("k", "q", &a, t), all.key("k", "q", &reordered, t));

        let subset = UniqueOpts::new().by_arg_keys(["customer"]);
        assert_eq!(subset.key("k", "q", &a, t), subset.key("k", "q", &b, t));
        let pointer = UniqueOpts::new().by_arg_keys(["/customer"]);
        assert_eq!(subset.key("k", "q", &a, t), pointer.key("k", "q", &a, t));
        assert_ne!(
            subset.key("k", "q", &json!({}), t),
            subset.key("k", "q", &json!({"customer": null}), t),
            "absent is not null"
        );

        let per_queue = UniqueOpts::new().per_queue();
        assert_ne!(
            per_queue.key("k", "q", &a, t),
            per_queue.key("k", "r", &a, t)
        );
    }

    #[test]
    fn periods_bucket_by_run_at() {
        let hourly = UniqueOpts::new().period(Duration::from_secs(3600));
        let args = json!({});
        let k = |s| hourly.key("k", "q", &args, at(s));
        assert_eq!(k("2026-01-01T10:00:00Z"), k("2026-01-01T10:59:59.999Z"));
        assert_ne!(k("2026-01-01T10:59:59.999Z"), k("2026-01-01T11:00:00Z"));
        // Before the epoch too: buckets do not fold around zero.
        assert_ne!(k("1969-12-31T23:30:00Z"), k("1970-01-01T00:30:00Z"));
    }

    #[test]
    fn validation_names_the_field() {
        assert!(UniqueOpts::new().validate().is_ok());
        let f = |o: UniqueOpts| o.validate().unwrap_err().field;
        assert_eq!(f(UniqueOpts::new().by_arg_keys(["/a~2"])), "unique.by_args");
        assert_eq!(
            f(UniqueOpts::new().by_arg_keys(Vec::<String>::new())),
            "unique.by_args"
        );
        assert_eq!(f(UniqueOpts::new().period(Duration::ZERO)), "unique.period");
        assert_eq!(
            f(UniqueOpts::new().states([JobState::Completed])),
            "unique.states"
        );
        let all = UniqueOpts::new()
            .with_state(JobState::Completed)
            .with_state(JobState::Cancelled)
            .with_state(JobState::Discarded);
        assert!(all.validate().is_ok());
        assert_eq!(all.states_mask(), 127);
        assert_eq!(UniqueOpts::new().states_mask(), 15);
        assert_eq!(
            states_of_mask(Some(15)).unwrap(),
            DEFAULT_STATES.to_vec(),
            "mask round trip"
        );
    }

    #[test]
    fn pointers_and_periods_parse() {
        assert_eq!(arg_pointer("a/b~c").unwrap(), "/a~1b~0c");
        assert_eq!(arg_pointer("/order/id").unwrap(), "/order/id");
        assert!(arg_pointer("/x~").is_err());
        assert!(arg_pointer("").is_err());
        assert_eq!(parse_period("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_period("250ms").unwrap(), Duration::from_millis(250));
        for bad in ["", "1", "1.5s", "1 h", "h", "1w"] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_key_format_is_stable() {
        // Stored keys must keep matching after an upgrade: changing the format is a migration.
        let key = UniqueOpts::new().by_args().key(
            "k",
            "q",
            &json!({"b": [1, {"y": 2, "x": 1}], "a": "é"}),
            at("2026-01-01T00:00:00Z"),
        );
        // sha256 of `["mend-unique-1","k",null,{"a":"é","b":[1,{"x":1,"y":2}]},null]`.
        assert_eq!(
            key,
            "unique:k:efbd0b0ed7239d0f52ec4efde48cb4d91b518944f39c46ebe0ffdf4d7b063282"
        );
        let again = UniqueOpts::new().by_args().key(
            "k",
            "q",
            &json!({"a": "é", "b": [1, {"x": 1, "y": 2}]}),
            at("2026-06-01T00:00:00Z"),
        );
        assert_eq!(key, again, "no period: time does not matter");
    }
}
