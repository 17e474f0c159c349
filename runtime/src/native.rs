//! Native work for the embedded engine: the parts of a compiled program that Rust does better
//! than SQL, as [`workflow::Native`] steps in place of the SQL steps they replace.
//!
//! Identity: the SQL program finds connected components in rounds of label propagation (a few
//! joins over every edge per round); the embedded engine instead reads `<e>_id_records` and the
//! previous run's `<e>_id_map`, resolves them with a union-find ([`crate::identity`]), and
//! registers `<e>_identity` and `<e>_id_merges` with the columns and types the SQL gives them.
//! Everything downstream (`<e>_id_map_next`, values, profile, journeys) is the same SQL.

use std::sync::Arc;

use cdp_compiler::ir;
use datafusion::arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::batch::BatchEngine;
use crate::error::{Error, Result};
use crate::identity::{resolve, KeySpec};
use crate::workflow::Native;

/// The tables of an entity's identity program (`<entity>_<suffix>`) that native resolution
/// stands in for; `identity` and `id_merges` are the ones it builds.
const REPLACED: [&str; 7] = [
    "id_nodes",
    "id_edges",
    "id_cc",
    "id_cc_prev",
    "id_claims",
    "identity",
    "id_merges",
];

/// One native identity step per entity of the project.
pub fn identity_steps(project: &ir::Project, as_of_micros: i64) -> Vec<Native<'static>> {
    project
        .entities
        .iter()
        .map(|entity| {
            let name = entity.meta.name.clone();
            let table = |suffix: &str| format!("{name}_{suffix}");
            let keys = KeySpec::of_entity(entity);
            let (records, map, identity, merges) = (
                table("id_records"),
                table("id_map"),
                table("identity"),
                table("id_merges"),
            );
            Native {
                name: format!("{identity} (native)"),
                replaces: REPLACED.iter().map(|s| table(s)).collect(),
                reads: vec![records.clone(), map.clone()],
                builds: vec![identity.clone(), merges.clone()],
                run: Box::new(move |engine: &BatchEngine| {
                    resolve_on(
                        engine,
                        keys.clone(),
                        [&records, &map, &identity, &merges],
                        as_of_micros,
                    )
                }),
            }
        })
        .collect()
}

fn resolve_on(
    engine: &BatchEngine,
    keys: Vec<KeySpec>,
    [records, map, identity, merges]: [&String; 4],
    as_of_micros: i64,
) -> Result<()> {
    let clock = std::time::Instant::now();
    let records = engine.table(records)?;
    let previous = engine.table(map)?;
    let read = clock.elapsed();
    let resolution = resolve(keys, &records.batches, &previous.batches)?;
    let resolved = clock.elapsed();
    // Text columns take the engine's string type (its SQL gives `Utf8View` where it reads
    // view-typed sources), as the key columns of the records have it.
    let text = records
        .schema
        .fields()
        .iter()
        .find(|f| f.name().starts_with("k_"))
        .map_or(DataType::Utf8, |f| f.data_type().clone());

    let ids = as_engine_types(resolution.id_map_batch()?, &text)?;
    engine.register_batches(identity, ids.schema(), vec![ids])?;
    if std::env::var_os("CDP_IDENTITY_TIMINGS").is_some() {
        eprintln!(
            "identity: tables read {read:?}, resolved {:?}, identity table {:?}",
            resolved - read,
            clock.elapsed() - resolved
        );
    }

    // `merged_at` is the as-of time, typed as the SQL's `TIMESTAMP '…'` literal is.
    let pairs = resolution.merges_batch()?;
    let literal = engine.query(&format!(
        "SELECT TIMESTAMP '{}' AS merged_at",
        cdp_compiler::sql::dialect::format_micros(as_of_micros)
    ))?;
    let at_type = literal.schema.field(0).data_type().clone();
    let at: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![
        as_of_micros;
        pairs.num_rows()
    ]));
    let at = cast(&at, &at_type)
        .map_err(|e| Error::Internal(format!("identity: typing merged_at: {e}")))?;
    let mut fields: Vec<Field> = pairs
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("merged_at", at_type, true));
    let mut columns = pairs.columns().to_vec();
    columns.push(at);
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::Internal(format!("identity: merges: {e}")))?;
    let batch = as_engine_types(batch, &text)?;
    engine.register_batches(merges, batch.schema(), vec![batch])
}

/// `batch` with its text columns cast to `text` and every column nullable, as the engine's
/// `CREATE TABLE AS` would have made it — but for `key_name`, a string literal in the SQL, which
/// stays `Utf8`.
fn as_engine_types(batch: RecordBatch, text: &DataType) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let (data_type, column) =
            if matches!(field.data_type(), DataType::Utf8 | DataType::Utf8View)
                && field.data_type() != text
                && field.name() != "key_name"
            {
                let cast = cast(column, text)
                    .map_err(|e| Error::Internal(format!("identity: `{}`: {e}", field.name())))?;
                (text.clone(), cast)
            } else {
                (field.data_type().clone(), column.clone())
            };
        fields.push(Field::new(field.name(), data_type, true));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::Internal(format!("identity: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::{self, Options};
    use datafusion::arrow::util::pretty::pretty_format_batches;

    /// Every row of a table as text, in a stable order.
    fn rows(engine: &BatchEngine, table: &str) -> Vec<String> {
        let t = engine.table(table).unwrap();
        let text = pretty_format_batches(&t.batches).unwrap().to_string();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(1)
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    /// Rows equal cell by cell, floating-point cells to 1e-12 relative: a sum's last bits depend
    /// on the order rows arrive in, which the identity tables' order changes.
    fn same_row(x: &str, y: &str) -> bool {
        let cells = |r: &str| {
            r.split('|')
                .map(str::trim)
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let (xs, ys) = (cells(x), cells(y));
        xs.len() == ys.len()
            && xs.iter().zip(&ys).all(|(a, b)| {
                a == b
                    || match (a.parse::<f64>(), b.parse::<f64>()) {
                        (Ok(a), Ok(b)) => (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
                        _ => false,
                    }
            })
    }

    #[test]
    fn the_retail_program_gives_the_same_outputs_with_native_identity_over_two_runs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/retail");
        let sources = cdp_compiler::load_project(&root).unwrap();
        let checked = cdp_compiler::check(&sources);
        let project = cdp_compiler::lower(&checked).unwrap();
        let config = checked.config.as_ref().unwrap();
        let sql = BatchEngine::with_threads(2).unwrap();
        let native = BatchEngine::with_threads(2).unwrap();
        for engine in [&sql, &native] {
            engine
                .register_project_sources(&root, &project, config)
                .unwrap();
        }
        let micros = |t: &str| cdp_compiler::config::parse_timestamp(t).unwrap() * 1_000_000;
        for as_of in ["2024-08-01 00:00:00", "2024-12-01 00:00:00"] {
            let program =
                crate::program::compile(&project, crate::Dialect::DataFusion, micros(as_of));
            let steps = identity_steps(&project, micros(as_of));
            let options = Options::default();
            let plain = workflow::run(&sql, &program, &[], &options, &mut ()).unwrap();
            let fast =
                workflow::run_with(&native, &program, &steps, &[], &options, &mut ()).unwrap();
            assert!(plain.iter().any(|r| r.name == "customer_id_cc (loop)"));
            assert!(!fast.iter().any(|r| r.name.contains("id_cc")), "{fast:?}");
            assert!(fast.iter().any(|r| r.name == "customer_identity (native)"));
            assert_eq!(fast.len(), plain.len() - 6);
            for table in &program.outputs {
                let (a, b) = (rows(&sql, table), rows(&native, table));
                if table.ends_with("_profile") || table.ends_with("_identity") {
                    assert!(!a.is_empty(), "{table} is empty at {as_of}");
                }
                assert_eq!(a.len(), b.len(), "{table} at {as_of}");
                for (x, y) in a.iter().zip(&b) {
                    assert!(same_row(x, y), "{table} at {as_of}:\n{x}\n{y}");
                }
            }
            let schema = |e: &BatchEngine, t: &str| e.table(t).unwrap().schema;
            for table in ["customer_id_merges", "customer_identity"] {
                assert_eq!(
                    schema(&sql, table).fields(),
                    schema(&native, table).fields(),
                    "{table}"
                );
            }
        }
    }
}
