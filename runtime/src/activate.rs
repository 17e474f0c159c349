//! What the server hands on from a committed run: its segment entries and exits to the
//! transition log ([`log_segment_changes`]), and its webhook activations to the outbox.
//!
//! Webhook activations of a committed run: each profile a journey's `activate` step fired for
//! in the run (the `<journey>_activations` tables) becomes one POST to the activation's webhook,
//! queued in the [`Outbox`] (delivered at least once, see [`crate::webhook`]).
//!
//! The body: `{"activation", "journey", "run", "fired_at", "rows": [{"canonical_id",
//! "primary_key", <columns>…}]}` with the activation's columns read from the online store, as
//! the batch exports write them. A run is queued once: the outbox's database remembers the runs
//! it queued, so a restart or a second call does not send again.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::DataType;
use serde_json::{json, Map, Value};

use cdp_compiler::ir;

use crate::error::{Error, Result};
use crate::online::OnlineStore;
use crate::store::{Manifest, Storage};
use crate::transitions::{Transition, TransitionLog, What};
use crate::webhook::{Delivery, Outbox};

/// Queues the webhook deliveries of `run`'s fired activations; returns how many were queued
/// (0 when the run was queued before).
pub fn queue_run(
    db: &sled::Db,
    outbox: &Outbox,
    storage: &Storage,
    run: &Manifest,
    project: &ir::Project,
    online: &OnlineStore,
    now_ms: i64,
) -> Result<usize> {
    let err = |e: String| Error::Internal(format!("queueing the run's webhooks: {e}"));
    let queued = db
        .open_tree("webhook_runs")
        .map_err(|e| err(e.to_string()))?;
    if queued
        .contains_key(run.run.as_bytes())
        .map_err(|e| err(e.to_string()))?
    {
        return Ok(0);
    }
    let mut count = 0;
    for journey in &project.journeys {
        let table = format!("{}_activations", journey.meta.name);
        let Some(stored) = run.tables.iter().find(|t| t.table == table) else {
            continue;
        };
        let entity = &project.entities[journey.entity.index()].meta.name;
        let (_, batches) = storage.read(stored)?;
        for batch in batches {
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| err(format!("{table} has no column {name}")))
            };
            // Texts as Utf8 whatever view or size the stored column has.
            let text = |name: &str| -> Result<_> {
                datafusion::arrow::compute::cast(column(name)?, &DataType::Utf8)
                    .map_err(|e| err(format!("{table}.{name}: {e}")))
            };
            let (ids, names) = (text("canonical_id")?, text("activation")?);
            let fired = column("fired_at")?;
            let (ids, names) = (ids.as_string::<i32>(), names.as_string::<i32>());
            let formatter = datafusion::arrow::util::display::ArrayFormatter::try_new(
                fired.as_ref(),
                &Default::default(),
            )
            .map_err(|e| err(e.to_string()))?;
            for row in 0..batch.num_rows() {
                if ids.is_null(row) || names.is_null(row) {
                    continue;
                }
                let Some(activation) = project
                    .activations
                    .iter()
                    .find(|a| a.meta.name == names.value(row))
                else {
                    continue;
                };
                let ir::Destination::Webhook { url } = &activation.destination else {
                    continue;
                };
                let id = ids.value(row);
                let profile_row = exported_row(project, activation, online, entity, id)?;
                let body = json!({
                    "activation": activation.meta.name,
                    "journey": journey.meta.name,
                    "run": run.run,
                    "fired_at": (!fired.is_null(row)).then(|| formatter.value(row).to_string()),
                    "rows": [profile_row],
                });
                outbox
                    .enqueue(
                        Delivery {
                            activation: activation.meta.name.clone(),
                            url: url.clone(),
                            body,
                        },
                        now_ms,
                    )
                    .map_err(err)?;
                count += 1;
            }
        }
    }
    queued
        .insert(run.run.as_bytes(), &(count as u64).to_be_bytes())
        .map_err(|e| err(e.to_string()))?;
    db.flush().map_err(|e| err(e.to_string()))?;
    Ok(count)
}

/// Appends `run`'s segment entries and exits (`<entity>_segment_history`) to the transition
/// log, once per run; returns how many were appended (0 when the run was logged before).
pub fn log_segment_changes(
    db: &sled::Db,
    log: &TransitionLog,
    storage: &Storage,
    run: &Manifest,
    project: &ir::Project,
) -> Result<usize> {
    let err = |e: String| Error::Internal(format!("logging the run's segment changes: {e}"));
    let logged = db
        .open_tree("transition_runs")
        .map_err(|e| err(e.to_string()))?;
    if logged
        .contains_key(run.run.as_bytes())
        .map_err(|e| err(e.to_string()))?
    {
        return Ok(0);
    }
    let mut transitions = Vec::new();
    for entity in &project.entities {
        let table = crate::history::table(&entity.meta.name);
        let Some(stored) = run.tables.iter().find(|t| t.table == table) else {
            continue;
        };
        for batch in storage.read(stored)?.1 {
            let text = |name: &str| -> Result<_> {
                let column = batch
                    .column_by_name(name)
                    .ok_or_else(|| err(format!("{table} has no column {name}")))?;
                datafusion::arrow::compute::cast(column, &DataType::Utf8)
                    .map_err(|e| err(format!("{table}.{name}: {e}")))
            };
            let (ids, segments, changes, at) = (
                text("canonical_id")?,
                text("segment")?,
                text("change")?,
                text("at")?,
            );
            let (ids, segments) = (ids.as_string::<i32>(), segments.as_string::<i32>());
            let (changes, at) = (changes.as_string::<i32>(), at.as_string::<i32>());
            for row in 0..batch.num_rows() {
                if ids.is_null(row) || segments.is_null(row) || changes.is_null(row) {
                    continue;
                }
                let segment = segments.value(row).to_string();
                let what = match changes.value(row) {
                    "enter" => What::SegmentEnter { segment },
                    _ => What::SegmentExit {
                        segment,
                        by_time: false,
                    },
                };
                let at_ms = (!at.is_null(row))
                    .then(|| crate::load::parse_timestamp(at.value(row)).ok())
                    .flatten()
                    .map_or(0, |micros| micros / 1000);
                transitions.push(Transition {
                    at_ms,
                    entity: entity.meta.name.clone(),
                    profile: ids.value(row).to_string(),
                    what,
                });
            }
        }
    }
    log.append(&transitions).map_err(err)?;
    logged
        .insert(
            run.run.as_bytes(),
            &(transitions.len() as u64).to_be_bytes(),
        )
        .map_err(|e| err(e.to_string()))?;
    db.flush().map_err(|e| err(e.to_string()))?;
    Ok(transitions.len())
}

/// One profile as an activation exports it: canonical id, primary key, then its columns.
fn exported_row(
    project: &ir::Project,
    activation: &ir::Activation,
    online: &OnlineStore,
    entity: &str,
    canonical_id: &str,
) -> Result<Value> {
    let profile = online.profile(entity, canonical_id)?;
    let mut row = Map::new();
    row.insert("canonical_id".into(), json!(canonical_id));
    let keys = profile.as_ref().map(|p| p.keys.as_slice()).unwrap_or(&[]);
    row.insert(
        "primary_key".into(),
        json!(keys.first().map(|k| k.value.clone())),
    );
    let e = &project.entities[activation.entity.index()];
    for column in &activation.columns {
        let name = match column {
            ir::ProfileColumn::Key(k) => e.keys[k.index()].name.clone(),
            ir::ProfileColumn::Attribute(a) => project.attributes[a.index()].meta.name.clone(),
            ir::ProfileColumn::Feature(f) => project.features[f.index()].meta.name.clone(),
        };
        let value = match column {
            ir::ProfileColumn::Key(_) => {
                json!(keys.iter().find(|k| k.key == name).map(|k| k.value.clone()))
            }
            _ => profile
                .as_ref()
                .and_then(|p| p.values.iter().find(|v| v.name == name))
                .map(|v| v.value.clone())
                .unwrap_or(Value::Null),
        };
        row.insert(name, value);
    }
    Ok(Value::Object(row))
}
