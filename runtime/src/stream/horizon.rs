//! When time alone next changes a condition: the instant the streaming runtime sets a profile's
//! timer for, so that a profile is re-evaluated when (and only when) a segment or a journey
//! condition reading `now()` can flip, instead of at every midnight.
//!
//! Besides `now()`, time moves the *leaves*: windowed aggregates (their events leave the window)
//! and sequences (steps leave the window, a negated step's wait runs out), whose values change
//! only at instants their state lists. A watched condition is a segment's condition (or a journey
//! condition) with every profile value that reads `now()` or a leaf written in place
//! ([`Watch::inline`]); what it reads otherwise is fixed until the next event, which re-evaluates
//! the profile. The instant is found per node of the condition, from its value at the evaluation
//! time:
//!
//! - `a and b` that is false stays false until every false operand has changed (dually for `or`);
//! - a comparison of a value that only grows (or only shrinks) with `now()` — `now() - 30d`,
//!   `days_between(x, now())`, `years_between(b, date(now()))`, `date(now())` … — against a fixed
//!   value changes when the growing side first reaches the fixed one: solved in closed form and
//!   checked by evaluating one microsecond before and at the instant, else found by a galloping
//!   search over the expression itself;
//! - `g % m` of such a growing whole number repeats with period `m` on each side of zero (`%`
//!   truncates): the next value of `g` that changes the comparison is found within one period,
//!   or one period past zero;
//! - `hour(x)`, `day(x)`, `month(x)` change at the next hour or midnight of `x`;
//! - a node reading leaves and not `now()` changes, if at all, at one of the leaves' listed
//!   instants: the first at which its value differs is searched among them (by halving when the
//!   node only moves one way: a windowed count below its threshold never climbs back by time);
//! - anything else changes at the earliest change of its operands. A bare `now()` in none of
//!   these places (`coalesce(now(), x)`) is re-evaluated every second.
//!
//! The result is never later than the real change (it may be earlier: the evaluation then finds
//! nothing changed and sets the next one); the property test `stream_equals_batch` holds the
//! streaming values to the batch program's at arbitrary as-of times.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::HashSet;

use cdp_compiler::ir::{self, AttributeValue, BinaryOp, Expr, ExprKind, Literal};
use cdp_compiler::types::{Function, Type};

use super::aggregate::{AggSpec, AggState};
use super::eval::{arithmetic, eval, ProfileValues, Regexes, Scope};
use super::value::{civil, Value, DAY_MICROS};

const SECOND: i64 = 1_000_000;
const HOUR: i64 = 3_600 * SECOND;
/// Nothing is scheduled after 9999-12-31.
const END: i64 = 253_402_300_799 * SECOND;
/// The most instants of leaves searched for one node; past them the node is looked at again.
const CANDIDATES: usize = 128;

/// A value time moves besides `now()`, by its position in the entity's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Leaf {
    /// A windowed aggregate.
    Aggregate(usize),
    /// A sequence with a window or a negated step.
    Sequence(usize),
}

/// How a value moves as time passes, all else fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mono {
    Const,
    /// Never decreases.
    Up,
    /// Never increases.
    Down,
    Other,
}

impl Mono {
    fn neg(self) -> Mono {
        match self {
            Mono::Up => Mono::Down,
            Mono::Down => Mono::Up,
            m => m,
        }
    }

    fn plus(self, o: Mono) -> Mono {
        match (self, o) {
            (Mono::Const, m) | (m, Mono::Const) => m,
            (a, b) if a == b => a,
            _ => Mono::Other,
        }
    }
}

/// A watched condition: the expression, and per node whether it reads `now()`, the leaves it
/// reads and how it moves with time. `kids` are the node's operands in [`operands`] order.
#[derive(Debug)]
pub(crate) struct Watch {
    expr: Expr,
    now: bool,
    leaves: Vec<Leaf>,
    mono: Mono,
    kids: Vec<Watch>,
}

/// Which nodes are leaves, and how each moves.
pub(crate) type LeafOf<'a> = &'a dyn Fn(&ExprKind) -> Option<(Leaf, Mono)>;

/// The operands of a node, in a fixed order.
fn operands(e: &Expr) -> Vec<&Expr> {
    match &e.kind {
        ExprKind::Call(_, args) | ExprKind::List(args) => args.iter().collect(),
        ExprKind::Not(x) | ExprKind::Neg(x) | ExprKind::ListLength(x) => vec![x],
        ExprKind::IsNull { value, .. } => vec![value],
        ExprKind::Binary(_, l, r) => vec![l, r],
        ExprKind::InList { value, items, .. } => std::iter::once(&**value).chain(items).collect(),
        ExprKind::Text { value, pattern, .. } => vec![value, pattern],
        ExprKind::ListContains { list, item, .. } => vec![list, item],
        _ => Vec::new(),
    }
}

fn literal_sign(e: &Expr) -> Option<Ordering> {
    match &e.kind {
        ExprKind::Literal(l @ (Literal::Int(_) | Literal::Decimal(_))) => {
            Value::literal(l).sql_cmp(&Value::Int(0))
        }
        _ => None,
    }
}

impl Watch {
    /// The profile values of an entity whose value reads `now()` or a leaf, directly or through
    /// another: (0 attribute | 1 feature | 2 segment, id).
    pub(crate) fn moving(
        p: &ir::Project,
        entity: ir::EntityId,
        leaf_of: LeafOf<'_>,
    ) -> HashSet<(u8, u32)> {
        let mut moving = HashSet::new();
        for pv in &p.profile_order {
            let Some((tag, expr)) = definition(p, entity, *pv) else {
                continue;
            };
            let mut reads = false;
            expr.walk(|x| match &x.kind {
                ExprKind::AsOf | ExprKind::Call(Function::Now, _) => reads = true,
                k if leaf_of(k).is_some() => reads = true,
                ExprKind::Attribute(a) => reads |= moving.contains(&(0, a.0)),
                ExprKind::Feature(f) => reads |= moving.contains(&(1, f.0)),
                ExprKind::Segment(s) => reads |= moving.contains(&(2, s.0)),
                _ => {}
            });
            if reads {
                moving.insert(tag);
            }
        }
        moving
    }

    /// `e` with every moving profile value it reads replaced by its definition (a segment by
    /// `coalesce(condition, false)`, its value), annotated.
    pub(crate) fn inline(
        e: &Expr,
        p: &ir::Project,
        moving: &HashSet<(u8, u32)>,
        leaf_of: LeafOf<'_>,
    ) -> Watch {
        Watch::of(inline(e, p, moving), leaf_of)
    }

    /// The condition, with the moving profile values it reads written in place.
    pub(crate) fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether time alone can change the condition.
    pub(crate) fn moves(&self) -> bool {
        self.now || !self.leaves.is_empty()
    }

    fn of(expr: Expr, leaf_of: LeafOf<'_>) -> Watch {
        let kids: Vec<Watch> = operands(&expr)
            .into_iter()
            .map(|k| Watch::of(k.clone(), leaf_of))
            .collect();
        let own = leaf_of(&expr.kind);
        let now = matches!(expr.kind, ExprKind::AsOf | ExprKind::Call(Function::Now, _))
            || kids.iter().any(|k| k.now);
        let mut leaves: Vec<Leaf> = own.iter().map(|(l, _)| *l).collect();
        leaves.extend(kids.iter().flat_map(|k| k.leaves.iter().copied()));
        leaves.sort_unstable();
        leaves.dedup();
        let mono = if !now && leaves.is_empty() {
            Mono::Const
        } else if let Some((_, m)) = own {
            m
        } else {
            let first = kids.first().map_or(Mono::Const, |k| k.mono);
            let only_first = kids.iter().skip(1).all(|k| !k.moves());
            match &expr.kind {
                ExprKind::AsOf | ExprKind::Call(Function::Now, _) => Mono::Up,
                ExprKind::Call(
                    Function::Date
                    | Function::Year
                    | Function::Floor
                    | Function::Ceil
                    | Function::Round
                    | Function::ToInt
                    | Function::ToFloat,
                    _,
                ) if only_first => first,
                ExprKind::Call(Function::DaysBetween | Function::YearsBetween, _)
                    if kids.len() == 2 =>
                {
                    kids[0].mono.neg().plus(kids[1].mono)
                }
                ExprKind::Call(Function::Greatest | Function::Least, _) => {
                    kids.iter().fold(Mono::Const, |m, k| m.plus(k.mono))
                }
                ExprKind::Neg(_) => first.neg(),
                ExprKind::Binary(BinaryOp::Add, ..) => kids[0].mono.plus(kids[1].mono),
                ExprKind::Binary(BinaryOp::Sub, ..) => kids[0].mono.plus(kids[1].mono.neg()),
                ExprKind::Binary(op @ (BinaryOp::Mul | BinaryOp::Div), l, r) => {
                    let (moving, sign) = if kids[1].moves() {
                        (
                            kids[1].mono,
                            literal_sign(l).filter(|_| *op == BinaryOp::Mul),
                        )
                    } else {
                        (kids[0].mono, literal_sign(r))
                    };
                    match sign {
                        Some(Ordering::Greater) => moving,
                        Some(Ordering::Less) => moving.neg(),
                        Some(Ordering::Equal) => Mono::Const,
                        None => Mono::Other,
                    }
                }
                _ => Mono::Other,
            }
        };
        Watch {
            expr,
            now,
            leaves,
            mono,
            kids,
        }
    }
}

fn definition(
    p: &ir::Project,
    entity: ir::EntityId,
    pv: ir::ProfileValue,
) -> Option<((u8, u32), &Expr)> {
    match pv {
        ir::ProfileValue::Attribute(a) if p.attributes[a.index()].entity == entity => {
            match &p.attributes[a.index()].value {
                AttributeValue::Derived(e) => Some(((0, a.0), e)),
                _ => None,
            }
        }
        ir::ProfileValue::Feature(f) if p.features[f.index()].entity == entity => {
            Some(((1, f.0), &p.features[f.index()].value))
        }
        ir::ProfileValue::Segment(s) if p.segments[s.index()].entity == entity => {
            Some(((2, s.0), &p.segments[s.index()].condition))
        }
        _ => None,
    }
}

fn inline(e: &Expr, p: &ir::Project, moving: &HashSet<(u8, u32)>) -> Expr {
    let map = |x: &Expr| Box::new(inline(x, p, moving));
    let list = |xs: &[Expr]| xs.iter().map(|x| inline(x, p, moving)).collect::<Vec<_>>();
    let kind = match &e.kind {
        ExprKind::Attribute(a) if moving.contains(&(0, a.0)) => {
            if let AttributeValue::Derived(d) = &p.attributes[a.index()].value {
                return inline(d, p, moving);
            }
            e.kind.clone()
        }
        ExprKind::Feature(f) if moving.contains(&(1, f.0)) => {
            return inline(&p.features[f.index()].value, p, moving);
        }
        ExprKind::Segment(s) if moving.contains(&(2, s.0)) => {
            let condition = inline(&p.segments[s.index()].condition, p, moving);
            ExprKind::Call(
                Function::Coalesce,
                vec![condition, Expr::literal(Literal::Bool(false), Type::Bool)],
            )
        }
        ExprKind::Call(f, args) => ExprKind::Call(*f, list(args)),
        ExprKind::List(args) => ExprKind::List(list(args)),
        ExprKind::Not(x) => ExprKind::Not(map(x)),
        ExprKind::Neg(x) => ExprKind::Neg(map(x)),
        ExprKind::ListLength(x) => ExprKind::ListLength(map(x)),
        ExprKind::IsNull { value, negated } => ExprKind::IsNull {
            value: map(value),
            negated: *negated,
        },
        ExprKind::Binary(op, l, r) => ExprKind::Binary(*op, map(l), map(r)),
        ExprKind::InList {
            value,
            items,
            negated,
        } => ExprKind::InList {
            value: map(value),
            items: list(items),
            negated: *negated,
        },
        ExprKind::Text {
            op,
            value,
            pattern,
            negated,
        } => ExprKind::Text {
            op: *op,
            value: map(value),
            pattern: map(pattern),
            negated: *negated,
        },
        ExprKind::ListContains {
            list: l,
            item,
            negated,
        } => ExprKind::ListContains {
            list: map(l),
            item: map(item),
            negated: *negated,
        },
        other => other.clone(),
    };
    Expr {
        kind,
        ty: e.ty.clone(),
    }
}

/// What the leaves of one profile are made of: the plan's windowed aggregates and sequences
/// with the profile's state of each.
pub(crate) struct Leaves<'a> {
    pub project: &'a ir::Project,
    pub aggregates: &'a [(ir::AggregateId, AggSpec)],
    pub states: &'a [AggState],
    pub sequences: &'a [ir::SequenceId],
    pub lists: &'a [Vec<Vec<i64>>],
}

impl Leaves<'_> {
    fn value(&self, leaf: Leaf, t: i64) -> Value {
        match leaf {
            Leaf::Aggregate(i) => self.aggregates[i].1.value(&self.states[i], t),
            Leaf::Sequence(i) => {
                let seq = &self.project.sequences[self.sequences[i].index()];
                Value::Bool(super::sequence_holds(seq, &self.lists[i], t))
            }
        }
    }

    /// The instants after `at` at which a leaf's value may change: an event's time plus the
    /// window (and, for a sequence step, plus each step's `within`).
    fn instants(&self, leaf: Leaf, at: i64, out: &mut Vec<i64>) {
        match leaf {
            Leaf::Aggregate(i) => {
                if let (AggState::Window(items), Some(w)) =
                    (&self.states[i], self.aggregates[i].1.window)
                {
                    out.extend(items.iter().map(|(t, _)| t + w).filter(|t| *t > at));
                }
            }
            Leaf::Sequence(i) => {
                let seq = &self.project.sequences[self.sequences[i].index()];
                let horizons: Vec<i64> = seq
                    .window_ms
                    .into_iter()
                    .chain(seq.then.iter().map(|x| x.within_ms))
                    .map(|ms| ms as i64 * 1000)
                    .collect();
                for t in self.lists[i].iter().flatten() {
                    out.extend(horizons.iter().map(|h| t + h).filter(|x| *x > at));
                }
            }
        }
    }
}

/// Evaluates the watched conditions of one profile at chosen instants: its values at `at`
/// (taken for the time of the analysis and given back by [`Clock::into_values`]), with the
/// leaves a node reads computed at the instant asked.
pub(crate) struct Clock<'a> {
    values: RefCell<ProfileValues>,
    /// The leaves set to another instant than `at`, with their value at `at`.
    moved: RefCell<Vec<(Leaf, Value)>>,
    at: i64,
    re: &'a Regexes,
    leaves: Leaves<'a>,
}

impl<'a> Clock<'a> {
    pub(crate) fn new(values: ProfileValues, at: i64, re: &'a Regexes, leaves: Leaves<'a>) -> Self {
        Clock {
            values: RefCell::new(values),
            moved: RefCell::new(Vec::new()),
            at,
            re,
            leaves,
        }
    }

    /// The profile's values, as they were at `at`.
    pub(crate) fn into_values(self) -> ProfileValues {
        let mut values = self.values.into_inner();
        for (leaf, v) in self.moved.into_inner() {
            *cell(&mut values, &self.leaves, leaf) = v;
        }
        values
    }

    /// The first instant after the evaluation time at which a watched condition's value may
    /// differ from its value then; `None` when time alone never changes it.
    pub(crate) fn next(&self, w: &Watch) -> Option<i64> {
        self.next_change(w, self.at)
    }

    fn value(&self, w: &Watch, t: i64) -> Value {
        for &leaf in &w.leaves {
            let mut moved = self.moved.borrow_mut();
            let i = moved.iter().position(|(l, _)| *l == leaf);
            let v = match i {
                None if t == self.at => continue,
                Some(i) if t == self.at => moved.swap_remove(i).1,
                _ => self.leaves.value(leaf, t),
            };
            let mut values = self.values.borrow_mut();
            let old = std::mem::replace(cell(&mut values, &self.leaves, leaf), v);
            if i.is_none() {
                moved.push((leaf, old));
            }
        }
        let values = self.values.borrow();
        let scope = Scope {
            row: &[],
            key: None,
            profile: Some(&values),
            as_of: t,
        };
        eval(&w.expr, &scope, self.re)
    }

    fn next_change(&self, w: &Watch, at: i64) -> Option<i64> {
        if !w.moves() {
            return None;
        }
        if let ExprKind::Binary(op @ (BinaryOp::And | BinaryOp::Or), ..) = &w.expr.kind {
            // The operand value that decides: false for `and`, true for `or`.
            let decides = *op == BinaryOp::Or;
            let deciding: Vec<&Watch> = w
                .kids
                .iter()
                .filter(|k| self.value(k, at).truth() == Some(decides))
                .collect();
            if deciding.is_empty() {
                return self.earliest(&w.kids, at);
            }
            // Decided until every deciding operand has changed.
            let mut last = at + 1;
            for k in deciding {
                last = last.max(self.next_change(k, at)?);
            }
            return Some(last);
        }
        if !w.now {
            return self.leaf_change(w, at);
        }
        if !w.leaves.is_empty() {
            return self.earliest(&w.kids, at);
        }
        match &w.expr.kind {
            ExprKind::Binary(
                BinaryOp::Eq
                | BinaryOp::Ne
                | BinaryOp::Lt
                | BinaryOp::Le
                | BinaryOp::Gt
                | BinaryOp::Ge,
                ..,
            ) => self.comparison(w, at),
            ExprKind::Call(f @ (Function::Hour | Function::Day | Function::Month), _)
                if w.kids.len() == 1 && w.kids[0].mono == Mono::Up =>
            {
                let x = &w.kids[0];
                let m = self.value(x, at).as_micros()?;
                let unit = if *f == Function::Hour {
                    HOUR
                } else {
                    DAY_MICROS
                };
                let boundary = (m.div_euclid(unit) + 1) * unit;
                self.first_reach(x, &Value::Timestamp(boundary), Ordering::Greater, false, at)
            }
            ExprKind::AsOf | ExprKind::Call(Function::Now, _) => Some(at + SECOND),
            _ if matches!(w.mono, Mono::Up | Mono::Down) => {
                if matches!(w.expr.ty, Type::Timestamp) {
                    return Some(at + SECOND);
                }
                let now = self.value(w, at);
                if now.is_null() {
                    return None;
                }
                let dir = if w.mono == Mono::Up {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
                self.first_reach(w, &now, dir, true, at)
            }
            _ => self.earliest(&w.kids, at),
        }
    }

    fn earliest(&self, kids: &[Watch], at: i64) -> Option<i64> {
        kids.iter().filter_map(|k| self.next_change(k, at)).min()
    }

    /// A node moved by leaves only: its value changes, if at all, at one of their instants.
    fn leaf_change(&self, w: &Watch, at: i64) -> Option<i64> {
        let mut instants = Vec::new();
        for &leaf in &w.leaves {
            self.leaves.instants(leaf, at, &mut instants);
        }
        instants.sort_unstable();
        instants.dedup();
        let capped = instants.len() > CANDIDATES;
        instants.truncate(CANDIDATES);
        let first_other = |one_way: bool, differs: &dyn Fn(i64) -> bool| {
            let found = if one_way {
                let i = instants.partition_point(|t| !differs(*t));
                instants.get(i).copied()
            } else {
                instants.iter().copied().find(|t| differs(*t))
            };
            found.or_else(|| capped.then(|| instants.last().copied()).flatten())
        };
        if let ExprKind::Binary(
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge,
            ..,
        ) = &w.expr.kind
        {
            if let Some((moving, fixed)) = one_moving(w) {
                let target = self.value(fixed, at);
                let side = self.value(moving, at).sql_cmp(&target);
                // Past the fixed value and moving away from it (a windowed count below its
                // threshold): only an event brings it back.
                match (moving.mono, side) {
                    (Mono::Down, Some(Ordering::Less)) | (Mono::Up, Some(Ordering::Greater)) => {
                        return None
                    }
                    _ => {}
                }
                let one_way = matches!(moving.mono, Mono::Up | Mono::Down) && side.is_some();
                return first_other(one_way, &|t| self.value(moving, t).sql_cmp(&target) != side);
            }
        }
        let now = self.value(w, at);
        match (w.mono, &now) {
            (Mono::Down, Value::Bool(false)) | (Mono::Up, Value::Bool(true)) => return None,
            _ => {}
        }
        let one_way = matches!(w.mono, Mono::Up | Mono::Down);
        first_other(one_way, &|t| self.value(w, t) != now)
    }

    /// A comparison with `now()` on one side only.
    fn comparison(&self, w: &Watch, at: i64) -> Option<i64> {
        let Some((moving, fixed)) = one_moving(w) else {
            return self.earliest(&w.kids, at);
        };
        let target = self.value(fixed, at);
        let dir = match moving.mono {
            Mono::Up => Ordering::Greater,
            Mono::Down => Ordering::Less,
            _ => {
                return match self.periodic(moving, &target, at) {
                    Some(answer) => answer,
                    None => self.earliest(&w.kids, at),
                }
            }
        };
        // A null side stays null: what a monotone side reads is fixed.
        let side = self.value(moving, at).sql_cmp(&target)?;
        if side == dir {
            return None; // past the fixed value, and moving away from it
        }
        self.first_reach(moving, &target, dir, side == Ordering::Equal, at)
    }

    /// `g % m` compared with `target`, for a whole number `g` moving one way and a literal
    /// `m > 0`: the next value of `g` on the other side of `target` lies within one period.
    /// `None` when the side is not of that form; `Some(None)` when it never changes.
    fn periodic(&self, side: &Watch, target: &Value, at: i64) -> Option<Option<i64>> {
        let (ExprKind::Binary(BinaryOp::Rem, _, m), [g, _]) = (&side.expr.kind, &side.kids[..])
        else {
            return None;
        };
        let ExprKind::Literal(Literal::Int(m)) = m.kind else {
            return None;
        };
        let step = match g.mono {
            Mono::Up => 1,
            Mono::Down => -1,
            _ => return None,
        };
        if !(1..=1_000_000).contains(&m) {
            return None;
        }
        let Value::Int(g0) = self.value(g, at) else {
            return Some(None); // null stays null
        };
        let side_of = |n: i64| Value::Int(n.wrapping_rem(m)).sql_cmp(target);
        let now = side_of(g0);
        if now.is_none() {
            return Some(None); // compared with null: stays null
        }
        let dir = if step > 0 {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        // `%` truncates: the values repeat with period `m` on each side of zero, so one
        // period from `g0` and, if `g` crosses zero on its way, one period from zero.
        let ahead = (1..=m).map(|i| g0.saturating_add(i * step));
        let past_zero = if g0.signum() * step < 0 {
            Some((0..m).map(|i| i * step))
        } else {
            None
        };
        for n in ahead.chain(past_zero.into_iter().flatten()) {
            if side_of(n) != now {
                return Some(self.first_reach(g, &Value::Int(n), dir, false, at));
            }
        }
        Some(None)
    }

    /// The first instant after `at` at which `w` (moving towards `dir`) compares `dir` to
    /// `target` (or equal to it, unless `strict`). Closed form where one is known, checked;
    /// else a galloping search.
    fn first_reach(
        &self,
        w: &Watch,
        target: &Value,
        dir: Ordering,
        strict: bool,
        at: i64,
    ) -> Option<i64> {
        let reached = |t: i64| match self.value(w, t).sql_cmp(target) {
            Some(Ordering::Equal) => !strict,
            Some(o) => o == dir,
            None => false,
        };
        if dir == Ordering::Greater {
            if let Some(t) = self.solve(w, target, strict, at) {
                if t > at && t <= END && reached(t) && (t - 1 == at || !reached(t - 1)) {
                    return Some(t);
                }
            }
        }
        // Gallop from one second, then halve down to the microsecond.
        let (mut lo, mut step) = (at, SECOND);
        let mut hi = loop {
            let t = at.checked_add(step).filter(|t| *t <= END)?;
            if reached(t) {
                break t;
            }
            lo = t;
            step = step.checked_mul(2)?;
        };
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if reached(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }

    /// The first instant an increasing `w` reaches `target` (exceeds it, if `strict`), in closed
    /// form for the usual shapes; `None` for the others. The caller checks the answer.
    fn solve(&self, w: &Watch, target: &Value, strict: bool, at: i64) -> Option<i64> {
        let whole = |strict: bool| -> Option<i64> {
            let x = target.as_f64()?;
            let n = if strict { x.floor() + 1.0 } else { x.ceil() };
            n.is_finite().then_some(n as i64)
        };
        match &w.expr.kind {
            ExprKind::AsOf | ExprKind::Call(Function::Now, _) => {
                let m = target.as_micros()?;
                Some(if strict { m + 1 } else { m })
            }
            ExprKind::Binary(op @ (BinaryOp::Add | BinaryOp::Sub), ..) => {
                let (moving, fixed) = one_moving(w)?;
                if moving.mono != Mono::Up || (*op == BinaryOp::Sub && w.kids[1].moves()) {
                    return None;
                }
                let back = if *op == BinaryOp::Add {
                    BinaryOp::Sub
                } else {
                    BinaryOp::Add
                };
                let goal = arithmetic(back, target.clone(), self.value(fixed, at));
                if goal.is_null() {
                    return None;
                }
                self.solve(moving, &goal, strict, at)
            }
            ExprKind::Call(f @ (Function::DaysBetween | Function::YearsBetween), _) => {
                let (from, to) = (&w.kids[0], &w.kids[1]);
                if from.moves() || to.mono != Mono::Up {
                    return None;
                }
                let start = self.value(from, at).as_micros()?;
                let n = whole(strict)?;
                let goal = if *f == Function::DaysBetween {
                    Value::Timestamp(start.checked_add(n.checked_mul(DAY_MICROS)?)?)
                } else {
                    // The `n`th anniversary of `start`'s date (1 March for 29 February).
                    let (y, m, d) = civil(start.div_euclid(DAY_MICROS));
                    let date = chrono::NaiveDate::from_ymd_opt((y + n) as i32, m as u32, d as u32)
                        .or_else(|| {
                            chrono::NaiveDate::from_ymd_opt((y + n) as i32, m as u32 + 1, 1)
                        })?;
                    Value::Date(date_days(date))
                };
                self.solve(to, &goal, false, at)
            }
            ExprKind::Call(Function::Date, _) if w.kids.len() == 1 => {
                let m = target.as_micros()?;
                let day = if strict {
                    m.div_euclid(DAY_MICROS) + 1
                } else {
                    (m + DAY_MICROS - 1).div_euclid(DAY_MICROS)
                };
                self.solve(&w.kids[0], &Value::Timestamp(day * DAY_MICROS), false, at)
            }
            ExprKind::Call(Function::Year, _) if w.kids.len() == 1 => {
                let y = whole(strict)?;
                let date = chrono::NaiveDate::from_ymd_opt(y as i32, 1, 1)?;
                self.solve(&w.kids[0], &Value::Date(date_days(date)), false, at)
            }
            _ => None,
        }
    }
}

/// The operand that moves and the one that does not, of a two-operand node with one moving.
fn one_moving(w: &Watch) -> Option<(&Watch, &Watch)> {
    match &w.kids[..] {
        [a, b] if a.moves() && !b.moves() => Some((a, b)),
        [a, b] if !a.moves() && b.moves() => Some((b, a)),
        _ => None,
    }
}

/// Where a leaf's value sits among a profile's values.
fn cell<'v>(values: &'v mut ProfileValues, leaves: &Leaves<'_>, leaf: Leaf) -> &'v mut Value {
    match leaf {
        Leaf::Aggregate(i) => &mut values.aggregates[leaves.aggregates[i].0.index()],
        Leaf::Sequence(i) => &mut values.sequences[leaves.sequences[i].index()],
    }
}

fn date_days(d: chrono::NaiveDate) -> i32 {
    use chrono::Datelike;
    d.num_days_from_ce() - 719_163
}
