//! Whole numbers as JSON writes them: `30000` or `30000.0`. JSON has one number type, and
//! some clients (Python's `json`, for one) write a whole float with its fraction; JSON Schema
//! calls both integers, so the API takes both. A real fraction or a number out of the field's
//! range is still refused.

use serde::{Deserialize, Deserializer};
use serde_json::Number;

/// Use with `#[serde(deserialize_with = "mend::lenient::int")]` on an integer field.
pub fn int<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    let n = Number::deserialize(d)?;
    whole(&n).ok_or_else(|| out_of_range(&n))
}

/// Use with `#[serde(default, deserialize_with = "mend::lenient::opt_int")]` on an
/// `Option` of an integer (`null` and a missing field are `None`).
pub fn opt_int<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    match Option::<Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => whole(&n).map(Some).ok_or_else(|| out_of_range(&n)),
    }
}

fn out_of_range<E: serde::de::Error>(n: &Number) -> E {
    E::custom(format!(
        "invalid value: {n}, expected a whole number within the field's range"
    ))
}

/// The whole number `n` as a `T`, if it is one and fits.
fn whole<T: TryFrom<i64> + TryFrom<u64>>(n: &Number) -> Option<T> {
    if let Some(u) = n.as_u64() {
        return T::try_from(u).ok();
    }
    if let Some(i) = n.as_i64() {
        return T::try_from(i).ok();
    }
    let f = n.as_f64()?;
    // 2^64 and -2^63 are exact in f64; within them the cast is exact for a whole number.
    const TWO_64: f64 = 18_446_744_073_709_551_616.0;
    const MINUS_TWO_63: f64 = -9_223_372_036_854_775_808.0;
    if f.fract() != 0.0 || !f.is_finite() {
        return None;
    }
    if (0.0..TWO_64).contains(&f) {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "whole and in range, checked above"
        )]
        return T::try_from(f as u64).ok();
    }
    if (MINUS_TWO_63..0.0).contains(&f) {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "whole and in range, checked above"
        )]
        return T::try_from(f as i64).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[derive(serde::Deserialize, Debug)]
    struct T {
        #[serde(deserialize_with = "super::int")]
        a: i32,
        #[serde(default, deserialize_with = "super::opt_int")]
        b: Option<u64>,
    }

    fn parse(s: &str) -> Result<T, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn whole_floats_count_as_integers_and_nothing_else_does() {
        let t = parse(r#"{"a": 1000.0, "b": 5}"#).unwrap();
        assert_eq!((t.a, t.b), (1000, Some(5)));
        let t = parse(r#"{"a": -3}"#).unwrap();
        assert_eq!((t.a, t.b), (-3, None));
        assert_eq!(parse(r#"{"a": 1, "b": null}"#).unwrap().b, None);
        assert_eq!(parse(r#"{"a": 1, "b": 2e3}"#).unwrap().b, Some(2000));
        for bad in [
            r#"{"a": 1.5}"#,
            r#"{"a": 2147483648}"#,
            r#"{"a": 1, "b": -1}"#,
            r#"{"a": 1, "b": -1.0}"#,
            r#"{"a": "1"}"#,
            r#"{"a": 1, "b": 1e300}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
