//! Canonical tables: any engine's result as sorted rows of canonical strings, so that tables from
//! different engines compare exactly, and a printer of their differences.
//!
//! Canonical forms: ints and decimals exact without trailing zeros (`12.5`), floats rounded to 9
//! significant digits, timestamps `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC), dates `YYYY-MM-DD`,
//! durations in seconds (`95s`, `0.5s`), bools `true` / `false`, lists `[a, b]`, and [`NULL`].

use std::collections::BTreeMap;
use std::fmt::Write;

use cdp_runtime::load::parse_timestamp;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value as Json;

/// The marker of a null value.
pub const NULL: &str = "∅";

/// What a column holds, as far as canonical text is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Text,
    Int,
    Float,
    Decimal,
    Bool,
    Date,
    Timestamp,
    Duration,
    List(Box<Kind>),
}

/// One engine's table: lower-case column names, rows sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonTable {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl CanonTable {
    pub fn new(columns: Vec<String>, mut rows: Vec<Vec<String>>) -> CanonTable {
        rows.sort();
        CanonTable {
            columns: columns.into_iter().map(|c| c.to_lowercase()).collect(),
            rows,
        }
    }
}

// ------------------------------------------------------------------------------ values

pub fn float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return "0".into();
    }
    // 9 significant digits: d.dddddddde±x, then written out positionally.
    let sci = format!("{f:.8e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let point = exponent + 1;
    let mut text = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (a, b) = digits.split_at(point as usize);
        format!("{a}.{b}")
    };
    text = trim_fraction(&text);
    if negative {
        format!("-{text}")
    } else {
        text
    }
}

fn trim_fraction(text: &str) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text.to_string()
    }
}

/// An exact number (`-012.500`, `+3`) without redundant zeros (`-12.5`, `3`).
pub fn decimal(text: &str) -> Result<String, String> {
    let t = text.trim();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("`{text}` is not an exact number"));
    }
    let int_part = int_part.trim_start_matches('0');
    let frac_part = frac_part.trim_end_matches('0');
    let mut out = if int_part.is_empty() {
        "0".to_string()
    } else {
        int_part.to_string()
    };
    if !frac_part.is_empty() {
        out.push('.');
        out.push_str(frac_part);
    }
    if negative && out != "0" {
        out.insert(0, '-');
    }
    Ok(out)
}

pub fn timestamp_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let Some(t) = chrono::DateTime::from_timestamp(secs, 0) else {
        return format!("timestamp({micros}us)");
    };
    let base = t.naive_utc().format("%Y-%m-%d %H:%M:%S").to_string();
    if frac == 0 {
        base
    } else {
        format!("{base}.{frac:06}")
    }
}

pub fn duration_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let (s, frac) = (m / 1_000_000, m % 1_000_000);
    if frac == 0 {
        format!("{sign}{s}s")
    } else {
        format!("{sign}{}s", trim_fraction(&format!("{s}.{frac:06}")))
    }
}

/// A value an engine gave as text, in canonical form.
pub fn text_value(kind: &Kind, text: &str) -> Result<String, String> {
    Ok(match kind {
        Kind::Text => text.to_string(),
        Kind::Int | Kind::Decimal => decimal(text)?,
        Kind::Float => float(
            match text {
                "Infinity" | "inf" => Ok(f64::INFINITY),
                "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
                _ => text.parse::<f64>(),
            }
            .map_err(|_| format!("`{text}` is not a float"))?,
        ),
        Kind::Bool => match text {
            "true" | "t" | "True" => "true".into(),
            "false" | "f" | "False" => "false".into(),
            _ => return Err(format!("`{text}` is not a bool")),
        },
        Kind::Date => text.to_string(),
        Kind::Timestamp => {
            // Sessions run in UTC: drop a UTC offset an engine may print.
            let t = text
                .trim_end_matches('Z')
                .trim_end_matches("+00:00")
                .trim_end_matches("+00");
            timestamp_micros(parse_timestamp(t)?)
        }
        Kind::Duration => duration_micros(
            text.parse::<i64>()
                .map_err(|_| format!("`{text}` is not a count of microseconds"))?,
        ),
        Kind::List(_) => {
            let json: Json =
                serde_json::from_str(text).map_err(|_| format!("`{text}` is not a JSON array"))?;
            json_value(kind, &json).map_err(|e| format!("{e} (in {text})"))?
        }
    })
}

/// A value an engine gave as JSON (null, a string of the value's text, or an array).
pub fn json_value(kind: &Kind, value: &Json) -> Result<String, String> {
    match (kind, value) {
        (_, Json::Null) => Ok(NULL.into()),
        (Kind::List(inner), Json::Array(items)) => {
            let items = items
                .iter()
                .map(|v| json_value(inner, v))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(format!("[{}]", items.join(", ")))
        }
        (_, Json::String(s)) => text_value(kind, s),
        (_, Json::Number(n)) => text_value(kind, &n.to_string()),
        (_, Json::Bool(b)) => text_value(kind, if *b { "true" } else { "false" }),
        _ => Err(format!("unexpected {value} for a {kind:?}")),
    }
}

// ------------------------------------------------------------------------------ Arrow

/// Canonical text of every value of an Arrow column.
pub fn arrow_column(array: &ArrayRef) -> Result<Vec<String>, String> {
    let n = array.len();
    let null_or = |i: usize, f: &dyn Fn(usize) -> String| {
        if array.is_null(i) {
            NULL.to_string()
        } else {
            f(i)
        }
    };
    let as_i64 = |target: &DataType| cast(array, target).map_err(|e| e.to_string());
    Ok(match array.data_type() {
        DataType::Null => vec![NULL.to_string(); n],
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            let a = cast(array, &DataType::Float64).map_err(|e| e.to_string())?;
            let a = a.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            (0..n).map(|i| null_or(i, &|i| float(a.value(i)))).collect()
        }
        DataType::Timestamp(unit, _) => {
            let a = as_i64(&DataType::Int64)?;
            let a = a.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let per = unit_micros(unit);
            (0..n)
                .map(|i| null_or(i, &|i| timestamp_micros(scale(a.value(i), per))))
                .collect()
        }
        DataType::Duration(unit) => {
            let a = as_i64(&DataType::Int64)?;
            let a = a.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let per = unit_micros(unit);
            (0..n)
                .map(|i| null_or(i, &|i| duration_micros(scale(a.value(i), per))))
                .collect()
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let a = array.as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>();
            (0..n)
                .map(|i| {
                    null_or(i, &|i| {
                        let v = a.value(i);
                        let days = i64::from(v.months) * 30 + i64::from(v.days);
                        duration_micros(days * 86_400_000_000 + v.nanoseconds / 1000)
                    })
                })
                .collect()
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
            let a = cast(
                array,
                &DataType::List(match array.data_type() {
                    DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                        f.clone()
                    }
                    _ => unreachable!("matched above"),
                }),
            )
            .map_err(|e| e.to_string())?;
            let a = a.as_list::<i32>();
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                if a.is_null(i) {
                    out.push(NULL.to_string());
                } else {
                    let items = arrow_column(&a.value(i))?;
                    out.push(format!("[{}]", items.join(", ")));
                }
            }
            out
        }
        DataType::Dictionary(_, value) => {
            arrow_column(&cast(array, value).map_err(|e| e.to_string())?)?
        }
        other => {
            let kind = match other {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text,
                t if t.is_integer() => Kind::Int,
                DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..) => Kind::Decimal,
                DataType::Boolean => Kind::Bool,
                DataType::Date32 | DataType::Date64 => Kind::Date,
                _ => Kind::Text,
            };
            let options = FormatOptions::default().with_date_format(Some("%Y-%m-%d"));
            let formatter =
                ArrayFormatter::try_new(array.as_ref(), &options).map_err(|e| e.to_string())?;
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                if array.is_null(i) {
                    out.push(NULL.to_string());
                } else {
                    out.push(text_value(&kind, &formatter.value(i).to_string())?);
                }
            }
            out
        }
    })
}

fn unit_micros(unit: &TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1,
        TimeUnit::Nanosecond => -1_000,
    }
}

/// Converts a count of `unit`s to microseconds (`per` < 0: divide by -per).
fn scale(v: i64, per: i64) -> i64 {
    if per > 0 {
        v * per
    } else {
        v.div_euclid(-per)
    }
}

/// A whole Arrow table in canonical form.
pub fn arrow_table(table: &cdp_runtime::Table) -> Result<CanonTable, String> {
    let columns = table
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut rows = Vec::with_capacity(table.num_rows());
    for batch in &table.batches {
        let cols = batch
            .columns()
            .iter()
            .map(arrow_column)
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..batch.num_rows() {
            rows.push(cols.iter().map(|c| c[r].clone()).collect());
        }
    }
    Ok(CanonTable::new(columns, rows))
}

// ------------------------------------------------------------------------------ comparing

/// How many differing rows of a table the report shows per side.
const SHOWN_ROWS: usize = 8;

/// The placeholder of an approximate value while rows are matched exactly.
const APPROX: &str = "≈";

/// Whether two approximate counts (HyperLogLog estimates, which each engine computes its own
/// way) are close enough: within 2, or within 20% of the larger. DuckDB's sketch is small: its
/// estimate of 48 distinct values can be 43 (the data are seeded, so a test never flickers).
pub fn approx_equal(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 2.0f64.max(0.2 * x.abs().max(y.abs())),
        _ => false,
    }
}

/// The differences between engines' outcomes, table by table, against the first engine; empty
/// when all agree. Columns named in `approximate` (estimates by definition) are compared with
/// [`approx_equal`], every other value exactly.
pub fn differences(
    outcomes: &[(&str, &BTreeMap<String, CanonTable>)],
    approximate: &[String],
) -> String {
    let mut report = String::new();
    let Some((base_name, base)) = outcomes.first() else {
        return report;
    };
    for (name, tables) in &outcomes[1..] {
        let all: std::collections::BTreeSet<&String> = base.keys().chain(tables.keys()).collect();
        for table in all {
            match (base.get(table), tables.get(table)) {
                (Some(a), Some(b)) => {
                    table_diff(&mut report, table, (base_name, a), (name, b), approximate)
                }
                (Some(_), None) => {
                    let _ = writeln!(report, "table `{table}`: missing on {name}");
                }
                (None, Some(_)) => {
                    let _ = writeln!(report, "table `{table}`: missing on {base_name}");
                }
                (None, None) => {}
            }
        }
    }
    report
}

/// The table with its approximate columns masked (rows re-sorted), and their values by masked row.
fn mask(
    table: &CanonTable,
    columns: &[usize],
) -> (CanonTable, BTreeMap<Vec<String>, Vec<Vec<String>>>) {
    let mut values: BTreeMap<Vec<String>, Vec<Vec<String>>> = BTreeMap::new();
    let mut rows = Vec::with_capacity(table.rows.len());
    for row in &table.rows {
        let mut masked = row.clone();
        for &c in columns {
            masked[c] = APPROX.to_string();
        }
        values
            .entry(masked.clone())
            .or_default()
            .push(columns.iter().map(|&c| row[c].clone()).collect());
        rows.push(masked);
    }
    rows.sort();
    let masked = CanonTable {
        columns: table.columns.clone(),
        rows,
    };
    (masked, values)
}

fn table_diff(
    report: &mut String,
    table: &str,
    a: (&str, &CanonTable),
    b: (&str, &CanonTable),
    approximate: &[String],
) {
    let ((an, at), (bn, bt)) = (a, b);
    if at.columns != bt.columns {
        let _ = writeln!(
            report,
            "table `{table}`: columns differ\n  {an:>10}: {}\n  {bn:>10}: {}",
            at.columns.join(", "),
            bt.columns.join(", ")
        );
        return;
    }
    let approx: Vec<usize> = at
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| approximate.contains(c))
        .map(|(i, _)| i)
        .collect();
    let (ma, va) = mask(at, &approx);
    let (mb, vb) = mask(bt, &approx);
    exact_diff(report, table, (an, &ma), (bn, &mb));
    if ma.rows != mb.rows || approx.is_empty() {
        return;
    }
    // Same rows apart from the estimates: compare those within their tolerance.
    let mut off = Vec::new();
    for (row, xs) in &va {
        let Some(ys) = vb.get(row) else { continue };
        let mut xs = xs.clone();
        let mut ys = ys.clone();
        xs.sort();
        ys.sort();
        for (x, y) in xs.iter().zip(&ys) {
            for (k, &c) in approx.iter().enumerate() {
                if !approx_equal(&x[k], &y[k]) {
                    off.push(format!(
                        "  {}: {} = {} on {an}, {} on {bn}",
                        row.first().map_or("", String::as_str),
                        at.columns[c],
                        x[k],
                        y[k]
                    ));
                }
            }
        }
    }
    if !off.is_empty() {
        let _ = writeln!(
            report,
            "table `{table}`: {} approximate values differ by more than the tolerance",
            off.len()
        );
        for line in off.iter().take(SHOWN_ROWS) {
            let _ = writeln!(report, "{line}");
        }
    }
}

fn exact_diff(report: &mut String, table: &str, a: (&str, &CanonTable), b: (&str, &CanonTable)) {
    let ((an, at), (bn, bt)) = (a, b);
    if at.rows == bt.rows {
        return;
    }
    // Both sides are sorted: a merge finds the rows only one side has.
    let (mut i, mut j) = (0, 0);
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    while i < at.rows.len() || j < bt.rows.len() {
        match (at.rows.get(i), bt.rows.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                only_a.push(x);
                i += 1;
            }
            (Some(_), Some(y)) => {
                only_b.push(y);
                j += 1;
            }
            (Some(x), None) => {
                only_a.push(x);
                i += 1;
            }
            (None, Some(y)) => {
                only_b.push(y);
                j += 1;
            }
            (None, None) => break,
        }
    }
    let _ = writeln!(
        report,
        "table `{table}`: {an} has {} rows, {bn} has {}; {} rows only on {an}, {} only on {bn}",
        at.rows.len(),
        bt.rows.len(),
        only_a.len(),
        only_b.len(),
    );
    // Rows with the same first column (the profile, the key) are shown as the columns that differ.
    let mut paired = 0;
    let mut unpaired_a = Vec::new();
    let mut unpaired_b: Vec<&Vec<String>> = only_b.clone();
    for x in &only_a {
        let partner = unpaired_b.iter().position(|y| y.first() == x.first());
        match partner {
            Some(p) => {
                let y = unpaired_b.remove(p);
                if paired < SHOWN_ROWS {
                    let cols: Vec<String> = at
                        .columns
                        .iter()
                        .zip(x.iter().zip(y.iter()))
                        .filter(|(_, (u, v))| u != v)
                        .map(|(c, (u, v))| format!("{c} = {u} on {an}, {v} on {bn}"))
                        .collect();
                    let _ = writeln!(
                        report,
                        "  {} = {}: {}",
                        at.columns.first().map_or("", String::as_str),
                        x.first().map_or("", String::as_str),
                        cols.join("; ")
                    );
                }
                paired += 1;
            }
            None => unpaired_a.push(*x),
        }
    }
    if paired > SHOWN_ROWS {
        let _ = writeln!(
            report,
            "  … {} more rows differ in some columns",
            paired - SHOWN_ROWS
        );
    }
    if !unpaired_a.is_empty() || !unpaired_b.is_empty() {
        let _ = writeln!(report, "  columns: {}", at.columns.join(" | "));
    }
    for (engine, rows) in [(an, &unpaired_a), (bn, &unpaired_b)] {
        for row in rows.iter().take(SHOWN_ROWS) {
            let _ = writeln!(report, "  only {engine:>10}: {}", row.join(" | "));
        }
        if rows.len() > SHOWN_ROWS {
            let _ = writeln!(
                report,
                "  only {engine:>10}: … {} more",
                rows.len() - SHOWN_ROWS
            );
        }
    }
}

#[test]
fn canonical_numbers() {
    assert_eq!(float(0.1 + 0.2), "0.3");
    assert_eq!(float(-1234.5), "-1234.5");
    assert_eq!(float(1e-7), "0.0000001");
    assert_eq!(float(123456789012.0), "123456789000");
    assert_eq!(float(2.0), "2");
    assert_eq!(decimal("012.500"), Ok("12.5".into()));
    assert_eq!(decimal("-0.00"), Ok("0".into()));
    assert_eq!(decimal("+7"), Ok("7".into()));
    assert_eq!(timestamp_micros(1_500_000), "1970-01-01 00:00:01.500000");
    assert_eq!(duration_micros(95_000_000), "95s");
    assert_eq!(duration_micros(-500_000), "-0.5s");
    assert_eq!(
        text_value(&Kind::Timestamp, "2024-11-03T14:22:05+00:00"),
        Ok("2024-11-03 14:22:05".into())
    );
    assert_eq!(
        text_value(&Kind::List(Box::new(Kind::Decimal)), "[1.50, null]"),
        Ok(format!("[1.5, {NULL}]"))
    );
}
