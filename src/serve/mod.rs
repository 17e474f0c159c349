//! `cdp serve`: the registry on the web — server-rendered pages for people ([`pages`]) and a JSON
//! API for programs ([`api`], described at `/api/v1/openapi.json`), over one project.
//!
//! The server holds the project's online store (sled allows one process at a time) and keeps it
//! equal to the offline store's latest committed run: a watcher notices a new run (from `cdp run`
//! in another process), a changed project (files edited, `cdp apply`) or changed keys, and
//! reloads what changed. Every request is checked against the project's API keys ([`auth`]).

pub mod api;
pub mod auth;
pub mod catalog;
pub mod live;
pub mod openapi;
pub mod pages;
pub mod svg;
pub mod track;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use cdp_runtime::online::{KeyNormalizer, OnlineStore, Profile};
use cdp_runtime::store::Storage;

use auth::Keys;
use catalog::Catalog;

pub type Shared = Arc<App>;

/// The server's state.
pub struct App {
    pub dir: PathBuf,
    pub storage: PathBuf,
    catalog: RwLock<Option<Arc<Catalog>>>,
    load_error: RwLock<Option<String>>,
    keys: RwLock<Arc<Keys>>,
    keys_stamp: Mutex<Option<std::time::SystemTime>>,
    online: RwLock<Option<Arc<OnlineStore>>>,
    /// Normalizes identity key values for lookups by an unnormalized value; only used on
    /// blocking threads (it owns an engine with its own runtime).
    normalizer: Mutex<Option<KeyNormalizer>>,
    /// One registry handle at a time (sled allows one per process).
    registry: Mutex<()>,
    /// The tracking API's durable event log (held: one writer per project).
    ingest: Arc<cdp_runtime::tracking::Ingest>,
    /// The stream's own database (`<storage>/stream/state`): the webhook outbox.
    stream_db: sled::Db,
    outbox: Arc<cdp_runtime::webhook::Outbox>,
    /// Segment entries and exits (and, with the stream, journey steps), newest first on pages.
    transitions: Arc<cdp_runtime::transitions::TransitionLog>,
    /// The streaming operators over the event log, built from the catalog it names.
    live: Mutex<Option<(Arc<Catalog>, live::Live)>>,
    /// The last failure to start the operators: the catalog it was for, when, and why. The
    /// same catalog is not tried again for [`LIVE_RETRY`], so that every request of the live
    /// API does not read the source files again only to fail the same way.
    live_failed: Mutex<Option<(Arc<Catalog>, std::time::Instant, String)>>,
    /// Set (and signalled) when the tracking API has logged events the operators have not
    /// taken yet: the stream worker ([`App::run_stream_worker`]) wakes up.
    stream_wake: (Mutex<bool>, std::sync::Condvar),
}

/// How long a failure to start the streaming operators stands before the next try.
/// (The live API answers 503 meanwhile, with the reason.)
const LIVE_RETRY: Duration = Duration::from_secs(10);

/// How a failure to start the streaming operators begins (see [`App::catch_up_live`]).
pub const LIVE_NOT_STARTED: &str = "the stream operators could not start";

impl App {
    /// Loads a project for serving. A project that does not check is served anyway, with the
    /// reason on every page, so that fixing the files fixes the server.
    pub fn open(dir: &Path) -> Result<App, String> {
        let (catalog, load_error) = match Catalog::load(dir) {
            Ok(c) => (Some(Arc::new(c)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let storage = match &catalog {
            Some(c) => c.storage.clone(),
            None => dir.join(".cdp"),
        };
        std::fs::create_dir_all(&storage).map_err(|e| format!("{}: {e}", storage.display()))?;
        let keys = Keys::load(&storage)?;
        let online =
            OnlineStore::open_waiting(&cdp_runtime::online::path(&storage), Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
        let ingest = cdp_runtime::tracking::Ingest::open(&storage)?;
        let state = storage.join("stream").join("state");
        let stream_db = cdp_registry::sleddb::open_waiting(&state, Duration::from_secs(5))
            .map_err(|e| format!("{}: {e}", state.display()))?;
        let outbox = cdp_runtime::webhook::Outbox::open(&stream_db)?;
        let transitions = cdp_runtime::transitions::TransitionLog::open(&stream_db)?;
        Ok(App {
            dir: dir.to_path_buf(),
            keys_stamp: Mutex::new(modified(&auth::keys_path(&storage))),
            storage,
            catalog: RwLock::new(catalog),
            load_error: RwLock::new(load_error),
            keys: RwLock::new(Arc::new(keys)),
            online: RwLock::new(Some(Arc::new(online))),
            normalizer: Mutex::new(None),
            registry: Mutex::new(()),
            ingest: Arc::new(ingest),
            stream_db,
            outbox: Arc::new(outbox),
            transitions: Arc::new(transitions),
            live: Mutex::new(None),
            live_failed: Mutex::new(None),
            stream_wake: (Mutex::new(false), std::sync::Condvar::new()),
        })
    }

    /// Tells the stream worker that events were logged.
    pub fn wake_stream(&self) {
        if let Ok(mut pending) = self.stream_wake.0.lock() {
            *pending = true;
            self.stream_wake.1.notify_one();
        }
    }

    /// The stream worker: runs the logged events through the operators as they arrive, off
    /// the requests' path (a tracking request returns once its events are durable). Under load
    /// one catch-up takes the events of many requests. Readers of live values catch up first,
    /// so a value is served at once after its event's 200 all the same.
    pub fn run_stream_worker(&self) {
        loop {
            {
                let Ok(pending) = self.stream_wake.0.lock() else {
                    return;
                };
                let Ok((mut pending, _)) =
                    self.stream_wake
                        .1
                        .wait_timeout_while(pending, Duration::from_secs(1), |p| !*p)
                else {
                    return;
                };
                *pending = false;
            }
            if let Err(e) = self.catch_up_live() {
                eprintln!("stream: {e}");
            }
        }
    }

    /// Runs the events logged since the last call through the streaming operators (rebuilt
    /// from the whole log when the project changed), appends their segment transitions and
    /// journey steps to the transition log and queues the webhooks of segment entries. Transitions of events already logged by an earlier engine (before a
    /// restart or a reload) are not appended twice. Returns the transitions appended.
    pub fn catch_up_live(&self) -> Result<usize, String> {
        let Some(catalog) = self.catalog() else {
            return Ok(0);
        };
        let mut guard = self
            .live
            .lock()
            .map_err(|_| "the stream engine lock was poisoned".to_string())?;
        if guard
            .as_ref()
            .is_none_or(|(c, _)| !Arc::ptr_eq(c, &catalog))
        {
            let mut failed = self
                .live_failed
                .lock()
                .map_err(|_| "the stream engine lock was poisoned".to_string())?;
            if let Some((c, at, why)) = failed.as_ref() {
                if Arc::ptr_eq(c, &catalog) && at.elapsed() < LIVE_RETRY {
                    return Err(format!(
                        "{why} (tried {} s ago; tried again {} s after that, or when the project changes)",
                        at.elapsed().as_secs(),
                        LIVE_RETRY.as_secs()
                    ));
                }
            }
            let engine = live::Live::new(
                catalog.project.clone(),
                &catalog.config,
                &self.dir,
                &self.storage,
            )
            .map_err(|e| {
                let why = format!("{LIVE_NOT_STARTED}: {e}");
                *failed = Some((catalog.clone(), std::time::Instant::now(), why.clone()));
                why
            })?;
            *failed = None;
            *guard = Some((catalog.clone(), engine));
        }
        let Some((_, engine)) = guard.as_mut() else {
            return Ok(0);
        };
        const LOGGED: &[u8] = b"live/transitions_logged_to";
        let logged_to = self
            .stream_db
            .get(LOGGED)
            .map_err(|e| e.to_string())?
            .and_then(|v| Some(u64::from_be_bytes(v.as_ref().try_into().ok()?)))
            .unwrap_or(0);
        let (end, transitions) = engine.catch_up(self.ingest.log(), logged_to)?;
        // The online store gets the changed profiles at once, durably before the offset below
        // moves past their events (a restarted engine does not write them again). A failure
        // to write them is reported after the transitions are logged (it does not hold them
        // up); they are written at the next call.
        let published = match self.online() {
            Some(online) => engine.publish(&online).and_then(|n| match n {
                0 => Ok(()),
                _ => online.flush().map_err(|e| e.to_string()),
            }),
            None => Ok(()),
        };
        if transitions.is_empty() && end <= logged_to {
            return published.map(|()| 0);
        }
        self.transitions.append(&transitions)?;
        // Webhooks of segment entries are queued (durably) before the offset moves on: a crash
        // in between sends them again, never not at all.
        let now_ms = chrono::Utc::now().timestamp_millis();
        for delivery in engine.webhooks(&transitions) {
            self.outbox
                .enqueue(delivery, now_ms)
                .map_err(|e| format!("queueing a webhook: {e}"))?;
        }
        self.stream_db
            .insert(LOGGED, &end.to_be_bytes())
            .map_err(|e| e.to_string())?;
        self.stream_db.flush().map_err(|e| e.to_string())?;
        published?;
        Ok(transitions.len())
    }

    /// Writes a checkpoint of the stream engine's state when one is due (see
    /// [`live::Live::checkpoint_due`]): the state is copied under the engine's lock and written
    /// outside it. Called from the refresh loop only (one writer), after [`App::catch_up_live`]
    /// has logged the transitions of every event the state holds.
    fn checkpoint_live(&self) -> Result<Option<String>, String> {
        let started = std::time::Instant::now();
        let due = {
            let mut guard = self
                .live
                .lock()
                .map_err(|_| "the stream engine lock was poisoned".to_string())?;
            match guard.as_mut() {
                Some((_, engine)) => engine.checkpoint_due(),
                None => None,
            }
        };
        let Some(due) = due else {
            return Ok(None);
        };
        let (path, header, state) = due?;
        // The live records of the events the checkpoint holds are durable before it is: a
        // restart from it does not apply those events again, so does not write them again.
        if let Some(online) = self.online() {
            online.flush().map_err(|e| e.to_string())?;
        }
        let bytes = cdp_runtime::stream::checkpoint::write(&path, &header, &state)?;
        let millis = started.elapsed().as_millis();
        if let Ok(mut guard) = self.live.lock() {
            if let Some((_, engine)) = guard.as_mut() {
                engine.checkpoint_written(bytes, millis);
            }
        }
        Ok(Some(format!(
            "stream: checkpoint at log offset {} ({} bytes, {millis} ms)",
            header.log_offset, bytes
        )))
    }

    /// The live values of a profile (None: no such profile in the stream yet).
    pub fn live_profile(&self, entity: &str, key: &str, value: &str) -> Option<serde_json::Value> {
        let guard = self.live.lock().ok()?;
        guard.as_ref()?.1.profile(entity, key, value)
    }

    /// What the stream engine has seen.
    pub fn live_status(&self) -> Option<serde_json::Value> {
        let guard = self.live.lock().ok()?;
        Some(guard.as_ref()?.1.status())
    }

    pub fn catalog(&self) -> Option<Arc<Catalog>> {
        self.catalog.read().ok()?.clone()
    }

    pub fn load_error(&self) -> Option<String> {
        self.load_error.read().ok()?.clone()
    }

    pub fn keys(&self) -> Arc<Keys> {
        self.keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|_| Arc::new(Keys::default()))
    }

    pub fn transitions(&self) -> Arc<cdp_runtime::transitions::TransitionLog> {
        self.transitions.clone()
    }

    pub fn outbox(&self) -> Arc<cdp_runtime::webhook::Outbox> {
        self.outbox.clone()
    }

    pub fn ingest(&self) -> Arc<cdp_runtime::tracking::Ingest> {
        self.ingest.clone()
    }

    pub fn online(&self) -> Option<Arc<OnlineStore>> {
        self.online.read().ok()?.clone()
    }

    /// Changes the keys file and the keys in memory together.
    pub fn edit_keys<T>(
        &self,
        f: impl FnOnce(&mut Keys) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut guard = self
            .keys
            .write()
            .map_err(|_| "keys lock poisoned".to_string())?;
        let mut keys = Keys::load(&self.storage)?;
        let out = f(&mut keys)?;
        keys.save(&self.storage)?;
        *guard = Arc::new(keys);
        if let Ok(mut stamp) = self.keys_stamp.lock() {
            *stamp = modified(&auth::keys_path(&self.storage));
        }
        Ok(out)
    }

    /// Runs `f` on the registry database (opened for the call: other processes — `cdp apply` —
    /// write it between requests). No registry yet: `f` is not called and the default is
    /// returned.
    pub fn with_registry<T: Default>(
        &self,
        f: impl FnOnce(&cdp_registry::Registry) -> cdp_registry::Result<T>,
    ) -> Result<T, String> {
        let _one = self.registry.lock().map_err(|_| "registry lock poisoned")?;
        let started = std::time::Instant::now();
        loop {
            match cdp_registry::Registry::open_existing(&self.storage) {
                Ok(None) => return Ok(T::default()),
                Ok(Some(registry)) => return f(&registry).map_err(|e| e.to_string()),
                // Another process holds it for a moment (`cdp apply`): wait a little.
                Err(_) if started.elapsed() < Duration::from_secs(3) => {
                    std::thread::sleep(Duration::from_millis(25))
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Reloads what changed on disk; returns what it did, for the log.
    fn refresh(&self) -> Vec<String> {
        let mut done = Vec::new();
        match self.catch_up_live() {
            Ok(0) => {}
            Ok(n) => done.push(format!("stream: {n} transitions logged")),
            Err(e) => done.push(format!("stream: {e}")),
        }
        match self.checkpoint_live() {
            Ok(None) => {}
            Ok(Some(line)) => done.push(line),
            Err(e) => done.push(format!("stream: checkpoint not written: {e}")),
        }
        let stale = match self.catalog() {
            Some(c) => c.is_stale(),
            None => true,
        };
        if stale {
            match Catalog::load(&self.dir) {
                Ok(c) => {
                    let runs = c.runs.len();
                    if let Ok(mut slot) = self.catalog.write() {
                        *slot = Some(Arc::new(c));
                    }
                    if let Ok(mut e) = self.load_error.write() {
                        *e = None;
                    }
                    if let Ok(mut n) = self.normalizer.lock() {
                        *n = None;
                    }
                    done.push(format!("project reloaded ({runs} runs)"));
                }
                Err(e) => {
                    let message = e.to_string();
                    if self.load_error().as_deref() != Some(message.as_str()) {
                        done.push(format!("project does not load: {message}"));
                    }
                    if let Ok(mut slot) = self.load_error.write() {
                        *slot = Some(message);
                    }
                }
            }
        }
        let stamp = modified(&auth::keys_path(&self.storage));
        let keys_changed = self.keys_stamp.lock().map(|s| *s != stamp).unwrap_or(false);
        if keys_changed {
            if let Ok(keys) = Keys::load(&self.storage) {
                if let Ok(mut k) = self.keys.write() {
                    *k = Arc::new(keys);
                }
                if let Ok(mut s) = self.keys_stamp.lock() {
                    *s = stamp;
                }
                done.push("keys reloaded".into());
            }
        }
        if let (Some(online), Ok(Some(storage))) =
            (self.online(), Storage::open_read_only(&self.storage))
        {
            let latest = storage.latest().ok().flatten().map(|m| m.run);
            if latest.is_some() && online.run().ok().flatten() != latest {
                match online.sync(&storage) {
                    Ok(s) => done.push(format!(
                        "online store: run {} ({} profiles, {} identity keys)",
                        s.run.unwrap_or_default(),
                        s.profiles,
                        s.identity_keys
                    )),
                    Err(e) => done.push(format!("online store: sync failed: {e}")),
                }
            }
            // The webhooks the latest run's journeys fired, once the store has its profiles.
            if let (Ok(Some(run)), Some(catalog)) = (storage.latest(), self.catalog()) {
                if online.run().ok().flatten().as_deref() == Some(run.run.as_str()) {
                    let queued = cdp_runtime::activate::queue_run(
                        &self.stream_db,
                        &self.outbox,
                        &storage,
                        &run,
                        &catalog.project,
                        &online,
                        chrono::Utc::now().timestamp_millis(),
                    );
                    match queued {
                        Ok(0) => {}
                        Ok(n) => done.push(format!(
                            "webhooks: {n} deliveries queued for run {}",
                            run.run
                        )),
                        Err(e) => done.push(format!("webhooks: {e}")),
                    }
                    let logged = cdp_runtime::activate::log_segment_changes(
                        &self.stream_db,
                        &self.transitions,
                        &storage,
                        &run,
                        &catalog.project,
                    );
                    match logged {
                        Ok(0) => {}
                        Ok(n) => done.push(format!(
                            "transitions: {n} segment changes of run {}",
                            run.run
                        )),
                        Err(e) => done.push(format!("transitions: {e}")),
                    }
                }
            }
        }
        done
    }

    /// Delivers the webhooks that are due; returns what it did, for the log.
    fn deliver(&self, post: &dyn cdp_runtime::webhook::Post) -> Option<String> {
        match self
            .outbox
            .deliver_due(post, chrono::Utc::now().timestamp_millis(), 100)
        {
            Ok(r) if r == cdp_runtime::webhook::Report::default() => None,
            Ok(r) => Some(format!(
                "webhooks: {} delivered, {} to retry, {} set aside",
                r.delivered, r.retried, r.set_aside
            )),
            Err(e) => Some(format!("webhooks: {e}")),
        }
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether an identity key of `entity` reads personal data (its values are masked).
pub fn pii_key(catalog: &Catalog, entity: &str, key: &str) -> bool {
    let Some(e) = catalog
        .project
        .entities
        .iter()
        .find(|e| e.meta.name == entity)
    else {
        return false;
    };
    let Some(k) = e.keys.iter().position(|k| k.name == key) else {
        return false;
    };
    e.bindings.iter().filter(|b| b.key.index() == k).any(|b| {
        let columns = &catalog.project.sources[b.source.index()].columns;
        let mut pii = false;
        b.value.walk(|x| {
            if let cdp_compiler::ir::ExprKind::Column(c) = &x.kind {
                pii |= columns.get(c.index()).is_some_and(|c| c.pii);
            }
        });
        pii
    })
}

/// A masked text: its first character and its length hidden (`a•••`).
pub fn mask(value: &str) -> String {
    match value.chars().next() {
        Some(c) => format!("{c}•••"),
        None => String::new(),
    }
}

/// A profile by an identity key value (or `canonical_id`): the value as given first (one read),
/// then normalized as the entity's key normalizes it (`Ana@Example.com ` finds `ana@example.com`).
pub async fn lookup(
    app: &Shared,
    online: &Arc<OnlineStore>,
    entity: &str,
    key: &str,
    raw: &str,
) -> Result<Option<Profile>, String> {
    let by = |value: &str| -> Result<Option<Profile>, String> {
        let id = if key == "canonical_id" {
            Some(value.to_string())
        } else {
            online
                .canonical_id(entity, key, value)
                .map_err(|e| e.to_string())?
        };
        match id {
            Some(id) => online.profile(entity, &id).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    };
    if let Some(p) = by(raw)? {
        return Ok(Some(p));
    }
    if key == "canonical_id" {
        return Ok(None);
    }
    let Some(catalog) = app.catalog() else {
        return Ok(None);
    };
    let Some(index) = catalog
        .project
        .entities
        .iter()
        .find(|e| e.meta.name == entity)
        .and_then(|e| e.keys.iter().position(|k| k.name == key))
    else {
        return Ok(None);
    };
    let app2 = app.clone();
    let (entity2, raw2) = (entity.to_string(), raw.to_string());
    let normalized = tokio::task::spawn_blocking(move || -> Result<Option<String>, String> {
        let mut slot = app2
            .normalizer
            .lock()
            .map_err(|_| "normalizer lock poisoned")?;
        if slot.is_none() {
            *slot = Some(KeyNormalizer::new(&catalog.project).map_err(|e| e.to_string())?);
        }
        let Some(normalizer) = slot.as_ref() else {
            return Ok(None);
        };
        let values = normalizer
            .normalize(&entity2, &raw2)
            .map_err(|e| e.to_string())?;
        Ok(values.into_iter().nth(index).flatten())
    })
    .await
    .map_err(|e| e.to_string())??;
    match normalized {
        Some(n) if n != raw => by(&n),
        _ => Ok(None),
    }
}

/// Paths that need no key: the login page and the health check; and the tracking API, which
/// checks its write key itself (HTTP basic user or `writeKey` in the body, as Segment's).
fn open_path(path: &str) -> bool {
    matches!(path, "/login" | "/healthz" | "/favicon.ico")
        || path.starts_with("/static/")
        || path.starts_with("/v1/")
}

/// Checks the request's key; puts the [`Caller`] into the request for handlers.
async fn authenticate(State(app): State<Shared>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if open_path(&path) {
        return next.run(request).await;
    }
    let key = auth::request_key(request.headers());
    let caller = key.as_deref().and_then(|k| app.keys().caller(k));
    match caller {
        Some(caller) if caller.role == auth::Role::Write => {
            let message = "a write key only sends events to the tracking API (/v1/…)";
            if path.starts_with("/api/") {
                api::ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
            } else {
                (StatusCode::FORBIDDEN, Html(pages::login_page(message))).into_response()
            }
        }
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => {
            let message = match key {
                Some(_) => "the API key is not valid (revoked, or mistyped)",
                None => "an API key is needed: `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            };
            if path.starts_with("/api/") {
                api::ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
                    .into_response()
            } else {
                (StatusCode::UNAUTHORIZED, Html(pages::login_page(message))).into_response()
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct LoginQuery {
    key: Option<String>,
}

/// `/login?key=…`: a valid key becomes a cookie for the pages.
async fn login(State(app): State<Shared>, Query(q): Query<LoginQuery>) -> Response {
    match q.key {
        Some(key)
            if app
                .keys()
                .caller(&key)
                .is_some_and(|c| c.role != auth::Role::Write) =>
        {
            (
                [(
                    header::SET_COOKIE,
                    format!("cdp_key={key}; Path=/; HttpOnly; SameSite=Strict"),
                )],
                Redirect::to("/"),
            )
                .into_response()
        }
        Some(_) => (
            StatusCode::UNAUTHORIZED,
            Html(pages::login_page("that key is not valid")),
        )
            .into_response(),
        None => Html(pages::login_page("")).into_response(),
    }
}

/// The whole application: pages, API, login, health.
pub fn router(app: Shared) -> Router {
    Router::new()
        .nest("/api/v1", api::router())
        .merge(pages::router())
        .merge(track::router())
        .route("/login", get(login))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            authenticate,
        ))
        .with_state(app)
}

/// Options of `cdp serve`.
pub struct Options {
    pub addr: SocketAddr,
}

/// Serves until interrupted. Prints the address, and the first key when the project had none.
pub fn serve(dir: &Path, options: &Options, out: &mut dyn std::io::Write) -> Result<(), String> {
    let app = Arc::new(App::open(dir)?);
    let first_key = if app.keys().keys.is_empty() {
        Some(app.edit_keys(|k| k.add("owner", auth::Role::Admin, true))?)
    } else {
        None
    };
    let log = app.ingest().log().recovery().clone();
    let _ = writeln!(
        out,
        "event log: {} events from the tracking API{}",
        log.records,
        if log.truncated_bytes > 0 {
            format!(
                " ({} bytes of a write a crash cut short were dropped: never acknowledged)",
                log.truncated_bytes
            )
        } else {
            String::new()
        }
    );
    for line in app.refresh() {
        let _ = writeln!(out, "{line}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the server's runtime: {e}"))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(options.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", options.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let _ = writeln!(out, "serving {} on http://{addr}/", dir.display());
        if let Some(key) = &first_key {
            let _ = writeln!(
                out,
                "first API key (admin, may see personal data; stored hashed in {}): {key}",
                auth::keys_path(&app.storage).display()
            );
            let _ = writeln!(out, "open http://{addr}/login?key={key}");
        }
        let _ = out.flush();
        let worker = app.clone();
        std::thread::spawn(move || worker.run_stream_worker());
        let watcher = app.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let w = watcher.clone();
                if let Ok(lines) = tokio::task::spawn_blocking(move || w.refresh()).await {
                    for line in lines {
                        eprintln!("{line}");
                    }
                }
            }
        });
        let sender = app.clone();
        tokio::spawn(async move {
            let post = Arc::new(cdp_runtime::webhook::HttpPost::new(Duration::from_secs(10)));
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let (s, p) = (sender.clone(), post.clone());
                if let Ok(Some(line)) =
                    tokio::task::spawn_blocking(move || s.deliver(p.as_ref())).await
                {
                    eprintln!("{line}");
                }
            }
        });
        axum::serve(listener, router(app.clone()))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| e.to_string())
    })
}
