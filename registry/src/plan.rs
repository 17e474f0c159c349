//! What applying a project would change in the registry: definitions added, changed (with the
//! diff of their text) and removed since the last snapshot, and what reads the changed ones.

use std::collections::{BTreeSet, HashMap};

use crate::draft::Draft;
use crate::store::{Registry, Result, Snapshot, Version};

/// The project compared with the registry's latest snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The snapshot compared with; `None` for an empty registry.
    pub base: Option<Snapshot>,
    /// Every definition of the project, in project order.
    pub entries: Vec<Entry>,
    /// The latest versions of definitions that the base snapshot has and the project no longer.
    pub removed: Vec<Version>,
}

/// One definition of the project and the version it has once the plan is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub draft: Draft,
    pub change: Change,
    pub version: u32,
    /// Applying writes `version` as a new version; otherwise an existing one is pinned again.
    pub new_version: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    /// Not in the base snapshot (new, or back after a removal).
    Added,
    /// In the base snapshot with another content: `from` is the version there, `text` its text.
    Changed {
        from: Box<Version>,
        text: String,
    },
}

impl Registry {
    /// Compares a project's drafts with the latest snapshot.
    pub fn plan(&self, drafts: Vec<Draft>) -> Result<Plan> {
        let base = self.latest_snapshot()?;
        let pinned: HashMap<&str, _> = base
            .iter()
            .flat_map(|s| &s.definitions)
            .map(|p| (p.name.as_str(), p))
            .collect();
        let mut entries = Vec::with_capacity(drafts.len());
        for draft in drafts {
            // A new version whenever the content differs from the newest one: a definition
            // brought back to an older content gets a new number, so numbers only grow.
            let (version, new_version) = match self.latest_version(&draft.name)? {
                Some(latest) if latest.hash == draft.hash => (latest.version, false),
                Some(latest) => (latest.version + 1, true),
                None => (1, true),
            };
            let change = match pinned.get(draft.name.as_str()) {
                None => Change::Added,
                Some(pin) if pin.hash == draft.hash => Change::Unchanged,
                Some(pin) => {
                    let from = self.pinned_version(&pin.name, pin.version)?;
                    let text = self.text(&from)?;
                    Change::Changed {
                        from: Box::new(from),
                        text,
                    }
                }
            };
            entries.push(Entry {
                draft,
                change,
                version,
                new_version,
            });
        }
        let present: BTreeSet<&str> = entries.iter().map(|e| e.draft.name.as_str()).collect();
        let mut removed = Vec::new();
        for pin in base.iter().flat_map(|s| &s.definitions) {
            if !present.contains(pin.name.as_str()) {
                removed.push(self.pinned_version(&pin.name, pin.version)?);
            }
        }
        Ok(Plan {
            base,
            entries,
            removed,
        })
    }

    fn pinned_version(&self, name: &str, version: u32) -> Result<Version> {
        self.version(name, version)?.ok_or_else(|| {
            crate::store::Error::Corrupt(format!(
                "a snapshot pins version {version} of `{name}`, which is missing"
            ))
        })
    }
}

impl Plan {
    /// The plan against an empty registry: every definition is added as its version 1.
    pub fn first(drafts: Vec<Draft>) -> Plan {
        Plan {
            base: None,
            entries: drafts
                .into_iter()
                .map(|draft| Entry {
                    draft,
                    change: Change::Added,
                    version: 1,
                    new_version: true,
                })
                .collect(),
            removed: Vec::new(),
        }
    }

    /// Nothing to record: the project is what the latest snapshot holds.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty()
            && self
                .entries
                .iter()
                .all(|e| matches!(e.change, Change::Unchanged))
    }

    pub fn added(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.change, Change::Added))
    }

    pub fn changed(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.change, Change::Changed { .. }))
    }

    /// Everything that reads `name`, directly or through others, in project order.
    pub fn downstream(&self, name: &str) -> Vec<&Draft> {
        let mut readers: HashMap<&str, Vec<&str>> = HashMap::new();
        for e in &self.entries {
            for u in &e.draft.upstream {
                readers.entry(u).or_default().push(&e.draft.name);
            }
        }
        let mut affected = BTreeSet::new();
        let mut todo = vec![name];
        while let Some(next) = todo.pop() {
            for &r in readers.get(next).into_iter().flatten() {
                if affected.insert(r) {
                    todo.push(r);
                }
            }
        }
        self.entries
            .iter()
            .map(|e| &e.draft)
            .filter(|d| d.name != name && affected.contains(d.name.as_str()))
            .collect()
    }
}

/// A unified diff of two texts with three lines of context, headed by the two labels.
pub fn unified_diff(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string()
}
