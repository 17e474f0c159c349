//! `cdp compile`: the SQL of a project in one dialect, printed or written one file per table;
//! and `cdp plan`: the order of the batch program, or the streaming operator graph.

use std::io::Write;
use std::path::Path;

use cdp_compiler::sql::{self, Dialect, Program, Step};
use cdp_compiler::{ir, stream};
use cdp_grammar::diag;

use super::{load, plural, Failure, Outcome};

/// Options of `cdp compile`.
pub struct Options<'a> {
    pub dialect: &'a str,
    pub as_of: Option<&'a str>,
    pub out_dir: Option<&'a Path>,
    pub only: Option<&'a str>,
}

pub fn run(dir: &Path, options: &Options, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let dialect = Dialect::from_name(options.dialect).ok_or_else(|| {
        let names: Vec<&str> = Dialect::ALL.iter().map(|d| d.name()).collect();
        Failure::User(format!(
            "unknown dialect `{}`; choose one of {}",
            options.dialect,
            names.join(", ")
        ))
    })?;
    let (project, config_as_of) = lowered(dir, err)?;
    let as_of = as_of_micros(options.as_of.or(config_as_of.as_deref()))?;
    let program = sql::compile(&project, dialect, as_of);
    let program = match options.only {
        Some(name) => only(program, name, &project)?,
        None => program,
    };
    match options.out_dir {
        None => write!(out, "{}", program.to_script())?,
        Some(out_dir) => write_files(&program, out_dir, out)?,
    }
    Ok(())
}

pub fn plan(dir: &Path, streaming: bool, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let (project, config_as_of) = lowered(dir, err)?;
    if streaming {
        let plan = stream::plan(&project);
        write!(out, "{}", stream::render(&plan, &project))?;
        return Ok(());
    }
    let program = sql::compile(
        &project,
        Dialect::DataFusion,
        as_of_micros(config_as_of.as_deref())?,
    );
    writeln!(
        out,
        "batch plan for `{}`: {} steps",
        project.name,
        program.steps.len()
    )?;
    for state in &program.initial_state {
        writeln!(out, "  state   {} (kept between runs)", state.table)?;
    }
    for step in &program.steps {
        match step {
            Step::Create(s) => {
                let output = if program.outputs.contains(&s.table) {
                    "  [output]"
                } else {
                    ""
                };
                writeln!(out, "  create  {}{output}", s.table)?;
            }
            Step::Loop {
                body, max_rounds, ..
            } => {
                let tables: Vec<&str> = body.iter().map(|s| s.table.as_str()).collect();
                writeln!(
                    out,
                    "  repeat  {} until converged (at most {max_rounds} rounds)",
                    tables.join(", ")
                )?;
            }
        }
    }
    Ok(())
}

/// Loads, checks (printing every diagnostic) and lowers a project; errors stop here.
pub(super) fn lowered(
    dir: &Path,
    err: &mut dyn Write,
) -> Result<(ir::Project, Option<String>), Failure> {
    let sources = load(dir)?;
    let checked = cdp_compiler::check(&sources);
    for d in &checked.diagnostics {
        writeln!(err, "{}", diag::render(&sources.map, d))?;
    }
    if checked.has_errors() {
        let errors = checked.diagnostics.iter().filter(|d| d.is_error()).count();
        return Err(Failure::User(format!(
            "nothing compiled: the project has {} (run `cdp check` for details)",
            plural(errors, "error")
        )));
    }
    let as_of = checked
        .config
        .as_ref()
        .and_then(|c| c.project.as_of.clone());
    let project = cdp_compiler::lower(&checked).map_err(|e| Failure::Internal(e.to_string()))?;
    Ok((project, as_of))
}

/// `--as-of`, else the project's `as_of`, else now; in microseconds since the epoch (UTC).
pub(super) fn as_of_micros(text: Option<&str>) -> Result<i64, Failure> {
    match text {
        Some(t) => cdp_compiler::config::parse_timestamp(t)
            .map(|s| s * 1_000_000)
            .ok_or_else(|| {
                Failure::User(format!(
                    "`{t}` is not a timestamp; write it as \"2024-12-01 00:00:00\" or \"2024-12-01\""
                ))
            }),
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| Failure::Internal(format!("the clock is before 1970: {e}")))?;
            Ok(now.as_secs() as i64 * 1_000_000)
        }
    }
}

/// Keeps the statements that implement one definition (and the loops they need).
fn only(program: Program, name: &str, project: &ir::Project) -> Result<Program, Failure> {
    let implements = |sql: &str| {
        sql.lines()
            .take_while(|l| l.starts_with("--"))
            .any(|l| l.split_whitespace().any(|w| w == name))
    };
    let steps: Vec<Step> = program
        .steps
        .into_iter()
        .filter(|s| match s {
            Step::Create(s) => s.table == name || implements(&s.sql),
            Step::Loop { .. } => false,
        })
        .collect();
    if steps.is_empty() {
        let known = known_names(project);
        let mut message = format!("no compiled statement implements `{name}`");
        if let Some(best) = diag::nearest_name(name, known.iter().map(String::as_str)) {
            message.push_str(&format!("; did you mean `{best}`?"));
        }
        return Err(Failure::User(message));
    }
    let initial_state = program
        .initial_state
        .into_iter()
        .filter(|s| s.table == format!("{name}_state"))
        .collect();
    Ok(Program {
        steps,
        initial_state,
        ..program
    })
}

fn known_names(p: &ir::Project) -> Vec<String> {
    let metas = p
        .entities
        .iter()
        .map(|x| &x.meta)
        .chain(p.attributes.iter().map(|x| &x.meta))
        .chain(p.features.iter().map(|x| &x.meta))
        .chain(p.segments.iter().map(|x| &x.meta))
        .chain(p.journeys.iter().map(|x| &x.meta))
        .chain(p.metrics.iter().map(|x| &x.meta));
    metas.map(|m| m.name.clone()).collect()
}

/// One file per statement, numbered in execution order, plus the program as JSON for runners.
fn write_files(program: &Program, out_dir: &Path, out: &mut dyn Write) -> Outcome {
    let io =
        |e: std::io::Error| Failure::User(format!("cannot write to {}: {e}", out_dir.display()));
    std::fs::create_dir_all(out_dir).map_err(io)?;
    let mut n = 0;
    let mut write = |table: &str, sql: &str| -> Result<String, Failure> {
        n += 1;
        let file = out_dir.join(format!("{n:02}_{table}.sql"));
        std::fs::write(&file, format!("{sql};\n")).map_err(io)?;
        Ok(file.display().to_string())
    };
    for s in &program.initial_state {
        writeln!(out, "{}", write(&s.table, &s.sql)?)?;
    }
    for step in &program.steps {
        match step {
            Step::Create(s) => writeln!(out, "{}", write(&s.table, &s.sql)?)?,
            Step::Loop { body, .. } => {
                for s in body {
                    writeln!(out, "{}", write(&s.table, &s.sql)?)?;
                }
            }
        }
    }
    let json = serde_json::to_string_pretty(program)
        .map_err(|e| Failure::Internal(format!("cannot serialize the program: {e}")))?;
    let file = out_dir.join("program.json");
    std::fs::write(&file, json).map_err(io)?;
    writeln!(out, "{}", file.display())?;
    Ok(())
}
