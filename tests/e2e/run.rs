//! `cdp run` end to end: the CLI on a copy of examples/retail and on a larger seeded data set,
//! the offline store it commits, incremental runs, and a run killed half-way.

use std::process::Command;
use std::time::Duration;

use cdp_runtime::store::Storage;

use crate::engines::data;
use crate::support::{cdp, retail_copy, text};

#[test]
fn run_commits_every_output_and_a_second_run_continues_from_it() {
    let (_tmp, dir) = retail_copy();
    let first = cdp(&["run", dir.to_str().unwrap()]);
    assert!(first.status.success(), "{}", text(&first));
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.contains("customer_profile") && out.contains("committed"),
        "{out}"
    );

    let storage = Storage::open(&dir.join(".cdp")).unwrap();
    let one = storage.latest().unwrap().expect("a committed run");
    assert_eq!(one.as_of, "2024-12-01 00:00:00");
    let rows = |m: &cdp_runtime::store::Manifest, t: &str| {
        m.tables
            .iter()
            .find(|x| x.table == t)
            .unwrap_or_else(|| panic!("no {t}"))
            .rows
    };
    assert_eq!(rows(&one, "customer_profile"), 78);
    assert!(rows(&one, "welcome_transitions") > 0);
    for t in &one.tables {
        assert!(storage.root().join(&t.path).exists(), "{}", t.path);
    }

    // The same data again: journeys continue from the stored state, nobody moves, nothing
    // fires twice, and every identifier keeps its canonical id.
    let second = cdp(&["run", dir.to_str().unwrap()]);
    assert!(second.status.success(), "{}", text(&second));
    let two = storage.latest().unwrap().unwrap();
    assert_ne!(one.run, two.run);
    assert_eq!(storage.runs().unwrap().len(), 2);
    assert_eq!(rows(&two, "welcome_transitions"), 0);
    assert_eq!(rows(&two, "welcome_activations"), 0);
    assert_eq!(rows(&two, "customer_id_merges"), 0);
    let ids = |m: &cdp_runtime::store::Manifest| {
        let t = m
            .tables
            .iter()
            .find(|t| t.table == "customer_identity")
            .unwrap();
        let (_, batches) = storage.read(t).unwrap();
        let mut rows: Vec<String> = Vec::new();
        for b in &batches {
            let formatted =
                datafusion::arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b))
                    .unwrap();
            rows.extend(formatted.to_string().lines().skip(3).map(str::to_string));
        }
        rows.sort();
        rows
    };
    assert_eq!(ids(&one), ids(&two));
}

#[test]
fn a_bad_project_or_missing_data_stops_before_anything_is_written() {
    let (_tmp, dir) = retail_copy();
    std::fs::remove_file(dir.join("data/orders.csv")).unwrap();
    let run = cdp(&["run", dir.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(text(&run).contains("orders.csv"), "{}", text(&run));
    let storage = Storage::open(&dir.join(".cdp")).unwrap();
    assert!(storage.latest().unwrap().is_none());
}

/// A run killed at any moment leaves the store as it was: the next run starts from the last
/// committed run and commits completely.
#[test]
fn a_killed_run_leaves_the_last_committed_run_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    std::fs::create_dir_all(&dir).unwrap();
    data::write_retail_project(&dir, 3, 20_000).unwrap();
    let d = dir.to_str().unwrap();
    let first = cdp(&["run", d]);
    assert!(first.status.success(), "{}", text(&first));
    let storage_dir = dir.join(".cdp");
    let committed = Storage::open(&storage_dir)
        .unwrap()
        .latest()
        .unwrap()
        .unwrap();

    // Kill runs at different moments (loading, the identity loop, writing Parquet).
    for delay in [300u64, 900, 1800] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cdp"))
            .args(["run", d])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever was left, opening the store shows only committed runs, all complete.
        let storage = Storage::open(&storage_dir).unwrap();
        let latest = storage.latest().unwrap().unwrap();
        for m in storage.runs().unwrap() {
            for t in &m.tables {
                assert!(
                    storage.root().join(&t.path).exists(),
                    "{} of {}",
                    t.path,
                    m.run
                );
            }
        }
        assert!(latest.run >= committed.run);
        assert_eq!(
            std::fs::read_dir(storage_dir.join("staging"))
                .unwrap()
                .count(),
            0
        );
    }
    let last = cdp(&["run", d]);
    assert!(last.status.success(), "{}", text(&last));
}

/// `cdp run` resolves identity natively by default; `--identity sql` runs the compiled SQL
/// program's rounds instead. On a seeded 5,000-profile project with shared emails and cookies,
/// every committed output table is the same either way (floating-point sums to 1e-12: their
/// last bits depend on row order).
#[test]
fn native_identity_commits_the_same_tables_as_the_sql_program() {
    let tmp = tempfile::tempdir().unwrap();
    let mut stores = Vec::new();
    for identity in ["native", "sql"] {
        let dir = tmp.path().join(identity);
        std::fs::create_dir_all(&dir).unwrap();
        data::write_retail_project(&dir, 5, 5_000).unwrap();
        let run = cdp(&["run", dir.to_str().unwrap(), "--identity", identity]);
        assert!(run.status.success(), "{}", text(&run));
        let out = String::from_utf8_lossy(&run.stdout).to_string();
        assert_eq!(
            out.contains("customer_identity (native)"),
            identity == "native",
            "{out}"
        );
        assert_eq!(
            out.contains("customer_id_cc (loop)"),
            identity == "sql",
            "{out}"
        );
        stores.push(Storage::open(&dir.join(".cdp")).unwrap());
    }
    let (native, sql) = (&stores[0], &stores[1]);
    let (a, b) = (
        native.latest().unwrap().unwrap(),
        sql.latest().unwrap().unwrap(),
    );
    assert_eq!(a.tables.len(), b.tables.len());
    // Rows as text; the run's own id (the segment history names it) reads the same in both.
    let runs = [a.run.clone(), b.run.clone()];
    let rows = |storage: &Storage, t: &cdp_runtime::store::StoredTable| {
        let (schema, batches) = storage.read(t).unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .replace(&runs[0], "RUN")
            .replace(&runs[1], "RUN");
        let mut rows: Vec<Vec<String>> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(1)
            .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
            .collect();
        rows.sort();
        (schema, rows)
    };
    let close = |x: &String, y: &String| {
        x == y
            || matches!((x.parse::<f64>(), y.parse::<f64>()),
                (Ok(p), Ok(q)) if (p - q).abs() <= 1e-12 * p.abs().max(q.abs()))
    };
    for (t, u) in a.tables.iter().zip(&b.tables) {
        assert_eq!((&t.table, t.rows), (&u.table, u.rows));
        let ((s1, r1), (s2, r2)) = (rows(native, t), rows(sql, u));
        assert_eq!(s1, s2, "{}", t.table);
        for (x, y) in r1.iter().zip(&r2) {
            assert!(
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| close(p, q)),
                "{}:\n{x:?}\n{y:?}",
                t.table
            );
        }
    }
    let profiles = a
        .tables
        .iter()
        .find(|t| t.table == "customer_profile")
        .unwrap();
    assert!(profiles.rows > 1_000, "{}", profiles.rows);
}
