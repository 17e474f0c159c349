//! The registry: every version of every definition of a project, the snapshots that applied
//! them (who, when, why), and the history of runs, in an embedded sled database under the
//! project's storage directory.
//!
//! Stages, each callable on its own: [`drafts`] (a checked project's definitions as content:
//! canonical text addressed by its hash) → [`Registry::plan`] (compared with the latest
//! snapshot) → [`Registry::apply`] (recorded as the next snapshot, durably).

pub mod draft;
pub mod plan;
pub mod runs;
pub mod sleddb;
pub mod store;

pub use draft::{content_hash, drafts, Draft};
pub use plan::{unified_diff, Change, Entry, Plan};
pub use runs::{RunRecord, StepRun, TableRows};
pub use store::{registry_dir, Error, Pin, Registry, Result, Snapshot, Stamp, Version};

#[cfg(test)]
mod tests;
