//! Opening a sled database that may still be held for a moment.
//!
//! sled takes an exclusive file lock per database directory. Dropping the last `Db` handle does
//! not release it at once: sled's background flusher thread holds the database until it has
//! finished its last flush. Reopening the same directory right away (a server restarting in the
//! same process, a test checking what survives a reopen) can therefore meet the lock held by a
//! handle that is already gone. Another process holding it looks the same, so waiting is bounded.

use std::path::Path;
use std::time::{Duration, Instant};

/// Whether sled refused to open a database because its lock is held.
pub fn is_locked(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Opens the database at `path`, retrying for up to `patience` while its lock is held.
pub fn open_waiting(path: &Path, patience: Duration) -> sled::Result<sled::Db> {
    let started = Instant::now();
    loop {
        match sled::Config::new().path(path).open() {
            Err(e) if is_locked(&e) && started.elapsed() < patience => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
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
}
