//! The syntax tree of a `.cdp` file: plain data, a span on every node, no knowledge of SQL.

use serde::{Deserialize, Serialize};

use crate::span::Span;

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A string literal, unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrLit {
    pub value: String,
    pub span: Span,
}

/// A duration literal such as `30d`; `millis` is its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duration {
    pub amount: u64,
    pub unit: DurationUnit,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DurationUnit {
    Millis,
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl DurationUnit {
    pub fn suffix(self) -> &'static str {
        match self {
            DurationUnit::Millis => "ms",
            DurationUnit::Seconds => "s",
            DurationUnit::Minutes => "m",
            DurationUnit::Hours => "h",
            DurationUnit::Days => "d",
            DurationUnit::Weeks => "w",
        }
    }

    pub fn millis(self) -> u64 {
        match self {
            DurationUnit::Millis => 1,
            DurationUnit::Seconds => 1_000,
            DurationUnit::Minutes => 60_000,
            DurationUnit::Hours => 3_600_000,
            DurationUnit::Days => 86_400_000,
            DurationUnit::Weeks => 7 * 86_400_000,
        }
    }
}

impl Duration {
    /// Length in milliseconds, saturating on absurd literals instead of overflowing.
    pub fn millis(&self) -> u64 {
        self.amount.saturating_mul(self.unit.millis())
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.amount, self.unit.suffix())
    }
}

/// One parsed `.cdp` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct File {
    pub definitions: Vec<Definition>,
    pub comments: Vec<Comment>,
}

/// A `# …` comment; `text` excludes the `#`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

/// Description, owner and tags: every definition can carry them; the registry indexes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub description: Option<StrLit>,
    pub owner: Option<StrLit>,
    pub tags: Vec<StrLit>,
}

/// A top-level definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    pub name: Ident,
    pub meta: Meta,
    pub kind: DefKind,
    pub span: Span,
}

// Definitions are built once per check and referenced, never moved in bulk: boxing the large
// variants would buy nothing but indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DefKind {
    Source(Source),
    Entity(Entity),
    Attribute(Attribute),
    Behavior(Behavior),
    Feature(Feature),
    Segment(Segment),
    Journey(Journey),
    Metric(Metric),
    Activation(Activation),
}

impl DefKind {
    /// The keyword that introduces this kind of definition.
    pub fn keyword(&self) -> &'static str {
        match self {
            DefKind::Source(_) => "source",
            DefKind::Entity(_) => "entity",
            DefKind::Attribute(_) => "attribute",
            DefKind::Behavior(_) => "behavior",
            DefKind::Feature(_) => "feature",
            DefKind::Segment(_) => "segment",
            DefKind::Journey(_) => "journey",
            DefKind::Metric(_) => "metric",
            DefKind::Activation(_) => "activation",
        }
    }

    /// The entity named by `of <entity>`, for the kinds that belong to one.
    pub fn entity(&self) -> Option<&Ident> {
        match self {
            DefKind::Source(_) | DefKind::Entity(_) => None,
            DefKind::Attribute(d) => Some(&d.entity),
            DefKind::Behavior(d) => Some(&d.entity),
            DefKind::Feature(d) => Some(&d.entity),
            DefKind::Segment(d) => Some(&d.entity),
            DefKind::Journey(d) => Some(&d.entity),
            DefKind::Metric(d) => Some(&d.entity),
            DefKind::Activation(d) => Some(&d.entity),
        }
    }
}

// ------------------------------------------------------------------------------------ source

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The column that identifies a row, if any.
    pub key: Option<Ident>,
    /// The event-time column, if the source is a stream of events.
    pub time: Option<Ident>,
    pub columns: Vec<Column>,
    /// Span of the `columns { … }` block (or of the definition when it is missing).
    pub columns_span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: Ident,
    pub ty: TypeExpr,
    pub nullable: bool,
    pub pii: bool,
    pub description: Option<StrLit>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeExpr {
    pub kind: TypeKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TypeKind {
    String,
    Int,
    Float,
    Bool,
    Date,
    Timestamp,
    Duration,
    Decimal { precision: u32, scale: u32 },
    List(Box<TypeExpr>),
}

// ------------------------------------------------------------------------------------ entity

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub keys: Vec<IdentityKey>,
    pub from: Vec<EntityFrom>,
}

/// One kind of identifier of a profile (customer id, email, cookie…), with its hygiene rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityKey {
    pub name: Ident,
    /// Expression over the key's own name that normalizes a raw value, e.g. `lower(trim(email))`.
    pub normalize: Option<Expr>,
    /// Values (after normalization) that never identify anybody.
    pub exclude: Vec<StrLit>,
    /// `max N per profile`: a value linked to more than N values of this key is not a link.
    pub max_per_profile: Option<(u64, Span)>,
    /// `priority N`: lower numbers win when a profile's canonical key is chosen.
    pub priority: Option<(u64, Span)>,
    pub span: Span,
}

/// `from <source> { key = expr, … }`: which columns of a source feed which keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityFrom {
    pub source: Ident,
    pub bindings: Vec<KeyBinding>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyBinding {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

// ------------------------------------------------------------------- attribute, behavior, feature

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub entity: Ident,
    pub value: Expr,
    /// `latest by col` / `earliest by col`: which row wins when a profile has several.
    pub pick: Option<Pick>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pick {
    pub latest: bool,
    pub by: Ident,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Behavior {
    pub entity: Ident,
    pub source: Ident,
    pub filter: Option<Expr>,
    /// Event-time column; defaults to the source's `time`.
    pub at: Option<Ident>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub entity: Ident,
    pub value: Expr,
}

// ------------------------------------------------------------------------------------ segment

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub entity: Ident,
    pub condition: Expr,
}

// ------------------------------------------------------------------------------------ journey

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journey {
    pub entity: Ident,
    pub entry: Option<Expr>,
    pub goal: Option<Expr>,
    pub exit: Option<Expr>,
    pub reentry: Option<Reentry>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reentry {
    pub policy: ReentryPolicy,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReentryPolicy {
    Never,
    Always,
    After(Duration),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: Ident,
    pub description: Option<StrLit>,
    pub steps: Vec<Step>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub kind: StepKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StepKind {
    /// Send the profile to an activation's destination.
    Activate(Ident),
    Wait(Duration),
    /// Wait until a condition holds, at most `timeout`.
    WaitUntil {
        condition: Expr,
        timeout: Duration,
    },
    /// First matching `when` wins; `otherwise` is the `else` arm.
    Branch {
        arms: Vec<BranchArm>,
        otherwise: Option<StepBlock>,
    },
    /// Deterministic A/B split by profile hash.
    Split(Vec<SplitArm>),
    /// Continue at the start of another stage.
    Jump(Ident),
    End,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchArm {
    pub condition: Expr,
    pub then: StepBlock,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitArm {
    /// Percentage in hundredths of a percent, so that `33.33%` is exact.
    pub basis_points: u32,
    pub then: StepBlock,
    pub span: Span,
}

/// Steps of a branch or split arm: one step, or `{ … }` holding several (or none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepBlock {
    pub steps: Vec<Step>,
    /// Whether it was written with braces; the formatter keeps a single step bare.
    pub braced: bool,
    pub span: Span,
}

// ------------------------------------------------------------------------------------ metric

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub entity: Ident,
    pub segments: Vec<Ident>,
    pub measures: Vec<Measure>,
    pub grain: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

// ------------------------------------------------------------------------------------ activation

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    pub entity: Ident,
    /// The exported audience; absent for activations that journeys trigger.
    pub segment: Option<Ident>,
    pub destination: Option<Destination>,
    pub columns: Vec<Ident>,
    pub schedule: Option<Schedule>,
    pub delivery: Option<(Delivery, Span)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub kind: DestinationKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DestinationKind {
    File {
        path: StrLit,
        format: Option<FileFormat>,
    },
    Webhook {
        url: StrLit,
    },
    Postgres {
        connection: StrLit,
        table: Option<StrLit>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileFormat {
    Csv,
    Parquet,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ScheduleKind {
    Once,
    Every(Duration),
    Cron(StrLit),
}

/// `deliver full` sends every member each time; `deliver changes` sends added/removed deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    Full,
    Changes,
}

// ------------------------------------------------------------------------------------ expressions

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExprKind {
    Null,
    Bool(bool),
    /// Kept as written (`12.50` stays `12.50`) so that decimals are exact.
    Number(String),
    String(String),
    Duration(Duration),
    Date(String),
    Timestamp(String),
    List(Vec<Expr>),
    /// `name` or `qualifier.name`.
    Path(Vec<Ident>),
    /// A function or aggregate call; which one is decided by the checker.
    Call(Call),
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// A predicate written after its subject: `x between 1 and 5`, `x is null`, …
    Predicate {
        subject: Box<Expr>,
        negated: bool,
        predicate: Predicate,
    },
    /// `did a then not b within 1d over 30d`.
    Sequence(Sequence),
    /// Parentheses as written; kept so the formatter prints what the user grouped.
    Paren(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub function: Ident,
    pub args: Vec<Expr>,
    /// `where` inside the parentheses: filter on the aggregated behavior's events.
    pub filter: Option<Box<Expr>>,
    /// `over 30d` after the parentheses.
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnaryOp {
    Not,
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "or",
            BinaryOp::And => "and",
            BinaryOp::Eq => "=",
            BinaryOp::Ne => "!=",
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

    /// Binding strength, higher binds tighter; shared by the parser and the formatter.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => 4,
            BinaryOp::Add | BinaryOp::Sub => 5,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => 6,
        }
    }
}

/// Precedence of `not` (between `and` and comparisons) and of postfix predicates.
pub const NOT_PRECEDENCE: u8 = 3;
pub const PREDICATE_PRECEDENCE: u8 = 4;
pub const NEG_PRECEDENCE: u8 = 7;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Predicate {
    IsNull,
    IsSet,
    In(Vec<Expr>),
    Between(Box<Expr>, Box<Expr>),
    Contains(Box<Expr>),
    StartsWith(Box<Expr>),
    EndsWith(Box<Expr>),
    Matches(Box<Expr>),
    WithinLast(Duration),
    Before(Box<Expr>),
    After(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequence {
    pub first: SequenceStep,
    pub then: Vec<SequenceThen>,
    /// `over D`: the first step must have happened within the last D.
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceStep {
    pub behavior: Ident,
    pub filter: Option<Box<Expr>>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceThen {
    /// `then not b within D`: no `b` within D after the previous step (and D has passed).
    pub negated: bool,
    pub step: SequenceStep,
    pub within: Duration,
    pub span: Span,
}
