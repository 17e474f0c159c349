//! Tracked events into the operators: each logged event (a normalized Segment message) becomes
//! the rows its `[ingest.<source>]` mappings make of it, typed by the source's columns, and goes
//! through the [`StreamEngine`]. A field that does not fit its column refuses that row, with the
//! reason, never silently.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cdp_compiler::config::IngestMapping;
use cdp_compiler::ir::{self, SourceId};
use serde_json::Value as Json;

use super::{StreamEngine, Value};

/// The mappings of a project, by source.
pub struct Feed {
    mappings: BTreeMap<String, IngestMapping>,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    pub events: u64,
    pub rows: u64,
    /// Rows refused: (event's messageId, reason).
    pub refused: Vec<(String, String)>,
    pub elapsed: Duration,
}

impl Feed {
    pub fn new(mappings: BTreeMap<String, IngestMapping>) -> Feed {
        Feed { mappings }
    }

    /// The typed rows an event makes: per mapped source, the row or why not.
    pub fn rows(
        &self,
        project: &ir::Project,
        event: &Json,
    ) -> Vec<(SourceId, Result<Vec<Value>, String>)> {
        crate::tracking::rows(&self.mappings, event)
            .into_iter()
            .filter_map(|(name, fields)| {
                let i = project.sources.iter().position(|s| s.meta.name == name)?;
                let source = &project.sources[i];
                let row = source
                    .columns
                    .iter()
                    .map(|c| match fields.get(&c.name) {
                        None => Ok(Value::Null),
                        Some(v) => Value::from_json(&c.ty, v)
                            .map_err(|e| format!("{name}.{}: {e}", c.name)),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .and_then(|row| {
                        for (c, v) in source.columns.iter().zip(&row) {
                            if v.is_null() && !c.nullable {
                                return Err(format!(
                                    "{name}.{}: no value for a column that is not nullable",
                                    c.name
                                ));
                            }
                        }
                        Ok(row)
                    });
                Some((SourceId(i as u32), row))
            })
            .collect()
    }

    /// Feeds the rows of the project's source files (`[sources.<name>]` paths under `root`) to
    /// the engine in event-time order, timeless rows first, so that the stream starts from
    /// what a batch run reads ([`StreamEngine::start_from`]: one evaluation at the end). Rows that do not fit their source are counted, as `cdp run`
    /// keeps them aside. Returns (rows fed, rows refused).
    pub fn backfill(
        engine: &mut StreamEngine,
        root: &std::path::Path,
        sources: &BTreeMap<String, cdp_compiler::config::SourceBinding>,
    ) -> Result<(u64, u64), String> {
        let (rows, refused) = Feed::read_files(&engine.project, root, sources)?;
        let fed = rows.len() as u64;
        engine.start_from(
            rows.into_iter().map(|(_, source, row)| (source, row)),
            i64::MIN,
        );
        Ok((fed, refused))
    }

    /// The rows of the project's source files as [`Feed::backfill`] feeds them: (event time,
    /// or `i64::MIN` for timeless rows; source; values), sorted; and the rows refused.
    #[allow(clippy::type_complexity)]
    pub fn read_files(
        project: &ir::Project,
        root: &std::path::Path,
        sources: &BTreeMap<String, cdp_compiler::config::SourceBinding>,
    ) -> Result<(Vec<(i64, SourceId, Vec<Value>)>, u64), String> {
        let mut rows: Vec<(i64, SourceId, Vec<Value>)> = Vec::new();
        let mut refused = 0;
        for (i, source) in project.sources.iter().enumerate() {
            let Some(binding) = sources.get(&source.meta.name) else {
                continue;
            };
            if binding.path.is_none() {
                continue;
            }
            let files = crate::load::SourceFiles::from_binding(root, &source.meta.name, binding)
                .map_err(|e| e.to_string())?;
            let loaded =
                crate::load::read_source_with(source, &files, crate::load::BadRows::KeepAside)
                    .map_err(|e| e.to_string())?;
            refused += loaded.rejects.len() as u64;
            for row in super::value::rows_of(source, &loaded.batches) {
                let t = source
                    .time
                    .and_then(|c| row[c.index()].as_micros())
                    .unwrap_or(i64::MIN);
                rows.push((t, SourceId(i as u32), row));
            }
        }
        rows.sort_by_key(|(t, s, _)| (*t, s.0));
        Ok((rows, refused))
    }

    /// Feeds events (in log order) to the engine and advances it to its clock.
    pub fn replay<'a>(
        &self,
        engine: &mut StreamEngine,
        events: impl IntoIterator<Item = &'a Json>,
    ) -> Replayed {
        let started = Instant::now();
        let mut out = Replayed::default();
        let project = engine.project.clone();
        for event in events {
            out.events += 1;
            for (source, row) in self.rows(&project, event) {
                match row {
                    Ok(row) => {
                        out.rows += 1;
                        engine.ingest(source, row);
                    }
                    Err(reason) => out.refused.push((
                        event["messageId"].as_str().unwrap_or_default().to_string(),
                        reason,
                    )),
                }
            }
        }
        let clock = engine.clock();
        engine.advance(clock);
        out.elapsed = started.elapsed();
        out
    }
}
