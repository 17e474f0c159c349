//! The append-only log of what the stream did to profiles: segment entries and exits, journey
//! steps, goals and exits, activations fired. The web pages read it (newest first, all of it or
//! one definition's); nothing is ever changed or removed.
//!
//! Stored in a sled database the caller holds (the stream's own, under
//! `<storage>/stream/`), as two trees: `transitions` by sequence number, and
//! `transitions_by_name` by (definition name, sequence number) for one definition's page.

use serde::{Deserialize, Serialize};

/// One thing that happened to one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Event time of the change (ms since the epoch): the event that caused it, or the timer.
    pub at_ms: i64,
    pub entity: String,
    /// The canonical id of the profile.
    pub profile: String,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    SegmentEnter {
        segment: String,
    },
    /// `by_time`: no event caused it, time passing did (a window emptied, a wait ran out).
    SegmentExit {
        segment: String,
        by_time: bool,
    },
    JourneyStep {
        journey: String,
        step: String,
    },
    JourneyGoal {
        journey: String,
    },
    JourneyExit {
        journey: String,
        reason: String,
    },
    Activation {
        activation: String,
        /// The webhook outbox's id of the delivery, when it is a webhook.
        delivery: Option<u64>,
    },
}

impl What {
    /// The definition this transition belongs to (its page lists it).
    pub fn name(&self) -> &str {
        match self {
            What::SegmentEnter { segment } | What::SegmentExit { segment, .. } => segment,
            What::JourneyStep { journey, .. }
            | What::JourneyGoal { journey }
            | What::JourneyExit { journey, .. } => journey,
            What::Activation { activation, .. } => activation,
        }
    }
}

/// A transition as stored, with its place in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logged {
    pub seq: u64,
    #[serde(flatten)]
    pub transition: Transition,
}

pub struct TransitionLog {
    db: sled::Db,
    /// Sequence numbers come from the last one stored: appends take turns.
    appending: std::sync::Mutex<()>,
    all: sled::Tree,
    by_name: sled::Tree,
}

pub type LogResult<T> = std::result::Result<T, String>;

fn storage(e: impl std::fmt::Display) -> String {
    format!("the transition log could not be read or written: {e}")
}

fn name_key(name: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 9);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

impl TransitionLog {
    pub fn open(db: &sled::Db) -> LogResult<TransitionLog> {
        Ok(TransitionLog {
            db: db.clone(),
            appending: std::sync::Mutex::new(()),
            all: db.open_tree("transitions").map_err(storage)?,
            by_name: db.open_tree("transitions_by_name").map_err(storage)?,
        })
    }

    /// Appends transitions in order, atomically (all or none), and returns once they are on
    /// disk; returns their sequence numbers.
    pub fn append(&self, transitions: &[Transition]) -> LogResult<Vec<u64>> {
        if transitions.is_empty() {
            return Ok(Vec::new());
        }
        let _turn = self
            .appending
            .lock()
            .map_err(|_| storage("an earlier append panicked"))?;
        let next = self
            .all
            .last()
            .map_err(storage)?
            .map(|(k, _)| u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])) + 1)
            .unwrap_or(1);
        let mut all = sled::Batch::default();
        let mut by_name = sled::Batch::default();
        let mut seqs = Vec::with_capacity(transitions.len());
        for (i, t) in transitions.iter().enumerate() {
            let seq = next + i as u64;
            let bytes = serde_json::to_vec(t).map_err(storage)?;
            all.insert(&seq.to_be_bytes(), bytes);
            by_name.insert(name_key(t.what.name(), seq), &seq.to_be_bytes());
            seqs.push(seq);
        }
        use sled::Transactional;
        (&self.all, &self.by_name)
            .transaction(|(a, n)| {
                a.apply_batch(&all)?;
                n.apply_batch(&by_name)?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| storage(format!("{e:?}")))?;
        self.db.flush().map_err(storage)?;
        Ok(seqs)
    }

    fn read(&self, seq: u64) -> LogResult<Option<Logged>> {
        let Some(bytes) = self.all.get(seq.to_be_bytes()).map_err(storage)? else {
            return Ok(None);
        };
        let transition = serde_json::from_slice(&bytes).map_err(storage)?;
        Ok(Some(Logged { seq, transition }))
    }

    /// The newest `limit` transitions, newest first; only those of `name` when given.
    pub fn recent(&self, name: Option<&str>, limit: usize) -> LogResult<Vec<Logged>> {
        let mut out = Vec::new();
        match name {
            None => {
                for item in self.all.iter().rev().take(limit) {
                    let (k, bytes) = item.map_err(storage)?;
                    let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
                    let transition = serde_json::from_slice(&bytes).map_err(storage)?;
                    out.push(Logged { seq, transition });
                }
            }
            Some(name) => {
                let mut prefix = name.as_bytes().to_vec();
                prefix.push(0);
                for item in self.by_name.scan_prefix(&prefix).rev().take(limit) {
                    let (_, seq) = item.map_err(storage)?;
                    let seq = u64::from_be_bytes(seq.as_ref().try_into().unwrap_or([0; 8]));
                    out.extend(self.read(seq)?);
                }
            }
        }
        Ok(out)
    }

    /// How many transitions the log holds.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enter(segment: &str, profile: &str, at_ms: i64) -> Transition {
        Transition {
            at_ms,
            entity: "customer".into(),
            profile: profile.into(),
            what: What::SegmentEnter {
                segment: segment.into(),
            },
        }
    }

    #[test]
    fn transitions_read_back_newest_first_all_or_per_definition() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = TransitionLog::open(&db).unwrap();
        assert!(log.append(&[]).unwrap().is_empty());
        let seqs = log
            .append(&[enter("vip", "a", 1), enter("lapsed", "b", 2)])
            .unwrap();
        assert_eq!(seqs, [1, 2]);
        let exit = Transition {
            at_ms: 3,
            entity: "customer".into(),
            profile: "a".into(),
            what: What::SegmentExit {
                segment: "vip".into(),
                by_time: true,
            },
        };
        assert_eq!(log.append(std::slice::from_ref(&exit)).unwrap(), [3]);

        let all: Vec<u64> = log
            .recent(None, 10)
            .unwrap()
            .iter()
            .map(|l| l.seq)
            .collect();
        assert_eq!(all, [3, 2, 1]);
        let vip = log.recent(Some("vip"), 10).unwrap();
        assert_eq!(vip.len(), 2);
        assert_eq!(vip[0].transition, exit);
        // A name that is a prefix of another does not see the other's transitions.
        log.append(&[enter("vip_plus", "c", 4)]).unwrap();
        assert_eq!(log.recent(Some("vip"), 10).unwrap().len(), 2);
        assert_eq!(log.recent(None, 1).unwrap()[0].seq, 4);
        assert_eq!(log.len(), 4);
    }

    #[test]
    fn the_log_survives_reopening_and_continues_its_numbering() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            TransitionLog::open(&db)
                .unwrap()
                .append(&[enter("vip", "a", 1)])
                .unwrap();
        }
        // The dropped handle's flusher may still hold the lock for a moment.
        let db = cdp_registry::sleddb::open_waiting(dir.path(), std::time::Duration::from_secs(10))
            .unwrap();
        let log = TransitionLog::open(&db).unwrap();
        assert_eq!(log.append(&[enter("vip", "b", 2)]).unwrap(), [2]);
        let json = serde_json::to_value(&log.recent(None, 1).unwrap()[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seq": 2, "at_ms": 2, "entity": "customer", "profile": "b",
                               "what": {"kind": "segment_enter", "segment": "vip"}})
        );
    }
}
