//! What the end-to-end modules share: running the `cdp` binary and copying the example project.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Runs the `cdp` binary built for these tests; the caller checks the status.
pub fn cdp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdp"))
        .args(args)
        .output()
        .expect("cdp runs")
}

/// An output as a failure message shows it: exit code, stdout and stderr.
pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// examples/retail in this checkout.
pub fn retail_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/retail")
}

/// Copies a project directory without its storage (`.cdp`), so each test starts from no run.
pub fn copy_project(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == ".cdp") {
                continue;
            }
            copy_project(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// A fresh copy of examples/retail in a temporary directory (removed when the guard drops).
pub fn retail_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("retail");
    copy_project(&retail_dir(), &dir);
    (tmp, dir)
}

/// `cdp profile <key> --format json` of the project in `dir`.
pub fn profile_json(dir: &Path, key: &str) -> Value {
    let o = cdp(&[
        "profile",
        key,
        "--dir",
        dir.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// One value of a profile (as [`profile_json`] gives it), by name.
pub fn profile_value<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no value {name} in {p:#}"))
}
