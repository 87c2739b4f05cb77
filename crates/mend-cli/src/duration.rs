//! The one duration grammar of the CLI: every duration flag, `MEND_*` variable and `mend.toml`
//! value goes through [`parse`] (or [`parse_with`] for the flags that took a bare number
//! before units existed). It only reads text; what a duration means is up to its caller.
//!
//! A duration is one or more `<whole number><unit>` parts with no spaces, the units being
//! `ms`, `s`, `m`, `h` and `d`: `500ms`, `30s`, `2m`, `1h30m`, `2d`. A bare `0` is zero in any
//! unit, so it is always accepted.

use std::time::Duration;

/// What the accepted forms are, for every error message.
const ACCEPTED: &str =
    "use a whole number with a unit (ms, s, m, h or d), e.g. 500ms, 30s, 2m, 1h30m";

/// What a bare number (no unit) means for one flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bare {
    /// A bare number is an error: the unit must be written (every new flag).
    Rejected,
    /// Seconds (`mend chaos --duration 30`, as before units were required).
    Seconds,
}

/// Parses a duration whose unit must be written, e.g. `500ms`, `30s` or `1h30m`.
pub(crate) fn parse(s: &str) -> Result<Duration, String> {
    parse_with(s, Bare::Rejected)
}

/// [`parse`], where a bare whole number means seconds (the flags that always took one).
pub(crate) fn parse_bare_seconds(s: &str) -> Result<Duration, String> {
    parse_with(s, Bare::Seconds)
}

/// Parses a duration; `bare` says what a number without a unit means.
pub(crate) fn parse_with(s: &str, bare: Bare) -> Result<Duration, String> {
    let text = s.trim();
    let not_a_duration = || format!("{s:?} is not a duration; {ACCEPTED}");
    if text.is_empty() {
        return Err(not_a_duration());
    }
    if text.contains('.') {
        return Err(format!(
            "{s:?} is not a duration: whole numbers only (1500ms, not 1.5s); {ACCEPTED}"
        ));
    }
    if text.contains(char::is_whitespace) {
        return Err(format!(
            "{s:?} is not a duration: no spaces (1h30m, not 1h 30m); {ACCEPTED}"
        ));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = text.parse().map_err(|_| format!("{s:?} is too long"))?;
        return match bare {
            _ if n == 0 => Ok(Duration::ZERO),
            Bare::Seconds => Ok(Duration::from_secs(n)),
            Bare::Rejected => Err(format!("{s:?} needs a unit: ms, s, m, h or d (e.g. {n}s)")),
        };
    }
    let mut total_ms: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(not_a_duration());
        }
        let n: u128 = rest[..digits].parse().map_err(|_| not_a_duration())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms_per: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60 * 1000,
            "h" => 3600 * 1000,
            "d" => 24 * 3600 * 1000,
            "" => return Err(format!("{s:?} needs a unit after {n}; {ACCEPTED}")),
            unit => {
                return Err(format!(
                    "{s:?} is not a duration: unknown unit {unit:?}; {ACCEPTED}"
                ))
            }
        };
        rest = &rest[unit_len..];
        total_ms = total_ms.saturating_add(n.saturating_mul(ms_per));
    }
    let ms = u64::try_from(total_ms).map_err(|_| format!("{s:?} is too long"))?;
    Ok(Duration::from_millis(ms))
}

/// A duration as whole milliseconds (what the HTTP API takes), saturating.
pub(crate) fn as_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_combinations() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(2 * 86400)));
        assert_eq!(parse("1m30s250ms"), Ok(Duration::from_millis(90_250)));
        assert_eq!(parse(" 168h "), Ok(Duration::from_secs(168 * 3600)));
    }

    #[test]
    fn a_bare_number_needs_a_unit_unless_the_flag_says_otherwise() {
        assert!(parse("30").is_err_and(|e| e.contains("needs a unit") && e.contains("30s")));
        assert_eq!(parse_bare_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_bare_seconds("2m"), Ok(Duration::from_secs(120)));
        // Zero is zero in every unit.
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn errors_say_what_is_accepted() {
        for bad in [
            "",
            "s",
            "soon",
            "5x",
            "5 parsecs",
            "1.5s",
            "-3s",
            "5 m",
            "1h30",
            "ms5",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(
                e.contains("500ms") && e.contains("1h30m") || e.contains("needs a unit"),
                "{bad:?}: {e}"
            );
        }
        assert!(parse("soon").is_err_and(|e| e.contains("not a duration")));
        assert!(parse("1.5s").is_err_and(|e| e.contains("1500ms, not 1.5s")));
        assert!(parse("1 minute").is_err_and(|e| e.contains("no spaces")));
        assert!(parse("99999999999999999999d").is_err_and(|e| e.contains("too long")));
        assert!(parse_bare_seconds("99999999999999999999").is_err_and(|e| e.contains("too long")));
    }
}
