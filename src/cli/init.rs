//! `cdp init`: a new project that checks and has sample data, to start from something working.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::{Failure, Outcome};

/// The scaffold, relative path and text; `{{name}}` in cdp.toml becomes the project's name.
const TEMPLATE: [(&str, &str); 5] = [
    ("cdp.toml", include_str!("../init_template/cdp.toml")),
    ("sources.cdp", include_str!("../init_template/sources.cdp")),
    (
        "customer.cdp",
        include_str!("../init_template/customer.cdp"),
    ),
    (
        "data/customers.csv",
        include_str!("../init_template/data/customers.csv"),
    ),
    (
        "data/orders.csv",
        include_str!("../init_template/data/orders.csv"),
    ),
];

pub fn run(dir: &Path, out: &mut dyn Write) -> Outcome {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Failure::User(format!(
                "{} exists and is not a directory",
                dir.display()
            )));
        }
        let mut entries = fs::read_dir(dir)
            .map_err(|e| Failure::User(format!("cannot read {}: {e}", dir.display())))?;
        if entries.next().is_some() {
            return Err(Failure::User(format!(
                "{} is not empty; `cdp init` never overwrites files, so give it a new directory",
                dir.display()
            )));
        }
    }
    let name = project_name(dir);
    for (path, text) in TEMPLATE {
        let text = text.replace("{{name}}", &name);
        write_new(&dir.join(path), &text)?;
    }
    writeln!(out, "created project `{name}` in {}", dir.display())?;
    writeln!(out, "next: cd {} && cdp check", dir.display())?;
    Ok(())
}

/// The directory's name if it makes a plain identifier (it lands in TOML unescaped), else a
/// neutral default.
fn project_name(dir: &Path) -> String {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        name
    } else {
        "my_project".to_string()
    }
}

/// Creates one file and its directories; `create_new` so that nothing existing is overwritten.
fn write_new(path: &Path, text: &str) -> Outcome {
    let fail = |e: std::io::Error| Failure::User(format!("cannot create {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(fail)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)
}
