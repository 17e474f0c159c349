//! Reading a source's data files (CSV, JSON-lines, Parquet) into Arrow record batches of exactly
//! the source's declared schema.
//!
//! Every value is parsed strictly against its column's type. A file with rows that do not fit —
//! a value of the wrong type, a null in a non-null column, a missing field — is refused as a whole
//! with the file, the line and the column of the first bad rows and the number of bad rows:
//! nothing is dropped or turned into a null on the way.
//!
//! Text formats (CSV fields, JSON strings) follow the data conventions of the language: an empty
//! CSV field is null; timestamps `2024-11-03 14:22:05[.ffffff]` (or a bare date, meaning
//! midnight); dates `1990-05-17`; bools `true` / `false`; durations as duration literals
//! (`95s`, `500ms`, `2w`, loaded as milliseconds, see [`crate::schema`]); lists as a JSON array in
//! one field. In JSON-lines a duration may also be a number of milliseconds; in Parquet an Arrow
//! duration or an integer of milliseconds.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cdp_compiler::config::{DataFormat, SourceBinding};
use cdp_compiler::ir;
use cdp_compiler::types::Type;
use chrono::{NaiveDate, NaiveDateTime};
use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    ListArray, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::{can_cast_types, cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, FieldRef, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::FormatOptions;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value as Json;

use crate::error::{one_line, BadValue, Error, Result};
use crate::schema::source_schema;

/// Rows per record batch.
pub const BATCH_ROWS: usize = 8192;

/// How many bad rows a refusal shows.
const MAX_EXAMPLES: usize = 10;

/// The files holding one source's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFiles {
    pub format: DataFormat,
    /// In path order.
    pub paths: Vec<PathBuf>,
}

impl SourceFiles {
    pub fn new(format: DataFormat, paths: Vec<PathBuf>) -> SourceFiles {
        SourceFiles { format, paths }
    }

    /// The files a `cdp.toml` binding names, relative to the project directory `root`; a glob
    /// must match at least one file and a plain path must exist.
    pub fn from_binding(root: &Path, source: &str, binding: &SourceBinding) -> Result<SourceFiles> {
        let Some(path) = &binding.path else {
            return Err(Error::Config(format!(
                "source `{source}` has no `path` in cdp.toml: the embedded engine reads files"
            )));
        };
        let Some(format) = binding.data_format() else {
            return Err(Error::Config(format!(
                "cannot tell the format of source `{source}` from `{path}`: add `format = \"csv\"`, \"parquet\" or \"jsonl\""
            )));
        };
        let full = root.join(path);
        let pattern = full.to_string_lossy().into_owned();
        let mut paths = Vec::new();
        if pattern.contains(['*', '?', '[']) {
            let entries = glob::glob(&pattern)
                .map_err(|e| Error::Config(format!("source `{source}`: bad glob `{path}`: {e}")))?;
            for entry in entries {
                let p = entry.map_err(|e| Error::File {
                    path: e.path().to_path_buf(),
                    message: e.error().to_string(),
                })?;
                if p.is_file() {
                    paths.push(p);
                }
            }
            if paths.is_empty() {
                return Err(Error::Config(format!(
                    "source `{source}`: no file matches `{path}` (in {})",
                    root.display()
                )));
            }
            paths.sort();
        } else {
            if !full.is_file() {
                return Err(Error::File {
                    path: full,
                    message: format!("data file of source `{source}` does not exist"),
                });
            }
            paths.push(full);
        }
        Ok(SourceFiles { format, paths })
    }
}

/// Reads every file of a source into batches of the source's schema, files in parallel; any bad
/// row refuses the source.
pub fn read_source(source: &ir::Source, files: &SourceFiles) -> Result<Vec<RecordBatch>> {
    Ok(read_source_with(source, files, BadRows::Refuse)?.0)
}

/// Reads every file of a source, files in parallel, handling bad rows as `mode` says; returns
/// the batches and the rows kept aside (in file order).
pub fn read_source_with(
    source: &ir::Source,
    files: &SourceFiles,
    mode: BadRows,
) -> Result<(Vec<RecordBatch>, Vec<Reject>)> {
    let schema = source_schema(source)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.paths.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<Read>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = files.paths.get(i) else {
                    break;
                };
                let r = read_file_with(source, &schema, files.format, path, mode);
                if let Ok(mut all) = results.lock() {
                    all.push((i, r));
                }
            });
        }
    });
    let mut results = results
        .into_inner()
        .map_err(|_| Error::Internal("a file reader thread panicked".into()))?;
    if results.len() != files.paths.len() {
        return Err(Error::Internal("a file reader thread panicked".into()));
    }
    results.sort_by_key(|(i, _)| *i);
    let mut batches = Vec::new();
    let mut rejects = Vec::new();
    for (_, r) in results {
        let (b, k) = r?;
        batches.extend(b);
        rejects.extend(k);
    }
    Ok((batches, rejects))
}

/// Reads one file of a source; any bad row refuses it.
pub fn read_file(
    source: &ir::Source,
    schema: &SchemaRef,
    format: DataFormat,
    path: &Path,
) -> Result<Vec<RecordBatch>> {
    Ok(read_file_with(source, schema, format, path, BadRows::Refuse)?.0)
}

/// Reads one file of a source, handling bad rows as `mode` says.
pub fn read_file_with(
    source: &ir::Source,
    schema: &SchemaRef,
    format: DataFormat,
    path: &Path,
    mode: BadRows,
) -> Result<Read> {
    match format {
        DataFormat::Csv => read_csv(source, schema, path, mode),
        DataFormat::Jsonl => read_jsonl(source, schema, path, mode),
        DataFormat::Parquet => read_parquet(source, schema, path, mode),
    }
}

fn file_error(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A row that did not fit its source's declared columns and was kept aside.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reject {
    pub file: String,
    /// The text line (CSV, JSON lines: counting the header), or the row number (Parquet).
    pub line: u64,
    /// The column whose value is wrong, or `(row)` when the row itself is.
    pub column: String,
    pub reason: String,
    /// The row as the file holds it (CSV, JSON lines; at most 4 KiB), or the bad value.
    pub row: String,
}

/// How bad rows are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRows {
    /// Any bad row refuses the whole source ([`Error::BadRows`], with examples).
    Refuse,
    /// Good rows load; bad rows are returned as [`Reject`]s.
    KeepAside,
}

/// Collects the bad rows of one file while it is read.
struct Rejects {
    examples: Vec<BadValue>,
    count: u64,
    mode: BadRows,
    path: String,
    kept: Vec<Reject>,
}

impl Rejects {
    fn new(mode: BadRows, path: &Path) -> Rejects {
        Rejects {
            examples: Vec::new(),
            count: 0,
            mode,
            path: path.display().to_string(),
            kept: Vec::new(),
        }
    }

    /// Whether good rows are still loaded: always when bad rows are kept aside; until the first
    /// bad row when they refuse the source (it will not load).
    fn loading(&self) -> bool {
        self.mode == BadRows::KeepAside || self.count == 0
    }

    fn reject_row(&mut self, line: u64, column: &str, value: &str, problem: String, row: &str) {
        if self.mode == BadRows::KeepAside {
            let mut row = row.to_string();
            if row.len() > 4096 {
                let mut cut = 4096;
                while !row.is_char_boundary(cut) {
                    cut -= 1;
                }
                row.truncate(cut);
            }
            self.kept.push(Reject {
                file: self.path.clone(),
                line,
                column: column.to_string(),
                reason: problem.clone(),
                row,
            });
        }
        self.reject(line, column, value, problem);
    }

    fn reject(&mut self, line: u64, column: &str, value: &str, problem: String) {
        self.count += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(BadValue {
                line,
                column: column.to_string(),
                value: one_line(value, 80),
                problem,
            });
        }
    }

    fn into_result(
        self,
        source: &ir::Source,
        path: &Path,
        rows_not_lines: bool,
    ) -> Result<Vec<Reject>, Error> {
        if self.count == 0 || self.mode == BadRows::KeepAside {
            return Ok(self.kept);
        }
        Err(Error::BadRows {
            source: source.meta.name.clone(),
            path: path.to_path_buf(),
            examples: self.examples,
            count: self.count,
            rows_not_lines,
        })
    }
}

/// Builds the columns of one source from parsed rows, `BATCH_ROWS` at a time.
struct BatchBuilder {
    schema: SchemaRef,
    columns: Vec<ColumnBuilder>,
    rows: usize,
    done: Vec<RecordBatch>,
}

impl BatchBuilder {
    fn new(source: &ir::Source, schema: &SchemaRef) -> BatchBuilder {
        BatchBuilder {
            schema: schema.clone(),
            columns: source
                .columns
                .iter()
                .map(|c| ColumnBuilder::new(&c.ty, c.nullable))
                .collect(),
            rows: 0,
            done: Vec::new(),
        }
    }

    fn row_done(&mut self) -> Result<()> {
        self.rows += 1;
        if self.rows == BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|c| c.finish()).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| Error::Internal(format!("building a batch: {e}")))?;
        self.done.push(batch);
        self.rows = 0;
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<RecordBatch>> {
        self.flush()?;
        Ok(self.done)
    }
}

// ------------------------------------------------------------------------------ CSV

type Read = (Vec<RecordBatch>, Vec<Reject>);

fn read_csv(source: &ir::Source, schema: &SchemaRef, path: &Path, mode: BadRows) -> Result<Read> {
    let file = File::open(path).map_err(|e| file_error(path, format!("cannot open: {e}")))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(BufReader::with_capacity(1 << 20, file));
    let header = reader
        .headers()
        .map_err(|e| file_error(path, format!("cannot read the header row: {e}")))?
        .clone();
    let names: Vec<&str> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i == 0 {
                h.trim_start_matches('\u{feff}')
            } else {
                h
            }
        })
        .collect();
    let mut positions = Vec::with_capacity(source.columns.len());
    for column in &source.columns {
        match names.iter().position(|h| *h == column.name) {
            Some(i) => positions.push(i),
            None => {
                return Err(file_error(
                    path,
                    format!(
                        "the header row has no column `{}` of source `{}` (it has: {})",
                        column.name,
                        source.meta.name,
                        names.join(", ")
                    ),
                ))
            }
        }
    }
    let width = names.len();
    let mut out = BatchBuilder::new(source, schema);
    let mut rejects = Rejects::new(mode, path);
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                let message = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".to_string(),
                    _ => e.to_string(),
                };
                return Err(file_error(path, format!("line {line}: {message}")));
            }
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let raw = || {
            let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
            let _ = w.write_record(&record);
            String::from_utf8_lossy(&w.into_inner().unwrap_or_default())
                .trim_end()
                .to_string()
        };
        if record.len() != width {
            let row = raw();
            rejects.reject_row(
                line,
                "(row)",
                record.as_slice(),
                format!("has {} fields, the header has {width}", record.len()),
                &row,
            );
            continue;
        }
        let cell = |pos: usize| {
            let text = &record[pos];
            if text.is_empty() {
                None
            } else {
                Some(text)
            }
        };
        // Every value is checked before any is added, so a bad row adds nothing.
        let problem = source
            .columns
            .iter()
            .zip(out.columns.iter_mut())
            .zip(&positions)
            .find_map(|((column, builder), &pos)| {
                builder
                    .push_text(cell(pos), false)
                    .err()
                    .map(|p| (column, pos, p))
            });
        if let Some((column, pos, problem)) = problem {
            let row = raw();
            rejects.reject_row(line, &column.name, &record[pos], problem, &row);
            continue;
        }
        if rejects.loading() {
            for (builder, &pos) in out.columns.iter_mut().zip(&positions) {
                builder
                    .push_text(cell(pos), true)
                    .map_err(|e| Error::Internal(format!("a checked value failed: {e}")))?;
            }
            out.row_done()?;
        }
    }
    let kept = rejects.into_result(source, path, false)?;
    Ok((out.finish()?, kept))
}

// ------------------------------------------------------------------------------ JSON-lines

fn read_jsonl(source: &ir::Source, schema: &SchemaRef, path: &Path, mode: BadRows) -> Result<Read> {
    let file = File::open(path).map_err(|e| file_error(path, format!("cannot open: {e}")))?;
    let reader = BufReader::with_capacity(1 << 20, file);
    let mut out = BatchBuilder::new(source, schema);
    let mut rejects = Rejects::new(mode, path);
    for (i, line) in reader.lines().enumerate() {
        let line_no = i as u64 + 1;
        let text =
            line.map_err(|e| file_error(path, format!("line {line_no}: cannot read: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        let object = match serde_json::from_str::<Json>(&text) {
            Ok(Json::Object(map)) => map,
            Ok(_) => {
                rejects.reject_row(
                    line_no,
                    "(row)",
                    &text,
                    "is not a JSON object".into(),
                    &text,
                );
                continue;
            }
            Err(e) => {
                rejects.reject_row(line_no, "(row)", &text, format!("is not JSON: {e}"), &text);
                continue;
            }
        };
        let value = |name: &str| object.get(name).unwrap_or(&Json::Null);
        // Every value is checked before any is added, so a bad row adds nothing.
        let problem =
            source
                .columns
                .iter()
                .zip(out.columns.iter_mut())
                .find_map(|(column, builder)| {
                    builder
                        .push_json(value(&column.name), false)
                        .err()
                        .map(|p| (column, p))
                });
        if let Some((column, problem)) = problem {
            let shown = value(&column.name).to_string();
            rejects.reject_row(line_no, &column.name, &shown, problem, &text);
            continue;
        }
        if rejects.loading() {
            for (column, builder) in source.columns.iter().zip(out.columns.iter_mut()) {
                builder
                    .push_json(value(&column.name), true)
                    .map_err(|e| Error::Internal(format!("a checked value failed: {e}")))?;
            }
            out.row_done()?;
        }
    }
    let kept = rejects.into_result(source, path, false)?;
    Ok((out.finish()?, kept))
}

// ------------------------------------------------------------------------------ Parquet

fn read_parquet(
    source: &ir::Source,
    schema: &SchemaRef,
    path: &Path,
    mode: BadRows,
) -> Result<Read> {
    let file = File::open(path).map_err(|e| file_error(path, format!("cannot open: {e}")))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| file_error(path, format!("not a readable Parquet file: {e}")))?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| file_error(path, format!("not a readable Parquet file: {e}")))?;
    let mut rejects = Rejects::new(mode, path);
    let mut out = Vec::new();
    let mut rows_before = 0u64;
    for batch in reader {
        let batch = batch
            .map_err(|e| file_error(path, format!("after row {rows_before}: cannot read: {e}")))?;
        let mut arrays = Vec::with_capacity(source.columns.len());
        let mut bad = vec![false; batch.num_rows()];
        for (column, field) in source.columns.iter().zip(schema.fields()) {
            let Some(array) = batch.column_by_name(&column.name) else {
                return Err(file_error(
                    path,
                    format!(
                        "has no column `{}` of source `{}` (it has: {})",
                        column.name,
                        source.meta.name,
                        batch
                            .schema()
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            let array = if column.ty == Type::Duration {
                duration_ms(array)
                    .map_err(|e| file_error(path, format!("column `{}`: {e}", column.name)))?
            } else if array.data_type() == field.data_type() {
                array.clone()
            } else if can_cast_types(array.data_type(), field.data_type()) {
                let strict = CastOptions {
                    safe: false,
                    format_options: FormatOptions::default(),
                };
                cast_with_options(array, field.data_type(), &strict).map_err(|e| {
                    file_error(
                        path,
                        format!(
                            "column `{}` ({}) does not convert to {} (declared {}): {e}",
                            column.name,
                            array.data_type(),
                            field.data_type(),
                            column.ty
                        ),
                    )
                })?
            } else {
                return Err(file_error(
                    path,
                    format!(
                        "column `{}` holds {}, which cannot be read as the declared {}",
                        column.name,
                        array.data_type(),
                        column.ty
                    ),
                ));
            };
            if !column.nullable && array.null_count() > 0 {
                for i in (0..array.len()).filter(|&i| array.is_null(i)) {
                    if !bad[i] {
                        bad[i] = true;
                        rejects.reject_row(
                            rows_before + i as u64 + 1,
                            &column.name,
                            "null",
                            not_nullable_problem(&column.ty),
                            "null",
                        );
                    }
                }
            }
            arrays.push(array);
        }
        rows_before += batch.num_rows() as u64;
        if rejects.loading() {
            let whole = RecordBatch::try_new(schema.clone(), arrays)
                .map_err(|e| Error::Internal(format!("building a batch: {e}")))?;
            out.push(if bad.contains(&true) {
                let keep: datafusion::arrow::array::BooleanArray =
                    bad.iter().map(|b| Some(!b)).collect();
                datafusion::arrow::compute::filter_record_batch(&whole, &keep)
                    .map_err(|e| Error::Internal(format!("leaving bad rows out: {e}")))?
            } else {
                whole
            });
        }
    }
    let kept = rejects.into_result(source, path, true)?;
    Ok((out, kept))
}

/// A Parquet duration column (an Arrow duration, or integers already in milliseconds) as
/// milliseconds; refuses sub-millisecond values rather than cutting them.
fn duration_ms(array: &ArrayRef) -> Result<ArrayRef, String> {
    use datafusion::arrow::array::{Array, AsArray, Int64Array};
    use datafusion::arrow::datatypes::{Int64Type, TimeUnit};
    let per_ms: i64 = match array.data_type() {
        DataType::Duration(TimeUnit::Second) => -1000,
        DataType::Duration(TimeUnit::Millisecond) => 1,
        DataType::Duration(TimeUnit::Microsecond) => 1_000,
        DataType::Duration(TimeUnit::Nanosecond) => 1_000_000,
        t if t.is_integer() => 1,
        t => return Err(format!("holds {t}, which cannot be read as a duration")),
    };
    let raw =
        datafusion::arrow::compute::cast(array, &DataType::Int64).map_err(|e| e.to_string())?;
    let raw = raw.as_primitive::<Int64Type>();
    let mut out = Vec::with_capacity(raw.len());
    for i in 0..raw.len() {
        if raw.is_null(i) {
            out.push(None);
            continue;
        }
        let v = raw.value(i);
        let ms = if per_ms < 0 {
            v.checked_mul(-per_ms)
        } else if v % per_ms == 0 {
            Some(v / per_ms)
        } else {
            return Err(format!(
                "row {}: {v} is not a whole number of milliseconds",
                i + 1
            ));
        };
        out.push(Some(
            ms.ok_or_else(|| format!("row {}: {v} is out of range", i + 1))?,
        ));
    }
    Ok(Arc::new(Int64Array::from(out)))
}

fn not_nullable_problem(ty: &Type) -> String {
    format!("is null, but the column is not nullable (declare it `{ty}?` if nulls are expected)")
}

// ------------------------------------------------------------------------------ values

/// Appends parsed values of one column. `append = false` only checks a value (once a file is
/// known to be refused, its remaining rows are still checked to count them).
enum ColumnBuilder {
    String(StringBuilder, bool),
    Int(Int64Builder, bool),
    Float(Float64Builder, bool),
    Decimal {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
        nullable: bool,
    },
    Bool(BooleanBuilder, bool),
    Date(Date32Builder, bool),
    Timestamp(TimestampMicrosecondBuilder, bool),
    /// Milliseconds.
    Duration(Int64Builder, bool),
    List {
        field: FieldRef,
        element: Box<ColumnBuilder>,
        element_type: Type,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        nullable: bool,
    },
}

impl ColumnBuilder {
    fn new(ty: &Type, nullable: bool) -> ColumnBuilder {
        match ty {
            Type::String => ColumnBuilder::String(StringBuilder::new(), nullable),
            Type::Int => ColumnBuilder::Int(Int64Builder::new(), nullable),
            Type::Float => ColumnBuilder::Float(Float64Builder::new(), nullable),
            Type::Decimal { precision, scale } => {
                let (precision, scale) = (*precision as u8, *scale as i8);
                ColumnBuilder::Decimal {
                    builder: Decimal128Builder::new()
                        .with_data_type(DataType::Decimal128(precision, scale)),
                    precision,
                    scale,
                    nullable,
                }
            }
            Type::Bool => ColumnBuilder::Bool(BooleanBuilder::new(), nullable),
            Type::Date => ColumnBuilder::Date(Date32Builder::new(), nullable),
            Type::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::new(), nullable)
            }
            Type::Duration => ColumnBuilder::Duration(Int64Builder::new(), nullable),
            Type::List(inner) => {
                let element = ColumnBuilder::new(inner, true);
                let element_arrow = crate::schema::arrow_type(inner).unwrap_or(DataType::Null);
                ColumnBuilder::List {
                    field: Arc::new(datafusion::arrow::datatypes::Field::new_list_field(
                        element_arrow,
                        true,
                    )),
                    element: Box::new(element),
                    element_type: (**inner).clone(),
                    offsets: vec![0],
                    nulls: NullBufferBuilder::new(0),
                    nullable,
                }
            }
            // The schema refuses these before any builder is made.
            Type::Null | Type::Error => ColumnBuilder::String(StringBuilder::new(), true),
        }
    }

    fn nullable(&self) -> bool {
        match self {
            ColumnBuilder::String(_, n)
            | ColumnBuilder::Int(_, n)
            | ColumnBuilder::Float(_, n)
            | ColumnBuilder::Bool(_, n)
            | ColumnBuilder::Date(_, n)
            | ColumnBuilder::Timestamp(_, n)
            | ColumnBuilder::Duration(_, n) => *n,
            ColumnBuilder::Decimal { nullable, .. } | ColumnBuilder::List { nullable, .. } => {
                *nullable
            }
        }
    }

    fn type_name(&self) -> String {
        match self {
            ColumnBuilder::String(..) => "string".into(),
            ColumnBuilder::Int(..) => "int".into(),
            ColumnBuilder::Float(..) => "float".into(),
            ColumnBuilder::Decimal {
                precision, scale, ..
            } => format!("decimal({precision}, {scale})"),
            ColumnBuilder::Bool(..) => "bool".into(),
            ColumnBuilder::Date(..) => "date".into(),
            ColumnBuilder::Timestamp(..) => "timestamp".into(),
            ColumnBuilder::Duration(..) => "duration".into(),
            ColumnBuilder::List { element_type, .. } => format!("list<{element_type}>"),
        }
    }

    fn push_null(&mut self, append: bool) -> Result<(), String> {
        if !self.nullable() {
            return Err(format!(
                "is empty, but the column is not nullable (declare it `{}?` if nulls are expected)",
                self.type_name()
            ));
        }
        if append {
            match self {
                ColumnBuilder::String(b, _) => b.append_null(),
                ColumnBuilder::Int(b, _) => b.append_null(),
                ColumnBuilder::Float(b, _) => b.append_null(),
                ColumnBuilder::Decimal { builder, .. } => builder.append_null(),
                ColumnBuilder::Bool(b, _) => b.append_null(),
                ColumnBuilder::Date(b, _) => b.append_null(),
                ColumnBuilder::Timestamp(b, _) => b.append_null(),
                ColumnBuilder::Duration(b, _) => b.append_null(),
                ColumnBuilder::List { offsets, nulls, .. } => {
                    let last = offsets.last().copied().unwrap_or(0);
                    offsets.push(last);
                    nulls.append_null();
                }
            }
        }
        Ok(())
    }

    /// Parses a text field (a CSV field, or a JSON string) as this column's type.
    fn push_text(&mut self, text: Option<&str>, append: bool) -> Result<(), String> {
        let Some(text) = text else {
            return self.push_null(append);
        };
        match self {
            ColumnBuilder::String(b, _) => {
                if append {
                    b.append_value(text)
                }
            }
            ColumnBuilder::Int(b, _) => {
                let v = text
                    .parse::<i64>()
                    .map_err(|_| "is not an int (a whole number like 42)".to_string())?;
                if append {
                    b.append_value(v)
                }
            }
            ColumnBuilder::Float(b, _) => {
                let v = text
                    .parse::<f64>()
                    .map_err(|_| "is not a float (a number like 0.75)".to_string())?;
                if append {
                    b.append_value(v)
                }
            }
            ColumnBuilder::Decimal {
                builder,
                precision,
                scale,
                ..
            } => {
                let v = parse_decimal(text, *precision, *scale)?;
                if append {
                    builder.append_value(v)
                }
            }
            ColumnBuilder::Bool(b, _) => {
                let v = if text.eq_ignore_ascii_case("true") {
                    true
                } else if text.eq_ignore_ascii_case("false") {
                    false
                } else {
                    return Err("is not a bool (true or false)".into());
                };
                if append {
                    b.append_value(v)
                }
            }
            ColumnBuilder::Date(b, _) => {
                let v = parse_date(text)?;
                if append {
                    b.append_value(v)
                }
            }
            ColumnBuilder::Timestamp(b, _) => {
                let v = parse_timestamp(text)?;
                if append {
                    b.append_value(v)
                }
            }
            ColumnBuilder::Duration(b, _) => {
                let v = parse_duration(text)?;
                if append {
                    b.append_value(v)
                }
            }
            ColumnBuilder::List { .. } => {
                let json: Json = serde_json::from_str(text).map_err(|_| {
                    format!(
                        "is not a {} (a JSON array like [\"a\", \"b\"])",
                        self.type_name()
                    )
                })?;
                return self.push_json(&json, append);
            }
        }
        Ok(())
    }

    /// Takes a JSON value (a JSON-lines field, or a list element) as this column's type.
    fn push_json(&mut self, value: &Json, append: bool) -> Result<(), String> {
        let type_name = self.type_name();
        let wrong = || format!("is not a {type_name}");
        match (self, value) {
            (this, Json::Null) => this.push_null(append),
            (
                ColumnBuilder::List {
                    element,
                    offsets,
                    nulls,
                    ..
                },
                Json::Array(items),
            ) => {
                for (i, item) in items.iter().enumerate() {
                    element
                        .push_json(item, append)
                        .map_err(|e| format!("element {}: {e}", i + 1))?;
                }
                if append {
                    let last = offsets.last().copied().unwrap_or(0);
                    let len =
                        i32::try_from(items.len()).map_err(|_| "list too long".to_string())?;
                    offsets.push(last + len);
                    nulls.append_non_null();
                }
                Ok(())
            }
            (ColumnBuilder::List { .. }, _) => Err(wrong()),
            (ColumnBuilder::Int(b, _) | ColumnBuilder::Duration(b, _), Json::Number(n)) => {
                let v = n.as_i64().ok_or_else(wrong)?;
                if append {
                    b.append_value(v)
                }
                Ok(())
            }
            (ColumnBuilder::Float(b, _), Json::Number(n)) => {
                let v = n.as_f64().ok_or_else(wrong)?;
                if append {
                    b.append_value(v)
                }
                Ok(())
            }
            (this @ ColumnBuilder::Decimal { .. }, Json::Number(n)) => {
                this.push_text(Some(&n.to_string()), append)
            }
            (ColumnBuilder::Bool(b, _), Json::Bool(v)) => {
                if append {
                    b.append_value(*v)
                }
                Ok(())
            }
            // Strings carry every text-encoded type (timestamps, dates, durations, decimals).
            (this, Json::String(s)) => match this {
                ColumnBuilder::Int(..) | ColumnBuilder::Float(..) | ColumnBuilder::Bool(..) => {
                    Err(format!("{} (found a string)", wrong()))
                }
                _ => this.push_text(Some(s), append),
            },
            _ => Err(wrong()),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::String(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Int(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Float(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Decimal { builder, .. } => Arc::new(builder.finish()),
            ColumnBuilder::Bool(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Date(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b, _) => Arc::new(b.finish()),
            ColumnBuilder::Duration(b, _) => Arc::new(b.finish()),
            ColumnBuilder::List {
                field,
                element,
                offsets,
                nulls,
                ..
            } => {
                let values = element.finish();
                let offsets =
                    OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                Arc::new(ListArray::new(
                    field.clone(),
                    offsets,
                    values,
                    nulls.finish(),
                ))
            }
        }
    }
}

/// `-12.50` as the unscaled integer of a `decimal(precision, scale)`; refuses values that would
/// lose digits or do not fit, rather than rounding them.
pub fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let bad = || format!("is not a decimal({precision}, {scale}) (a number like 12.50)");
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let scale = scale.max(0) as usize;
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > scale {
        return Err(format!(
            "has {} digits after the point; decimal({precision}, {scale}) keeps {scale}",
            frac_trimmed.len()
        ));
    }
    let int_trimmed = int_part.trim_start_matches('0');
    if int_trimmed.len() > precision as usize - scale {
        return Err(format!("is too large for decimal({precision}, {scale})"));
    }
    let mut value: i128 = 0;
    for b in int_trimmed.bytes() {
        value = value * 10 + i128::from(b - b'0');
    }
    for i in 0..scale {
        let d = frac_trimmed.as_bytes().get(i).map_or(0, |b| b - b'0');
        value = value * 10 + i128::from(d);
    }
    Ok(if negative { -value } else { value })
}

/// `1990-05-17` as days since 1970-01-01.
pub fn parse_date(text: &str) -> Result<i32, String> {
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| "is not a date (like 1990-05-17)".to_string())?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    i32::try_from((date - epoch).num_days()).map_err(|_| "is out of the date range".to_string())
}

/// `2024-11-03 14:22:05[.ffffff]` (or with a `T`, or a bare date) as microseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let bad = || "is not a timestamp (like 2024-11-03 14:22:05)".to_string();
    let parsed = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .map_err(|_| bad())?;
    let utc = parsed.and_utc();
    if utc.timestamp_subsec_nanos() % 1000 != 0 {
        return Err("is more precise than microseconds".into());
    }
    Ok(utc.timestamp_micros())
}

/// A duration literal (`500ms`, `95s`, `15m`, `12h`, `30d`, `2w`) as milliseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let bad = || "is not a duration (like 95s, 500ms, 15m, 12h, 30d or 2w)".to_string();
    let split = text
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map(|(i, _)| i)
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let ms_per_unit: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per_unit)
        .ok_or_else(|| "is out of the duration range".to_string())
}

#[cfg(test)]
mod tests;
