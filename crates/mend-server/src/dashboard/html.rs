//! The page frame and the small pieces every page uses: times, durations, state badges,
//! masked args.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use mend::JobState;

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Overview,
    Jobs,
    Queues,
    Nodes,
    Rollouts,
    None,
}

/// A whole page: navigation, then `body` in `<main>`.
pub(super) fn layout(title: &str, nav: Nav, body: Markup) -> Html<String> {
    frame(title, nav, true, body)
}

/// A page without navigation (the login page).
pub(super) fn layout_bare(title: &str, nav: Nav, body: Markup) -> Html<String> {
    frame(title, nav, false, body)
}

fn frame(title: &str, nav: Nav, with_nav: bool, body: Markup) -> Html<String> {
    let item = |n: Nav, href: &str, label: &str| {
        html! { a href=(href) aria-current=[(nav == n).then_some("page")] { (label) } }
    };
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · mend" }
                    link rel="stylesheet" href="/assets/app.css";
                    script src="/assets/app.js" defer {}
                }
                body {
                    a.skip href="#main" { "Skip to content" }
                    @if with_nav {
                        header {
                            nav aria-label="Main" {
                                a.brand href="/" { "mend" }
                                (item(Nav::Overview, "/", "Overview"))
                                (item(Nav::Jobs, "/jobs", "Jobs"))
                                (item(Nav::Queues, "/queues", "Queues"))
                                (item(Nav::Nodes, "/nodes", "Nodes"))
                                (item(Nav::Rollouts, "/rollouts", "Rollouts"))
                                form method="post" action="/logout" { button type="submit" { "Log out" } }
                            }
                        }
                    }
                    main #main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// An error page with `message`.
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    let body = html! {
        h1 { (status.canonical_reason().unwrap_or("Error")) }
        p.error role="alert" { (message) }
        p { a href="/" { "Back to the overview" } }
    };
    (status, layout("Error", Nav::None, body)).into_response()
}

/// A time in UTC that the page's script shows in the viewer's zone; the UTC value stays on
/// hover.
pub(super) fn time(at: DateTime<Utc>) -> Markup {
    let utc = at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! { time datetime=(at.to_rfc3339()) title=(utc) { (utc) } }
}

/// An optional time, or a dash.
pub(super) fn time_opt(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        Some(at) => time(at),
        None => html! { span.muted { "—" } },
    }
}

/// A duration in words a person reads at a glance: `850 ms`, `12.3 s`, `4 m 05 s`, `3 h 02 m`.
pub(super) fn dur_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} m {:02} s", ms / 60_000, (ms / 1000) % 60)
    } else if ms < 86_400_000 {
        format!("{} h {:02} m", ms / 3_600_000, (ms / 60_000) % 60)
    } else {
        format!("{} d {:02} h", ms / 86_400_000, (ms / 3_600_000) % 24)
    }
}

/// The time from `from` to `to` in words.
pub(super) fn between(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    dur_ms((to - from).num_milliseconds())
}

/// A job state as a coloured badge.
pub(super) fn state_badge(s: JobState) -> Markup {
    html! { span class={"badge s-" (s.as_str())} { (s.as_str()) } }
}

/// The first 8 hex digits of an id, enough to tell jobs apart on a page; the whole id is on
/// hover.
pub(super) fn short_id(id: &uuid::Uuid) -> Markup {
    let s = id.to_string();
    let tail = s.get(s.len().saturating_sub(12)..).unwrap_or(&s).to_owned();
    html! { code title=(s) { "…" (tail) } }
}

/// A count that was capped: `10,000+`.
pub(super) fn count(n: u64, capped: bool) -> String {
    let mut s = n.to_string();
    let mut i = s.len() as isize - 3;
    while i > 0 {
        s.insert(i as usize, ',');
        i -= 3;
    }
    if capped {
        s.push('+');
    }
    s
}

/// Percent-encodes a query value.
pub(super) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `value` with the values under secret-looking keys replaced (see [`mend::secrets::mask`],
/// the one masking rule of the API, the CLI and the dashboard). Returns how many were masked.
pub(super) fn mask(value: &serde_json::Value) -> (serde_json::Value, usize) {
    mend::secrets::mask(value)
}

/// JSON, pretty-printed, in a `<pre>`.
pub(super) fn json_block(value: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    html! { pre { code { (text) } } }
}

/// Raw SVG markup we built ourselves (numbers and escaped text only).
pub(super) fn svg(markup: String) -> Markup {
    PreEscaped(markup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_read_well() {
        assert_eq!(count(10_000, true), "10,000+");
        assert_eq!(count(999, false), "999");
        assert_eq!(count(1_234_567, false), "1,234,567");
        assert_eq!(dur_ms(850), "850 ms");
        assert_eq!(dur_ms(12_340), "12.3 s");
        assert_eq!(dur_ms(245_000), "4 m 05 s");
        assert_eq!(dur_ms(10_920_000), "3 h 02 m");
    }

    #[test]
    fn queries_are_encoded() {
        assert_eq!(url_encode("/jobs?state=a&b"), "%2Fjobs%3Fstate%3Da%26b");
    }
}
