//! `cdp stream --from <file.jsonl> [dir]`: replays a file of Segment-format events (one JSON
//! message with its `type` per line, as the tracking API's `/v1/batch` takes them) into the
//! project's durable event log, with the same checks and `messageId` de-duplication as the
//! server. A line that is not a valid event is reported with its line number and reason and
//! not written; the others are. Prints how many rows of which sources the good events are
//! (per the `[ingest.<source>]` mappings of cdp.toml). Exits 1 when any line was refused.

use std::io::{BufRead, Write};
use std::path::Path;

use cdp_runtime::tracking::{Accepted, Ingest, Refused};
use serde_json::Value;

use super::{Failure, Outcome};

/// Events written per durable append.
const CHUNK: usize = 500;

pub fn run(dir: &Path, from: &Path, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let config = &super::project_config(dir, "stream", "to know where the project stores events")?;
    let storage = dir.join(&config.project.storage);
    let ingest = Ingest::open(&storage).map_err(Failure::User)?;
    let file =
        std::fs::File::open(from).map_err(|e| Failure::User(format!("{}: {e}", from.display())))?;
    let received_at = chrono::Utc::now();
    let mut total = Accepted::default();
    let mut refused = 0usize;
    let mut per_source: std::collections::BTreeMap<String, usize> = Default::default();
    let mut chunk: Vec<(usize, Value)> = Vec::new();
    let flush = |chunk: &mut Vec<(usize, Value)>,
                 total: &mut Accepted,
                 refused: &mut usize,
                 per_source: &mut std::collections::BTreeMap<String, usize>,
                 err: &mut dyn Write|
     -> Outcome {
        // Each line is checked alone first, so that one bad line refuses only itself.
        let mut good = Vec::with_capacity(chunk.len());
        for (line, message) in chunk.drain(..) {
            match cdp_runtime::tracking::normalize(None, &message, received_at, &mut || {
                String::new()
            }) {
                Ok(event) => {
                    for (source, _) in cdp_runtime::tracking::rows(&config.ingest, &event) {
                        *per_source.entry(source).or_default() += 1;
                    }
                    good.push(message)
                }
                Err(reason) => {
                    *refused += 1;
                    writeln!(err, "{}:{line}: {reason}", from.display())?;
                }
            }
        }
        match ingest.accept(None, &good, received_at) {
            Ok(a) => {
                total.accepted += a.accepted;
                total.duplicates += a.duplicates;
                Ok(())
            }
            Err(Refused::Storage(m)) | Err(Refused::InFlight(m)) => Err(Failure::User(m)),
            Err(e) => Err(Failure::Internal(format!(
                "an event checked alone was refused in its chunk: {e}"
            ))),
        }
    };
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|e| Failure::User(format!("{}:{number}: {e}", from.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        if line.len() > cdp_runtime::tracking::MAX_EVENT_BYTES {
            refused += 1;
            writeln!(
                err,
                "{}:{number}: an event of {} bytes is over the limit of 32 KB",
                from.display(),
                line.len()
            )?;
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(message) => chunk.push((number, message)),
            Err(e) => {
                refused += 1;
                writeln!(err, "{}:{number}: not JSON: {e}", from.display())?;
            }
        }
        if chunk.len() == CHUNK {
            flush(&mut chunk, &mut total, &mut refused, &mut per_source, err)?;
        }
    }
    flush(&mut chunk, &mut total, &mut refused, &mut per_source, err)?;
    writeln!(
        out,
        "{}: {} events written to {}, {} duplicates of logged messageIds, {} refused",
        from.display(),
        total.accepted,
        cdp_runtime::eventlog::EventLog::path(&storage).display(),
        total.duplicates,
        refused
    )?;
    if per_source.is_empty() {
        writeln!(
            out,
            "no event is a row of a source: map them with [ingest.<source>] tables in cdp.toml"
        )?;
    } else {
        let rows: Vec<String> = per_source
            .iter()
            .map(|(source, n)| format!("{source} {n}"))
            .collect();
        writeln!(out, "rows of sources: {}", rows.join(", "))?;
    }
    replay(dir, config, &ingest, out, err)?;
    if refused > 0 {
        return Err(Failure::Reported);
    }
    Ok(())
}

/// Runs the whole log through the streaming operators (the graph of `cdp plan --streaming`)
/// and prints what they hold at the log's clock: profiles, segment sizes, transitions, late
/// rows and refused rows, and the operators' throughput and state per profile.
fn replay(
    dir: &Path,
    config: &cdp_compiler::config::ProjectConfig,
    ingest: &Ingest,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Outcome {
    use cdp_runtime::stream::{feed::Feed, Options, StreamEngine};
    let (project, _) = super::compile::lowered(dir, err)?;
    let events: Vec<Value> = ingest
        .log()
        .read_from(0)
        .map_err(Failure::User)?
        .into_iter()
        .map(|(_, bytes)| serde_json::from_slice(&bytes))
        .collect::<Result<_, _>>()
        .map_err(|e| {
            Failure::User(format!(
                "the event log holds a record that is not JSON: {e}"
            ))
        })?;
    let options = Options {
        allowed_lateness_ms: config.stream.allowed_lateness_ms().map_err(Failure::User)?,
    };
    let mut engine = StreamEngine::new(std::sync::Arc::new(project), options);
    let feed = Feed::new(config.ingest.clone());
    let done = feed.replay(&mut engine, &events);
    let transitions = engine.take_transitions();
    let seconds = done.elapsed.as_secs_f64().max(1e-9);
    writeln!(
        out,
        "operators: {} events ({} rows) of the log in {:.3} s, {:.0} events/s",
        done.events,
        done.rows,
        seconds,
        done.events as f64 / seconds
    )?;
    let counts = engine.counts();
    let (bytes, profiles) = engine.state_bytes();
    let project = engine.project();
    for (e, entity) in project.entities.iter().enumerate() {
        let entity_id = cdp_compiler::ir::EntityId(e as u32);
        // Values are computed as they are read: once per profile.
        let values: Vec<_> = engine.profiles(entity_id).map(|(_, v)| v).collect();
        let n = values.len();
        let mut sizes = Vec::new();
        for (s, segment) in project.segments.iter().enumerate() {
            if segment.entity != entity_id {
                continue;
            }
            let members = values
                .iter()
                .filter(|p| {
                    matches!(
                        p.segments.get(s),
                        Some(cdp_runtime::stream::Value::Bool(true))
                    )
                })
                .count();
            sizes.push(format!("{} {members}", segment.meta.name));
        }
        writeln!(
            out,
            "{}: {n} profiles; segments: {}",
            entity.meta.name,
            sizes.join(", ")
        )?;
    }
    let entered = transitions.iter().filter(|t| t.entered).count();
    writeln!(
        out,
        "transitions: {entered} entries, {} exits; {} merges; late rows kept aside: {}; rows \
         without a key: {}; rows without a time: {}",
        transitions.len() - entered,
        counts.merges,
        counts.late,
        counts.without_key,
        counts.untimed
    )?;
    writeln!(
        out,
        "state: {} bytes, {} per profile",
        bytes,
        bytes / profiles.max(1)
    )?;
    for (id, reason) in done.refused.iter().take(10) {
        writeln!(err, "event {id}: row refused: {reason}")?;
    }
    if done.refused.len() > 10 {
        writeln!(err, "... {} more rows refused", done.refused.len() - 10)?;
    }
    Ok(())
}
