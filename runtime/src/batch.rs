//! The embedded batch engine: Apache DataFusion in-process, fed with a project's sources loaded
//! with their declared types, running a compiled SQL [`Program`] into in-memory tables.
//!
//! The API is synchronous (the engine owns a multi-threaded tokio runtime), so the CLI and tests
//! call it like any library. Tables live in memory for the engine's lifetime; each `Create`
//! replaces its table, and a `Loop` re-runs its body until its convergence query counts no
//! changes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdp_compiler::config::{DataFormat, IngestMapping, ProjectConfig};
use cdp_compiler::ir;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};
use crate::load::{read_source, read_source_with, BadRows, Reject, SourceFiles};
use crate::program::{Program, Statement, Step};
use crate::schema::source_schema;

/// What loading one source did: the rows registered, and the rows kept aside.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    pub source: String,
    pub table: String,
    /// Rows registered as the source's table.
    pub rows: usize,
    /// Rows that did not fit the source's declared columns, in file order (none when bad rows
    /// refuse the source).
    pub rejects: Vec<Reject>,
}

/// A table read back from the engine.
#[derive(Debug, Clone)]
pub struct Table {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl Table {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What running a program did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    /// Rounds each loop of the program took, in program order.
    pub loop_rounds: Vec<u32>,
    /// Wall time of each statement run, by table (loops: summed over rounds).
    pub timings: Vec<(String, Duration)>,
}

impl RunReport {
    /// Rounds of all loops together.
    pub fn rounds(&self) -> u32 {
        self.loop_rounds.iter().sum()
    }
}

/// What one step did: the loop's rounds (a loop) and the time spent on each table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepDone {
    pub rounds: Option<u32>,
    pub timings: Vec<(String, Duration)>,
}

/// DataFusion with the project's sources registered as in-memory tables.
pub struct BatchEngine {
    runtime: tokio::runtime::Runtime,
    ctx: SessionContext,
    partitions: usize,
}

impl BatchEngine {
    /// An engine using every core of the machine.
    pub fn new() -> Result<BatchEngine> {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        BatchEngine::with_threads(cores)
    }

    /// An engine running `threads` query threads (and as many partitions per table).
    pub fn with_threads(threads: usize) -> Result<BatchEngine> {
        let threads = threads.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("cdp-batch")
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the tokio runtime: {e}")))?;
        let config = SessionConfig::new()
            .with_target_partitions(threads)
            .with_information_schema(true);
        Ok(BatchEngine {
            runtime,
            ctx: SessionContext::new_with_config(config),
            partitions: threads,
        })
    }

    /// The DataFusion session, for callers that need more than this API.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Loads every source of `project` from the files `config` binds it to, relative to the
    /// project directory `root`; any bad row refuses its source. Returns the rows loaded per
    /// source table.
    pub fn register_project_sources(
        &self,
        root: &Path,
        project: &ir::Project,
        config: &ProjectConfig,
    ) -> Result<Vec<(String, usize)>> {
        Ok(self
            .register_project_sources_with(root, project, config, BadRows::Refuse)?
            .into_iter()
            .map(|l| (l.table, l.rows))
            .collect())
    }

    /// [`register_project_sources`](Self::register_project_sources), bad rows handled as `mode`
    /// says; returns what each source loaded and kept aside, in project order.
    pub fn register_project_sources_with(
        &self,
        root: &Path,
        project: &ir::Project,
        config: &ProjectConfig,
        mode: BadRows,
    ) -> Result<Vec<LoadReport>> {
        let mut loaded = Vec::new();
        for source in &project.sources {
            let binding = config.sources.get(&source.meta.name).ok_or_else(|| {
                Error::Config(format!(
                    "source `{}` has no [sources.{}] binding in cdp.toml",
                    source.meta.name, source.meta.name
                ))
            })?;
            let files = SourceFiles::from_binding(root, &source.meta.name, binding)?;
            let schema = source_schema(source)?;
            let mut read = read_source_with(source, &files, mode)?;
            if let Some(mapping) = config.ingest.get(&source.meta.name) {
                let storage = root.join(&config.project.storage);
                let tracked = tracked_rows(&storage, &source.meta.name, mapping)?;
                if let Some(path) = tracked {
                    let files = SourceFiles::new(DataFormat::Jsonl, vec![path]);
                    let more = read_source_with(source, &files, mode)?;
                    read.batches.extend(more.batches);
                    read.rejects.extend(more.rejects);
                }
            }
            let rows = read.rows();
            self.register_batches(&source.table, schema, read.batches)?;
            loaded.push(LoadReport {
                source: source.meta.name.clone(),
                table: source.table.clone(),
                rows,
                rejects: read.rejects,
            });
        }
        Ok(loaded)
    }

    /// Loads one source from its files (every value checked against the declared types) and
    /// registers it under its table name. Returns the number of rows.
    pub fn register_source(&self, source: &ir::Source, files: &SourceFiles) -> Result<usize> {
        let schema = source_schema(source)?;
        let batches = read_source(source, files)?;
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        self.register_batches(&source.table, schema, batches)?;
        Ok(rows)
    }

    /// Registers batches as a table `name` (spread over the engine's partitions), replacing any
    /// table of that name.
    pub fn register_batches(
        &self,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        let mut partitions = vec![Vec::new(); self.partitions.min(batches.len()).max(1)];
        let n = partitions.len();
        for (i, batch) in batches.into_iter().enumerate() {
            partitions[i % n].push(batch);
        }
        let table = MemTable::try_new(schema, partitions)
            .map_err(|e| Error::Internal(format!("registering `{name}`: {e}")))?;
        let reference = TableReference::bare(name);
        self.ctx
            .deregister_table(reference.clone())
            .map_err(|e| Error::Internal(format!("replacing `{name}`: {e}")))?;
        self.ctx
            .register_table(reference, Arc::new(table))
            .map_err(|e| Error::Internal(format!("registering `{name}`: {e}")))?;
        Ok(())
    }

    /// Runs a program: state tables are created when missing (kept from earlier runs
    /// otherwise); each `Create` replaces its table; each `Loop` re-runs its body until its
    /// convergence query returns 0, failing when `max_rounds` rounds did not get there; finally
    /// each state table takes the contents of its `<table>_next` output.
    pub fn run(&self, program: &Program) -> Result<RunReport> {
        let mut report = RunReport::default();
        self.create_state(program)?;
        for step in &program.steps {
            let done = self.run_step(step)?;
            report.loop_rounds.extend(done.rounds);
            report.timings.extend(done.timings);
        }
        self.advance_state(program)?;
        Ok(report)
    }

    /// Creates the program's state tables that do not exist yet (first run), keeping the others.
    pub fn create_state(&self, program: &Program) -> Result<()> {
        for state in &program.initial_state {
            self.execute(Some(&state.table), &state.sql)?;
        }
        Ok(())
    }

    /// Runs one step of a program: a statement, or a loop until it converges.
    pub fn run_step(&self, step: &Step) -> Result<StepDone> {
        let mut done = StepDone::default();
        match step {
            Step::Create(statement) => {
                let took = self.create(statement)?;
                done.timings.push((statement.table.clone(), took));
            }
            Step::Loop {
                body,
                converged,
                max_rounds,
            } => {
                let mut took = vec![Duration::ZERO; body.len()];
                let mut rounds = 0;
                loop {
                    if rounds == *max_rounds {
                        let last_changes = self.changes(converged)?;
                        return Err(Error::NotConverged {
                            rounds,
                            last_changes,
                        });
                    }
                    rounds += 1;
                    for (statement, t) in body.iter().zip(took.iter_mut()) {
                        *t += self.create(statement)?;
                    }
                    if self.changes(converged)? == 0 {
                        break;
                    }
                }
                done.rounds = Some(rounds);
                for (statement, t) in body.iter().zip(took) {
                    done.timings.push((statement.table.clone(), t));
                }
            }
        }
        Ok(done)
    }

    /// After a run: each state table takes the contents of its `<table>_next` output.
    pub fn advance_state(&self, program: &Program) -> Result<()> {
        for state in &program.initial_state {
            let table = quote(&state.table);
            let next = quote(&format!("{}_next", state.table));
            self.execute(Some(&state.table), &format!("DROP TABLE IF EXISTS {table}"))?;
            self.execute(
                Some(&state.table),
                &format!("CREATE TABLE {table} AS SELECT * FROM {next}"),
            )?;
        }
        Ok(())
    }

    /// Runs one statement to completion.
    fn execute(&self, table: Option<&str>, sql: &str) -> Result<()> {
        let fail = |e: datafusion::error::DataFusionError| Error::Sql {
            table: table.map(str::to_string),
            sql: sql.to_string(),
            message: e.to_string(),
        };
        self.runtime.block_on(async {
            self.ctx
                .sql(sql)
                .await
                .map_err(fail)?
                .collect()
                .await
                .map_err(fail)?;
            Ok(())
        })
    }

    /// Builds the statement's table anew, replacing any earlier one.
    ///
    /// The engine runs the statement's query itself and registers the result with every column
    /// nullable, rather than letting DataFusion's `CREATE TABLE AS` do it: that one refuses a
    /// result whose batches disagree with the plan about nullability ("Mismatch between schema
    /// and batches", e.g. a `CASE` over a `LEFT JOIN` of non-null columns). The result is also
    /// spread over the engine's partitions, so later statements read it in parallel.
    fn create(&self, statement: &Statement) -> Result<Duration> {
        let start = Instant::now();
        let table = Some(statement.table.as_str());
        let Some(query) = create_query(&statement.sql, &statement.table) else {
            let drop = format!("DROP TABLE IF EXISTS {}", quote(&statement.table));
            self.execute(table, &drop)?;
            self.execute(table, &statement.sql)?;
            return Ok(start.elapsed());
        };
        let fail = |e: datafusion::error::DataFusionError| Error::Sql {
            table: table.map(str::to_string),
            sql: statement.sql.to_string(),
            message: e.to_string(),
        };
        let (schema, batches) = self.runtime.block_on(async {
            let frame = self.ctx.sql(query).await.map_err(fail)?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let batches = frame.collect().await.map_err(fail)?;
            Ok::<_, Error>((schema, batches))
        })?;
        // The batches' own types win over the plan's (string views, say), with every column
        // nullable; a batch that differs from the first is cast to it.
        let model = batches.first().map_or(schema, |b| b.schema());
        let nullable = Arc::new(Schema::new(
            model
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let batches = batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                let columns = b
                    .columns()
                    .iter()
                    .zip(nullable.fields())
                    .map(|(c, f)| {
                        if c.data_type() == f.data_type() {
                            Ok(c.clone())
                        } else {
                            datafusion::arrow::compute::cast(c, f.data_type())
                        }
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                RecordBatch::try_new(nullable.clone(), columns)
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| fail(e.into()))?;
        self.register_batches(&statement.table, nullable, batches)?;
        Ok(start.elapsed())
    }

    /// The number a convergence query returns.
    fn changes(&self, sql: &str) -> Result<i64> {
        let table = self.query(sql)?;
        let bad = |message: String| Error::BadConvergenceQuery {
            sql: sql.to_string(),
            message,
        };
        let rows = table.num_rows();
        if rows != 1 || table.schema.fields().len() != 1 {
            return Err(bad(format!(
                "it returned {rows} rows of {} columns",
                table.schema.fields().len()
            )));
        }
        let batch = table
            .batches
            .iter()
            .find(|b| b.num_rows() == 1)
            .ok_or_else(|| bad("no row".into()))?;
        let column = batch.column(0);
        if !column.data_type().is_integer() {
            return Err(bad(format!("its column is {}", column.data_type())));
        }
        let column = datafusion::arrow::compute::cast(column, &DataType::Int64)
            .map_err(|e| bad(e.to_string()))?;
        let values = column.as_primitive::<Int64Type>();
        if values.is_null(0) {
            // `SELECT count(*) … ` never gives null, but `SELECT sum(…)` over no rows does.
            return Ok(0);
        }
        Ok(values.value(0))
    }

    /// The one integer a query like `SELECT count(*) …` returns.
    pub fn count(&self, sql: &str) -> Result<i64> {
        self.changes(sql)
    }

    /// The number of rows of a table.
    pub fn table_rows(&self, table: &str) -> Result<usize> {
        Ok(self.count(&format!("SELECT count(*) AS n FROM {}", quote(table)))? as usize)
    }

    /// Runs a query and returns its result.
    pub fn query(&self, sql: &str) -> Result<Table> {
        let fail = |e: datafusion::error::DataFusionError| Error::Sql {
            table: None,
            sql: sql.to_string(),
            message: e.to_string(),
        };
        self.runtime.block_on(async {
            let frame = self.ctx.sql(sql).await.map_err(fail)?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let batches = frame.collect().await.map_err(fail)?;
            Ok(Table { schema, batches })
        })
    }

    /// Whether the engine has a table `name`.
    pub fn has_table(&self, name: &str) -> Result<bool> {
        self.ctx
            .table_exist(TableReference::bare(name))
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Drops table `name` from the engine (its memory is freed once no running query holds it).
    pub fn release(&self, name: &str) -> Result<()> {
        self.ctx
            .deregister_table(TableReference::bare(name))
            .map(|_| ())
            .map_err(|e| Error::Internal(format!("releasing `{name}`: {e}")))
    }

    /// Every row of table `name` (as the program or a source named it).
    pub fn table(&self, name: &str) -> Result<Table> {
        let reference = TableReference::bare(name);
        let exists = self
            .ctx
            .table_exist(reference.clone())
            .map_err(|e| Error::Internal(e.to_string()))?;
        if !exists {
            return Err(Error::NoSuchTable(name.to_string()));
        }
        self.query(&format!("SELECT * FROM {}", quote(name)))
    }
}

/// `name` as a quoted SQL identifier, so that table names keep their case.
/// The query of `[-- comments…] CREATE TABLE <table> AS <query>`, when the statement has that
/// shape (compiled programs always do).
fn create_query<'a>(sql: &'a str, table: &str) -> Option<&'a str> {
    let mut rest = sql.trim_start();
    while rest.starts_with("--") {
        rest = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
    }
    let head = format!("CREATE TABLE {} AS", quote(table));
    let plain = format!("CREATE TABLE {table} AS");
    [head, plain]
        .iter()
        .find_map(|h| rest.strip_prefix(h.as_str()))
        .filter(|q| q.starts_with(char::is_whitespace))
        .map(str::trim_start)
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The rows the tracking API's logged events give `source`, written as JSON lines to
/// `<storage>/stream/rows/<source>.jsonl` for the loader (which checks them like any file);
/// `None` when no logged event is a row of it.
fn tracked_rows(
    storage: &Path,
    source: &str,
    mapping: &IngestMapping,
) -> Result<Option<std::path::PathBuf>> {
    let log = crate::eventlog::EventLog::path(storage);
    let records = crate::eventlog::read_all(&log).map_err(Error::Internal)?;
    let mapping = std::collections::BTreeMap::from([(source.to_string(), mapping.clone())]);
    let mut lines = Vec::new();
    for record in records {
        let event: serde_json::Value =
            serde_json::from_slice(&record).map_err(|e| Error::File {
                path: log.clone(),
                message: format!("a logged event is not JSON: {e}"),
            })?;
        for (_, row) in crate::tracking::rows(&mapping, &event) {
            lines.extend(serde_json::to_vec(&row).unwrap_or_default());
            lines.push(b'\n');
        }
    }
    if lines.is_empty() {
        return Ok(None);
    }
    let dir = storage.join("stream").join("rows");
    std::fs::create_dir_all(&dir).map_err(|e| Error::File {
        path: dir.clone(),
        message: e.to_string(),
    })?;
    let path = dir.join(format!("{source}.jsonl"));
    crate::store::write_atomic(&path, &lines)?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::Dialect;

    fn create(table: &str, sql: &str) -> Statement {
        Statement {
            table: table.into(),
            sql: sql.into(),
        }
    }

    fn program(steps: Vec<Step>) -> Program {
        Program {
            dialect: Dialect::DataFusion,
            steps,
            outputs: Vec::new(),
            initial_state: Vec::new(),
        }
    }

    #[test]
    fn loops_run_until_the_convergence_query_counts_nothing() {
        let engine = BatchEngine::with_threads(2).unwrap();
        let counting = program(vec![
            Step::Create(create("n", "CREATE TABLE n AS SELECT 0 AS v")),
            Step::Loop {
                body: vec![
                    create(
                        "next",
                        "CREATE TABLE next AS SELECT least(v + 1, 5) AS v FROM n",
                    ),
                    create("prev", "CREATE TABLE prev AS SELECT v FROM n"),
                    create("n", "CREATE TABLE n AS SELECT v FROM next"),
                ],
                converged: "SELECT count(*) FROM n JOIN prev ON n.v <> prev.v".into(),
                max_rounds: 10,
            },
        ]);
        let report = engine.run(&counting).unwrap();
        assert_eq!(report.loop_rounds, vec![6]);
        let n = engine.table("n").unwrap();
        let v = n.batches[0].column(0).as_primitive::<Int64Type>().value(0);
        assert_eq!(v, 5);

        let too_few = program(vec![Step::Loop {
            body: vec![
                create("m", "CREATE TABLE m AS SELECT v + 1 AS v FROM n"),
                create("n", "CREATE TABLE n AS SELECT v FROM m"),
            ],
            converged: "SELECT 1".into(),
            max_rounds: 3,
        }]);
        let err = engine.run(&too_few).unwrap_err();
        assert!(
            matches!(err, Error::NotConverged { rounds: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn state_tables_survive_runs_and_take_their_next_contents() {
        let engine = BatchEngine::with_threads(1).unwrap();
        let mut counting = program(vec![Step::Create(create(
            "visits_next",
            "CREATE TABLE visits_next AS SELECT coalesce(max(n), 0) + 1 AS n FROM visits",
        ))]);
        counting.initial_state = vec![create(
            "visits",
            "CREATE TABLE IF NOT EXISTS visits (n BIGINT)",
        )];
        for expected in 1..=3 {
            engine.run(&counting).unwrap();
            let visits = engine.table("visits").unwrap();
            let n = visits.batches[0]
                .column(0)
                .as_primitive::<Int64Type>()
                .value(0);
            assert_eq!(n, expected);
        }
    }

    #[test]
    fn the_retail_example_loads_from_its_cdp_toml() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/retail");
        let sources = cdp_compiler::load_project(&root).unwrap();
        let checked = cdp_compiler::check(&sources);
        let project = cdp_compiler::lower(&checked).unwrap();
        let engine = BatchEngine::with_threads(2).unwrap();
        let loaded = engine
            .register_project_sources(&root, &project, checked.config.as_ref().unwrap())
            .unwrap();
        let names: Vec<&str> = loaded.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["customers", "orders", "web_events", "email_events"]);
        assert!(loaded.iter().all(|(_, rows)| *rows > 0), "{loaded:?}");
        let orders = engine.query("SELECT count(*) FROM orders").unwrap();
        let n = orders.batches[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0);
        assert_eq!(n as usize, loaded[1].1);
    }

    #[test]
    fn sql_errors_name_the_table() {
        let engine = BatchEngine::with_threads(1).unwrap();
        let broken = program(vec![Step::Create(create(
            "broken",
            "CREATE TABLE broken AS SELECT nope FROM nowhere",
        ))]);
        let err = engine.run(&broken).unwrap_err().to_string();
        assert!(err.contains("building table `broken` failed"), "{err}");
        assert!(err.contains("nowhere"), "{err}");
    }
}
