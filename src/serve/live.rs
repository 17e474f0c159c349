//! The streaming operators inside the server: every event the tracking API writes to the
//! durable log goes through a [`StreamEngine`] right after its 200, so that
//! `GET /api/v1/live/{entity}/{key}/{value}` serves the values it changed at once and its
//! segment entries and exits (with exits caused by time passing) and its journey steps, goals,
//! exits and activations go to the transition log.
//!
//! The state's durable form is a checkpoint (`<storage>/stream/checkpoint`, written by
//! [`Live::checkpoint_due`] and `App::checkpoint_live` every `[stream] checkpoint_interval`) plus the log after its offset. At
//! start the engine reads the checkpoint if it was computed from the same project, options and
//! source files, and replays the log after it; otherwise it reads the project's source files
//! (what a batch run reads) and replays the whole log. Either way every acknowledged event
//! counts once after a crash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cdp_compiler::config::ProjectConfig;
use cdp_compiler::ir;
use cdp_runtime::eventlog::EventLog;
use cdp_runtime::online::{live_schema, Cell, LiveProfile, LiveUpdate, OnlineStore, Position};
use cdp_runtime::stream::checkpoint::{self, Header};
use cdp_runtime::stream::journey::{Happened, Status};
use cdp_runtime::stream::{
    eval::ProfileValues, feed::Feed, JourneyEvent, Options, StreamEngine, Transition, Unpublished,
};
use cdp_runtime::transitions::{self, What};
use cdp_runtime::webhook::Delivery;
use serde_json::{json, Value};

/// The engine and how far into the log it has read.
pub struct Live {
    engine: StreamEngine,
    feed: Feed,
    /// The log offset just past the last event applied.
    offset: u64,
    events: u64,
    refused: u64,
    /// Rows of the source files fed at start, and those that did not fit their source.
    file_rows: u64,
    file_rejects: u64,
    checkpoints: Checkpoints,
    /// Per entity: the profiles (and merges) a failed [`Live::publish`] did not write.
    unwritten: HashMap<usize, Unpublished>,
    /// Profile records written to the online store since the start.
    published: u64,
    /// Time spent applying events, and writing profiles to the online store, since the start.
    apply_time: std::time::Duration,
    publish_time: std::time::Duration,
}

/// A checkpoint to write: where, its header and the state's bytes.
pub type Due = (PathBuf, Header, Vec<u8>);

/// Where and when the engine's state is checkpointed, and what the last one was.
struct Checkpoints {
    path: PathBuf,
    /// Digest of what the state is computed from: a checkpoint of another basis is not used.
    basis: String,
    interval_ms: u64,
    /// The last checkpoint written or read: (log offset, when).
    last: Option<(u64, Instant)>,
    /// The log offset of the checkpoint the engine started from, if it did.
    restored_from: Option<u64>,
    /// Why the checkpoint at start was not used (damaged, another basis), if there was one.
    not_used: Option<String>,
    /// Bytes and milliseconds of the last checkpoint written.
    written: Option<(u64, u128)>,
    /// Events applied since the engine started (from the checkpoint or from scratch).
    replayed: u64,
}

impl Live {
    /// An engine started from the checkpoint under `storage` when it was computed from the same
    /// project, options and source files, else from the project's source files (as a batch run
    /// reads them); the log's events follow with [`Live::catch_up`].
    pub fn new(
        project: ir::Project,
        config: &ProjectConfig,
        root: &Path,
        storage: &Path,
    ) -> Result<Live, String> {
        let options = Options {
            allowed_lateness_ms: config.stream.allowed_lateness_ms()?,
        };
        let project = Arc::new(project);
        let mut checkpoints = Checkpoints {
            path: storage.join("stream").join("checkpoint"),
            basis: checkpoint::basis(&project, config, root)?,
            interval_ms: config.stream.checkpoint_interval_ms()?,
            last: None,
            restored_from: None,
            not_used: None,
            written: None,
            replayed: 0,
        };
        let restored = match checkpoint::read(&checkpoints.path) {
            Ok(Some((header, state)))
                if header.format == checkpoint::FORMAT && header.basis == checkpoints.basis =>
            {
                match StreamEngine::restore(project.clone(), options, &state) {
                    Ok(engine) => Some((header, engine)),
                    Err(e) => {
                        checkpoints.not_used = Some(e);
                        None
                    }
                }
            }
            Ok(Some(_)) => {
                checkpoints.not_used = Some(
                    "it was computed from another version of the project, its options or its \
                     source files"
                        .into(),
                );
                None
            }
            Ok(None) => None,
            Err(e) => {
                checkpoints.not_used = Some(e);
                None
            }
        };
        let feed = Feed::new(config.ingest.clone());
        if let Some((header, engine)) = restored {
            checkpoints.last = Some((header.log_offset, Instant::now()));
            checkpoints.restored_from = Some(header.log_offset);
            return Ok(Live {
                engine,
                feed,
                offset: header.log_offset,
                events: header.counter("events"),
                refused: header.counter("refused"),
                file_rows: header.counter("file_rows"),
                file_rejects: header.counter("file_rejects"),
                checkpoints,
                unwritten: HashMap::new(),
                published: 0,
                apply_time: Default::default(),
                publish_time: Default::default(),
            });
        }
        let mut engine = StreamEngine::new(project, options);
        let (file_rows, file_rejects) = Feed::backfill(&mut engine, root, &config.sources)?;
        engine.take_transitions();
        engine.take_journey_events();
        let mut live = Live {
            engine,
            feed,
            offset: 0,
            events: 0,
            refused: 0,
            file_rows,
            file_rejects,
            checkpoints,
            unwritten: HashMap::new(),
            published: 0,
            apply_time: Default::default(),
            publish_time: Default::default(),
        };
        // What the source files hold is the batch runs' part: only what the log's events
        // (and the time they move) change goes to the online store.
        live.forget_unpublished();
        Ok(live)
    }

    /// Writes the profiles the log's events changed since the last call (their values,
    /// memberships, journey places or identifiers, by an event or by the time events moved)
    /// to the online store, with their values as of the clock, and records the profiles merged
    /// away. Returns how many profiles it wrote. The records replace those of the batch run
    /// the store holds, until a sync writes the next run's.
    pub fn publish(&mut self, online: &OnlineStore) -> Result<usize, String> {
        let started = Instant::now();
        let written = self.publish_changes(online);
        self.publish_time += started.elapsed();
        written
    }

    fn publish_changes(&mut self, online: &OnlineStore) -> Result<usize, String> {
        let mut written = 0;
        for e in 0..self.engine.project().entities.len() {
            let entity = ir::EntityId(e as u32);
            let (mut ids, mut merged) = self.engine.take_unpublished(entity);
            if let Some((more_ids, more_merged)) = self.unwritten.remove(&e) {
                ids.extend(more_ids);
                ids.sort_unstable();
                ids.dedup();
                merged.splice(0..0, more_merged);
            }
            if ids.is_empty() && merged.is_empty() {
                continue;
            }
            let update = LiveUpdate {
                profiles: ids
                    .iter()
                    .filter_map(|id| self.live_profile(entity, id))
                    .collect(),
                merged: merged
                    .iter()
                    .map(|(gone, into)| (gone.to_string(), into.to_string()))
                    .collect(),
            };
            let p = self.engine.project();
            let name = &p.entities[e].meta.name;
            if let Err(error) =
                online.put_live(name, &live_schema(p, entity), self.engine.clock(), &update)
            {
                // Written at the next call, with the values of then.
                self.unwritten.insert(e, (ids, merged));
                return Err(format!(
                    "writing live profiles to the online store: {error}"
                ));
            }
            written += update.profiles.len();
        }
        self.published += written as u64;
        Ok(written)
    }

    fn forget_unpublished(&mut self) {
        for e in 0..self.engine.project().entities.len() {
            self.engine.take_unpublished(ir::EntityId(e as u32));
        }
    }

    /// The identifiers of a live profile: (its key's priority, first seen, key, value).
    fn ranked_identifiers(
        &self,
        entity: ir::EntityId,
        id: &str,
    ) -> Vec<(u64, i64, String, String)> {
        let e = &self.engine.project().entities[entity.index()];
        self.engine
            .identifiers_of(entity, id)
            .into_iter()
            .map(|(key, value, seen)| {
                let priority = e
                    .keys
                    .iter()
                    .find(|k| k.name == key)
                    .map_or(u64::MAX, |k| k.priority);
                (priority, seen, key, value)
            })
            .collect()
    }

    /// A profile as the online store holds it, with its values as of the clock.
    fn live_profile(&self, entity: ir::EntityId, id: &str) -> Option<LiveProfile> {
        let p = self.engine.project();
        let (canonical, values) = self.engine.lookup(entity, "canonical_id", id)?;
        // Strongest key first, then by value, as a sync orders them.
        let mut keys = self.ranked_identifiers(entity, id);
        keys.sort_by(|a, b| (a.0, &a.2, &a.3).cmp(&(b.0, &b.2, &b.3)));
        let mut cells: Vec<Cell> = p
            .attributes
            .iter()
            .enumerate()
            .filter(|(_, a)| a.entity == entity)
            .map(|(i, _)| values.attributes[i].to_cell())
            .collect();
        cells.extend(
            p.features
                .iter()
                .enumerate()
                .filter(|(_, f)| f.entity == entity)
                .map(|(i, _)| values.features[i].to_cell()),
        );
        let segments = member_segments(p, entity, &values)
            .map(str::to_string)
            .collect();
        // As a sync writes a journey state's times: the text of a timestamp cell.
        let time = |t: i64| Some(cdp_compiler::sql::dialect::format_micros(t));
        let journeys = self
            .engine
            .journeys_of(entity, id)
            .into_iter()
            .map(|(j, state)| Position {
                journey: p.journeys[j.index()].meta.name.clone(),
                node: i64::from(state.node),
                status: Some(state.status.as_str().to_string()),
                since: time(state.node_since),
                entered_at: time(state.entered_at),
                finished_at: state.finished_at.and_then(time),
            })
            .collect();
        Some(LiveProfile {
            canonical_id: canonical.to_string(),
            keys: keys.into_iter().map(|(_, _, k, v)| (k, v)).collect(),
            values: cells,
            segments,
            journeys,
        })
    }

    /// The engine's state when a checkpoint is due (none yet, or the interval has passed and
    /// events were applied since the last one): the header and the state's bytes, for
    /// [`checkpoint::write`] outside the engine's lock. Only call it once the transitions of
    /// every applied event are in the transition log: a restart does not log them again.
    pub fn checkpoint_due(&mut self) -> Option<Result<Due, String>> {
        let c = &self.checkpoints;
        let due = match c.last {
            None => true,
            Some((offset, at)) => {
                offset != self.offset && at.elapsed().as_millis() >= u128::from(c.interval_ms)
            }
        };
        if !due {
            return None;
        }
        let header = Header {
            format: checkpoint::FORMAT,
            basis: c.basis.clone(),
            log_offset: self.offset,
            counters: vec![
                ("events".into(), self.events),
                ("refused".into(), self.refused),
                ("file_rows".into(), self.file_rows),
                ("file_rejects".into(), self.file_rejects),
            ],
            written_at_ms: chrono::Utc::now().timestamp_millis(),
        };
        self.checkpoints.last = Some((self.offset, Instant::now()));
        Some(
            self.engine
                .snapshot()
                .map(|state| (self.checkpoints.path.clone(), header, state)),
        )
    }

    /// Records a checkpoint written: its size and how long the snapshot and write took.
    pub fn checkpoint_written(&mut self, bytes: u64, millis: u128) {
        self.checkpoints.written = Some((bytes, millis));
    }

    /// Applies the events logged since the last call; returns the log offset read to and the
    /// transitions the events (and the timers the new clock fired) caused, as the transition
    /// log stores them — except those of events up to `logged_to`, which an earlier engine
    /// has logged already.
    pub fn catch_up(
        &mut self,
        log: &EventLog,
        logged_to: u64,
    ) -> Result<(u64, Vec<transitions::Transition>), String> {
        let records = log.read_from(self.offset)?;
        let split = records.partition_point(|(end, _)| *end <= logged_to);
        let (old, new) = records.split_at(split);
        self.apply(old)?;
        self.engine.take_transitions();
        self.engine.take_journey_events();
        // Their records were written (and flushed) by the earlier engine, or a sync has
        // replaced them with a batch run's since, which then stands.
        self.forget_unpublished();
        self.apply(new)?;
        let taken = self.engine.take_transitions();
        let steps = self.engine.take_journey_events();
        let project = self.engine.project();
        let mut out = taken
            .into_iter()
            .map(|t| logged(project, &t))
            .collect::<Vec<_>>();
        out.extend(steps.iter().map(|e| journey_logged(project, e)));
        Ok((self.offset, out))
    }

    fn apply(&mut self, records: &[(u64, Vec<u8>)]) -> Result<(), String> {
        let Some(&(end, _)) = records.last() else {
            return Ok(());
        };
        let started = Instant::now();
        let events: Vec<Value> = records
            .iter()
            .map(|(_, bytes)| serde_json::from_slice(bytes))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the event log holds a record that is not JSON: {e}"))?;
        let done = self.feed.replay(&mut self.engine, &events);
        self.offset = end;
        self.events += done.events;
        self.checkpoints.replayed += done.events;
        self.refused += done.refused.len() as u64;
        self.apply_time += started.elapsed();
        Ok(())
    }

    /// The live values of the profile holding `key` = `value`.
    pub fn profile(&self, entity: &str, key: &str, value: &str) -> Option<Value> {
        let p = self.engine.project();
        let e = p.entities.iter().position(|x| x.meta.name == entity)?;
        let id = ir::EntityId(e as u32);
        let (canonical, values) = self.engine.lookup(id, key, value)?;
        let named = |items: Vec<(&str, Value)>| {
            Value::Object(items.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        };
        let attributes = p
            .attributes
            .iter()
            .enumerate()
            .filter(|(_, a)| a.entity == id)
            .map(|(i, a)| (a.meta.name.as_str(), values.attributes[i].to_json()))
            .collect();
        let features = p
            .features
            .iter()
            .enumerate()
            .filter(|(_, f)| f.entity == id)
            .map(|(i, f)| (f.meta.name.as_str(), values.features[i].to_json()))
            .collect();
        let segments: Vec<&str> = member_segments(p, id, &values).collect();
        Some(json!({
            "entity": entity,
            "canonical_id": canonical,
            "as_of_micros": self.engine.clock(),
            "attributes": named(attributes),
            "features": named(features),
            "segments": segments,
        }))
    }

    /// The webhook deliveries of segment entries among `logged`: one POST per entry into a
    /// segment that a webhook activation sends, with the profile's live values in the
    /// activation's columns. (Journey activations are posted from the batch runs' tables, see
    /// `cdp_runtime::activate`, so that a profile gets each journey message once.)
    pub fn webhooks(&self, logged: &[transitions::Transition]) -> Vec<Delivery> {
        let p = self.engine.project();
        let mut entries: Vec<(&ir::Activation, &str, &transitions::Transition)> = Vec::new();
        for t in logged {
            let What::SegmentEnter { segment } = &t.what else {
                continue;
            };
            for a in &p.activations {
                let bound = a
                    .segment
                    .is_some_and(|s| &p.segments[s.index()].meta.name == segment);
                if let (true, ir::Destination::Webhook { url }) = (bound, &a.destination) {
                    entries.push((a, url, t));
                }
            }
        }
        if entries.is_empty() {
            return Vec::new();
        }
        // The identifiers of each profile that entered, strongest key first and of one key the
        // value seen first (as batch exports choose them).
        let mut keys: HashMap<&str, Vec<(u64, i64, String, String)>> = HashMap::new();
        for (a, _, t) in &entries {
            if keys.contains_key(t.profile.as_str()) {
                continue;
            }
            keys.insert(
                t.profile.as_str(),
                self.ranked_identifiers(a.entity, &t.profile),
            );
        }
        for list in keys.values_mut() {
            list.sort();
        }
        entries
            .into_iter()
            .map(|(a, url, t)| {
                let entity = &p.entities[a.entity.index()];
                let ids = keys.get(t.profile.as_str()).map_or(&[][..], Vec::as_slice);
                let values = self
                    .engine
                    .lookup(a.entity, "canonical_id", &t.profile)
                    .map(|(_, v)| v);
                let mut row = serde_json::Map::new();
                row.insert("canonical_id".into(), json!(t.profile));
                row.insert("primary_key".into(), json!(ids.first().map(|k| &k.3)));
                for column in &a.columns {
                    let (name, value) = match column {
                        ir::ProfileColumn::Key(k) => {
                            let name = &entity.keys[k.index()].name;
                            let v = ids.iter().find(|x| &x.2 == name).map(|x| json!(x.3));
                            (name, v.unwrap_or(Value::Null))
                        }
                        ir::ProfileColumn::Attribute(x) => (
                            &p.attributes[x.index()].meta.name,
                            values
                                .as_ref()
                                .map_or(Value::Null, |v| v.attributes[x.index()].to_json()),
                        ),
                        ir::ProfileColumn::Feature(x) => (
                            &p.features[x.index()].meta.name,
                            values
                                .as_ref()
                                .map_or(Value::Null, |v| v.features[x.index()].to_json()),
                        ),
                    };
                    row.insert(name.clone(), value);
                }
                let segment = match &t.what {
                    What::SegmentEnter { segment } => segment.clone(),
                    _ => String::new(),
                };
                Delivery {
                    activation: a.meta.name.clone(),
                    url: url.to_string(),
                    body: json!({
                        "activation": a.meta.name,
                        "segment": segment,
                        "event": "enter",
                        "entered_at_ms": t.at_ms,
                        "rows": [Value::Object(row)],
                    }),
                }
            })
            .collect()
    }

    /// What the engine has seen, for `/api/v1/live`.
    pub fn status(&self) -> Value {
        let c = self.engine.counts();
        let (bytes, profiles) = self.engine.state_bytes();
        json!({
            "file_rows": self.file_rows,
            "file_rows_refused": self.file_rejects,
            "events": self.events,
            "rows": c.rows,
            "rows_refused": self.refused,
            "late_rows": c.late,
            "rows_without_key": c.without_key,
            "rows_without_time": c.untimed,
            "merges": c.merges,
            "profiles": profiles,
            "state_bytes": bytes,
            "clock_micros": self.engine.clock(),
            "watermark_micros": self.engine.watermark(),
            "log_offset": self.offset,
            "online_store_profiles_written": self.published,
            "seconds_applying_events": self.apply_time.as_secs_f64(),
            "seconds_writing_online_store": self.publish_time.as_secs_f64(),
            "checkpoint": {
                "restored_from_offset": self.checkpoints.restored_from,
                "not_used": self.checkpoints.not_used,
                "events_replayed_since_start": self.checkpoints.replayed,
                "last_offset": self.checkpoints.last.map(|(o, _)| o),
                "last_bytes": self.checkpoints.written.map(|(b, _)| b),
                "last_millis": self.checkpoints.written.map(|(_, ms)| ms as u64),
                "interval_ms": self.checkpoints.interval_ms,
            },
        })
    }
}

/// The names of the segments of `entity` that `values` are a member of, in project order.
fn member_segments<'a>(
    p: &'a ir::Project,
    entity: ir::EntityId,
    values: &'a ProfileValues,
) -> impl Iterator<Item = &'a str> + 'a {
    p.segments
        .iter()
        .zip(&values.segments)
        .filter(move |(s, v)| s.entity == entity && v.truth() == Some(true))
        .map(|(s, _)| s.meta.name.as_str())
}

fn logged(p: &ir::Project, t: &Transition) -> transitions::Transition {
    let segment = p.segments[t.segment.index()].meta.name.clone();
    transitions::Transition {
        at_ms: t.at.div_euclid(1000),
        entity: p.entities[t.entity.index()].meta.name.clone(),
        profile: t.canonical_id.to_string(),
        what: if t.entered {
            What::SegmentEnter { segment }
        } else {
            What::SegmentExit {
                segment,
                by_time: t.by_time,
            }
        },
    }
}

/// A journey step as the transition log stores it: reaching a node is a step named
/// `<stage>/<node>`, entering is the step `entry`, completing is the step `completed`.
fn journey_logged(p: &ir::Project, e: &JourneyEvent) -> transitions::Transition {
    let j = &p.journeys[e.journey.index()];
    let journey = j.meta.name.clone();
    let step = |step: String| What::JourneyStep {
        journey: journey.clone(),
        step,
    };
    let (at, what) = match &e.happened {
        Happened::Entered => (e.step_at, step("entry".into())),
        Happened::Reached { node, at } => {
            let stage = j
                .nodes
                .get(*node as usize)
                .and_then(|n| j.stages.get(n.stage as usize))
                .map_or("", String::as_str);
            (*at, step(format!("{stage}/{node}")))
        }
        Happened::Fired { activation, at } => (
            *at,
            What::Activation {
                activation: p.activations[activation.index()].meta.name.clone(),
                delivery: None,
            },
        ),
        Happened::Ended { status, at } => (
            *at,
            match status {
                Status::Converted => What::JourneyGoal {
                    journey: journey.clone(),
                },
                Status::Exited => What::JourneyExit {
                    journey: journey.clone(),
                    reason: "exit condition".into(),
                },
                Status::Completed | Status::Active => step("completed".into()),
            },
        ),
    };
    transitions::Transition {
        at_ms: at.div_euclid(1000),
        entity: p.entities[e.entity.index()].meta.name.clone(),
        profile: e.canonical_id.to_string(),
        what,
    }
}
