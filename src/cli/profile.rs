//! `cdp profile`: one profile from the online store, found by an identity key (`email=…`,
//! normalized as the entity declares), by a bare value tried against every key, or by a
//! canonical id (also one merged away, which finds its survivor). Before reading, the online
//! store is brought up to the last committed run if it lags it (a run killed before it
//! updated the store).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use cdp_compiler::stream;
use cdp_runtime::online::{self, EntityInfo, KeyNormalizer, OnlineStore, Profile};
use cdp_runtime::store::Storage;
use serde_json::Value as Json;

use super::compile::lowered;
use super::{Failure, Outcome};

/// What `cdp profile` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    /// The profile as one JSON object: every value with its name, kind and type.
    Json,
}

/// A failure reading the stores: cdp's own bug, else a problem of the files on disk.
fn failure(e: cdp_runtime::Error) -> Failure {
    match e {
        cdp_runtime::Error::Internal(m) => Failure::Internal(m),
        other => Failure::User(other.to_string()),
    }
}

/// The name under which a lookup reads canonical ids rather than identity keys.
const CANONICAL_ID: &str = "canonical_id";

pub fn run(
    dir: &Path,
    key: &str,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Outcome {
    let (project, _) = lowered(dir, err)?;
    let config = &super::project_config(dir, "profile", "to know where the runs are stored")?;
    let root = dir.join(&config.project.storage);
    let no_run = || {
        Failure::User(format!(
            "no run of {} is committed yet: `cdp run {}` computes the profiles",
            dir.display(),
            dir.display()
        ))
    };
    // Read only: nothing is created or cleaned, so that a `cdp run` staging its outputs at the
    // same time keeps them.
    let storage = Storage::open_read_only(&root)
        .map_err(failure)?
        .ok_or_else(no_run)?;
    if storage.latest().map_err(failure)?.is_none() {
        return Err(no_run());
    }
    let store =
        OnlineStore::open_waiting(&online::path(&root), Duration::from_secs(5)).map_err(failure)?;
    let synced = store.sync(&storage).map_err(failure)?;
    let Some(run) = synced.run else {
        return Err(no_run());
    };
    if synced.updated {
        writeln!(
            err,
            "the online store lagged the offline store; brought up to run {run}"
        )?;
    }

    let entities = store.entities().map_err(failure)?;
    let normalizer = KeyNormalizer::new(&project).map_err(failure)?;
    let lookup = Lookup::parse(key, &entities);
    let mut found: Vec<(String, Profile)> = Vec::new();
    for entity in &entities {
        for (label, id) in lookup.candidates(&store, &normalizer, &project, entity)? {
            if let Some(p) = store.profile(&entity.name, &id).map_err(failure)? {
                if !found
                    .iter()
                    .any(|(_, f)| f.entity == p.entity && f.canonical_id == p.canonical_id)
                {
                    found.push((label, p));
                }
            }
        }
    }
    let profile = match found.len() {
        0 => {
            let mut message = format!("no profile has {key}");
            if let Lookup::Bare(value) = &lookup {
                if let Some((name, _)) = value.split_once('=') {
                    message.push_str(&format!(
                        " (`{name}` is not an identity key; the keys are {})",
                        key_names(&entities)
                    ));
                }
            }
            return Err(Failure::User(message));
        }
        1 => found.remove(0).1,
        _ => {
            let which: Vec<String> = found
                .iter()
                .map(|(label, p)| format!("{label} (profile {} of {})", p.canonical_id, p.entity))
                .collect();
            return Err(Failure::User(format!(
                "{key} matches {} profiles; name the key: {}",
                found.len(),
                which.join(", ")
            )));
        }
    };
    match format {
        Format::Json => {
            let json = serde_json::to_string_pretty(&profile)
                .map_err(|e| Failure::Internal(format!("encoding the profile: {e}")))?;
            writeln!(out, "{json}")?;
        }
        Format::Text => text(&profile, out)?,
    }
    Ok(())
}

/// What the user asked for.
enum Lookup {
    /// `name=value` where `name` is an identity key of some entity.
    Key { name: String, value: String },
    /// `canonical_id=value`.
    Id(String),
    /// Anything else: tried against every key and as a canonical id.
    Bare(String),
}

impl Lookup {
    fn parse(text: &str, entities: &[EntityInfo]) -> Lookup {
        if let Some((name, value)) = text.split_once('=') {
            let name = name.trim();
            if name == CANONICAL_ID {
                return Lookup::Id(value.trim().to_string());
            }
            if entities.iter().any(|e| e.keys.iter().any(|k| k == name)) {
                return Lookup::Key {
                    name: name.to_string(),
                    value: value.to_string(),
                };
            }
        }
        Lookup::Bare(text.to_string())
    }

    /// The canonical ids this lookup can mean in `entity`, each with the `key=value` (as
    /// stored) that found it.
    fn candidates(
        &self,
        store: &OnlineStore,
        normalizer: &KeyNormalizer,
        project: &cdp_compiler::ir::Project,
        entity: &EntityInfo,
    ) -> Result<Vec<(String, String)>, Failure> {
        let mut out = Vec::new();
        let (raw, names): (&str, Vec<&str>) = match self {
            Lookup::Id(id) => return Ok(vec![(format!("{CANONICAL_ID}={id}"), id.clone())]),
            Lookup::Key { name, value } => (value, vec![name.as_str()]),
            Lookup::Bare(value) => {
                out.push((format!("{CANONICAL_ID}={value}"), value.clone()));
                (value, entity.keys.iter().map(String::as_str).collect())
            }
        };
        let normalized = normalizer.normalize(&entity.name, raw).map_err(failure)?;
        let declared = project.entities.iter().find(|e| e.meta.name == entity.name);
        for name in names {
            // As the project normalizes the key today; a key the project no longer declares is
            // looked up as typed.
            let value = match declared.and_then(|e| e.keys.iter().position(|k| k.name == name)) {
                Some(i) => match normalized.get(i).cloned().flatten() {
                    Some(v) => v,
                    None => continue,
                },
                None => raw.to_string(),
            };
            if let Some(id) = store
                .canonical_id(&entity.name, name, &value)
                .map_err(failure)?
            {
                out.push((format!("{name}={value}"), id));
            }
        }
        Ok(out)
    }
}

fn key_names(entities: &[EntityInfo]) -> String {
    let mut names: Vec<&str> = entities
        .iter()
        .flat_map(|e| e.keys.iter().map(String::as_str))
        .collect();
    names.push(CANONICAL_ID);
    names.dedup();
    names.join(", ")
}

fn text(p: &Profile, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{} {}", p.entity, p.canonical_id)?;
    if let Some(merged) = &p.merged_from {
        writeln!(out, "  ({merged} was merged into this profile)")?;
    }
    writeln!(out, "  as of {}, run {}", p.as_of, p.run)?;

    writeln!(out, "\nidentity keys:")?;
    for k in &p.keys {
        writeln!(out, "  {} = {}", k.key, k.value)?;
    }
    let mut kinds: Vec<&str> = Vec::new();
    for v in &p.values {
        if !kinds.contains(&v.kind.as_str()) {
            kinds.push(&v.kind);
        }
    }
    for kind in kinds {
        writeln!(out, "\n{kind}s:")?;
        for v in p.values.iter().filter(|v| v.kind == kind) {
            writeln!(out, "  {} = {}", v.name, shown(&v.value, &v.ty))?;
        }
    }
    writeln!(out, "\nsegments:")?;
    if p.segments.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for s in &p.segments {
        writeln!(out, "  {s}")?;
    }
    writeln!(out, "\njourneys:")?;
    if p.journeys.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for j in &p.journeys {
        let stage = j.stage.as_deref().unwrap_or("?");
        let step = j.step.clone().unwrap_or_else(|| format!("step {}", j.node));
        let status = j.status.as_deref().unwrap_or("unknown");
        let since = j.since.as_deref().unwrap_or("unknown");
        writeln!(
            out,
            "  {}: stage {stage}, {step} ({status} since {since})",
            j.journey
        )?;
    }
    Ok(())
}

/// A value as a person reads it: text without quotes, durations in their unit, `null`.
fn shown(value: &Json, ty: &str) -> String {
    match value {
        Json::Null => "null".into(),
        Json::String(s) => s.clone(),
        Json::Number(n) if ty == "duration" => match n.as_u64() {
            Some(ms) => stream::duration(ms),
            None => n.to_string(),
        },
        Json::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| shown(i, ""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}
