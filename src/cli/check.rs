//! `cdp check`: every diagnostic of every file, for people (source line + caret) or editors (JSON).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use cdp_grammar::{diag, Severity};

use super::{load, plural, DiagnosticFormat, Failure, Outcome};

pub fn run(dir: &Path, format: DiagnosticFormat, out: &mut dyn Write) -> Outcome {
    let project = load(dir)?;
    let checked = cdp_compiler::check(&project);
    match format {
        DiagnosticFormat::Json => {
            let json: Vec<_> = checked
                .diagnostics
                .iter()
                .map(|d| diag::to_json(&project.map, d))
                .collect();
            let text = serde_json::to_string_pretty(&json)
                .map_err(|e| Failure::Internal(format!("cannot encode diagnostics: {e}")))?;
            writeln!(out, "{text}")?;
        }
        DiagnosticFormat::Text => {
            for d in &checked.diagnostics {
                writeln!(out, "{}", diag::render(&project.map, d))?;
            }
            writeln!(out, "{}", summary(&project, &checked))?;
        }
    }
    if checked.has_errors() {
        Err(Failure::Reported)
    } else {
        Ok(())
    }
}

/// `error: 3 errors in 2 files` or `ok: 42 definitions in 7 files`, warnings counted alongside.
fn summary(project: &cdp_compiler::ProjectSources, checked: &cdp_compiler::Checked) -> String {
    let count = |severity| {
        checked
            .diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    };
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    if errors > 0 {
        let files: BTreeSet<_> = checked
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.span.file)
            .collect();
        let warnings = if warnings > 0 {
            format!(" and {}", plural(warnings, "warning"))
        } else {
            String::new()
        };
        format!(
            "error: {}{warnings} in {}",
            plural(errors, "error"),
            plural(files.len(), "file")
        )
    } else {
        let definitions: usize = checked.files.iter().map(|(_, f)| f.definitions.len()).sum();
        let warnings = if warnings > 0 {
            format!(" ({})", plural(warnings, "warning"))
        } else {
            String::new()
        };
        format!(
            "ok: {} in {}{warnings}",
            plural(definitions, "definition"),
            plural(project.files.len(), "file")
        )
    }
}
