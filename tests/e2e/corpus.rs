//! The corpus: `.cdp` files that explain the language by example, snapshotted at every stage.
//!
//! - `tests/corpus/good/*.cdp`: valid projects, one theme each. They must check without a
//!   single diagnostic. Snapshots: the syntax tree (spans left out) and the `fmt` output, which
//!   must be a fixed point and must not change what the file means.
//! - `tests/corpus/bad/*.cdp`: one mistake a user makes per file, named for the mistake. The
//!   snapshot is every message the user sees. Header lines `# expect: error[code]` (or
//!   `warning[code]`) list the diagnostics the mistake must cause, no more, no fewer.
//! - `tests/corpus/bad_config/<case>/`: a mistake in `cdp.toml`, with a `.cdp` file holding the
//!   same `# expect:` header.
//!
//! Snapshots live in `tests/e2e/snapshots/corpus/`; review a changed message like code.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use cdp_compiler::{check, project_from_texts, Checked, ProjectSources};
use cdp_grammar::diag::render;
use cdp_grammar::format::format_source;
use cdp_grammar::{Diagnostic, Severity};
use serde_json::Value;

fn corpus(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir)
}

/// Entries of a corpus directory, sorted so that runs are deterministic.
fn entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| keep(p))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "{} is empty", dir.display());
    paths
}

fn cdp_files(dir: &Path) -> Vec<PathBuf> {
    entries(dir, |p| p.extension().is_some_and(|e| e == "cdp"))
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Checks one file as a whole project; `name` is the path shown in messages.
fn check_one(name: &str, text: &str, config: Option<&str>) -> (ProjectSources, Checked) {
    let project = project_from_texts([(name, text)], config);
    let checked = check(&project);
    (project, checked)
}

/// Every diagnostic as the user sees it, in the checker's order.
fn rendered(project: &ProjectSources, diagnostics: &[Diagnostic]) -> String {
    if diagnostics.is_empty() {
        return "(no diagnostics)\n".to_string();
    }
    diagnostics
        .iter()
        .map(|d| render(&project.map, d))
        .collect::<Vec<_>>()
        .join("\n")
}

fn label(d: &Diagnostic) -> String {
    let severity = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    format!("{severity}[{}]", d.code)
}

/// The `# expect: error[code]` lines of a file's header, sorted.
fn expectations(text: &str) -> Vec<String> {
    let mut expected: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("# expect:"))
        .map(|e| e.trim().to_string())
        .collect();
    expected.sort();
    expected
}

/// The syntax tree without spans: what a reader of the snapshot cares about is the structure;
/// positions are covered by the rendered diagnostics. A node left with a single field once its
/// span is gone (a name, a string literal, an expression's kind) is shown as that field.
fn without_spans(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let had_span = map.contains_key("span");
            let mut kept: serde_json::Map<String, Value> = map
                .into_iter()
                .filter(|(k, _)| k != "span" && !k.ends_with("_span"))
                .map(|(k, v)| (k, without_spans(v)))
                .collect();
            if had_span && kept.len() == 1 {
                let key = kept.keys().next().expect("one field").clone();
                kept.remove(&key).expect("the field")
            } else {
                Value::Object(kept)
            }
        }
        Value::Array(items) => {
            // `(value, Span)` pairs (`max 2 per profile`, `deliver full`) become the value.
            let pair = items.len() == 2 && is_span(&items[1]);
            let mut kept: Vec<Value> = items
                .into_iter()
                .filter(|v| !is_span(v))
                .map(without_spans)
                .collect();
            if pair {
                kept.pop().expect("the value")
            } else {
                Value::Array(kept)
            }
        }
        other => other,
    }
}

fn is_span(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.len() == 3
        && m.contains_key("file") && m.contains_key("start") && m.contains_key("end"))
}

fn ast_of(text: &str) -> Value {
    let parsed = cdp_grammar::parse_file(cdp_grammar::FileId(0), text);
    without_spans(serde_json::to_value(&parsed.file).expect("the syntax tree serializes"))
}

/// Runs `f` on every path, then fails with the list of paths it failed on: one broken file
/// must not hide the state of the others.
fn each(paths: &[PathBuf], f: impl Fn(&Path)) {
    let failed: Vec<String> = paths
        .iter()
        .filter(|p| panic::catch_unwind(AssertUnwindSafe(|| f(p))).is_err())
        .map(|p| p.display().to_string())
        .collect();
    assert!(failed.is_empty(), "failed on:\n  {}", failed.join("\n  "));
}

fn snapshot(name: &str, input: &Path, description: Option<&str>, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots/corpus");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_input_file(input);
    if let Some(d) = description {
        settings.set_description(d);
    }
    settings.bind(|| insta::assert_snapshot!(name, text));
}

/// The comment lines that open a file, minus `# expect:`: what the file demonstrates.
fn header(text: &str) -> String {
    text.lines()
        .map_while(|l| l.trim().strip_prefix('#'))
        .map(str::trim)
        .filter(|l| !l.starts_with("expect:"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ------------------------------------------------------------------------------ good corpus

#[test]
fn good_files_check_without_diagnostics() {
    each(&cdp_files(&corpus("good")), |path| {
        let name = format!("good/{}.cdp", stem(path));
        let (project, checked) = check_one(&name, &read(path), None);
        assert!(
            checked.diagnostics.is_empty(),
            "{name} should check cleanly:\n{}",
            rendered(&project, &checked.diagnostics)
        );
    });
}

#[test]
fn good_files_syntax_trees() {
    each(&cdp_files(&corpus("good")), |path| {
        let text = read(path);
        let ast = serde_json::to_string_pretty(&ast_of(&text)).expect("json");
        snapshot(
            &format!("good_ast@{}", stem(path)),
            path,
            Some(&header(&text)),
            &ast,
        );
    });
}

/// `cdp fmt` output: a fixed point that reads back as the same definitions, with the same
/// comments, and checks to the same dependency graph and types.
#[test]
fn good_files_format_to_a_fixed_point_with_the_same_meaning() {
    each(&cdp_files(&corpus("good")), |path| {
        let text = read(path);
        let name = format!("good/{}.cdp", stem(path));
        let formatted = format_source(&name, &text).unwrap_or_else(|diags| {
            let (project, _) = check_one(&name, &text, None);
            panic!("{name} does not format:\n{}", rendered(&project, &diags))
        });
        snapshot(
            &format!("good_fmt@{}", stem(path)),
            path,
            Some(&header(&text)),
            &formatted,
        );
        assert_eq!(
            format_source(&name, &formatted).as_ref(),
            Ok(&formatted),
            "{name}: formatting the formatted text changes it"
        );
        assert_same_meaning(&name, &text, &formatted);
    });
}

fn assert_same_meaning(name: &str, original: &str, formatted: &str) {
    let (before, after) = (ast_of(original), ast_of(formatted));
    assert_eq!(
        before["definitions"], after["definitions"],
        "{name}: formatting changes the syntax tree"
    );
    // Comments may move to the definition part they are attached to, so order is not compared.
    let comments = |ast: &Value| {
        let mut texts: Vec<String> = ast["comments"]
            .as_array()
            .expect("comments")
            .iter()
            .map(|c| c.as_str().expect("a comment is its text").to_string())
            .collect();
        texts.sort();
        texts
    };
    assert_eq!(
        comments(&before),
        comments(&after),
        "{name}: formatting loses or changes comments"
    );
    let (_, a) = check_one(name, original, None);
    let (_, b) = check_one(name, formatted, None);
    assert_eq!(
        messages(&a),
        messages(&b),
        "{name}: the formatted file checks differently"
    );
    assert_eq!(
        serde_json::to_value(&a.graph).expect("graph"),
        serde_json::to_value(&b.graph).expect("graph"),
        "{name}: the formatted file has another dependency graph"
    );
    let types = |c: &Checked| -> BTreeMap<String, String> {
        c.types
            .iter()
            .map(|(k, t)| (k.clone(), t.to_string()))
            .collect()
    };
    // A project with errors has no settled types (a duplicated name has two).
    if !a.has_errors() {
        assert_eq!(
            types(&a),
            types(&b),
            "{name}: the formatted file types differently"
        );
    }
}

/// Diagnostics without their positions, which formatting moves.
fn messages(checked: &Checked) -> Vec<String> {
    checked
        .diagnostics
        .iter()
        .map(|d| format!("{} {}", label(d), d.message))
        .collect()
}

// ------------------------------------------------------------------------------ bad corpus

/// Checks a mistake and snapshots what the user is told; the reported diagnostics must be
/// exactly the ones the file's header expects.
fn report_mistake(snapshot_name: &str, input: &Path, name: &str, text: &str, config: Option<&str>) {
    let (project, checked) = check_one(name, text, config);
    let messages = rendered(&project, &checked.diagnostics);
    snapshot(snapshot_name, input, Some(&header(text)), &messages);
    let expected = expectations(text);
    assert!(!expected.is_empty(), "{name} has no `# expect:` line");
    let mut reported: Vec<String> = checked.diagnostics.iter().map(label).collect();
    reported.sort();
    assert_eq!(
        reported, expected,
        "{name}: reported diagnostics differ from `# expect:`\n{messages}"
    );
}

#[test]
fn bad_files_report_their_mistake() {
    each(&cdp_files(&corpus("bad")), |path| {
        let name = format!("bad/{}.cdp", stem(path));
        report_mistake(
            &format!("bad@{}", stem(path)),
            path,
            &name,
            &read(path),
            None,
        );
    });
}

/// `cdp fmt` on a file with a mistake (but no syntax error) keeps the mistake as it is: the
/// formatted file is a fixed point and reports the same diagnostics.
#[test]
fn bad_files_format_without_changing_their_mistake() {
    each(&cdp_files(&corpus("bad")), |path| {
        let text = read(path);
        let name = format!("bad/{}.cdp", stem(path));
        let Ok(formatted) = format_source(&name, &text) else {
            let parsed = cdp_grammar::parse_file(cdp_grammar::FileId(0), &text);
            assert!(
                parsed.diagnostics.iter().any(Diagnostic::is_error),
                "{name} parses, but does not format"
            );
            return;
        };
        assert_eq!(
            format_source(&name, &formatted).as_ref(),
            Ok(&formatted),
            "{name}: formatting the formatted text changes it"
        );
        assert_same_meaning(&name, &text, &formatted);
    });
}

#[test]
fn bad_configs_report_their_mistake() {
    let cases = entries(&corpus("bad_config"), Path::is_dir);
    each(&cases, |dir| {
        let config = read(&dir.join("cdp.toml"));
        let [cdp] = cdp_files(dir).try_into().expect("one .cdp file per case");
        let name = format!("{}.cdp", stem(&cdp));
        report_mistake(
            &format!("bad_config@{}", stem(dir)),
            &dir.join("cdp.toml"),
            &name,
            &read(&cdp),
            Some(&config),
        );
    });
}

/// Diagnostic codes that no small file can show, and why.
const WITHOUT_EXAMPLE: [(&str, &str); 2] = [
    ("too-long", "needs an expression of thousands of tokens"),
    (
        "formatter-bug",
        "reports a bug of `cdp fmt`, not a mistake in the input",
    ),
];

/// Every kind of diagnostic the compiler can produce has at least one example in the corpus,
/// so that its message is read by a person at least once.
#[test]
fn every_diagnostic_code_has_an_example() {
    let mut covered = BTreeSet::new();
    let configs = entries(&corpus("bad_config"), Path::is_dir);
    let files = cdp_files(&corpus("bad"))
        .into_iter()
        .chain(configs.iter().flat_map(|d| cdp_files(d)));
    for path in files {
        for e in expectations(&read(&path)) {
            let code = e.split(['[', ']']).nth(1).unwrap_or_default().to_string();
            covered.insert(code);
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut codes = BTreeSet::new();
    let mut dirs = vec![root.join("grammar/src"), root.join("compiler/src")];
    while let Some(dir) = dirs.pop() {
        for path in entries(&dir, |_| true) {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                codes.extend(diagnostic_codes(&read(&path)));
            }
        }
    }
    let missing: Vec<&String> = codes
        .difference(&covered)
        .filter(|c| !WITHOUT_EXAMPLE.iter().any(|(code, _)| code == c))
        .collect();
    assert!(
        missing.is_empty(),
        "no file in tests/corpus/bad shows these diagnostic codes: {missing:?}"
    );
}

/// The codes of `Diagnostic::error("code", …)` / `Diagnostic::warning("code", …)` in Rust source.
fn diagnostic_codes(source: &str) -> Vec<String> {
    let mut codes = Vec::new();
    for opener in ["Diagnostic::error(", "Diagnostic::warning("] {
        for (i, _) in source.match_indices(opener) {
            let rest = source[i + opener.len()..].trim_start();
            if let Some(quoted) = rest.strip_prefix('"') {
                if let Some(end) = quoted.find('"') {
                    codes.push(quoted[..end].to_string());
                }
            }
        }
    }
    codes
}
