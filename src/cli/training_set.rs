//! `cdp training-set`: point-in-time correct features for each (key, timestamp) row of a spine
//! file — the values every attribute, feature and segment had at that row's own time, never
//! anything later — written as Parquet or CSV.
//!
//! The spine is a CSV, Parquet or JSON-lines file with a column named after one of the entity's
//! identity keys (`customer_id`, `email`, …) and a timestamp column `ts`; other columns are
//! ignored. Rows come out sorted by key, then `ts`. The SQL is the compiler's training-set program (`cdp_compiler::sql::training_set`) on
//! the embedded engine, with identity resolved natively as `cdp run` does.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cdp_compiler::config::DataFormat;
use cdp_compiler::ir;
use cdp_compiler::sql::{self, Dialect};
use cdp_compiler::types::Type;
use cdp_runtime::workflow::{self, Options as WorkflowOptions};
use cdp_runtime::{BatchEngine, SourceFiles};
use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::compile::{as_of_micros, lowered};
use super::{Failure, Outcome};

pub struct Options<'a> {
    pub spine: &'a Path,
    pub entity: Option<&'a str>,
    pub as_of: Option<&'a str>,
    /// `.parquet` or `.csv`; none: CSV on stdout.
    pub out: Option<&'a Path>,
}

pub fn run(dir: &Path, options: &Options, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let started = Instant::now();
    let (project, config_as_of) = lowered(dir, err)?;
    let config =
        &super::project_config(dir, "training-set", "to know where each source's data is")?;
    let entity = pick_entity(&project, options.entity)?;
    let as_of = as_of_micros(options.as_of.or(config_as_of.as_deref()))?;

    // The spine: which key it names, read with the declared types.
    let (format, header) = spine_header(options.spine)?;
    let key = entity
        .keys
        .iter()
        .find(|k| header.iter().any(|h| h == &k.name))
        .ok_or_else(|| {
            let names: Vec<&str> = entity.keys.iter().map(|k| k.name.as_str()).collect();
            Failure::User(format!(
                "{}: the spine needs a column named after a key of `{}` ({}) and a column `ts`; it has {}",
                options.spine.display(),
                entity.meta.name,
                names.join(", "),
                header.join(", ")
            ))
        })?;
    if !header.iter().any(|h| h == "ts") {
        return Err(Failure::User(format!(
            "{}: the spine has no timestamp column `ts` (columns: {})",
            options.spine.display(),
            header.join(", ")
        )));
    }
    let spine_table = format!("{}_spine", entity.meta.name);
    let spine = spine_source(&spine_table, &key.name);

    let program = sql::training_set(
        &project,
        Dialect::DataFusion,
        as_of,
        &entity.meta.name,
        Some(&key.name),
    )
    .map_err(Failure::User)?;
    let engine = BatchEngine::new().map_err(super::run::runtime_failure)?;
    engine
        .register_project_sources(dir, &project, config)
        .map_err(super::run::runtime_failure)?;
    let rows = engine
        .register_source(
            &spine,
            &SourceFiles::new(format, vec![options.spine.to_path_buf()]),
        )
        .map_err(super::run::runtime_failure)?;
    // A training set resolves identity from scratch: no previous id map.
    let empty_map = Arc::new(Schema::new(
        ["key_name", "key_value", "canonical_id"]
            .map(|n| Field::new(n, DataType::Utf8, true))
            .to_vec(),
    ));
    let empty = RecordBatch::try_new(
        empty_map.clone(),
        (0..3)
            .map(|_| Arc::new(StringArray::from(Vec::<String>::new())) as _)
            .collect(),
    )
    .map_err(|e| Failure::Internal(e.to_string()))?;
    engine
        .register_batches(
            &format!("{}_id_map", entity.meta.name),
            empty_map,
            vec![empty],
        )
        .map_err(super::run::runtime_failure)?;
    let natives: Vec<_> = cdp_runtime::native::identity_steps(&project, as_of)
        .into_iter()
        .filter(|n| n.name.starts_with(&format!("{}_", entity.meta.name)))
        .collect();
    workflow::run_with(
        &engine,
        &program,
        &natives,
        &[],
        &WorkflowOptions::default(),
        &mut (),
    )
    .map_err(super::run::runtime_failure)?;

    let table_name = format!("{}_training_set", entity.meta.name);
    // Rows in (key, ts) order: the SQL leaves the order to the engine.
    let table = engine
        .query(&format!(
            "SELECT * FROM \"{table_name}\" ORDER BY \"{}\", ts",
            key.name
        ))
        .map_err(super::run::runtime_failure)?;
    let written = table.num_rows();
    if written != rows {
        return Err(Failure::Internal(format!(
            "the spine has {rows} rows but the training set {written}"
        )));
    }
    match options.out {
        None => write_csv(out, &table.batches)?,
        Some(path) => {
            let is_parquet = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
            if is_parquet {
                write_parquet(path, &table)?;
            } else {
                let mut bytes = Vec::new();
                write_csv(&mut bytes, &table.batches)?;
                cdp_runtime::store::write_atomic(path, &bytes)
                    .map_err(super::run::runtime_failure)?;
            }
            writeln!(
                err,
                "{written} rows × {} columns as of each spine row (identity as of {}) -> {} in {:.1?}",
                table.schema.fields().len(),
                sql::dialect::format_micros(as_of),
                path.display(),
                started.elapsed()
            )?;
        }
    }
    Ok(())
}

fn pick_entity<'p>(
    project: &'p ir::Project,
    name: Option<&str>,
) -> Result<&'p ir::Entity, Failure> {
    match name {
        Some(name) => project
            .entities
            .iter()
            .find(|e| e.meta.name == name)
            .ok_or_else(|| Failure::User(format!("the project has no entity `{name}`"))),
        None => match project.entities.as_slice() {
            [one] => Ok(one),
            [] => Err(Failure::User("the project has no entity".into())),
            many => Err(Failure::User(format!(
                "the project has {} entities; name one with --entity ({})",
                many.len(),
                many.iter()
                    .map(|e| e.meta.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
    }
}

/// The spine file's format (by extension) and column names.
fn spine_header(path: &Path) -> Result<(DataFormat, Vec<String>), Failure> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let unreadable = |e: &dyn std::fmt::Display| Failure::User(format!("{}: {e}", path.display()));
    match ext.as_str() {
        "csv" => {
            let mut reader = csv::Reader::from_path(path).map_err(|e| unreadable(&e))?;
            let header = reader.headers().map_err(|e| unreadable(&e))?;
            Ok((DataFormat::Csv, header.iter().map(str::to_string).collect()))
        }
        "parquet" => {
            let file = std::fs::File::open(path).map_err(|e| unreadable(&e))?;
            let builder =
                datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                    file,
                )
                .map_err(|e| unreadable(&e))?;
            let names = builder
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            Ok((DataFormat::Parquet, names))
        }
        "jsonl" | "ndjson" | "json" => {
            let text = std::fs::read_to_string(path).map_err(|e| unreadable(&e))?;
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("{}");
            let value: serde_json::Value =
                serde_json::from_str(first).map_err(|e| unreadable(&format!("line 1: {e}")))?;
            let names = value
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            Ok((DataFormat::Jsonl, names))
        }
        _ => Err(Failure::User(format!(
            "{}: a spine is a .csv, .parquet or .jsonl file",
            path.display()
        ))),
    }
}

/// The spine as a source: the key column (text) and `ts`, both required.
fn spine_source(table: &str, key: &str) -> ir::Source {
    let column = |name: &str, ty: Type| ir::Column {
        name: name.to_string(),
        ty,
        nullable: false,
        pii: false,
    };
    ir::Source {
        meta: ir::Meta {
            name: table.to_string(),
            description: None,
            owner: None,
            tags: Vec::new(),
        },
        table: table.to_string(),
        columns: vec![column(key, Type::String), column("ts", Type::Timestamp)],
        key: None,
        time: None,
    }
}

fn write_csv(out: &mut dyn Write, batches: &[RecordBatch]) -> Result<(), Failure> {
    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(out);
    for batch in batches {
        writer
            .write(&lists_as_text(batch)?)
            .map_err(|e| Failure::Internal(format!("writing CSV: {e}")))?;
    }
    Ok(())
}

/// CSV holds no lists: list columns become their text, `[a, b]`.
fn lists_as_text(batch: &RecordBatch) -> Result<RecordBatch, Failure> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let failed = |e: datafusion::arrow::error::ArrowError| Failure::Internal(e.to_string());
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if matches!(
            field.data_type(),
            DataType::List(_) | DataType::LargeList(_) | DataType::ListView(_)
        ) {
            let options = FormatOptions::default();
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options).map_err(failed)?;
            let text: StringArray = (0..column.len())
                .map(|i| column.is_valid(i).then(|| formatter.value(i).to_string()))
                .collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text) as _);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(failed)
}

/// Writes a Parquet file next to `path` and renames it into place, so that a reader never sees
/// half a file.
fn write_parquet(path: &Path, table: &cdp_runtime::Table) -> Result<(), Failure> {
    use datafusion::parquet::arrow::ArrowWriter;
    let failed = |e: &dyn std::fmt::Display| Failure::User(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| failed(&e))?;
    let mut writer =
        ArrowWriter::try_new(file, table.schema.clone(), None).map_err(|e| failed(&e))?;
    for batch in &table.batches {
        writer.write(batch).map_err(|e| failed(&e))?;
    }
    writer.close().map_err(|e| failed(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| failed(&e))
}
