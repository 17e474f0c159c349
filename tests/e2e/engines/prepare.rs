//! Input CSVs for the SQL servers: one source's files re-written with its declared columns in
//! declared order, every value checked as the embedded engine checks it, durations as whole
//! milliseconds (the runtime's representation), and lists written the way the engine reads them.

use std::path::Path;

use cdp_compiler::ir;
use cdp_compiler::types::Type;
use cdp_runtime::load::{parse_date, parse_decimal, parse_duration, parse_timestamp};
use serde_json::Value as Json;

use super::canon::timestamp_micros;

/// How lists are spelt for an engine (durations are milliseconds everywhere, as in the runtime).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    /// Array literals `{"a","b"}`.
    Postgres,
    /// JSON arrays (cast to lists after loading).
    DuckDb,
}

/// Re-writes the CSV files of `source` into one CSV at `out`. Errors name the file and line.
pub fn prepare_csv(
    source: &ir::Source,
    files: &[std::path::PathBuf],
    out: &Path,
    style: Style,
) -> Result<u64, String> {
    let mut writer = csv::WriterBuilder::new()
        .from_path(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    writer
        .write_record(source.columns.iter().map(|c| c.name.as_str()))
        .map_err(|e| e.to_string())?;
    let mut rows = 0;
    for path in files {
        let mut reader =
            csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let header = reader
            .headers()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .clone();
        let positions = source
            .columns
            .iter()
            .map(|c| {
                header
                    .iter()
                    .position(|h| h.trim_start_matches('\u{feff}') == c.name)
                    .ok_or_else(|| format!("{}: no column `{}`", path.display(), c.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for record in reader.records() {
            let record = record.map_err(|e| format!("{}: {e}", path.display()))?;
            let line = record.position().map_or(0, |p| p.line());
            let mut fields = Vec::with_capacity(positions.len());
            for (column, &pos) in source.columns.iter().zip(&positions) {
                let text = record.get(pos).unwrap_or("");
                if text.is_empty() {
                    if !column.nullable {
                        return Err(format!(
                            "{}:{line}: column `{}` is empty but not nullable",
                            path.display(),
                            column.name
                        ));
                    }
                    fields.push(String::new());
                    continue;
                }
                let value = cell(&column.ty, text, style).map_err(|e| {
                    format!(
                        "{}:{line}: column `{}`: {text:?} {e}",
                        path.display(),
                        column.name
                    )
                })?;
                fields.push(value);
            }
            writer.write_record(&fields).map_err(|e| e.to_string())?;
            rows += 1;
        }
    }
    writer.flush().map_err(|e| e.to_string())?;
    Ok(rows)
}

fn cell(ty: &Type, text: &str, style: Style) -> Result<String, String> {
    Ok(match ty {
        Type::String => text.to_string(),
        Type::Int => text
            .parse::<i64>()
            .map_err(|_| "is not an int".to_string())?
            .to_string(),
        Type::Float => {
            let f = text
                .parse::<f64>()
                .map_err(|_| "is not a float".to_string())?;
            if f.is_nan() {
                "NaN".into()
            } else if f.is_infinite() {
                if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
            } else {
                format!("{f:?}")
            }
        }
        Type::Decimal { precision, scale } => {
            parse_decimal(text, *precision as u8, *scale as i8)?;
            text.to_string()
        }
        Type::Bool => {
            if text.eq_ignore_ascii_case("true") {
                "true".into()
            } else if text.eq_ignore_ascii_case("false") {
                "false".into()
            } else {
                return Err("is not a bool".into());
            }
        }
        Type::Date => {
            parse_date(text)?;
            text.to_string()
        }
        Type::Timestamp => timestamp_micros(parse_timestamp(text)?),
        Type::Duration => parse_duration(text)?.to_string(),
        Type::List(inner) => {
            let json: Json =
                serde_json::from_str(text).map_err(|_| "is not a JSON array".to_string())?;
            let Json::Array(items) = json else {
                return Err("is not a JSON array".into());
            };
            let items = items
                .iter()
                .map(|item| match item {
                    Json::Null => Ok(None),
                    Json::String(s) => cell(inner, s, style).map(Some),
                    other => cell(inner, &other.to_string(), style).map(Some),
                })
                .collect::<Result<Vec<_>, _>>()?;
            match style {
                Style::Postgres => {
                    let parts: Vec<String> = items
                        .iter()
                        .map(|i| match i {
                            None => "NULL".to_string(),
                            Some(s) => {
                                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
                            }
                        })
                        .collect();
                    format!("{{{}}}", parts.join(","))
                }
                Style::DuckDb => {
                    let parts: Vec<Json> = items
                        .into_iter()
                        .map(|i| i.map_or(Json::Null, |s| json_scalar(inner, s)))
                        .collect();
                    Json::Array(parts).to_string()
                }
            }
        }
        Type::Null | Type::Error => return Err(format!("has no value of type {ty}")),
    })
}

/// A list element for DuckDB's JSON-to-list cast: numbers and bools as JSON scalars.
fn json_scalar(ty: &Type, text: String) -> Json {
    match ty {
        Type::Int | Type::Float | Type::Decimal { .. } | Type::Bool | Type::Duration => {
            serde_json::from_str(&text).unwrap_or(Json::String(text))
        }
        _ => Json::String(text),
    }
}
