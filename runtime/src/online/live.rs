//! The stream's sink into the online store: profiles written one by one as events change them,
//! next to the records a sync writes for a whole batch run.
//!
//! A live record is an ordinary [`Record`] whose run is [`LIVE_RUN`], described by the
//! entity's live [`Schema`] (its attributes and features in the project's order, built from the
//! project by [`live_schema`], not read from a run's catalog). Readers need no change: a record
//! names the schema it was written with. A live record replaces the profile's record whatever
//! run wrote it, its identity keys point at it, and a profile merged away by the stream is
//! removed and its id recorded as merged into the survivor.
//!
//! Writes go into the blocks a sync writes ([`super::blocks`]): each change finds the block
//! that holds its key (the greatest block key at or before it), the block is rewritten with
//! the change merged in and cut again where its entries say ([`super::ends_block`]), so that a
//! block grown past its size splits and one emptied disappears. A sync later makes the entity
//! equal to its run again (it rewrites what differs, live records included); a profile gets a
//! live record again at its next event.

use std::ops::Bound;

use cdp_compiler::ir;

use super::{
    blocks, key_of, step_label, Batch, Cell, JourneySteps, OnlineStore, Position, Record, Schema,
    StepLabel, ValueColumn,
};
use crate::error::{Error, Result};

/// The run name of the records the stream writes.
pub const LIVE_RUN: &str = "live";

/// One profile as the stream holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveProfile {
    pub canonical_id: String,
    /// (key name, normalized value), keys in priority order.
    pub keys: Vec<(String, String)>,
    /// In the order of the entity's [`live_schema`].
    pub values: Vec<Cell>,
    pub segments: Vec<String>,
    pub journeys: Vec<Position>,
}

/// What the stream changed of one entity since its last write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveUpdate {
    pub profiles: Vec<LiveProfile>,
    /// Ids merged away by the stream, with the id of the profile now holding them.
    pub merged: Vec<(String, String)>,
}

/// The schema of an entity's live records: its keys in priority order, its attributes then its
/// features in the project's order (as [`super::catalog`] describes them), its journeys' steps.
pub fn live_schema(project: &ir::Project, entity: ir::EntityId) -> Schema {
    let e = &project.entities[entity.index()];
    let column = |kind: &str, name: &str, ty: String| ValueColumn {
        name: name.to_string(),
        kind: kind.to_string(),
        ty,
    };
    let mut values: Vec<ValueColumn> = project
        .attributes
        .iter()
        .filter(|a| a.entity == entity)
        .map(|a| column("attribute", &a.meta.name, a.ty.to_string()))
        .collect();
    values.extend(
        project
            .features
            .iter()
            .filter(|f| f.entity == entity)
            .map(|f| column("feature", &f.meta.name, f.ty.to_string())),
    );
    let journeys = project
        .journeys
        .iter()
        .filter(|j| j.entity == entity)
        .map(|j| JourneySteps {
            journey: j.meta.name.clone(),
            steps: j
                .nodes
                .iter()
                .map(|node| StepLabel {
                    stage: j
                        .stages
                        .get(node.stage as usize)
                        .cloned()
                        .unwrap_or_default(),
                    step: step_label(project, node),
                })
                .collect(),
        })
        .collect();
    Schema {
        keys: e.keys.iter().map(|k| k.name.clone()).collect(),
        values,
        journeys,
    }
}

impl OnlineStore {
    /// Writes the stream's changes to one entity's profiles as of `as_of` (microseconds): each
    /// profile's record (replacing the one stored), its keys, and the ids merged away. `schema`
    /// is written first when it is not the stored live schema of the entity. Nothing is
    /// flushed: the stream can rebuild all of it from its log.
    pub fn put_live(
        &self,
        entity: &str,
        schema: &Schema,
        as_of: i64,
        update: &LiveUpdate,
    ) -> Result<()> {
        let schema_key = key_of(&[entity, LIVE_RUN]);
        let encoded = serde_json::to_vec(schema)
            .map_err(|e| Error::Internal(format!("encoding a schema: {e}")))?;
        let stored = self.schemas.get(&schema_key).map_err(self.err())?;
        if stored.as_deref() != Some(encoded.as_slice()) {
            self.schemas
                .insert(schema_key, encoded)
                .map_err(self.err())?;
            if let Ok(mut cache) = self.schema_cache.lock() {
                cache.remove(&(entity.to_string(), LIVE_RUN.to_string()));
            }
        }
        let as_of = cdp_compiler::sql::dialect::format_micros(as_of);
        let mut records: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut keys: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for p in &update.profiles {
            let record = Record {
                run: LIVE_RUN.to_string(),
                as_of: as_of.clone(),
                keys: p.keys.clone(),
                values: p.values.clone(),
                segments: p.segments.clone(),
                journeys: p.journeys.clone(),
            };
            let bytes = postcard::to_stdvec(&record)
                .map_err(|e| Error::Internal(format!("encoding a profile: {e}")))?;
            records.push((p.canonical_id.as_bytes().to_vec(), Some(bytes)));
            for (name, value) in &p.keys {
                keys.push((
                    key_of(&[name, value]),
                    Some(p.canonical_id.as_bytes().to_vec()),
                ));
            }
        }
        for (gone, _) in &update.merged {
            records.push((gone.as_bytes().to_vec(), None));
        }
        // Profiles first, so that a key written next never points at a missing profile.
        self.upsert_blocked(&self.profiles, entity, records, super::PROFILE_BLOCK)?;
        self.upsert_blocked(&self.keys, entity, keys, super::KEY_BLOCK)?;

        let prefix = key_of(&[entity, ""]);
        let mut merges = Batch::new(self, &self.merges);
        for p in &update.profiles {
            // An id that is a profile again is no longer merged.
            let key = [prefix.as_slice(), p.canonical_id.as_bytes()].concat();
            if self.merges.contains_key(&key).map_err(self.err())? {
                merges.remove(key)?;
            }
        }
        for (gone, into) in &update.merged {
            let key = [prefix.as_slice(), gone.as_bytes()].concat();
            merges.insert(key, into.as_bytes().to_vec())?;
        }
        merges.finish()
    }

    /// Applies `changes` (suffix under the entity's prefix → new value, or `None` to remove)
    /// to a tree of blocks. The last change of a suffix wins.
    fn upsert_blocked(
        &self,
        tree: &sled::Tree,
        entity: &str,
        mut changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        mean: u64,
    ) -> Result<()> {
        // Stable: of equal suffixes the last given stays last, and dedup keeps the first of a
        // run, so reverse around it.
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        changes.reverse();
        changes.dedup_by(|a, b| a.0 == b.0);
        changes.reverse();
        let prefix = key_of(&[entity, ""]);
        let within = |k: &[u8]| k.starts_with(&prefix);
        let mut batch = Batch::new(self, tree);
        let mut i = 0;
        while i < changes.len() {
            let wanted = [prefix.as_slice(), changes[i].0.as_slice()].concat();
            let found = match tree.range(..=wanted.as_slice()).next_back() {
                Some(entry) => {
                    let (k, v) = entry.map_err(self.err())?;
                    within(&k).then_some((k, v))
                }
                None => None,
            };
            let next = match tree
                .range::<&[u8], _>((Bound::Excluded(wanted.as_slice()), Bound::Unbounded))
                .next()
            {
                Some(entry) => {
                    let (k, _) = entry.map_err(self.err())?;
                    within(&k).then_some(k)
                }
                None => None,
            };
            // The changes that fall in this block: those before the next block.
            let mut j = i + 1;
            while j < changes.len()
                && next.as_ref().is_none_or(|n| {
                    [prefix.as_slice(), changes[j].0.as_slice()]
                        .concat()
                        .as_slice()
                        < n.as_ref()
                })
            {
                j += 1;
            }
            let entries: Vec<(Vec<u8>, Vec<u8>)> = match &found {
                Some((_, block)) => {
                    let decoded: Vec<(&[u8], &[u8])> =
                        postcard::from_bytes(block).map_err(|e| self.corrupt("a block", e))?;
                    decoded
                        .into_iter()
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .collect()
                }
                None => Vec::new(),
            };
            let merged = merge_sorted(entries, &changes[i..j]);
            let mut rewritten = false;
            for block in blocks(&prefix, merged.into_iter().map(Ok), mean) {
                let (key, bytes) = block?;
                rewritten |= found.as_ref().is_some_and(|(k, _)| k.as_ref() == key);
                batch.insert(key, bytes)?;
            }
            if let (Some((k, _)), false) = (&found, rewritten) {
                // Its first entry went: the block lives on under its new first key, if any.
                batch.remove(k.to_vec())?;
            }
            i = j;
        }
        batch.finish()
    }
}

/// `entries` (sorted, each key once) with `changes` (sorted, each key once) applied.
fn merge_sorted(
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    changes: &[(Vec<u8>, Option<Vec<u8>>)],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::with_capacity(entries.len() + changes.len());
    let mut changes = changes.iter().peekable();
    for (k, v) in entries {
        while let Some((c, value)) = changes.next_if(|(c, _)| c < &k) {
            if let Some(value) = value {
                out.push((c.clone(), value.clone()));
            }
        }
        match changes.next_if(|(c, _)| c == &k) {
            Some((_, Some(value))) => out.push((k, value.clone())),
            Some((_, None)) => {}
            None => out.push((k, v)),
        }
    }
    for (c, value) in changes {
        if let Some(value) = value {
            out.push((c.clone(), value.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::online::path;
    use std::collections::BTreeMap;

    fn schema() -> Schema {
        Schema {
            keys: vec!["email".into()],
            values: vec![ValueColumn {
                name: "orders".into(),
                kind: "feature".into(),
                ty: "int".into(),
            }],
            journeys: Vec::new(),
        }
    }

    fn profile(id: &str, orders: i64) -> LiveProfile {
        LiveProfile {
            canonical_id: id.to_string(),
            keys: vec![("email".into(), format!("{id}@example.com"))],
            values: vec![Cell::Int(orders)],
            segments: if orders > 5 {
                vec!["loyal".into()]
            } else {
                Vec::new()
            },
            journeys: Vec::new(),
        }
    }

    /// Every block of the entity in `tree`: its key suffix and its entries' suffixes.
    fn blocks_of(store: &OnlineStore, tree: &sled::Tree, entity: &str) -> Vec<Vec<Vec<u8>>> {
        let prefix = key_of(&[entity, ""]);
        tree.scan_prefix(&prefix)
            .map(|entry| {
                let (k, block) = entry.unwrap();
                let entries: Vec<(&[u8], &[u8])> = postcard::from_bytes(&block).unwrap();
                assert_eq!(
                    &k[prefix.len()..],
                    entries[0].0,
                    "a block is keyed by its first entry"
                );
                assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
                let _ = store;
                entries.iter().map(|(s, _)| s.to_vec()).collect()
            })
            .collect()
    }

    #[test]
    fn live_writes_grow_split_shrink_and_remove_blocks_and_every_profile_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let store = OnlineStore::open(&path(dir.path())).unwrap();
        // What the store should hold: id → orders (None: merged away into the value's id).
        let mut expected: BTreeMap<String, Result<i64, String>> = BTreeMap::new();
        let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for round in 0..40 {
            let mut update = LiveUpdate::default();
            // Writes in random order, some ids twice in one update (the last one wins).
            for _ in 0..(1 + next(300)) {
                let id = format!("p{:04}", next(2_000));
                let orders = next(10) as i64 + round;
                update.profiles.retain(|p| p.canonical_id != id);
                update.profiles.push(profile(&id, orders));
                expected.insert(id, Ok(orders));
            }
            // Merges away of stored profiles not written in this update.
            let stored: Vec<String> = expected
                .iter()
                .filter(|(id, v)| {
                    v.is_ok() && !update.profiles.iter().any(|p| &p.canonical_id == *id)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for _ in 0..next(20).min(stored.len() as u64 / 2) {
                let gone = stored[next(stored.len() as u64) as usize].clone();
                let Some(into) = update.profiles.first().map(|p| p.canonical_id.clone()) else {
                    break;
                };
                if update.merged.iter().any(|(g, _)| g == &gone) {
                    continue;
                }
                update.merged.push((gone.clone(), into.clone()));
                expected.insert(gone, Err(into));
            }
            store
                .put_live("customer", &schema(), 1_000_000 * round, &update)
                .unwrap();
        }
        for (id, want) in &expected {
            let p = store.profile("customer", id).unwrap().expect(id);
            match want {
                Ok(orders) => {
                    assert_eq!(p.canonical_id, *id);
                    assert_eq!(p.run, LIVE_RUN);
                    assert_eq!(p.values[0].value, serde_json::json!(orders), "{id}");
                    assert_eq!(p.values[0].name, "orders");
                    assert_eq!(p.segments.is_empty(), *orders <= 5);
                    let by_key = store
                        .canonical_id("customer", "email", &format!("{id}@example.com"))
                        .unwrap();
                    assert_eq!(by_key.as_deref(), Some(id.as_str()));
                }
                Err(_) => {
                    assert_ne!(&p.canonical_id, id, "merged away");
                    assert_eq!(p.merged_from.as_deref(), Some(id.as_str()));
                }
            }
        }
        // The blocks hold exactly the live profiles, each once, and split as they grew.
        let blocks = blocks_of(&store, &store.profiles, "customer");
        let held: Vec<Vec<u8>> = blocks.iter().flatten().cloned().collect();
        let live: Vec<Vec<u8>> = expected
            .iter()
            .filter(|(_, v)| v.is_ok())
            .map(|(id, _)| id.as_bytes().to_vec())
            .collect();
        assert_eq!(held, live);
        assert!(blocks.len() > 5, "{} blocks", blocks.len());
        assert!(blocks
            .iter()
            .all(|b| b.len() <= 4 * super::super::PROFILE_BLOCK as usize));
    }
}
