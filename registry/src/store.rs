//! The registry's sled database under the project's storage directory: versions of definitions,
//! their texts by content hash, the applied snapshots of the project, and run history.
//!
//! ```text
//! <storage>/registry/            one sled database, with the trees
//!   versions   <name> 0x00 <version: u32 BE>  → Version (JSON)
//!   texts      <content hash>                  → canonical text
//!   snapshots  <id: u64 BE>                    → Snapshot (JSON)
//!   runs       <sequence: u64 BE>              → RunRecord (JSON)
//! ```
//!
//! One snapshot is written in one transaction over the trees and flushed before [`Registry::apply`]
//! returns: a process killed at any moment leaves the whole snapshot or none of it, and a snapshot
//! the caller was told about is on disk. sled locks the database, so one process at a time holds
//! it open; version numbers and snapshot ids are counted under that lock.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::plan::{Change, Plan};

/// Why the registry could not do what it was asked.
#[derive(Debug)]
pub enum Error {
    /// Another process holds the database open.
    Locked(PathBuf),
    /// sled failed: the disk, permissions, or damage beyond what recovery repairs.
    Store { path: PathBuf, error: sled::Error },
    /// A record does not decode, or a version's text is missing.
    Corrupt(String),
    /// The plan was computed against a snapshot that is no longer the latest.
    StalePlan,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Locked(path) => write!(
                f,
                "the registry at {} is in use by another cdp process; try again when it is done",
                path.display()
            ),
            Error::Store { path, error } => {
                write!(f, "the registry at {} failed: {error}", path.display())
            }
            Error::Corrupt(what) => write!(f, "the registry is damaged: {what}"),
            Error::StalePlan => write!(
                f,
                "the registry changed after the plan was made; make the plan again"
            ),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// One version of one definition. Versions of a name are numbered 1, 2, 3…; a new one is made
/// whenever the definition's content differs from its latest version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub name: String,
    pub version: u32,
    pub kind: String,
    /// The content address; the text is stored once per hash.
    pub hash: String,
    /// The snapshot that created this version.
    pub snapshot: u64,
    /// Where the definition was written when this version was made.
    pub file: String,
    pub line: usize,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub tags: Vec<String>,
    /// The definitions it read directly, by name (for lineage).
    pub upstream: Vec<String>,
}

/// One `cdp apply`: who applied what when, and the version of every definition it pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// 1, 2, 3… in the order applied.
    pub id: u64,
    pub author: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub time: String,
    pub message: String,
    /// Every definition of the project, in project order.
    pub definitions: Vec<Pin>,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// A definition's version as one snapshot holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub name: String,
    pub version: u32,
    pub hash: String,
}

/// Who applies a snapshot, when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub author: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub time: String,
    pub message: String,
}

/// Creates an empty database at `path` as a whole or not at all: built and flushed in a
/// directory of its own, then renamed into place. A process killed while sled writes a new
/// database's first files leaves a database it cannot read later ("corrupted data"); killed
/// here, it leaves only a temporary directory, which the next creation replaces.
fn create_atomically(path: &Path) -> std::result::Result<(), sled::Error> {
    let tmp = path.with_extension(format!("creating-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    {
        let db = sled::Config::new().path(&tmp).open()?;
        for name in ["versions", "texts", "snapshots", "runs"] {
            db.open_tree(name)?;
        }
        db.flush()?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(&tmp, path) {
        Ok(()) => Ok(()),
        // Another process created it first: theirs is as good.
        Err(_) if path.exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// How long opening waits for another process to release the registry.
pub const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// An open registry database.
pub struct Registry {
    pub(crate) path: PathBuf,
    pub(crate) db: sled::Db,
    versions: sled::Tree,
    texts: sled::Tree,
    snapshots: sled::Tree,
    pub(crate) runs: sled::Tree,
}

/// The directory of the registry database inside a storage directory.
pub fn registry_dir(storage: &Path) -> PathBuf {
    storage.join("registry")
}

impl Registry {
    /// Opens the registry under a project's storage directory, creating it when there is none.
    /// After a crash sled recovers to the last complete write. Another process holds the
    /// database only for moments (a command, a server's request), so a held lock is waited for
    /// up to [`LOCK_PATIENCE`] before [`Error::Locked`].
    pub fn open(storage: &Path) -> Result<Registry> {
        let started = std::time::Instant::now();
        loop {
            match Registry::open_once(storage) {
                Err(Error::Locked(_)) if started.elapsed() < LOCK_PATIENCE => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
    }

    fn open_once(storage: &Path) -> Result<Registry> {
        let path = registry_dir(storage);
        let store = |error| Error::Store {
            path: path.clone(),
            error,
        };
        if !path.exists() {
            create_atomically(&path).map_err(store)?;
        }
        let db = crate::sleddb::open(&path).map_err(|error| {
            if crate::sleddb::is_locked(&error) {
                Error::Locked(path.clone())
            } else {
                store(error)
            }
        })?;
        let tree = |name: &str| db.open_tree(name).map_err(store);
        Ok(Registry {
            versions: tree("versions")?,
            texts: tree("texts")?,
            snapshots: tree("snapshots")?,
            runs: tree("runs")?,
            path: path.clone(),
            db,
        })
    }

    /// Opens the registry when the storage directory has one; reading needs no new database.
    pub fn open_existing(storage: &Path) -> Result<Option<Registry>> {
        if registry_dir(storage).is_dir() {
            Registry::open(storage).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn store_error(&self, error: sled::Error) -> Error {
        Error::Store {
            path: self.path.clone(),
            error,
        }
    }

    /// The last applied snapshot, if any.
    pub fn latest_snapshot(&self) -> Result<Option<Snapshot>> {
        match self.snapshots.last().map_err(|e| self.store_error(e))? {
            Some((_, bytes)) => decode(&bytes, "a snapshot").map(Some),
            None => Ok(None),
        }
    }

    pub fn snapshot(&self, id: u64) -> Result<Option<Snapshot>> {
        match self
            .snapshots
            .get(id.to_be_bytes())
            .map_err(|e| self.store_error(e))?
        {
            Some(bytes) => decode(&bytes, "a snapshot").map(Some),
            None => Ok(None),
        }
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>> {
        self.snapshots
            .iter()
            .values()
            .map(|bytes| decode(&bytes.map_err(|e| self.store_error(e))?, "a snapshot"))
            .collect()
    }

    /// Every version of one definition, oldest first (none for a name never applied).
    pub fn versions(&self, name: &str) -> Result<Vec<Version>> {
        self.versions
            .scan_prefix(name_prefix(name))
            .values()
            .map(|bytes| decode(&bytes.map_err(|e| self.store_error(e))?, "a version"))
            .collect()
    }

    pub fn version(&self, name: &str, version: u32) -> Result<Option<Version>> {
        match self
            .versions
            .get(version_key(name, version))
            .map_err(|e| self.store_error(e))?
        {
            Some(bytes) => decode(&bytes, "a version").map(Some),
            None => Ok(None),
        }
    }

    /// The newest version of one definition.
    pub fn latest_version(&self, name: &str) -> Result<Option<Version>> {
        match self
            .versions
            .scan_prefix(name_prefix(name))
            .next_back()
            .transpose()
            .map_err(|e| self.store_error(e))?
        {
            Some((_, bytes)) => decode(&bytes, "a version").map(Some),
            None => Ok(None),
        }
    }

    /// The names of every definition that has a version, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        for key in self.versions.iter().keys() {
            let key = key.map_err(|e| self.store_error(e))?;
            let name = key.split(|&b| b == 0).next().unwrap_or_default();
            let name = String::from_utf8_lossy(name);
            if names.last().map(String::as_str) != Some(&name) {
                names.push(name.into_owned());
            }
        }
        Ok(names)
    }

    /// The canonical text a version holds.
    pub fn text(&self, version: &Version) -> Result<String> {
        let bytes = self
            .texts
            .get(version.hash.as_bytes())
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "no text for version {} of `{}` ({})",
                    version.version, version.name, version.hash
                ))
            })?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            Error::Corrupt(format!(
                "the text of version {} of `{}` is not UTF-8",
                version.version, version.name
            ))
        })
    }

    /// Records `plan` as the next snapshot: its new versions, their texts and the snapshot, in
    /// one transaction, flushed to disk before returning. A plan without changes records
    /// nothing (`None`).
    pub fn apply(&self, plan: &Plan, stamp: &Stamp) -> Result<Option<Snapshot>> {
        if plan.is_empty() {
            return Ok(None);
        }
        let latest = self.latest_snapshot()?.map(|s| s.id);
        if latest != plan.base.as_ref().map(|s| s.id) {
            return Err(Error::StalePlan);
        }
        let id = latest.map_or(1, |i| i + 1);
        let names = |wanted: fn(&Change) -> bool| {
            plan.entries
                .iter()
                .filter(|e| wanted(&e.change))
                .map(|e| e.draft.name.clone())
                .collect()
        };
        let snapshot = Snapshot {
            id,
            author: stamp.author.clone(),
            time: stamp.time.clone(),
            message: stamp.message.clone(),
            definitions: plan
                .entries
                .iter()
                .map(|e| Pin {
                    name: e.draft.name.clone(),
                    version: e.version,
                    hash: e.draft.hash.clone(),
                })
                .collect(),
            added: names(|c| matches!(c, Change::Added)),
            changed: names(|c| matches!(c, Change::Changed { .. })),
            removed: plan.removed.iter().map(|v| v.name.clone()).collect(),
        };
        let mut writes = Vec::new();
        for entry in plan.entries.iter().filter(|e| e.new_version) {
            let d = &entry.draft;
            let version = Version {
                name: d.name.clone(),
                version: entry.version,
                kind: d.kind.clone(),
                hash: d.hash.clone(),
                snapshot: id,
                file: d.file.clone(),
                line: d.line,
                description: d.description.clone(),
                owner: d.owner.clone(),
                tags: d.tags.clone(),
                upstream: d.upstream.clone(),
            };
            writes.push((
                version_key(&d.name, entry.version),
                encode(&version)?,
                d.hash.as_bytes(),
                d.text.as_bytes(),
            ));
        }
        let snapshot_bytes = encode(&snapshot)?;
        (&self.versions, &self.texts, &self.snapshots)
            .transaction(|(versions, texts, snapshots)| {
                for (key, version, hash, text) in &writes {
                    texts.insert(*hash, *text)?;
                    versions.insert(key.as_slice(), version.as_slice())?;
                }
                snapshots.insert(&id.to_be_bytes(), snapshot_bytes.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(error) => self.store_error(error),
                TransactionError::Abort(()) => Error::Corrupt("a write was aborted".into()),
            })?;
        self.flush()?;
        Ok(Some(snapshot))
    }

    /// Waits until everything written so far is on disk.
    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush().map(drop).map_err(|e| self.store_error(e))
    }
}

fn name_prefix(name: &str) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    key.push(0);
    key
}

fn version_key(name: &str, version: u32) -> Vec<u8> {
    let mut key = name_prefix(name);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Corrupt(format!("cannot encode a record: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Corrupt(format!("{what} does not decode: {e}")))
}
