//! The JSON API under `/api/v1`, described by the OpenAPI document at `/api/v1/openapi.json`.
//!
//! Every request carries a key (see [`super::auth`]); errors are JSON bodies
//! `{"error": {"code": "...", "message": "..."}}` with a 4xx status for the caller's mistakes.
//! Values that show personal data are masked for keys without the `pii` right.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use cdp_compiler::sql::Dialect;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Caller, Role};
use super::catalog::Catalog;
use super::{App, Shared};

/// An API error: status, a stable code, and a message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn bad_request(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", what)
    }

    pub fn internal(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            what.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/definitions", get(definitions))
        .route("/definitions/{name}", get(definition))
        .route("/definitions/{name}/versions", get(versions))
        .route("/definitions/{name}/sql", get(sql))
        .route("/definitions/{name}/lineage", get(lineage))
        .route("/definitions/{name}/stats", get(stats))
        .route("/runs", get(runs))
        .route("/features", post(features))
        .route("/profiles/{entity}/{key}/{value}", get(profile))
        .route("/profiles/{entity}/{key}/{value}/segments", get(segments))
        .route("/transitions", get(transitions))
        .route("/live", get(live_status))
        .route("/live/{entity}/{key}/{value}", get(live_profile))
        .route("/keys", get(list_keys).post(create_key))
        .route("/keys/{name}", delete(revoke_key))
        .fallback(unknown_route)
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no API endpoint at {}; see /api/v1/openapi.json",
        uri.path()
    ))
}

async fn openapi() -> Json<Value> {
    Json(super::openapi::document())
}

fn catalog(app: &App) -> Result<Arc<Catalog>, ApiError> {
    app.catalog().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "project_not_loaded",
            app.load_error()
                .unwrap_or_else(|| "the project is not loaded".into()),
        )
    })
}

fn summary(d: &super::catalog::Definition) -> Value {
    json!({
        "name": d.name(),
        "kind": d.kind(),
        "description": d.draft.description,
        "owner": d.draft.owner,
        "tags": d.draft.tags,
        "file": d.draft.file,
        "line": d.draft.line,
    })
}

#[derive(Deserialize)]
struct ListQuery {
    kind: Option<String>,
    q: Option<String>,
}

async fn definitions(State(app): State<Shared>, Query(query): Query<ListQuery>) -> ApiResult {
    let catalog = catalog(&app)?;
    let found: Vec<&super::catalog::Definition> = match &query.q {
        Some(q) => catalog.search(q),
        None => catalog.definitions.iter().collect(),
    };
    let items: Vec<Value> = found
        .into_iter()
        .filter(|d| query.kind.as_deref().is_none_or(|k| d.kind() == k))
        .map(summary)
        .collect();
    Ok(Json(json!({ "definitions": items })))
}

fn find<'c>(catalog: &'c Catalog, name: &str) -> Result<&'c super::catalog::Definition, ApiError> {
    catalog.definition(name).ok_or_else(|| {
        let near =
            cdp_grammar::diag::nearest_name(name, catalog.definitions.iter().map(|d| d.name()));
        ApiError::not_found(match near {
            Some(n) => format!("no definition named `{name}`; did you mean `{n}`?"),
            None => format!("no definition named `{name}`"),
        })
    })
}

async fn definition(State(app): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let catalog = catalog(&app)?;
    let d = find(&catalog, &name)?;
    let mut body = summary(d);
    body["text"] = json!(d.draft.text);
    body["hash"] = json!(d.draft.hash);
    body["upstream"] = json!(d.draft.upstream);
    body["downstream"] = json!(d.downstream);
    body["pii"] = json!(catalog.pii.masked(&name));
    Ok(Json(body))
}

async fn versions(State(app): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let catalog = catalog(&app)?;
    find(&catalog, &name)?;
    let versions = app
        .with_registry(|r| {
            let mut out = Vec::new();
            for v in r.versions(&name)? {
                let text = r.text(&v)?;
                let snapshot = r.snapshot(v.snapshot)?;
                out.push(json!({
                    "version": v.version,
                    "hash": v.hash,
                    "snapshot": v.snapshot,
                    "author": snapshot.as_ref().map(|s| s.author.clone()),
                    "time": snapshot.as_ref().map(|s| s.time.clone()),
                    "message": snapshot.as_ref().map(|s| s.message.clone()),
                    "text": text,
                }));
            }
            Ok(out)
        })
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "name": name, "versions": versions })))
}

#[derive(Deserialize)]
struct SqlQuery {
    dialect: Option<String>,
}

async fn sql(
    State(app): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<SqlQuery>,
) -> ApiResult {
    let catalog = catalog(&app)?;
    find(&catalog, &name)?;
    let dialect_name = query.dialect.as_deref().unwrap_or("datafusion");
    let dialect = Dialect::from_name(dialect_name).ok_or_else(|| {
        let names: Vec<&str> = Dialect::ALL.iter().map(|d| d.name()).collect();
        ApiError::bad_request(format!(
            "unknown dialect `{dialect_name}`; choose one of {}",
            names.join(", ")
        ))
    })?;
    Ok(Json(json!({
        "name": name,
        "dialect": dialect.name(),
        "sql": catalog.sql(&name, dialect),
    })))
}

/// Everything upstream and downstream of a definition, transitively, with the edges among them.
pub fn lineage_of(catalog: &Catalog, name: &str) -> (Vec<String>, Vec<(String, String)>) {
    let mut nodes: BTreeSet<String> = BTreeSet::new();
    let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
    nodes.insert(name.to_string());
    // Upstream: what it reads; downstream: what reads it. Edges point from upstream to reader.
    for direction in [true, false] {
        let mut stack = vec![name.to_string()];
        while let Some(n) = stack.pop() {
            let Some(d) = catalog.definition(&n) else {
                continue;
            };
            let next = if direction {
                &d.draft.upstream
            } else {
                &d.downstream
            };
            for m in next {
                let edge = if direction {
                    (m.clone(), n.clone())
                } else {
                    (n.clone(), m.clone())
                };
                edges.insert(edge);
                if nodes.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
    }
    (nodes.into_iter().collect(), edges.into_iter().collect())
}

async fn lineage(State(app): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let catalog = catalog(&app)?;
    find(&catalog, &name)?;
    let (nodes, edges) = lineage_of(&catalog, &name);
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|n| json!({"name": n, "kind": catalog.definition(n).map(|d| d.kind().to_string())}))
        .collect();
    let edges: Vec<Value> = edges
        .iter()
        .map(|(from, to)| json!({"from": from, "to": to}))
        .collect();
    Ok(Json(json!({"name": name, "nodes": nodes, "edges": edges})))
}

async fn stats(State(app): State<Shared>, Path(name): Path<String>) -> ApiResult {
    let catalog = catalog(&app)?;
    let d = find(&catalog, &name)?;
    let mut per_run = Vec::new();
    for m in &catalog.runs {
        let Some(stats) = catalog.stats.get(&m.run) else {
            continue;
        };
        let value = match d.kind() {
            "segment" => stats
                .entities
                .iter()
                .flat_map(|e| &e.segments)
                .find(|s| s.segment == name)
                .map(|s| json!({"profiles": s.profiles})),
            "journey" => stats
                .journeys
                .iter()
                .find(|j| j.journey == name)
                .map(|j| json!(j)),
            _ => stats
                .entities
                .iter()
                .flat_map(|e| &e.values)
                .find(|v| v.name == name)
                .map(|v| json!(v)),
        };
        if let Some(value) = value {
            per_run.push(json!({"run": m.run, "as_of": m.as_of, "stats": value}));
        }
    }
    Ok(Json(json!({"name": name, "runs": per_run})))
}

async fn runs(State(app): State<Shared>) -> ApiResult {
    let catalog = catalog(&app)?;
    let runs: Vec<Value> = catalog
        .runs
        .iter()
        .rev()
        .map(|m| {
            json!({
                "run": m.run,
                "as_of": m.as_of,
                "started_at": m.started_at,
                "finished_at": m.finished_at,
                "steps": m.steps.iter().map(|s| json!({
                    "name": s.name, "millis": s.millis, "rows": s.rows,
                    "rounds": s.rounds, "attempts": s.attempts,
                })).collect::<Vec<_>>(),
                "tables": m.tables.iter().map(|t| json!({"table": t.table, "rows": t.rows})).collect::<Vec<_>>(),
                "rejects": m.rejects.iter().map(|r| json!({"source": r.source, "rows": r.rows})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "runs": runs })))
}

// ------------------------------------------------------------------------------ online serving

/// `POST /api/v1/features`, in the shape of the established feature servers:
/// `{"features": ["lifetime_value", …], "entities": {"email": ["a@example.com", …]}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeaturesRequest {
    /// The entity; optional when the project has one.
    entity: Option<String>,
    features: Vec<String>,
    /// One identity key (or `canonical_id`) and its values, one per row of the response.
    entities: serde_json::Map<String, Value>,
    /// Serve the streaming operators' values (every tracked event counted at once) instead
    /// of the online store's (the latest run's).
    #[serde(default)]
    live: bool,
}

/// A profile found for the feature API: its id, values by name, segments, and as of when.
struct Found {
    canonical_id: String,
    values: HashMap<String, Value>,
    segments: BTreeSet<String>,
    as_of: Value,
}

fn entity_of<'c>(
    catalog: &'c Catalog,
    name: Option<&str>,
) -> Result<&'c cdp_compiler::ir::Entity, ApiError> {
    let entities = &catalog.project.entities;
    match name {
        Some(n) => entities
            .iter()
            .find(|e| e.meta.name == n)
            .ok_or_else(|| ApiError::not_found(format!("no entity named `{n}`"))),
        None if entities.len() == 1 => Ok(&entities[0]),
        None => Err(ApiError::bad_request(
            "the project has several entities: name one with \"entity\"",
        )),
    }
}

async fn features(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<FeaturesRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let catalog = catalog(&app)?;
    let entity = entity_of(&catalog, request.entity.as_deref())?;
    let entity_name = entity.meta.name.clone();
    if request.features.is_empty() {
        return Err(ApiError::bad_request("\"features\" names no feature"));
    }
    let known: BTreeSet<&str> = catalog
        .project
        .attributes
        .iter()
        .filter(|a| a.entity.index() == entity_index(&catalog, &entity_name))
        .map(|a| a.meta.name.as_str())
        .chain(
            catalog
                .project
                .features
                .iter()
                .map(|f| f.meta.name.as_str()),
        )
        .chain(
            catalog
                .project
                .segments
                .iter()
                .map(|s| s.meta.name.as_str()),
        )
        .collect();
    for f in &request.features {
        if !known.contains(f.as_str()) {
            let near = cdp_grammar::diag::nearest_name(f, known.iter().copied());
            return Err(ApiError::not_found(match near {
                Some(n) => format!("`{entity_name}` has no feature `{f}`; did you mean `{n}`?"),
                None => format!("`{entity_name}` has no feature `{f}`"),
            }));
        }
    }
    let mut pairs = request.entities.iter();
    let (key, values) = match (pairs.next(), pairs.next()) {
        (Some(one), None) => one,
        _ => {
            return Err(ApiError::bad_request(
                "\"entities\" names exactly one identity key with a list of values",
            ))
        }
    };
    if key != "canonical_id" && !entity.keys.iter().any(|k| &k.name == key) {
        let names: Vec<&str> = entity.keys.iter().map(|k| k.name.as_str()).collect();
        return Err(ApiError::not_found(format!(
            "`{entity_name}` has no identity key `{key}` (keys: {}, or canonical_id)",
            names.join(", ")
        )));
    }
    let values: Vec<String> = match values {
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(ApiError::bad_request(format!(
                    "key values are strings or numbers, not {other}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::bad_request(format!(
                "\"entities\".\"{key}\" is a list of values"
            )))
        }
    };
    if values.len() > 1000 {
        return Err(ApiError::bad_request("at most 1000 rows per request"));
    }
    if request.live {
        // Events logged by another writer (`cdp stream --from`) count too.
        let a = app.clone();
        tokio::task::spawn_blocking(move || a.catch_up_live())
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(live_error)?;
    }
    let online = match (request.live, app.online()) {
        (true, _) => None,
        (false, Some(online)) => Some(online),
        (false, None) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_online_store",
                "no run has been committed yet: run `cdp run` (or ask for \"live\": true)",
            ))
        }
    };
    let mut columns: Vec<Vec<Value>> =
        vec![Vec::with_capacity(values.len()); request.features.len()];
    let mut statuses: Vec<Vec<&'static str>> = columns.iter().map(|_| Vec::new()).collect();
    let mut times: Vec<Vec<Value>> = columns.iter().map(|_| Vec::new()).collect();
    let mut ids = Vec::with_capacity(values.len());
    for raw in &values {
        let profile = match &online {
            Some(online) => super::lookup(&app, online, &entity_name, key, raw)
                .await
                .map_err(ApiError::internal)?
                .map(|p| Found {
                    canonical_id: p.canonical_id.clone(),
                    values: p
                        .values
                        .iter()
                        .map(|v| (v.name.clone(), v.value.clone()))
                        .collect(),
                    segments: p.segments.iter().cloned().collect(),
                    as_of: json!(p.as_of),
                }),
            None => app.live_profile(&entity_name, key, raw).map(|p| {
                let mut values = HashMap::new();
                for part in ["attributes", "features"] {
                    if let Some(map) = p[part].as_object() {
                        values.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                }
                let micros = p["as_of_micros"].as_i64().unwrap_or_default();
                Found {
                    canonical_id: p["canonical_id"].as_str().unwrap_or_default().to_string(),
                    values,
                    segments: p["segments"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect(),
                    as_of: json!(chrono::DateTime::from_timestamp_micros(micros)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))),
                }
            }),
        };
        ids.push(json!(profile.as_ref().map(|p| p.canonical_id.clone())));
        for (i, feature) in request.features.iter().enumerate() {
            let (value, status) = match &profile {
                None => (Value::Null, "NOT_FOUND"),
                Some(p) => {
                    let value = if catalog
                        .project
                        .segments
                        .iter()
                        .any(|s| &s.meta.name == feature)
                    {
                        Some(json!(p.segments.contains(feature)))
                    } else {
                        p.values.get(feature).cloned()
                    };
                    match value {
                        None => (Value::Null, "NOT_FOUND"),
                        Some(_) if catalog.pii.masked(feature) && !caller.pii => {
                            (Value::Null, "MASKED")
                        }
                        Some(Value::Null) => (Value::Null, "NULL_VALUE"),
                        Some(v) => (v, "PRESENT"),
                    }
                }
            };
            columns[i].push(value);
            statuses[i].push(status);
            times[i].push(json!(profile.as_ref().map(|p| p.as_of.clone())));
        }
    }
    let mut results = vec![json!({
        "values": values,
        "statuses": vec!["PRESENT"; values.len()],
        "event_timestamps": vec![Value::Null; values.len()],
    })];
    for ((values, statuses), times) in columns.into_iter().zip(statuses).zip(times) {
        results.push(json!({"values": values, "statuses": statuses, "event_timestamps": times}));
    }
    let mut names = vec![key.clone()];
    names.extend(request.features.iter().cloned());
    Ok(Json(json!({
        "metadata": {"entity": entity_name, "feature_names": names, "canonical_ids": ids},
        "results": results,
    }))
    .into_response())
}

fn entity_index(catalog: &Catalog, name: &str) -> usize {
    catalog
        .project
        .entities
        .iter()
        .position(|e| e.meta.name == name)
        .unwrap_or(usize::MAX)
}

/// A profile for the API: values that show personal data masked for callers without the right,
/// identity key values too when the key reads personal data.
pub fn profile_json(
    catalog: &Catalog,
    profile: &cdp_runtime::online::Profile,
    caller: &Caller,
) -> Value {
    let mut body = json!(profile);
    if !caller.pii {
        if let Some(values) = body["values"].as_array_mut() {
            for v in values {
                let name = v["name"].as_str().unwrap_or("").to_string();
                if catalog.pii.masked(&name) {
                    v["value"] = Value::Null;
                    v["masked"] = json!(true);
                }
            }
        }
        if let Some(keys) = body["keys"].as_array_mut() {
            for k in keys {
                let name = k["key"].as_str().unwrap_or("").to_string();
                if super::pii_key(catalog, &profile.entity, &name) {
                    k["value"] = json!(super::mask(k["value"].as_str().unwrap_or("")));
                    k["masked"] = json!(true);
                }
            }
        }
    }
    body
}

async fn profile(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((entity, key, value)): Path<(String, String, String)>,
) -> ApiResult {
    let catalog = catalog(&app)?;
    let found = find_profile(&app, &catalog, &entity, &key, &value).await?;
    Ok(Json(profile_json(&catalog, &found, &caller)))
}

async fn find_profile(
    app: &Shared,
    catalog: &Catalog,
    entity: &str,
    key: &str,
    value: &str,
) -> Result<cdp_runtime::online::Profile, ApiError> {
    let e = entity_of(catalog, Some(entity))?;
    if key != "canonical_id" && !e.keys.iter().any(|k| k.name == key) {
        return Err(ApiError::not_found(format!(
            "`{entity}` has no identity key `{key}`"
        )));
    }
    let online = app.online().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_online_store",
            "no run has been committed yet: run `cdp run`",
        )
    })?;
    super::lookup(app, &online, entity, key, value)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("no `{entity}` profile has {key} = {value}")))
}

async fn segments(
    State(app): State<Shared>,
    Path((entity, key, value)): Path<(String, String, String)>,
) -> ApiResult {
    let catalog = catalog(&app)?;
    let found = find_profile(&app, &catalog, &entity, &key, &value).await?;
    Ok(Json(json!({
        "entity": entity,
        "canonical_id": found.canonical_id,
        "run": found.run,
        "as_of": found.as_of,
        "segments": found.segments,
    })))
}

// ------------------------------------------------------------------------------ live (stream)

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionsQuery {
    definition: Option<String>,
    limit: Option<usize>,
}

/// An error of catching the streaming operators up: 503 when they could not start (a source
/// file missing, say: the reason is in the body, and the next try comes after a while), else
/// an internal error.
fn live_error(e: String) -> ApiError {
    if e.starts_with(super::LIVE_NOT_STARTED) {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stream_unavailable", e)
    } else {
        ApiError::internal(e)
    }
}

/// The newest segment entries and exits (journey steps, activations), newest first.
async fn transitions(
    State(app): State<Shared>,
    Query(query): Query<TransitionsQuery>,
) -> ApiResult {
    let limit = query.limit.unwrap_or(100).min(10_000);
    let log = app.transitions();
    let recent = tokio::task::spawn_blocking(move || {
        app.catch_up_live()?;
        log.recent(query.definition.as_deref(), limit)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(live_error)?;
    Ok(Json(json!({ "transitions": recent })))
}

/// What the streaming operators have seen: events, rows, late rows, profiles, state bytes.
async fn live_status(State(app): State<Shared>) -> ApiResult {
    let status = tokio::task::spawn_blocking(move || {
        app.catch_up_live()?;
        let mut status = app.live_status();
        if let Some(status) = status.as_mut() {
            // The batch run the online store holds under the live records.
            status["online_store_run"] = json!(app.online().and_then(|o| o.run().ok().flatten()));
        }
        Ok::<_, String>(status)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(live_error)?;
    status.map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_project",
            "the project does not load, so no operators run",
        )
    })
}

/// A profile's values as the streaming operators hold them now: every logged event counted.
async fn live_profile(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((entity, key, value)): Path<(String, String, String)>,
) -> ApiResult {
    let catalog = catalog(&app)?;
    let e = entity_of(&catalog, Some(&entity))?;
    if key != "canonical_id" && !e.keys.iter().any(|k| k.name == key) {
        return Err(ApiError::not_found(format!(
            "`{entity}` has no identity key `{key}`"
        )));
    }
    let (name, k, v) = (entity.clone(), key.clone(), value.clone());
    let found = tokio::task::spawn_blocking(move || {
        app.catch_up_live()?;
        Ok::<_, String>(app.live_profile(&name, &k, &v))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(live_error)?;
    let mut body = found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no `{entity}` profile has {key} = {value} in the event stream"
        ))
    })?;
    if !caller.pii {
        for part in ["attributes", "features"] {
            if let Some(values) = body[part].as_object_mut() {
                for (name, v) in values.iter_mut() {
                    if catalog.pii.masked(name) && !v.is_null() {
                        *v = json!({"masked": true});
                    }
                }
            }
        }
    }
    Ok(Json(body))
}

// ------------------------------------------------------------------------------ keys (admin)

fn admin(caller: &Caller) -> Result<(), ApiError> {
    if caller.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "key `{}` has the read role; managing keys needs admin",
                caller.name
            ),
        ))
    }
}

async fn list_keys(State(app): State<Shared>, Extension(caller): Extension<Caller>) -> ApiResult {
    admin(&caller)?;
    let keys = app.keys();
    let items: Vec<Value> = keys
        .keys
        .iter()
        .map(|k| json!({"name": k.name, "role": k.role, "pii": k.pii, "created_at": k.created_at}))
        .collect();
    Ok(Json(json!({ "keys": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    role: Role,
    #[serde(default)]
    pii: bool,
}

async fn create_key(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewKey>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    admin(&caller)?;
    let Json(new) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let key = app
        .edit_keys(|keys| keys.add(&new.name, new.role, new.pii))
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "conflict", e))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": new.name, "role": new.role, "pii": new.pii, "key": key})),
    ))
}

async fn revoke_key(
    State(app): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    admin(&caller)?;
    if name == caller.name {
        return Err(ApiError::bad_request("a key cannot revoke itself"));
    }
    let removed = app
        .edit_keys(|keys| Ok(keys.revoke(&name)))
        .map_err(ApiError::internal)?;
    if !removed {
        return Err(ApiError::not_found(format!("no key named `{name}`")));
    }
    Ok(Json(json!({"revoked": name})))
}
