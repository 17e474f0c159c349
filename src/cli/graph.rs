//! `cdp graph`: the dependency graph of a project that checks, as text, Graphviz or Mermaid.

use std::io::Write;
use std::path::Path;

use cdp_compiler::GraphFormat as Format;
use cdp_grammar::diag;

use super::{load, plural, Failure, GraphFormat, Outcome};

pub fn run(dir: &Path, format: GraphFormat, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let project = load(dir)?;
    let checked = cdp_compiler::check(&project);
    // Warnings go along with the graph; errors mean the graph would be partial, so none is drawn.
    for d in &checked.diagnostics {
        writeln!(err, "{}", diag::render(&project.map, d))?;
    }
    if checked.has_errors() {
        let errors = checked.diagnostics.iter().filter(|d| d.is_error()).count();
        return Err(Failure::User(format!(
            "no graph: the project has {} (run `cdp check` for details)",
            plural(errors, "error")
        )));
    }
    let format = match format {
        GraphFormat::Text => Format::Text,
        GraphFormat::Dot => Format::Dot,
        GraphFormat::Mermaid => Format::Mermaid,
    };
    write!(out, "{}", checked.graph.render(format))?;
    Ok(())
}
