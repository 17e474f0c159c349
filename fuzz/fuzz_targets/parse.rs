//! No input may make the front end panic or hang: arbitrary text goes through the parser, the
//! diagnostics renderer, and (when it parses) the checker, the graph printers and the formatter,
//! whose output must parse again and be its own format.

#![no_main]

use cdp_grammar::{diag, FileId, SourceMap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut map = SourceMap::new();
    let id: FileId = map.add("fuzz.cdp", text);
    let parsed = cdp_grammar::parse_file(id, text);
    for d in &parsed.diagnostics {
        let _ = diag::render(&map, d);
        let _ = diag::to_json(&map, d);
    }
    if parsed.diagnostics.iter().any(|d| d.is_error()) {
        return;
    }
    let project = cdp_compiler::project_from_texts([("fuzz.cdp", text)], None);
    let checked = cdp_compiler::check(&project);
    for d in &checked.diagnostics {
        let _ = diag::render(&project.map, d);
    }
    for format in [
        cdp_compiler::GraphFormat::Dot,
        cdp_compiler::GraphFormat::Mermaid,
        cdp_compiler::GraphFormat::Text,
    ] {
        let _ = checked.graph.render(format);
    }
    // format_source checks its own round trip and reports a failure as a `formatter-bug`
    // diagnostic rather than returning damaged text: that is a finding here.
    match cdp_grammar::format_source("fuzz.cdp", text) {
        Ok(formatted) => {
            let again = cdp_grammar::format_source("fuzz.cdp", &formatted);
            assert_eq!(
                again.as_deref(),
                Ok(formatted.as_str()),
                "fmt is not a fixed point"
            );
        }
        Err(diagnostics) => {
            let bug = diagnostics.iter().find(|d| d.code == "formatter-bug");
            assert!(
                bug.is_none(),
                "the formatter cannot format a file that parses: {bug:?}"
            );
        }
    }
});
