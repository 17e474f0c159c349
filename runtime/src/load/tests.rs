//! Loading sources: every format into the declared schema; bad rows kept aside with their place
//! and reason while the good rows load, or refusing the source.

use std::io::Write;
use std::path::{Path, PathBuf};

use cdp_compiler::config::DataFormat;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::util::pretty::pretty_format_batches;

use super::*;
use crate::error::Error;

const SOURCE: &str = r#"
source events "Test events" {
  time ts
  columns {
    id: string
    ts: timestamp
    n: int?
    amount: decimal(12, 2)?
    ok: bool?
    day: date?
    score: float?
    spent: duration?
    tags: list<string>?
  }
}
"#;

fn source() -> ir::Source {
    let sources = cdp_compiler::project_from_texts([("events.cdp", SOURCE)], None);
    let checked = cdp_compiler::check(&sources);
    assert!(!checked.has_errors(), "{:#?}", checked.diagnostics);
    let project = cdp_compiler::lower(&checked).expect("lowers");
    project.sources.into_iter().next().expect("one source")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}

fn load(format: DataFormat, paths: Vec<PathBuf>) -> Result<Vec<RecordBatch>> {
    read_source(&source(), &SourceFiles::new(format, paths))
}

/// The batches as a table, runs of spaces squeezed so that expectations need no padding.
fn pretty(batches: &[RecordBatch]) -> String {
    let text = pretty_format_batches(batches).unwrap().to_string();
    text.split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

const HEADER: &str = "id,ts,n,amount,ok,day,score,spent,tags\n";

#[test]
fn csv_loads_every_type_with_the_declared_schema() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "events.csv",
        &format!(
            "{HEADER}a,2024-11-03 14:22:05,7,12.5,true,1990-05-17,0.25,95s,\"[\"\"x\"\",\"\"y,z\"\"]\"\n\
             b,2024-11-03 14:22:05.25,,,,,,,\n\
             c,2024-12-01,-1,-0.01,FALSE,2000-02-29,1e3,500ms,[]\n"
        ),
    );
    let batches = load(DataFormat::Csv, vec![csv]).unwrap();
    let schema = batches[0].schema();
    let types: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "Utf8",
            "Timestamp(µs)",
            "Int64",
            "Decimal128(12, 2)",
            "Boolean",
            "Date32",
            "Float64",
            "Int64",
            "List(Utf8)",
        ]
    );
    assert!(!schema.field(0).is_nullable() && schema.field(2).is_nullable());
    let text = pretty(&batches);
    for expected in [
        "| a | 2024-11-03T14:22:05 | 7 | 12.50 | true | 1990-05-17 | 0.25 | 95000 | [x, y,z] |",
        "| b | 2024-11-03T14:22:05.250 | | | | | | | |",
        "| c | 2024-12-01T00:00:00 | -1 | -0.01 | false | 2000-02-29 | 1000.0 | 500 | [] |",
    ] {
        assert!(text.contains(expected), "{expected}\nnot in\n{text}");
    }
}

#[test]
fn bad_csv_rows_are_refused_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(
        dir.path(),
        "bad.csv",
        &format!(
            "{HEADER}a,2024-11-03 14:22:05,7,,,,,,\n\
             b,yesterday,7,,,,,,\n\
             c,2024-11-03 14:22:05,seven,,,,,,\n\
             ,2024-11-03 14:22:05,,,,,,,\n\
             d,2024-11-03 14:22:05,,1.234,,,,,\n\
             e,2024-11-03 14:22:05,,,,,,,\"not json\"\n\
             f,2024-11-03 14:22:05\n"
        ),
    );
    let err = load(DataFormat::Csv, vec![csv.clone()]).unwrap_err();
    let Error::BadRows {
        count,
        ref examples,
        ..
    } = err
    else {
        panic!("{err}");
    };
    assert_eq!(count, 6, "{err}");
    let lines: Vec<(u64, &str)> = examples
        .iter()
        .map(|e| (e.line, e.column.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (3, "ts"),
            (4, "n"),
            (5, "id"),
            (6, "amount"),
            (7, "tags"),
            (8, "(row)")
        ]
    );
    let message = err.to_string();
    let file = csv.display().to_string();
    assert!(
        message.contains(&format!("{file}:line 3: column `ts`")),
        "{message}"
    );
    assert!(message.contains("not a timestamp"), "{message}");
    assert!(message.contains("not nullable"), "{message}");
    assert!(message.contains("3 digits after the point"), "{message}");
    assert!(message.contains("nothing was loaded"), "{message}");
}

#[test]
fn a_missing_column_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "short.csv", "id,ts\na,2024-11-03 14:22:05\n");
    let err = load(DataFormat::Csv, vec![csv]).unwrap_err().to_string();
    assert!(err.contains("no column `n` of source `events`"), "{err}");
}

#[test]
fn json_lines_take_native_values_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = write(
        dir.path(),
        "events.jsonl",
        r#"{"id": "a", "ts": "2024-11-03 14:22:05", "n": 7, "amount": 12.5, "ok": true, "day": "1990-05-17", "score": 0.25, "spent": "95s", "tags": ["x"]}

{"id": "b", "ts": "2024-11-03T14:22:05", "amount": "3.10", "spent": 1500, "extra": 1}
"#,
    );
    let batches = load(DataFormat::Jsonl, vec![jsonl]).unwrap();
    let text = pretty(&batches);
    assert!(
        text.contains("| a | 2024-11-03T14:22:05 | 7 | 12.50 | true |"),
        "{text}"
    );
    assert!(
        text.contains("| b | 2024-11-03T14:22:05 | | 3.10 |"),
        "{text}"
    );

    let bad = write(
        dir.path(),
        "bad.jsonl",
        "{\"id\": \"a\", \"ts\": \"2024-11-03 14:22:05\", \"n\": \"7\"}\n[1]\n{\"id\": 1, \"ts\": \"2024-11-03\"}\n",
    );
    let err = load(DataFormat::Jsonl, vec![bad.clone()])
        .unwrap_err()
        .to_string();
    let file = bad.display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:line 1: column `n`: is not an int (found a string)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:line 2: column `(row)`: is not a JSON object"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:line 3: column `id`")),
        "{err}"
    );
}

#[test]
fn parquet_is_read_and_converted_to_the_declared_types() {
    use datafusion::arrow::array::{Int32Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::parquet::arrow::ArrowWriter;

    let dir = tempfile::tempdir().unwrap();
    // Narrower types than declared: int32 for int, milliseconds for the timestamp; no `ok`.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
        Field::new("n", DataType::Int32, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(TimestampMillisecondArray::from(vec![1_000, 2_500])),
            Arc::new(Int32Array::from(vec![Some(1), None])),
        ],
    )
    .unwrap();
    let path = dir.path().join("part.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let err = load(DataFormat::Parquet, vec![path.clone()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no column `amount` of source `events`"),
        "{err}"
    );

    // A source with just these columns reads them, converted.
    let mut s = source();
    s.columns.truncate(3);
    let batches = read_source(&s, &SourceFiles::new(DataFormat::Parquet, vec![path])).unwrap();
    assert_eq!(batches[0].schema().field(2).data_type(), &DataType::Int64);
    let n = batches[0].column(2).as_primitive::<Int64Type>();
    assert_eq!((n.value(0), n.is_null(1)), (1, true));
    assert!(
        pretty(&batches).contains("| b | 1970-01-01T00:00:02.500 | |"),
        "{}",
        pretty(&batches)
    );
}

#[test]
fn globs_read_every_matching_file_in_path_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    for (name, id) in [("b.csv", "second"), ("a.csv", "first")] {
        write(
            &dir.path().join("data"),
            name,
            &format!("{HEADER}{id},2024-11-03 14:22:05,,,,,,,\n"),
        );
    }
    let binding: cdp_compiler::config::SourceBinding = toml_binding("path = \"data/*.csv\"");
    let files = SourceFiles::from_binding(dir.path(), "events", &binding).unwrap();
    assert_eq!(files.format, DataFormat::Csv);
    let batches = read_source(&source(), &files).unwrap();
    let ids: Vec<&str> = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .flatten()
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids, ["first", "second"]);

    let none = toml_binding("path = \"data/*.jsonl\"");
    let err = SourceFiles::from_binding(dir.path(), "events", &none)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no file matches `data/*.jsonl`"), "{err}");
    let missing = toml_binding("path = \"data/nope.csv\"");
    let err = SourceFiles::from_binding(dir.path(), "events", &missing)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nope.csv: data file of source `events` does not exist"),
        "{err}"
    );
}

fn toml_binding(text: &str) -> cdp_compiler::config::SourceBinding {
    let config = format!("[project]\nname = \"t\"\n\n[sources.events]\n{text}\n");
    let sources = cdp_compiler::project_from_texts([("events.cdp", SOURCE)], Some(&config));
    let checked = cdp_compiler::check(&sources);
    checked
        .config
        .expect("cdp.toml parses")
        .sources
        .remove("events")
        .expect("binding")
}

#[test]
fn values_parse_strictly() {
    assert_eq!(parse_decimal("12.5", 12, 2), Ok(1250));
    assert_eq!(parse_decimal("-0.01", 12, 2), Ok(-1));
    assert_eq!(parse_decimal("7", 12, 2), Ok(700));
    assert_eq!(parse_decimal("1.230", 12, 2), Ok(123));
    assert!(parse_decimal("1.234", 12, 2)
        .unwrap_err()
        .contains("3 digits"));
    assert!(parse_decimal("1234", 4, 2)
        .unwrap_err()
        .contains("too large"));
    assert!(parse_decimal("1e5", 12, 2).is_err());
    assert!(parse_decimal(".", 12, 2).is_err());
    assert_eq!(parse_timestamp("1970-01-01 00:00:01"), Ok(1_000_000));
    assert_eq!(parse_timestamp("1970-01-01T00:00:00.5"), Ok(500_000));
    assert_eq!(parse_timestamp("1970-01-02"), Ok(86_400_000_000));
    // With a zone: the UTC time it names.
    assert_eq!(parse_timestamp("1970-01-01T00:00:01.250Z"), Ok(1_250_000));
    assert_eq!(parse_timestamp("1970-01-01T01:00:01+01:00"), Ok(1_000_000));
    assert!(parse_timestamp("1970-01-01T00:00:00.0000001Z").is_err());
    assert!(parse_timestamp("2024-13-01 00:00:00").is_err());
    assert!(parse_timestamp("1970-01-01 00:00:00.0000001").is_err());
    assert_eq!(parse_date("1970-01-11"), Ok(10));
    assert_eq!(parse_duration("95s"), Ok(95_000));
    assert_eq!(parse_duration("500ms"), Ok(500));
    assert_eq!(parse_duration("-2w"), Ok(-1_209_600_000));
    assert!(parse_duration("5 s").is_err());
    assert!(parse_duration("s").is_err());
}

fn keep_aside(source: &ir::Source, format: DataFormat, path: PathBuf) -> Loaded {
    read_source_with(
        source,
        &SourceFiles::new(format, vec![path]),
        BadRows::KeepAside,
    )
    .unwrap()
}

/// The ids of the loaded rows, in order.
fn ids(loaded: &Loaded) -> Vec<String> {
    loaded
        .batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Each reject as (line, column, reason, row).
fn rejects(loaded: &Loaded) -> Vec<(u64, Option<&str>, &str, &str)> {
    loaded
        .rejects
        .iter()
        .map(|r| {
            (
                r.line,
                r.column.as_deref(),
                r.reason.as_str(),
                r.row.as_str(),
            )
        })
        .collect()
}

#[test]
fn bad_csv_rows_are_kept_aside_with_line_column_reason_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.csv");
    let mut text = format!(
        "{HEADER}a,2024-11-03 14:22:05,1,,,,,,\n\
         b,yesterday,2,,,,,,\n\
         c,2024-11-03 14:22:05,seven,,,,,,\n\
         ,2024-11-03 14:22:05,,,,,,,\n\
         \n\
         d,2024-11-03 14:22:05,,\"1,234\",,,,,\n\
         e,2024-11-03 14:22:05\r\n\
         f,2024-11-03 14:22:05,6,,,,,,\n\
         \"g\nh\",2024-11-03 14:22:05,,,,,,,,extra\n"
    )
    .into_bytes();
    text.extend_from_slice(b"i\xff,2024-11-03 14:22:05,,,,,,,\nj,2024-11-03 14:22:05,9,,,,,,");
    std::fs::write(&path, text).unwrap();
    let loaded = keep_aside(&source(), DataFormat::Csv, path.clone());
    assert_eq!(ids(&loaded), ["a", "f", "j"]);
    assert_eq!(loaded.rows(), 3);
    assert_eq!(
        rejects(&loaded),
        [
            (
                3,
                Some("ts"),
                "\"yesterday\" is not a timestamp (like 2024-11-03 14:22:05)",
                "b,yesterday,2,,,,,,"
            ),
            (
                4,
                Some("n"),
                "\"seven\" is not an int (a whole number like 42)",
                "c,2024-11-03 14:22:05,seven,,,,,,"
            ),
            (
                5,
                Some("id"),
                "is empty, but the column is not nullable (declare it `string?` if nulls are expected)",
                ",2024-11-03 14:22:05,,,,,,,"
            ),
            (
                7,
                Some("amount"),
                "\"1,234\" is not a decimal(12, 2) (a number like 12.50)",
                "d,2024-11-03 14:22:05,,\"1,234\",,,,,"
            ),
            (
                8,
                None,
                "has 2 fields, but the header has 9",
                "e,2024-11-03 14:22:05"
            ),
            (
                10,
                None,
                "has 10 fields, but the header has 9",
                "\"g\nh\",2024-11-03 14:22:05,,,,,,,,extra"
            ),
            (
                12,
                Some("id"),
                "is not valid UTF-8",
                "i\u{fffd},2024-11-03 14:22:05,,,,,,,"
            ),
        ]
    );
    let file = path.display().to_string();
    assert!(loaded.rejects.iter().all(|r| r.file == file));

    // Refused instead, the same rows are counted and none loads.
    let err = load(DataFormat::Csv, vec![path]).unwrap_err();
    let Error::BadRows { count, .. } = err else {
        panic!("{err}");
    };
    assert_eq!(count, 7);
}

#[test]
fn bad_json_lines_are_kept_aside_with_line_column_reason_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.jsonl");
    let mut text = concat!(
        "{\"id\": \"a\", \"ts\": \"2024-11-03 14:22:05\", \"n\": 1}\n",
        "{\"id\": \"b\", \"ts\": \"yesterday\"}\n",
        "{\"ts\": \"2024-11-03 14:22:05\"}\n",
        "{\"id\": null, \"ts\": \"2024-11-03 14:22:05\"}\n",
        "{\"id\": \"c\", \"ts\": \"2024-11-03 14:22:05\", \"n\": \"7\"}\n",
        "{\"id\": \"d\", \"ts\": \n",
        "[1, 2]\n",
        "\n",
        "{\"id\": \"e\", \"ts\": \"2024-11-03 14:22:05\", \"tags\": [\"x\", 1]}\r\n",
    )
    .as_bytes()
    .to_vec();
    text.extend_from_slice(b"{\"id\": \"\xff\"}\n{\"id\": \"f\", \"ts\": \"2024-11-04\"}\n");
    std::fs::write(&path, text).unwrap();
    let loaded = keep_aside(&source(), DataFormat::Jsonl, path);
    assert_eq!(ids(&loaded), ["a", "f"]);
    let not_nullable = |what: &str| {
        format!(
            "is {what}, but the column is not nullable (declare it `string?` if nulls are expected)"
        )
    };
    let (missing, null) = (not_nullable("missing"), not_nullable("null"));
    assert_eq!(
        rejects(&loaded),
        [
            (
                2,
                Some("ts"),
                "\"yesterday\" is not a timestamp (like 2024-11-03 14:22:05)",
                "{\"id\": \"b\", \"ts\": \"yesterday\"}"
            ),
            (
                3,
                Some("id"),
                missing.as_str(),
                "{\"ts\": \"2024-11-03 14:22:05\"}"
            ),
            (
                4,
                Some("id"),
                null.as_str(),
                "{\"id\": null, \"ts\": \"2024-11-03 14:22:05\"}"
            ),
            (
                5,
                Some("n"),
                "\"7\" is not an int (found a string)",
                "{\"id\": \"c\", \"ts\": \"2024-11-03 14:22:05\", \"n\": \"7\"}"
            ),
            (
                6,
                None,
                "is not JSON: EOF while parsing a value (at column 18)",
                "{\"id\": \"d\", \"ts\": "
            ),
            (7, None, "is not a JSON object", "[1, 2]"),
            (
                9,
                Some("tags"),
                "[\"x\",1] element 2: is not a string",
                "{\"id\": \"e\", \"ts\": \"2024-11-03 14:22:05\", \"tags\": [\"x\", 1]}"
            ),
            (10, None, "is not valid UTF-8", "{\"id\": \"\u{fffd}\"}"),
        ]
    );
}

#[test]
fn bad_parquet_rows_are_kept_aside_with_row_column_reason_and_values() {
    use datafusion::arrow::array::{DurationMicrosecondArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::parquet::arrow::ArrowWriter;

    let dir = tempfile::tempdir().unwrap();
    // Timestamps as text and durations in microseconds: each converts value by value.
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("ts", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
        Field::new("spent", DataType::Duration(TimeUnit::Microsecond), true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![
                Some("a"),
                None,
                Some("c"),
                Some("d"),
                Some("e"),
            ])),
            Arc::new(StringArray::from(vec![
                "2024-11-03 14:22:05",
                "2024-11-03 14:22:05",
                "yesterday",
                "2024-11-03 14:22:05",
                "2024-11-04 00:00:00",
            ])),
            Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
            Arc::new(DurationMicrosecondArray::from(vec![
                Some(1_000),
                None,
                None,
                Some(1_500),
                Some(2_000),
            ])),
        ],
    )
    .unwrap();
    let path = dir.path().join("mixed.parquet");
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let mut s = source();
    s.columns
        .retain(|c| ["id", "ts", "n", "spent"].contains(&c.name.as_str()));
    let loaded = keep_aside(&s, DataFormat::Parquet, path);
    assert_eq!(ids(&loaded), ["a", "e"]);
    assert_eq!(
        pretty(&loaded.batches),
        "+----+---------------------+---+-------+\n\
         | id | ts | n | spent |\n\
         +----+---------------------+---+-------+\n\
         | a | 2024-11-03T14:22:05 | 1 | 1 |\n\
         | e | 2024-11-04T00:00:00 | 5 | 2 |\n\
         +----+---------------------+---+-------+"
    );
    assert_eq!(
        rejects(&loaded),
        [
            (
                2,
                Some("id"),
                "is null, but the column is not nullable (declare it `string?` if nulls are expected)",
                "{\"id\":null,\"ts\":\"2024-11-03 14:22:05\",\"n\":2,\"spent\":null}"
            ),
            (
                3,
                Some("ts"),
                "\"yesterday\" does not convert from Utf8 to the declared timestamp",
                "{\"id\":\"c\",\"ts\":\"yesterday\",\"n\":3,\"spent\":null}"
            ),
            (
                4,
                Some("spent"),
                "PT0.0015S is not a whole number of milliseconds",
                "{\"id\":\"d\",\"ts\":\"2024-11-03 14:22:05\",\"n\":4,\"spent\":\"PT0.0015S\"}"
            ),
        ]
    );
}

#[test]
fn row_groups_split_into_runs_of_about_equal_rows() {
    assert_eq!(row_group_runs(&[], 2), vec![(0..0, 0)]);
    assert_eq!(row_group_runs(&[5], 2), vec![(0..1, 0)]);
    assert_eq!(row_group_runs(&[5, 5, 5, 5], 1), vec![(0..4, 0)]);
    assert_eq!(
        row_group_runs(&[5, 5, 5, 5], 2),
        vec![(0..2, 0), (2..4, 10)]
    );
    assert_eq!(
        row_group_runs(&[10, 1, 1, 1, 1], 2),
        vec![(0..1, 0), (1..5, 10)]
    );
    assert_eq!(
        row_group_runs(&[3, 3, 3, 1], 3),
        vec![(0..2, 0), (2..3, 6), (3..4, 9)]
    );
    // Never more runs than groups, and every group in exactly one run, in order.
    for n in 1..6 {
        let groups = [7, 1, 4, 4, 9, 2, 2];
        let runs = row_group_runs(&groups, n);
        assert!(runs.len() <= n.min(groups.len()));
        let covered: Vec<usize> = runs.iter().flat_map(|(r, _)| r.clone()).collect();
        assert_eq!(covered, (0..groups.len()).collect::<Vec<_>>());
        for (run, before) in &runs {
            assert_eq!(*before, groups[..run.start].iter().sum::<u64>());
        }
    }
}

/// A file of several row groups read on several threads: the rows in file order, and each bad
/// row rejected with its line in the file, whichever thread read it.
#[test]
fn a_parquet_file_read_in_parallel_keeps_file_order_and_lines() {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::WriterProperties;

    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ]));
    let values: Vec<Option<String>> = (1..=20)
        .map(|i| (![2, 9, 10, 19].contains(&i)).then(|| format!("r{i}")))
        .collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(values)),
            Arc::new(Int64Array::from((1..=20).collect::<Vec<i64>>())),
        ],
    )
    .unwrap();
    let path = dir.path().join("groups.parquet");
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(3))
        .build();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let mut s = source();
    s.columns.retain(|c| ["id", "n"].contains(&c.name.as_str()));
    let schema = source_schema(&s).unwrap();
    let expected: Vec<String> = (1..=20)
        .filter(|i| ![2, 9, 10, 19].contains(i))
        .map(|i| format!("r{i}"))
        .collect();
    for threads in [1, 2, 3, 7] {
        let loaded = read_parquet(&s, &schema, &path, BadRows::KeepAside, threads).unwrap();
        assert_eq!(ids(&loaded), expected, "{threads} threads");
        let lines: Vec<u64> = rejects(&loaded).iter().map(|r| r.0).collect();
        assert_eq!(lines, [2, 9, 10, 19], "{threads} threads");
        match read_parquet(&s, &schema, &path, BadRows::Refuse, threads) {
            Err(Error::BadRows {
                count, examples, ..
            }) => {
                assert_eq!(count, 4);
                let lines: Vec<u64> = examples.iter().map(|e| e.line).collect();
                assert_eq!(lines, [2, 9, 10, 19]);
            }
            other => panic!("{threads} threads: {:?}", other.map(|l| l.rows())),
        }
    }
}

/// Dates and timestamps: the parser without format strings gives chrono's answer (a value, or
/// an error) for every text, near the canonical shapes and inside them.
mod fast_dates {
    use proptest::prelude::*;

    use super::super::{
        parse_date, parse_date_by_format, parse_timestamp, parse_timestamp_by_format,
    };

    /// Texts shaped like dates and timestamps, with the fields sometimes out of range and the
    /// separators, fractions and zones varied.
    fn near_canonical() -> impl Strategy<Value = String> {
        // Mostly in range (so that most texts are real instants), sometimes just past it.
        let field = |max: u32| {
            prop_oneof![
                12 => (0..max).prop_map(|n| format!("{n:02}")),
                1 => (max..=max + 1).prop_map(|n| format!("{n:02}")),
                1 => "[0-9]{1,3}",
                1 => Just("a1".to_string()),
            ]
        };
        let date = (
            prop_oneof![
                12 => (1i32..=9999).prop_map(|y| format!("{y:04}")),
                1 => "[0-9]{2,5}",
                1 => Just("+2024".to_string()),
            ],
            field(13).prop_filter("month 00 is rare enough", |m| m != "00"),
            field(29),
        )
            .prop_map(|(y, m, d)| format!("{y}-{m}-{d}"));
        let time = (
            prop_oneof![4 => Just(" "), 4 => Just("T"), 1 => Just("t"), 1 => Just("_")],
            field(24),
            field(60),
            field(60),
            prop_oneof![Just(String::new()), "\\.[0-9]{0,10}", "\\.[0-9]{1,6}0{0,4}",],
            prop_oneof![
                Just(String::new()),
                Just("Z".to_string()),
                Just("z".to_string()),
                (prop_oneof![Just('+'), Just('-')], 0u32..=25, 0u32..=61)
                    .prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
                "[+-][0-9]{1,4}",
            ],
        )
            .prop_map(|(sep, h, m, s, f, z)| format!("{sep}{h}:{m}:{s}{f}{z}"));
        (
            date,
            prop::option::of(time),
            prop_oneof![8 => Just(""), 1 => Just(" "), 1 => Just("x")],
        )
            .prop_map(|(d, t, tail)| format!("{d}{}{tail}", t.unwrap_or_default()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn fast_dates_and_timestamps_parse_as_chrono_does(text in near_canonical()) {
            prop_assert_eq!(parse_date(&text), parse_date_by_format(&text), "{}", text);
            prop_assert_eq!(parse_timestamp(&text), parse_timestamp_by_format(&text), "{}", text);
        }
    }

    #[test]
    fn canonical_shapes_take_the_fast_path_and_give_the_instant() {
        use super::super::{canonical_date, canonical_timestamp};
        assert_eq!(canonical_date(b"1970-01-01"), Some(0));
        assert_eq!(canonical_date(b"2024-02-29"), Some(19_782));
        assert_eq!(canonical_date(b"2023-02-29"), None);
        let t = |s: &str| canonical_timestamp(s.as_bytes());
        assert_eq!(t("1970-01-01 00:00:01"), Some(1_000_000));
        assert_eq!(
            t("2024-11-03T14:22:05.12Z"),
            t("2024-11-03 15:22:05.120000+01:00")
        );
        assert_eq!(t("1969-12-31T23:59:59.999999Z"), Some(-1));
        // Left to chrono: more precise than microseconds (an error), a leap second.
        assert_eq!(t("2024-11-03 14:22:05.1234567"), None);
        assert!(parse_timestamp("2024-11-03 14:22:05.1234567").is_err());
        assert_eq!(t("2016-12-31T23:59:60Z"), None);
    }
}
