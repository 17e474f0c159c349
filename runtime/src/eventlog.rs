//! The durable event log: what the ingest API acknowledged, in arrival order.
//!
//! One append-only file, `<storage>/stream/events.log`, of records
//! `[length: u32 LE][crc32 of the payload: u32 LE][payload]`. [`EventLog::append`] returns only
//! once its records are on disk (`fsync`), so a 200 sent after it is never lost to a crash.
//! Concurrent appends share fsyncs (group commit): a caller whose records were written before
//! another caller's fsync started needs no fsync of its own.
//!
//! Opening checks every record: a torn tail (a crash in the middle of a write: a record longer
//! than the file, or whose checksum does not match, with nothing valid after it) is cut off, as
//! it was never acknowledged. A bad record followed by good ones is not a torn write: opening
//! refuses the file rather than lose acknowledged events.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The largest payload a record may have (the ingest API's limits are far below it).
pub const MAX_RECORD: usize = 16 << 20;
const HEADER: usize = 8;

pub type LogResult<T> = std::result::Result<T, String>;

/// What opening found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub records: u64,
    /// Bytes of a torn last write that were cut off.
    pub truncated_bytes: u64,
}

struct Writer {
    file: File,
    /// Bytes written (not necessarily synced).
    end: u64,
    records: u64,
}

pub struct EventLog {
    path: PathBuf,
    writer: Mutex<Writer>,
    /// Bytes known to be on disk; held while syncing, so that waiting callers find their
    /// records synced by the fsync they waited for.
    synced: Mutex<u64>,
    recovery: Recovery,
}

fn io(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

fn lock<T>(m: &Mutex<T>) -> LogResult<MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| "the event log's lock was poisoned by a panic".to_string())
}

impl EventLog {
    pub fn path(storage: &Path) -> PathBuf {
        storage.join("stream").join("events.log")
    }

    /// Opens (creating) the log, cutting off a torn last record.
    pub fn open(path: &Path) -> LogResult<EventLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        // One writer at a time: a second process appending would not see the first's ids.
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => io(
                path,
                "in use by another process (a running `cdp serve`?): stop it or send the events \
                 to its ingest API",
            ),
            std::fs::TryLockError::Error(e) => io(path, e),
        })?;
        let len = file.metadata().map_err(|e| io(path, e))?.len();
        let mut bytes = Vec::with_capacity(len as usize);
        file.seek(SeekFrom::Start(0)).map_err(|e| io(path, e))?;
        file.read_to_end(&mut bytes).map_err(|e| io(path, e))?;
        let mut records = 0;
        let mut at = 0usize;
        let valid_end = loop {
            match record_at(&bytes, at) {
                Some(payload) => {
                    records += 1;
                    at += HEADER + payload.len();
                }
                None => break at,
            }
        };
        if valid_end < bytes.len() && has_record_after(&bytes, valid_end) {
            return Err(io(
                path,
                format!(
                    "a damaged record at byte {valid_end} is followed by valid ones: not a torn \
                     write; the file needs a look before the server may append to it"
                ),
            ));
        }
        let truncated_bytes = (bytes.len() - valid_end) as u64;
        if truncated_bytes > 0 {
            file.set_len(valid_end as u64).map_err(|e| io(path, e))?;
            file.sync_all().map_err(|e| io(path, e))?;
        }
        Ok(EventLog {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                file,
                end: valid_end as u64,
                records,
            }),
            synced: Mutex::new(valid_end as u64),
            recovery: Recovery {
                records,
                truncated_bytes,
            },
        })
    }

    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Records in the log.
    pub fn len(&self) -> u64 {
        self.writer.lock().map(|w| w.records).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the payloads as consecutive records and returns, once they are on disk, the
    /// offset just past them.
    pub fn append(&self, payloads: &[&[u8]]) -> LogResult<u64> {
        let mut buffer = Vec::new();
        for p in payloads {
            if p.is_empty() {
                return Err("an empty record cannot be logged".to_string());
            }
            if p.len() > MAX_RECORD {
                return Err(format!(
                    "a record of {} bytes is over the log's limit of {MAX_RECORD}",
                    p.len()
                ));
            }
            buffer.extend_from_slice(&(p.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&crc32(p).to_le_bytes());
            buffer.extend_from_slice(p);
        }
        let end = {
            let mut w = lock(&self.writer)?;
            if let Err(e) = w.file.write_all(&buffer) {
                // A partial write would be a torn record in the middle: cut it off now.
                let end = w.end;
                let _ = w.file.set_len(end);
                return Err(io(&self.path, e));
            }
            w.end += buffer.len() as u64;
            w.records += payloads.len() as u64;
            w.end
        };
        let mut synced = lock(&self.synced)?;
        if *synced < end {
            // Everything written up to now is covered by this fsync, other callers' too.
            let (file, written) = {
                let w = lock(&self.writer)?;
                (w.file.try_clone().map_err(|e| io(&self.path, e))?, w.end)
            };
            file.sync_data().map_err(|e| io(&self.path, e))?;
            *synced = written;
        }
        Ok(end)
    }

    /// The records from byte `offset` (0, or an offset [`append`](Self::append) returned) to the
    /// end, each with the offset just past it.
    pub fn read_from(&self, offset: u64) -> LogResult<Vec<(u64, Vec<u8>)>> {
        let synced = *lock(&self.synced)?;
        let mut file = File::open(&self.path).map_err(|e| io(&self.path, e))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io(&self.path, e))?;
        let mut bytes = Vec::new();
        file.take(synced.saturating_sub(offset))
            .read_to_end(&mut bytes)
            .map_err(|e| io(&self.path, e))?;
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(payload) = record_at(&bytes, at) {
            at += HEADER + payload.len();
            out.push((offset + at as u64, payload.to_vec()));
        }
        if at != bytes.len() {
            return Err(io(
                &self.path,
                format!("no record starts at byte {}", offset + at as u64),
            ));
        }
        Ok(out)
    }
}

/// Every whole record of the log at `path`, without taking it: for readers in other processes
/// (`cdp run` while the server appends). A record being written is not read; no file, no records.
pub fn read_all(path: &Path) -> LogResult<Vec<Vec<u8>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path, e)),
    };
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(payload) = record_at(&bytes, at) {
        at += HEADER + payload.len();
        out.push(payload.to_vec());
    }
    Ok(out)
}

/// The payload of a whole, intact record starting at `at`.
fn record_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    (crc32(payload) == crc && len > 0).then_some(payload)
}

/// Whether a valid record starts anywhere after `from` (a damaged record in the middle).
fn has_record_after(bytes: &[u8], from: usize) -> bool {
    (from + 1..bytes.len().saturating_sub(HEADER)).any(|at| {
        record_at(bytes, at).is_some_and(|p| at + HEADER + p.len() <= bytes.len() && p.len() >= 16)
    })
}

/// CRC-32 (IEEE), bitwise: records are small and the fsync dominates.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in bytes {
        crc = TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn crc32_is_the_ieee_checksum() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_read_back_in_order_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stream/events.log");
        let log = EventLog::open(&path).unwrap();
        let first = log.append(&[b"one", b"two"]).unwrap();
        log.append(&[b"three"]).unwrap();
        drop(log);
        let log = EventLog::open(&path).unwrap();
        assert_eq!(log.recovery().records, 3);
        let all: Vec<Vec<u8>> = log.read_from(0).unwrap().into_iter().map(|r| r.1).collect();
        assert_eq!(all, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        let second = EventLog::open(&path).err().expect("one writer at a time");
        assert!(second.contains("in use by another process"), "{second}");
        let rest = log.read_from(first).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].1, b"three");
        assert!(log.read_from(first + 1).is_err(), "not a record boundary");
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let log = EventLog::open(&path).unwrap();
        let end = log.append(&[b"acknowledged event"]).unwrap();
        drop(log);
        // A crash in the middle of the next write: a header and half a payload.
        let mut torn = Vec::new();
        torn.extend_from_slice(&40u32.to_le_bytes());
        torn.extend_from_slice(&crc32(&[7; 40]).to_le_bytes());
        torn.extend_from_slice(&[7; 20]);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&torn)
            .unwrap();
        let log = EventLog::open(&path).unwrap();
        assert_eq!(
            log.recovery(),
            &Recovery {
                records: 1,
                truncated_bytes: 28
            }
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
        log.append(&[b"next"]).unwrap();
        assert_eq!(log.read_from(0).unwrap().len(), 2);
    }

    #[test]
    fn damage_before_valid_records_is_refused_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let log = EventLog::open(&path).unwrap();
        log.append(&[b"first event of the log", b"second event of the log"])
            .unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 3] ^= 0xFF; // inside the first payload
        std::fs::write(&path, &bytes).unwrap();
        let error = EventLog::open(&path).err().expect("refused");
        assert!(error.contains("followed by valid ones"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing cut");
    }

    #[test]
    fn concurrent_appends_all_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let log = Arc::new(EventLog::open(&path).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let text = format!("thread {t} event {i}");
                        log.append(&[text.as_bytes()]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(log);
        let log = EventLog::open(&path).unwrap();
        let mut seen: Vec<String> = log
            .read_from(0)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r.1).unwrap())
            .collect();
        assert_eq!(seen.len(), 400);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 400);
    }
}
