//! Cross-engine conformance: the same program on the same sources gives the same tables on
//! DataFusion, PostgreSQL and DuckDB. One engine disagreeing is a bug in the compiler (or the
//! harness) until proven otherwise, so a failure prints the differing rows of every table.

use std::path::Path;

use cdp_runtime::{Dialect, Program, Statement, Step};

use crate::engines::{self, data, Engine};

fn create(table: &str, sql: &str) -> Step {
    Step::Create(statement(table, sql))
}

fn statement(table: &str, sql: &str) -> Statement {
    Statement {
        table: table.to_string(),
        sql: sql.to_string(),
    }
}

fn retail_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/retail")
}

/// SQL written by hand in the subset the three engines share: aggregates with windows on
/// timestamps relative to the as-of time, a window function with ties broken, a LEFT JOIN with
/// nulls, decimals, floats, lists, and a loop (min-label propagation) that runs until no label
/// changes.
fn hand_written_program() -> Program {
    const T: &str = "TIMESTAMP '2024-12-01 00:00:00'";
    let steps = vec![
        create(
            "order_stats",
            &format!(
                "CREATE TABLE order_stats AS
                 SELECT upper(trim(customer_id)) AS customer_key,
                        count(*) AS orders,
                        sum(CASE WHEN status = 'completed' THEN amount END) AS revenue,
                        sum(CASE WHEN status = 'completed' AND order_ts > {T} - INTERVAL '30 days'
                                 THEN 1 ELSE 0 END) AS orders_30d,
                        max(order_ts) AS last_order_at,
                        min(amount) AS smallest,
                        count(DISTINCT status) AS statuses,
                        sum(item_count) AS items
                 FROM orders
                 WHERE order_ts <= {T}
                 GROUP BY upper(trim(customer_id))"
            ),
        ),
        create(
            "cookie_activity",
            &format!(
                "CREATE TABLE cookie_activity AS
                 SELECT cookie_id,
                        count(*) AS events,
                        sum(CASE WHEN ts > {T} - INTERVAL '7 days' THEN 1 ELSE 0 END) AS events_7d,
                        sum(CASE WHEN ts > {T} - INTERVAL '12 hours' THEN 1 ELSE 0 END) AS events_12h,
                        avg(scroll_depth) AS avg_scroll,
                        count(DISTINCT category) AS categories
                 FROM web_events
                 WHERE ts <= {T}
                 GROUP BY cookie_id"
            ),
        ),
        create(
            "latest_page",
            &format!(
                "CREATE TABLE latest_page AS
                 SELECT cookie_id, url, ts, category
                 FROM (SELECT cookie_id, url, ts, category,
                              row_number() OVER (PARTITION BY cookie_id
                                                 ORDER BY ts DESC, url DESC) AS rn
                       FROM web_events
                       WHERE ts <= {T} AND event = 'page') AS ranked
                 WHERE rn = 1"
            ),
        ),
        create(
            "customer_summary",
            "CREATE TABLE customer_summary AS
             SELECT c.customer_id,
                    lower(trim(c.email)) AS email,
                    c.country,
                    c.birth_date,
                    c.marketing_opt_in,
                    coalesce(s.orders, 0) AS orders,
                    s.revenue,
                    s.last_order_at,
                    CAST(s.revenue AS DOUBLE PRECISION) / 3 AS third
             FROM customers AS c
             LEFT JOIN order_stats AS s ON s.customer_key = upper(trim(c.customer_id))",
        ),
        create(
            "baskets",
            "CREATE TABLE baskets AS SELECT order_id, items FROM orders WHERE items IS NOT NULL",
        ),
        // The identity graph: cookies linked to customer ids, customer ids to emails.
        create(
            "id_edges",
            "CREATE TABLE id_edges AS
             SELECT DISTINCT a, b FROM (
               SELECT 'cookie:' || cookie_id AS a, 'customer:' || upper(trim(customer_id)) AS b
               FROM web_events WHERE customer_id IS NOT NULL
               UNION ALL
               SELECT 'customer:' || upper(trim(customer_id)), 'email:' || lower(trim(email))
               FROM orders
               WHERE email IS NOT NULL AND lower(trim(email)) NOT IN ('', 'null', 'test@example.com')
             ) AS one_way
             UNION
             SELECT b, a FROM (
               SELECT 'cookie:' || cookie_id AS a, 'customer:' || upper(trim(customer_id)) AS b
               FROM web_events WHERE customer_id IS NOT NULL
               UNION ALL
               SELECT 'customer:' || upper(trim(customer_id)), 'email:' || lower(trim(email))
               FROM orders
               WHERE email IS NOT NULL AND lower(trim(email)) NOT IN ('', 'null', 'test@example.com')
             ) AS other_way",
        ),
        create(
            "id_labels",
            "CREATE TABLE id_labels AS SELECT DISTINCT a AS node, a AS label FROM id_edges",
        ),
        Step::Loop {
            body: vec![
                statement(
                    "id_labels_next",
                    "CREATE TABLE id_labels_next AS
                     SELECT l.node,
                            CASE WHEN min(n.label) < l.label THEN min(n.label) ELSE l.label END AS label
                     FROM id_labels AS l
                     JOIN id_edges AS e ON e.a = l.node
                     JOIN id_labels AS n ON n.node = e.b
                     GROUP BY l.node, l.label",
                ),
                statement(
                    "id_changes",
                    "CREATE TABLE id_changes AS
                     SELECT count(*) AS changed
                     FROM id_labels_next AS x JOIN id_labels AS l ON l.node = x.node
                     WHERE x.label <> l.label",
                ),
                statement(
                    "id_labels",
                    "CREATE TABLE id_labels AS SELECT node, label FROM id_labels_next",
                ),
            ],
            converged: "SELECT changed FROM id_changes".into(),
            max_rounds: 50,
        },
        create(
            "profiles",
            "CREATE TABLE profiles AS
             SELECT label AS profile, count(*) AS identifiers,
                    sum(CASE WHEN node LIKE 'cookie:%' THEN 1 ELSE 0 END) AS cookies
             FROM id_labels GROUP BY label",
        ),
    ];
    // No outputs named: every table is compared.
    Program {
        dialect: Dialect::DataFusion,
        steps,
        outputs: Vec::new(),
        initial_state: Vec::new(),
    }
}

#[test]
fn hand_written_program_agrees_on_the_retail_example() {
    let (_, inputs) = engines::project_inputs(&retail_dir());
    let outcomes =
        engines::assert_engines_agree("examples/retail", &inputs, &hand_written_program());
    for o in &outcomes {
        assert!(
            o.rounds.len() == 1 && o.rounds[0] >= 2,
            "{} ran the label loop {:?} times",
            o.engine.name(),
            o.rounds
        );
        assert!(o.tables["customer_summary"].rows.len() >= 10);
    }
    assert_eq!(outcomes[0].rounds, outcomes[1].rounds);
    assert_eq!(outcomes[0].rounds, outcomes[2].rounds);
}

#[test]
fn hand_written_program_agrees_on_random_data() {
    let dir = tempfile::tempdir().unwrap();
    let counts = data::write_retail_project(dir.path(), 20241201, 3000).unwrap();
    assert!(
        counts.customers == 3000 && counts.web_events > 10_000,
        "{counts:?}"
    );
    let (_, inputs) = engines::project_inputs(dir.path());
    engines::assert_engines_agree("random retail data", &inputs, &hand_written_program());
}

/// The as-of time of examples/retail's cdp.toml, in microseconds since the epoch.
const AS_OF_MICROS: i64 = data::AS_OF * 1_000_000;

/// Compiles the project in `dir` for each engine's dialect, runs it there, and compares every
/// table the program builds.
fn compiled_project_agrees(what: &str, dir: &Path) -> Vec<engines::Outcome> {
    let (project, inputs) = engines::project_inputs(dir);
    let approximate = engines::approximate_columns(&project);
    engines::assert_dialects_agree(what, &inputs, &approximate, |engine| {
        cdp_runtime::program::compile(&project, engine.dialect(), AS_OF_MICROS)
    })
}

#[test]
fn compiled_retail_example_agrees() {
    let outcomes = compiled_project_agrees("examples/retail compiled", &retail_dir());
    for o in &outcomes {
        assert_eq!(
            o.rounds,
            outcomes[0].rounds,
            "{} loop rounds",
            o.engine.name()
        );
    }
    let profiles = &outcomes[0].tables["customer_profile"];
    assert!(
        profiles.rows.len() >= 10,
        "{} profiles",
        profiles.rows.len()
    );
}

#[test]
fn compiled_retail_on_random_data_agrees() {
    let dir = tempfile::tempdir().unwrap();
    data::write_retail_project(dir.path(), 7, 3000).unwrap();
    compiled_project_agrees("examples/retail compiled, random data", dir.path());
}

/// A disagreement is reported with the engines' names and the rows only one side has.
#[test]
fn differences_name_engines_and_rows() {
    use std::collections::BTreeMap;
    let table = |rows: &[&[&str]]| {
        engines::CanonTable::new(
            vec!["id".into(), "v".into()],
            rows.iter()
                .map(|r| r.iter().map(|s| s.to_string()).collect())
                .collect(),
        )
    };
    let a = BTreeMap::from([("t".to_string(), table(&[&["1", "x"], &["2", "y"]]))]);
    let b = BTreeMap::from([("t".to_string(), table(&[&["1", "x"], &["2", "z"]]))]);
    let c = BTreeMap::from([("t".to_string(), table(&[&["1", "x"], &["3", "y"]]))]);
    let report = engines::canon::differences(
        &[
            (Engine::DataFusion.name(), &a),
            (Engine::DuckDb.name(), &b),
            (Engine::Postgres.name(), &c),
        ],
        &[],
    );
    assert!(
        report.contains("id = 2: v = y on DataFusion, z on DuckDB"),
        "{report}"
    );
    assert!(report.contains("only DataFusion: 2 | y"), "{report}");
    assert!(report.contains("only PostgreSQL: 3 | y"), "{report}");
    // Estimates compare within their tolerance.
    let d = BTreeMap::from([("t".to_string(), table(&[&["1", "100"], &["2", "7"]]))]);
    let e = BTreeMap::from([("t".to_string(), table(&[&["1", "108"], &["2", "9"]]))]);
    let f = BTreeMap::from([("t".to_string(), table(&[&["1", "130"], &["2", "7"]]))]);
    let v = ["v".to_string()];
    assert_eq!(engines::canon::differences(&[("A", &d), ("B", &e)], &v), "");
    let report = engines::canon::differences(&[("A", &d), ("B", &f)], &v);
    assert!(report.contains("1: v = 100 on A, 130 on B"), "{report}");
}

/// An input table that is not a source of the project (a state table, a spine), written to a
/// CSV file in `dir`: `columns` with their types, `rows` as the canonical strings.
fn table_input(
    dir: &Path,
    name: &str,
    columns: &[(&str, cdp_compiler::types::Type)],
    rows: &[Vec<String>],
) -> engines::Input {
    use cdp_compiler::{config::DataFormat, ir};
    let path = dir.join(format!("{name}.csv"));
    let mut w = csv::Writer::from_path(&path).unwrap();
    w.write_record(columns.iter().map(|(c, _)| c)).unwrap();
    for row in rows {
        w.write_record(row).unwrap();
    }
    w.flush().unwrap();
    engines::Input {
        source: ir::Source {
            meta: ir::Meta {
                name: name.into(),
                description: None,
                owner: None,
                tags: Vec::new(),
            },
            table: name.into(),
            columns: columns
                .iter()
                .map(|(c, ty)| ir::Column {
                    name: c.to_string(),
                    ty: ty.clone(),
                    nullable: false,
                    pii: false,
                })
                .collect(),
            key: None,
            time: None,
        },
        files: cdp_runtime::SourceFiles::new(DataFormat::Csv, vec![path]),
    }
}

/// Canonical ids are stable across runs: a run that starts from the previous run's id map keeps
/// every profile's id while it grows, and when profiles merge, one old id survives and the others
/// are recorded as merged into it. That second run agrees on every engine too.
#[test]
fn canonical_ids_stay_stable_across_runs_on_every_engine() {
    let dir = tempfile::tempdir().unwrap();
    data::write_retail_project(dir.path(), 11, 3000).unwrap();
    let (project, mut inputs) = engines::project_inputs(dir.path());
    let compile = |dialect, as_of| cdp_runtime::program::compile(&project, dialect, as_of);

    // The first run, 60 days earlier: fewer records, so fewer links between identifiers.
    let earlier = AS_OF_MICROS - 60 * 86_400 * 1_000_000;
    let first = engines::run(
        Engine::DataFusion,
        &inputs,
        &compile(Dialect::DataFusion, earlier),
    )
    .unwrap();
    let old_map = &first.tables["customer_id_map_next"];
    assert!(
        old_map.rows.len() > 3000,
        "{} identifiers",
        old_map.rows.len()
    );

    assert_eq!(old_map.columns, ["key_name", "key_value", "canonical_id"]);
    let string = cdp_compiler::types::Type::String;
    inputs.push(table_input(
        dir.path(),
        "customer_id_map",
        &[
            ("key_name", string.clone()),
            ("key_value", string.clone()),
            ("canonical_id", string),
        ],
        &old_map.rows,
    ));
    let approximate = engines::approximate_columns(&project);
    let outcomes = engines::assert_dialects_agree(
        "second run from the first run's id map",
        &inputs,
        &approximate,
        |engine| compile(engine.dialect(), AS_OF_MICROS),
    );
    let second = &outcomes[0].tables;
    let merges: std::collections::BTreeMap<&str, &str> = second["customer_id_merges"]
        .rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert!(!merges.is_empty(), "the data should merge some profiles");
    let old_ids: std::collections::BTreeSet<&str> =
        old_map.rows.iter().map(|r| r[2].as_str()).collect();
    for (merged, into) in &merges {
        assert!(old_ids.contains(merged) && old_ids.contains(into));
    }
    let new_ids: std::collections::BTreeMap<(&str, &str), &str> = second["customer_identity"]
        .rows
        .iter()
        .map(|r| ((r[0].as_str(), r[1].as_str()), r[2].as_str()))
        .collect();
    let mut kept = 0;
    for row in &old_map.rows {
        let old = row[2].as_str();
        let new = new_ids[&(row[0].as_str(), row[1].as_str())];
        if new == old {
            kept += 1;
        } else {
            assert_eq!(
                merges.get(old),
                Some(&new),
                "{}:{} had id {old}, now {new}, and no merge says so",
                row[0],
                row[1]
            );
        }
    }
    assert!(
        kept > old_map.rows.len() / 2,
        "{kept} identifiers kept their id"
    );
    // A merged id names no profile any more; every surviving old id still does.
    let profiles: std::collections::BTreeSet<&str> = new_ids.values().copied().collect();
    for (merged, into) in &merges {
        assert!(!profiles.contains(merged) && profiles.contains(into));
    }
}

/// A point-in-time training set agrees on every engine, and a spine row at the as-of time gets
/// exactly the values of the profile table of a run at that time.
#[test]
fn training_set_agrees_and_matches_the_profile_at_the_run_time() {
    use cdp_compiler::types::Type;
    let dir = tempfile::tempdir().unwrap();
    data::write_retail_project(dir.path(), 5, 1500).unwrap();
    let (project, mut inputs) = engines::project_inputs(dir.path());

    // The run at T on DataFusion: the reference profile table.
    let run = engines::run(
        Engine::DataFusion,
        &inputs,
        &cdp_runtime::program::compile(&project, Dialect::DataFusion, AS_OF_MICROS),
    )
    .unwrap();
    let ids: Vec<(&str, &str)> = run.tables["customer_identity"]
        .rows
        .iter()
        .filter(|r| r[0] == "customer_id")
        .map(|r| (r[1].as_str(), r[2].as_str()))
        .collect();
    assert!(ids.len() >= 1000, "{} customer ids", ids.len());

    // The spine: every customer at T, and every third one also at times around window edges,
    // before its first record, and after T.
    let at = |seconds: i64| {
        chrono::DateTime::from_timestamp(data::AS_OF + seconds, 0)
            .unwrap()
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let t = at(0);
    let mut spine = Vec::new();
    for (i, (customer, _)) in ids.iter().enumerate() {
        spine.push(vec![customer.to_string(), t.clone()]);
        if i % 3 == 0 {
            for offset in [-86_400, -7 * 86_400 + 1, -30 * 86_400, -400 * 86_400, 3_600] {
                spine.push(vec![customer.to_string(), at(offset)]);
            }
        }
    }
    // An id nobody has: its row stays, with nulls.
    spine.push(vec!["NOBODY".to_string(), t.clone()]);
    inputs.push(table_input(
        dir.path(),
        "customer_spine",
        &[("customer_id", Type::String), ("ts", Type::Timestamp)],
        &spine,
    ));
    let approximate = engines::approximate_columns(&project);
    let outcomes =
        engines::assert_dialects_agree("training set", &inputs, &approximate, |engine| {
            cdp_compiler::sql::training_set(
                &project,
                engine.dialect(),
                AS_OF_MICROS,
                "customer",
                Some("customer_id"),
            )
            .unwrap()
        });
    let training = &outcomes[0].tables["customer_training_set"];
    assert_eq!(training.rows.len(), spine.len());

    // Rows at T against the profile table, column by column (the training set's columns are
    // the key, ts, then the profile's columns after canonical_id, by name).
    let profile = &run.tables["customer_profile"];
    let by_id: std::collections::BTreeMap<&str, &Vec<String>> =
        profile.rows.iter().map(|r| (r[0].as_str(), r)).collect();
    let shared = profile
        .columns
        .iter()
        .filter(|c| training.columns.contains(c))
        .count();
    assert!(
        shared + 1 == profile.columns.len(),
        "the training set has every profile column: {:?} vs {:?}",
        training.columns,
        profile.columns
    );
    let canonical_of: std::collections::BTreeMap<&str, &str> = ids.iter().copied().collect();
    let mut compared = 0;
    for row in training.rows.iter().filter(|r| r[1] == t) {
        let Some(canonical) = canonical_of.get(row[0].as_str()) else {
            continue;
        };
        let expected = by_id[canonical];
        for (c, name) in profile.columns.iter().enumerate().skip(1) {
            let Some(k) = training.columns.iter().position(|n| n == name) else {
                continue;
            };
            if approximate.contains(name) {
                continue;
            }
            assert_eq!(
                row[k], expected[c],
                "customer {} at T: `{name}` is {} in the training set, {} in the profile",
                row[0], row[k], expected[c]
            );
        }
        compared += 1;
    }
    assert_eq!(compared, ids.len(), "one row at T per customer");
}
