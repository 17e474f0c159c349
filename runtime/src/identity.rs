//! Identity resolution in memory: the result of the SQL program's identity steps
//! (`cdp_compiler::sql`, from `<e>_id_records` to `<e>_identity` and `<e>_id_merges`), computed
//! with a union-find instead of rounds of label propagation.
//!
//! The rules, exactly as the SQL states them:
//!
//! - every record (a visible row of a source bound to the entity) holds a time `seen_at` and, per
//!   key of the entity, a normalized value or null. Each non-null value is an identifier, a
//!   *node* `key:value`, first seen at the least `seen_at` of the records holding it;
//! - two identifiers held by one record are *linked*; a link was first seen at the least `seen_at`
//!   of the records holding both;
//! - `max N per profile` on key K: for each identifier `a`, the identifiers of key K linked to `a`
//!   are ranked by (link first seen, `K:value`); links ranked after the N-th are dropped, and a
//!   link survives only when neither of its directions is dropped;
//! - a profile is a connected component of identifiers by surviving links. Its *anchor* is its
//!   identifier with the least (first seen, key priority, value); a new profile's id is the first
//!   16 hexadecimal digits of the MD5 of the anchor's `key:value`;
//! - ids are stable across runs: given the previous run's id map, every old id carried by members
//!   of a profile is *seen* at the least first-seen time of those members. An old id is claimed
//!   by the one profile carrying it with the least (seen, anchor `key:value`); a profile keeps the
//!   id it claimed with the least (seen, id), and each other id it claimed is recorded as merged
//!   into that one.
//!
//! A null `seen_at` counts as later than every time, as SQL's `min` (which skips nulls) and
//! `ORDER BY` (nulls last) treat it. Where SQL leaves the anchor undecided (two keys of equal
//! priority holding the same value first seen at the same time), the smaller `key:value` wins.
//!
//! How: identifiers are interned into numbers (`u32`) by a radix-partitioned hash table — while
//! reading, each value is appended to one of 256 partitions by its hash; then each partition is
//! deduplicated in a table small enough for the caches, partitions spread over the cores (random
//! probes into one big table would wait on memory for nearly every value). Links are deduplicated
//! by a counting sort on their first end, the limits sort only the neighbourhoods that exceed
//! them, and components come from a union-find with union by rank and path compression. Old ids
//! are interned the same way and claimed in one pass. Nothing is allocated per record.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicUsize, Ordering as Atomic};
use std::sync::Arc;

use cdp_compiler::ir;
use datafusion::arrow::array::{
    make_view, Array, ArrayRef, AsArray, RecordBatch, StringBuilder, StringViewArray,
};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use md5::{Digest, Md5};

use crate::error::{Error, Result};

/// `seen_at` of a record without a time: after every time.
const NEVER: i64 = i64::MAX;
/// No node, no component, no id.
const NONE: u32 = u32::MAX;
/// Values are spread over `2^PART_BITS` partitions by the top bits of their hash.
const PART_BITS: u32 = 8;
const PARTS: usize = 1 << PART_BITS;
/// Below this many values, partitions are interned on the calling thread.
const PARALLEL_FROM: usize = 1 << 16;

/// An identity key as resolution needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    /// Lower is stronger: it breaks ties between identifiers first seen at the same time.
    pub priority: u64,
    /// An identifier keeps links to at most this many identifiers of this key.
    pub max_per_profile: Option<u64>,
}

impl KeySpec {
    pub fn new(name: impl Into<String>, priority: u64, max_per_profile: Option<u64>) -> KeySpec {
        KeySpec {
            name: name.into(),
            priority,
            max_per_profile,
        }
    }

    /// The keys of an entity, in its (priority) order: the columns `k_<name>` of its
    /// `<e>_id_records` table.
    pub fn of_entity(entity: &ir::Entity) -> Vec<KeySpec> {
        entity
            .keys
            .iter()
            .map(|k| KeySpec::new(k.name.clone(), k.priority, k.max_per_profile))
            .collect()
    }
}

/// What a resolution found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records read (with or without identifiers).
    pub records: u64,
    /// Distinct identifiers (`<e>_id_nodes` rows).
    pub nodes: u64,
    /// Distinct links between identifiers, before the limits.
    pub links: u64,
    /// Links kept after `max N per profile` (`<e>_id_edges` holds each in both directions).
    pub edges: u64,
    /// Profiles (connected components).
    pub components: u64,
    /// Old ids merged into another (`<e>_id_merges` rows).
    pub merges: u64,
}

/// Resolves identity from records given one at a time ([`Resolver::add_record`]) or as Arrow
/// batches of an `<e>_id_records` table ([`Resolver::add_batch`]), and optionally the previous
/// run's id map ([`Resolver::add_previous`], [`Resolver::add_previous_batch`]). Reading only
/// hashes and files the values; [`Resolver::resolve`] does the rest.
pub struct Resolver {
    keys: Vec<KeySpec>,
    threads: usize,
    /// `seen_at` of every record.
    times: Vec<i64>,
    /// The identifiers of the records (`row` = record, `key` = key).
    identifiers: Spill<Seen>,
    /// The identifiers of the previous id map (`row` = its row, `key` = key).
    previous_nodes: Spill<Known>,
    /// The ids of the previous id map (`row` = its row).
    previous_ids: Spill<u32>,
    previous_rows: u32,
    seen_at_type: Option<DataType>,
    /// Batches read but not yet filed into the spills (see [`Resolver::file_pending`]).
    pending: Vec<Pending>,
}

/// A thread's share of the spills' partitions, from the first partition's number on.
type Shelves<'a> = (
    usize,
    &'a mut [SpillPart<Seen>],
    &'a mut [SpillPart<Known>],
    &'a mut [SpillPart<u32>],
);

/// `work` on each of `threads` shares of the spills' partitions, one share on the calling
/// thread and each other on a thread of its own.
fn on_shelves(
    threads: usize,
    name: &str,
    (identifiers, previous_nodes, previous_ids): (
        &mut Spill<Seen>,
        &mut Spill<Known>,
        &mut Spill<u32>,
    ),
    work: impl Fn(Shelves<'_>) -> Result<()> + Sync,
) -> Result<()> {
    let span = PARTS.div_ceil(threads.clamp(1, PARTS));
    let mut shares = identifiers
        .parts
        .chunks_mut(span)
        .zip(previous_nodes.parts.chunks_mut(span))
        .zip(previous_ids.parts.chunks_mut(span))
        .enumerate()
        .map(|(t, ((i, n), d))| (t * span, i, n, d));
    let own = shares.next();
    let work = &work;
    std::thread::scope(|scope| {
        let helpers: Vec<_> = shares
            .map(|share| {
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn_scoped(scope, move || work(share))
            })
            .collect();
        let mut result = own.map_or(Ok(()), work);
        for helper in helpers {
            let done = match helper {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    Err(Error::Internal(
                        "identity resolution: a thread failed".into(),
                    ))
                }),
                Err(e) => Err(Error::Internal(format!(
                    "identity resolution: starting a thread: {e}"
                ))),
            };
            result = result.and(done);
        }
        result
    })
}

/// The partition of each value of a column, hashed with the key `key_of` gives its row; rows
/// without a key, or null, get 0 (their byte is never read). Runs of rows are hashed on up to
/// `threads` threads.
fn partitions_of(
    column: &StrColumn<'_>,
    key_of: impl Fn(usize) -> Option<u32> + Sync,
    threads: usize,
) -> Vec<u8> {
    const _: () = assert!(PART_BITS <= 8, "a partition is kept in a byte");
    let n = column.len();
    let mut out = vec![0u8; n];
    let threads = if n < PARALLEL_FROM { 1 } else { threads.max(1) };
    let span = n.div_ceil(threads * 4).max(1);
    let runs = std::sync::Mutex::new(out.chunks_mut(span).enumerate());
    let hash_runs = || loop {
        let next = runs.lock().ok().and_then(|mut runs| runs.next());
        let Some((r, run)) = next else {
            return;
        };
        for (i, p) in run.iter_mut().enumerate() {
            let row = r * span + i;
            if let (Some(key), Some(value)) = (key_of(row), column.get(row)) {
                *p = partition(hash(key, value.as_bytes())) as u8;
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            // A helper that cannot start leaves its runs to the others.
            let _ = std::thread::Builder::new()
                .name("cdp-identity-hash".into())
                .spawn_scoped(scope, hash_runs);
        }
        hash_runs();
    });
    out
}

/// A batch whose values wait to be filed.
enum Pending {
    /// Records from `first` on, with a text column per key.
    Records {
        first: usize,
        columns: Vec<ArrayRef>,
    },
    /// Rows of an id map: `key_value` and `canonical_id`, and the key of each row (`NONE`:
    /// skipped), rows numbered from `first` in order among those not skipped.
    Previous {
        first: u32,
        columns: [ArrayRef; 2],
        keys: Vec<u32>,
    },
}

impl Resolver {
    /// A resolver for an entity with these keys (names must be distinct).
    pub fn new(keys: Vec<KeySpec>) -> Result<Resolver> {
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.name == k.name) {
                return Err(Error::Internal(format!(
                    "identity resolution: key `{}` is given twice",
                    k.name
                )));
            }
        }
        if keys.len() >= NONE as usize {
            return Err(Error::Internal("identity resolution: too many keys".into()));
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Ok(Resolver {
            keys,
            threads,
            times: Vec::new(),
            identifiers: Spill::new(),
            previous_nodes: Spill::new(),
            previous_ids: Spill::new(),
            previous_rows: 0,
            seen_at_type: None,
            pending: Vec::new(),
        })
    }

    /// A resolver for an entity of the IR.
    pub fn for_entity(entity: &ir::Entity) -> Result<Resolver> {
        Resolver::new(KeySpec::of_entity(entity))
    }

    /// Resolves on at most this many threads (by default, one per core).
    pub fn with_threads(mut self, threads: usize) -> Resolver {
        self.threads = threads.max(1);
        self
    }

    pub fn keys(&self) -> &[KeySpec] {
        &self.keys
    }

    /// Reserves room for the rows of these `<e>_id_records` and `<e>_id_map` batches, as
    /// [`Resolver::add_batch`] and [`Resolver::add_previous_batch`] will file them: the values'
    /// buffers are sized from the text the columns hold, so that reading them never regrows a
    /// buffer (each regrowth copies, and a large block comes from fresh pages that the kernel
    /// zeroes on first touch). Columns that are missing or not text are left to the reading to
    /// report. The reservations are made on the threads that file, each for its partitions:
    /// the memory is touched as it is taken, and zeroing it is most of what reserving costs.
    pub fn reserve_for(&mut self, records: &[RecordBatch], previous: &[RecordBatch]) {
        let rows: usize = records.iter().map(RecordBatch::num_rows).sum();
        self.times.reserve(rows);
        let (mut values, mut bytes) = (0, 0);
        for batch in records {
            for key in &self.keys {
                if let Some(column) = batch.column_by_name(&format!("k_{}", key.name)) {
                    values += column.len() - column.null_count();
                    bytes += text_bytes(column);
                }
            }
        }
        let (mut rows, mut value_bytes, mut id_bytes) = (0, 0, 0);
        for batch in previous {
            rows += batch.num_rows();
            value_bytes += batch.column_by_name("key_value").map_or(0, text_bytes);
            id_bytes += batch.column_by_name("canonical_id").map_or(0, text_bytes);
        }
        let threads = if values + rows < PARALLEL_FROM {
            1
        } else {
            self.threads
        };
        // Nothing is read, so nothing can fail but starting a thread; then some partitions go
        // unreserved and grow as they are filled.
        let _ = on_shelves(
            threads,
            "cdp-identity-reserve",
            (
                &mut self.identifiers,
                &mut self.previous_nodes,
                &mut self.previous_ids,
            ),
            |(_, identifiers, nodes, ids)| {
                reserve(identifiers, values, bytes);
                reserve(nodes, rows, value_bytes);
                reserve(ids, rows, id_bytes);
                Ok(())
            },
        );
    }

    /// One record: its time (`None` for null) and the normalized value of each key, in the
    /// order of the keys (`None` for null).
    pub fn add_record(&mut self, seen_at: Option<i64>, values: &[Option<&str>]) -> Result<()> {
        if values.len() != self.keys.len() {
            return Err(Error::Internal(format!(
                "identity resolution: a record has {} key values, the entity {} keys",
                values.len(),
                self.keys.len()
            )));
        }
        self.file_pending()?;
        let t = seen_at.unwrap_or(NEVER);
        let row = self.next_record(t)?;
        for (k, value) in values.iter().enumerate() {
            if let Some(value) = value {
                self.identifiers.push(
                    value,
                    Seen {
                        t,
                        row,
                        key: k as u32,
                    },
                )?;
            }
        }
        Ok(())
    }

    fn next_record(&mut self, t: i64) -> Result<u32> {
        let row = self.times.len();
        if row >= NONE as usize {
            return Err(Error::Internal(
                "identity resolution: more than 2^32 records".into(),
            ));
        }
        self.times.push(t);
        Ok(row as u32)
    }

    /// The rows of an `<e>_id_records` batch: a timestamp (or integer, or date) column
    /// `seen_at` and a string column `k_<key>` per key. Only the order of times matters, so the
    /// unit is kept, but every batch must give `seen_at` the same type.
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let bad = |m: String| Error::Internal(format!("identity resolution: {m}"));
        let seen_at = batch
            .column_by_name("seen_at")
            .ok_or_else(|| bad("the records have no column `seen_at`".into()))?;
        let time_like = matches!(
            seen_at.data_type(),
            DataType::Timestamp(..)
                | DataType::Date32
                | DataType::Date64
                | DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
        );
        if !time_like {
            return Err(bad(format!(
                "`seen_at` is {}, not a time",
                seen_at.data_type()
            )));
        }
        match &self.seen_at_type {
            None => self.seen_at_type = Some(seen_at.data_type().clone()),
            Some(t) if t == seen_at.data_type() => {}
            Some(t) => {
                return Err(bad(format!(
                    "`seen_at` is {} in one batch and {t} in another",
                    seen_at.data_type()
                )))
            }
        }
        let seen_at = cast(seen_at, &DataType::Int64)
            .map_err(|e| bad(format!("`seen_at` is not a time: {e}")))?;
        let seen_at = seen_at
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| bad("`seen_at` did not become an integer".into()))?;
        let mut owned: Vec<ArrayRef> = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            let name = format!("k_{}", key.name);
            let column = batch
                .column_by_name(&name)
                .ok_or_else(|| bad(format!("the records have no column `{name}`")))?;
            owned.push(text_column(column, &name)?);
        }
        if owned.iter().any(|c| StrColumn::new(c).is_none()) {
            return Err(bad("a key column is not text".into()));
        }
        let first = self.times.len();
        for row in 0..batch.num_rows() {
            let t = if seen_at.is_null(row) {
                NEVER
            } else {
                seen_at.value(row)
            };
            self.next_record(t)?;
        }
        self.pending.push(Pending::Records {
            first,
            columns: owned,
        });
        Ok(())
    }

    /// One row of the previous run's id map. Rows of keys the entity does not have match no
    /// identifier, as in SQL's join.
    pub fn add_previous(
        &mut self,
        key_name: &str,
        key_value: &str,
        canonical_id: &str,
    ) -> Result<()> {
        self.file_pending()?;
        let Some(key) = self.keys.iter().position(|k| k.name == key_name) else {
            return Ok(());
        };
        let row = self.previous_rows;
        if row == NONE {
            return Err(Error::Internal(
                "identity resolution: more than 2^32 previous ids".into(),
            ));
        }
        self.previous_rows += 1;
        self.previous_nodes.push(
            key_value,
            Known {
                row,
                key: key as u32,
            },
        )?;
        self.previous_ids.push(canonical_id, row)?;
        Ok(())
    }

    /// The rows of an id map batch (`<e>_id_map`: string columns `key_name`, `key_value`,
    /// `canonical_id`). Rows with a null skip, as they match nothing in SQL's join.
    pub fn add_previous_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let bad = |m: String| Error::Internal(format!("identity resolution: {m}"));
        let mut owned: Vec<ArrayRef> = Vec::with_capacity(3);
        for name in ["key_name", "key_value", "canonical_id"] {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| bad(format!("the id map has no column `{name}`")))?;
            owned.push(text_column(column, name)?);
        }
        let columns = owned
            .iter()
            .map(|c| StrColumn::new(c).ok_or_else(|| bad("an id map column is not text".into())))
            .collect::<Result<Vec<_>>>()?;
        // Which rows count, and under which key: those with the three values, of a key of
        // the entity (as SQL's join matches them).
        let first = self.previous_rows;
        let mut keys = Vec::with_capacity(batch.num_rows());
        let mut counted = 0u64;
        for row in 0..batch.num_rows() {
            let key = match (
                columns[0].get(row),
                columns[1].get(row),
                columns[2].get(row),
            ) {
                (Some(k), Some(_), Some(_)) => self.keys.iter().position(|x| x.name == k),
                _ => None,
            };
            counted += u64::from(key.is_some());
            keys.push(key.map_or(NONE, |k| k as u32));
        }
        self.previous_rows = u32::try_from(u64::from(first) + counted)
            .ok()
            .filter(|&n| n != NONE)
            .ok_or_else(|| bad("more than 2^32 previous ids".into()))?;
        let [_, values, ids] = <[ArrayRef; 3]>::try_from(owned)
            .map_err(|_| bad("the id map has not three columns".into()))?;
        self.pending.push(Pending::Previous {
            first,
            columns: [values, ids],
            keys,
        });
        Ok(())
    }

    /// Files the values of the pending batches into the spills' partitions, in the order they
    /// were read. Filing is scattered writes to hundreds of partitions, bound by memory rather
    /// than by hashing, so each thread reads every value, hashes it, and files the ones of its
    /// own range of partitions: every partition is filled by one thread, in the same order as
    /// one thread would.
    fn file_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let values: usize = pending
            .iter()
            .map(|p| match p {
                Pending::Records { columns, .. } => columns.iter().map(|c| c.len()).sum(),
                Pending::Previous { keys, .. } => keys.len(),
            })
            .sum();
        let threads = if values < PARALLEL_FROM {
            1
        } else {
            self.threads.clamp(1, PARTS)
        };
        // Reading checked the columns; a value that is not there now is a bug, not data to skip.
        let gone = || Error::Internal("identity resolution: a read column changed".into());
        // Each value's partition, hashed once (every filing thread would otherwise hash every
        // value to find its own): per batch, a lane of partitions per column filed.
        let mut lanes: Vec<Vec<Vec<u8>>> = Vec::with_capacity(pending.len());
        for batch in &pending {
            lanes.push(match batch {
                Pending::Records { columns, .. } => columns
                    .iter()
                    .enumerate()
                    .map(|(k, column)| {
                        let column = StrColumn::new(column).ok_or_else(gone)?;
                        Ok(partitions_of(&column, |_| Some(k as u32), threads))
                    })
                    .collect::<Result<_>>()?,
                Pending::Previous { columns, keys, .. } => {
                    let values = StrColumn::new(&columns[0]).ok_or_else(gone)?;
                    let ids = StrColumn::new(&columns[1]).ok_or_else(gone)?;
                    let key = |i: usize| Some(keys[i]).filter(|&k| k != NONE);
                    vec![
                        partitions_of(&values, key, threads),
                        partitions_of(&ids, |i| key(i).map(|_| 0), threads),
                    ]
                }
            });
        }
        let times = &self.times;
        let pending = &pending;
        let lanes = &lanes;
        let file = |(lo, identifiers, nodes, ids): Shelves<'_>| -> Result<()> {
            let hi = lo + identifiers.len();
            let mine = |p: u8| {
                let p = usize::from(p);
                (lo..hi).contains(&p).then(|| p - lo)
            };
            for (batch, lanes) in pending.iter().zip(lanes) {
                match batch {
                    Pending::Records { first, columns } => {
                        // Column by column: one key's values hash alike.
                        for (k, (column, lane)) in columns.iter().zip(lanes).enumerate() {
                            let column = StrColumn::new(column).ok_or_else(gone)?;
                            for (row, &p) in lane.iter().enumerate() {
                                let Some(p) = mine(p) else {
                                    continue;
                                };
                                if let Some(value) = column.get(row) {
                                    let record = first + row;
                                    identifiers[p].push(
                                        value,
                                        Seen {
                                            t: times[record],
                                            row: record as u32,
                                            key: k as u32,
                                        },
                                    )?;
                                }
                            }
                        }
                    }
                    Pending::Previous {
                        first,
                        columns,
                        keys,
                    } => {
                        let values = StrColumn::new(&columns[0]).ok_or_else(gone)?;
                        let id_column = StrColumn::new(&columns[1]).ok_or_else(gone)?;
                        let (value_lane, id_lane) = (&lanes[0], &lanes[1]);
                        let mut row = *first;
                        for (i, &key) in keys.iter().enumerate() {
                            if key == NONE {
                                continue;
                            }
                            if let Some(p) = mine(value_lane[i]) {
                                let value = values.get(i).ok_or_else(gone)?;
                                nodes[p].push(value, Known { row, key })?;
                            }
                            if let Some(p) = mine(id_lane[i]) {
                                let id = id_column.get(i).ok_or_else(gone)?;
                                ids[p].push(id, row)?;
                            }
                            row += 1;
                        }
                    }
                }
            }
            Ok(())
        };
        on_shelves(
            threads,
            "cdp-identity-file",
            (
                &mut self.identifiers,
                &mut self.previous_nodes,
                &mut self.previous_ids,
            ),
            file,
        )
    }

    /// Resolves: components, anchors, canonical ids and merges.
    pub fn resolve(mut self) -> Result<Resolution> {
        let filing = std::time::Instant::now();
        self.file_pending()?;
        let filing = filing.elapsed();
        let Resolver {
            keys,
            threads,
            times,
            identifiers,
            previous_nodes,
            previous_ids,
            previous_rows,
            ..
        } = self;
        let records = times.len();
        let width = keys.len();

        let mut clock = std::time::Instant::now();
        let mut timings: Vec<(&'static str, std::time::Duration)> = vec![("file", filing)];
        // Identifiers: each partition deduplicated on its own, then numbered globally.
        let mut parts = for_parts(threads, identifiers.len() + previous_nodes.len(), |p| {
            let mut interned = intern_part(&identifiers.parts[p], true)?;
            interned.found = lookup_part(&interned, &previous_nodes.parts[p]);
            Ok(interned)
        })?;
        let offsets = NodeSet::offsets(&parts)?;

        timings.push(("intern", clock.elapsed()));
        clock = std::time::Instant::now();
        // The identifiers of each record, then the links between them.
        let mut of_record = vec![NONE; records.saturating_mul(width)];
        for (p, part) in parts.iter().enumerate() {
            for (item, &local) in identifiers.parts[p].items.iter().zip(&part.local) {
                of_record[item.row as usize * width + item.key as usize] = offsets[p] + local;
            }
        }
        let mut previous_node = vec![NONE; previous_rows as usize];
        for (p, part) in parts.iter().enumerate() {
            for (item, &local) in previous_nodes.parts[p].items.iter().zip(&part.found) {
                if local != NONE {
                    previous_node[item.row as usize] = offsets[p] + local;
                }
            }
        }
        drop(identifiers);
        drop(previous_nodes);
        // Put together once the spills are gone, in the memory they leave.
        let (nodes, first_seen) = NodeSet::assemble(&mut parts)?;
        drop(parts);
        let n = nodes.len();
        // Sized exactly: growing would copy, and take fresh memory.
        let pairs: usize = if width > 1 {
            of_record
                .chunks_exact(width)
                .map(|ids| {
                    let k = ids.iter().filter(|&&x| x != NONE).count();
                    k * k.saturating_sub(1) / 2
                })
                .sum()
        } else {
            0
        };
        let mut raw = Vec::with_capacity(pairs);
        if width > 1 {
            for (r, ids) in of_record.chunks_exact(width).enumerate() {
                let t = times[r];
                for (i, &x) in ids.iter().enumerate() {
                    if x == NONE {
                        continue;
                    }
                    for &y in &ids[i + 1..] {
                        if y != NONE {
                            raw.push(Link {
                                a: x.min(y),
                                b: x.max(y),
                                t,
                            });
                        }
                    }
                }
            }
        }
        drop(of_record);
        drop(times);
        timings.push(("records and links", clock.elapsed()));
        clock = std::time::Instant::now();
        let links = unique_links(n, raw)?;
        timings.push(("unique links", clock.elapsed()));
        clock = std::time::Instant::now();
        let dropped = apply_limits(&keys, &nodes, &links)?;

        timings.push(("limits", clock.elapsed()));
        clock = std::time::Instant::now();
        let mut sets = UnionFind::new(n);
        let mut kept = 0u64;
        for (i, e) in links.iter().enumerate() {
            if !dropped.get(i).copied().unwrap_or(false) {
                sets.union(e.a, e.b);
                kept += 1;
            }
        }
        let links_total = links.len() as u64;
        drop(links);
        drop(dropped);

        timings.push(("union-find", clock.elapsed()));
        clock = std::time::Instant::now();
        // Components numbered in the order of their first identifier.
        let mut component_of_root = vec![NONE; n];
        let mut node_component = Vec::with_capacity(n);
        let mut components = 0u32;
        for node in 0..n as u32 {
            let root = sets.find(node) as usize;
            if component_of_root[root] == NONE {
                component_of_root[root] = components;
                components += 1;
            }
            node_component.push(component_of_root[root]);
        }
        drop(component_of_root);
        drop(sets);

        let view = Nodes {
            keys: &keys,
            nodes: &nodes,
            first_seen: &first_seen,
        };
        timings.push(("components", clock.elapsed()));
        clock = std::time::Instant::now();
        let anchor = anchors(&view, &node_component, components as usize, threads)?;

        timings.push(("anchors", clock.elapsed()));
        clock = std::time::Instant::now();
        // Old ids, numbered like identifiers.
        let id_parts = for_parts(threads, previous_ids.len(), |p| {
            intern_part(&previous_ids.parts[p], false)
        })?;
        let mut ids = Arena::default();
        let mut previous_id = vec![NONE; previous_rows as usize];
        for (p, part) in id_parts.iter().enumerate() {
            let offset = ids.len() as u32;
            for (&row, &local) in previous_ids.parts[p].items.iter().zip(&part.local) {
                previous_id[row as usize] = offset + local;
            }
            ids.extend(&part.arena)?;
        }
        drop(id_parts);
        drop(previous_ids);

        timings.push(("old ids", clock.elapsed()));
        clock = std::time::Instant::now();
        // An old id goes to the profile with the least (seen, anchor) among those carrying it,
        // a profile's seen being the least first-seen time of its members carrying the id: the
        // least (first seen, anchor) over the rows of the id map carrying it.
        let mut claim: Vec<(i64, u32)> = vec![(NEVER, NONE); ids.len()]; // (seen, component)
        for (&node, &id) in previous_node.iter().zip(&previous_id) {
            if node == NONE || id == NONE {
                continue;
            }
            let (c, seen) = (node_component[node as usize], first_seen[node as usize]);
            let current = &mut claim[id as usize];
            let better = if current.1 == NONE {
                true
            } else if current.1 == c {
                seen < current.0
            } else {
                (seen, Anchor(&view, anchor[c as usize]))
                    < (current.0, Anchor(&view, anchor[current.1 as usize]))
            };
            if better {
                *current = (seen, c);
            }
        }
        drop(previous_node);
        drop(previous_id);
        // A profile keeps the id it claimed with the least (seen, id); the others merge into it.
        let mut component_id = vec![NONE; components as usize];
        for (id, &(seen, c)) in claim.iter().enumerate() {
            if c == NONE {
                continue;
            }
            let kept = &mut component_id[c as usize];
            if *kept == NONE
                || (seen, ids.get(id as u32)) < (claim[*kept as usize].0, ids.get(*kept))
            {
                *kept = id as u32;
            }
        }
        let mut merges = Vec::new();
        for (id, &(_, c)) in claim.iter().enumerate() {
            if c != NONE && component_id[c as usize] != id as u32 {
                merges.push((id as u32, component_id[c as usize]));
            }
        }
        drop(claim);

        timings.push(("claims", clock.elapsed()));
        clock = std::time::Instant::now();
        // New profiles: the MD5 of the anchor.
        let chunk = (components as usize).div_ceil(CHUNKS).max(1);
        let fresh = for_tasks(threads, CHUNKS, components as usize, |task| {
            let mut text = String::new();
            let mut out = Vec::new();
            let first = (task * chunk).min(component_id.len());
            let last = (first + chunk).min(component_id.len());
            for c in first..last {
                if component_id[c] == NONE {
                    text.clear();
                    view.write_text(anchor[c], &mut text);
                    out.push((c as u32, md5_id(&text)));
                }
            }
            Ok(out)
        })?;
        let count: usize = fresh.iter().map(Vec::len).sum();
        ids.reserve(count, count * 16);
        for (c, hex) in fresh.into_iter().flatten() {
            component_id[c as usize] = ids.push(std::str::from_utf8(&hex).unwrap_or_default())?;
        }

        timings.push(("md5", clock.elapsed()));
        clock = std::time::Instant::now();
        let stats = Stats {
            records: records as u64,
            nodes: n as u64,
            links: links_total,
            edges: kept,
            components: components as u64,
            merges: merges.len() as u64,
        };
        let _ = clock;
        if std::env::var_os("CDP_IDENTITY_TIMINGS").is_some() {
            eprintln!("{timings:?}");
        }
        Ok(Resolution {
            keys,
            nodes,
            node_component,
            component_id,
            ids,
            merges,
            stats,
        })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";
/// Work split in this many tasks for the threads.
const CHUNKS: usize = 64;

/// The first 16 hexadecimal digits of the MD5 of `text`.
pub(crate) fn md5_id(text: &str) -> [u8; 16] {
    let digest = Md5::digest(text.as_bytes());
    let mut hex = [0u8; 16];
    for (j, byte) in digest.iter().take(8).enumerate() {
        hex[2 * j] = HEX[(byte >> 4) as usize];
        hex[2 * j + 1] = HEX[(byte & 15) as usize];
    }
    hex
}

/// A string column as one of Arrow's string types (other types cast to text).
fn text_column(column: &ArrayRef, name: &str) -> Result<ArrayRef> {
    match column.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Ok(column.clone()),
        _ => cast(column, &DataType::Utf8).map_err(|e| {
            Error::Internal(format!("identity resolution: `{name}` is not text: {e}"))
        }),
    }
}

/// The bytes of the values of a text column (0 for other types).
fn text_bytes(column: &ArrayRef) -> usize {
    match column.data_type() {
        DataType::Utf8 => {
            let offsets = column.as_string::<i32>().value_offsets();
            (offsets[offsets.len() - 1] - offsets[0]) as usize
        }
        DataType::LargeUtf8 => {
            let offsets = column.as_string::<i64>().value_offsets();
            (offsets[offsets.len() - 1] - offsets[0]) as usize
        }
        DataType::Utf8View => {
            let views = column.as_string_view();
            views.views().iter().map(|v| *v as u32 as usize).sum()
        }
        _ => 0,
    }
}

/// Resolves the records of `<e>_id_records` batches, starting from the previous run's id map
/// (`<e>_id_map` batches; none for a first run).
pub fn resolve(
    keys: Vec<KeySpec>,
    records: &[RecordBatch],
    previous: &[RecordBatch],
) -> Result<Resolution> {
    let mut resolver = Resolver::new(keys)?;
    resolver.reserve_for(records, previous);
    for batch in previous {
        resolver.add_previous_batch(batch)?;
    }
    for batch in records {
        resolver.add_batch(batch)?;
    }
    resolver.resolve()
}

/// The outcome: the canonical id of every identifier, and the merges.
pub struct Resolution {
    keys: Vec<KeySpec>,
    nodes: NodeSet,
    node_component: Vec<u32>,
    component_id: Vec<u32>,
    ids: Arena,
    merges: Vec<(u32, u32)>,
    stats: Stats,
}

/// One row of the id map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdRow<'a> {
    pub key_name: &'a str,
    pub key_value: &'a str,
    pub canonical_id: &'a str,
}

impl Resolution {
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Every identifier with its canonical id (the `<e>_identity` table), in no particular
    /// order (the same for the same input).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = IdRow<'_>> + '_ {
        (0..self.nodes.len() as u32).map(move |node| IdRow {
            key_name: &self.keys[self.nodes.key(node) as usize].name,
            key_value: self.nodes.value(node),
            canonical_id: self.id_of(node),
        })
    }

    fn id_of(&self, node: u32) -> &str {
        let c = self.node_component[node as usize];
        self.ids.get(self.component_id[c as usize])
    }

    /// The canonical id of one identifier, if it was seen.
    pub fn canonical_id(&self, key_name: &str, key_value: &str) -> Option<&str> {
        let key = self.keys.iter().position(|k| k.name == key_name)?;
        let node = self.nodes.get(key as u32, key_value)?;
        Some(self.id_of(node))
    }

    /// `(merged_id, into_id)`: old ids that another old id absorbed in this run.
    pub fn merges(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.merges
            .iter()
            .map(|&(merged, into)| (self.ids.get(merged), self.ids.get(into)))
    }

    /// The id map as a batch: `key_name`, `key_value`, `canonical_id` (the columns of
    /// `<e>_identity` and `<e>_id_map`), in node order; `canonical_id` is a string view array
    /// over one copy of each profile's id.
    ///
    /// An identifier's id is two lookups away (its component, then the component's id), each
    /// at a random place in arrays of millions: reading them row by row costs a cache and TLB
    /// miss each. So each component's view (length, prefix, place in a buffer of the ids in
    /// component order) is made once, and a row copies its component's view: one miss.
    pub fn id_map_batch(&self) -> Result<RecordBatch> {
        let n = self.nodes.len();
        let mut names = StringBuilder::with_capacity(n, n * 8);
        let mut values = StringBuilder::with_capacity(n, self.nodes.text_len());
        for node in 0..n as u32 {
            names.append_value(&self.keys[self.nodes.key(node) as usize].name);
            values.append_value(self.nodes.value(node));
        }
        let (component_views, buffers) = self.component_views()?;
        let views: Vec<u128> = self
            .node_component
            .iter()
            .map(|&c| component_views[c as usize])
            .collect();
        let ids = StringViewArray::try_new(views.into(), buffers, None)
            .map_err(|e| Error::Internal(format!("identity resolution output: {e}")))?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(names.finish()),
            Arc::new(values.finish()),
            Arc::new(ids),
        ];
        let schema = Schema::new(
            columns
                .iter()
                .zip(["key_name", "key_value", "canonical_id"])
                .map(|(c, name)| Field::new(name, c.data_type().clone(), false))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(Arc::new(schema), columns)
            .map_err(|e| Error::Internal(format!("identity resolution output: {e}")))
    }

    /// The view of each component's id, and the buffers they point into (a new one whenever
    /// the offsets would pass what a view can address).
    fn component_views(&self) -> Result<(Vec<u128>, Vec<Buffer>)> {
        let mut views = Vec::with_capacity(self.component_id.len());
        let mut buffers = Vec::new();
        let mut text: Vec<u8> = Vec::new();
        for &id in &self.component_id {
            let id = self.ids.get(id).as_bytes();
            if id.len() > 12 && text.len() + id.len() > u32::MAX as usize {
                buffers.push(Buffer::from_vec(std::mem::take(&mut text)));
            }
            let block = u32::try_from(buffers.len())
                .map_err(|_| Error::Internal("identity resolution output: too many ids".into()))?;
            views.push(make_view(id, block, text.len() as u32));
            if id.len() > 12 {
                text.extend_from_slice(id);
            }
        }
        buffers.push(Buffer::from_vec(text));
        Ok((views, buffers))
    }

    /// The merges as a batch: `merged_id`, `into_id`.
    pub fn merges_batch(&self) -> Result<RecordBatch> {
        let mut merged = StringBuilder::new();
        let mut into = StringBuilder::new();
        for (m, i) in self.merges() {
            merged.append_value(m);
            into.append_value(i);
        }
        string_batch(
            &["merged_id", "into_id"],
            vec![Arc::new(merged.finish()), Arc::new(into.finish())],
        )
    }
}

fn string_batch(names: &[&str], columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    let schema: SchemaRef = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(schema, columns)
        .map_err(|e| Error::Internal(format!("identity resolution output: {e}")))
}

// ------------------------------------------------------------------------------ interning

/// Strings as read, filed into partitions by hash, each with what came with it (`I`).
struct Spill<I> {
    parts: Vec<SpillPart<I>>,
}

struct SpillPart<I> {
    text: String,
    /// Where each string ends in `text`.
    ends: Vec<u32>,
    items: Vec<I>,
}

/// What came with a string of a spill.
trait SpillItem: Copy {
    fn key(self) -> u32;
    fn time(self) -> i64;
}

/// An identifier of a record.
#[derive(Clone, Copy)]
struct Seen {
    t: i64,
    row: u32,
    key: u32,
}

impl SpillItem for Seen {
    fn key(self) -> u32 {
        self.key
    }
    fn time(self) -> i64 {
        self.t
    }
}

/// An identifier of the previous id map.
#[derive(Clone, Copy)]
struct Known {
    row: u32,
    key: u32,
}

impl SpillItem for Known {
    fn key(self) -> u32 {
        self.key
    }
    fn time(self) -> i64 {
        NEVER
    }
}

/// An old id: its row of the id map.
impl SpillItem for u32 {
    fn key(self) -> u32 {
        0
    }
    fn time(self) -> i64 {
        NEVER
    }
}

impl<I: SpillItem> Spill<I> {
    fn new() -> Spill<I> {
        Spill {
            parts: (0..PARTS)
                .map(|_| SpillPart {
                    text: String::new(),
                    ends: Vec::new(),
                    items: Vec::new(),
                })
                .collect(),
        }
    }

    fn len(&self) -> usize {
        self.parts.iter().map(|p| p.items.len()).sum()
    }

    fn push(&mut self, value: &str, item: I) -> Result<()> {
        let h = hash(item.key(), value.as_bytes());
        self.parts[partition(h)].push(value, item)
    }
}

/// Room in these partitions for their share of `n` more strings of `bytes` bytes in all,
/// spread as the hash spreads them: evenly, with a thirty-second more for the partitions that
/// draw more than their share (a partition of 100k values strays from its share by about
/// 0.3%; every byte reserved is a byte the kernel zeroes, so the slack is not free).
fn reserve<I>(parts: &mut [SpillPart<I>], n: usize, bytes: usize) {
    let share = |total: usize| total / PARTS + total / PARTS / 32 + 16;
    for part in parts {
        part.items.reserve(share(n));
        part.ends.reserve(share(n));
        part.text.reserve(share(bytes));
    }
}

impl<I> SpillPart<I> {
    fn push(&mut self, value: &str, item: I) -> Result<()> {
        let end = u32::try_from(self.text.len() + value.len()).map_err(|_| {
            Error::Internal(
                "identity resolution: more than 2^32 bytes of values in a partition".into(),
            )
        })?;
        self.text.push_str(value);
        self.ends.push(end);
        self.items.push(item);
        Ok(())
    }

    fn value(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

/// The partition of a value with hash `h`: its top bits.
fn partition(h: u64) -> usize {
    (h >> (64 - PART_BITS)) as usize
}

/// The hash of a value inside its partition: the partition bits shifted out.
fn part_hash(key: u32, value: &str) -> u64 {
    hash(key, value.as_bytes()) << PART_BITS
}

/// One partition deduplicated: its distinct (key, value) numbered from 0, the number of each of
/// its items, and (for identifiers) the first time each was seen.
struct Interned {
    table: Table,
    keys: Vec<u32>,
    arena: Arena,
    first_seen: Vec<i64>,
    local: Vec<u32>,
    /// The numbers of the previous id map's identifiers that fall in this partition (`NONE`:
    /// not seen).
    found: Vec<u32>,
}

fn intern_part<I: SpillItem>(part: &SpillPart<I>, times: bool) -> Result<Interned> {
    let mut out = Interned {
        // Values repeat: start smaller, grow while the partition is in the cache.
        table: Table::for_len(part.items.len() / 2),
        keys: Vec::new(),
        arena: Arena::default(),
        first_seen: Vec::new(),
        local: Vec::with_capacity(part.items.len()),
        found: Vec::new(),
    };
    for (i, &item) in part.items.iter().enumerate() {
        let (key, value) = (item.key(), part.value(i));
        let h = part_hash(key, value);
        let found = out.table.find(h, |n| {
            out.keys[n as usize] == key && out.arena.get(n) == value
        });
        let node = match found {
            Ok(node) => {
                if times {
                    let first = &mut out.first_seen[node as usize];
                    *first = (*first).min(item.time());
                }
                node
            }
            Err(slot) => {
                let node = out.arena.push(value)?;
                out.keys.push(key);
                if times {
                    out.first_seen.push(item.time());
                }
                out.table.insert(slot, h, node)?;
                node
            }
        };
        out.local.push(node);
    }
    Ok(out)
}

/// The numbers, in an interned partition, of the items of another spill's same partition.
fn lookup_part<I: SpillItem>(interned: &Interned, part: &SpillPart<I>) -> Vec<u32> {
    (0..part.items.len())
        .map(|i| {
            let (key, value) = (part.items[i].key(), part.value(i));
            interned
                .table
                .find(part_hash(key, value), |n| {
                    interned.keys[n as usize] == key && interned.arena.get(n) == value
                })
                .unwrap_or(NONE)
        })
        .collect()
}

/// `work(p)` for every partition, on up to `threads` threads when there are enough values.
fn for_parts<R: Send>(
    threads: usize,
    values: usize,
    work: impl Fn(usize) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    for_tasks(threads, PARTS, values, work)
}

/// `work(task)` for every task of `0..tasks`, on up to `threads` threads when there are enough
/// values to make it worth it; the results in task order.
fn for_tasks<R: Send>(
    threads: usize,
    tasks: usize,
    values: usize,
    work: impl Fn(usize) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let threads = if values < PARALLEL_FROM {
        1
    } else {
        threads.min(tasks)
    };
    if threads <= 1 {
        return (0..tasks).map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let run = || {
        let mut done = Vec::new();
        loop {
            let p = next.fetch_add(1, Atomic::Relaxed);
            if p >= tasks {
                return done;
            }
            done.push((p, work(p)));
        }
    };
    let mut results: Vec<Option<Result<R>>> = (0..tasks).map(|_| None).collect();
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|i| {
                std::thread::Builder::new()
                    .name(format!("cdp-identity-{i}"))
                    .spawn_scoped(scope, run)
                    .ok()
            })
            .collect();
        for (p, r) in run() {
            results[p] = Some(r);
        }
        for helper in helpers {
            // A helper that panicked leaves its partitions undone: an error below.
            if let Ok(done) = helper.join() {
                for (p, r) in done {
                    results[p] = Some(r);
                }
            }
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Error::Internal(
                    "identity resolution: a thread failed".into(),
                ))
            })
        })
        .collect()
}

/// Every identifier: its key by number, and its value in the arena of its partition, whose
/// table finds the number of a (key, value).
struct NodeSet {
    keys: Vec<u32>,
    /// Where each partition's numbers start.
    offsets: Vec<u32>,
    arenas: Vec<Arena>,
    tables: Vec<Table>,
}

impl NodeSet {
    /// Where each partition's numbers start when they are numbered one after another.
    fn offsets(parts: &[Interned]) -> Result<Vec<u32>> {
        let mut offsets = Vec::with_capacity(parts.len());
        let mut total = 0usize;
        for part in parts {
            offsets.push(total as u32);
            total += part.keys.len();
            if total >= NONE as usize {
                return Err(Error::Internal(
                    "identity resolution: more than 2^32 identifiers".into(),
                ));
            }
        }
        Ok(offsets)
    }

    /// Numbers the identifiers of the partitions one after another, taking them (and their
    /// tables) from the partitions. Returns them and their first times.
    fn assemble(parts: &mut [Interned]) -> Result<(NodeSet, Vec<i64>)> {
        let total: usize = parts.iter().map(|p| p.keys.len()).sum();
        if total >= NONE as usize {
            return Err(Error::Internal(
                "identity resolution: more than 2^32 identifiers".into(),
            ));
        }
        let mut set = NodeSet {
            keys: Vec::with_capacity(total),
            offsets: Vec::with_capacity(parts.len()),
            arenas: Vec::with_capacity(parts.len()),
            tables: Vec::with_capacity(parts.len()),
        };
        let mut first_seen = Vec::with_capacity(total);
        for part in parts {
            set.offsets.push(set.keys.len() as u32);
            set.keys.extend_from_slice(&std::mem::take(&mut part.keys));
            first_seen.extend_from_slice(&std::mem::take(&mut part.first_seen));
            set.arenas.push(std::mem::take(&mut part.arena));
            set.tables
                .push(std::mem::replace(&mut part.table, Table::for_len(0)));
        }
        Ok((set, first_seen))
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn text_len(&self) -> usize {
        self.arenas.iter().map(|a| a.text.len()).sum()
    }

    fn key(&self, node: u32) -> u32 {
        self.keys[node as usize]
    }

    fn value(&self, node: u32) -> &str {
        // The last partition starting at or before the node (empty ones start there too).
        let p = self
            .offsets
            .partition_point(|&o| o <= node)
            .saturating_sub(1);
        self.arenas[p].get(node - self.offsets[p])
    }

    fn get(&self, key: u32, value: &str) -> Option<u32> {
        let h = hash(key, value.as_bytes());
        let p = partition(h);
        let (offset, arena) = (*self.offsets.get(p)?, self.arenas.get(p)?);
        let local = self
            .tables
            .get(p)?
            .find(h << PART_BITS, |n| {
                self.keys[(offset + n) as usize] == key && arena.get(n) == value
            })
            .ok()?;
        Some(offset + local)
    }
}

/// An open-addressing table (linear probing) of numbers: each entry is `tag << 32 | number`,
/// the tag being the top 32 bits of the hash, and the slot of an entry the top bits of its tag,
/// so that growing never needs the hashed values again.
struct Table {
    slots: Vec<u64>,
    bits: u32,
    len: usize,
}

const EMPTY: u64 = u64::MAX;

impl Table {
    /// A table that holds `n` entries without growing.
    fn for_len(n: usize) -> Table {
        let mut bits = 4;
        while bits < 32 && (n as u64) * 8 > (1u64 << bits) * 5 {
            bits += 1;
        }
        Table {
            slots: vec![EMPTY; 1 << bits],
            bits,
            len: 0,
        }
    }

    fn slot(&self, tag: u32) -> usize {
        (tag >> (32 - self.bits)) as usize
    }

    /// The number whose hash is `h` and that `same` accepts, or the empty slot where it goes.
    fn find(&self, h: u64, same: impl Fn(u32) -> bool) -> Result<u32, usize> {
        let tag = (h >> 32) as u32;
        let mask = self.slots.len() - 1;
        let mut i = self.slot(tag);
        loop {
            let entry = self.slots[i];
            if entry == EMPTY {
                return Err(i);
            }
            if (entry >> 32) as u32 == tag && same(entry as u32) {
                return Ok(entry as u32);
            }
            i = (i + 1) & mask;
        }
    }

    /// Puts `number` in the empty slot `find` gave.
    fn insert(&mut self, slot: usize, h: u64, number: u32) -> Result<()> {
        self.slots[slot] = (h & 0xffff_ffff_0000_0000) | u64::from(number);
        self.len += 1;
        if (self.len as u64) * 8 > (self.slots.len() as u64) * 5 {
            if self.bits >= 32 {
                return Err(Error::Internal(
                    "identity resolution: too many identifiers".into(),
                ));
            }
            self.bits += 1;
            let old = std::mem::replace(&mut self.slots, vec![EMPTY; 1 << self.bits]);
            let mask = self.slots.len() - 1;
            for entry in old.into_iter().filter(|&e| e != EMPTY) {
                let mut i = self.slot((entry >> 32) as u32);
                while self.slots[i] != EMPTY {
                    i = (i + 1) & mask;
                }
                self.slots[i] = entry;
            }
        }
        Ok(())
    }
}

/// A fast 64-bit hash of (key, bytes): folded multiplications over 8-byte words. A tail shorter
/// than a word is read as the last 8 bytes (overlapping the word before), or for short values
/// as two overlapping 4-byte halves: whole loads, where copying the tail into a zeroed word
/// costs a call and a stalled load per value.
fn hash(key: u32, bytes: &[u8]) -> u64 {
    const K0: u64 = 0x9e37_79b9_7f4a_7c15;
    const K1: u64 = 0xc2b2_ae3d_27d4_eb4f;
    const K2: u64 = 0x1656_67b1_9e37_79f9;
    let n = bytes.len();
    let mut h = fold(u64::from(key) ^ K2, (n as u64) ^ K0);
    if n >= 8 {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h = fold(h ^ word(w), K1);
        }
        if !words.remainder().is_empty() {
            h = fold(h ^ word(&bytes[n - 8..]), K0);
        }
    } else if n >= 4 {
        let half = |at: usize| {
            u64::from(u32::from_le_bytes(
                bytes[at..at + 4].try_into().unwrap_or([0; 4]),
            ))
        };
        h = fold(h ^ (half(0) | half(n - 4) << 32), K0);
    } else if n > 0 {
        let w = u64::from(bytes[0]) | u64::from(bytes[n / 2]) << 8 | u64::from(bytes[n - 1]) << 16;
        h = fold(h ^ w, K0);
    }
    fold(h, K1)
}

fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Eight bytes as a word (`bytes` holds eight).
fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))
}

// ------------------------------------------------------------------------------ links

/// A link `a < b` with the time a record gave it (after [`unique_links`], the time it was first
/// seen).
#[derive(Clone, Copy)]
struct Link {
    a: u32,
    b: u32,
    t: i64,
}

/// The distinct links with their first-seen times: a counting sort on `a`, then a small sort of
/// each `a`'s links on `b`. The links are written over the raw ones.
fn unique_links(nodes: usize, raw: Vec<Link>) -> Result<Vec<Link>> {
    if raw.len() >= NONE as usize {
        return Err(Error::Internal(
            "identity resolution: more than 2^32 links".into(),
        ));
    }
    // Counted, summed to where each `a`'s links end, then filled backwards: each `a`'s entry
    // ends where its links begin, and the next `a`'s where they end.
    let mut start = vec![0u32; nodes + 1];
    for l in &raw {
        start[l.a as usize] += 1;
    }
    let mut sum = 0u32;
    for s in start.iter_mut() {
        sum += *s;
        *s = sum;
    }
    let mut by_a = vec![(0u32, 0i64); raw.len()];
    for l in &raw {
        let slot = &mut start[l.a as usize];
        *slot -= 1;
        by_a[*slot as usize] = (l.b, l.t);
    }
    let mut links = raw;
    links.clear();
    for a in 0..nodes {
        let bucket = &mut by_a[start[a] as usize..start[a + 1] as usize];
        if bucket.len() > 1 {
            bucket.sort_unstable();
        }
        let mut last = NONE;
        for &(b, t) in bucket.iter() {
            // Sorted by (b, t): the first of each b has the least time.
            if b != last {
                links.push(Link { a: a as u32, b, t });
                last = b;
            }
        }
    }
    Ok(links)
}

/// Which links `max N per profile` drops: for each identifier, its links to identifiers of a
/// limited key ranked by (link first seen, value); those ranked after N are dropped.
///
/// Nearly every identifier has fewer such links than the least limit, and is left alone
/// without looking at its links: a first pass counts them in a byte per identifier (which also
/// says whether the identifier's key is limited, so that a link's far end is one read in a small
/// array), and only the links around identifiers counted past the least limit are gathered and
/// sorted.
fn apply_limits(keys: &[KeySpec], nodes: &NodeSet, links: &[Link]) -> Result<Vec<bool>> {
    let limits: Vec<Option<u64>> = keys.iter().map(|k| k.max_per_profile).collect();
    let Some(least) = limits.iter().flatten().min().copied() else {
        return Ok(Vec::new());
    };
    const LIMITED: u8 = 0x80;
    const COUNT: u8 = 0x7f;
    let mut state: Vec<u8> = nodes
        .keys
        .iter()
        .map(|&k| {
            if limits[k as usize].is_some() {
                LIMITED
            } else {
                0
            }
        })
        .collect();
    let count = |state: &mut [u8], node: u32| {
        let s = &mut state[node as usize];
        if *s & COUNT < COUNT {
            *s += 1;
        }
    };
    for l in links {
        let (a, b) = (state[l.a as usize], state[l.b as usize]);
        if b & LIMITED != 0 {
            count(&mut state, l.a);
        }
        if a & LIMITED != 0 {
            count(&mut state, l.b);
        }
    }
    // A count at its ceiling may be any number past it: its identifier is looked at too.
    let over = |s: u8| u64::from(s & COUNT) > least || s & COUNT == COUNT;
    if !state.iter().any(|&s| over(s)) {
        return Ok(Vec::new());
    }
    let limited = |s: u8| s & LIMITED != 0;
    // (identifier, linked identifier of a limited key, link)
    let mut around: Vec<(u32, u32, u32)> = Vec::new();
    for (i, l) in links.iter().enumerate() {
        let (a, b) = (state[l.a as usize], state[l.b as usize]);
        if limited(b) && over(a) {
            around.push((l.a, l.b, i as u32));
        }
        if limited(a) && over(b) {
            around.push((l.b, l.a, i as u32));
        }
    }
    drop(state);
    around.sort_unstable_by_key(|&(x, _, _)| x);
    let mut dropped = vec![false; links.len()];
    for group in around.chunk_by_mut(|p, q| p.0 == q.0) {
        if group.len() as u64 <= least {
            continue;
        }
        group.sort_unstable_by(|&(_, p, lp), &(_, q, lq)| {
            nodes
                .key(p)
                .cmp(&nodes.key(q))
                .then(links[lp as usize].t.cmp(&links[lq as usize].t))
                .then_with(|| nodes.value(p).cmp(nodes.value(q)))
        });
        for by_key in group.chunk_by(|x, y| nodes.key(x.1) == nodes.key(y.1)) {
            if let Some(max) = limits[nodes.key(by_key[0].1) as usize] {
                let keep = usize::try_from(max).unwrap_or(usize::MAX);
                for &(_, _, link) in by_key.iter().skip(keep) {
                    dropped[link as usize] = true;
                }
            }
        }
    }
    Ok(dropped)
}

// ------------------------------------------------------------------------------ components

/// Disjoint sets over `0..n`: union by rank, find with path compression.
struct UnionFind {
    parent: Vec<u32>,
    rank: Vec<u8>,
}

impl UnionFind {
    fn new(n: usize) -> UnionFind {
        UnionFind {
            parent: (0..n as u32).collect(),
            rank: vec![0; n],
        }
    }

    fn find(&mut self, x: u32) -> u32 {
        let mut root = x;
        while self.parent[root as usize] != root {
            root = self.parent[root as usize];
        }
        let mut x = x;
        while self.parent[x as usize] != root {
            let next = self.parent[x as usize];
            self.parent[x as usize] = root;
            x = next;
        }
        root
    }

    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let (ka, kb) = (self.rank[ra as usize], self.rank[rb as usize]);
        match ka.cmp(&kb) {
            Ordering::Less => self.parent[ra as usize] = rb,
            Ordering::Greater => self.parent[rb as usize] = ra,
            Ordering::Equal => {
                self.parent[rb as usize] = ra;
                self.rank[ra as usize] = ka.saturating_add(1);
            }
        }
    }
}

/// The identifiers with what ordering them needs.
struct Nodes<'a> {
    keys: &'a [KeySpec],
    nodes: &'a NodeSet,
    first_seen: &'a [i64],
}

impl Nodes<'_> {
    fn key_name(&self, node: u32) -> &str {
        &self.keys[self.nodes.key(node) as usize].name
    }

    /// `key:value`, the identifier as SQL writes it.
    fn text_cmp(&self, a: u32, b: u32) -> Ordering {
        let text = |n: u32| {
            self.key_name(n)
                .bytes()
                .chain(std::iter::once(b':'))
                .chain(self.nodes.value(n).bytes())
        };
        text(a).cmp(text(b))
    }

    fn write_text(&self, node: u32, out: &mut String) {
        out.push_str(self.key_name(node));
        out.push(':');
        out.push_str(self.nodes.value(node));
    }

    /// The anchor order: first seen, key priority, value (then `key:value`).
    fn anchor_cmp(&self, a: u32, b: u32) -> Ordering {
        let (ka, kb) = (self.nodes.key(a) as usize, self.nodes.key(b) as usize);
        self.first_seen[a as usize]
            .cmp(&self.first_seen[b as usize])
            .then(self.keys[ka].priority.cmp(&self.keys[kb].priority))
            .then_with(|| self.nodes.value(a).cmp(self.nodes.value(b)))
            .then_with(|| self.text_cmp(a, b))
    }
}

/// The anchor of each component: its least identifier in the anchor order.
///
/// The components of consecutive identifiers are scattered, so each step reads a component's
/// current anchor at random: each thread takes a range of identifiers and keeps, per component,
/// its least identifier in the range with that identifier's first time beside it (the time
/// decides nearly every comparison, and then needs no second random read); the ranges' winners
/// are then compared component by component.
fn anchors(
    view: &Nodes<'_>,
    node_component: &[u32],
    components: usize,
    threads: usize,
) -> Result<Vec<u32>> {
    let n = node_component.len();
    let threads = if n < PARALLEL_FROM { 1 } else { threads };
    let better = |node: u32, seen: i64, current: (i64, u32)| {
        current.1 == NONE
            || seen < current.0
            || (seen == current.0 && view.anchor_cmp(node, current.1) == Ordering::Less)
    };
    let span = n.div_ceil(threads).max(1);
    let found = for_tasks(threads, threads, n, |t| {
        let mut least = vec![(NEVER, NONE); components];
        let first = (t * span).min(n);
        let last = (first + span).min(n);
        for (node, &c) in (first..last).zip(&node_component[first..last]) {
            let seen = view.first_seen[node];
            let current = &mut least[c as usize];
            if better(node as u32, seen, *current) {
                *current = (seen, node as u32);
            }
        }
        Ok(least)
    })?;
    let mut found = found.into_iter();
    let mut least = found.next().unwrap_or_default();
    for other in found {
        for (current, (seen, node)) in least.iter_mut().zip(other) {
            if node != NONE && better(node, seen, *current) {
                *current = (seen, node);
            }
        }
    }
    Ok(least.into_iter().map(|(_, node)| node).collect())
}

/// A component's anchor, ordered by its `key:value`.
struct Anchor<'a, 'b>(&'a Nodes<'b>, u32);

impl PartialEq for Anchor<'_, '_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Anchor<'_, '_> {}
impl PartialOrd for Anchor<'_, '_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Anchor<'_, '_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.text_cmp(self.1, other.1)
    }
}

// ------------------------------------------------------------------------------ strings

/// A string column of any Arrow string type.
enum StrColumn<'a> {
    Utf8(&'a datafusion::arrow::array::StringArray),
    Large(&'a datafusion::arrow::array::LargeStringArray),
    View(&'a datafusion::arrow::array::StringViewArray),
}

impl<'a> StrColumn<'a> {
    fn new(array: &'a ArrayRef) -> Option<StrColumn<'a>> {
        match array.data_type() {
            DataType::Utf8 => array.as_string_opt::<i32>().map(StrColumn::Utf8),
            DataType::LargeUtf8 => array.as_string_opt::<i64>().map(StrColumn::Large),
            DataType::Utf8View => array.as_string_view_opt().map(StrColumn::View),
            _ => None,
        }
    }

    fn len(&self) -> usize {
        match self {
            StrColumn::Utf8(a) => a.len(),
            StrColumn::Large(a) => a.len(),
            StrColumn::View(a) => a.len(),
        }
    }

    fn get(&self, row: usize) -> Option<&'a str> {
        match self {
            StrColumn::Utf8(a) => (!a.is_null(row)).then(|| a.value(row)),
            StrColumn::Large(a) => (!a.is_null(row)).then(|| a.value(row)),
            StrColumn::View(a) => (!a.is_null(row)).then(|| a.value(row)),
        }
    }
}

/// Strings one after another in one buffer, numbered in order.
#[derive(Default)]
struct Arena {
    text: String,
    /// Where each string ends in `text` (which holds less than 4 GiB).
    ends: Vec<u32>,
}

impl Arena {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Room for `n` more strings of `bytes` bytes in all.
    fn reserve(&mut self, n: usize, bytes: usize) {
        self.ends.reserve(n);
        self.text.reserve(bytes);
    }

    fn push(&mut self, s: &str) -> Result<u32> {
        let i = self.ends.len();
        if i >= NONE as usize - 1 {
            return Err(Error::Internal(
                "identity resolution: more than 2^32 strings".into(),
            ));
        }
        self.text.push_str(s);
        self.ends.push(arena_end(self.text.len())?);
        Ok(i as u32)
    }

    /// Appends every string of `other`, numbered after these.
    fn extend(&mut self, other: &Arena) -> Result<()> {
        if self.ends.len() + other.ends.len() >= NONE as usize - 1 {
            return Err(Error::Internal(
                "identity resolution: more than 2^32 strings".into(),
            ));
        }
        let base = arena_end(self.text.len())?;
        arena_end(self.text.len() + other.text.len())?;
        self.text.push_str(&other.text);
        self.ends.extend(other.ends.iter().map(|e| e + base));
        Ok(())
    }

    #[inline]
    fn get(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

/// An end in an arena's text, which must stay below 4 GiB.
fn arena_end(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| {
        Error::Internal("identity resolution: more than 4 GiB of strings in one arena".into())
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering::Relaxed;

    use datafusion::arrow::array::{
        Int64Array, LargeStringArray, StringArray, StringViewArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::TimeUnit;
    use proptest::prelude::*;

    use super::*;
    use crate::batch::{BatchEngine, Table};
    use crate::program::{Program, Step};

    fn key(name: &str, priority: u64, max: Option<u64>) -> KeySpec {
        KeySpec::new(name, priority, max)
    }

    /// Records written as `(seen_at, [(key, value)])`, previous rows as `(key, value, id)`.
    fn resolve_rows(
        keys: &[KeySpec],
        records: &[(i64, &[(&str, &str)])],
        previous: &[(&str, &str, &str)],
    ) -> Resolution {
        let mut r = Resolver::new(keys.to_vec()).unwrap();
        for (k, v, id) in previous {
            r.add_previous(k, v, id).unwrap();
        }
        for (t, values) in records {
            r.add_record(Some(*t), &row_of(keys, values)).unwrap();
        }
        r.resolve().unwrap()
    }

    fn row_of<'a>(keys: &[KeySpec], values: &[(&str, &'a str)]) -> Vec<Option<&'a str>> {
        keys.iter()
            .map(|k| values.iter().find(|(n, _)| *n == k.name).map(|(_, v)| *v))
            .collect()
    }

    /// `key:value` → canonical id.
    fn node_ids(res: &Resolution) -> BTreeMap<String, String> {
        res.iter()
            .map(|r| {
                (
                    format!("{}:{}", r.key_name, r.key_value),
                    r.canonical_id.to_string(),
                )
            })
            .collect()
    }

    fn merges(res: &Resolution) -> Vec<(String, String)> {
        let mut m: Vec<(String, String)> = res
            .merges()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        m.sort();
        m
    }

    fn md5_id(text: &str) -> String {
        Md5::digest(text.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn same_profile(res: &Resolution, nodes: &[&str]) -> String {
        let ids = node_ids(res);
        let first = &ids[nodes[0]];
        for n in nodes {
            assert_eq!(&ids[*n], first, "{n} is not with {}: {ids:?}", nodes[0]);
        }
        first.clone()
    }

    fn web() -> Vec<KeySpec> {
        vec![
            key("customer_id", 1, None),
            key("email", 2, None),
            key("cookie", 3, None),
        ]
    }

    /// Filing on several threads (each its own range of partitions) numbers identifiers as
    /// one thread does: the same rows in the same order, the same merges.
    #[test]
    fn resolving_on_more_threads_gives_the_same_rows_in_the_same_order() {
        let keys = vec![key("a", 1, None), key("b", 2, Some(2)), key("c", 3, None)];
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut batches = |records: usize| -> Vec<RecordBatch> {
            (0..3)
                .map(|_| {
                    let mut times = Vec::new();
                    let mut columns: [Vec<Option<String>>; 3] = Default::default();
                    for _ in 0..records / 3 {
                        times.push(Some(next(1_000) as i64));
                        let person = next(30_000);
                        columns[0].push((next(4) == 0).then(|| format!("a{person}")));
                        columns[1].push((next(10) > 0).then(|| format!("b{}", person / 2)));
                        columns[2].push(Some(format!("cookie-{}", next(60_000))));
                    }
                    let [a, b, c] = columns.map(|c| Arc::new(StringArray::from(c)) as ArrayRef);
                    let times: TimestampMicrosecondArray = times.into_iter().collect();
                    records_batch(Arc::new(times), vec![("k_a", a), ("k_b", b), ("k_c", c)])
                })
                .collect()
        };
        let first = batches(90_000);
        let mut all = first.clone();
        all.extend(batches(15_000));
        let resolve_on = |threads: usize, records: &[RecordBatch], previous: &[RecordBatch]| {
            let mut r = Resolver::new(keys.clone()).unwrap().with_threads(threads);
            r.reserve_for(records, previous);
            for batch in previous {
                r.add_previous_batch(batch).unwrap();
            }
            for batch in records {
                r.add_batch(batch).unwrap();
            }
            r.resolve().unwrap()
        };
        let listed = |res: &Resolution| {
            let rows: Vec<(String, String, String)> = res
                .iter()
                .map(|r| (r.key_name.into(), r.key_value.into(), r.canonical_id.into()))
                .collect();
            let merges: Vec<(String, String)> =
                res.merges().map(|(m, i)| (m.into(), i.into())).collect();
            (rows, merges)
        };
        let map = resolve_on(1, &first, &[]).id_map_batch().unwrap();
        // Enough values that filing and interning do go to threads, and the id map's columns
        // are hashed on threads too.
        assert!(all.iter().map(|b| 3 * b.num_rows()).sum::<usize>() > PARALLEL_FROM);
        assert!(map.num_rows() > PARALLEL_FROM);
        let one = listed(&resolve_on(1, &all, std::slice::from_ref(&map)));
        assert!(!one.1.is_empty(), "the second run merges profiles");
        for threads in [2, 3] {
            assert!(
                one == listed(&resolve_on(threads, &all, std::slice::from_ref(&map))),
                "{threads} threads"
            );
        }
    }

    #[test]
    fn fresh_ids_are_the_md5_of_the_anchor() {
        assert_eq!(md5_id("email:a"), "19f32c22fb06acef");
        let keys = [key("email", 1, None), key("k", 2, None)];
        let res = resolve_rows(&keys, &[(1, &[("email", "a")]), (1, &[("k", "")])], &[]);
        let ids = node_ids(&res);
        assert_eq!(ids["email:a"], "19f32c22fb06acef");
        // An empty value is an identifier like any other (normalization nulls what it excludes).
        assert_eq!(ids["k:"], "f1f9250fcac74ed2");
    }

    #[test]
    fn a_chain_of_records_is_one_profile() {
        let res = resolve_rows(
            &web(),
            &[
                (20, &[("cookie", "c1"), ("customer_id", "C1")]),
                (10, &[("email", "a"), ("cookie", "c1")]),
                (30, &[("customer_id", "C1"), ("email", "b")]),
                (40, &[("email", "b")]),
            ],
            &[],
        );
        let id = same_profile(&res, &["email:a", "cookie:c1", "customer_id:C1", "email:b"]);
        // First seen at 10: email:a and cookie:c1; the email has the stronger key.
        assert_eq!(id, md5_id("email:a"));
        let s = res.stats();
        assert_eq!(
            (s.records, s.nodes, s.links, s.edges, s.components, s.merges),
            (4, 4, 3, 3, 1, 0)
        );
    }

    #[test]
    fn a_star_is_one_profile_until_a_limit_cuts_it() {
        let records: Vec<(i64, Vec<(&str, String)>)> = (1..=5)
            .map(|i| {
                (
                    i,
                    vec![("cookie", "c".to_string()), ("email", format!("e{i}"))],
                )
            })
            .collect();
        let run = |keys: &[KeySpec]| {
            let mut r = Resolver::new(keys.to_vec()).unwrap();
            for (t, values) in &records {
                let values: Vec<(&str, &str)> =
                    values.iter().map(|(k, v)| (*k, v.as_str())).collect();
                r.add_record(Some(*t), &row_of(keys, &values)).unwrap();
            }
            r.resolve().unwrap()
        };
        let free = run(&[key("email", 1, None), key("cookie", 2, None)]);
        assert_eq!(free.stats().components, 1);
        assert_eq!(free.stats().edges, 5);

        // One cookie keeps links to at most two emails: the two linked first.
        let limited = run(&[key("email", 1, Some(2)), key("cookie", 2, None)]);
        let s = limited.stats();
        assert_eq!((s.links, s.edges, s.components), (5, 2, 4));
        let id = same_profile(&limited, &["cookie:c", "email:e1", "email:e2"]);
        assert_eq!(id, md5_id("email:e1"));
        let ids = node_ids(&limited);
        for i in 3..=5 {
            assert_eq!(ids[&format!("email:e{i}")], md5_id(&format!("email:e{i}")));
        }
    }

    /// The first pass counts links in 7 bits: limits past that are still applied exactly.
    #[test]
    fn limits_past_a_hundred_and_twenty_seven_links_are_exact() {
        let emails: Vec<String> = (0..300).map(|i| format!("e{i:03}")).collect();
        let run = |max: u64| {
            let keys = [key("email", 1, Some(max)), key("cookie", 2, None)];
            let mut r = Resolver::new(keys.to_vec()).unwrap();
            for (i, e) in emails.iter().enumerate() {
                r.add_record(Some(i as i64), &[Some(e.as_str()), Some("c")])
                    .unwrap();
            }
            r.resolve().unwrap().stats()
        };
        for (max, kept) in [(126, 126), (127, 127), (128, 128), (200, 200), (300, 300)] {
            let s = run(max);
            assert_eq!((s.links, s.edges), (300, kept), "max {max}");
            assert_eq!(s.components, 300 - kept + 1, "max {max}");
        }
    }

    #[test]
    fn a_link_dropped_at_one_end_is_gone_at_both() {
        // The email keeps one cookie: c1, linked first. From c2's side the email is its only
        // email, but the link is gone all the same.
        let keys = [key("email", 1, None), key("cookie", 2, Some(1))];
        let res = resolve_rows(
            &keys,
            &[
                (1, &[("email", "e"), ("cookie", "c1")]),
                (2, &[("email", "e"), ("cookie", "c2")]),
            ],
            &[],
        );
        let ids = node_ids(&res);
        assert_eq!(ids["email:e"], ids["cookie:c1"]);
        assert_eq!(ids["cookie:c2"], md5_id("cookie:c2"));
        assert_eq!(res.stats().edges, 1);
    }

    #[test]
    fn limits_rank_links_by_when_the_link_was_seen_then_by_value() {
        let keys = [key("email", 1, Some(1)), key("cookie", 2, None)];
        // e2 is older than e1, but its link to the cookie is younger: e1 keeps the cookie.
        let res = resolve_rows(
            &keys,
            &[
                (1, &[("email", "e2")]),
                (3, &[("email", "e1"), ("cookie", "c")]),
                (5, &[("email", "e2"), ("cookie", "c")]),
            ],
            &[],
        );
        let ids = node_ids(&res);
        assert_eq!(ids["cookie:c"], ids["email:e1"]);
        assert_ne!(ids["cookie:c"], ids["email:e2"]);
        // Links seen at the same time: the smaller value first, whatever the input order.
        let res = resolve_rows(
            &keys,
            &[
                (3, &[("email", "b@x"), ("cookie", "c")]),
                (3, &[("email", "a@x"), ("cookie", "c")]),
            ],
            &[],
        );
        let ids = node_ids(&res);
        assert_eq!(ids["cookie:c"], ids["email:a@x"]);
        assert_eq!(ids["email:b@x"], md5_id("email:b@x"));
    }

    #[test]
    fn anchors_tie_on_time_by_priority_then_by_value() {
        let res = resolve_rows(
            &web(),
            &[(5, &[("email", "a@x"), ("customer_id", "Z9")])],
            &[],
        );
        assert_eq!(
            same_profile(&res, &["email:a@x", "customer_id:Z9"]),
            md5_id("customer_id:Z9")
        );

        let res = resolve_rows(
            &web(),
            &[
                (5, &[("email", "b@x"), ("cookie", "c")]),
                (5, &[("email", "a@x"), ("cookie", "c")]),
            ],
            &[],
        );
        assert_eq!(
            same_profile(&res, &["email:a@x", "email:b@x", "cookie:c"]),
            md5_id("email:a@x")
        );

        // Keys of equal priority: the value decides, not `key:value` ("aa:b" < "zz:a").
        let keys = [key("zz", 1, None), key("aa", 1, None)];
        let res = resolve_rows(&keys, &[(5, &[("zz", "a"), ("aa", "b")])], &[]);
        assert_eq!(same_profile(&res, &["zz:a", "aa:b"]), md5_id("zz:a"));
        // And the earliest identifier wins over priority.
        let res = resolve_rows(
            &web(),
            &[
                (9, &[("customer_id", "C1"), ("cookie", "k")]),
                (4, &[("cookie", "k")]),
            ],
            &[],
        );
        assert_eq!(
            same_profile(&res, &["customer_id:C1", "cookie:k"]),
            md5_id("cookie:k")
        );
    }

    #[test]
    fn ids_stay_stable_across_runs_and_merges_keep_the_older() {
        let keys = [key("email", 1, None), key("cookie", 2, None)];
        let run1: Vec<(i64, &[(&str, &str)])> = vec![
            (10, &[("email", "a"), ("cookie", "c1")]),
            (20, &[("email", "b"), ("cookie", "c2")]),
        ];
        let first = resolve_rows(&keys, &run1, &[]);
        let (a, b) = (md5_id("email:a"), md5_id("email:b"));
        assert_eq!(same_profile(&first, &["email:a", "cookie:c1"]), a);
        assert_eq!(same_profile(&first, &["email:b", "cookie:c2"]), b);
        let map: Vec<(String, String, String)> = first
            .iter()
            .map(|r| (r.key_name.into(), r.key_value.into(), r.canonical_id.into()))
            .collect();
        let previous: Vec<(&str, &str, &str)> = map
            .iter()
            .map(|(k, v, i)| (k.as_str(), v.as_str(), i.as_str()))
            .collect();

        // A late record links b to c1, and one from before both makes z the anchor: the
        // profile keeps the id seen first (a's), b's id is merged into it.
        let mut run2 = run1.clone();
        run2.push((30, &[("email", "b"), ("cookie", "c1")]));
        run2.push((5, &[("email", "z"), ("cookie", "c2")]));
        run2.push((40, &[("email", "n"), ("cookie", "c3")]));
        let second = resolve_rows(&keys, &run2, &previous);
        let id = same_profile(
            &second,
            &["email:a", "email:b", "email:z", "cookie:c1", "cookie:c2"],
        );
        // b's identifiers were seen first (z at 5 joined c2), so b's id survives.
        assert_eq!(id, b);
        assert_eq!(merges(&second), vec![(a.clone(), b.clone())]);
        assert_eq!(node_ids(&second)["email:n"], md5_id("email:n"));
        assert_eq!(second.stats().merges, 1);

        // Without the early record, a's id was seen first and survives.
        let mut run2 = run1.clone();
        run2.push((30, &[("email", "b"), ("cookie", "c1")]));
        let second = resolve_rows(&keys, &run2, &previous);
        assert_eq!(same_profile(&second, &["email:a", "email:b"]), a);
        assert_eq!(merges(&second), vec![(b.clone(), a.clone())]);

        // A third run from the second's map changes nothing.
        let map: Vec<(String, String, String)> = second
            .iter()
            .map(|r| (r.key_name.into(), r.key_value.into(), r.canonical_id.into()))
            .collect();
        let previous: Vec<(&str, &str, &str)> = map
            .iter()
            .map(|(k, v, i)| (k.as_str(), v.as_str(), i.as_str()))
            .collect();
        let third = resolve_rows(&keys, &run2, &previous);
        assert_eq!(node_ids(&third), node_ids(&second));
        assert!(merges(&third).is_empty());
    }

    #[test]
    fn after_a_split_the_old_id_stays_with_the_part_seen_first() {
        let keys = [key("email", 1, None), key("cookie", 2, None)];
        let previous = [
            ("email", "a", "P"),
            ("cookie", "c1", "P"),
            ("email", "b", "P"),
            ("cookie", "c2", "P"),
        ];
        let res = resolve_rows(
            &keys,
            &[
                (20, &[("email", "a"), ("cookie", "c1")]),
                (10, &[("email", "b"), ("cookie", "c2")]),
            ],
            &previous,
        );
        let ids = node_ids(&res);
        assert_eq!(ids["email:b"], "P");
        assert_eq!(ids["cookie:c2"], "P");
        assert_eq!(ids["email:a"], md5_id("email:a"));
        assert!(merges(&res).is_empty());

        // Seen at the same time: the part whose anchor is the smaller `key:value` keeps it.
        let res = resolve_rows(
            &keys,
            &[(10, &[("email", "b")]), (10, &[("email", "a")])],
            &[("email", "a", "P"), ("email", "b", "P")],
        );
        let ids = node_ids(&res);
        assert_eq!(ids["email:a"], "P");
        assert_eq!(ids["email:b"], md5_id("email:b"));
    }

    #[test]
    fn of_old_ids_seen_together_the_smaller_survives() {
        let keys = [key("email", 1, None), key("cookie", 2, None)];
        let res = resolve_rows(
            &keys,
            &[
                (10, &[("email", "a"), ("cookie", "c")]),
                (10, &[("email", "b"), ("cookie", "c")]),
            ],
            &[
                ("email", "a", "q"),
                ("email", "b", "p"),
                ("cookie", "c", "r"),
            ],
        );
        assert_eq!(same_profile(&res, &["email:a", "email:b", "cookie:c"]), "p");
        assert_eq!(
            merges(&res),
            vec![("q".into(), "p".into()), ("r".into(), "p".into())]
        );
    }

    #[test]
    fn previous_rows_that_match_nothing_are_ignored() {
        let keys = [key("email", 1, None)];
        let res = resolve_rows(
            &keys,
            &[(10, &[("email", "a")])],
            &[
                ("phone", "a", "X"),
                ("email", "zz", "Y"),
                ("email", "a", "A"),
            ],
        );
        assert_eq!(node_ids(&res)["email:a"], "A");
        assert!(merges(&res).is_empty());
        assert_eq!(res.canonical_id("email", "a"), Some("A"));
        assert_eq!(res.canonical_id("email", "zz"), None);
        assert_eq!(res.canonical_id("phone", "a"), None);
    }

    #[test]
    fn empty_input_nulls_and_keys_without_values_are_fine() {
        let res = Resolver::new(web()).unwrap().resolve().unwrap();
        assert_eq!(res.stats(), Stats::default());
        assert_eq!(res.iter().count(), 0);
        assert_eq!(res.id_map_batch().unwrap().num_rows(), 0);
        assert_eq!(res.merges_batch().unwrap().num_rows(), 0);

        let res = resolve(Vec::new(), &[], &[]).unwrap();
        assert_eq!(res.stats(), Stats::default());

        // Records without any identifier count as records and give no identifier.
        let mut r = Resolver::new(web()).unwrap();
        r.add_record(Some(1), &[None, None, None]).unwrap();
        r.add_record(None, &[None, None, None]).unwrap();
        // A null time is later than every time.
        r.add_record(None, &[None, Some("a"), Some("c")]).unwrap();
        r.add_record(Some(50), &[None, Some("b"), Some("c")])
            .unwrap();
        let res = r.resolve().unwrap();
        let s = res.stats();
        assert_eq!((s.records, s.nodes, s.components), (4, 3, 1));
        assert_eq!(
            same_profile(&res, &["email:a", "email:b", "cookie:c"]),
            md5_id("email:b")
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(Resolver::new(vec![key("email", 1, None), key("email", 2, None)]).is_err());
        let mut r = Resolver::new(web()).unwrap();
        assert!(r.add_record(Some(1), &[Some("x")]).is_err());

        let schema = Arc::new(Schema::new(vec![Field::new(
            "seen_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        )]));
        let no_keys = RecordBatch::try_new(
            schema,
            vec![Arc::new(TimestampMicrosecondArray::from(vec![Some(1)]))],
        )
        .unwrap();
        let err = r.add_batch(&no_keys).unwrap_err().to_string();
        assert!(err.contains("k_customer_id"), "{err}");
        assert!(r.add_previous_batch(&no_keys).is_err());

        let keys = [key("email", 1, None)];
        let mut r = Resolver::new(keys.to_vec()).unwrap();
        let micros = records_batch(
            Arc::new(TimestampMicrosecondArray::from(vec![Some(1)])),
            vec![(
                "k_email",
                Arc::new(StringArray::from(vec![Some("a")])) as ArrayRef,
            )],
        );
        let integers = records_batch(
            Arc::new(Int64Array::from(vec![Some(1)])),
            vec![(
                "k_email",
                Arc::new(StringArray::from(vec![Some("a")])) as ArrayRef,
            )],
        );
        r.add_batch(&micros).unwrap();
        let err = r.add_batch(&integers).unwrap_err().to_string();
        assert!(err.contains("seen_at"), "{err}");
        let not_a_time = records_batch(
            Arc::new(StringArray::from(vec![Some("soon")])),
            vec![(
                "k_email",
                Arc::new(StringArray::from(vec![Some("a")])) as ArrayRef,
            )],
        );
        let mut r = Resolver::new(keys.to_vec()).unwrap();
        assert!(r.add_batch(&not_a_time).is_err());
    }

    fn records_batch(seen_at: ArrayRef, keys: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let mut fields = vec![Field::new("seen_at", seen_at.data_type().clone(), true)];
        let mut columns = vec![seen_at];
        for (name, column) in keys {
            fields.push(Field::new(name, column.data_type().clone(), true));
            columns.push(column);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    #[test]
    fn arrow_batches_of_every_string_type_give_the_same_resolution() {
        let keys = vec![
            key("email", 1, Some(1)),
            key("cookie", 2, None),
            key("n", 3, None),
        ];
        let batch = records_batch(
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(3),
                None,
                Some(1),
                Some(2),
            ])),
            vec![
                (
                    "k_email",
                    Arc::new(StringViewArray::from(vec![
                        Some("a"),
                        Some("b"),
                        None,
                        Some("c"),
                    ])) as ArrayRef,
                ),
                (
                    "k_cookie",
                    Arc::new(LargeStringArray::from(vec![
                        Some("x"),
                        Some("x"),
                        Some("y"),
                        Some("y"),
                    ])) as ArrayRef,
                ),
                (
                    "k_n",
                    Arc::new(Int64Array::from(vec![None, None, Some(7), None])) as ArrayRef,
                ),
            ],
        );
        let previous = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("key_name", DataType::Utf8, true),
                Field::new("key_value", DataType::Utf8View, true),
                Field::new("canonical_id", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec![Some("cookie"), None, Some("email")])),
                Arc::new(StringViewArray::from(vec![Some("y"), Some("x"), Some("b")])),
                Arc::new(StringArray::from(vec![Some("Y"), Some("X"), None])),
            ],
        )
        .unwrap();
        let from_arrow = resolve(keys.clone(), &[batch.clone(), batch], &[previous]).unwrap();

        let mut r = Resolver::new(keys).unwrap();
        r.add_previous("cookie", "y", "Y").unwrap();
        for _ in 0..2 {
            r.add_record(Some(3), &[Some("a"), Some("x"), None])
                .unwrap();
            r.add_record(None, &[Some("b"), Some("x"), None]).unwrap();
            r.add_record(Some(1), &[None, Some("y"), Some("7")])
                .unwrap();
            r.add_record(Some(2), &[Some("c"), Some("y"), None])
                .unwrap();
        }
        let by_hand = r.resolve().unwrap();
        assert_eq!(node_ids(&from_arrow), node_ids(&by_hand));
        assert_eq!(from_arrow.stats(), by_hand.stats());
        assert_eq!(from_arrow.stats().records, 8);
        // x keeps a (linked at 3) and drops b (a null time is the latest); y, 7 and c are one
        // profile, which keeps the old id of y.
        let ids = node_ids(&by_hand);
        assert_eq!(ids["email:a"], md5_id("email:a"));
        assert_eq!(ids["cookie:x"], md5_id("email:a"));
        assert_eq!(ids["email:b"], md5_id("email:b"));
        assert_eq!(ids["cookie:y"], "Y");
        assert_eq!(ids["n:7"], "Y");
        assert_eq!(ids["email:c"], "Y");

        let out = from_arrow.id_map_batch().unwrap();
        assert_eq!(out.num_rows(), 6);
        let schema = out.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["key_name", "key_value", "canonical_id"]);
        let again = resolve(
            vec![
                key("email", 1, Some(1)),
                key("cookie", 2, None),
                key("n", 3, None),
            ],
            &[],
            &[out],
        )
        .unwrap();
        assert_eq!(again.stats().nodes, 0);
    }

    // ------------------------------------------------------------------ the naive reference

    type Rec = (Option<i64>, Vec<Option<String>>);

    /// The SQL program's rules, one table at a time, with strings and ordered maps: the node
    /// and id maps (`key:value` → id) and the merges.
    fn reference(
        keys: &[KeySpec],
        records: &[Rec],
        previous: &[(String, String, String)],
    ) -> (BTreeMap<String, String>, Vec<(String, String)>) {
        let time = |t: Option<i64>| t.unwrap_or(i64::MAX);
        // nodes: node → (key, value, first_seen)
        let mut nodes: BTreeMap<String, (usize, String, i64)> = BTreeMap::new();
        // first_links: (a, b) → first seen
        let mut links: BTreeMap<(String, String), i64> = BTreeMap::new();
        for (t, values) in records {
            let t = time(*t);
            let present: Vec<(usize, String)> = values
                .iter()
                .enumerate()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, format!("{}:{v}", keys[k].name))))
                .collect();
            for (k, node) in &present {
                let value = values[*k].clone().unwrap();
                let e = nodes.entry(node.clone()).or_insert((*k, value, t));
                e.2 = e.2.min(t);
            }
            for (_, a) in &present {
                for (_, b) in &present {
                    if a != b {
                        let e = links.entry((a.clone(), b.clone())).or_insert(t);
                        *e = (*e).min(t);
                    }
                }
            }
        }
        // ranked and dropped
        let mut groups: BTreeMap<(String, usize), Vec<(i64, String)>> = BTreeMap::new();
        for ((a, b), t) in &links {
            groups
                .entry((a.clone(), nodes[b].0))
                .or_default()
                .push((*t, b.clone()));
        }
        let mut dropped = BTreeSet::new();
        for ((a, k), mut bs) in groups {
            bs.sort();
            if let Some(max) = keys[k].max_per_profile {
                for (rank, (_, b)) in bs.into_iter().enumerate() {
                    if rank as u64 + 1 > max {
                        dropped.insert((a.clone(), b));
                    }
                }
            }
        }
        let mut adjacent: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (a, b) in links.keys() {
            if !dropped.contains(&(a.clone(), b.clone()))
                && !dropped.contains(&(b.clone(), a.clone()))
            {
                adjacent.entry(a).or_default().push(b);
            }
        }
        // components by breadth-first search
        let mut label: BTreeMap<&str, usize> = BTreeMap::new();
        let mut members: Vec<Vec<&str>> = Vec::new();
        for start in nodes.keys() {
            if label.contains_key(start.as_str()) {
                continue;
            }
            let c = members.len();
            members.push(Vec::new());
            let mut queue = VecDeque::from([start.as_str()]);
            label.insert(start, c);
            while let Some(n) = queue.pop_front() {
                members[c].push(n);
                for &m in adjacent.get(n).map(Vec::as_slice).unwrap_or_default() {
                    if !label.contains_key(m) {
                        label.insert(m, c);
                        queue.push_back(m);
                    }
                }
            }
        }
        let anchors: Vec<&str> = members
            .iter()
            .map(|ms| {
                *ms.iter()
                    .min_by_key(|n| {
                        let (k, v, t) = &nodes[**n];
                        (*t, keys[*k].priority, v.clone(), n.to_string())
                    })
                    .unwrap()
            })
            .collect();
        // previous: (component, old id) → seen
        let mut carried: BTreeMap<(usize, String), i64> = BTreeMap::new();
        for (k, v, id) in previous {
            if !keys.iter().any(|key| &key.name == k) {
                continue;
            }
            let node = format!("{k}:{v}");
            if let Some((_, _, t)) = nodes.get(&node) {
                let e = carried
                    .entry((label[node.as_str()], id.clone()))
                    .or_insert(*t);
                *e = (*e).min(*t);
            }
        }
        let mut claimed: BTreeMap<String, (i64, &str, usize)> = BTreeMap::new();
        for ((c, id), seen) in &carried {
            let candidate = (*seen, anchors[*c], *c);
            let e = claimed.entry(id.clone()).or_insert(candidate);
            if candidate < *e {
                *e = candidate;
            }
        }
        let mut kept: Vec<Vec<(i64, String)>> = vec![Vec::new(); members.len()];
        for (id, (seen, _, c)) in claimed {
            kept[c].push((seen, id));
        }
        let mut ids = BTreeMap::new();
        let mut merged = Vec::new();
        for (c, ms) in members.iter().enumerate() {
            kept[c].sort();
            let id = match kept[c].first() {
                Some((_, id)) => id.clone(),
                None => md5_id(anchors[c]),
            };
            for (_, other) in kept[c].iter().skip(1) {
                merged.push((other.clone(), id.clone()));
            }
            for n in ms {
                ids.insert(n.to_string(), id.clone());
            }
        }
        merged.sort();
        (ids, merged)
    }

    /// Keys, records and a previous id map.
    type Case = (Vec<KeySpec>, Vec<Rec>, Vec<(String, String, String)>);

    fn small_cases() -> impl Strategy<Value = Case> {
        let key_specs = prop::collection::vec(
            (1u64..=3, prop_oneof![Just(None), (0u64..=3).prop_map(Some)]),
            1..=3,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (p, max))| key(["a", "b", "c"][i], p, max))
                .collect::<Vec<_>>()
        });
        key_specs.prop_flat_map(|keys| {
            let n = keys.len();
            let value = prop_oneof![
                2 => Just(None),
                3 => (0..6u8).prop_map(|v| Some(format!("v{v}"))),
            ];
            let time = prop_oneof![1 => Just(None), 8 => (0..8i64).prop_map(Some)];
            let record = (time, prop::collection::vec(value, n));
            let previous = prop::collection::vec(
                (
                    prop::sample::select(vec!["a", "b", "c", "zz"]),
                    0..6u8,
                    0..5u8,
                )
                    .prop_map(|(k, v, id)| (k.to_string(), format!("v{v}"), format!("p{id}"))),
                0..8,
            );
            (Just(keys), prop::collection::vec(record, 0..24), previous)
        })
    }

    fn resolve_recs(
        keys: &[KeySpec],
        records: &[Rec],
        previous: &[(String, String, String)],
    ) -> Resolution {
        let mut r = Resolver::new(keys.to_vec()).unwrap();
        for (k, v, id) in previous {
            r.add_previous(k, v, id).unwrap();
        }
        for (t, values) in records {
            let values: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
            r.add_record(*t, &values).unwrap();
        }
        r.resolve().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// On random small graphs, union-find agrees with the rules applied naively.
        #[test]
        fn small_graphs_resolve_as_the_naive_reference((keys, records, previous) in small_cases()) {
            let res = resolve_recs(&keys, &records, &previous);
            let (expected_ids, expected_merges) = reference(&keys, &records, &previous);
            prop_assert_eq!(node_ids(&res), expected_ids);
            prop_assert_eq!(merges(&res), expected_merges);
            let components: BTreeSet<String> = res.iter().map(|r| r.canonical_id.to_string()).collect();
            prop_assert!(components.len() as u64 <= res.stats().components);
        }
    }

    // ------------------------------------------------------------------ the SQL program

    /// Every value of a text column.
    fn texts(table: &Table, column: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for batch in &table.batches {
            let c = batch
                .column_by_name(column)
                .unwrap_or_else(|| panic!("no column {column}"));
            let c = cast(c, &DataType::Utf8).unwrap();
            out.extend(c.as_string::<i32>().iter().map(|v| v.map(str::to_string)));
        }
        out
    }

    fn sql_identity(engine: &BatchEngine, entity: &str) -> Vec<(String, String, String)> {
        let t = engine.table(&format!("{entity}_identity")).unwrap();
        let mut rows: Vec<(String, String, String)> = texts(&t, "key_name")
            .into_iter()
            .zip(texts(&t, "key_value"))
            .zip(texts(&t, "canonical_id"))
            .map(|((k, v), id)| (k.unwrap(), v.unwrap(), id.unwrap()))
            .collect();
        rows.sort();
        rows
    }

    fn sql_merges(engine: &BatchEngine, entity: &str) -> Vec<(String, String)> {
        let t = engine.table(&format!("{entity}_id_merges")).unwrap();
        let mut rows: Vec<(String, String)> = texts(&t, "merged_id")
            .into_iter()
            .zip(texts(&t, "into_id"))
            .map(|(m, i)| (m.unwrap(), i.unwrap()))
            .collect();
        rows.sort();
        rows
    }

    fn rows(res: &Resolution) -> Vec<(String, String, String)> {
        let mut rows: Vec<(String, String, String)> = res
            .iter()
            .map(|r| (r.key_name.into(), r.key_value.into(), r.canonical_id.into()))
            .collect();
        rows.sort();
        rows
    }

    fn assert_same_rows<T: PartialEq + std::fmt::Debug>(sql: &[T], native: &[T], what: &str) {
        assert_eq!(sql.len(), native.len(), "{what}: row counts differ");
        for (i, (s, n)) in sql.iter().zip(native).enumerate() {
            assert_eq!(s, n, "{what}: row {i} differs (SQL, native)");
        }
    }

    #[test]
    fn the_retail_example_resolves_as_the_sql_program_does_over_two_runs() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/retail");
        let sources = cdp_compiler::load_project(&root).unwrap();
        let checked = cdp_compiler::check(&sources);
        let project = cdp_compiler::lower(&checked).unwrap();
        let engine = BatchEngine::with_threads(2).unwrap();
        engine
            .register_project_sources(&root, &project, checked.config.as_ref().unwrap())
            .unwrap();
        let entity = &project.entities[0];
        let name = entity.meta.name.as_str();
        let micros = |t: &str| cdp_compiler::config::parse_timestamp(t).unwrap() * 1_000_000;

        let mut previous: Vec<RecordBatch> = Vec::new();
        for as_of in ["2024-08-01 00:00:00", "2024-12-01 00:00:00"] {
            let program =
                crate::program::compile(&project, crate::Dialect::DataFusion, micros(as_of));
            engine.run(&program).unwrap();
            let records = engine.table(&format!("{name}_id_records")).unwrap();
            let res = resolve(KeySpec::of_entity(entity), &records.batches, &previous).unwrap();
            assert!(res.stats().nodes > 100, "{:?}", res.stats());
            assert_same_rows(&sql_identity(&engine, name), &rows(&res), as_of);
            assert_same_rows(&sql_merges(&engine, name), &merges(&res), as_of);
            let edges = engine.table(&format!("{name}_id_edges")).unwrap();
            assert_eq!(edges.num_rows() as u64, 2 * res.stats().edges);
            let nodes = engine.table(&format!("{name}_id_nodes")).unwrap();
            assert_eq!(nodes.num_rows() as u64, res.stats().nodes);
            // The runner made the id map of this run the state of the next.
            previous = engine.table(&format!("{name}_id_map")).unwrap().batches;
            let map = resolve(KeySpec::of_entity(entity), &[], &previous).unwrap();
            assert_eq!(map.stats().nodes, 0);
        }
    }

    const PERSON: &str = r#"
source events {
  time ts
  columns {
    ts: timestamp
    a: string?
    b: string?
    c: string?
  }
}

entity person {
  key a max 1 per profile priority 1
  key b max 2 per profile priority 1
  key c priority 2
  from events { a = a, b = b, c = c }
}
"#;

    /// The identity steps of a program, to run on an `<e>_id_records` table given by the test.
    fn identity_steps(program: &Program, entity: &str) -> Program {
        let records = format!("{entity}_id_records");
        let ours = |t: &str| t.starts_with(&format!("{entity}_id")) && t != records;
        let steps = program
            .steps
            .iter()
            .filter(|s| match s {
                Step::Create(s) => ours(&s.table),
                Step::Loop { body, .. } => body.iter().all(|s| ours(&s.table)),
            })
            .cloned()
            .collect();
        let initial_state = program
            .initial_state
            .iter()
            .filter(|s| ours(&s.table))
            .cloned()
            .collect();
        Program {
            dialect: program.dialect,
            steps,
            outputs: Vec::new(),
            initial_state,
        }
    }

    fn person_records(records: &[Rec]) -> RecordBatch {
        let times: TimestampMicrosecondArray = records.iter().map(|r| r.0).collect();
        let column = |k: usize| -> ArrayRef {
            Arc::new(
                records
                    .iter()
                    .map(|r| r.1[k].clone())
                    .collect::<StringArray>(),
            )
        };
        records_batch(
            Arc::new(times),
            vec![("k_a", column(0)), ("k_b", column(1)), ("k_c", column(2))],
        )
    }

    fn id_map(rows: &[(String, String, String)]) -> RecordBatch {
        let column = |f: fn(&(String, String, String)) -> &str| -> ArrayRef {
            Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
        };
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("key_name", DataType::Utf8, true),
                Field::new("key_value", DataType::Utf8, true),
                Field::new("canonical_id", DataType::Utf8, true),
            ])),
            vec![column(|r| &r.0), column(|r| &r.1), column(|r| &r.2)],
        )
        .unwrap()
    }

    fn person_cases() -> impl Strategy<Value = (Vec<Rec>, Vec<(String, String, String)>)> {
        // Keys a and b share a priority: disjoint values, so that no two identifiers tie on
        // (first seen, priority, value), which SQL leaves undecided.
        let value = |first: u8| {
            prop_oneof![
                1 => Just(None),
                1 => (0..4u8).prop_map(move |v| Some(format!("v{}", first + 2 * v))),
            ]
        };
        let time = prop_oneof![1 => Just(None), 8 => (0..6i64).prop_map(Some)];
        let record =
            (time, (value(1), value(0), value(3))).prop_map(|(t, (a, b, c))| (t, vec![a, b, c]));
        let previous = prop::collection::vec(
            (prop::sample::select(vec!["a", "b", "c"]), 0..9u8, 0..4u8)
                .prop_map(|(k, v, id)| (k.to_string(), format!("v{v}"), format!("p{id}"))),
            0..10,
        );
        (prop::collection::vec(record, 0..20), previous)
    }

    #[test]
    fn random_records_resolve_as_the_sql_program_does() {
        let sources = cdp_compiler::project_from_texts([("person.cdp", PERSON)], None);
        let checked = cdp_compiler::check(&sources);
        assert!(!checked.has_errors(), "{:#?}", checked.diagnostics);
        let project = cdp_compiler::lower(&checked).unwrap();
        let entity = &project.entities[0];
        let keys = KeySpec::of_entity(entity);
        assert_eq!(
            keys.iter().map(|k| k.priority).collect::<Vec<_>>(),
            [1, 1, 2]
        );
        let program = identity_steps(
            &crate::program::compile(&project, crate::Dialect::DataFusion, 1_000_000),
            "person",
        );
        let engine = BatchEngine::with_threads(2).unwrap();
        #[derive(Default)]
        struct Seen {
            merges: AtomicU64,
            dropped: AtomicU64,
            joined: AtomicU64,
            kept: AtomicU64,
        }
        let seen = Seen::default();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 32,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&person_cases(), |(records, previous)| {
                let batch = person_records(&records);
                engine
                    .register_batches("person_id_records", batch.schema(), vec![batch])
                    .unwrap();
                let map = id_map(&previous);
                engine
                    .register_batches("person_id_map", map.schema(), vec![map])
                    .unwrap();
                engine.run(&program).unwrap();
                let res = resolve_recs(&keys, &records, &previous);
                prop_assert_eq!(sql_identity(&engine, "person"), rows(&res));
                prop_assert_eq!(sql_merges(&engine, "person"), merges(&res));
                // The id map batch (its ids as views of one copy per profile, short ones
                // inline) holds the rows of `iter`, in the same order.
                let out = res.id_map_batch().unwrap();
                let column = |name: &str| {
                    let c = cast(out.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
                    c.as_string::<i32>()
                        .iter()
                        .map(|v| v.unwrap().to_string())
                        .collect::<Vec<_>>()
                };
                let (names, values, ids) = (
                    column("key_name"),
                    column("key_value"),
                    column("canonical_id"),
                );
                prop_assert_eq!(names.len(), res.iter().len());
                for (i, r) in res.iter().enumerate() {
                    prop_assert_eq!(
                        (&*names[i], &*values[i], &*ids[i]),
                        (r.key_name, r.key_value, r.canonical_id)
                    );
                }
                let s = res.stats();
                seen.merges.fetch_add(s.merges, Relaxed);
                seen.dropped.fetch_add(s.links - s.edges, Relaxed);
                seen.joined.fetch_add(s.nodes - s.components, Relaxed);
                let kept = res
                    .iter()
                    .filter(|r| r.canonical_id.starts_with('p'))
                    .count();
                seen.kept.fetch_add(kept as u64, Relaxed);
                Ok(())
            })
            .unwrap();
        // The cases did exercise what they are for.
        let seen = [&seen.merges, &seen.dropped, &seen.joined, &seen.kept].map(|n| n.load(Relaxed));
        assert!(
            seen.iter().all(|&n| n > 0),
            "merges, dropped links, links, old ids: {seen:?}"
        );
    }
}
