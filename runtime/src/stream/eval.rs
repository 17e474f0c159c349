//! Evaluates IR expressions on values, as the DataFusion-dialect SQL of the same expression
//! computes them (`cdp_compiler::sql`): the streaming runtime's values must equal the batch
//! values, so every rule here mirrors a printed SQL form — `/` is `CAST AS DOUBLE / NULLIF(…, 0)`,
//! `concat` treats nulls as empty strings, `days_between` is the floor of seconds / 86400, and
//! so on.

use std::cmp::Ordering;
use std::sync::Arc;

use cdp_compiler::ir::{BinaryOp, Expr, ExprKind, TextOp};
use cdp_compiler::types::Function;

use super::value::{civil, decimal_parts, rescale, round_decimal, Value, DAY_MICROS};

/// What an expression may read: the columns of one row, the raw key value, and the values of
/// one profile (by IR id), at the as-of time `as_of` (microseconds).
pub struct Scope<'a> {
    pub row: &'a [Value],
    pub key: Option<&'a Value>,
    pub profile: Option<&'a ProfileValues>,
    pub as_of: i64,
}

/// The values of one profile, indexed by the IR ids of the project (entries of other entities
/// stay null).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProfileValues {
    pub attributes: Vec<Value>,
    pub aggregates: Vec<Value>,
    pub features: Vec<Value>,
    pub sequences: Vec<Value>,
    pub segments: Vec<Value>,
}

impl ProfileValues {
    /// The value of a derived attribute, feature or segment.
    pub fn get(&self, pv: cdp_compiler::ir::ProfileValue) -> &Value {
        use cdp_compiler::ir::ProfileValue as P;
        match pv {
            P::Attribute(a) => &self.attributes[a.index()],
            P::Feature(f) => &self.features[f.index()],
            P::Segment(s) => &self.segments[s.index()],
        }
    }
}

impl Scope<'_> {
    pub fn row(row: &[Value], as_of: i64) -> Scope<'_> {
        Scope {
            row,
            key: None,
            profile: None,
            as_of,
        }
    }
}

/// Regular expressions of `matches`, compiled once per pattern.
#[derive(Default)]
pub struct Regexes {
    cache: std::sync::Mutex<std::collections::HashMap<String, Option<Arc<regex::Regex>>>>,
}

impl Regexes {
    fn get(&self, pattern: &str) -> Option<Arc<regex::Regex>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern).ok().map(Arc::new))
            .clone()
    }
}

/// The value of `e` in `scope`.
pub fn eval(e: &Expr, s: &Scope<'_>, re: &Regexes) -> Value {
    match &e.kind {
        ExprKind::Literal(l) => Value::literal(l),
        ExprKind::Column(c) => s.row.get(c.index()).cloned().unwrap_or(Value::Null),
        ExprKind::KeyValue => s.key.cloned().unwrap_or(Value::Null),
        ExprKind::Attribute(a) => profile(s, |p| p.attributes.get(a.index())),
        ExprKind::Feature(f) => profile(s, |p| p.features.get(f.index())),
        ExprKind::Segment(x) => profile(s, |p| p.segments.get(x.index())),
        ExprKind::Aggregate(a) => profile(s, |p| p.aggregates.get(a.index())),
        ExprKind::Sequence(q) => profile(s, |p| p.sequences.get(q.index())),
        ExprKind::AsOf => Value::Timestamp(s.as_of),
        ExprKind::List(items) => Value::List(items.iter().map(|i| eval(i, s, re)).collect()),
        ExprKind::Call(f, args) => call(*f, args, s, re),
        ExprKind::Not(x) => match eval(x, s, re).truth() {
            Some(b) => Value::Bool(!b),
            None => Value::Null,
        },
        ExprKind::Neg(x) => negate(eval(x, s, re)),
        ExprKind::Binary(op, l, r) => binary(*op, l, r, s, re),
        ExprKind::IsNull { value, negated } => {
            Value::Bool(eval(value, s, re).is_null() != *negated)
        }
        ExprKind::InList {
            value,
            items,
            negated,
        } => {
            let v = eval(value, s, re);
            if v.is_null() {
                return Value::Null;
            }
            let mut unknown = false;
            for i in items {
                match v.sql_eq(&eval(i, s, re)) {
                    Some(true) => return Value::Bool(!negated),
                    Some(false) => {}
                    None => unknown = true,
                }
            }
            if unknown {
                Value::Null
            } else {
                Value::Bool(*negated)
            }
        }
        ExprKind::Text {
            op,
            value,
            pattern,
            negated,
        } => {
            let (Value::Str(v), Value::Str(p)) = (eval(value, s, re), eval(pattern, s, re)) else {
                return Value::Null;
            };
            let hit = match op {
                TextOp::Contains => v.contains(&*p),
                TextOp::StartsWith => v.starts_with(&*p),
                TextOp::EndsWith => v.ends_with(&*p),
                TextOp::Matches => match re.get(&p) {
                    Some(r) => r.is_match(&v),
                    None => return Value::Null,
                },
            };
            Value::Bool(hit != *negated)
        }
        ExprKind::ListContains {
            list,
            item,
            negated,
        } => {
            let (Value::List(items), item) = (eval(list, s, re), eval(item, s, re)) else {
                return Value::Null;
            };
            if item.is_null() {
                return Value::Null;
            }
            let hit = items.iter().any(|i| i.sql_eq(&item) == Some(true));
            Value::Bool(hit != *negated)
        }
        ExprKind::ListLength(x) => match eval(x, s, re) {
            Value::List(items) => Value::Int(items.len() as i64),
            _ => Value::Null,
        },
    }
}

fn profile<'a>(s: &Scope<'a>, f: impl FnOnce(&'a ProfileValues) -> Option<&'a Value>) -> Value {
    s.profile.and_then(f).cloned().unwrap_or(Value::Null)
}

fn negate(v: Value) -> Value {
    match v {
        Value::Int(i) => Value::Int(i.wrapping_neg()),
        Value::Float(f) => Value::Float(-f),
        Value::Decimal(m, sc) => Value::Decimal(-m, sc),
        Value::Duration(d) => Value::Duration(-d),
        _ => Value::Null,
    }
}

fn binary(op: BinaryOp, l: &Expr, r: &Expr, s: &Scope<'_>, re: &Regexes) -> Value {
    match op {
        BinaryOp::And => {
            let a = eval(l, s, re).truth();
            if a == Some(false) {
                return Value::Bool(false);
            }
            match (a, eval(r, s, re).truth()) {
                (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            }
        }
        BinaryOp::Or => {
            let a = eval(l, s, re).truth();
            if a == Some(true) {
                return Value::Bool(true);
            }
            match (a, eval(r, s, re).truth()) {
                (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            }
        }
        _ => arithmetic(op, eval(l, s, re), eval(r, s, re)),
    }
}

/// `a op b` for comparisons and arithmetic.
pub fn arithmetic(op: BinaryOp, a: Value, b: Value) -> Value {
    use BinaryOp::*;
    if a.is_null() || b.is_null() {
        return Value::Null;
    }
    let cmp = |f: fn(Ordering) -> bool| match a.sql_cmp(&b) {
        Some(o) => Value::Bool(f(o)),
        None => Value::Null,
    };
    match op {
        Eq => cmp(|o| o == Ordering::Equal),
        Ne => cmp(|o| o != Ordering::Equal),
        Lt => cmp(|o| o == Ordering::Less),
        Le => cmp(|o| o != Ordering::Greater),
        Gt => cmp(|o| o == Ordering::Greater),
        Ge => cmp(|o| o != Ordering::Less),
        Div => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) if y != 0.0 => Value::Float(x / y),
            _ => Value::Null,
        },
        Rem => match (a, b) {
            (Value::Int(x), Value::Int(y)) if y != 0 => Value::Int(x.wrapping_rem(y)),
            _ => Value::Null,
        },
        Add | Sub | Mul => numeric(op, a, b),
        And | Or => Value::Null,
    }
}

fn numeric(op: BinaryOp, a: Value, b: Value) -> Value {
    use Value::*;
    let sign = if op == BinaryOp::Sub { -1 } else { 1 };
    match (&a, &b) {
        // Temporal arithmetic: timestamps ± durations, differences of timestamps.
        (Timestamp(_) | Date(_), Duration(ms)) if op != BinaryOp::Mul => {
            Timestamp(a.as_micros().unwrap_or_default() + sign * ms * 1000)
        }
        (Duration(ms), Timestamp(_) | Date(_)) if op == BinaryOp::Add => {
            Timestamp(b.as_micros().unwrap_or_default() + ms * 1000)
        }
        (Timestamp(_) | Date(_), Timestamp(_) | Date(_)) if op == BinaryOp::Sub => {
            let diff = a.as_micros().unwrap_or_default() - b.as_micros().unwrap_or_default();
            // CAST(round(seconds * 1000) AS BIGINT): half away from zero.
            Duration((diff as f64 / 1000.0).round() as i64)
        }
        (Duration(x), Duration(y)) if op != BinaryOp::Mul => Duration(x + sign * y),
        (Duration(x), Int(y)) | (Int(y), Duration(x)) if op == BinaryOp::Mul => Duration(x * y),
        (Int(x), Int(y)) => Int(match op {
            BinaryOp::Add => x.wrapping_add(*y),
            BinaryOp::Sub => x.wrapping_sub(*y),
            _ => x.wrapping_mul(*y),
        }),
        (Float(_), _) | (_, Float(_)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => Float(match op {
                BinaryOp::Add => x + y,
                BinaryOp::Sub => x - y,
                _ => x * y,
            }),
            _ => Null,
        },
        _ => match (decimal_parts(&a), decimal_parts(&b)) {
            (Some((x, sx)), Some((y, sy))) => {
                if op == BinaryOp::Mul {
                    return x.checked_mul(y).map_or(Null, |m| Decimal(m, sx + sy));
                }
                let sc = sx.max(sy);
                match (rescale(x, sx, sc), rescale(y, sy, sc)) {
                    (Some(x), Some(y)) => Decimal(x + sign as i128 * y, sc),
                    _ => Null,
                }
            }
            _ => Null,
        },
    }
}

fn call(f: Function, args: &[Expr], s: &Scope<'_>, re: &Regexes) -> Value {
    use Function as F;
    if f == F::Now {
        return Value::Timestamp(s.as_of);
    }
    // `if` and `coalesce` evaluate lazily, like CASE and COALESCE.
    match f {
        F::If => {
            return match args.first().map(|c| eval(c, s, re).truth()) {
                Some(Some(true)) => arg(args, 1, s, re),
                _ => arg(args, 2, s, re),
            }
        }
        F::Coalesce => {
            for a in args {
                let v = eval(a, s, re);
                if !v.is_null() {
                    return v;
                }
            }
            return Value::Null;
        }
        _ => {}
    }
    // Up to three arguments (nearly every call) on the stack: no allocation per call.
    let mut few = [Value::Null, Value::Null, Value::Null];
    let many: Vec<Value>;
    let v: &[Value] = if args.len() <= few.len() {
        for (slot, a) in few.iter_mut().zip(args) {
            *slot = eval(a, s, re);
        }
        &few[..args.len()]
    } else {
        many = args.iter().map(|a| eval(a, s, re)).collect();
        &many
    };
    let x = v.first().cloned().unwrap_or(Value::Null);
    let text = |v: &Value| match v {
        Value::Str(t) => Some(t.clone()),
        _ => None,
    };
    match f {
        F::Lower => text(&x).map_or(Value::Null, |t| Value::str(&t.to_lowercase())),
        F::Upper => text(&x).map_or(Value::Null, |t| Value::str(&t.to_uppercase())),
        F::Trim => text(&x).map_or(Value::Null, |t| Value::str(t.trim_matches(' '))),
        F::Length => match &x {
            Value::Str(t) => Value::Int(t.chars().count() as i64),
            Value::List(items) => Value::Int(items.len() as i64),
            _ => Value::Null,
        },
        F::Concat => Value::str(
            &v.iter()
                .map(|p| p.cast_text().unwrap_or_default())
                .collect::<String>(),
        ),
        F::Substr => {
            let Some(t) = text(&x) else {
                return Value::Null;
            };
            let Some(Value::Int(start)) = v.get(1) else {
                return Value::Null;
            };
            let chars: Vec<char> = t.chars().collect();
            // SQL: characters at positions [start, start + length), 1-based, clamped.
            let end = match v.get(2) {
                None => i64::MAX,
                Some(Value::Int(len)) if *len >= 0 => start.saturating_add(*len),
                _ => return Value::Null,
            };
            let lo = (*start).max(1) - 1;
            let hi = (end - 1).clamp(0, chars.len() as i64);
            if lo >= hi {
                return Value::str("");
            }
            Value::str(&chars[lo as usize..hi as usize].iter().collect::<String>())
        }
        F::Abs => match x {
            Value::Int(i) => Value::Int(i.wrapping_abs()),
            Value::Float(f) => Value::Float(f.abs()),
            Value::Decimal(m, sc) => Value::Decimal(m.abs(), sc),
            _ => Value::Null,
        },
        F::Round => {
            let digits = match v.get(1) {
                Some(Value::Int(d)) => *d,
                Some(_) => return Value::Null,
                None => 0,
            };
            match x {
                Value::Int(i) => Value::Int(i),
                Value::Float(f) => {
                    let p = 10f64.powi(digits as i32);
                    Value::Float((f * p).round() / p)
                }
                Value::Decimal(m, sc) => {
                    let (m, sc) = round_decimal(m, sc, digits);
                    Value::Decimal(m, sc)
                }
                _ => Value::Null,
            }
        }
        F::Floor | F::Ceil => match x {
            Value::Int(i) => Value::Int(i),
            Value::Float(v) => Value::Float(if f == F::Floor { v.floor() } else { v.ceil() }),
            Value::Decimal(m, sc) => {
                let d = 10i128.pow(sc);
                let q = m.div_euclid(d);
                let up = f == F::Ceil && m.rem_euclid(d) != 0;
                Value::Decimal(q + i128::from(up), 0)
            }
            _ => Value::Null,
        },
        F::Greatest | F::Least => {
            let mut best: Option<Value> = None;
            for item in v.iter().filter(|i| !i.is_null()).cloned() {
                best = Some(match best {
                    None => item,
                    Some(b) => {
                        let o = item.sql_cmp(&b).unwrap_or(Ordering::Equal);
                        let better = if f == F::Greatest {
                            o == Ordering::Greater
                        } else {
                            o == Ordering::Less
                        };
                        if better {
                            item
                        } else {
                            b
                        }
                    }
                });
            }
            best.unwrap_or(Value::Null)
        }
        F::Date => match x.as_micros() {
            Some(m) => Value::Date(m.div_euclid(DAY_MICROS) as i32),
            None => Value::Null,
        },
        F::Year | F::Month | F::Day => match x.as_micros() {
            Some(m) => {
                let (y, mo, d) = civil(m.div_euclid(DAY_MICROS));
                Value::Int(match f {
                    F::Year => y,
                    F::Month => mo,
                    _ => d,
                })
            }
            None => Value::Null,
        },
        F::Hour => match x.as_micros() {
            Some(m) => Value::Int(m.rem_euclid(DAY_MICROS) / 3_600_000_000),
            None => Value::Null,
        },
        F::DaysBetween => match (x.as_micros(), v.get(1).and_then(Value::as_micros)) {
            (Some(a), Some(b)) => {
                let secs = (b as f64 - a as f64) / 1e6;
                Value::Int((secs / 86_400.0).floor() as i64)
            }
            _ => Value::Null,
        },
        F::YearsBetween => match (x.as_micros(), v.get(1).and_then(Value::as_micros)) {
            (Some(a), Some(b)) => {
                let (ya, ma, da) = civil(a.div_euclid(DAY_MICROS));
                let (yb, mb, db) = civil(b.div_euclid(DAY_MICROS));
                let before = mb < ma || (mb == ma && db < da);
                Value::Int(yb - ya - i64::from(before))
            }
            _ => Value::Null,
        },
        F::ToString => x.cast_text().map_or(Value::Null, |t| Value::str(&t)),
        F::ToInt => match x {
            Value::Int(i) => Value::Int(i),
            Value::Float(f) => Value::Int(f.trunc() as i64),
            Value::Decimal(m, sc) => Value::Int((m / 10i128.pow(sc)) as i64),
            Value::Bool(b) => Value::Int(i64::from(b)),
            Value::Str(t) => t.trim().parse().map_or(Value::Null, Value::Int),
            Value::Duration(d) => Value::Int(d),
            _ => Value::Null,
        },
        F::ToFloat => match x {
            Value::Str(t) => t.trim().parse().map_or(Value::Null, Value::Float),
            Value::Bool(b) => Value::Float(f64::from(u8::from(b))),
            Value::Duration(d) => Value::Float(d as f64),
            other => other.as_f64().map_or(Value::Null, Value::Float),
        },
        F::Now | F::If | F::Coalesce => Value::Null,
    }
}

fn arg(args: &[Expr], i: usize, s: &Scope<'_>, re: &Regexes) -> Value {
    args.get(i).map_or(Value::Null, |a| eval(a, s, re))
}
