//! API keys: who may read the registry, who may administer it, who may see personal data.
//!
//! Keys live in `<storage>/keys.json`, written by `cdp keys` (atomically) and re-read by a
//! running server when the file changes. Only a SHA-256 digest of each key is stored; the key
//! itself is shown once, when it is made. A request names its key as `Authorization: Bearer
//! <key>`, as `X-API-Key: <key>`, or (web pages, after `/login`) in the `cdp_key` cookie.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send events to the tracking API (`/v1/…`) and nothing else: a write key ships inside
    /// websites and apps, so it must not read anything.
    Write,
    /// Read definitions, statistics, runs, features and profiles.
    Read,
    /// Also manage keys.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Write => "write",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub name: String,
    pub role: Role,
    /// May see values that show personal data; without it they are masked.
    pub pii: bool,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    pub created_at: String,
}

/// The keys of a project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    pub keys: Vec<KeyEntry>,
}

/// Who is asking: the key's name, role and rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    pub pii: bool,
}

pub fn keys_path(storage: &Path) -> PathBuf {
    storage.join("keys.json")
}

pub fn digest(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random key: `cdp_` and 32 hexadecimal digits from the system's random source.
pub fn new_key() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!(
        "cdp_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

impl Keys {
    /// The keys of a storage directory (none when the file does not exist).
    pub fn load(storage: &Path) -> Result<Keys, String> {
        let path = keys_path(storage);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a keys file: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Keys::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes the keys file atomically (a temporary file, fsync, rename).
    pub fn save(&self, storage: &Path) -> Result<(), String> {
        std::fs::create_dir_all(storage).map_err(|e| format!("{}: {e}", storage.display()))?;
        let text = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        cdp_runtime::store::write_atomic(&keys_path(storage), &text).map_err(|e| e.to_string())
    }

    /// Adds a key named `name` and returns the key (shown once; only its digest is kept).
    pub fn add(&mut self, name: &str, role: Role, pii: bool) -> Result<String, String> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "`{name}` is not a key name: use letters, digits, `-` and `_`"
            ));
        }
        if self.keys.iter().any(|k| k.name == name) {
            return Err(format!("a key named `{name}` exists; revoke it first"));
        }
        let key = new_key().map_err(|e| format!("no random source: {e}"))?;
        self.keys.push(KeyEntry {
            name: name.to_string(),
            role,
            pii,
            sha256: digest(&key),
            created_at: chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        });
        Ok(key)
    }

    /// Removes the key named `name`; false when there is none.
    pub fn revoke(&mut self, name: &str) -> bool {
        let before = self.keys.len();
        self.keys.retain(|k| k.name != name);
        self.keys.len() != before
    }

    /// The caller a key belongs to.
    pub fn caller(&self, key: &str) -> Option<Caller> {
        let digest = digest(key);
        self.keys
            .iter()
            .find(|k| constant_time_eq(k.sha256.as_bytes(), digest.as_bytes()))
            .map(|k| Caller {
                name: k.name.clone(),
                role: k.role,
                pii: k.pii,
            })
    }
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key a request carries, from its headers.
pub fn request_key(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(key) = v.strip_prefix("Bearer ") {
            return Some(key.trim().to_string());
        }
    }
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("cdp_key=").map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_as_digests_and_found_by_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = Keys::default();
        let reader = keys.add("analyst", Role::Read, false).unwrap();
        let admin = keys.add("ops", Role::Admin, true).unwrap();
        assert_ne!(reader, admin);
        assert!(reader.starts_with("cdp_") && reader.len() == 36);
        assert!(keys.add("analyst", Role::Read, false).is_err());
        assert!(keys.add("bad name", Role::Read, false).is_err());
        keys.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(keys_path(dir.path())).unwrap();
        assert!(!text.contains(&reader) && text.contains(&digest(&reader)));

        let loaded = Keys::load(dir.path()).unwrap();
        assert_eq!(loaded, keys);
        let caller = loaded.caller(&reader).unwrap();
        assert_eq!(
            (caller.name.as_str(), caller.role, caller.pii),
            ("analyst", Role::Read, false)
        );
        assert_eq!(loaded.caller(&admin).unwrap().role, Role::Admin);
        assert!(loaded.caller("cdp_0000").is_none());
        let mut keys = loaded;
        assert!(keys.revoke("analyst") && !keys.revoke("analyst"));
        assert!(keys.caller(&reader).is_none());
    }
}
