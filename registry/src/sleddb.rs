//! Opening a sled database: one that may still be held for a moment, and one a killed process
//! left with a half-written snapshot file.
//!
//! sled takes an exclusive file lock per database directory. Dropping the last `Db` handle does
//! not release it at once: sled's background flusher thread holds the database until it has
//! finished its last flush. Reopening the same directory right away (a server restarting in the
//! same process, a test checking what survives a reopen) can therefore meet the lock held by a
//! handle that is already gone. Another process holding it looks the same, so waiting is bounded.
//!
//! sled 0.34 writes each snapshot of its page table to `snap.<lsn>.generating`, syncs it and
//! renames it to `snap.<lsn>`. Opening reads the last of the `snap.` files in name order, and
//! that is the `.generating` one when a process was killed before the rename: sled then refuses
//! the whole database as corrupted (sled issues #1509, #1527, #1533). The snapshot is only a
//! shortcut through the log: the complete snapshot before it and the log after that hold every
//! flushed write. So an open that fails as corrupted while such a file is there removes it and
//! opens once more.

use std::path::Path;
use std::time::{Duration, Instant};

/// Whether sled refused to open a database because its lock is held.
pub fn is_locked(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Opens (creating) the database at `path`. A snapshot file a killed process left unfinished
/// is removed if sled reports the database corrupted because of it.
pub fn open(path: &Path) -> sled::Result<sled::Db> {
    match sled::Config::new().path(path).open() {
        Err(sled::Error::Corruption { .. }) if remove_unfinished_snapshots(path)? > 0 => {
            sled::Config::new().path(path).open()
        }
        other => other,
    }
}

/// Opens the database at `path` ([`open`]), retrying for up to `patience` while its lock is
/// held.
pub fn open_waiting(path: &Path, patience: Duration) -> sled::Result<sled::Db> {
    let started = Instant::now();
    loop {
        match open(path) {
            Err(e) if is_locked(&e) && started.elapsed() < patience => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Removes the `snap.*.generating` files in `path`; how many there were. Only called after
/// sled failed to open the database, so no process holds it and none is writing one.
fn remove_unfinished_snapshots(path: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_database_is_waited_for_and_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let held = open_waiting(dir.path(), Duration::ZERO).unwrap();
        let started = Instant::now();
        let e = open_waiting(dir.path(), Duration::from_millis(200)).unwrap_err();
        assert!(is_locked(&e), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(held);
        // Released by the flusher soon after the drop; reopening waits for it.
        let db = open_waiting(dir.path(), Duration::from_secs(10)).unwrap();
        db.insert("k", "v").unwrap();
    }

    /// What a process killed between writing a snapshot and renaming it leaves: every write
    /// flushed before is there after the next open, and the open after that finds no trace.
    #[test]
    fn a_snapshot_left_unfinished_by_a_killed_process_is_dropped_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open(dir.path()).unwrap();
            for i in 0..2_000u32 {
                db.insert(i.to_be_bytes(), vec![7u8; 100]).unwrap();
            }
            db.flush().unwrap();
        }
        // sled writes its snapshot when it opens a database and finds the log moved on.
        drop(open_waiting(dir.path(), Duration::from_secs(10)).unwrap());
        let snapshots = || -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("snap."))
                .collect();
            names.sort();
            names
        };
        let complete = snapshots();
        assert!(!complete.is_empty(), "sled wrote no snapshot: {complete:?}");
        // Half of a snapshot at a later log position, as the kill leaves it.
        let bytes = std::fs::read(dir.path().join(&complete[0])).unwrap();
        let unfinished = dir.path().join("snap.7FFFFFFFFFFFFFFF.generating");
        std::fs::write(&unfinished, &bytes[..bytes.len() / 2]).unwrap();
        let refused = sled::Config::new().path(dir.path()).open().map(|_| ());
        assert!(
            matches!(refused, Err(sled::Error::Corruption { .. })),
            "sled itself read the unfinished snapshot: {refused:?}"
        );
        let db = open_waiting(dir.path(), Duration::from_secs(10)).unwrap();
        assert_eq!(db.len(), 2_000);
        assert_eq!(db.get(1_999u32.to_be_bytes()).unwrap().unwrap().len(), 100);
        assert!(!unfinished.exists());
        db.insert("after", "x").unwrap();
        db.flush().unwrap();
        drop(db);
        let db = open_waiting(dir.path(), Duration::from_secs(10)).unwrap();
        assert_eq!(db.len(), 2_001);
    }
}
