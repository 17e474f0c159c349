//! The web pages: server-rendered HTML with SVG charts ([`super::svg`]).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::svg::esc;
use super::Shared;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/", get(home))
        .route("/d/{name}", get(definition))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1rem;align-items:center}\
header a{color:#fff;text-decoration:none;font-weight:600}main{padding:1rem 1.2rem;max-width:72rem}\
.chart .bar{fill:#3b6fd6}pre{background:#f4f5f8;padding:.8rem;overflow:auto}";

pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · cdp</title>\
         <style>{STYLE}</style></head><body><header><a href=\"/\">cdp</a>\
         <form action=\"/\" method=\"get\"><input name=\"q\" placeholder=\"Search definitions\" aria-label=\"Search\"></form>\
         </header><main>{body}</main></body></html>",
        esc(title)
    )
}

pub fn login_page(message: &str) -> String {
    layout(
        "Sign in",
        &format!(
            "<h1>Sign in</h1><p class=\"error\">{}</p><form action=\"/login\" method=\"get\">\
             <label>API key <input name=\"key\" type=\"password\"></label> <button>Sign in</button></form>",
            esc(message)
        ),
    )
}

#[derive(serde::Deserialize)]
struct HomeQuery {
    q: Option<String>,
}

async fn home(State(app): State<Shared>, Query(query): Query<HomeQuery>) -> Response {
    let Some(catalog) = app.catalog() else {
        let message = app.load_error().unwrap_or_default();
        return Html(layout(
            "Not loaded",
            &format!("<pre>{}</pre>", esc(&message)),
        ))
        .into_response();
    };
    let found = match &query.q {
        Some(q) if !q.trim().is_empty() => catalog.search(q),
        _ => catalog.definitions.iter().collect(),
    };
    let mut body = format!("<h1>{}</h1><ul class=\"definitions\">", esc(&catalog.name));
    for d in found {
        body.push_str(&format!(
            "<li><a href=\"/d/{0}\">{0}</a> <span class=\"kind\">{1}</span> {2}</li>",
            esc(d.name()),
            esc(d.kind()),
            esc(d.draft.description.as_deref().unwrap_or(""))
        ));
    }
    body.push_str("</ul>");
    Html(layout(&catalog.name, &body)).into_response()
}

async fn definition(State(app): State<Shared>, Path(name): Path<String>) -> Response {
    let Some(catalog) = app.catalog() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Html(layout("Not loaded", "")),
        )
            .into_response();
    };
    let Some(d) = catalog.definition(&name) else {
        return (
            StatusCode::NOT_FOUND,
            Html(layout(
                "Not found",
                &format!("<h1>No definition named {}</h1>", esc(&name)),
            )),
        )
            .into_response();
    };
    let body = format!(
        "<h1>{}</h1><p>{}</p><pre>{}</pre>",
        esc(d.name()),
        esc(d.draft.description.as_deref().unwrap_or("")),
        esc(&d.draft.text)
    );
    Html(layout(d.name(), &body)).into_response()
}
