//! A compiled program as a workflow: steps become nodes of a dependency graph (a step needs the
//! steps that last built the tables it reads, and must not overwrite a table before its readers
//! ran), ready steps run in parallel on the one engine, a failing step is retried a bounded number
//! of times, and checks run on each output table as soon as it is built.

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::batch::{BatchEngine, StepDone};
use crate::error::{Error, Result};
use crate::program::{Program, Step};

/// One node of the workflow: a step of the program (or native work standing in for some of
/// them) and the nodes it waits for.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub task: Task,
    /// A short name: the table it builds (a loop: the last table of its body, and "(loop)").
    pub name: String,
    pub tables: Vec<String>,
    /// Indexes of the nodes it waits for.
    pub after: Vec<usize>,
}

/// What a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// `Program::steps[i]`, on the engine.
    Sql(usize),
    /// `natives[i]`.
    Native(usize),
}

/// Work done in Rust in place of some of a program's SQL steps (identity resolution: the
/// connected-components loop becomes a union-find). Its steps are those that build only tables of
/// `replaces`; it runs where the first of them was, after the writers of `reads`.
pub struct Native<'a> {
    pub name: String,
    /// Tables whose SQL steps it stands in for.
    pub replaces: Vec<String>,
    /// Tables it needs.
    pub reads: Vec<String>,
    /// Tables it registers on the engine (those of `replaces` that other steps read or that are
    /// outputs).
    pub builds: Vec<String>,
    #[allow(clippy::type_complexity)]
    pub run: Box<dyn Fn(&BatchEngine) -> Result<()> + Send + Sync + 'a>,
}

impl std::fmt::Debug for Native<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Native")
            .field("name", &self.name)
            .field("replaces", &self.replaces)
            .field("reads", &self.reads)
            .field("builds", &self.builds)
            .finish_non_exhaustive()
    }
}

/// The dependency graph of a program's steps, in program order.
pub fn graph(program: &Program) -> Vec<Node> {
    plan(program, &[])
}

/// The dependency graph of a program's steps with `natives` in place of the steps they replace.
pub fn plan(program: &Program, natives: &[Native]) -> Vec<Node> {
    let built: BTreeSet<String> = program
        .steps
        .iter()
        .flat_map(|s| step_tables(s).into_iter())
        .chain(program.initial_state.iter().map(|s| s.table.clone()))
        .collect();
    let replaced_by = |table: &str| {
        natives
            .iter()
            .position(|n| n.replaces.iter().any(|t| t == table))
    };
    let mut emitted = vec![false; natives.len()];
    let mut last_writer: HashMap<String, usize> = HashMap::new();
    let mut readers_since_write: HashMap<String, Vec<usize>> = HashMap::new();
    let mut nodes: Vec<Node> = Vec::new();
    for (s, step) in program.steps.iter().enumerate() {
        let step_writes = step_tables(step);
        let native = step_writes
            .first()
            .and_then(|t| replaced_by(t))
            .filter(|&k| step_writes.iter().all(|t| replaced_by(t) == Some(k)));
        let (task, writes, reads, name): (Task, Vec<String>, BTreeSet<String>, String) =
            match native {
                Some(k) if emitted[k] => continue,
                Some(k) => {
                    emitted[k] = true;
                    let n = &natives[k];
                    (
                        Task::Native(k),
                        n.builds.clone(),
                        n.reads.iter().cloned().collect(),
                        n.name.clone(),
                    )
                }
                None => {
                    let reads = step_sql(step)
                        .iter()
                        .flat_map(|sql| identifiers(sql))
                        .filter(|t| built.contains(t))
                        .collect();
                    let name = match step {
                        Step::Create(s) => s.table.clone(),
                        Step::Loop { body, .. } => {
                            format!("{} (loop)", body.last().map_or("", |s| s.table.as_str()))
                        }
                    };
                    (Task::Sql(s), step_writes, reads, name)
                }
            };
        let i = nodes.len();
        let mut after = BTreeSet::new();
        for table in &reads {
            if let Some(&w) = last_writer.get(table) {
                if w != i {
                    after.insert(w);
                }
            }
        }
        for table in &writes {
            if let Some(&w) = last_writer.get(table) {
                after.insert(w);
            }
            for &r in readers_since_write.get(table).into_iter().flatten() {
                if r != i {
                    after.insert(r);
                }
            }
        }
        for table in &reads {
            readers_since_write
                .entry(table.clone())
                .or_default()
                .push(i);
        }
        for table in &writes {
            last_writer.insert(table.clone(), i);
            readers_since_write.insert(table.clone(), Vec::new());
        }
        nodes.push(Node {
            task,
            name,
            tables: writes,
            after: after.into_iter().collect(),
        });
    }
    nodes
}

fn step_tables(step: &Step) -> Vec<String> {
    match step {
        Step::Create(s) => vec![s.table.clone()],
        Step::Loop { body, .. } => {
            let mut out: Vec<String> = Vec::new();
            for s in body {
                if !out.contains(&s.table) {
                    out.push(s.table.clone());
                }
            }
            out
        }
    }
}

fn step_sql(step: &Step) -> Vec<&str> {
    match step {
        Step::Create(s) => vec![s.sql.as_str()],
        Step::Loop {
            body, converged, ..
        } => body
            .iter()
            .map(|s| s.sql.as_str())
            .chain(std::iter::once(converged.as_str()))
            .collect(),
    }
}

/// The identifiers of a SQL text (outside comments and string literals), unquoted.
fn identifiers(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '-' if sql[i..].starts_with("--") => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' => {
                while let Some((_, c)) = chars.next() {
                    if c == '\'' {
                        if matches!(chars.peek(), Some((_, '\''))) {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '"' => {
                let mut name = String::new();
                while let Some((_, c)) = chars.next() {
                    if c == '"' {
                        if matches!(chars.peek(), Some((_, '"'))) {
                            chars.next();
                            name.push('"');
                        } else {
                            break;
                        }
                    } else {
                        name.push(c);
                    }
                }
                out.push(name);
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(sql[i..end].to_string());
            }
            _ => {}
        }
    }
    out
}

/// What a check found wrong with an output table.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckFailure {
    pub table: String,
    pub message: String,
}

/// How one step went.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    pub name: String,
    pub took: Duration,
    /// Rows of each table the step built, after it finished.
    pub rows: Vec<(String, usize)>,
    pub rounds: Option<u32>,
    pub attempts: u32,
}

/// Progress callbacks (the CLI draws a progress bar with them).
pub trait Observer: Send {
    fn started(&mut self, _node: &Node) {}
    fn finished(&mut self, _report: &StepReport) {}
    fn retrying(&mut self, _node: &Node, _attempt: u32, _error: &Error) {}
}

impl Observer for () {}

#[derive(Debug, Clone)]
pub struct Options {
    /// Extra attempts of a failing step before the run stops.
    pub retries: u32,
    /// Steps running at the same time.
    pub parallel: usize,
    /// Drop each table from the engine once every step that reads or writes it has run: the
    /// program's intermediate tables and the sources, not its outputs or state. Bounds a
    /// run's memory (the rows of a large source are not held to the end); only for callers
    /// that read nothing but the outputs afterwards.
    pub release_after_use: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retries: 2,
            parallel: 2,
            release_after_use: false,
        }
    }
}

/// A check on an output table, run as soon as the table is built: `unique` columns (together)
/// identify a row, `not_null` columns always hold a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub table: String,
    pub unique: Vec<String>,
    pub not_null: Vec<String>,
}

/// The checks every compiled program's outputs must pass, from the tables' shapes: one row per
/// profile, per identifier, per membership, per journey state.
pub fn standard_checks(program: &Program) -> Vec<Check> {
    let mut checks = Vec::new();
    for table in &program.outputs {
        let (unique, not_null): (&[&str], &[&str]) = if table.ends_with("_profile") {
            (&["canonical_id"], &["canonical_id"])
        } else if table.ends_with("_identity") || table.ends_with("_id_map_next") {
            (
                &["key_name", "key_value"],
                &["key_name", "key_value", "canonical_id"],
            )
        } else if table.ends_with("_segments") {
            (&["canonical_id", "segment"], &["canonical_id", "segment"])
        } else if table.ends_with("_state_next") {
            (&["canonical_id"], &["canonical_id", "status"])
        } else if table.ends_with("_id_merges") {
            (&["merged_id"], &["merged_id", "into_id"])
        } else {
            continue;
        };
        checks.push(Check {
            table: table.clone(),
            unique: unique.iter().map(|s| s.to_string()).collect(),
            not_null: not_null.iter().map(|s| s.to_string()).collect(),
        });
    }
    checks
}

/// Runs a check; `Ok(None)` when the table passes.
pub fn run_check(engine: &BatchEngine, check: &Check) -> Result<Option<String>> {
    let t = quote(&check.table);
    let mut problems = Vec::new();
    if !check.unique.is_empty() {
        let cols = check
            .unique
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT count(*) AS n FROM (SELECT {cols} FROM {t} GROUP BY {cols} HAVING count(*) > 1) d"
        );
        let dups = engine.count(&sql)?;
        if dups > 0 {
            problems.push(format!(
                "{dups} values of ({}) appear more than once",
                check.unique.join(", ")
            ));
        }
    }
    for c in &check.not_null {
        let n = engine.count(&format!(
            "SELECT count(*) AS n FROM {t} WHERE {} IS NULL",
            quote(c)
        ))?;
        if n > 0 {
            problems.push(format!("{n} rows have no `{c}`"));
        }
    }
    Ok((!problems.is_empty()).then(|| problems.join("; ")))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs the program's steps as a workflow; state tables are created first and advanced at the
/// end. Stops at the first step that still fails after its retries, or whose output fails a
/// check; the steps already done keep their tables.
pub fn run(
    engine: &BatchEngine,
    program: &Program,
    checks: &[Check],
    options: &Options,
    observer: &mut dyn Observer,
) -> Result<Vec<StepReport>> {
    run_with(engine, program, &[], checks, options, observer)
}

/// [`run`] with `natives` in place of the steps they replace (see [`plan`]).
pub fn run_with(
    engine: &BatchEngine,
    program: &Program,
    natives: &[Native],
    checks: &[Check],
    options: &Options,
    observer: &mut dyn Observer,
) -> Result<Vec<StepReport>> {
    engine.create_state(program)?;
    let nodes = plan(program, natives);
    let observer = Mutex::new(observer);
    let mut waiting: Vec<usize> = nodes.iter().map(|n| n.after.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for &a in &n.after {
            dependents[a].push(i);
        }
    }
    let mut users = if options.release_after_use {
        table_users(engine, program, natives, &nodes)?
    } else {
        HashMap::new()
    };
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| waiting[i] == 0).collect();
    let mut reports: Vec<Option<StepReport>> = vec![None; nodes.len()];
    let mut running = 0usize;
    let mut failure: Option<Error> = None;
    let (tx, rx) = mpsc::channel::<(usize, Result<StepReport>)>();
    std::thread::scope(|scope| {
        loop {
            while failure.is_none() && running < options.parallel.max(1) {
                // Lowest step first: program order is a good order.
                ready.sort_unstable_by(|a, b| b.cmp(a));
                let Some(i) = ready.pop() else { break };
                running += 1;
                let tx = tx.clone();
                let node = &nodes[i];
                let work = match node.task {
                    Task::Sql(s) => Work::Sql(&program.steps[s]),
                    Task::Native(k) => Work::Native(&natives[k]),
                };
                let observer = &observer;
                scope.spawn(move || {
                    if let Ok(mut o) = observer.lock() {
                        o.started(node);
                    }
                    let result = run_node(engine, node, work, checks, options, observer);
                    let _ = tx.send((i, result));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((i, result)) = rx.recv() else { break };
            running -= 1;
            match result {
                Ok(report) => {
                    if let Ok(mut o) = observer.lock() {
                        o.finished(&report);
                    }
                    reports[i] = Some(report);
                    for (table, left) in users.iter_mut() {
                        if left.remove(&i) && left.is_empty() {
                            if let Err(e) = engine.release(table) {
                                failure.get_or_insert(e);
                            }
                        }
                    }
                    for &d in &dependents[i] {
                        waiting[d] -= 1;
                        if waiting[d] == 0 {
                            ready.push(d);
                        }
                    }
                }
                Err(e) => {
                    if failure.is_none() {
                        failure = Some(e);
                    }
                }
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    engine.advance_state(program)?;
    Ok(reports.into_iter().flatten().collect())
}

/// Per table that may be released after use (see [`Options::release_after_use`]): the nodes
/// that name it (read or write it), each removed as it finishes.
fn table_users(
    engine: &BatchEngine,
    program: &Program,
    natives: &[Native],
    nodes: &[Node],
) -> Result<HashMap<String, BTreeSet<usize>>> {
    let mut keep: BTreeSet<&str> = program.outputs.iter().map(String::as_str).collect();
    keep.extend(program.initial_state.iter().map(|s| s.table.as_str()));
    let built: BTreeSet<String> = program.steps.iter().flat_map(step_tables).collect();
    let mut users: HashMap<String, BTreeSet<usize>> = HashMap::new();
    let mut exists: HashMap<String, bool> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let named: Vec<String> = match node.task {
            Task::Sql(s) => step_sql(&program.steps[s])
                .iter()
                .flat_map(|sql| identifiers(sql))
                .chain(node.tables.iter().cloned())
                .collect(),
            Task::Native(k) => natives[k]
                .reads
                .iter()
                .chain(&natives[k].builds)
                .cloned()
                .collect(),
        };
        for name in named {
            if keep.contains(name.as_str()) {
                continue;
            }
            let table = match exists.get(&name) {
                Some(&known) => known,
                None => {
                    let known = built.contains(&name) || engine.has_table(&name)?;
                    exists.insert(name.clone(), known);
                    known
                }
            };
            if table {
                users.entry(name).or_default().insert(i);
            }
        }
    }
    Ok(users)
}

/// What a node runs, resolved.
#[derive(Clone, Copy)]
enum Work<'p> {
    Sql(&'p Step),
    Native(&'p Native<'p>),
}

fn run_node(
    engine: &BatchEngine,
    node: &Node,
    work: Work<'_>,
    checks: &[Check],
    options: &Options,
    observer: &Mutex<&mut dyn Observer>,
) -> Result<StepReport> {
    let start = Instant::now();
    let mut attempts = 0;
    let done = loop {
        attempts += 1;
        let result = match work {
            Work::Sql(step) => engine.run_step(step),
            Work::Native(native) => (native.run)(engine).map(|()| StepDone::default()),
        };
        match result {
            Ok(done) => break done,
            Err(e) if attempts <= options.retries && retryable(&e) => {
                if let Ok(mut o) = observer.lock() {
                    o.retrying(node, attempts, &e);
                }
            }
            Err(e) => {
                return Err(Error::StepFailed {
                    step: node.name.clone(),
                    attempts,
                    cause: Box::new(e),
                })
            }
        }
    };
    let mut rows = Vec::new();
    for table in &node.tables {
        rows.push((table.clone(), engine.table_rows(table)?));
        for check in checks.iter().filter(|c| &c.table == table) {
            if let Some(problem) = run_check(engine, check)? {
                return Err(Error::CheckFailed {
                    table: table.clone(),
                    message: problem,
                });
            }
        }
    }
    Ok(StepReport {
        name: node.name.clone(),
        took: start.elapsed(),
        rows,
        rounds: done.rounds,
        attempts,
    })
}

/// Whether trying again could help: engine failures (resources, I/O) can pass, but a loop that
/// did not converge or a statement the engine cannot plan fails the same way every time.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Sql { message, .. } => {
            !(message.contains("Error during planning")
                || message.contains("SQL error")
                || message.contains("Schema error"))
        }
        Error::NotConverged { .. } | Error::BadConvergenceQuery { .. } => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::Statement;

    fn create(table: &str, sql: &str) -> Step {
        Step::Create(Statement {
            table: table.into(),
            sql: sql.into(),
        })
    }

    fn program(steps: Vec<Step>) -> Program {
        Program {
            dialect: crate::program::Dialect::DataFusion,
            outputs: Vec::new(),
            steps,
            initial_state: Vec::new(),
        }
    }

    #[test]
    fn steps_wait_for_the_tables_they_read_and_for_readers_before_overwriting() {
        let p = program(vec![
            create("a", "CREATE TABLE a AS SELECT 1 AS x"),
            create(
                "b",
                "CREATE TABLE b AS SELECT 2 AS x -- reads nothing: a is in a comment",
            ),
            create("c", "CREATE TABLE c AS SELECT x, 'b' AS s FROM a"),
            create(
                "d",
                "CREATE TABLE d AS SELECT * FROM \"b\" JOIN c USING (x)",
            ),
            create("a", "CREATE TABLE a AS SELECT 3 AS x"),
        ]);
        let g = graph(&p);
        assert_eq!(g[0].after, Vec::<usize>::new());
        assert_eq!(g[1].after, Vec::<usize>::new());
        assert_eq!(g[2].after, vec![0]);
        assert_eq!(g[3].after, vec![1, 2]);
        // rewriting `a` waits for its first writer and for `c`, which reads it
        assert_eq!(g[4].after, vec![0, 2]);
    }

    #[test]
    fn independent_steps_run_and_checks_stop_the_run() {
        let engine = BatchEngine::with_threads(2).unwrap();
        let p = program(vec![
            create("a", "CREATE TABLE a AS SELECT 1 AS id UNION ALL SELECT 2"),
            create("b", "CREATE TABLE b AS SELECT 1 AS id UNION ALL SELECT 1"),
            create("c", "CREATE TABLE c AS SELECT count(*) AS n FROM a"),
        ]);
        let reports = run(&engine, &p, &[], &Options::default(), &mut ()).unwrap();
        assert_eq!(reports.len(), 3);
        assert_eq!(reports[2].rows, vec![("c".to_string(), 1)]);
        let unique = |t: &str| Check {
            table: t.into(),
            unique: vec!["id".into()],
            not_null: vec!["id".into()],
        };
        assert!(run(&engine, &p, &[unique("a")], &Options::default(), &mut ()).is_ok());
        let err = run(&engine, &p, &[unique("b")], &Options::default(), &mut ()).unwrap_err();
        assert!(
            err.to_string()
                .contains("1 values of (id) appear more than once"),
            "{err}"
        );
    }

    #[test]
    fn tables_are_released_after_their_last_use_but_outputs_and_state_are_kept() {
        let setup = || {
            let engine = BatchEngine::with_threads(2).unwrap();
            engine
                .query("CREATE TABLE src AS SELECT 1 AS x UNION ALL SELECT 2")
                .unwrap();
            engine
                .query("CREATE TABLE unrelated AS SELECT 1 AS x")
                .unwrap();
            engine
        };
        let mut p = program(vec![
            create("rows", "CREATE TABLE rows AS SELECT x FROM src"),
            create("a", "CREATE TABLE a AS SELECT x FROM rows WHERE x = 1"),
            create("b", "CREATE TABLE b AS SELECT x FROM rows WHERE x = 2"),
            create(
                "out",
                "CREATE TABLE out AS SELECT * FROM a UNION ALL SELECT * FROM b",
            ),
            create(
                "late",
                "CREATE TABLE late AS SELECT count(*) AS n FROM state",
            ),
            create(
                "state_next",
                "CREATE TABLE state_next AS SELECT n AS x FROM late",
            ),
        ]);
        p.outputs = vec!["out".into(), "state_next".into()];
        p.initial_state = vec![Statement {
            table: "state".into(),
            sql: "CREATE TABLE IF NOT EXISTS state AS SELECT 1 AS x".into(),
        }];
        const ALL: [&str; 8] = [
            "src",
            "rows",
            "a",
            "b",
            "late",
            "out",
            "state_next",
            "unrelated",
        ];
        let tables = |engine: &BatchEngine| {
            ALL.into_iter()
                .filter(|t| engine.has_table(t).unwrap())
                .collect::<Vec<_>>()
        };
        let kept = setup();
        run(&kept, &p, &[], &Options::default(), &mut ()).unwrap();
        assert_eq!(tables(&kept), ALL);
        let released = setup();
        let options = Options {
            release_after_use: true,
            ..Options::default()
        };
        // Both branches read `rows` in parallel: it goes only after both ran.
        run(&released, &p, &[], &options, &mut ()).unwrap();
        assert_eq!(tables(&released), ["out", "state_next", "unrelated"]);
        assert_eq!(released.table_rows("out").unwrap(), 2);
        assert!(released.has_table("state").unwrap());
    }

    #[test]
    fn a_failing_step_names_itself_and_its_attempts() {
        let engine = BatchEngine::with_threads(2).unwrap();
        let p = program(vec![create(
            "a",
            "CREATE TABLE a AS SELECT * FROM missing_table",
        )]);
        let err = run(&engine, &p, &[], &Options::default(), &mut ()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("step `a` failed after 1 attempt"), "{text}");
    }
}
