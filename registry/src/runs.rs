//! Run history: what each `cdp run` computed, how long each step took and how many rows it made.

use serde::{Deserialize, Serialize};

use crate::store::{decode, encode, Registry, Result};

/// One committed run of the project's workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id (as the offline store names it).
    pub run: String,
    /// The as-of time, `YYYY-MM-DD HH:MM:SS` (UTC).
    pub as_of: String,
    pub started_at: String,
    pub finished_at: String,
    /// The workflow's steps in the order they finished.
    pub steps: Vec<StepRun>,
    /// The row count of every output table the run committed.
    pub tables: Vec<TableRows>,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRun {
    pub name: String,
    pub millis: u64,
    /// Rows of each table the step wrote.
    pub rows: Vec<TableRows>,
    /// Rounds of an iterative step (identity resolution), if it was one.
    pub rounds: Option<u32>,
    /// 1 when the step succeeded at once; more when it was retried.
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub table: String,
    pub rows: u64,
}

impl StepRun {
    /// The rows of all tables the step wrote.
    pub fn total_rows(&self) -> u64 {
        self.rows.iter().map(|t| t.rows).sum()
    }
}

impl Registry {
    /// Appends a run to the history; on disk when this returns.
    pub fn record_run(&self, run: &RunRecord) -> Result<()> {
        let next = match self.runs.last().map_err(|e| self.store_error(e))? {
            Some((key, _)) => sequence(&key) + 1,
            None => 1,
        };
        self.runs
            .insert(next.to_be_bytes(), encode(run)?)
            .map_err(|e| self.store_error(e))?;
        self.flush()
    }

    /// Every recorded run, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        self.runs
            .iter()
            .values()
            .map(|bytes| decode(&bytes.map_err(|e| self.store_error(e))?, "a run"))
            .collect()
    }
}

fn sequence(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[8 - n..].copy_from_slice(&key[key.len() - n..]);
    u64::from_be_bytes(bytes)
}
