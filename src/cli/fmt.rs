//! `cdp fmt`: rewrites every .cdp file in the one canonical layout; `--check` only reports.

use std::fs;
use std::io::Write;
use std::path::Path;

use cdp_grammar::{diag, format::format_source, Diagnostic, FileId};

use super::{load, plural, Failure, Outcome};

pub fn run(dir: &Path, check: bool, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let project = load(dir)?;
    let mut changed = Vec::new();
    let mut broken = 0;
    for &id in &project.files {
        let file = project.map.get(id);
        match format_source(&file.path, &file.text) {
            Ok(formatted) if formatted == file.text => {}
            Ok(formatted) => {
                if !check {
                    write_in_place(&project.root.join(&file.path), &formatted)?;
                }
                writeln!(out, "{}", file.path)?;
                changed.push(id);
            }
            Err(diagnostics) => {
                broken += 1;
                for d in diagnostics {
                    writeln!(err, "{}", diag::render(&project.map, &in_file(d, id)))?;
                }
            }
        }
    }
    let total = project.files.len();
    if broken > 0 {
        return Err(Failure::User(format!(
            "{} of {} not formatted because of syntax errors",
            broken,
            plural(total, "file")
        )));
    }
    if check && !changed.is_empty() {
        writeln!(
            err,
            "{} of {} would be reformatted; run `cdp fmt`",
            changed.len(),
            plural(total, "file")
        )?;
        return Err(Failure::Reported);
    }
    Ok(())
}

/// The formatter sees one file alone; its spans are moved to that file's id in the project map.
fn in_file(mut d: Diagnostic, id: FileId) -> Diagnostic {
    d.span.file = id;
    for (span, _) in &mut d.related {
        span.file = id;
    }
    d
}

/// Writes next to the file and renames over it, so an interrupted `fmt` never leaves half a file.
fn write_in_place(path: &Path, text: &str) -> Outcome {
    let fail = |e: std::io::Error| Failure::User(format!("cannot write {}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".cdp-fmt.tmp");
    fs::write(&tmp, text).map_err(fail)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail(e)
    })
}
