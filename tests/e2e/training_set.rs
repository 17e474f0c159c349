//! `cdp training-set` end to end: a spine file in, point-in-time values out (CSV and Parquet),
//! checked against values computed by hand from examples/retail's orders, and precise errors for
//! spines that cannot be used.

use std::path::Path;

use crate::support::{cdp, text};

fn retail() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/retail")
        .to_string_lossy()
        .into_owned()
}

/// The CSV's rows as maps from column name to text.
fn records(csv_text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            header
                .iter()
                .cloned()
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect()
}

/// Customer C0001's completed orders (examples/retail/data/orders.csv, by customer_id or her
/// email): 172.29 (06-02), 225.86 (06-22), 268.47 (07-12), 168.31 (07-18), 331.04 (07-23),
/// 106.46 (08-02), 157.57 (10-15), 106.27 (10-26), 241.98 (11-05), 125.50 (11-27),
/// 230.44 (11-29) in 2024, two more after 2024-12-01; a cancelled one on 07-29.
/// - as of 2023-06-01: none, so 0 orders and 0.00;
/// - as of 2024-08-01: 5 orders, 1165.97; last 30 days 268.47 + 168.31 + 331.04 = 767.82 (3);
/// - as of 2024-12-01: 11 orders, 2134.19; last 30 days 241.98 + 125.50 + 230.44 = 597.92 (3).
#[test]
fn training_set_rows_have_the_values_as_of_their_own_time() {
    let tmp = tempfile::tempdir().unwrap();
    let spine = tmp.path().join("spine.csv");
    std::fs::write(
        &spine,
        "customer_id,ts,label\nC0001,2023-06-01 00:00:00,a\nC0001,2024-08-01 00:00:00,b\n\
         C0001,2024-12-01 00:00:00,c\nNOBODY,2024-12-01 00:00:00,d\n",
    )
    .unwrap();
    let run = cdp(&[
        "training-set",
        &retail(),
        "--spine",
        spine.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let rows = records(&String::from_utf8_lossy(&run.stdout));
    assert_eq!(rows.len(), 4, "one row per spine row");
    let expect = [
        ("2023-06-01T00:00:00", "0", "0.00", "0", "0.00"),
        ("2024-08-01T00:00:00", "5", "1165.97", "3", "767.82"),
        ("2024-12-01T00:00:00", "11", "2134.19", "3", "597.92"),
    ];
    for (row, (ts, orders, ltv, orders_30d, revenue_30d)) in rows.iter().zip(expect) {
        assert_eq!(row["customer_id"], "C0001");
        assert_eq!(row["ts"], ts);
        assert_eq!(row["orders_total"], orders, "{ts}");
        assert_eq!(row["lifetime_value"], ltv, "{ts}");
        assert_eq!(row["orders_30d"], orders_30d, "{ts}");
        assert_eq!(row["revenue_30d"], revenue_30d, "{ts}");
        assert_eq!(row["first_name"], "Hannah");
    }
    // An id nobody has keeps its row, with no values.
    assert_eq!(rows[3]["customer_id"], "NOBODY");
    assert_eq!(rows[3]["lifetime_value"], "");
    assert!(
        !rows[0].contains_key("label"),
        "spine columns other than key and ts are not copied"
    );

    // By another key (normalized as the entity normalizes it), written as Parquet.
    std::fs::write(
        &spine,
        "email,ts\n Hannah.Becker@Bluewin.CH,2024-08-01 00:00:00\n",
    )
    .unwrap();
    let parquet = tmp.path().join("out.parquet");
    let run = cdp(&[
        "training-set",
        &retail(),
        "--spine",
        spine.to_str().unwrap(),
        "--out",
        parquet.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("1 rows"),
        "{}",
        text(&run)
    );
    let file = std::fs::File::open(&parquet).unwrap();
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    let printed = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert!(
        printed.contains("1165.97") && printed.contains("767.82"),
        "{printed}"
    );
}

#[test]
fn spines_that_cannot_be_used_are_refused_precisely() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "no_ts.csv",
            "customer_id,when\nC0001,2024-01-01\n",
            "the spine has no timestamp column `ts` (columns: customer_id, when)",
        ),
        (
            "no_key.csv",
            "who,ts\nC0001,2024-01-01 00:00:00\n",
            "the spine needs a column named after a key of `customer`",
        ),
        (
            "bad_ts.csv",
            "customer_id,ts\nC0001,2024-01-01 00:00:00\nC0002,yesterday\n",
            "bad_ts.csv:line 3: column `ts`: is not a timestamp",
        ),
        (
            "spine.txt",
            "x",
            "a spine is a .csv, .parquet or .jsonl file",
        ),
    ];
    for (name, content, message) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, content).unwrap();
        let run = cdp(&["training-set", &retail(), "--spine", path.to_str().unwrap()]);
        assert_eq!(run.status.code(), Some(1), "{name}: {}", text(&run));
        assert!(
            String::from_utf8_lossy(&run.stderr).contains(message),
            "{name}: {}",
            text(&run)
        );
        assert!(run.stdout.is_empty(), "{name}: {}", text(&run));
    }
}
