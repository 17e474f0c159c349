//! The registry on small in-memory projects: drafts, plans, snapshots, versions, runs.

use proptest::prelude::*;

use crate::*;

const SOURCES: &str = r#"# Raw data.

source orders "Every order" {
  time order_ts
  columns {
    order_id: string
    customer_id: string
    amount: decimal(12, 2)
    order_ts: timestamp
  }
}
"#;

const PROFILE: &str = r#"entity customer {
  key customer_id
  from orders { customer_id = customer_id }
}

behavior purchase of customer = orders where amount > 0 at order_ts

# Money.
feature lifetime_value of customer "Total spent" = sum(purchase.amount)
  owner "team@shop.example"
  tags ["money", "value"]

segment high_value of customer "Big spenders" {
  # the threshold marketing asked for
  lifetime_value > 100
}

segment vip of customer { high_value and lifetime_value > 1000 }
"#;

fn drafts_of(files: &[(&str, &str)]) -> Vec<Draft> {
    let project = cdp_compiler::project_from_texts(files.iter().copied(), None);
    let checked = cdp_compiler::check(&project);
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    drafts(&project, &checked)
}

fn project(profile: &str) -> Vec<Draft> {
    drafts_of(&[("sources.cdp", SOURCES), ("profile.cdp", profile)])
}

/// The profile with another threshold for `high_value`.
fn with_threshold(threshold: u32) -> String {
    PROFILE.replace(
        "lifetime_value > 100\n",
        &format!("lifetime_value > {threshold}\n"),
    )
}

fn stamp(message: &str) -> Stamp {
    Stamp {
        author: "ada".into(),
        time: "2024-12-01 10:00:00".into(),
        message: message.into(),
    }
}

fn apply(registry: &Registry, drafts: Vec<Draft>, message: &str) -> Option<Snapshot> {
    let plan = registry.plan(drafts).unwrap();
    registry.apply(&plan, &stamp(message)).unwrap()
}

fn find<'a>(drafts: &'a [Draft], name: &str) -> &'a Draft {
    drafts.iter().find(|d| d.name == name).unwrap()
}

#[test]
fn a_draft_is_the_canonical_text_with_its_meta_location_and_upstream() {
    let drafts = project(PROFILE);
    let names: Vec<&str> = drafts.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "orders",
            "customer",
            "purchase",
            "lifetime_value",
            "high_value",
            "vip"
        ]
    );
    let ltv = find(&drafts, "lifetime_value");
    assert_eq!(ltv.kind, "feature");
    assert_eq!(
        ltv.text,
        "feature lifetime_value of customer \"Total spent\" = sum(purchase.amount)\n  owner \"team@shop.example\"\n  tags [\"money\", \"value\"]\n"
    );
    assert_eq!((ltv.file.as_str(), ltv.line), ("profile.cdp", 9));
    assert_eq!(ltv.description.as_deref(), Some("Total spent"));
    assert_eq!(ltv.owner.as_deref(), Some("team@shop.example"));
    assert_eq!(ltv.tags, ["money", "value"]);
    assert_eq!(ltv.upstream, ["customer", "purchase"]);
    assert_eq!(ltv.hash.len(), 64);
    // A comment inside a definition is part of it; one before it belongs to the file.
    assert_eq!(
        find(&drafts, "high_value").text,
        "segment high_value of customer \"Big spenders\" {\n  # the threshold marketing asked for\n  lifetime_value > 100\n}\n"
    );
    assert_eq!(
        find(&drafts, "vip").text,
        "segment vip of customer {\n  high_value and lifetime_value > 1000\n}\n"
    );
    assert_eq!(find(&drafts, "orders").upstream, Vec::<String>::new());
}

#[test]
fn the_content_hash_covers_kind_name_and_text() {
    let h = content_hash("segment", "a", "x");
    assert_eq!(h, content_hash("segment", "a", "x"));
    assert_ne!(h, content_hash("feature", "a", "x"));
    assert_ne!(h, content_hash("segment", "b", "x"));
    assert_ne!(h, content_hash("segment", "a", "y"));
    // Lengths keep the parts apart.
    assert_ne!(content_hash("ab", "c", ""), content_hash("a", "bc", ""));
}

#[test]
fn applying_records_versions_only_for_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::open(tmp.path()).unwrap();

    let first = registry.plan(project(PROFILE)).unwrap();
    assert!(first.base.is_none());
    assert_eq!(first.added().count(), 6);
    let one = registry.apply(&first, &stamp("first")).unwrap().unwrap();
    assert_eq!(one.id, 1);
    assert_eq!(one.added.len(), 6);
    assert!(one.definitions.iter().all(|p| p.version == 1));

    // The same project again: nothing to record.
    let again = registry.plan(project(PROFILE)).unwrap();
    assert!(again.is_empty());
    assert_eq!(registry.apply(&again, &stamp("again")).unwrap(), None);

    // One threshold changes: one new version; what reads it is downstream.
    let changed = with_threshold(200);
    let plan = registry.plan(project(&changed)).unwrap();
    let names = |it: &mut dyn Iterator<Item = &Entry>| -> Vec<String> {
        it.map(|e| e.draft.name.clone()).collect()
    };
    assert_eq!(names(&mut plan.changed()), ["high_value"]);
    assert_eq!(names(&mut plan.added()), Vec::<String>::new());
    let downstream: Vec<&str> = plan
        .downstream("high_value")
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(downstream, ["vip"]);
    let downstream: Vec<&str> = plan
        .downstream("purchase")
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(downstream, ["lifetime_value", "high_value", "vip"]);
    let entry = plan.changed().next().unwrap();
    let Change::Changed { from, text } = &entry.change else {
        panic!("not a change")
    };
    assert_eq!((from.version, entry.version), (1, 2));
    assert_eq!(
        unified_diff(text, &entry.draft.text, "a", "b"),
        "--- a\n+++ b\n@@ -1,4 +1,4 @@\n segment high_value of customer \"Big spenders\" {\n   # the threshold marketing asked for\n-  lifetime_value > 100\n+  lifetime_value > 200\n }\n"
    );
    let two = registry.apply(&plan, &stamp("raise")).unwrap().unwrap();
    assert_eq!(
        (two.id, two.changed.clone()),
        (2, vec!["high_value".into()])
    );

    let history = registry.versions("high_value").unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!((history[0].snapshot, history[1].snapshot), (1, 2));
    assert!(registry.text(&history[1]).unwrap().contains("> 200"));
    assert_eq!(registry.versions("vip").unwrap().len(), 1);
    assert_eq!(
        registry.names().unwrap(),
        [
            "customer",
            "high_value",
            "lifetime_value",
            "orders",
            "purchase",
            "vip"
        ]
    );
}

#[test]
fn going_back_to_an_old_text_is_a_new_version_with_the_old_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::open(tmp.path()).unwrap();
    apply(&registry, project(PROFILE), "one");
    let changed = with_threshold(200);
    apply(&registry, project(&changed), "two");
    let three = apply(&registry, project(PROFILE), "back").unwrap();
    let history = registry.versions("high_value").unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[2].version, 3);
    assert_eq!(history[2].hash, history[0].hash);
    assert_ne!(history[1].hash, history[0].hash);
    let pin = three
        .definitions
        .iter()
        .find(|p| p.name == "high_value")
        .unwrap();
    assert_eq!(pin.version, 3);
}

#[test]
fn a_removed_definition_that_comes_back_unchanged_keeps_its_version() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::open(tmp.path()).unwrap();
    apply(&registry, project(PROFILE), "one");
    let without_vip = &PROFILE[..PROFILE.find("segment vip").unwrap()];
    let plan = registry.plan(project(without_vip)).unwrap();
    assert_eq!(plan.removed.len(), 1);
    assert_eq!(plan.removed[0].name, "vip");
    let two = registry.apply(&plan, &stamp("drop vip")).unwrap().unwrap();
    assert_eq!(two.removed, ["vip"]);
    assert!(two.definitions.iter().all(|p| p.name != "vip"));

    let plan = registry.plan(project(PROFILE)).unwrap();
    let back: Vec<_> = plan.added().collect();
    assert_eq!(
        (back.len(), back[0].version, back[0].new_version),
        (1, 1, false)
    );
    apply(&registry, project(PROFILE), "vip again");
    assert_eq!(registry.versions("vip").unwrap().len(), 1);
    assert_eq!(registry.snapshots().unwrap().len(), 3);
}

#[test]
fn a_plan_made_before_another_apply_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::open(tmp.path()).unwrap();
    let stale = registry.plan(project(PROFILE)).unwrap();
    apply(&registry, project(PROFILE), "one");
    assert!(matches!(
        registry.apply(&stale, &stamp("late")),
        Err(Error::StalePlan)
    ));
}

#[test]
fn snapshots_and_runs_survive_reopening_and_a_second_opener_is_told_it_waits() {
    let tmp = tempfile::tempdir().unwrap();
    let run = RunRecord {
        run: "20241201T100000000Z".into(),
        as_of: "2024-12-01 00:00:00".into(),
        started_at: "2024-12-01 10:00:00".into(),
        finished_at: "2024-12-01 10:00:02".into(),
        steps: vec![StepRun {
            name: "customer_identity".into(),
            millis: 1200,
            rows: vec![
                TableRows {
                    table: "customer_identity".into(),
                    rows: 78,
                },
                TableRows {
                    table: "customer_merges".into(),
                    rows: 3,
                },
            ],
            rounds: Some(4),
            attempts: 1,
        }],
        tables: vec![TableRows {
            table: "customer_profile".into(),
            rows: 78,
        }],
    };
    {
        let registry = Registry::open(tmp.path()).unwrap();
        assert!(matches!(Registry::open(tmp.path()), Err(Error::Locked(_))));
        apply(&registry, project(PROFILE), "one");
        registry.record_run(&run).unwrap();
        let mut second = run.clone();
        second.run = "20241202T100000000Z".into();
        registry.record_run(&second).unwrap();
    }
    let registry = Registry::open_existing(tmp.path()).unwrap().unwrap();
    assert_eq!(registry.latest_snapshot().unwrap().unwrap().id, 1);
    let runs = registry.runs().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0], run);
    assert_eq!(runs[1].run, "20241202T100000000Z");
    assert_eq!(runs[0].steps[0].total_rows(), 81);
}

#[test]
fn a_storage_directory_without_a_registry_is_not_given_one_by_reading() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(Registry::open_existing(tmp.path()).unwrap().is_none());
    assert!(!registry_dir(tmp.path()).exists());
    // What an empty registry would plan, without one.
    let registry = Registry::open(tmp.path()).unwrap();
    assert_eq!(
        Plan::first(project(PROFILE)),
        registry.plan(project(PROFILE)).unwrap()
    );
}

/// The profile file with its layout changed: every space outside strings and comments becomes
/// one of several runs of whitespace, and blank lines come and go.
fn relaid(text: &str, choices: &[u8]) -> String {
    const LAYOUTS: [&str; 5] = [" ", "  ", "\n", "\n    ", "\t"];
    let mut out = String::new();
    let (mut in_string, mut in_comment) = (false, false);
    let mut picks = choices.iter().cycle();
    for c in text.chars() {
        match c {
            '"' if !in_comment => in_string = !in_string,
            '#' if !in_string => in_comment = true,
            '\n' => in_comment = false,
            _ => {}
        }
        if c == ' ' && !in_string && !in_comment {
            let pick = *picks.next().unwrap_or(&0) as usize;
            out.push_str(LAYOUTS[pick % LAYOUTS.len()]);
        } else if c == '\n' && !in_string && picks.next().is_some_and(|p| p % 3 == 0) {
            out.push_str("\n\n");
        } else {
            out.push(c);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Versions are content-addressed: the same text always has the same hash, and a change of
    /// layout alone is no change at all — applying it records nothing.
    #[test]
    fn formatting_changes_keep_every_version(choices in prop::collection::vec(any::<u8>(), 1..64)) {
        let original = project(PROFILE);
        prop_assert_eq!(&original, &project(PROFILE));
        let relaid_text = relaid(PROFILE, &choices);
        let relaid_drafts = project(&relaid_text);
        let hashes = |ds: &[Draft]| ds.iter().map(|d| (d.name.clone(), d.hash.clone())).collect::<Vec<_>>();
        prop_assert_eq!(hashes(&original), hashes(&relaid_drafts));

        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::open(tmp.path()).unwrap();
        apply(&registry, original, "one");
        let plan = registry.plan(relaid_drafts).unwrap();
        prop_assert!(plan.is_empty(), "{}", relaid_text);
        prop_assert_eq!(registry.apply(&plan, &stamp("relaid")).unwrap(), None);
    }

    /// Any change of content is a new hash.
    #[test]
    fn a_changed_threshold_is_a_new_hash(threshold in 101u32..100_000) {
        let changed = with_threshold(threshold);
        let (before, after) = (project(PROFILE), project(&changed));
        prop_assert_ne!(&find(&before, "high_value").hash, &find(&after, "high_value").hash);
    }
}
