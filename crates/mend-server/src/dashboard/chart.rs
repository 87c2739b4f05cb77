//! Charts as inline SVG, drawn from numbers: a line chart with event markers and a sparkline.
//! A few dozen lines of arithmetic instead of a charting crate: the shapes are simple, the
//! output is small, it is styled by the page's CSS (light and dark), and it needs no script.

use std::fmt::Write;

/// One line of a chart.
pub(super) struct Series<'a> {
    /// CSS class (`l-completed`...), which sets its colour.
    pub class: &'a str,
    /// Name, for the tooltip.
    pub name: &'a str,
    /// One value per bucket.
    pub values: Vec<f64>,
}

/// A vertical marker at bucket `at` (a rescue, a deploy).
pub(super) struct Marker {
    /// Bucket index.
    pub at: usize,
    /// CSS class.
    pub class: &'static str,
    /// Tooltip text.
    pub title: String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart of `series` over `buckets` buckets, with `labels` under the first, middle and
/// last bucket, and `markers`. `title` is its accessible name.
pub(super) fn lines(
    title: &str,
    buckets: usize,
    series: &[Series<'_>],
    labels: [&str; 3],
    markers: &[Marker],
) -> String {
    const W: f64 = 600.0;
    const H: f64 = 160.0;
    const L: f64 = 36.0;
    const B: f64 = 18.0;
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let x = |i: usize| L + (W - L - 4.0) * i as f64 / (buckets.max(2) - 1) as f64;
    let y = |v: f64| 4.0 + (H - B - 4.0) * (1.0 - v / max);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
    let _ = write!(
        s,
        r#"<line class="axis" x1="{L}" y1="{b}" x2="{W}" y2="{b}"/><line class="axis" x1="{L}" y1="4" x2="{L}" y2="{b}"/>"#,
        b = H - B
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="12" text-anchor="end">{}</text><text x="{}" y="{}" text-anchor="end">0</text>"#,
        L - 4.0,
        fmt_num(max),
        L - 4.0,
        H - B
    );
    for (i, label) in labels.iter().enumerate() {
        let (at, anchor) = match i {
            0 => (x(0), "start"),
            1 => (x(buckets / 2), "middle"),
            _ => (x(buckets.saturating_sub(1)), "end"),
        };
        let _ = write!(
            s,
            r#"<text x="{at:.1}" y="{}" text-anchor="{anchor}">{}</text>"#,
            H - 4.0,
            esc(label)
        );
    }
    for m in markers {
        let _ = write!(
            s,
            r#"<line class="marker {}" x1="{x:.1}" y1="4" x2="{x:.1}" y2="{}"><title>{}</title></line>"#,
            m.class,
            H - B,
            esc(&m.title),
            x = x(m.at)
        );
    }
    for line in series {
        let points: Vec<String> = line
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let total: f64 = line.values.iter().sum();
        let _ = write!(
            s,
            r#"<polyline class="{}" points="{}"><title>{}: {} in all</title></polyline>"#,
            line.class,
            points.join(" "),
            esc(line.name),
            fmt_num(total)
        );
    }
    s.push_str("</svg>");
    s
}

/// A small line of `values` with no axes, for a table cell.
pub(super) fn sparkline(title: &str, values: &[f64]) -> String {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    let max = values.iter().copied().fold(0.0_f64, f64::max).max(1.0);
    let n = values.len().max(2) - 1;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                W * i as f64 / n as f64,
                2.0 + (H - 4.0) * (1.0 - v / max)
            )
        })
        .collect();
    format!(
        r#"<svg class="spark" viewBox="0 0 {W} {H}" role="img" aria-label="{t}"><title>{t}</title><polyline points="{}"/></svg>"#,
        points.join(" "),
        t = esc(title)
    )
}

fn fmt_num(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_svg_with_one_polyline_per_series() {
        let svg = lines(
            "Jobs <per> minute",
            3,
            &[
                Series {
                    class: "l-completed",
                    name: "completed",
                    values: vec![1.0, 5.0, 2.0],
                },
                Series {
                    class: "l-failed",
                    name: "failed",
                    values: vec![0.0, 1.0, 0.0],
                },
            ],
            ["-60m", "-30m", "now"],
            &[Marker {
                at: 1,
                class: "marker-rescue",
                title: "rescue".into(),
            }],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(
            svg.contains("Jobs &lt;per&gt; minute"),
            "titles are escaped"
        );
        assert!(svg.contains("completed: 8 in all"));
        assert!(svg.contains("marker marker-rescue"));
        // The highest value touches the top of the plot.
        assert!(svg.contains(",4.0"), "{svg}");
    }

    #[test]
    fn sparkline_of_nothing_is_flat() {
        let svg = sparkline("q", &[0.0, 0.0]);
        assert!(svg.contains("0.0,22.0 120.0,22.0"), "{svg}");
    }
}
