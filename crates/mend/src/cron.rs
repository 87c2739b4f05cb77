//! Periodic jobs: the schedule model, its parsing and validation, which slots are due, and
//! the catch-up policy after downtime. Everything here is pure (no store, no clock): the
//! leader's scheduler (`maintenance::scheduler`) feeds it the current time and the stored
//! schedule, and the store makes the result durable with a compare-and-set.
//!
//! A schedule names a cron expression (5 fields, or 6 with seconds first, or a shorthand such
//! as `@hourly`) evaluated in an IANA time zone. Each time it matches is a *slot*. The job of
//! a slot carries the unique key `cron:<name>:<slot in RFC 3339 UTC>` and the tag
//! `cron:<name>`, so however many nodes insert a slot, the database keeps one job for it.
//!
//! Daylight saving: slots are computed on the wall clock of the schedule's zone by `croner`
//! (the Open Cron Pattern Specification's rules): a fixed time that does not exist on the day
//! the clocks go forward runs once, at the first instant after the gap; a fixed time that
//! happens twice on the day the clocks go back runs once, at its first occurrence.
//!
//! Catch-up after downtime (every slot between the stored next slot and now is *due*):
//! - `none`: only a slot at most [`ON_TIME_GRACE`] old runs; every older due slot is skipped.
//! - `latest`: the most recent due slot runs, however old; the older ones are skipped.
//! - `all`: the most recent `catch_up_max` due slots run, oldest first; older ones are skipped.
//!
//! Skipped slots are recorded on the schedule (the most recent [`SKIPPED_KEPT`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::{JobRow, NewJob, DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE};

/// The zone a schedule is evaluated in when none is given.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// How many missed slots `all` runs by default: a day of an hourly schedule, enough to make
/// up for a restart or a short outage without flooding a queue after a long one.
pub const DEFAULT_CATCH_UP_MAX: u32 = 24;

/// The largest `catch_up_max` accepted: one pass inserts at most this many jobs per schedule.
pub const MAX_CATCH_UP_MAX: u32 = 1000;

/// How many recent runs (slot and job) a schedule keeps, for "what ran lately".
pub const RECENT_RUNS_KEPT: usize = 20;

/// How many skipped slots a schedule keeps (the most recent ones).
pub const SKIPPED_KEPT: usize = 100;

/// How late a slot may be seen and still count as on time under the `none` policy. The
/// scheduler looks every quarter second; a leader change on PostgreSQL takes about a second
/// or two. Five seconds covers both, and no more.
pub const ON_TIME_GRACE: Duration = Duration::from_secs(5);

/// The longest schedule name (it is part of every job's unique key).
pub const MAX_NAME_LEN: usize = 128;

/// The prefix of a cron job's unique key and tag.
pub const KEY_PREFIX: &str = "cron:";

/// A schedule's declaration was refused. Names the field and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CronError {
    /// The field at fault (`name`, `schedule`, `timezone`, `catch_up`, ...).
    pub field: &'static str,
    /// What is wrong, and what would be right.
    pub message: String,
}

impl CronError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        CronError {
            field,
            message: message.into(),
        }
    }
}

/// What a schedule does with slots missed while no scheduler ran (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Run only a slot that is at most [`ON_TIME_GRACE`] late.
    None,
    /// Run the most recent missed slot.
    #[default]
    Latest,
    /// Run every missed slot, up to `catch_up_max` of the most recent.
    All,
}

impl CatchUp {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Latest => "latest",
            CatchUp::All => "all",
        }
    }
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CatchUp {
    type Err = CronError;
    fn from_str(s: &str) -> Result<Self, CronError> {
        match s {
            "none" => Ok(CatchUp::None),
            "latest" => Ok(CatchUp::Latest),
            "all" => Ok(CatchUp::All),
            other => Err(CronError::new(
                "catch_up",
                format!("unknown catch-up policy {other:?}: use none, latest or all"),
            )),
        }
    }
}

/// A parsed cron expression in a time zone: computes slots.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses `expression` (5 fields; 6 with seconds first; or `@yearly`, `@monthly`,
    /// `@weekly`, `@daily`, `@hourly`) in the IANA zone `timezone` (e.g. `Europe/Berlin`).
    pub fn parse(expression: &str, timezone: &str) -> Result<Schedule, CronError> {
        let tz: Tz = timezone.parse().map_err(|_| {
            CronError::new(
                "timezone",
                format!(
                    "unknown time zone {timezone:?}: use an IANA name such as UTC or Europe/Berlin"
                ),
            )
        })?;
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(expression.trim())
            .map_err(|e| {
                CronError::new(
                    "schedule",
                    format!(
                        "{expression:?} is not a cron expression ({e}); write 5 fields (minute hour day month weekday), 6 with seconds first, or @hourly/@daily/@weekly/@monthly/@yearly"
                    ),
                )
            })?;
        let schedule = Schedule { cron, tz };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(CronError::new(
                "schedule",
                format!("{expression:?} never matches a time"),
            ));
        }
        Ok(schedule)
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|s| s.with_timezone(&Utc))
    }

    /// The slots in `from..=now`, the most recent `limit` of them, oldest first; `true` when
    /// older due slots were left out.
    pub fn due(
        &self,
        from: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> (Vec<DateTime<Utc>>, bool) {
        let mut out = Vec::new();
        if from > now || limit == 0 {
            return (out, false);
        }
        // Walk back from now: after a long outage only the most recent slots matter, and the
        // walk stays as short as `limit` however long the outage was.
        let mut cur = self
            .cron
            .find_previous_occurrence(&now.with_timezone(&self.tz), true);
        let mut more = false;
        while let Ok(slot) = cur {
            let utc = slot.with_timezone(&Utc);
            if utc < from {
                break;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(utc);
            cur = self.cron.find_previous_occurrence(&slot, false);
        }
        out.reverse();
        (out, more)
    }
}

/// What one scheduler pass does with one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Slots to insert jobs for, oldest first.
    pub run: Vec<DateTime<Utc>>,
    /// Due slots that will not run, oldest first.
    pub skipped: Vec<DateTime<Utc>>,
    /// Due slots older than the ones listed were also skipped (a long outage).
    pub more_skipped: bool,
    /// The schedule's next slot after this pass (the first one after `now`).
    pub next_slot: DateTime<Utc>,
}

/// Decides which due slots run and which are skipped (see the module docs for the policies).
/// `next_slot` is the stored next slot: every slot from it up to `now` is due.
pub fn plan(
    schedule: &Schedule,
    catch_up: CatchUp,
    catch_up_max: u32,
    next_slot: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Plan {
    let max = catch_up_max.clamp(1, MAX_CATCH_UP_MAX) as usize;
    let (due, more_skipped) = schedule.due(next_slot, now, max + SKIPPED_KEPT);
    let keep = match catch_up {
        CatchUp::All => max.min(due.len()),
        CatchUp::Latest => due.len().min(1),
        CatchUp::None => {
            let grace = chrono::Duration::from_std(ON_TIME_GRACE).unwrap_or_default();
            usize::from(due.last().is_some_and(|last| now - *last <= grace))
        }
    };
    let split = due.len() - keep;
    Plan {
        skipped: due[..split].to_vec(),
        run: due[split..].to_vec(),
        more_skipped,
        next_slot: schedule.next_after(now).unwrap_or(DateTime::<Utc>::MAX_UTC),
    }
}

/// A periodic job as declared: in the library (`Worker::builder(..).periodic(..)`), in
/// `mend.toml` (`[[cron]]`) or over the API. Checked by [`Periodic::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Periodic {
    /// Unique name of the schedule (1–128 letters, digits and `_ - . /`).
    pub name: String,
    /// The cron expression.
    pub schedule: String,
    /// IANA time zone the expression is read in.
    pub timezone: String,
    /// The job kind each slot enqueues.
    pub kind: String,
    /// The queue.
    pub queue: String,
    /// The job's args.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub args: serde_json::Value,
    /// Lower runs first.
    pub priority: i16,
    /// Attempts allowed per job.
    pub max_attempts: i32,
    /// Extra tags (the tag `cron:<name>` is always added).
    pub tags: Vec<String>,
    /// What to do with slots missed during downtime.
    pub catch_up: CatchUp,
    /// Most missed slots `all` runs.
    pub catch_up_max: u32,
}

impl Periodic {
    /// A schedule `name` running `kind` with `args` at every slot of `schedule` (UTC, default
    /// queue, catch-up `latest`).
    pub fn new(
        name: impl Into<String>,
        schedule: impl Into<String>,
        kind: impl Into<String>,
        args: serde_json::Value,
    ) -> Self {
        Periodic {
            name: name.into(),
            schedule: schedule.into(),
            timezone: DEFAULT_TIMEZONE.to_owned(),
            kind: kind.into(),
            queue: DEFAULT_QUEUE.to_owned(),
            args,
            priority: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            tags: Vec::new(),
            catch_up: CatchUp::default(),
            catch_up_max: DEFAULT_CATCH_UP_MAX,
        }
    }

    /// Read the expression in this IANA zone.
    pub fn timezone(mut self, tz: impl Into<String>) -> Self {
        self.timezone = tz.into();
        self
    }

    /// Put the jobs on this queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// The jobs' priority.
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// The jobs' attempts.
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Add a tag to the jobs.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// The catch-up policy; `max` bounds `all`.
    pub fn catch_up(mut self, policy: CatchUp, max: u32) -> Self {
        self.catch_up = policy;
        self.catch_up_max = max;
        self
    }

    /// Checks every field; returns the parsed schedule.
    pub fn validate(&self) -> Result<Schedule, CronError> {
        if !valid_name(&self.name) {
            return Err(CronError::new(
                "name",
                format!(
                    "{:?} is not a schedule name: use 1–{MAX_NAME_LEN} letters, digits and _ - . /",
                    self.name
                ),
            ));
        }
        let schedule = Schedule::parse(&self.schedule, &self.timezone)?;
        if self.kind.trim().is_empty()
            || self.kind.chars().count() > 255
            || self.kind.contains('\0')
        {
            return Err(CronError::new(
                "kind",
                "must be 1–255 characters naming a job kind",
            ));
        }
        if self.queue.trim().is_empty()
            || self.queue.chars().count() > 255
            || self.queue.contains('\0')
        {
            return Err(CronError::new(
                "queue",
                "must be 1–255 characters naming a queue",
            ));
        }
        if self.max_attempts < 1 {
            return Err(CronError::new("max_attempts", "must be at least 1"));
        }
        if !(1..=MAX_CATCH_UP_MAX).contains(&self.catch_up_max) {
            return Err(CronError::new(
                "catch_up_max",
                format!("must be 1–{MAX_CATCH_UP_MAX}"),
            ));
        }
        if self.tags.iter().any(|t| t.contains('\0')) {
            return Err(CronError::new("tags", "must not contain NUL characters"));
        }
        Ok(schedule)
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
}

/// A schedule as written in `mend.toml` or sent over the API: every field but `name`,
/// `schedule` and `kind` may be left out. [`PeriodicDecl::into_periodic`] checks it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PeriodicDecl {
    /// Unique name of the schedule.
    #[serde(default)]
    pub name: Option<String>,
    /// Cron expression: 5 fields, 6 with seconds first, or `@hourly`-style.
    #[serde(default)]
    pub schedule: Option<String>,
    /// IANA time zone (default `UTC`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// The job kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// The queue (default `default`).
    #[serde(default)]
    pub queue: Option<String>,
    /// The job's args (default `{}`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Value, required = false))]
    pub args: Option<serde_json::Value>,
    /// Priority (default 0).
    #[serde(default, deserialize_with = "crate::lenient::opt_int")]
    pub priority: Option<i16>,
    /// Attempts per job (default 25).
    #[serde(default, deserialize_with = "crate::lenient::opt_int")]
    pub max_attempts: Option<i32>,
    /// Extra tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// `none`, `latest` (default) or `all`.
    #[serde(default)]
    pub catch_up: Option<String>,
    /// Most missed slots `all` runs (default 24).
    #[serde(default, deserialize_with = "crate::lenient::opt_int")]
    pub catch_up_max: Option<u32>,
}

impl PeriodicDecl {
    /// The checked schedule, or the first field at fault.
    pub fn into_periodic(self) -> Result<Periodic, CronError> {
        let required = |v: Option<String>, field: &'static str| {
            v.ok_or_else(|| CronError::new(field, "is required"))
        };
        let mut p = Periodic::new(
            required(self.name, "name")?,
            required(self.schedule, "schedule")?,
            required(self.kind, "kind")?,
            self.args.unwrap_or_else(|| serde_json::json!({})),
        );
        if let Some(tz) = self.timezone {
            p.timezone = tz;
        }
        if let Some(q) = self.queue {
            p.queue = q;
        }
        if let Some(v) = self.priority {
            p.priority = v;
        }
        if let Some(v) = self.max_attempts {
            p.max_attempts = v;
        }
        if let Some(v) = self.tags {
            p.tags = v;
        }
        if let Some(v) = self.catch_up {
            p.catch_up = v.parse()?;
        }
        if let Some(v) = self.catch_up_max {
            p.catch_up_max = v;
        }
        p.validate()?;
        Ok(p)
    }
}

/// One slot that ran: its time and its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CronRun {
    /// The slot.
    pub slot: DateTime<Utc>,
    /// The job inserted for it.
    pub job_id: Uuid,
}

/// A stored schedule (`mend_cron`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CronRow {
    /// The declaration.
    #[serde(flatten)]
    pub periodic: Periodic,
    /// A paused schedule inserts no jobs; slots passed while paused are not caught up.
    pub paused: bool,
    /// The next slot to run.
    pub next_slot: DateTime<Utc>,
    /// The most recent slot a job was inserted for.
    pub last_slot: Option<DateTime<Utc>>,
    /// The most recent runs, oldest first (at most [`RECENT_RUNS_KEPT`]).
    pub recent_runs: Vec<CronRun>,
    /// The most recent skipped slots, oldest first (at most [`SKIPPED_KEPT`]).
    pub skipped: Vec<DateTime<Utc>>,
    /// When it was first stored.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl CronRow {
    /// The job for `slot` of this schedule.
    pub fn job_for(&self, slot: DateTime<Utc>) -> NewJob {
        job_for(&self.periodic, slot)
    }
}

/// The job for `slot` of `p`: runs at the slot, keyed `cron:<name>:<slot>`, tagged
/// `cron:<name>`.
pub fn job_for(p: &Periodic, slot: DateTime<Utc>) -> NewJob {
    let mut job = NewJob::new(p.kind.clone(), p.args.clone())
        .with_queue(p.queue.clone())
        .with_priority(p.priority)
        .with_max_attempts(p.max_attempts)
        .with_run_at(slot)
        .with_unique_key(unique_key(&p.name, slot))
        .with_tag(format!("{KEY_PREFIX}{}", p.name));
    job.tags.extend(p.tags.iter().cloned());
    job
}

/// The unique key of `name`'s job for `slot`: `cron:<name>:<slot in RFC 3339 UTC, seconds>`.
pub fn unique_key(name: &str, slot: DateTime<Utc>) -> String {
    format!(
        "{KEY_PREFIX}{name}:{}",
        slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// The schedule name and slot a cron job was inserted for, read from its unique key.
pub fn slot_of(job: &JobRow) -> Option<(String, DateTime<Utc>)> {
    let rest = job.unique_key.as_deref()?.strip_prefix(KEY_PREFIX)?;
    // Names have no ':'; the slot's RFC 3339 text has several.
    let (name, slot) = rest.split_once(':')?;
    let slot = DateTime::parse_from_rfc3339(slot).ok()?.with_timezone(&Utc);
    Some((name.to_owned(), slot))
}

/// `before` with the runs of `slots` (their jobs' ids in `ids`) appended, the oldest dropped
/// past [`RECENT_RUNS_KEPT`].
pub fn merge_runs(before: &[CronRun], slots: &[DateTime<Utc>], ids: &[Uuid]) -> Vec<CronRun> {
    let mut runs: Vec<CronRun> = before.to_vec();
    runs.extend(slots.iter().zip(ids).map(|(slot, job_id)| CronRun {
        slot: *slot,
        job_id: *job_id,
    }));
    let cut = runs.len().saturating_sub(RECENT_RUNS_KEPT);
    runs.drain(..cut);
    runs
}

/// `before` with `new` skipped slots appended, the oldest dropped past [`SKIPPED_KEPT`].
pub fn merge_skipped(before: &[DateTime<Utc>], new: &[DateTime<Utc>]) -> Vec<DateTime<Utc>> {
    let mut all: Vec<DateTime<Utc>> = before.iter().chain(new).copied().collect();
    let cut = all.len().saturating_sub(SKIPPED_KEPT);
    all.drain(..cut);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Every slot in `from..=to`, by stepping forwards.
    fn slots(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from - chrono::Duration::seconds(1);
        while let Some(n) = s.next_after(t) {
            if n > to {
                break;
            }
            out.push(n);
            t = n;
        }
        out
    }

    #[test]
    fn parses_seconds_shorthands_and_zones() {
        let s = Schedule::parse("*/5 * * * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:02Z")),
            Some(utc("2026-01-01T00:00:05Z"))
        );
        let h = Schedule::parse("@hourly", "UTC").unwrap();
        assert_eq!(
            h.next_after(utc("2026-01-01T10:20:00Z")),
            Some(utc("2026-01-01T11:00:00Z"))
        );
        // 9:00 in New York in winter is 14:00 UTC.
        let ny = Schedule::parse("0 9 * * *", "America/New_York").unwrap();
        assert_eq!(
            ny.next_after(utc("2026-01-05T00:00:00Z")),
            Some(utc("2026-01-05T14:00:00Z"))
        );
    }

    #[test]
    fn bad_declarations_name_the_field() {
        let field = |p: Periodic| p.validate().unwrap_err().field;
        let ok = || Periodic::new("n", "* * * * *", "k", serde_json::json!({}));
        assert!(ok().validate().is_ok());
        assert_eq!(
            field(Periodic {
                name: "".into(),
                ..ok()
            }),
            "name"
        );
        assert_eq!(
            field(Periodic {
                name: "a:b".into(),
                ..ok()
            }),
            "name"
        );
        assert_eq!(
            field(Periodic {
                schedule: "nope".into(),
                ..ok()
            }),
            "schedule"
        );
        assert_eq!(
            field(Periodic {
                schedule: "61 * * * *".into(),
                ..ok()
            }),
            "schedule"
        );
        assert_eq!(field(ok().timezone("Mars/Olympus")), "timezone");
        let started = std::time::Instant::now();
        let never = Periodic {
            schedule: "0 0 30 2 *".into(),
            ..ok()
        };
        assert_eq!(
            never.validate().unwrap_err().message,
            "\"0 0 30 2 *\" never matches a time"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused quickly"
        );
        assert_eq!(
            field(Periodic {
                kind: " ".into(),
                ..ok()
            }),
            "kind"
        );
        assert_eq!(field(ok().catch_up(CatchUp::All, 0)), "catch_up_max");
        let decl = PeriodicDecl {
            name: Some("n".into()),
            schedule: Some("* * * * *".into()),
            kind: Some("k".into()),
            catch_up: Some("sometimes".into()),
            ..Default::default()
        };
        let e = decl.into_periodic().unwrap_err();
        assert_eq!(e.field, "catch_up");
        assert!(e.message.contains("none, latest or all"), "{e}");
        let e = PeriodicDecl::default().into_periodic().unwrap_err();
        assert_eq!(e.field, "name");
    }

    #[test]
    fn dst_spring_forward_neither_skips_nor_doubles() {
        // Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
        let s = Schedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        let got = slots(&s, utc("2026-03-27T00:00:00Z"), utc("2026-03-31T00:00:00Z"));
        let berlin = chrono_tz::Europe::Berlin;
        let local: Vec<String> = got
            .iter()
            .map(|t| {
                t.with_timezone(&berlin)
                    .format("%m-%d %H:%M %Z")
                    .to_string()
            })
            .collect();
        assert_eq!(
            local,
            [
                "03-27 02:30 CET",
                "03-28 02:30 CET",
                // Run once, at the first instant after the gap.
                "03-29 03:00 CEST",
                "03-30 02:30 CEST",
            ],
            "one run per day across the gap"
        );
        // The due-slot walk (backwards) sees the same slots.
        let (due, more) = s.due(got[0], got[3], 10);
        assert_eq!(due, got);
        assert!(!more);
    }

    #[test]
    fn dst_fall_back_neither_skips_nor_doubles() {
        // New York, 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice.
        let s = Schedule::parse("0 30 1 * * *", "America/New_York").unwrap();
        let got = slots(&s, utc("2026-10-30T00:00:00Z"), utc("2026-11-03T00:00:00Z"));
        let ny = chrono_tz::America::New_York;
        let local: Vec<String> = got
            .iter()
            .map(|t| t.with_timezone(&ny).format("%m-%d %H:%M %Z").to_string())
            .collect();
        assert_eq!(
            local,
            [
                "10-30 01:30 EDT",
                "10-31 01:30 EDT",
                "11-01 01:30 EDT",
                "11-02 01:30 EST",
            ],
            "one run per day across the repeated hour"
        );
        let (due, _) = s.due(got[0], got[3], 10);
        assert_eq!(due, got);
        // And an hourly schedule keeps firing every real hour through the change: the
        // repeated hour is two real hours, each with its slot, and no slot twice.
        let h = Schedule::parse("0 0 * * * *", "America/New_York").unwrap();
        let hours = slots(&h, utc("2026-11-01T03:30:00Z"), utc("2026-11-01T08:30:00Z"));
        assert_eq!(hours.len(), 5);
        for w in hours.windows(2) {
            assert_eq!(w[1] - w[0], chrono::Duration::hours(1));
        }
        assert_eq!(
            Utc.with_ymd_and_hms(2026, 11, 1, 5, 0, 0).unwrap(),
            hours[1],
            "01:00 EDT"
        );
    }

    #[test]
    fn catch_up_policies_after_a_five_slot_gap() {
        let s = Schedule::parse("*/10 * * * * *", "UTC").unwrap();
        let next = utc("2026-01-01T00:00:10Z");
        // Five slots (10..50) missed; now is 7 s past the last one (beyond the grace).
        let now = utc("2026-01-01T00:00:57Z");
        let missed: Vec<_> = (1..=5)
            .map(|i| utc("2026-01-01T00:00:00Z") + chrono::Duration::seconds(10 * i))
            .collect();
        let all = plan(&s, CatchUp::All, 24, next, now);
        assert_eq!(all.run, missed);
        assert!(all.skipped.is_empty());
        assert_eq!(all.next_slot, utc("2026-01-01T00:01:00Z"));
        let bounded = plan(&s, CatchUp::All, 2, next, now);
        assert_eq!(bounded.run, missed[3..]);
        assert_eq!(bounded.skipped, missed[..3]);
        let latest = plan(&s, CatchUp::Latest, 24, next, now);
        assert_eq!(latest.run, missed[4..]);
        assert_eq!(latest.skipped, missed[..4]);
        let none = plan(&s, CatchUp::None, 24, next, now);
        assert!(none.run.is_empty());
        assert_eq!(none.skipped, missed);
        // Under `none`, a slot seen within the grace is on time and runs.
        let on_time = plan(&s, CatchUp::None, 24, next, utc("2026-01-01T00:00:51Z"));
        assert_eq!(on_time.run, missed[4..]);
        // Nothing due: nothing runs, nothing is skipped, the next slot stays.
        let idle = plan(&s, CatchUp::All, 24, utc("2026-01-01T00:01:00Z"), now);
        assert!(idle.run.is_empty() && idle.skipped.is_empty());
        assert_eq!(idle.next_slot, utc("2026-01-01T00:01:00Z"));
    }

    #[test]
    fn a_long_outage_walks_only_the_recent_slots() {
        let s = Schedule::parse("* * * * * *", "UTC").unwrap();
        let started = std::time::Instant::now();
        // A year of every-second slots missed.
        let p = plan(
            &s,
            CatchUp::All,
            3,
            utc("2025-01-01T00:00:00Z"),
            utc("2026-01-01T00:00:00Z"),
        );
        assert_eq!(p.run.len(), 3);
        assert_eq!(p.skipped.len(), SKIPPED_KEPT);
        assert!(p.more_skipped);
        assert_eq!(p.run[2], utc("2026-01-01T00:00:00Z"));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn keys_carry_name_and_slot() {
        let p = Periodic::new("nightly", "@daily", "report", serde_json::json!({}));
        let slot = utc("2026-03-01T00:00:00Z");
        let job = job_for(&p, slot);
        assert_eq!(
            job.unique_key.as_deref(),
            Some("cron:nightly:2026-03-01T00:00:00Z")
        );
        assert!(job.tags.contains(&"cron:nightly".to_owned()));
        assert_eq!(job.run_at, Some(slot));
        let runs = merge_runs(
            &[],
            &vec![slot; RECENT_RUNS_KEPT + 5],
            &vec![Uuid::nil(); RECENT_RUNS_KEPT + 5],
        );
        assert_eq!(runs.len(), RECENT_RUNS_KEPT);
        assert_eq!(
            merge_skipped(&[slot; SKIPPED_KEPT], &[slot]).len(),
            SKIPPED_KEPT
        );
    }
}
