//! `cdp profile` end to end: `cdp run` on a copy of examples/retail fills the online store, a
//! customer is found by any identity key or canonical id with the values computed by hand from
//! the data, a second run changes them and records the segment entry, and an online store that
//! lags the offline store is brought up to date before it is read.

use std::io::Write as _;
use std::path::Path;
use std::process::Output;

use cdp_runtime::online::{self, OnlineStore};
use cdp_runtime::store::Storage;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use serde_json::Value;

use crate::support::{cdp, copy_project, profile_json, profile_value as value, retail_copy, text};

fn run(dir: &Path) -> String {
    let o = cdp(&["run", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn profile(dir: &Path, key: &str) -> Output {
    cdp(&["profile", key, "--dir", dir.to_str().unwrap()])
}

fn segments(p: &Value) -> Vec<&str> {
    p["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// The rows (change, canonical_id, segment, at, run) of the last run's segment history.
fn history(dir: &Path) -> Vec<[String; 5]> {
    let storage = Storage::open(&dir.join(".cdp")).unwrap();
    let latest = storage.latest().unwrap().unwrap();
    let t = latest
        .tables
        .iter()
        .find(|t| t.table == "customer_segment_history")
        .expect("the run committed its segment history");
    let (_, batches) = storage.read(t).unwrap();
    let mut rows = Vec::new();
    for b in &batches {
        let column = |name: &str| {
            let c = cast(b.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
            c.as_string::<i32>().clone()
        };
        let (change, id, segment, at, run) = (
            column("change"),
            column("canonical_id"),
            column("segment"),
            column("at"),
            column("run"),
        );
        for r in 0..b.num_rows() {
            assert!(!at.is_null(r));
            rows.push([
                change.value(r).to_string(),
                id.value(r).to_string(),
                segment.value(r).to_string(),
                at.value(r).to_string(),
                run.value(r).to_string(),
            ]);
        }
    }
    rows
}

/// Julia Meyer (customer C0015, account email `  Julia.Meyer@GMAIL.COM`, cookie
/// CK-3a38a808-036) as of 2024-12-01 00:00:00, by hand from examples/retail/data:
///
/// - orders.csv: five completed orders up to the as-of time — O1128 2024-07-01 23:34:00 84.95,
///   O1129 2024-07-14 58.91, O1130 2024-07-17 51.78, O1126 2024-10-30 51.60,
///   O1127 2024-11-29 16:15:29 47.57. lifetime_value = 84.95 + 58.91 + 51.78 + 51.60 + 47.57
///   = 294.81; in the 30 days after 2024-11-01 00:00:00 only O1127: orders_30d = 1,
///   revenue_30d = 47.57. Smallest 47.57, largest 84.95; the first three by time O1128, O1129,
///   O1130.
/// - email_events.csv: in the 90 days after 2024-09-02 00:00:00, sent 2024-09-02 00:11:18,
///   2024-10-18 and 2024-11-28 (three), opened 2024-10-19 (one), clicked newsletter_2024_10.
/// - 294.81 < 500 and no order above 100 in 30 days: not `high_value`; the address ends with
///   `@gmail.com`: `gmail_users`.
#[test]
fn a_profile_is_found_by_any_key_with_the_values_of_its_data() {
    let (_tmp, dir) = retail_copy();
    let out = run(&dir);
    assert!(
        out.contains("online store: 78 profiles, 205 identity keys ("),
        "{out}"
    );

    // The email as typed anywhere: case and spaces do not matter (lower(trim(email))).
    let by_email = profile(&dir, "email= JULIA.meyer@Gmail.COM ");
    assert!(by_email.status.success(), "{}", text(&by_email));
    let shown = String::from_utf8_lossy(&by_email.stdout).into_owned();
    for line in [
        "customer_id = C0015",
        "email = julia.meyer@gmail.com",
        "cookie_id = CK-3a38a808-036",
        "contact_email = julia.meyer@gmail.com",
        "country = DE",
        "orders_total = 5",
        "orders_30d = 1",
        "lifetime_value = 294.81",
        "revenue_30d = 47.57",
        "smallest_order = 47.57",
        "largest_order = 84.95",
        "first_order_at = 2024-07-01 23:34:00",
        "last_purchase_at = 2024-11-29 16:15:29",
        "first_order_ids = [O1128, O1129, O1130]",
        "emails_sent_90d = 3",
        "email_opens_90d = 1",
        "last_campaign_clicked = newsletter_2024_10",
        "as of 2024-12-01 00:00:00, run ",
    ] {
        assert!(
            shown.lines().any(|l| l.trim_start().starts_with(line)),
            "missing `{line}` in\n{shown}"
        );
    }

    let p = profile_json(&dir, "email=julia.meyer@gmail.com");
    let id = p["canonical_id"].as_str().unwrap().to_string();
    assert_eq!(p["as_of"], "2024-12-01 00:00:00");
    let ltv = value(&p, "lifetime_value");
    assert_eq!(
        (&ltv["kind"], &ltv["type"], &ltv["value"]),
        (
            &Value::from("feature"),
            &Value::from("decimal(38, 2)"),
            &Value::from("294.81")
        )
    );
    assert_eq!(value(&p, "orders_total")["value"], 5);
    assert_eq!(value(&p, "country")["kind"], "attribute");
    assert!(segments(&p).contains(&"gmail_users"), "{p:#}");
    assert!(!segments(&p).contains(&"high_value"), "{p:#}");

    // The same profile by its anonymous cookie (a bare value), by canonical id, and by the
    // account id as a system writes it in lower case (upper(trim(customer_id))).
    for key in [
        "CK-3a38a808-036".to_string(),
        id.clone(),
        format!("canonical_id={id}"),
        "customer_id=c0015".to_string(),
    ] {
        assert_eq!(profile_json(&dir, &key), p, "{key}");
    }

    // Unknown keys, values the entity never links on, and not-a-key names.
    for (key, message) in [
        (
            "email=nobody@example.org",
            "error: no profile has email=nobody@example.org",
        ),
        (
            "email=test@example.com",
            "error: no profile has email=test@example.com",
        ),
        ("nobody", "error: no profile has nobody"),
        ("emial=x@y.z", "`emial` is not an identity key"),
    ] {
        let o = profile(&dir, key);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains(message), "{}", text(&o));
    }

    // The first run's history: every membership entered.
    let first = history(&dir);
    assert_eq!(first.len(), 352);
    assert!(first.iter().all(|r| r[0] == "enter"));
    assert!(first
        .iter()
        .any(|r| r[1] == id && r[2] == "gmail_users" && r[3].starts_with("2024-12-01")));
}

/// A sixth completed order of 300.00 on 2024-11-30 for C0015: lifetime_value 294.81 + 300.00
/// = 594.81 ≥ 500 makes her `high_value`; with six orders (> 5) in DE she is `vip` too.
#[test]
fn a_new_order_changes_the_values_and_the_segment_history_records_the_entry() {
    let (_tmp, dir) = retail_copy();
    run(&dir);
    let before = profile_json(&dir, "customer_id=C0015");
    let id = before["canonical_id"].as_str().unwrap().to_string();

    let mut orders = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("data/orders.csv"))
        .unwrap();
    writeln!(
        orders,
        "O9001,2024-11-30 12:00:00,C0015,julia.meyer@gmail.com,300.00,completed,\"[\"\"LUXUR-0001\"\"]\",1"
    )
    .unwrap();
    drop(orders);
    run(&dir);

    let after = profile_json(&dir, "email=julia.meyer@gmail.com");
    assert_eq!(after["canonical_id"], id.as_str());
    assert_ne!(after["run"], before["run"]);
    assert_eq!(value(&after, "lifetime_value")["value"], "594.81");
    assert_eq!(value(&after, "orders_total")["value"], 6);
    assert_eq!(value(&after, "largest_order")["value"], "300.00");
    assert!(segments(&after).contains(&"high_value"), "{after:#}");

    // Exactly her two entries, at the run's as-of time; nobody else's data changed.
    let run_id = after["run"].as_str().unwrap();
    let mut changes = history(&dir);
    changes.sort();
    let entry = |segment: &str| {
        [
            "enter".to_string(),
            id.clone(),
            segment.to_string(),
            "2024-12-01T00:00:00".to_string(),
            run_id.to_string(),
        ]
    };
    assert_eq!(changes, [entry("high_value"), entry("vip")]);
}

#[test]
fn without_a_committed_run_profile_says_to_run_first() {
    let (_tmp, dir) = retail_copy();
    let o = profile(&dir, "email=julia.meyer@gmail.com");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("`cdp run"), "{}", text(&o));
    assert!(!dir.join(".cdp").exists(), "reading writes nothing");
}

/// A run killed after its offline commit, before the online store had its values: the store
/// still says the previous run. Simulated by putting back the store of the first run after a
/// second; then by deleting the store altogether.
#[test]
fn an_online_store_behind_the_offline_store_is_brought_up_to_date() {
    let (tmp, dir) = retail_copy();
    run(&dir);
    let online = dir.join(".cdp/online");
    let saved = tmp.path().join("online-after-first-run");
    copy_project(&online, &saved);

    let mut orders = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("data/orders.csv"))
        .unwrap();
    writeln!(
        orders,
        "O9002,2024-11-30 12:00:00,C0015,julia.meyer@gmail.com,10.00,completed,,1"
    )
    .unwrap();
    drop(orders);
    run(&dir);
    std::fs::remove_dir_all(&online).unwrap();
    copy_project(&saved, &online);

    let o = profile(&dir, "email=julia.meyer@gmail.com");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("lagged the offline store"),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("lifetime_value = 304.81"),
        "{}",
        text(&o)
    );
    let latest = Storage::open(&dir.join(".cdp"))
        .unwrap()
        .latest()
        .unwrap()
        .unwrap();
    assert_eq!(
        profile_json(&dir, "email=julia.meyer@gmail.com")["run"],
        latest.run.as_str()
    );

    // No store at all: rebuilt from the offline store.
    std::fs::remove_dir_all(&online).unwrap();
    let p = profile_json(&dir, "CK-3a38a808-036");
    assert_eq!(value(&p, "lifetime_value")["value"], "304.81");
    assert_eq!(p["run"], latest.run.as_str());
}

/// A server holds the online store (sled allows one process at a time): `cdp run` still
/// commits, and leaves the store to its holder; once it is free, `cdp profile` brings it up.
#[test]
fn a_run_commits_while_another_process_holds_the_online_store() {
    let (_tmp, dir) = retail_copy();
    run(&dir);
    let held = OnlineStore::open(&online::path(&dir.join(".cdp"))).unwrap();
    let out = run(&dir);
    assert!(
        out.contains("online store: held by another process"),
        "{out}"
    );
    let o = profile(&dir, "C0015");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("in use by another cdp process"),
        "{}",
        text(&o)
    );
    drop(held);

    let o = profile(&dir, "C0015");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("lagged the offline store"),
        "{}",
        text(&o)
    );
}
