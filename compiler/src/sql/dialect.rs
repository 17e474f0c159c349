//! SQL dialects: a small capability description plus templates for the standard function list.
//!
//! Every function of [`Function`] and every primitive the emitter needs has an entry per dialect
//! in an exhaustive `match`: a dialect that lacks one does not compile, instead of printing
//! wrong SQL. Templates receive already-printed arguments; printing stays dumb.

use serde::{Deserialize, Serialize};

use crate::ir::TextOp;
use crate::types::{Function, Type};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dialect {
    DataFusion,
    Trino,
    Spark,
    Postgres,
    DuckDb,
}

impl Dialect {
    pub const ALL: [Dialect; 5] = [
        Dialect::DataFusion,
        Dialect::Trino,
        Dialect::Spark,
        Dialect::Postgres,
        Dialect::DuckDb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dialect::DataFusion => "datafusion",
            Dialect::Trino => "trino",
            Dialect::Spark => "spark",
            Dialect::Postgres => "postgres",
            Dialect::DuckDb => "duckdb",
        }
    }

    pub fn from_name(name: &str) -> Option<Dialect> {
        match name.to_ascii_lowercase().as_str() {
            "datafusion" | "df" => Some(Dialect::DataFusion),
            "trino" | "presto" => Some(Dialect::Trino),
            "spark" | "sparksql" | "spark-sql" => Some(Dialect::Spark),
            "postgres" | "postgresql" | "pg" => Some(Dialect::Postgres),
            "duckdb" => Some(Dialect::DuckDb),
            _ => None,
        }
    }

    /// Whether `count(DISTINCT x)` next to other aggregates is slow enough on this engine that
    /// distinct counts are computed in two stages (group by profile and value, then count).
    pub fn distinct_in_two_stages(self) -> bool {
        matches!(self, Dialect::DataFusion)
    }

    /// Whether the identity records of a source with a time keep one row per distinct
    /// combination of key values, with the time it was first seen (all that the nodes and the
    /// edges read): the benchmark's 25M records become ~4.5M. Not for DataFusion, whose records
    /// feed the embedded runtime's native resolver, which folds repeated records itself.
    pub fn distinct_records(self) -> bool {
        !matches!(self, Dialect::DataFusion)
    }

    /// Whether the engine plans a CTE again at every reference instead of computing it once.
    /// The rows of each source a profile reads (the source joined to the identity table) are
    /// then built as a table of their own before the values, instead of once per behavior and
    /// per aggregate that reads them.
    pub fn inlines_ctes(self) -> bool {
        matches!(self, Dialect::DataFusion)
    }

    /// Whether `first_value(v ORDER BY …)` as an aggregate is faster here than numbering the
    /// rows with `ROW_NUMBER()` and keeping the first: the one value of a `first`/`last`
    /// aggregate and of an attribute read from a source. (The `k` values of `first k`/`last k`
    /// stay ranked: `array_agg(… ORDER BY …)` sorts whole groups and is slower.)
    pub fn ordered_first_value(self) -> bool {
        matches!(self, Dialect::DataFusion)
    }

    /// Whether `arg_min`/`arg_max(v, key)` and `min_by`/`max_by(v, key, k)` take a struct key
    /// compared field by field (a null field above every value): the first and last value(s) of
    /// a behavior by (time, value), the most frequent value by (count, value) and an attribute's
    /// latest value are then plain aggregates in one `GROUP BY` instead of a ranking window,
    /// which sorts every event of every profile.
    pub fn struct_arg_by(self) -> bool {
        matches!(self, Dialect::DuckDb)
    }

    /// Whether the values statement numbers its profiles and joins and groups the numbers,
    /// attaching the canonical id (a 16-character text) once at the end: DuckDB groups 20M
    /// events by an integer much faster than by a text that does not fit its inlined strings.
    pub fn numbered_profiles(self) -> bool {
        matches!(self, Dialect::DuckDb)
    }

    /// Whether `ASOF JOIN … ON a.k = b.k AND b.t > a.t` pairs each row with the first row after
    /// it: a sequence's steps then meet one event of the next step each instead of every event
    /// of the same profile (the benchmark's three-step funnel: 9.6 s in a range join).
    pub fn asof_join(self) -> bool {
        matches!(self, Dialect::DuckDb)
    }

    /// A struct of named fields, for [`Self::struct_arg_by`]'s keys.
    pub fn struct_of(self, fields: &[(&str, &str)]) -> String {
        let fields: Vec<String> = fields
            .iter()
            .map(|(name, value)| format!("{}: {value}", self.string(name)))
            .collect();
        format!("{{{}}}", fields.join(", "))
    }

    /// Whether an aggregate's condition is written `agg(x) FILTER (WHERE c)` rather than
    /// `agg(CASE WHEN c THEN x END)`: the rows outside it never reach the aggregate (a distinct
    /// count's hash table holds only the rows of its window).
    pub fn aggregate_filter(self) -> bool {
        matches!(self, Dialect::DuckDb)
    }

    /// Quotes an identifier when it is not a plain lower-case name or is a reserved word.
    pub fn ident(self, name: &str) -> String {
        let plain = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !RESERVED.contains(&name);
        if plain {
            return name.to_string();
        }
        match self {
            Dialect::Spark => format!("`{}`", name.replace('`', "``")),
            _ => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    pub fn string(self, s: &str) -> String {
        match self {
            // Spark string literals treat backslashes as escapes.
            Dialect::Spark => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            _ => format!("'{}'", s.replace('\'', "''")),
        }
    }

    /// A timestamp literal from microseconds since the epoch (UTC, no time zone).
    pub fn timestamp(self, micros: i64) -> String {
        format!("TIMESTAMP '{}'", format_micros(micros))
    }

    pub fn date(self, text: &str) -> String {
        format!("DATE '{text}'")
    }

    /// An interval of `ms` milliseconds, in whole days when it is whole days.
    pub fn interval(self, ms: u64) -> String {
        let (amount, unit, plural) = if ms.is_multiple_of(86_400_000) {
            (ms / 86_400_000, "DAY", "days")
        } else if ms.is_multiple_of(1_000) {
            (ms / 1_000, "SECOND", "seconds")
        } else {
            return match self {
                Dialect::Trino => format!("INTERVAL '{}' SECOND", ms as f64 / 1000.0),
                Dialect::Spark => format!("INTERVAL {} MILLISECONDS", ms),
                _ => format!("INTERVAL '{ms} milliseconds'"),
            };
        };
        match self {
            Dialect::Trino => format!("INTERVAL '{amount}' {unit}"),
            Dialect::Spark => format!("INTERVAL {amount} {}", plural.to_uppercase()),
            _ => format!("INTERVAL '{amount} {plural}'"),
        }
    }

    /// The SQL type a value of `ty` is cast to.
    pub fn type_name(self, ty: &Type) -> String {
        match ty {
            Type::String => match self {
                Dialect::Spark => "STRING".into(),
                Dialect::Postgres => "TEXT".into(),
                _ => "VARCHAR".into(),
            },
            Type::Int | Type::Duration => "BIGINT".into(),
            Type::Float => self.double().into(),
            Type::Decimal { precision, scale } => match self {
                Dialect::Postgres => format!("NUMERIC({precision}, {scale})"),
                _ => format!("DECIMAL({precision}, {scale})"),
            },
            Type::Bool => "BOOLEAN".into(),
            Type::Date => "DATE".into(),
            // Trino's bare TIMESTAMP has milliseconds; the others keep microseconds.
            Type::Timestamp => match self {
                Dialect::Trino => "TIMESTAMP(6)".into(),
                _ => "TIMESTAMP".into(),
            },
            Type::List(inner) => match self {
                Dialect::Postgres | Dialect::DuckDb | Dialect::DataFusion => {
                    format!("{}[]", self.type_name(inner))
                }
                _ => format!("ARRAY<{}>", self.type_name(inner)),
            },
            Type::Null | Type::Error => self.type_name(&Type::String),
        }
    }

    pub fn double(self) -> &'static str {
        match self {
            Dialect::Postgres => "DOUBLE PRECISION",
            _ => "DOUBLE",
        }
    }

    /// Real division, null when dividing by zero, on every engine.
    pub fn divide(self, a: &str, b: &str) -> String {
        let d = self.double();
        format!("CAST({a} AS {d}) / NULLIF(CAST({b} AS {d}), 0)")
    }

    /// Remainder of integers; null when dividing by zero.
    pub fn remainder(self, a: &str, b: &str) -> String {
        format!("{a} % NULLIF({b}, 0)")
    }

    /// Lower-case hexadecimal MD5 of a string.
    pub fn md5_hex(self, s: &str) -> String {
        match self {
            Dialect::Trino => format!("lower(to_hex(md5(to_utf8({s}))))"),
            _ => format!("md5({s})"),
        }
    }

    /// The integer value (0 .. 2^32) of the first 8 hexadecimal digits of a lower-case hex string,
    /// digit by digit so that every engine computes it the same way.
    pub fn hex8_value(self, hex: &str) -> String {
        let digit = |k: usize| match self {
            Dialect::Spark => format!("(instr('0123456789abcdef', substr({hex}, {k}, 1)) - 1)"),
            _ => format!("(strpos('0123456789abcdef', substr({hex}, {k}, 1)) - 1)"),
        };
        let terms: Vec<String> = (1..=8)
            .map(|k| format!("{} * {}", digit(k), 16u64.pow(8 - k as u32)))
            .collect();
        format!("CAST({} AS BIGINT)", terms.join(" + "))
    }

    /// String concatenation of two non-null strings.
    pub fn concat2(self, a: &str, b: &str) -> String {
        format!("{a} || {b}")
    }

    /// Seconds since the epoch of a timestamp (or date), as a double.
    pub fn epoch_seconds(self, x: &str) -> String {
        let d = self.double();
        match self {
            Dialect::Postgres => format!("EXTRACT(EPOCH FROM CAST({x} AS TIMESTAMP))"),
            Dialect::DuckDb => format!("epoch(CAST({x} AS TIMESTAMP))"),
            Dialect::DataFusion => {
                format!("CAST(date_part('epoch', CAST({x} AS TIMESTAMP)) AS {d})")
            }
            Dialect::Trino => format!("to_unixtime(CAST({x} AS TIMESTAMP(6)))"),
            // `unix_timestamp` drops the sub-second part; microseconds keep it.
            Dialect::Spark => format!("CAST(unix_micros(CAST({x} AS TIMESTAMP)) AS {d}) / 1000000"),
        }
    }

    /// A string test; arguments are printed expressions.
    pub fn text(self, op: TextOp, value: &str, pattern: &str) -> String {
        match op {
            TextOp::Contains => match self {
                Dialect::Spark => format!("instr({value}, {pattern}) > 0"),
                _ => format!("strpos({value}, {pattern}) > 0"),
            },
            TextOp::StartsWith => match self {
                Dialect::Spark => format!("startswith({value}, {pattern})"),
                _ => format!("starts_with({value}, {pattern})"),
            },
            TextOp::EndsWith => match self {
                Dialect::DuckDb => format!("ends_with({value}, {pattern})"),
                Dialect::Spark => format!("endswith({value}, {pattern})"),
                // Trino has no `right` (and RIGHT is a reserved word there, so `right(…)` does
                // not even parse); `ends_with` only exists since Trino 482.
                Dialect::Trino => format!("starts_with(reverse({value}), reverse({pattern}))"),
                _ => format!("right({value}, length({pattern})) = {pattern}"),
            },
            TextOp::Matches => match self {
                Dialect::Postgres | Dialect::DataFusion => format!("{value} ~ {pattern}"),
                Dialect::DuckDb => format!("regexp_matches({value}, {pattern})"),
                Dialect::Trino => format!("regexp_like({value}, {pattern})"),
                Dialect::Spark => format!("{value} RLIKE {pattern}"),
            },
        }
    }

    /// Whether a list value holds an item.
    pub fn list_contains(self, list: &str, item: &str) -> String {
        match self {
            Dialect::Postgres => format!("{item} = ANY({list})"),
            Dialect::DuckDb => format!("list_contains({list}, {item})"),
            Dialect::DataFusion => format!("array_has({list}, {item})"),
            Dialect::Trino => format!("contains({list}, {item})"),
            Dialect::Spark => format!("array_contains({list}, {item})"),
        }
    }

    pub fn list_length(self, list: &str) -> String {
        match self {
            Dialect::Postgres => format!("COALESCE(cardinality({list}), 0)"),
            Dialect::DuckDb => format!("len({list})"),
            Dialect::DataFusion => format!("cardinality({list})"),
            Dialect::Trino => format!("cardinality({list})"),
            Dialect::Spark => format!("size({list})"),
        }
    }

    /// A list literal.
    pub fn list(self, items: &[String]) -> String {
        match self {
            Dialect::Postgres => format!("ARRAY[{}]", items.join(", ")),
            Dialect::DuckDb | Dialect::DataFusion => format!("[{}]", items.join(", ")),
            Dialect::Trino => format!("ARRAY[{}]", items.join(", ")),
            Dialect::Spark => format!("array({})", items.join(", ")),
        }
    }

    /// `array_agg(value ORDER BY order)` over a group, as a list (empty groups give null).
    pub fn ordered_list_agg(self, value: &str, order: &str) -> String {
        match self {
            Dialect::Spark => format!(
                "transform(array_sort(collect_list(struct({order} AS k, {value} AS v))), s -> s.v)"
            ),
            _ => format!("array_agg({value} ORDER BY {order})"),
        }
    }

    /// The empty list of a type, for profiles without events.
    pub fn empty_list(self, element: &Type) -> String {
        let t = self.type_name(element);
        match self {
            Dialect::Postgres => format!("CAST(ARRAY[] AS {t}[])"),
            Dialect::DuckDb | Dialect::DataFusion => format!("CAST([] AS {t}[])"),
            Dialect::Trino => format!("CAST(ARRAY[] AS ARRAY({t}))"),
            Dialect::Spark => format!("CAST(array() AS ARRAY<{t}>)"),
        }
    }

    /// A standard-list function applied to printed arguments (`now()` is handled by the caller:
    /// it is the as-of literal).
    pub fn function(self, f: Function, args: &[String], arg_types: &[Type]) -> String {
        let a = |i: usize| args.get(i).map_or("NULL", String::as_str);
        let joined = args.join(", ");
        match f {
            Function::Lower => format!("lower({})", a(0)),
            Function::Upper => format!("upper({})", a(0)),
            Function::Trim => format!("trim({})", a(0)),
            Function::Length => match arg_types.first() {
                Some(Type::List(_)) => self.list_length(a(0)),
                _ => match self {
                    Dialect::Trino | Dialect::Spark | Dialect::DuckDb => {
                        format!("length({})", a(0))
                    }
                    _ => format!("char_length({})", a(0)),
                },
            },
            // Null parts count as empty strings on every engine.
            Function::Concat => {
                let parts: Vec<String> = args
                    .iter()
                    .zip(arg_types)
                    .map(|(x, t)| {
                        let s = if *t == Type::String {
                            x.clone()
                        } else {
                            format!("CAST({x} AS {})", self.type_name(&Type::String))
                        };
                        format!("COALESCE({s}, '')")
                    })
                    .collect();
                format!("({})", parts.join(" || "))
            }
            Function::Substr => format!("substr({joined})"),
            Function::Coalesce => format!("COALESCE({joined})"),
            Function::If => format!("CASE WHEN {} THEN {} ELSE {} END", a(0), a(1), a(2)),
            Function::Abs => format!("abs({})", a(0)),
            Function::Round => {
                let digits = args.get(1).map_or("0", String::as_str);
                match self {
                    // PostgreSQL rounds only numerics to a number of digits.
                    Dialect::Postgres => format!("round(CAST({} AS NUMERIC), {digits})", a(0)),
                    _ => format!("round({}, {digits})", a(0)),
                }
            }
            Function::Floor => format!("floor({})", a(0)),
            Function::Ceil => format!("ceil({})", a(0)),
            Function::Greatest => format!("greatest({joined})"),
            Function::Least => format!("least({joined})"),
            Function::Now => "CURRENT_TIMESTAMP".to_string(),
            Function::Date => format!("CAST({} AS DATE)", a(0)),
            Function::Year => format!("CAST(EXTRACT(YEAR FROM {}) AS BIGINT)", a(0)),
            Function::Month => format!("CAST(EXTRACT(MONTH FROM {}) AS BIGINT)", a(0)),
            Function::Day => format!("CAST(EXTRACT(DAY FROM {}) AS BIGINT)", a(0)),
            Function::Hour => format!("CAST(EXTRACT(HOUR FROM {}) AS BIGINT)", a(0)),
            Function::DaysBetween => format!(
                "CAST(floor(({} - {}) / 86400) AS BIGINT)",
                self.epoch_seconds(a(1)),
                self.epoch_seconds(a(0))
            ),
            // Whole years from a to b: the difference of years, less one before the anniversary.
            Function::YearsBetween => {
                let part = |p: &str, x: &str| format!("EXTRACT({p} FROM {x})");
                let (x, y) = (a(0), a(1));
                format!(
                    "CAST({} - {} - CASE WHEN {} < {} OR ({} = {} AND {} < {}) THEN 1 ELSE 0 END AS BIGINT)",
                    part("YEAR", y),
                    part("YEAR", x),
                    part("MONTH", y),
                    part("MONTH", x),
                    part("MONTH", y),
                    part("MONTH", x),
                    part("DAY", y),
                    part("DAY", x)
                )
            }
            Function::ToString => format!("CAST({} AS {})", a(0), self.type_name(&Type::String)),
            Function::ToInt => format!("CAST({} AS BIGINT)", a(0)),
            Function::ToFloat => format!("CAST({} AS {})", a(0), self.double()),
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` of microseconds since the epoch.
pub fn format_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let base = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if frac == 0 {
        base
    } else {
        format!("{base}.{frac:06}")
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Words quoted in every dialect: the union of what the five engines reserve that users are
/// likely to name a column (quoting a word that did not need it is harmless).
const RESERVED: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "at",
    "between",
    "both",
    "by",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "cross",
    "cube",
    "current",
    "current_date",
    "current_time",
    "current_timestamp",
    "current_user",
    "date",
    "day",
    "default",
    "delete",
    "desc",
    "describe",
    "distinct",
    "do",
    "drop",
    "else",
    "end",
    "escape",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "filter",
    "for",
    "foreign",
    "from",
    "full",
    "function",
    "grant",
    "group",
    "grouping",
    "having",
    "hour",
    "if",
    "in",
    "inner",
    "insert",
    "intersect",
    "interval",
    "into",
    "is",
    "join",
    "key",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "local",
    "minute",
    "month",
    "natural",
    "not",
    "null",
    "of",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "over",
    "partition",
    "position",
    "primary",
    "range",
    "references",
    "right",
    "rollup",
    "row",
    "rows",
    "second",
    "select",
    "session_user",
    "set",
    "some",
    "table",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "unknown",
    "update",
    "user",
    "using",
    "value",
    "values",
    "when",
    "where",
    "window",
    "with",
    "year",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_read_naturally() {
        assert_eq!(
            Dialect::Postgres.interval(30 * 86_400_000),
            "INTERVAL '30 days'"
        );
        assert_eq!(
            Dialect::Trino.interval(30 * 86_400_000),
            "INTERVAL '30' DAY"
        );
        assert_eq!(
            Dialect::Spark.interval(12 * 3_600_000),
            "INTERVAL 43200 SECONDS"
        );
        assert_eq!(
            Dialect::DuckDb.interval(1_500),
            "INTERVAL '1500 milliseconds'"
        );
    }

    #[test]
    fn identifiers_are_quoted_only_when_needed() {
        assert_eq!(Dialect::Postgres.ident("orders_30d"), "orders_30d");
        assert_eq!(Dialect::Postgres.ident("date"), "\"date\"");
        assert_eq!(Dialect::Spark.ident("Weird Name"), "`Weird Name`");
    }

    #[test]
    fn micros_format_as_timestamps() {
        assert_eq!(format_micros(1_733_011_200_000_000), "2024-12-01 00:00:00");
        assert_eq!(format_micros(1_500_000), "1970-01-01 00:00:01.500000");
        assert_eq!(format_micros(-1_000_000), "1969-12-31 23:59:59");
    }

    #[test]
    fn strings_escape_per_dialect() {
        assert_eq!(Dialect::Postgres.string("it's"), "'it''s'");
        assert_eq!(Dialect::Spark.string("it's"), "'it\\'s'");
    }
}
