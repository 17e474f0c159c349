//! The IR: an engine-neutral, serializable description of a checked project that both back ends
//! (SQL and streaming) read. Everything is named by numeric ids, so back ends never resolve a
//! name again and never look at the AST.
//!
//! Expressions come in three scopes, and every [`Expr`] says which values it may read:
//! - *row* expressions read the columns of one source row (bindings, behavior filters, the value
//!   and `where` of an aggregate, sequence step filters);
//! - *profile* expressions read a profile's attributes, features, segment memberships,
//!   aggregates and sequences (features, segments, journey conditions);
//! - the *key* expression of `normalize` reads the raw value of one identity key.
//!
//! Aggregates are shared: the same `count(purchase) over 30d` written in a feature and in a
//! segment is one [`Aggregate`], computed once per profile.

use serde::{Deserialize, Serialize};

use crate::types::{Aggregate as AggFn, Function, Type};

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        pub struct $name(pub u32);
        impl $name {
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    )*};
}

ids!(
    /// A source of the project.
    SourceId,
    /// A column of one source (index into its columns).
    ColumnId,
    /// An entity.
    EntityId,
    /// An identity key of an entity (index into its keys).
    KeyId,
    BehaviorId,
    AttributeId,
    AggregateId,
    FeatureId,
    SequenceId,
    SegmentId,
    JourneyId,
    MetricId,
    ActivationId,
    /// A step of a journey's state machine (index into its nodes).
    NodeId,
);

/// The whole project, lowered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub name: String,
    pub sources: Vec<Source>,
    pub entities: Vec<Entity>,
    pub behaviors: Vec<Behavior>,
    pub attributes: Vec<Attribute>,
    pub aggregates: Vec<Aggregate>,
    pub features: Vec<Feature>,
    pub sequences: Vec<Sequence>,
    pub segments: Vec<Segment>,
    pub journeys: Vec<Journey>,
    pub metrics: Vec<Metric>,
    pub activations: Vec<Activation>,
    /// Attributes, features and segments in an order where each comes after what it reads.
    pub profile_order: Vec<ProfileValue>,
}

/// Who a definition is, for headers, messages and lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub name: String,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub meta: Meta,
    /// Table name on SQL targets (the binding's `table`, else the source's name).
    pub table: String,
    pub columns: Vec<Column>,
    pub key: Option<ColumnId>,
    pub time: Option<ColumnId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: Type,
    pub nullable: bool,
    pub pii: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub meta: Meta,
    /// In priority order: the first key is the strongest.
    pub keys: Vec<IdentityKey>,
    pub bindings: Vec<KeyBinding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityKey {
    pub name: String,
    /// Key-scope expression giving the normalized value; `None` keeps the raw value.
    pub normalize: Option<Expr>,
    /// Normalized values that never identify anybody.
    pub exclude: Vec<String>,
    /// An identifier keeps links to at most this many values of this key (first seen first).
    pub max_per_profile: Option<u64>,
    /// Lower wins; declaration order when not given.
    pub priority: u64,
}

/// Values of `key` taken from rows of `source` (a row expression).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyBinding {
    pub source: SourceId,
    pub key: KeyId,
    pub value: Expr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Behavior {
    pub meta: Meta,
    pub entity: EntityId,
    pub source: SourceId,
    /// Row expression; rows where it is not true are not events of this behavior.
    pub filter: Option<Expr>,
    /// Event-time column.
    pub time: ColumnId,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    pub meta: Meta,
    pub entity: EntityId,
    pub value: AttributeValue,
    pub ty: Type,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttributeValue {
    /// A row expression over one source; of the rows of a profile, the one with the greatest
    /// (`latest`) or least `order_by` wins, ties broken by the greatest value.
    FromSource {
        source: SourceId,
        value: Expr,
        order_by: Option<ColumnId>,
        latest: bool,
    },
    /// A profile expression over other attributes and features.
    Derived(Expr),
}

/// A keyed aggregate: per profile, over the events of one behavior visible at the as-of time T
/// (time <= T) and, with a window of D, inside it (T - D < time <= T).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Aggregate {
    pub behavior: BehaviorId,
    pub function: AggFn,
    /// Row expression aggregated; `None` for `count(behavior)`.
    pub value: Option<Expr>,
    /// Row expression; only events where it is true count.
    pub filter: Option<Expr>,
    pub window_ms: Option<u64>,
    /// `k` of last_k / first_k.
    pub k: Option<u32>,
    pub ty: Type,
}

impl Aggregate {
    /// Whether the streaming runtime can apply a removal (an event leaving the window) to the
    /// state without keeping the events: the single place that says so is `types::Aggregate`.
    pub fn invertible(&self) -> bool {
        self.function.invertible()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub meta: Meta,
    pub entity: EntityId,
    /// Profile expression.
    pub value: Expr,
    pub ty: Type,
}

/// `did a then b within D … [over W]` for one profile.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sequence {
    pub first: SequenceStep,
    pub then: Vec<SequenceThen>,
    pub window_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SequenceStep {
    pub behavior: BehaviorId,
    /// Row expression.
    pub filter: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SequenceThen {
    pub negated: bool,
    pub step: SequenceStep,
    pub within_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub meta: Meta,
    pub entity: EntityId,
    /// Profile expression; a profile is a member when it is true (unknown is not a member).
    pub condition: Expr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journey {
    pub meta: Meta,
    pub entity: EntityId,
    pub entry: Expr,
    pub goal: Option<Expr>,
    pub exit: Option<Expr>,
    pub reentry: Reentry,
    /// The state machine; node 0 is where a profile starts.
    pub nodes: Vec<Node>,
    /// Names of the stages, indexed by `Node::stage`.
    pub stages: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reentry {
    Never,
    Always,
    AfterMs(u64),
}

/// One step of a journey; control moves along the targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub stage: u32,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeKind {
    Activate {
        activation: ActivationId,
        next: NodeId,
    },
    Wait {
        ms: u64,
        next: NodeId,
    },
    /// Moves on when the condition holds or when `timeout_ms` has passed, whichever is first.
    WaitUntil {
        condition: Expr,
        timeout_ms: u64,
        next: NodeId,
    },
    /// The first arm whose condition is true wins; else `otherwise`.
    Branch {
        arms: Vec<(Expr, NodeId)>,
        otherwise: NodeId,
    },
    /// Arms in order with their share in basis points (sum 10,000), by profile hash.
    Split {
        arms: Vec<(u32, NodeId)>,
    },
    End,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub meta: Meta,
    pub entity: EntityId,
    pub segments: Vec<SegmentId>,
    pub measures: Vec<Measure>,
    pub grain_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    pub name: String,
    pub value: MeasureExpr,
    pub ty: Type,
}

/// A measure: an arithmetic combination of aggregates over a segment's members in a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MeasureExpr {
    /// The number of members.
    Population,
    /// An aggregate of a profile expression over the members.
    OverMembers {
        function: AggFn,
        value: Expr,
    },
    /// An aggregate over the members' events of one behavior in the period.
    OverEvents {
        behavior: BehaviorId,
        function: AggFn,
        value: Option<Expr>,
        filter: Option<Expr>,
    },
    Literal(Literal),
    Binary {
        op: BinaryOp,
        left: Box<MeasureExpr>,
        right: Box<MeasureExpr>,
    },
    Neg(Box<MeasureExpr>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    pub meta: Meta,
    pub entity: EntityId,
    pub segment: Option<SegmentId>,
    pub destination: Destination,
    pub columns: Vec<ProfileColumn>,
    pub schedule: Schedule,
    pub deliver_changes: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Destination {
    File { path: String, parquet: bool },
    Webhook { url: String },
    Postgres { connection: String, table: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    Once,
    EveryMs(u64),
    Cron(String),
}

/// A value exported per profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProfileColumn {
    Key(KeyId),
    Attribute(AttributeId),
    Feature(FeatureId),
}

/// A value computed per profile, in dependency order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProfileValue {
    Attribute(AttributeId),
    Feature(FeatureId),
    Segment(SegmentId),
}

// ------------------------------------------------------------------------------ expressions

/// A typed expression of one of the three scopes (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub ty: Type,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExprKind {
    Literal(Literal),
    /// Row scope: a column of the row's source.
    Column(ColumnId),
    /// Key scope: the raw key value.
    KeyValue,
    Attribute(AttributeId),
    Feature(FeatureId),
    Segment(SegmentId),
    Aggregate(AggregateId),
    Sequence(SequenceId),
    /// The as-of time T (`now()`).
    AsOf,
    /// A list value `[a, b]`.
    List(Vec<Expr>),
    Call(Function, Vec<Expr>),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    IsNull {
        value: Box<Expr>,
        negated: bool,
    },
    /// `value [not] in [items]`, SQL semantics (null if no match and a null is among the items).
    InList {
        value: Box<Expr>,
        items: Vec<Expr>,
        negated: bool,
    },
    /// String tests; `pattern` is a plain string expression, not a LIKE pattern.
    Text {
        op: TextOp,
        value: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
    },
    /// Element membership of a list value.
    ListContains {
        list: Box<Expr>,
        item: Box<Expr>,
        negated: bool,
    },
    /// Number of elements of a list value (`is set` on lists: non-empty).
    ListLength(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
    /// Regular expression search (unanchored).
    Matches,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryOp {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    /// Real division: `7 / 2 = 3.5` on every engine; division by zero gives null.
    Div,
    Rem,
}

impl BinaryOp {
    /// The operator as the language writes it.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
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
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    /// Decimal text as written (`12.50`), exact.
    Decimal(String),
    /// Shared, so that evaluating it (the streaming operators do, at every evaluation) is a
    /// reference count, not a copy.
    String(std::sync::Arc<str>),
    /// `YYYY-MM-DD`.
    Date(String),
    /// Microseconds since the Unix epoch (UTC).
    TimestampMicros(i64),
    DurationMs(u64),
}

impl Expr {
    pub fn literal(lit: Literal, ty: Type) -> Expr {
        Expr {
            kind: ExprKind::Literal(lit),
            ty,
        }
    }

    pub fn bool(b: bool) -> Expr {
        Expr::literal(Literal::Bool(b), Type::Bool)
    }

    /// Calls `f` on this expression and every sub-expression (pre-order), iteratively.
    pub fn walk<'a>(&'a self, mut f: impl FnMut(&'a Expr)) {
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            f(e);
            match &e.kind {
                ExprKind::Call(_, args) | ExprKind::List(args) => stack.extend(args.iter().rev()),
                ExprKind::Not(x) | ExprKind::Neg(x) | ExprKind::ListLength(x) => stack.push(x),
                ExprKind::IsNull { value, .. } => stack.push(value),
                ExprKind::Binary(_, l, r) => {
                    stack.push(r);
                    stack.push(l);
                }
                ExprKind::InList { value, items, .. } => {
                    stack.extend(items.iter().rev());
                    stack.push(value);
                }
                ExprKind::Text { value, pattern, .. } => {
                    stack.push(pattern);
                    stack.push(value);
                }
                ExprKind::ListContains { list, item, .. } => {
                    stack.push(item);
                    stack.push(list);
                }
                _ => {}
            }
        }
    }
}
