//! Rows that do not fit their source's declared columns: `cdp run` loads the good rows, writes
//! each bad one with its file, line, column, reason and text to the run's rejects files, counts
//! them in its summary and manifest, and computes exactly what the data without them gives.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use cdp_runtime::store::{RejectCount, Storage};
use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::Float64Type;
use datafusion::arrow::record_batch::RecordBatch;

use crate::support::{cdp, retail_copy, text};

fn run(dir: &Path) -> Output {
    let run = cdp(&["run", dir.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run));
    run
}

/// Every committed table of the last run, each as its sorted rows; without the `run` column (the
/// segment history names the run that wrote it), floats to 9 digits (the engine sums in parallel,
/// in no fixed order).
fn outputs(storage: &Storage) -> Vec<(String, Vec<String>)> {
    let manifest = storage.latest().unwrap().unwrap();
    manifest
        .tables
        .iter()
        .map(|t| {
            let (schema, batches) = storage.read(t).unwrap();
            let keep: Vec<usize> = (0..schema.fields().len())
                .filter(|&i| schema.field(i).name() != "run")
                .collect();
            let batches: Vec<RecordBatch> = batches
                .iter()
                .map(|b| {
                    let b = b.project(&keep).unwrap();
                    let columns = b.columns().iter().map(rounded).collect();
                    RecordBatch::try_new(b.schema(), columns).unwrap()
                })
                .collect();
            let printed = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                .unwrap()
                .to_string();
            let mut rows: Vec<String> = printed
                .lines()
                .filter(|l| l.starts_with('|'))
                .skip(1)
                .map(String::from)
                .collect();
            rows.sort();
            (t.table.clone(), rows)
        })
        .collect()
}

fn rounded(column: &ArrayRef) -> ArrayRef {
    match column.as_primitive_opt::<Float64Type>() {
        Some(floats) => Arc::new(floats.unary::<_, Float64Type>(|v| (v * 1e9).round() / 1e9)),
        None => column.clone(),
    }
}

fn append(path: &Path, lines: &str) {
    let mut text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'));
    text.push_str(lines);
    std::fs::write(path, text).unwrap();
}

/// Rewrites retail's email events as JSON lines and binds the source to them, so that the run
/// also reads a JSON-lines source.
fn email_events_as_json_lines(dir: &Path) {
    let csv = std::fs::read_to_string(dir.join("data/email_events.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let mut jsonl = String::new();
    for line in lines {
        let object: serde_json::Map<String, serde_json::Value> = header
            .iter()
            .zip(line.split(','))
            .map(|(name, value)| (name.to_string(), value.into()))
            .collect();
        jsonl.push_str(&serde_json::Value::Object(object).to_string());
        jsonl.push('\n');
    }
    std::fs::write(dir.join("data/email_events.jsonl"), jsonl).unwrap();
    std::fs::remove_file(dir.join("data/email_events.csv")).unwrap();
    let toml = std::fs::read_to_string(dir.join("cdp.toml")).unwrap();
    let toml = toml.replace(
        "path = \"data/email_events.csv\"\nformat = \"csv\"",
        "path = \"data/email_events.jsonl\"\nformat = \"jsonl\"",
    );
    assert!(toml.contains("email_events.jsonl"), "{toml}");
    std::fs::write(dir.join("cdp.toml"), toml).unwrap();
}

#[test]
fn clean_retail_rejects_nothing() {
    let (_tmp, dir) = retail_copy();
    let out = run(&dir);
    assert!(!text(&out).contains("reject"), "{}", text(&out));
    assert!(!text(&out).contains("warning"), "{}", text(&out));
    let storage = Storage::open(&dir.join(".cdp")).unwrap();
    assert_eq!(storage.latest().unwrap().unwrap().rejects, []);
    assert!(!dir.join(".cdp/rejects").exists());
}

#[test]
fn bad_rows_are_kept_aside_with_line_and_reason_and_the_outputs_are_those_of_the_good_rows() {
    let (_clean_tmp, clean) = retail_copy();
    let (_broken_tmp, broken) = retail_copy();
    email_events_as_json_lines(&clean);
    email_events_as_json_lines(&broken);

    // Extra rows, every one of them bad: the good rows are exactly those of the clean copy.
    let orders = broken.join("data/orders.csv");
    let orders_lines = std::fs::read_to_string(&orders).unwrap().lines().count();
    append(
        &orders,
        "O9001,yesterday,C0001,a@example.com,10.00,completed,[],1\n\
         O9002,2024-06-01 10:00:00,C0001,a@example.com,ten euros,completed,[],1\n\
         O9003,2024-06-01 10:00:00,,a@example.com,10.00,completed,[],1\n\
         O9004,2024-06-01 10:00:00,C0001,a@example.com,10.00,completed,[],1,extra\n\
         O9005,2024-06-01 10:00:00,C0001,a@example.com,\"1,000.00\",completed,\"[\"\"X\"\"]\",1\n",
    );
    let customers = broken.join("data/customers.csv");
    let customers_lines = std::fs::read_to_string(&customers).unwrap().lines().count();
    append(
        &customers,
        "C9999,x@example.com,X,DE,1990-01-01,2024-01-01 00:00:00,maybe\n",
    );
    let email_events = broken.join("data/email_events.jsonl");
    let email_lines = std::fs::read_to_string(&email_events)
        .unwrap()
        .lines()
        .count();
    append(
        &email_events,
        "{\"event_ts\": \"2024-06-14 08:00:18\", \"email\": \"a@example.com\", \"type\": \"open\"\n\
         {\"event_ts\": \"2024-06-14 08:00:18\", \"type\": \"open\", \"campaign\": \"newsletter_2024_06\"}\n\
         {\"event_ts\": 20240614, \"email\": \"a@example.com\", \"type\": \"open\", \"campaign\": \"newsletter_2024_06\"}\n\
         [\"2024-06-14 08:00:18\", \"a@example.com\", \"open\", \"newsletter_2024_06\"]\n",
    );

    run(&clean);
    let out = run(&broken);

    let storage = Storage::open(&broken.join(".cdp")).unwrap();
    let manifest = storage.latest().unwrap().unwrap();
    let run_id = &manifest.run;
    let file = |source: &str| format!("rejects/{run_id}/{source}.jsonl");
    assert_eq!(
        manifest.rejects,
        [
            RejectCount {
                source: "customers".into(),
                rows: 1,
                file: file("customers"),
            },
            RejectCount {
                source: "orders".into(),
                rows: 5,
                file: file("orders"),
            },
            RejectCount {
                source: "email_events".into(),
                rows: 4,
                file: file("email_events"),
            },
        ]
    );

    // The summary names each rejects file after the outputs; stderr warns.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let root = storage.root();
    let said: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("rejected"))
        .collect();
    assert_eq!(
        said,
        [
            format!(
                "rejected 1 row of source customers -> {}",
                root.join(file("customers")).display()
            ),
            format!(
                "rejected 5 rows of source orders -> {}",
                root.join(file("orders")).display()
            ),
            format!(
                "rejected 4 rows of source email_events -> {}",
                root.join(file("email_events")).display()
            ),
        ]
    );
    let outputs_at = stdout.find("outputs:").unwrap();
    assert!(stdout.find("rejected").unwrap() > outputs_at, "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: 5 rows of source `orders` do not fit its declared columns and are left out \
             of this run (first: {}:{}: column `order_ts` \"yesterday\" is not a timestamp",
            orders.display(),
            orders_lines + 1
        )),
        "{stderr}"
    );

    // Each rejects file: one JSON object per bad row, in file order, exactly.
    let written = |source: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(root.join(file(source)))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let reject = |path: &Path, line: usize, column: Option<&str>, reason: &str, row: &str| {
        serde_json::json!({
            "file": path.display().to_string(),
            "line": line,
            "column": column,
            "reason": reason,
            "row": row,
        })
    };
    let not_nullable = |what: &str| {
        format!(
            "is {what}, but the column is not nullable (declare it `string?` if nulls are expected)"
        )
    };
    let first = orders_lines + 1;
    assert_eq!(
        written("orders"),
        [
            reject(
                &orders,
                first,
                Some("order_ts"),
                "\"yesterday\" is not a timestamp (like 2024-11-03 14:22:05)",
                "O9001,yesterday,C0001,a@example.com,10.00,completed,[],1",
            ),
            reject(
                &orders,
                first + 1,
                Some("amount"),
                "\"ten euros\" is not a decimal(12, 2) (a number like 12.50)",
                "O9002,2024-06-01 10:00:00,C0001,a@example.com,ten euros,completed,[],1",
            ),
            reject(
                &orders,
                first + 2,
                Some("customer_id"),
                &not_nullable("empty"),
                "O9003,2024-06-01 10:00:00,,a@example.com,10.00,completed,[],1",
            ),
            reject(
                &orders,
                first + 3,
                None,
                "has 9 fields, but the header has 8",
                "O9004,2024-06-01 10:00:00,C0001,a@example.com,10.00,completed,[],1,extra",
            ),
            reject(
                &orders,
                first + 4,
                Some("amount"),
                "\"1,000.00\" is not a decimal(12, 2) (a number like 12.50)",
                "O9005,2024-06-01 10:00:00,C0001,a@example.com,\"1,000.00\",completed,\"[\"\"X\"\"]\",1",
            ),
        ]
    );
    assert_eq!(
        written("customers"),
        [reject(
            &customers,
            customers_lines + 1,
            Some("marketing_opt_in"),
            "\"maybe\" is not a bool (true or false)",
            "C9999,x@example.com,X,DE,1990-01-01,2024-01-01 00:00:00,maybe",
        )]
    );
    let first = email_lines + 1;
    assert_eq!(
        written("email_events"),
        [
            reject(
                &email_events,
                first,
                None,
                "is not JSON: EOF while parsing an object (at column 76)",
                "{\"event_ts\": \"2024-06-14 08:00:18\", \"email\": \"a@example.com\", \"type\": \"open\"",
            ),
            reject(
                &email_events,
                first + 1,
                Some("email"),
                &not_nullable("missing"),
                "{\"event_ts\": \"2024-06-14 08:00:18\", \"type\": \"open\", \"campaign\": \"newsletter_2024_06\"}",
            ),
            reject(
                &email_events,
                first + 2,
                Some("event_ts"),
                "20240614 is not a timestamp",
                "{\"event_ts\": 20240614, \"email\": \"a@example.com\", \"type\": \"open\", \"campaign\": \"newsletter_2024_06\"}",
            ),
            reject(
                &email_events,
                first + 3,
                None,
                "is not a JSON object",
                "[\"2024-06-14 08:00:18\", \"a@example.com\", \"open\", \"newsletter_2024_06\"]",
            ),
        ]
    );

    // The good rows loaded: every output equals the run on the clean data.
    let clean_storage = Storage::open(&clean.join(".cdp")).unwrap();
    assert_eq!(clean_storage.latest().unwrap().unwrap().rejects, []);
    let (expected, got) = (outputs(&clean_storage), outputs(&storage));
    assert!(got
        .iter()
        .any(|(t, rows)| t == "customer_profile" && rows.len() == 78));
    assert_eq!(
        got.iter().map(|(t, _)| t).collect::<Vec<_>>(),
        expected.iter().map(|(t, _)| t).collect::<Vec<_>>()
    );
    for ((table, rows), (_, clean_rows)) in got.iter().zip(&expected) {
        assert_eq!(rows, clean_rows, "{table}");
    }
}
