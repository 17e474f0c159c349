//! Charts and graphs drawn as SVG on the server: no script, no front-end build.

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

/// Vertical bars with a label under each, scaled to the largest value.
pub fn bars(title: &str, bars: &[(String, f64)]) -> String {
    let (w, h, pad) = (640.0, 220.0, 30.0);
    let max = bars.iter().map(|b| b.1).fold(0.0_f64, f64::max).max(1e-9);
    let n = bars.len().max(1) as f64;
    let step = (w - 2.0 * pad) / n;
    let mut svg = format!(
        "<svg class=\"chart\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(title)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let bh = (h - 2.0 * pad) * value / max;
        let x = pad + step * i as f64;
        svg.push_str(&format!(
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}: {}</title></rect>",
            x + 1.0,
            h - pad - bh,
            (step - 2.0).max(1.0),
            bh,
            esc(label),
            value
        ));
    }
    svg.push_str("</svg>");
    svg
}
