//! `cdp demo`: writes a project with generated data, runs it, and runs it again on the next call.

use cdp_runtime::store::Storage;

use crate::support::{cdp, text};

#[test]
fn demo_writes_a_project_runs_it_and_runs_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let d = dir.to_str().unwrap();
    let args = ["demo", d, "--profiles", "1500", "--events", "30000"];
    let first = cdp(&args);
    assert!(first.status.success(), "{}", text(&first));
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(out.contains("committed") && out.contains("Next:"), "{out}");
    assert!(out.contains("cdp profile email="), "{out}");
    for file in [
        "cdp.toml",
        "sources.cdp",
        "data/orders.csv",
        "data/web_events.csv",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let storage = Storage::open(&dir.join(".cdp")).unwrap();
    let one = storage.latest().unwrap().expect("a committed run");
    let rows = |m: &cdp_runtime::store::Manifest, t: &str| {
        m.tables.iter().find(|x| x.table == t).map(|x| x.rows)
    };
    let profiles = rows(&one, "customer_profile").unwrap();
    assert!(
        (1000..=2500).contains(&profiles),
        "about 1,500 people make {profiles} profiles"
    );
    assert!(rows(&one, "customer_segments").unwrap() > 0);
    // The same data is generated for the same seed: a second call keeps it and runs again,
    // continuing from the first run (same profiles, nobody re-enters a journey).
    let orders = std::fs::read(dir.join("data/orders.csv")).unwrap();
    let second = cdp(&args);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already holds a project"),
        "{}",
        text(&second)
    );
    assert_eq!(std::fs::read(dir.join("data/orders.csv")).unwrap(), orders);
    let two = storage.latest().unwrap().unwrap();
    assert_ne!(one.run, two.run);
    assert_eq!(rows(&two, "customer_profile"), Some(profiles));
    assert_eq!(rows(&two, "welcome_transitions"), Some(0));

    // A directory holding something else is left alone.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let refused = cdp(&["demo", other.to_str().unwrap(), "--profiles", "100"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("is not empty"),
        "{}",
        text(&refused)
    );
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
}
