//! The streaming back end: the IR lowers to a graph of operators that the streaming runtime
//! runs on live events — sources → key by profile → behaviors → windowed aggregates and sequence
//! detectors → profile values → segment evaluators → journey state machines → sinks.
//!
//! Every operator's state is keyed by canonical profile id, so the runtime partitions the graph
//! by key hash. Each aggregate says here whether its state is invertible (a running count or
//! sum that an event leaving the window subtracts from) or must keep the events of its window.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::ir::{self, *};
use crate::sql::dialect::format_micros;
use crate::types::Aggregate as AggFn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OpId(pub u32);

/// The operator graph; `inputs` of an operator are earlier operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub project: String,
    pub operators: Vec<Operator>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operator {
    pub id: OpId,
    pub kind: OperatorKind,
    pub inputs: Vec<OpId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OperatorKind {
    /// Events of one source, in event time (watermark = max time seen − allowed lateness).
    Source {
        source: SourceId,
    },
    /// Resolves each event's canonical id with incremental identity (union-find over key
    /// values, with the entity's exclusions and limits); merges profile state when two profiles
    /// join, the earlier id surviving.
    KeyByProfile {
        entity: EntityId,
    },
    /// Keeps the events of one behavior.
    Behavior {
        behavior: BehaviorId,
    },
    /// The aggregates of one behavior, each with its window and state kind.
    WindowedAggregates {
        behavior: BehaviorId,
        aggregates: Vec<AggregateState>,
    },
    /// `did a then b within D`: per-profile partial matches, with timers for negated steps.
    SequenceDetector {
        sequence: SequenceId,
    },
    /// Attributes and features recomputed when an input of theirs changes.
    ProfileValues {
        entity: EntityId,
        attributes: Vec<AttributeId>,
        features: Vec<FeatureId>,
    },
    /// Segment conditions; emits enter/exit. Time-driven conditions set timers in event time.
    SegmentEvaluator {
        entity: EntityId,
        segments: Vec<SegmentId>,
        time_driven: Vec<SegmentId>,
    },
    /// A journey's state machine with wait timers, goal and exit checks.
    JourneyMachine {
        journey: JourneyId,
    },
    Sink {
        sink: Sink,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateState {
    pub aggregate: AggregateId,
    /// A running value that subtracts events leaving the window (count, sum, avg).
    pub invertible: bool,
    /// The events (or their values) kept: `Window` for windowed non-invertible aggregates,
    /// `Extremes` for unbounded min/max/first/last (one value), `TopK` for first_k/last_k,
    /// `Counts` for mode and distinct counts (a count per value).
    pub state: StateKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateKind {
    Running,
    Extremes,
    TopK(u32),
    Counts,
    Window,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Sink {
    /// Latest feature values and memberships per canonical id and identity key.
    OnlineStore { entity: EntityId },
    /// Append-only log of segment enter/exit and journey transitions.
    TransitionLog,
    /// An activation fired on segment entry or by a journey step.
    Activation { activation: ActivationId },
}

/// Lowers the IR to the operator graph.
pub fn plan(p: &Project) -> Plan {
    let mut ops: Vec<Operator> = Vec::new();
    let mut add = |kind: OperatorKind, inputs: Vec<OpId>| {
        let id = OpId(ops.len() as u32);
        ops.push(Operator { id, kind, inputs });
        id
    };
    let sources: Vec<OpId> = (0..p.sources.len())
        .map(|i| {
            add(
                OperatorKind::Source {
                    source: SourceId(i as u32),
                },
                Vec::new(),
            )
        })
        .collect();
    let mut transitions = Vec::new();
    let mut activation_inputs: Vec<Vec<OpId>> = vec![Vec::new(); p.activations.len()];
    for (e, entity) in p.entities.iter().enumerate() {
        let eid = EntityId(e as u32);
        let mut bound: Vec<OpId> = entity
            .bindings
            .iter()
            .map(|b| sources[b.source.index()])
            .collect();
        bound.sort();
        bound.dedup();
        let keyed = add(OperatorKind::KeyByProfile { entity: eid }, bound);

        let mut behavior_ops = vec![None; p.behaviors.len()];
        for (b, beh) in p.behaviors.iter().enumerate() {
            if beh.entity == eid {
                behavior_ops[b] = Some(add(
                    OperatorKind::Behavior {
                        behavior: BehaviorId(b as u32),
                    },
                    vec![keyed],
                ));
            }
        }
        let mut value_inputs = vec![keyed];
        for (b, op) in behavior_ops.iter().enumerate() {
            let Some(op) = op else { continue };
            let aggregates: Vec<AggregateState> = p
                .aggregates
                .iter()
                .enumerate()
                .filter(|(_, a)| a.behavior.index() == b)
                .map(|(i, a)| aggregate_state(AggregateId(i as u32), a))
                .collect();
            if !aggregates.is_empty() {
                value_inputs.push(add(
                    OperatorKind::WindowedAggregates {
                        behavior: BehaviorId(b as u32),
                        aggregates,
                    },
                    vec![*op],
                ));
            }
        }
        for (s, seq) in p.sequences.iter().enumerate() {
            let steps = std::iter::once(&seq.first).chain(seq.then.iter().map(|t| &t.step));
            let inputs: Vec<OpId> = steps
                .filter_map(|st| behavior_ops[st.behavior.index()])
                .collect();
            if !inputs.is_empty() {
                value_inputs.push(add(
                    OperatorKind::SequenceDetector {
                        sequence: SequenceId(s as u32),
                    },
                    dedup(inputs),
                ));
            }
        }
        let attributes: Vec<AttributeId> = ids(p.attributes.iter().map(|a| a.entity == eid))
            .map(AttributeId)
            .collect();
        let features: Vec<FeatureId> = ids(p.features.iter().map(|f| f.entity == eid))
            .map(FeatureId)
            .collect();
        let values = add(
            OperatorKind::ProfileValues {
                entity: eid,
                attributes,
                features,
            },
            value_inputs.clone(),
        );
        let segments: Vec<SegmentId> = ids(p.segments.iter().map(|s| s.entity == eid))
            .map(SegmentId)
            .collect();
        let time_driven: Vec<SegmentId> = segments
            .iter()
            .copied()
            .filter(|s| time_driven(p, &p.segments[s.index()].condition))
            .collect();
        let mut seg_inputs = vec![values];
        seg_inputs.extend(value_inputs.iter().skip(1).copied());
        let evaluator = add(
            OperatorKind::SegmentEvaluator {
                entity: eid,
                segments,
                time_driven,
            },
            seg_inputs,
        );
        transitions.push(evaluator);
        for (j, journey) in p.journeys.iter().enumerate() {
            if journey.entity != eid {
                continue;
            }
            let machine = add(
                OperatorKind::JourneyMachine {
                    journey: JourneyId(j as u32),
                },
                vec![evaluator, values],
            );
            transitions.push(machine);
            for node in &journey.nodes {
                if let NodeKind::Activate { activation, .. } = node.kind {
                    activation_inputs[activation.index()].push(machine);
                }
            }
        }
        for (a, act) in p.activations.iter().enumerate() {
            if act.entity == eid && act.segment.is_some() {
                activation_inputs[a].push(evaluator);
            }
        }
        add(
            OperatorKind::Sink {
                sink: Sink::OnlineStore { entity: eid },
            },
            vec![values, evaluator],
        );
    }
    add(
        OperatorKind::Sink {
            sink: Sink::TransitionLog,
        },
        transitions,
    );
    for (a, inputs) in activation_inputs.into_iter().enumerate() {
        // Activations to files and PostgreSQL are batch exports; webhooks fire from the stream.
        if matches!(p.activations[a].destination, Destination::Webhook { .. }) && !inputs.is_empty()
        {
            add(
                OperatorKind::Sink {
                    sink: Sink::Activation {
                        activation: ActivationId(a as u32),
                    },
                },
                dedup(inputs),
            );
        }
    }
    Plan {
        project: p.name.clone(),
        operators: ops,
    }
}

fn ids(flags: impl Iterator<Item = bool>) -> impl Iterator<Item = u32> {
    flags.enumerate().filter(|(_, f)| *f).map(|(i, _)| i as u32)
}

fn dedup(mut v: Vec<OpId>) -> Vec<OpId> {
    v.sort();
    v.dedup();
    v
}

fn aggregate_state(id: AggregateId, a: &ir::Aggregate) -> AggregateState {
    let windowed = a.window_ms.is_some();
    let state = match a.function {
        AggFn::Count | AggFn::Sum | AggFn::Avg => StateKind::Running,
        AggFn::CountDistinct | AggFn::ApproxCountDistinct | AggFn::Mode => StateKind::Counts,
        AggFn::FirstK | AggFn::LastK if !windowed => StateKind::TopK(a.k.unwrap_or(1)),
        AggFn::Min | AggFn::Max | AggFn::First | AggFn::Last if !windowed => StateKind::Extremes,
        _ => StateKind::Window,
    };
    AggregateState {
        aggregate: id,
        invertible: a.invertible(),
        state,
    }
}

/// Whether a condition can change with time alone (windows, `now()`, sequences with `not`):
/// such segments need timers, e.g. "no purchase in 90 days" is entered when time passes.
fn time_driven(p: &Project, e: &Expr) -> bool {
    let mut found = false;
    e.walk(|x| match &x.kind {
        ExprKind::AsOf => found = true,
        ExprKind::Aggregate(a) if p.aggregates[a.index()].window_ms.is_some() => found = true,
        ExprKind::Sequence(s) => {
            let seq = &p.sequences[s.index()];
            if seq.window_ms.is_some() || seq.then.iter().any(|t| t.negated) {
                found = true;
            }
        }
        // Values derived from time-driven values are time-driven too.
        ExprKind::Feature(f) if time_driven(p, &p.features[f.index()].value) => found = true,
        ExprKind::Segment(s) if time_driven(p, &p.segments[s.index()].condition) => found = true,
        ExprKind::Attribute(a) => {
            if let AttributeValue::Derived(d) = &p.attributes[a.index()].value {
                if time_driven(p, d) {
                    found = true;
                }
            }
        }
        _ => {}
    });
    found
}

// ------------------------------------------------------------------------------ printing

/// The plan as text for `cdp plan --streaming`: one operator per line with its inputs.
pub fn render(plan: &Plan, p: &Project) -> String {
    let mut out = format!(
        "streaming plan for `{}`: {} operators, state keyed and partitioned by canonical profile id\n\n",
        plan.project,
        plan.operators.len()
    );
    for op in &plan.operators {
        let inputs = if op.inputs.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = op.inputs.iter().map(|i| format!("#{}", i.0)).collect();
            format!("  <- {}", list.join(", "))
        };
        let _ = writeln!(out, "#{:<3} {}{inputs}", op.id.0, describe(&op.kind, p));
        if let OperatorKind::WindowedAggregates { aggregates, .. } = &op.kind {
            for a in aggregates {
                let agg = &p.aggregates[a.aggregate.index()];
                let _ = writeln!(out, "       {}", describe_aggregate(a, agg, p));
            }
        }
    }
    out
}

fn describe(kind: &OperatorKind, p: &Project) -> String {
    match kind {
        OperatorKind::Source { source } => {
            let s = &p.sources[source.index()];
            match s.time {
                Some(t) => format!(
                    "source {} (event time {})",
                    s.meta.name,
                    s.columns[t.index()].name
                ),
                None => format!(
                    "source {} (a table: changes are upserts by key)",
                    s.meta.name
                ),
            }
        }
        OperatorKind::KeyByProfile { entity } => {
            let e = &p.entities[entity.index()];
            let keys: Vec<String> = e
                .keys
                .iter()
                .map(|k| match k.max_per_profile {
                    Some(n) => format!("{} (max {n})", k.name),
                    None => k.name.clone(),
                })
                .collect();
            format!(
                "key by profile of {}: incremental identity over {}",
                e.meta.name,
                keys.join(", ")
            )
        }
        OperatorKind::Behavior { behavior } => {
            let b = &p.behaviors[behavior.index()];
            let s = &p.sources[b.source.index()];
            let filter = b
                .filter
                .as_ref()
                .map(|f| format!(" where {}", show(f, p, Some(b.source))))
                .unwrap_or_default();
            format!(
                "behavior {} = {}{filter} at {}",
                b.meta.name,
                s.meta.name,
                s.columns[b.time.index()].name
            )
        }
        OperatorKind::WindowedAggregates {
            behavior,
            aggregates,
        } => {
            let max_window = aggregates
                .iter()
                .filter_map(|a| p.aggregates[a.aggregate.index()].window_ms)
                .max();
            let retention = match max_window {
                Some(ms) => format!("events kept {} for windows", duration(ms)),
                None => "no events kept".to_string(),
            };
            format!(
                "aggregates of {} ({} aggregates; {retention})",
                p.behaviors[behavior.index()].meta.name,
                aggregates.len()
            )
        }
        OperatorKind::SequenceDetector { sequence } => {
            format!(
                "sequence detector seq_{}: {}",
                sequence.0,
                show_sequence(&p.sequences[sequence.index()], p)
            )
        }
        OperatorKind::ProfileValues {
            entity,
            attributes,
            features,
        } => format!(
            "profile values of {}: {} attributes, {} features",
            p.entities[entity.index()].meta.name,
            attributes.len(),
            features.len()
        ),
        OperatorKind::SegmentEvaluator {
            entity,
            segments,
            time_driven,
        } => {
            let timed: Vec<&str> = time_driven
                .iter()
                .map(|s| p.segments[s.index()].meta.name.as_str())
                .collect();
            format!(
                "segment evaluator of {}: {} segments, enter/exit events; timers for {}",
                p.entities[entity.index()].meta.name,
                segments.len(),
                if timed.is_empty() {
                    "none".to_string()
                } else {
                    timed.join(", ")
                }
            )
        }
        OperatorKind::JourneyMachine { journey } => {
            let j = &p.journeys[journey.index()];
            let waits = j
                .nodes
                .iter()
                .filter(|n| matches!(n.kind, NodeKind::Wait { .. } | NodeKind::WaitUntil { .. }))
                .count();
            format!(
                "journey {}: state machine of {} steps in {} stages, {waits} wait timers, reentry {}",
                j.meta.name,
                j.nodes.len(),
                j.stages.len(),
                match j.reentry {
                    Reentry::Never => "never".to_string(),
                    Reentry::Always => "always".to_string(),
                    Reentry::AfterMs(ms) => format!("after {}", duration(ms)),
                }
            )
        }
        OperatorKind::Sink { sink } => match sink {
            Sink::OnlineStore { entity } => {
                format!(
                    "sink online store: latest values of {} per canonical id and key",
                    p.entities[entity.index()].meta.name
                )
            }
            Sink::TransitionLog => {
                "sink transition log: segment enter/exit and journey transitions".to_string()
            }
            Sink::Activation { activation } => {
                let a = &p.activations[activation.index()];
                format!(
                    "sink activation {} ({})",
                    a.meta.name,
                    destination(&a.destination)
                )
            }
        },
    }
}

fn describe_aggregate(state: &AggregateState, a: &ir::Aggregate, p: &Project) -> String {
    let source = p.behaviors[a.behavior.index()].source;
    let value = a
        .value
        .as_ref()
        .map(|v| show(v, p, Some(source)))
        .unwrap_or_else(|| p.behaviors[a.behavior.index()].meta.name.clone());
    let k = a.k.map(|k| format!(", {k}")).unwrap_or_default();
    let filter = a
        .filter
        .as_ref()
        .map(|f| format!(" where {}", show(f, p, Some(source))))
        .unwrap_or_default();
    let window = a
        .window_ms
        .map(|ms| format!(" over {}", duration(ms)))
        .unwrap_or_default();
    let kind = match state.state {
        StateKind::Running => "running".to_string(),
        StateKind::Extremes => "one value".to_string(),
        StateKind::TopK(k) => format!("top {k}"),
        StateKind::Counts => "count per value".to_string(),
        StateKind::Window => "window of events".to_string(),
    };
    let inv = if state.invertible {
        "invertible"
    } else {
        "not invertible"
    };
    format!(
        "agg_{}: {}({value}{k}{filter}){window}  [{inv}; state: {kind}]",
        state.aggregate.0,
        a.function.name()
    )
}

fn destination(d: &Destination) -> String {
    match d {
        Destination::File { path, .. } => format!("file {path}"),
        Destination::Webhook { url } => format!("webhook {url}"),
        Destination::Postgres { table, .. } => format!("postgres table {table}"),
    }
}

fn show_sequence(s: &Sequence, p: &Project) -> String {
    let step = |st: &SequenceStep| {
        let name = &p.behaviors[st.behavior.index()].meta.name;
        match &st.filter {
            Some(f) => format!(
                "({name} where {})",
                show(f, p, Some(p.behaviors[st.behavior.index()].source))
            ),
            None => name.clone(),
        }
    };
    let mut out = format!("did {}", step(&s.first));
    for t in &s.then {
        let _ = write!(
            out,
            " then {}{} within {}",
            if t.negated { "not " } else { "" },
            step(&t.step),
            duration(t.within_ms)
        );
    }
    if let Some(w) = s.window_ms {
        let _ = write!(out, " over {}", duration(w));
    }
    out
}

/// `30d`, `12h`, `90s`, `1500ms`: the largest unit that divides the length.
pub fn duration(ms: u64) -> String {
    for (unit, len) in [
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms > 0 && ms.is_multiple_of(len) {
            return format!("{}{unit}", ms / len);
        }
    }
    format!("{ms}ms")
}

/// An IR expression in the language's own notation, for plans and messages.
pub fn show(e: &Expr, p: &Project, source: Option<SourceId>) -> String {
    let s = |x: &Expr| show(x, p, source);
    match &e.kind {
        ExprKind::Literal(l) => match l {
            Literal::Null => "null".into(),
            Literal::Bool(b) => b.to_string(),
            Literal::Int(i) => i.to_string(),
            Literal::Decimal(d) => d.clone(),
            Literal::String(x) => format!("{x:?}"),
            Literal::Date(d) => format!("date {d:?}"),
            Literal::TimestampMicros(m) => format!("timestamp {:?}", format_micros(*m)),
            Literal::DurationMs(ms) => duration(*ms),
        },
        ExprKind::Column(c) => source.map_or_else(
            || format!("column_{}", c.0),
            |src| p.sources[src.index()].columns[c.index()].name.clone(),
        ),
        ExprKind::KeyValue => "value".into(),
        ExprKind::Attribute(a) => p.attributes[a.index()].meta.name.clone(),
        ExprKind::Feature(f) => p.features[f.index()].meta.name.clone(),
        ExprKind::Segment(x) => p.segments[x.index()].meta.name.clone(),
        ExprKind::Aggregate(a) => format!("agg_{}", a.0),
        ExprKind::Sequence(x) => format!("seq_{}", x.0),
        ExprKind::AsOf => "now()".into(),
        ExprKind::List(items) => {
            format!("[{}]", items.iter().map(s).collect::<Vec<_>>().join(", "))
        }
        ExprKind::Call(f, args) => format!(
            "{}({})",
            f.name(),
            args.iter().map(s).collect::<Vec<_>>().join(", ")
        ),
        ExprKind::Not(x) => format!("not ({})", s(x)),
        ExprKind::Neg(x) => format!("-({})", s(x)),
        ExprKind::Binary(op, l, r) => {
            let sym = op.symbol();
            format!("({} {sym} {})", s(l), s(r))
        }
        ExprKind::IsNull { value, negated } => {
            format!("{} is {}null", s(value), if *negated { "not " } else { "" })
        }
        ExprKind::InList {
            value,
            items,
            negated,
        } => format!(
            "{} {}in [{}]",
            s(value),
            if *negated { "not " } else { "" },
            items.iter().map(s).collect::<Vec<_>>().join(", ")
        ),
        ExprKind::Text {
            op,
            value,
            pattern,
            negated,
        } => {
            let word = match op {
                TextOp::Contains => "contains",
                TextOp::StartsWith => "starts with",
                TextOp::EndsWith => "ends with",
                TextOp::Matches => "matches",
            };
            format!(
                "{} {}{word} {}",
                s(value),
                if *negated { "not " } else { "" },
                s(pattern)
            )
        }
        ExprKind::ListContains {
            list,
            item,
            negated,
        } => {
            format!(
                "{} {}contains {}",
                s(list),
                if *negated { "not " } else { "" },
                s(item)
            )
        }
        ExprKind::ListLength(x) => format!("length({})", s(x)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn durations_use_the_largest_unit() {
        assert_eq!(duration(30 * 86_400_000), "30d");
        assert_eq!(duration(14 * 86_400_000), "2w");
        assert_eq!(duration(43_200_000), "12h");
        assert_eq!(duration(1_500), "1500ms");
    }

    #[test]
    fn retail_streaming_plan() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/retail");
        let checked = crate::check(&crate::load_project(&dir).expect("example loads"));
        let ir = crate::lower(&checked).expect("example lowers");
        let plan = plan(&ir);
        // Every operator reads only earlier operators: the graph is acyclic by construction.
        for op in &plan.operators {
            assert!(op.inputs.iter().all(|i| i.0 < op.id.0), "{op:?}");
        }
        insta::assert_snapshot!("retail_streaming_plan", render(&plan, &ir));
    }
}
