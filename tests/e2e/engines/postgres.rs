//! The PostgreSQL runner: loads the sources into a fresh schema of the server `CDP_TEST_PG` names
//! (CREATE TABLE with the declared types, COPY of a prepared CSV), runs the program, reads every
//! output table back as text and drops the schema.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use cdp_compiler::types::Type;
use cdp_runtime::{Program, Step};
use postgres::types::{Kind as PgKind, Type as PgType};
use postgres::{Client, NoTls, SimpleQueryMessage};

use super::canon::{self, CanonTable, Kind, NULL};
use super::prepare::{prepare_csv, Style};
use super::{compared_tables, csv_paths, required_env, scratch_dir, Input, Tables};

const EXAMPLE: &str = "\"host=127.0.0.1 port=5432 user=cdp password=cdp dbname=cdp_test\"";

static JOBS: AtomicUsize = AtomicUsize::new(0);

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn pg_error(e: postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                m.push_str(&format!(" (detail: {d})"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!(" (hint: {h})"));
            }
            m
        }
        None => e.to_string(),
    }
}

fn sql_type(ty: &Type) -> Result<String, String> {
    Ok(match ty {
        Type::String => "text".into(),
        Type::Int | Type::Duration => "bigint".into(),
        Type::Float => "double precision".into(),
        Type::Decimal { precision, scale } => format!("numeric({precision}, {scale})"),
        Type::Bool => "boolean".into(),
        Type::Date => "date".into(),
        Type::Timestamp => "timestamp".into(),
        Type::List(inner) if !matches!(**inner, Type::List(_)) => format!("{}[]", sql_type(inner)?),
        other => return Err(format!("no PostgreSQL column type for {other}")),
    })
}

pub fn run(inputs: &[Input], program: &Program) -> Result<(Vec<u32>, Tables), String> {
    let conn = required_env("CDP_TEST_PG", "PostgreSQL", EXAMPLE)?;
    let mut client = Client::connect(&conn, NoTls).map_err(|e| {
        format!(
            "cannot connect to PostgreSQL with CDP_TEST_PG=\"{conn}\": {}",
            pg_error(e)
        )
    })?;
    let schema = format!(
        "cdp_job_{}_{}",
        std::process::id(),
        JOBS.fetch_add(1, Ordering::Relaxed)
    );
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE; \
             CREATE SCHEMA {schema}; SET search_path TO {schema}; SET TIME ZONE 'UTC'; \
             SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1"
        ))
        .map_err(pg_error)?;
    let result = run_in_schema(&mut client, inputs, program);
    let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
    result
}

fn run_in_schema(
    client: &mut Client,
    inputs: &[Input],
    program: &Program,
) -> Result<(Vec<u32>, Tables), String> {
    let dir = scratch_dir()?;
    for input in inputs {
        load(client, input, dir.path())?;
    }
    for state in &program.initial_state {
        client
            .batch_execute(&state.sql)
            .map_err(|e| format!("creating state table `{}`: {}", state.table, pg_error(e)))?;
    }
    let mut rounds = Vec::new();
    for step in &program.steps {
        match step {
            Step::Create(s) => create(client, &s.table, &s.sql)?,
            Step::Loop {
                body,
                converged,
                max_rounds,
            } => {
                let mut n = 0;
                loop {
                    if n == *max_rounds {
                        return Err(format!(
                            "loop did not converge in {n} rounds ({} changes in the last round)",
                            changes(client, converged)?
                        ));
                    }
                    n += 1;
                    for s in body {
                        create(client, &s.table, &s.sql)?;
                    }
                    if changes(client, converged)? == 0 {
                        break;
                    }
                }
                rounds.push(n);
            }
        }
    }
    for state in &program.initial_state {
        let next = format!("{}_next", state.table);
        create(
            client,
            &state.table,
            &format!(
                "CREATE TABLE {} AS SELECT * FROM {}",
                quote(&state.table),
                quote(&next)
            ),
        )?;
    }
    let mut tables = BTreeMap::new();
    for name in compared_tables(program) {
        let table = read(client, &name).map_err(|e| format!("reading `{name}`: {e}"))?;
        tables.insert(name, table);
    }
    Ok((rounds, tables))
}

fn load(client: &mut Client, input: &Input, dir: &std::path::Path) -> Result<(), String> {
    let source = &input.source;
    let columns = source
        .columns
        .iter()
        .map(|c| {
            Ok(format!(
                "{} {}{}",
                quote(&c.name),
                sql_type(&c.ty)?,
                if c.nullable { "" } else { " NOT NULL" }
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let table = quote(&source.table);
    client
        .batch_execute(&format!("CREATE TABLE {table} ({})", columns.join(", ")))
        .map_err(|e| format!("creating source table `{}`: {}", source.table, pg_error(e)))?;
    let csv = dir.join(format!("{}.csv", source.table));
    prepare_csv(source, csv_paths(input)?, &csv, Style::Postgres)?;
    let names: Vec<String> = source.columns.iter().map(|c| quote(&c.name)).collect();
    let names = names.join(", ");
    let mut writer = client
        .copy_in(&format!(
            "COPY {table} ({names}) FROM STDIN WITH (FORMAT csv, HEADER true, NULL '', FORCE_NULL ({names}))"
        ))
        .map_err(|e| format!("loading `{}`: {}", source.table, pg_error(e)))?;
    let mut file = std::fs::File::open(&csv).map_err(|e| e.to_string())?;
    std::io::copy(&mut file, &mut writer)
        .map_err(|e| format!("loading `{}`: {e}", source.table))?;
    writer
        .finish()
        .map_err(|e| format!("loading `{}`: {}", source.table, pg_error(e)))?;
    // Statistics, as a warehouse table has them: without them the planner guesses row counts.
    client
        .batch_execute(&format!("ANALYZE {table}"))
        .map_err(|e| format!("analyzing `{}`: {}", source.table, pg_error(e)))?;
    Ok(())
}

fn create(client: &mut Client, table: &str, sql: &str) -> Result<(), String> {
    client
        .batch_execute(&format!("DROP TABLE IF EXISTS {}", quote(table)))
        .map_err(pg_error)?;
    let start = std::time::Instant::now();
    client.batch_execute(sql).map_err(|e| {
        format!(
            "building table `{table}` failed: {}\n  statement: {}",
            pg_error(e),
            super::short(sql)
        )
    })?;
    let took = start.elapsed();
    if took.as_secs() >= 1 {
        // Shown with --nocapture: statements slow enough to look at.
        eprintln!("PostgreSQL: building `{table}` took {took:.1?}");
    }
    Ok(())
}

fn changes(client: &mut Client, sql: &str) -> Result<i64, String> {
    let rows = client.simple_query(sql).map_err(pg_error)?;
    let values: Vec<Option<String>> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) if r.len() == 1 => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .collect();
    match values.as_slice() {
        [None] => Ok(0),
        [Some(v)] => canon::decimal(v)?
            .parse::<i64>()
            .map_err(|_| format!("convergence query returned {v}, not an integer")),
        _ => Err(format!(
            "convergence query must return one row with one integer: {sql}"
        )),
    }
}

/// The canonical kind of a PostgreSQL type, and the SQL that prints a value of it as text.
fn text_expr(ty: &PgType, value: &str) -> (Kind, String) {
    if let PgKind::Array(element) = ty.kind() {
        let (kind, expr) = text_expr(element, "x");
        return (
            Kind::List(Box::new(kind)),
            format!(
                "CASE WHEN {value} IS NULL THEN NULL ELSE coalesce((SELECT json_agg({expr} ORDER BY o) \
                 FROM unnest({value}) WITH ORDINALITY AS u(x, o)), '[]') END::text"
            ),
        );
    }
    let kind = match *ty {
        PgType::INT2 | PgType::INT4 | PgType::INT8 | PgType::OID => Kind::Int,
        PgType::FLOAT4 | PgType::FLOAT8 => Kind::Float,
        PgType::NUMERIC => Kind::Decimal,
        PgType::BOOL => Kind::Bool,
        PgType::DATE => Kind::Date,
        PgType::TIMESTAMP => Kind::Timestamp,
        PgType::TIMESTAMPTZ => {
            return (
                Kind::Timestamp,
                format!("({value} AT TIME ZONE 'UTC')::text"),
            );
        }
        PgType::INTERVAL => {
            return (
                Kind::Duration,
                format!("(extract(epoch from {value}) * 1000000)::bigint::text"),
            );
        }
        _ => Kind::Text,
    };
    (kind, format!("{value}::text"))
}

fn read(client: &mut Client, table: &str) -> Result<CanonTable, String> {
    let statement = client
        .prepare(&format!("SELECT * FROM {}", quote(table)))
        .map_err(pg_error)?;
    let mut names = Vec::new();
    let mut kinds = Vec::new();
    let mut exprs = Vec::new();
    for column in statement.columns() {
        let (kind, expr) = text_expr(column.type_(), &format!("t.{}", quote(column.name())));
        names.push(column.name().to_string());
        kinds.push(kind);
        exprs.push(expr);
    }
    if exprs.is_empty() {
        return Ok(CanonTable::new(names, Vec::new()));
    }
    let messages = client
        .simple_query(&format!(
            "SELECT {} FROM {} AS t",
            exprs.join(", "),
            quote(table)
        ))
        .map_err(pg_error)?;
    let mut rows = Vec::new();
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message {
            let mut out = Vec::with_capacity(kinds.len());
            for (i, kind) in kinds.iter().enumerate() {
                out.push(match row.get(i) {
                    None => NULL.to_string(),
                    Some(text) => canon::text_value(kind, text)
                        .map_err(|e| format!("column `{}`: {e}", names[i]))?,
                });
            }
            rows.push(out);
        }
    }
    Ok(CanonTable::new(names, rows))
}
