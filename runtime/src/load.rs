//! Reading a source's data files (CSV, JSON-lines, Parquet) into Arrow record batches of exactly
//! the source's declared schema.
//!
//! Every value is parsed strictly against its column's type, and every value of a row is checked
//! before any is added. A row that does not fit — a field too many or too few, a value of the
//! wrong type, an empty value in a non-nullable column, a line that is not a JSON object, a
//! Parquet value that does not convert — is never dropped silently nor turned into a null: as
//! [`BadRows`] says, either it is kept aside as a [`Reject`] (its file, line, column, reason and
//! text) while the good rows load, or it refuses the whole source. A file that cannot be read at
//! all (missing, not the format, without a declared column) is an error either way.
//!
//! Text formats (CSV fields, JSON strings) follow the data conventions of the language: an empty
//! CSV field is null; timestamps `2024-11-03 14:22:05[.ffffff]` (or a bare date, meaning
//! midnight); dates `1990-05-17`; bools `true` / `false`; durations as duration literals
//! (`95s`, `500ms`, `2w`, loaded as milliseconds, see [`crate::schema`]); lists as a JSON array in
//! one field. In JSON-lines a duration may also be a number of milliseconds; in Parquet an Arrow
//! duration or an integer of milliseconds.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cdp_compiler::config::{DataFormat, SourceBinding};
use cdp_compiler::ir;
use cdp_compiler::types::Type;
use chrono::{NaiveDate, NaiveDateTime};
use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float64Builder, Int64Builder, ListArray, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::{can_cast_types, cast_with_options, filter, CastOptions};
use datafusion::arrow::datatypes::{DataType, FieldRef, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::errors::ParquetError;
use serde_json::Value as Json;

use crate::error::{one_line, BadValue, Error, Result};
use crate::schema::source_schema;

/// Rows per record batch.
pub const BATCH_ROWS: usize = 8192;

/// How many bad rows a refusal shows.
const MAX_EXAMPLES: usize = 10;

/// How much of a rejected row's text is kept.
const MAX_ROW_BYTES: usize = 4096;

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

/// What becomes of rows that do not fit their source's declared columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRows {
    /// Good rows load; each bad row is returned as a [`Reject`].
    KeepAside,
    /// Any bad row refuses the whole source ([`Error::BadRows`], with examples): for inputs that
    /// have nowhere to report rejects.
    Refuse,
}

/// A row that did not fit its source's declared columns, kept aside.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reject {
    pub file: String,
    /// The 1-based text line the row starts on, counting the header (CSV, JSON lines): the line
    /// an editor shows; the 1-based row number (Parquet).
    pub line: u64,
    /// The column whose value is wrong; `None` when the row itself is (its number of fields, not
    /// JSON, not UTF-8).
    pub column: Option<String>,
    /// What is wrong, quoting the value: `"yesterday" is not a timestamp (like …)`.
    pub reason: String,
    /// The row as the file holds it (CSV, JSON lines), or as a JSON object (Parquet); cut to
    /// 4 KiB.
    pub row: String,
}

/// One source's rows: those that fit, as batches of the declared schema, and those kept aside,
/// both in file order.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub batches: Vec<RecordBatch>,
    pub rejects: Vec<Reject>,
}

impl Loaded {
    /// The number of rows that loaded.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Reads every file of a source into batches of the source's schema, files in parallel; any bad
/// row refuses the source.
pub fn read_source(source: &ir::Source, files: &SourceFiles) -> Result<Vec<RecordBatch>> {
    Ok(read_source_with(source, files, BadRows::Refuse)?.batches)
}

/// Reads every file of a source into batches of the source's schema, files in parallel, bad rows
/// handled as `mode` says.
pub fn read_source_with(source: &ir::Source, files: &SourceFiles, mode: BadRows) -> Result<Loaded> {
    let schema = source_schema(source)?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = cores.min(files.paths.len()).max(1);
    // A source of fewer files than cores gives each file the cores left over.
    let per_file = (cores / threads).max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<Loaded>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = files.paths.get(i) else {
                    break;
                };
                let r = read_file(source, &schema, files.format, path, mode, per_file);
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
    let mut loaded = Loaded::default();
    for (_, r) in results {
        let file = r?;
        loaded.batches.extend(file.batches);
        loaded.rejects.extend(file.rejects);
    }
    Ok(loaded)
}

/// Reads one file; `threads` is how many threads it may use (Parquet decodes row groups in
/// parallel).
fn read_file(
    source: &ir::Source,
    schema: &SchemaRef,
    format: DataFormat,
    path: &Path,
    mode: BadRows,
    threads: usize,
) -> Result<Loaded> {
    match format {
        DataFormat::Csv => read_csv(source, schema, path, mode),
        DataFormat::Jsonl => read_jsonl(source, schema, path, mode),
        DataFormat::Parquet => read_parquet(source, schema, path, mode, threads),
    }
}

fn file_error(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// What the reason of a bad row quotes.
enum Found<'a> {
    /// A text value (a CSV field, a JSON string's contents): quoted.
    Text(&'a str),
    /// A value as it is written (JSON, a Parquet value).
    Shown(String),
    /// Nothing: the value is empty or missing, or the row itself is wrong.
    Nothing,
}

/// Where the text of a bad row is.
enum RowText<'a> {
    /// The row's own text (a JSON line; a Parquet row as JSON).
    Text(&'a str),
    /// The bytes of a CSV record in its file (read when the file is done), and its fields.
    Csv {
        bytes: Range<u64>,
        fields: &'a csv::StringRecord,
    },
    /// The bytes of a CSV record that is not UTF-8 (it has no fields to show).
    Bytes(Range<u64>),
}

/// The bad rows of one file, collected while it is read.
struct BadRowLog {
    mode: BadRows,
    file: String,
    count: u64,
    /// [`BadRows::Refuse`]: the first few, for the error.
    examples: Vec<BadValue>,
    /// [`BadRows::KeepAside`]: every one.
    kept: Vec<Reject>,
    /// CSV: where the text of each kept row is (its index in `kept`, its bytes in the file).
    csv_rows: Vec<(usize, Range<u64>)>,
}

impl BadRowLog {
    fn new(mode: BadRows, path: &Path) -> BadRowLog {
        BadRowLog {
            mode,
            file: path.display().to_string(),
            count: 0,
            examples: Vec::new(),
            kept: Vec::new(),
            csv_rows: Vec::new(),
        }
    }

    /// Whether good rows are still loaded: always when bad rows are kept aside; until the first
    /// bad row when they refuse the source (it will not load, its rows are only counted).
    fn loading(&self) -> bool {
        self.mode == BadRows::KeepAside || self.count == 0
    }

    fn keeping(&self) -> bool {
        self.mode == BadRows::KeepAside
    }

    fn add(
        &mut self,
        line: u64,
        column: Option<&str>,
        found: Found,
        problem: String,
        row: RowText,
    ) {
        self.count += 1;
        match self.mode {
            BadRows::KeepAside => {
                let reason = match found {
                    Found::Text(t) => format!("{:?} {problem}", one_line(t, 80)),
                    Found::Shown(s) => format!("{} {problem}", one_line(&s, 80)),
                    Found::Nothing => problem,
                };
                let text = match row {
                    RowText::Text(t) => cut(t.to_string()),
                    RowText::Csv { bytes, .. } | RowText::Bytes(bytes) => {
                        self.csv_rows.push((self.kept.len(), bytes));
                        String::new()
                    }
                };
                self.kept.push(Reject {
                    file: self.file.clone(),
                    line,
                    column: column.map(str::to_string),
                    reason,
                    row: text,
                });
            }
            BadRows::Refuse if self.examples.len() < MAX_EXAMPLES => {
                let value = match (found, row) {
                    (Found::Text(t), _) | (Found::Nothing, RowText::Text(t)) => t.to_string(),
                    (Found::Shown(s), _) => s,
                    (Found::Nothing, RowText::Csv { fields, .. }) => {
                        fields.iter().collect::<Vec<_>>().join(",")
                    }
                    (Found::Nothing, RowText::Bytes(_)) => String::new(),
                };
                self.examples.push(BadValue {
                    line,
                    column: column.unwrap_or("(row)").to_string(),
                    value: one_line(&value, 80),
                    problem,
                });
            }
            BadRows::Refuse => {}
        }
    }

    /// The rows kept aside, or the refusal of the file.
    fn finish(
        mut self,
        source: &ir::Source,
        path: &Path,
        rows_not_lines: bool,
    ) -> Result<Vec<Reject>> {
        if self.mode == BadRows::Refuse && self.count > 0 {
            return Err(Error::BadRows {
                source: source.meta.name.clone(),
                path: path.to_path_buf(),
                examples: self.examples,
                count: self.count,
                rows_not_lines,
            });
        }
        if !self.csv_rows.is_empty() {
            self.read_csv_rows(path)?;
        }
        Ok(self.kept)
    }

    /// Reads the text of the CSV records kept aside back from their file, exactly as written.
    fn read_csv_rows(&mut self, path: &Path) -> Result<()> {
        let cannot =
            |e: std::io::Error| file_error(path, format!("cannot read rejected rows back: {e}"));
        let mut file = File::open(path).map_err(cannot)?;
        for (i, bytes) in std::mem::take(&mut self.csv_rows) {
            let len = (bytes.end - bytes.start).min(MAX_ROW_BYTES as u64 + 2) as usize;
            let mut text = vec![0; len];
            file.seek(SeekFrom::Start(bytes.start)).map_err(cannot)?;
            file.read_exact(&mut text).map_err(cannot)?;
            // A record's position is where the reader stood before it, so blank lines the reader
            // skipped come first: they are not the row, and the row starts after them.
            let blank = text
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            let reject = &mut self.kept[i];
            reject.line += text[..blank].iter().filter(|&&b| b == b'\n').count() as u64;
            let text = &text[blank..];
            let end = text.len()
                - text
                    .iter()
                    .rev()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
            reject.row = cut(String::from_utf8_lossy(&text[..end]).into_owned());
        }
        Ok(())
    }
}

/// `text` cut to [`MAX_ROW_BYTES`] at a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > MAX_ROW_BYTES {
        let mut at = MAX_ROW_BYTES;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
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

fn read_csv(source: &ir::Source, schema: &SchemaRef, path: &Path, mode: BadRows) -> Result<Loaded> {
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
    let mut log = BadRowLog::new(mode, path);
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => match e.kind() {
                csv::ErrorKind::Utf8 {
                    pos: Some(pos),
                    err,
                } => {
                    let column = names.get(err.field()).copied();
                    let bytes = pos.byte()..reader.position().byte();
                    log.add(
                        pos.line(),
                        column,
                        Found::Nothing,
                        "is not valid UTF-8".into(),
                        RowText::Bytes(bytes),
                    );
                    continue;
                }
                _ => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    return Err(file_error(path, format!("line {line}: {e}")));
                }
            },
        }
        let (line, start) = record.position().map_or((0, 0), |p| (p.line(), p.byte()));
        let row = RowText::Csv {
            bytes: start..reader.position().byte(),
            fields: &record,
        };
        if record.len() != width {
            log.add(
                line,
                None,
                Found::Nothing,
                format!("has {} fields, but the header has {width}", record.len()),
                row,
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
            let found = cell(pos).map_or(Found::Nothing, Found::Text);
            log.add(line, Some(&column.name), found, problem, row);
            continue;
        }
        if log.loading() {
            for (builder, &pos) in out.columns.iter_mut().zip(&positions) {
                builder
                    .push_text(cell(pos), true)
                    .map_err(|e| Error::Internal(format!("a checked value failed: {e}")))?;
            }
            out.row_done()?;
        }
    }
    let rejects = log.finish(source, path, false)?;
    Ok(Loaded {
        batches: out.finish()?,
        rejects,
    })
}

// ------------------------------------------------------------------------------ JSON-lines

fn read_jsonl(
    source: &ir::Source,
    schema: &SchemaRef,
    path: &Path,
    mode: BadRows,
) -> Result<Loaded> {
    let file = File::open(path).map_err(|e| file_error(path, format!("cannot open: {e}")))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut out = BatchBuilder::new(source, schema);
    let mut log = BadRowLog::new(mode, path);
    let mut bytes = Vec::new();
    let mut line_no = 0u64;
    loop {
        bytes.clear();
        let read = reader
            .read_until(b'\n', &mut bytes)
            .map_err(|e| file_error(path, format!("line {}: cannot read: {e}", line_no + 1)))?;
        if read == 0 {
            break;
        }
        line_no += 1;
        while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
            bytes.pop();
        }
        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => text,
            Err(_) => {
                let lossy = String::from_utf8_lossy(&bytes);
                log.add(
                    line_no,
                    None,
                    Found::Nothing,
                    "is not valid UTF-8".into(),
                    RowText::Text(&lossy),
                );
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let object = match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(map)) => map,
            Ok(_) => {
                log.add(
                    line_no,
                    None,
                    Found::Nothing,
                    "is not a JSON object".into(),
                    RowText::Text(text),
                );
                continue;
            }
            Err(e) => {
                log.add(
                    line_no,
                    None,
                    Found::Nothing,
                    not_json_problem(&e),
                    RowText::Text(text),
                );
                continue;
            }
        };
        // Every value is checked before any is added, so a bad row adds nothing.
        let problem =
            source
                .columns
                .iter()
                .zip(out.columns.iter_mut())
                .find_map(|(column, builder)| {
                    let problem = match object.get(&column.name) {
                        None if !builder.nullable() => {
                            Some(not_nullable_problem("missing", &builder.type_name()))
                        }
                        Some(Json::Null) if !builder.nullable() => {
                            Some(not_nullable_problem("null", &builder.type_name()))
                        }
                        None => None,
                        Some(value) => builder.push_json(value, false).err(),
                    };
                    problem.map(|p| (column, p))
                });
        if let Some((column, problem)) = problem {
            let found = match object.get(&column.name) {
                None | Some(Json::Null) => Found::Nothing,
                Some(value) => Found::Shown(value.to_string()),
            };
            log.add(
                line_no,
                Some(&column.name),
                found,
                problem,
                RowText::Text(text),
            );
            continue;
        }
        if log.loading() {
            for (column, builder) in source.columns.iter().zip(out.columns.iter_mut()) {
                builder
                    .push_json(object.get(&column.name).unwrap_or(&Json::Null), true)
                    .map_err(|e| Error::Internal(format!("a checked value failed: {e}")))?;
            }
            out.row_done()?;
        }
    }
    let rejects = log.finish(source, path, false)?;
    Ok(Loaded {
        batches: out.finish()?,
        rejects,
    })
}

/// serde_json's message without its position (`at line 1 column 12`: always line 1 of a line).
fn not_json_problem(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&position) {
        Some(what) => format!("is not JSON: {what} (at column {})", e.column()),
        None => format!("is not JSON: {message}"),
    }
}

// ------------------------------------------------------------------------------ Parquet

/// Reads a Parquet file, its row groups split into up to `threads` runs of about equal rows that
/// decode and convert in parallel (a file is often a whole source). Bad rows are logged in file
/// order after all runs are read, so the rejects and a refusal are those of one pass.
fn read_parquet(
    source: &ir::Source,
    schema: &SchemaRef,
    path: &Path,
    mode: BadRows,
    threads: usize,
) -> Result<Loaded> {
    let not_readable = |e: ParquetError| not_readable(path, e);
    let file = File::open(path).map_err(|e| file_error(path, format!("cannot open: {e}")))?;
    let groups: Vec<u64> = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(not_readable)?
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows().max(0) as u64)
        .collect();
    let runs = row_group_runs(&groups, threads);
    let mut log = BadRowLog::new(mode, path);
    let keeping = log.keeping();
    let pieces: Vec<Result<Piece>> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .iter()
            .map(|(run, first_row)| {
                s.spawn(move || {
                    read_parquet_run(source, schema, path, run.clone(), *first_row, keeping)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::Internal("a Parquet reader thread panicked".into()))
                })
            })
            .collect()
    });
    let mut converted = Vec::new();
    for piece in pieces {
        let piece = piece?;
        for bad in piece.bad {
            let row = RowText::Text(&bad.row);
            log.add(bad.line, Some(bad.column), bad.found, bad.problem, row);
        }
        converted.extend(piece.batches);
    }
    let mut out = Vec::new();
    if log.loading() {
        for (mut arrays, keep) in converted {
            // Bad rows leave before the batch is built: they may hold nulls it does not allow.
            if keep.contains(&false) {
                let keep = BooleanArray::from(keep);
                arrays = arrays
                    .iter()
                    .map(|a| filter(a, &keep))
                    .collect::<Result<_, _>>()
                    .map_err(|e| Error::Internal(format!("leaving bad rows out: {e}")))?;
            }
            out.push(
                RecordBatch::try_new(schema.clone(), arrays)
                    .map_err(|e| Error::Internal(format!("building a batch: {e}")))?,
            );
        }
    }
    let rejects = log.finish(source, path, true)?;
    Ok(Loaded {
        batches: out,
        rejects,
    })
}

fn not_readable(path: &Path, e: ParquetError) -> Error {
    file_error(path, format!("not a readable Parquet file: {e}"))
}

/// Row groups (their row counts) cut into up to `n` runs of neighbouring groups with about equal
/// rows: (group indices, the number of rows before the run). One run of all of them (possibly
/// none) when there is one group or one thread.
fn row_group_runs(groups: &[u64], n: usize) -> Vec<(Range<usize>, u64)> {
    let total: u64 = groups.iter().sum();
    let n = n.clamp(1, groups.len().max(1)) as u64;
    let mut runs = Vec::new();
    let (mut start, mut before, mut rows) = (0, 0, 0);
    for (i, g) in groups.iter().enumerate() {
        rows += g;
        // Cut once this run reaches its share of the rows (the last run takes the rest).
        if (runs.len() as u64) + 1 < n && rows * n >= total * (runs.len() as u64 + 1) {
            runs.push((start..i + 1, before));
            start = i + 1;
            before = rows;
        }
    }
    if start < groups.len() || runs.is_empty() {
        runs.push((start..groups.len(), before));
    }
    runs
}

/// One run of row groups of a Parquet file, converted: each batch's columns in the declared
/// types with which of its rows are good, and the bad rows, each with its first problem.
struct Piece<'s> {
    batches: Vec<(Vec<ArrayRef>, Vec<bool>)>,
    bad: Vec<BadRow<'s>>,
}

struct BadRow<'s> {
    /// The row's number in the file, from 1.
    line: u64,
    column: &'s str,
    found: Found<'static>,
    problem: String,
    /// The row as JSON when bad rows are kept aside.
    row: String,
}

fn read_parquet_run<'s>(
    source: &'s ir::Source,
    schema: &SchemaRef,
    path: &Path,
    groups: Range<usize>,
    first_row: u64,
    keeping: bool,
) -> Result<Piece<'s>> {
    let not_readable = |e: ParquetError| not_readable(path, e);
    let file = File::open(path).map_err(|e| file_error(path, format!("cannot open: {e}")))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(not_readable)?
        .with_row_groups(groups.collect())
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(not_readable)?;
    let mut piece = Piece {
        batches: Vec::new(),
        bad: Vec::new(),
    };
    let mut rows_before = first_row;
    for batch in reader {
        let batch = batch
            .map_err(|e| file_error(path, format!("after row {rows_before}: cannot read: {e}")))?;
        let mut arrays = Vec::with_capacity(source.columns.len());
        // The first problem of each bad row: (column, found, problem).
        let mut bad: Vec<Option<(&str, Found, String)>> =
            (0..batch.num_rows()).map(|_| None).collect();
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
            let (converted, problems) = convert(array, &column.ty, field.data_type())
                .map_err(|e| file_error(path, format!("column `{}` {e}", column.name)))?;
            for (i, problem) in problems {
                if bad[i].is_none() {
                    bad[i] = Some((&column.name, shown(array, i), problem));
                }
            }
            if !column.nullable && converted.null_count() > 0 {
                for i in (0..array.len()).filter(|&i| array.is_null(i)) {
                    if bad[i].is_none() {
                        let problem = not_nullable_problem("null", &column.ty.to_string());
                        bad[i] = Some((&column.name, Found::Nothing, problem));
                    }
                }
            }
            arrays.push(converted);
        }
        let mut keep = Vec::with_capacity(batch.num_rows());
        for (i, problem) in bad.into_iter().enumerate() {
            keep.push(problem.is_none());
            if let Some((column, found, problem)) = problem {
                piece.bad.push(BadRow {
                    line: rows_before + i as u64 + 1,
                    column,
                    found,
                    problem,
                    row: if keeping {
                        parquet_row(&batch, i)
                    } else {
                        String::new()
                    },
                });
            }
        }
        rows_before += batch.num_rows() as u64;
        piece.batches.push((arrays, keep));
    }
    Ok(piece)
}

/// A Parquet column in its declared type, and the rows whose value did not convert (nulls in the
/// column) with why.
type Converted = (ArrayRef, Vec<(usize, String)>);

/// A Parquet column converted to its declared type; `Err` when the column as a whole cannot be
/// read as declared.
fn convert(array: &ArrayRef, ty: &Type, to: &DataType) -> Result<Converted, String> {
    if *ty == Type::Duration {
        return duration_ms(array);
    }
    if array.data_type() == to {
        return Ok((array.clone(), Vec::new()));
    }
    if !can_cast_types(array.data_type(), to) {
        return Err(format!(
            "holds {}, which cannot be read as the declared {ty}",
            array.data_type()
        ));
    }
    let strict = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    match cast_with_options(array, to, &strict) {
        Ok(converted) => Ok((converted, Vec::new())),
        Err(e) => {
            // Some values do not convert: they become nulls in a lenient cast, and are named.
            let lenient = CastOptions {
                safe: true,
                format_options: FormatOptions::default(),
            };
            let converted = cast_with_options(array, to, &lenient).map_err(|_| {
                format!(
                    "({}) does not convert to {to} (declared {ty}): {e}",
                    array.data_type()
                )
            })?;
            let problem = format!(
                "does not convert from {} to the declared {ty}",
                array.data_type()
            );
            let bad: Vec<(usize, String)> = (0..array.len())
                .filter(|&i| array.is_valid(i) && converted.is_null(i))
                .map(|i| (i, problem.clone()))
                .collect();
            if bad.is_empty() {
                return Err(format!(
                    "({}) does not convert to {to} (declared {ty}): {e}",
                    array.data_type()
                ));
            }
            Ok((converted, bad))
        }
    }
}

/// A Parquet value as a reason quotes it: strings quoted, other values as Arrow prints them.
fn shown(array: &ArrayRef, i: usize) -> Found<'static> {
    let options = FormatOptions::default();
    let text = ArrayFormatter::try_new(array.as_ref(), &options)
        .map(|f| f.value(i).to_string())
        .unwrap_or_default();
    match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Found::Shown(format!("{:?}", one_line(&text, 80)))
        }
        _ => Found::Shown(text),
    }
}

/// One row of a Parquet batch, every column of the file, as a JSON object (values of types JSON
/// has no writer for as Arrow prints them).
fn parquet_row(batch: &RecordBatch, i: usize) -> String {
    let row = batch.slice(i, 1);
    let mut writer = datafusion::arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, datafusion::arrow::json::writer::LineDelimited>(Vec::new());
    if writer.write(&row).and_then(|()| writer.finish()).is_ok() {
        return String::from_utf8_lossy(&writer.into_inner())
            .trim_end()
            .to_string();
    }
    let options = FormatOptions::default();
    let object: serde_json::Map<String, Json> = row
        .schema()
        .fields()
        .iter()
        .zip(row.columns())
        .map(|(field, array)| {
            let value = ArrayFormatter::try_new(array.as_ref(), &options)
                .map_or(Json::Null, |f| Json::String(f.value(0).to_string()));
            (field.name().clone(), value)
        })
        .collect();
    Json::Object(object).to_string()
}

/// A Parquet duration column (an Arrow duration, or integers already in milliseconds) as
/// milliseconds, with the rows whose value is not a whole number of milliseconds or out of range
/// (null in the result) rather than cut.
fn duration_ms(array: &ArrayRef) -> Result<Converted, String> {
    use datafusion::arrow::array::{AsArray, Int64Array};
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
    let mut bad = Vec::new();
    for i in 0..raw.len() {
        if raw.is_null(i) {
            out.push(None);
            continue;
        }
        let v = raw.value(i);
        let ms = if per_ms < 0 {
            v.checked_mul(-per_ms).ok_or("is out of the duration range")
        } else if v % per_ms == 0 {
            Ok(v / per_ms)
        } else {
            Err("is not a whole number of milliseconds")
        };
        match ms {
            Ok(ms) => out.push(Some(ms)),
            Err(problem) => {
                out.push(None);
                bad.push((i, problem.to_string()));
            }
        }
    }
    Ok((Arc::new(Int64Array::from(out)), bad))
}

/// Why a missing value (`what`: empty, missing, null) does not fit a column of type `ty`.
fn not_nullable_problem(what: &str, ty: &str) -> String {
    format!("is {what}, but the column is not nullable (declare it `{ty}?` if nulls are expected)")
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
            return Err(not_nullable_problem("empty", &self.type_name()));
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
        let article = if type_name.starts_with('i') {
            "an"
        } else {
            "a"
        };
        let wrong = || format!("is not {article} {type_name}");
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
    match canonical_date(text.as_bytes()) {
        Some(days) => Ok(days),
        None => parse_date_by_format(text),
    }
}

/// Days since 1970-01-01 (from chrono's Common Era count).
const EPOCH_FROM_CE: i32 = 719_163;

/// The digits of `b` as a number, if all of them are ASCII digits.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

/// `YYYY-MM-DD` exactly (four-digit year, a real calendar day), read without a format string:
/// dates and timestamps are parsed for every loaded cell, every tracked event and every date
/// literal the streaming operators evaluate. Anything else (`None`) goes to chrono's parser,
/// which gives the same answer for what this accepts (`fast_dates_and_timestamps_parse_as_chrono_does`).
fn canonical_date(b: &[u8]) -> Option<i32> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&b[..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let date = NaiveDate::from_ymd_opt(y as i32, m, d)?;
    use chrono::Datelike;
    Some(date.num_days_from_ce() - EPOCH_FROM_CE)
}

/// `YYYY-MM-DD[ T]HH:MM:SS[.f…][Z|±HH:MM]` or a bare canonical date, as microseconds since the
/// epoch, read without a format string; `None` for anything else (and for what needs chrono's
/// error: more precise than microseconds, a leap second), which [`parse_timestamp`] then hands
/// to chrono.
fn canonical_timestamp(b: &[u8]) -> Option<i64> {
    const SECOND: i64 = 1_000_000;
    let days = i64::from(canonical_date(b.get(..10)?)?);
    if b.len() == 10 {
        return Some(days * 86_400 * SECOND);
    }
    if b.len() < 19 || !matches!(b[10], b' ' | b'T') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, s) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let mut micros = 0i64;
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let n = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        let (kept, beyond) = fraction[..n].split_at(n.min(6));
        if beyond.iter().any(|&c| c != b'0') {
            return None;
        }
        micros = i64::from(digits(kept)?) * 10i64.pow(6 - kept.len() as u32);
        rest = &fraction[n..];
    }
    let offset = match rest {
        [] => 0,
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), oh @ .., b':', om1, om2] if oh.len() == 2 => {
            let (oh, om) = (digits(oh)?, digits(&[*om1, *om2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let minutes = i64::from(oh * 60 + om);
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let seconds = i64::from(h * 3600 + mi * 60 + s) - offset * 60;
    Some((days * 86_400 + seconds) * SECOND + micros)
}

/// [`parse_date`] by chrono's format parser.
fn parse_date_by_format(text: &str) -> Result<i32, String> {
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| "is not a date (like 1990-05-17)".to_string())?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    i32::try_from((date - epoch).num_days()).map_err(|_| "is out of the date range".to_string())
}

/// `2024-11-03 14:22:05[.ffffff]` (or with a `T`, or a bare date) as microseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    match canonical_timestamp(text.as_bytes()) {
        Some(micros) => Ok(micros),
        None => parse_timestamp_by_format(text),
    }
}

/// [`parse_timestamp`] by chrono's parsers.
fn parse_timestamp_by_format(text: &str) -> Result<i64, String> {
    let bad = || "is not a timestamp (like 2024-11-03 14:22:05)".to_string();
    // With a zone (`2024-11-03T14:22:05.120Z`, `…+01:00`): the UTC time it names.
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        let utc = t.naive_utc().and_utc();
        if utc.timestamp_subsec_nanos() % 1000 != 0 {
            return Err("is more precise than microseconds".into());
        }
        return Ok(utc.timestamp_micros());
    }
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
