//! The state of one keyed aggregate of one profile, as the streaming plan describes it
//! (`cdp_compiler::stream::StateKind`): a running value for all-time aggregates, or the events
//! of the window for windowed ones, pruned as they leave it. Every state merges with another
//! (two profiles joined by identity) and gives the value the SQL gives at the as-of time.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};

use cdp_compiler::ir;
use cdp_compiler::types::{Aggregate as AggFn, Type};

use super::eval::arithmetic;
use super::value::Value;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum AggState {
    /// Windowed: the (time, value) of the events inside the window, oldest first.
    Window(VecDeque<(i64, Value)>),
    Count(i64),
    Sum(Value),
    Avg(f64, i64),
    Extreme(Value),
    /// first / last: the best (time, value).
    Edge(Option<(i64, Value)>),
    /// first_k / last_k: the best k (time, value), best first.
    Top(Vec<(i64, Value)>),
    /// mode, count_distinct: a count per value.
    Counts(HashMap<Value, u64>),
}

/// How an aggregate is computed: what the IR says, with the window in microseconds.
#[derive(Debug, Clone)]
pub struct AggSpec {
    pub function: AggFn,
    pub window: Option<i64>,
    pub k: usize,
    pub ty: Type,
}

impl AggSpec {
    pub fn of(a: &ir::Aggregate) -> AggSpec {
        AggSpec {
            function: a.function,
            window: a.window_ms.map(|ms| ms as i64 * 1000),
            k: a.k.unwrap_or(1) as usize,
            ty: a.ty.clone(),
        }
    }

    pub fn empty(&self) -> AggState {
        if self.window.is_some() {
            return AggState::Window(VecDeque::new());
        }
        match self.function {
            AggFn::Count => AggState::Count(0),
            AggFn::Sum => AggState::Sum(Value::Null),
            AggFn::Avg => AggState::Avg(0.0, 0),
            AggFn::Min | AggFn::Max => AggState::Extreme(Value::Null),
            AggFn::First | AggFn::Last => AggState::Edge(None),
            AggFn::FirstK | AggFn::LastK => AggState::Top(Vec::new()),
            AggFn::Mode | AggFn::CountDistinct | AggFn::ApproxCountDistinct => {
                AggState::Counts(HashMap::new())
            }
        }
    }

    /// Whether `(t, v)` comes before `(t2, v2)` in the order the aggregate ranks events
    /// (`ORDER BY event_time, v` ascending for first, descending for last).
    fn better(&self, a: &(i64, Value), b: &(i64, Value)) -> bool {
        let o = a.0.cmp(&b.0).then_with(|| a.1.total_cmp(&b.1));
        match self.function {
            AggFn::First | AggFn::FirstK => o == Ordering::Less,
            _ => o == Ordering::Greater,
        }
    }

    /// Adds one event (its time and aggregated value; `Int(1)` for `count(b)`).
    pub fn add(&self, state: &mut AggState, t: i64, v: Value) {
        // Every aggregate but `count(b)` skips nulls, as SQL aggregates do.
        if v.is_null() {
            return;
        }
        match state {
            AggState::Window(items) => {
                let at = items.partition_point(|(x, _)| *x <= t);
                items.insert(at, (t, v));
            }
            AggState::Count(n) => *n += 1,
            AggState::Sum(acc) => {
                *acc = if acc.is_null() {
                    v
                } else {
                    arithmetic(ir::BinaryOp::Add, acc.clone(), v)
                }
            }
            AggState::Avg(sum, n) => {
                if let Some(x) = v.as_f64() {
                    *sum += x;
                    *n += 1;
                }
            }
            AggState::Extreme(best) => {
                let o = v.sql_cmp(best);
                let wins = best.is_null()
                    || match self.function {
                        AggFn::Min => o == Some(Ordering::Less),
                        _ => o == Some(Ordering::Greater),
                    };
                if wins {
                    *best = v;
                }
            }
            AggState::Edge(best) => {
                let item = (t, v);
                if best.as_ref().is_none_or(|b| self.better(&item, b)) {
                    *best = Some(item);
                }
            }
            AggState::Top(items) => {
                let item = (t, v);
                let at = items.partition_point(|x| !self.better(&item, x));
                if at < self.k {
                    items.insert(at, item);
                    items.truncate(self.k);
                }
            }
            AggState::Counts(counts) => *counts.entry(v).or_default() += 1,
        }
    }

    /// Folds `other` (another profile's state of the same aggregate) into `state`.
    pub fn merge(&self, state: &mut AggState, other: AggState) {
        match other {
            AggState::Window(items) => {
                for (t, v) in items {
                    self.add(state, t, v);
                }
            }
            AggState::Count(n) => {
                if let AggState::Count(m) = state {
                    *m += n;
                }
            }
            AggState::Sum(v) => self.add(state, 0, v),
            AggState::Avg(s, n) => {
                if let AggState::Avg(s2, n2) = state {
                    *s2 += s;
                    *n2 += n;
                }
            }
            AggState::Extreme(v) => self.add(state, 0, v),
            AggState::Edge(item) => {
                if let Some((t, v)) = item {
                    self.add(state, t, v);
                }
            }
            AggState::Top(items) => {
                for (t, v) in items {
                    self.add(state, t, v);
                }
            }
            AggState::Counts(counts) => {
                if let AggState::Counts(mine) = state {
                    for (v, n) in counts {
                        *mine.entry(v).or_default() += n;
                    }
                }
            }
        }
    }

    /// Drops the events that left the window at `as_of` (time <= as_of - window): no later
    /// as-of time can see them again.
    pub fn prune(&self, state: &mut AggState, as_of: i64) {
        if let (AggState::Window(items), Some(w)) = (state, self.window) {
            while items.front().is_some_and(|(t, _)| *t <= as_of - w) {
                items.pop_front();
            }
        }
    }

    /// When the oldest event of a window leaves it (a timer), if there is one.
    pub fn next_expiry(&self, state: &AggState) -> Option<i64> {
        match (state, self.window) {
            (AggState::Window(items), Some(w)) => items.front().map(|(t, _)| t + w),
            _ => None,
        }
    }

    /// The aggregate's value at `as_of` (events after `as_of` were never added).
    pub fn value(&self, state: &AggState, as_of: i64) -> Value {
        if let AggState::Window(items) = state {
            // The events inside the window at `as_of` (sorted by time: a suffix).
            let from = as_of.saturating_sub(self.window.unwrap_or(i64::MAX));
            let first = items.partition_point(|(t, _)| *t <= from);
            if self.function == AggFn::Count {
                return Value::Int((items.len() - first) as i64);
            }
            return self
                .fold(items.range(first..))
                .unwrap_or_else(|| self.unbounded(items.range(first..), as_of));
        }
        match state {
            AggState::Count(n) => Value::Int(*n),
            AggState::Sum(v) if v.is_null() => zero(&self.ty),
            AggState::Sum(v) => v.clone(),
            AggState::Avg(_, 0) => Value::Null,
            AggState::Avg(s, n) => Value::Float(s / *n as f64),
            AggState::Extreme(v) => v.clone(),
            AggState::Edge(item) => item.as_ref().map_or(Value::Null, |(_, v)| v.clone()),
            AggState::Top(items) => Value::List(items.iter().map(|(_, v)| v.clone()).collect()),
            AggState::Counts(counts) => match self.function {
                AggFn::Mode => counts
                    .iter()
                    .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.total_cmp(a.0)))
                    .map_or(Value::Null, |(v, _)| v.clone()),
                _ => Value::Int(counts.len() as i64),
            },
            AggState::Window(_) => Value::Null,
        }
    }

    /// The value of an unbounded state of `items`, built event by event.
    fn unbounded<'v>(&self, items: impl Iterator<Item = &'v (i64, Value)>, as_of: i64) -> Value {
        let all = AggSpec {
            window: None,
            ..self.clone()
        };
        let mut state = all.empty();
        for (t, v) in items {
            all.add(&mut state, *t, v.clone());
        }
        all.value(&state, as_of)
    }

    /// The value of the events of a window (no nulls: [`AggSpec::add`] keeps none) folded as
    /// [`AggSpec::add`] then [`AggSpec::value`] of an unbounded state would, without building
    /// that state: a windowed value is worked out at every evaluation reading it, and at each
    /// instant a timer's search tries. `None` for `first_k` / `last_k`, which build it.
    fn fold<'v>(&self, items: impl Iterator<Item = &'v (i64, Value)>) -> Option<Value> {
        Some(match self.function {
            AggFn::Count => Value::Int(items.count() as i64),
            AggFn::Sum => {
                let sum = items.fold(Value::Null, |acc, (_, v)| {
                    if acc.is_null() {
                        v.clone()
                    } else {
                        arithmetic(ir::BinaryOp::Add, acc, v.clone())
                    }
                });
                if sum.is_null() {
                    zero(&self.ty)
                } else {
                    sum
                }
            }
            AggFn::Avg => {
                let (sum, n) = items
                    .filter_map(|(_, v)| v.as_f64())
                    .fold((0.0, 0i64), |(s, n), x| (s + x, n + 1));
                if n == 0 {
                    Value::Null
                } else {
                    Value::Float(sum / n as f64)
                }
            }
            AggFn::Min | AggFn::Max => {
                let wanted = if self.function == AggFn::Min {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
                let mut best: Option<&Value> = None;
                for (_, v) in items {
                    if best.is_none_or(|b| v.sql_cmp(b) == Some(wanted)) {
                        best = Some(v);
                    }
                }
                best.cloned().unwrap_or(Value::Null)
            }
            AggFn::First | AggFn::Last => {
                let mut best: Option<&(i64, Value)> = None;
                for item in items {
                    if best.is_none_or(|b| self.better(item, b)) {
                        best = Some(item);
                    }
                }
                best.map_or(Value::Null, |(_, v)| v.clone())
            }
            AggFn::FirstK | AggFn::LastK => return None,
            AggFn::Mode | AggFn::CountDistinct | AggFn::ApproxCountDistinct => {
                // Equal values (`Eq`, which `total_cmp` agrees with) sorted next to each other.
                let mut values: Vec<&Value> = items.map(|(_, v)| v).collect();
                values.sort_unstable_by(|a, b| a.total_cmp(b));
                let runs = values.chunk_by(|a, b| a.total_cmp(b) == Ordering::Equal);
                if self.function == AggFn::Mode {
                    // The most frequent; among as frequent, the least (as `value` ranks them).
                    let mut best: Option<(usize, &Value)> = None;
                    for run in runs {
                        if best.is_none_or(|(n, _)| run.len() > n) {
                            best = Some((run.len(), run[0]));
                        }
                    }
                    best.map_or(Value::Null, |(_, v)| v.clone())
                } else {
                    Value::Int(runs.count() as i64)
                }
            }
        })
    }

    /// Bytes the state holds, roughly (for the state-size figures).
    pub fn bytes(&self, state: &AggState) -> usize {
        let v = std::mem::size_of::<Value>();
        std::mem::size_of::<AggState>()
            + match state {
                AggState::Window(items) => items.len() * (8 + v),
                AggState::Top(items) => items.len() * (8 + v),
                AggState::Counts(c) => c.len() * (8 + v),
                _ => 0,
            }
    }
}

/// `COALESCE(sum, 0)` of an aggregate of type `ty`.
fn zero(ty: &Type) -> Value {
    match ty {
        Type::Decimal { scale, .. } => Value::Decimal(0, *scale),
        Type::Float => Value::Float(0.0),
        Type::Duration => Value::Duration(0),
        _ => Value::Int(0),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn values() -> impl Strategy<Value = Vec<(i64, Value)>> {
        let value = prop_oneof![
            (-5i64..5).prop_map(Value::Int),
            (-500i128..500).prop_map(|m| Value::Decimal(m, 2)),
            prop_oneof![Just(0.5), Just(-0.0), Just(0.0), Just(2.25)].prop_map(Value::Float),
            prop_oneof![Just("a"), Just("b"), Just("c"), Just("")].prop_map(Value::str),
        ];
        // One type per window, as a column gives.
        (0usize..4, prop::collection::vec((0i64..20, value), 0..30)).prop_map(|(kind, items)| {
            let rank = |v: &Value| match v {
                Value::Int(_) => 0,
                Value::Decimal(..) => 1,
                Value::Float(_) => 2,
                _ => 3,
            };
            let mut items: Vec<_> = items.into_iter().filter(|(_, v)| rank(v) == kind).collect();
            items.sort_by_key(|(t, _)| *t);
            items
        })
    }

    proptest! {
        /// A window's value folded directly is the value of an unbounded state built from the
        /// same events, for every function.
        #[test]
        fn folded_window_values_equal_the_built_states(items in values(), k in 1usize..4) {
            let functions = [
                AggFn::Count, AggFn::Sum, AggFn::Avg, AggFn::Min, AggFn::Max, AggFn::First,
                AggFn::Last, AggFn::FirstK, AggFn::LastK, AggFn::Mode, AggFn::CountDistinct,
                AggFn::ApproxCountDistinct,
            ];
            for function in functions {
                let spec = AggSpec { function, window: Some(1_000), k, ty: Type::Int };
                let folded = spec.fold(items.iter()).unwrap_or_else(|| spec.unbounded(items.iter(), 20));
                let built = spec.unbounded(items.iter(), 20);
                prop_assert!(
                    folded == built || (folded.is_null() && built.is_null()),
                    "{:?}: {:?} folded, {:?} built", function, folded, built
                );
            }
        }
    }
}
