//! `cdp serve` (the registry's pages and API, see [`crate::serve`]) and `cdp keys` (the API keys
//! it checks).

use std::io::Write;
use std::path::Path;

use crate::serve::auth::{Keys, Role};

use super::{Failure, Outcome};

pub fn serve(dir: &Path, addr: &str, out: &mut dyn Write) -> Outcome {
    let addr = addr.parse().map_err(|_| {
        Failure::User(format!(
            "`{addr}` is not an address to listen on; write it like 127.0.0.1:8080"
        ))
    })?;
    if !dir.join("cdp.toml").is_file() {
        return Err(Failure::User(format!(
            "{} has no cdp.toml: `cdp serve` serves a project directory",
            dir.display()
        )));
    }
    crate::serve::serve(dir, &crate::serve::Options { addr }, out).map_err(Failure::User)
}

/// The storage directory of a project (its `cdp.toml`'s `storage`, `.cdp` by default).
fn storage(dir: &Path) -> Result<std::path::PathBuf, Failure> {
    let sources = super::load(dir)?;
    let checked = cdp_compiler::check(&sources);
    let config = checked
        .config
        .ok_or_else(|| Failure::User(format!("{} has no cdp.toml", dir.display())))?;
    Ok(dir.join(config.project.storage))
}

pub fn keys_add(dir: &Path, name: &str, role: Role, pii: bool, out: &mut dyn Write) -> Outcome {
    let storage = storage(dir)?;
    let mut keys = Keys::load(&storage).map_err(Failure::User)?;
    let key = keys.add(name, role, pii).map_err(Failure::User)?;
    keys.save(&storage).map_err(Failure::Internal)?;
    writeln!(
        out,
        "key `{name}` ({}{}): {key}\nshown this once; only its SHA-256 digest is stored",
        role.name(),
        if pii { ", may see personal data" } else { "" }
    )?;
    Ok(())
}

pub fn keys_list(dir: &Path, out: &mut dyn Write) -> Outcome {
    let keys = Keys::load(&storage(dir)?).map_err(Failure::User)?;
    if keys.keys.is_empty() {
        writeln!(
            out,
            "no keys; `cdp serve` makes a first admin key, or run `cdp keys add <name>`"
        )?;
    }
    for k in &keys.keys {
        writeln!(
            out,
            "{:<20} {:<6} {:<4} {}",
            k.name,
            k.role.name(),
            if k.pii { "pii" } else { "" },
            k.created_at
        )?;
    }
    Ok(())
}

pub fn keys_revoke(dir: &Path, name: &str, out: &mut dyn Write) -> Outcome {
    let storage = storage(dir)?;
    let mut keys = Keys::load(&storage).map_err(Failure::User)?;
    if !keys.revoke(name) {
        return Err(Failure::User(format!("no key named `{name}`")));
    }
    keys.save(&storage).map_err(Failure::Internal)?;
    writeln!(out, "revoked `{name}`")?;
    Ok(())
}
