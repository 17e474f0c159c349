//! The DuckDB runner: writes the job (input tables with DuckDB types and prepared CSVs, the
//! program, the tables to read) as JSON, runs `tools/duckdb_job.py` with the Python that
//! `CDP_TEST_PYTHON` names (it must have the `duckdb` wheel), and reads the result back.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use cdp_compiler::types::Type;
use cdp_runtime::{Program, Step};
use serde_json::{json, Value as Json};

use super::canon::{self, CanonTable, Kind};
use super::prepare::{prepare_csv, Style};
use super::{compared_tables, csv_paths, required_env, scratch_dir, Input, Tables};

fn sql_type(ty: &Type) -> Result<String, String> {
    Ok(match ty {
        Type::String => "VARCHAR".into(),
        Type::Int | Type::Duration => "BIGINT".into(),
        Type::Float => "DOUBLE".into(),
        Type::Decimal { precision, scale } => format!("DECIMAL({precision},{scale})"),
        Type::Bool => "BOOLEAN".into(),
        Type::Date => "DATE".into(),
        Type::Timestamp => "TIMESTAMP".into(),
        Type::List(inner) if !matches!(**inner, Type::List(_)) => {
            format!("{}[]", sql_type(inner)?)
        }
        other => return Err(format!("no DuckDB column type for {other}")),
    })
}

/// The canonical kind of a DuckDB type as `str(DuckDBPyType)` prints it.
fn kind(ty: &str) -> Kind {
    if let Some(inner) = ty.strip_suffix("[]") {
        return Kind::List(Box::new(kind(inner)));
    }
    match ty {
        "TINYINT" | "SMALLINT" | "INTEGER" | "BIGINT" | "HUGEINT" | "UTINYINT" | "USMALLINT"
        | "UINTEGER" | "UBIGINT" | "UHUGEINT" => Kind::Int,
        "FLOAT" | "DOUBLE" => Kind::Float,
        "BOOLEAN" => Kind::Bool,
        "DATE" => Kind::Date,
        "INTERVAL" => Kind::Duration,
        t if t.starts_with("DECIMAL") => Kind::Decimal,
        t if t.starts_with("TIMESTAMP") => Kind::Timestamp,
        _ => Kind::Text,
    }
}

fn statement(s: &cdp_runtime::Statement) -> Json {
    json!({ "table": s.table, "sql": s.sql })
}

pub fn run(inputs: &[Input], program: &Program) -> Result<(Vec<u32>, Tables), String> {
    let python = required_env(
        "CDP_TEST_PYTHON",
        "DuckDB",
        "\"/path/to/venv/bin/python\" (a Python with `pip install duckdb`)",
    )?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/duckdb_job.py");
    let dir = scratch_dir()?;
    let mut tables = Vec::new();
    for input in inputs {
        let csv = dir.path().join(format!("{}.csv", input.source.table));
        prepare_csv(&input.source, csv_paths(input)?, &csv, Style::DuckDb)?;
        let columns = input
            .source
            .columns
            .iter()
            .map(|c| {
                Ok(json!({ "name": c.name, "type": sql_type(&c.ty)?, "nullable": c.nullable }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        tables.push(json!({ "name": input.source.table, "csv": csv, "columns": columns }));
    }
    let steps: Vec<Json> = program
        .steps
        .iter()
        .map(|step| match step {
            Step::Create(s) => json!({ "create": statement(s) }),
            Step::Loop {
                body,
                converged,
                max_rounds,
            } => json!({ "loop": {
                "body": body.iter().map(statement).collect::<Vec<_>>(),
                "converged": converged,
                "max_rounds": max_rounds,
            }}),
        })
        .collect();
    let read = compared_tables(program);
    let initial_state: Vec<Json> = program.initial_state.iter().map(statement).collect();
    let job = json!({
        "tables": tables,
        "program": { "initial_state": initial_state, "steps": steps },
        "read": read,
        "threads": 2,
    });
    let job_path = dir.path().join("job.json");
    let result_path = dir.path().join("result.json");
    std::fs::write(&job_path, job.to_string()).map_err(|e| e.to_string())?;
    let output = Command::new(&python)
        .arg(&script)
        .arg(&job_path)
        .arg(&result_path)
        .output()
        .map_err(|e| format!("cannot run CDP_TEST_PYTHON={python}: {e}"))?;
    let result: Option<Json> = std::fs::read_to_string(&result_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let Some(result) = result else {
        return Err(format!(
            "{} produced no result (exit {}); is the duckdb wheel installed for {python}? \
             (`{python} -m pip install duckdb`)\n{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    };
    if let Some(error) = result.get("error") {
        return Err(error.as_str().unwrap_or_default().to_string());
    }
    let rounds = result["rounds"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|n| n.as_u64())
                .map(|n| n as u32)
                .collect()
        })
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for name in read {
        let table = &result["tables"][&name];
        let columns = table["columns"].as_array().cloned().unwrap_or_default();
        let names: Vec<String> = columns
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect();
        let kinds: Vec<Kind> = columns
            .iter()
            .map(|c| kind(c["type"].as_str().unwrap_or_default()))
            .collect();
        let mut rows = Vec::new();
        for row in table["rows"].as_array().into_iter().flatten() {
            let values = row.as_array().cloned().unwrap_or_default();
            let row = kinds
                .iter()
                .zip(&values)
                .map(|(k, v)| canon::json_value(k, v))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("reading `{name}`: {e}"))?;
            rows.push(row);
        }
        out.insert(name, CanonTable::new(names, rows));
    }
    Ok((rounds, out))
}
