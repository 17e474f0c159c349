//! Charts and graphs drawn as SVG on the server: no script, no front-end build. Each drawing
//! scales to its container (a `viewBox`, never wider than drawn), says what it shows to screen
//! readers (`role="img"` and a label), and carries its exact numbers as tooltips (`<title>`), so
//! the picture is the page and the numbers are one hover away.
//!
//! Every function returns one `<svg>` element with a stable `id` (and `data-testid`) given by
//! the caller; marks have classes (`bar`, `point`, `line`, `node`, `edge`) the stylesheet colours.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Escapes text for HTML and SVG.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number for people: thousands grouped, at most three decimals, no trailing zeros.
pub fn num(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let negative = value < 0.0;
    let abs = value.abs();
    let decimals = if abs >= 1000.0 || abs.fract() == 0.0 {
        0
    } else if abs >= 10.0 {
        1
    } else if abs >= 1.0 {
        2
    } else {
        3
    };
    let text = format!("{abs:.decimals$}");
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f.trim_end_matches('0')),
        None => (text.as_str(), ""),
    };
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if negative && (grouped != "0" || !frac.is_empty()) {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// A short number for axes: `1.2k`, `3.4M`.
pub fn short(value: f64) -> String {
    let abs = value.abs();
    if abs >= 1e9 {
        format!("{}B", num(value / 1e9))
    } else if abs >= 1e6 {
        format!("{}M", num(value / 1e6))
    } else if abs >= 1e4 {
        format!("{}k", num(value / 1e3))
    } else {
        num(value)
    }
}

/// A time (seconds since 1970-01-01 UTC) as a date, with the time of day when it is not
/// midnight or when `always_time`.
pub fn date(seconds: f64, always_time: bool) -> String {
    match chrono::DateTime::from_timestamp(seconds.floor() as i64, 0) {
        Some(t) if always_time || seconds.rem_euclid(86_400.0) != 0.0 => {
            t.format("%Y-%m-%d %H:%M").to_string()
        }
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => num(seconds),
    }
}

/// Round tick values covering `lo..=hi` (about four steps of 1, 2 or 5 times a power of ten).
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let raw = (hi - lo) / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = match raw / magnitude {
        n if n <= 1.0 => 1.0,
        n if n <= 2.0 => 2.0,
        n if n <= 5.0 => 5.0,
        _ => 10.0,
    } * magnitude;
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

fn open(out: &mut String, id: &str, class: &str, label: &str, w: f64, h: f64) {
    let _ = write!(
        out,
        "<svg id=\"{id}\" data-testid=\"{id}\" class=\"chart {class}\" role=\"img\" aria-label=\"{label}\" \
         viewBox=\"0 0 {w} {h}\" style=\"max-width:{w}px\" xmlns=\"http://www.w3.org/2000/svg\">",
        id = esc(id),
        label = esc(label),
    );
}

/// Horizontal grid lines with their values on the left; returns the y of a value.
fn y_axis(out: &mut String, ticks: &[f64], top: f64, bottom: f64, left: f64, right: f64) {
    let (lo, hi) = (ticks[0], ticks[ticks.len() - 1]);
    for t in ticks {
        let y = bottom - (t - lo) / (hi - lo) * (bottom - top);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{left}\" x2=\"{right}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y + 4.0,
            esc(&short(*t))
        );
    }
}

/// One bar or row of a chart: its label, its value, and where it links to.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    pub href: Option<String>,
}

impl Bar {
    pub fn new(label: impl Into<String>, value: f64) -> Bar {
        Bar {
            label: label.into(),
            value,
            href: None,
        }
    }

    pub fn link(mut self, href: impl Into<String>) -> Bar {
        self.href = Some(href.into());
        self
    }
}

fn linked(out: &mut String, href: Option<&str>, inner: &str) {
    match href {
        Some(h) => {
            let _ = write!(out, "<a href=\"{}\">{inner}</a>", esc(h));
        }
        None => out.push_str(inner),
    }
}

/// Vertical bars side by side (a histogram): `axis` labels the left and right ends of the x
/// axis; each bar's tooltip says its label and value.
pub fn columns(id: &str, title: &str, bars: &[Bar], axis: (&str, &str)) -> String {
    let (w, h) = (640.0, 240.0);
    let (left, right, top, bottom) = (48.0, w - 12.0, 12.0, h - 34.0);
    let max = bars.iter().map(|b| b.value).fold(0.0_f64, f64::max);
    let ticks = ticks(0.0, max);
    let hi = ticks[ticks.len() - 1];
    let mut out = String::new();
    open(&mut out, id, "columns", title, w, h);
    y_axis(&mut out, &ticks, top, bottom, left, right);
    let step = (right - left) / bars.len().max(1) as f64;
    for (i, b) in bars.iter().enumerate() {
        let bh = (bottom - top) * b.value.max(0.0) / hi;
        let rect = format!(
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}: {}</title></rect>",
            left + step * i as f64 + 1.0,
            bottom - bh,
            (step - 2.0).max(1.0),
            bh,
            esc(&b.label),
            num(b.value)
        );
        linked(&mut out, b.href.as_deref(), &rect);
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{left}\" x2=\"{right}\" y1=\"{bottom}\" y2=\"{bottom}\"/>\
         <text class=\"tick\" x=\"{left}\" y=\"{:.1}\">{}</text>\
         <text class=\"tick\" x=\"{right}\" y=\"{:.1}\" text-anchor=\"end\">{}</text></svg>",
        bottom + 18.0,
        esc(axis.0),
        bottom + 18.0,
        esc(axis.1)
    );
    out
}

/// Horizontal bars, one row each: the label on the left (a link when the bar has one), the
/// bar, and its value followed by `unit`.
pub fn hbars(id: &str, title: &str, bars: &[Bar], unit: &str) -> String {
    let row = 24.0;
    let (w, label_w, value_w) = (640.0, 220.0, 90.0);
    let h = row * bars.len().max(1) as f64 + 8.0;
    let max = bars
        .iter()
        .map(|b| b.value)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let room = w - label_w - value_w;
    let mut out = String::new();
    open(&mut out, id, "hbars", title, w, h);
    for (i, b) in bars.iter().enumerate() {
        let y = 4.0 + row * i as f64;
        let bw = (room * b.value.max(0.0) / max).max(if b.value > 0.0 { 2.0 } else { 0.0 });
        let label = format!(
            "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            label_w - 8.0,
            y + row / 2.0 + 4.0,
            esc(&truncate(&b.label, 30))
        );
        linked(&mut out, b.href.as_deref(), &label);
        let value = format!("{}{unit}", num(b.value));
        let _ = write!(
            out,
            "<rect class=\"bar\" x=\"{label_w}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" rx=\"2\">\
             <title>{}: {}</title></rect>\
             <text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y + 3.0,
            row - 6.0,
            esc(&b.label),
            esc(&value),
            label_w + bw + 6.0,
            y + row / 2.0 + 4.0,
            esc(&value)
        );
    }
    out.push_str("</svg>");
    out
}

/// One line of a chart over time: points as (seconds since 1970-01-01 UTC, value).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Colours of series, in order (the stylesheet's palette for `.s0` … `.s7`).
pub const SERIES: usize = 8;

/// Lines over time with a dot per point and a legend when there are several series. A single
/// point is drawn as a dot in the middle.
pub fn timeline(id: &str, title: &str, series: &[Series]) -> String {
    let (w, h) = (640.0, 240.0);
    let legend = if series.len() > 1 {
        18.0 * series.len().div_ceil(4) as f64
    } else {
        0.0
    };
    let (left, right, top, bottom) = (52.0, w - 20.0, 12.0 + legend, h - 30.0);
    let points = || series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = points().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = points().fold((0.0_f64, 0.0_f64), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let ticks = ticks(y0, y1);
    let (lo, hi) = (ticks[0], ticks[ticks.len() - 1]);
    let x = |t: f64| {
        if x1 > x0 {
            left + 8.0 + (t - x0) / (x1 - x0) * (right - left - 16.0)
        } else {
            (left + right) / 2.0
        }
    };
    let y = |v: f64| bottom - (v - lo) / (hi - lo) * (bottom - top);
    let with_time = x1 - x0 < 2.0 * 86_400.0 && x1 > x0;
    let mut out = String::new();
    open(&mut out, id, "timeline", title, w, h);
    y_axis(&mut out, &ticks, top, bottom, left, right);
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{left}\" x2=\"{right}\" y1=\"{bottom}\" y2=\"{bottom}\"/>"
    );
    // Dates under the axis: every point's when few, else five evenly spaced.
    let mut times: Vec<f64> = points().map(|p| p.0).collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    let labels: Vec<f64> = if times.len() <= 6 {
        times
    } else {
        (0..5).map(|i| x0 + (x1 - x0) * i as f64 / 4.0).collect()
    };
    for (i, t) in labels.iter().enumerate() {
        let anchor = match (i, labels.len()) {
            (_, 1) => "middle",
            (0, _) => "start",
            (i, n) if i + 1 == n => "end",
            _ => "middle",
        };
        let _ = write!(
            out,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            x(*t),
            bottom + 18.0,
            esc(&date(*t, with_time))
        );
    }
    for (i, s) in series.iter().enumerate() {
        let class = format!("s{}", i % SERIES);
        if series.len() > 1 {
            let (lx, ly) = (left + 150.0 * (i % 4) as f64, 12.0 + 18.0 * (i / 4) as f64);
            let _ = write!(
                out,
                "<g class=\"legend {class}\"><rect x=\"{lx}\" y=\"{:.1}\" width=\"10\" height=\"10\" rx=\"2\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text></g>",
                ly - 9.0,
                lx + 14.0,
                ly,
                esc(&truncate(&s.name, 20))
            );
        }
        let mut points = s.points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if points.len() > 1 {
            let path: Vec<String> = points
                .iter()
                .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
                .collect();
            let _ = write!(
                out,
                "<polyline class=\"line {class}\" points=\"{}\"/>",
                path.join(" ")
            );
        }
        for &(t, v) in &points {
            let _ = write!(
                out,
                "<circle class=\"point {class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\"><title>{}{}: {}</title></circle>",
                x(t),
                y(v),
                if series.len() > 1 {
                    format!("{} · ", esc(&s.name))
                } else {
                    String::new()
                },
                esc(&date(t, with_time)),
                num(v)
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// A funnel: one centred bar per stage, its width relative to the widest, with the count and
/// its share of the first stage.
pub fn funnel(id: &str, title: &str, stages: &[Bar]) -> String {
    let row = 38.0;
    let (w, label_w, value_w) = (640.0, 200.0, 120.0);
    let h = row * stages.len().max(1) as f64 + 6.0;
    let max = stages
        .iter()
        .map(|b| b.value)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let first = stages.first().map(|b| b.value).unwrap_or(0.0);
    let room = w - label_w - value_w;
    let centre = label_w + room / 2.0;
    let mut out = String::new();
    open(&mut out, id, "funnel", title, w, h);
    for (i, b) in stages.iter().enumerate() {
        let y = 3.0 + row * i as f64;
        let bw = (room * b.value.max(0.0) / max).max(3.0);
        let share = if first > 0.0 {
            format!(" ({}%)", num(100.0 * b.value / first))
        } else {
            String::new()
        };
        let label = format!(
            "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            label_w - 10.0,
            y + row / 2.0 + 4.0,
            esc(&truncate(&b.label, 28))
        );
        linked(&mut out, b.href.as_deref(), &label);
        let _ = write!(
            out,
            "<rect class=\"bar stage\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" rx=\"3\">\
             <title>{}: {}{}</title></rect>\
             <text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{}{}</text>",
            centre - bw / 2.0,
            y + 4.0,
            row - 8.0,
            esc(&b.label),
            num(b.value),
            share,
            w - value_w + 8.0,
            y + row / 2.0 + 4.0,
            num(b.value),
            share
        );
    }
    out.push_str("</svg>");
    out
}

/// A node of a lineage graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub kind: String,
    pub href: String,
    /// The definition the page is about: drawn emphasised.
    pub focus: bool,
}

/// A dependency graph in columns by depth — what reads nothing on the left, what reads the most
/// on the right — with edges as curves from a definition to the ones that read it (`edges` are
/// (upstream, reader) indices into `nodes`). Each node links to its page.
pub fn lineage(id: &str, title: &str, nodes: &[Node], edges: &[(usize, usize)]) -> String {
    // Depth: the longest path from a node without upstream (bounded: the graph has no cycles,
    // but a bad input must not loop).
    let mut depth = vec![0usize; nodes.len()];
    for _ in 0..nodes.len() {
        let mut changed = false;
        for &(from, to) in edges {
            if from < nodes.len() && to < nodes.len() && depth[to] < depth[from] + 1 {
                depth[to] = depth[from] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut columns: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, d) in depth.iter().enumerate() {
        columns.entry(*d).or_default().push(i);
    }
    // Order each column by the mean row of its upstream nodes, so edges cross less.
    let mut row = vec![0.0_f64; nodes.len()];
    for column in columns.values_mut() {
        let key = |i: usize| {
            let ups: Vec<f64> = edges
                .iter()
                .filter(|e| e.1 == i)
                .map(|e| row[e.0])
                .collect();
            if ups.is_empty() {
                f64::MAX
            } else {
                ups.iter().sum::<f64>() / ups.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = column.iter().map(|&i| (key(i), i)).collect();
        keyed.sort_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then_with(|| nodes[a.1].kind.cmp(&nodes[b.1].kind))
                .then_with(|| nodes[a.1].name.cmp(&nodes[b.1].name))
        });
        *column = keyed.into_iter().map(|(_, i)| i).collect();
        for (r, &i) in column.iter().enumerate() {
            row[i] = r as f64;
        }
    }
    let (col_w, node_w, node_h, gap, pad) = (210.0, 176.0, 30.0, 10.0, 12.0);
    let tallest = columns.values().map(Vec::len).max().unwrap_or(1) as f64;
    let w = pad * 2.0 + col_w * columns.len().max(1) as f64 - (col_w - node_w);
    let h = pad * 2.0 + tallest * (node_h + gap) - gap;
    let mut place = vec![(0.0_f64, 0.0_f64); nodes.len()];
    for (c, column) in columns.values().enumerate() {
        // Centre shorter columns vertically.
        let offset = (tallest - column.len() as f64) * (node_h + gap) / 2.0;
        for (r, &i) in column.iter().enumerate() {
            place[i] = (
                pad + col_w * c as f64,
                pad + offset + r as f64 * (node_h + gap),
            );
        }
    }
    let mut out = String::new();
    open(&mut out, id, "lineage", title, w, h);
    for &(from, to) in edges {
        if from >= nodes.len() || to >= nodes.len() {
            continue;
        }
        let (x1, y1) = (place[from].0 + node_w, place[from].1 + node_h / 2.0);
        let (x2, y2) = (place[to].0, place[to].1 + node_h / 2.0);
        let bend = ((x2 - x1) / 2.0).max(20.0);
        let class = if nodes[from].focus || nodes[to].focus {
            "edge near"
        } else {
            "edge"
        };
        let _ = write!(
            out,
            "<path class=\"{class}\" d=\"M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}\">\
             <title>{} → {}</title></path>",
            x1 + bend,
            x2 - bend,
            esc(&nodes[from].name),
            esc(&nodes[to].name)
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = place[i];
        let _ = write!(
            out,
            "<a href=\"{href}\"><g class=\"node k-{kind}{focus}\" data-name=\"{name}\">\
             <title>{kind} {name}</title>\
             <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{node_w}\" height=\"{node_h}\" rx=\"6\"/>\
             <rect class=\"stripe\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"5\" height=\"{node_h}\" rx=\"2\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{short}</text></g></a>",
            x + 12.0,
            y + node_h / 2.0 + 4.5,
            href = esc(&n.href),
            kind = esc(&n.kind),
            focus = if n.focus { " focus" } else { "" },
            name = esc(&n.name),
            short = esc(&truncate(&n.name, 22)),
        );
    }
    out.push_str("</svg>");
    out
}

/// At most `max` characters, with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(1234567.0), "1,234,567");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(0.12345), "0.123");
        assert_eq!(num(-2.5), "-2.5");
        assert_eq!(num(3.0), "3");
        assert_eq!(short(12_500.0), "12.5k");
    }

    #[test]
    fn ticks_cover_the_range_with_round_steps() {
        assert_eq!(ticks(0.0, 37.0), vec![0.0, 10.0, 20.0, 30.0, 40.0]);
        assert_eq!(ticks(0.0, 0.0), vec![0.0, 0.5, 1.0]);
        assert_eq!(ticks(0.0, 1.0), vec![0.0, 0.5, 1.0]);
        let t = ticks(-3.0, 7.0);
        assert!(t[0] <= -3.0 && *t.last().unwrap() >= 7.0);
    }

    #[test]
    fn text_is_escaped_in_every_drawing() {
        let evil = "<script>&\"'";
        let bars = [Bar::new(evil, 1.0).link("/d/<x>")];
        for svg in [
            columns("c", evil, &bars, (evil, evil)),
            hbars("h", evil, &bars, evil),
            funnel("f", evil, &bars),
            timeline(
                "t",
                evil,
                &[Series {
                    name: evil.into(),
                    points: vec![(0.0, 1.0)],
                }],
            ),
            lineage(
                "l",
                evil,
                &[Node {
                    name: evil.into(),
                    kind: evil.into(),
                    href: evil.into(),
                    focus: true,
                }],
                &[],
            ),
        ] {
            assert!(!svg.contains("<script"), "{svg}");
        }
    }

    #[test]
    fn lineage_places_readers_right_of_what_they_read() {
        let node = |name: &str| Node {
            name: name.into(),
            kind: "feature".into(),
            href: format!("/d/{name}"),
            focus: false,
        };
        let svg = lineage(
            "g",
            "lineage",
            &[node("c"), node("a"), node("b")],
            &[(1, 2), (2, 0), (1, 0)],
        );
        let x_of = |name: &str| -> f64 {
            let at = svg.find(&format!("data-name=\"{name}\"")).unwrap();
            let rest = &svg[at..];
            let x = rest.split("x=\"").nth(1).unwrap();
            x[..x.find('"').unwrap()].parse().unwrap()
        };
        assert!(x_of("a") < x_of("b") && x_of("b") < x_of("c"));
        assert_eq!(svg.matches("class=\"edge").count(), 3);
    }
}
