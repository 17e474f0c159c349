//! Statistics of a run's outputs, computed on the engine right after the workflow: per
//! attribute and feature of each entity's profile table its count, nulls, approximate distinct
//! values, min / max / mean and a histogram (equal-width bins for numbers, the most frequent
//! values for the rest); per segment its population; per journey how many profiles are at each
//! step and how many converted, exited or completed. The registry keeps them per run and draws
//! them.
//!
//! Values of columns that show personal data ([`cdp_compiler::pii`]) are never collected: no
//! min, max or frequent values for them, only counts.

use cdp_compiler::ir::{self, NodeKind, Project};
use cdp_compiler::pii::profile_pii;
use cdp_compiler::types::Type;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::{Deserialize, Serialize};

use crate::batch::BatchEngine;
use crate::error::{Error, Result};

/// Equal-width bins of a numeric histogram.
pub const BINS: usize = 20;
/// Most frequent values kept for a categorical histogram.
pub const TOP: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    pub entities: Vec<EntityStats>,
    pub journeys: Vec<JourneyStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityStats {
    pub entity: String,
    pub profiles: u64,
    /// Rows of the identity table: identifiers known.
    pub identifiers: u64,
    pub values: Vec<ValueStats>,
    pub segments: Vec<SegmentStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueStats {
    pub name: String,
    /// `attribute` or `feature`.
    pub kind: String,
    /// The declared type, as the language writes it.
    pub ty: String,
    /// Profiles with a value.
    pub count: u64,
    pub nulls: u64,
    pub null_rate: f64,
    /// Approximate (HyperLogLog) distinct values.
    pub distinct: Option<u64>,
    pub min: Option<String>,
    pub max: Option<String>,
    pub mean: Option<f64>,
    /// The value shows personal data: no values were collected.
    pub pii: bool,
    pub histogram: Histogram,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Histogram {
    /// `BINS` equal-width bins from min to max (the last bin includes max).
    Numeric {
        bins: Vec<Bin>,
    },
    /// The same over time: bounds are seconds since 1970-01-01 00:00:00 UTC.
    Time {
        bins: Vec<Bin>,
    },
    /// The most frequent values, and how many profiles hold another value.
    Top {
        values: Vec<(String, u64)>,
        other: u64,
    },
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentStats {
    pub segment: String,
    pub profiles: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JourneyStats {
    pub journey: String,
    /// Profiles still in the journey, per step (in step order).
    pub steps: Vec<StepCount>,
    pub active: u64,
    pub converted: u64,
    pub exited: u64,
    pub completed: u64,
    /// Profiles that moved in this run (the transitions table).
    pub moved: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCount {
    pub node: u32,
    pub stage: String,
    /// What the step does: `wait`, `activate`, `branch`, … .
    pub step: String,
    pub profiles: u64,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Statistics of the tables a run of `project` built on `engine`.
pub fn collect(engine: &BatchEngine, project: &Project) -> Result<RunStats> {
    let pii = profile_pii(project);
    let mut entities = Vec::new();
    for (e, entity) in project.entities.iter().enumerate() {
        let name = &entity.meta.name;
        let profile = format!("{name}_profile");
        let mut values = Vec::new();
        let attributes = project
            .attributes
            .iter()
            .filter(|a| a.entity.index() == e)
            .map(|a| (&a.meta.name, "attribute", &a.ty));
        let features = project
            .features
            .iter()
            .filter(|f| f.entity.index() == e)
            .map(|f| (&f.meta.name, "feature", &f.ty));
        for (column, kind, ty) in attributes.chain(features) {
            values.push(value_stats(
                engine,
                &profile,
                column,
                kind,
                ty,
                pii.masked(column),
            )?);
        }
        let segments_table = format!("{name}_segments");
        let counts = engine.query(&format!(
            "SELECT segment, count(*) AS n FROM {} GROUP BY segment",
            quote(&segments_table)
        ))?;
        let counts = text_counts(&counts.batches)?;
        let segments = project
            .segments
            .iter()
            .filter(|s| s.entity.index() == e)
            .map(|s| SegmentStats {
                segment: s.meta.name.clone(),
                profiles: counts
                    .iter()
                    .find(|(n, _)| n == &s.meta.name)
                    .map_or(0, |(_, c)| *c),
            })
            .collect();
        entities.push(EntityStats {
            entity: name.clone(),
            profiles: engine.table_rows(&profile)? as u64,
            identifiers: engine.table_rows(&format!("{name}_identity"))? as u64,
            values,
            segments,
        });
    }
    let mut journeys = Vec::new();
    for journey in &project.journeys {
        journeys.push(journey_stats(engine, journey)?);
    }
    Ok(RunStats { entities, journeys })
}

fn value_stats(
    engine: &BatchEngine,
    table: &str,
    column: &str,
    kind: &str,
    ty: &Type,
    pii: bool,
) -> Result<ValueStats> {
    let c = quote(column);
    let t = quote(table);
    let numeric = matches!(
        ty,
        Type::Int | Type::Float | Type::Decimal { .. } | Type::Duration
    );
    let list = matches!(ty, Type::List(_));
    let ordered = !list && !matches!(ty, Type::Bool);
    let mut select = vec![
        format!("count(*) AS total"),
        format!("count({c}) AS present"),
    ];
    if !list {
        select.push(format!(
            "approx_distinct(CAST({c} AS VARCHAR)) AS distinct_values"
        ));
    }
    if ordered && !pii {
        select.push(format!("min({c}) AS min_value"));
        select.push(format!("max({c}) AS max_value"));
    }
    if numeric {
        select.push(format!("avg(CAST({c} AS DOUBLE)) AS mean_value"));
    }
    let row = engine.query(&format!("SELECT {} FROM {t}", select.join(", ")))?;
    let batch = single_row(&row.batches)?;
    let int = |name: &str| -> Result<Option<u64>> {
        let Some(col) = batch.column_by_name(name) else {
            return Ok(None);
        };
        let col = datafusion::arrow::compute::cast(col, &DataType::Int64)
            .map_err(|e| Error::Internal(format!("statistics of `{column}`: {e}")))?;
        let col = col.as_primitive::<Int64Type>();
        Ok((!col.is_null(0)).then(|| col.value(0).max(0) as u64))
    };
    let text = |name: &str| -> Result<Option<String>> {
        let Some(col) = batch.column_by_name(name) else {
            return Ok(None);
        };
        if col.is_null(0) {
            return Ok(None);
        }
        let formatter = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())
            .map_err(|e| Error::Internal(format!("statistics of `{column}`: {e}")))?;
        Ok(Some(formatter.value(0).to_string()))
    };
    let total = int("total")?.unwrap_or(0);
    let count = int("present")?.unwrap_or(0);
    let mean = match batch.column_by_name("mean_value") {
        Some(col) if !col.is_null(0) => Some(col.as_primitive::<Float64Type>().value(0)),
        _ => None,
    };
    let histogram = if pii || count == 0 {
        Histogram::None
    } else if numeric {
        Histogram::Numeric {
            bins: bins(engine, &t, &c, &format!("CAST({c} AS DOUBLE)"))?,
        }
    } else if matches!(ty, Type::Timestamp | Type::Date) {
        Histogram::Time {
            bins: bins(
                engine,
                &t,
                &c,
                &format!("CAST(date_part('epoch', {c}) AS DOUBLE)"),
            )?,
        }
    } else if list {
        Histogram::None
    } else {
        top_values(engine, &t, &c, count)?
    };
    Ok(ValueStats {
        name: column.to_string(),
        kind: kind.to_string(),
        ty: ty.to_string(),
        count,
        nulls: total - count,
        null_rate: if total == 0 {
            0.0
        } else {
            (total - count) as f64 / total as f64
        },
        distinct: int("distinct_values")?,
        min: text("min_value")?,
        max: text("max_value")?,
        mean,
        pii,
        histogram,
    })
}

fn single_row(batches: &[RecordBatch]) -> Result<&RecordBatch> {
    batches
        .iter()
        .find(|b| b.num_rows() == 1)
        .ok_or_else(|| Error::Internal("statistics: an aggregate returned no row".into()))
}

/// Equal-width bins of `x` (a DOUBLE expression of column `c`) between its min and max.
fn bins(engine: &BatchEngine, t: &str, c: &str, x: &str) -> Result<Vec<Bin>> {
    let range = engine.query(&format!(
        "SELECT min({x}) AS lo, max({x}) AS hi FROM {t} WHERE {c} IS NOT NULL"
    ))?;
    let batch = single_row(&range.batches)?;
    let lo = batch.column(0).as_primitive::<Float64Type>().value(0);
    let hi = batch.column(1).as_primitive::<Float64Type>().value(0);
    if !(lo.is_finite() && hi.is_finite()) {
        return Ok(Vec::new());
    }
    let width = if hi > lo {
        (hi - lo) / BINS as f64
    } else {
        1.0
    };
    let last = BINS as i64 - 1;
    let counts = engine.query(&format!(
        "SELECT CAST(least(greatest(floor(({x} - ({lo:?})) / ({width:?})), 0), {last}) AS BIGINT) AS bin, count(*) AS n \
         FROM {t} WHERE {c} IS NOT NULL GROUP BY 1"
    ))?;
    let mut bins: Vec<Bin> = (0..BINS)
        .map(|i| Bin {
            lo: lo + width * i as f64,
            hi: if i + 1 == BINS && hi > lo {
                hi
            } else {
                lo + width * (i + 1) as f64
            },
            count: 0,
        })
        .collect();
    for batch in &counts.batches {
        let b = batch.column(0).as_primitive::<Int64Type>();
        let n = batch.column(1).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            if let Some(bin) = bins.get_mut(b.value(i).clamp(0, last) as usize) {
                bin.count += n.value(i) as u64;
            }
        }
    }
    if hi == lo {
        bins.truncate(1);
    }
    Ok(bins)
}

fn top_values(engine: &BatchEngine, t: &str, c: &str, count: u64) -> Result<Histogram> {
    let rows = engine.query(&format!(
        "SELECT CAST({c} AS VARCHAR) AS v, count(*) AS n FROM {t} WHERE {c} IS NOT NULL \
         GROUP BY 1 ORDER BY n DESC, v LIMIT {TOP}"
    ))?;
    let values = text_counts(&rows.batches)?;
    let shown: u64 = values.iter().map(|(_, n)| n).sum();
    Ok(Histogram::Top {
        values,
        other: count.saturating_sub(shown),
    })
}

/// Rows of (text, count) query results.
fn text_counts(batches: &[RecordBatch]) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for batch in batches {
        let text = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let text = text.as_string::<i32>();
        let n = datafusion::arrow::compute::cast(batch.column(1), &DataType::Int64)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let n = n.as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            out.push((text.value(i).to_string(), n.value(i).max(0) as u64));
        }
    }
    Ok(out)
}

fn journey_stats(engine: &BatchEngine, journey: &ir::Journey) -> Result<JourneyStats> {
    let name = &journey.meta.name;
    let state = quote(&format!("{name}_state_next"));
    let rows = engine.query(&format!(
        "SELECT CAST(node AS VARCHAR) || ':' || status AS k, count(*) AS n FROM {state} GROUP BY 1"
    ))?;
    let counts = text_counts(&rows.batches)?;
    let mut stats = JourneyStats {
        journey: name.clone(),
        steps: journey
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| StepCount {
                node: i as u32,
                stage: journey
                    .stages
                    .get(node.stage as usize)
                    .cloned()
                    .unwrap_or_default(),
                step: step_kind(&node.kind).to_string(),
                profiles: 0,
            })
            .collect(),
        active: 0,
        converted: 0,
        exited: 0,
        completed: 0,
        moved: engine.table_rows(&format!("{name}_transitions"))? as u64,
    };
    for (key, n) in counts {
        let (node, status) = key.split_once(':').unwrap_or((&key, ""));
        match status {
            "active" => {
                stats.active += n;
                if let Some(step) = node
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| stats.steps.get_mut(i))
                {
                    step.profiles += n;
                }
            }
            "converted" => stats.converted += n,
            "exited" => stats.exited += n,
            "completed" => stats.completed += n,
            _ => {}
        }
    }
    Ok(stats)
}

fn step_kind(kind: &NodeKind) -> &'static str {
    match kind {
        NodeKind::Activate { .. } => "activate",
        NodeKind::Wait { .. } => "wait",
        NodeKind::WaitUntil { .. } => "wait until",
        NodeKind::Branch { .. } => "branch",
        NodeKind::Split { .. } => "split",
        NodeKind::End => "end",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retail_statistics_are_right_and_personal_values_are_not_collected() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/retail");
        let sources = cdp_compiler::load_project(&root).unwrap();
        let checked = cdp_compiler::check(&sources);
        let project = cdp_compiler::lower(&checked).unwrap();
        let engine = BatchEngine::with_threads(2).unwrap();
        engine
            .register_project_sources(&root, &project, checked.config.as_ref().unwrap())
            .unwrap();
        let micros =
            cdp_compiler::config::parse_timestamp("2024-12-01 00:00:00").unwrap() * 1_000_000;
        engine
            .run(&crate::program::compile(
                &project,
                crate::Dialect::DataFusion,
                micros,
            ))
            .unwrap();
        let stats = collect(&engine, &project).unwrap();
        let customer = &stats.entities[0];
        assert_eq!(customer.profiles, 78);
        let value = |n: &str| customer.values.iter().find(|v| v.name == n).unwrap();

        // Cross-checked with queries of their own.
        let ltv = value("lifetime_value");
        let check = engine
            .query("SELECT count(lifetime_value), min(lifetime_value), max(lifetime_value) FROM customer_profile")
            .unwrap();
        let printed = datafusion::arrow::util::pretty::pretty_format_batches(&check.batches)
            .unwrap()
            .to_string();
        assert!(
            printed.contains(&ltv.count.to_string()),
            "{printed}\n{ltv:?}"
        );
        assert!(
            printed.contains(ltv.min.as_deref().unwrap()),
            "{printed}\n{ltv:?}"
        );
        assert!(
            printed.contains(ltv.max.as_deref().unwrap()),
            "{printed}\n{ltv:?}"
        );
        assert_eq!(ltv.count + ltv.nulls, 78);
        let Histogram::Numeric { bins } = &ltv.histogram else {
            panic!("{ltv:?}")
        };
        assert_eq!(bins.len(), BINS);
        assert_eq!(bins.iter().map(|b| b.count).sum::<u64>(), ltv.count);
        assert!(bins.windows(2).all(|w| w[0].hi == w[1].lo));

        let country = value("country");
        let Histogram::Top { values, other } = &country.histogram else {
            panic!("{country:?}")
        };
        assert_eq!(
            values.iter().map(|v| v.1).sum::<u64>() + other,
            country.count
        );
        assert!(values.windows(2).all(|w| w[0].1 >= w[1].1));

        let email = value("contact_email");
        assert!(email.pii && email.min.is_none() && email.max.is_none());
        assert_eq!(email.histogram, Histogram::None);
        assert!(email.count > 0);
        let Histogram::Time { bins } = &value("last_seen_at").histogram else {
            panic!("last_seen_at")
        };
        assert_eq!(
            bins.iter().map(|b| b.count).sum::<u64>(),
            value("last_seen_at").count
        );
        // 2024-12-01 00:00:00 is the latest time anyone was seen.
        assert_eq!(bins.last().unwrap().hi, 1_733_011_200.0);

        // Segment populations equal the segments table.
        let total: u64 = customer.segments.iter().map(|s| s.profiles).sum();
        assert_eq!(
            total as usize,
            engine.table_rows("customer_segments").unwrap()
        );
        assert!(customer.segments.iter().any(|s| s.profiles > 0));

        // Journeys: every profile of the state table is counted once.
        for j in &stats.journeys {
            let rows = engine
                .table_rows(&format!("{}_state_next", j.journey))
                .unwrap() as u64;
            assert_eq!(
                j.active + j.converted + j.exited + j.completed,
                rows,
                "{j:?}"
            );
            assert_eq!(j.steps.iter().map(|s| s.profiles).sum::<u64>(), j.active);
        }
        // Serializable for the registry.
        let json = serde_json::to_string(&stats).unwrap();
        let back: RunStats = serde_json::from_str(&json).unwrap();
        assert_eq!(back.entities[0].values.len(), customer.values.len());
        assert_eq!(back.journeys.len(), stats.journeys.len());
    }
}
