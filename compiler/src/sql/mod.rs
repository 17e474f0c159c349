//! The SQL back end: the IR becomes a program of readable `CREATE TABLE … AS` statements (one per
//! table, CTEs with meaningful names) in one of five dialects, parameterized by the as-of time.
//!
//! Per entity `e` the program computes:
//! - `e_id_nodes`, `e_id_edges`: the identity graph (normalized key values, each numbered;
//!   links between values seen in one record, after exclusions and `max N per profile` limits,
//!   as pairs of those numbers);
//! - `e_id_cc`: connected components by an iterative program (hook to the smallest label among
//!   neighbours, then jump to the label's label) that repeats until no label changes; it joins
//!   and groups numbers, not texts, every round;
//! - `e_id_claims`, `e_identity`: every identifier with the canonical id of its profile — the id
//!   the profile had after the previous run (state table `e_id_map`, replaced by
//!   `e_id_map_next`), else the id of its identifier seen first;
//! - `e_id_merges`: old ids merged into another profile's id in this run;
//! - `e_profile`: one row per profile with its attributes, features and segment memberships;
//! - `e_segments`: (canonical id, segment) for every membership.
//!
//! Dialect differences live in [`dialect`]; this module decides the shape of the SQL.

pub mod dialect;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

pub use dialect::Dialect;

use crate::ir::*;
use crate::types::{Aggregate as AggFn, Function, Type};

/// One table: `sql` is a complete `CREATE TABLE <table> AS …` statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub table: String,
    pub sql: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    Create(Statement),
    /// Re-run `body` until `converged` (one row, one integer: changes in the last round) is 0,
    /// at most `max_rounds` times.
    Loop {
        body: Vec<Statement>,
        converged: String,
        max_rounds: u32,
    },
}

/// Statements in execution order; the runner drops a table before creating it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    pub dialect: Dialect,
    pub steps: Vec<Step>,
    /// The tables users read (the others are intermediate).
    pub outputs: Vec<String>,
    /// State kept between runs (journey states): `CREATE TABLE IF NOT EXISTS` statements the
    /// runner executes first, without dropping anything. After the run, the runner replaces each
    /// state table by the `<table>_next` output.
    pub initial_state: Vec<Statement>,
}

impl Program {
    /// The program as one SQL script, loops written out as comments around their body.
    pub fn to_script(&self) -> String {
        let mut out = String::new();
        for s in &self.initial_state {
            out.push_str("-- state kept between runs: created empty on the first run\n");
            out.push_str(&s.sql);
            out.push_str(";\n\n");
        }
        for step in &self.steps {
            match step {
                Step::Create(s) => {
                    out.push_str(&s.sql);
                    out.push_str(";\n\n");
                }
                Step::Loop {
                    body,
                    converged,
                    max_rounds,
                } => {
                    let _ = writeln!(
                        out,
                        "-- repeat (at most {max_rounds} rounds) until this query returns 0:"
                    );
                    for line in converged.lines() {
                        let _ = writeln!(out, "--   {line}");
                    }
                    out.push('\n');
                    for s in body {
                        out.push_str(&s.sql);
                        out.push_str(";\n\n");
                    }
                    out.push_str("-- end repeat\n\n");
                }
            }
        }
        out
    }
}

/// Rounds of the connected-components loop at most; it converges in O(log n) rounds on chains.
pub const MAX_IDENTITY_ROUNDS: u32 = 64;

/// Timeless records (sources without an event time) count as seen at this instant.
const BEGINNING: &str = "1900-01-01 00:00:00";

/// The leading columns of a journey's state table (`<journey>_state_next`); one `n<k>_at`
/// column per node follows (when the profile last reached node k).
pub const JOURNEY_STATE_COLUMNS: [&str; 6] = [
    "canonical_id",
    "node",
    "status",
    "node_since",
    "entered_at",
    "finished_at",
];

/// Compiles the project for one dialect, as of `as_of_micros` (microseconds since the epoch).
pub fn compile(project: &Project, dialect: Dialect, as_of_micros: i64) -> Program {
    let e = Emitter {
        p: project,
        d: dialect,
        as_of: dialect.timestamp(as_of_micros),
        as_of_text: dialect::format_micros(as_of_micros),
        pit: None,
        key: "canonical_id".into(),
    };
    let mut steps = Vec::new();
    let mut outputs = Vec::new();
    let mut initial_state = Vec::new();
    for (i, entity) in project.entities.iter().enumerate() {
        let id = EntityId(i as u32);
        e.identity(
            id,
            entity,
            &mut steps,
            &mut outputs,
            Some(&mut initial_state),
        );
        let statements = e.profile(id, entity);
        if let Some(profile) = statements.last() {
            outputs.push(profile.table.clone());
        }
        steps.extend(statements.into_iter().map(Step::Create));
        if let Some(segments) = e.segments(id, entity) {
            outputs.push(segments.table.clone());
            steps.push(Step::Create(segments));
        }
        for metric in project.metrics.iter().filter(|m| m.entity == id) {
            let kpis = e.metric(metric, entity);
            outputs.push(kpis.table.clone());
            steps.push(Step::Create(kpis));
        }
        for (j, journey) in project.journeys.iter().enumerate() {
            if journey.entity == id {
                e.journey(
                    j,
                    journey,
                    entity,
                    &mut steps,
                    &mut outputs,
                    &mut initial_state,
                );
            }
        }
    }
    Program {
        dialect,
        steps,
        outputs,
        initial_state,
    }
}

/// A point-in-time training set: for every row of the spine table `<entity>_spine` (the
/// entity's `key` and a timestamp `ts`), the attributes, features and segment memberships as of
/// that row's own `ts`. Identity is resolved as of `as_of_micros` (the run's time).
pub fn training_set(
    project: &Project,
    dialect: Dialect,
    as_of_micros: i64,
    entity: &str,
    key: Option<&str>,
) -> Result<Program, String> {
    let (id, ent) = project
        .entities
        .iter()
        .enumerate()
        .find(|(_, e)| e.meta.name == entity)
        .ok_or_else(|| format!("no entity named `{entity}`"))?;
    let key = match key {
        Some(k) => ent
            .keys
            .iter()
            .position(|x| x.name == k)
            .ok_or_else(|| format!("entity `{entity}` has no key `{k}`"))?,
        None => 0,
    };
    let mut e = Emitter {
        p: project,
        d: dialect,
        as_of: dialect.timestamp(as_of_micros),
        as_of_text: dialect::format_micros(as_of_micros),
        pit: None,
        key: "canonical_id".into(),
    };
    let mut steps = Vec::new();
    let mut outputs = Vec::new();
    let id = EntityId(id as u32);
    e.identity(id, ent, &mut steps, &mut outputs, None);
    e.pit = Some(KeyId(key as u32));
    e.as_of = "spine_ts".to_string();
    let statements = e.profile(id, ent);
    outputs = statements.iter().map(|s| s.table.clone()).collect();
    steps.extend(statements.into_iter().map(Step::Create));
    Ok(Program {
        dialect,
        steps,
        outputs,
        initial_state: Vec::new(),
    })
}

#[derive(Clone)]
struct Emitter<'p> {
    p: &'p Project,
    d: Dialect,
    /// The as-of literal, e.g. `TIMESTAMP '2024-12-01 00:00:00'`.
    as_of: String,
    as_of_text: String,
    /// Point-in-time mode (training sets): the spine's key; `as_of` is then the `spine_ts`
    /// column of each spine point, and "profiles" are (profile, timestamp) points.
    pit: Option<KeyId>,
    /// The column that keys the profiles inside the values statement: `canonical_id`, or
    /// `profile` (a number; `profile_` and so on when a source has a column of that name) when
    /// the dialect has [`Dialect::numbered_profiles`].
    key: String,
}

/// How names print in an expression.
#[derive(Clone)]
enum Scope<'a> {
    /// Columns of a source row, optionally qualified by a table alias.
    Row {
        source: SourceId,
        alias: Option<&'a str>,
    },
    /// The raw key value is this printed expression.
    Key(&'a str),
    /// Profile values are columns of the current layer.
    Profile,
}

impl<'p> Emitter<'p> {
    fn q(&self, name: &str) -> String {
        self.d.ident(name)
    }

    fn table(&self, entity: &Entity, suffix: &str) -> String {
        self.q(&format!("{}_{suffix}", entity.meta.name))
    }

    fn header(&self, what: &str, defs: &[&str]) -> String {
        let mut h = format!("-- cdp: {what}, as of {}", self.as_of_text);
        if !defs.is_empty() {
            let mut line = String::from("\n-- implements:");
            for d in defs {
                if line.len() + d.len() > 98 {
                    h.push_str(&line);
                    line = String::from("\n--  ");
                }
                line.push(' ');
                line.push_str(d);
            }
            h.push_str(&line);
        }
        h.push('\n');
        h
    }

    // ---------------------------------------------------------------------- expressions

    fn expr(&self, e: &Expr, scope: &Scope) -> String {
        let d = self.d;
        match &e.kind {
            ExprKind::Literal(l) => self.literal(l),
            ExprKind::Column(c) => match scope {
                Scope::Row { source, alias } => {
                    let name = self.q(&self.p.sources[source.index()].columns[c.index()].name);
                    match alias {
                        Some(a) => format!("{a}.{name}"),
                        None => name,
                    }
                }
                _ => "NULL".into(),
            },
            ExprKind::KeyValue => match scope {
                Scope::Key(v) => (*v).to_string(),
                _ => "NULL".into(),
            },
            ExprKind::Attribute(a) => self.q(&self.p.attributes[a.index()].meta.name),
            ExprKind::Feature(f) => self.q(&self.p.features[f.index()].meta.name),
            ExprKind::Segment(s) => self.q(&self.p.segments[s.index()].meta.name),
            ExprKind::Aggregate(a) => format!("agg_{}", a.0),
            ExprKind::Sequence(s) => format!("seq_{}", s.0),
            ExprKind::AsOf => self.as_of.clone(),
            ExprKind::List(items) => {
                let items: Vec<String> = items.iter().map(|i| self.expr(i, scope)).collect();
                d.list(&items)
            }
            ExprKind::Call(f, args) => {
                let printed: Vec<String> = args.iter().map(|a| self.expr(a, scope)).collect();
                let types: Vec<Type> = args.iter().map(|a| a.ty.clone()).collect();
                if *f == Function::Now {
                    return self.as_of.clone();
                }
                d.function(*f, &printed, &types)
            }
            ExprKind::Not(x) => format!("NOT ({})", self.expr(x, scope)),
            ExprKind::Neg(x) => format!("-({})", self.expr(x, scope)),
            ExprKind::Binary(op, l, r) => {
                if matches!(op, BinaryOp::Add | BinaryOp::Sub) {
                    if let Some(t) = self.temporal_arithmetic(*op, l, r, scope) {
                        return t;
                    }
                }
                let (ls, rs) = self.operands(l, r, scope);
                match op {
                    BinaryOp::Div => d.divide(&ls, &rs),
                    BinaryOp::Rem => d.remainder(&ls, &rs),
                    _ => format!("({ls} {} {rs})", binary_symbol(*op)),
                }
            }
            ExprKind::IsNull { value, negated } => {
                format!(
                    "({} IS {}NULL)",
                    self.expr(value, scope),
                    if *negated { "NOT " } else { "" }
                )
            }
            ExprKind::InList {
                value,
                items,
                negated,
            } => {
                let items: Vec<String> = items.iter().map(|i| self.expr(i, scope)).collect();
                format!(
                    "({} {}IN ({}))",
                    self.expr(value, scope),
                    if *negated { "NOT " } else { "" },
                    items.join(", ")
                )
            }
            ExprKind::Text {
                op,
                value,
                pattern,
                negated,
            } => {
                let t = d.text(*op, &self.expr(value, scope), &self.expr(pattern, scope));
                if *negated {
                    format!("NOT ({t})")
                } else {
                    format!("({t})")
                }
            }
            ExprKind::ListContains {
                list,
                item,
                negated,
            } => {
                let t = d.list_contains(&self.expr(list, scope), &self.expr(item, scope));
                if *negated {
                    format!("NOT ({t})")
                } else {
                    format!("({t})")
                }
            }
            ExprKind::ListLength(x) => d.list_length(&self.expr(x, scope)),
        }
    }

    /// Timestamps plus or minus durations, and differences of timestamps. Durations are
    /// milliseconds (BIGINT) in SQL, so that they sum and compare alike on every engine; next to
    /// a timestamp they become intervals.
    fn temporal_arithmetic(
        &self,
        op: BinaryOp,
        l: &Expr,
        r: &Expr,
        scope: &Scope,
    ) -> Option<String> {
        let sym = binary_symbol(op);
        let timestamp = |e: &Expr| {
            let x = self.expr(e, scope);
            if e.ty == Type::Date {
                format!("CAST({x} AS {})", self.d.type_name(&Type::Timestamp))
            } else {
                x
            }
        };
        match (l.ty.is_temporal(), r.ty.is_temporal(), &l.ty, &r.ty) {
            (true, false, _, Type::Duration) => Some(format!(
                "({} {sym} {})",
                timestamp(l),
                self.interval_of(r, scope)
            )),
            (false, true, Type::Duration, _) if op == BinaryOp::Add => Some(format!(
                "({} + {})",
                timestamp(r),
                self.interval_of(l, scope)
            )),
            (true, true, _, _) if op == BinaryOp::Sub => {
                let (a, b) = (
                    self.d.epoch_seconds(&self.expr(l, scope)),
                    self.d.epoch_seconds(&self.expr(r, scope)),
                );
                Some(format!("CAST(round(({a} - {b}) * 1000) AS BIGINT)"))
            }
            _ => None,
        }
    }

    /// A duration expression as an interval: literals directly, others from milliseconds.
    fn interval_of(&self, e: &Expr, scope: &Scope) -> String {
        match &e.kind {
            ExprKind::Literal(Literal::DurationMs(ms)) => self.d.interval(*ms),
            _ => format!("({} * {})", self.expr(e, scope), self.d.interval(1)),
        }
    }

    /// Prints both sides of a binary operator; a date compared with a timestamp is cast up.
    fn operands(&self, l: &Expr, r: &Expr, scope: &Scope) -> (String, String) {
        let (mut ls, mut rs) = (self.expr(l, scope), self.expr(r, scope));
        if l.ty == Type::Date && r.ty == Type::Timestamp {
            ls = format!("CAST({ls} AS {})", self.d.type_name(&Type::Timestamp));
        }
        if r.ty == Type::Date && l.ty == Type::Timestamp {
            rs = format!("CAST({rs} AS {})", self.d.type_name(&Type::Timestamp));
        }
        (ls, rs)
    }

    fn literal(&self, l: &Literal) -> String {
        match l {
            Literal::Null => "NULL".into(),
            Literal::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
            Literal::Int(i) => i.to_string(),
            Literal::Decimal(s) => s.clone(),
            Literal::String(s) => self.d.string(s),
            Literal::Date(s) => self.d.date(s),
            Literal::TimestampMicros(m) => self.d.timestamp(*m),
            Literal::DurationMs(ms) => ms.to_string(),
        }
    }

    // ---------------------------------------------------------------------- identity

    /// The normalized value of `key` from a row of `source` (printed with table alias `alias`):
    /// cast to text, normalized, and null when excluded.
    fn key_value(&self, entity: &Entity, binding: &KeyBinding, alias: &str) -> String {
        let raw = self.expr(
            &binding.value,
            &Scope::Row {
                source: binding.source,
                alias: Some(alias),
            },
        );
        self.normalized_key(entity, binding.key, &raw, &binding.value.ty)
    }

    /// A raw printed key value of type `ty`, cast to text, normalized, null when excluded.
    fn normalized_key(&self, entity: &Entity, key: KeyId, raw: &str, ty: &Type) -> String {
        let key = &entity.keys[key.index()];
        let raw = if *ty == Type::String {
            raw.to_string()
        } else {
            format!("CAST({raw} AS {})", self.d.type_name(&Type::String))
        };
        let normalized = match &key.normalize {
            Some(n) => self.expr(n, &Scope::Key(&raw)),
            None => raw,
        };
        if key.exclude.is_empty() {
            normalized
        } else {
            let excluded: Vec<String> = key.exclude.iter().map(|x| self.d.string(x)).collect();
            format!(
                "CASE WHEN {normalized} IN ({}) THEN NULL ELSE {normalized} END",
                excluded.join(", ")
            )
        }
    }

    /// The as-of time as seen from a table alias: the literal, or the point's own time.
    fn as_of_at(&self, alias: &str) -> String {
        match self.pit {
            Some(_) => format!("{alias}.spine_ts"),
            None => self.as_of.clone(),
        }
    }

    /// The distinct (profile, timestamp) points of the spine, each with an id.
    fn spine_points(&self, entity: &Entity, key: KeyId) -> String {
        let spine = self.table(entity, "spine");
        let identity = self.table(entity, "identity");
        let key_col = self.q(&entity.keys[key.index()].name);
        format!(
            "SELECT DISTINCT i.canonical_id, sp.ts AS spine_ts, {} AS pit_id\n  FROM {spine} sp\n  JOIN {identity} i ON i.key_name = {} AND i.key_value = {}",
            self.pit_id("i.canonical_id", "sp.ts"),
            self.d.string(&entity.keys[key.index()].name),
            self.normalized_key(entity, key, &format!("sp.{key_col}"), &Type::String),
        )
    }

    /// The id of a (profile, timestamp) point: used as the profile key in point-in-time mode.
    fn pit_id(&self, canonical_id: &str, ts: &str) -> String {
        let text = self.d.type_name(&Type::String);
        self.d.concat2(
            &self.d.concat2(canonical_id, "'@'"),
            &format!("CAST({ts} AS {text})"),
        )
    }

    /// The rows of a source an attribute picks from: all visible rows, or in point-in-time mode
    /// the rows each point had seen, keyed by the point.
    fn source_rows(&self, source: SourceId) -> String {
        let s = &self.p.sources[source.index()];
        if self.pit.is_none() {
            return format!("rows_{}", s.meta.name);
        }
        let cols: Vec<String> = s
            .columns
            .iter()
            .filter(|c| c.name != "canonical_id")
            .map(|c| format!("r.{}", self.q(&c.name)))
            .collect();
        let seen = match s.time {
            Some(t) => format!(
                " AND r.{} <= p.spine_ts",
                self.q(&s.columns[t.index()].name)
            ),
            None => String::new(),
        };
        format!(
            "(SELECT p.pit_id AS canonical_id, {} FROM spine_points p JOIN rows_{} r ON r.canonical_id = p.canonical_id{seen})",
            cols.join(", "),
            s.meta.name
        )
    }

    /// When a row of this source was seen, for first-seen ordering.
    fn seen_at(&self, source: SourceId, alias: &str) -> String {
        match self.p.sources[source.index()].time {
            Some(t) => {
                let col = &self.p.sources[source.index()].columns[t.index()];
                let c = format!("{alias}.{}", self.q(&col.name));
                if col.ty == Type::Date {
                    format!("CAST({c} AS {})", self.d.type_name(&Type::Timestamp))
                } else {
                    c
                }
            }
            None => self.d.timestamp(parse_beginning()),
        }
    }

    /// Rows of a source visible at the as-of time.
    fn visible(&self, source: SourceId, alias: &str) -> Option<String> {
        let s = &self.p.sources[source.index()];
        s.time.map(|t| {
            format!(
                "{alias}.{} <= {}",
                self.q(&s.columns[t.index()].name),
                self.as_of
            )
        })
    }

    /// Sources that bind keys of the entity, each with its bindings in key-priority order.
    fn bound_sources(&self, entity: &'p Entity) -> Vec<(SourceId, Vec<&'p KeyBinding>)> {
        let mut by_source: BTreeMap<SourceId, Vec<&KeyBinding>> = BTreeMap::new();
        for b in &entity.bindings {
            by_source.entry(b.source).or_default().push(b);
        }
        by_source
            .into_iter()
            .map(|(s, mut bs)| {
                bs.sort_by_key(|b| entity.keys[b.key.index()].priority);
                (s, bs)
            })
            .collect()
    }

    fn identity(
        &self,
        id: EntityId,
        entity: &'p Entity,
        steps: &mut Vec<Step>,
        outputs: &mut Vec<String>,
        mut initial_state: Option<&mut Vec<Statement>>,
    ) {
        let d = self.d;
        let _ = id;
        let records = self.table(entity, "id_records");
        let nodes = self.table(entity, "id_nodes");
        let edges = self.table(entity, "id_edges");
        let cc = self.table(entity, "id_cc");
        let cc_prev = self.table(entity, "id_cc_prev");
        let identity = self.table(entity, "identity");
        let claims = self.table(entity, "id_claims");
        let merges = self.table(entity, "id_merges");
        let id_map = self.table(entity, "id_map");
        let sources = self.bound_sources(entity);

        // Records: every visible row of every bound source with its normalized key values.
        let string = d.type_name(&Type::String);
        let mut record_selects = Vec::new();
        for (source, bindings) in &sources {
            let s = &self.p.sources[source.index()];
            // Events repeat their keys: one record per distinct combination, first seen when.
            let distinct = d.distinct_records() && s.time.is_some();
            let seen_at = self.seen_at(*source, "s");
            let mut cols = vec![if distinct {
                format!("min({seen_at}) AS seen_at")
            } else {
                format!("{seen_at} AS seen_at")
            }];
            let mut group_by = Vec::new();
            for (k, key) in entity.keys.iter().enumerate() {
                let value = match bindings.iter().find(|b| b.key.index() == k) {
                    Some(b) => {
                        let v = self.key_value(entity, b, "s");
                        group_by.push(v.clone());
                        v
                    }
                    None => format!("CAST(NULL AS {string})"),
                };
                cols.push(format!("{value} AS {}", self.q(&format!("k_{}", key.name))));
            }
            let where_ = self
                .visible(*source, "s")
                .map(|w| format!("\nWHERE {w}"))
                .unwrap_or_default();
            let group_by = if distinct {
                format!("\nGROUP BY {}", group_by.join(", "))
            } else {
                String::new()
            };
            record_selects.push(format!(
                "SELECT {}\nFROM {} s{where_}{group_by}",
                cols.join(",\n       "),
                self.q(&s.table)
            ));
        }
        if record_selects.is_empty() {
            let mut cols = vec![format!("{} AS seen_at", d.timestamp(parse_beginning()))];
            cols.extend(entity.keys.iter().map(|k| {
                format!(
                    "CAST(NULL AS {string}) AS {}",
                    self.q(&format!("k_{}", k.name))
                )
            }));
            record_selects.push(format!("SELECT {} WHERE FALSE", cols.join(", ")));
        }
        steps.push(Step::Create(Statement {
            table: unquote(&records),
            sql: format!(
                "{}CREATE TABLE {records} AS\n{}",
                self.header(
                    &format!(
                        "{}: normalized key values of {} seen up to the as-of time",
                        entity.meta.name,
                        if d.distinct_records() {
                            "the records (of a source with a time: each distinct combination once)"
                        } else {
                            "every record"
                        }
                    ),
                    &[&entity.meta.name]
                ),
                record_selects.join("\nUNION ALL\n")
            ),
        }));

        let node_selects: Vec<String> = entity
            .keys
            .iter()
            .map(|key| {
                let col = self.q(&format!("k_{}", key.name));
                format!(
                    "  SELECT {} AS key_name, {col} AS key_value, {} AS priority, seen_at FROM {records} WHERE {col} IS NOT NULL",
                    d.string(&key.name),
                    key.priority
                )
            })
            .collect();
        // Each identifier gets a number: the edges and the components loop join and group
        // numbers, and only a profile's anchor is ever written as its `key:value` text. The
        // numbers follow the order that picks a profile's anchor (seen first, then by key
        // priority, then by value), so a component's label, its smallest number, is its anchor.
        let nodes_sql = format!(
            "{}CREATE TABLE {nodes} AS\nWITH observations AS (\n{}\n),\n\
             identifiers AS (\n  SELECT key_name, key_value, min(priority) AS priority, min(seen_at) AS first_seen\n  FROM observations\n  GROUP BY key_name, key_value\n)\n\
             SELECT key_name, key_value, priority, first_seen, ROW_NUMBER() OVER (ORDER BY first_seen, priority, key_value, key_name) AS id\nFROM identifiers",
            self.header(&format!("{}: identifiers (normalized key values) and when each was first seen", entity.meta.name), &[]),
            node_selects.join("\n  UNION ALL\n"),
        );
        steps.push(Step::Create(Statement {
            table: unquote(&nodes),
            sql: nodes_sql,
        }));

        // Links between values seen in one record, in both directions, then the limits.
        let mut link_selects = Vec::new();
        for (i, ka) in entity.keys.iter().enumerate() {
            for kb in &entity.keys[i + 1..] {
                let bound_together = sources.iter().any(|(_, bs)| {
                    bs.iter()
                        .any(|b| entity.keys[b.key.index()].name == ka.name)
                        && bs
                            .iter()
                            .any(|b| entity.keys[b.key.index()].name == kb.name)
                });
                if !bound_together {
                    continue;
                }
                let (ca, cb) = (
                    self.q(&format!("k_{}", ka.name)),
                    self.q(&format!("k_{}", kb.name)),
                );
                let (qa, qb) = (d.string(&ka.name), d.string(&kb.name));
                link_selects.push(format!("  SELECT {qa} AS a_key, {ca} AS a_value, {qb} AS b_key, {cb} AS b_value, seen_at FROM {records} WHERE {ca} IS NOT NULL AND {cb} IS NOT NULL"));
                link_selects.push(format!("  SELECT {qb} AS a_key, {cb} AS a_value, {qa} AS b_key, {ca} AS b_value, seen_at FROM {records} WHERE {ca} IS NOT NULL AND {cb} IS NOT NULL"));
            }
        }
        let limits: Vec<String> = entity
            .keys
            .iter()
            .filter_map(|k| {
                k.max_per_profile
                    .map(|n| format!("(b_key = {} AND rank_in_key > {n})", d.string(&k.name)))
            })
            .collect();
        let over_limit = if limits.is_empty() {
            "FALSE".to_string()
        } else {
            limits.join(" OR ")
        };
        let edges_sql = if link_selects.is_empty() {
            format!(
                "{}CREATE TABLE {edges} AS\nSELECT id AS a, id AS b FROM {nodes} WHERE FALSE",
                self.header(
                    &format!(
                        "{}: links between identifiers (none: no source binds two keys)",
                        entity.meta.name
                    ),
                    &[]
                )
            )
        } else {
            format!(
                "{}CREATE TABLE {edges} AS\nWITH links AS (\n{}\n),\n\
                 first_links AS (\n  SELECT a_key, a_value, b_key, b_value, min(seen_at) AS first_seen\n  FROM links\n  GROUP BY a_key, a_value, b_key, b_value\n),\n\
                 numbered AS (\n  SELECT na.id AS a, nb.id AS b, l.b_key, l.b_value, l.first_seen\n  FROM first_links l\n  JOIN {nodes} na ON na.key_name = l.a_key AND na.key_value = l.a_value\n  JOIN {nodes} nb ON nb.key_name = l.b_key AND nb.key_value = l.b_value\n),\n\
                 ranked AS (\n  SELECT a, b, b_key,\n         ROW_NUMBER() OVER (PARTITION BY a, b_key ORDER BY first_seen, b_value) AS rank_in_key\n  FROM numbered\n),\n\
                 dropped AS (\n  SELECT a, b FROM ranked WHERE {over_limit}\n)\n\
                 -- a link survives when neither end has too many values of the other's key\n\
                 SELECT r.a, r.b\nFROM ranked r\n\
                 WHERE NOT EXISTS (SELECT 1 FROM dropped x WHERE x.a = r.a AND x.b = r.b)\n  AND NOT EXISTS (SELECT 1 FROM dropped x WHERE x.a = r.b AND x.b = r.a)",
                self.header(&format!("{}: links between identifiers seen in one record, after `max N per profile`", entity.meta.name), &[]),
                link_selects.join("\n  UNION ALL\n"),
            )
        };
        steps.push(Step::Create(Statement {
            table: unquote(&edges),
            sql: edges_sql,
        }));

        // Connected components: every node starts as its own label.
        steps.push(Step::Create(Statement {
            table: unquote(&cc),
            sql: format!(
                "{}CREATE TABLE {cc} AS\nSELECT id AS node, id AS label FROM {nodes}",
                self.header(
                    &format!("{}: connected components, initial labels", entity.meta.name),
                    &[]
                )
            ),
        }));
        // One round: every node hears the smallest label among its neighbours; every label (a
        // group of nodes) takes the smallest label any of its members heard, so a whole group
        // hooks onto its smallest neighbouring group at once; then each node jumps to its new
        // label's label. Groups merge and hook chains halve every round: O(log n) rounds, also
        // when names along a path are in no particular order.
        let min2 = |a: &str, b: &str| format!("CASE WHEN {b} < {a} THEN {b} ELSE {a} END");
        let step_sql = format!(
            "{}CREATE TABLE {cc} AS\nWITH heard AS (\n  \
             SELECT c.node, c.label, min(n.label) AS nearest\n  \
             FROM {cc_prev} c\n  LEFT JOIN {edges} e ON e.a = c.node\n  LEFT JOIN {cc_prev} n ON n.node = e.b\n  GROUP BY c.node, c.label\n),\n\
             groups AS (\n  SELECT label, min(nearest) AS nearest\n  FROM heard\n  GROUP BY label\n),\n\
             hooked AS (\n  SELECT h.node, {} AS label\n  FROM heard h\n  JOIN groups g ON g.label = h.label\n)\n\
             SELECT h.node, {} AS label\nFROM hooked h\nLEFT JOIN hooked p ON p.node = h.label",
            self.header(&format!("{}: connected components, one round", entity.meta.name), &[]),
            min2(&min2("h.label", "h.nearest"), "g.nearest"),
            min2("h.label", "p.label"),
        );
        steps.push(Step::Loop {
            body: vec![
                Statement { table: unquote(&cc_prev), sql: format!("CREATE TABLE {cc_prev} AS\nSELECT node, label FROM {cc}") },
                Statement { table: unquote(&cc), sql: step_sql },
            ],
            converged: format!(
                "SELECT count(*) AS changed\nFROM {cc} c\nJOIN {cc_prev} p ON p.node = c.node\nWHERE c.label <> p.label"
            ),
            max_rounds: MAX_IDENTITY_ROUNDS,
        });

        // Canonical ids. A profile keeps the id it had after the previous run (the id map kept
        // between runs); a new profile takes the id of its identifier seen first (then by key
        // priority, then by value). When profiles merge, the id seen first survives and the
        // others are recorded as merged into it.
        let string_ty = d.type_name(&Type::String);
        let id_map_sql = format!(
            "CREATE TABLE IF NOT EXISTS {id_map} AS\nSELECT CAST(NULL AS {string_ty}) AS key_name, CAST(NULL AS {string_ty}) AS key_value, CAST(NULL AS {string_ty}) AS canonical_id\nWHERE FALSE"
        );
        if let Some(state) = initial_state.as_mut() {
            state.push(Statement {
                table: unquote(&id_map),
                sql: id_map_sql,
            });
        }
        let previous_ids = if initial_state.is_some() {
            id_map.clone()
        } else {
            // Training sets resolve identity afresh: no state is read or written.
            format!(
                "(SELECT CAST(NULL AS {string_ty}) AS key_name, CAST(NULL AS {string_ty}) AS key_value, CAST(NULL AS {string_ty}) AS canonical_id WHERE FALSE)"
            )
        };
        let members = format!(
            "members AS (\n  SELECT n.key_name, n.key_value, n.priority, n.first_seen, c.label\n  FROM {nodes} n\n  JOIN {cc} c ON c.node = n.id\n)"
        );
        // A profile's anchor as the `key:value` text whose MD5 is a new profile's id.
        let anchor_text = d.concat2(&d.concat2("key_name", &d.string(":")), "key_value");
        let claims_sql = format!(
            "{}CREATE TABLE {claims} AS\nWITH {members},\n\
             anchors AS (\n  -- a label is the smallest number in its component, and identifiers are numbered in anchor order\n  SELECT c.label, {anchor_text} AS anchor\n  FROM {cc} c\n  JOIN {nodes} n ON n.id = c.node\n  WHERE c.node = c.label\n),\n\
             previous AS (\n  -- the ids the members of each profile had after the previous run\n  SELECT m.label, p.canonical_id, min(m.first_seen) AS seen\n  FROM members m\n  JOIN {previous_ids} p ON p.key_name = m.key_name AND p.key_value = m.key_value\n  GROUP BY m.label, p.canonical_id\n),\n\
             claimed AS (\n  -- an old id stays with one profile only (after a split: the one holding its identifier seen first)\n  SELECT label, canonical_id, seen\n  FROM (\n    SELECT pr.label, pr.canonical_id, pr.seen,\n           ROW_NUMBER() OVER (PARTITION BY pr.canonical_id ORDER BY pr.seen, a.anchor) AS rn\n    FROM previous pr\n    JOIN anchors a ON a.label = pr.label\n  ) ranked\n  WHERE rn = 1\n)\n\
             -- per profile: its anchor, and each old id it keeps, the one seen first surviving\n\
             SELECT a.label, a.anchor, c.canonical_id AS old_id,\n       ROW_NUMBER() OVER (PARTITION BY a.label ORDER BY c.seen, c.canonical_id) AS rank_in_profile\nFROM anchors a\nLEFT JOIN claimed c ON c.label = a.label",
            self.header(&format!("{}: each profile's anchor identifier and the ids it had before", entity.meta.name), &[&entity.meta.name]),
        );
        steps.push(Step::Create(Statement {
            table: unquote(&claims),
            sql: claims_sql,
        }));
        let identity_sql = format!(
            "{}CREATE TABLE {identity} AS\nWITH {members}\n\
             SELECT m.key_name, m.key_value, p.canonical_id\nFROM members m\n\
             JOIN (\n  -- each profile's id, computed once per profile\n  SELECT c.label, {} AS canonical_id\n  FROM {claims} c\n  WHERE c.rank_in_profile = 1\n) p ON p.label = m.label",
            self.header(&format!("{}: the canonical id of every identifier", entity.meta.name), &[&entity.meta.name]),
            self.claimed_id("c"),
        );
        outputs.push(unquote(&identity));
        steps.push(Step::Create(Statement {
            table: unquote(&identity),
            sql: identity_sql,
        }));
        if initial_state.is_some() {
            let merges_sql = format!(
                "{}CREATE TABLE {merges} AS\nSELECT o.old_id AS merged_id, s.old_id AS into_id, {} AS merged_at\nFROM {claims} o\nJOIN {claims} s ON s.label = o.label AND s.rank_in_profile = 1\nWHERE o.rank_in_profile > 1",
                self.header(&format!("{}: profiles merged into another in this run", entity.meta.name), &[&entity.meta.name]),
                self.as_of,
            );
            outputs.push(unquote(&merges));
            steps.push(Step::Create(Statement {
                table: unquote(&merges),
                sql: merges_sql,
            }));
            let next = self.table(entity, "id_map_next");
            outputs.push(unquote(&next));
            steps.push(Step::Create(Statement {
                table: unquote(&next),
                sql: format!(
                    "{}CREATE TABLE {next} AS\nSELECT key_name, key_value, canonical_id FROM {identity}",
                    self.header(&format!("{}: the id map the next run starts from", entity.meta.name), &[])
                ),
            }));
        }
    }

    /// The canonical id a profile's first claim (`rank_in_profile = 1` in `<e>_id_claims`, here
    /// under `alias`) gives it: the old id it keeps, or the start of its anchor's MD5.
    fn claimed_id(&self, alias: &str) -> String {
        format!(
            "coalesce({alias}.old_id, substr({}, 1, 16))",
            self.d.md5_hex(&format!("{alias}.anchor"))
        )
    }

    // ---------------------------------------------------------------------- profile

    fn profile(&self, id: EntityId, entity: &'p Entity) -> Vec<Statement> {
        if self.pit.is_none() && self.d.numbered_profiles() && self.key == "canonical_id" {
            let mut key = "profile".to_string();
            while self
                .p
                .sources
                .iter()
                .any(|s| s.columns.iter().any(|c| c.name == key))
            {
                key.push('_');
            }
            let numbered = Emitter {
                key,
                ..self.clone()
            };
            return numbered.profile(id, entity);
        }
        let d = self.d;
        let profile = self.table(entity, "profile");
        let identity = self.table(entity, "identity");
        let k = self.key.as_str();
        let mut ctes: Vec<(String, String)> = Vec::new();
        match self.pit {
            // Numbered profiles: a profile's number is its component's label, so the
            // identifiers take it from the components table by integer joins, and only the
            // profiles (one per label) carry their canonical id, the one identity gives them.
            None if k != "canonical_id" => {
                let claims = self.table(entity, "id_claims");
                let nodes = self.table(entity, "id_nodes");
                let cc = self.table(entity, "id_cc");
                ctes.push((
                    "profiles".into(),
                    format!(
                        "SELECT c.label AS {k}, {} AS canonical_id\n  FROM {claims} c\n  WHERE c.rank_in_profile = 1",
                        self.claimed_id("c")
                    ),
                ));
                ctes.push((
                    "ids".into(),
                    format!("SELECT n.key_name, n.key_value, c.label AS {k}\n  FROM {nodes} n\n  JOIN {cc} c ON c.node = n.id"),
                ));
            }
            None => ctes.push((
                "profiles".into(),
                format!("SELECT DISTINCT canonical_id FROM {identity}"),
            )),
            Some(key) => {
                ctes.push(("spine_points".into(), self.spine_points(entity, key)));
                ctes.push((
                    "profiles".into(),
                    "SELECT pit_id AS canonical_id, spine_ts FROM spine_points".into(),
                ));
            }
        }

        let used = self.used_behaviors(id);
        ctes.extend(self.event_ctes(entity, &used, true));

        // Aggregates: the simple ones of a behavior in one GROUP BY, the ordered ones apart.
        let mut joins: Vec<String> = Vec::new();
        let mut defaults: Vec<(AggregateId, String, Option<String>)> = Vec::new();
        let mut alias_of: HashMap<AggregateId, String> = HashMap::new();
        let mut simple: BTreeMap<BehaviorId, Vec<(AggregateId, String)>> = BTreeMap::new();
        for (i, agg) in self.p.aggregates.iter().enumerate() {
            let aid = AggregateId(i as u32);
            let beh = &self.p.behaviors[agg.behavior.index()];
            if beh.entity != id {
                continue;
            }
            let ev = format!("ev_{}", beh.meta.name);
            let row = Scope::Row {
                source: beh.source,
                alias: None,
            };
            let cond = self.agg_condition(agg, &row);
            let value = agg.value.as_ref().map(|v| self.expr(v, &row));
            let col = format!("agg_{i}");
            let default = match agg.function {
                AggFn::Count | AggFn::CountDistinct | AggFn::ApproxCountDistinct => {
                    Some("0".to_string())
                }
                AggFn::Sum => Some("0".to_string()),
                AggFn::LastK | AggFn::FirstK => match &agg.ty {
                    Type::List(el) => Some(d.empty_list(el)),
                    _ => None,
                },
                _ => None,
            };
            defaults.push((aid, col.clone(), default));
            let case = |v: &str| match &cond {
                Some(c) => format!("CASE WHEN {c} THEN {v} END"),
                None => v.to_string(),
            };
            // `{open}{arg}{close}`, an aggregate call, over the events that count: with a FILTER
            // clause where the dialect has one, else with the value nulled outside the condition.
            let over = |open: &str, arg: &str, close: &str| match &cond {
                Some(c) if d.aggregate_filter() => {
                    format!("{open}{arg}{close} FILTER (WHERE {c})")
                }
                _ => format!("{open}{}{close}", case(arg)),
            };
            let v = value.clone().unwrap_or_else(|| "1".into());
            let filtered = |extra: &str| {
                let mut parts: Vec<String> = cond.iter().cloned().collect();
                if !extra.is_empty() {
                    parts.push(extra.to_string());
                }
                if parts.is_empty() {
                    String::new()
                } else {
                    format!("\n    WHERE {}", parts.join(" AND "))
                }
            };
            let own_cte = match agg.function {
                AggFn::Count if value.is_none() && cond.is_none() => {
                    simple.entry(agg.behavior).or_default().push((aid, "count(*)".into()));
                    None
                }
                AggFn::Count if value.is_none() && d.aggregate_filter() => {
                    simple.entry(agg.behavior).or_default().push((aid, over("count(", "*", ")")));
                    None
                }
                AggFn::Count => {
                    simple.entry(agg.behavior).or_default().push((aid, over("count(", &v, ")")));
                    None
                }
                AggFn::Sum | AggFn::Min | AggFn::Max => {
                    simple.entry(agg.behavior).or_default().push((aid, over(&format!("{}(", agg.function.name()), &v, ")")));
                    None
                }
                AggFn::Avg => {
                    simple.entry(agg.behavior).or_default().push((aid, over("avg(CAST(", &v, &format!(" AS {}))", d.double()))));
                    None
                }
                AggFn::ApproxCountDistinct => {
                    let f = match d {
                        Dialect::DataFusion | Dialect::Trino => over("approx_distinct(", &v, ")"),
                        Dialect::DuckDb | Dialect::Spark => over("approx_count_distinct(", &v, ")"),
                        // PostgreSQL has no sketch built in: exact.
                        Dialect::Postgres => over("count(DISTINCT ", &v, ")"),
                    };
                    simple.entry(agg.behavior).or_default().push((aid, f));
                    None
                }
                AggFn::CountDistinct if !d.distinct_in_two_stages() => {
                    simple.entry(agg.behavior).or_default().push((aid, over("count(DISTINCT ", &v, ")")));
                    None
                }
                AggFn::CountDistinct => Some(format!(
                    "SELECT {k}, count(*) AS {col}\n  FROM (\n    SELECT {k}, {v} AS v\n    FROM {ev}{}\n    GROUP BY {k}, {v}\n  ) distinct_values\n  GROUP BY {k}",
                    filtered(&format!("{v} IS NOT NULL"))
                )),
                AggFn::First | AggFn::Last
                    if agg
                        .value
                        .as_ref()
                        .is_some_and(|x| matches!(x.kind, ExprKind::Column(c) if c == beh.time)) =>
                {
                    // The first (last) value of the event time itself is its minimum (maximum).
                    let f = if agg.function == AggFn::First { "min" } else { "max" };
                    simple.entry(agg.behavior).or_default().push((aid, format!("{f}({})", case(&v))));
                    None
                }
                AggFn::First | AggFn::Last | AggFn::FirstK | AggFn::LastK if d.struct_arg_by() => {
                    // The value(s) at the smallest (greatest) (time, value): ties between events
                    // at one instant go to the smaller (greater) value, as when ranked.
                    let f = match agg.function {
                        AggFn::First => "arg_min(",
                        AggFn::Last => "arg_max(",
                        AggFn::FirstK => "min_by(",
                        _ => "max_by(",
                    };
                    let key = d.struct_of(&[("t", "event_time"), ("v", &v)]);
                    let count = match agg.function {
                        AggFn::FirstK | AggFn::LastK => format!(", {}", agg.k.unwrap_or(1)),
                        _ => String::new(),
                    };
                    let present = format!("{v} IS NOT NULL");
                    let only = match &cond {
                        Some(c) => format!("{c} AND {present}"),
                        None => present,
                    };
                    let call = format!("{f}{v}, {key}{count})");
                    let call = if d.aggregate_filter() {
                        format!("{call} FILTER (WHERE {only})")
                    } else {
                        format!("{f}CASE WHEN {only} THEN {v} END, {key}{count})")
                    };
                    simple.entry(agg.behavior).or_default().push((aid, call));
                    None
                }
                AggFn::First | AggFn::Last if d.ordered_first_value() => {
                    let dir = if agg.function == AggFn::First { "ASC" } else { "DESC" };
                    Some(format!(
                        "SELECT {k}, first_value(v ORDER BY event_time {dir}, v {dir}) AS {col}\n  FROM (SELECT {k}, event_time, {v} AS v FROM {ev}{}) values_\n  WHERE v IS NOT NULL\n  GROUP BY {k}",
                        filtered("")
                    ))
                }
                AggFn::First | AggFn::Last => {
                    let dir = if agg.function == AggFn::First { "ASC" } else { "DESC" };
                    Some(format!(
                        "SELECT {k}, v AS {col}\n  FROM (\n    SELECT {k}, v,\n           ROW_NUMBER() OVER (PARTITION BY {k} ORDER BY event_time {dir}, v {dir}) AS rn\n    FROM (SELECT {k}, event_time, {v} AS v FROM {ev}{}) values_\n    WHERE v IS NOT NULL\n  ) ranked\n  WHERE rn = 1",
                        filtered("")
                    ))
                }
                AggFn::FirstK | AggFn::LastK => {
                    let dir = if agg.function == AggFn::FirstK { "ASC" } else { "DESC" };
                    let count = agg.k.unwrap_or(1);
                    Some(format!(
                        "SELECT {k}, {} AS {col}\n  FROM (\n    SELECT {k}, v,\n           ROW_NUMBER() OVER (PARTITION BY {k} ORDER BY event_time {dir}, v {dir}) AS rn\n    FROM (SELECT {k}, event_time, {v} AS v FROM {ev}{}) values_\n    WHERE v IS NOT NULL\n  ) ranked\n  WHERE rn <= {count}\n  GROUP BY {k}",
                        d.ordered_list_agg("v", "rn"),
                        filtered("")
                    ))
                }
                AggFn::Mode if d.struct_arg_by() => Some(format!(
                    "SELECT {k}, arg_min(v, {}) AS {col}\n  FROM (\n    SELECT {k}, {v} AS v, count(*) AS n\n    FROM {ev}{}\n    GROUP BY {k}, {v}\n  ) counted\n  GROUP BY {k}",
                    d.struct_of(&[("n", "-n"), ("v", "v")]),
                    filtered(&format!("{v} IS NOT NULL"))
                )),
                AggFn::Mode => Some(format!(
                    "SELECT {k}, v AS {col}\n  FROM (\n    SELECT {k}, v,\n           ROW_NUMBER() OVER (PARTITION BY {k} ORDER BY n DESC, v ASC) AS rn\n    FROM (\n      SELECT {k}, {v} AS v, count(*) AS n\n      FROM {ev}{}\n      GROUP BY {k}, {v}\n    ) counted\n  ) ranked\n  WHERE rn = 1",
                    filtered(&format!("{v} IS NOT NULL"))
                )),
            };
            if let Some(sql) = own_cte {
                ctes.push((format!("agg_{i}_{}", agg.function.name()), sql));
                joins.push(format!(
                    "LEFT JOIN agg_{i}_{} x_{i} ON x_{i}.{k} = p.{k}",
                    agg.function.name()
                ));
                alias_of.insert(aid, format!("x_{i}"));
            }
        }
        for (b, aggs) in &simple {
            let beh = &self.p.behaviors[b.index()];
            let cols: Vec<String> = aggs
                .iter()
                .map(|(a, f)| format!("{f} AS agg_{}", a.0))
                .collect();
            let name = format!("aggs_{}", beh.meta.name);
            ctes.push((
                name.clone(),
                format!(
                    "SELECT {k},\n         {}\n  FROM ev_{}\n  GROUP BY {k}",
                    cols.join(",\n         "),
                    beh.meta.name
                ),
            ));
            // Every simple aggregate of this behavior reads from the same CTE, joined once.
            let alias = format!("b_{}", b.0);
            joins.push(format!("LEFT JOIN {name} {alias} ON {alias}.{k} = p.{k}"));
            for (a, _) in aggs {
                alias_of.insert(*a, alias.clone());
            }
        }
        let agg_columns: Vec<String> = defaults
            .into_iter()
            .map(|(aid, col, default)| {
                let alias = &alias_of[&aid];
                match default {
                    Some(def) => format!("COALESCE({alias}.{col}, {def}) AS {col}"),
                    None => format!("{alias}.{col} AS {col}"),
                }
            })
            .collect();

        // Sequences.
        let mut seq_columns = Vec::new();
        for (i, seq) in self.p.sequences.iter().enumerate() {
            if self.p.behaviors[seq.first.behavior.index()].entity != id {
                continue;
            }
            ctes.push((format!("seq_{i}_members"), self.sequence(seq)));
            seq_columns.push(format!("(s_{i}.{k} IS NOT NULL) AS seq_{i}"));
        }

        // Attributes read from sources.
        let mut attr_columns = Vec::new();
        let mut attr_joins = Vec::new();
        // With struct keys, the attributes of one source are aggregates of one GROUP BY.
        let mut attr_aggs: BTreeMap<SourceId, Vec<String>> = BTreeMap::new();
        for (i, a) in self.p.attributes.iter().enumerate() {
            if a.entity != id {
                continue;
            }
            if let AttributeValue::FromSource {
                source,
                value,
                order_by,
                latest,
            } = &a.value
            {
                let s = &self.p.sources[source.index()];
                let v = self.expr(
                    value,
                    &Scope::Row {
                        source: *source,
                        alias: None,
                    },
                );
                if d.struct_arg_by() {
                    let present = format!("FILTER (WHERE {v} IS NOT NULL)");
                    let f = match order_by {
                        // No order: the greatest value.
                        None => format!("max({v})"),
                        // Ordered by the value itself: its greatest (smallest).
                        Some(c) if matches!(value.kind, ExprKind::Column(x) if x == *c) => {
                            format!("{}({v})", if *latest { "max" } else { "min" })
                        }
                        // Latest: the rows with an order first, then the greatest order, then
                        // the greatest value.
                        Some(c) if *latest => {
                            let t = self.q(&s.columns[c.index()].name);
                            let key = d.struct_of(&[
                                ("o", &format!("{t} IS NOT NULL")),
                                ("t", &t),
                                ("v", &v),
                            ]);
                            format!("arg_max({v}, {key}) {present}")
                        }
                        // Earliest: the smallest order, ties to the greatest value, which no
                        // single struct key orders; an ordered aggregate.
                        Some(c) => format!(
                            "first({v} ORDER BY {} ASC NULLS LAST, {v} DESC) {present}",
                            self.q(&s.columns[c.index()].name)
                        ),
                    };
                    let name = &s.meta.name;
                    attr_columns.push(format!("as_{name}.attr_{i} AS {}", self.q(&a.meta.name)));
                    attr_aggs
                        .entry(*source)
                        .or_default()
                        .push(format!("{f} AS attr_{i}"));
                    continue;
                }
                let dir = if *latest { "DESC" } else { "ASC" };
                let order = match order_by {
                    Some(c) => format!(
                        "{} {dir} NULLS LAST, v DESC",
                        self.q(&s.columns[c.index()].name)
                    ),
                    None => "v DESC".to_string(),
                };
                let cte = format!("attr_{}", a.meta.name);
                let columns = format!(
                    "{}, {v} AS v",
                    order_by.map_or_else(
                        || "1 AS unordered".to_string(),
                        |c| self.q(&s.columns[c.index()].name)
                    )
                );
                let query = if d.ordered_first_value() {
                    format!(
                        "SELECT {k}, first_value(v ORDER BY {order}) AS v\n  FROM (SELECT {k}, {columns} FROM {} src) r\n  WHERE {k} IS NOT NULL AND v IS NOT NULL\n  GROUP BY {k}",
                        self.source_rows(*source)
                    )
                } else {
                    format!(
                        "SELECT {k}, v\n  FROM (\n    SELECT {k}, v, ROW_NUMBER() OVER (PARTITION BY {k} ORDER BY {order}) AS rn\n    FROM (SELECT {k}, {columns} FROM {} src) r\n    WHERE {k} IS NOT NULL AND v IS NOT NULL\n  ) ranked\n  WHERE rn = 1",
                        self.source_rows(*source)
                    )
                };
                ctes.push((cte.clone(), query));
                attr_columns.push(format!("a_{i}.v AS {}", self.q(&a.meta.name)));
                attr_joins.push(format!(
                    "LEFT JOIN {} a_{i} ON a_{i}.{k} = p.{k}",
                    self.q(&cte)
                ));
            }
        }

        for (source, aggs) in &attr_aggs {
            let name = &self.p.sources[source.index()].meta.name;
            ctes.push((
                format!("attrs_{name}"),
                format!(
                    "SELECT {k},\n         {}\n  FROM {} r\n  WHERE {k} IS NOT NULL\n  GROUP BY {k}",
                    aggs.join(",\n         "),
                    self.source_rows(*source)
                ),
            ));
            attr_joins.push(format!(
                "LEFT JOIN attrs_{name} as_{name} ON as_{name}.{k} = p.{k}"
            ));
        }

        // Layer 0: profiles with aggregates, sequences and source attributes.
        let mut layer0_cols = vec!["p.canonical_id".to_string()];
        if self.pit.is_some() {
            layer0_cols.push("p.spine_ts".to_string());
        }
        layer0_cols.extend(agg_columns);
        layer0_cols.extend(seq_columns);
        layer0_cols.extend(attr_columns);
        let mut all_joins = joins;
        all_joins.extend(attr_joins);
        all_joins.extend(self.sequence_joins(id));
        ctes.push((
            "layer_0".into(),
            format!(
                "SELECT {}\n  FROM profiles p\n  {}",
                layer0_cols.join(",\n         "),
                all_joins.join("\n  ")
            ),
        ));

        // Layers 1..n: derived values, each after everything it reads.
        let depth = self.depths(id);
        let max_depth = depth.values().copied().max().unwrap_or(0);
        for level in 1..=max_depth {
            let mut cols = vec!["l.*".to_string()];
            for v in &self.p.profile_order {
                if depth.get(v) != Some(&level) {
                    continue;
                }
                cols.push(self.profile_value_column(*v));
            }
            ctes.push((
                format!("layer_{level}"),
                format!(
                    "SELECT {}\n  FROM layer_{} l",
                    cols.join(",\n         "),
                    level - 1
                ),
            ));
        }

        // Journey conditions, evaluated once per profile next to the values they read.
        let mut last_layer = max_depth;
        if self.pit.is_none() {
            let conditions = self.journey_conditions(id);
            if !conditions.is_empty() {
                last_layer += 1;
                let mut cols = vec!["l.*".to_string()];
                cols.extend(conditions.iter().map(|(name, e)| {
                    format!(
                        "COALESCE({}, FALSE) AS {name}",
                        self.expr(e, &Scope::Profile)
                    )
                }));
                ctes.push((
                    format!("layer_{last_layer}"),
                    format!(
                        "SELECT {}\n  FROM layer_{max_depth} l",
                        cols.join(",\n         ")
                    ),
                ));
            }
        }

        let mut final_cols = vec!["canonical_id".to_string()];
        let mut names = Vec::new();
        for v in &self.p.profile_order {
            if let Some(name) = self.profile_value_name(*v, id) {
                names.push(name.to_string());
            }
        }
        let mut ordered: Vec<(u8, &str)> = Vec::new();
        for a in self.p.attributes.iter().filter(|a| a.entity == id) {
            ordered.push((0, &a.meta.name));
        }
        for f in self.p.features.iter().filter(|f| f.entity == id) {
            ordered.push((1, &f.meta.name));
        }
        for s in self.p.segments.iter().filter(|s| s.entity == id) {
            ordered.push((2, &s.meta.name));
        }
        final_cols.extend(ordered.iter().map(|(_, n)| self.q(n)));
        let defs: Vec<&str> = ordered.iter().map(|(_, n)| *n).collect();

        let mut sql = self.header(
            &format!(
                "{}: one row per profile with its attributes, features and segment memberships",
                entity.meta.name
            ),
            &defs,
        );
        let identity = self.table(entity, "identity");
        let body: Vec<String> = ctes
            .iter()
            .map(|(n, q)| format!("{} AS (\n  {q}\n)", self.q(n)))
            .collect();
        let Some(key) = self.pit else {
            // Every computed value (aggregates, sequences, journey conditions too) goes to
            // `<entity>_values`, which journeys and KPIs read; the profile shows the named ones.
            let values = self.table(entity, "values");
            let _ = write!(sql, "CREATE TABLE {values} AS\nWITH ");
            sql.push_str(&body.join(",\n"));
            let _ = write!(sql, "\nSELECT *\nFROM layer_{last_layer}");
            let profile_sql = format!(
                "{}CREATE TABLE {profile} AS\nSELECT {}\nFROM {values}",
                self.header(&format!("{}: the profile table", entity.meta.name), &[]),
                final_cols.join(",\n       ")
            );
            let mut statements = self.rows_statements(id, entity);
            statements.push(Statement {
                table: unquote(&values),
                sql,
            });
            statements.push(Statement {
                table: unquote(&profile),
                sql: profile_sql,
            });
            return statements;
        };
        // Training set: every spine row, with the values of its (profile, timestamp) point.
        let table = self.table(entity, "training_set");
        let spine = self.table(entity, "spine");
        let key_col = self.q(&entity.keys[key.index()].name);
        let values: Vec<String> = ordered
            .iter()
            .map(|(_, n)| format!("l.{}", self.q(n)))
            .collect();
        let mut sql = self.header(
            &format!(
                "{}: point-in-time training set, each spine row with the values as of its own `ts`",
                entity.meta.name
            ),
            &defs,
        );
        let _ = write!(
            sql,
            "CREATE TABLE {table} AS\nWITH {}\nSELECT sp.{key_col}, sp.ts,\n       {}\nFROM {spine} sp\nLEFT JOIN {identity} i ON i.key_name = {} AND i.key_value = {}\nLEFT JOIN layer_{max_depth} l ON l.canonical_id = {}",
            body.join(",\n"),
            values.join(",\n       "),
            d.string(&entity.keys[key.index()].name),
            self.normalized_key(entity, key, &format!("sp.{key_col}"), &Type::String),
            self.pit_id("i.canonical_id", "sp.ts"),
        );
        vec![Statement {
            table: unquote(&table),
            sql,
        }]
    }

    /// Whether the rows of each source are built as tables of their own (see
    /// [`Dialect::inlines_ctes`]); a training set keeps them inline, each spine point seeing
    /// its own rows.
    fn rows_as_tables(&self) -> bool {
        self.pit.is_none() && self.d.inlines_ctes()
    }

    /// The statements building `<entity>_rows_<source>` for every bound source, when
    /// [`Self::rows_as_tables`]: the rows that the values statement or a KPI reads.
    fn rows_statements(&self, id: EntityId, entity: &'p Entity) -> Vec<Statement> {
        if !self.rows_as_tables() {
            return Vec::new();
        }
        let mut readers = self.used_behaviors(id);
        for b in self.kpi_behaviors(id) {
            match readers.iter_mut().find(|(r, _)| *r == b) {
                Some((_, horizon)) => *horizon = None,
                None => readers.push((b, None)),
            }
        }
        self.bound_sources(entity)
            .iter()
            .map(|(source, bindings)| {
                let name = &self.p.sources[source.index()].meta.name;
                let table = self.table(entity, &format!("rows_{name}"));
                let header = self.header(
                    &format!(
                        "{}: the rows of `{name}` with the canonical id of their strongest key",
                        entity.meta.name
                    ),
                    &[],
                );
                let wanted = self.rows_wanted(*source, &readers, true);
                Statement {
                    table: unquote(&table),
                    sql: format!(
                        "{header}CREATE TABLE {table} AS\n{}",
                        self.rows_query(entity, *source, bindings, wanted.as_deref())
                    ),
                }
            })
            .collect()
    }

    /// The rows of a source visible at the as-of time (all of them for a training set), with
    /// the canonical id of their strongest key; with `wanted` (see [`Self::rows_wanted`]), only
    /// the rows that meet it.
    fn rows_query(
        &self,
        entity: &'p Entity,
        source: SourceId,
        bindings: &[&KeyBinding],
        wanted: Option<&str>,
    ) -> String {
        let d = self.d;
        // Numbered profiles: the identifiers with their profile's number (the `ids` CTE).
        let identity = if self.key == "canonical_id" {
            self.table(entity, "identity")
        } else {
            "ids".to_string()
        };
        let k = self.key.as_str();
        let s = &self.p.sources[source.index()];
        let mut joins = Vec::new();
        let mut ids = Vec::new();
        for (i, b) in bindings.iter().enumerate() {
            let key = &entity.keys[b.key.index()];
            let alias = format!("k{i}");
            joins.push(format!(
                "  LEFT JOIN {identity} {alias} ON {alias}.key_name = {} AND {alias}.key_value = {}",
                d.string(&key.name),
                self.key_value(entity, b, "s")
            ));
            ids.push(format!("{alias}.{k}"));
        }
        let cols: Vec<String> = s
            .columns
            .iter()
            .filter(|c| c.name != "canonical_id")
            .map(|c| format!("s.{}", self.q(&c.name)))
            .collect();
        let id_expr = if ids.len() == 1 {
            ids[0].clone()
        } else {
            format!("COALESCE({})", ids.join(", "))
        };
        // In point-in-time mode each spine point sees the rows up to its own time instead.
        let conds: Vec<String> = self
            .visible(source, "s")
            .filter(|_| self.pit.is_none())
            .into_iter()
            .chain(wanted.map(str::to_string))
            .collect();
        let where_ = if conds.is_empty() {
            String::new()
        } else {
            format!("\n  WHERE {}", conds.join("\n    AND "))
        };
        format!(
            "SELECT {id_expr} AS {k}, {}\n  FROM {} s\n{}{where_}",
            cols.join(", "),
            self.q(&s.table),
            joins.join("\n")
        )
    }

    /// CTEs with the rows of each bound source (visible at the as-of time, with the canonical id
    /// of their strongest key) and the events of the given behaviors. `all_sources` keeps the
    /// rows of sources no behavior reads (attributes read them).
    fn event_ctes(
        &self,
        entity: &'p Entity,
        behaviors: &[(BehaviorId, Option<u64>)],
        all_sources: bool,
    ) -> Vec<(String, String)> {
        let mut ctes = Vec::new();
        // Rows of each source with the canonical id of their strongest key.
        for (source, bindings) in &self.bound_sources(entity) {
            if !all_sources
                && !behaviors
                    .iter()
                    .any(|(b, _)| self.p.behaviors[b.index()].source == *source)
            {
                continue;
            }
            let name = &self.p.sources[source.index()].meta.name;
            let query = if self.rows_as_tables() {
                format!(
                    "SELECT * FROM {}",
                    self.table(entity, &format!("rows_{name}"))
                )
            } else {
                let wanted = self.rows_wanted(*source, behaviors, all_sources);
                self.rows_query(entity, *source, bindings, wanted.as_deref())
            };
            ctes.push((format!("rows_{name}"), query));
        }

        // Events of each behavior of the entity that something reads.
        for (b, horizon) in behaviors {
            let beh = &self.p.behaviors[b.index()];
            let s = &self.p.sources[beh.source.index()];
            let time = &s.columns[beh.time.index()];
            let cols: Vec<String> = s
                .columns
                .iter()
                .filter(|c| c.name != "canonical_id" && c.name != "event_time")
                .map(|c| self.q(&c.name))
                .collect();
            if self.pit.is_some() {
                let mut conds = vec![format!("r.{} <= p.spine_ts", self.q(&time.name))];
                if let Some(f) = &beh.filter {
                    conds.push(self.expr(
                        f,
                        &Scope::Row {
                            source: beh.source,
                            alias: Some("r"),
                        },
                    ));
                }
                let cols: Vec<String> = cols.iter().map(|c| format!("r.{c}")).collect();
                ctes.push((
                    format!("ev_{}", beh.meta.name),
                    format!(
                        "SELECT p.pit_id AS canonical_id, p.spine_ts, {} AS event_time, {}\n  FROM spine_points p\n  JOIN rows_{} r ON r.canonical_id = p.canonical_id\n  WHERE {}",
                        self.event_time(*b, Some("r")),
                        cols.join(", "),
                        s.meta.name,
                        conds.join("\n    AND ")
                    ),
                ));
                continue;
            }
            let mut conds = vec![
                format!("{} IS NOT NULL", self.key),
                format!("{} <= {}", self.q(&time.name), self.as_of),
            ];
            if let Some(f) = &beh.filter {
                conds.push(self.expr(
                    f,
                    &Scope::Row {
                        source: beh.source,
                        alias: None,
                    },
                ));
            }
            // Only the events some window (or sequence) of the statement can count.
            if let Some(h) = horizon {
                conds.push(self.within_horizon(*b, None, *h));
            }
            ctes.push((
                format!("ev_{}", beh.meta.name),
                format!(
                    "SELECT {}, {} AS event_time, {}\n  FROM rows_{}\n  WHERE {}",
                    &self.key,
                    self.event_time(*b, None),
                    cols.join(", "),
                    s.meta.name,
                    conds.join("\n    AND ")
                ),
            ));
        }

        ctes
    }

    /// A behavior's event time (its source's time column, a date as a timestamp), of the row
    /// under `alias`.
    fn event_time(&self, behavior: BehaviorId, alias: Option<&str>) -> String {
        let beh = &self.p.behaviors[behavior.index()];
        let time = &self.p.sources[beh.source.index()].columns[beh.time.index()];
        let col = match alias {
            Some(a) => format!("{a}.{}", self.q(&time.name)),
            None => self.q(&time.name),
        };
        if time.ty == Type::Date {
            format!("CAST({col} AS {})", self.d.type_name(&Type::Timestamp))
        } else {
            col
        }
    }

    /// The condition that a behavior's event (the row under `alias`) is inside the last
    /// `horizon_ms` before the as-of time, written as the windows write theirs.
    fn within_horizon(&self, behavior: BehaviorId, alias: Option<&str>, horizon_ms: u64) -> String {
        format!(
            "{} > {} - {}",
            self.event_time(behavior, alias),
            self.as_of,
            self.d.interval(horizon_ms)
        )
    }

    /// The rows of `source` that a statement reads when only `behaviors` (with their horizons,
    /// see [`Self::used_behaviors`]) and, with `attributes`, the attributes over the source
    /// read them: those that are an event some behavior counts (its `where`, inside its
    /// horizon). None when something reads every row: a behavior without `where` or horizon,
    /// or an attribute. The join to the identifiers then skips the rows no event wants; the
    /// events keep their own conditions, so this changes no result.
    fn rows_wanted(
        &self,
        source: SourceId,
        behaviors: &[(BehaviorId, Option<u64>)],
        attributes: bool,
    ) -> Option<String> {
        let read_by_attribute = self.p.attributes.iter().any(
            |a| matches!(&a.value, AttributeValue::FromSource { source: s, .. } if *s == source),
        );
        if attributes && read_by_attribute {
            return None;
        }
        let row = Scope::Row {
            source,
            alias: Some("s"),
        };
        let mut wanted: Vec<String> = Vec::new();
        for (b, horizon) in behaviors {
            let beh = &self.p.behaviors[b.index()];
            if beh.source != source {
                continue;
            }
            let mut parts = Vec::new();
            if let Some(f) = &beh.filter {
                parts.push(self.expr(f, &row));
            }
            // A training set's points each have their own time: no horizon.
            if let Some(h) = horizon.filter(|_| self.pit.is_none()) {
                parts.push(self.within_horizon(*b, Some("s"), h));
            }
            let condition = match parts.len() {
                0 => return None,
                1 => parts.remove(0),
                _ => format!("({})", parts.join(" AND ")),
            };
            if !wanted.contains(&condition) {
                wanted.push(condition);
            }
        }
        match wanted.len() {
            0 => None,
            1 => wanted.pop(),
            _ => Some(format!("({})", wanted.join(" OR "))),
        }
    }

    fn profile_value_name(&self, v: ProfileValue, entity: EntityId) -> Option<&str> {
        match v {
            ProfileValue::Attribute(a) => Some(&self.p.attributes[a.index()])
                .filter(|x| x.entity == entity)
                .map(|x| x.meta.name.as_str()),
            ProfileValue::Feature(f) => Some(&self.p.features[f.index()])
                .filter(|x| x.entity == entity)
                .map(|x| x.meta.name.as_str()),
            ProfileValue::Segment(s) => Some(&self.p.segments[s.index()])
                .filter(|x| x.entity == entity)
                .map(|x| x.meta.name.as_str()),
        }
    }

    fn profile_value_column(&self, v: ProfileValue) -> String {
        match v {
            ProfileValue::Attribute(a) => {
                let attr = &self.p.attributes[a.index()];
                match &attr.value {
                    AttributeValue::Derived(e) => format!(
                        "{} AS {}",
                        self.expr(e, &Scope::Profile),
                        self.q(&attr.meta.name)
                    ),
                    AttributeValue::FromSource { .. } => {
                        unreachable!("source attributes are in layer 0")
                    }
                }
            }
            ProfileValue::Feature(f) => {
                let feat = &self.p.features[f.index()];
                format!(
                    "{} AS {}",
                    self.expr(&feat.value, &Scope::Profile),
                    self.q(&feat.meta.name)
                )
            }
            ProfileValue::Segment(s) => {
                let seg = &self.p.segments[s.index()];
                // Unknown is not a member: memberships are never null.
                format!(
                    "COALESCE({}, FALSE) AS {}",
                    self.expr(&seg.condition, &Scope::Profile),
                    self.q(&seg.meta.name)
                )
            }
        }
    }

    /// The layer of each derived profile value of the entity: one more than what it reads.
    fn depths(&self, entity: EntityId) -> HashMap<ProfileValue, usize> {
        let mut depth: HashMap<ProfileValue, usize> = HashMap::new();
        for v in &self.p.profile_order {
            let expr = match v {
                ProfileValue::Attribute(a) => {
                    let attr = &self.p.attributes[a.index()];
                    if attr.entity != entity {
                        continue;
                    }
                    match &attr.value {
                        AttributeValue::Derived(e) => e,
                        AttributeValue::FromSource { .. } => {
                            depth.insert(*v, 0);
                            continue;
                        }
                    }
                }
                ProfileValue::Feature(f) => {
                    let x = &self.p.features[f.index()];
                    if x.entity != entity {
                        continue;
                    }
                    &x.value
                }
                ProfileValue::Segment(s) => {
                    let x = &self.p.segments[s.index()];
                    if x.entity != entity {
                        continue;
                    }
                    &x.condition
                }
            };
            let mut level = 1;
            expr.walk(|e| {
                let dep = match e.kind {
                    ExprKind::Attribute(a) => Some(ProfileValue::Attribute(a)),
                    ExprKind::Feature(f) => Some(ProfileValue::Feature(f)),
                    ExprKind::Segment(s) => Some(ProfileValue::Segment(s)),
                    _ => None,
                };
                if let Some(dep) = dep {
                    level = level.max(depth.get(&dep).copied().unwrap_or(0) + 1);
                }
            });
            depth.insert(*v, level);
        }
        depth
    }

    /// The behaviors of the entity that the profile reads, each with how far back before the
    /// as-of time its events count: the longest window of the aggregates and sequences reading
    /// it (a sequence's later steps come after its first, so inside its window too), or None
    /// when one of them reads all time.
    fn used_behaviors(&self, entity: EntityId) -> Vec<(BehaviorId, Option<u64>)> {
        let mut used: BTreeMap<BehaviorId, Option<u64>> = BTreeMap::new();
        let mut read = |b: BehaviorId, window: Option<u64>| {
            if self.p.behaviors[b.index()].entity != entity {
                return;
            }
            let horizon = used.entry(b).or_insert(window);
            *horizon = match (*horizon, window) {
                (Some(a), Some(w)) => Some(a.max(w)),
                _ => None,
            };
        };
        for a in &self.p.aggregates {
            read(a.behavior, a.window_ms);
        }
        for s in &self.p.sequences {
            read(s.first.behavior, s.window_ms);
            for t in &s.then {
                read(t.step.behavior, s.window_ms);
            }
        }
        used.into_iter().collect()
    }

    /// The behaviors whose events the entity's KPIs count (over any period: all time).
    fn kpi_behaviors(&self, entity: EntityId) -> Vec<BehaviorId> {
        fn walk(x: &MeasureExpr, out: &mut Vec<BehaviorId>) {
            match x {
                MeasureExpr::OverEvents { behavior, .. } => out.push(*behavior),
                MeasureExpr::Binary { left, right, .. } => {
                    walk(left, out);
                    walk(right, out);
                }
                MeasureExpr::Neg(inner) => walk(inner, out),
                MeasureExpr::Population
                | MeasureExpr::OverMembers { .. }
                | MeasureExpr::Literal(_) => {}
            }
        }
        let mut out = Vec::new();
        for m in self.p.metrics.iter().filter(|m| m.entity == entity) {
            for measure in &m.measures {
                walk(&measure.value, &mut out);
            }
        }
        out
    }

    /// The condition an event must meet to count: inside the window and the `where`.
    fn agg_condition(&self, agg: &Aggregate, row: &Scope) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(ms) = agg.window_ms {
            parts.push(format!(
                "event_time > {} - {}",
                self.as_of,
                self.d.interval(ms)
            ));
        }
        if let Some(f) = &agg.filter {
            parts.push(self.expr(f, row));
        }
        if parts.is_empty() {
            None
        } else {
            Some(parts.join(" AND "))
        }
    }

    /// Profiles for which `did a then b within D …` holds.
    fn sequence(&self, seq: &Sequence) -> String {
        if self.d.asof_join() && self.pit.is_none() {
            return self.sequence_asof(seq);
        }
        let ev = |b: BehaviorId| format!("ev_{}", self.p.behaviors[b.index()].meta.name);
        let row = |b: BehaviorId, alias: &'static str| Scope::Row {
            source: self.p.behaviors[b.index()].source,
            alias: Some(alias),
        };
        const ALIASES: [&str; 8] = ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"];
        let mut from = format!("{} e0", ev(seq.first.behavior));
        let mut conds = Vec::new();
        if let Some(f) = &seq.first.filter {
            conds.push(self.expr(f, &row(seq.first.behavior, "e0")));
        }
        if let Some(w) = seq.window_ms {
            conds.push(format!(
                "e0.event_time > {} - {}",
                self.as_of_at("e0"),
                self.d.interval(w)
            ));
        }
        for (n, t) in seq.then.iter().enumerate() {
            let (prev, cur) = (ALIASES[n.min(7)], ALIASES[(n + 1).min(7)]);
            let within = self.d.interval(t.within_ms);
            let mut on = vec![
                format!("{cur}.{k} = {prev}.{k}", k = &self.key),
                format!("{cur}.event_time > {prev}.event_time"),
                format!("{cur}.event_time <= {prev}.event_time + {within}"),
            ];
            if let Some(f) = &t.step.filter {
                on.push(self.expr(f, &row(t.step.behavior, cur)));
            }
            if t.negated {
                conds.push(format!(
                    "{prev}.event_time + {within} <= {}",
                    self.as_of_at(prev)
                ));
                conds.push(format!(
                    "NOT EXISTS (\n      SELECT 1 FROM {} {cur}\n      WHERE {}\n    )",
                    ev(t.step.behavior),
                    on.join("\n        AND ")
                ));
            } else {
                from.push_str(&format!(
                    "\n    JOIN {} {cur} ON {}",
                    ev(t.step.behavior),
                    on.join("\n      AND ")
                ));
            }
        }
        let where_ = if conds.is_empty() {
            String::new()
        } else {
            format!("\n  WHERE {}", conds.join("\n    AND "))
        };
        format!("SELECT DISTINCT e0.{}\n  FROM {from}{where_}", self.key)
    }

    /// A sequence as ASOF joins, from its last step back ([`Dialect::asof_join`]): an event of
    /// a step qualifies when the first qualifying event of the next step after it comes within
    /// that step's `within` (for `then not`, when none does), which is the same as some
    /// qualifying event coming within it. The profiles with a qualifying first event are the
    /// members.
    fn sequence_asof(&self, seq: &Sequence) -> String {
        let k = &self.key;
        let steps: Vec<&SequenceStep> = std::iter::once(&seq.first)
            .chain(seq.then.iter().map(|t| &t.step))
            .collect();
        // The qualifying events of the step after the current one, as a query.
        let mut next: Option<String> = None;
        for (i, step) in steps.iter().enumerate().rev() {
            let a = format!("e{i}");
            let beh = &self.p.behaviors[step.behavior.index()];
            let mut from = format!("ev_{} {a}", beh.meta.name);
            let mut conds = Vec::new();
            if let Some(f) = &step.filter {
                conds.push(self.expr(
                    f,
                    &Scope::Row {
                        source: beh.source,
                        alias: Some(&a),
                    },
                ));
            }
            if let Some(q) = next.take() {
                let t = &seq.then[i];
                let b = format!("e{}", i + 1);
                let within = self.d.interval(t.within_ms);
                let join = if t.negated {
                    "ASOF LEFT JOIN"
                } else {
                    "ASOF JOIN"
                };
                let q = q.replace('\n', "\n  ");
                let _ = write!(
                    from,
                    "\n  {join} (\n    {q}\n  ) {b} ON {b}.{k} = {a}.{k} AND {b}.event_time > {a}.event_time"
                );
                if t.negated {
                    conds.push(format!("{a}.event_time + {within} <= {}", self.as_of));
                    conds.push(format!(
                        "({b}.event_time IS NULL OR {b}.event_time > {a}.event_time + {within})"
                    ));
                } else {
                    conds.push(format!("{b}.event_time <= {a}.event_time + {within}"));
                }
            }
            // Every step comes after the first, so inside the window too.
            if let Some(w) = seq.window_ms {
                conds.push(format!(
                    "{a}.event_time > {} - {}",
                    self.as_of,
                    self.d.interval(w)
                ));
            }
            let select = if i == 0 {
                format!("SELECT DISTINCT e0.{k}")
            } else {
                format!("SELECT {a}.{k}, {a}.event_time")
            };
            let where_ = if conds.is_empty() {
                String::new()
            } else {
                format!("\n  WHERE {}", conds.join("\n    AND "))
            };
            next = Some(format!("{select}\n  FROM {from}{where_}"));
        }
        next.unwrap_or_default()
    }

    fn sequence_joins(&self, entity: EntityId) -> Vec<String> {
        self.p
            .sequences
            .iter()
            .enumerate()
            .filter(|(_, s)| self.p.behaviors[s.first.behavior.index()].entity == entity)
            .map(|(i, _)| {
                format!(
                    "LEFT JOIN seq_{i}_members s_{i} ON s_{i}.{k} = p.{k}",
                    k = &self.key
                )
            })
            .collect()
    }

    // ---------------------------------------------------------------------- journeys

    /// Conditions of the entity's journeys, as boolean columns of `<entity>_values`.
    fn journey_conditions(&self, entity: EntityId) -> Vec<(String, &'p Expr)> {
        let mut out = Vec::new();
        for (j, journey) in self.p.journeys.iter().enumerate() {
            if journey.entity != entity {
                continue;
            }
            out.push((format!("jc{j}_entry"), &journey.entry));
            if let Some(g) = &journey.goal {
                out.push((format!("jc{j}_goal"), g));
            }
            if let Some(x) = &journey.exit {
                out.push((format!("jc{j}_exit"), x));
            }
            for (n, node) in journey.nodes.iter().enumerate() {
                match &node.kind {
                    NodeKind::WaitUntil { condition, .. } => {
                        out.push((format!("jc{j}_n{n}"), condition))
                    }
                    NodeKind::Branch { arms, .. } => {
                        for (a, (cond, _)) in arms.iter().enumerate() {
                            out.push((format!("jc{j}_n{n}_{a}"), cond));
                        }
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// A journey's run: profiles enter, goals and exits end them, then every profile advances
    /// through its state machine as far as time allows (a loop until nobody moves). The previous
    /// state is `<journey>_state`; the new one is `<journey>_state_next`, with one timestamp
    /// column per step (when the profile entered it: a sparse table).
    fn journey(
        &self,
        j: usize,
        journey: &'p Journey,
        entity: &'p Entity,
        steps: &mut Vec<Step>,
        outputs: &mut Vec<String>,
        initial_state: &mut Vec<Statement>,
    ) {
        let d = self.d;
        let name = &journey.meta.name;
        let t = |suffix: &str| self.q(&format!("{name}_{suffix}"));
        let (state, prior, work, round, fired, fired_round, transitions) = (
            t("state"),
            t("state_prior"),
            t("state_next"),
            t("state_round"),
            t("activations"),
            t("activations_round"),
            t("transitions"),
        );
        let values = self.table(entity, "values");
        let text = d.type_name(&Type::String);
        let ts = d.type_name(&Type::Timestamp);
        let n = journey.nodes.len();
        let node_cols: Vec<String> = (0..n).map(|k| format!("n{k}_at")).collect();
        let all_cols = {
            let mut c = JOURNEY_STATE_COLUMNS.to_vec();
            c.extend(node_cols.iter().map(String::as_str));
            c.join(", ")
        };

        // The empty state, for the first run.
        let mut empty = vec![
            format!("CAST(NULL AS {text}) AS canonical_id"),
            "CAST(NULL AS BIGINT) AS node".to_string(),
            format!("CAST(NULL AS {text}) AS status"),
            format!("CAST(NULL AS {ts}) AS node_since"),
            format!("CAST(NULL AS {ts}) AS entered_at"),
            format!("CAST(NULL AS {ts}) AS finished_at"),
        ];
        empty.extend(
            node_cols
                .iter()
                .map(|c| format!("CAST(NULL AS {ts}) AS {c}")),
        );
        initial_state.push(Statement {
            table: unquote(&state),
            sql: format!(
                "CREATE TABLE IF NOT EXISTS {state} AS\nSELECT {}\nWHERE FALSE",
                empty.join(",\n       ")
            ),
        });

        // The previous state, with the state of a profile merged into another since then
        // carried over to the survivor (unless the survivor has its own: then the survivor's).
        let merges = self.table(entity, "id_merges");
        let prior_sql = format!(
            "{}CREATE TABLE {prior} AS\nSELECT {all_cols}\nFROM (\n  SELECT coalesce(m.into_id, p.canonical_id) AS canonical_id, {},\n         ROW_NUMBER() OVER (PARTITION BY coalesce(m.into_id, p.canonical_id)\n                            ORDER BY CASE WHEN m.into_id IS NULL THEN 0 ELSE 1 END, p.entered_at, p.canonical_id) AS rn\n  FROM {state} p\n  LEFT JOIN {merges} m ON m.merged_id = p.canonical_id\n) carried\nWHERE rn = 1",
            self.header(&format!("journey {name}: the state after the previous run, merged profiles folded into their survivor"), &[name]),
            all_cols
                .split(", ")
                .skip(1)
                .map(|c| format!("p.{c}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        steps.push(Step::Create(Statement {
            table: unquote(&prior),
            sql: prior_sql,
        }));
        let state = prior;

        // Entries, then goals and exits.
        let policy = match journey.reentry {
            Reentry::Never => "p.canonical_id IS NULL".to_string(),
            Reentry::Always => "(p.canonical_id IS NULL OR p.status <> 'active')".to_string(),
            Reentry::AfterMs(ms) => format!(
                "(p.canonical_id IS NULL OR (p.status <> 'active' AND p.finished_at <= {} - {}))",
                self.as_of,
                d.interval(ms)
            ),
        };
        let mut entry_cols = vec![
            "e.canonical_id".to_string(),
            "0 AS node".to_string(),
            "'active' AS status".to_string(),
            format!("{} AS node_since", self.as_of),
            format!("{} AS entered_at", self.as_of),
            format!("CAST(NULL AS {ts}) AS finished_at"),
        ];
        for k in 0..n {
            entry_cols.push(if k == 0 {
                format!("{} AS n0_at", self.as_of)
            } else {
                format!("CAST(NULL AS {ts}) AS n{k}_at")
            });
        }
        let goal = journey.goal.as_ref().map(|_| format!("c.jc{j}_goal"));
        let exit = journey.exit.as_ref().map(|_| format!("c.jc{j}_exit"));
        let ending = match (&goal, &exit) {
            (Some(g), Some(x)) => format!("CASE WHEN s.status = 'active' AND {g} THEN 'converted' WHEN s.status = 'active' AND {x} THEN 'exited' ELSE s.status END"),
            (Some(g), None) => format!("CASE WHEN s.status = 'active' AND {g} THEN 'converted' ELSE s.status END"),
            (None, Some(x)) => format!("CASE WHEN s.status = 'active' AND {x} THEN 'exited' ELSE s.status END"),
            (None, None) => "s.status".to_string(),
        };
        let mut ended_cols = vec![
            "s.canonical_id".to_string(),
            "s.node".to_string(),
            format!("{ending} AS status"),
            "s.node_since".into(),
            "s.entered_at".into(),
        ];
        ended_cols.push(format!("CASE WHEN s.status = 'active' AND {ending} <> 'active' THEN {} ELSE s.finished_at END AS finished_at", self.as_of));
        ended_cols.extend(node_cols.iter().map(|c| format!("s.{c}")));
        let start_sql = format!(
            "{}CREATE TABLE {work} AS\nWITH c AS (\n  SELECT canonical_id, {} FROM {values}\n),\n\
             entering AS (\n  SELECT c.canonical_id\n  FROM c\n  LEFT JOIN {state} p ON p.canonical_id = c.canonical_id\n  WHERE c.jc{j}_entry AND {policy}\n),\n\
             started AS (\n  SELECT p.* FROM {state} p\n  WHERE NOT EXISTS (SELECT 1 FROM entering e WHERE e.canonical_id = p.canonical_id)\n  UNION ALL\n  SELECT {}\n  FROM entering e\n)\n\
             SELECT {}\nFROM started s\nLEFT JOIN c ON c.canonical_id = s.canonical_id",
            self.header(&format!("journey {name}: entries, goals and exits"), &[name]),
            self.journey_condition_names(j, journey).join(", "),
            entry_cols.join(",\n         "),
            ended_cols.join(",\n       "),
        );
        steps.push(Step::Create(Statement {
            table: unquote(&work),
            sql: start_sql,
        }));
        steps.push(Step::Create(Statement {
            table: unquote(&fired),
            sql: format!(
                "CREATE TABLE {fired} AS\nSELECT CAST(NULL AS {text}) AS canonical_id, CAST(NULL AS {text}) AS activation, CAST(NULL AS {ts}) AS fired_at\nWHERE FALSE"
            ),
        }));

        // One round of advancing.
        let mut next_node = vec!["CASE WHEN w.status <> 'active' THEN w.node".to_string()];
        let mut next_since = vec!["CASE WHEN w.status <> 'active' THEN w.node_since".to_string()];
        let mut activations = Vec::new();
        let mut ends = Vec::new();
        let due = |ms: u64| format!("w.node_since + {}", d.interval(ms));
        for (k, node) in journey.nodes.iter().enumerate() {
            let (nx, since) = match &node.kind {
                NodeKind::Activate { activation, next } => {
                    activations.push((k, &self.p.activations[activation.index()].meta.name));
                    (next.0.to_string(), "w.node_since".to_string())
                }
                NodeKind::Wait { ms, next } => (
                    format!("CASE WHEN {} <= {} THEN {} ELSE w.node END", due(*ms), self.as_of, next.0),
                    format!("CASE WHEN {} <= {} THEN {} ELSE w.node_since END", due(*ms), self.as_of, due(*ms)),
                ),
                NodeKind::WaitUntil { timeout_ms, next, .. } => (
                    format!("CASE WHEN c.jc{j}_n{k} OR {} <= {} THEN {} ELSE w.node END", due(*timeout_ms), self.as_of, next.0),
                    format!(
                        "CASE WHEN c.jc{j}_n{k} THEN {} WHEN {} <= {} THEN {} ELSE w.node_since END",
                        self.as_of,
                        due(*timeout_ms),
                        self.as_of,
                        due(*timeout_ms)
                    ),
                ),
                NodeKind::Branch { arms, otherwise } => {
                    let mut case = String::from("CASE");
                    for (a, (_, target)) in arms.iter().enumerate() {
                        let _ = write!(case, " WHEN c.jc{j}_n{k}_{a} THEN {}", target.0);
                    }
                    let _ = write!(case, " ELSE {} END", otherwise.0);
                    (case, "w.node_since".to_string())
                }
                NodeKind::Split { arms } => {
                    let hash = d.md5_hex(&d.concat2("w.canonical_id", &d.string(&format!(":{name}"))));
                    let bucket = format!("({} % 10000)", d.hex8_value(&hash));
                    let mut case = String::from("CASE");
                    let mut upto = 0u32;
                    for (bp, target) in arms {
                        upto += bp;
                        let _ = write!(case, " WHEN {bucket} < {upto} THEN {}", target.0);
                    }
                    let last = arms.last().map_or(k as u32, |a| a.1 .0);
                    let _ = write!(case, " ELSE {last} END");
                    (case, "w.node_since".to_string())
                }
                NodeKind::End => {
                    ends.push(k);
                    ("w.node".to_string(), "w.node_since".to_string())
                }
            };
            next_node.push(format!("WHEN w.node = {k} THEN {nx}"));
            next_since.push(format!("WHEN w.node = {k} THEN {since}"));
        }
        next_node.push("ELSE w.node END".into());
        next_since.push("ELSE w.node_since END".into());
        let ended = if ends.is_empty() {
            "FALSE".to_string()
        } else {
            format!(
                "w.node IN ({})",
                ends.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut advanced_cols = vec![
            "m.canonical_id".to_string(),
            "m.next_node AS node".to_string(),
            format!("CASE WHEN m.status = 'active' AND m.{ended_col} THEN 'completed' ELSE m.status END AS status", ended_col = "at_end"),
            "m.next_since AS node_since".to_string(),
            "m.entered_at".to_string(),
            "CASE WHEN m.status = 'active' AND m.at_end THEN m.node_since ELSE m.finished_at END AS finished_at".to_string(),
        ];
        advanced_cols.extend(
            (0..n).map(|k| format!("CASE WHEN m.next_node = {k} AND m.node <> {k} THEN m.next_since ELSE m.n{k}_at END AS n{k}_at")),
        );
        let advance_sql = format!(
            "{}CREATE TABLE {work} AS\nWITH c AS (\n  SELECT canonical_id, {} FROM {values}\n),\n\
             moved AS (\n  SELECT w.*,\n         {} AS next_node,\n         {} AS next_since,\n         {ended} AS at_end\n  FROM {round} w\n  LEFT JOIN c ON c.canonical_id = w.canonical_id\n)\n\
             SELECT {}\nFROM moved m",
            self.header(&format!("journey {name}: one round of steps"), &[]),
            self.journey_condition_names(j, journey).join(", "),
            next_node.join("\n              "),
            next_since.join("\n              "),
            advanced_cols.join(",\n       "),
        );
        let fired_sql = if activations.is_empty() {
            format!("CREATE TABLE {fired} AS\nSELECT * FROM {fired_round}")
        } else {
            let cases: Vec<String> = activations
                .iter()
                .map(|(k, a)| format!("WHEN {k} THEN {}", d.string(a)))
                .collect();
            let ids: Vec<String> = activations.iter().map(|(k, _)| k.to_string()).collect();
            format!(
                "CREATE TABLE {fired} AS\nSELECT * FROM {fired_round}\nUNION ALL\nSELECT w.canonical_id, CASE w.node {} END AS activation, w.node_since AS fired_at\nFROM {round} w\nWHERE w.status = 'active' AND w.node IN ({})",
                cases.join(" "),
                ids.join(", ")
            )
        };
        steps.push(Step::Loop {
            body: vec![
                Statement { table: unquote(&round), sql: format!("CREATE TABLE {round} AS\nSELECT {all_cols} FROM {work}") },
                Statement { table: unquote(&fired_round), sql: format!("CREATE TABLE {fired_round} AS\nSELECT * FROM {fired}") },
                Statement { table: unquote(&fired), sql: fired_sql },
                Statement { table: unquote(&work), sql: advance_sql },
            ],
            converged: format!(
                "SELECT count(*) AS changed\nFROM {work} s\nJOIN {round} r ON r.canonical_id = s.canonical_id\nWHERE s.node <> r.node OR s.status <> r.status"
            ),
            max_rounds: (n as u32) * 2 + 2,
        });
        steps.push(Step::Create(Statement {
            table: unquote(&transitions),
            sql: format!(
                "{}CREATE TABLE {transitions} AS\nSELECT s.canonical_id, p.node AS from_node, s.node AS to_node, p.status AS from_status, s.status AS to_status, s.node_since AS moved_at\nFROM {work} s\nLEFT JOIN {state} p ON p.canonical_id = s.canonical_id\nWHERE p.canonical_id IS NULL OR p.node <> s.node OR p.status <> s.status",
                self.header(&format!("journey {name}: who moved in this run"), &[])
            ),
        }));
        outputs.extend([unquote(&work), unquote(&transitions), unquote(&fired)]);
    }

    fn journey_condition_names(&self, j: usize, journey: &Journey) -> Vec<String> {
        let mut names = vec![format!("jc{j}_entry")];
        if journey.goal.is_some() {
            names.push(format!("jc{j}_goal"));
        }
        if journey.exit.is_some() {
            names.push(format!("jc{j}_exit"));
        }
        for (n, node) in journey.nodes.iter().enumerate() {
            match &node.kind {
                NodeKind::WaitUntil { .. } => names.push(format!("jc{j}_n{n}")),
                NodeKind::Branch { arms, .. } => {
                    names.extend((0..arms.len()).map(|a| format!("jc{j}_n{n}_{a}")))
                }
                _ => {}
            }
        }
        names
    }

    // ---------------------------------------------------------------------- metrics

    /// One row per segment for the period (T - grain, T]: population and measures over the
    /// members (profile values as of T) and over the members' events in the period.
    fn metric(&self, m: &'p Metric, entity: &'p Entity) -> Statement {
        let d = self.d;
        let table = self.q(&m.meta.name);
        let profile = self.table(entity, "profile");
        let seg_table = self.table(entity, "segments");
        let start = format!("{} - {}", self.as_of, d.interval(m.grain_ms));
        let segments: Vec<&str> = if m.segments.is_empty() {
            vec!["all"]
        } else {
            m.segments
                .iter()
                .map(|s| self.p.segments[s.index()].meta.name.as_str())
                .collect()
        };
        let members = if m.segments.is_empty() {
            format!("SELECT canonical_id, 'all' AS segment FROM {profile}")
        } else {
            let list: Vec<String> = segments.iter().map(|s| d.string(s)).collect();
            format!(
                "SELECT canonical_id, segment FROM {seg_table} WHERE segment IN ({})",
                list.join(", ")
            )
        };
        // Leaves of the measures: aggregates over members, or over the members' events.
        let mut member_cols: Vec<String> = Vec::new();
        let mut event_cols: BTreeMap<BehaviorId, Vec<String>> = BTreeMap::new();
        let mut printed = Vec::new();
        for measure in &m.measures {
            let mut leaf = |x: &MeasureExpr| -> String {
                match x {
                    MeasureExpr::Population => {
                        let col = format!("m_{}", member_cols.len());
                        member_cols.push(format!("count(*) AS {col}"));
                        format!("COALESCE(ms.{col}, 0)")
                    }
                    MeasureExpr::OverMembers { function, value } => {
                        let col = format!("m_{}", member_cols.len());
                        let v = self.expr(value, &Scope::Profile);
                        member_cols.push(format!(
                            "{} AS {col}",
                            self.kpi_aggregate(*function, Some(&v))
                        ));
                        self.kpi_default(*function, &format!("ms.{col}"))
                    }
                    MeasureExpr::OverEvents {
                        behavior,
                        function,
                        value,
                        filter,
                    } => {
                        let cols = event_cols.entry(*behavior).or_default();
                        let col = format!("e{}_{}", behavior.0, cols.len());
                        let row = Scope::Row {
                            source: self.p.behaviors[behavior.index()].source,
                            alias: Some("e"),
                        };
                        let v = value.as_ref().map(|v| self.expr(v, &row));
                        let v = match filter {
                            Some(f) => Some(format!(
                                "CASE WHEN {} THEN {} END",
                                self.expr(f, &row),
                                v.unwrap_or_else(|| "1".into())
                            )),
                            None => v,
                        };
                        cols.push(format!(
                            "{} AS {col}",
                            self.kpi_aggregate(*function, v.as_deref())
                        ));
                        self.kpi_default(*function, &format!("es{}.{col}", behavior.0))
                    }
                    _ => String::new(),
                }
            };
            let text = self.measure_expr(&measure.value, &mut leaf);
            printed.push(format!("{text} AS {}", self.q(&measure.name)));
        }
        let behaviors: Vec<BehaviorId> = event_cols.keys().copied().collect();
        let mut ctes = vec![("members".to_string(), members)];
        let behaviors: Vec<(BehaviorId, Option<u64>)> =
            behaviors.into_iter().map(|b| (b, None)).collect();
        ctes.extend(self.event_ctes(entity, &behaviors, false));
        let list: Vec<String> = segments
            .iter()
            .map(|s| format!("SELECT {} AS segment", d.string(s)))
            .collect();
        ctes.push(("measured_segments".into(), list.join("\n  UNION ALL\n  ")));
        if !member_cols.is_empty() {
            ctes.push((
                "member_stats".into(),
                format!(
                    "SELECT m.segment,\n         {}\n  FROM members m\n  JOIN {profile} p ON p.canonical_id = m.canonical_id\n  GROUP BY m.segment",
                    member_cols.join(",\n         ")
                ),
            ));
        }
        for (b, cols) in &event_cols {
            let beh = &self.p.behaviors[b.index()];
            ctes.push((
                format!("event_stats_{}", beh.meta.name),
                format!(
                    "SELECT m.segment,\n         {}\n  FROM members m\n  JOIN ev_{} e ON e.canonical_id = m.canonical_id\n  WHERE e.event_time > {start}\n  GROUP BY m.segment",
                    cols.join(",\n         "),
                    beh.meta.name
                ),
            ));
        }
        let mut joins = Vec::new();
        if !member_cols.is_empty() {
            joins.push("LEFT JOIN member_stats ms ON ms.segment = s.segment".to_string());
        }
        for b in event_cols.keys() {
            let name = &self.p.behaviors[b.index()].meta.name;
            joins.push(format!(
                "LEFT JOIN event_stats_{name} es{} ON es{}.segment = s.segment",
                b.0, b.0
            ));
        }
        let mut sql = self.header(
            &format!(
                "metric {}: one row per segment for the period ending at the as-of time",
                m.meta.name
            ),
            &[&m.meta.name],
        );
        let body: Vec<String> = ctes
            .iter()
            .map(|(n, q)| format!("{} AS (\n  {q}\n)", self.q(n)))
            .collect();
        let _ = write!(
            sql,
            "CREATE TABLE {table} AS\nWITH {}\nSELECT s.segment,\n       {start} AS period_start,\n       {} AS period_end,\n       {}\nFROM measured_segments s\n{}",
            body.join(",\n"),
            self.as_of,
            printed.join(",\n       "),
            joins.join("\n")
        );
        Statement {
            table: unquote(&table),
            sql,
        }
    }

    fn measure_expr(
        &self,
        x: &MeasureExpr,
        leaf: &mut dyn FnMut(&MeasureExpr) -> String,
    ) -> String {
        match x {
            MeasureExpr::Literal(l) => self.literal(l),
            MeasureExpr::Neg(inner) => format!("-({})", self.measure_expr(inner, leaf)),
            MeasureExpr::Binary { op, left, right } => {
                let (l, r) = (
                    self.measure_expr(left, leaf),
                    self.measure_expr(right, leaf),
                );
                match op {
                    BinaryOp::Div => self.d.divide(&l, &r),
                    BinaryOp::Rem => self.d.remainder(&l, &r),
                    _ => format!("({l} {} {r})", binary_symbol(*op)),
                }
            }
            _ => leaf(x),
        }
    }

    /// An aggregate of a KPI leaf over a group of members or events.
    fn kpi_aggregate(&self, f: AggFn, v: Option<&str>) -> String {
        let v = v.unwrap_or("1");
        match f {
            AggFn::Count => format!("count({v})"),
            AggFn::Avg => format!("avg(CAST({v} AS {}))", self.d.double()),
            AggFn::CountDistinct => format!("count(DISTINCT {v})"),
            AggFn::ApproxCountDistinct => match self.d {
                Dialect::DataFusion | Dialect::Trino => format!("approx_distinct({v})"),
                Dialect::DuckDb | Dialect::Spark => format!("approx_count_distinct({v})"),
                Dialect::Postgres => format!("count(DISTINCT {v})"),
            },
            // The checker allows only the aggregates above and sum/min/max in measures.
            other => format!("{}({v})", other.name()),
        }
    }

    /// Counts and sums of nothing are 0; the other aggregates of nothing are null.
    fn kpi_default(&self, f: AggFn, col: &str) -> String {
        match f {
            AggFn::Count | AggFn::CountDistinct | AggFn::ApproxCountDistinct | AggFn::Sum => {
                format!("COALESCE({col}, 0)")
            }
            _ => col.to_string(),
        }
    }

    // ---------------------------------------------------------------------- segments

    fn segments(&self, id: EntityId, entity: &Entity) -> Option<Statement> {
        let segs: Vec<&Segment> = self.p.segments.iter().filter(|s| s.entity == id).collect();
        if segs.is_empty() {
            return None;
        }
        let profile = self.table(entity, "profile");
        let table = self.table(entity, "segments");
        let parts: Vec<String> = segs
            .iter()
            .map(|s| {
                format!(
                    "SELECT canonical_id, {} AS segment FROM {profile} WHERE {}",
                    self.d.string(&s.meta.name),
                    self.q(&s.meta.name)
                )
            })
            .collect();
        let names: Vec<&str> = segs.iter().map(|s| s.meta.name.as_str()).collect();
        let sql = format!(
            "{}CREATE TABLE {table} AS\n{}",
            self.header(
                &format!("{}: segment memberships", entity.meta.name),
                &names
            ),
            parts.join("\nUNION ALL\n")
        );
        Some(Statement {
            table: unquote(&table),
            sql,
        })
    }
}

fn binary_symbol(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::And => "AND",
        BinaryOp::Or => "OR",
        BinaryOp::Eq => "=",
        BinaryOp::Ne => "<>",
        BinaryOp::Lt => "<",
        BinaryOp::Le => "<=",
        BinaryOp::Gt => ">",
        BinaryOp::Ge => ">=",
        BinaryOp::Add => "+",
        BinaryOp::Sub => "-",
        BinaryOp::Mul => "*",
        BinaryOp::Div => "/",
        BinaryOp::Rem => "%",
    }
}

/// The table name without dialect quotes (runners and outputs use plain names).
fn unquote(quoted: &str) -> String {
    quoted.trim_matches(|c| c == '"' || c == '`').to_string()
}

fn parse_beginning() -> i64 {
    crate::config::parse_timestamp(BEGINNING).map_or(0, |s| s * 1_000_000)
}
