//! Types of values and the typing rules of operators, functions and aggregates.
//!
//! One place for every rule, so that the checker and the back ends agree: which types compare,
//! what arithmetic yields, which functions exist (the standard list each SQL dialect must
//! implement), and which aggregates are invertible (count, sum) for the streaming runtime.

use std::fmt;

use cdp_grammar::ast::{BinaryOp, TypeExpr, TypeKind};
use serde::{Deserialize, Serialize};

/// The type of a value in the language.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Type {
    String,
    Int,
    Float,
    Decimal {
        precision: u32,
        scale: u32,
    },
    Bool,
    Date,
    Timestamp,
    Duration,
    List(Box<Type>),
    /// The type of the `null` literal: fits anywhere.
    Null,
    /// A sub-expression that already failed to check; absorbs further errors.
    Error,
}

impl Type {
    pub fn from_ast(t: &TypeExpr) -> Type {
        match &t.kind {
            TypeKind::String => Type::String,
            TypeKind::Int => Type::Int,
            TypeKind::Float => Type::Float,
            TypeKind::Bool => Type::Bool,
            TypeKind::Date => Type::Date,
            TypeKind::Timestamp => Type::Timestamp,
            TypeKind::Duration => Type::Duration,
            TypeKind::Decimal { precision, scale } => Type::Decimal {
                precision: *precision,
                scale: *scale,
            },
            TypeKind::List(inner) => Type::List(Box::new(Type::from_ast(inner))),
        }
    }

    pub fn is_numeric(&self) -> bool {
        matches!(self, Type::Int | Type::Float | Type::Decimal { .. })
    }

    pub fn is_temporal(&self) -> bool {
        matches!(self, Type::Date | Type::Timestamp)
    }

    /// Types that already failed or are unknown: no further error is reported about them.
    pub fn is_lenient(&self) -> bool {
        matches!(self, Type::Null | Type::Error)
    }

    /// Whether values of the two types can be compared with `=`, `<`, `between`, `in`.
    pub fn comparable(&self, other: &Type) -> bool {
        if self.is_lenient() || other.is_lenient() {
            return true;
        }
        match (self, other) {
            (a, b) if a.is_numeric() && b.is_numeric() => true,
            (a, b) if a.is_temporal() && b.is_temporal() => true,
            (Type::List(a), Type::List(b)) => a.comparable(b),
            (a, b) => a == b,
        }
    }

    /// Whether values of this type have an order (`<`, min/max, between).
    pub fn ordered(&self) -> bool {
        !matches!(self, Type::List(_) | Type::Bool)
    }

    /// The common type of two branches (`coalesce`, `if`, list elements), if any.
    pub fn unify(&self, other: &Type) -> Option<Type> {
        match (self, other) {
            (Type::Error, _) | (_, Type::Error) => Some(Type::Error),
            (Type::Null, t) | (t, Type::Null) => Some(t.clone()),
            (a, b) if a == b => Some(a.clone()),
            (a, b) if a.is_numeric() && b.is_numeric() => Some(numeric_join(a, b)),
            (Type::Date, Type::Timestamp) | (Type::Timestamp, Type::Date) => Some(Type::Timestamp),
            (Type::List(a), Type::List(b)) => a.unify(b).map(|t| Type::List(Box::new(t))),
            _ => None,
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::String => f.write_str("string"),
            Type::Int => f.write_str("int"),
            Type::Float => f.write_str("float"),
            Type::Decimal { precision, scale } => write!(f, "decimal({precision}, {scale})"),
            Type::Bool => f.write_str("bool"),
            Type::Date => f.write_str("date"),
            Type::Timestamp => f.write_str("timestamp"),
            Type::Duration => f.write_str("duration"),
            Type::List(t) => write!(f, "list<{t}>"),
            Type::Null => f.write_str("null"),
            Type::Error => f.write_str("unknown"),
        }
    }
}

/// int ⊂ decimal ⊂ float: the wider of two numeric types.
fn numeric_join(a: &Type, b: &Type) -> Type {
    match (a, b) {
        (Type::Float, _) | (_, Type::Float) => Type::Float,
        (
            Type::Decimal {
                precision: p1,
                scale: s1,
            },
            Type::Decimal {
                precision: p2,
                scale: s2,
            },
        ) => {
            let scale = (*s1).max(*s2);
            let int_digits = (p1 - s1).max(p2 - s2);
            Type::Decimal {
                precision: (int_digits + scale).min(38),
                scale,
            }
        }
        (d @ Type::Decimal { .. }, _) | (_, d @ Type::Decimal { .. }) => d.clone(),
        _ => Type::Int,
    }
}

/// The type of `left op right` for arithmetic operators, or a message saying why not.
pub fn arithmetic(op: BinaryOp, left: &Type, right: &Type) -> Result<Type, String> {
    use Type::*;
    if left == &Error || right == &Error {
        return Ok(Error);
    }
    let (l, r) = (left, right);
    let result = match op {
        BinaryOp::Add | BinaryOp::Sub if l.is_numeric() && r.is_numeric() => numeric_join(l, r),
        BinaryOp::Mul if l.is_numeric() && r.is_numeric() => numeric_join(l, r),
        // `/` is real division on every engine: the back ends lower it so that 7 / 2 = 3.5.
        BinaryOp::Div if l.is_numeric() && r.is_numeric() => Float,
        BinaryOp::Rem if l == &Int && r == &Int => Int,
        BinaryOp::Add if l.is_temporal() && r == &Duration => Timestamp,
        BinaryOp::Add if l == &Duration && r.is_temporal() => Timestamp,
        BinaryOp::Sub if l.is_temporal() && r == &Duration => Timestamp,
        BinaryOp::Sub if l.is_temporal() && r.is_temporal() => Duration,
        BinaryOp::Add | BinaryOp::Sub if l == &Duration && r == &Duration => Duration,
        BinaryOp::Mul if (l == &Duration && r == &Int) || (l == &Int && r == &Duration) => Duration,
        _ if l == &Null || r == &Null => {
            if l.is_numeric() || r.is_numeric() || l == r {
                if l == &Null {
                    r.clone()
                } else {
                    l.clone()
                }
            } else {
                Null
            }
        }
        _ => {
            let hint = if op == BinaryOp::Add && l == &String && r == &String {
                " (join strings with concat(a, b))"
            } else if op == BinaryOp::Rem {
                " (`%` takes two ints)"
            } else {
                ""
            };
            return Err(format!(
                "cannot apply `{}` to {l} and {r}{hint}",
                op.symbol()
            ));
        }
    };
    Ok(result)
}

/// An aggregate over a profile's events (or, in metrics, over a segment's members).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Aggregate {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    CountDistinct,
    ApproxCountDistinct,
    LastK,
    FirstK,
    Mode,
}

impl Aggregate {
    pub const ALL: [Aggregate; 12] = [
        Aggregate::Count,
        Aggregate::Sum,
        Aggregate::Avg,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::First,
        Aggregate::Last,
        Aggregate::CountDistinct,
        Aggregate::ApproxCountDistinct,
        Aggregate::LastK,
        Aggregate::FirstK,
        Aggregate::Mode,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Sum => "sum",
            Aggregate::Avg => "avg",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::First => "first",
            Aggregate::Last => "last",
            Aggregate::CountDistinct => "count_distinct",
            Aggregate::ApproxCountDistinct => "approx_count_distinct",
            Aggregate::LastK => "last_k",
            Aggregate::FirstK => "first_k",
            Aggregate::Mode => "mode",
        }
    }

    pub fn from_name(name: &str) -> Option<Aggregate> {
        Aggregate::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether removing an event can be applied to the aggregate's state without keeping the
    /// events (count, sum, avg as sum+count). Windows of the other aggregates keep their events.
    pub fn invertible(self) -> bool {
        matches!(self, Aggregate::Count | Aggregate::Sum | Aggregate::Avg)
    }

    /// Whether the aggregate takes a value (`sum(b.x)`) rather than just events (`count(b)`).
    pub fn needs_value(self) -> bool {
        !matches!(self, Aggregate::Count)
    }

    /// Whether the aggregate takes a second argument `k`.
    pub fn takes_k(self) -> bool {
        matches!(self, Aggregate::LastK | Aggregate::FirstK)
    }

    /// Result type given the aggregated value's type (`None` for `count(b)`).
    pub fn result_type(self, value: Option<&Type>) -> Result<Type, String> {
        let Some(t) = value else {
            return match self {
                Aggregate::Count => Ok(Type::Int),
                _ => Err(format!(
                    "`{}` needs a value, e.g. `{}(purchase.amount)`",
                    self.name(),
                    self.name()
                )),
            };
        };
        if t == &Type::Error {
            return Ok(Type::Error);
        }
        match self {
            Aggregate::Count | Aggregate::CountDistinct | Aggregate::ApproxCountDistinct => {
                Ok(Type::Int)
            }
            Aggregate::Sum => match t {
                Type::Int => Ok(Type::Int),
                Type::Float => Ok(Type::Float),
                Type::Decimal { scale, .. } => Ok(Type::Decimal {
                    precision: 38,
                    scale: *scale,
                }),
                Type::Duration => Ok(Type::Duration),
                _ => Err(format!("`sum` needs numbers, found {t}")),
            },
            Aggregate::Avg => {
                if t.is_numeric() {
                    Ok(Type::Float)
                } else {
                    Err(format!("`avg` needs numbers, found {t}"))
                }
            }
            Aggregate::Min | Aggregate::Max => {
                if t.ordered() {
                    Ok(t.clone())
                } else {
                    Err(format!("`{}` needs ordered values, found {t}", self.name()))
                }
            }
            Aggregate::First | Aggregate::Last | Aggregate::Mode => Ok(t.clone()),
            Aggregate::LastK | Aggregate::FirstK => Ok(Type::List(Box::new(t.clone()))),
        }
    }
}

/// A scalar function of the standard list: every SQL dialect must implement each of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Function {
    Lower,
    Upper,
    Trim,
    Length,
    Concat,
    Substr,
    Coalesce,
    If,
    Abs,
    Round,
    Floor,
    Ceil,
    Greatest,
    Least,
    Now,
    Date,
    Year,
    Month,
    Day,
    Hour,
    DaysBetween,
    YearsBetween,
    ToString,
    ToInt,
    ToFloat,
}

impl Function {
    pub const ALL: [Function; 25] = [
        Function::Lower,
        Function::Upper,
        Function::Trim,
        Function::Length,
        Function::Concat,
        Function::Substr,
        Function::Coalesce,
        Function::If,
        Function::Abs,
        Function::Round,
        Function::Floor,
        Function::Ceil,
        Function::Greatest,
        Function::Least,
        Function::Now,
        Function::Date,
        Function::Year,
        Function::Month,
        Function::Day,
        Function::Hour,
        Function::DaysBetween,
        Function::YearsBetween,
        Function::ToString,
        Function::ToInt,
        Function::ToFloat,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::Lower => "lower",
            Function::Upper => "upper",
            Function::Trim => "trim",
            Function::Length => "length",
            Function::Concat => "concat",
            Function::Substr => "substr",
            Function::Coalesce => "coalesce",
            Function::If => "if",
            Function::Abs => "abs",
            Function::Round => "round",
            Function::Floor => "floor",
            Function::Ceil => "ceil",
            Function::Greatest => "greatest",
            Function::Least => "least",
            Function::Now => "now",
            Function::Date => "date",
            Function::Year => "year",
            Function::Month => "month",
            Function::Day => "day",
            Function::Hour => "hour",
            Function::DaysBetween => "days_between",
            Function::YearsBetween => "years_between",
            Function::ToString => "to_string",
            Function::ToInt => "to_int",
            Function::ToFloat => "to_float",
        }
    }

    pub fn from_name(name: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == name)
    }

    /// How it is called, for messages.
    pub fn signature(self) -> &'static str {
        match self {
            Function::Lower => "lower(string) -> string",
            Function::Upper => "upper(string) -> string",
            Function::Trim => "trim(string) -> string",
            Function::Length => "length(string | list) -> int",
            Function::Concat => "concat(value, …) -> string",
            Function::Substr => "substr(string, start: int[, length: int]) -> string",
            Function::Coalesce => "coalesce(T, T, …) -> T",
            Function::If => "if(bool, T, T) -> T",
            Function::Abs => "abs(number) -> number",
            Function::Round => "round(number[, digits: int]) -> number",
            Function::Floor => "floor(number) -> number",
            Function::Ceil => "ceil(number) -> number",
            Function::Greatest => "greatest(T, T, …) -> T",
            Function::Least => "least(T, T, …) -> T",
            Function::Now => "now() -> timestamp (the as-of time)",
            Function::Date => "date(timestamp) -> date",
            Function::Year => "year(date | timestamp) -> int",
            Function::Month => "month(date | timestamp) -> int",
            Function::Day => "day(date | timestamp) -> int",
            Function::Hour => "hour(timestamp) -> int",
            Function::DaysBetween => {
                "days_between(from: date | timestamp, to: date | timestamp) -> int"
            }
            Function::YearsBetween => {
                "years_between(from: date | timestamp, to: date | timestamp) -> int"
            }
            Function::ToString => "to_string(value) -> string",
            Function::ToInt => "to_int(value) -> int",
            Function::ToFloat => "to_float(value) -> float",
        }
    }

    /// The result type for the given argument types, or what is wrong with them.
    pub fn result_type(self, args: &[Type]) -> Result<Type, String> {
        use Function as F;
        let bad = || format!("wrong arguments: expected {}", self.signature());
        let arity = |lo: usize, hi: usize| {
            if args.len() < lo || args.len() > hi {
                Err(format!(
                    "`{}` takes {} argument{}, found {}: {}",
                    self.name(),
                    if lo == hi {
                        lo.to_string()
                    } else if hi == usize::MAX {
                        format!("at least {lo}")
                    } else {
                        format!("{lo} to {hi}")
                    },
                    if hi == 1 { "" } else { "s" },
                    args.len(),
                    self.signature()
                ))
            } else {
                Ok(())
            }
        };
        let is = |t: &Type, ok: fn(&Type) -> bool| t.is_lenient() || ok(t);
        match self {
            F::Lower | F::Upper | F::Trim => {
                arity(1, 1)?;
                if is(&args[0], |t| t == &Type::String) {
                    Ok(Type::String)
                } else {
                    Err(bad())
                }
            }
            F::Length => {
                arity(1, 1)?;
                if is(&args[0], |t| matches!(t, Type::String | Type::List(_))) {
                    Ok(Type::Int)
                } else {
                    Err(bad())
                }
            }
            F::Concat => {
                arity(1, usize::MAX)?;
                Ok(Type::String)
            }
            F::Substr => {
                arity(2, 3)?;
                let ok = is(&args[0], |t| t == &Type::String)
                    && args[1..].iter().all(|a| is(a, |t| t == &Type::Int));
                if ok {
                    Ok(Type::String)
                } else {
                    Err(bad())
                }
            }
            F::Coalesce | F::Greatest | F::Least => {
                arity(1, usize::MAX)?;
                let mut t = Type::Null;
                for a in args {
                    t = t
                        .unify(a)
                        .ok_or_else(|| format!("`{}` mixes {t} and {a}", self.name()))?;
                }
                if self != F::Coalesce && !t.ordered() {
                    return Err(bad());
                }
                Ok(t)
            }
            F::If => {
                arity(3, 3)?;
                if !is(&args[0], |t| t == &Type::Bool) {
                    return Err(format!(
                        "the condition of `if` must be bool, found {}",
                        args[0]
                    ));
                }
                args[1].unify(&args[2]).ok_or_else(|| {
                    format!(
                        "the branches of `if` have different types: {} and {}",
                        args[1], args[2]
                    )
                })
            }
            F::Abs | F::Floor | F::Ceil => {
                arity(1, 1)?;
                if is(&args[0], Type::is_numeric) {
                    Ok(args[0].clone())
                } else {
                    Err(bad())
                }
            }
            F::Round => {
                arity(1, 2)?;
                let ok = is(&args[0], Type::is_numeric)
                    && args[1..].iter().all(|a| is(a, |t| t == &Type::Int));
                if ok {
                    Ok(args[0].clone())
                } else {
                    Err(bad())
                }
            }
            F::Now => {
                arity(0, 0)?;
                Ok(Type::Timestamp)
            }
            F::Date => {
                arity(1, 1)?;
                if is(&args[0], Type::is_temporal) {
                    Ok(Type::Date)
                } else {
                    Err(bad())
                }
            }
            F::Year | F::Month | F::Day => {
                arity(1, 1)?;
                if is(&args[0], Type::is_temporal) {
                    Ok(Type::Int)
                } else {
                    Err(bad())
                }
            }
            F::Hour => {
                arity(1, 1)?;
                if is(&args[0], |t| t == &Type::Timestamp) {
                    Ok(Type::Int)
                } else {
                    Err(bad())
                }
            }
            F::DaysBetween | F::YearsBetween => {
                arity(2, 2)?;
                if args.iter().all(|a| is(a, Type::is_temporal)) {
                    Ok(Type::Int)
                } else {
                    Err(bad())
                }
            }
            F::ToString => {
                arity(1, 1)?;
                Ok(Type::String)
            }
            F::ToInt => {
                arity(1, 1)?;
                if is(&args[0], |t| {
                    t.is_numeric() || t == &Type::String || t == &Type::Bool
                }) {
                    Ok(Type::Int)
                } else {
                    Err(bad())
                }
            }
            F::ToFloat => {
                arity(1, 1)?;
                if is(&args[0], |t| t.is_numeric() || t == &Type::String) {
                    Ok(Type::Float)
                } else {
                    Err(bad())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn division_is_real_division() {
        assert_eq!(
            arithmetic(BinaryOp::Div, &Type::Int, &Type::Int),
            Ok(Type::Float)
        );
    }

    #[test]
    fn timestamps_minus_durations_are_timestamps() {
        assert_eq!(
            arithmetic(BinaryOp::Sub, &Type::Timestamp, &Type::Duration),
            Ok(Type::Timestamp)
        );
        assert_eq!(
            arithmetic(BinaryOp::Sub, &Type::Timestamp, &Type::Date),
            Ok(Type::Duration)
        );
        assert!(arithmetic(BinaryOp::Add, &Type::String, &Type::String)
            .unwrap_err()
            .contains("concat"));
    }

    #[test]
    fn decimals_widen() {
        let a = Type::Decimal {
            precision: 12,
            scale: 2,
        };
        let b = Type::Decimal {
            precision: 5,
            scale: 4,
        };
        assert_eq!(
            a.unify(&b),
            Some(Type::Decimal {
                precision: 14,
                scale: 4
            })
        );
        assert_eq!(a.unify(&Type::Float), Some(Type::Float));
        assert_eq!(Type::Date.unify(&Type::String), None);
    }

    #[test]
    fn only_count_sum_avg_are_invertible() {
        let inv: Vec<_> = Aggregate::ALL
            .into_iter()
            .filter(|a| a.invertible())
            .map(Aggregate::name)
            .collect();
        assert_eq!(inv, ["count", "sum", "avg"]);
    }

    #[test]
    fn function_arity_errors_name_the_signature() {
        let err = Function::Lower.result_type(&[]).unwrap_err();
        assert!(err.contains("lower(string) -> string"), "{err}");
    }
}
