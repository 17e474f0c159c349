//! `cdp apply`, `cdp diff`, `cdp history` and `cdp rollback`: the project's definitions recorded
//! as versions in the registry (under the storage directory), the plan of what applying would
//! change, one definition's versions, and an old version brought back.
//!
//! The files stay the source of truth: a rollback writes the old text into the project's file and
//! applies it, so the registry only ever records what the files said.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use cdp_compiler::{Checked, ProjectSources};
use cdp_grammar::{diag, SourceMap};
use cdp_registry::{unified_diff, Change, Draft, Plan, Registry, Stamp};

use super::{load, plural, Failure, Outcome};

/// Who applies, and why.
pub struct ApplyOptions<'a> {
    pub message: Option<&'a str>,
    /// Default: `git config user.name`, else `$USER`.
    pub author: Option<&'a str>,
    /// Apply without asking, even on a terminal.
    pub yes: bool,
}

/// `cdp apply`: prints the plan, asks on a terminal (unless `--yes`), records one snapshot.
/// Without a terminal on stdin there is nobody to ask, so it applies: scripts and CI pipelines
/// apply what they were given, and `cdp diff` is the way to look without applying.
pub fn apply(
    dir: &Path,
    options: &ApplyOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Outcome {
    let (project, checked) = checked_project(dir, "nothing applied", err)?;
    let drafts = cdp_registry::drafts(&project, &checked);
    let registry = open(&storage_dir(dir, &checked))?;
    let plan = registry.plan(drafts).map_err(registry_failure)?;
    write_plan(&plan, out)?;
    if plan.is_empty() {
        return Ok(());
    }
    if !options.yes && std::io::stdin().is_terminal() && !confirm(out, err)? {
        writeln!(out, "not applied")?;
        return Ok(());
    }
    let stamp = stamp(dir, options, String::new());
    record(&registry, &plan, &stamp, out)
}

/// `cdp diff`: the plan of `cdp apply`, without writing anything (not even a new registry).
pub fn diff(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let (project, checked) = checked_project(dir, "no plan", err)?;
    let drafts = cdp_registry::drafts(&project, &checked);
    let plan =
        match Registry::open_existing(&storage_dir(dir, &checked)).map_err(registry_failure)? {
            Some(registry) => registry.plan(drafts).map_err(registry_failure)?,
            None => Plan::first(drafts),
        };
    write_plan(&plan, out)?;
    Ok(())
}

/// `cdp history <name>`: every version of one definition, newest first.
pub fn history(dir: &Path, name: &str, out: &mut dyn Write) -> Outcome {
    let registry = open_existing(dir)?;
    let versions = registry.versions(name).map_err(registry_failure)?;
    if versions.is_empty() {
        return Err(unknown_name(&registry, name));
    }
    let latest = registry.latest_snapshot().map_err(registry_failure)?;
    let current = latest
        .iter()
        .flat_map(|s| &s.definitions)
        .find(|p| p.name == name);
    let kind = &versions[versions.len() - 1].kind;
    let state = match (current, &latest) {
        (Some(pin), _) => format!("current: version {}", pin.version),
        (None, Some(s)) => format!("removed (not in snapshot {})", s.id),
        (None, None) => String::from("not applied"),
    };
    writeln!(
        out,
        "{kind} {name}: {}, {state}",
        plural(versions.len(), "version")
    )?;
    let mut rows = vec![[
        "version".to_string(),
        "hash".into(),
        "snapshot".into(),
        "time".into(),
        "author".into(),
        "message".into(),
    ]];
    for v in versions.iter().rev() {
        let snapshot = registry
            .snapshot(v.snapshot)
            .map_err(registry_failure)?
            .ok_or_else(|| {
                Failure::Internal(format!(
                    "the registry is damaged: version {} of `{name}` names snapshot {}, which is missing",
                    v.version, v.snapshot
                ))
            })?;
        rows.push([
            v.version.to_string(),
            v.hash[..12.min(v.hash.len())].to_string(),
            v.snapshot.to_string(),
            snapshot.time,
            snapshot.author,
            one_line(&snapshot.message),
        ]);
    }
    write_table(&rows, out)?;
    Ok(())
}

/// `cdp rollback <name> <version>`: writes the old version's text in place of the definition
/// (or back into its file, if it was removed), checks the project, and applies it as a new
/// version equal to the old one.
pub fn rollback(
    dir: &Path,
    name: &str,
    version: u32,
    options: &ApplyOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Outcome {
    let registry = open_existing(dir)?;
    let versions = registry.versions(name).map_err(registry_failure)?;
    if versions.is_empty() {
        return Err(unknown_name(&registry, name));
    }
    let Some(old) = versions.iter().find(|v| v.version == version) else {
        return Err(Failure::User(format!(
            "`{name}` has no version {version}; its versions are 1 to {}",
            versions.len()
        )));
    };
    let old_text = registry.text(old).map_err(registry_failure)?;

    let project = load(dir)?;
    let (path, new_text) = rolled_back(dir, &project, name, old, &old_text)?;
    let rolled = replace_file(&project, &path, &new_text);
    let checked = cdp_compiler::check(&rolled);
    if checked.has_errors() {
        for d in checked.diagnostics.iter().filter(|d| d.is_error()) {
            writeln!(err, "{}", diag::render(&rolled.map, d))?;
        }
        let errors = checked.diagnostics.iter().filter(|d| d.is_error()).count();
        return Err(Failure::User(format!(
            "not rolled back: with version {version} of `{name}` the project would have {} (shown above); nothing was changed",
            plural(errors, "error")
        )));
    }
    let plan = registry
        .plan(cdp_registry::drafts(&rolled, &checked))
        .map_err(registry_failure)?;
    let others: BTreeSet<&str> = plan
        .entries
        .iter()
        .filter(|e| !matches!(e.change, Change::Unchanged))
        .map(|e| e.draft.name.as_str())
        .chain(plan.removed.iter().map(|v| v.name.as_str()))
        .filter(|&n| n != name)
        .collect();
    if !others.is_empty() {
        let others: Vec<String> = others.iter().map(|n| format!("`{n}`")).collect();
        return Err(Failure::User(format!(
            "not rolled back: the project has changes that are not applied ({}); `cdp apply` or undo them first",
            others.join(", ")
        )));
    }
    write_atomically(&dir.join(&path), &new_text)?;
    write_plan(&plan, out)?;
    if plan.is_empty() {
        writeln!(
            out,
            "`{name}` is version {version} again, as the registry already holds it"
        )?;
        return Ok(());
    }
    let message = format!("rollback {name} to version {version}");
    let stamp = stamp(dir, options, message);
    record(&registry, &plan, &stamp, out)?;
    if let Some(entry) = plan.entries.iter().find(|e| e.draft.name == name) {
        writeln!(
            out,
            "`{name}` is version {version}'s text again, as version {} in {}",
            entry.version, path
        )?;
    }
    Ok(())
}

/// Reads and checks the project; diagnostics go to `err`, and errors stop the command.
fn checked_project(
    dir: &Path,
    refusal: &str,
    err: &mut dyn Write,
) -> Result<(ProjectSources, Checked), Failure> {
    let project = load(dir)?;
    let checked = cdp_compiler::check(&project);
    for d in &checked.diagnostics {
        writeln!(err, "{}", diag::render(&project.map, d))?;
    }
    if checked.has_errors() {
        let errors = checked.diagnostics.iter().filter(|d| d.is_error()).count();
        return Err(Failure::User(format!(
            "{refusal}: the project has {} (shown above; `cdp check` lists them too)",
            plural(errors, "error")
        )));
    }
    Ok((project, checked))
}

/// The storage directory a checked project's `cdp.toml` names (`.cdp` by default).
fn storage_dir(dir: &Path, checked: &Checked) -> PathBuf {
    let storage = checked
        .config
        .as_ref()
        .map_or(".cdp", |c| c.project.storage.as_str());
    dir.join(storage)
}

/// The registry of a project that need not check: only `cdp.toml` is read.
fn open_existing(dir: &Path) -> Result<Registry, Failure> {
    let config_path = dir.join("cdp.toml");
    let storage = if config_path.is_file() {
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| Failure::User(format!("cannot read {}: {e}", config_path.display())))?;
        let mut map = SourceMap::new();
        let id = map.add("cdp.toml", text);
        let config = cdp_compiler::config::parse_config(&map, id)
            .map_err(|d| Failure::User(diag::render(&map, &d)))?;
        dir.join(config.project.storage)
    } else if dir.is_dir() {
        dir.join(".cdp")
    } else {
        return Err(Failure::User(format!(
            "{} is not a project directory",
            dir.display()
        )));
    };
    Registry::open_existing(&storage)
        .map_err(registry_failure)?
        .ok_or_else(|| {
            Failure::User(format!(
                "no registry in {} yet: `cdp apply` records the project's definitions",
                storage.display()
            ))
        })
}

fn open(storage: &Path) -> Result<Registry, Failure> {
    Registry::open(storage).map_err(registry_failure)
}

fn registry_failure(e: cdp_registry::Error) -> Failure {
    use cdp_registry::Error as E;
    match e {
        E::Locked(_) | E::StalePlan => Failure::User(e.to_string()),
        E::Store { .. } | E::Corrupt(_) => Failure::Internal(e.to_string()),
    }
}

fn unknown_name(registry: &Registry, name: &str) -> Failure {
    let names = registry.names().unwrap_or_default();
    let hint = diag::nearest_name(name, names.iter().map(String::as_str))
        .map(|n| format!("; did you mean `{n}`?"))
        .unwrap_or_default();
    Failure::User(format!("the registry has no definition `{name}`{hint}"))
}

/// Asks on the terminal; anything but `y`/`yes` declines.
fn confirm(out: &mut dyn Write, err: &mut dyn Write) -> Result<bool, Failure> {
    out.flush()?;
    write!(err, "apply these changes to the registry? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::User(format!("cannot read the answer: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn stamp(dir: &Path, options: &ApplyOptions, default_message: String) -> Stamp {
    Stamp {
        author: options
            .author
            .map(str::to_string)
            .unwrap_or_else(|| default_author(dir)),
        time: chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        message: options.message.map_or(default_message, str::to_string),
    }
}

/// `git config user.name` in the project, else `$USER`, else `unknown`.
fn default_author(dir: &Path) -> String {
    let git = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["config", "user.name"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|name| !name.is_empty());
    git.or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Records the plan and acknowledges it only once it is on disk.
fn record(registry: &Registry, plan: &Plan, stamp: &Stamp, out: &mut dyn Write) -> Outcome {
    let snapshot = registry
        .apply(plan, stamp)
        .map_err(registry_failure)?
        .ok_or_else(|| Failure::Internal("a plan with changes recorded nothing".into()))?;
    writeln!(
        out,
        "applied snapshot {}: {} added, {} changed, {} removed",
        snapshot.id,
        snapshot.added.len(),
        snapshot.changed.len(),
        snapshot.removed.len()
    )?;
    Ok(())
}

/// The plan: one line per added, changed or removed definition, the diff of each changed one
/// with what reads it, and the counts.
fn write_plan(plan: &Plan, out: &mut dyn Write) -> Outcome {
    match &plan.base {
        Some(base) if plan.is_empty() => {
            writeln!(
                out,
                "no changes: the project is what snapshot {} holds",
                base.id
            )?;
            return Ok(());
        }
        Some(base) => writeln!(
            out,
            "changes since snapshot {} ({}, {}{}):",
            base.id,
            base.time,
            base.author,
            if base.message.is_empty() {
                String::new()
            } else {
                format!(": {}", one_line(&base.message))
            }
        )?,
        None => writeln!(out, "the registry is empty; every definition is new:")?,
    }
    let mut rows = Vec::new();
    for entry in &plan.entries {
        let d = &entry.draft;
        let (sign, versions) = match &entry.change {
            Change::Unchanged => continue,
            Change::Added => ("+", format!("v{}", entry.version)),
            Change::Changed { from, .. } => {
                ("~", format!("v{} -> v{}", from.version, entry.version))
            }
        };
        rows.push([
            sign.to_string(),
            d.kind.clone(),
            d.name.clone(),
            versions,
            format!("{}:{}", d.file, d.line),
        ]);
    }
    for v in &plan.removed {
        rows.push([
            "-".into(),
            v.kind.clone(),
            v.name.clone(),
            format!("v{}", v.version),
            String::new(),
        ]);
    }
    write_table(&rows, out)?;
    for entry in plan.changed() {
        let Change::Changed { from, text } = &entry.change else {
            continue;
        };
        let d = &entry.draft;
        writeln!(out)?;
        write!(
            out,
            "{}",
            unified_diff(
                text,
                &d.text,
                &format!("{} v{} (snapshot {})", d.name, from.version, from.snapshot),
                &format!("{} {}:{}", d.name, d.file, d.line),
            )
        )?;
        let downstream = plan.downstream(&d.name);
        if !downstream.is_empty() {
            let names: Vec<String> = downstream.iter().map(|r| kind_name(r)).collect();
            writeln!(out, "read by: {}", names.join(", "))?;
        }
    }
    writeln!(
        out,
        "\nplan: {} added, {} changed, {} removed",
        plan.added().count(),
        plan.changed().count(),
        plan.removed.len()
    )?;
    Ok(())
}

fn kind_name(d: &Draft) -> String {
    format!("{} {}", d.kind, d.name)
}

/// Rows in columns as wide as their widest cell; the last column is not padded.
fn write_table<const N: usize>(rows: &[[String; N]], out: &mut dyn Write) -> Outcome {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The file (relative to the project) that gets the old text, and that file's new content: the
/// old text in place of the current definition, or appended to the file the old version was in
/// when the project no longer has the definition.
fn rolled_back(
    dir: &Path,
    project: &ProjectSources,
    name: &str,
    old: &cdp_registry::Version,
    old_text: &str,
) -> Result<(String, String), Failure> {
    let old_text = old_text.trim_end();
    for &id in &project.files {
        let file = project.map.get(id);
        let parsed = cdp_grammar::parse_file(id, &file.text);
        if let Some(def) = parsed.file.definitions.iter().find(|d| d.name.name == name) {
            let (start, end) = (def.span.start as usize, def.span.end as usize);
            let text = format!("{}{old_text}{}", &file.text[..start], &file.text[end..]);
            return Ok((file.path.clone(), text));
        }
    }
    let path = dir.join(&old.file);
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(Failure::User(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let text = if existing.trim().is_empty() {
        format!("{old_text}\n")
    } else {
        format!("{}\n\n{old_text}\n", existing.trim_end())
    };
    Ok((old.file.clone(), text))
}

/// The project with one file's text replaced (or added, for a file it did not have).
fn replace_file(project: &ProjectSources, path: &str, text: &str) -> ProjectSources {
    let mut texts: Vec<(&str, &str)> = project
        .files
        .iter()
        .map(|&id| project.map.get(id))
        .map(|f| (f.path.as_str(), f.text.as_str()))
        .filter(|(p, _)| *p != path)
        .collect();
    // In path order, where loading the project from disk would put it.
    let at = texts.partition_point(|(p, _)| *p < path);
    texts.insert(at, (path, text));
    let mut map = SourceMap::new();
    let files = texts.into_iter().map(|(p, t)| map.add(p, t)).collect();
    let config = project.config.map(|id| {
        let file = project.map.get(id);
        map.add(file.path.clone(), file.text.clone())
    });
    ProjectSources {
        root: project.root.clone(),
        map,
        files,
        config,
    }
}

/// Writes a file so that a crash leaves the old or the new content, never a mix.
fn write_atomically(path: &Path, text: &str) -> Outcome {
    let fail = |e: std::io::Error| Failure::User(format!("cannot write {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(".cdp-rollback");
    let temp = PathBuf::from(temp);
    let mut file = std::fs::File::create(&temp).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    std::fs::rename(&temp, path).map_err(fail)
}
