//! Checkpoints: the operators' whole state (identifiers and their union-find, every profile's
//! aggregate states, pending future events, memberships, journey states, timers, late rows,
//! counts, the clock) written to one file, so that a restart reads it and replays only the
//! log after it instead of the source files and the whole log.
//!
//! A checkpoint is worth something only for the inputs it was computed from: its header
//! carries a `basis` (a digest the caller computes of the project, the options and the source
//! files) and the log offset it reflects. A caller whose basis differs starts from scratch.
//!
//! The file: `CDPSTATE`, the header's length (u32 LE) and header, the state's length (u64 LE)
//! and state (both postcard), then the CRC-32 of everything before it. It is written to a
//! temporary file, synced and renamed over the old one: a crash leaves the old checkpoint or
//! the new one, never half of one.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use cdp_compiler::ir::{self, EntityId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    plan_entity, Counts, EntityState, JourneyEvent, Late, Options, StreamEngine, Transition,
};
use crate::eventlog::crc32;

const MAGIC: &[u8; 8] = b"CDPSTATE";
/// Bumped whenever the state's layout changes: an older checkpoint is then ignored.
pub const FORMAT: u32 = 3;

/// What a checkpoint reflects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// A digest of what the state was computed from (project, options, source files).
    pub basis: String,
    /// The event log offset just past the last event the state includes.
    pub log_offset: u64,
    /// The caller's own counters (events applied, rows refused…), restored with the state.
    pub counters: Vec<(String, u64)>,
    /// When it was written (wall clock, milliseconds since the epoch).
    pub written_at_ms: i64,
}

impl Header {
    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, v)| *v)
    }
}

#[derive(Serialize)]
struct StateRef<'a> {
    clock: i64,
    lateness: i64,
    late: &'a [Late],
    counts: Counts,
    entities: &'a [EntityState],
    transitions: &'a [Transition],
    journey_events: &'a [JourneyEvent],
}

#[derive(Deserialize)]
struct State {
    clock: i64,
    lateness: i64,
    late: Vec<Late>,
    counts: Counts,
    entities: Vec<EntityState>,
    transitions: Vec<Transition>,
    journey_events: Vec<JourneyEvent>,
}

impl StreamEngine {
    /// The engine's state as bytes (transitions and journey steps not taken yet included).
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        postcard::to_stdvec(&StateRef {
            clock: self.clock,
            lateness: self.lateness,
            late: &self.late,
            counts: self.counts,
            entities: &self.entities,
            transitions: &self.transitions,
            journey_events: &self.journey_events,
        })
        .map_err(|e| format!("writing the operators' state: {e}"))
    }

    /// An engine with the state of a [`StreamEngine::snapshot`] of an engine of `project`.
    pub fn restore(
        project: Arc<ir::Project>,
        options: Options,
        bytes: &[u8],
    ) -> Result<StreamEngine, String> {
        let state: State = postcard::from_bytes(bytes)
            .map_err(|e| format!("reading the operators' state: {e}"))?;
        let mut engine = StreamEngine::new(project.clone(), options);
        if state.entities.len() != project.entities.len() {
            return Err(format!(
                "the operators' state has {} entities, the project {}",
                state.entities.len(),
                project.entities.len()
            ));
        }
        if state.lateness != engine.lateness {
            return Err("the operators' state was written with another allowed lateness".into());
        }
        engine.clock = state.clock;
        engine.late = state.late;
        engine.counts = state.counts;
        engine.entities = state.entities;
        engine.transitions = state.transitions;
        engine.journey_events = state.journey_events;
        for (e, st) in engine.entities.iter_mut().enumerate() {
            st.plan = plan_entity(&project, EntityId(e as u32));
            st.index = st
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| ((n.key, n.text.clone()), i as u32))
                .collect();
            st.slot_of_id = st
                .profiles
                .iter()
                .enumerate()
                .filter(|(_, p)| p.alive)
                .map(|(i, p)| (p.id.clone(), i))
                .collect();
            let shape_ok = st.profiles.iter().filter(|p| p.alive).all(|p| {
                p.aggregates.len() == st.plan.aggregates.len()
                    && p.members.len() == st.plan.segments.len()
                    && p.journeys.len() == st.plan.journeys.len()
            });
            if !shape_ok {
                return Err("the operators' state does not fit the project's plan".into());
            }
        }
        Ok(engine)
    }
}

/// Writes a checkpoint atomically (temporary file, fsync, rename, fsync of the directory).
/// Returns the bytes written.
pub fn write(path: &Path, header: &Header, state: &[u8]) -> Result<u64, String> {
    let head = postcard::to_stdvec(header).map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + head.len() + 8 + state.len() + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(head.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(&(state.len() as u64).to_le_bytes());
    bytes.extend_from_slice(state);
    let crc = crc32(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| format!("{}: {e}", tmp.display());
    let mut file = std::fs::File::create(&tmp).map_err(fail)?;
    file.write_all(&bytes).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(bytes.len() as u64)
}

/// Reads a checkpoint: `None` when there is none, an error when the file is damaged.
pub fn read(path: &Path) -> Result<Option<(Header, Vec<u8>)>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let damaged = || format!("{}: the checkpoint is damaged", path.display());
    if bytes.len() < MAGIC.len() + 16 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(damaged());
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    if crc32(body).to_le_bytes() != tail {
        return Err(damaged());
    }
    let mut at = MAGIC.len();
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = body.get(*at..*at + n).ok_or_else(damaged)?;
        *at += n;
        Ok(s)
    };
    let n = u32::from_le_bytes(take(&mut at, 4)?.try_into().map_err(|_| damaged())?) as usize;
    let header: Header = postcard::from_bytes(take(&mut at, n)?).map_err(|_| damaged())?;
    let n = u64::from_le_bytes(take(&mut at, 8)?.try_into().map_err(|_| damaged())?) as usize;
    let state = take(&mut at, n)?.to_vec();
    Ok(Some((header, state)))
}

/// A digest of what the operators' state is computed from: the checkpoint format, the project
/// (its IR), the `[stream]` and `[ingest]` settings, and each source file's path, size and
/// modification time.
pub fn basis(
    project: &ir::Project,
    config: &cdp_compiler::config::ProjectConfig,
    root: &Path,
) -> Result<String, String> {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(FORMAT.to_le_bytes());
    h.update(serde_json::to_vec(project).map_err(|e| e.to_string())?);
    h.update(config.stream.allowed_lateness_ms()?.to_le_bytes());
    h.update(serde_json::to_vec(&config.ingest).map_err(|e| e.to_string())?);
    for (name, binding) in &config.sources {
        if binding.path.is_none() {
            continue;
        }
        let files = crate::load::SourceFiles::from_binding(root, name, binding)
            .map_err(|e| e.to_string())?;
        for path in &files.paths {
            let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let modified = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            h.update(path.to_string_lossy().as_bytes());
            h.update(meta.len().to_le_bytes());
            h.update(modified.to_le_bytes());
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

// Serde helpers for the shared strings and rows of the state (serde's `rc` feature is not
// enabled: turning it on would rebuild every crate that uses serde, DataFusion included).

pub(super) mod arc_str {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(d).map(Arc::from)
    }
}

pub(super) mod arc_values {
    use super::super::Value;
    use super::*;

    pub fn serialize<S: Serializer>(v: &Arc<[Value]>, s: S) -> Result<S::Ok, S::Error> {
        v[..].serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[Value]>, D::Error> {
        Vec::<Value>::deserialize(d).map(Arc::from)
    }
}

pub(super) mod anchor {
    use super::*;

    pub fn serialize<S: Serializer>(v: &(i64, u64, Arc<str>), s: S) -> Result<S::Ok, S::Error> {
        (v.0, v.1, &*v.2).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(i64, u64, Arc<str>), D::Error> {
        let (a, b, c) = <(i64, u64, String)>::deserialize(d)?;
        Ok((a, b, Arc::from(c)))
    }
}

pub(super) mod pending {
    use super::super::Value;
    use super::*;

    type Pending = Vec<(i64, ir::BehaviorId, Arc<[Value]>)>;

    pub fn serialize<S: Serializer>(v: &Pending, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(t, b, row)| (t, b, &row[..])))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Pending, D::Error> {
        let v = Vec::<(i64, ir::BehaviorId, Vec<Value>)>::deserialize(d)?;
        Ok(v.into_iter()
            .map(|(t, b, r)| (t, b, Arc::from(r)))
            .collect())
    }
}

pub(super) mod carried {
    use super::super::JourneyState;
    use super::*;

    type Carried = Vec<Vec<(Arc<str>, JourneyState)>>;

    pub fn serialize<S: Serializer>(v: &Carried, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            v.iter()
                .map(|list| list.iter().map(|(id, j)| (&**id, j)).collect::<Vec<_>>()),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Carried, D::Error> {
        let v = Vec::<Vec<(String, JourneyState)>>::deserialize(d)?;
        Ok(v.into_iter()
            .map(|list| list.into_iter().map(|(id, j)| (Arc::from(id), j)).collect())
            .collect())
    }
}

pub(super) mod gone {
    use super::*;

    type Gone = Vec<(Arc<str>, Vec<bool>)>;

    pub fn serialize<S: Serializer>(v: &Gone, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(id, m)| (&**id, m)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Gone, D::Error> {
        let v = Vec::<(String, Vec<bool>)>::deserialize(d)?;
        Ok(v.into_iter().map(|(id, m)| (Arc::from(id), m)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format: FORMAT,
            basis: "b".into(),
            log_offset: 42,
            counters: vec![("events".into(), 7)],
            written_at_ms: 1,
        }
    }

    #[test]
    fn a_written_checkpoint_reads_back_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream").join("checkpoint");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, &header(), b"state bytes").unwrap();
        let (h, state) = read(&path).unwrap().unwrap();
        assert_eq!((h, state.as_slice()), (header(), &b"state bytes"[..]));
        assert_eq!(header().counter("events"), 7);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read(&path).unwrap_err().contains("damaged"));
        std::fs::write(&path, &bytes[..n - 3]).unwrap();
        assert!(read(&path).unwrap_err().contains("damaged"));
    }
}
