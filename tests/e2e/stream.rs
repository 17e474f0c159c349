//! Batch = stream: the streaming runtime's values at T equal the batch program's values as of T
//! on DataFusion, for every attribute, feature, segment, journey state and fired activation of
//! examples/retail, on random data
//! (nulls, ties, events on window edges, future events, shared emails merging profiles) fed to
//! the stream out of order within the allowed lateness.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cdp_compiler::ir::{self, EntityId, SourceId};
use cdp_runtime::stream::journey::Happened;
use cdp_runtime::stream::{value, Counts, JourneyEvent, Options, StreamEngine, Value};
use cdp_runtime::Dialect;
use proptest::prelude::*;

use crate::engines::canon::{self, CanonTable};
use crate::engines::{self, data};

const AS_OF_MICROS: i64 = data::AS_OF * 1_000_000;

/// A value in the canonical text of the engines' comparison (`engines::canon`).
fn canonical(v: &Value) -> String {
    match v {
        Value::Null => canon::NULL.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => canon::float(*f),
        Value::Decimal(m, s) => canon::decimal(&value::decimal_string(*m, *s)).unwrap_or_default(),
        Value::Str(s) => s.to_string(),
        Value::Date(d) => value::date_text(*d),
        Value::Timestamp(t) => canon::timestamp_micros(*t),
        // Durations are milliseconds in an Int64 column on the batch side.
        Value::Duration(ms) => ms.to_string(),
        Value::List(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Every source row of the project's files, with the time it reaches the stream at, in that
/// order: rows of timed sources at their time plus a jitter below the lateness (so none is
/// late), timeless rows anywhere (or first, before every timed row); rows dated after T never
/// arrive.
fn arrivals(
    project: &ir::Project,
    inputs: &[engines::Input],
    seed: u64,
    lateness_micros: i64,
    timeless_first: bool,
) -> Vec<(i64, SourceId, Vec<Value>)> {
    let mut rng = data::Rng::new(seed);
    let mut keyed: Vec<(i64, u64, SourceId, Vec<Value>)> = Vec::new();
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    let mut timeless = Vec::new();
    for (i, source) in project.sources.iter().enumerate() {
        let input = &inputs[i];
        let batches = cdp_runtime::load::read_source(&input.source, &input.files)
            .unwrap_or_else(|e| panic!("{e}"));
        for row in value::rows_of(source, &batches) {
            let id = SourceId(i as u32);
            match source.time.map(|c| row[c.index()].as_micros()) {
                Some(Some(t)) if t > AS_OF_MICROS => {}
                Some(Some(t)) => {
                    lo = lo.min(t);
                    hi = hi.max(t);
                    let jitter = rng.below(lateness_micros.max(1) as u64) as i64;
                    keyed.push((t + jitter, rng.next_u64(), id, row));
                }
                _ => timeless.push((id, row)),
            }
        }
    }
    for (id, row) in timeless {
        let at = if timeless_first {
            i64::MIN
        } else if hi > lo {
            rng.range(lo, hi)
        } else {
            lo.min(AS_OF_MICROS)
        };
        keyed.push((at, rng.next_u64(), id, row));
    }
    keyed.sort_by_key(|(at, tie, _, _)| (*at, *tie));
    keyed.into_iter().map(|(at, _, s, r)| (at, s, r)).collect()
}

/// Stream canonical id → batch canonical id, through the identifiers they share; an error when
/// the two identity graphs differ.
fn id_map(
    engine: &StreamEngine,
    entity: EntityId,
    batch_identity: &CanonTable,
) -> Result<HashMap<String, String>, String> {
    // (key, value) -> batch id; stream id -> batch id through any shared identifier.
    let col = |name: &str| {
        batch_identity
            .columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| format!("identity table has no `{name}`"))
    };
    let (kn, kv, ci) = (col("key_name")?, col("key_value")?, col("canonical_id")?);
    let batch_ids: HashMap<(String, String), String> = batch_identity
        .rows
        .iter()
        .map(|r| ((r[kn].clone(), r[kv].clone()), r[ci].clone()))
        .collect();
    let mut id_map: HashMap<String, String> = HashMap::new();
    let stream_ids = engine.identifiers(entity);
    if stream_ids.len() != batch_ids.len() {
        return Err(format!(
            "identifiers: stream has {}, batch {}",
            stream_ids.len(),
            batch_ids.len()
        ));
    }
    // A profile's identifiers as webhooks read them (through its links) are those the scan of
    // every identifier gives it.
    let mut of_profile: HashMap<&str, Vec<(String, String, i64)>> = HashMap::new();
    for (key, value, sid, seen) in &stream_ids {
        of_profile
            .entry(sid)
            .or_default()
            .push((key.clone(), value.clone(), *seen));
    }
    for (sid, mut scanned) in of_profile {
        let mut walked = engine.identifiers_of(entity, sid);
        scanned.sort();
        walked.sort();
        if walked != scanned {
            return Err(format!(
                "profile {sid}: its links reach {walked:?}, a scan finds {scanned:?}"
            ));
        }
    }
    for (key, value, sid, _) in stream_ids {
        let bid = batch_ids
            .get(&(key.clone(), value.clone()))
            .ok_or_else(|| format!("identifier {key}:{value} is not in the batch identity"))?;
        if let Some(previous) = id_map.insert(sid.clone(), bid.clone()) {
            if previous != *bid {
                return Err(format!(
                    "stream profile {sid} holds identifiers of batch profiles {previous} and {bid}"
                ));
            }
        }
    }
    Ok(id_map)
}

/// The stream's profile table in the batch table's columns, its canonical ids replaced by the
/// batch ids of the same identifiers.
fn stream_table(
    engine: &StreamEngine,
    entity: EntityId,
    id_map: &HashMap<String, String>,
    columns: &[String],
) -> Result<CanonTable, String> {
    let p = engine.project();
    let by_name = |name: &str| -> Option<(u8, usize)> {
        let find = |names: Vec<&String>| names.iter().position(|n| *n == name);
        let e = |x: EntityId| x == entity;
        if let Some(i) = find(p.attributes.iter().map(|a| &a.meta.name).collect()) {
            return e(p.attributes[i].entity).then_some((0, i));
        }
        if let Some(i) = find(p.features.iter().map(|a| &a.meta.name).collect()) {
            return e(p.features[i].entity).then_some((1, i));
        }
        find(p.segments.iter().map(|a| &a.meta.name).collect()).map(|i| (2, i))
    };
    let mut rows = Vec::new();
    for (sid, values) in engine.profiles(entity) {
        // What the feature API serves for a canonical id is this profile, after merges and
        // restarts too.
        match engine.lookup(entity, "canonical_id", sid) {
            Some((found, v)) if found == sid && format!("{v:?}") == format!("{values:?}") => {}
            other => {
                return Err(format!(
                    "canonical_id={sid} finds {:?}, not its profile",
                    other.map(|(id, _)| id)
                ))
            }
        }
        let mut row = Vec::with_capacity(columns.len());
        for c in columns {
            if c == "canonical_id" {
                row.push(id_map.get(sid).cloned().unwrap_or_else(|| sid.to_string()));
                continue;
            }
            let v = match by_name(c) {
                Some((0, i)) => &values.attributes[i],
                Some((1, i)) => &values.features[i],
                Some((_, i)) => &values.segments[i],
                None => return Err(format!("no profile value `{c}`")),
            };
            row.push(canonical(v));
        }
        rows.push(row);
    }
    Ok(CanonTable::new(columns.to_vec(), rows))
}

/// The stream's journey states as `<journey>_state_next` and its fired activations as
/// `<journey>_activations`, in the batch tables' columns.
fn journey_tables(
    engine: &StreamEngine,
    entity: EntityId,
    id_map: &HashMap<String, String>,
    fired: &[JourneyEvent],
) -> BTreeMap<String, CanonTable> {
    let p = engine.project();
    let id = |sid: &str| id_map.get(sid).cloned().unwrap_or_else(|| sid.to_string());
    let time = |t: Option<i64>| t.map_or(canon::NULL.to_string(), canon::timestamp_micros);
    let mut out = BTreeMap::new();
    for (j, journey) in p.journeys.iter().enumerate() {
        if journey.entity != entity {
            continue;
        }
        let name = &journey.meta.name;
        let mut columns: Vec<String> = cdp_compiler::sql::JOURNEY_STATE_COLUMNS
            .map(String::from)
            .to_vec();
        columns.extend((0..journey.nodes.len()).map(|k| format!("n{k}_at")));
        let rows = engine
            .journey_states(entity)
            .filter(|(_, jid, _)| jid.index() == j)
            .map(|(sid, _, s)| {
                let mut row = vec![
                    id(sid),
                    s.node.to_string(),
                    s.status.as_str().to_string(),
                    time(Some(s.node_since)),
                    time(Some(s.entered_at)),
                    time(s.finished_at),
                ];
                row.extend(s.reached.iter().map(|t| time(*t)));
                row
            })
            .collect();
        out.insert(format!("{name}_state_next"), CanonTable::new(columns, rows));
        let rows = fired
            .iter()
            .filter(|e| e.journey.index() == j)
            .filter_map(|e| match e.happened {
                Happened::Fired { activation, at } => Some(vec![
                    id(&e.canonical_id),
                    p.activations[activation.index()].meta.name.clone(),
                    time(Some(at)),
                ]),
                _ => None,
            })
            .collect();
        out.insert(
            format!("{name}_activations"),
            CanonTable::new(
                ["canonical_id", "activation", "fired_at"]
                    .map(String::from)
                    .to_vec(),
                rows,
            ),
        );
    }
    out
}

/// The differences between a batch run's tables and the stream's values now: every entity's
/// profile table, journey states and fired activations (`fired`: the stream's journey steps
/// since the stream's previous comparison). Empty when they agree.
fn differences(
    engine: &StreamEngine,
    batch: &BTreeMap<String, CanonTable>,
    fired: &[JourneyEvent],
) -> Result<String, String> {
    let project = engine.project();
    let approximate = engines::approximate_columns(project);
    let mut report = String::new();
    for (e, entity) in project.entities.iter().enumerate() {
        let name = &entity.meta.name;
        let table = |name: &str| {
            batch
                .get(name)
                .cloned()
                .ok_or_else(|| format!("batch has no `{name}`"))
        };
        let profile = table(&format!("{name}_profile"))?;
        let identity = table(&format!("{name}_identity"))?;
        let ids = id_map(engine, EntityId(e as u32), &identity)?;
        let stream = stream_table(engine, EntityId(e as u32), &ids, &profile.columns)?;
        let key = format!("{name}_profile");
        let mut b = journey_tables(engine, EntityId(e as u32), &ids, fired);
        let mut a = BTreeMap::new();
        for name in b.keys() {
            a.insert(name.clone(), table(name)?);
        }
        a.insert(key.clone(), profile);
        b.insert(key, stream);
        report.push_str(&canon::differences(
            &[("batch (DataFusion)", &a), ("stream", &b)],
            &approximate,
        ));
    }
    Ok(report)
}

/// Runs one case: the batch program on DataFusion and the stream on the same rows, compared.
fn batch_equals_stream(seed: u64, profiles: usize, lateness_ms: u64) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    data::write_retail_project(dir.path(), seed, profiles).map_err(|e| e.to_string())?;
    let (project, inputs) = engines::project_inputs(dir.path());
    let program = cdp_runtime::program::compile(&project, Dialect::DataFusion, AS_OF_MICROS);
    let batch = engines::run(engines::Engine::DataFusion, &inputs, &program)?;

    let project = Arc::new(project);
    let mut engine = StreamEngine::new(
        project.clone(),
        Options {
            allowed_lateness_ms: lateness_ms,
        },
    );
    let arrivals = arrivals(
        &project,
        &inputs,
        seed ^ 0x5eed,
        lateness_ms as i64 * 1000,
        false,
    );
    for (_, source, row) in arrivals {
        engine.ingest(source, row);
    }
    let counts = engine.counts();
    if counts.late != 0 {
        return Err(format!("{} rows arrived late: {counts:?}", counts.late));
    }
    engine.touch_all();
    engine.advance(AS_OF_MICROS);
    let fired = engine.take_journey_events();
    let report = differences(&engine, &batch.tables, &fired)?;
    if report.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "seed {seed}, {profiles} profiles, lateness {lateness_ms} ms:\n{report}"
        ))
    }
}

/// The engine a restart makes from `engine`'s checkpoint (its state as bytes).
fn restart(engine: &StreamEngine, project: &Arc<ir::Project>, lateness_ms: u64) -> StreamEngine {
    let bytes = engine.snapshot().unwrap();
    let options = Options {
        allowed_lateness_ms: lateness_ms,
    };
    StreamEngine::restore(project.clone(), options, &bytes).unwrap()
}

/// Runs one case over time: batch runs every 12 hours over the 8 days before T, each from the
/// previous run's state (id map, journey states), and a stream that receives the rows as
/// their time comes and advances to each run's time, restarting from a checkpoint of itself
/// every other run. After every run the stream's values,
/// journey states and the activations fired since the previous run equal the batch run's.
fn batch_runs_equal_stream(seed: u64, profiles: usize) -> Result<(), String> {
    const HALF_DAY: i64 = 43_200 * 1_000_000;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    data::write_retail_project(dir.path(), seed, profiles).map_err(|e| e.to_string())?;
    let (project, inputs) = engines::project_inputs(dir.path());
    let times: Vec<i64> = (0..=16)
        .rev()
        .map(|k| AS_OF_MICROS - k * HALF_DAY)
        .collect();
    let programs: Vec<_> = times
        .iter()
        .map(|t| cdp_runtime::program::compile(&project, Dialect::DataFusion, *t))
        .collect();
    let runs = engines::run_datafusion_in_turn(&inputs, &programs)?;

    let project = Arc::new(project);
    let mut engine = StreamEngine::new(
        project.clone(),
        Options {
            allowed_lateness_ms: 0,
        },
    );
    let mut arrivals = arrivals(&project, &inputs, seed ^ 0x5eed, 0, true).into_iter();
    let mut next = arrivals.next();
    let mut fired_total = 0;
    for (run, (t, batch)) in times.iter().zip(&runs).enumerate() {
        let mut due: Vec<_> = Vec::new();
        while let Some((at, source, row)) = next.take() {
            if at > *t {
                next = Some((at, source, row));
                break;
            }
            due.push((source, row));
            next = arrivals.next();
        }
        // Every other run, the engine restarts from a checkpoint halfway through the rows
        // between two advances (undecided links, unevaluated profiles, merged profiles'
        // exits, future events and timers all in flight).
        let half = if run % 2 == 1 { due.len() / 2 } else { 0 };
        for (i, (source, row)) in due.into_iter().enumerate() {
            if i == half && run % 2 == 1 {
                engine = restart(&engine, &project, 0);
            }
            engine.ingest(source, row);
        }
        engine.touch_all();
        engine.advance(*t);
        let fired = engine.take_journey_events();
        fired_total += fired.len();
        let report = differences(&engine, batch, &fired)?;
        if !report.is_empty() {
            return Err(format!(
                "seed {seed}, {profiles} profiles, the run at {}:\n{report}",
                canon::timestamp_micros(*t)
            ));
        }
    }
    let counts = engine.counts();
    if counts.late != 0 {
        return Err(format!("{} rows arrived late: {counts:?}", counts.late));
    }
    // The case means something only when journeys moved.
    if fired_total == 0 {
        return Err(format!(
            "seed {seed}: no journey step in {} runs",
            times.len()
        ));
    }
    Ok(())
}

#[test]
fn stream_equals_batch_on_the_retail_example_data() {
    // Regression cases first: shrunk counterexamples found by the property test below.
    for (seed, profiles, lateness) in [(7, 40, 3_600_000), (304_550, 35, 0)] {
        if let Err(e) = batch_equals_stream(seed, profiles, lateness) {
            panic!("{e}");
        }
    }
}

/// A stream started from history ([`StreamEngine::start_from`]: no evaluation until the end,
/// as the server starts from the source files) equals the batch run at T too.
#[test]
fn a_stream_started_from_history_equals_batch() {
    for seed in [7, 19] {
        let dir = tempfile::tempdir().unwrap();
        data::write_retail_project(dir.path(), seed, 300).unwrap();
        let (project, inputs) = engines::project_inputs(dir.path());
        let program = cdp_runtime::program::compile(&project, Dialect::DataFusion, AS_OF_MICROS);
        let batch = engines::run(engines::Engine::DataFusion, &inputs, &program).unwrap();
        let project = Arc::new(project);
        let mut engine = StreamEngine::new(project.clone(), Options::default());
        let rows = arrivals(&project, &inputs, seed, 0, true);
        engine.start_from(rows.into_iter().map(|(_, s, r)| (s, r)), AS_OF_MICROS);
        assert_eq!(
            engine.counts().timer_evaluations,
            0,
            "nothing evaluated on the way"
        );
        let fired = engine.take_journey_events();
        let report = differences(&engine, &batch.tables, &fired).unwrap();
        assert!(report.is_empty(), "seed {seed}:\n{report}");
    }
}

#[test]
fn stream_equals_every_batch_run_over_eight_days() {
    // Shrunk counterexamples of the property test below: merged profiles' journey states.
    for (seed, profiles) in [(3, 150), (50_140, 155), (404_119, 52)] {
        if let Err(e) = batch_runs_equal_stream(seed, profiles) {
            panic!("{e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// For random data sets and arrival orders (out of order within the lateness), the stream's
    /// values at T equal the batch values as of T.
    #[test]
    fn stream_equals_batch(
        seed in 0u64..1_000_000,
        profiles in 5usize..60,
        lateness_ms in prop::sample::select(vec![0u64, 60_000, 3_600_000, 86_400_000 * 3]),
    ) {
        if let Err(e) = batch_equals_stream(seed, profiles, lateness_ms) {
            prop_assert!(false, "{}", e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// For random data sets, the stream advanced to the times of successive batch runs equals
    /// each run, journeys included.
    #[test]
    fn stream_equals_batch_runs_over_time(seed in 0u64..1_000_000, profiles in 30usize..200) {
        if let Err(e) = batch_runs_equal_stream(seed, profiles) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// A segment that compares a timestamp with `now()` itself (no duration) is left at that
/// timestamp by time alone: a timer fires there, not at the next event or midnight.
#[test]
fn a_timestamp_compared_with_now_sets_its_own_exit_timer() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cdp.toml"),
        "[project]\nname = \"trials\"\n\n[sources.trials]\npath = \"trials.csv\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("trials.csv"),
        "account_id,started_at,ends_at\nA1,2024-01-01 00:00:00,2024-01-10 15:30:00\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("trials.cdp"),
        "source trials {\n  key account_id\n  time started_at\n  columns {\n    account_id: string\n    \
         started_at: timestamp\n    ends_at: timestamp\n  }\n}\n\n\
         entity account {\n  key account_id\n  from trials { account_id = account_id }\n}\n\n\
         attribute trial_ends_at of account = trials.ends_at latest by started_at\n\n\
         segment in_trial of account {\n  trial_ends_at after now()\n}\n",
    )
    .unwrap();
    let (project, _) = engines::project_inputs(dir.path());
    let mut engine = StreamEngine::new(Arc::new(project), Options::default());
    let at = |s: &str| {
        chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .unwrap()
            .and_utc()
            .timestamp_micros()
    };
    let row = vec![
        Value::str("A1"),
        Value::Timestamp(at("2024-01-01 00:00:00")),
        Value::Timestamp(at("2024-01-10 15:30:00")),
    ];
    engine.ingest(SourceId(0), row);
    engine.advance(at("2024-01-01 00:00:00"));
    let entered = engine.take_transitions();
    assert_eq!(entered.len(), 1, "{entered:?}");
    assert!(entered[0].entered);
    engine.advance(at("2024-02-01 00:00:00"));
    let left = engine.take_transitions();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!left[0].entered && left[0].by_time);
    assert_eq!(
        left[0].at,
        at("2024-01-10 15:30:00"),
        "left at the trial's end"
    );
}

/// Timers fire when time alone can next flip a segment (the runtime's `horizon` analysis), not
/// at every midnight: advanced to arbitrary instants, with nobody re-evaluated on purpose,
/// every profile's held memberships must equal its segments computed afresh at that instant —
/// a flip that waited for a later timer shows up as a stale membership. The instants run from
/// the first event to 400 days after the last, so lapses, anniversaries and birthdays pass.
/// Conditions that time moves in ways a careless next-change analysis gets wrong: a windowed
/// max or min turns null when its window empties (so a negated comparison flips), an equality
/// on a shrinking count is true only in between, a ratio of two shrinking counts moves either
/// way, a negated step makes a sequence true by time.
const AWKWARD_TIMERS: &str = r#"
segment no_big_order_lately of customer { not (max(purchase.amount) over 30d > 100) }
segment no_small_order_lately of customer { not (min(purchase.amount) over 7d < 30) }
segment exactly_two_orders_30d of customer { orders_30d = 2 }
segment mostly_cancelled of customer { cancel_rate_90d > 0.3 and cancel_rate_90d < 0.8 }
segment viewed_then_idle of customer { did page_view then not add_to_cart within 2d over 10d }
segment quiet_week of customer { not (page_views_7d > 3 or revenue_30d > 50) }
# Signups dated after the clock: `%` of a negative count stays negative until it crosses zero.
segment late_in_signup_month of customer { days_between(signup_at, now()) % 30 >= 26 }
segment counting_down_to_signup of customer { days_between(now(), signup_at) % 20 <= -15 }
"#;

fn timers_keep_memberships_current(seed: u64, profiles: usize, gaps: &[i64]) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    data::write_retail_project(dir.path(), seed, profiles).map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("timers.cdp"), AWKWARD_TIMERS).map_err(|e| e.to_string())?;
    let (project, inputs) = engines::project_inputs(dir.path());
    let project = Arc::new(project);
    let mut engine = StreamEngine::new(project.clone(), Options::default());
    let rows = arrivals(&project, &inputs, seed, 0, true);
    let first = rows.iter().map(|(t, _, _)| *t).find(|t| *t != i64::MIN);
    let mut t = first.ok_or("no timed rows")?;
    let end = AS_OF_MICROS + 400 * 86_400_000_000;
    let mut rows = rows.into_iter().peekable();
    let (mut checks, mut by_time) = (0usize, 0usize);
    for k in 0.. {
        while let Some((_, source, row)) = rows.next_if(|(at, _, _)| *at <= t) {
            engine.ingest(source, row);
        }
        engine.advance(t);
        by_time += engine
            .take_transitions()
            .iter()
            .filter(|x| x.by_time)
            .count();
        engine.take_journey_events();
        for e in 0..project.entities.len() {
            let entity = EntityId(e as u32);
            let held: HashMap<String, Vec<ir::SegmentId>> = engine
                .memberships(entity)
                .map(|(id, m)| (id.to_string(), m))
                .collect();
            for (id, values) in engine.profiles(entity) {
                let fresh: Vec<ir::SegmentId> = project
                    .segments
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| {
                        s.entity == entity && values.segments[*i].truth() == Some(true)
                    })
                    .map(|(i, _)| ir::SegmentId(i as u32))
                    .collect();
                if held.get(id) != Some(&fresh) {
                    let name = |ss: &[ir::SegmentId]| {
                        ss.iter()
                            .map(|s| project.segments[s.index()].meta.name.clone())
                            .collect::<Vec<_>>()
                    };
                    return Err(format!(
                        "seed {seed}, {profiles} profiles, at {} (check {checks}): {id} holds {:?}, \
                         is in {:?}",
                        canon::timestamp_micros(t),
                        held.get(id).map(|h| name(h)),
                        name(&fresh)
                    ));
                }
            }
        }
        checks += 1;
        if t >= end {
            break;
        }
        t = (t + gaps[k % gaps.len()]).min(end);
    }
    if by_time == 0 {
        return Err(format!(
            "seed {seed}: no transition by time: the case proves nothing"
        ));
    }
    Ok(())
}

#[test]
fn timers_keep_memberships_current_on_the_retail_data() {
    const DAY: i64 = 86_400_000_000;
    for (seed, profiles) in [(5, 60), (23, 120)] {
        let gaps = [
            DAY / 3 + 17,
            7 * DAY + 1,
            1_000_001,
            2 * DAY - 3_600_000_001,
            13 * DAY,
        ];
        if let Err(e) = timers_keep_memberships_current(seed, profiles, &gaps) {
            panic!("{e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn timers_keep_memberships_current_at_any_instant(
        seed in 0u64..1_000_000,
        profiles in 20usize..100,
        gaps in prop::collection::vec(1i64..30 * 86_400_000_000, 3..12),
    ) {
        if let Err(e) = timers_keep_memberships_current(seed, profiles, &gaps) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// What an engine did and holds, for comparing two engines: every segment transition and
/// journey step (in order), every profile's values and journey states at the end, the counts.
fn moves_and_state(
    engine: &StreamEngine,
    transitions: &[cdp_runtime::stream::Transition],
    steps: &[JourneyEvent],
) -> (Vec<String>, Vec<String>, Vec<String>, Counts) {
    let moves = transitions.iter().map(|t| format!("{t:?}")).collect();
    let steps = steps.iter().map(|e| format!("{e:?}")).collect();
    let mut state = Vec::new();
    for e in 0..engine.project().entities.len() {
        let entity = EntityId(e as u32);
        for (id, values) in engine.profiles(entity) {
            state.push(format!("{id} {values:?}"));
        }
        for (id, j, s) in engine.journey_states(entity) {
            state.push(format!("{id} {j:?} {s:?}"));
        }
        let mut ids = engine.identifiers(entity);
        ids.sort();
        state.extend(ids.into_iter().map(|i| format!("{i:?}")));
    }
    state.sort();
    (moves, steps, state, engine.counts())
}

/// Checkpoints lose nothing: an engine restarted from its own checkpoint at random points (in
/// the middle of the rows between two advances, too) makes the same segment transitions —
/// exits by time included, so its timers survived — the same journey steps, and ends with
/// the same profiles, journey states, identifiers and counts as one that never stopped.
///
/// With `full_timers`, the restarted engine also recomputes whole profiles at every
/// evaluation: the incremental evaluations of the other (only what the events since and the
/// passing of time can have changed) must not change a thing.
fn restarts_change_nothing(
    seed: u64,
    profiles: usize,
    restarts: &[usize],
    full_timers: bool,
) -> Result<(), String> {
    const SIX_HOURS: i64 = 6 * 3_600 * 1_000_000;
    let lateness_ms = 3_600_000;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    data::write_retail_project(dir.path(), seed, profiles).map_err(|e| e.to_string())?;
    let (project, inputs) = engines::project_inputs(dir.path());
    let project = Arc::new(project);
    let options = Options {
        allowed_lateness_ms: lateness_ms,
    };
    let rows = arrivals(&project, &inputs, seed, lateness_ms as i64 * 1000, false);
    let restart_at: std::collections::BTreeSet<usize> =
        restarts.iter().map(|r| r % rows.len().max(1)).collect();
    let mut steady = StreamEngine::new(project.clone(), options);
    let mut restarted = StreamEngine::new(project.clone(), options);
    if full_timers {
        restarted.evaluate_fully();
    }
    let (mut moves, mut steps) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    let mut next_advance = i64::MIN;
    for (i, (at, source, row)) in rows.into_iter().enumerate() {
        if restart_at.contains(&i) {
            restarted = restart(&restarted, &project, lateness_ms);
            if full_timers {
                restarted.evaluate_fully();
            }
        }
        // Advance both every six hours of arrival time, as a server catches up.
        if at >= next_advance {
            for (k, engine) in [&mut steady, &mut restarted].into_iter().enumerate() {
                let clock = engine.clock();
                engine.advance(clock);
                moves[k].extend(engine.take_transitions());
                steps[k].extend(engine.take_journey_events());
            }
            next_advance = at.saturating_add(SIX_HOURS);
        }
        steady.ingest(source, row.clone());
        restarted.ingest(source, row);
    }
    for (k, engine) in [&mut steady, &mut restarted].into_iter().enumerate() {
        engine.advance(AS_OF_MICROS + 30 * 86_400_000_000);
        moves[k].extend(engine.take_transitions());
        steps[k].extend(engine.take_journey_events());
    }
    let by_time = moves[0].iter().filter(|t| t.by_time).count();
    if by_time == 0 {
        return Err(format!(
            "seed {seed}: no exit by time: the case proves nothing"
        ));
    }
    let a = moves_and_state(&steady, &moves[0], &steps[0]);
    let b = moves_and_state(&restarted, &moves[1], &steps[1]);
    for (what, x, y) in [
        ("transitions", &a.0, &b.0),
        ("journey steps", &a.1, &b.1),
        ("state", &a.2, &b.2),
    ] {
        if let Some(i) = (0..x.len().max(y.len())).find(|&i| x.get(i) != y.get(i)) {
            return Err(format!(
                "seed {seed}, {profiles} profiles, restarts {restart_at:?}, full timers \
                 {full_timers}: {what} differ at \
                 {i} of {}/{}:\n  never stopped: {:?}\n  restarted:     {:?}",
                x.len(),
                y.len(),
                x.get(i),
                y.get(i)
            ));
        }
    }
    let (mut counts_a, mut counts_b) = (a.3, b.3);
    if full_timers {
        // How many evaluations ran is work, not a result: a full evaluation works out every
        // next-change instant afresh, and one may fall later than an instant kept from before.
        for c in [&mut counts_a, &mut counts_b] {
            c.evaluations = 0;
            c.timer_evaluations = 0;
        }
    }
    if counts_a != counts_b {
        return Err(format!("seed {seed}: counts {counts_a:?} vs {counts_b:?}"));
    }
    Ok(())
}

/// Evaluations recompute only what the events since the last one and the passing of time can
/// have changed (after a timer where only the clock moved, only what reads `now()`): on the
/// retail data of three data sets, against an engine that recomputes whole profiles and every
/// next-change instant at each evaluation, nothing differs (the property test above tries more).
///
/// Seed 455167 is one the property test found: a next-change instant kept from before (early,
/// as they may be) fired for a profile with an unevaluated order, and reported the order's
/// change at the timer's instant, while the other engine reported it at its own next timer.
/// A profile's events now count as of the last of them, whatever timer comes first.
#[test]
fn incremental_evaluations_equal_full_ones() {
    for (seed, profiles) in [(0, 20), (11, 90), (455167, 118)] {
        if let Err(e) = restarts_change_nothing(seed, profiles, &[], true) {
            panic!("{e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_restart_from_a_checkpoint_changes_nothing(
        seed in 0u64..1_000_000,
        profiles in 20usize..120,
        restarts in prop::collection::vec(0usize..100_000, 1..6),
        full_timers in any::<bool>(),
    ) {
        if let Err(e) = restarts_change_nothing(seed, profiles, &restarts, full_timers) {
            prop_assert!(false, "{}", e);
        }
    }
}
