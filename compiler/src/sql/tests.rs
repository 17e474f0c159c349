//! Snapshots of the SQL of the example projects: the DataFusion dialect in full, every other
//! dialect as a diff against it, so that a review sees exactly what a dialect changes.

use std::path::Path;

use super::{compile, Dialect};

/// The as-of time of the examples: 2024-12-01 00:00:00 UTC.
const AS_OF: i64 = 1_733_011_200_000_000;

fn example_program(name: &str, dialect: Dialect) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let project = crate::load_project(&dir).expect("example loads");
    let checked = crate::check(&project);
    assert!(
        !checked.has_errors(),
        "example {name} has errors: {:?}",
        checked.diagnostics
    );
    let ir = crate::lower(&checked).expect("example lowers");
    compile(&ir, dialect, AS_OF).to_script()
}

fn diff(base: &str, other: &str) -> String {
    similar::TextDiff::from_lines(base, other)
        .unified_diff()
        .context_radius(1)
        .header("datafusion", "dialect")
        .to_string()
}

#[test]
fn retail_sql_per_dialect() {
    let base = example_program("retail", Dialect::DataFusion);
    insta::assert_snapshot!("retail_datafusion", base);
    for dialect in Dialect::ALL
        .into_iter()
        .filter(|d| *d != Dialect::DataFusion)
    {
        let other = example_program("retail", dialect);
        insta::assert_snapshot!(
            format!("retail_{}_diff", dialect.name()),
            diff(&base, &other)
        );
    }
}

#[test]
fn compiled_sql_is_deterministic() {
    assert_eq!(
        example_program("retail", Dialect::Postgres),
        example_program("retail", Dialect::Postgres)
    );
}

#[test]
fn retail_training_set_sql() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/retail");
    let checked = crate::check(&crate::load_project(&dir).expect("example loads"));
    let ir = crate::lower(&checked).expect("example lowers");
    let program =
        super::training_set(&ir, Dialect::DataFusion, AS_OF, "customer", None).expect("compiles");
    assert_eq!(program.outputs, ["customer_training_set"]);
    let script = program.to_script();
    // Nothing after a spine point's own time may leak in: every event relation is bounded by it.
    assert!(script.contains("r.order_ts <= p.spine_ts"), "{script}");
    insta::assert_snapshot!("retail_training_set_datafusion", script);
    let err = super::training_set(&ir, Dialect::DataFusion, AS_OF, "customer", Some("phone"))
        .unwrap_err();
    assert!(err.contains("no key `phone`"), "{err}");
}

/// DuckDB numbers the profiles inside the values statement; the number's column must not take
/// the name of a source column the definitions read (here `profile` and `profile_`).
#[test]
fn numbered_profiles_avoid_source_column_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("project.cdp"),
        r#"
source visits {
  time ts
  columns {
    visitor: string
    profile: string?
    profile_: int?
    ts: timestamp
  }
}

entity visitor {
  key visitor
  from visits { visitor = visitor }
}

behavior visit of visitor = visits

feature last_profile of visitor = last(visit.profile)

feature pages of visitor = sum(visit.profile_)
"#,
    )
    .expect("write project");
    let checked = crate::check(&crate::load_project(dir.path()).expect("project loads"));
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    let ir = crate::lower(&checked).expect("project lowers");
    let duckdb = compile(&ir, Dialect::DuckDb, AS_OF).to_script();
    assert!(duckdb.contains("SELECT c.label AS profile__, "), "{duckdb}");
    assert!(
        duckdb.contains("SELECT k0.profile__ AS profile__, s.visitor, s.profile, s.profile_, s.ts"),
        "{duckdb}"
    );
    assert!(duckdb.contains("GROUP BY profile__"), "{duckdb}");
    // The other dialects key the values statement by the canonical id.
    let postgres = compile(&ir, Dialect::Postgres, AS_OF).to_script();
    assert!(!postgres.contains("profile__"), "{postgres}");
}

/// Compiles a one-file project for PostgreSQL (rows inline in the values statement) and for
/// DataFusion (rows as tables of their own).
fn compile_text(text: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("project.cdp"), text).expect("write project");
    let checked = crate::check(&crate::load_project(dir.path()).expect("project loads"));
    assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
    let ir = crate::lower(&checked).expect("project lowers");
    (
        compile(&ir, Dialect::Postgres, AS_OF).to_script(),
        compile(&ir, Dialect::DataFusion, AS_OF).to_script(),
    )
}

const CLICKS: &str = r#"
source clicks {
  time ts
  columns {
    visitor: string
    kind: string
    ts: timestamp
  }
}

entity visitor {
  key visitor
  from clicks { visitor = visitor }
}

behavior buy of visitor = clicks where kind = "buy"
behavior look of visitor = clicks where kind = "look"

feature buys_7d of visitor = count(buy) over 7d
feature looks of visitor = count(look)
"#;

/// The rows of a source keep only the events some behavior counts: its `where`, and inside the
/// longest window of its readers when all of them are windowed. Each event CTE keeps its own
/// horizon too.
#[test]
fn rows_keep_only_the_events_a_behavior_counts() {
    let (postgres, datafusion) = compile_text(CLICKS);
    for sql in [&postgres, &datafusion] {
        assert!(
            sql.contains("    AND (((s.kind = 'buy') AND s.ts > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '7 days') OR (s.kind = 'look'))"),
            "{sql}"
        );
        assert!(
            sql.contains("AND ts > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '7 days'"),
            "{sql}"
        );
    }
}

/// An attribute over the source reads every row: then no event filter narrows them.
#[test]
fn rows_read_by_an_attribute_are_not_filtered() {
    let text = format!("{CLICKS}\nattribute last_kind of visitor = clicks.kind latest by ts\n");
    let (postgres, datafusion) = compile_text(&text);
    for sql in [&postgres, &datafusion] {
        assert!(!sql.contains("(s.kind = 'buy')"), "{sql}");
    }
}
