//! Rows that do not fit their source's declared columns: `cdp run` loads the good rows, writes
//! each bad one with its file, line, column and reason to the run's rejects files, counts them in
//! its summary and manifest — and the outputs are those of the data without the bad rows.

use std::path::Path;
use std::process::{Command, Output};

use cdp_runtime::store::Storage;

fn cdp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cdp"))
        .args(args)
        .output()
        .expect("cdp runs")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == ".cdp") {
                continue;
            }
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every row of a committed table, as sorted text.
fn table_rows(storage: &Storage, table: &str) -> Vec<String> {
    let m = storage.latest().unwrap().unwrap();
    let t = m.tables.iter().find(|t| t.table == table).unwrap();
    let (_, batches) = storage.read(t).unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let mut rows: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(1)
        .map(String::from)
        .collect();
    rows.sort();
    rows
}

#[test]
fn bad_rows_are_kept_aside_with_their_line_and_reason_and_good_rows_load() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    let broken = tmp.path().join("broken");
    let retail = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/retail");
    copy_dir(&retail, &clean);
    copy_dir(&retail, &broken);

    // Clean data: nothing is rejected.
    let run = cdp(&["run", clean.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(!text(&run).contains("rejected"), "{}", text(&run));
    let clean_store = Storage::open(&clean.join(".cdp")).unwrap();
    assert!(clean_store.latest().unwrap().unwrap().rejects.is_empty());

    // Four broken rows appended to orders.csv, one to customers.csv.
    let orders = broken.join("data/orders.csv");
    let lines = std::fs::read_to_string(&orders).unwrap().lines().count();
    let mut text_orders = std::fs::read_to_string(&orders).unwrap();
    text_orders.push_str(
        "O9001,yesterday,C0001,a@example.com,10.00,completed,[],1\n\
         O9002,2024-06-01 10:00:00,C0001,a@example.com,ten euros,completed,[],1\n\
         O9003,2024-06-01 10:00:00,,a@example.com,10.00,completed,[],1\n\
         O9004,2024-06-01 10:00:00,C0001,a@example.com,10.00,completed,[],1,extra\n",
    );
    std::fs::write(&orders, text_orders).unwrap();
    let customers = broken.join("data/customers.csv");
    let customer_lines = std::fs::read_to_string(&customers).unwrap().lines().count();
    let mut text_customers = std::fs::read_to_string(&customers).unwrap();
    text_customers.push_str("C9999,x@example.com,X,DE,1990-01-01,2024-01-01 00:00:00,maybe\n");
    std::fs::write(&customers, text_customers).unwrap();

    let run = cdp(&["run", broken.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("rejected 4 rows of source orders -> "),
        "{stdout}"
    );
    assert!(
        stdout.contains("rejected 1 rows of source customers -> "),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("warning: 4 rows of source `orders`"),
        "{stderr}"
    );

    let storage = Storage::open(&broken.join(".cdp")).unwrap();
    let manifest = storage.latest().unwrap().unwrap();
    let counts: Vec<(&str, u64)> = manifest
        .rejects
        .iter()
        .map(|r| (r.source.as_str(), r.rows))
        .collect();
    assert_eq!(counts, [("customers", 1), ("orders", 4)]);
    let orders_rejects = &manifest.rejects[1];
    let written = std::fs::read_to_string(storage.root().join(&orders_rejects.file)).unwrap();
    let rejects: Vec<cdp_runtime::load::Reject> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Lines count the header: the file had `lines` lines, the first bad row is line lines + 1.
    let first = lines as u64 + 1;
    let expected = [
        (first, "order_ts", "is not a timestamp"),
        (first + 1, "amount", "is not a decimal"),
        (first + 2, "customer_id", "the column is not nullable"),
        (first + 3, "(row)", "has 9 fields, the header has 8"),
    ];
    assert_eq!(rejects.len(), expected.len(), "{written}");
    for (r, (line, column, reason)) in rejects.iter().zip(expected) {
        assert_eq!((r.line, r.column.as_str()), (line, column), "{r:?}");
        assert!(r.reason.contains(reason), "{r:?} should say {reason}");
        assert!(r.file.ends_with("orders.csv"), "{r:?}");
        assert!(r.row.starts_with("O900"), "{r:?}");
    }
    let customer_reject =
        std::fs::read_to_string(storage.root().join(&manifest.rejects[0].file)).unwrap();
    assert!(
        customer_reject.contains(&format!("\"line\":{}", customer_lines + 1)),
        "{customer_reject}"
    );
    assert!(
        customer_reject.contains("marketing_opt_in"),
        "{customer_reject}"
    );

    // The good rows loaded: every output equals the run on clean data.
    for table in [
        "customer_profile",
        "customer_identity",
        "customer_segments",
        "audience_kpis",
    ] {
        assert_eq!(
            table_rows(&storage, table),
            table_rows(&clean_store, table),
            "{table}"
        );
    }
}
