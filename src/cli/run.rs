//! `cdp run`: compiles the project to the DataFusion dialect (the same program `cdp compile`
//! prints), runs it as a workflow on the embedded engine starting from the state of the last
//! committed run, and commits every output table to the offline store as one new run.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use cdp_compiler::sql::{self, dialect::format_micros, Dialect};
use cdp_runtime::load::BadRows;
use cdp_runtime::store::{Manifest, RejectCount, StepRecord, Storage};
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
    let run_id = run_id();
    let (project, config_as_of) = lowered(dir, err)?;
    let config = &super::project_config(dir, "run", "to know where each source's data is")?;
    let as_of = as_of_micros(options.as_of.or(config_as_of.as_deref()))?;
    let as_of_text = format_micros(as_of);
    let program = sql::compile(&project, Dialect::DataFusion, as_of);

    let storage = Storage::open(&dir.join(&config.project.storage)).map_err(runtime_failure)?;
    let previous = storage.latest().map_err(runtime_failure)?;
    let engine = BatchEngine::new().map_err(runtime_failure)?;

    // Sources. A row that does not fit its source's declared columns is kept aside, written to
    // the run's rejects and counted: never dropped silently, and no reason to stop the run.
    let loaded = engine
        .register_project_sources_with(dir, &project, config, BadRows::KeepAside)
        .map_err(runtime_failure)?;
    let rows_in: usize = loaded.iter().map(|l| l.rows).sum();
    writeln!(
        err,
        "loaded {} rows from {} sources in {:.1?}",
        rows_in,
        loaded.len(),
        started.elapsed()
    )?;
    for l in &loaded {
        let Some(first) = l.rejects.first() else {
            continue;
        };
        let column = first
            .column
            .as_ref()
            .map(|c| format!(" column `{c}`"))
            .unwrap_or_default();
        writeln!(
            err,
            "warning: {} of source `{}` do not fit its declared columns and are left out of this \
             run (first: {}:{}:{column} {})",
            n_rows(l.rejects.len()),
            l.source,
            first.file,
            first.line,
            first.reason
        )?;
    }

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
            // Only the outputs are read after the run.
            release_after_use: true,
        },
        &mut progress,
    );
    progress.finish();
    let reports = reports.map_err(runtime_failure)?;

    // Outputs, committed as one run.
    let mut tables = Vec::new();
    let mut stage = |table: &str, t: &cdp_runtime::Table| -> Result<(), Failure> {
        tables.push(
            storage
                .stage(&run_id, &as_of_text, table, t.schema.clone(), &t.batches)
                .map_err(runtime_failure)?,
        );
        Ok(())
    };
    for table in &program.outputs {
        stage(table, &engine.table(table).map_err(runtime_failure)?)?;
    }
    // Who entered and left each segment since the previous run.
    for entity in &project.entities {
        let segments = format!("{}_segments", entity.meta.name);
        if !program.outputs.contains(&segments) {
            continue;
        }
        let before = match previous
            .as_ref()
            .and_then(|p| p.tables.iter().find(|t| t.table == segments))
        {
            Some(t) => {
                let (schema, batches) = storage.read(t).map_err(runtime_failure)?;
                Some(cdp_runtime::Table { schema, batches })
            }
            None => None,
        };
        let changes = cdp_runtime::history::segment_changes(
            &engine,
            &entity.meta.name,
            before,
            &as_of_text,
            &run_id,
        )
        .map_err(runtime_failure)?;
        stage(&cdp_runtime::history::table(&entity.meta.name), &changes)?;
    }
    // What the profile columns and journey steps of this run are, for the online store.
    for (table, t) in cdp_runtime::online::catalog(&project).map_err(runtime_failure)? {
        stage(&table, &t)?;
    }
    // Statistics of this run's values, segments and journeys, next to its manifest (written
    // first: a committed run always has them).
    let stats = cdp_runtime::stats::collect(&engine, &project).map_err(runtime_failure)?;
    let stats_text = serde_json::to_vec(&stats).map_err(|e| Failure::Internal(e.to_string()))?;
    let stats_path = storage.root().join("stats").join(format!("{run_id}.json"));
    std::fs::create_dir_all(storage.root().join("stats"))
        .map_err(|e| Failure::Internal(format!("{}: {e}", stats_path.display())))?;
    cdp_runtime::store::write_atomic(&stats_path, &stats_text).map_err(runtime_failure)?;
    // The rows kept aside, one JSON-lines file per source (written first: a committed run always
    // has them).
    let mut rejects = Vec::new();
    for l in loaded.iter().filter(|l| !l.rejects.is_empty()) {
        let path = storage
            .write_rejects(&run_id, &l.source, &l.rejects)
            .map_err(runtime_failure)?;
        rejects.push(RejectCount {
            source: l.source.clone(),
            rows: l.rejects.len() as u64,
            file: path,
        });
    }
    let manifest = Manifest {
        run: run_id.clone(),
        as_of: as_of_text.clone(),
        started_at,
        finished_at: now_text(),
        tables,
        steps: reports.iter().map(step_record).collect(),
        rejects,
    };
    storage.commit(&manifest).map_err(runtime_failure)?;

    summary(
        out,
        &reports,
        &manifest,
        previous.as_ref(),
        storage.root(),
        started.elapsed(),
    )?;
    writeln!(
        out,
        "run {run_id} as of {as_of_text} committed to {}",
        storage.root().join("offline").display()
    )?;
    record_in_registry(storage.root(), &manifest, err)?;
    // The latest values per profile, for point reads. A process holding the online store (a
    // server) brings it up to this run itself when it sees the new run.
    let online_dir = cdp_runtime::online::path(storage.root());
    let not_updated = |e: cdp_runtime::Error| {
        Failure::User(format!(
            "run {run_id} is committed, but the online store was not updated: {e}\n\
             (the next `cdp run` or `cdp profile` brings it up to date)"
        ))
    };
    match cdp_runtime::online::OnlineStore::open_waiting(&online_dir, Duration::from_secs(2)) {
        Ok(online) => {
            let synced = online.sync(&storage).map_err(not_updated)?;
            writeln!(
                out,
                "online store: {} profiles, {} identity keys ({})",
                synced.profiles,
                synced.identity_keys,
                online_dir.display()
            )?;
        }
        Err(e) if cdp_runtime::online::in_use(&e) => writeln!(
            out,
            "online store: held by another process (`cdp serve`?), which brings it up to this run ({})",
            online_dir.display()
        )?,
        Err(e) => return Err(not_updated(e)),
    }
    Ok(())
}

/// The run's history in the registry (per-step timings and rows). The registry is held by other
/// processes only for moments (`cdp apply`, a server's request): wait a little for it.
fn record_in_registry(storage: &Path, manifest: &Manifest, err: &mut dyn Write) -> Outcome {
    use cdp_registry::{RunRecord, StepRun, TableRows};
    let record = RunRecord {
        run: manifest.run.clone(),
        as_of: manifest.as_of.clone(),
        started_at: manifest.started_at.clone(),
        finished_at: manifest.finished_at.clone(),
        steps: manifest
            .steps
            .iter()
            .map(|s| StepRun {
                name: s.name.clone(),
                millis: s.millis,
                rows: s
                    .rows
                    .iter()
                    .map(|(table, rows)| TableRows {
                        table: table.clone(),
                        rows: *rows as u64,
                    })
                    .collect(),
                rounds: s.rounds,
                attempts: s.attempts,
            })
            .collect(),
        tables: manifest
            .tables
            .iter()
            .map(|t| TableRows {
                table: t.table.clone(),
                rows: t.rows as u64,
            })
            .collect(),
    };
    let started = Instant::now();
    loop {
        match cdp_registry::Registry::open(storage).and_then(|r| r.record_run(&record)) {
            Ok(()) => return Ok(()),
            Err(_) if started.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => {
                writeln!(
                    err,
                    "warning: run {} is committed, but the registry's run history was not updated: {e}",
                    manifest.run
                )?;
                return Ok(());
            }
        }
    }
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
    storage: &Path,
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
    for r in &manifest.rejects {
        writeln!(
            out,
            "rejected {} of source {} -> {}",
            n_rows(r.rows as usize),
            r.source,
            storage.join(&r.file).display()
        )?;
    }
    writeln!(out, "total {:.1?}", total)?;
    Ok(())
}

/// `1 row`, `3 rows`.
fn n_rows(n: usize) -> String {
    format!("{n} row{}", if n == 1 { "" } else { "s" })
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
