//! What `cdp serve` knows about a project, loaded once and again whenever its files change: every
//! definition with its metadata, source text and lineage; the lowered project (for compiled SQL
//! per dialect and for the personal-data rule); the committed runs of the offline store and their
//! statistics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cdp_compiler::ir;
use cdp_compiler::pii::{profile_pii, Pii};
use cdp_compiler::sql::{self, Dialect, Step};
use cdp_registry::Draft;
use cdp_runtime::stats::RunStats;
use cdp_runtime::store::{Manifest, Storage};

/// One definition as the pages and the API show it.
#[derive(Debug, Clone)]
pub struct Definition {
    pub draft: Draft,
    /// Names of the definitions that read this one, sorted.
    pub downstream: Vec<String>,
}

impl Definition {
    pub fn name(&self) -> &str {
        &self.draft.name
    }

    pub fn kind(&self) -> &str {
        &self.draft.kind
    }
}

/// A loaded project.
pub struct Catalog {
    pub name: String,
    pub dir: PathBuf,
    pub storage: PathBuf,
    /// In project (file) order.
    pub definitions: Vec<Definition>,
    pub project: ir::Project,
    pub config: cdp_compiler::config::ProjectConfig,
    pub pii: Pii,
    /// The as-of time compiled SQL is shown for (the project's `as_of`, else the latest run's).
    pub as_of_micros: i64,
    /// Committed runs, oldest first.
    pub runs: Vec<Manifest>,
    /// Statistics of committed runs, by run id (runs without statistics are absent).
    pub stats: BTreeMap<String, RunStats>,
    /// Newest modification time of the project's files when loaded.
    pub stamp: Option<SystemTime>,
}

/// A project that does not load or check: the message says why.
#[derive(Debug)]
pub struct LoadFailure(pub String);

impl std::fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Statistics of a run are written next to its manifest: `<storage>/stats/<run>.json`.
pub fn stats_path(storage: &Path, run: &str) -> PathBuf {
    storage.join("stats").join(format!("{run}.json"))
}

impl Catalog {
    pub fn load(dir: &Path) -> Result<Catalog, LoadFailure> {
        let stamp = newest_change(dir);
        let sources = cdp_compiler::load_project(dir).map_err(|e| LoadFailure(e.to_string()))?;
        let checked = cdp_compiler::check(&sources);
        if checked.has_errors() {
            let first = checked
                .diagnostics
                .iter()
                .find(|d| d.is_error())
                .map(|d| cdp_grammar::diag::render(&sources.map, d))
                .unwrap_or_default();
            return Err(LoadFailure(format!(
                "the project does not check (run `cdp check`):\n{first}"
            )));
        }
        let project = cdp_compiler::lower(&checked).map_err(|e| LoadFailure(e.to_string()))?;
        let config = checked
            .config
            .clone()
            .ok_or_else(|| LoadFailure(format!("{} has no cdp.toml", dir.display())))?;
        let storage = dir.join(&config.project.storage);
        let drafts = cdp_registry::drafts(&sources, &checked);
        let mut downstream: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for d in &drafts {
            for up in &d.upstream {
                downstream
                    .entry(up.as_str())
                    .or_default()
                    .push(d.name.clone());
            }
        }
        let definitions: Vec<Definition> = drafts
            .iter()
            .map(|d| Definition {
                draft: d.clone(),
                downstream: {
                    let mut v = downstream.get(d.name.as_str()).cloned().unwrap_or_default();
                    v.sort();
                    v.dedup();
                    v
                },
            })
            .collect();
        let (runs, stats) = match Storage::open_read_only(&storage) {
            Ok(Some(store)) => {
                let runs = store.runs().unwrap_or_default();
                let stats = runs
                    .iter()
                    .filter_map(|m| {
                        let text = std::fs::read(stats_path(&storage, &m.run)).ok()?;
                        Some((m.run.clone(), serde_json::from_slice(&text).ok()?))
                    })
                    .collect();
                (runs, stats)
            }
            _ => (Vec::new(), BTreeMap::new()),
        };
        let as_of_text = config
            .project
            .as_of
            .clone()
            .or_else(|| runs.last().map(|m| m.as_of.clone()));
        let as_of_micros = as_of_text
            .as_deref()
            .and_then(cdp_compiler::config::parse_timestamp)
            .map(|s| s * 1_000_000)
            .unwrap_or(0);
        let pii = profile_pii(&project);
        Ok(Catalog {
            name: project.name.clone(),
            dir: dir.to_path_buf(),
            storage,
            definitions,
            project,
            config,
            pii,
            as_of_micros,
            runs,
            stats,
            stamp,
        })
    }

    pub fn definition(&self, name: &str) -> Option<&Definition> {
        self.definitions.iter().find(|d| d.name() == name)
    }

    /// Definitions whose name, description, owner or tags contain every word of `query`
    /// (case-insensitive); names that match come first.
    pub fn search(&self, query: &str) -> Vec<&Definition> {
        let words: Vec<String> = query.split_whitespace().map(|w| w.to_lowercase()).collect();
        let mut hits: Vec<(u8, &Definition)> = self
            .definitions
            .iter()
            .filter_map(|d| {
                let name = d.name().to_lowercase();
                let text = format!(
                    "{} {} {} {} {}",
                    name,
                    d.kind(),
                    d.draft.description.as_deref().unwrap_or(""),
                    d.draft.owner.as_deref().unwrap_or(""),
                    d.draft.tags.join(" ")
                )
                .to_lowercase();
                if !words.iter().all(|w| text.contains(w.as_str())) {
                    return None;
                }
                let rank = if words.iter().all(|w| name.contains(w.as_str())) {
                    0
                } else {
                    1
                };
                Some((rank, d))
            })
            .collect();
        hits.sort_by_key(|(rank, _)| *rank);
        hits.into_iter().map(|(_, d)| d).collect()
    }

    /// The compiled statements that implement `name` in `dialect`, as one script.
    pub fn sql(&self, name: &str, dialect: Dialect) -> String {
        let program = sql::compile(&self.project, dialect, self.as_of_micros);
        let implements = |text: &str| {
            text.lines().take_while(|l| l.starts_with("--")).any(|l| {
                l.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .any(|w| w == name)
            })
        };
        let mut out = String::new();
        for step in &program.steps {
            let statements: Vec<&sql::Statement> = match step {
                Step::Create(s) => vec![s],
                Step::Loop { body, .. } => body.iter().collect(),
            };
            for s in statements {
                if s.table == name || implements(&s.sql) {
                    out.push_str(s.sql.trim_end());
                    out.push_str("\n\n");
                }
            }
        }
        out
    }

    /// The latest committed run, if any.
    pub fn latest_run(&self) -> Option<&Manifest> {
        self.runs.last()
    }

    /// Statistics of the latest run that has them.
    pub fn latest_stats(&self) -> Option<(&Manifest, &RunStats)> {
        self.runs
            .iter()
            .rev()
            .find_map(|m| self.stats.get(&m.run).map(|s| (m, s)))
    }

    /// Whether the project's files changed since this catalog was loaded.
    pub fn is_stale(&self) -> bool {
        newest_change(&self.dir) != self.stamp
            || Storage::open_read_only(&self.storage)
                .ok()
                .flatten()
                .and_then(|s| s.latest().ok().flatten())
                .map(|m| m.run)
                != self.latest_run().map(|m| m.run.clone())
    }
}

/// The newest modification time of `cdp.toml` and the `.cdp` files of a project.
fn newest_change(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !name.starts_with('.') && name != "data" && name != "target" {
                    stack.push(path);
                }
            } else if name.ends_with(".cdp") || name == "cdp.toml" {
                let modified = entry.metadata().and_then(|m| m.modified()).ok();
                newest = newest.max(modified);
            }
        }
    }
    newest
}
