//! The online store: the latest values of every profile, kept in sled under
//! `<storage>/online` for point reads by canonical id or by any identity key.
//!
//! ```text
//! tree profiles  <entity> \0 <first canonical id>          → a block of records ([`Record`])
//! tree keys      <entity> \0 <first key name \0 key value> → a block of canonical ids
//! tree merges    <entity> \0 <merged id>                   → the id it lives on as now
//! tree schemas   <entity> \0 <run>                         → what a record's values are ([`Schema`])
//! tree meta      run                                       → the committed run the store reflects
//!                entities                                  → entities, their keys and counts
//!                format                                    → [`FORMAT`], the records' encoding
//! ```
//!
//! `profiles` and `keys` hold *blocks*: a run of neighbouring entries (in key order) packed into
//! one sled value under the key of its first entry, postcard `[(suffix, value)]`. sled costs
//! several microseconds per entry whatever its size, so a million profiles written one per
//! entry spend most of a sync in sled; in blocks of about [`PROFILE_BLOCK`] records or
//! [`KEY_BLOCK`] keys they are some ten thousand writes. A read finds the block with the
//! greatest key at or before the one it wants (one descending range step), and binary-searches
//! it without copying. Where a block ends is decided by its last entry's key alone (a hash of
//! it, [`ends_block`]), not by a count, so that a profile added or removed changes only its own
//! block, and a later sync that changes a few profiles rewrites a few blocks.
//!
//! A read is one lookup of `keys` (or a `get` of `merges`) and one of `profiles`. A record holds
//! its values already encoded, in the order of its run's [`Schema`] (names, kinds, types), so
//! that records stay small and a reader keeps the few schemas in memory. Records are postcard
//! (a compact binary form) with typed cells — times as microseconds, not text — because a sync
//! writes one per profile: at a million profiles their size and encoding is most of its time.
//! A sync writes blocks in key order, merging with what the tree holds (one ordered scan finds
//! what to remove and which blocks are unchanged), so that sled appends to its leaves instead
//! of rewriting random ones.
//!
//! The store is derived data: [`OnlineStore::sync`] makes it equal to the last committed run of
//! the offline store, whatever state it was left in. It writes every profile of that run,
//! removes what the run no longer has, and records the run id last, after a flush. A process
//! killed half-way leaves the old run id, so the next sync notices that the store lags the
//! offline store's `LATEST` and does it again. A store sled cannot read at all is deleted and
//! rebuilt.
//!
//! What a run needs to describe its records is committed with the run, in the offline store:
//! `<entity>_catalog` ([`catalog`]) names each profile column's kind and type and each journey
//! step's stage, so that a rebuild needs nothing but the offline store.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cdp_compiler::ir::{self, NodeKind};
use cdp_compiler::sql::dialect::format_micros;
use cdp_compiler::stream;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array,
    RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float64Type, Int64Type, Schema as ArrowSchema,
    TimeUnit, TimestampMicrosecondType, UInt64Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::HashMap as FastMap;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::batch::{BatchEngine, Table};
use crate::error::{Error, Result};
use crate::program::{Dialect, Step};
use crate::store::{Manifest, Storage, StoredTable};

mod live;
pub use live::{live_schema, LiveProfile, LiveUpdate, LIVE_RUN};

/// Entries written to sled per atomic batch.
const BATCH: usize = 10_000;
/// Bytes written to sled per atomic batch at most (past one entry): a batch of big blocks is
/// held whole in memory until it is applied.
const BATCH_BYTES: usize = 4 << 20;
/// The records' encoding; a store written in another is rebuilt by the next sync.
pub const FORMAT: &str = "3";
/// The mean number of records of a block of `profiles`; a block holds at most four times as
/// many. sled splits a leaf past 16 entries and writes a leaf over 128 KiB (a quarter of its
/// segment) to a file of its own, a file created at every rewrite: blocks of ~16 records of a
/// few hundred bytes keep leaves under that (64 made a sync create thousands of files, a fifth
/// of its time).
const PROFILE_BLOCK: u64 = 16;
/// The mean number of entries of a block of `keys` (each some tens of bytes).
const KEY_BLOCK: u64 = 64;
/// The most merges followed from an id to its survivor (a guard against a cycle).
const MAX_HOPS: usize = 64;

/// The directory of the online store of a storage directory.
pub fn path(storage_root: &Path) -> PathBuf {
    storage_root.join("online")
}

/// The name of an entity's catalog table in the offline store.
pub fn catalog_table(entity: &str) -> String {
    format!("{entity}_catalog")
}

// ------------------------------------------------------------------------------ what is stored

/// One profile as stored: values in the order of the schema of its run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub run: String,
    pub as_of: String,
    /// (key name, normalized value), keys in priority order.
    pub keys: Vec<(String, String)>,
    pub values: Vec<Cell>,
    pub segments: Vec<String>,
    pub journeys: Vec<Position>,
}

/// One stored value, typed as the profile column holds it. What a reader sees is its JSON
/// ([`Cell::into_json`]): numbers as numbers, decimals as their exact text, times as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
    /// Microseconds since the epoch, UTC.
    Time(i64),
    /// Days since the epoch.
    Date(i32),
    List(Vec<Cell>),
}

impl Cell {
    /// The value of `column` at `row`.
    pub fn of(column: &ArrayRef, row: usize) -> Cell {
        if column.is_null(row) {
            return Cell::Null;
        }
        match column.data_type() {
            DataType::Utf8 => Cell::Text(column.as_string::<i32>().value(row).to_string()),
            DataType::Boolean => Cell::Bool(column.as_boolean().value(row)),
            DataType::Int64 => Cell::Int(column.as_primitive::<Int64Type>().value(row)),
            DataType::UInt64 => Cell::UInt(column.as_primitive::<UInt64Type>().value(row)),
            DataType::Float64 => Cell::Float(column.as_primitive::<Float64Type>().value(row)),
            DataType::Decimal128(_, _) => {
                Cell::Text(column.as_primitive::<Decimal128Type>().value_as_string(row))
            }
            DataType::Date32 => Cell::Date(column.as_primitive::<Date32Type>().value(row)),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Cell::Time(column.as_primitive::<TimestampMicrosecondType>().value(row))
            }
            DataType::List(_) => list(column.as_list::<i32>().value(row)),
            DataType::LargeList(_) => list(column.as_list::<i64>().value(row)),
            _ => match ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()) {
                Ok(f) => Cell::Text(f.value(row).to_string()),
                Err(_) => Cell::Null,
            },
        }
    }

    /// As JSON: timestamps as `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC), dates as `YYYY-MM-DD`, a
    /// float that JSON cannot hold (NaN, infinite) as its text.
    pub fn into_json(self) -> Json {
        match self {
            Cell::Null => Json::Null,
            Cell::Bool(b) => Json::Bool(b),
            Cell::Int(i) => Json::from(i),
            Cell::UInt(u) => Json::from(u),
            Cell::Float(v) => serde_json::Number::from_f64(v)
                .map_or_else(|| Json::String(v.to_string()), Json::Number),
            Cell::Text(t) => Json::String(t),
            Cell::Time(micros) => Json::String(format_micros(micros)),
            Cell::Date(days) => {
                let text = format_micros(days as i64 * 86_400_000_000);
                Json::String(text[..text.len().min(10)].to_string())
            }
            Cell::List(items) => Json::Array(items.into_iter().map(Cell::into_json).collect()),
        }
    }
}

/// A [`Cell`] to write, borrowing its text from the column: encodes exactly as the `Cell` it
/// stands for (the same variants in the same order).
#[derive(Debug, Serialize)]
#[serde(rename = "Cell")]
enum CellRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(Cow<'a, str>),
    Time(i64),
    Date(i32),
    List(Vec<Cell>),
}

impl From<Cell> for CellRef<'_> {
    fn from(cell: Cell) -> Self {
        match cell {
            Cell::Null => CellRef::Null,
            Cell::Bool(b) => CellRef::Bool(b),
            Cell::Int(i) => CellRef::Int(i),
            Cell::UInt(u) => CellRef::UInt(u),
            Cell::Float(v) => CellRef::Float(v),
            Cell::Text(t) => CellRef::Text(Cow::Owned(t)),
            Cell::Time(t) => CellRef::Time(t),
            Cell::Date(d) => CellRef::Date(d),
            Cell::List(items) => CellRef::List(items),
        }
    }
}

/// A column (in its [`canonical`] type) read cell by cell as [`Cell::of`] reads it, with its
/// type looked at once instead of at every cell: a sync reads a million rows of each column.
enum Cells<'a> {
    Text(&'a StringArray),
    Bool(&'a BooleanArray),
    Int(&'a Int64Array),
    UInt(&'a UInt64Array),
    Float(&'a Float64Array),
    Decimal(&'a Decimal128Array),
    Date(&'a Date32Array),
    Time(&'a TimestampMicrosecondArray),
    Other(&'a ArrayRef),
}

impl<'a> Cells<'a> {
    fn new(column: &'a ArrayRef) -> Cells<'a> {
        match column.data_type() {
            DataType::Utf8 => Cells::Text(column.as_string::<i32>()),
            DataType::Boolean => Cells::Bool(column.as_boolean()),
            DataType::Int64 => Cells::Int(column.as_primitive()),
            DataType::UInt64 => Cells::UInt(column.as_primitive()),
            DataType::Float64 => Cells::Float(column.as_primitive()),
            DataType::Decimal128(_, _) => Cells::Decimal(column.as_primitive()),
            DataType::Date32 => Cells::Date(column.as_primitive()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => Cells::Time(column.as_primitive()),
            _ => Cells::Other(column),
        }
    }

    fn get(&self, row: usize) -> CellRef<'a> {
        let null = match self {
            Cells::Text(a) => a.is_null(row),
            Cells::Bool(a) => a.is_null(row),
            Cells::Int(a) => a.is_null(row),
            Cells::UInt(a) => a.is_null(row),
            Cells::Float(a) => a.is_null(row),
            Cells::Decimal(a) => a.is_null(row),
            Cells::Date(a) => a.is_null(row),
            Cells::Time(a) => a.is_null(row),
            Cells::Other(a) => a.is_null(row),
        };
        if null {
            return CellRef::Null;
        }
        match self {
            Cells::Text(a) => CellRef::Text(Cow::Borrowed(a.value(row))),
            Cells::Bool(a) => CellRef::Bool(a.value(row)),
            Cells::Int(a) => CellRef::Int(a.value(row)),
            Cells::UInt(a) => CellRef::UInt(a.value(row)),
            Cells::Float(a) => CellRef::Float(a.value(row)),
            Cells::Decimal(a) => CellRef::Text(Cow::Owned(decimal_text(a, row))),
            Cells::Date(a) => CellRef::Date(a.value(row)),
            Cells::Time(a) => CellRef::Time(a.value(row)),
            Cells::Other(a) => Cell::of(a, row).into(),
        }
    }
}

/// Where a profile stands in one journey (a row of `<journey>_state_next`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub journey: String,
    pub node: i64,
    pub status: Option<String>,
    /// When the profile reached this node.
    pub since: Option<String>,
    pub entered_at: Option<String>,
    pub finished_at: Option<String>,
}

/// What the values of an entity's records are, as one run wrote them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Schema {
    /// Identity key names in priority order.
    pub keys: Vec<String>,
    pub values: Vec<ValueColumn>,
    pub journeys: Vec<JourneySteps>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueColumn {
    pub name: String,
    /// `attribute` or `feature` (`value` for a run without a catalog).
    pub kind: String,
    /// The language's type: `string`, `decimal(12, 2)`, `timestamp`, `duration` (milliseconds)…
    #[serde(rename = "type")]
    pub ty: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JourneySteps {
    pub journey: String,
    /// Indexed by node.
    pub steps: Vec<StepLabel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLabel {
    pub stage: String,
    pub step: String,
}

/// An entity in the store, for lookups by a bare value and for reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityInfo {
    pub name: String,
    pub keys: Vec<String>,
    pub profiles: usize,
    pub identity_keys: usize,
}

// ------------------------------------------------------------------------------ what is read

/// A profile with every value named: a record joined with its schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub entity: String,
    pub canonical_id: String,
    /// The id asked for, when it was merged into this profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<String>,
    pub run: String,
    pub as_of: String,
    pub keys: Vec<IdentityKey>,
    pub values: Vec<NamedValue>,
    pub segments: Vec<String>,
    pub journeys: Vec<JourneyPosition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentityKey {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedValue {
    pub name: String,
    pub kind: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub value: Json,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JourneyPosition {
    pub journey: String,
    pub node: i64,
    pub stage: Option<String>,
    pub step: Option<String>,
    pub status: Option<String>,
    pub since: Option<String>,
    pub entered_at: Option<String>,
    pub finished_at: Option<String>,
}

/// What a sync left the store holding.
#[derive(Debug, Clone, PartialEq)]
pub struct Synced {
    /// The run the store reflects; `None` when no run is committed.
    pub run: Option<String>,
    pub profiles: usize,
    pub identity_keys: usize,
    /// Whether the store had to be brought up to date (it lagged the offline store).
    pub updated: bool,
}

// ------------------------------------------------------------------------------ the store

pub struct OnlineStore {
    path: PathBuf,
    db: sled::Db,
    profiles: sled::Tree,
    keys: sled::Tree,
    merges: sled::Tree,
    schemas: sled::Tree,
    meta: sled::Tree,
    /// Schemas already read, by entity and run: a run's schema never changes once written.
    schema_cache: Mutex<HashMap<(String, String), Arc<Schema>>>,
}

impl OnlineStore {
    /// Opens (creating) the store at `path`. A store sled finds corrupt (past a snapshot a
    /// killed process left unfinished, which [`cdp_registry::sleddb::open`] drops) is deleted
    /// and created empty: the next [`sync`](Self::sync) rebuilds it from the offline store.
    pub fn open(path: &Path) -> Result<OnlineStore> {
        let db = match cdp_registry::sleddb::open(path) {
            Ok(db) => db,
            Err(sled::Error::Corruption { .. }) => {
                std::fs::remove_dir_all(path).map_err(|e| Error::File {
                    path: path.to_path_buf(),
                    message: format!("removing the corrupt online store: {e}"),
                })?;
                cdp_registry::sleddb::open(path).map_err(sled_error(path))?
            }
            Err(e) => return Err(sled_error(path)(e)),
        };
        let tree = |name: &str| db.open_tree(name).map_err(sled_error(path));
        Ok(OnlineStore {
            path: path.to_path_buf(),
            profiles: tree("profiles")?,
            keys: tree("keys")?,
            merges: tree("merges")?,
            schemas: tree("schemas")?,
            meta: tree("meta")?,
            schema_cache: Mutex::new(HashMap::new()),
            db,
        })
    }

    /// Opens the store, waiting up to `patience` while another process holds it (sled allows
    /// one process at a time).
    pub fn open_waiting(path: &Path, patience: Duration) -> Result<OnlineStore> {
        let started = Instant::now();
        loop {
            match OnlineStore::open(path) {
                Err(e) if locked(&e) && started.elapsed() < patience => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) if locked(&e) => {
                    return Err(Error::File {
                        path: path.to_path_buf(),
                        message: IN_USE.into(),
                    })
                }
                other => return other,
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The committed run the store reflects, if it reflects one completely (in this version's
    /// [`FORMAT`]: a store written by another version reflects none, so a sync rebuilds it).
    pub fn run(&self) -> Result<Option<String>> {
        let format = self.meta.get("format").map_err(self.err())?;
        if format.as_deref() != Some(FORMAT.as_bytes()) {
            return Ok(None);
        }
        let run = self.meta.get("run").map_err(self.err())?;
        Ok(run.and_then(|r| String::from_utf8(r.to_vec()).ok()))
    }

    /// The entities of the store with their keys, in the order the run listed them.
    pub fn entities(&self) -> Result<Vec<EntityInfo>> {
        match self.meta.get("entities").map_err(self.err())? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| self.corrupt("entities", e)),
            None => Ok(Vec::new()),
        }
    }

    /// The canonical id an identity key value (normalized) belongs to.
    pub fn canonical_id(&self, entity: &str, key: &str, value: &str) -> Result<Option<String>> {
        let id = self.blocked(&self.keys, entity, key_of(&[key, value]).as_slice())?;
        Ok(id.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The value of `suffix` under `entity` in a tree of blocks.
    fn blocked(&self, tree: &sled::Tree, entity: &str, suffix: &[u8]) -> Result<Option<Vec<u8>>> {
        let prefix = key_of(&[entity, ""]);
        let wanted = [prefix.as_slice(), suffix].concat();
        let Some(found) = tree.range(..=wanted.as_slice()).next_back() else {
            return Ok(None);
        };
        let (k, block) = found.map_err(self.err())?;
        if !k.starts_with(&prefix) {
            return Ok(None);
        }
        let entries: Vec<(&[u8], &[u8])> =
            postcard::from_bytes(&block).map_err(|e| self.corrupt("a block", e))?;
        Ok(entries
            .binary_search_by(|(s, _)| (*s).cmp(suffix))
            .ok()
            .map(|i| entries[i].1.to_vec()))
    }

    /// A profile by canonical id, following merges: an id merged into another profile finds
    /// that profile (through the profiles it was merged into in turn, as the stream records
    /// merges one at a time).
    pub fn profile(&self, entity: &str, canonical_id: &str) -> Result<Option<Profile>> {
        if let Some(p) = self.stored(entity, canonical_id)? {
            return Ok(Some(p));
        }
        let mut at = canonical_id.to_string();
        for _ in 0..MAX_HOPS {
            let Some(into) = self
                .merges
                .get(key_of(&[entity, &at]))
                .map_err(self.err())?
            else {
                return Ok(None);
            };
            at = String::from_utf8_lossy(&into).into_owned();
            if let Some(mut p) = self.stored(entity, &at)? {
                p.merged_from = Some(canonical_id.to_string());
                return Ok(Some(p));
            }
        }
        Ok(None)
    }

    /// The stored record of a profile, as bytes: what a server sends on.
    pub fn record_bytes(&self, entity: &str, canonical_id: &str) -> Result<Option<Vec<u8>>> {
        self.blocked(&self.profiles, entity, canonical_id.as_bytes())
    }

    /// The schema a run wrote an entity's records with.
    pub fn schema(&self, entity: &str, run: &str) -> Result<Option<Schema>> {
        match self
            .schemas
            .get(key_of(&[entity, run]))
            .map_err(self.err())?
        {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| self.corrupt("a schema", e)),
            None => Ok(None),
        }
    }

    fn stored(&self, entity: &str, canonical_id: &str) -> Result<Option<Profile>> {
        let Some(bytes) = self.record_bytes(entity, canonical_id)? else {
            return Ok(None);
        };
        let record: Record =
            postcard::from_bytes(&bytes).map_err(|e| self.corrupt("a profile", e))?;
        let schema = self.cached_schema(entity, &record.run)?;
        Ok(Some(named(entity, canonical_id, record, &schema)))
    }

    fn cached_schema(&self, entity: &str, run: &str) -> Result<Arc<Schema>> {
        let key = (entity.to_string(), run.to_string());
        if let Some(s) = self
            .schema_cache
            .lock()
            .ok()
            .and_then(|c| c.get(&key).cloned())
        {
            return Ok(s);
        }
        let Some(schema) = self.schema(entity, run)? else {
            return Ok(Arc::new(Schema::default()));
        };
        let schema = Arc::new(schema);
        if let Ok(mut cache) = self.schema_cache.lock() {
            // A few runs' worth per entity; older ones are read again if ever needed.
            if cache.len() >= 64 {
                cache.clear();
            }
            cache.insert(key, schema.clone());
        }
        Ok(schema)
    }

    /// Brings the store up to the offline store's last committed run, unless it reflects that
    /// run already. Every write is flushed before this returns.
    pub fn sync(&self, storage: &Storage) -> Result<Synced> {
        let latest = storage.latest()?;
        let format = self.meta.get("format").map_err(self.err())?;
        if format.as_deref() != Some(FORMAT.as_bytes()) && !self.meta.is_empty() {
            // Written by another version: its records cannot be read; start again.
            for tree in [
                &self.profiles,
                &self.keys,
                &self.merges,
                &self.schemas,
                &self.meta,
            ] {
                tree.clear().map_err(self.err())?;
            }
            self.flush()?;
        }
        let current = self.run()?;
        let Some(latest) = latest else {
            if current.is_some() || !self.profiles.is_empty() {
                for tree in [&self.profiles, &self.keys, &self.merges, &self.schemas] {
                    tree.clear().map_err(self.err())?;
                }
                self.meta.clear().map_err(self.err())?;
                self.flush()?;
            }
            return Ok(Synced {
                run: None,
                profiles: 0,
                identity_keys: 0,
                updated: current.is_some(),
            });
        };
        if current.as_deref() == Some(latest.run.as_str()) {
            let entities = self.entities()?;
            return Ok(Synced {
                run: current,
                profiles: entities.iter().map(|e| e.profiles).sum(),
                identity_keys: entities.iter().map(|e| e.identity_keys).sum(),
                updated: false,
            });
        }
        // Merges accumulate over runs: those of the runs after the one the store reflects, or
        // of every run when it reflects none that exists.
        let runs = storage.runs()?;
        let since = current.filter(|c| runs.iter().any(|m| &m.run == c && m.run < latest.run));
        let merge_runs: Vec<&Manifest> = runs
            .iter()
            .filter(|m| m.run <= latest.run && since.as_ref().is_none_or(|s| &m.run > s))
            .collect();

        let mut infos = Vec::new();
        for entity in entities_of(&latest) {
            let info = self.sync_entity(storage, &latest, &entity, &merge_runs, since.is_none())?;
            infos.push(info);
        }
        let names: HashSet<&str> = infos.iter().map(|i| i.name.as_str()).collect();
        for tree in [&self.profiles, &self.keys, &self.merges, &self.schemas] {
            remove_other_entities(tree, &names).map_err(self.err())?;
        }
        self.flush()?;

        let entities = serde_json::to_vec(&infos)
            .map_err(|e| Error::Internal(format!("encoding the entities: {e}")))?;
        self.meta.insert("entities", entities).map_err(self.err())?;
        self.meta.insert("format", FORMAT).map_err(self.err())?;
        self.meta
            .insert("run", latest.run.as_bytes())
            .map_err(self.err())?;
        self.flush()?;
        Ok(Synced {
            run: Some(latest.run.clone()),
            profiles: infos.iter().map(|e| e.profiles).sum(),
            identity_keys: infos.iter().map(|e| e.identity_keys).sum(),
            updated: true,
        })
    }

    fn sync_entity(
        &self,
        storage: &Storage,
        run: &Manifest,
        entity: &str,
        merge_runs: &[&Manifest],
        all_merges: bool,
    ) -> Result<EntityInfo> {
        let read = |table: &str| -> Result<Option<Vec<RecordBatch>>> {
            match find(run, table) {
                Some(t) => Ok(Some(storage.read(t)?.1)),
                None => Ok(None),
            }
        };
        // The big tables decode in parallel (Parquet decoding is one thread per file).
        let (identity, profile_batches) = std::thread::scope(|s| {
            let identity = s.spawn(|| read(&format!("{entity}_identity")));
            let profiles = read(&format!("{entity}_profile"));
            Ok::<_, Error>((
                joined(identity, "reading a table")?.unwrap_or_default(),
                profiles?.unwrap_or_default(),
            ))
        })?;
        let identity: Vec<[StringArray; 3]> = identity
            .iter()
            .map(|b| {
                Ok([
                    strings(b, "canonical_id")?,
                    strings(b, "key_name")?,
                    strings(b, "key_value")?,
                ])
            })
            .collect::<Result<_>>()?;
        let catalog = Catalog::from_batches(&read(&catalog_table(entity))?.unwrap_or_default())?;
        let layout = RecordLayout::of(&catalog, profile_batches.first())?;

        // Each profile's values and segments, encoded in the order the rows are stored (every
        // column read front to back) while the profiles are put in id order alongside.
        let ids: Vec<StringArray> = profile_batches
            .iter()
            .map(|b| strings(b, "canonical_id"))
            .collect::<Result<_>>()?;
        let ((rows, at), ordered) = std::thread::scope(|s| {
            let encoded = s.spawn(|| layout.encode(&profile_batches));
            let ordered = Ordered::of(&ids, &identity, &catalog, &read);
            Ok::<_, Error>((joined(encoded, "encoding profiles")?, ordered?))
        })?;
        let Ordered {
            order,
            ordinal,
            keys_of,
            key_names,
            journeys_of,
        } = ordered;
        let schema = Schema {
            keys: key_names.clone(),
            values: layout.values.iter().map(|(_, c)| c.clone()).collect(),
            journeys: catalog.journeys.clone(),
        };
        let encoded = serde_json::to_vec(&schema)
            .map_err(|e| Error::Internal(format!("encoding a schema: {e}")))?;
        self.schemas
            .insert(key_of(&[entity, &run.run]), encoded)
            .map_err(self.err())?;

        // Profiles first, so that a key written next never points at a missing profile; in
        // key order, so that sled fills its leaves one after the other.
        let prefix = key_of(&[entity, ""]);
        let (mut k, mut jn) = (0, 0);
        let records = order.iter().zip(0u32..).map(|(&(id, g), o)| {
            let bytes = record_bytes(
                run,
                rows_of(&keys_of, &mut k, o),
                &rows[at[g]..at[g + 1]],
                rows_of(&journeys_of, &mut jn, o),
            )?;
            Ok((id.as_bytes().to_vec(), bytes))
        });
        // The key index, every identity key of the run (also those of ids without a profile),
        // built where it is written: in the writer of the keys when that runs alongside.
        let identity_keys = std::sync::atomic::AtomicUsize::new(0);
        let index = || {
            let identifiers = identity.iter().map(|[ids, _, _]| ids.len()).sum();
            let mut index: Vec<(&str, &str, &str)> = Vec::with_capacity(identifiers);
            for [ids, names, values] in &identity {
                for row in 0..ids.len() {
                    if !(names.is_null(row) || values.is_null(row) || ids.is_null(row)) {
                        index.push((names.value(row), values.value(row), ids.value(row)));
                    }
                }
            }
            // Names hold no NUL, so (name, value) order is the order of `name \0 value`.
            index.sort_unstable();
            index.dedup_by(|a, b| (a.0, a.1) == (b.0, b.1));
            identity_keys.store(index.len(), std::sync::atomic::Ordering::Relaxed);
            index
                .into_iter()
                .map(|(name, value, id)| Ok((key_of(&[name, value]), id.as_bytes().to_vec())))
        };
        // Written where it differs, removed where the run no longer has it.
        let first = self.profiles.scan_prefix(&prefix).next().is_none()
            && self.keys.scan_prefix(&prefix).next().is_none();
        if first {
            // Nothing of the entity is stored, so no reader can find a key before its profile:
            // both trees are written at once (sled takes concurrent writers).
            std::thread::scope(|s| {
                let keys = s.spawn(|| {
                    self.write_sorted(&self.keys, &prefix, blocks(&prefix, index(), KEY_BLOCK))
                });
                let profiles = self.write_sorted(
                    &self.profiles,
                    &prefix,
                    blocks(&prefix, records, PROFILE_BLOCK),
                );
                joined(keys, "writing keys").and(profiles)
            })?;
        } else {
            self.write_sorted(
                &self.profiles,
                &prefix,
                blocks(&prefix, records, PROFILE_BLOCK),
            )?;
            self.write_sorted(&self.keys, &prefix, blocks(&prefix, index(), KEY_BLOCK))?;
        }
        let identity_keys = identity_keys.into_inner();

        let live = |id: &str| ordinal.contains_key(&IdKey::of(id));
        self.sync_merges(storage, entity, merge_runs, all_merges, &live)?;

        // Schemas of older runs (the one before stays for readers still holding its records).
        let current = self.run()?;
        let mut batch = Batch::new(self, &self.schemas);
        for entry in self.schemas.scan_prefix(key_of(&[entity, ""])) {
            let (k, _) = entry.map_err(self.err())?;
            let r = String::from_utf8_lossy(&k[entity.len() + 1..]).into_owned();
            if r != run.run && Some(&r) != current.as_ref() && r != LIVE_RUN {
                batch.remove(k.to_vec())?;
            }
        }
        batch.finish()?;

        Ok(EntityInfo {
            name: entity.to_string(),
            keys: key_names,
            profiles: order.len(),
            identity_keys,
        })
    }

    /// Adds the merges of `runs` and points every merged id straight at the profile it lives
    /// on now; an id that is a profile again is no longer merged.
    fn sync_merges(
        &self,
        storage: &Storage,
        entity: &str,
        runs: &[&Manifest],
        all: bool,
        live: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        let prefix = key_of(&[entity, ""]);
        let mut into: HashMap<String, String> = HashMap::new();
        if all {
            self.remove_prefix(&self.merges, &prefix)?;
        } else {
            for entry in self.merges.scan_prefix(&prefix) {
                let (k, v) = entry.map_err(self.err())?;
                into.insert(
                    String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                );
            }
        }
        let before = into.clone();
        for m in runs {
            let Some(t) = find(m, &format!("{entity}_id_merges")) else {
                continue;
            };
            for b in storage.read(t)?.1 {
                let (merged, survivors) = (strings(&b, "merged_id")?, strings(&b, "into_id")?);
                for row in 0..b.num_rows() {
                    if !merged.is_null(row) && !survivors.is_null(row) {
                        into.insert(
                            merged.value(row).to_string(),
                            survivors.value(row).to_string(),
                        );
                    }
                }
            }
        }
        let mut batch = Batch::new(self, &self.merges);
        for (merged, first) in &into {
            let key = [prefix.as_slice(), merged.as_bytes()].concat();
            if live(merged) {
                if before.contains_key(merged) {
                    batch.remove(key)?;
                }
                continue;
            }
            let mut target = first;
            for _ in 0..MAX_HOPS {
                match into.get(target) {
                    Some(next) if !live(target) && next != merged => target = next,
                    _ => break,
                }
            }
            if before.get(merged) != Some(target) {
                batch.insert(key, target.as_bytes().to_vec())?;
            }
        }
        batch.finish()
    }

    /// Makes the entries of `tree` under `prefix` equal to `entries` (sorted by key, each key
    /// once): in one ordered pass over both, writes what differs and removes what `entries`
    /// does not have.
    fn write_sorted(
        &self,
        tree: &sled::Tree,
        prefix: &[u8],
        entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
    ) -> Result<()> {
        let mut batch = Batch::new(self, tree);
        let mut stored = tree.scan_prefix(prefix).peekable();
        for entry in entries {
            let (key, value) = entry?;
            loop {
                match stored.peek() {
                    Some(Ok((k, _))) if k.as_ref() < key.as_slice() => {
                        batch.remove(k.to_vec())?;
                        stored.next();
                    }
                    Some(Err(_)) => {
                        if let Some(Err(e)) = stored.next() {
                            return Err(self.err()(e));
                        }
                    }
                    _ => break,
                }
            }
            match stored.peek() {
                Some(Ok((k, v))) if k.as_ref() == key.as_slice() => {
                    if v.as_ref() != value.as_slice() {
                        batch.insert(key, value)?;
                    }
                    stored.next();
                }
                _ => batch.insert(key, value)?,
            }
        }
        for entry in stored {
            batch.remove(entry.map_err(self.err())?.0.to_vec())?;
        }
        batch.finish()
    }

    fn remove_prefix(&self, tree: &sled::Tree, prefix: &[u8]) -> Result<()> {
        let mut batch = Batch::new(self, tree);
        for entry in tree.scan_prefix(prefix) {
            batch.remove(entry.map_err(self.err())?.0.to_vec())?;
        }
        batch.finish()
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map_err(self.err())?;
        Ok(())
    }

    fn err(&self) -> impl Fn(sled::Error) -> Error + '_ {
        sled_error(&self.path)
    }

    fn corrupt(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::File {
            path: self.path.clone(),
            message: format!("{what} in the online store cannot be read ({e}); delete the directory and it is rebuilt from the offline store"),
        }
    }
}

fn sled_error(path: &Path) -> impl Fn(sled::Error) -> Error + '_ {
    move |e| Error::File {
        path: path.to_path_buf(),
        message: format!("online store: {e}"),
    }
}

const IN_USE: &str = "the online store is in use by another cdp process (a run updating it, \
                      or a server); try again when it is done";

/// Whether sled refused to open the store because another process holds it.
fn locked(e: &Error) -> bool {
    matches!(e, Error::File { message, .. } if message.contains("could not acquire lock"))
}

/// Whether [`OnlineStore::open_waiting`] failed because another process holds the store.
pub fn in_use(e: &Error) -> bool {
    locked(e) || matches!(e, Error::File { message, .. } if message == IN_USE)
}

/// `a \0 b \0 c`: names never hold a NUL, so keys of different entities and key names never
/// collide, and all keys of one entity share the prefix `entity \0`.
fn key_of(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

/// Packs entries (suffixes under `prefix` in ascending order, each once, with their values) into
/// blocks keyed by `prefix` and their first suffix.
fn blocks<'a>(
    prefix: &'a [u8],
    mut entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'a,
    mean: u64,
) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + 'a {
    std::iter::from_fn(move || {
        let mut block: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for entry in entries.by_ref() {
            let (suffix, value) = match entry {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            let end = ends_block(&suffix, mean) || block.len() + 1 >= 4 * mean as usize;
            block.push((suffix, value));
            if end {
                break;
            }
        }
        let first = block.first()?;
        let key = [prefix, first.0.as_slice()].concat();
        let refs: Vec<(&[u8], &[u8])> = block
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        Some(
            postcard::to_stdvec(&refs)
                .map(|bytes| (key, bytes))
                .map_err(|e| Error::Internal(format!("encoding a block: {e}"))),
        )
    })
}

/// Whether a block of `mean` entries on average ends after the entry `suffix`: for one entry in
/// `mean`, by a hash of the entry's own key (FNV-1a, the same in every version), so boundaries
/// stay where they are when other entries come and go.
fn ends_block(suffix: &[u8], mean: u64) -> bool {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in suffix {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash >> 40).is_multiple_of(mean)
}

/// Joins a scoped thread; a panic in it becomes an error.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T>>, what: &str) -> Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(Error::Internal(format!("{what} panicked"))))
}

/// A cursor over rows sorted by profile ordinal: the run of rows of ordinal `o`.
fn rows_of<'v, T>(rows: &'v [(u32, T)], at: &mut usize, o: u32) -> &'v [(u32, T)] {
    while *at < rows.len() && rows[*at].0 < o {
        *at += 1;
    }
    let start = *at;
    while *at < rows.len() && rows[*at].0 == o {
        *at += 1;
    }
    &rows[start..*at]
}

/// A profile's [`Record`] as postcard encodes it (a struct is its fields back to back): `run`'s
/// id and as-of, its `keys`, its values and segments as [`RecordLayout::encode`] encoded them,
/// and its `journeys`.
fn record_bytes(
    run: &Manifest,
    keys: &[(u32, (&str, &str))],
    values_and_segments: &[u8],
    journeys: &[(u32, Position)],
) -> Result<Vec<u8>> {
    let encoding = |e: postcard::Error| Error::Internal(format!("encoding a profile: {e}"));
    let head = (run.run.as_str(), run.as_of.as_str(), Grouped(keys));
    let bytes = Vec::with_capacity(values_and_segments.len() + 256);
    let mut bytes = postcard::to_extend(&head, bytes).map_err(encoding)?;
    bytes.extend_from_slice(values_and_segments);
    postcard::to_extend(&Grouped(journeys), bytes).map_err(encoding)
}

/// Rows of one profile (from [`rows_of`]), encoded as the sequence of their second halves: as a
/// record's `Vec` of them encodes.
struct Grouped<'r, T>(&'r [(u32, T)]);

impl<T: Serialize> Serialize for Grouped<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|r| &r.1))
    }
}

/// A canonical id as a hash key that a lookup compares without reading string memory: packed
/// into an integer when it fits (ids are 16 hex digits). An id that packs never equals one that
/// does not, so the map is exact whatever the ids are.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum IdKey<'a> {
    Packed(u128),
    Text(&'a str),
}

impl<'a> IdKey<'a> {
    fn of(id: &'a str) -> IdKey<'a> {
        let bytes = id.as_bytes();
        if bytes.len() > 16 || bytes.contains(&0) {
            return IdKey::Text(id);
        }
        let mut packed = [0u8; 16];
        packed[..bytes.len()].copy_from_slice(bytes);
        IdKey::Packed(u128::from_le_bytes(packed))
    }
}

/// Where a record's values and segments come from in `<entity>_profile`.
struct RecordLayout {
    /// (column index, what it holds), in the order of the schema's values.
    values: Vec<(usize, ValueColumn)>,
    /// (column index, segment) in segment name order, the order a record lists them in. The
    /// segments table is these columns unpivoted, so the profile alone gives the memberships.
    segments: Vec<(usize, String)>,
}

impl RecordLayout {
    fn of(catalog: &Catalog, profile: Option<&RecordBatch>) -> Result<RecordLayout> {
        let Some(b) = profile else {
            return Ok(RecordLayout {
                values: Vec::new(),
                segments: Vec::new(),
            });
        };
        let schema = b.schema();
        let values = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name() != "canonical_id" && !catalog.segments.contains(f.name()))
            .map(|(i, f)| {
                let (kind, ty) = match catalog.values.get(f.name()) {
                    Some((kind, ty)) => (kind.clone(), ty.clone()),
                    None => ("value".to_string(), type_name(f.data_type())),
                };
                let name = f.name().clone();
                (i, ValueColumn { name, kind, ty })
            })
            .collect();
        let mut names: Vec<&String> = catalog.segments.iter().collect();
        names.sort();
        let segments = names
            .into_iter()
            .map(|name| match schema.index_of(name) {
                Ok(i) if schema.field(i).data_type() == &DataType::Boolean => Ok((i, name.clone())),
                _ => Err(Error::Internal(format!(
                    "the profile table has no boolean column for segment `{name}`"
                ))),
            })
            .collect::<Result<_>>()?;
        Ok(RecordLayout { values, segments })
    }

    /// Every row's values and segments, encoded back to back as a record holds them (they are
    /// neighbours in it), each column read front to back: row `g` counting through the batches
    /// is `bytes[at[g]..at[g + 1]]`. Taking the cells in id order instead reads every column
    /// at random, a cache miss per cell.
    fn encode(&self, batches: &[RecordBatch]) -> Result<(Vec<u8>, Vec<usize>)> {
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let mut at = Vec::with_capacity(rows + 1);
        at.push(0);
        let mut bytes = Vec::new();
        for (n, b) in batches.iter().enumerate() {
            if n == 1 {
                // Room for all rows at the first batch's mean size, so that the buffer does not
                // grow by doubling: each doubling copies it into memory the kernel must clear.
                let mean = bytes.len() / (at.len() - 1).max(1);
                bytes.reserve((mean + mean / 8) * (rows + 1 - at.len()));
            }
            let columns: Vec<ArrayRef> = self
                .values
                .iter()
                .map(|(i, _)| canonical(b.column(*i)))
                .collect::<Result<_>>()?;
            let cells: Vec<Cells> = columns.iter().map(Cells::new).collect();
            let flags: Vec<(&BooleanArray, &str)> = self
                .segments
                .iter()
                .map(|(i, name)| {
                    let flags = b.column(*i).as_boolean_opt().ok_or_else(|| {
                        Error::Internal(format!("segment column `{name}` is not boolean"))
                    })?;
                    Ok((flags, name.as_str()))
                })
                .collect::<Result<_>>()?;
            for row in 0..b.num_rows() {
                let part = (
                    RowCells { cells: &cells, row },
                    RowSegments { flags: &flags, row },
                );
                bytes = postcard::to_extend(&part, bytes)
                    .map_err(|e| Error::Internal(format!("encoding a profile: {e}")))?;
                at.push(bytes.len());
            }
        }
        Ok((bytes, at))
    }
}

/// One row's values, encoded as a record's `values`.
struct RowCells<'c, 'a> {
    cells: &'c [Cells<'a>],
    row: usize,
}

impl Serialize for RowCells<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.cells.iter().map(|c| c.get(self.row)))
    }
}

/// The segments one row is a member of, encoded as a record's `segments`.
struct RowSegments<'f, 'a> {
    flags: &'f [(&'a BooleanArray, &'a str)],
    row: usize,
}

impl Serialize for RowSegments<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let member = |f: &&(&BooleanArray, &str)| f.0.is_valid(self.row) && f.0.value(self.row);
        let mut seq = s.serialize_seq(Some(self.flags.iter().filter(member).count()))?;
        for (_, name) in self.flags.iter().filter(member) {
            seq.serialize_element(name)?;
        }
        seq.end()
    }
}

/// The profiles of a run in id order, the order their records are written in, and what each
/// record lists besides its values. A profile's ordinal in that order groups its keys and
/// journey positions by sorting integers, not ids, and lets writing the records walk those
/// groups alongside.
struct Ordered<'t> {
    /// (canonical id, row counting through the profile batches), ascending by id, each once.
    order: Vec<(&'t str, usize)>,
    ordinal: FastMap<IdKey<'t>, u32>,
    /// (profile ordinal, (key name, key value)), a profile's keys in priority order.
    keys_of: Vec<(u32, (&'t str, &'t str))>,
    /// The catalog's key names in priority order, then any other the identity table holds.
    key_names: Vec<String>,
    /// (profile ordinal, position), a profile's positions in the catalog's order of journeys.
    journeys_of: Vec<(u32, Position)>,
}

impl<'t> Ordered<'t> {
    fn of(
        ids: &'t [StringArray],
        identity: &'t [[StringArray; 3]],
        catalog: &Catalog,
        read: &dyn Fn(&str) -> Result<Option<Vec<RecordBatch>>>,
    ) -> Result<Ordered<'t>> {
        let rows = ids.iter().map(|a| a.len()).sum();
        let mut order: Vec<(&str, usize)> = Vec::with_capacity(rows);
        let mut start = 0;
        for ids in ids {
            for row in 0..ids.len() {
                if !ids.is_null(row) {
                    order.push((ids.value(row), start + row));
                }
            }
            start += ids.len();
        }
        order.sort_unstable_by(|a, b| a.0.cmp(b.0));
        order.dedup_by(|a, b| a.0 == b.0);
        let mut ordinal: FastMap<IdKey, u32> = FastMap::with_capacity(order.len());
        for (o, (id, _)) in (0u32..).zip(&order) {
            ordinal.insert(IdKey::of(id), o);
        }

        let key_order: HashMap<&str, usize> = catalog
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        let rank = |k: &str| key_order.get(k).copied().unwrap_or(usize::MAX);
        // (profile ordinal, key rank, key name, key value); keys of ids without a profile are
        // only in the index.
        let identifiers = identity.iter().map(|[ids, _, _]| ids.len()).sum();
        let mut keys_of: Vec<(u32, usize, &str, &str)> = Vec::with_capacity(identifiers);
        let mut other_names: BTreeSet<&str> = BTreeSet::new();
        for [ids, names, values] in identity {
            for row in 0..ids.len() {
                if names.is_null(row) || values.is_null(row) || ids.is_null(row) {
                    continue;
                }
                let name = names.value(row);
                let rank = rank(name);
                if rank == usize::MAX {
                    other_names.insert(name);
                }
                if let Some(&o) = ordinal.get(&IdKey::of(ids.value(row))) {
                    keys_of.push((o, rank, name, values.value(row)));
                }
            }
        }
        keys_of.sort_unstable();
        keys_of.dedup();
        let mut key_names: Vec<String> = catalog.keys.clone();
        key_names.extend(other_names.into_iter().map(str::to_string));
        let keys_of = keys_of
            .into_iter()
            .map(|(o, _, name, value)| (o, (name, value)))
            .collect();

        let mut journeys_of: Vec<(u32, Position)> = Vec::new();
        for j in &catalog.journeys {
            for b in read(&format!("{}_state_next", j.journey))?.unwrap_or_default() {
                let ids = strings(&b, "canonical_id")?;
                let nodes = cast_column(&b, "node", &DataType::Int64)?;
                let nodes = nodes.as_primitive::<Int64Type>();
                let status = strings(&b, "status")?;
                let times = |c: &str| optional_times(&b, c);
                let (since, entered, finished) = (
                    times("node_since")?,
                    times("entered_at")?,
                    times("finished_at")?,
                );
                for row in 0..b.num_rows() {
                    if ids.is_null(row) || nodes.is_null(row) {
                        continue;
                    }
                    let Some(&o) = ordinal.get(&IdKey::of(ids.value(row))) else {
                        continue;
                    };
                    let text = |c: &Option<ArrayRef>| {
                        c.as_ref()
                            .and_then(|c| cell(c, row).as_str().map(str::to_string))
                    };
                    journeys_of.push((
                        o,
                        Position {
                            journey: j.journey.clone(),
                            node: nodes.value(row),
                            status: (!status.is_null(row)).then(|| status.value(row).to_string()),
                            since: text(&since),
                            entered_at: text(&entered),
                            finished_at: text(&finished),
                        },
                    ));
                }
            }
        }
        // Stable: a profile's positions stay in the catalog's order of journeys.
        journeys_of.sort_by_key(|j| j.0);
        Ok(Ordered {
            order,
            ordinal,
            keys_of,
            key_names,
            journeys_of,
        })
    }
}

fn remove_other_entities(tree: &sled::Tree, keep: &HashSet<&str>) -> sled::Result<()> {
    let mut stale = Vec::new();
    for entry in tree.iter() {
        let (k, _) = entry?;
        let entity = k.split(|b| *b == 0).next().unwrap_or_default();
        if !keep.contains(String::from_utf8_lossy(entity).as_ref()) {
            stale.push(k);
        }
    }
    for k in stale {
        tree.remove(k)?;
    }
    Ok(())
}

/// Writes to one tree in atomic batches of [`BATCH`] entries or [`BATCH_BYTES`].
struct Batch<'a> {
    tree: &'a sled::Tree,
    path: &'a Path,
    batch: sled::Batch,
    len: usize,
    bytes: usize,
}

impl<'a> Batch<'a> {
    fn new(store: &'a OnlineStore, tree: &'a sled::Tree) -> Batch<'a> {
        Batch {
            tree,
            path: &store.path,
            batch: sled::Batch::default(),
            len: 0,
            bytes: 0,
        }
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.bytes += key.len() + value.len();
        self.batch.insert(key, value);
        self.count()
    }

    fn remove(&mut self, key: Vec<u8>) -> Result<()> {
        self.batch.remove(key);
        self.count()
    }

    fn count(&mut self) -> Result<()> {
        self.len += 1;
        if self.len >= BATCH || self.bytes >= BATCH_BYTES {
            self.apply()?;
        }
        Ok(())
    }

    fn apply(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.len = 0;
        self.bytes = 0;
        self.tree.apply_batch(batch).map_err(sled_error(self.path))
    }

    fn finish(mut self) -> Result<()> {
        if self.len > 0 {
            self.apply()?;
        }
        Ok(())
    }
}

fn named(entity: &str, canonical_id: &str, record: Record, schema: &Schema) -> Profile {
    let values = record
        .values
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let column = schema.values.get(i);
            NamedValue {
                name: column.map_or_else(|| format!("value_{i}"), |c| c.name.clone()),
                kind: column.map_or_else(|| "value".into(), |c| c.kind.clone()),
                ty: column.map_or_else(String::new, |c| c.ty.clone()),
                value: value.into_json(),
            }
        })
        .collect();
    let journeys = record
        .journeys
        .into_iter()
        .map(|p| {
            let label = schema
                .journeys
                .iter()
                .find(|j| j.journey == p.journey)
                .and_then(|j| usize::try_from(p.node).ok().and_then(|n| j.steps.get(n)));
            JourneyPosition {
                stage: label.map(|l| l.stage.clone()),
                step: label.map(|l| l.step.clone()),
                journey: p.journey,
                node: p.node,
                status: p.status,
                since: p.since,
                entered_at: p.entered_at,
                finished_at: p.finished_at,
            }
        })
        .collect();
    Profile {
        entity: entity.to_string(),
        canonical_id: canonical_id.to_string(),
        merged_from: None,
        run: record.run,
        as_of: record.as_of,
        keys: record
            .keys
            .into_iter()
            .map(|(key, value)| IdentityKey { key, value })
            .collect(),
        values,
        segments: record.segments,
        journeys,
    }
}

/// The entities of a run: those with both a profile and an identity table.
fn entities_of(run: &Manifest) -> Vec<String> {
    run.tables
        .iter()
        .filter_map(|t| t.table.strip_suffix("_profile"))
        .filter(|e| find(run, &format!("{e}_identity")).is_some())
        .map(str::to_string)
        .collect()
}

fn find<'a>(run: &'a Manifest, table: &str) -> Option<&'a StoredTable> {
    run.tables.iter().find(|t| t.table == table)
}

// ------------------------------------------------------------------------------ the catalog

/// An entity's catalog as read back from the offline store.
#[derive(Default)]
struct Catalog {
    keys: Vec<String>,
    /// Column → (kind, type) of attributes and features.
    values: HashMap<String, (String, String)>,
    segments: HashSet<String>,
    journeys: Vec<JourneySteps>,
}

impl Catalog {
    fn from_batches(batches: &[RecordBatch]) -> Result<Catalog> {
        let mut c = Catalog::default();
        for b in batches {
            let (kind, name, ty) = (
                strings(b, "kind")?,
                strings(b, "name")?,
                strings(b, "type")?,
            );
            let (stage, step) = (strings(b, "stage")?, strings(b, "step")?);
            let text = |a: &StringArray, row: usize| {
                if a.is_null(row) {
                    String::new()
                } else {
                    a.value(row).to_string()
                }
            };
            for row in 0..b.num_rows() {
                let name = text(&name, row);
                match kind.value(row) {
                    "key" => c.keys.push(name),
                    "segment" => {
                        c.segments.insert(name);
                    }
                    "step" => {
                        let label = StepLabel {
                            stage: text(&stage, row),
                            step: text(&step, row),
                        };
                        match c.journeys.iter_mut().find(|j| j.journey == name) {
                            Some(j) => j.steps.push(label),
                            None => c.journeys.push(JourneySteps {
                                journey: name,
                                steps: vec![label],
                            }),
                        }
                    }
                    other => {
                        c.values.insert(name, (other.to_string(), text(&ty, row)));
                    }
                }
            }
        }
        Ok(c)
    }
}

/// The catalog tables of a project, one per entity, committed with every run: what each column
/// of `<entity>_profile` is (`key` rows list the identity keys in priority order; `attribute`,
/// `feature`, `segment` rows the profile's columns with their type) and which stage and step
/// each node of each journey is (`step` rows, in node order).
pub fn catalog(project: &ir::Project) -> Result<Vec<(String, Table)>> {
    let schema = Arc::new(ArrowSchema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, true),
        Field::new("stage", DataType::Utf8, true),
        Field::new("step", DataType::Utf8, true),
    ]));
    let mut tables = Vec::new();
    for (e, entity) in project.entities.iter().enumerate() {
        let of = |id: ir::EntityId| id.index() == e;
        let mut rows: Vec<[Option<String>; 5]> = Vec::new();
        let mut row = |kind: &str, name: &str, ty: Option<String>, stage, step| {
            rows.push([Some(kind.into()), Some(name.into()), ty, stage, step]);
        };
        for k in &entity.keys {
            row("key", &k.name, None, None, None);
        }
        for a in project.attributes.iter().filter(|a| of(a.entity)) {
            row(
                "attribute",
                &a.meta.name,
                Some(a.ty.to_string()),
                None,
                None,
            );
        }
        for f in project.features.iter().filter(|f| of(f.entity)) {
            row("feature", &f.meta.name, Some(f.ty.to_string()), None, None);
        }
        for s in project.segments.iter().filter(|s| of(s.entity)) {
            row("segment", &s.meta.name, Some("bool".into()), None, None);
        }
        for j in project.journeys.iter().filter(|j| of(j.entity)) {
            for node in &j.nodes {
                let stage = j.stages.get(node.stage as usize).cloned();
                row(
                    "step",
                    &j.meta.name,
                    None,
                    stage,
                    Some(step_label(project, node)),
                );
            }
        }
        let columns = (0..5)
            .map(|i| {
                let mut b = StringBuilder::new();
                for r in &rows {
                    b.append_option(r[i].as_deref());
                }
                Arc::new(b.finish()) as ArrayRef
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| Error::Internal(format!("building the catalog: {e}")))?;
        tables.push((
            catalog_table(&entity.meta.name),
            Table {
                schema: schema.clone(),
                batches: vec![batch],
            },
        ));
    }
    Ok(tables)
}

/// What a journey node does, in the language's words.
fn step_label(project: &ir::Project, node: &ir::Node) -> String {
    match &node.kind {
        NodeKind::Activate { activation, .. } => {
            format!(
                "activate {}",
                project.activations[activation.index()].meta.name
            )
        }
        NodeKind::Wait { ms, .. } => format!("wait {}", stream::duration(*ms)),
        NodeKind::WaitUntil {
            condition,
            timeout_ms,
            ..
        } => {
            let shown = stream::show(condition, project, None);
            // Aggregates written inline show as internal names (`agg_3`), which mean nothing
            // to a reader of a profile.
            let shown = if shown.contains("agg_") || shown.contains("seq_") {
                "its condition".to_string()
            } else {
                unwrapped(&shown).to_string()
            };
            format!(
                "wait until {shown}, at most {}",
                stream::duration(*timeout_ms)
            )
        }
        NodeKind::Branch { .. } => "branch".into(),
        NodeKind::Split { .. } => "split".into(),
        NodeKind::End => "end".into(),
    }
}

/// `text` without the parentheses around all of it, if it has them.
fn unwrapped(text: &str) -> &str {
    let Some(inner) = text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) else {
        return text;
    };
    let mut depth = 0i32;
    for c in inner.chars() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        if depth < 0 {
            return text;
        }
    }
    inner
}

// ------------------------------------------------------------------------------ key normalization

/// Normalizes identity key values exactly as a project's entities do (`normalize`, `exclude`):
/// by running the compiled SQL that reads identity records over a one-row table.
pub struct KeyNormalizer {
    engine: BatchEngine,
    /// Per entity: the statement building `<entity>_id_records` from the table `cdp_lookup`.
    records: Vec<(String, Step)>,
}

impl KeyNormalizer {
    pub fn new(project: &ir::Project) -> Result<KeyNormalizer> {
        let lookup = ir::Source {
            meta: meta("cdp_lookup"),
            table: "cdp_lookup".into(),
            columns: vec![ir::Column {
                name: "value".into(),
                ty: cdp_compiler::types::Type::String,
                nullable: true,
                pii: false,
            }],
            key: None,
            time: None,
        };
        let mut records = Vec::new();
        for entity in &project.entities {
            let bindings = (0..entity.keys.len())
                .map(|k| ir::KeyBinding {
                    source: ir::SourceId(0),
                    key: ir::KeyId(k as u32),
                    value: ir::Expr {
                        kind: ir::ExprKind::Column(ir::ColumnId(0)),
                        ty: cdp_compiler::types::Type::String,
                    },
                })
                .collect();
            let alone = ir::Project {
                name: project.name.clone(),
                sources: vec![lookup.clone()],
                entities: vec![ir::Entity {
                    meta: entity.meta.clone(),
                    keys: entity.keys.clone(),
                    bindings,
                }],
                behaviors: Vec::new(),
                attributes: Vec::new(),
                aggregates: Vec::new(),
                features: Vec::new(),
                sequences: Vec::new(),
                segments: Vec::new(),
                journeys: Vec::new(),
                metrics: Vec::new(),
                activations: Vec::new(),
                profile_order: Vec::new(),
            };
            let program = cdp_compiler::sql::compile(&alone, Dialect::DataFusion, 0);
            let table = format!("{}_id_records", entity.meta.name);
            let step = program
                .steps
                .into_iter()
                .find(|s| matches!(s, Step::Create(c) if c.table == table))
                .ok_or_else(|| Error::Internal(format!("no statement builds `{table}`")))?;
            records.push((entity.meta.name.clone(), step));
        }
        Ok(KeyNormalizer {
            engine: BatchEngine::with_threads(1)?,
            records,
        })
    }

    /// `raw` normalized as each key of `entity` normalizes it, in key order: `None` where the
    /// key excludes the value. Empty for an entity the project does not have.
    pub fn normalize(&self, entity: &str, raw: &str) -> Result<Vec<Option<String>>> {
        let Some((_, step)) = self.records.iter().find(|(e, _)| e == entity) else {
            return Ok(Vec::new());
        };
        let schema = Arc::new(ArrowSchema::new(vec![Field::new(
            "value",
            DataType::Utf8,
            true,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec![raw])) as ArrayRef],
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        self.engine
            .register_batches("cdp_lookup", schema, vec![batch])?;
        self.engine.run_step(step)?;
        let table = self.engine.table(&format!("{entity}_id_records"))?;
        let mut out = Vec::new();
        if let Some(b) = table.batches.iter().find(|b| b.num_rows() > 0) {
            // Column 0 is `seen_at`; then one column per key, in key order.
            for i in 1..b.num_columns() {
                let c = cast(b.column(i), &DataType::Utf8)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                let c = c.as_string::<i32>();
                out.push((!c.is_null(0)).then(|| c.value(0).to_string()));
            }
        }
        Ok(out)
    }
}

fn meta(name: &str) -> ir::Meta {
    ir::Meta {
        name: name.into(),
        description: None,
        owner: None,
        tags: Vec::new(),
    }
}

// ------------------------------------------------------------------------------ Arrow values

/// A column as text (any string or other type cast to Utf8); a missing column reads as nulls.
fn strings(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let Some(column) = batch.column_by_name(name) else {
        return Ok(StringArray::new_null(batch.num_rows()));
    };
    let c = cast(column, &DataType::Utf8)
        .map_err(|e| Error::Internal(format!("reading column `{name}` as text: {e}")))?;
    Ok(c.as_string::<i32>().clone())
}

fn cast_column(batch: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("a stored table has no column `{name}`")))?;
    cast(column, to).map_err(|e| Error::Internal(format!("reading column `{name}`: {e}")))
}

fn optional_times(batch: &RecordBatch, name: &str) -> Result<Option<ArrayRef>> {
    batch.column_by_name(name).map(canonical).transpose()
}

/// The column in the one type of its family that [`cell`] reads: 64-bit integers and floats,
/// UTF-8 strings, microsecond timestamps, 32-bit dates.
fn canonical(column: &ArrayRef) -> Result<ArrayRef> {
    let to = match column.data_type() {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => DataType::Int64,
        DataType::Float16 | DataType::Float32 => DataType::Float64,
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Date64 => DataType::Date32,
        DataType::Timestamp(unit, tz) if *unit != TimeUnit::Microsecond => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
        }
        _ => return Ok(column.clone()),
    };
    cast(column, &to).map_err(|e| Error::Internal(format!("reading a stored value: {e}")))
}

/// One value as JSON ([`Cell::into_json`]).
fn cell(column: &ArrayRef, row: usize) -> Json {
    Cell::of(column, row).into_json()
}

fn list(items: ArrayRef) -> Cell {
    match canonical(&items) {
        Ok(items) => Cell::List((0..items.len()).map(|i| Cell::of(&items, i)).collect()),
        Err(_) => Cell::Null,
    }
}

/// A decimal as Arrow writes it (`123.45`, `-0.05`), without Arrow's 128-bit arithmetic for
/// the values that fit in 64 bits (nearly all: a sync writes one per profile and column).
fn decimal_text(a: &Decimal128Array, row: usize) -> String {
    let scale = a.scale();
    let Ok(value) = i64::try_from(a.value(row)) else {
        return a.value_as_string(row);
    };
    let digits = value.unsigned_abs().to_string();
    if scale <= 0 || digits.len() > a.precision() as usize {
        return a.value_as_string(row);
    }
    let scale = scale as usize;
    let mut text = String::with_capacity(digits.len() + scale + 3);
    if value < 0 {
        text.push('-');
    }
    if digits.len() > scale {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        text.push_str(whole);
        text.push('.');
        text.push_str(fraction);
    } else {
        text.push_str("0.");
        text.extend(std::iter::repeat_n('0', scale - digits.len()));
        text.push_str(&digits);
    }
    text
}

/// A type name in the language's words, for runs without a catalog.
fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Boolean => "bool".into(),
        t if t.is_integer() => "int".into(),
        t if t.is_floating() => "float".into(),
        DataType::Decimal128(p, s) => format!("decimal({p}, {s})"),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::List(f) | DataType::LargeList(f) => format!("list<{}>", type_name(f.data_type())),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{BooleanArray, Decimal128Array, Int64Array as I64};

    /// Opens the test's store, waiting out a holder that is still letting go: sled releases its
    /// file lock from background threads a moment after the last handle is dropped.
    fn reopen(dir: &Path) -> OnlineStore {
        OnlineStore::open_waiting(&path(dir), Duration::from_secs(10)).unwrap()
    }

    fn strings_batch(names: &[&str], rows: &[&[Option<&str>]]) -> (Arc<ArrowSchema>, RecordBatch) {
        let schema = Arc::new(ArrowSchema::new(
            names
                .iter()
                .map(|n| Field::new(*n, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let columns = (0..names.len())
            .map(|i| {
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r[i]).collect::<Vec<_>>(),
                )) as ArrayRef
            })
            .collect();
        let b = RecordBatch::try_new(schema.clone(), columns).unwrap();
        (schema, b)
    }

    /// One run of a tiny entity `c`: profiles with a decimal and a segment's flag, identity
    /// keys, merges, and a catalog naming the segment column (a sync reads memberships from
    /// the profile, so no segments table is committed).
    struct Run<'a> {
        id: &'a str,
        profiles: &'a [(&'a str, Option<i128>, bool)],
        identity: &'a [(&'a str, &'a str, &'a str)],
        merges: &'a [(&'a str, &'a str)],
    }

    fn commit(s: &Storage, run: &Run) {
        let as_of = "2024-12-01 00:00:00";
        let mut tables = Vec::new();
        let mut stage = |name: &str, schema: Arc<ArrowSchema>, b: RecordBatch| {
            tables.push(s.stage(run.id, as_of, name, schema, &[b]).unwrap());
        };
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("canonical_id", DataType::Utf8, false),
            Field::new("ltv", DataType::Decimal128(12, 2), true),
            Field::new("big", DataType::Boolean, true),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(
                    run.profiles.iter().map(|p| p.0).collect::<Vec<_>>(),
                )),
                Arc::new(
                    Decimal128Array::from(run.profiles.iter().map(|p| p.1).collect::<Vec<_>>())
                        .with_precision_and_scale(12, 2)
                        .unwrap(),
                ),
                Arc::new(BooleanArray::from(
                    run.profiles.iter().map(|p| p.2).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap();
        stage("c_profile", schema, b);
        let rows: Vec<[Option<&str>; 3]> = run
            .identity
            .iter()
            .map(|(k, v, id)| [Some(*k), Some(*v), Some(*id)])
            .collect();
        let rows: Vec<&[Option<&str>]> = rows.iter().map(|r| &r[..]).collect();
        let (schema, b) = strings_batch(&["key_name", "key_value", "canonical_id"], &rows);
        stage("c_identity", schema, b);
        let rows: Vec<[Option<&str>; 2]> = run
            .merges
            .iter()
            .map(|(m, i)| [Some(*m), Some(*i)])
            .collect();
        let rows: Vec<&[Option<&str>]> = rows.iter().map(|r| &r[..]).collect();
        let (schema, b) = strings_batch(&["merged_id", "into_id"], &rows);
        stage("c_id_merges", schema, b);
        let catalog: &[&[Option<&str>]] = &[
            &[Some("key"), Some("email"), None, None, None],
            &[
                Some("feature"),
                Some("ltv"),
                Some("decimal(12, 2)"),
                None,
                None,
            ],
            &[Some("segment"), Some("big"), Some("bool"), None, None],
        ];
        let (schema, b) = strings_batch(&["kind", "name", "type", "stage", "step"], catalog);
        stage("c_catalog", schema, b);
        s.commit(&Manifest {
            run: run.id.into(),
            as_of: as_of.into(),
            started_at: String::new(),
            finished_at: String::new(),
            tables,
            steps: Vec::new(),
            rejects: Vec::new(),
        })
        .unwrap();
    }

    fn first_run() -> Run<'static> {
        Run {
            id: "r1",
            profiles: &[
                ("a", Some(12_345), true),
                ("b", None, false),
                ("x", Some(1), false),
            ],
            identity: &[
                ("email", "ana@x.org", "a"),
                ("cookie", "k1", "a"),
                ("email", "bo@x.org", "b"),
                ("email", "xavier@x.org", "x"),
            ],
            merges: &[],
        }
    }

    #[test]
    fn a_sync_makes_every_profile_readable_by_id_and_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        let online = reopen(dir.path());
        let empty = online.sync(&s).unwrap();
        assert_eq!((empty.run, empty.profiles), (None, 0));

        commit(&s, &first_run());
        let synced = online.sync(&s).unwrap();
        assert_eq!(synced.run.as_deref(), Some("r1"));
        assert_eq!((synced.profiles, synced.identity_keys), (3, 4));
        assert!(synced.updated);
        assert!(!online.sync(&s).unwrap().updated, "nothing to do twice");

        assert_eq!(
            online
                .canonical_id("c", "email", "ana@x.org")
                .unwrap()
                .as_deref(),
            Some("a")
        );
        assert_eq!(online.canonical_id("c", "email", "nobody").unwrap(), None);
        let a = online.profile("c", "a").unwrap().unwrap();
        assert_eq!(a.run, "r1");
        assert_eq!(a.as_of, "2024-12-01 00:00:00");
        assert_eq!(a.segments, vec!["big".to_string()]);
        // The segment column is a membership, not a value; keys come in priority order.
        assert_eq!(a.values.len(), 1);
        assert_eq!(
            (
                a.values[0].name.as_str(),
                a.values[0].kind.as_str(),
                a.values[0].ty.as_str()
            ),
            ("ltv", "feature", "decimal(12, 2)")
        );
        assert_eq!(a.values[0].value, Json::String("123.45".into()));
        assert_eq!(a.keys[0].key, "email");
        assert_eq!(a.keys.len(), 2);
        let b = online.profile("c", "b").unwrap().unwrap();
        assert_eq!(b.values[0].value, Json::Null);
        assert!(b.segments.is_empty());
        assert_eq!(online.entities().unwrap()[0].keys, vec!["email", "cookie"]);
    }

    #[test]
    fn blocks_find_every_entry_and_a_change_rewrites_only_its_own_block() {
        let dir = tempfile::tempdir().unwrap();
        let online = reopen(dir.path());
        let tree = &online.keys;
        let entry = |i: u32| (format!("id{i:06}").into_bytes(), i.to_le_bytes().to_vec());
        let write = |ids: &[u32]| {
            for entity in ["c", "d"] {
                let prefix = key_of(&[entity, ""]);
                let entries = ids.iter().map(|i| Ok(entry(*i)));
                online
                    .write_sorted(tree, &prefix, blocks(&prefix, entries, KEY_BLOCK))
                    .unwrap();
            }
        };
        let stored =
            || -> Vec<(sled::IVec, sled::IVec)> { tree.iter().map(|e| e.unwrap()).collect() };
        let evens: Vec<u32> = (0..10_000).map(|i| i * 2).collect();
        write(&evens);
        let before = stored();
        let sizes: Vec<usize> = before
            .iter()
            .map(|(_, v)| {
                postcard::from_bytes::<Vec<(&[u8], &[u8])>>(v)
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 20_000);
        assert!(
            (100..=600).contains(&before.len()),
            "about 20,000 / {KEY_BLOCK} blocks, not {}",
            before.len()
        );
        assert!(sizes.iter().all(|n| *n <= 4 * KEY_BLOCK as usize));
        for i in (0..20_001).step_by(7) {
            let found = online
                .blocked(tree, "d", format!("id{i:06}").as_bytes())
                .unwrap();
            assert_eq!(
                found,
                (i % 2 == 0).then(|| (i as u32).to_le_bytes().to_vec()),
                "{i}"
            );
        }
        assert_eq!(
            online.blocked(tree, "c", b"a").unwrap(),
            None,
            "before the first"
        );
        assert_eq!(
            online.blocked(tree, "b", b"id000000").unwrap(),
            None,
            "no such entity"
        );
        assert_eq!(
            online.blocked(tree, "e", b"id000000").unwrap(),
            None,
            "after the last"
        );

        // One profile more and one fewer, in each entity: a block or two change in each.
        let mut changed = evens.clone();
        changed.retain(|i| *i != 5_000);
        changed.push(12_345);
        changed.sort();
        write(&changed);
        let after = stored();
        let differ = after.iter().filter(|e| !before.contains(e)).count();
        assert!((2..=6).contains(&differ), "{differ} blocks rewritten");
        assert_eq!(
            online.blocked(tree, "c", b"id012345").unwrap(),
            Some(12_345u32.to_le_bytes().to_vec())
        );
        assert_eq!(online.blocked(tree, "c", b"id005000").unwrap(), None);
    }

    #[test]
    fn a_later_run_removes_what_is_gone_and_merged_ids_find_their_survivor() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        let online = reopen(dir.path());
        commit(&s, &first_run());
        online.sync(&s).unwrap();

        // b merges into a; x is gone.
        commit(
            &s,
            &Run {
                id: "r2",
                profiles: &[("a", Some(20_000), true)],
                identity: &[
                    ("email", "ana@x.org", "a"),
                    ("cookie", "k1", "a"),
                    ("email", "bo@x.org", "a"),
                ],
                merges: &[("b", "a")],
            },
        );
        let synced = online.sync(&s).unwrap();
        assert_eq!((synced.profiles, synced.identity_keys), (1, 3));
        assert_eq!(online.profile("c", "x").unwrap(), None);
        assert_eq!(
            online.canonical_id("c", "email", "xavier@x.org").unwrap(),
            None
        );
        assert_eq!(
            online
                .canonical_id("c", "email", "bo@x.org")
                .unwrap()
                .as_deref(),
            Some("a")
        );
        let via_b = online.profile("c", "b").unwrap().unwrap();
        assert_eq!(via_b.canonical_id, "a");
        assert_eq!(via_b.merged_from.as_deref(), Some("b"));
        assert_eq!(via_b.values[0].value, Json::String("200.00".into()));

        // a merges into z in a third run: b now leads to z.
        commit(
            &s,
            &Run {
                id: "r3",
                profiles: &[("z", Some(1), false)],
                identity: &[("email", "ana@x.org", "z")],
                merges: &[("a", "z")],
            },
        );
        online.sync(&s).unwrap();
        assert_eq!(online.profile("c", "b").unwrap().unwrap().canonical_id, "z");

        // Rebuilt from nothing, the store holds the same.
        drop(online);
        std::fs::remove_dir_all(path(dir.path())).unwrap();
        let online = reopen(dir.path());
        assert!(online.sync(&s).unwrap().updated);
        assert_eq!(online.profile("c", "b").unwrap().unwrap().canonical_id, "z");
        assert_eq!(online.profile("c", "a").unwrap().unwrap().canonical_id, "z");
        assert_eq!(online.schema("c", "r1").unwrap(), None, "old schemas go");
    }

    #[test]
    fn a_store_that_lags_or_lost_its_marker_is_brought_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        commit(&s, &first_run());
        {
            let online = reopen(dir.path());
            online.sync(&s).unwrap();
            // Killed after writing half of an update: a stale profile, a wrong key, a marker
            // that names no run.
            online
                .profiles
                .insert(key_of(&["c", "ghost"]), b"{}".to_vec())
                .unwrap();
            online
                .keys
                .insert(key_of(&["c", "email", "ana@x.org"]), b"ghost".to_vec())
                .unwrap();
            online.meta.insert("run", b"garbage".to_vec()).unwrap();
            online.flush().unwrap();
        }
        let online = reopen(dir.path());
        assert_eq!(online.run().unwrap().as_deref(), Some("garbage"));
        let synced = online.sync(&s).unwrap();
        assert!(synced.updated);
        assert_eq!(online.run().unwrap().as_deref(), Some("r1"));
        assert_eq!(online.record_bytes("c", "ghost").unwrap(), None);
        assert_eq!(
            online
                .canonical_id("c", "email", "ana@x.org")
                .unwrap()
                .as_deref(),
            Some("a")
        );
    }

    #[test]
    fn a_store_held_elsewhere_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let held = reopen(dir.path());
        let e = OnlineStore::open_waiting(&path(dir.path()), Duration::ZERO)
            .err()
            .expect("sled lets one holder in");
        assert!(in_use(&e), "{e}");
        drop(held);
        reopen(dir.path());
    }

    fn retail() -> ir::Project {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/retail");
        let sources = cdp_compiler::load_project(&root).unwrap();
        cdp_compiler::lower(&cdp_compiler::check(&sources)).unwrap()
    }

    #[test]
    fn keys_are_normalized_as_the_entity_declares() {
        let n = KeyNormalizer::new(&retail()).unwrap();
        // customer_id: upper(trim); email: lower(trim), blocklisted values; cookie_id: raw.
        assert_eq!(
            n.normalize("customer", "  Ana.S@Web.DE ").unwrap(),
            vec![
                Some("ANA.S@WEB.DE".to_string()),
                Some("ana.s@web.de".to_string()),
                Some("  Ana.S@Web.DE ".to_string()),
            ]
        );
        assert_eq!(
            n.normalize("customer", " TEST@example.com").unwrap()[1],
            None
        );
        assert!(n.normalize("nobody", "x").unwrap().is_empty());
    }

    #[test]
    fn the_catalog_names_every_column_and_journey_step() {
        let tables = catalog(&retail()).unwrap();
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].0, "customer_catalog");
        let c = Catalog::from_batches(&tables[0].1.batches).unwrap();
        assert_eq!(c.keys, ["customer_id", "email", "cookie_id"]);
        assert_eq!(
            c.values.get("lifetime_value"),
            Some(&("feature".to_string(), "decimal(38, 2)".to_string()))
        );
        assert_eq!(c.values.get("country").unwrap().0, "attribute");
        assert!(c.segments.contains("high_value"));
        let welcome = c.journeys.iter().find(|j| j.journey == "welcome").unwrap();
        assert_eq!(welcome.steps[0].stage, "hello");
        assert_eq!(welcome.steps[0].step, "activate welcome_email");
        assert_eq!(welcome.steps[1].step, "wait 2d");
        assert_eq!(
            welcome.steps[4].step,
            "wait until email_opens_90d >= 1, at most 5d"
        );
    }

    #[test]
    fn values_keep_their_type_in_json() {
        let ints: ArrayRef = Arc::new(I64::from(vec![Some(3), None]));
        assert_eq!(cell(&ints, 0), Json::from(3));
        assert_eq!(cell(&ints, 1), Json::Null);
        let ts: ArrayRef = Arc::new(datafusion::arrow::array::TimestampNanosecondArray::from(
            vec![1_733_011_200_000_000_000i64],
        ));
        assert_eq!(
            cell(&canonical(&ts).unwrap(), 0),
            Json::String("2024-12-01 00:00:00".into())
        );
        let dates: ArrayRef = Arc::new(datafusion::arrow::array::Date32Array::from(vec![0]));
        assert_eq!(cell(&dates, 0), Json::String("1970-01-01".into()));
    }

    #[test]
    fn a_record_put_together_from_its_parts_is_the_record_a_reader_decodes() {
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("canonical_id", DataType::Utf8, false),
            Field::new("ltv", DataType::Decimal128(12, 2), true),
            Field::new("vip", DataType::Boolean, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("active", DataType::Boolean, true),
        ]));
        let batch = |ids: Vec<&str>, ltv: Vec<Option<i128>>, vip, name, active| {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(
                    Decimal128Array::from(ltv)
                        .with_precision_and_scale(12, 2)
                        .unwrap(),
                ),
                Arc::new(BooleanArray::from(vip)),
                Arc::new(StringArray::from(name)),
                Arc::new(BooleanArray::from(active)),
            ];
            RecordBatch::try_new(schema.clone(), columns).unwrap()
        };
        let batches = [
            batch(
                vec!["a", "b"],
                vec![Some(12_345), None],
                vec![Some(true), None],
                vec![Some("ana"), None],
                vec![Some(true), Some(false)],
            ),
            batch(
                vec!["c"],
                vec![Some(-5)],
                vec![Some(false)],
                vec![Some("")],
                vec![None],
            ),
        ];
        let catalog = Catalog {
            segments: ["vip", "active"].map(String::from).into(),
            ..Catalog::default()
        };
        let layout = RecordLayout::of(&catalog, batches.first()).unwrap();
        let names: Vec<&str> = layout.values.iter().map(|(_, c)| c.name.as_str()).collect();
        assert_eq!(names, ["ltv", "name"]);
        let (bytes, at) = layout.encode(&batches).unwrap();
        assert_eq!(at.len(), 4);
        let run = Manifest {
            run: "r1".into(),
            as_of: "2024-12-01 00:00:00".into(),
            started_at: String::new(),
            finished_at: String::new(),
            tables: Vec::new(),
            steps: Vec::new(),
            rejects: Vec::new(),
        };
        let position = Position {
            journey: "onboarding".into(),
            node: 2,
            status: Some("active".into()),
            since: Some("2024-11-30 10:00:00".into()),
            entered_at: None,
            finished_at: None,
        };
        let expected = [
            (
                vec![Cell::Text("123.45".into()), Cell::Text("ana".into())],
                vec!["active", "vip"],
            ),
            (vec![Cell::Null, Cell::Null], vec![]),
            (
                vec![Cell::Text("-0.05".into()), Cell::Text(String::new())],
                vec![],
            ),
        ];
        for (g, (values, segments)) in expected.into_iter().enumerate() {
            let keys = [(7, ("email", "ana@x.org")), (7, ("cookie", "k1"))];
            let journeys = [(7, position.clone())];
            let written = record_bytes(&run, &keys, &bytes[at[g]..at[g + 1]], &journeys).unwrap();
            let record = Record {
                run: "r1".into(),
                as_of: "2024-12-01 00:00:00".into(),
                keys: vec![
                    ("email".into(), "ana@x.org".into()),
                    ("cookie".into(), "k1".into()),
                ],
                values,
                segments: segments.into_iter().map(String::from).collect(),
                journeys: vec![position.clone()],
            };
            assert_eq!(written, postcard::to_stdvec(&record).unwrap(), "row {g}");
            assert_eq!(postcard::from_bytes::<Record>(&written).unwrap(), record);
        }
    }

    #[test]
    fn a_profile_without_a_segment_column_is_an_error_not_a_record_without_memberships() {
        let schema = ArrowSchema::new(vec![Field::new("canonical_id", DataType::Utf8, false)]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(vec!["a"])) as ArrayRef],
        )
        .unwrap();
        let catalog = Catalog {
            segments: ["vip".to_string()].into(),
            ..Catalog::default()
        };
        let err = RecordLayout::of(&catalog, Some(&batch)).err().unwrap();
        assert!(err.to_string().contains("segment `vip`"), "{err}");
    }

    #[test]
    fn cells_read_column_wise_encode_as_the_cells_a_reader_decodes() {
        use datafusion::arrow::array::{ListArray, UInt64Array as U64};
        use datafusion::arrow::datatypes::Int32Type;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("ana"), None, Some("")])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(I64::from(vec![Some(-3), None, Some(i64::MAX)])),
            Arc::new(U64::from(vec![Some(7), Some(u64::MAX), None])),
            Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN), None])),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), None, Some(-5), Some(0), Some(-100)])
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
            Arc::new(
                Decimal128Array::from(vec![Some(i128::MAX / 10), Some(-7), Some(1)])
                    .with_precision_and_scale(38, 4)
                    .unwrap(),
            ),
            Arc::new(
                Decimal128Array::from(vec![Some(12), Some(-7)])
                    .with_precision_and_scale(10, 0)
                    .unwrap(),
            ),
            Arc::new(Date32Array::from(vec![Some(0), None, Some(20_000)])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(1),
                None,
                Some(-1),
            ])),
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), None]),
                None,
                Some(vec![]),
            ])),
            // A type outside the families: read through its text.
            Arc::new(datafusion::arrow::array::Time64MicrosecondArray::from(
                vec![Some(1_000_000), None, Some(0)],
            )),
        ];
        for column in &columns {
            let column = canonical(column).unwrap();
            let cells = Cells::new(&column);
            for row in 0..column.len() {
                let expected = Cell::of(&column, row);
                let written = postcard::to_stdvec(&cells.get(row)).unwrap();
                assert_eq!(
                    written,
                    postcard::to_stdvec(&expected).unwrap(),
                    "{} row {row}",
                    column.data_type()
                );
                let read: Cell = postcard::from_bytes(&written).unwrap();
                assert_eq!(format!("{read:?}"), format!("{expected:?}"));
            }
        }
    }
}
