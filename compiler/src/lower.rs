//! Lowering: a checked project (without errors) becomes the IR. Names are resolved to ids once,
//! here; predicates become the few primitive forms the back ends implement (e.g. `x within last
//! 7d` becomes `x > T - 7d and x <= T`), and journeys become state machines.

use std::collections::HashMap;

use cdp_grammar::ast::{self, DefKind, Definition, ExprKind as A, Predicate};
use cdp_grammar::Span;

use crate::check::Checked;
use crate::config;
use crate::ir::*;
use crate::types::{Aggregate as AggFn, Function, Type};

/// Why a project could not be lowered: it has errors (check first), or a checker gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerError(pub String);

impl std::fmt::Display for LowerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LowerError {}

type Result<T> = std::result::Result<T, LowerError>;

fn internal(msg: impl Into<String>) -> LowerError {
    LowerError(format!("internal error while lowering: {}", msg.into()))
}

const DAY_MS: u64 = 86_400_000;

/// Lowers a checked project. The project must have no error diagnostics.
pub fn lower(checked: &Checked) -> Result<Project> {
    if checked.has_errors() {
        return Err(LowerError("the project has errors; run `cdp check`".into()));
    }
    let mut l = Lowerer::new(checked);
    l.run()?;
    Ok(l.out)
}

/// Where names in an expression resolve.
#[derive(Clone, Copy)]
enum Scope {
    Row(SourceId),
    Key,
    Profile,
    /// An attribute: `source.column` is a row value, other names profile values.
    Attribute,
}

struct Lowerer<'c> {
    checked: &'c Checked,
    defs: Vec<&'c Definition>,
    /// Definition name → (kind-specific id).
    ids: HashMap<&'c str, u32>,
    aggregate_ids: HashMap<Aggregate, AggregateId>,
    sequence_ids: HashMap<Sequence, SequenceId>,
    out: Project,
}

impl<'c> Lowerer<'c> {
    fn new(checked: &'c Checked) -> Lowerer<'c> {
        let defs: Vec<&Definition> = checked.definitions().collect();
        let mut ids = HashMap::new();
        let mut counters = [0u32; 9];
        for d in &defs {
            let slot = kind_slot(&d.kind);
            ids.insert(d.name.name.as_str(), counters[slot]);
            counters[slot] += 1;
        }
        let name = checked
            .config
            .as_ref()
            .map_or_else(|| "project".to_string(), |c| c.project.name.clone());
        Lowerer {
            checked,
            defs,
            ids,
            aggregate_ids: HashMap::new(),
            sequence_ids: HashMap::new(),
            out: Project {
                name,
                sources: Vec::new(),
                entities: Vec::new(),
                behaviors: Vec::new(),
                attributes: Vec::new(),
                aggregates: Vec::new(),
                features: Vec::new(),
                sequences: Vec::new(),
                segments: Vec::new(),
                journeys: Vec::new(),
                metrics: Vec::new(),
                activations: Vec::new(),
                profile_order: Vec::new(),
            },
        }
    }

    fn run(&mut self) -> Result<()> {
        // Kinds in an order where every id a definition needs is already known by name.
        for slot in 0..9 {
            for def in self.defs.clone() {
                if kind_slot(&def.kind) == slot {
                    self.definition(def)?;
                }
            }
        }
        for i in self.checked.graph.topological_order() {
            let node = &self.checked.graph.nodes[i];
            let id = self.ids[node.name.as_str()];
            match node.kind {
                "attribute" => self
                    .out
                    .profile_order
                    .push(ProfileValue::Attribute(AttributeId(id))),
                "feature" => self
                    .out
                    .profile_order
                    .push(ProfileValue::Feature(FeatureId(id))),
                "segment" => self
                    .out
                    .profile_order
                    .push(ProfileValue::Segment(SegmentId(id))),
                _ => {}
            }
        }
        Ok(())
    }

    fn id(&self, name: &str) -> Result<u32> {
        self.ids
            .get(name)
            .copied()
            .ok_or_else(|| internal(format!("unresolved name `{name}`")))
    }

    fn def(&self, name: &str) -> Result<&'c Definition> {
        self.checked
            .definition(name)
            .ok_or_else(|| internal(format!("no definition `{name}`")))
    }

    fn source_def(&self, id: SourceId) -> &Source {
        &self.out.sources[id.index()]
    }

    fn definition(&mut self, def: &'c Definition) -> Result<()> {
        let meta = Meta {
            name: def.name.name.clone(),
            description: def.meta.description.as_ref().map(|s| s.value.clone()),
            owner: def.meta.owner.as_ref().map(|s| s.value.clone()),
            tags: def.meta.tags.iter().map(|s| s.value.clone()).collect(),
        };
        match &def.kind {
            DefKind::Source(s) => {
                let table = self
                    .checked
                    .config
                    .as_ref()
                    .and_then(|c| c.sources.get(&def.name.name))
                    .and_then(|b| b.table.clone())
                    .unwrap_or_else(|| def.name.name.clone());
                let column_id = |name: &ast::Ident| {
                    s.columns
                        .iter()
                        .position(|c| c.name.name == name.name)
                        .map(|i| ColumnId(i as u32))
                };
                let source = Source {
                    meta,
                    table,
                    columns: s
                        .columns
                        .iter()
                        .map(|c| Column {
                            name: c.name.name.clone(),
                            ty: Type::from_ast(&c.ty),
                            nullable: c.nullable,
                            pii: c.pii,
                        })
                        .collect(),
                    key: s.key.as_ref().and_then(column_id),
                    time: s.time.as_ref().and_then(column_id),
                };
                self.out.sources.push(source);
            }
            DefKind::Entity(e) => {
                // Keys in priority order: explicit priorities first (lowest wins), then the rest in
                // declaration order.
                let mut order: Vec<usize> = (0..e.keys.len()).collect();
                order.sort_by_key(|&i| (e.keys[i].priority.map_or(u64::MAX, |p| p.0), i));
                let mut keys = Vec::with_capacity(e.keys.len());
                for (rank, &i) in order.iter().enumerate() {
                    let k = &e.keys[i];
                    let normalize = match &k.normalize {
                        Some(n) => Some(self.expr(n, Scope::Key)?),
                        None => None,
                    };
                    keys.push(IdentityKey {
                        name: k.name.name.clone(),
                        normalize,
                        exclude: k.exclude.iter().map(|s| s.value.clone()).collect(),
                        max_per_profile: k.max_per_profile.map(|m| m.0),
                        priority: k.priority.map_or(rank as u64 + 1, |p| p.0),
                    });
                }
                let mut bindings = Vec::new();
                for from in &e.from {
                    let source = SourceId(self.id(&from.source.name)?);
                    for b in &from.bindings {
                        let key = keys
                            .iter()
                            .position(|k| k.name == b.key.name)
                            .ok_or_else(|| internal(format!("key `{}`", b.key.name)))?;
                        let value = self.expr(&b.value, Scope::Row(source))?;
                        bindings.push(KeyBinding {
                            source,
                            key: KeyId(key as u32),
                            value,
                        });
                    }
                }
                self.out.entities.push(Entity {
                    meta,
                    keys,
                    bindings,
                });
            }
            DefKind::Behavior(b) => {
                let source = SourceId(self.id(&b.source.name)?);
                let time_name = match (&b.at, self.def(&b.source.name)?) {
                    (Some(at), _) => at.name.clone(),
                    (
                        None,
                        Definition {
                            kind: DefKind::Source(s),
                            ..
                        },
                    ) => s
                        .time
                        .as_ref()
                        .map(|t| t.name.clone())
                        .ok_or_else(|| internal("behavior without time"))?,
                    _ => return Err(internal("behavior source")),
                };
                let time = self.column(source, &time_name)?;
                let filter = match &b.filter {
                    Some(f) => Some(self.expr(f, Scope::Row(source))?),
                    None => None,
                };
                let entity = EntityId(self.id(&b.entity.name)?);
                self.out.behaviors.push(Behavior {
                    meta,
                    entity,
                    source,
                    filter,
                    time,
                });
            }
            DefKind::Attribute(a) => {
                let entity = EntityId(self.id(&a.entity.name)?);
                let ty = self.type_of(a.value.span);
                let source = first_source_qualifier(&a.value, |q| {
                    matches!(
                        self.checked.definition(q).map(|d| &d.kind),
                        Some(DefKind::Source(_))
                    )
                });
                let value = match source {
                    Some(src_name) => {
                        let source = SourceId(self.id(src_name)?);
                        let value = self.expr(&a.value, Scope::Attribute)?;
                        let (order_by, latest) = match &a.pick {
                            Some(p) => (Some(self.column(source, &p.by.name)?), p.latest),
                            None => (self.source_def(source).time, true),
                        };
                        AttributeValue::FromSource {
                            source,
                            value,
                            order_by,
                            latest,
                        }
                    }
                    None => AttributeValue::Derived(self.expr(&a.value, Scope::Profile)?),
                };
                self.out.attributes.push(Attribute {
                    meta,
                    entity,
                    value,
                    ty,
                });
            }
            DefKind::Feature(f) => {
                let entity = EntityId(self.id(&f.entity.name)?);
                let value = self.expr(&f.value, Scope::Profile)?;
                let ty = value.ty.clone();
                self.out.features.push(Feature {
                    meta,
                    entity,
                    value,
                    ty,
                });
            }
            DefKind::Segment(s) => {
                let entity = EntityId(self.id(&s.entity.name)?);
                let condition = self.expr(&s.condition, Scope::Profile)?;
                self.out.segments.push(Segment {
                    meta,
                    entity,
                    condition,
                });
            }
            DefKind::Journey(j) => {
                let journey = self.journey(meta, j)?;
                self.out.journeys.push(journey);
            }
            DefKind::Metric(m) => {
                let entity = EntityId(self.id(&m.entity.name)?);
                let segments = m
                    .segments
                    .iter()
                    .map(|s| self.id(&s.name).map(SegmentId))
                    .collect::<Result<Vec<_>>>()?;
                let mut measures = Vec::new();
                for measure in &m.measures {
                    let value = self.measure(&measure.value)?;
                    measures.push(Measure {
                        name: measure.name.name.clone(),
                        value,
                        ty: self.type_of(measure.value.span),
                    });
                }
                let grain_ms = m.grain.as_ref().map_or(DAY_MS, ast::Duration::millis);
                self.out.metrics.push(Metric {
                    meta,
                    entity,
                    segments,
                    measures,
                    grain_ms,
                });
            }
            DefKind::Activation(a) => {
                let entity = EntityId(self.id(&a.entity.name)?);
                let segment = match &a.segment {
                    Some(s) => Some(SegmentId(self.id(&s.name)?)),
                    None => None,
                };
                let destination = match a.destination.as_ref().map(|d| &d.kind) {
                    Some(ast::DestinationKind::File { path, format }) => Destination::File {
                        path: path.value.clone(),
                        parquet: match format {
                            Some(f) => *f == ast::FileFormat::Parquet,
                            None => path.value.to_ascii_lowercase().ends_with(".parquet"),
                        },
                    },
                    Some(ast::DestinationKind::Webhook { url }) => Destination::Webhook {
                        url: url.value.clone(),
                    },
                    Some(ast::DestinationKind::Postgres { connection, table }) => {
                        Destination::Postgres {
                            connection: connection.value.clone(),
                            table: table
                                .as_ref()
                                .map_or_else(|| def.name.name.clone(), |t| t.value.clone()),
                        }
                    }
                    None => return Err(internal("activation without destination")),
                };
                let keys: Vec<String> = self.out.entities[entity.index()]
                    .keys
                    .iter()
                    .map(|k| k.name.clone())
                    .collect();
                let mut columns = Vec::new();
                for c in &a.columns {
                    if let Some(k) = keys.iter().position(|k| *k == c.name) {
                        columns.push(ProfileColumn::Key(KeyId(k as u32)));
                        continue;
                    }
                    let id = self.id(&c.name)?;
                    columns.push(match self.def(&c.name)?.kind {
                        DefKind::Attribute(_) => ProfileColumn::Attribute(AttributeId(id)),
                        _ => ProfileColumn::Feature(FeatureId(id)),
                    });
                }
                let schedule = match a.schedule.as_ref().map(|s| &s.kind) {
                    None | Some(ast::ScheduleKind::Once) => Schedule::Once,
                    Some(ast::ScheduleKind::Every(d)) => Schedule::EveryMs(d.millis()),
                    Some(ast::ScheduleKind::Cron(c)) => Schedule::Cron(c.value.clone()),
                };
                let deliver_changes = matches!(a.delivery, Some((ast::Delivery::Changes, _)));
                self.out.activations.push(Activation {
                    meta,
                    entity,
                    segment,
                    destination,
                    columns,
                    schedule,
                    deliver_changes,
                });
            }
        }
        Ok(())
    }

    fn column(&self, source: SourceId, name: &str) -> Result<ColumnId> {
        self.source_def(source)
            .columns
            .iter()
            .position(|c| c.name == name)
            .map(|i| ColumnId(i as u32))
            .ok_or_else(|| internal(format!("column `{name}`")))
    }

    fn type_of(&self, span: Span) -> Type {
        self.checked
            .expr_types
            .get(&span)
            .cloned()
            .unwrap_or(Type::Error)
    }

    // -------------------------------------------------------------------------- expressions

    fn expr(&mut self, e: &ast::Expr, scope: Scope) -> Result<Expr> {
        let ty = self.type_of(e.span);
        let kind = match &e.kind {
            A::Null => ExprKind::Literal(Literal::Null),
            A::Bool(b) => ExprKind::Literal(Literal::Bool(*b)),
            A::Number(n) => ExprKind::Literal(match n.parse::<i64>() {
                Ok(i) if !n.contains('.') => Literal::Int(i),
                _ => Literal::Decimal(n.clone()),
            }),
            A::String(s) => ExprKind::Literal(Literal::String(s.as_str().into())),
            A::Duration(d) => ExprKind::Literal(Literal::DurationMs(d.millis())),
            A::Date(s) => ExprKind::Literal(Literal::Date(s.clone())),
            A::Timestamp(s) => {
                let secs =
                    config::parse_timestamp(s).ok_or_else(|| internal(format!("timestamp {s}")))?;
                ExprKind::Literal(Literal::TimestampMicros(secs * 1_000_000))
            }
            A::List(items) => ExprKind::List(
                items
                    .iter()
                    .map(|i| self.expr(i, scope))
                    .collect::<Result<Vec<_>>>()?,
            ),
            A::Paren(inner) => return self.expr(inner, scope),
            A::Path(parts) => self.path(parts, scope)?,
            A::Call(call) => return self.call(call, e.span, scope),
            A::Unary { op, operand } => {
                let x = Box::new(self.expr(operand, scope)?);
                match op {
                    ast::UnaryOp::Not => ExprKind::Not(x),
                    ast::UnaryOp::Neg => ExprKind::Neg(x),
                }
            }
            A::Binary { op, left, right } => {
                let l = Box::new(self.expr(left, scope)?);
                let r = Box::new(self.expr(right, scope)?);
                ExprKind::Binary(binary_op(*op), l, r)
            }
            A::Predicate {
                subject,
                negated,
                predicate,
            } => {
                let x = self.expr(subject, scope)?;
                let e = self.predicate(x, predicate, scope)?;
                return Ok(if *negated { not(e) } else { e });
            }
            A::Sequence(seq) => {
                let lowered = self.sequence(seq)?;
                let next = SequenceId(self.out.sequences.len() as u32);
                let id = *self.sequence_ids.entry(lowered.clone()).or_insert(next);
                if id == next {
                    self.out.sequences.push(lowered);
                }
                ExprKind::Sequence(id)
            }
        };
        Ok(Expr { kind, ty })
    }

    fn path(&mut self, parts: &[ast::Ident], scope: Scope) -> Result<ExprKind> {
        let last = parts.last().ok_or_else(|| internal("empty path"))?;
        match scope {
            Scope::Key => Ok(ExprKind::KeyValue),
            Scope::Row(source) => Ok(ExprKind::Column(self.column(source, &last.name)?)),
            Scope::Attribute if parts.len() == 2 => {
                let source = SourceId(self.id(&parts[0].name)?);
                Ok(ExprKind::Column(self.column(source, &last.name)?))
            }
            Scope::Attribute | Scope::Profile => {
                let id = self.id(&last.name)?;
                match self.def(&last.name)?.kind {
                    DefKind::Attribute(_) => Ok(ExprKind::Attribute(AttributeId(id))),
                    DefKind::Feature(_) => Ok(ExprKind::Feature(FeatureId(id))),
                    DefKind::Segment(_) => Ok(ExprKind::Segment(SegmentId(id))),
                    _ => Err(internal(format!("`{}` has no profile value", last.name))),
                }
            }
        }
    }

    fn call(&mut self, call: &ast::Call, span: Span, scope: Scope) -> Result<Expr> {
        let ty = self.type_of(span);
        if let Some(function) = AggFn::from_name(&call.function.name) {
            let agg = self.aggregate(function, call, ty.clone())?;
            let next = AggregateId(self.out.aggregates.len() as u32);
            let id = *self.aggregate_ids.entry(agg.clone()).or_insert(next);
            if id == next {
                self.out.aggregates.push(agg);
            }
            return Ok(Expr {
                kind: ExprKind::Aggregate(id),
                ty,
            });
        }
        let function = Function::from_name(&call.function.name)
            .ok_or_else(|| internal(format!("function `{}`", call.function.name)))?;
        if function == Function::Now {
            return Ok(Expr {
                kind: ExprKind::AsOf,
                ty: Type::Timestamp,
            });
        }
        let args = call
            .args
            .iter()
            .map(|a| self.expr(a, scope))
            .collect::<Result<Vec<_>>>()?;
        Ok(Expr {
            kind: ExprKind::Call(function, args),
            ty,
        })
    }

    fn aggregate(&mut self, function: AggFn, call: &ast::Call, ty: Type) -> Result<Aggregate> {
        let arg = call
            .args
            .first()
            .ok_or_else(|| internal("aggregate without argument"))?;
        let behavior_name = first_path_head(arg).ok_or_else(|| internal("aggregate target"))?;
        let behavior = BehaviorId(self.id(behavior_name)?);
        let source = self.out.behaviors[behavior.index()].source;
        let value = match &arg.kind {
            A::Path(parts) if parts.len() == 1 => None,
            _ => Some(self.expr(arg, Scope::Row(source))?),
        };
        let filter = match &call.filter {
            Some(f) => Some(self.expr(f, Scope::Row(source))?),
            None => None,
        };
        let k = match call.args.get(1).map(|a| &a.kind) {
            Some(A::Number(n)) => Some(n.parse::<u32>().map_err(|_| internal("k"))?),
            _ => None,
        };
        Ok(Aggregate {
            behavior,
            function,
            value,
            filter,
            window_ms: call.window.as_ref().map(ast::Duration::millis),
            k,
            ty,
        })
    }

    fn predicate(&mut self, x: Expr, predicate: &Predicate, scope: Scope) -> Result<Expr> {
        let bool_expr = |kind| Expr {
            kind,
            ty: Type::Bool,
        };
        Ok(match predicate {
            Predicate::IsNull => bool_expr(ExprKind::IsNull {
                value: Box::new(x),
                negated: false,
            }),
            Predicate::IsSet => {
                let is_list = matches!(x.ty, Type::List(_));
                let not_null = bool_expr(ExprKind::IsNull {
                    value: Box::new(x.clone()),
                    negated: false,
                });
                let not_null = not(not_null);
                if is_list {
                    let len = Expr {
                        kind: ExprKind::ListLength(Box::new(x)),
                        ty: Type::Int,
                    };
                    let zero = Expr::literal(Literal::Int(0), Type::Int);
                    and(not_null, binary(BinaryOp::Gt, len, zero))
                } else {
                    not_null
                }
            }
            Predicate::In(items) => {
                let items = items
                    .iter()
                    .map(|i| self.expr(i, scope))
                    .collect::<Result<Vec<_>>>()?;
                bool_expr(ExprKind::InList {
                    value: Box::new(x),
                    items,
                    negated: false,
                })
            }
            Predicate::Between(lo, hi) => {
                let lo = self.expr(lo, scope)?;
                let hi = self.expr(hi, scope)?;
                and(
                    binary(BinaryOp::Ge, x.clone(), lo),
                    binary(BinaryOp::Le, x, hi),
                )
            }
            Predicate::Contains(p) => {
                let p = self.expr(p, scope)?;
                if matches!(x.ty, Type::List(_)) {
                    bool_expr(ExprKind::ListContains {
                        list: Box::new(x),
                        item: Box::new(p),
                        negated: false,
                    })
                } else {
                    text(TextOp::Contains, x, p)
                }
            }
            Predicate::StartsWith(p) => text(TextOp::StartsWith, x, self.expr(p, scope)?),
            Predicate::EndsWith(p) => text(TextOp::EndsWith, x, self.expr(p, scope)?),
            Predicate::Matches(p) => text(TextOp::Matches, x, self.expr(p, scope)?),
            Predicate::WithinLast(d) => {
                let t = Expr {
                    kind: ExprKind::AsOf,
                    ty: Type::Timestamp,
                };
                let d = Expr::literal(Literal::DurationMs(d.millis()), Type::Duration);
                let start = Expr {
                    kind: ExprKind::Binary(BinaryOp::Sub, Box::new(t.clone()), Box::new(d)),
                    ty: Type::Timestamp,
                };
                and(
                    binary(BinaryOp::Gt, x.clone(), start),
                    binary(BinaryOp::Le, x, t),
                )
            }
            Predicate::Before(e) => binary(BinaryOp::Lt, x, self.expr(e, scope)?),
            Predicate::After(e) => binary(BinaryOp::Gt, x, self.expr(e, scope)?),
        })
    }

    fn sequence(&mut self, seq: &ast::Sequence) -> Result<Sequence> {
        let first = self.sequence_step(&seq.first)?;
        let mut then = Vec::new();
        for t in &seq.then {
            then.push(SequenceThen {
                negated: t.negated,
                step: self.sequence_step(&t.step)?,
                within_ms: t.within.millis(),
            });
        }
        Ok(Sequence {
            first,
            then,
            window_ms: seq.window.as_ref().map(ast::Duration::millis),
        })
    }

    fn sequence_step(&mut self, step: &ast::SequenceStep) -> Result<SequenceStep> {
        let behavior = BehaviorId(self.id(&step.behavior.name)?);
        let source = self.out.behaviors[behavior.index()].source;
        let filter = match &step.filter {
            Some(f) => Some(self.expr(f, Scope::Row(source))?),
            None => None,
        };
        Ok(SequenceStep { behavior, filter })
    }

    fn measure(&mut self, e: &ast::Expr) -> Result<MeasureExpr> {
        Ok(match &e.kind {
            A::Paren(inner) => self.measure(inner)?,
            A::Number(n) => MeasureExpr::Literal(match n.parse::<i64>() {
                Ok(i) if !n.contains('.') => Literal::Int(i),
                _ => Literal::Decimal(n.clone()),
            }),
            A::Unary {
                op: ast::UnaryOp::Neg,
                operand,
            } => MeasureExpr::Neg(Box::new(self.measure(operand)?)),
            A::Binary { op, left, right } => MeasureExpr::Binary {
                op: binary_op(*op),
                left: Box::new(self.measure(left)?),
                right: Box::new(self.measure(right)?),
            },
            A::Call(call) => {
                let function = AggFn::from_name(&call.function.name).ok_or_else(|| {
                    internal(format!("measure function `{}`", call.function.name))
                })?;
                let arg = call
                    .args
                    .first()
                    .ok_or_else(|| internal("measure argument"))?;
                let head = first_path_head(arg).ok_or_else(|| internal("measure target"))?;
                match self.def(head)?.kind {
                    DefKind::Entity(_) => MeasureExpr::Population,
                    DefKind::Behavior(_) => {
                        let behavior = BehaviorId(self.id(head)?);
                        let source = self.out.behaviors[behavior.index()].source;
                        let value = match &arg.kind {
                            A::Path(parts) if parts.len() == 1 => None,
                            _ => Some(self.expr(arg, Scope::Row(source))?),
                        };
                        let filter = match &call.filter {
                            Some(f) => Some(self.expr(f, Scope::Row(source))?),
                            None => None,
                        };
                        MeasureExpr::OverEvents {
                            behavior,
                            function,
                            value,
                            filter,
                        }
                    }
                    _ => MeasureExpr::OverMembers {
                        function,
                        value: self.expr(arg, Scope::Profile)?,
                    },
                }
            }
            _ => return Err(internal("unsupported measure expression")),
        })
    }

    // -------------------------------------------------------------------------- journeys

    fn journey(&mut self, meta: Meta, j: &ast::Journey) -> Result<Journey> {
        let entity = EntityId(self.id(&j.entity.name)?);
        let entry = match &j.entry {
            Some(e) => self.expr(e, Scope::Profile)?,
            None => return Err(internal("journey without entry")),
        };
        let goal = j
            .goal
            .as_ref()
            .map(|g| self.expr(g, Scope::Profile))
            .transpose()?;
        let exit = j
            .exit
            .as_ref()
            .map(|g| self.expr(g, Scope::Profile))
            .transpose()?;
        let reentry = match j.reentry.as_ref().map(|r| &r.policy) {
            None | Some(ast::ReentryPolicy::Never) => Reentry::Never,
            Some(ast::ReentryPolicy::Always) => Reentry::Always,
            Some(ast::ReentryPolicy::After(d)) => Reentry::AfterMs(d.millis()),
        };
        let stages: Vec<String> = j.stages.iter().map(|s| s.name.name.clone()).collect();
        let mut graph = StepGraph {
            nodes: Vec::new(),
            stage_entry: vec![Target::End; j.stages.len()],
        };
        // Build from the last stage back: a stage that falls through continues with the next.
        let mut next = Target::End;
        for (i, stage) in j.stages.iter().enumerate().rev() {
            let entry = self.block(&mut graph, i as u32, &stage.steps, next, &stages)?;
            graph.stage_entry[i] = entry;
            next = entry;
        }
        let start = graph.stage_entry.first().copied().unwrap_or(Target::End);
        Ok(Journey {
            meta,
            entity,
            entry,
            goal,
            exit,
            reentry,
            nodes: graph.finish(start),
            stages,
        })
    }

    /// Lowers a block of steps ending in `after`; returns the block's first target.
    fn block(
        &mut self,
        g: &mut StepGraph,
        stage: u32,
        steps: &[ast::Step],
        after: Target,
        stages: &[String],
    ) -> Result<Target> {
        let mut next = after;
        for step in steps.iter().rev() {
            next = match &step.kind {
                ast::StepKind::End => g.push(stage, RawKind::End),
                ast::StepKind::Jump(target) => {
                    let i = stages
                        .iter()
                        .position(|s| *s == target.name)
                        .ok_or_else(|| internal("jump target"))?;
                    Target::Stage(i)
                }
                ast::StepKind::Activate(a) => {
                    let activation = ActivationId(self.id(&a.name)?);
                    g.push(stage, RawKind::Activate(activation, next))
                }
                ast::StepKind::Wait(d) => g.push(stage, RawKind::Wait(d.millis(), next)),
                ast::StepKind::WaitUntil { condition, timeout } => {
                    let condition = self.expr(condition, Scope::Profile)?;
                    g.push(stage, RawKind::WaitUntil(condition, timeout.millis(), next))
                }
                ast::StepKind::Branch { arms, otherwise } => {
                    let mut lowered = Vec::new();
                    for arm in arms {
                        let condition = self.expr(&arm.condition, Scope::Profile)?;
                        let target = self.block(g, stage, &arm.then.steps, next, stages)?;
                        lowered.push((condition, target));
                    }
                    let otherwise = match otherwise {
                        Some(b) => self.block(g, stage, &b.steps, next, stages)?,
                        None => next,
                    };
                    g.push(stage, RawKind::Branch(lowered, otherwise))
                }
                ast::StepKind::Split(arms) => {
                    let mut lowered = Vec::new();
                    for arm in arms {
                        let target = self.block(g, stage, &arm.then.steps, next, stages)?;
                        lowered.push((arm.basis_points, target));
                    }
                    g.push(stage, RawKind::Split(lowered))
                }
            };
        }
        Ok(next)
    }
}

/// Where control goes before ids are final: a built node, the start of a stage (a jump), or
/// the end of the journey.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Node(usize),
    Stage(usize),
    End,
}

enum RawKind {
    Activate(ActivationId, Target),
    Wait(u64, Target),
    WaitUntil(Expr, u64, Target),
    Branch(Vec<(Expr, Target)>, Target),
    Split(Vec<(u32, Target)>),
    End,
}

struct StepGraph {
    nodes: Vec<(u32, RawKind)>,
    stage_entry: Vec<Target>,
}

impl StepGraph {
    fn push(&mut self, stage: u32, kind: RawKind) -> Target {
        self.nodes.push((stage, kind));
        Target::Node(self.nodes.len() - 1)
    }

    /// Resolves jumps, adds one `End` node for paths that run off the end, and numbers the nodes
    /// in depth-first order from the start so that node 0 is where profiles begin.
    fn finish(mut self, start: Target) -> Vec<Node> {
        let end = match self
            .nodes
            .iter()
            .position(|(_, k)| matches!(k, RawKind::End))
        {
            Some(i) => i,
            None => {
                self.nodes.push((0, RawKind::End));
                self.nodes.len() - 1
            }
        };
        let resolve = |t: Target, entries: &[Target]| -> usize {
            let mut t = t;
            // A stage's entry is itself a target; jumps to empty stages chain, bounded by count.
            for _ in 0..=entries.len() {
                match t {
                    Target::Node(i) => return i,
                    Target::End => return end,
                    Target::Stage(s) => t = entries[s],
                }
            }
            end
        };
        let entries = self.stage_entry.clone();
        let targets = |k: &RawKind| -> Vec<usize> {
            match k {
                RawKind::Activate(_, n) | RawKind::Wait(_, n) | RawKind::WaitUntil(_, _, n) => {
                    vec![resolve(*n, &entries)]
                }
                RawKind::Branch(arms, o) => {
                    let mut v: Vec<usize> =
                        arms.iter().map(|(_, t)| resolve(*t, &entries)).collect();
                    v.push(resolve(*o, &entries));
                    v
                }
                RawKind::Split(arms) => arms.iter().map(|(_, t)| resolve(*t, &entries)).collect(),
                RawKind::End => Vec::new(),
            }
        };
        let root = resolve(start, &entries);
        let mut order = Vec::new();
        let mut new_id = vec![usize::MAX; self.nodes.len()];
        let mut stack = vec![root];
        while let Some(n) = stack.pop() {
            if new_id[n] != usize::MAX {
                continue;
            }
            new_id[n] = order.len();
            order.push(n);
            let mut ts = targets(&self.nodes[n].1);
            ts.reverse();
            stack.extend(ts);
        }
        let map = |t: Target| NodeId(new_id[resolve(t, &entries)] as u32);
        let mut nodes: Vec<Option<(u32, RawKind)>> = self.nodes.into_iter().map(Some).collect();
        order
            .iter()
            .map(|&old| {
                let (stage, kind) = nodes[old].take().expect("each node is visited once");
                let kind = match kind {
                    RawKind::Activate(a, n) => NodeKind::Activate {
                        activation: a,
                        next: map(n),
                    },
                    RawKind::Wait(ms, n) => NodeKind::Wait { ms, next: map(n) },
                    RawKind::WaitUntil(condition, timeout_ms, n) => NodeKind::WaitUntil {
                        condition,
                        timeout_ms,
                        next: map(n),
                    },
                    RawKind::Branch(arms, o) => NodeKind::Branch {
                        arms: arms.into_iter().map(|(c, t)| (c, map(t))).collect(),
                        otherwise: map(o),
                    },
                    RawKind::Split(arms) => NodeKind::Split {
                        arms: arms.into_iter().map(|(bp, t)| (bp, map(t))).collect(),
                    },
                    RawKind::End => NodeKind::End,
                };
                Node { stage, kind }
            })
            .collect()
    }
}

// ------------------------------------------------------------------------------ helpers

/// The order in which kinds are lowered: each kind reads ids of the kinds before it.
fn kind_slot(kind: &DefKind) -> usize {
    match kind {
        DefKind::Source(_) => 0,
        DefKind::Entity(_) => 1,
        DefKind::Behavior(_) => 2,
        DefKind::Attribute(_) => 3,
        DefKind::Feature(_) => 4,
        DefKind::Segment(_) => 5,
        DefKind::Activation(_) => 6,
        DefKind::Journey(_) => 7,
        DefKind::Metric(_) => 8,
    }
}

fn binary_op(op: ast::BinaryOp) -> BinaryOp {
    match op {
        ast::BinaryOp::Or => BinaryOp::Or,
        ast::BinaryOp::And => BinaryOp::And,
        ast::BinaryOp::Eq => BinaryOp::Eq,
        ast::BinaryOp::Ne => BinaryOp::Ne,
        ast::BinaryOp::Lt => BinaryOp::Lt,
        ast::BinaryOp::Le => BinaryOp::Le,
        ast::BinaryOp::Gt => BinaryOp::Gt,
        ast::BinaryOp::Ge => BinaryOp::Ge,
        ast::BinaryOp::Add => BinaryOp::Add,
        ast::BinaryOp::Sub => BinaryOp::Sub,
        ast::BinaryOp::Mul => BinaryOp::Mul,
        ast::BinaryOp::Div => BinaryOp::Div,
        ast::BinaryOp::Rem => BinaryOp::Rem,
    }
}

fn binary(op: BinaryOp, l: Expr, r: Expr) -> Expr {
    Expr {
        kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
        ty: Type::Bool,
    }
}

fn and(l: Expr, r: Expr) -> Expr {
    binary(BinaryOp::And, l, r)
}

fn not(e: Expr) -> Expr {
    Expr {
        kind: ExprKind::Not(Box::new(e)),
        ty: Type::Bool,
    }
}

fn text(op: TextOp, value: Expr, pattern: Expr) -> Expr {
    Expr {
        kind: ExprKind::Text {
            op,
            value: Box::new(value),
            pattern: Box::new(pattern),
            negated: false,
        },
        ty: Type::Bool,
    }
}

/// The first path's head in an expression (the behavior an aggregate reads).
fn first_path_head(e: &ast::Expr) -> Option<&str> {
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        match &e.kind {
            A::Path(parts) => return parts.first().map(|p| p.name.as_str()),
            A::Paren(x) | A::Unary { operand: x, .. } => stack.push(x),
            A::Binary { left, right, .. } => {
                stack.push(right);
                stack.push(left);
            }
            A::Call(c) => stack.extend(c.args.iter().rev()),
            A::Predicate { subject, .. } => stack.push(subject),
            _ => {}
        }
    }
    None
}

/// The source named as qualifier in `source.column` paths of an attribute, if any.
fn first_source_qualifier(e: &ast::Expr, is_source: impl Fn(&str) -> bool) -> Option<&str> {
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        match &e.kind {
            A::Path(parts) if parts.len() == 2 && is_source(&parts[0].name) => {
                return Some(&parts[0].name)
            }
            A::Paren(x) | A::Unary { operand: x, .. } => stack.push(x),
            A::Binary { left, right, .. } => {
                stack.push(right);
                stack.push(left);
            }
            A::Call(c) => stack.extend(c.args.iter().rev()),
            A::Predicate {
                subject, predicate, ..
            } => {
                stack.push(subject);
                if let Predicate::In(items) = predicate {
                    stack.extend(items.iter());
                }
            }
            A::List(items) => stack.extend(items.iter()),
            _ => {}
        }
    }
    None
}
