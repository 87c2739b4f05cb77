//! Reading a built-in kind's JSON args by hand, so that every message names the field and says
//! what was expected (serde's own type errors do not name the field). Shared by the executors
//! at run time and by [`crate::validate`] at enqueue time, so both refuse exactly the same args.

use std::time::Duration;

use serde_json::{Map, Value};

/// Longest `timeout_ms` / `sleep_ms` any built-in kind accepts: a day. Longer is a mistake
/// (the worker's attempt timeout is far shorter by default).
pub(crate) const MAX_DURATION_MS: u64 = 24 * 60 * 60 * 1000;

/// The fields of one job's args: an object whose keys were all checked against the kind's
/// list. `null` args read as an empty object.
pub(crate) struct Fields<'a> {
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Fields<'a> {
    /// Check that `args` is an object (or `null`) with no field outside `allowed`.
    pub(crate) fn new(args: &'a Value, allowed: &[&str]) -> Result<Self, String> {
        match args {
            Value::Null => Ok(Fields { map: None }),
            Value::Object(map) => {
                if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
                    return Err(format!(
                        "unknown field `{unknown}`; the fields are {}",
                        allowed
                            .iter()
                            .map(|f| format!("`{f}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Ok(Fields { map: Some(map) })
            }
            other => Err(format!(
                "args must be a JSON object, got {}",
                type_name(other)
            )),
        }
    }

    /// The field's value; `null` counts as absent.
    pub(crate) fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(name)).filter(|v| !v.is_null())
    }

    /// An optional string.
    pub(crate) fn opt_str(&self, name: &str) -> Result<Option<&'a str>, String> {
        self.opt(name, "a string", Value::as_str)
    }

    /// A required string.
    pub(crate) fn req_str(&self, name: &str) -> Result<&'a str, String> {
        self.opt_str(name)?
            .ok_or_else(|| format!("field `{name}` is required (a string)"))
    }

    /// An optional array of strings (absent: empty).
    pub(crate) fn str_array(&self, name: &str) -> Result<Vec<String>, String> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "field `{name}` must be an array of strings, but item {i} is {}",
                        type_name(other)
                    )),
                })
                .collect(),
            Some(other) => Err(format!(
                "field `{name}` must be an array of strings, got {}",
                type_name(other)
            )),
        }
    }

    /// An optional object.
    pub(crate) fn opt_object(&self, name: &str) -> Result<Option<&'a Map<String, Value>>, String> {
        self.opt(name, "an object", Value::as_object)
    }

    /// An optional field that `pick` reads, or an error saying it must be `what`.
    fn opt<T>(
        &self,
        name: &str,
        what: &str,
        pick: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, String> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        match pick(v) {
            Some(t) => Ok(Some(t)),
            None => Err(format!(
                "field `{name}` must be {what}, got {}",
                type_name(v)
            )),
        }
    }

    /// An optional duration in whole milliseconds, from `min_ms` to [`MAX_DURATION_MS`].
    pub(crate) fn opt_millis(&self, name: &str, min_ms: u64) -> Result<Option<Duration>, String> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let expected = || {
            format!(
                "field `{name}` must be a whole number of milliseconds from {min_ms} to {MAX_DURATION_MS}"
            )
        };
        match v.as_u64() {
            Some(ms) if (min_ms..=MAX_DURATION_MS).contains(&ms) => {
                Ok(Some(Duration::from_millis(ms)))
            }
            Some(ms) => Err(format!("{}, got {ms}", expected())),
            None => Err(format!("{}, got {}", expected(), describe(v))),
        }
    }
}

/// "a string", "an array", ... for messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A number is shown as itself (it cannot hold a secret and helps the reader); anything else
/// by its type only.
fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => type_name(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_named() {
        let err = Fields::new(&json!({"sleep": 1}), &["sleep_ms"])
            .err()
            .expect("refused");
        assert!(err.contains("unknown field `sleep`"), "{err}");
        assert!(err.contains("`sleep_ms`"), "{err}");
    }

    #[test]
    fn non_objects_are_refused_and_null_is_empty() {
        let err = Fields::new(&json!([1]), &[]).err().expect("refused");
        assert_eq!(err, "args must be a JSON object, got an array");
        let f = Fields::new(&Value::Null, &["a"]).expect("null is fine");
        assert!(f.get("a").is_none());
    }

    #[test]
    fn millis_are_range_checked_and_typed() {
        let args = json!({"a": -1, "b": "5", "c": 1.5, "d": 0, "e": 250, "f": null});
        let f = Fields::new(&args, &["a", "b", "c", "d", "e", "f"]).expect("fields");
        for (name, got) in [("a", "got -1"), ("b", "got a string"), ("c", "got 1.5")] {
            let err = f.opt_millis(name, 0).expect_err(name);
            assert!(err.starts_with(&format!("field `{name}` must be")), "{err}");
            assert!(err.ends_with(got), "{err}");
        }
        assert!(f.opt_millis("d", 1).is_err(), "below the minimum");
        assert_eq!(f.opt_millis("d", 0), Ok(Some(Duration::ZERO)));
        assert_eq!(f.opt_millis("e", 1), Ok(Some(Duration::from_millis(250))));
        assert_eq!(f.opt_millis("f", 1), Ok(None), "null is absent");
        let big = json!({"a": MAX_DURATION_MS + 1});
        let f = Fields::new(&big, &["a"]).expect("fields");
        assert!(f.opt_millis("a", 0).is_err());
    }

    #[test]
    fn string_arrays_name_the_bad_item() {
        let args = json!({"args": ["a", 2]});
        let f = Fields::new(&args, &["args"]).expect("fields");
        let err = f.str_array("args").expect_err("refused");
        assert_eq!(
            err,
            "field `args` must be an array of strings, but item 1 is a number"
        );
    }
}
