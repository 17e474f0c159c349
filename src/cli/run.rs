//! `cdp run`: compiles the project to the DataFusion dialect (the same program `cdp compile`
//! prints), runs it as a workflow on the embedded engine starting from the state of the last
//! committed run, and commits every output table to the offline store as one new run.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use cdp_compiler::sql::{self, dialect::format_micros, Dialect};
use cdp_runtime::store::{Manifest, StepRecord, Storage};
use cdp_runtime::workflow::{self, Node, Observer, StepReport};
use cdp_runtime::BatchEngine;

use super::compile::{as_of_micros, lowered};
use super::{Failure, Outcome};

pub struct Options<'a> {
    pub as_of: Option<&'a str>,
    pub retries: u32,
    pub identity: Identity,
    /// Draw a progress bar on stderr (a terminal).
    pub progress: bool,
}

/// How `cdp run` resolves identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Identity {
    /// Union-find in Rust.
    Native,
    /// The compiled SQL program (label propagation in rounds), as `cdp compile` prints it.
    Sql,
}

/// A failure of the runtime: the user's data or configuration, else cdp's.
pub(super) fn runtime_failure(e: cdp_runtime::Error) -> Failure {
    use cdp_runtime::Error as E;
    match e {
        E::File { .. } | E::BadRows { .. } | E::Config(_) => Failure::User(e.to_string()),
        other => Failure::User(format!(
            "the run stopped; outputs of earlier runs are unchanged: {other}"
        )),
    }
}

pub fn run(dir: &Path, options: &Options, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let started = Instant::now();
    let started_at = now_text();
    let (project, config_as_of) = lowered(dir, err)?;
    let sources = super::load(dir)?;
    let checked = cdp_compiler::check(&sources);
    let config = checked.config.as_ref().ok_or_else(|| {
        Failure::User(format!(
            "{} has no cdp.toml: `cdp run` needs it to know where each source's data is",
            dir.display()
        ))
    })?;
    let as_of = as_of_micros(options.as_of.or(config_as_of.as_deref()))?;
    let as_of_text = format_micros(as_of);
    let program = sql::compile(&project, Dialect::DataFusion, as_of);

    let storage = Storage::open(&dir.join(&config.project.storage)).map_err(runtime_failure)?;
    let previous = storage.latest().map_err(runtime_failure)?;
    let engine = BatchEngine::new().map_err(runtime_failure)?;

    // Sources.
    let loaded = engine
        .register_project_sources(dir, &project, config)
        .map_err(runtime_failure)?;
    let rows_in: usize = loaded.iter().map(|(_, n)| n).sum();
    writeln!(
        err,
        "loaded {} rows from {} sources in {:.1?}",
        rows_in,
        loaded.len(),
        started.elapsed()
    )?;

    // State: each state table takes the `<table>_next` output of the last committed run.
    if let Some(prev) = &previous {
        for state in &program.initial_state {
            let next = format!("{}_next", state.table);
            if let Some(stored) = prev.tables.iter().find(|t| t.table == next) {
                let (schema, batches) = storage.read(stored).map_err(runtime_failure)?;
                engine
                    .register_batches(&state.table, schema, batches)
                    .map_err(runtime_failure)?;
            }
        }
    }

    // The workflow.
    let checks = workflow::standard_checks(&program);
    // Identity by union-find in Rust (the same tables as the SQL's label propagation, faster),
    // unless asked to run the SQL program exactly as `cdp compile` prints it.
    let natives = match options.identity {
        Identity::Native => cdp_runtime::native::identity_steps(&project, as_of),
        Identity::Sql => Vec::new(),
    };
    let mut progress = Progress::new(
        workflow::plan(&program, &natives).len(),
        options.progress,
        started.elapsed(),
    );
    let reports = workflow::run_with(
        &engine,
        &program,
        &natives,
        &checks,
        &workflow::Options {
            retries: options.retries,
            parallel: 2,
        },
        &mut progress,
    );
    progress.finish();
    let reports = reports.map_err(runtime_failure)?;

    // Outputs, committed as one run.
    let run_id = run_id();
    let mut tables = Vec::new();
    for table in &program.outputs {
        let t = engine.table(table).map_err(runtime_failure)?;
        tables.push(
            storage
                .stage(&run_id, &as_of_text, table, t.schema.clone(), &t.batches)
                .map_err(runtime_failure)?,
        );
    }
    let manifest = Manifest {
        run: run_id.clone(),
        as_of: as_of_text.clone(),
        started_at,
        finished_at: now_text(),
        tables,
        steps: reports.iter().map(step_record).collect(),
        rejects: Vec::new(),
    };
    storage.commit(&manifest).map_err(runtime_failure)?;

    summary(
        out,
        &reports,
        &manifest,
        previous.as_ref(),
        started.elapsed(),
    )?;
    writeln!(
        out,
        "run {run_id} as of {as_of_text} committed to {}",
        storage.root().join("offline").display()
    )?;
    Ok(())
}

fn step_record(r: &StepReport) -> StepRecord {
    StepRecord {
        name: r.name.clone(),
        millis: r.took.as_millis() as u64,
        rows: r.rows.clone(),
        rounds: r.rounds,
        attempts: r.attempts,
    }
}

fn summary(
    out: &mut dyn Write,
    reports: &[StepReport],
    manifest: &Manifest,
    previous: Option<&Manifest>,
    total: Duration,
) -> std::io::Result<()> {
    let width = reports
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(
        out,
        "{:<width$}  {:>9}  {:>10}  notes",
        "step", "time", "rows"
    )?;
    for r in reports {
        let rows: usize = r.rows.iter().map(|(_, n)| n).sum();
        let mut notes = Vec::new();
        if let Some(n) = r.rounds {
            notes.push(format!("{n} rounds"));
        }
        if r.attempts > 1 {
            notes.push(format!("{} attempts", r.attempts));
        }
        writeln!(
            out,
            "{:<width$}  {:>7.0}ms  {:>10}  {}",
            r.name,
            r.took.as_secs_f64() * 1e3,
            rows,
            notes.join(", ")
        )?;
    }
    writeln!(out)?;
    writeln!(out, "outputs:")?;
    for t in &manifest.tables {
        let before = previous
            .and_then(|p| p.tables.iter().find(|x| x.table == t.table))
            .map(|x| format!(" (previous run: {})", x.rows))
            .unwrap_or_default();
        writeln!(out, "  {:<width$}  {:>10} rows{before}", t.table, t.rows)?;
    }
    writeln!(out, "total {:.1?}", total)?;
    Ok(())
}

/// Run ids sort by time: `YYYYMMDDTHHMMSSmmmZ`.
fn run_id() -> String {
    let now = chrono::Utc::now();
    now.format("%Y%m%dT%H%M%S%3fZ").to_string()
}

fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A progress bar over the workflow's steps, drawn only on a terminal.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(steps: usize, draw: bool, _elapsed: Duration) -> Progress {
        let bar = draw.then(|| {
            let bar = indicatif::ProgressBar::new(steps as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        Progress { bar }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Observer for Progress {
    fn started(&mut self, node: &Node) {
        if let Some(bar) = &self.bar {
            bar.set_message(node.name.clone());
        }
    }

    fn finished(&mut self, _report: &StepReport) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn retrying(&mut self, node: &Node, attempt: u32, error: &cdp_runtime::Error) {
        if let Some(bar) = &self.bar {
            bar.println(format!(
                "step `{}` failed (attempt {attempt}), retrying: {error}",
                node.name
            ));
        }
    }
}
