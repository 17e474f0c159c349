//! The project the compile benchmark measures must be a correct project: if it had errors, the
//! benchmark would time the checker's error paths instead of its full work. A failure here means
//! the generator (src/synthetic.rs) writes something the language does not allow, or the checker
//! rejects something it should accept; the printed diagnostics say which.

use cdp::synthetic::generate;
use cdp_grammar::diag::render;

#[test]
fn generated_benchmark_project_checks_without_diagnostics() {
    let project = generate(2_000, 50);
    assert_eq!(project.definitions, 2_000);
    assert_eq!(project.files.len(), 50);
    let sources = project.sources();
    let checked = cdp_compiler::check(&sources);
    let rendered: Vec<String> = checked
        .diagnostics
        .iter()
        .take(10)
        .map(|d| render(&sources.map, d))
        .collect();
    assert!(
        checked.diagnostics.is_empty(),
        "{} diagnostics in the generated project, the first ones:\n{}",
        checked.diagnostics.len(),
        rendered.join("\n")
    );
    let parsed: usize = checked.files.iter().map(|(_, f)| f.definitions.len()).sum();
    assert_eq!(parsed, 2_000);
    assert_eq!(checked.graph.nodes.len(), 2_000);
}

#[test]
fn generated_project_is_deterministic() {
    let a = generate(300, 7);
    let b = generate(300, 7);
    assert_eq!(a.files, b.files);
    assert_eq!(a.config, b.config);
}

#[test]
fn generated_files_are_accepted_by_the_formatter() {
    for (path, text) in generate(2_000, 50).files {
        let formatted = cdp_grammar::format_source(&path, &text)
            .unwrap_or_else(|d| panic!("{path} does not format: {d:?}"));
        assert_eq!(
            cdp_grammar::format_source(&path, &formatted).as_deref(),
            Ok(formatted.as_str()),
            "formatting {path} twice changes it"
        );
    }
}

#[test]
fn cli_checks_the_generated_project_on_disk() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    generate(2_000, 50)
        .write_to(dir.path())
        .expect("write the project");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cdp"))
        .arg("check")
        .arg(dir.path())
        .output()
        .expect("cdp runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.trim_end(), "ok: 2000 definitions in 50 files");
}
