//! Retry policies: when a failed attempt runs again.
//!
//! The default is exponential backoff with jitter, so a downstream outage is not hammered by
//! every failed job at the same instant. Policies are plain values; the runtime asks them for
//! a delay and never sleeps on its own.

use std::time::Duration;

/// Decides how long to wait before the next attempt.
pub trait RetryPolicy: Send + Sync + std::fmt::Debug + 'static {
    /// The delay before attempt `attempt + 1`, given that attempt `attempt` (1-based) failed.
    fn backoff(&self, attempt: i32) -> Duration;
}

/// `base * factor^(attempt-1)`, capped at `max`, then scaled by a random factor in
/// `[1 - jitter, 1 + jitter]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialBackoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Growth per attempt.
    pub factor: f64,
    /// Upper bound before jitter.
    pub max: Duration,
    /// Relative spread, 0.0 to 1.0.
    pub jitter: f64,
}

/// Default first delay: one second is long enough for a blip to pass and short enough that a
/// transient error costs the user almost nothing.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Default cap: an hour, so a job out for a long outage still gets tried every hour.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// Default jitter: ±25% spreads a burst of failures over half the delay.
pub const DEFAULT_BACKOFF_JITTER: f64 = 0.25;

impl Default for ExponentialBackoff {
    fn default() -> Self {
        ExponentialBackoff {
            base: DEFAULT_BACKOFF_BASE,
            factor: 2.0,
            max: DEFAULT_BACKOFF_MAX,
            jitter: DEFAULT_BACKOFF_JITTER,
        }
    }
}

impl ExponentialBackoff {
    /// The delay before jitter.
    pub fn nominal(&self, attempt: i32) -> Duration {
        let exp = attempt.saturating_sub(1).clamp(0, 64);
        let secs = self.base.as_secs_f64() * self.factor.max(1.0).powi(exp);
        let capped = secs.min(self.max.as_secs_f64());
        // `max: Duration::MAX` ("no cap") overflows `from_secs_f64`; saturate instead.
        Duration::try_from_secs_f64(capped.max(0.0)).unwrap_or(self.max)
    }
}

impl RetryPolicy for ExponentialBackoff {
    fn backoff(&self, attempt: i32) -> Duration {
        let nominal = self.nominal(attempt).as_secs_f64();
        let jitter = self.jitter.clamp(0.0, 1.0);
        let scale = 1.0 - jitter + 2.0 * jitter * fastrand::f64();
        Duration::try_from_secs_f64((nominal * scale).max(0.0)).unwrap_or(Duration::MAX)
    }
}

/// The same delay every time (handy for tests and for polling-style jobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedDelay(pub Duration);

impl RetryPolicy for FixedDelay {
    fn backoff(&self, _attempt: i32) -> Duration {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_then_caps() {
        let p = ExponentialBackoff {
            jitter: 0.0,
            ..Default::default()
        };
        assert_eq!(p.backoff(1), Duration::from_secs(1));
        assert_eq!(p.backoff(2), Duration::from_secs(2));
        assert_eq!(p.backoff(5), Duration::from_secs(16));
        assert_eq!(p.backoff(40), DEFAULT_BACKOFF_MAX);
    }

    #[test]
    fn no_cap_does_not_overflow() {
        let p = ExponentialBackoff {
            max: Duration::MAX,
            ..Default::default()
        };
        assert!(p.backoff(100) > Duration::from_secs(3600));
        assert!(p.backoff(i32::MAX) > Duration::ZERO);
    }

    proptest! {
        #[test]
        fn jittered_delay_stays_within_bounds(attempt in 1i32..200) {
            let p = ExponentialBackoff::default();
            let nominal = p.nominal(attempt).as_secs_f64();
            let d = p.backoff(attempt).as_secs_f64();
            prop_assert!(d >= nominal * 0.75 - 1e-9, "{d} < 0.75 * {nominal}");
            prop_assert!(d <= nominal * 1.25 + 1e-9, "{d} > 1.25 * {nominal}");
        }

        #[test]
        fn nominal_never_decreases(attempt in 1i32..500) {
            let p = ExponentialBackoff::default();
            prop_assert!(p.nominal(attempt + 1) >= p.nominal(attempt));
            prop_assert!(p.nominal(attempt) <= DEFAULT_BACKOFF_MAX);
        }
    }
}
