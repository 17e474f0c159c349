//! Inputs that once made the front end panic or hang (found by `cargo fuzz run parse`, see
//! fuzz/). Each file in `tests/e2e/fuzz_regressions/` goes through everything the fuzz target
//! runs; it must come back, without a panic, within a generous time limit.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use cdp_grammar::{diag, FileId, SourceMap};

/// Everything the fuzz target does with one input.
fn front_end(text: &str) {
    let mut map = SourceMap::new();
    let id: FileId = map.add("fuzz.cdp", text);
    let parsed = cdp_grammar::parse_file(id, text);
    for d in &parsed.diagnostics {
        let _ = diag::render(&map, d);
        let _ = diag::to_json(&map, d);
    }
    let project = cdp_compiler::project_from_texts([("fuzz.cdp", text)], None);
    let checked = cdp_compiler::check(&project);
    for d in &checked.diagnostics {
        let _ = diag::render(&project.map, d);
    }
    let _ = cdp_grammar::format_source("fuzz.cdp", text);
}

#[test]
fn fuzz_regressions_neither_panic_nor_hang() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/fuzz_regressions");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("fuzz_regressions exists")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    let mut failures = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("regression inputs are UTF-8");
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let ok = std::panic::catch_unwind(|| front_end(&text)).is_ok();
            let _ = done.send(ok);
        });
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match finished.recv_timeout(Duration::from_secs(20)) {
            Ok(true) => {}
            Ok(false) => failures.push(format!("{name}: panicked")),
            Err(_) => failures.push(format!("{name}: still running after 20 s")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
