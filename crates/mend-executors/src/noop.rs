//! The `noop` kind: sleeps for `sleep_ms` (optional), then completes with no result. For
//! trying out a server, benchmarks, and tests of the machinery around jobs.

use std::time::Duration;

use mend::{JobContext, JobError};
use serde_json::Value;

use crate::args::Fields;

/// The kind name.
pub const KIND: &str = "noop";

/// The parsed args of a `noop` job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoopArgs {
    /// How long to sleep before completing (`sleep_ms`, default 0).
    pub sleep: Duration,
}

impl NoopArgs {
    /// Read `{"sleep_ms": n}` (or `{}` / `null`); refuses other fields and wrong types.
    pub fn parse(args: &Value) -> Result<Self, String> {
        let f = Fields::new(args, &["sleep_ms"])?;
        Ok(NoopArgs {
            sleep: f.opt_millis("sleep_ms", 0)?.unwrap_or(Duration::ZERO),
        })
    }
}

/// Run one attempt of a `noop` job.
pub async fn run(_ctx: JobContext, args: Value) -> Result<Option<Value>, JobError> {
    let args = NoopArgs::parse(&args).map_err(|m| crate::invalid_args(KIND, m))?;
    if !args.sleep.is_zero() {
        tokio::time::sleep(args.sleep).await;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_sleep_ms_and_refuses_the_rest() {
        assert_eq!(
            NoopArgs::parse(&json!(null)).map(|a| a.sleep),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            NoopArgs::parse(&json!({"sleep_ms": 20})).map(|a| a.sleep),
            Ok(Duration::from_millis(20))
        );
        let err = NoopArgs::parse(&json!({"sleep_ms": "20"})).expect_err("a string");
        assert!(err.contains("`sleep_ms`"), "{err}");
        let err = NoopArgs::parse(&json!({"sleep": 20})).expect_err("unknown");
        assert!(err.contains("unknown field `sleep`"), "{err}");
    }
}
