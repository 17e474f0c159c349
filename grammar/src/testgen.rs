//! Test support for the formatter's round trip: random well-formed syntax trees (every kind of
//! definition, step, predicate and expression), and the normalization under which a tree and the
//! parse of its printed text must be equal (no spans, no parentheses).

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use crate::ast::*;
use crate::span::Span;

fn at() -> Span {
    Span::default()
}

/// Words of the grammar: as names they test where the printer must (or need not) quote.
const GRAMMAR_WORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "is",
    "null",
    "true",
    "false",
    "between",
    "contains",
    "starts",
    "ends",
    "matches",
    "within",
    "before",
    "after",
    "over",
    "where",
    "did",
    "then",
    "activate",
    "activation",
    "always",
    "at",
    "attribute",
    "behavior",
    "branch",
    "by",
    "columns",
    "cron",
    "date",
    "decimal",
    "deliver",
    "else",
    "end",
    "entity",
    "entry",
    "every",
    "exclude",
    "exit",
    "feature",
    "file",
    "format",
    "from",
    "goal",
    "grain",
    "journey",
    "jump",
    "key",
    "last",
    "list",
    "max",
    "measure",
    "metric",
    "never",
    "normalize",
    "of",
    "once",
    "owner",
    "per",
    "postgres",
    "priority",
    "profile",
    "reentry",
    "schedule",
    "segment",
    "segments",
    "set",
    "source",
    "split",
    "stage",
    "table",
    "tags",
    "time",
    "timeout",
    "timestamp",
    "to",
    "until",
    "wait",
    "webhook",
    "when",
    "with",
    "pii",
    "string",
    "int",
    "float",
    "bool",
    "duration",
    "latest",
    "earliest",
    "csv",
    "parquet",
    "full",
    "changes",
];

fn name() -> BoxedStrategy<String> {
    prop_oneof![
        6 => "[a-z_][a-z0-9_]{0,6}",
        3 => prop::sample::select(GRAMMAR_WORDS).prop_map(String::from),
        // Names that need backticks: spaces, leading digits, symbols (`#`, `"`), non-ASCII.
        1 => "[^`\n]{1,5}",
    ]
    .boxed()
}

fn ident() -> BoxedStrategy<Ident> {
    name().prop_map(|name| Ident { name, span: at() }).boxed()
}

fn text() -> BoxedStrategy<String> {
    vec(
        prop_oneof![
            4 => proptest::char::range('a', 'z'),
            1 => prop::sample::select(vec!['"', '\\', '\n', '\t', '#', ' ', '`', 'é', '\r']),
            1 => any::<char>(),
        ],
        0..8,
    )
    .prop_map(|chars| chars.into_iter().collect())
    .boxed()
}

fn str_lit() -> BoxedStrategy<StrLit> {
    text()
        .prop_map(|value| StrLit { value, span: at() })
        .boxed()
}

fn duration() -> BoxedStrategy<Duration> {
    (
        0u64..100_000,
        prop::sample::select(vec![
            DurationUnit::Millis,
            DurationUnit::Seconds,
            DurationUnit::Minutes,
            DurationUnit::Hours,
            DurationUnit::Days,
            DurationUnit::Weeks,
        ]),
    )
        .prop_map(|(amount, unit)| Duration {
            amount,
            unit,
            span: at(),
        })
        .boxed()
}

fn ex(kind: ExprKind) -> Expr {
    Expr { kind, span: at() }
}

/// Expressions of every kind, nested a few levels.
pub fn expr() -> BoxedStrategy<Expr> {
    expr_with(4, 32)
}

/// Expressions nested at most `depth` levels (the parser refuses brackets nested beyond 64).
pub fn expr_with(depth: u32, size: u32) -> BoxedStrategy<Expr> {
    let leaf = prop_oneof![
        Just(ExprKind::Null),
        any::<bool>().prop_map(ExprKind::Bool),
        "[0-9]{1,4}(\\.[0-9]{1,3})?".prop_map(ExprKind::Number),
        text().prop_map(ExprKind::String),
        duration().prop_map(ExprKind::Duration),
        text().prop_map(ExprKind::Date),
        text().prop_map(ExprKind::Timestamp),
        vec(ident(), 1..=2).prop_map(ExprKind::Path),
    ]
    .prop_map(ex);
    leaf.prop_recursive(depth, size, 3, |inner| {
        let boxed = inner.clone().prop_map(Box::new);
        let step =
            (ident(), option::of(boxed.clone())).prop_map(|(behavior, filter)| SequenceStep {
                behavior,
                filter,
                span: at(),
            });
        let kind = prop_oneof![
            vec(inner.clone(), 0..3).prop_map(ExprKind::List),
            (
                ident(),
                vec(inner.clone(), 0..3),
                option::of(boxed.clone()),
                option::of(duration())
            )
                .prop_map(|(function, args, filter, window)| ExprKind::Call(Call {
                    function,
                    // `where` needs an argument before it: `count(purchase where …)`.
                    filter: filter.filter(|_| !args.is_empty()),
                    args,
                    window,
                })),
            (
                prop::sample::select(vec![UnaryOp::Not, UnaryOp::Neg]),
                boxed.clone()
            )
                .prop_map(|(op, operand)| ExprKind::Unary { op, operand }),
            (
                prop::sample::select(vec![
                    BinaryOp::Or,
                    BinaryOp::And,
                    BinaryOp::Eq,
                    BinaryOp::Ne,
                    BinaryOp::Lt,
                    BinaryOp::Le,
                    BinaryOp::Gt,
                    BinaryOp::Ge,
                    BinaryOp::Add,
                    BinaryOp::Sub,
                    BinaryOp::Mul,
                    BinaryOp::Div,
                    BinaryOp::Rem,
                ]),
                boxed.clone(),
                boxed.clone()
            )
                .prop_map(|(op, left, right)| ExprKind::Binary { op, left, right }),
            (boxed.clone(), any::<bool>(), predicate(inner.clone())).prop_map(
                |(subject, negated, predicate)| {
                    // The grammar has no `not before` / `not after`.
                    let negated =
                        negated && !matches!(predicate, Predicate::Before(_) | Predicate::After(_));
                    ExprKind::Predicate {
                        subject,
                        negated,
                        predicate,
                    }
                }
            ),
            (
                step.clone(),
                vec((any::<bool>(), step, duration()), 0..3),
                option::of(duration())
            )
                .prop_map(|(first, then, window)| ExprKind::Sequence(Sequence {
                    first,
                    then: then
                        .into_iter()
                        .map(|(negated, step, within)| SequenceThen {
                            negated,
                            step,
                            within,
                            span: at(),
                        })
                        .collect(),
                    window,
                })),
            boxed.prop_map(ExprKind::Paren),
        ];
        kind.prop_map(ex)
    })
    .boxed()
}

fn predicate(inner: impl Strategy<Value = Expr> + Clone + 'static) -> BoxedStrategy<Predicate> {
    let boxed = inner.clone().prop_map(Box::new);
    prop_oneof![
        Just(Predicate::IsNull),
        Just(Predicate::IsSet),
        vec(inner, 0..3).prop_map(Predicate::In),
        (boxed.clone(), boxed.clone()).prop_map(|(low, high)| Predicate::Between(low, high)),
        boxed.clone().prop_map(Predicate::Contains),
        boxed.clone().prop_map(Predicate::StartsWith),
        boxed.clone().prop_map(Predicate::EndsWith),
        boxed.clone().prop_map(Predicate::Matches),
        duration().prop_map(Predicate::WithinLast),
        boxed.clone().prop_map(Predicate::Before),
        boxed.prop_map(Predicate::After),
    ]
    .boxed()
}

fn step() -> BoxedStrategy<Step> {
    let leaf = prop_oneof![
        ident().prop_map(StepKind::Activate),
        duration().prop_map(StepKind::Wait),
        (expr(), duration())
            .prop_map(|(condition, timeout)| StepKind::WaitUntil { condition, timeout }),
        ident().prop_map(StepKind::Jump),
        Just(StepKind::End),
    ]
    .prop_map(|kind| Step { kind, span: at() });
    leaf.prop_recursive(3, 12, 3, |inner| {
        let block = (vec(inner, 0..3), any::<bool>()).prop_map(|(steps, braced)| StepBlock {
            // A block that is not exactly one step is always written with braces.
            braced: braced || steps.len() != 1,
            steps,
            span: at(),
        });
        prop_oneof![
            (
                vec((expr(), block.clone()), 0..3),
                option::of(block.clone())
            )
                .prop_map(|(arms, otherwise)| StepKind::Branch {
                    arms: arms
                        .into_iter()
                        .map(|(condition, then)| BranchArm {
                            condition,
                            then,
                            span: at(),
                        })
                        .collect(),
                    otherwise,
                }),
            vec((0u32..=10_000, block), 0..3).prop_map(|arms| StepKind::Split(
                arms.into_iter()
                    .map(|(basis_points, then)| SplitArm {
                        basis_points,
                        then,
                        span: at(),
                    })
                    .collect()
            )),
        ]
        .prop_map(|kind| Step { kind, span: at() })
    })
    .boxed()
}

fn type_expr() -> BoxedStrategy<TypeExpr> {
    let leaf = prop_oneof![
        Just(TypeKind::String),
        Just(TypeKind::Int),
        Just(TypeKind::Float),
        Just(TypeKind::Bool),
        Just(TypeKind::Date),
        Just(TypeKind::Timestamp),
        Just(TypeKind::Duration),
        (1u32..=38)
            .prop_flat_map(|p| (Just(p), 0..=p))
            .prop_map(|(precision, scale)| TypeKind::Decimal { precision, scale }),
    ]
    .prop_map(|kind| TypeExpr { kind, span: at() });
    leaf.prop_recursive(2, 3, 1, |inner| {
        inner.prop_map(|t| TypeExpr {
            kind: TypeKind::List(Box::new(t)),
            span: at(),
        })
    })
    .boxed()
}

fn meta() -> BoxedStrategy<Meta> {
    (
        option::of(str_lit()),
        option::of(str_lit()),
        vec(str_lit(), 0..3),
    )
        .prop_map(|(description, owner, tags)| Meta {
            description,
            owner,
            tags,
        })
        .boxed()
}

fn source() -> BoxedStrategy<DefKind> {
    let column = (
        ident(),
        type_expr(),
        any::<bool>(),
        any::<bool>(),
        option::of(str_lit()),
    )
        .prop_map(|(name, ty, nullable, pii, description)| Column {
            name,
            ty,
            nullable,
            pii,
            description,
            span: at(),
        });
    (option::of(ident()), option::of(ident()), vec(column, 0..4))
        .prop_map(|(key, time, columns)| {
            DefKind::Source(Source {
                key,
                time,
                columns,
                columns_span: at(),
            })
        })
        .boxed()
}

fn entity() -> BoxedStrategy<DefKind> {
    let key = (
        ident(),
        option::of(expr()),
        vec(str_lit(), 0..3),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
    )
        .prop_map(|(name, normalize, exclude, max, priority)| IdentityKey {
            name,
            normalize,
            exclude,
            max_per_profile: max.map(|n| (n, at())),
            priority: priority.map(|n| (n, at())),
            span: at(),
        });
    let binding = (ident(), expr()).prop_map(|(key, value)| KeyBinding {
        key,
        value,
        span: at(),
    });
    let from = (ident(), vec(binding, 0..3)).prop_map(|(source, bindings)| EntityFrom {
        source,
        bindings,
        span: at(),
    });
    (vec(key, 0..3), vec(from, 0..3))
        .prop_map(|(keys, from)| DefKind::Entity(Entity { keys, from }))
        .boxed()
}

fn journey() -> BoxedStrategy<DefKind> {
    let reentry = prop_oneof![
        Just(ReentryPolicy::Never),
        Just(ReentryPolicy::Always),
        duration().prop_map(ReentryPolicy::After),
    ]
    .prop_map(|policy| Reentry { policy, span: at() });
    let stage = (ident(), option::of(str_lit()), vec(step(), 0..4)).prop_map(
        |(name, description, steps)| Stage {
            name,
            description,
            steps,
            span: at(),
        },
    );
    (
        ident(),
        option::of(expr()),
        option::of(expr()),
        option::of(expr()),
        option::of(reentry),
        vec(stage, 0..3),
    )
        .prop_map(|(entity, entry, goal, exit, reentry, stages)| {
            DefKind::Journey(Journey {
                entity,
                entry,
                goal,
                exit,
                reentry,
                stages,
            })
        })
        .boxed()
}

fn metric() -> BoxedStrategy<DefKind> {
    let measure = (ident(), expr()).prop_map(|(name, value)| Measure {
        name,
        value,
        span: at(),
    });
    (
        ident(),
        vec(ident(), 0..3),
        vec(measure, 0..3),
        option::of(duration()),
    )
        .prop_map(|(entity, segments, measures, grain)| {
            DefKind::Metric(Metric {
                entity,
                segments,
                measures,
                grain,
            })
        })
        .boxed()
}

fn activation() -> BoxedStrategy<DefKind> {
    let destination = prop_oneof![
        (
            str_lit(),
            option::of(prop::sample::select(vec![
                FileFormat::Csv,
                FileFormat::Parquet
            ]))
        )
            .prop_map(|(path, format)| DestinationKind::File { path, format }),
        str_lit().prop_map(|url| DestinationKind::Webhook { url }),
        (str_lit(), option::of(str_lit()))
            .prop_map(|(connection, table)| DestinationKind::Postgres { connection, table }),
    ]
    .prop_map(|kind| Destination { kind, span: at() });
    let schedule = prop_oneof![
        Just(ScheduleKind::Once),
        duration().prop_map(ScheduleKind::Every),
        str_lit().prop_map(ScheduleKind::Cron),
    ]
    .prop_map(|kind| Schedule { kind, span: at() });
    (
        ident(),
        option::of(ident()),
        option::of(destination),
        vec(ident(), 0..3),
        option::of(schedule),
        option::of(prop::sample::select(vec![
            Delivery::Full,
            Delivery::Changes,
        ])),
    )
        .prop_map(
            |(entity, segment, destination, columns, schedule, delivery)| {
                DefKind::Activation(Activation {
                    entity,
                    segment,
                    destination,
                    columns,
                    schedule,
                    delivery: delivery.map(|d| (d, at())),
                })
            },
        )
        .boxed()
}

fn def_kind() -> BoxedStrategy<DefKind> {
    prop_oneof![
        source(),
        entity(),
        (ident(), expr(), option::of((any::<bool>(), ident()))).prop_map(
            |(entity, value, pick)| DefKind::Attribute(Attribute {
                entity,
                value,
                pick: pick.map(|(latest, by)| Pick {
                    latest,
                    by,
                    span: at(),
                }),
            })
        ),
        (ident(), ident(), option::of(expr()), option::of(ident())).prop_map(
            |(entity, source, filter, at_column)| DefKind::Behavior(Behavior {
                entity,
                source,
                filter,
                at: at_column,
            })
        ),
        (ident(), expr()).prop_map(|(entity, value)| DefKind::Feature(Feature { entity, value })),
        (ident(), expr())
            .prop_map(|(entity, condition)| DefKind::Segment(Segment { entity, condition })),
        journey(),
        metric(),
        activation(),
    ]
    .boxed()
}

fn definition() -> BoxedStrategy<Definition> {
    (ident(), meta(), def_kind())
        .prop_map(|(name, meta, kind)| Definition {
            name,
            meta,
            kind,
            span: at(),
        })
        .boxed()
}

/// A file of a few random definitions, without comments.
pub fn file() -> BoxedStrategy<File> {
    vec(definition(), 0..4)
        .prop_map(|definitions| File {
            definitions,
            comments: Vec::new(),
        })
        .boxed()
}

// ------------------------------------------------------------------------------ normalization

/// Zeroes every span and removes every `Paren` node, in place: what is left is what the text
/// means, whatever its layout.
pub fn normalize(file: &mut File) {
    for c in &mut file.comments {
        c.span = at();
    }
    for d in &mut file.definitions {
        d.span = at();
        d.name.span = at();
        meta_n(&mut d.meta);
        match &mut d.kind {
            DefKind::Source(s) => {
                opt_ident(&mut s.key);
                opt_ident(&mut s.time);
                s.columns_span = at();
                for c in &mut s.columns {
                    c.span = at();
                    c.name.span = at();
                    ty_n(&mut c.ty);
                    opt_str(&mut c.description);
                }
            }
            DefKind::Entity(e) => {
                for k in &mut e.keys {
                    k.span = at();
                    k.name.span = at();
                    if let Some(n) = &mut k.normalize {
                        expr_n(n);
                    }
                    k.exclude.iter_mut().for_each(|s| s.span = at());
                    if let Some((_, s)) = &mut k.max_per_profile {
                        *s = at();
                    }
                    if let Some((_, s)) = &mut k.priority {
                        *s = at();
                    }
                }
                for f in &mut e.from {
                    f.span = at();
                    f.source.span = at();
                    for b in &mut f.bindings {
                        b.span = at();
                        b.key.span = at();
                        expr_n(&mut b.value);
                    }
                }
            }
            DefKind::Attribute(a) => {
                a.entity.span = at();
                expr_n(&mut a.value);
                if let Some(p) = &mut a.pick {
                    p.span = at();
                    p.by.span = at();
                }
            }
            DefKind::Behavior(b) => {
                b.entity.span = at();
                b.source.span = at();
                if let Some(f) = &mut b.filter {
                    expr_n(f);
                }
                opt_ident(&mut b.at);
            }
            DefKind::Feature(f) => {
                f.entity.span = at();
                expr_n(&mut f.value);
            }
            DefKind::Segment(s) => {
                s.entity.span = at();
                expr_n(&mut s.condition);
            }
            DefKind::Journey(j) => {
                j.entity.span = at();
                for e in [&mut j.entry, &mut j.goal, &mut j.exit]
                    .into_iter()
                    .flatten()
                {
                    expr_n(e);
                }
                if let Some(r) = &mut j.reentry {
                    r.span = at();
                    if let ReentryPolicy::After(d) = &mut r.policy {
                        d.span = at();
                    }
                }
                for s in &mut j.stages {
                    s.span = at();
                    s.name.span = at();
                    opt_str(&mut s.description);
                    s.steps.iter_mut().for_each(step_n);
                }
            }
            DefKind::Metric(m) => {
                m.entity.span = at();
                m.segments.iter_mut().for_each(|s| s.span = at());
                for measure in &mut m.measures {
                    measure.span = at();
                    measure.name.span = at();
                    expr_n(&mut measure.value);
                }
                if let Some(g) = &mut m.grain {
                    g.span = at();
                }
            }
            DefKind::Activation(a) => {
                a.entity.span = at();
                opt_ident(&mut a.segment);
                if let Some(d) = &mut a.destination {
                    d.span = at();
                    match &mut d.kind {
                        DestinationKind::File { path, .. } => path.span = at(),
                        DestinationKind::Webhook { url } => url.span = at(),
                        DestinationKind::Postgres { connection, table } => {
                            connection.span = at();
                            opt_str(table);
                        }
                    }
                }
                a.columns.iter_mut().for_each(|c| c.span = at());
                if let Some(s) = &mut a.schedule {
                    s.span = at();
                    match &mut s.kind {
                        ScheduleKind::Once => {}
                        ScheduleKind::Every(d) => d.span = at(),
                        ScheduleKind::Cron(c) => c.span = at(),
                    }
                }
                if let Some((_, s)) = &mut a.delivery {
                    *s = at();
                }
            }
        }
    }
}

fn meta_n(m: &mut Meta) {
    opt_str(&mut m.description);
    opt_str(&mut m.owner);
    m.tags.iter_mut().for_each(|t| t.span = at());
}

fn opt_ident(i: &mut Option<Ident>) {
    if let Some(i) = i {
        i.span = at();
    }
}

fn opt_str(s: &mut Option<StrLit>) {
    if let Some(s) = s {
        s.span = at();
    }
}

fn ty_n(t: &mut TypeExpr) {
    t.span = at();
    if let TypeKind::List(inner) = &mut t.kind {
        ty_n(inner);
    }
}

fn step_n(s: &mut Step) {
    s.span = at();
    match &mut s.kind {
        StepKind::Activate(i) | StepKind::Jump(i) => i.span = at(),
        StepKind::Wait(d) => d.span = at(),
        StepKind::WaitUntil { condition, timeout } => {
            expr_n(condition);
            timeout.span = at();
        }
        StepKind::Branch { arms, otherwise } => {
            for arm in arms {
                arm.span = at();
                expr_n(&mut arm.condition);
                block_n(&mut arm.then);
            }
            if let Some(b) = otherwise {
                block_n(b);
            }
        }
        StepKind::Split(arms) => {
            for arm in arms {
                arm.span = at();
                block_n(&mut arm.then);
            }
        }
        StepKind::End => {}
    }
}

fn block_n(b: &mut StepBlock) {
    b.span = at();
    b.steps.iter_mut().for_each(step_n);
}

/// [`normalize`] for one expression.
pub fn normalize_expr(e: &mut Expr) {
    expr_n(e);
}

fn expr_n(e: &mut Expr) {
    while let ExprKind::Paren(inner) = &mut e.kind {
        let inner = std::mem::replace(inner.as_mut(), ex(ExprKind::Null));
        *e = inner;
    }
    e.span = at();
    match &mut e.kind {
        ExprKind::Null
        | ExprKind::Bool(_)
        | ExprKind::Number(_)
        | ExprKind::String(_)
        | ExprKind::Date(_)
        | ExprKind::Timestamp(_)
        | ExprKind::Paren(_) => {}
        ExprKind::Duration(d) => d.span = at(),
        ExprKind::List(items) => items.iter_mut().for_each(expr_n),
        ExprKind::Path(parts) => parts.iter_mut().for_each(|p| p.span = at()),
        ExprKind::Call(c) => {
            c.function.span = at();
            c.args.iter_mut().for_each(expr_n);
            if let Some(f) = &mut c.filter {
                expr_n(f);
            }
            if let Some(w) = &mut c.window {
                w.span = at();
            }
        }
        ExprKind::Unary { operand, .. } => expr_n(operand),
        ExprKind::Binary { left, right, .. } => {
            expr_n(left);
            expr_n(right);
        }
        ExprKind::Predicate {
            subject, predicate, ..
        } => {
            expr_n(subject);
            match predicate {
                Predicate::IsNull | Predicate::IsSet => {}
                Predicate::In(items) => items.iter_mut().for_each(expr_n),
                Predicate::Between(low, high) => {
                    expr_n(low);
                    expr_n(high);
                }
                Predicate::Contains(x)
                | Predicate::StartsWith(x)
                | Predicate::EndsWith(x)
                | Predicate::Matches(x)
                | Predicate::Before(x)
                | Predicate::After(x) => expr_n(x),
                Predicate::WithinLast(d) => d.span = at(),
            }
        }
        ExprKind::Sequence(s) => {
            seq_step_n(&mut s.first);
            for t in &mut s.then {
                t.span = at();
                t.within.span = at();
                seq_step_n(&mut t.step);
            }
            if let Some(w) = &mut s.window {
                w.span = at();
            }
        }
    }
}

fn seq_step_n(s: &mut SequenceStep) {
    s.span = at();
    s.behavior.span = at();
    if let Some(f) = &mut s.filter {
        expr_n(f);
    }
}
