//! Diagnostics: what went wrong, where, and what to do about it; rendered for people or editors.

use serde::Serialize;

use crate::span::{SourceMap, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A problem in the user's input, tied to the place it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable short name of the kind of mistake (`unknown-name`, `syntax`, …).
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    /// Short text printed under the underlined span.
    pub label: Option<String>,
    /// Other places that explain the error (the first definition of a duplicate, …).
    pub related: Vec<(Span, String)>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            label: None,
            related: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn with_related(mut self, span: Span, text: impl Into<String>) -> Diagnostic {
        self.related.push((span, text.into()));
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Adds "did you mean …?" when a candidate is close enough to the misspelt `name`.
    pub fn with_suggestion<'a>(
        self,
        name: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Diagnostic {
        match nearest_name(name, candidates) {
            Some(best) => self.with_help(format!("did you mean `{best}`?")),
            None => self,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The candidate closest to `name` by edit distance, if it is plausibly a typo of it.
pub fn nearest_name<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, c)| c)
}

/// Damerau–Levenshtein distance (adjacent transpositions count once): the usual typo metric.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2 = vec![0usize; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(prev2[j - 2] + 1);
            }
            cur[j] = v;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Renders diagnostics the way compilers people trust do: header, location, source line, caret.
pub fn render(map: &SourceMap, diag: &Diagnostic) -> String {
    let mut out = String::new();
    let kind = match diag.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    out.push_str(&format!("{kind}[{}]: {}\n", diag.code, diag.message));
    render_snippet(map, diag.span, diag.label.as_deref(), '^', &mut out);
    for (span, text) in &diag.related {
        render_snippet(map, *span, Some(text), '-', &mut out);
    }
    for note in &diag.notes {
        out.push_str(&format!("  = note: {note}\n"));
    }
    if let Some(help) = &diag.help {
        out.push_str(&format!("  = help: {help}\n"));
    }
    out
}

/// Characters of a source line shown at most.
const MAX_SHOWN: usize = 120;

fn render_snippet(map: &SourceMap, span: Span, label: Option<&str>, mark: char, out: &mut String) {
    let file = map.get(span.file);
    let (line, col) = file.line_col(span.start as usize);
    let (end_line, end_col) = file.line_col(span.end as usize);
    let text = file.line_text(line);
    let width = line.to_string().len();
    let pad = " ".repeat(width);
    out.push_str(&format!("{pad}--> {}:{line}:{col}\n", file.path));
    out.push_str(&format!("{pad} |\n"));
    let chars: Vec<char> = text
        .chars()
        .map(|c| if c == '\t' { ' ' } else { c })
        .collect();
    let stop = if end_line == line {
        end_col
    } else {
        chars.len() + 1
    };
    // Long lines (generated files, minified input) are cut to a window around the span.
    let (from, to) = if chars.len() > MAX_SHOWN {
        let from = (col - 1).saturating_sub(MAX_SHOWN / 3).min(chars.len());
        (from, (from + MAX_SHOWN).min(chars.len()))
    } else {
        (0, chars.len())
    };
    let prefix = if from > 0 { "…" } else { "" };
    let suffix = if to < chars.len() { "…" } else { "" };
    let shown: String = chars[from..to].iter().collect();
    out.push_str(&format!("{line} | {prefix}{shown}{suffix}\n"));
    let caret_start = (col - 1).clamp(from, to) - from + prefix.chars().count();
    let caret_stop = (stop - 1).clamp(from, to) - from + prefix.chars().count();
    let len = caret_stop.saturating_sub(caret_start).max(1);
    out.push_str(&format!(
        "{pad} | {}{}",
        " ".repeat(caret_start),
        mark.to_string().repeat(len)
    ));
    if let Some(label) = label {
        out.push(' ');
        out.push_str(label);
    }
    out.push('\n');
}

/// A diagnostic as editors consume it (`cdp check --format json`).
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic<'a> {
    pub severity: Severity,
    pub code: &'a str,
    pub message: &'a str,
    pub file: &'a str,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<&'a str>,
}

pub fn to_json<'a>(map: &'a SourceMap, diag: &'a Diagnostic) -> JsonDiagnostic<'a> {
    let file = map.get(diag.span.file);
    let (line, column) = file.line_col(diag.span.start as usize);
    let (end_line, end_column) = file.line_col(diag.span.end as usize);
    JsonDiagnostic {
        severity: diag.severity,
        code: diag.code,
        message: &diag.message,
        file: &file.path,
        line,
        column,
        end_line,
        end_column,
        label: diag.label.as_deref(),
        notes: diag.notes.iter().map(String::as_str).collect(),
        help: diag.help.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_typos() {
        assert_eq!(edit_distance("lifetime_value", "lifetime_value"), 0);
        assert_eq!(edit_distance("lifetme_value", "lifetime_value"), 1);
        assert_eq!(edit_distance("odrers", "orders"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn nearest_name_ignores_far_candidates() {
        let names = ["orders_30d", "lifetime_value", "views_7d"];
        assert_eq!(nearest_name("orders_03d", names), Some("orders_30d"));
        assert_eq!(nearest_name("zzz", names), None);
    }
}
