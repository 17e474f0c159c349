//! The `cdp` binary as a user runs it: exit codes, what goes to stdout and stderr, and what
//! happens to the files. Every test works on its own temporary project.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

/// What one run of `cdp` gave back.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cdp(args: &[&str], cwd: &Path) -> Run {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_cdp"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the cdp binary runs");
    Run {
        code: output.status.code().expect("cdp exits with a code"),
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// A fresh project made by `cdp init`, in `<tmp>/shop`; run commands from `<tmp>`.
fn init_project() -> (TempDir, PathBuf) {
    let tmp = TempDir::new().expect("temp dir");
    let run = cdp(&["init", "shop"], tmp.path());
    assert_eq!(run.code, 0, "init failed: {}", run.stderr);
    let dir = tmp.path().join("shop");
    (tmp, dir)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write test file");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read test file")
}

// ------------------------------------------------------------------------------------- init

#[test]
fn init_creates_a_project_that_checks() {
    let (tmp, dir) = init_project();
    for file in [
        "cdp.toml",
        "sources.cdp",
        "customer.cdp",
        "data/customers.csv",
        "data/orders.csv",
    ] {
        assert!(dir.join(file).is_file(), "init did not create {file}");
    }
    assert!(read(&dir.join("cdp.toml")).contains("name = \"shop\""));
    let run = cdp(&["check", "shop"], tmp.path());
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    insta::assert_snapshot!("init_check", run.stdout);
}

#[test]
fn init_refuses_a_directory_that_is_not_empty() {
    let (tmp, dir) = init_project();
    let before = read(&dir.join("customer.cdp"));
    let run = cdp(&["init", "shop"], tmp.path());
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.starts_with("error: shop is not empty"),
        "{}",
        run.stderr
    );
    assert_eq!(
        read(&dir.join("customer.cdp")),
        before,
        "init overwrote a file"
    );
}

#[test]
fn init_accepts_an_existing_empty_directory() {
    let tmp = TempDir::new().expect("temp dir");
    std::fs::create_dir(tmp.path().join("empty")).expect("mkdir");
    let run = cdp(&["init", "empty"], tmp.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(cdp(&["check", "empty"], tmp.path()).code, 0);
}

#[test]
fn init_output_is_already_formatted() {
    let (tmp, _dir) = init_project();
    let run = cdp(&["fmt", "--check", "shop"], tmp.path());
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

// ------------------------------------------------------------------------------------ check

/// The init project with two broken files: a misspelt name and a syntax error.
fn broken_project() -> (TempDir, PathBuf) {
    let (tmp, dir) = init_project();
    write(
        &dir.join("more.cdp"),
        "feature big_orders of customer = count(purchase where amount > 50) over 30d\n\
         \n\
         segment fans of customer {\n  big_orderz >= 2 and lifetime_value > 10\n}\n",
    );
    write(
        &dir.join("typo.cdp"),
        "source events {\n  time ts\n  colums { ts: timestamp }\n}\n",
    );
    (tmp, dir)
}

#[test]
fn check_reports_every_error_of_every_file_with_its_place() {
    let (tmp, _dir) = broken_project();
    let run = cdp(&["check", "shop"], tmp.path());
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("--> more.cdp:4:3"), "{}", run.stdout);
    assert!(run.stdout.contains("--> typo.cdp:3:3"), "{}", run.stdout);
    assert!(
        run.stdout.contains("did you mean `big_orders`?"),
        "{}",
        run.stdout
    );
    let summary = run.stdout.lines().last().expect("a summary line");
    assert!(
        summary.starts_with("error: ") && summary.ends_with(" in 2 files"),
        "{summary}"
    );
    insta::assert_snapshot!("check_broken", run.stdout);
}

#[test]
fn check_json_is_one_array_of_located_diagnostics() {
    let (tmp, _dir) = broken_project();
    let run = cdp(&["check", "shop", "--format", "json"], tmp.path());
    assert_eq!(run.code, 1);
    let json: Value = serde_json::from_str(&run.stdout).expect("stdout is JSON");
    let diagnostics = json.as_array().expect("a JSON array");
    assert!(diagnostics.len() >= 2, "{json:#}");
    for d in diagnostics {
        for field in ["severity", "code", "message", "file", "line", "column"] {
            assert!(d.get(field).is_some(), "diagnostic without {field}: {d}");
        }
    }
    let files: Vec<&str> = diagnostics
        .iter()
        .filter_map(|d| d["file"].as_str())
        .collect();
    assert!(
        files.contains(&"more.cdp") && files.contains(&"typo.cdp"),
        "{files:?}"
    );
}

#[test]
fn check_json_of_a_clean_project_is_an_empty_array() {
    let (tmp, _dir) = init_project();
    let run = cdp(&["check", "shop", "--format", "json"], tmp.path());
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(
        serde_json::from_str::<Value>(&run.stdout).expect("JSON"),
        Value::Array(Vec::new())
    );
}

#[test]
fn check_defaults_to_the_current_directory() {
    let (_tmp, dir) = init_project();
    let run = cdp(&["check"], &dir);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.starts_with("ok: "), "{}", run.stdout);
}

#[test]
fn a_missing_directory_is_a_user_error() {
    let tmp = TempDir::new().expect("temp dir");
    for command in ["check", "fmt", "graph"] {
        let run = cdp(&[command, "no-such-dir"], tmp.path());
        assert_eq!(run.code, 1, "{command}");
        assert!(
            run.stderr.starts_with("error: "),
            "{command}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("no-such-dir"),
            "{command}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_directory_without_definitions_is_a_user_error() {
    let tmp = TempDir::new().expect("temp dir");
    let run = cdp(&["check", "."], tmp.path());
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("cdp init"), "{}", run.stderr);
}

// -------------------------------------------------------------------------------------- fmt

#[test]
fn fmt_check_lists_unformatted_files_and_changes_nothing() {
    let (tmp, dir) = init_project();
    let messy = "feature   orders_90d of customer=count( purchase )over 90d\n";
    write(&dir.join("messy.cdp"), messy);
    let run = cdp(&["fmt", "--check", "shop"], tmp.path());
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "messy.cdp\n");
    assert!(
        run.stderr.contains("1 of 3 files would be reformatted"),
        "{}",
        run.stderr
    );
    assert_eq!(read(&dir.join("messy.cdp")), messy);
}

#[test]
fn fmt_rewrites_only_files_that_change() {
    let (tmp, dir) = init_project();
    write(
        &dir.join("messy.cdp"),
        "feature   orders_90d of customer=count( purchase )over 90d\n",
    );
    let untouched = std::fs::metadata(dir.join("customer.cdp"))
        .and_then(|m| m.modified())
        .expect("mtime");
    let run = cdp(&["fmt", "shop"], tmp.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "messy.cdp\n");
    assert_eq!(
        read(&dir.join("messy.cdp")),
        "feature orders_90d of customer = count(purchase) over 90d\n"
    );
    let after = std::fs::metadata(dir.join("customer.cdp"))
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(untouched, after, "an already formatted file was rewritten");
    let again = cdp(&["fmt", "--check", "shop"], tmp.path());
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(cdp(&["check", "shop"], tmp.path()).code, 0);
}

#[test]
fn fmt_reports_syntax_errors_and_leaves_the_file_alone() {
    let (tmp, dir) = init_project();
    let broken = "segment s of customer {\n  orders_30d >=\n}\n";
    write(&dir.join("broken.cdp"), broken);
    let run = cdp(&["fmt", "shop"], tmp.path());
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--> broken.cdp:3:1"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error: 1 of 3 files not formatted because of syntax errors"),
        "{}",
        run.stderr
    );
    assert_eq!(read(&dir.join("broken.cdp")), broken);
}

// ------------------------------------------------------------------------------------ graph

#[test]
fn graph_prints_every_format() {
    let (tmp, _dir) = init_project();
    for format in ["text", "dot", "mermaid"] {
        let run = cdp(&["graph", "shop", "--format", format], tmp.path());
        assert_eq!(run.code, 0, "{format}: {}", run.stderr);
        insta::assert_snapshot!(format!("graph_{format}"), run.stdout);
    }
    let default = cdp(&["graph", "shop"], tmp.path());
    let text = cdp(&["graph", "shop", "--format", "text"], tmp.path());
    assert_eq!(default.stdout, text.stdout, "text is the default format");
}

#[test]
fn graph_of_a_broken_project_is_refused() {
    let (tmp, _dir) = broken_project();
    let run = cdp(&["graph", "shop"], tmp.path());
    assert_eq!(run.code, 1);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains("error: no graph"), "{}", run.stderr);
}

// ------------------------------------------------------------------------ usage, exit codes

#[test]
fn help_and_version_succeed() {
    let tmp = TempDir::new().expect("temp dir");
    for args in [&["--help"][..], &["--version"], &["check", "--help"]] {
        let run = cdp(args, tmp.path());
        assert_eq!(run.code, 0, "{args:?}");
        assert!(!run.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn usage_mistakes_exit_1() {
    let tmp = TempDir::new().expect("temp dir");
    for args in [
        &[][..],
        &["frobnicate"],
        &["check", "--format", "yaml"],
        &["graph", "--format", "svg"],
        &["init"],
    ] {
        let run = cdp(args, tmp.path());
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.is_empty(), "{args:?}");
    }
}

#[test]
fn a_bug_in_cdp_is_an_internal_error_with_exit_2_and_no_backtrace() {
    let tmp = TempDir::new().expect("temp dir");
    let run = cdp(&["internal-panic"], tmp.path());
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.starts_with("internal error: "), "{}", run.stderr);
    assert!(run.stderr.contains("please report"), "{}", run.stderr);
    assert!(!run.stderr.contains("stack backtrace"), "{}", run.stderr);
    assert!(!run.stderr.contains("RUST_BACKTRACE"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------- compile

fn retail() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/retail")
}

#[test]
fn compile_prints_every_dialect() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dialect in ["datafusion", "trino", "spark", "postgres", "duckdb"] {
        let run = cdp(&["compile", "examples/retail", "--dialect", dialect], here);
        assert_eq!(run.code, 0, "{dialect}: {}", run.stderr);
        assert!(
            run.stdout.contains("CREATE TABLE customer_profile AS"),
            "{dialect}"
        );
        assert!(
            run.stdout.contains("as of 2024-12-01 00:00:00"),
            "the project's as_of is the default"
        );
    }
    let run = cdp(
        &["compile", "examples/retail", "--as-of", "2024-06-30"],
        here,
    );
    assert!(
        run.stdout.contains("TIMESTAMP '2024-06-30 00:00:00'"),
        "{}",
        run.stderr
    );
}

#[test]
fn compile_only_one_definition_and_to_files() {
    let tmp = TempDir::new().expect("temp dir");
    let retail = retail();
    let dir = retail.to_str().expect("utf-8 path");
    let run = cdp(&["compile", dir, "--only", "high_value"], tmp.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("CREATE TABLE customer_segments"));
    assert!(!run.stdout.contains("CREATE TABLE customer_identity"));
    let run = cdp(&["compile", dir, "--only", "hgh_value"], tmp.path());
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("did you mean `high_value`?"),
        "{}",
        run.stderr
    );
    let run = cdp(
        &["compile", dir, "--dialect", "postgres", "--out", "sql"],
        tmp.path(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let program: Value =
        serde_json::from_str(&read(&tmp.path().join("sql/program.json"))).expect("program.json");
    assert_eq!(program["dialect"], "Postgres");
    assert!(read(&tmp.path().join("sql/01_customer_id_map.sql"))
        .starts_with("CREATE TABLE IF NOT EXISTS"));
}

#[test]
fn compile_refuses_bad_input_with_exit_1() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = cdp(&["compile", "examples/retail", "--dialect", "oracle"], here);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("unknown dialect `oracle`"),
        "{}",
        run.stderr
    );
    let run = cdp(
        &["compile", "examples/retail", "--as-of", "yesterday"],
        here,
    );
    assert_eq!(run.code, 1);
    let (tmp, dir) = init_project();
    write(
        &dir.join("broken.cdp"),
        "feature x of customer = count(nothing)\n",
    );
    let run = cdp(&["compile", "shop"], tmp.path());
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("broken.cdp:1:"), "{}", run.stderr);
}

#[test]
fn plan_shows_the_batch_order_and_the_streaming_graph() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = cdp(&["plan", "examples/retail"], here);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let identity = run
        .stdout
        .find("create  customer_identity")
        .expect("identity step");
    let profile = run
        .stdout
        .find("create  customer_profile")
        .expect("profile step");
    assert!(
        identity < profile,
        "identity comes before the profile:\n{}",
        run.stdout
    );
    let run = cdp(&["plan", "examples/retail", "--streaming"], here);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("key by profile of customer"));
    assert!(run.stdout.contains("journey winback: state machine"));
}

#[test]
fn the_example_project_is_formatted() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = cdp(&["fmt", "--check", "examples/retail"], here);
    assert_eq!(
        run.code, 0,
        "run `cdp fmt examples/retail`:\n{}{}",
        run.stdout, run.stderr
    );
}
