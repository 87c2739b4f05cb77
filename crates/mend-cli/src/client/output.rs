//! How the client commands show answers: JSON on stdout as is, fields of a JSON answer as
//! text, and aligned plain-text tables. It sends nothing and decides nothing.

use anyhow::Context;
use serde_json::Value;

/// `s` on one line, runs of white space made one space.
pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The start of a body, on one line, for messages.
pub(super) fn snippet(bytes: &[u8]) -> String {
    let text = one_line(&String::from_utf8_lossy(bytes));
    if text.chars().count() > 200 {
        let cut: String = text.chars().take(200).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Prints a JSON answer as is (pretty), one document on stdout.
pub(super) fn print_json(v: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v).context("printing the answer")?;
    println!("{text}");
    Ok(())
}

/// A field as text; `-` when it is missing or null.
pub(super) fn str_field(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A numeric field as text; `-` when it is missing or null.
pub(super) fn num_field(v: &Value, key: &str) -> String {
    str_field(v, key)
}

/// An array field's items; none when it is missing or not an array.
pub(super) fn array_field(v: &Value, key: &str) -> Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// An RFC 3339 time shortened to whole seconds in UTC, e.g. `2026-11-21T10:00:00Z`.
pub(super) fn time_field(v: &Value, key: &str) -> String {
    let raw = str_field(v, key);
    chrono::DateTime::parse_from_rfc3339(&raw)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .unwrap_or(raw)
}

/// A plain text table: columns padded to their widest cell, two spaces apart.
pub(super) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    /// Columns from this index on are right-aligned (numbers).
    right_from: usize,
}

impl Table {
    pub(super) fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            right_from: usize::MAX,
        }
    }

    pub(super) fn right_from(&mut self, col: usize) {
        self.right_from = col;
    }

    pub(super) fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub(super) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let mut out = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                if i > 0 {
                    line.push_str("  ");
                }
                if i >= self.right_from {
                    line.push_str(&format!("{c:>w$}"));
                } else {
                    line.push_str(&format!("{c:<w$}"));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_numbers_go_right() {
        let mut t = Table::new(&["NAME", "N"]);
        t.right_from(1);
        t.row(vec!["default".into(), "12".into()]);
        t.row(vec!["a".into(), "3".into()]);
        assert_eq!(t.render(), "NAME      N\ndefault  12\na         3\n");
    }
}
