//! Runs one batch job — a project's sources and a compiled SQL program — on each engine the
//! compiler targets and that these tests can start: DataFusion in-process (the `cdp-runtime`
//! crate), a real PostgreSQL server (`CDP_TEST_PG`), and DuckDB through its Python wheel
//! (`CDP_TEST_PYTHON`, running `tools/duckdb_job.py`). Every output table comes back in canonical
//! form ([`canon`]) so that the conformance tests compare engines exactly.
//!
//! `bash .ci/run` installs and starts PostgreSQL and DuckDB and exports both variables; a test that
//! needs an engine that is not there fails and says so.

pub mod canon;
pub mod data;
mod duckdb;
mod postgres;
pub mod prepare;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cdp_compiler::ir;
use cdp_runtime::{BatchEngine, Dialect, Program, SourceFiles, Step};

pub use canon::CanonTable;

/// An engine of the conformance tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    DataFusion,
    Postgres,
    DuckDb,
}

impl Engine {
    pub const ALL: [Engine; 3] = [Engine::DataFusion, Engine::Postgres, Engine::DuckDb];

    pub fn name(self) -> &'static str {
        match self {
            Engine::DataFusion => "DataFusion",
            Engine::Postgres => "PostgreSQL",
            Engine::DuckDb => "DuckDB",
        }
    }

    /// The SQL dialect the compiler writes for this engine.
    pub fn dialect(self) -> Dialect {
        match self {
            Engine::DataFusion => Dialect::DataFusion,
            Engine::Postgres => Dialect::Postgres,
            Engine::DuckDb => Dialect::DuckDb,
        }
    }
}

/// One source table to load: its declared columns and the files holding its rows.
#[derive(Debug, Clone)]
pub struct Input {
    pub source: ir::Source,
    pub files: SourceFiles,
}

/// What an engine produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub engine: Engine,
    /// Rounds each loop took.
    pub rounds: Vec<u32>,
    /// The [`compared_tables`], by name.
    pub tables: BTreeMap<String, CanonTable>,
}

/// The tables compared across engines: the program's outputs (the tables users read), or, for a
/// program that names none, every table it builds.
pub fn compared_tables(program: &Program) -> Vec<String> {
    if program.outputs.is_empty() {
        program_tables(program)
    } else {
        program.outputs.clone()
    }
}

/// Every table a program builds, in first-built order.
pub fn program_tables(program: &Program) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for step in &program.steps {
        let statements = match step {
            Step::Create(s) => std::slice::from_ref(s),
            Step::Loop { body, .. } => body.as_slice(),
        };
        for s in statements {
            if !out.contains(&s.table) {
                out.push(s.table.clone());
            }
        }
    }
    out
}

/// The inputs of a checked and lowered project: each source with the files `cdp.toml` binds.
pub fn project_inputs(dir: &Path) -> (ir::Project, Vec<Input>) {
    let sources = cdp_compiler::load_project(dir)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", dir.display()));
    let checked = cdp_compiler::check(&sources);
    assert!(
        !checked.has_errors(),
        "{} has errors: {:#?}",
        dir.display(),
        checked.diagnostics
    );
    let project = cdp_compiler::lower(&checked)
        .unwrap_or_else(|e| panic!("cannot lower {}: {e:?}", dir.display()));
    let config = checked
        .config
        .as_ref()
        .unwrap_or_else(|| panic!("{} has no cdp.toml", dir.display()));
    let inputs = project
        .sources
        .iter()
        .map(|source| {
            let binding = config.sources.get(&source.meta.name).unwrap_or_else(|| {
                panic!(
                    "{}: source `{}` is not bound",
                    dir.display(),
                    source.meta.name
                )
            });
            let files = SourceFiles::from_binding(dir, &source.meta.name, binding)
                .unwrap_or_else(|e| panic!("{e}"));
            Input {
                source: source.clone(),
                files,
            }
        })
        .collect();
    (project, inputs)
}

/// The output columns of a project that hold estimates: features computed with
/// `approx_count_distinct` (or from such features) and metric measures using it.
pub fn approximate_columns(project: &ir::Project) -> Vec<String> {
    use cdp_compiler::types::Aggregate as AggFn;
    let mut approx_features = vec![false; project.features.len()];
    let mut names = Vec::new();
    for value in &project.profile_order {
        let ir::ProfileValue::Feature(id) = value else {
            continue;
        };
        let feature = &project.features[id.index()];
        let mut approximate = false;
        feature.value.walk(|e| match &e.kind {
            ir::ExprKind::Aggregate(a) => {
                approximate |= project.aggregates[a.index()].function == AggFn::ApproxCountDistinct
            }
            ir::ExprKind::Feature(f) => approximate |= approx_features[f.index()],
            _ => {}
        });
        if approximate {
            approx_features[id.index()] = true;
            names.push(feature.meta.name.clone());
        }
    }
    fn uses_approx(m: &ir::MeasureExpr) -> bool {
        match m {
            ir::MeasureExpr::OverMembers { function, .. }
            | ir::MeasureExpr::OverEvents { function, .. } => {
                *function == cdp_compiler::types::Aggregate::ApproxCountDistinct
            }
            ir::MeasureExpr::Binary { left, right, .. } => uses_approx(left) || uses_approx(right),
            ir::MeasureExpr::Neg(x) => uses_approx(x),
            ir::MeasureExpr::Population | ir::MeasureExpr::Literal(_) => false,
        }
    }
    for metric in &project.metrics {
        for measure in &metric.measures {
            if uses_approx(&measure.value) {
                names.push(measure.name.clone());
            }
        }
    }
    names
}

/// Runs the job on one engine.
pub fn run(engine: Engine, inputs: &[Input], program: &Program) -> Result<Outcome, String> {
    let (rounds, tables) = match engine {
        Engine::DataFusion => run_datafusion(inputs, program)?,
        Engine::Postgres => postgres::run(inputs, program)?,
        Engine::DuckDb => duckdb::run(inputs, program)?,
    };
    Ok(Outcome {
        engine,
        rounds,
        tables,
    })
}

pub type Tables = BTreeMap<String, CanonTable>;

fn run_datafusion(inputs: &[Input], program: &Program) -> Result<(Vec<u32>, Tables), String> {
    let engine = BatchEngine::with_threads(2).map_err(|e| e.to_string())?;
    for input in inputs {
        engine
            .register_source(&input.source, &input.files)
            .map_err(|e| e.to_string())?;
    }
    let report = engine.run(program).map_err(|e| e.to_string())?;
    let mut tables = BTreeMap::new();
    for name in compared_tables(program) {
        let table = engine.table(&name).map_err(|e| e.to_string())?;
        let canon = canon::arrow_table(&table).map_err(|e| format!("table `{name}`: {e}"))?;
        tables.insert(name, canon);
    }
    Ok((report.loop_rounds, tables))
}

/// Runs programs one after the other on one DataFusion engine, so that each starts from the
/// state the previous one left (id map, journey states): one [`compared_tables`] set per run.
pub fn run_datafusion_in_turn(
    inputs: &[Input],
    programs: &[Program],
) -> Result<Vec<Tables>, String> {
    let engine = BatchEngine::with_threads(2).map_err(|e| e.to_string())?;
    for input in inputs {
        engine
            .register_source(&input.source, &input.files)
            .map_err(|e| e.to_string())?;
    }
    let mut runs = Vec::new();
    for program in programs {
        engine.run(program).map_err(|e| e.to_string())?;
        let mut tables = BTreeMap::new();
        for name in compared_tables(program) {
            let table = engine.table(&name).map_err(|e| e.to_string())?;
            let canon = canon::arrow_table(&table).map_err(|e| format!("table `{name}`: {e}"))?;
            tables.insert(name, canon);
        }
        runs.push(tables);
    }
    Ok(runs)
}

/// Runs the same program on every engine and panics with the differences when any two disagree
/// (DataFusion is the reference the others are compared with). Returns the outcomes.
pub fn assert_engines_agree(what: &str, inputs: &[Input], program: &Program) -> Vec<Outcome> {
    assert_dialects_agree(what, inputs, &[], |_| program.clone())
}

/// Runs each engine's own program (`program_for(engine)`, e.g. the project compiled to its
/// dialect) and panics with the differences when any two disagree. Columns named in
/// `approximate` hold estimates and compare within [`canon::approx_equal`]. Returns the outcomes.
pub fn assert_dialects_agree(
    what: &str,
    inputs: &[Input],
    approximate: &[String],
    program_for: impl Fn(Engine) -> Program,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for engine in Engine::ALL {
        let start = std::time::Instant::now();
        let result = run(engine, inputs, &program_for(engine));
        // Shown with --nocapture: where the time of a conformance test goes.
        eprintln!("{what}: {} took {:.1?}", engine.name(), start.elapsed());
        match result {
            Ok(o) => outcomes.push(o),
            Err(e) => failures.push(format!("{} failed: {e}", engine.name())),
        }
    }
    // The engines that ran are compared even when another failed: one run shows every problem.
    let named: Vec<(&str, &Tables)> = outcomes
        .iter()
        .map(|o| (o.engine.name(), &o.tables))
        .collect();
    let diff = canon::differences(&named, approximate);
    let mut problems = failures;
    if !diff.is_empty() {
        let ran: Vec<&str> = named.iter().map(|(n, _)| *n).collect();
        problems.push(format!("{} disagree:\n{diff}", ran.join(", ")));
    }
    assert!(problems.is_empty(), "{what}:\n{}", problems.join("\n"));
    outcomes
}

/// An environment variable an engine needs, or a failure that says how to get it.
fn required_env(var: &str, engine: &str, example: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(format!(
            "{engine} is needed by this test but {var} is not set. Run `bash .ci/run` (it installs \
             and starts {engine} and exports {var}), or point {var} at your own: {var}={example}"
        )),
    }
}

/// A statement on one line, cut to a length that keeps failure messages readable (the whole
/// statement is in the compiler's output).
fn short(sql: &str) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

/// A fresh directory for an engine's prepared inputs, removed when dropped.
fn scratch_dir() -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("cdp-engines-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))
}

/// Only CSV inputs can be streamed to the SQL servers.
fn csv_paths(input: &Input) -> Result<&[PathBuf], String> {
    match input.files.format {
        cdp_compiler::config::DataFormat::Csv => Ok(&input.files.paths),
        other => Err(format!(
            "source `{}`: the conformance harness loads CSV only, not {other:?}",
            input.source.meta.name
        )),
    }
}

#[test]
fn a_missing_engine_says_how_to_get_it() {
    let err = required_env("CDP_TEST_SURELY_NOT_SET", "PostgreSQL", "\"host=…\"").unwrap_err();
    assert!(err.contains("CDP_TEST_SURELY_NOT_SET is not set"), "{err}");
    assert!(err.contains("Run `bash .ci/run`"), "{err}");
}
