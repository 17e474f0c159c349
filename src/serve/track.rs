//! The tracking API, compatible with Segment's HTTP API: `POST /v1/identify`, `/v1/track`,
//! `/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias`, `/v1/batch` (and `/v1/import`, its
//! older name). Segment's client libraries work against it unchanged: they authenticate with the
//! write key as the HTTP basic user (or `writeKey` in the body), send `messageId`s, and retry on
//! 429/5xx. An event is answered `200 {"success": true}` only once it is in the durable event
//! log ([`cdp_runtime::tracking`]); a repeated `messageId` is acknowledged and not written
//! again. Errors are JSON: `{"success": false, "error": {"code", "message"}}`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use cdp_runtime::tracking::{Refused, MAX_BATCH_BYTES, MAX_EVENT_BYTES};
use serde_json::{json, Value};

use super::auth::Role;
use super::Shared;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/v1/{call}", post(call))
        // Over Segment's batch limit, with room for a body that is refused with a 413 of ours.
        .layer(axum::extract::DefaultBodyLimit::max(4 * MAX_BATCH_BYTES))
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"success": false, "error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// The write key: the HTTP basic user (Segment's libraries), else `writeKey` in the body.
fn write_key(headers: &HeaderMap, body: &Value) -> Option<String> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .map(|user_password| {
            user_password
                .split_once(':')
                .map_or(user_password.clone(), |(user, _)| user.to_string())
        })
        .filter(|k| !k.is_empty());
    basic.or_else(|| body["writeKey"].as_str().map(str::to_string))
}

async fn call(
    State(app): State<Shared>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_at = chrono::Utc::now();
    let batch = matches!(call.as_str(), "batch" | "import");
    if !batch && !cdp_runtime::tracking::KINDS.contains(&call.as_str()) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no call `/v1/{call}`: identify, track, page, screen, group, alias or batch"),
        );
    }
    let limit = if batch {
        MAX_BATCH_BYTES
    } else {
        MAX_EVENT_BYTES
    };
    if body.len() > limit {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "a request of {} bytes is over the limit of {} KB for /v1/{call}",
                body.len(),
                limit / 1024
            ),
        );
    }
    let message: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("the body is a JSON object, not {other}"),
            )
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("the body is not JSON: {e}"),
            )
        }
    };
    let Some(key) = write_key(&headers, &message) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a write key is needed: as the HTTP basic user, or `writeKey` in the body",
        );
    };
    match app.keys().caller(&key) {
        Some(c) if matches!(c.role, Role::Write | Role::Admin) => {}
        Some(_) => {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this key may not send events: make one with `cdp keys add <name> --role write`",
            )
        }
        None => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the write key is not valid (revoked, or mistyped)",
            )
        }
    }
    let messages = if batch {
        let Some(items) = message["batch"].as_array() else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "a batch is `{\"batch\": [ … ]}`",
            );
        };
        // What the batch says for all its events, each event's own value first.
        let shared = ["sentAt", "context"];
        items
            .iter()
            .map(|item| {
                let mut item = item.clone();
                if let Value::Object(m) = &mut item {
                    for name in shared {
                        if m.get(name).is_none_or(Value::is_null) && !message[name].is_null() {
                            m.insert(name.into(), message[name].clone());
                        }
                    }
                }
                item
            })
            .collect()
    } else {
        vec![message]
    };
    let kind = (!batch).then_some(call);
    let accepted = tokio::task::spawn_blocking(move || {
        let accepted = app
            .ingest()
            .accept(kind.as_deref(), &messages, received_at)?;
        // The events are durable: the answer goes now, and the stream worker runs them
        // through the operators. A reader of live values catches up before reading, so it
        // sees them once the client has its 200.
        app.wake_stream();
        Ok(accepted)
    })
    .await;
    match accepted {
        Ok(Ok(_)) => Json(json!({"success": true})).into_response(),
        Ok(Err(Refused::Invalid(m))) => error(StatusCode::BAD_REQUEST, "invalid", m),
        Ok(Err(Refused::TooLarge(m))) => error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
        Ok(Err(Refused::InFlight(m))) => error(StatusCode::SERVICE_UNAVAILABLE, "retry", m),
        Ok(Err(Refused::Storage(m))) => error(StatusCode::INTERNAL_SERVER_ERROR, "storage", m),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}
