//! `cdp demo`: the whole product on one machine in one command — writes a demo project (the
//! retail example's definitions over seeded generated data, [`crate::demo`]), runs it on the
//! embedded engine as `cdp run` does, and says where to look next.
//!
//! Run again on the same directory, it keeps the project and its data (and so its numbers) and
//! runs it once more: the second run continues from the first, as a scheduled run would.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::demo::{create_demo, DemoOptions};

use super::{Failure, Outcome};

pub struct Options {
    pub demo: DemoOptions,
    pub run: super::run::Identity,
    /// After the run: record the definitions in the registry and serve it here.
    pub serve: Option<String>,
}

pub fn run(dir: &Path, options: &Options, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let started = Instant::now();
    if dir.join("cdp.toml").is_file() {
        writeln!(
            err,
            "{} already holds a project; running it again (delete the directory for a new demo)",
            dir.display()
        )?;
    } else {
        writeln!(
            err,
            "writing the demo project into {} ({} profiles, ~{} events, seed {})",
            dir.display(),
            options.demo.profiles,
            options.demo.events,
            options.demo.seed
        )?;
        let mut progress = |line: &str| {
            let _ = writeln!(err, "  {line}");
        };
        let summary = create_demo(dir, &options.demo, &mut progress).map_err(|e| {
            Failure::User(format!("cannot write the demo into {}: {e}", dir.display()))
        })?;
        writeln!(
            err,
            "wrote {} files ({:.1} MB of data) in {:.1?}",
            summary.files.len(),
            summary.data_bytes() as f64 / 1e6,
            started.elapsed()
        )?;
    }

    use std::io::IsTerminal;
    let run_options = super::run::Options {
        as_of: None,
        retries: 2,
        identity: options.run,
        progress: std::io::stderr().is_terminal(),
    };
    super::run::run(dir, &run_options, out, err)?;

    if let Some(addr) = &options.serve {
        // The registry's first snapshot (definitions and their versions), then the server.
        let apply = super::registry::ApplyOptions {
            message: Some("the demo project"),
            author: Some("cdp demo"),
            yes: true,
        };
        let mut quiet = Vec::new();
        super::registry::apply(dir, &apply, &mut quiet, err)?;
        writeln!(out)?;
        writeln!(
            out,
            "The demo ran in {:.1?}. Serving its registry (Ctrl-C stops):",
            started.elapsed()
        )?;
        return super::serve::serve(dir, addr, out);
    }
    let d = dir.display();
    let email = first_email(dir).unwrap_or_else(|| "someone@example.com".into());
    writeln!(out)?;
    writeln!(out, "The demo ran in {:.1?}. Next:", started.elapsed())?;
    let next = [
        (
            format!("cdp profile email={email} --dir {d}"),
            "one customer, by any identity key",
        ),
        (
            format!("cdp compile {d} --dialect duckdb"),
            "the SQL behind every number",
        ),
        (
            format!("cdp plan {d} --streaming"),
            "the same definitions as streaming operators",
        ),
        (
            format!("cdp training-set {d} --spine spine.csv"),
            "point-in-time features for (customer_id, ts) rows",
        ),
        (
            format!("ls {d}/.cdp/offline"),
            "every output table of every run, as Parquet",
        ),
    ];
    let width = next.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
    for (command, what) in next {
        writeln!(out, "  {command:<width$}  # {what}")?;
    }
    Ok(())
}

/// An email of the generated customers, to show `cdp profile` with.
fn first_email(dir: &Path) -> Option<String> {
    let mut reader = csv::Reader::from_path(dir.join("data/customers.csv")).ok()?;
    let column = reader.headers().ok()?.iter().position(|h| h == "email")?;
    reader
        .records()
        .filter_map(Result::ok)
        .filter_map(|r| r.get(column).map(|e| e.trim().to_lowercase()))
        .find(|e| e.contains('@') && !e.starts_with("test@"))
}
