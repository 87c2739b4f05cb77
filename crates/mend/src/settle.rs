//! The guarantee table, written once: how an attempt ended → what its in-memory cleanups are
//! told, what happens to its durable cleanups, and the outcome the store writes.
//!
//! Every place that ends an attempt asks this module and nothing else: the executor (attempts
//! run in this process), the remote-worker routes (attempts run over HTTP), the completer
//! (a completion whose own writes did not commit) and the rescuer (attempts whose worker died,
//! applied by each backend inside its rescue statement). It is pure: no clock, no store, no
//! I/O — the caller passes `now` and the retry policy — so each row of the table is a unit
//! test and the whole state machine a property test.
//!
//! | how the attempt ended ([`Ending`]) | cleanups told ([`AttemptExit`]) | durable cleanups ([`Durable`]) | outcome ([`OutcomeKind`]) |
//! |---|---|---|---|
//! | `Returned` | `Completed` | dropped | `Completed` |
//! | `Failed` | `Failed` | run | `Retry` with backoff, `Discard` when out of attempts |
//! | `Fatal` | `Failed` | run | `Discard` |
//! | `Snoozed` | `Snoozed` | kept | `Snooze` (the attempt does not count) |
//! | `Panicked` | `Panicked` | run | as `Failed`, error kind `panic` |
//! | `TimedOut` | `TimedOut` | run | as `Failed`, error kind `timeout` |
//! | `Stopped(Cancel)` | `Cancelled` | run | `Cancelled` |
//! | `Stopped(Shutdown)` | `Shutdown` | run | `Release` (back to `available`, the attempt does not count) |
//! | `Stopped(LeaseLost)` | `LeaseLost` | left to the job's new owner | nothing: the job is someone else's |
//! | `Lost` (the worker died) | cannot run | run by the next worker before its attempt | `Retry` now, error kind `lost`; `Discard` when out of attempts or quarantined — once its durable cleanups have run |

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cleanup::{AttemptExit, CleanupOutcome, CleanupReport};
use crate::job::{bound_message, AttemptError, ErrorKind, JobRow, JobState};
use crate::maintenance::rescuer::RescueDecision;
use crate::store::OutcomeKind;

/// Retry delay used when a retry policy panics: long enough not to hammer whatever made the
/// attempt fail, short enough that the job is not forgotten.
pub const FALLBACK_BACKOFF: Duration = Duration::from_secs(60);

/// Why a running attempt was stopped from outside its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stop {
    /// Cancelled on request (library, HTTP or CLI; this node or another).
    Cancel,
    /// The worker is shutting down and the drain deadline passed.
    Shutdown,
    /// This worker no longer holds the job's lease (it was rescued elsewhere, or the worker
    /// fenced itself after failing to extend its leases).
    LeaseLost,
}

/// How an attempt ended: the one vocabulary for it. [`JobError`](crate::JobError) is what a
/// handler returns, [`AttemptExit`] what cleanups are told, [`OutcomeKind`] what the store
/// writes, [`ErrorKind`] the kind of the stored error — each derived from an `Ending` here.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The handler returned `Ok`.
    Returned {
        /// What it returned, stored as the job's result.
        result: Option<serde_json::Value>,
    },
    /// The handler returned a retryable error.
    Failed {
        /// What went wrong.
        message: String,
        /// Overrides the retry policy's delay (e.g. from a `Retry-After` header).
        retry_after: Option<Duration>,
    },
    /// The handler (or the runtime on its behalf) gave up for good.
    Fatal {
        /// What went wrong.
        message: String,
    },
    /// The handler asked to run again after `delay`.
    Snoozed {
        /// How long to wait.
        delay: Duration,
    },
    /// The handler panicked.
    Panicked {
        /// Message and location.
        message: String,
    },
    /// The attempt ran past its timeout.
    TimedOut {
        /// The timeout it ran past.
        after: Duration,
    },
    /// The attempt was stopped from outside its handler.
    Stopped(Stop),
    /// The attempt's worker died (crash, `kill -9`, hung past its lease); found by the rescuer.
    Lost {
        /// The node that held the lease.
        owner: String,
    },
}

impl From<crate::JobError> for Ending {
    fn from(e: crate::JobError) -> Self {
        match e {
            crate::JobError::Retry { message, after } => Ending::Failed {
                message,
                retry_after: after,
            },
            crate::JobError::Fatal { message } => Ending::Fatal { message },
            crate::JobError::Snooze { delay } => Ending::Snoozed { delay },
        }
    }
}

/// What happens to the attempt's own durable cleanups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    /// Forgotten: the work stands (the store drops them with the completion).
    Drop,
    /// Kept, written down with the job, for a later attempt (snooze, or a lost lease whose new
    /// owner runs them).
    Keep,
    /// Run now, before the outcome is written.
    Run,
}

impl Ending {
    /// What the attempt's in-memory cleanups are told; `None` when they cannot run (the
    /// process that held them is gone).
    pub fn exit(&self) -> Option<AttemptExit> {
        Some(match self {
            Ending::Returned { .. } => AttemptExit::Completed,
            Ending::Failed { message, .. } | Ending::Fatal { message } => AttemptExit::Failed {
                message: message.clone(),
            },
            Ending::Snoozed { .. } => AttemptExit::Snoozed,
            Ending::Panicked { message } => AttemptExit::Panicked {
                message: message.clone(),
            },
            Ending::TimedOut { .. } => AttemptExit::TimedOut,
            Ending::Stopped(Stop::Cancel) => AttemptExit::Cancelled,
            Ending::Stopped(Stop::Shutdown) => AttemptExit::Shutdown,
            Ending::Stopped(Stop::LeaseLost) => AttemptExit::LeaseLost,
            Ending::Lost { .. } => return None,
        })
    }

    /// What happens to the attempt's durable cleanups.
    pub fn durable(&self) -> Durable {
        match self {
            Ending::Returned { .. } => Durable::Drop,
            Ending::Snoozed { .. } | Ending::Stopped(Stop::LeaseLost) | Ending::Lost { .. } => {
                Durable::Keep
            }
            _ => Durable::Run,
        }
    }

    /// The kind of error recorded for the attempt, if it failed.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            Ending::Failed { .. } | Ending::Fatal { .. } => Some(ErrorKind::Error),
            Ending::Panicked { .. } => Some(ErrorKind::Panic),
            Ending::TimedOut { .. } => Some(ErrorKind::Timeout),
            Ending::Stopped(Stop::Cancel) => Some(ErrorKind::Cancelled),
            Ending::Lost { .. } => Some(ErrorKind::Lost),
            Ending::Returned { .. }
            | Ending::Snoozed { .. }
            | Ending::Stopped(Stop::Shutdown | Stop::LeaseLost) => None,
        }
    }

    /// Whether the handler itself reported a failure (counted as an error by the worker).
    pub fn is_handler_error(&self) -> bool {
        matches!(self, Ending::Failed { .. } | Ending::Fatal { .. })
    }
}

/// The facts about the attempt that the table depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The attempt number (1-based) that ended.
    pub attempt: i32,
    /// The job's most attempts.
    pub max_attempts: i32,
    /// Attempts in a row, before this one, that ended with the worker lost.
    pub lost_before: u32,
    /// The job still has durable cleanups written down (a lost job's must run first).
    pub has_pending_cleanups: bool,
}

impl Attempt {
    /// The facts of `job`'s current attempt.
    pub fn of(job: &JobRow) -> Attempt {
        Attempt {
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            lost_before: job.consecutive_lost(),
            has_pending_cleanups: !job.pending_cleanups.is_empty(),
        }
    }

    /// This was the job's last allowed attempt.
    pub fn is_last(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// The rules the table is applied with.
#[derive(Clone, Copy)]
pub struct Rules<'a> {
    /// The time the outcome is written at.
    pub now: DateTime<Utc>,
    /// The delay before the attempt after attempt `n` failed: the retry policy, asked only
    /// when the ending carries no delay of its own (it may run user code, so it is called
    /// with panic isolation).
    pub backoff: &'a dyn Fn(i32) -> Duration,
    /// Lost attempts in a row after which a job is quarantined (0: never).
    pub quarantine_after_lost: u32,
}

/// What to do with an attempt that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// The outcome to write; `None` when there is nothing to write (the lease was lost).
    pub outcome: Option<OutcomeKind>,
    /// A lost job was quarantined as a poison pill.
    pub quarantined: bool,
}

/// Whether `lost_in_a_row` lost attempts make a job a poison pill.
pub fn quarantined(lost_in_a_row: u32, quarantine_after_lost: u32) -> bool {
    quarantine_after_lost > 0 && lost_in_a_row >= quarantine_after_lost
}

/// Settles an attempt: the outcome to write for `ending`, given the attempt's facts, the in-memory
/// cleanups that ran (a failed attempt's error names the ones that did not finish) and the rules.
pub fn settle(
    ending: Ending,
    attempt: &Attempt,
    cleanups: &[CleanupReport],
    rules: &Rules<'_>,
) -> Settlement {
    let now = rules.now;
    let error = |kind: ErrorKind, message: String| {
        let broken: Vec<String> = cleanups
            .iter()
            .filter(|c| c.outcome != CleanupOutcome::Ok)
            .map(|c| format!("{} {:?}", c.name, c.outcome))
            .collect();
        let message = if broken.is_empty() {
            message
        } else {
            format!("{message}; cleanups that failed: {}", broken.join(", "))
        };
        AttemptError {
            attempt: attempt.attempt,
            kind,
            message: bound_message(message),
            at: now,
            version: None,
            given_back: false,
        }
    };
    let kind = ending.error_kind();
    let (message, retry_after, fatal) = match ending {
        Ending::Returned { result } => return settled(OutcomeKind::Completed { result }),
        Ending::Snoozed { delay } => {
            return settled(OutcomeKind::Snooze {
                run_at: after(now, delay),
            })
        }
        Ending::Stopped(Stop::Shutdown) => return settled(OutcomeKind::Release),
        Ending::Stopped(Stop::LeaseLost) => {
            return Settlement {
                outcome: None,
                quarantined: false,
            }
        }
        Ending::Stopped(Stop::Cancel) => {
            return settled(OutcomeKind::Cancelled {
                error: error(ErrorKind::Cancelled, "cancelled on request".to_owned()),
            })
        }
        Ending::Lost { owner } => {
            let d = lost(&owner, attempt, rules.now, rules.quarantine_after_lost);
            let outcome = if d.state == JobState::Discarded {
                OutcomeKind::Discard { error: d.error }
            } else {
                OutcomeKind::Retry {
                    error: d.error,
                    run_at: rules.now,
                }
            };
            return Settlement {
                outcome: Some(outcome),
                quarantined: d.quarantined,
            };
        }
        Ending::Failed {
            message,
            retry_after,
        } => (message, retry_after, false),
        Ending::Fatal { message } => (message, None, true),
        Ending::Panicked { message } => (message, None, false),
        Ending::TimedOut { after } => (format!("timed out after {after:?}"), None, false),
    };
    let error = error(kind.unwrap_or(ErrorKind::Error), message);
    if fatal || attempt.is_last() {
        return settled(OutcomeKind::Discard { error });
    }
    let delay = retry_after.unwrap_or_else(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (rules.backoff)(attempt.attempt)
        }))
        .unwrap_or_else(|_| {
            tracing::error!("RetryPolicy::backoff panicked; retrying after the fallback delay");
            FALLBACK_BACKOFF
        })
    });
    settled(OutcomeKind::Retry {
        error,
        run_at: after(now, delay),
    })
}

fn settled(outcome: OutcomeKind) -> Settlement {
    Settlement {
        outcome: Some(outcome),
        quarantined: false,
    }
}

/// The `kill -9` row: a lost attempt counts, is retried at once (a canary's after
/// [`crate::rollout::CANARY_RETRY_FLOOR`]: see `maintenance::rescuer::decide`), and a job that is out of
/// attempts or keeps killing its worker is discarded — but only once its durable cleanups have
/// run, so one that still has some goes back to the queue for the next worker to run them
/// (which then stops it, see [`after_recovery`]). Every backend's rescue applies this.
pub fn lost(
    owner: &str,
    attempt: &Attempt,
    now: DateTime<Utc>,
    quarantine_after_lost: u32,
) -> RescueDecision {
    let lost_in_a_row = attempt.lost_before + 1;
    let quarantined = quarantined(lost_in_a_row, quarantine_after_lost);
    let message = if quarantined {
        format!(
            "worker lost (node {owner}); quarantined: {lost_in_a_row} attempts in a row ended with the worker lost, so this job is probably killing its process; fix the handler or the args, then retry the job by hand"
        )
    } else {
        format!("worker lost (node {owner} died or stopped heartbeating mid-attempt)")
    };
    let done_for = quarantined || attempt.is_last();
    RescueDecision {
        state: if done_for && !attempt.has_pending_cleanups {
            JobState::Discarded
        } else {
            JobState::Retryable
        },
        error: AttemptError {
            attempt: attempt.attempt,
            kind: ErrorKind::Lost,
            message,
            at: now,
            version: None,
            given_back: false,
        },
        run_at: now,
        quarantined,
    }
}

/// A job whose last worker was lost, claimed again after the lost attempt's durable cleanups
/// ran: if the rescue kept it alive only so they could run (out of attempts, or quarantined),
/// the ending that stops it now, before its handler runs.
pub fn after_recovery(attempt: &Attempt, quarantine_after_lost: u32) -> Option<Ending> {
    // The claim that handed the job out already counted this attempt.
    let message = if quarantined(attempt.lost_before, quarantine_after_lost) {
        "quarantined: its attempts keep killing the worker; the lost attempt's durable cleanups have run. Fix the handler or the args, then retry the job by hand"
    } else if attempt.attempt > attempt.max_attempts {
        "out of attempts: the last attempt's worker was lost; its durable cleanups have run"
    } else {
        return None;
    };
    Some(Ending::Fatal {
        message: message.to_owned(),
    })
}

fn after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    now.checked_add_signed(delay)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    //! One test per row of the guarantee table, then properties over every ending.

    use super::*;
    use crate::retry::{FixedDelay, RetryPolicy};

    fn now() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    const POLICY: FixedDelay = FixedDelay(Duration::from_secs(7));

    fn rules() -> Rules<'static> {
        Rules {
            now: now(),
            backoff: &|n| POLICY.backoff(n),
            quarantine_after_lost: 3,
        }
    }

    fn first_of(max: i32) -> Attempt {
        Attempt {
            attempt: 1,
            max_attempts: max,
            lost_before: 0,
            has_pending_cleanups: false,
        }
    }

    fn outcome(ending: Ending, attempt: Attempt) -> OutcomeKind {
        settle(ending, &attempt, &[], &rules())
            .outcome
            .unwrap_or_else(|| panic!("an outcome to write"))
    }

    fn retry_of(o: OutcomeKind) -> (AttemptError, DateTime<Utc>) {
        match o {
            OutcomeKind::Retry { error, run_at } => (error, run_at),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    fn discard_of(o: OutcomeKind) -> AttemptError {
        match o {
            OutcomeKind::Discard { error } => error,
            other => panic!("expected a discard, got {other:?}"),
        }
    }

    #[test]
    fn returned_completes_with_the_result_and_drops_durable_cleanups() {
        let e = Ending::Returned {
            result: Some(serde_json::json!({"n": 1})),
        };
        assert_eq!(e.exit(), Some(AttemptExit::Completed));
        assert_eq!(e.durable(), Durable::Drop);
        assert_eq!(
            outcome(e, first_of(3)),
            OutcomeKind::Completed {
                result: Some(serde_json::json!({"n": 1}))
            }
        );
    }

    #[test]
    fn failed_retries_after_the_policy_delay_then_discards_at_max_attempts() {
        let e = Ending::Failed {
            message: "boom".into(),
            retry_after: None,
        };
        assert!(matches!(e.exit(), Some(AttemptExit::Failed { message }) if message == "boom"));
        assert_eq!(e.durable(), Durable::Run);
        let (error, run_at) = retry_of(outcome(e.clone(), first_of(3)));
        assert_eq!(error.kind, ErrorKind::Error);
        assert_eq!(error.message, "boom");
        assert_eq!(error.attempt, 1);
        assert_eq!(run_at, now() + chrono::Duration::seconds(7));
        let last = Attempt {
            attempt: 3,
            ..first_of(3)
        };
        assert_eq!(discard_of(outcome(e, last)).message, "boom");
    }

    #[test]
    fn failed_with_its_own_delay_ignores_the_policy() {
        let e = Ending::Failed {
            message: "429".into(),
            retry_after: Some(Duration::from_secs(90)),
        };
        let (_, run_at) = retry_of(outcome(e, first_of(3)));
        assert_eq!(run_at, now() + chrono::Duration::seconds(90));
    }

    #[test]
    fn fatal_discards_at_once() {
        let e = Ending::Fatal {
            message: "bad input".into(),
        };
        assert!(matches!(e.exit(), Some(AttemptExit::Failed { .. })));
        assert_eq!(e.durable(), Durable::Run);
        assert_eq!(discard_of(outcome(e, first_of(25))).kind, ErrorKind::Error);
    }

    #[test]
    fn snoozed_runs_again_later_and_keeps_durable_cleanups() {
        let e = Ending::Snoozed {
            delay: Duration::from_secs(5),
        };
        assert_eq!(e.exit(), Some(AttemptExit::Snoozed));
        assert_eq!(e.durable(), Durable::Keep);
        assert_eq!(
            outcome(e, first_of(1)),
            OutcomeKind::Snooze {
                run_at: now() + chrono::Duration::seconds(5)
            }
        );
    }

    #[test]
    fn panicked_is_a_failure_of_kind_panic() {
        let e = Ending::Panicked {
            message: "oops at src/x.rs:1:2".into(),
        };
        assert!(matches!(e.exit(), Some(AttemptExit::Panicked { .. })));
        assert_eq!(e.durable(), Durable::Run);
        let (error, _) = retry_of(outcome(e.clone(), first_of(2)));
        assert_eq!(error.kind, ErrorKind::Panic);
        assert!(error.message.contains("src/x.rs:1:2"));
        let last = Attempt {
            attempt: 2,
            ..first_of(2)
        };
        assert_eq!(discard_of(outcome(e, last)).kind, ErrorKind::Panic);
    }

    #[test]
    fn timed_out_is_a_failure_of_kind_timeout() {
        let e = Ending::TimedOut {
            after: Duration::from_millis(250),
        };
        assert_eq!(e.exit(), Some(AttemptExit::TimedOut));
        assert_eq!(e.durable(), Durable::Run);
        let (error, _) = retry_of(outcome(e, first_of(2)));
        assert_eq!(error.kind, ErrorKind::Timeout);
        assert_eq!(error.message, "timed out after 250ms");
    }

    #[test]
    fn cancelled_ends_cancelled_whatever_the_attempts_left() {
        let e = Ending::Stopped(Stop::Cancel);
        assert_eq!(e.exit(), Some(AttemptExit::Cancelled));
        assert_eq!(e.durable(), Durable::Run);
        match outcome(e, first_of(5)) {
            OutcomeKind::Cancelled { error } => {
                assert_eq!(error.kind, ErrorKind::Cancelled);
                assert_eq!(error.message, "cancelled on request");
            }
            other => panic!("expected cancelled, got {other:?}"),
        }
    }

    #[test]
    fn shutdown_releases_without_using_an_attempt() {
        let e = Ending::Stopped(Stop::Shutdown);
        assert_eq!(e.exit(), Some(AttemptExit::Shutdown));
        assert_eq!(e.durable(), Durable::Run);
        let last = Attempt {
            attempt: 1,
            ..first_of(1)
        };
        assert_eq!(outcome(e, last), OutcomeKind::Release);
    }

    #[test]
    fn a_lost_lease_writes_nothing_and_leaves_durable_cleanups_to_the_new_owner() {
        let e = Ending::Stopped(Stop::LeaseLost);
        assert_eq!(e.exit(), Some(AttemptExit::LeaseLost));
        assert_eq!(e.durable(), Durable::Keep);
        assert_eq!(settle(e, &first_of(1), &[], &rules()).outcome, None);
    }

    #[test]
    fn lost_is_retried_now_as_lost_then_quarantined_after_three_in_a_row() {
        let e = Ending::Lost {
            owner: "node-a".into(),
        };
        assert_eq!(e.exit(), None);
        assert_eq!(e.durable(), Durable::Keep);
        let (error, run_at) = retry_of(outcome(e.clone(), first_of(25)));
        assert_eq!(error.kind, ErrorKind::Lost);
        assert!(error.message.contains("node-a"));
        assert_eq!(run_at, now());
        let third = Attempt {
            attempt: 3,
            lost_before: 2,
            ..first_of(25)
        };
        let s = settle(e, &third, &[], &rules());
        assert!(s.quarantined);
        assert!(discard_of(s.outcome.unwrap_or(OutcomeKind::Release))
            .message
            .contains("quarantined"));
    }

    #[test]
    fn lost_with_pending_durable_cleanups_goes_back_for_them_then_stops() {
        let e = Ending::Lost {
            owner: "node-a".into(),
        };
        let last = Attempt {
            attempt: 1,
            max_attempts: 1,
            lost_before: 0,
            has_pending_cleanups: true,
        };
        // Out of attempts, but its cleanups must run first: back to the queue.
        let (error, _) = retry_of(outcome(e, last));
        assert_eq!(error.kind, ErrorKind::Lost);
        // The next claim counts attempt 2 and the loss; once the cleanups ran it stops.
        let claimed = Attempt {
            attempt: 2,
            max_attempts: 1,
            lost_before: 1,
            has_pending_cleanups: true,
        };
        let stop = after_recovery(&claimed, 3);
        assert!(
            matches!(&stop, Some(Ending::Fatal { message }) if message.contains("out of attempts"))
        );
        let poison = Attempt {
            attempt: 4,
            max_attempts: 25,
            lost_before: 3,
            has_pending_cleanups: true,
        };
        assert!(
            matches!(after_recovery(&poison, 3), Some(Ending::Fatal { message }) if message.contains("quarantined"))
        );
        assert_eq!(after_recovery(&poison, 0), None);
        assert_eq!(after_recovery(&first_of(3), 3), None);
    }

    #[test]
    fn a_failure_names_the_cleanups_that_did_not_finish() {
        let cleanups = [
            CleanupReport {
                name: "close".into(),
                outcome: CleanupOutcome::Ok,
                duration_ms: 1,
                told: None,
            },
            CleanupReport {
                name: "unlock".into(),
                outcome: CleanupOutcome::TimedOut,
                duration_ms: 10,
                told: None,
            },
        ];
        let e = Ending::Failed {
            message: "boom".into(),
            retry_after: None,
        };
        let s = settle(e, &first_of(3), &cleanups, &rules());
        let (error, _) = retry_of(s.outcome.unwrap_or(OutcomeKind::Release));
        assert_eq!(error.message, "boom; cleanups that failed: unlock TimedOut");
    }

    #[derive(Debug)]
    struct Panics;
    impl RetryPolicy for Panics {
        fn backoff(&self, _: i32) -> Duration {
            panic!("a broken policy")
        }
    }

    #[test]
    fn a_panicking_retry_policy_falls_back_to_a_fixed_delay() {
        let r = Rules {
            backoff: &|n| Panics.backoff(n),
            ..rules()
        };
        let e = Ending::Panicked {
            message: "x".into(),
        };
        let s = settle(e, &first_of(3), &[], &r);
        let (_, run_at) = retry_of(s.outcome.unwrap_or(OutcomeKind::Release));
        assert_eq!(
            run_at,
            now() + chrono::Duration::from_std(FALLBACK_BACKOFF).unwrap_or_default()
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn ending() -> impl Strategy<Value = Ending> {
            prop_oneof![
                Just(Ending::Returned { result: None }),
                (any::<bool>(), 0u64..10_000).prop_map(|(own, ms)| Ending::Failed {
                    message: "f".into(),
                    retry_after: own.then(|| Duration::from_millis(ms)),
                }),
                Just(Ending::Fatal {
                    message: "x".into()
                }),
                (0u64..10_000).prop_map(|ms| Ending::Snoozed {
                    delay: Duration::from_millis(ms)
                }),
                Just(Ending::Panicked {
                    message: "p".into()
                }),
                (0u64..10_000).prop_map(|ms| Ending::TimedOut {
                    after: Duration::from_millis(ms)
                }),
                Just(Ending::Stopped(Stop::Cancel)),
                Just(Ending::Stopped(Stop::Shutdown)),
                Just(Ending::Stopped(Stop::LeaseLost)),
                Just(Ending::Lost { owner: "n".into() }),
            ]
        }

        fn attempt() -> impl Strategy<Value = Attempt> {
            (1i32..30, 1i32..30, 0u32..5, any::<bool>()).prop_map(|(a, m, l, p)| Attempt {
                attempt: a,
                max_attempts: m,
                lost_before: l,
                has_pending_cleanups: p,
            })
        }

        proptest! {
            #[test]
            fn the_table_holds_for_every_ending(e in ending(), a in attempt(), q in 0u32..5) {
                let r = Rules { quarantine_after_lost: q, ..rules() };
                let kind = e.error_kind();
                let returned = matches!(e, Ending::Returned { .. });
                let fatal = matches!(e, Ending::Fatal { .. });
                let lost = matches!(e, Ending::Lost { .. });
                let snoozed = matches!(e, Ending::Snoozed { .. });
                let s = settle(e.clone(), &a, &[], &r);
                match s.outcome {
                    // Only a lost lease writes nothing.
                    None => prop_assert_eq!(&e, &Ending::Stopped(Stop::LeaseLost)),
                    Some(OutcomeKind::Completed { .. }) => prop_assert!(returned),
                    // Never back before now; the error is this attempt's, of the ending's kind.
                    Some(OutcomeKind::Retry { error, run_at }) => {
                        prop_assert!(run_at >= r.now);
                        prop_assert_eq!(error.attempt, a.attempt);
                        prop_assert_eq!(Some(error.kind), kind);
                        prop_assert!(!fatal);
                        // A retry is never past the last attempt, except a lost job going
                        // back for its durable cleanups.
                        prop_assert!(!a.is_last() || (lost && a.has_pending_cleanups));
                    }
                    Some(OutcomeKind::Discard { error }) => {
                        prop_assert_eq!(Some(error.kind), kind);
                        prop_assert!(a.is_last() || fatal || s.quarantined);
                        // A lost job is never discarded before its durable cleanups ran.
                        prop_assert!(!(lost && a.has_pending_cleanups));
                    }
                    Some(OutcomeKind::Cancelled { error }) => {
                        prop_assert_eq!(&e, &Ending::Stopped(Stop::Cancel));
                        prop_assert_eq!(error.kind, ErrorKind::Cancelled);
                    }
                    Some(OutcomeKind::Snooze { run_at }) => {
                        prop_assert!(snoozed);
                        prop_assert!(run_at >= r.now);
                    }
                    Some(OutcomeKind::Release) => prop_assert_eq!(&e, &Ending::Stopped(Stop::Shutdown)),
                }
                // In-memory cleanups run on every ending the process survives.
                prop_assert_eq!(e.exit().is_none(), lost);
                // Durable cleanups are dropped only when the work stands.
                prop_assert_eq!(e.durable() == Durable::Drop, returned);
                prop_assert!(!s.quarantined || lost);
            }
        }
    }
}
