//! The web pages: server-rendered HTML with SVG charts ([`super::svg`]), for the people who open
//! the registry every morning — what is defined, how big each audience is, how KPIs and journeys
//! move, what changed in a rule and when, the latest run, and one profile found by any of its
//! identity keys.
//!
//! Pages need a key like the API (the `cdp_key` cookie `/login` sets). Personal data is masked
//! for keys without the `pii` right, as the API masks it. Elements a reader or a test looks for
//! have stable ids (each also a `data-testid`).
//!
//! ```text
//! /                    search, definitions by kind, the latest run and apply, audience sizes
//! /k/{kind}            every definition of a kind
//! /d/{name}            one definition: charts, lineage, source, history with diffs, SQL, preview
//! /profile?entity=…&key=…&value=…
//!                      one profile: keys, values, segments, journey positions
//! /runs                every committed run
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use cdp_compiler::ir;
use cdp_compiler::sql::Dialect;
use cdp_runtime::online::Profile;
use cdp_runtime::stats::{Histogram, RunStats, ValueStats};
use cdp_runtime::store::{Manifest, StoredTable};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Deserialize;
use serde_json::Value;

use super::auth::Caller;
use super::catalog::{Catalog, Definition};
use super::svg::{self, esc, num, Bar, Series};
use super::Shared;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/", get(home))
        .route("/k/{kind}", get(kind_page))
        .route("/d/{name}", get(definition))
        .route("/profile", get(profile))
        .route("/runs", get(runs_page))
}

/// The kinds of definition, in the order data flows through them, with their plural titles.
const KINDS: [(&str, &str); 9] = [
    ("source", "Sources"),
    ("entity", "Entities"),
    ("attribute", "Attributes"),
    ("behavior", "Behaviors"),
    ("feature", "Features"),
    ("segment", "Segments"),
    ("journey", "Journeys"),
    ("metric", "Metrics"),
    ("activation", "Activations"),
];

/// Profiles shown in a data preview.
const PREVIEW_ROWS: usize = 5;

/// Lineage graphs larger than this show the upstream and only the direct readers.
const LINEAGE_MAX: usize = 60;

// ------------------------------------------------------------------------------ layout

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f6f7f9}
a{color:#2456c7;text-decoration:none}a:hover{text-decoration:underline}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
h1.mono{font-size:24px}
header.top{background:#1d2330;color:#fff;padding:.55rem 1.5rem;display:flex;gap:1.2rem;align-items:center}
header.top .brand{color:#fff;font-weight:700;font-size:17px;letter-spacing:.02em}
header.top .brand span{font-weight:400;opacity:.7;margin-left:.5rem}
header.top form{flex:1;max-width:28rem}
header.top input{width:100%;padding:.35rem .6rem;border-radius:6px;border:0;font:inherit}
header.top .who{margin-left:auto;font-size:13px;opacity:.85}
nav.kinds{background:#fff;border-bottom:1px solid #e3e6ec;padding:0 1.5rem;display:flex;flex-wrap:wrap;gap:.2rem}
nav.kinds a{padding:.55rem .7rem;color:#454c5c;border-bottom:2px solid transparent;font-size:14px}
nav.kinds a.active,nav.kinds a:hover{color:#1d2330;border-color:#2456c7;text-decoration:none}
nav.kinds b{font-weight:500;color:#8a91a0;margin-left:.25rem}
main{padding:1.2rem 1.5rem 3rem;max-width:76rem;margin:0 auto}
h1{font-size:26px;margin:.2rem 0 .3rem;font-weight:650}
h2{font-size:17px;margin:0 0 .7rem;font-weight:620}
h3{font-size:14px;margin:.8rem 0 .4rem;color:#454c5c;font-weight:600}
.card{background:#fff;border:1px solid #e3e6ec;border-radius:10px;padding:1rem 1.2rem;margin:0 0 1rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(30rem,1fr));gap:1rem;margin-bottom:1rem}
.grid .card{margin:0}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(7rem,1fr));gap:.6rem;margin-bottom:1rem}
.tile{background:#fff;border:1px solid #e3e6ec;border-radius:10px;padding:.7rem .9rem;color:#1d2330}
.tile:hover{border-color:#2456c7;text-decoration:none}
.tile b{display:block;font-size:24px;font-weight:650}.tile span{color:#5f6676;font-size:13px}
.stats{display:flex;flex-wrap:wrap;gap:.6rem;margin:0 0 .8rem}
.stat{border:1px solid #e3e6ec;border-radius:8px;padding:.4rem .8rem;min-width:7rem;background:#fbfcfd}
.stat b{display:block;font-size:20px;font-weight:650}.stat span{color:#5f6676;font-size:12px}
.sub{color:#5f6676;margin:.1rem 0 .8rem}
.empty{color:#5f6676;background:#fbfcfd;border:1px dashed #cfd4dd;border-radius:8px;padding:.8rem 1rem;margin:.2rem 0}
.empty code{background:#eef0f4;padding:.05rem .3rem;border-radius:4px}
.note{color:#5f6676;font-size:13px}
.error{color:#b42318}
.badge{display:inline-block;font-size:12px;padding:.05rem .45rem;border-radius:999px;background:#eef0f4;color:#454c5c;vertical-align:middle}
.badge.k-source{background:#eceef1}.badge.k-entity{background:#efe7fd}.badge.k-attribute{background:#dff5f2}
.badge.k-behavior{background:#fdeadc}.badge.k-feature{background:#e3ecfd}.badge.k-segment{background:#e2f6e8}
.badge.k-journey{background:#fbe5f0}.badge.k-metric{background:#fbf1d6}.badge.k-activation{background:#fde4e4}
.tags a{font-size:12px;background:#eef0f4;border-radius:999px;padding:.05rem .5rem;margin-right:.25rem;color:#454c5c}
.chips{list-style:none;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:.35rem}
.chips li a,.chips li span{display:inline-block;background:#e2f6e8;color:#14532d;border-radius:999px;padding:.1rem .6rem;font-size:13px}
.masked{color:#8a91a0;font-style:italic}
.null{color:#a0a6b2}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #eef0f4;vertical-align:top}
th{color:#5f6676;font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}th a{text-transform:none;letter-spacing:0}
ul.results,ul.deflist{list-style:none;padding:0;margin:0}
ul.results li,ul.deflist li{padding:.55rem 0;border-bottom:1px solid #eef0f4}
ul.results li:last-child,ul.deflist li:last-child{border:0}
.desc{color:#454c5c}
.toc{display:flex;gap:1rem;margin:.2rem 0 1rem;font-size:14px;flex-wrap:wrap}
pre{background:#f4f5f8;padding:.8rem 1rem;border-radius:8px;overflow:auto;margin:0;max-height:34rem}
.tabs{display:flex;gap:.3rem;margin-bottom:.6rem;flex-wrap:wrap}
.tabs a{padding:.2rem .7rem;border-radius:6px;background:#eef0f4;color:#454c5c;font-size:13px}
.tabs a.active{background:#2456c7;color:#fff}
form.lookup{display:flex;gap:.5rem;flex-wrap:wrap;align-items:end}
form.lookup label{display:flex;flex-direction:column;font-size:12px;color:#5f6676;gap:.15rem}
input,select,button{font:inherit;padding:.35rem .55rem;border:1px solid #cfd4dd;border-radius:6px;background:#fff}
button{background:#2456c7;color:#fff;border-color:#2456c7;cursor:pointer}
.bigsearch input{width:100%;font-size:17px;padding:.6rem .8rem}
.meter{display:inline-block;width:8rem;height:.55rem;background:#eef0f4;border-radius:4px;vertical-align:middle;margin-right:.4rem}
.meter span{display:block;height:100%;background:#16a34a;border-radius:4px}
svg.chart{width:100%;height:auto;display:block;font-size:11px;font-family:system-ui,sans-serif}
svg.chart .grid{stroke:#eef0f4}svg.chart .axis{stroke:#b8bec9}
svg.chart .tick{fill:#6b7280}svg.chart .label{fill:#1d2330;font-size:12px}svg.chart .value{fill:#454c5c;font-size:12px}
svg.chart a .label{fill:#2456c7}
svg.chart .bar{fill:#3b6fd6}svg.chart .bar:hover{fill:#2456c7}
svg.funnel .bar{fill:#2a9d8f}
svg.chart .line{fill:none;stroke-width:2.2}svg.chart .point{stroke:#fff;stroke-width:1.5}
svg.chart .s0{stroke:#3b6fd6;fill:#3b6fd6}svg.chart .s1{stroke:#e0793a;fill:#e0793a}svg.chart .s2{stroke:#2a9d8f;fill:#2a9d8f}
svg.chart .s3{stroke:#c2417d;fill:#c2417d}svg.chart .s4{stroke:#8a63d2;fill:#8a63d2}svg.chart .s5{stroke:#d4a72c;fill:#d4a72c}
svg.chart .s6{stroke:#5b8c3a;fill:#5b8c3a}svg.chart .s7{stroke:#6b7280;fill:#6b7280}
svg.chart polyline.line{fill:none}svg.chart .legend text{fill:#454c5c;stroke:none;font-size:12px}
svg.lineage .edge{fill:none;stroke:#c3c8d2;stroke-width:1.4}svg.lineage .edge.near{stroke:#7d8596}
svg.lineage .node rect{fill:#fff;stroke:#cfd4dd}svg.lineage .node text{fill:#1d2330;font-size:12px}
svg.lineage .node.focus rect{stroke:#1d2330;stroke-width:2}svg.lineage .node.focus text{font-weight:700}
svg.lineage a:hover rect{stroke:#2456c7}
svg.lineage .stripe{stroke:none!important}
.k-source .stripe{fill:#6b7280}.k-entity .stripe{fill:#7c3aed}.k-attribute .stripe{fill:#0d9488}
.k-behavior .stripe{fill:#ea580c}.k-feature .stripe{fill:#2563eb}.k-segment .stripe{fill:#16a34a}
.k-journey .stripe{fill:#db2777}.k-metric .stripe{fill:#ca8a04}.k-activation .stripe{fill:#dc2626}
table.diff{table-layout:fixed;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
table.diff td{border:0;padding:.05rem .4rem;white-space:pre-wrap;word-break:break-word}
table.diff td.ln{width:2.8rem;color:#9aa1ad;text-align:right;user-select:none}
table.diff td.del{background:#fdecec}table.diff td.add{background:#e6f6ea}
table.diff td.del mark{background:#f7c1c1}table.diff td.add mark{background:#b5e6c1}
table.diff th{text-transform:none;font-size:13px}
ol.versions{list-style:none;padding:0;margin:0 0 1rem}
ol.versions li{padding:.35rem 0;border-bottom:1px solid #eef0f4;display:flex;gap:.8rem;align-items:baseline;flex-wrap:wrap}
ol.versions li b{min-width:2.5rem}
"#;

/// What the top of every signed-in page shows.
struct Top<'a> {
    catalog: Option<&'a Catalog>,
    caller: Option<&'a Caller>,
    /// The kind whose tab is active, or `profile` / `runs`.
    active: &'a str,
    query: &'a str,
}

fn page(title: &str, top: &Top, body: &str) -> String {
    let project = top.catalog.map(|c| c.name.as_str()).unwrap_or("");
    let mut nav = String::new();
    if let Some(catalog) = top.catalog {
        nav.push_str("<nav class=\"kinds\" id=\"kind-nav\" data-testid=\"kind-nav\">");
        for (kind, title) in KINDS {
            let count = catalog
                .definitions
                .iter()
                .filter(|d| d.kind() == kind)
                .count();
            if count == 0 {
                continue;
            }
            let _ = write!(
                nav,
                "<a href=\"/k/{kind}\"{}>{title}<b>{count}</b></a>",
                active(top.active == kind)
            );
        }
        let _ = write!(
            nav,
            "<a href=\"/profile\"{}>Profiles</a><a href=\"/runs\"{}>Runs</a></nav>",
            active(top.active == "profile"),
            active(top.active == "runs")
        );
    }
    let who = match top.caller {
        Some(c) => format!(
            "<span class=\"who\" id=\"caller\" data-testid=\"caller\">key <b>{}</b> · {}{}</span>",
            esc(&c.name),
            c.role.name(),
            if c.pii {
                " · sees personal data"
            } else {
                " · personal data masked"
            }
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · cdp</title><style>{STYLE}</style></head><body>\
         <header class=\"top\"><a class=\"brand\" href=\"/\">cdp<span>{project}</span></a>\
         <form action=\"/\" method=\"get\" role=\"search\"><input name=\"q\" value=\"{query}\" \
         placeholder=\"Search names, descriptions, owners, tags\" aria-label=\"Search definitions\"></form>\
         {who}</header>{nav}<main>{body}</main></body></html>",
        title = esc(title),
        project = esc(project),
        query = esc(top.query),
    )
}

fn active(yes: bool) -> &'static str {
    if yes {
        " class=\"active\""
    } else {
        ""
    }
}

/// A page without the signed-in header (the login page).
pub fn layout(title: &str, body: &str) -> String {
    page(
        title,
        &Top {
            catalog: None,
            caller: None,
            active: "",
            query: "",
        },
        body,
    )
}

pub fn login_page(message: &str) -> String {
    let message = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" id=\"login-error\">{}</p>", esc(message))
    };
    layout(
        "Sign in",
        &format!(
            "<div class=\"card\" style=\"max-width:32rem\"><h1>Sign in</h1>{message}\
             <p class=\"sub\">Use an API key of this project. <code>cdp serve</code> prints the first one \
             (with a sign-in link); <code>cdp keys add NAME --dir DIR</code> makes more.</p>\
             <form class=\"lookup\" action=\"/login\" method=\"get\">\
             <label>API key <input name=\"key\" type=\"password\" autocomplete=\"off\" size=\"40\"></label>\
             <button>Sign in</button></form></div>"
        ),
    )
}

fn section(id: &str, title: &str, body: &str) -> String {
    format!(
        "<section class=\"card\" id=\"{id}\" data-testid=\"{id}\"><h2>{}</h2>{body}</section>",
        esc(title)
    )
}

fn empty(html: &str) -> String {
    format!("<p class=\"empty\">{html}</p>")
}

fn stat(label: &str, value: &str) -> String {
    format!(
        "<div class=\"stat\"><b>{}</b><span>{}</span></div>",
        esc(value),
        esc(label)
    )
}

fn badge(kind: &str) -> String {
    format!("<span class=\"badge k-{0}\">{0}</span>", esc(kind))
}

fn tags(tags: &[String]) -> String {
    if tags.is_empty() {
        return String::new();
    }
    let links: Vec<String> = tags
        .iter()
        .map(|t| format!("<a href=\"/?q={}\">{}</a>", query_value(t), esc(t)))
        .collect();
    format!("<span class=\"tags\">{}</span>", links.join(""))
}

/// Percent-encodes a query parameter value.
fn query_value(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn html(status: StatusCode, text: String) -> Response {
    (status, Html(text)).into_response()
}

/// The page for a project that does not load: the reason, and how to see it on the command line.
fn not_loaded(app: &Shared, caller: &Caller) -> Response {
    let message = app
        .load_error()
        .unwrap_or_else(|| "the project is not loaded".into());
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        page(
            "Not loaded",
            &Top {
                catalog: None,
                caller: Some(caller),
                active: "",
                query: "",
            },
            &section(
                "load-error",
                "The project does not load",
                &format!(
                    "<pre>{}</pre><p class=\"note\">Fix the files (<code>cdp check</code> lists every problem); \
                     this page follows the files.</p>",
                    esc(&message)
                ),
            ),
        ),
    )
}

/// Renders on a blocking thread: pages read Parquet files, the registry and the online store.
async fn blocking(render: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(render)
        .await
        .unwrap_or_else(|e| {
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                layout(
                    "Error",
                    &format!(
                        "<h1>cdp failed to draw this page</h1><pre>{}</pre>",
                        esc(&e.to_string())
                    ),
                ),
            )
        })
}

// ------------------------------------------------------------------------------ run data

/// `YYYY-MM-DD HH:MM:SS` (or a date) as seconds since 1970-01-01 UTC.
fn seconds(text: &str) -> Option<f64> {
    let text = text.trim();
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
        })
        .ok()
        .map(|t| t.and_utc().timestamp() as f64)
}

/// The committed runs, the latest of each as-of time, oldest as-of first: the points of every
/// chart over time (a run repeated at the same as-of time replaces the earlier one).
fn points_in_time(catalog: &Catalog) -> Vec<(f64, &Manifest)> {
    let mut by_time: BTreeMap<i64, &Manifest> = BTreeMap::new();
    for m in &catalog.runs {
        if let Some(t) = seconds(&m.as_of) {
            by_time.insert(t as i64, m);
        }
    }
    by_time.into_iter().map(|(t, m)| (t as f64, m)).collect()
}

fn stats_in_time(catalog: &Catalog) -> Vec<(f64, &Manifest, &RunStats)> {
    points_in_time(catalog)
        .into_iter()
        .filter_map(|(t, m)| catalog.stats.get(&m.run).map(|s| (t, m, s)))
        .collect()
}

fn value_stats<'s>(stats: &'s RunStats, name: &str) -> Option<&'s ValueStats> {
    stats
        .entities
        .iter()
        .flat_map(|e| &e.values)
        .find(|v| v.name == name)
}

fn segment_profiles(stats: &RunStats, name: &str) -> Option<u64> {
    stats
        .entities
        .iter()
        .flat_map(|e| &e.segments)
        .find(|s| s.segment == name)
        .map(|s| s.profiles)
}

fn population(catalog: &Catalog, segment: &str) -> Vec<(f64, f64)> {
    stats_in_time(catalog)
        .into_iter()
        .filter_map(|(t, _, s)| segment_profiles(s, segment).map(|p| (t, p as f64)))
        .collect()
}

fn total_millis(m: &Manifest) -> u64 {
    m.steps.iter().map(|s| s.millis).sum()
}

fn total_rows(m: &Manifest) -> usize {
    m.tables.iter().map(|t| t.rows).sum()
}

fn no_run() -> String {
    empty(
        "No run yet: run <code>cdp run</code> in the project to compute profiles, features, \
         segments and KPIs. This page picks up each committed run.",
    )
}

fn one_point_note(points: usize) -> &'static str {
    if points == 1 {
        "<p class=\"note\">One run so far: each <code>cdp run</code> at another as-of time adds a point.</p>"
    } else {
        ""
    }
}

/// The batches of one Parquet file of the offline store, read as they are needed.
fn batches(
    catalog: &Catalog,
    table: &StoredTable,
) -> Result<impl Iterator<Item = Result<RecordBatch, String>>, String> {
    let path = catalog.storage.join(&table.path);
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(4096).build())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(reader.map(|b| b.map_err(|e| e.to_string())))
}

fn strings(batch: &RecordBatch, column: &str) -> Option<Vec<Option<String>>> {
    let array = cast(batch.column_by_name(column)?, &DataType::Utf8).ok()?;
    let array = array.as_string::<i32>();
    Some(
        (0..array.len())
            .map(|i| (!array.is_null(i)).then(|| array.value(i).to_string()))
            .collect(),
    )
}

fn numbers(batch: &RecordBatch, column: &str) -> Option<Vec<Option<f64>>> {
    let array = batch.column_by_name(column)?;
    if !array.data_type().is_numeric() {
        return None;
    }
    let array = cast(array, &DataType::Float64).ok()?;
    let array = array.as_primitive::<Float64Type>();
    Some(
        (0..array.len())
            .map(|i| (!array.is_null(i)).then(|| array.value(i)))
            .collect(),
    )
}

/// One row of a metric's output: a segment and its measures (numbers) in one period.
type KpiRow = (String, BTreeMap<String, Option<f64>>);

/// Metric tables read once per file (a committed run's files never change).
fn kpi_cache() -> &'static Mutex<HashMap<PathBuf, Arc<Vec<KpiRow>>>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Vec<KpiRow>>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn kpi_rows(catalog: &Catalog, table: &StoredTable) -> Result<Arc<Vec<KpiRow>>, String> {
    let path = catalog.storage.join(&table.path);
    if let Some(rows) = kpi_cache().lock().ok().and_then(|c| c.get(&path).cloned()) {
        return Ok(rows);
    }
    let mut rows = Vec::new();
    for batch in batches(catalog, table)? {
        let batch = batch?;
        let segments = strings(&batch, "segment").unwrap_or_default();
        let schema = batch.schema();
        let columns: Vec<(String, Vec<Option<f64>>)> = schema
            .fields()
            .iter()
            .filter_map(|f| numbers(&batch, f.name()).map(|v| (f.name().clone(), v)))
            .collect();
        for (i, segment) in segments.into_iter().enumerate() {
            let values = columns
                .iter()
                .map(|(name, v)| (name.clone(), v.get(i).copied().flatten()))
                .collect();
            rows.push((segment.unwrap_or_default(), values));
        }
    }
    let rows = Arc::new(rows);
    if let Ok(mut cache) = kpi_cache().lock() {
        cache.insert(path, rows.clone());
    }
    Ok(rows)
}

/// A metric's measures over time: per measure, per segment, the points (as-of time, value).
type Kpis = BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>>;

fn kpis(catalog: &Catalog, metric: &ir::Metric) -> Result<Kpis, String> {
    let mut out: Kpis = BTreeMap::new();
    for (t, m) in points_in_time(catalog) {
        let Some(table) = m.tables.iter().find(|t| t.table == metric.meta.name) else {
            continue;
        };
        for (segment, values) in kpi_rows(catalog, table)?.iter() {
            for measure in &metric.measures {
                if let Some(Some(v)) = values.get(&measure.name) {
                    out.entry(measure.name.clone())
                        .or_default()
                        .entry(segment.clone())
                        .or_default()
                        .push((t, *v));
                }
            }
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------ home

#[derive(Deserialize)]
struct HomeQuery {
    q: Option<String>,
}

async fn home(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HomeQuery>,
) -> Response {
    blocking(move || home_page(&app, &caller, query.q.as_deref().unwrap_or(""))).await
}

fn home_page(app: &Shared, caller: &Caller, q: &str) -> Response {
    let Some(catalog) = app.catalog() else {
        return not_loaded(app, caller);
    };
    let mut body = String::new();
    let profiles: u64 = catalog
        .latest_stats()
        .map(|(_, s)| s.entities.iter().map(|e| e.profiles).sum())
        .unwrap_or(0);
    let _ = write!(
        body,
        "<h1 id=\"project\">{}</h1><p class=\"sub\">{} definitions{}</p>",
        esc(&catalog.name),
        catalog.definitions.len(),
        match catalog.latest_run() {
            Some(m) => format!(
                " · {} profiles as of {}",
                num(profiles as f64),
                esc(&m.as_of)
            ),
            None => " · not run yet".into(),
        }
    );
    let _ = write!(
        body,
        "<form class=\"bigsearch card\" id=\"search-form\" action=\"/\" method=\"get\" role=\"search\">\
         <input id=\"search\" data-testid=\"search\" name=\"q\" value=\"{}\" autofocus \
         placeholder=\"Search features, segments, journeys… by name, description, owner or tag\" \
         aria-label=\"Search definitions\"></form>",
        esc(q)
    );
    if !q.trim().is_empty() {
        body.push_str(&search_results(&catalog, q));
    }
    body.push_str("<div class=\"tiles\" id=\"kinds\" data-testid=\"kinds\">");
    for (kind, title) in KINDS {
        let count = catalog
            .definitions
            .iter()
            .filter(|d| d.kind() == kind)
            .count();
        let _ = write!(
            body,
            "<a class=\"tile\" href=\"/k/{kind}\" id=\"kind-{kind}\" data-testid=\"kind-{kind}\"><b>{count}</b><span>{title}</span></a>"
        );
    }
    body.push_str("</div><div class=\"grid\">");
    body.push_str(&latest_run_card(&catalog));
    body.push_str(&audience_card(&catalog));
    body.push_str(&latest_apply_card(app));
    body.push_str(&section(
        "profile-lookup",
        "Find a profile",
        &format!(
            "<p class=\"sub\">By any identity key: the value is normalized as the entity declares.</p>{}",
            profile_form(&catalog, None, None, "")
        ),
    ));
    body.push_str("</div>");
    html(
        StatusCode::OK,
        page(
            &catalog.name,
            &Top {
                catalog: Some(&catalog),
                caller: Some(caller),
                active: "",
                query: q,
            },
            &body,
        ),
    )
}

fn search_results(catalog: &Catalog, q: &str) -> String {
    let found = catalog.search(q);
    if found.is_empty() {
        return section(
            "search-results",
            "No results",
            &empty(&format!(
                "Nothing matches “{}”. Search looks at names, descriptions, owners and tags; \
                 every word must match.",
                esc(q)
            )),
        );
    }
    let mut list = String::from("<ul class=\"results\">");
    for d in &found {
        list.push_str(&definition_item(catalog, d));
    }
    list.push_str("</ul>");
    section(
        "search-results",
        &format!(
            "{} result{} for “{}”",
            found.len(),
            if found.len() == 1 { "" } else { "s" },
            q.trim()
        ),
        &list,
    )
}

/// One definition in a list: name, kind, description, owner, tags, and for a segment its size.
fn definition_item(catalog: &Catalog, d: &Definition) -> String {
    let size = match (d.kind(), catalog.latest_stats()) {
        ("segment", Some((_, stats))) => segment_profiles(stats, d.name())
            .map(|p| {
                let all: u64 = stats.entities.iter().map(|e| e.profiles).sum();
                let share = if all > 0 {
                    100.0 * p as f64 / all as f64
                } else {
                    0.0
                };
                format!(
                    " <span class=\"meter\" title=\"{share:.1}% of profiles\"><span style=\"width:{share:.1}%\"></span></span>\
                     <span class=\"note\">{} profiles</span>",
                    num(p as f64)
                )
            })
            .unwrap_or_default(),
        _ => String::new(),
    };
    format!(
        "<li data-name=\"{name}\" data-kind=\"{kind}\"><a href=\"/d/{href}\"><b>{name}</b></a> {badge}{size}\
         <div class=\"desc\">{desc}</div><div class=\"note\">{owner}{tags}</div></li>",
        name = esc(d.name()),
        kind = esc(d.kind()),
        href = query_value(d.name()),
        badge = badge(d.kind()),
        desc = esc(d.draft.description.as_deref().unwrap_or("")),
        owner = d
            .draft
            .owner
            .as_deref()
            .map(|o| format!("owner {} ", esc(o)))
            .unwrap_or_default(),
        tags = tags(&d.draft.tags),
    )
}

fn latest_run_card(catalog: &Catalog) -> String {
    let Some(m) = catalog.latest_run() else {
        return section("latest-run", "Latest run", &no_run());
    };
    let rejects: u64 = m.rejects.iter().map(|r| r.rows).sum();
    let mut body = String::from("<div class=\"stats\">");
    body.push_str(&stat("as of", &m.as_of));
    body.push_str(&stat("finished (UTC)", &m.finished_at));
    body.push_str(&stat(
        "step time",
        &format!("{} s", num(total_millis(m) as f64 / 1000.0)),
    ));
    body.push_str(&stat("rows written", &num(total_rows(m) as f64)));
    if rejects > 0 {
        body.push_str(&stat("rows kept aside", &num(rejects as f64)));
    }
    body.push_str("</div><h3>Time per step</h3>");
    let bars: Vec<Bar> = m
        .steps
        .iter()
        .map(|s| Bar::new(&s.name, s.millis as f64))
        .collect();
    body.push_str(&svg::hbars(
        "run-steps-chart",
        "Milliseconds per step of the latest run",
        &bars,
        " ms",
    ));
    let _ = write!(
        body,
        "<p class=\"note\">Run <span class=\"mono\">{}</span> · <a href=\"/runs\">all {} runs</a></p>",
        esc(&m.run),
        catalog.runs.len()
    );
    section("latest-run", "Latest run", &body)
}

fn audience_card(catalog: &Catalog) -> String {
    let Some((_, stats)) = catalog.latest_stats() else {
        return section("audiences", "Audiences", &no_run());
    };
    let mut sizes: Vec<(&str, u64)> = stats
        .entities
        .iter()
        .flat_map(|e| &e.segments)
        .map(|s| (s.segment.as_str(), s.profiles))
        .collect();
    if sizes.is_empty() {
        return section(
            "audiences",
            "Audiences",
            &empty("The project defines no segment yet."),
        );
    }
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let bars: Vec<Bar> = sizes
        .iter()
        .take(15)
        .map(|(s, p)| Bar::new(*s, *p as f64).link(format!("/d/{}", query_value(s))))
        .collect();
    let mut body = svg::hbars(
        "segment-sizes",
        "Profiles per segment, latest run",
        &bars,
        "",
    );
    if sizes.len() > bars.len() {
        let _ = write!(
            body,
            "<p class=\"note\">The {} largest of {} segments · <a href=\"/k/segment\">all segments</a></p>",
            bars.len(),
            sizes.len()
        );
    }
    section("audiences", "Audience sizes", &body)
}

fn latest_apply_card(app: &Shared) -> String {
    let snapshot = app.with_registry(|r| r.latest_snapshot());
    let body = match snapshot {
        Err(e) => format!(
            "<p class=\"error\">The registry could not be read: {}</p>",
            esc(&e)
        ),
        Ok(None) => empty(
            "Nothing applied yet: <code>cdp apply</code> records every definition as version 1; \
             each later apply records what changed.",
        ),
        Ok(Some(s)) => {
            let mut body = format!(
                "<p><b>Snapshot {}</b> by {} at {}{}</p>",
                s.id,
                esc(&s.author),
                esc(&s.time),
                if s.message.is_empty() {
                    String::new()
                } else {
                    format!(": “{}”", esc(&s.message))
                }
            );
            for (what, names) in [
                ("changed", &s.changed),
                ("added", &s.added),
                ("removed", &s.removed),
            ] {
                if names.is_empty() {
                    continue;
                }
                let links: Vec<String> = names
                    .iter()
                    .take(20)
                    .map(|n| format!("<a href=\"/d/{}#history\">{}</a>", query_value(n), esc(n)))
                    .collect();
                let more = if names.len() > links.len() {
                    format!(" and {} more", names.len() - links.len())
                } else {
                    String::new()
                };
                let _ = write!(
                    body,
                    "<p>{} {what}: {}{more}</p>",
                    names.len(),
                    links.join(", ")
                );
            }
            body
        }
    };
    section("latest-apply", "Latest apply", &body)
}

/// The profile lookup form: entity, key and value.
fn profile_form(catalog: &Catalog, entity: Option<&str>, key: Option<&str>, value: &str) -> String {
    let entities = &catalog.project.entities;
    let Some(chosen) = entities
        .iter()
        .find(|e| Some(e.meta.name.as_str()) == entity)
        .or(entities.first())
    else {
        return empty("The project defines no entity.");
    };
    let mut form = String::from(
        "<form class=\"lookup\" id=\"profile-form\" data-testid=\"profile-form\" action=\"/profile\" method=\"get\">",
    );
    if entities.len() == 1 {
        let _ = write!(
            form,
            "<input type=\"hidden\" name=\"entity\" value=\"{}\">",
            esc(&chosen.meta.name)
        );
    } else {
        form.push_str("<label>Entity <select name=\"entity\" id=\"profile-entity\">");
        for e in entities {
            let _ = write!(
                form,
                "<option value=\"{name}\"{}>{name}</option>",
                if e.meta.name == chosen.meta.name {
                    " selected"
                } else {
                    ""
                },
                name = esc(&e.meta.name)
            );
        }
        form.push_str("</select></label>");
    }
    form.push_str(
        "<label>Key <select name=\"key\" id=\"profile-key\" data-testid=\"profile-key\">",
    );
    let keys = chosen
        .keys
        .iter()
        .map(|k| k.name.as_str())
        .chain(["canonical_id"]);
    for k in keys {
        let _ = write!(
            form,
            "<option value=\"{k}\"{}>{k}</option>",
            if Some(k) == key { " selected" } else { "" },
            k = esc(k)
        );
    }
    let _ = write!(
        form,
        "</select></label><label>Value <input name=\"value\" id=\"profile-value\" data-testid=\"profile-value\" \
         value=\"{}\" size=\"32\" placeholder=\"e.g. an email address\"></label>\
         <button id=\"profile-submit\" data-testid=\"profile-submit\">Open profile</button></form>",
        esc(value)
    );
    form
}

// ------------------------------------------------------------------------------ kind lists

async fn kind_page(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(kind): Path<String>,
) -> Response {
    let Some(catalog) = app.catalog() else {
        return not_loaded(&app, &caller);
    };
    let top = Top {
        catalog: Some(&catalog),
        caller: Some(&caller),
        active: &kind,
        query: "",
    };
    let Some((_, title)) = KINDS.iter().find(|(k, _)| *k == kind) else {
        let known: Vec<&str> = KINDS.iter().map(|k| k.0).collect();
        return html(
            StatusCode::NOT_FOUND,
            page(
                "Not found",
                &top,
                &empty(&format!(
                    "There is no kind of definition called “{}”; the kinds are {}.",
                    esc(&kind),
                    known.join(", ")
                )),
            ),
        );
    };
    let defs: Vec<&Definition> = catalog
        .definitions
        .iter()
        .filter(|d| d.kind() == kind)
        .collect();
    let mut body = format!(
        "<h1>{title}</h1><p class=\"sub\">{} in the project</p>",
        defs.len()
    );
    if kind == "segment" {
        body.push_str(&audience_card(&catalog));
    }
    if defs.is_empty() {
        body.push_str(&empty(&format!(
            "The project has no {kind} yet. The language reference in <code>docs/</code> shows how to write one."
        )));
    } else {
        body.push_str("<div class=\"card\"><ul class=\"deflist\" id=\"definitions\" data-testid=\"definitions\">");
        for d in defs {
            body.push_str(&definition_item(&catalog, d));
        }
        body.push_str("</ul></div>");
    }
    html(StatusCode::OK, page(title, &top, &body))
}

// ------------------------------------------------------------------------------ one definition

#[derive(Deserialize, Default)]
struct DefinitionQuery {
    dialect: Option<String>,
    /// Versions to compare: a number, or `files` for the project's files as they are now.
    from: Option<String>,
    to: Option<String>,
}

async fn definition(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(query): Query<DefinitionQuery>,
) -> Response {
    blocking(move || definition_page(&app, &caller, &name, &query)).await
}

fn definition_page(app: &Shared, caller: &Caller, name: &str, query: &DefinitionQuery) -> Response {
    let Some(catalog) = app.catalog() else {
        return not_loaded(app, caller);
    };
    let Some(d) = catalog.definition(name) else {
        let near =
            cdp_grammar::diag::nearest_name(name, catalog.definitions.iter().map(|d| d.name()));
        let hint = match near {
            Some(n) => format!(
                " Did you mean <a href=\"/d/{}\">{}</a>?",
                query_value(n),
                esc(n)
            ),
            None => String::new(),
        };
        return html(
            StatusCode::NOT_FOUND,
            page(
                "Not found",
                &Top {
                    catalog: Some(&catalog),
                    caller: Some(caller),
                    active: "",
                    query: name,
                },
                &format!(
                    "<h1>No definition named “{}”</h1>{}",
                    esc(name),
                    empty(&format!("The project defines no such name.{hint}"))
                ),
            ),
        );
    };
    let mut body = String::new();
    let _ = write!(
        body,
        "<p class=\"note\"><a href=\"/k/{kind}\">{plural}</a></p>\
         <h1 id=\"definition-name\" data-testid=\"definition-name\">{name} {badge}</h1>\
         <p class=\"desc\" id=\"description\">{desc}</p><p class=\"note\">{owner}{tags} \
         defined in <span class=\"mono\">{file}:{line}</span></p>",
        kind = esc(d.kind()),
        plural = KINDS
            .iter()
            .find(|k| k.0 == d.kind())
            .map(|k| k.1)
            .unwrap_or("Definitions"),
        name = esc(d.name()),
        badge = badge(d.kind()),
        desc = match &d.draft.description {
            Some(text) => esc(text),
            None =>
                "<span class=\"null\">No description: add one after the name, in quotes.</span>"
                    .into(),
        },
        owner = d
            .draft
            .owner
            .as_deref()
            .map(|o| format!("owner <b>{}</b> · ", esc(o)))
            .unwrap_or_default(),
        tags = tags(&d.draft.tags),
        file = esc(&d.draft.file),
        line = d.draft.line,
    );
    body.push_str(
        "<nav class=\"toc\"><a href=\"#overview\">Overview</a><a href=\"#lineage\">Lineage</a>\
         <a href=\"#definition\">Definition</a><a href=\"#history\">History</a><a href=\"#sql\">Compiled SQL</a>\
         <a href=\"#preview\">Preview</a></nav>",
    );
    body.push_str(&overview(&catalog, d));
    body.push_str(&deliveries_section(app, &catalog, d));
    body.push_str(&transitions_section(app, d));
    body.push_str(&lineage_section(&catalog, d));
    body.push_str(&section(
        "definition",
        "Definition",
        &format!(
            "<pre id=\"definition-source\" data-testid=\"definition-source\">{}</pre>",
            esc(&d.draft.text)
        ),
    ));
    body.push_str(&history_section(app, d, query));
    body.push_str(&sql_section(&catalog, d, query));
    body.push_str(&preview_section(app, &catalog, d, caller));
    html(
        StatusCode::OK,
        page(
            d.name(),
            &Top {
                catalog: Some(&catalog),
                caller: Some(caller),
                active: d.kind(),
                query: "",
            },
            &body,
        ),
    )
}

/// The entity a definition belongs to (an entity is its own).
fn entity_of(project: &ir::Project, d: &Definition) -> Option<String> {
    let name = d.name();
    let id = match d.kind() {
        "entity" => return Some(name.to_string()),
        "attribute" => {
            project
                .attributes
                .iter()
                .find(|x| x.meta.name == name)?
                .entity
        }
        "behavior" => {
            project
                .behaviors
                .iter()
                .find(|x| x.meta.name == name)?
                .entity
        }
        "feature" => {
            project
                .features
                .iter()
                .find(|x| x.meta.name == name)?
                .entity
        }
        "segment" => {
            project
                .segments
                .iter()
                .find(|x| x.meta.name == name)?
                .entity
        }
        "journey" => {
            project
                .journeys
                .iter()
                .find(|x| x.meta.name == name)?
                .entity
        }
        "metric" => project.metrics.iter().find(|x| x.meta.name == name)?.entity,
        "activation" => {
            project
                .activations
                .iter()
                .find(|x| x.meta.name == name)?
                .entity
        }
        _ => return None,
    };
    project
        .entities
        .get(id.index())
        .map(|e| e.meta.name.clone())
}

/// A webhook activation's deliveries: accepted, waiting (with the next attempt) and set aside
/// (with the receiver's last answer). Other definitions: nothing.
fn deliveries_section(app: &Shared, catalog: &Catalog, d: &Definition) -> String {
    let webhook = catalog.project.activations.iter().any(|a| {
        a.meta.name == d.name() && matches!(a.destination, ir::Destination::Webhook { .. })
    });
    if !webhook {
        return String::new();
    }
    let outbox = app.outbox();
    let mine = |list: Vec<cdp_runtime::webhook::Pending>| -> Vec<cdp_runtime::webhook::Pending> {
        list.into_iter()
            .filter(|p| p.delivery.activation == d.name())
            .collect()
    };
    let pending = mine(outbox.pending(10_000).unwrap_or_default());
    let aside = mine(outbox.set_aside().unwrap_or_default());
    let when = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
    };
    let mut body = format!(
        "<div class=\"stats\">{}{}{}</div>",
        stat("delivered", &outbox.delivered(d.name()).to_string()),
        stat("waiting", &pending.len().to_string()),
        stat("set aside", &aside.len().to_string()),
    );
    if pending.is_empty() && aside.is_empty() {
        body.push_str(&empty(
            "Nothing waits: every delivery queued so far was accepted by the receiver.",
        ));
    }
    let rows = |list: &[cdp_runtime::webhook::Pending], next: bool| -> String {
        list.iter()
            .rev()
            .take(20)
            .map(|p| {
                format!(
                    "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&p.idempotency_key()),
                    when(p.queued_at_ms),
                    p.attempts,
                    if next { when(p.next_at_ms) } else { String::new() },
                    esc(p.last_error.as_deref().unwrap_or(""))
                )
            })
            .collect()
    };
    for (id, title, list, next) in [
        ("deliveries-waiting", "Waiting", &pending, true),
        ("deliveries-set-aside", "Set aside", &aside, false),
    ] {
        if !list.is_empty() {
            body.push_str(&format!(
                "<h3>{title}</h3><table id=\"{id}\"><tr><th>Idempotency-Key</th><th>Queued</th>\
                 <th>Attempts</th><th>Next attempt</th><th>Last answer</th></tr>{}</table>",
                rows(list, next)
            ));
        }
    }
    section("deliveries", "Webhook deliveries", &body)
}

/// A segment's latest entries and exits from the transition log, newest first.
fn transitions_section(app: &Shared, d: &Definition) -> String {
    if d.kind() != "segment" {
        return String::new();
    }
    let recent = app
        .transitions()
        .recent(Some(d.name()), 20)
        .unwrap_or_default();
    if recent.is_empty() {
        return section(
            "transitions",
            "Latest entries and exits",
            &empty("No entry or exit recorded yet: they are logged when a run is served."),
        );
    }
    let rows: String = recent
        .iter()
        .map(|l| {
            let (change, class) = match &l.transition.what {
                cdp_runtime::transitions::What::SegmentEnter { .. } => ("entered", "add"),
                _ => ("left", "del"),
            };
            let at = chrono::DateTime::from_timestamp_millis(l.transition.at_ms)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            format!(
                "<tr class=\"{class}\"><td>{at}</td><td><a class=\"mono\" href=\"/profile?entity={e}&key=canonical_id&value={id}\">{id}</a></td><td>{change}</td></tr>",
                e = esc(&l.transition.entity),
                id = esc(&l.transition.profile),
            )
        })
        .collect();
    section(
        "transitions",
        "Latest entries and exits",
        &format!(
            "<table id=\"transitions-table\"><tr><th>At</th><th>Profile</th><th>Change</th></tr>{rows}</table>"
        ),
    )
}

/// The charts of a definition, by kind.
fn overview(catalog: &Catalog, d: &Definition) -> String {
    let body = match d.kind() {
        "source" => source_overview(catalog, d),
        "entity" => entity_overview(catalog, d),
        "attribute" | "feature" => value_overview(catalog, d),
        "behavior" => behavior_overview(catalog, d),
        "segment" => segment_overview(catalog, d),
        "journey" => journey_overview(catalog, d),
        "metric" => metric_overview(catalog, d),
        "activation" => activation_overview(catalog, d),
        _ => String::new(),
    };
    section("overview", "Overview", &body)
}

fn source_overview(catalog: &Catalog, d: &Definition) -> String {
    let Some(source) = catalog
        .project
        .sources
        .iter()
        .find(|s| s.meta.name == d.name())
    else {
        return String::new();
    };
    let mut body = String::from(
        "<table id=\"columns\" data-testid=\"columns\"><thead><tr><th>column</th><th>type</th>\
         <th>nullable</th><th>personal data</th><th>role</th></tr></thead><tbody>",
    );
    for (i, c) in source.columns.iter().enumerate() {
        let role = if source.key.is_some_and(|k| k.index() == i) {
            "key"
        } else if source.time.is_some_and(|t| t.index() == i) {
            "event time"
        } else {
            ""
        };
        let _ = write!(
            body,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{role}</td></tr>",
            esc(&c.name),
            esc(&c.ty.to_string()),
            if c.nullable { "yes" } else { "no" },
            if c.pii { "pii" } else { "" }
        );
    }
    body.push_str("</tbody></table>");
    let rejects: Vec<(f64, f64)> = points_in_time(catalog)
        .into_iter()
        .map(|(t, m)| {
            let rows: u64 = m
                .rejects
                .iter()
                .filter(|r| r.source == d.name())
                .map(|r| r.rows)
                .sum();
            (t, rows as f64)
        })
        .collect();
    body.push_str("<h3>Rows kept aside per run</h3>");
    if rejects.is_empty() {
        body.push_str(&no_run());
    } else if rejects.iter().all(|r| r.1 == 0.0) {
        let _ = write!(
            body,
            "<p class=\"note\" id=\"rejects\">No row of this source was rejected in {} run{}.</p>",
            rejects.len(),
            if rejects.len() == 1 { "" } else { "s" }
        );
    } else {
        body.push_str(&svg::timeline(
            "rejects-chart",
            "Rows kept aside per run",
            &[Series {
                name: "rows kept aside".into(),
                points: rejects,
            }],
        ));
    }
    body
}

fn entity_overview(catalog: &Catalog, d: &Definition) -> String {
    let mut body = String::new();
    let history: Vec<(f64, u64, u64)> = stats_in_time(catalog)
        .into_iter()
        .filter_map(|(t, _, s)| {
            let e = s.entities.iter().find(|e| e.entity == d.name())?;
            Some((t, e.profiles, e.identifiers))
        })
        .collect();
    match history.last() {
        None => body.push_str(&no_run()),
        Some(&(_, profiles, identifiers)) => {
            body.push_str("<div class=\"stats\">");
            body.push_str(&stat("profiles", &num(profiles as f64)));
            body.push_str(&stat("identifiers", &num(identifiers as f64)));
            if profiles > 0 {
                body.push_str(&stat(
                    "identifiers per profile",
                    &num(identifiers as f64 / profiles as f64),
                ));
            }
            body.push_str("</div>");
            body.push_str(&svg::timeline(
                "profiles-chart",
                "Profiles over time",
                &[
                    Series {
                        name: "profiles".into(),
                        points: history.iter().map(|h| (h.0, h.1 as f64)).collect(),
                    },
                    Series {
                        name: "identifiers".into(),
                        points: history.iter().map(|h| (h.0, h.2 as f64)).collect(),
                    },
                ],
            ));
            body.push_str(one_point_note(history.len()));
        }
    }
    if let Some(entity) = catalog
        .project
        .entities
        .iter()
        .find(|e| e.meta.name == d.name())
    {
        body.push_str(
            "<h3>Identity keys</h3><table id=\"keys\"><thead><tr><th>key</th><th>normalized</th>\
             <th>never a key</th><th>at most per profile</th><th>personal data</th></tr></thead><tbody>",
        );
        for k in &entity.keys {
            let _ =
                write!(
                body,
                "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&k.name),
                if k.normalize.is_some() { "yes" } else { "as given" },
                esc(&k
                    .exclude
                    .iter()
                    .map(|e| format!("“{e}”"))
                    .collect::<Vec<_>>()
                    .join(", ")),
                k.max_per_profile.map(|m| m.to_string()).unwrap_or_default(),
                if super::pii_key(catalog, d.name(), &k.name) {
                    "pii"
                } else {
                    ""
                }
            );
        }
        body.push_str("</tbody></table>");
    }
    body
}

fn value_overview(catalog: &Catalog, d: &Definition) -> String {
    let ty = catalog
        .project
        .attributes
        .iter()
        .find(|a| a.meta.name == d.name())
        .map(|a| a.ty.to_string())
        .or_else(|| {
            catalog
                .project
                .features
                .iter()
                .find(|f| f.meta.name == d.name())
                .map(|f| f.ty.to_string())
        })
        .unwrap_or_default();
    let history: Vec<(f64, &ValueStats)> = stats_in_time(catalog)
        .into_iter()
        .filter_map(|(t, _, s)| value_stats(s, d.name()).map(|v| (t, v)))
        .collect();
    let Some(&(_, latest)) = history.last() else {
        return format!("<p class=\"note\">Type {}</p>{}", esc(&ty), no_run());
    };
    let mut body =
        String::from("<div class=\"stats\" id=\"value-stats\" data-testid=\"value-stats\">");
    body.push_str(&stat("type", &ty));
    body.push_str(&stat("profiles with a value", &num(latest.count as f64)));
    body.push_str(&stat(
        "nulls",
        &format!(
            "{} ({}%)",
            num(latest.nulls as f64),
            num(100.0 * latest.null_rate)
        ),
    ));
    if let Some(distinct) = latest.distinct {
        body.push_str(&stat("distinct (approx.)", &num(distinct as f64)));
    }
    let time = matches!(latest.histogram, Histogram::Time { .. });
    for (label, value) in [("min", &latest.min), ("max", &latest.max)] {
        if let Some(v) = value {
            let shown = v.parse::<f64>().map(num).unwrap_or_else(|_| v.clone());
            body.push_str(&stat(label, &shown));
        }
    }
    if let Some(mean) = latest.mean {
        body.push_str(&stat(
            "mean",
            &if time {
                svg::date(mean, true)
            } else {
                num(mean)
            },
        ));
    }
    body.push_str("</div>");
    if latest.pii {
        body.push_str(&empty(
            "This value shows personal data: no value statistics are collected for it.",
        ));
        return body;
    }
    body.push_str("<h3>Distribution, latest run</h3>");
    body.push_str(&histogram_chart(&latest.histogram));
    body.push_str("<div class=\"grid\">");
    if latest.mean.is_some() && !time {
        body.push_str("<div><h3>Mean over time</h3>");
        body.push_str(&svg::timeline(
            "mean-chart",
            "Mean over time",
            &[Series {
                name: "mean".into(),
                points: history
                    .iter()
                    .filter_map(|(t, v)| v.mean.map(|m| (*t, m)))
                    .collect(),
            }],
        ));
        body.push_str("</div>");
    }
    body.push_str("<div><h3>Share of profiles without a value</h3>");
    body.push_str(&svg::timeline(
        "null-rate-chart",
        "Null rate over time (percent)",
        &[Series {
            name: "null %".into(),
            points: history
                .iter()
                .map(|(t, v)| (*t, 100.0 * v.null_rate))
                .collect(),
        }],
    ));
    body.push_str("</div></div>");
    body.push_str(one_point_note(history.len()));
    body
}

fn histogram_chart(histogram: &Histogram) -> String {
    match histogram {
        Histogram::Numeric { bins } | Histogram::Time { bins } if !bins.is_empty() => {
            let time = matches!(histogram, Histogram::Time { .. });
            let show = |v: f64| if time { svg::date(v, false) } else { num(v) };
            let bars: Vec<Bar> = bins
                .iter()
                .map(|b| Bar::new(format!("{} – {}", show(b.lo), show(b.hi)), b.count as f64))
                .collect();
            svg::columns(
                "histogram",
                "Profiles per range of values",
                &bars,
                (&show(bins[0].lo), &show(bins[bins.len() - 1].hi)),
            )
        }
        Histogram::Top { values, other } if !values.is_empty() => {
            let mut bars: Vec<Bar> = values.iter().map(|(v, n)| Bar::new(v, *n as f64)).collect();
            if *other > 0 {
                bars.push(Bar::new("(other values)", *other as f64));
            }
            svg::hbars("histogram", "Most frequent values", &bars, "")
        }
        _ => empty("No values to draw: every profile has null here."),
    }
}

fn behavior_overview(catalog: &Catalog, d: &Definition) -> String {
    let Some(b) = catalog
        .project
        .behaviors
        .iter()
        .find(|b| b.meta.name == d.name())
    else {
        return String::new();
    };
    let source = &catalog.project.sources[b.source.index()];
    let time = source
        .columns
        .get(b.time.index())
        .map(|c| c.name.as_str())
        .unwrap_or("");
    let readers: Vec<String> = d
        .downstream
        .iter()
        .map(|n| format!("<a href=\"/d/{}\">{}</a>", query_value(n), esc(n)))
        .collect();
    format!(
        "<p>Events of <a href=\"/d/{src}\">{src_name}</a>{filter}, dated by <span class=\"mono\">{time}</span>.</p>\
         <p class=\"note\">Read by {readers}.</p>",
        src = query_value(&source.meta.name),
        src_name = esc(&source.meta.name),
        filter = if b.filter.is_some() {
            " that pass its condition"
        } else {
            ""
        },
        time = esc(time),
        readers = if readers.is_empty() {
            "nothing yet".to_string()
        } else {
            readers.join(", ")
        }
    )
}

fn segment_overview(catalog: &Catalog, d: &Definition) -> String {
    let points = population(catalog, d.name());
    let Some(&(_, latest)) = points.last() else {
        return no_run();
    };
    let mut body = String::from("<div class=\"stats\">");
    body.push_str(&stat("profiles now", &num(latest)));
    if let Some((_, stats)) = catalog.latest_stats() {
        let all: u64 = stats.entities.iter().map(|e| e.profiles).sum();
        if all > 0 {
            body.push_str(&stat(
                "of all profiles",
                &format!("{}%", num(100.0 * latest / all as f64)),
            ));
        }
    }
    if points.len() > 1 {
        let (t, before) = points[points.len() - 2];
        let change = latest - before;
        body.push_str(&stat(
            &format!("since {}", svg::date(t, false)),
            &format!("{}{}", if change > 0.0 { "+" } else { "" }, num(change)),
        ));
    }
    body.push_str("</div><h3>Population over time</h3>");
    body.push_str(&svg::timeline(
        "population-chart",
        "Profiles in the segment over time",
        &[Series {
            name: d.name().to_string(),
            points: points.clone(),
        }],
    ));
    body.push_str(one_point_note(points.len()));
    // KPIs of the metrics that measure this segment.
    for metric in catalog.project.metrics.iter().filter(|m| {
        m.segments
            .iter()
            .any(|s| catalog.project.segments[s.index()].meta.name == d.name())
    }) {
        let _ = write!(
            body,
            "<h3>KPIs from <a href=\"/d/{}\">{}</a></h3>",
            query_value(&metric.meta.name),
            esc(&metric.meta.name)
        );
        match kpis(catalog, metric) {
            Err(e) => {
                let _ = write!(
                    body,
                    "<p class=\"error\">The metric's output could not be read: {}</p>",
                    esc(&e)
                );
            }
            Ok(kpis) if kpis.is_empty() => body.push_str(&no_run()),
            Ok(kpis) => {
                body.push_str("<div class=\"grid\">");
                for measure in &metric.measures {
                    let Some(points) = kpis.get(&measure.name).and_then(|m| m.get(d.name())) else {
                        continue;
                    };
                    let _ = write!(
                        body,
                        "<div><h3>{}</h3>{}</div>",
                        esc(&measure.name),
                        svg::timeline(
                            &format!("kpi-{}-{}", metric.meta.name, measure.name),
                            &format!("{} of {} over time", measure.name, d.name()),
                            &[Series {
                                name: measure.name.clone(),
                                points: points.clone(),
                            }],
                        )
                    );
                }
                body.push_str("</div>");
            }
        }
    }
    body
}

fn journey_overview(catalog: &Catalog, d: &Definition) -> String {
    let Some(journey) = catalog
        .project
        .journeys
        .iter()
        .find(|j| j.meta.name == d.name())
    else {
        return String::new();
    };
    let history: Vec<(f64, &cdp_runtime::stats::JourneyStats)> = stats_in_time(catalog)
        .into_iter()
        .filter_map(|(t, _, s)| {
            s.journeys
                .iter()
                .find(|j| j.journey == d.name())
                .map(|j| (t, j))
        })
        .collect();
    let Some(&(_, latest)) = history.last() else {
        return no_run();
    };
    let mut body = String::from("<div class=\"stats\">");
    for (label, n) in [
        ("in the journey", latest.active),
        ("converted (goal)", latest.converted),
        ("completed", latest.completed),
        ("exited", latest.exited),
        ("moved in the last run", latest.moved),
    ] {
        body.push_str(&stat(label, &num(n as f64)));
    }
    body.push_str("</div><h3>Funnel</h3>");
    body.push_str(&journey_funnel(catalog, journey, latest));
    let step_label = |node: u32, stage: &str, step: &str| -> String {
        let what = match journey.nodes.get(node as usize).map(|n| &n.kind) {
            Some(ir::NodeKind::Activate { activation, .. }) => catalog
                .project
                .activations
                .get(activation.index())
                .map(|a| format!("activate {}", a.meta.name))
                .unwrap_or_else(|| step.to_string()),
            _ => step.to_string(),
        };
        format!("{stage} · {what}")
    };
    let bars: Vec<Bar> = latest
        .steps
        .iter()
        .map(|s| Bar::new(step_label(s.node, &s.stage, &s.step), s.profiles as f64))
        .collect();
    if !bars.is_empty() {
        body.push_str("<h3>Where profiles are now</h3>");
        body.push_str(&svg::hbars(
            "journey-steps",
            "Profiles per step, latest run",
            &bars,
            "",
        ));
    }
    body.push_str("<h3>Outcomes over time</h3>");
    let series = |name: &str, f: fn(&cdp_runtime::stats::JourneyStats) -> u64| Series {
        name: name.to_string(),
        points: history.iter().map(|(t, j)| (*t, f(j) as f64)).collect(),
    };
    body.push_str(&svg::timeline(
        "journey-outcomes-chart",
        "Journey outcomes over time",
        &[
            series("in the journey", |j| j.active),
            series("converted", |j| j.converted),
            series("completed", |j| j.completed),
            series("exited", |j| j.exited),
        ],
    ));
    body.push_str(one_point_note(history.len()));
    body
}

/// Entered → reached each stage → converted, from the latest run's journey state (one
/// timestamp per step and profile); without it, from the counts of the run's statistics.
fn journey_funnel(
    catalog: &Catalog,
    journey: &ir::Journey,
    latest: &cdp_runtime::stats::JourneyStats,
) -> String {
    let reach = catalog.latest_run().and_then(|m| {
        let table = m
            .tables
            .iter()
            .find(|t| t.table == format!("{}_state_next", journey.meta.name))?;
        journey_reach(catalog, table, journey).ok()
    });
    let entered_now = latest.active + latest.converted + latest.completed + latest.exited;
    let mut stages = Vec::new();
    match reach {
        Some((entered, per_stage)) => {
            stages.push(Bar::new("entered", entered as f64));
            for (stage, n) in journey.stages.iter().zip(per_stage) {
                stages.push(Bar::new(format!("reached {stage}"), n as f64));
            }
        }
        None => stages.push(Bar::new("entered", entered_now as f64)),
    }
    stages.push(Bar::new("converted (goal)", latest.converted as f64));
    svg::funnel("funnel", "Journey funnel", &stages)
}

/// Profiles that ever entered, and per stage the profiles that reached one of its steps.
fn journey_reach(
    catalog: &Catalog,
    table: &StoredTable,
    journey: &ir::Journey,
) -> Result<(u64, Vec<u64>), String> {
    let mut entered = 0u64;
    let mut per_stage = vec![0u64; journey.stages.len()];
    for batch in batches(catalog, table)? {
        let batch = batch?;
        let rows = batch.num_rows();
        entered += rows as u64;
        let mut reached = vec![vec![false; rows]; journey.stages.len()];
        for (k, node) in journey.nodes.iter().enumerate() {
            let Some(column) = batch.column_by_name(&format!("n{k}_at")) else {
                continue;
            };
            let Some(stage) = reached.get_mut(node.stage as usize) else {
                continue;
            };
            for (row, seen) in stage.iter_mut().enumerate() {
                *seen |= column.is_valid(row);
            }
        }
        for (count, stage) in per_stage.iter_mut().zip(reached) {
            *count += stage.into_iter().filter(|r| *r).count() as u64;
        }
    }
    Ok((entered, per_stage))
}

fn metric_overview(catalog: &Catalog, d: &Definition) -> String {
    let Some(metric) = catalog
        .project
        .metrics
        .iter()
        .find(|m| m.meta.name == d.name())
    else {
        return String::new();
    };
    let names: Vec<String> = if metric.segments.is_empty() {
        vec!["all".to_string()]
    } else {
        metric
            .segments
            .iter()
            .map(|s| catalog.project.segments[s.index()].meta.name.clone())
            .collect()
    };
    let segments: Vec<String> = metric
        .segments
        .iter()
        .map(|s| {
            let n = &catalog.project.segments[s.index()].meta.name;
            format!("<a href=\"/d/{}\">{}</a>", query_value(n), esc(n))
        })
        .collect();
    let mut body = format!(
        "<p>Per {} for {}: {} measure{}.</p>",
        esc(&period(metric.grain_ms)),
        if segments.is_empty() {
            "all profiles".to_string()
        } else {
            segments.join(", ")
        },
        metric.measures.len(),
        if metric.measures.len() == 1 { "" } else { "s" }
    );
    match kpis(catalog, metric) {
        Err(e) => {
            let _ = write!(
                body,
                "<p class=\"error\">The metric's output could not be read: {}</p>",
                esc(&e)
            );
        }
        Ok(kpis) if kpis.is_empty() => body.push_str(&no_run()),
        Ok(kpis) => {
            body.push_str("<div class=\"grid\" id=\"kpi-charts\">");
            let mut points = 0;
            for measure in &metric.measures {
                let Some(by_segment) = kpis.get(&measure.name) else {
                    continue;
                };
                // Every chart lists the segments in the metric's order, so that a segment keeps
                // its colour from chart to chart.
                let series: Vec<Series> = names
                    .iter()
                    .map(|segment| {
                        let p = by_segment.get(segment).cloned().unwrap_or_default();
                        points = points.max(p.len());
                        Series {
                            name: segment.clone(),
                            points: p,
                        }
                    })
                    .collect();
                let _ = write!(
                    body,
                    "<div><h3>{}</h3>{}</div>",
                    esc(&measure.name),
                    svg::timeline(
                        &format!("kpi-{}", measure.name),
                        &format!("{} per segment over time", measure.name),
                        &series
                    )
                );
            }
            body.push_str("</div>");
            body.push_str(one_point_note(points));
        }
    }
    body
}

/// `1d` → `day`, `12h` → `12 hours`.
fn period(ms: u64) -> String {
    let units = [
        (7 * 86_400_000, "week"),
        (86_400_000, "day"),
        (3_600_000, "hour"),
        (60_000, "minute"),
    ];
    for (size, unit) in units {
        if ms >= size && ms.is_multiple_of(size) {
            let n = ms / size;
            return if n == 1 {
                unit.to_string()
            } else {
                format!("{n} {unit}s")
            };
        }
    }
    format!("{ms} ms")
}

fn activation_overview(catalog: &Catalog, d: &Definition) -> String {
    let Some(a) = catalog
        .project
        .activations
        .iter()
        .find(|a| a.meta.name == d.name())
    else {
        return String::new();
    };
    let destination = match &a.destination {
        ir::Destination::File { path, parquet } => format!(
            "file <span class=\"mono\">{}</span> ({})",
            esc(path),
            if *parquet { "Parquet" } else { "CSV" }
        ),
        ir::Destination::Webhook { url } => {
            format!("webhook <span class=\"mono\">{}</span>", esc(url))
        }
        ir::Destination::Postgres { table, .. } => {
            format!(
                "PostgreSQL table <span class=\"mono\">{}</span>",
                esc(table)
            )
        }
    };
    let schedule = match &a.schedule {
        ir::Schedule::Once => "once".to_string(),
        ir::Schedule::EveryMs(ms) => format!("every {}", period(*ms)),
        ir::Schedule::Cron(c) => format!("cron <span class=\"mono\">{}</span>", esc(c)),
    };
    let columns: Vec<String> = profile_columns(&catalog.project, a)
        .iter()
        .map(|c| esc(c))
        .collect();
    let mut body = format!(
        "<div class=\"stats\">{}{}</div><p>To {destination}, {schedule}; columns: <span class=\"mono\">{}</span>.</p>",
        stat("delivers", if a.deliver_changes { "changes" } else { "full list" }),
        stat(
            "audience",
            a.segment
                .map(|s| catalog.project.segments[s.index()].meta.name.as_str())
                .unwrap_or("journey steps")
        ),
        columns.join(", ")
    );
    match a.segment {
        Some(s) => {
            let segment = &catalog.project.segments[s.index()].meta.name;
            let points = population(catalog, segment);
            let _ = write!(
                body,
                "<h3>Audience size: <a href=\"/d/{}\">{}</a></h3>",
                query_value(segment),
                esc(segment)
            );
            if points.is_empty() {
                body.push_str(&no_run());
            } else {
                body.push_str(&svg::timeline(
                    "population-chart",
                    "Profiles exported over time",
                    &[Series {
                        name: segment.clone(),
                        points: points.clone(),
                    }],
                ));
                body.push_str(one_point_note(points.len()));
            }
        }
        None => {
            let journeys: Vec<String> = d
                .downstream
                .iter()
                .chain(
                    catalog
                        .definitions
                        .iter()
                        .filter(|j| {
                            j.kind() == "journey" && j.draft.upstream.iter().any(|u| u == d.name())
                        })
                        .map(|j| &j.draft.name),
                )
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|n| format!("<a href=\"/d/{}\">{}</a>", query_value(n), esc(n)))
                .collect();
            let _ = write!(
                body,
                "<p class=\"note\">Sent per profile by the journeys that activate it{}.</p>",
                if journeys.is_empty() {
                    String::new()
                } else {
                    format!(": {}", journeys.join(", "))
                }
            );
        }
    }
    body
}

fn profile_columns(project: &ir::Project, a: &ir::Activation) -> Vec<String> {
    let entity = &project.entities[a.entity.index()];
    a.columns
        .iter()
        .filter_map(|c| match c {
            ir::ProfileColumn::Key(k) => entity.keys.get(k.index()).map(|k| k.name.clone()),
            ir::ProfileColumn::Attribute(x) => project
                .attributes
                .get(x.index())
                .map(|x| x.meta.name.clone()),
            ir::ProfileColumn::Feature(x) => {
                project.features.get(x.index()).map(|x| x.meta.name.clone())
            }
        })
        .collect()
}

// ------------------------------------------------------------------------------ lineage

fn lineage_section(catalog: &Catalog, d: &Definition) -> String {
    let (mut names, _) = super::api::lineage_of(catalog, d.name());
    let mut note = String::new();
    if names.len() > LINEAGE_MAX {
        // Everything upstream, and only the direct readers.
        let mut keep: BTreeSet<String> = BTreeSet::new();
        let mut stack = vec![d.name().to_string()];
        while let Some(n) = stack.pop() {
            if keep.insert(n.clone()) {
                if let Some(x) = catalog.definition(&n) {
                    stack.extend(x.draft.upstream.iter().cloned());
                }
            }
        }
        keep.extend(d.downstream.iter().cloned());
        note = format!(
            "<p class=\"note\">{} more definitions read this one through others; the graph shows its direct readers.</p>",
            names.len() - keep.len()
        );
        names = keep.into_iter().collect();
    }
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let nodes: Vec<svg::Node> = names
        .iter()
        .map(|n| svg::Node {
            name: n.clone(),
            kind: catalog
                .definition(n)
                .map(|x| x.kind().to_string())
                .unwrap_or_default(),
            href: format!("/d/{}#lineage", query_value(n)),
            focus: n == d.name(),
        })
        .collect();
    let mut edges = Vec::new();
    for (to, n) in names.iter().enumerate() {
        if let Some(x) = catalog.definition(n) {
            for up in &x.draft.upstream {
                if let Some(&from) = index.get(up.as_str()) {
                    edges.push((from, to));
                }
            }
        }
    }
    if edges.is_empty() {
        return section(
            "lineage",
            "Lineage",
            &empty("Nothing reads this definition and it reads no other definition."),
        );
    }
    let kinds: BTreeSet<&str> = nodes.iter().map(|n| n.kind.as_str()).collect();
    let legend: Vec<String> = KINDS
        .iter()
        .filter(|k| kinds.contains(k.0))
        .map(|k| badge(k.0))
        .collect();
    section(
        "lineage",
        "Lineage",
        &format!(
            "<p class=\"note\">What it reads on the left, what reads it on the right; each box opens its page. {}</p>{}{note}",
            legend.join(" "),
            svg::lineage(
                "lineage-graph",
                &format!("Lineage of {}", d.name()),
                &nodes,
                &edges
            )
        ),
    )
}

// ------------------------------------------------------------------------------ history

/// One recorded version of a definition, with the snapshot that recorded it.
#[derive(Default)]
struct VersionRow {
    version: u32,
    hash: String,
    author: String,
    time: String,
    message: String,
    text: String,
}

fn history_section(app: &Shared, d: &Definition, query: &DefinitionQuery) -> String {
    let name = d.name().to_string();
    let versions = app.with_registry(|r| {
        let mut out = Vec::new();
        for v in r.versions(&name)? {
            let text = r.text(&v)?;
            let snapshot = r.snapshot(v.snapshot)?;
            out.push(VersionRow {
                version: v.version,
                hash: v.hash.clone(),
                author: snapshot
                    .as_ref()
                    .map(|s| s.author.clone())
                    .unwrap_or_default(),
                time: snapshot
                    .as_ref()
                    .map(|s| s.time.clone())
                    .unwrap_or_default(),
                message: snapshot.map(|s| s.message).unwrap_or_default(),
                text,
            });
        }
        Ok(out)
    });
    let versions = match versions {
        Ok(v) => v,
        Err(e) => {
            return section(
                "history",
                "History",
                &format!(
                    "<p class=\"error\">The registry could not be read: {}</p>",
                    esc(&e)
                ),
            )
        }
    };
    let Some(latest) = versions.last() else {
        return section(
            "history",
            "History",
            &empty(
                "Not in the registry yet: <code>cdp apply</code> records it as version 1, and every \
                 later change as a new version you can compare here.",
            ),
        );
    };
    let unapplied = latest.hash != d.draft.hash;
    let mut body = String::new();
    if unapplied {
        let _ = write!(
            body,
            "<p class=\"empty\" id=\"unapplied\">The files differ from version {v}, the latest applied: \
             <a href=\"?from={v}&amp;to=files#history\">see what changed</a>, then <code>cdp apply</code>.</p>",
            v = latest.version
        );
    }
    body.push_str("<ol class=\"versions\" id=\"versions\" data-testid=\"versions\">");
    for (i, v) in versions.iter().enumerate().rev() {
        let compare = if i > 0 {
            format!(
                "<a href=\"?from={}&amp;to={}#history\">compare with v{}</a>",
                versions[i - 1].version,
                v.version,
                versions[i - 1].version
            )
        } else {
            "first version".to_string()
        };
        let _ = write!(
            body,
            "<li id=\"version-{n}\" data-testid=\"version-{n}\" data-version=\"{n}\"><b>v{n}</b>\
             <span>{time}</span><span>{author}</span><span class=\"desc\">{message}</span>\
             <span class=\"mono note\" title=\"{hash}\">{short}</span><span>{compare}</span></li>",
            n = v.version,
            time = esc(&v.time),
            author = esc(&v.author),
            message = esc(&v.message),
            hash = esc(&v.hash),
            short = esc(&v.hash.chars().take(10).collect::<String>()),
        );
    }
    body.push_str("</ol>");
    // Which two texts to compare: the query's, else the latest change (or the unapplied one).
    let pick = |which: &str| -> Option<(String, &str)> {
        if which == "files" {
            return Some(("the files now".into(), d.draft.text.as_str()));
        }
        let n: u32 = which.trim_start_matches('v').parse().ok()?;
        versions
            .iter()
            .find(|v| v.version == n)
            .map(|v| (format!("v{} · {}", v.version, v.time), v.text.as_str()))
    };
    let default = if unapplied {
        Some((latest.version.to_string(), "files".to_string()))
    } else if versions.len() > 1 {
        Some((
            versions[versions.len() - 2].version.to_string(),
            latest.version.to_string(),
        ))
    } else {
        None
    };
    let chosen = match (&query.from, &query.to) {
        (Some(f), Some(t)) => Some((f.clone(), t.clone())),
        _ => default,
    };
    match chosen {
        None => body.push_str(&empty(
            "One version so far: after the next change and <code>cdp apply</code>, the two \
             versions are compared here side by side.",
        )),
        Some((from, to)) => match (pick(&from), pick(&to)) {
            (Some((from_title, old)), Some((to_title, new))) => {
                let _ = write!(body, "<h3>{} → {}</h3>", esc(&from_title), esc(&to_title));
                body.push_str(&side_by_side(old, new, &from_title, &to_title));
            }
            _ => body.push_str(&empty(&format!(
                "No version “{}” or “{}” of this definition to compare.",
                esc(&from),
                esc(&to)
            ))),
        },
    }
    section("history", "History", &body)
}

/// One line of a line diff: in both texts, only in the old one, only in the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Same(usize, usize),
    Old(usize),
    New(usize),
}

/// The shortest edit from `a` to `b` (longest common subsequence of lines); texts too large for
/// the quadratic table are compared as one change between their common ends.
fn diff_lines(a: &[&str], b: &[&str]) -> Vec<Line> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);
    let mut out: Vec<Line> = (0..prefix).map(|i| Line::Same(i, i)).collect();
    let (n, m) = (am.len(), bm.len());
    let (mut i, mut j) = (0, 0);
    if n.saturating_mul(m) <= 4_000_000 {
        let width = m + 1;
        let mut lcs = vec![0u32; (n + 1) * width];
        for x in (0..n).rev() {
            for y in (0..m).rev() {
                lcs[x * width + y] = if am[x] == bm[y] {
                    lcs[(x + 1) * width + y + 1] + 1
                } else {
                    lcs[(x + 1) * width + y].max(lcs[x * width + y + 1])
                };
            }
        }
        while i < n && j < m {
            if am[i] == bm[j] {
                out.push(Line::Same(prefix + i, prefix + j));
                i += 1;
                j += 1;
            } else if lcs[(i + 1) * width + j] >= lcs[i * width + j + 1] {
                out.push(Line::Old(prefix + i));
                i += 1;
            } else {
                out.push(Line::New(prefix + j));
                j += 1;
            }
        }
    }
    out.extend((i..n).map(|x| Line::Old(prefix + x)));
    out.extend((j..m).map(|y| Line::New(prefix + y)));
    out.extend((0..suffix).map(|k| Line::Same(a.len() - suffix + k, b.len() - suffix + k)));
    out
}

/// Two columns, old and new, with changed lines highlighted and, within a changed pair of
/// lines, the part that differs marked.
fn side_by_side(old: &str, new: &str, old_title: &str, new_title: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = diff_lines(&a, &b);
    let mut rows = String::new();
    let (mut olds, mut news): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let mut changed = 0;
    let flush = |olds: &mut Vec<usize>, news: &mut Vec<usize>, rows: &mut String| {
        for k in 0..olds.len().max(news.len()) {
            let (l, r) = (olds.get(k).map(|&i| a[i]), news.get(k).map(|&j| b[j]));
            let (lt, rt) = match (l, r) {
                (Some(l), Some(r)) => marked(l, r),
                (Some(l), None) => (esc(l), String::new()),
                (None, Some(r)) => (String::new(), esc(r)),
                (None, None) => (String::new(), String::new()),
            };
            let _ = write!(
                rows,
                "<tr class=\"change\"><td class=\"ln\">{}</td><td class=\"{}\">{lt}</td><td class=\"ln\">{}</td><td class=\"{}\">{rt}</td></tr>",
                olds.get(k).map(|i| (i + 1).to_string()).unwrap_or_default(),
                if l.is_some() { "del" } else { "" },
                news.get(k).map(|j| (j + 1).to_string()).unwrap_or_default(),
                if r.is_some() { "add" } else { "" },
            );
        }
        olds.clear();
        news.clear();
    };
    for op in ops {
        match op {
            Line::Same(i, j) => {
                flush(&mut olds, &mut news, &mut rows);
                let _ = write!(
                    rows,
                    "<tr><td class=\"ln\">{}</td><td>{}</td><td class=\"ln\">{}</td><td>{}</td></tr>",
                    i + 1,
                    esc(a[i]),
                    j + 1,
                    esc(b[j])
                );
            }
            Line::Old(i) => {
                changed += 1;
                olds.push(i)
            }
            Line::New(j) => {
                changed += 1;
                news.push(j)
            }
        }
    }
    flush(&mut olds, &mut news, &mut rows);
    let summary = if changed == 0 {
        "<p class=\"note\">The two texts are identical.</p>".to_string()
    } else {
        String::new()
    };
    format!(
        "{summary}<table class=\"diff\" id=\"diff\" data-testid=\"diff\" data-changed-lines=\"{changed}\">\
         <colgroup><col style=\"width:2.8rem\"><col><col style=\"width:2.8rem\"><col></colgroup>\
         <thead><tr><th></th><th>{}</th><th></th><th>{}</th></tr></thead><tbody>{rows}</tbody></table>",
        esc(old_title),
        esc(new_title)
    )
}

/// A changed pair of lines with their differing middles marked.
fn marked(old: &str, new: &str) -> (String, String) {
    let (a, b): (Vec<char>, Vec<char>) = (old.chars().collect(), new.chars().collect());
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mark = |s: &[char]| {
        let text = |r: &[char]| esc(&r.iter().collect::<String>());
        let middle = &s[prefix..s.len() - suffix];
        if middle.is_empty() {
            text(s)
        } else {
            format!(
                "{}<mark>{}</mark>{}",
                text(&s[..prefix]),
                text(middle),
                text(&s[s.len() - suffix..])
            )
        }
    };
    (mark(&a), mark(&b))
}

// ------------------------------------------------------------------------------ compiled SQL

fn sql_section(catalog: &Catalog, d: &Definition, query: &DefinitionQuery) -> String {
    let chosen = query
        .dialect
        .as_deref()
        .and_then(Dialect::from_name)
        .unwrap_or(Dialect::ALL[0]);
    let keep = match (&query.from, &query.to) {
        (Some(f), Some(t)) => format!("&amp;from={}&amp;to={}", query_value(f), query_value(t)),
        _ => String::new(),
    };
    let mut body = String::from("<nav class=\"tabs\" id=\"sql-dialects\">");
    for dialect in Dialect::ALL {
        let _ = write!(
            body,
            "<a href=\"?dialect={name}{keep}#sql\" data-dialect=\"{name}\"{}>{name}</a>",
            active(dialect == chosen),
            name = dialect.name()
        );
    }
    body.push_str("</nav>");
    let sql = catalog.sql(d.name(), chosen);
    if sql.trim().is_empty() {
        body.push_str(&empty(&format!(
            "No statement computes {} on its own: it is compiled into the statements of what reads it \
             (see the lineage).",
            esc(d.name())
        )));
    } else {
        let _ = write!(
            body,
            "<pre id=\"sql-text\" data-testid=\"sql-text\" data-dialect=\"{}\">{}</pre>",
            chosen.name(),
            esc(sql.trim_end())
        );
    }
    section("sql", "Compiled SQL", &body)
}

// ------------------------------------------------------------------------------ data preview

/// A few profiles related to the definition, from the online store, personal data masked for
/// the caller as the API masks it.
fn preview_section(app: &Shared, catalog: &Catalog, d: &Definition, caller: &Caller) -> String {
    let title = "Data preview";
    if matches!(d.kind(), "source" | "behavior" | "metric") {
        return section(
            "preview",
            title,
            &empty("Profiles are previewed on the pages of entities, attributes, features, segments, journeys and activations."),
        );
    }
    let Some(entity) = entity_of(&catalog.project, d) else {
        return String::new();
    };
    let Some(run) = catalog.latest_run() else {
        return section("preview", title, &no_run());
    };
    let (table, segment) = match d.kind() {
        "segment" => (format!("{entity}_segments"), Some(d.name())),
        "activation" => {
            let segment = catalog
                .project
                .activations
                .iter()
                .find(|a| a.meta.name == d.name())
                .and_then(|a| a.segment)
                .map(|s| catalog.project.segments[s.index()].meta.name.as_str());
            match segment {
                Some(s) => (format!("{entity}_segments"), Some(s)),
                None => (format!("{entity}_profile"), None),
            }
        }
        "journey" => (format!("{}_state_next", d.name()), None),
        _ => (format!("{entity}_profile"), None),
    };
    let Some(stored) = run.tables.iter().find(|t| t.table == table) else {
        return section(
            "preview",
            title,
            &empty(&format!(
                "The latest run wrote no <code>{}</code> table: run <code>cdp run</code> again.",
                esc(&table)
            )),
        );
    };
    let ids = match first_ids(catalog, stored, segment, PREVIEW_ROWS) {
        Ok(ids) => ids,
        Err(e) => {
            return section(
                "preview",
                title,
                &format!("<p class=\"error\">{}</p>", esc(&e)),
            )
        }
    };
    let Some(online) = app.online() else {
        return section("preview", title, &no_run());
    };
    let profiles: Vec<Profile> = ids
        .iter()
        .filter_map(|id| online.profile(&entity, id).ok().flatten())
        .collect();
    if profiles.is_empty() {
        return section(
            "preview",
            title,
            &empty(match d.kind() {
                "segment" | "activation" => "No profile is in the audience as of the latest run.",
                "journey" => "No profile has entered the journey yet.",
                _ => "No profile yet.",
            }),
        );
    }
    let columns = preview_columns(catalog, d, &profiles[0]);
    let journey = (d.kind() == "journey").then(|| d.name());
    let mut body = String::from(
        "<div style=\"overflow:auto\"><table id=\"preview-table\" data-testid=\"preview-table\"><thead><tr><th>profile</th><th>keys</th>",
    );
    if journey.is_some() {
        body.push_str("<th>stage · step</th><th>status</th><th>since</th>");
    }
    for c in &columns {
        let _ = write!(
            body,
            "<th><a href=\"/d/{}\">{}</a></th>",
            query_value(c),
            esc(c)
        );
    }
    body.push_str("</tr></thead><tbody>");
    for p in &profiles {
        let _ = write!(
            body,
            "<tr><td class=\"mono\"><a href=\"/profile?entity={}&amp;key=canonical_id&amp;value={}\">{}</a></td><td>{}</td>",
            query_value(&entity),
            query_value(&p.canonical_id),
            esc(&p.canonical_id),
            keys_summary(catalog, caller, p)
        );
        if let Some(j) = journey {
            let position = p.journeys.iter().find(|x| x.journey == j);
            let _ = write!(
                body,
                "<td>{}</td><td>{}</td><td>{}</td>",
                position
                    .map(|x| esc(&format!(
                        "{} · {}",
                        x.stage.as_deref().unwrap_or("?"),
                        x.step.as_deref().unwrap_or("?")
                    )))
                    .unwrap_or_default(),
                position
                    .and_then(|x| x.status.as_deref())
                    .map(esc)
                    .unwrap_or_default(),
                position
                    .and_then(|x| x.since.as_deref())
                    .map(esc)
                    .unwrap_or_default(),
            );
        }
        for c in &columns {
            let value = p.values.iter().find(|v| &v.name == c).map(|v| &v.value);
            let _ = write!(
                body,
                "<td>{}</td>",
                shown_value(catalog, caller, c, value.unwrap_or(&Value::Null))
            );
        }
        body.push_str("</tr>");
    }
    let _ = write!(
        body,
        "</tbody></table></div><p class=\"note\">The first {} profile{} of the latest run, as the online store serves them{}.</p>",
        profiles.len(),
        if profiles.len() == 1 { "" } else { "s" },
        if caller.pii {
            ""
        } else {
            "; personal data is masked for this key"
        }
    );
    section("preview", title, &body)
}

/// The values a preview shows: the definition itself, or what it reads, or its exported columns.
fn preview_columns(catalog: &Catalog, d: &Definition, sample: &Profile) -> Vec<String> {
    let known = |n: &str| sample.values.iter().any(|v| v.name == n);
    let mut columns: Vec<String> = match d.kind() {
        "attribute" | "feature" => vec![d.name().to_string()],
        "activation" => catalog
            .project
            .activations
            .iter()
            .find(|a| a.meta.name == d.name())
            .map(|a| profile_columns(&catalog.project, a))
            .unwrap_or_default(),
        "segment" | "journey" => d
            .draft
            .upstream
            .iter()
            .filter(|u| {
                catalog
                    .definition(u)
                    .is_some_and(|x| matches!(x.kind(), "attribute" | "feature"))
            })
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    columns.retain(|c| known(c));
    if columns.is_empty() {
        columns = sample
            .values
            .iter()
            .take(6)
            .map(|v| v.name.clone())
            .collect();
    }
    columns.truncate(8);
    columns
}

/// The first ids of a table of the latest run, optionally only the rows of one segment.
fn first_ids(
    catalog: &Catalog,
    table: &StoredTable,
    segment: Option<&str>,
    n: usize,
) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for batch in batches(catalog, table)? {
        let batch = batch?;
        let id = strings(&batch, "canonical_id").unwrap_or_default();
        let segments = segment.and_then(|_| strings(&batch, "segment"));
        for (i, id) in id.into_iter().enumerate() {
            let wanted = match (&segments, segment) {
                (Some(s), Some(name)) => s.get(i).and_then(|s| s.as_deref()) == Some(name),
                _ => true,
            };
            if let (true, Some(id)) = (wanted, id) {
                ids.push(id);
                if ids.len() == n {
                    return Ok(ids);
                }
            }
        }
    }
    Ok(ids)
}

/// A value for people: lists joined, null as a dash, personal data masked for the caller.
fn shown_value(catalog: &Catalog, caller: &Caller, name: &str, value: &Value) -> String {
    if !caller.pii && catalog.pii.masked(name) && !value.is_null() {
        return "<span class=\"masked\" title=\"personal data: masked for this key\">masked</span>"
            .into();
    }
    match value {
        Value::Null => "<span class=\"null\">—</span>".into(),
        other => esc(&value_text(other)),
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) => num(f),
            _ => n.to_string(),
        },
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn shown_key(catalog: &Catalog, caller: &Caller, entity: &str, key: &str, value: &str) -> String {
    if !caller.pii && super::pii_key(catalog, entity, key) {
        format!(
            "<span class=\"masked\" title=\"personal data: masked for this key\">{}</span>",
            esc(&super::mask(value))
        )
    } else {
        esc(value)
    }
}

/// The first value of each identity key of a profile (and how many more).
fn keys_summary(catalog: &Catalog, caller: &Caller, p: &Profile) -> String {
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for k in &p.keys {
        by_key.entry(&k.key).or_default().push(&k.value);
    }
    let parts: Vec<String> = by_key
        .iter()
        .map(|(key, values)| {
            format!(
                "<span class=\"note\">{}</span> {}{}",
                esc(key),
                shown_key(catalog, caller, &p.entity, key, values[0]),
                if values.len() > 1 {
                    format!(" <span class=\"note\">+{}</span>", values.len() - 1)
                } else {
                    String::new()
                }
            )
        })
        .collect();
    parts.join("<br>")
}

// ------------------------------------------------------------------------------ profile

#[derive(Deserialize)]
struct ProfileQuery {
    entity: Option<String>,
    key: Option<String>,
    value: Option<String>,
}

async fn profile(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<ProfileQuery>,
) -> Response {
    let Some(catalog) = app.catalog() else {
        return not_loaded(&app, &caller);
    };
    let top = Top {
        catalog: Some(&catalog),
        caller: Some(&caller),
        active: "profile",
        query: "",
    };
    let entity = query
        .entity
        .clone()
        .or_else(|| {
            catalog
                .project
                .entities
                .first()
                .map(|e| e.meta.name.clone())
        })
        .unwrap_or_default();
    let key = query.key.clone().unwrap_or_else(|| {
        catalog
            .project
            .entities
            .iter()
            .find(|e| e.meta.name == entity)
            .and_then(|e| e.keys.first())
            .map(|k| k.name.clone())
            .unwrap_or_default()
    });
    let value = query.value.clone().unwrap_or_default();
    let form = |message: &str| {
        format!(
            "<h1>Find a profile</h1>{message}<div class=\"card\">{}</div>",
            profile_form(&catalog, Some(&entity), Some(&key), &value)
        )
    };
    if value.trim().is_empty() {
        return html(
            StatusCode::OK,
            page(
                "Profiles",
                &top,
                &form("<p class=\"sub\">By any identity key, or by canonical id.</p>"),
            ),
        );
    }
    let Some(e) = catalog
        .project
        .entities
        .iter()
        .find(|e| e.meta.name == entity)
    else {
        return html(
            StatusCode::NOT_FOUND,
            page(
                "Not found",
                &top,
                &form(&empty(&format!("There is no entity “{}”.", esc(&entity)))),
            ),
        );
    };
    if key != "canonical_id" && !e.keys.iter().any(|k| k.name == key) {
        let keys: Vec<&str> = e.keys.iter().map(|k| k.name.as_str()).collect();
        return html(
            StatusCode::NOT_FOUND,
            page(
                "Not found",
                &top,
                &form(&empty(&format!(
                    "{} has no identity key “{}”: its keys are {}, and canonical_id.",
                    esc(&entity),
                    esc(&key),
                    esc(&keys.join(", "))
                ))),
            ),
        );
    }
    let Some(online) = app.online() else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            page("Profiles", &top, &no_run()),
        );
    };
    match super::lookup(&app, &online, &entity, &key, value.trim()).await {
        Err(e) => html(
            StatusCode::INTERNAL_SERVER_ERROR,
            page(
                "Error",
                &top,
                &form(&format!("<p class=\"error\">{}</p>", esc(&e))),
            ),
        ),
        Ok(None) => {
            let message = if catalog.latest_run().is_none() {
                no_run()
            } else {
                empty(&format!(
                    "No {} profile has {} = “{}” as of the latest run. Values are normalized as the \
                     entity declares before they are looked up.",
                    esc(&entity),
                    esc(&key),
                    esc(&value)
                ))
            };
            html(
                StatusCode::NOT_FOUND,
                page(
                    "Not found",
                    &top,
                    &format!("<div id=\"profile-not-found\">{}</div>", form(&message)),
                ),
            )
        }
        Ok(Some(p)) => html(
            StatusCode::OK,
            page(
                &format!("{} {}", p.entity, p.canonical_id),
                &top,
                &profile_body(&catalog, &caller, &p, &key, &value),
            ),
        ),
    }
}

fn profile_body(catalog: &Catalog, caller: &Caller, p: &Profile, key: &str, value: &str) -> String {
    let mut body = format!(
        "<p class=\"note\"><a href=\"/d/{e}\">{entity}</a> profile</p>\
         <h1 id=\"canonical-id\" data-testid=\"canonical-id\" class=\"mono\">{id}</h1>\
         <p class=\"sub\">As of {as_of} (run <span class=\"mono\">{run}</span>){merged}</p>\
         <div class=\"card\">{form}</div><div class=\"grid\">",
        e = query_value(&p.entity),
        entity = esc(&p.entity),
        id = esc(&p.canonical_id),
        as_of = esc(&p.as_of),
        run = esc(&p.run),
        merged = match &p.merged_from {
            Some(old) => format!(
                " · found by <span class=\"mono\">{}</span>, merged into this profile",
                esc(old)
            ),
            None => String::new(),
        },
        form = profile_form(catalog, Some(&p.entity), Some(key), value),
    );
    let mut keys = String::from(
        "<table id=\"profile-keys-table\"><thead><tr><th>key</th><th>value</th></tr></thead><tbody>",
    );
    for k in &p.keys {
        let _ = write!(
            keys,
            "<tr><td class=\"mono\">{}</td><td data-key=\"{}\">{}</td></tr>",
            esc(&k.key),
            esc(&k.key),
            shown_key(catalog, caller, &p.entity, &k.key, &k.value)
        );
    }
    keys.push_str("</tbody></table>");
    if !caller.pii {
        keys.push_str(
            "<p class=\"note\">Keys that read personal data are masked for this key.</p>",
        );
    }
    body.push_str(&section("profile-keys", "Identity keys", &keys));
    let segments = if p.segments.is_empty() {
        empty("In no segment as of this run.")
    } else {
        let chips: Vec<String> = p
            .segments
            .iter()
            .map(|s| {
                format!(
                    "<li data-segment=\"{}\"><a href=\"/d/{}\">{}</a></li>",
                    esc(s),
                    query_value(s),
                    esc(s)
                )
            })
            .collect();
        format!(
            "<ul class=\"chips\" id=\"segment-list\">{}</ul>",
            chips.join("")
        )
    };
    body.push_str(&section(
        "profile-segments",
        &format!("Segments ({})", p.segments.len()),
        &segments,
    ));
    body.push_str("</div>");
    let journeys = if p.journeys.is_empty() {
        empty("In no journey.")
    } else {
        let mut t = String::from(
            "<table><thead><tr><th>journey</th><th>stage</th><th>step</th><th>status</th>\
             <th>since</th><th>entered</th><th>finished</th></tr></thead><tbody>",
        );
        for j in &p.journeys {
            let cell = |v: &Option<String>| v.as_deref().map(esc).unwrap_or_default();
            let _ = write!(
                t,
                "<tr data-journey=\"{}\"><td><a href=\"/d/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&j.journey),
                query_value(&j.journey),
                esc(&j.journey),
                cell(&j.stage),
                cell(&j.step),
                cell(&j.status),
                cell(&j.since),
                cell(&j.entered_at),
                cell(&j.finished_at)
            );
        }
        t.push_str("</tbody></table>");
        t
    };
    body.push_str(&section("profile-journeys", "Journeys", &journeys));
    for (kind, title) in [("attribute", "Attributes"), ("feature", "Features")] {
        let mut t = String::from("<table><tbody>");
        let mut any = false;
        for v in p.values.iter().filter(|v| v.kind == kind) {
            any = true;
            let _ = write!(
                t,
                "<tr data-value=\"{}\"><td class=\"mono\" style=\"width:40%\"><a href=\"/d/{}\">{}</a></td><td>{}</td></tr>",
                esc(&v.name),
                query_value(&v.name),
                esc(&v.name),
                shown_value(catalog, caller, &v.name, &v.value)
            );
        }
        t.push_str("</tbody></table>");
        if any {
            body.push_str(&section(&format!("profile-{kind}s"), title, &t));
        }
    }
    body
}

// ------------------------------------------------------------------------------ runs

async fn runs_page(State(app): State<Shared>, Extension(caller): Extension<Caller>) -> Response {
    let Some(catalog) = app.catalog() else {
        return not_loaded(&app, &caller);
    };
    let top = Top {
        catalog: Some(&catalog),
        caller: Some(&caller),
        active: "runs",
        query: "",
    };
    let mut body = format!(
        "<h1>Runs</h1><p class=\"sub\">{} committed run{} of the offline store</p>",
        catalog.runs.len(),
        if catalog.runs.len() == 1 { "" } else { "s" }
    );
    if catalog.runs.is_empty() {
        body.push_str(&no_run());
        return html(StatusCode::OK, page("Runs", &top, &body));
    }
    let profiles: Vec<(f64, f64)> = stats_in_time(&catalog)
        .into_iter()
        .map(|(t, _, s)| (t, s.entities.iter().map(|e| e.profiles).sum::<u64>() as f64))
        .collect();
    body.push_str("<div class=\"grid\">");
    body.push_str(&section(
        "runs-profiles",
        "Profiles per as-of time",
        &svg::timeline(
            "runs-profiles-chart",
            "Profiles per as-of time",
            &[Series {
                name: "profiles".into(),
                points: profiles,
            }],
        ),
    ));
    let times: Vec<Bar> = catalog
        .runs
        .iter()
        .rev()
        .take(20)
        .map(|m| {
            Bar::new(
                format!("{} ({})", m.finished_at, m.as_of),
                total_millis(m) as f64,
            )
        })
        .collect();
    body.push_str(&section(
        "runs-times",
        "Step time of the latest runs",
        &svg::hbars("runs-times-chart", "Step time per run", &times, " ms"),
    ));
    body.push_str("</div>");
    let mut table = String::from(
        "<table id=\"runs-table\"><thead><tr><th>run</th><th>as of</th><th>finished (UTC)</th>\
         <th>step time</th><th>rows written</th><th>rows kept aside</th></tr></thead><tbody>",
    );
    for m in catalog.runs.iter().rev() {
        let rejects: u64 = m.rejects.iter().map(|r| r.rows).sum();
        let _ = write!(
            table,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{} s</td><td>{}</td><td>{}</td></tr>",
            esc(&m.run),
            esc(&m.as_of),
            esc(&m.finished_at),
            num(total_millis(m) as f64 / 1000.0),
            num(total_rows(m) as f64),
            num(rejects as f64)
        );
    }
    table.push_str("</tbody></table>");
    body.push_str(&section("runs", "Every run", &table));
    html(StatusCode::OK, page("Runs", &top, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_diff_keeps_the_common_lines() {
        let a = ["segment x {", "  a > 1", "  and b", "}"];
        let b = ["segment x {", "  a > 2", "  and b", "  and c", "}"];
        let ops = diff_lines(&a, &b);
        let same = ops.iter().filter(|o| matches!(o, Line::Same(..))).count();
        assert_eq!(same, 3);
        assert!(ops.contains(&Line::Old(1)) && ops.contains(&Line::New(1)));
        assert!(ops.contains(&Line::New(3)));
    }

    #[test]
    fn side_by_side_marks_the_changed_part() {
        let html = side_by_side("a >= 500\nx", "a >= 400\nx", "v1", "v2");
        assert!(html.contains("<mark>5</mark>"), "{html}");
        assert!(html.contains("<mark>4</mark>"), "{html}");
        assert!(html.contains("data-changed-lines=\"2\""), "{html}");
    }

    #[test]
    fn periods_read_as_words() {
        assert_eq!(period(86_400_000), "day");
        assert_eq!(period(12 * 3_600_000), "12 hours");
    }
}
