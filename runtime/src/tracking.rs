//! Events in the shape of Segment's tracking API (identify, track, page, screen, group, alias),
//! checked, normalized and written to the durable [`EventLog`] exactly once per `messageId`.
//!
//! Normalizing follows Segment's semantics: `userId` or `anonymousId` is required; `track` needs
//! `event`, `group` needs `groupId`, `alias` needs `previousId` and `userId`; `receivedAt` is set
//! by us; when the sender gives both `timestamp` and `sentAt`, its clock skew is corrected
//! (`timestamp = receivedAt - (sentAt - originalTimestamp)`), otherwise `timestamp` is taken as
//! given, or `receivedAt` when absent. A message without `messageId` gets one.
//!
//! [`Ingest::accept`] checks a whole request before anything is written: a bad event refuses the
//! request (400, with the event's index), so a client never sees half a batch kept.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::eventlog::EventLog;

/// Segment's limits: one event, and one batch request.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

pub const KINDS: [&str; 6] = ["identify", "track", "page", "screen", "group", "alias"];

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// The request is malformed (400): what and, in a batch, which event.
    Invalid(String),
    /// Over a size limit (413).
    TooLarge(String),
    /// An event with the same messageId is being written by another request (503: retry).
    InFlight(String),
    /// The log could not be written (500).
    Storage(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Invalid(m)
            | Refused::TooLarge(m)
            | Refused::InFlight(m)
            | Refused::Storage(m) => f.write_str(m),
        }
    }
}

/// What a request did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Accepted {
    pub accepted: usize,
    /// Events whose messageId the log holds already: acknowledged, not written again.
    pub duplicates: usize,
}

fn time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn text_field<'a>(m: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("`{name}` must be a string, not {other}")),
    }
}

/// An id field: Segment's libraries send strings; numbers are accepted as their text.
fn id_field(m: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match m.get(name) {
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        _ => Ok(text_field(m, name)?.map(str::to_string)),
    }
}

fn object_field(m: &Map<String, Value>, name: &str) -> Result<Value, String> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(json!({})),
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(other) => Err(format!("`{name}` must be an object, not {other}")),
    }
}

/// Checks one message and returns it normalized. `kind`: the endpoint's type, or `None` in a
/// batch (then the message's `type` says it).
/// The length of `value` as compact JSON, counted without building the text.
fn encoded_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, nor can serializing a JSON value.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

pub fn normalize(
    kind: Option<&str>,
    message: &Value,
    received_at: DateTime<Utc>,
    next_id: &mut dyn FnMut() -> String,
) -> Result<Value, String> {
    let Value::Object(m) = message else {
        return Err(format!("an event is a JSON object, not {message}"));
    };
    let kind = match (kind, text_field(m, "type")?) {
        (Some(k), _) => k.to_string(),
        (None, Some(t)) if KINDS.contains(&t) => t.to_string(),
        (None, Some(t)) => {
            return Err(format!("unknown type `{t}` (one of: {})", KINDS.join(", ")))
        }
        (None, None) => return Err("`type` is missing".to_string()),
    };
    let user_id = id_field(m, "userId")?;
    let anonymous_id = id_field(m, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err("`userId` or `anonymousId` is required".to_string());
    }
    let mut out = Map::new();
    out.insert("type".into(), json!(kind));
    match kind.as_str() {
        "track" => {
            let event = text_field(m, "event")?.ok_or("a track call needs `event`")?;
            out.insert("event".into(), json!(event));
            out.insert("properties".into(), object_field(m, "properties")?);
        }
        "page" | "screen" => {
            if let Some(name) = text_field(m, "name")? {
                out.insert("name".into(), json!(name));
            }
            if let Some(category) = text_field(m, "category")? {
                out.insert("category".into(), json!(category));
            }
            out.insert("properties".into(), object_field(m, "properties")?);
        }
        "identify" => {
            out.insert("traits".into(), object_field(m, "traits")?);
        }
        "group" => {
            let group = id_field(m, "groupId")?.ok_or("a group call needs `groupId`")?;
            out.insert("groupId".into(), json!(group));
            out.insert("traits".into(), object_field(m, "traits")?);
        }
        "alias" => {
            let previous = id_field(m, "previousId")?.ok_or("an alias call needs `previousId`")?;
            if user_id.is_none() {
                return Err("an alias call needs `userId`".to_string());
            }
            out.insert("previousId".into(), json!(previous));
        }
        _ => unreachable!("kinds are checked above"),
    }
    out.insert("userId".into(), json!(user_id));
    out.insert("anonymousId".into(), json!(anonymous_id));
    out.insert("context".into(), object_field(m, "context")?);
    let parse = |name: &str| -> Result<Option<DateTime<Utc>>, String> {
        match text_field(m, name)? {
            None => Ok(None),
            Some(t) => time(t)
                .map(Some)
                .ok_or_else(|| format!("`{name}` is not an ISO-8601 time with a zone: `{t}`")),
        }
    };
    let (original, sent_at) = (parse("timestamp")?, parse("sentAt")?);
    let timestamp = match (original, sent_at) {
        (Some(t), Some(sent)) => received_at - (sent - t),
        (Some(t), None) => t,
        (None, _) => received_at,
    };
    out.insert("timestamp".into(), json!(stamp(timestamp)));
    if let Some(t) = original {
        out.insert("originalTimestamp".into(), json!(stamp(t)));
    }
    if let Some(t) = sent_at {
        out.insert("sentAt".into(), json!(stamp(t)));
    }
    out.insert("receivedAt".into(), json!(stamp(received_at)));
    let message_id = id_field(m, "messageId")?.unwrap_or_else(next_id);
    out.insert("messageId".into(), json!(message_id));
    Ok(Value::Object(out))
}

/// The rows an event becomes: one per source whose `[ingest.<source>]` mapping takes it, with
/// every mapped column (null where the event lacks the field).
pub fn rows(
    ingest: &std::collections::BTreeMap<String, cdp_compiler::config::IngestMapping>,
    event: &Value,
) -> Vec<(String, Map<String, Value>)> {
    let call = event["type"].as_str().unwrap_or_default();
    let name = event["event"].as_str();
    ingest
        .iter()
        .filter(|(_, m)| m.takes(call, name))
        .map(|(source, m)| {
            let row = m
                .columns
                .iter()
                .map(|(column, path)| {
                    let value = path
                        .split('.')
                        .try_fold(event, |v, part| v.get(part))
                        .cloned()
                        .unwrap_or(Value::Null);
                    (column.clone(), value)
                })
                .collect();
            (source.clone(), row)
        })
        .collect()
}

/// The ingest side of the stream: the log and the messageIds it holds.
pub struct Ingest {
    log: EventLog,
    /// messageId → written (true) or being written (false).
    seen: Mutex<HashMap<String, bool>>,
    counter: std::sync::atomic::AtomicU64,
}

impl Ingest {
    /// Opens the project's log and reads the messageIds it holds.
    pub fn open(storage: &Path) -> Result<Ingest, String> {
        let log = EventLog::open(&EventLog::path(storage))?;
        let mut seen = HashMap::new();
        for (_, bytes) in log.read_from(0)? {
            let event: Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("the event log holds a record that is not JSON: {e}"))?;
            if let Some(id) = event["messageId"].as_str() {
                seen.insert(id.to_string(), true);
            }
        }
        Ok(Ingest {
            log,
            seen: Mutex::new(seen),
            counter: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// How many distinct messages the log holds.
    pub fn messages(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Checks every message of a request, then writes the new ones durably. `kind`: the
    /// endpoint's type, `None` for a batch.
    pub fn accept(
        &self,
        kind: Option<&str>,
        messages: &[Value],
        received_at: DateTime<Utc>,
    ) -> Result<Accepted, Refused> {
        let mut next_id = || {
            let n = self
                .counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!("cdp-{}-{n}", received_at.timestamp_nanos_opt().unwrap_or(0))
        };
        let mut events = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let at = |e: String| match kind {
                None => format!("batch[{i}]: {e}"),
                Some(_) => e,
            };
            let size = encoded_len(m);
            if size > MAX_EVENT_BYTES {
                return Err(Refused::TooLarge(at(format!(
                    "an event of {size} bytes is over the limit of {MAX_EVENT_BYTES} (32 KB)"
                ))));
            }
            let event = normalize(kind, m, received_at, &mut next_id)
                .map_err(|e| Refused::Invalid(at(e)))?;
            events.push(event);
        }
        // Claim the new messageIds; the same id twice in one request is written once.
        let mut fresh = Vec::new();
        let mut duplicates = 0;
        {
            let mut seen = self
                .seen
                .lock()
                .map_err(|_| Refused::Storage("the messageId set was poisoned".into()))?;
            for event in events {
                let id = event["messageId"].as_str().unwrap_or_default().to_string();
                match seen.get(&id) {
                    Some(true) => duplicates += 1,
                    Some(false) if !fresh.iter().any(|(f, _)| f == &id) => {
                        return Err(Refused::InFlight(format!(
                            "an event with messageId `{id}` is being written by another \
                             request: retry"
                        )))
                    }
                    Some(false) => duplicates += 1,
                    None => {
                        seen.insert(id.clone(), false);
                        fresh.push((id, event));
                    }
                }
            }
        }
        let payloads: Vec<Vec<u8>> = fresh
            .iter()
            .map(|(_, e)| serde_json::to_vec(e).unwrap_or_default())
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let written = if refs.is_empty() {
            Ok(0)
        } else {
            self.log.append(&refs)
        };
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| Refused::Storage("the messageId set was poisoned".into()))?;
        match written {
            Ok(_) => {
                for (id, _) in &fresh {
                    seen.insert(id.clone(), true);
                }
                Ok(Accepted {
                    accepted: fresh.len(),
                    duplicates,
                })
            }
            Err(e) => {
                for (id, _) in &fresh {
                    seen.remove(id);
                }
                Err(Refused::Storage(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        time(text).unwrap()
    }

    fn norm(kind: Option<&str>, m: Value) -> Result<Value, String> {
        normalize(kind, &m, at("2024-06-01T12:00:10Z"), &mut || {
            "generated".into()
        })
    }

    #[test]
    fn an_events_size_is_its_compact_json_length() {
        for v in [
            json!({"userId": "Ä", "properties": {"x": [1, 2.5, null, "q\"uote"]}}),
            json!({}),
            json!({"a": "\u{1F600}\n"}),
        ] {
            assert_eq!(
                encoded_len(&v),
                serde_json::to_vec(&v).unwrap().len(),
                "{v}"
            );
        }
    }

    #[test]
    fn a_track_call_is_normalized_with_the_senders_clock_skew_corrected() {
        let e = norm(
            Some("track"),
            json!({"userId": "C0001", "event": "Order Completed",
                   "properties": {"amount": 12.5}, "messageId": "m-1",
                   "timestamp": "2024-06-01T11:59:00Z", "sentAt": "2024-06-01T12:00:00Z"}),
        )
        .unwrap();
        assert_eq!(e["event"], "Order Completed");
        assert_eq!(e["properties"]["amount"], 12.5);
        // Sent 60 s after it happened, by a clock that is 10 s behind ours.
        assert_eq!(e["timestamp"], "2024-06-01T11:59:10.000Z");
        assert_eq!(e["originalTimestamp"], "2024-06-01T11:59:00.000Z");
        assert_eq!(e["receivedAt"], "2024-06-01T12:00:10.000Z");
        assert_eq!(e["anonymousId"], Value::Null);
        assert_eq!(e["context"], json!({}));
    }

    #[test]
    fn each_call_type_needs_its_fields() {
        let cases = [
            (Some("track"), json!({"userId": "u"}), "needs `event`"),
            (
                Some("identify"),
                json!({"traits": {}}),
                "`userId` or `anonymousId`",
            ),
            (Some("group"), json!({"userId": "u"}), "needs `groupId`"),
            (
                Some("alias"),
                json!({"anonymousId": "a", "previousId": "p"}),
                "needs `userId`",
            ),
            (Some("alias"), json!({"userId": "u"}), "needs `previousId`"),
            (None, json!({"userId": "u"}), "`type` is missing"),
            (
                None,
                json!({"type": "purchase", "userId": "u"}),
                "unknown type `purchase`",
            ),
            (
                Some("page"),
                json!({"userId": "u", "properties": [1]}),
                "must be an object",
            ),
            (
                Some("track"),
                json!({"userId": "u", "event": "E", "timestamp": "yesterday"}),
                "not an ISO-8601 time",
            ),
            (Some("identify"), json!(["userId"]), "a JSON object"),
        ];
        for (kind, message, expected) in cases {
            let error = norm(kind, message.clone()).expect_err(&message.to_string());
            assert!(error.contains(expected), "{message}: {error}");
        }
        let page = norm(
            None,
            json!({"type": "page", "anonymousId": 42, "name": "Home"}),
        )
        .unwrap();
        assert_eq!(page["anonymousId"], "42");
        assert_eq!(page["messageId"], "generated");
        assert_eq!(
            page["timestamp"], "2024-06-01T12:00:10.000Z",
            "receivedAt when absent"
        );
    }

    #[test]
    fn a_message_id_is_written_once_across_requests_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let now = at("2024-06-01T12:00:00Z");
        let event =
            |id: &str| json!({"type": "track", "userId": "u", "event": "E", "messageId": id});
        {
            let ingest = Ingest::open(dir.path()).unwrap();
            let first = ingest
                .accept(None, &[event("a"), event("b"), event("a")], now)
                .unwrap();
            assert_eq!(
                first,
                Accepted {
                    accepted: 2,
                    duplicates: 1
                }
            );
            let again = ingest.accept(None, &[event("b")], now).unwrap();
            assert_eq!(
                again,
                Accepted {
                    accepted: 0,
                    duplicates: 1
                }
            );
        }
        let ingest = Ingest::open(dir.path()).unwrap();
        assert_eq!(ingest.messages(), 2);
        let after = ingest.accept(None, &[event("a"), event("c")], now).unwrap();
        assert_eq!(
            after,
            Accepted {
                accepted: 1,
                duplicates: 1
            }
        );
        assert_eq!(ingest.log().read_from(0).unwrap().len(), 3);
    }

    #[test]
    fn events_become_rows_of_the_sources_that_map_them() {
        let toml = r#"
            [project]
            name = "x"
            [ingest.orders]
            calls = ["track"]
            events = ["Order Completed"]
            [ingest.orders.columns]
            order_id = "properties.order_id"
            order_ts = "timestamp"
            amount = "properties.total"
            country = "context.location.country"
            [ingest.visits]
            calls = ["page", "screen"]
            [ingest.visits.columns]
            cookie = "anonymousId"
            kind = "type"
        "#;
        let config: cdp_compiler::config::ProjectConfig = toml::from_str(toml).unwrap();
        let order = norm(
            Some("track"),
            json!({"userId": "C1", "event": "Order Completed", "messageId": "m",
                   "properties": {"order_id": "O-1", "total": 20.5},
                   "context": {"location": {"country": "DE"}}}),
        )
        .unwrap();
        let rows = rows(&config.ingest, &order);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "orders");
        assert_eq!(
            Value::Object(rows[0].1.clone()),
            json!({"order_id": "O-1", "order_ts": "2024-06-01T12:00:10.000Z", "amount": 20.5,
                   "country": "DE"})
        );
        let other = norm(
            Some("track"),
            json!({"userId": "C1", "event": "Cart Viewed"}),
        )
        .unwrap();
        assert!(
            super::rows(&config.ingest, &other).is_empty(),
            "not a taken event name"
        );
        let page = norm(Some("page"), json!({"anonymousId": "k"})).unwrap();
        let rows = super::rows(&config.ingest, &page);
        assert_eq!(rows[0].0, "visits");
        assert_eq!(
            Value::Object(rows[0].1.clone()),
            json!({"cookie": "k", "kind": "page"})
        );
    }

    #[test]
    fn a_bad_event_refuses_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let ingest = Ingest::open(dir.path()).unwrap();
        let now = at("2024-06-01T12:00:00Z");
        let batch = [
            json!({"type": "identify", "userId": "u", "messageId": "ok"}),
            json!({"type": "track", "userId": "u", "messageId": "bad"}),
        ];
        let refused = ingest.accept(None, &batch, now).unwrap_err();
        assert_eq!(
            refused,
            Refused::Invalid("batch[1]: a track call needs `event`".into())
        );
        assert!(ingest.log().is_empty());
        let big = json!({"type": "identify", "userId": "u", "traits": {"x": "y".repeat(40_000)}});
        assert!(matches!(
            ingest.accept(None, &[big], now),
            Err(Refused::TooLarge(m)) if m.starts_with("batch[0]: an event of")
        ));
    }
}
