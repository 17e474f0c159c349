//! `cdp.toml`: the project's name, storage directory, default as-of time and source bindings.

use std::collections::BTreeMap;

use cdp_grammar::{Diagnostic, FileId, SourceMap, Span};
use serde::{Deserialize, Serialize};

/// The parsed `cdp.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub project: ProjectSection,
    /// Source name → where its data lives.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceBinding>,
    /// Source name → which tracking-API events become its rows, and how.
    #[serde(default)]
    pub ingest: BTreeMap<String, IngestMapping>,
    /// The streaming runtime's settings.
    #[serde(default)]
    pub stream: StreamSection,
}

/// `[stream]`: how the streaming runtime treats event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSection {
    /// How far behind the newest event time an event may arrive and still count: a number
    /// with a unit, `30s`, `15m`, `1h`, `2d` (default `1h`). Later events are kept aside.
    #[serde(default = "default_lateness")]
    pub allowed_lateness: String,
    /// How often the server writes the operators' state to a checkpoint, so that a restart
    /// replays only the events logged after it (default `1m`; `0` after every batch of events).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: String,
}

impl Default for StreamSection {
    fn default() -> StreamSection {
        StreamSection {
            allowed_lateness: default_lateness(),
            checkpoint_interval: default_checkpoint_interval(),
        }
    }
}

fn default_lateness() -> String {
    "1h".to_string()
}

fn default_checkpoint_interval() -> String {
    "1m".to_string()
}

impl StreamSection {
    /// The allowed lateness in milliseconds, or why the setting is not a duration.
    pub fn allowed_lateness_ms(&self) -> Result<u64, String> {
        parse_duration_ms(&self.allowed_lateness).ok_or_else(|| {
            format!(
                "[stream] allowed_lateness = \"{}\" is not a duration: write a number and a \
                 unit, as \"30s\", \"15m\", \"1h\" or \"2d\"",
                self.allowed_lateness
            )
        })
    }

    /// The checkpoint interval in milliseconds, or why the setting is not a duration.
    pub fn checkpoint_interval_ms(&self) -> Result<u64, String> {
        parse_duration_ms(&self.checkpoint_interval).ok_or_else(|| {
            format!(
                "[stream] checkpoint_interval = \"{}\" is not a duration: write a number and \
                 a unit, as \"30s\", \"5m\" or \"1h\" (\"0\" checkpoints after every batch)",
                self.checkpoint_interval
            )
        })
    }
}

/// `30s`, `15m`, `1h`, `2d`, `0` → milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().ok()?;
    let unit = match t[digits..].trim() {
        "" if n == 0 => 0,
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// The tracking API's call types.
pub const CALLS: [&str; 6] = ["identify", "track", "page", "screen", "group", "alias"];

/// The fields of a tracking-API event a column may read: a name, or a path below one of the
/// objects (`properties.amount`, `context.page.url`).
pub const EVENT_FIELDS: [&str; 11] = [
    "type",
    "event",
    "name",
    "category",
    "userId",
    "anonymousId",
    "groupId",
    "previousId",
    "messageId",
    "timestamp",
    "receivedAt",
];
pub const EVENT_OBJECTS: [&str; 3] = ["properties", "traits", "context"];

/// Tracking-API events taken as rows of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestMapping {
    /// The call types taken (all when absent).
    pub calls: Option<Vec<String>>,
    /// For track calls, the event names taken (all when absent).
    pub events: Option<Vec<String>>,
    /// Source column → the event field it reads (`userId`, `properties.amount`, …).
    pub columns: BTreeMap<String, String>,
}

impl IngestMapping {
    /// Whether an event of this call type (and track event name) becomes a row.
    pub fn takes(&self, call: &str, event: Option<&str>) -> bool {
        self.calls
            .as_ref()
            .is_none_or(|c| c.iter().any(|c| c == call))
            && (call != "track"
                || self
                    .events
                    .as_ref()
                    .is_none_or(|e| event.is_some_and(|name| e.iter().any(|x| x == name))))
    }
}

/// Whether `path` names a field of a tracking-API event.
pub fn is_event_field(path: &str) -> bool {
    match path.split_once('.') {
        Some((root, rest)) => EVENT_OBJECTS.contains(&root) && !rest.is_empty(),
        None => EVENT_FIELDS.contains(&path) || EVENT_OBJECTS.contains(&path),
    }
}

/// The span of the `[ingest.<name>]` header, or of `needle` inside that table when given.
pub fn ingest_span(text: &str, file: FileId, name: &str, needle: Option<&str>) -> Span {
    let header = [format!("[ingest.{name}"), format!("[ingest.\"{name}\"")]
        .into_iter()
        .find_map(|h| text.find(&h).map(|i| (i, h.len())));
    let Some((start, len)) = header else {
        return locate(text, file, name);
    };
    if let Some(needle) = needle {
        // A key at the start of a line first (`ts = …`, not the `ts` inside `events`).
        let at_line_start = text[start..]
            .find(&format!("\n{needle}"))
            .map(|i| i + 1)
            .or_else(|| text[start..].find(needle));
        if let Some(i) = at_line_start {
            return Span::new(file, start + i, start + i + needle.len());
        }
    }
    let end = text[start..]
        .find(']')
        .map_or(start + len, |i| start + i + 1);
    Span::new(file, start, end)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSection {
    pub name: String,
    /// Directory (relative to the project) for outputs and the registry.
    #[serde(default = "default_storage")]
    pub storage: String,
    /// Default as-of time for runs, `YYYY-MM-DD HH:MM:SS`; absent means "now".
    pub as_of: Option<String>,
}

fn default_storage() -> String {
    ".cdp".to_string()
}

/// Where a source's rows come from: files for the embedded engine, a table for SQL targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceBinding {
    /// A file path or glob, relative to the project directory.
    pub path: Option<String>,
    /// `csv`, `parquet` or `jsonl`; inferred from the path's extension when absent.
    pub format: Option<DataFormat>,
    /// Table name on SQL targets (defaults to the source's name).
    pub table: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Csv,
    Parquet,
    #[serde(alias = "json", alias = "ndjson")]
    Jsonl,
}

impl SourceBinding {
    /// The declared format, else the one the path's extension names.
    pub fn data_format(&self) -> Option<DataFormat> {
        self.format.or_else(|| {
            let path = self.path.as_deref()?;
            let ext = path.rsplit('.').next()?.to_ascii_lowercase();
            match ext.as_str() {
                "csv" => Some(DataFormat::Csv),
                "parquet" => Some(DataFormat::Parquet),
                "jsonl" | "ndjson" | "json" => Some(DataFormat::Jsonl),
                _ => None,
            }
        })
    }
}

/// Parses `cdp.toml`, reporting problems with their position in the file.
pub fn parse_config(map: &SourceMap, file: FileId) -> Result<ProjectConfig, Box<Diagnostic>> {
    let text = &map.get(file).text;
    let config: ProjectConfig = toml::from_str(text).map_err(|e| {
        let range = e.span().unwrap_or(0..0);
        let (message, help) = explain_toml_error(e.message());
        let diag = Diagnostic::error("config", Span::new(file, range.start, range.end), message);
        let diag = match help {
            Some(h) => diag.with_help(h),
            None => diag,
        };
        diag
            .with_note("cdp.toml has a [project] table (name, storage, as_of), one [sources.<name>] table per source (path, format, table), and optionally [ingest.<source>] tables (calls, events, columns) that map tracking-API events to a source's rows")
    })
    .map_err(Box::new)?;
    if let Some(as_of) = &config.project.as_of {
        if parse_timestamp(as_of).is_none() {
            return Err(Box::new(
                Diagnostic::error(
                    "config",
                    locate(text, file, as_of),
                    format!("`{as_of}` is not a timestamp"),
                )
                .with_help("write it as \"2024-12-01 00:00:00\" or \"2024-12-01\""),
            ));
        }
    }
    for (name, binding) in &config.sources {
        if binding.path.is_none() && binding.table.is_none() {
            return Err(Box::new(
                Diagnostic::error(
                    "config",
                    header_span(text, file, name),
                    format!("source binding `{name}` has neither `path` nor `table`"),
                )
                .with_help("add `path = \"data/<file>.csv\"` for the embedded engine"),
            ));
        }
        if binding.path.is_some() && binding.data_format().is_none() {
            return Err(Box::new(
                Diagnostic::error(
                    "config",
                    header_span(text, file, name),
                    format!("cannot tell the format of source `{name}` from its path"),
                )
                .with_help("add `format = \"csv\"`, `\"parquet\"` or `\"jsonl\"`"),
            ));
        }
    }
    for (name, mapping) in &config.ingest {
        for call in mapping.calls.iter().flatten() {
            if !CALLS.contains(&call.as_str()) {
                return Err(Box::new(
                    Diagnostic::error(
                        "config",
                        ingest_span(text, file, name, Some(&format!("\"{call}\""))),
                        format!("`{call}` is not a tracking call"),
                    )
                    .with_suggestion(call, CALLS.iter().copied()),
                ));
            }
        }
        for (column, path) in &mapping.columns {
            if !is_event_field(path) {
                return Err(Box::new(
                    Diagnostic::error(
                        "config",
                        ingest_span(text, file, name, Some(&format!("\"{path}\""))),
                        format!("column `{column}` reads `{path}`, which is not a field of a tracking event"),
                    )
                    .with_help(format!(
                        "use one of {}, or a path below {} (`properties.amount`)",
                        EVENT_FIELDS.join(", "),
                        EVENT_OBJECTS.join(", ")
                    )),
                ));
            }
        }
    }
    if let Err(message) = config.stream.allowed_lateness_ms() {
        return Err(Box::new(Diagnostic::error(
            "config",
            locate(text, file, &config.stream.allowed_lateness),
            message,
        )));
    }
    if let Err(message) = config.stream.checkpoint_interval_ms() {
        return Err(Box::new(Diagnostic::error(
            "config",
            locate(text, file, &config.stream.checkpoint_interval),
            message,
        )));
    }
    Ok(config)
}

/// Serde's wording made into ours: a missing `[project]` table is named as such, and an unknown
/// field gets a did-you-mean from the fields serde lists.
fn explain_toml_error(message: &str) -> (String, Option<String>) {
    if message.contains("missing field `project`") {
        return (
            "cdp.toml has no [project] table".to_string(),
            Some("start it with:  [project]  name = \"my_project\"".to_string()),
        );
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, expected)) = rest.split_once('`') {
            let candidates: Vec<&str> = expected
                .split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, w)| w)
                .collect();
            let help = cdp_grammar::diag::nearest_name(field, candidates.iter().copied())
                .map(|best| format!("did you mean `{best}`?"));
            return (message.trim().to_string(), help);
        }
    }
    (message.trim().to_string(), None)
}

/// The span of the `[sources.<name>]` header (or of the file start when it is not found).
pub fn header_span(text: &str, file: FileId, name: &str) -> Span {
    for header in [format!("[sources.{name}]"), format!("[sources.\"{name}\"]")] {
        if let Some(i) = text.find(&header) {
            return Span::new(file, i, i + header.len());
        }
    }
    locate(text, file, name)
}

fn locate(text: &str, file: FileId, needle: &str) -> Span {
    match text.find(needle) {
        Some(i) => Span::new(file, i, i + needle.len()),
        None => Span::new(file, 0, 0),
    }
}

/// Parses `YYYY-MM-DD[ HH:MM:SS[.fff]]` (also with `T`) into seconds since the Unix epoch
/// (the fraction is ignored): validation of literals without a date library.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some()
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
    {
        return None;
    }
    let mut secs = 0i64;
    if let Some(time) = time {
        let time = time.trim_end_matches('Z');
        let time = time.split('.').next()?;
        let mut t = time.split(':');
        let h: i64 = t.next()?.parse().ok()?;
        let m: i64 = t.next()?.parse().ok()?;
        let s: i64 = t.next().map_or(Some(0), |s| s.parse().ok())?;
        if t.next().is_some() || h > 23 || m > 59 || s > 59 {
            return None;
        }
        secs = h * 3600 + m * 60 + s;
    }
    Some(days_from_civil(year, month, day) * 86_400 + secs)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_and_validate() {
        assert_eq!(parse_timestamp("1970-01-01"), Some(0));
        assert_eq!(parse_timestamp("2024-12-01 00:00:00"), Some(1_733_011_200));
        assert_eq!(parse_timestamp("2024-02-29T12:00:00Z"), Some(1_709_208_000));
        assert_eq!(parse_timestamp("2023-02-29"), None);
        assert_eq!(parse_timestamp("2024-13-01"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn ingest_mappings_name_tracking_calls_and_event_fields() {
        let mut map = SourceMap::new();
        let text = "[project]\nname = \"x\"\n[ingest.orders]\ncalls = [\"track\", \"pageview\"]\n[ingest.orders.columns]\nid = \"messageId\"\n";
        let id = map.add("cdp.toml", text);
        let err = parse_config(&map, id).unwrap_err();
        assert_eq!(err.message, "`pageview` is not a tracking call");
        assert_eq!(map.get(id).line_col(err.span.start as usize), (4, 19));

        let text = "[project]\nname = \"x\"\n[ingest.orders]\n[ingest.orders.columns]\nid = \"messageId\"\namount = \"props.total\"\n";
        let id = map.add("cdp2.toml", text);
        let err = parse_config(&map, id).unwrap_err();
        assert!(
            err.message.contains("`props.total`, which is not a field"),
            "{}",
            err.message
        );
        assert_eq!(map.get(id).line_col(err.span.start as usize).0, 6);

        assert!(is_event_field("context.page.url") && is_event_field("userId"));
        assert!(!is_event_field("properties.") && !is_event_field("user_id"));
    }

    #[test]
    fn config_errors_point_into_the_file() {
        let mut map = SourceMap::new();
        let id = map.add("cdp.toml", "[project]\nname = \"x\"\nstorge = \".cdp\"\n");
        let err = parse_config(&map, id).unwrap_err();
        assert!(err.message.contains("storge"), "{}", err.message);
        assert_eq!(map.get(id).line_col(err.span.start as usize).0, 3);
    }

    #[test]
    fn stream_durations_are_checked_where_they_are_written() {
        let mut map = SourceMap::new();
        for (setting, at) in [
            ("allowed_lateness = \"1 hour\"", (4, 21)),
            (
                "allowed_lateness = \"1h\"\ncheckpoint_interval = \"often\"",
                (5, 24),
            ),
        ] {
            let text = format!("[project]\nname = \"x\"\n[stream]\n{setting}\n");
            let id = map.add("cdp.toml", &text);
            let err = parse_config(&map, id).unwrap_err();
            assert!(err.message.contains("is not a duration"), "{}", err.message);
            assert_eq!(map.get(id).line_col(err.span.start as usize), at);
        }
        let id = map.add(
            "cdp.toml",
            "[project]\nname = \"x\"\n[stream]\ncheckpoint_interval = \"0\"\n",
        );
        let config = parse_config(&map, id).unwrap();
        assert_eq!(config.stream.checkpoint_interval_ms(), Ok(0));
        assert_eq!(config.stream.allowed_lateness_ms(), Ok(3_600_000));
    }
}
