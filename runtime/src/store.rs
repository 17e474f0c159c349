//! The offline store under a project's storage directory: every run's output tables as Parquet,
//! one partition per as-of time and run, committed all at once.
//!
//! ```text
//! <storage>/offline/<table>/as_of=<YYYY-MM-DDTHH:MM:SS>/run=<run>/part-0.parquet
//! <storage>/runs/<run>.json        the manifest: what the run wrote, its steps and counts
//! <storage>/LATEST                 the last committed run
//! <storage>/staging/<run>/…        a run's files until it commits
//! <storage>/rejects/<run>/<source>.jsonl
//!                                  the rows of a source the run kept aside, one JSON object
//!                                  each: file, line, column, reason, row
//! ```
//!
//! A run writes into `staging/`, then moves its files into `offline/`, then writes its manifest,
//! then `LATEST` (each file written to a temporary name, synced, renamed). A run killed at any
//! point leaves no manifest; the next [`Storage::open`] removes its files, so readers only ever
//! see committed runs and the state the next run starts from is the last committed run's.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a committed run wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub run: String,
    /// The as-of time, `YYYY-MM-DD HH:MM:SS` (UTC).
    pub as_of: String,
    pub started_at: String,
    pub finished_at: String,
    pub tables: Vec<StoredTable>,
    pub steps: Vec<StepRecord>,
    pub rejects: Vec<RejectCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTable {
    pub table: String,
    pub rows: usize,
    /// Relative to the storage directory.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub millis: u64,
    pub rows: Vec<(String, usize)>,
    pub rounds: Option<u32>,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectCount {
    pub source: String,
    pub rows: u64,
    pub file: String,
}

pub struct Storage {
    root: PathBuf,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl Storage {
    /// Opens (creating) the storage directory and removes what uncommitted runs left behind.
    pub fn open(root: &Path) -> Result<Storage> {
        for dir in ["offline", "runs", "staging"] {
            let d = root.join(dir);
            fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let storage = Storage {
            root: root.to_path_buf(),
        };
        storage.clean_uncommitted()?;
        Ok(storage)
    }

    /// Opens an existing storage directory for reading only: nothing is created or cleaned, so
    /// that readers (`cdp serve`, `cdp profile`) never touch what a running `cdp run` is
    /// staging. `None` when there is no storage directory yet.
    pub fn open_read_only(root: &Path) -> Result<Option<Storage>> {
        if !root.join("runs").is_dir() {
            return Ok(None);
        }
        Ok(Some(Storage {
            root: root.to_path_buf(),
        }))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn committed(&self, run: &str) -> bool {
        self.root.join("runs").join(format!("{run}.json")).exists()
    }

    /// Writes the rows a run kept aside from one source, as JSON lines, to
    /// `rejects/<run>/<source>.jsonl`; returns that path relative to the storage directory. The
    /// run's commit makes them part of it (an uncommitted run's rejects are cleaned up).
    pub fn write_rejects(
        &self,
        run: &str,
        source: &str,
        rejects: &[crate::load::Reject],
    ) -> Result<String> {
        let relative = format!("rejects/{run}/{source}.jsonl");
        let path = self.root.join(&relative);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut text = Vec::new();
        for r in rejects {
            serde_json::to_writer(&mut text, r)
                .map_err(|e| Error::Internal(format!("writing rejects: {e}")))?;
            text.push(b'\n');
        }
        write_atomic(&path, &text)?;
        Ok(relative)
    }

    fn clean_uncommitted(&self) -> Result<()> {
        let rejects = self.root.join("rejects");
        if rejects.is_dir() {
            for run in read_dirs(&rejects)? {
                let name = run.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if !self.committed(name) {
                    fs::remove_dir_all(&run).map_err(io(&run))?;
                }
            }
        }
        let staging = self.root.join("staging");
        for entry in fs::read_dir(&staging).map_err(io(&staging))? {
            let path = entry.map_err(io(&staging))?.path();
            fs::remove_dir_all(&path).map_err(io(&path))?;
        }
        let offline = self.root.join("offline");
        for table in read_dirs(&offline)? {
            for as_of in read_dirs(&table)? {
                for run in read_dirs(&as_of)? {
                    let name = run.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    let committed = name
                        .strip_prefix("run=")
                        .is_some_and(|id| self.committed(id));
                    if !committed {
                        fs::remove_dir_all(&run).map_err(io(&run))?;
                    }
                }
                if read_dirs(&as_of)?.is_empty() {
                    fs::remove_dir(&as_of).map_err(io(&as_of))?;
                }
            }
        }
        Ok(())
    }

    /// The last committed run.
    pub fn latest(&self) -> Result<Option<Manifest>> {
        let latest = self.root.join("LATEST");
        let run = match fs::read_to_string(&latest) {
            Ok(r) => r.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&latest)(e)),
        };
        self.manifest(&run).map(Some)
    }

    pub fn manifest(&self, run: &str) -> Result<Manifest> {
        let path = self.root.join("runs").join(format!("{run}.json"));
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        serde_json::from_str(&text).map_err(|e| Error::File {
            path,
            message: format!("not a run manifest: {e}"),
        })
    }

    /// Every committed run, oldest first.
    pub fn runs(&self) -> Result<Vec<Manifest>> {
        let dir = self.root.join("runs");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        names.iter().map(|n| self.manifest(n)).collect()
    }

    /// Where a table of a run lives, relative to the storage directory.
    pub fn table_path(run: &str, as_of: &str, table: &str) -> String {
        format!(
            "offline/{table}/as_of={}/run={run}/part-0.parquet",
            as_of.replace(' ', "T")
        )
    }

    /// Writes a table of a run into the run's staging area.
    pub fn stage(
        &self,
        run: &str,
        as_of: &str,
        table: &str,
        schema: SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<StoredTable> {
        let relative = Storage::table_path(run, as_of, table);
        let path = self.root.join("staging").join(run).join(&relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let file = fs::File::create(&path).map_err(io(&path))?;
        let parquet = |e: datafusion::parquet::errors::ParquetError| Error::File {
            path: path.clone(),
            message: e.to_string(),
        };
        let mut writer = ArrowWriter::try_new(file, schema, None).map_err(parquet)?;
        let mut rows = 0;
        for b in batches {
            rows += b.num_rows();
            writer.write(b).map_err(parquet)?;
        }
        let file = writer.into_inner().map_err(parquet)?;
        file.sync_all().map_err(io(&path))?;
        Ok(StoredTable {
            table: table.to_string(),
            rows,
            path: relative,
        })
    }

    /// Commits a run: its staged files move into the offline store, then its manifest and
    /// `LATEST` are written. Until the manifest exists, the run does not exist.
    pub fn commit(&self, manifest: &Manifest) -> Result<()> {
        let staging = self.root.join("staging").join(&manifest.run);
        for t in &manifest.tables {
            let from = staging.join(&t.path);
            let to = self.root.join(&t.path);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(io(parent))?;
            }
            fs::rename(&from, &to).map_err(io(&from))?;
        }
        let json = serde_json::to_string_pretty(manifest)
            .map_err(|e| Error::Internal(format!("serializing the manifest: {e}")))?;
        write_atomic(
            &self
                .root
                .join("runs")
                .join(format!("{}.json", manifest.run)),
            json.as_bytes(),
        )?;
        write_atomic(&self.root.join("LATEST"), manifest.run.as_bytes())?;
        let _ = fs::remove_dir_all(&staging);
        Ok(())
    }

    /// Reads a stored table back.
    pub fn read(&self, table: &StoredTable) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let path = self.root.join(&table.path);
        let file = fs::File::open(&path).map_err(io(&path))?;
        let parquet = |e: datafusion::parquet::errors::ParquetError| Error::File {
            path: path.clone(),
            message: e.to_string(),
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet)?;
        let schema = builder.schema().clone();
        // Large batches: the tables are read whole, and per-batch work is then negligible.
        let reader = builder.with_batch_size(65_536).build().map_err(parquet)?;
        let batches = reader
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
        Ok((schema, batches))
    }
}

fn read_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            out.push(path);
        }
    }
    Ok(out)
}

/// Writes a file so that it is either the old or the new contents, whatever happens.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(values: &[i64]) -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(values.to_vec()))],
        )
        .unwrap();
        (schema, b)
    }

    fn manifest(run: &str, tables: Vec<StoredTable>) -> Manifest {
        Manifest {
            run: run.into(),
            as_of: "2024-12-01 00:00:00".into(),
            started_at: String::new(),
            finished_at: String::new(),
            tables,
            steps: Vec::new(),
            rejects: Vec::new(),
        }
    }

    #[test]
    fn only_committed_runs_exist() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        assert!(s.latest().unwrap().is_none());
        let (schema, b) = batch(&[1, 2, 3]);
        let t = s
            .stage("r1", "2024-12-01 00:00:00", "t", schema.clone(), &[b])
            .unwrap();
        s.commit(&manifest("r1", vec![t.clone()])).unwrap();
        assert_eq!(s.latest().unwrap().unwrap().run, "r1");
        assert_eq!(s.read(&t).unwrap().1[0].num_rows(), 3);

        // A second run staged, half moved into the offline store, then "killed".
        let (_, b2) = batch(&[4]);
        let t2 = s
            .stage("r2", "2024-12-02 00:00:00", "t", schema, &[b2])
            .unwrap();
        let from = dir.path().join("staging/r2").join(&t2.path);
        let to = dir.path().join(&t2.path);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::rename(from, to).unwrap();
        drop(s);
        let s = Storage::open(dir.path()).unwrap();
        assert_eq!(s.latest().unwrap().unwrap().run, "r1");
        assert!(!dir.path().join(&t2.path).exists());
        assert!(dir.path().join(&t.path).exists());
        assert_eq!(s.runs().unwrap().len(), 1);
    }

    #[test]
    fn rejects_belong_to_their_run() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        let reject = crate::load::Reject {
            file: "data/orders.csv".into(),
            line: 3,
            column: Some("amount".into()),
            reason: "\"x\" is not a decimal(12, 2) (a number like 12.50)".into(),
            row: "O1,x".into(),
        };
        let kept = s
            .write_rejects("r1", "orders", std::slice::from_ref(&reject))
            .unwrap();
        assert_eq!(kept, "rejects/r1/orders.jsonl");
        let text = fs::read_to_string(dir.path().join(&kept)).unwrap();
        assert_eq!(
            text,
            "{\"file\":\"data/orders.csv\",\"line\":3,\"column\":\"amount\",\
             \"reason\":\"\\\"x\\\" is not a decimal(12, 2) (a number like 12.50)\",\"row\":\"O1,x\"}\n"
        );
        s.commit(&manifest("r1", Vec::new())).unwrap();

        // A second run writes its rejects, then is killed before it commits.
        let lost = s.write_rejects("r2", "orders", &[reject]).unwrap();
        drop(s);
        Storage::open(dir.path()).unwrap();
        assert!(dir.path().join(&kept).exists());
        assert!(!dir.path().join("rejects/r2").exists(), "{lost}");
    }
}
