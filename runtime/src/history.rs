//! Segment enter/exit history: which profiles entered and left which segments in a run,
//! compared with the previous committed run.
//!
//! The previous run's memberships are first moved onto the ids their profiles have now (a
//! profile merged away in this run counts as a member of its survivor), so that a merge is not
//! an exit of one id and an enter of another. A profile that is gone without a merge exits
//! under its old id. On a first run, every membership is an `enter`.
//!
//! The result, `<entity>_segment_history` (canonical_id, segment, change, at, run), is one more
//! output of the run; the offline store keeps one partition per run, so the whole history is
//! the union of the partitions.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::batch::{BatchEngine, Table};
use crate::error::Result;

/// The history table of an entity.
pub fn table(entity: &str) -> String {
    format!("{entity}_segment_history")
}

/// This run's changes of segment membership of `entity`: `<entity>_segments` (and
/// `<entity>_id_merges`, when it exists) of this run, in the engine, against `previous`, the
/// previous run's `<entity>_segments` (`None` on a first run). `as_of` is the run's as-of time
/// (`YYYY-MM-DD HH:MM:SS`), the time of every change.
pub fn segment_changes(
    engine: &BatchEngine,
    entity: &str,
    previous: Option<Table>,
    as_of: &str,
    run: &str,
) -> Result<Table> {
    let before = format!("{entity}_segments_before");
    let previous = previous.unwrap_or_else(|| Table {
        schema: Arc::new(Schema::new(vec![
            Field::new("canonical_id", DataType::Utf8, true),
            Field::new("segment", DataType::Utf8, true),
        ])),
        batches: Vec::new(),
    });
    engine.register_batches(&before, previous.schema, previous.batches)?;
    let merges = format!("{entity}_id_merges");
    let merged = engine
        .context()
        .table_exist(merges.as_str())
        .unwrap_or(false);
    let survivor = if merged {
        format!(
            "COALESCE(m.into_id, p.canonical_id) AS canonical_id, p.segment\n  FROM {} p\n  LEFT JOIN {} m ON m.merged_id = p.canonical_id",
            quote(&before),
            quote(&merges)
        )
    } else {
        format!("p.canonical_id, p.segment\n  FROM {} p", quote(&before))
    };
    let at = format!("TIMESTAMP {}", string(as_of));
    let sql = format!(
        "WITH before AS (\n  SELECT DISTINCT {survivor}\n),\nnow AS (\n  SELECT DISTINCT canonical_id, segment FROM {segments}\n)\n\
         SELECT n.canonical_id, n.segment, 'enter' AS change, {at} AS at, {run} AS run\n\
         FROM now n\n\
         LEFT JOIN before b ON b.canonical_id = n.canonical_id AND b.segment = n.segment\n\
         WHERE b.canonical_id IS NULL\n\
         UNION ALL\n\
         SELECT b.canonical_id, b.segment, 'exit' AS change, {at} AS at, {run} AS run\n\
         FROM before b\n\
         LEFT JOIN now n ON n.canonical_id = b.canonical_id AND n.segment = b.segment\n\
         WHERE n.canonical_id IS NULL\n\
         ORDER BY segment, change, canonical_id",
        segments = quote(&format!("{entity}_segments")),
        run = string(run),
    );
    let changes = engine.query(&sql);
    engine.context().deregister_table(before.as_str()).ok();
    changes
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};

    fn memberships(rows: &[(&str, &str)]) -> Table {
        let schema = Arc::new(Schema::new(vec![
            Field::new("canonical_id", DataType::Utf8, false),
            Field::new("segment", DataType::Utf8, false),
        ]));
        let ids: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let segments: Vec<&str> = rows.iter().map(|r| r.1).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(StringArray::from(segments)),
            ],
        )
        .unwrap();
        Table {
            schema,
            batches: vec![batch],
        }
    }

    fn engine(now: &[(&str, &str)], merges: Option<&[(&str, &str)]>) -> BatchEngine {
        let engine = BatchEngine::with_threads(1).unwrap();
        let t = memberships(now);
        engine
            .register_batches("c_segments", t.schema, t.batches)
            .unwrap();
        if let Some(merges) = merges {
            let t = memberships(merges);
            let schema = Arc::new(Schema::new(vec![
                Field::new("merged_id", DataType::Utf8, false),
                Field::new("into_id", DataType::Utf8, false),
            ]));
            let batch =
                RecordBatch::try_new(schema.clone(), t.batches[0].columns().to_vec()).unwrap();
            engine
                .register_batches("c_id_merges", schema, vec![batch])
                .unwrap();
        }
        engine
    }

    fn rows(t: &Table) -> Vec<String> {
        let mut out = Vec::new();
        for b in &t.batches {
            let col = |i: usize| b.column(i).as_string::<i32>().clone();
            let (id, seg, change, run) = (col(0), col(1), col(2), col(4));
            assert_eq!(b.column(3).null_count(), 0);
            for r in 0..b.num_rows() {
                out.push(format!(
                    "{} {} {} {}",
                    change.value(r),
                    id.value(r),
                    seg.value(r),
                    run.value(r)
                ));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_first_run_enters_everybody() {
        let e = engine(&[("a", "vip"), ("b", "vip"), ("a", "new")], Some(&[]));
        let t = segment_changes(&e, "c", None, "2024-12-01 00:00:00", "r1").unwrap();
        assert_eq!(
            rows(&t),
            ["enter a new r1", "enter a vip r1", "enter b vip r1"]
        );
    }

    #[test]
    fn changes_are_counted_on_the_survivors_of_merges() {
        // b merged into a: b's vip membership is a's now, not an exit plus an enter; a's `new`
        // ended; c is gone (exit under its old id); d is new in vip.
        let e = engine(&[("a", "vip"), ("d", "vip")], Some(&[("b", "a")]));
        let before = memberships(&[("a", "new"), ("b", "vip"), ("c", "vip")]);
        let t = segment_changes(&e, "c", Some(before), "2024-12-02 00:00:00", "r2").unwrap();
        assert_eq!(
            rows(&t),
            ["enter d vip r2", "exit a new r2", "exit c vip r2"]
        );
    }

    #[test]
    fn without_a_merges_table_ids_are_compared_as_they_are() {
        let e = engine(&[("a", "vip")], None);
        let before = memberships(&[("a", "vip"), ("b", "vip")]);
        let t = segment_changes(&e, "c", Some(before), "2024-12-02 00:00:00", "r2").unwrap();
        assert_eq!(rows(&t), ["exit b vip r2"]);
    }
}
