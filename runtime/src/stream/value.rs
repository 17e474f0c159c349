//! Values of the streaming runtime, with the semantics the compiled SQL has on the embedded
//! engine: three-valued logic, exact decimals, real division (`7 / 2 = 3.5`, `/ 0` is null),
//! durations in milliseconds, timestamps in microseconds (UTC), dates in days since 1970.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use cdp_compiler::ir::Literal;
use cdp_compiler::types::Type;

use crate::load::{parse_date, parse_decimal, parse_duration, parse_timestamp};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// One value of a row or of a profile.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Mantissa and scale: `Decimal(1250, 2)` is 12.50.
    Decimal(i128, u32),
    Str(#[serde(with = "super::checkpoint::arc_str")] Arc<str>),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since the epoch (UTC).
    Timestamp(i64),
    /// Milliseconds.
    Duration(i64),
    List(#[serde(with = "super::checkpoint::arc_values")] Arc<[Value]>),
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(Arc::from(s))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// `Some(b)` for a bool, `None` for null (and for anything else).
    pub fn truth(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A literal of the IR.
    pub fn literal(l: &Literal) -> Value {
        match l {
            Literal::Null => Value::Null,
            Literal::Bool(b) => Value::Bool(*b),
            Literal::Int(i) => Value::Int(*i),
            Literal::Decimal(s) => decimal_text(s).unwrap_or(Value::Null),
            Literal::String(s) => Value::Str(s.clone()),
            Literal::Date(s) => parse_date(s).map(Value::Date).unwrap_or(Value::Null),
            Literal::TimestampMicros(m) => Value::Timestamp(*m),
            Literal::DurationMs(ms) => Value::Duration(*ms as i64),
        }
    }

    /// A value of `ty` from a JSON value (tracked events, replayed files), or why not.
    pub fn from_json(ty: &Type, v: &serde_json::Value) -> Result<Value, String> {
        use serde_json::Value as J;
        if v.is_null() {
            return Ok(Value::Null);
        }
        let text = |v: &J| match v {
            J::String(s) => s.clone(),
            other => other.to_string(),
        };
        Ok(match ty {
            Type::String => Value::str(&text(v)),
            Type::Int => match v {
                J::Number(n) if n.is_i64() => Value::Int(n.as_i64().unwrap_or_default()),
                _ => Value::Int(
                    text(v)
                        .trim()
                        .parse()
                        .map_err(|_| format!("`{}` is not an int", text(v)))?,
                ),
            },
            Type::Float => match v {
                J::Number(n) => Value::Float(n.as_f64().unwrap_or_default()),
                _ => Value::Float(
                    text(v)
                        .trim()
                        .parse()
                        .map_err(|_| format!("`{}` is not a number", text(v)))?,
                ),
            },
            Type::Decimal { precision, scale } => Value::Decimal(
                parse_decimal(&text(v), *precision as u8, *scale as i8)?,
                *scale,
            ),
            Type::Bool => match v {
                J::Bool(b) => Value::Bool(*b),
                _ => match text(v).trim().to_ascii_lowercase().as_str() {
                    "true" | "t" | "1" | "yes" => Value::Bool(true),
                    "false" | "f" | "0" | "no" => Value::Bool(false),
                    other => return Err(format!("`{other}` is not a bool")),
                },
            },
            Type::Date => Value::Date(parse_date(&text(v))?),
            Type::Timestamp => Value::Timestamp(parse_timestamp(&text(v))?),
            Type::Duration => match v {
                J::Number(n) if n.is_i64() => Value::Duration(n.as_i64().unwrap_or_default()),
                _ => Value::Duration(parse_duration(&text(v))?),
            },
            Type::List(inner) => match v {
                J::Array(items) => Value::List(
                    items
                        .iter()
                        .map(|i| Value::from_json(inner, i))
                        .collect::<Result<Vec<_>, _>>()?
                        .into(),
                ),
                other => return Err(format!("`{other}` is not a list")),
            },
            Type::Null | Type::Error => Value::Null,
        })
    }

    /// A number as a float (ints, decimals, floats), for mixed comparisons and `avg`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Decimal(m, s) => Some(*m as f64 / 10f64.powi(*s as i32)),
            _ => None,
        }
    }

    /// A date or timestamp as microseconds.
    pub fn as_micros(&self) -> Option<i64> {
        match self {
            Value::Timestamp(t) => Some(*t),
            Value::Date(d) => Some(i64::from(*d) * MICROS_PER_DAY),
            _ => None,
        }
    }

    /// The SQL comparison: `None` when either side is null or the two do not compare.
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        use Value::*;
        match (self, other) {
            (Null, _) | (_, Null) => None,
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (Decimal(..) | Int(_), Decimal(..) | Int(_)) => {
                let (a, sa) = decimal_parts(self)?;
                let (b, sb) = decimal_parts(other)?;
                let s = sa.max(sb);
                Some(rescale(a, sa, s)?.cmp(&rescale(b, sb, s)?))
            }
            (Float(_) | Int(_) | Decimal(..), Float(_) | Int(_) | Decimal(..)) => {
                self.as_f64()?.partial_cmp(&other.as_f64()?)
            }
            (Str(a), Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            (Date(a), Date(b)) => Some(a.cmp(b)),
            (Date(_) | Timestamp(_), Date(_) | Timestamp(_)) => {
                Some(self.as_micros()?.cmp(&other.as_micros()?))
            }
            (Duration(a), Duration(b)) => Some(a.cmp(b)),
            (List(a), List(b)) => {
                for (x, y) in a.iter().zip(b.iter()) {
                    match x.sql_cmp(y) {
                        Some(Ordering::Equal) => continue,
                        other => return other,
                    }
                }
                Some(a.len().cmp(&b.len()))
            }
            _ => None,
        }
    }

    /// SQL equality (`None` when unknown).
    pub fn sql_eq(&self, other: &Value) -> Option<bool> {
        self.sql_cmp(other).map(|o| o == Ordering::Equal)
    }

    /// A total order for sorting (`ORDER BY v`, nulls last); values that do not compare fall
    /// back to their kind.
    pub fn total_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Greater,
            (_, Value::Null) => Ordering::Less,
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            _ => self
                .sql_cmp(other)
                .unwrap_or_else(|| self.rank().cmp(&other.rank())),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 9,
            Value::Bool(_) => 0,
            Value::Int(_) | Value::Float(_) | Value::Decimal(..) => 1,
            Value::Str(_) => 2,
            Value::Date(_) | Value::Timestamp(_) => 3,
            Value::Duration(_) => 4,
            Value::List(_) => 5,
        }
    }

    /// The value as JSON: numbers as numbers (a decimal by its digits), times as text.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Decimal(..) => self
                .cast_text()
                .and_then(|t| t.parse::<serde_json::Number>().ok())
                .map_or(J::Null, J::Number),
            Value::List(items) => J::Array(items.iter().map(Value::to_json).collect()),
            other => other.cast_text().map_or(J::Null, J::String),
        }
    }

    /// As the online store holds the batch profile column of the value's type: decimals as
    /// their exact text, durations as milliseconds.
    pub fn to_cell(&self) -> crate::online::Cell {
        use crate::online::Cell;
        match self {
            Value::Null => Cell::Null,
            Value::Bool(b) => Cell::Bool(*b),
            Value::Int(i) | Value::Duration(i) => Cell::Int(*i),
            Value::Float(f) => Cell::Float(*f),
            Value::Decimal(m, s) => Cell::Text(decimal_string(*m, *s)),
            Value::Str(s) => Cell::Text(s.to_string()),
            Value::Date(d) => Cell::Date(*d),
            Value::Timestamp(t) => Cell::Time(*t),
            Value::List(items) => Cell::List(items.iter().map(Value::to_cell).collect()),
        }
    }

    /// `CAST(v AS VARCHAR)` as the embedded engine prints it.
    pub fn cast_text(&self) -> Option<String> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => float_text(*f),
            Value::Decimal(m, s) => decimal_string(*m, *s),
            Value::Str(s) => s.to_string(),
            Value::Date(d) => date_text(*d),
            Value::Timestamp(t) => {
                let text = cdp_compiler::sql::dialect::format_micros(*t);
                text.replacen(' ', "T", 1)
            }
            Value::Duration(ms) => ms.to_string(),
            Value::List(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| i.cast_text().unwrap_or_else(|| "NULL".into()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            _ => self.sql_cmp(other) == Some(Ordering::Equal) && self.rank() == other.rank(),
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Value::Null => 0u8.hash(h),
            Value::Bool(b) => b.hash(h),
            // Equal numbers hash alike whatever their scale.
            Value::Int(_) | Value::Decimal(..) => match decimal_parts(self) {
                Some((m, s)) => {
                    let (mut m, mut s) = (m, s);
                    while s > 0 && m % 10 == 0 {
                        m /= 10;
                        s -= 1;
                    }
                    (m, s).hash(h)
                }
                None => 1u8.hash(h),
            },
            Value::Float(f) => f.to_bits().hash(h),
            Value::Str(s) => s.hash(h),
            Value::Date(_) | Value::Timestamp(_) => self.as_micros().hash(h),
            Value::Duration(d) => d.hash(h),
            Value::List(items) => {
                items.len().hash(h);
                for i in items.iter() {
                    i.hash(h);
                }
            }
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cast_text() {
            Some(t) => f.write_str(&t),
            None => f.write_str("null"),
        }
    }
}

// ------------------------------------------------------------------------------ numbers

/// An int or decimal as (mantissa, scale).
pub fn decimal_parts(v: &Value) -> Option<(i128, u32)> {
    match v {
        Value::Int(i) => Some((i128::from(*i), 0)),
        Value::Decimal(m, s) => Some((*m, *s)),
        _ => None,
    }
}

pub fn rescale(m: i128, from: u32, to: u32) -> Option<i128> {
    if to >= from {
        m.checked_mul(10i128.checked_pow(to - from)?)
    } else {
        Some(m / 10i128.pow(from - to))
    }
}

/// A decimal literal (`12.50`, `-3`) exactly.
pub fn decimal_text(s: &str) -> Option<Value> {
    let t = s.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int_part, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all: String = format!("{int_part}{frac}");
    let m: i128 = all.parse().ok()?;
    Some(Value::Decimal(if neg { -m } else { m }, frac.len() as u32))
}

pub fn decimal_string(m: i128, scale: u32) -> String {
    let neg = m < 0;
    let digits = m.unsigned_abs().to_string();
    let s = scale as usize;
    let text = if s == 0 {
        digits
    } else if digits.len() > s {
        format!(
            "{}.{}",
            &digits[..digits.len() - s],
            &digits[digits.len() - s..]
        )
    } else {
        format!("0.{}{digits}", "0".repeat(s - digits.len()))
    };
    if neg {
        format!("-{text}")
    } else {
        text
    }
}

fn float_text(f: f64) -> String {
    if f.is_finite() && f == f.trunc() && f.abs() < 1e15 {
        format!("{f:.1}")
    } else {
        f.to_string()
    }
}

pub fn date_text(days: i32) -> String {
    let text = cdp_compiler::sql::dialect::format_micros(i64::from(days) * MICROS_PER_DAY);
    text[..10].to_string()
}

/// Rounds `m` (at `scale`) half away from zero to `digits` decimal places.
pub fn round_decimal(m: i128, scale: u32, digits: i64) -> (i128, u32) {
    let target = digits.clamp(0, i64::from(scale)) as u32;
    if target >= scale {
        return (m, scale);
    }
    let div = 10i128.pow(scale - target);
    let q = m / div;
    let r = m % div;
    let q = if r.abs() * 2 >= div {
        q + m.signum()
    } else {
        q
    };
    (q, target)
}

/// (year, month, day) of a day count.
pub fn civil(days: i64) -> (i64, i64, i64) {
    use chrono::Datelike;
    match chrono::NaiveDate::from_num_days_from_ce_opt((days + 719_163) as i32) {
        Some(d) => (
            i64::from(d.year()),
            i64::from(d.month()),
            i64::from(d.day()),
        ),
        None => (1970, 1, 1),
    }
}

pub const DAY_MICROS: i64 = MICROS_PER_DAY;

// ------------------------------------------------------------------------------ from Arrow

/// The rows of a source's batches (loaded with the source's schema) as values.
pub fn rows_of(
    source: &cdp_compiler::ir::Source,
    batches: &[datafusion::arrow::array::RecordBatch],
) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            rows.push(
                source
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(c, col)| {
                        b.columns()
                            .get(c)
                            .map_or(Value::Null, |a| from_arrow(a, r, &col.ty))
                    })
                    .collect(),
            );
        }
    }
    rows
}

/// Row `i` of `array`, a column of type `ty` in the runtime's Arrow mapping (`schema`).
pub fn from_arrow(array: &datafusion::arrow::array::ArrayRef, i: usize, ty: &Type) -> Value {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{
        Date32Type, Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType,
    };
    if array.is_null(i) {
        return Value::Null;
    }
    match ty {
        Type::String => array
            .as_string_opt::<i32>()
            .map_or(Value::Null, |a| Value::str(a.value(i))),
        Type::Int => array
            .as_primitive_opt::<Int64Type>()
            .map_or(Value::Null, |a| Value::Int(a.value(i))),
        Type::Duration => array
            .as_primitive_opt::<Int64Type>()
            .map_or(Value::Null, |a| Value::Duration(a.value(i))),
        Type::Float => array
            .as_primitive_opt::<Float64Type>()
            .map_or(Value::Null, |a| Value::Float(a.value(i))),
        Type::Decimal { scale, .. } => array
            .as_primitive_opt::<Decimal128Type>()
            .map_or(Value::Null, |a| Value::Decimal(a.value(i), *scale)),
        Type::Bool => array
            .as_boolean_opt()
            .map_or(Value::Null, |a| Value::Bool(a.value(i))),
        Type::Date => array
            .as_primitive_opt::<Date32Type>()
            .map_or(Value::Null, |a| Value::Date(a.value(i))),
        Type::Timestamp => array
            .as_primitive_opt::<TimestampMicrosecondType>()
            .map_or(Value::Null, |a| Value::Timestamp(a.value(i))),
        Type::List(inner) => match array.as_list_opt::<i32>() {
            Some(l) => {
                let items = l.value(i);
                Value::List(
                    (0..items.len())
                        .map(|j| from_arrow(&items, j, inner))
                        .collect(),
                )
            }
            None => Value::Null,
        },
        Type::Null | Type::Error => Value::Null,
    }
}
