//! Loading a project from disk: `cdp.toml` and every `.cdp` file under the project directory.

use std::path::{Path, PathBuf};

use cdp_grammar::{FileId, SourceMap};

/// The raw text of a project, before any parsing.
#[derive(Debug, Clone)]
pub struct ProjectSources {
    pub root: PathBuf,
    pub map: SourceMap,
    /// The `.cdp` files, in path order so that output is deterministic.
    pub files: Vec<FileId>,
    /// `cdp.toml`, when the project has one.
    pub config: Option<FileId>,
}

/// Why a project could not be read at all (as opposed to mistakes inside its files).
#[derive(Debug)]
pub enum LoadError {
    NotADirectory(PathBuf),
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    NoDefinitions(PathBuf),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::NotADirectory(p) => write!(f, "{} is not a project directory", p.display()),
            LoadError::Io { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            LoadError::NoDefinitions(p) => {
                write!(
                    f,
                    "no .cdp files under {} (is this a cdp project? `cdp init` creates one)",
                    p.display()
                )
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// Directories never searched for `.cdp` files: outputs and tool state, not definitions.
const SKIPPED_DIRS: [&str; 4] = [".cdp", "target", ".git", "node_modules"];

/// Reads `cdp.toml` and all `.cdp` files under `dir` (recursively, skipping output directories).
pub fn load_project(dir: &Path) -> Result<ProjectSources, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::NotADirectory(dir.to_path_buf()));
    }
    let mut paths = Vec::new();
    collect(dir, &mut paths)?;
    paths.sort();
    if paths.is_empty() {
        return Err(LoadError::NoDefinitions(dir.to_path_buf()));
    }
    let mut map = SourceMap::new();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let text = read(&path)?;
        files.push(map.add(display_path(dir, &path), text));
    }
    let config_path = dir.join("cdp.toml");
    let config = if config_path.is_file() {
        Some(map.add(display_path(dir, &config_path), read(&config_path)?))
    } else {
        None
    };
    Ok(ProjectSources {
        root: dir.to_path_buf(),
        map,
        files,
        config,
    })
}

/// A project held in memory (tests, benchmarks, tools): `(path, text)` pairs plus optional config.
pub fn project_from_texts<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
    config: Option<&str>,
) -> ProjectSources {
    let mut map = SourceMap::new();
    let files = files.into_iter().map(|(p, t)| map.add(p, t)).collect();
    let config = config.map(|c| map.add("cdp.toml", c));
    ProjectSources {
        root: PathBuf::from("."),
        map,
        files,
        config,
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let io = |error| LoadError::Io {
        path: dir.to_path_buf(),
        error,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_ref()) && !name.starts_with('.') {
                collect(&path, out)?;
            }
        } else if path.extension().is_some_and(|e| e == "cdp") {
            out.push(path);
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|error| LoadError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// Paths in messages are relative to the project directory when possible: short and stable.
fn display_path(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}
