//! The tracking API (Segment's HTTP API) on a real `cdp serve`: every call type, write keys as
//! basic user or `writeKey`, the errors and limits, `messageId` written once across restarts,
//! nothing acknowledged lost when the server is killed with SIGKILL during ingest, a real
//! Segment client library (analytics-python) pointed at it, and `cdp stream --from`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use cdp_runtime::eventlog::EventLog;
use serde_json::{json, Value};

use crate::serve::Server;
use crate::support::{cdp, profile_json, profile_value, retail_copy, text};

fn add_key(dir: &Path, name: &str, role: &str) -> String {
    let o = cdp(&[
        "keys",
        "add",
        name,
        "--role",
        role,
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("cdp_"))
        .expect("a key is printed")
        .to_string()
}

fn basic(key: &str) -> Vec<(&'static str, String)> {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    vec![("Authorization", format!("Basic {token}"))]
}

/// The events the log holds, by messageId (a count per id, and the last event of each).
fn logged(dir: &Path) -> (HashMap<String, usize>, HashMap<String, Value>) {
    let log = EventLog::open(&EventLog::path(&dir.join(".cdp"))).unwrap();
    let mut counts = HashMap::new();
    let mut events = HashMap::new();
    for (_, bytes) in log.read_from(0).unwrap() {
        let event: Value = serde_json::from_slice(&bytes).unwrap();
        let id = event["messageId"].as_str().unwrap().to_string();
        *counts.entry(id.clone()).or_insert(0) += 1;
        events.insert(id, event);
    }
    (counts, events)
}

/// A request the tracking API refuses: status, path, headers, body, error code.
type Refusal = (
    u16,
    &'static str,
    Vec<(&'static str, String)>,
    Vec<u8>,
    &'static str,
);

fn project() -> (tempfile::TempDir, PathBuf, String) {
    let (tmp, dir) = retail_copy();
    let key = add_key(&dir, "website", "write");
    (tmp, dir, key)
}

#[test]
fn every_call_type_is_logged_once_per_message_id_with_segments_semantics() {
    let (_tmp, dir, key) = project();
    let reader = add_key(&dir, "analyst", "read");
    let server = Server::start(&dir);
    let post = |path: &str, body: &Value| {
        server.send("POST", path, &basic(&key), body.to_string().as_bytes())
    };
    let calls = [
        (
            "/v1/identify",
            json!({"userId": "C0001", "traits": {"email": "ana@example.com"}, "messageId": "m-identify"}),
        ),
        (
            "/v1/track",
            json!({"userId": "C0001", "event": "Order Completed", "properties": {"amount": 42.5}, "messageId": "m-track",
                             "timestamp": "2024-11-20T10:00:00Z", "sentAt": "2024-11-20T10:00:05Z"}),
        ),
        (
            "/v1/page",
            json!({"anonymousId": "cookie-1", "name": "Home", "properties": {"url": "https://shop.example/"}, "messageId": "m-page"}),
        ),
        (
            "/v1/screen",
            json!({"userId": "C0001", "name": "Cart", "messageId": "m-screen"}),
        ),
        (
            "/v1/group",
            json!({"userId": "C0001", "groupId": "acme", "traits": {"plan": "pro"}, "messageId": "m-group"}),
        ),
        (
            "/v1/alias",
            json!({"userId": "C0001", "previousId": "cookie-1", "messageId": "m-alias"}),
        ),
    ];
    for (path, body) in &calls {
        assert_eq!(post(path, body), (200, json!({"success": true})), "{path}");
    }
    // A batch in analytics-python's shape: `sentAt` once for all its events; a repeat inside.
    let batch = json!({"batch": [
        {"type": "track", "userId": "C0002", "event": "Product Viewed", "messageId": "m-b1", "timestamp": "2024-11-20T09:00:00Z"},
        {"type": "page", "userId": "C0002", "messageId": "m-b2"},
        {"type": "track", "userId": "C0001", "event": "Order Completed", "messageId": "m-track"},
    ], "sentAt": "2024-11-20T09:00:00Z"});
    assert_eq!(post("/v1/batch", &batch).0, 200);
    // The write key in the body instead of basic authentication.
    let in_body =
        json!({"writeKey": key, "userId": "C0003", "event": "Signed Up", "messageId": "m-body"});
    assert_eq!(
        server
            .send("POST", "/v1/track", &[], in_body.to_string().as_bytes())
            .0,
        200
    );

    // Refusals, each with a JSON error.
    let track = json!({"userId": "u", "event": "E"}).to_string();
    let cases: Vec<Refusal> = vec![
        (401, "/v1/track", vec![], track.clone().into_bytes(), "unauthorized"),
        (401, "/v1/track", basic("cdp_wrong"), track.clone().into_bytes(), "unauthorized"),
        (403, "/v1/track", basic(&reader), track.clone().into_bytes(), "forbidden"),
        (400, "/v1/track", basic(&key), b"{not json".to_vec(), "invalid"),
        (400, "/v1/track", basic(&key), json!({"userId": "u"}).to_string().into_bytes(), "invalid"),
        (400, "/v1/batch", basic(&key), json!({"batch": [{"type": "track", "userId": "u", "event": "E"}, {"type": "bogus", "userId": "u"}]}).to_string().into_bytes(), "invalid"),
        (404, "/v1/purchase", basic(&key), track.clone().into_bytes(), "not_found"),
        (413, "/v1/track", basic(&key), json!({"userId": "u", "event": "E", "properties": {"x": "y".repeat(33 * 1024)}}).to_string().into_bytes(), "too_large"),
        (413, "/v1/batch", basic(&key), json!({"batch": (0..30).map(|i| json!({"type": "track", "userId": "u", "event": "E", "properties": {"i": i, "x": "y".repeat(20_000)}})).collect::<Vec<_>>()}).to_string().into_bytes(), "too_large"),
    ];
    for (status, path, headers, body, code) in cases {
        let (got, answer) = server.send("POST", path, &headers, &body);
        assert_eq!(
            (got, answer["error"]["code"].as_str().unwrap_or("")),
            (status, code),
            "{path}: {answer}"
        );
        assert_eq!(answer["success"], false);
        assert!(answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // A write key reads nothing.
    assert_eq!(server.get("/api/v1/definitions", &key).0, 403);

    // After a restart, a repeated messageId is acknowledged and still logged once.
    drop(server);
    let server = Server::start(&dir);
    let again = server.send(
        "POST",
        "/v1/track",
        &basic(&key),
        calls[1].1.to_string().as_bytes(),
    );
    assert_eq!(again.0, 200);
    drop(server);

    let (counts, events) = logged(&dir);
    let mut ids: Vec<&str> = counts.keys().map(String::as_str).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "m-alias",
            "m-b1",
            "m-b2",
            "m-body",
            "m-group",
            "m-identify",
            "m-page",
            "m-screen",
            "m-track"
        ]
    );
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let track = &events["m-track"];
    assert_eq!(track["type"], "track");
    assert_eq!(track["properties"]["amount"], 42.5);
    assert_eq!(track["originalTimestamp"], "2024-11-20T10:00:00.000Z");
    let alias = &events["m-alias"];
    assert_eq!(
        (alias["previousId"].as_str(), alias["userId"].as_str()),
        (Some("cookie-1"), Some("C0001"))
    );
    // The batch's sentAt applied to its events: 0 s between event and send, so the event's time
    // is the time the server received it.
    assert_eq!(events["m-b1"]["timestamp"], events["m-b1"]["receivedAt"]);
    assert_eq!(events["m-page"]["anonymousId"], "cookie-1");
}

#[test]
fn nothing_acknowledged_is_lost_or_doubled_when_the_server_is_killed_during_ingest() {
    let (_tmp, dir, key) = project();
    let acknowledged = kill_during_ingest(
        &dir,
        &key,
        |round| 300 + 150 * round,
        |round, t, i| {
            let ids: Vec<String> = (0..5).map(|j| format!("r{round}-t{t}-{i}-{j}")).collect();
            let batch = json!({"batch": ids.iter().map(|id| json!({"type": "track", "userId": format!("u{t}"), "event": "E", "messageId": id})).collect::<Vec<_>>()});
            (ids, batch.to_string())
        },
    );
    let acknowledged: Vec<String> = acknowledged.into_iter().map(|(_, id)| id).collect();
    // One more server: the log opens after the kills, and a resend of everything is all repeats.
    let server = Server::start(&dir);
    assert!(
        acknowledged.len() > 100,
        "only {} events acknowledged",
        acknowledged.len()
    );
    for chunk in acknowledged.chunks(400) {
        let batch = json!({"batch": chunk.iter().map(|id| json!({"type": "track", "userId": "u", "event": "E", "messageId": id})).collect::<Vec<_>>()});
        assert_eq!(
            server
                .send(
                    "POST",
                    "/v1/batch",
                    &basic(&key),
                    batch.to_string().as_bytes()
                )
                .0,
            200
        );
    }
    drop(server);
    let (counts, _) = logged(&dir);
    for id in &acknowledged {
        assert_eq!(counts.get(id), Some(&1), "acknowledged {id}");
    }
    assert!(
        counts.values().all(|&n| n == 1),
        "an event was logged twice"
    );
}

#[test]
fn a_real_segment_client_library_sends_to_the_tracking_api() {
    let Some(python) = std::env::var_os("CDP_TEST_PYTHON") else {
        panic!(
            "CDP_TEST_PYTHON names a Python with segment-analytics-python (`bash .ci/run` sets it)"
        );
    };
    let (_tmp, dir, key) = project();
    let server = Server::start(&dir);
    let script = r#"
import sys
import segment.analytics as analytics
analytics.write_key = sys.argv[1]
analytics.host = sys.argv[2]
analytics.sync_mode = False
errors = []
analytics.on_error = lambda error, items: errors.append(error)
analytics.identify("C0001", {"email": "ana@example.com", "name": "Ana"}, message_id="py-identify")
analytics.track("C0001", "Order Completed", {"amount": 99.9, "order_id": "O-1"}, message_id="py-track")
analytics.page("C0001", "Docs", "Quick start", {"url": "https://shop.example/docs"}, message_id="py-page")
analytics.track(anonymous_id="cookie-9", event="Product Viewed", properties={"sku": "S-1"}, message_id="py-anon")
analytics.flush()
analytics.shutdown()
if errors:
    sys.exit("errors: %r" % errors)
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, &key, &format!("http://{}", server.addr)])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "{}", text(&out));
    drop(server);
    let (counts, events) = logged(&dir);
    for id in ["py-identify", "py-track", "py-page", "py-anon"] {
        assert_eq!(counts.get(id), Some(&1), "{id}: {counts:?}");
    }
    assert_eq!(events["py-identify"]["traits"]["email"], "ana@example.com");
    assert_eq!(events["py-track"]["event"], "Order Completed");
    assert_eq!(events["py-track"]["properties"]["amount"], 99.9);
    assert_eq!(events["py-page"]["name"], "Quick start");
    assert_eq!(events["py-anon"]["anonymousId"], "cookie-9");
    assert_eq!(
        events["py-track"]["context"]["library"]["name"], "analytics-python",
        "the library's context is kept"
    );
}

#[test]
fn stream_from_a_file_writes_the_good_lines_and_names_the_bad_ones() {
    let (tmp, dir, _) = project();
    let file = tmp.path().join("events.jsonl");
    std::fs::write(
        &file,
        [
            r#"{"type":"identify","userId":"C0001","traits":{"plan":"pro"},"messageId":"f-1"}"#,
            r#"{"type":"track","userId":"C0001","messageId":"f-2"}"#,
            "",
            r#"{"type":"track","userId":"C0001","event":"Order Completed","messageId":"f-3","properties":{"order_id":"O-9","total":12.5,"status":"completed"}}"#,
            "{oops",
            r#"{"type":"page","anonymousId":"c-1","messageId":"f-1"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let f = file.to_str().unwrap();
    let first = cdp(&["stream", d, "--from", f]);
    assert_eq!(first.status.code(), Some(1), "{}", text(&first));
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains(&format!("{f}:2: a track call needs `event`")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{f}:5: not JSON")), "{stderr}");
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("2 events written"),
        "{}",
        text(&first)
    );
    assert!(
        String::from_utf8_lossy(&first.stdout).contains("rows of sources: orders 1, web_events 1"),
        "{}",
        text(&first)
    );
    // Then the log goes through the streaming operators, which report what they hold.
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("operators: 2 events"), "{stdout}");
    assert!(
        stdout.contains("customer: 1 profiles; segments: "),
        "{stdout}"
    );
    assert!(stdout.contains("recent_first_buyers 1"), "{stdout}");
    let (counts, events) = logged(&dir);
    assert_eq!(counts.len(), 2);
    assert_eq!(
        events["f-1"]["type"], "identify",
        "the later repeat of f-1 is not written"
    );

    // Replayed again: every good line is a repeat. With a server running, the log is its own.
    let again = cdp(&["stream", d, "--from", f]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 events written"),
        "{}",
        text(&again)
    );
    let _server = Server::start(&dir);
    let busy = cdp(&["stream", d, "--from", f]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("in use by another process"),
        "{}",
        text(&busy)
    );
}

#[test]
fn ingest_mappings_are_checked_against_the_sources() {
    let (_tmp, dir, _) = project();
    let toml = dir.join("cdp.toml");
    let original = std::fs::read_to_string(&toml).unwrap();
    let broken = original
        .replace("url = \"properties.url\"", "path = \"properties.url\"")
        .replace("order_id = \"properties.order_id\"\n", "");
    std::fs::write(&toml, &broken).unwrap();
    let check = cdp(&["check", dir.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    let stderr = text(&check);
    assert!(
        stderr.contains("source `web_events` has no column `path`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("leave its key column `order_id` empty"),
        "{stderr}"
    );
    let line = broken
        .lines()
        .position(|l| l.starts_with("path = \"properties"))
        .unwrap()
        + 1;
    assert!(stderr.contains(&format!("cdp.toml:{line}:1")), "{stderr}");
}

#[test]
fn tracked_events_are_rows_of_the_next_run() {
    let (_tmp, dir, key) = project();
    let d = dir.to_str().unwrap();
    let run = cdp(&["run", d]);
    assert!(run.status.success(), "{}", text(&run));
    // C0001's lifetime value as of 2024-12-01, summed by hand from orders.csv.
    assert_eq!(
        profile_value(&profile_json(&dir, "customer_id=C0001"), "lifetime_value")["value"],
        json!("2134.19")
    );

    let server = Server::start(&dir);
    // No sentAt: the time is taken as given (with sentAt, it would be corrected to now).
    let order = json!({"userId": "c0001", "event": "Order Completed", "messageId": "o-1",
        "timestamp": "2024-11-30T12:00:00Z",
        "properties": {"order_id": "O-TRACKED", "total": 100.0, "status": "completed"}});
    // The same order sent twice (a client retry) counts once; an event of another name is not
    // an order.
    for body in [
        &order,
        &order,
        &json!({"userId": "C0001", "event": "Cart Viewed", "messageId": "o-2"}),
    ] {
        assert_eq!(
            server
                .send(
                    "POST",
                    "/v1/track",
                    &basic(&key),
                    body.to_string().as_bytes()
                )
                .0,
            200
        );
    }
    // The run reads the log while the server holds it.
    let run = cdp(&["run", d]);
    assert!(run.status.success(), "{}", text(&run));
    drop(server);
    assert_eq!(
        profile_value(&profile_json(&dir, "customer_id=C0001"), "lifetime_value")["value"],
        json!("2234.19"),
        "the tracked order of 100 EUR on 2024-11-30 counts"
    );
}

/// What a webhook receiver got: (Idempotency-Key, JSON body) per request.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A receiver on 127.0.0.1 that answers 200 and collects what it gets.
fn webhook_receiver() -> (u16, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut key, mut line) = (0, String::new(), String::new());
            while reader.read_line(&mut line).unwrap_or(0) > 0 && !line.trim().is_empty() {
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("idempotency-key:") {
                    key = line["idempotency-key:".len()..].trim().to_string();
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                sink.lock().unwrap().push((key, body));
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, received)
}

#[test]
fn journey_activations_of_a_run_are_posted_to_their_webhooks_once() {
    let (_tmp, dir, _) = project();
    let (port, received) = webhook_receiver();
    let activations = dir.join("activations.cdp");
    let definitions = std::fs::read_to_string(&activations).unwrap().replace(
        "https://esp.example.com",
        &format!("http://127.0.0.1:{port}"),
    );
    std::fs::write(&activations, &definitions).unwrap();
    // The activations that are webhooks, from their definitions.
    let mut webhooks = Vec::new();
    let mut current = None;
    for line in definitions.lines() {
        if let Some(rest) = line.strip_prefix("activation ") {
            current = rest.split_whitespace().next().map(str::to_string);
        }
        if line.trim_start().starts_with("to webhook") {
            webhooks.extend(current.take());
        }
    }
    let d = dir.to_str().unwrap();
    let run = cdp(&["run", d]);
    assert!(run.status.success(), "{}", text(&run));
    // What the run fired: every row of the journeys' activation tables that is a webhook.
    let storage = cdp_runtime::store::Storage::open(&dir.join(".cdp")).unwrap();
    let latest = storage.latest().unwrap().unwrap();
    let mut expected = Vec::new();
    for t in latest
        .tables
        .iter()
        .filter(|t| t.table.ends_with("_activations"))
    {
        for batch in storage.read(t).unwrap().1 {
            use datafusion::arrow::array::AsArray;
            use datafusion::arrow::datatypes::DataType;
            let text = |name: &str| {
                datafusion::arrow::compute::cast(
                    batch.column_by_name(name).unwrap(),
                    &DataType::Utf8,
                )
                .unwrap()
            };
            let (ids, names) = (text("canonical_id"), text("activation"));
            let (ids, names) = (ids.as_string::<i32>(), names.as_string::<i32>());
            for row in 0..batch.num_rows() {
                if webhooks.iter().any(|w| w == names.value(row)) {
                    expected.push((names.value(row).to_string(), ids.value(row).to_string()));
                }
            }
        }
    }
    expected.sort();
    assert!(
        !expected.is_empty(),
        "retail's journeys fire webhooks in its first run"
    );

    let admin = add_key(&dir, "ops", "admin");
    let server = Server::start(&dir);
    let started = std::time::Instant::now();
    while received.lock().unwrap().len() < expected.len() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{} of {} webhooks arrived",
            received.lock().unwrap().len(),
            expected.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The activation's page counts what its receiver accepted.
    let welcome = expected
        .iter()
        .filter(|(a, _)| a == "welcome_email")
        .count();
    let started = std::time::Instant::now();
    loop {
        let (status, page) = server.get("/d/welcome_email", &admin);
        assert_eq!(status, 200);
        let shown = format!("<b>{welcome}</b><span>delivered</span>");
        if page.as_str().is_some_and(|p| p.contains(&shown)) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{shown} not on the page"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The run's segment entries are in the transition log, on the segment's page.
    let entered = {
        use datafusion::arrow::array::AsArray;
        let history = latest
            .tables
            .iter()
            .find(|t| t.table == "customer_segment_history")
            .unwrap();
        storage
            .read(history)
            .unwrap()
            .1
            .iter()
            .map(|b| {
                let segment = datafusion::arrow::compute::cast(
                    b.column_by_name("segment").unwrap(),
                    &datafusion::arrow::datatypes::DataType::Utf8,
                )
                .unwrap();
                let segment = segment.as_string::<i32>();
                (0..b.num_rows())
                    .filter(|&r| segment.value(r) == "high_value")
                    .count()
            })
            .sum::<usize>()
    };
    assert!(entered > 0);
    let (_, page) = server.get("/d/high_value", &admin);
    let page = page.as_str().unwrap_or_default();
    assert!(
        page.contains("id=\"transitions-table\""),
        "no transitions table"
    );
    assert_eq!(page.matches("<td>entered</td>").count(), entered.min(20));
    drop(server);
    let got = received.lock().unwrap().clone();
    let mut delivered: Vec<(String, String)> = got
        .iter()
        .map(|(_, b)| {
            (
                b["activation"].as_str().unwrap().to_string(),
                b["rows"][0]["canonical_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    delivered.sort();
    assert_eq!(delivered, expected);
    for (key, body) in &got {
        let name = body["activation"].as_str().unwrap();
        assert!(key.starts_with(&format!("cdp-{name}-")), "{key}");
        assert_eq!(body["run"], latest.run.as_str());
        assert!(body["rows"][0].get("primary_key").is_some(), "{body}");
    }
    if let Some((_, welcome)) = got.iter().find(|(_, b)| b["activation"] == "welcome_email") {
        let row = &welcome["rows"][0];
        for column in ["contact_email", "first_name", "country"] {
            assert!(row.get(column).is_some(), "{column} in {welcome}");
        }
    }
    // A restart does not send the run's webhooks again.
    let _server = Server::start(&dir);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(received.lock().unwrap().len(), expected.len());
}

/// A live profile of the streaming operators (`/api/v1/live/...`), as an admin key reads it.
fn live(server: &Server, admin: &str, customer: &str) -> (u16, Value) {
    server.get(
        &format!("/api/v1/live/customer/customer_id/{customer}"),
        admin,
    )
}

#[test]
fn the_operators_serve_tracked_events_at_once_and_log_what_they_move() {
    let (_tmp, dir, key) = project();
    // A webhook on entering high_value, posted by the stream as the entry happens.
    let (port, received) = webhook_receiver();
    std::fs::write(
        dir.join("live_hooks.cdp"),
        format!(
            "activation high_value_hook of customer {{\n  segment high_value\n  \
             to webhook \"http://127.0.0.1:{port}/high-value\"\n  \
             columns [customer_id, lifetime_value]\n}}\n"
        ),
    )
    .unwrap();
    let admin = add_key(&dir, "ops", "admin");
    let server = Server::start(&dir);
    // The operators start from the source files: C0001's lifetime value over every order in
    // orders.csv (the files reach 2025-01-07, past the batch as-of).
    let (status, before) = live(&server, &admin, "C0001");
    assert_eq!(status, 200, "{before}");
    let ltv = |p: &Value| p["features"]["lifetime_value"].as_f64().unwrap();
    let before_ltv = ltv(&before);
    let track = |id: &str, user: &str, at: &str, total: f64| {
        json!({"userId": user, "event": "Order Completed", "messageId": id, "timestamp": at,
               "properties": {"order_id": id, "total": total, "status": "completed"}})
    };
    for body in [
        track("live-1", "C0001", "2025-02-01T10:00:00Z", 100.0),
        // The same message again (a client retry): counted once.
        track("live-1", "C0001", "2025-02-01T10:00:00Z", 100.0),
        track("live-2", "C9999", "2025-02-01T11:00:00Z", 600.0),
        // Older than the watermark (newest time − 1 h): late, kept aside, not counted.
        track("live-3", "C0001", "2025-01-20T00:00:00Z", 50.0),
    ] {
        let (status, answer) = server.send(
            "POST",
            "/v1/track",
            &basic(&key),
            body.to_string().as_bytes(),
        );
        assert_eq!(status, 200, "{answer}");
    }
    // Served at once, without a run.
    let (_, after) = live(&server, &admin, "C0001");
    assert!(
        (ltv(&after) - before_ltv - 100.0).abs() < 1e-6,
        "{before_ltv} + 100 = {after}"
    );
    let (status, new) = live(&server, &admin, "c9999");
    assert_eq!(status, 200, "a userId is normalized as the key is: {new}");
    assert_eq!(ltv(&new), 600.0);
    assert!(
        new["segments"]
            .as_array()
            .unwrap()
            .contains(&json!("high_value")),
        "{new}"
    );
    let (_, status) = server.get("/api/v1/live", &admin);
    assert_eq!(status["events"], 3, "{status}");
    assert_eq!(status["late_rows"], 1, "{status}");
    // The entry is in the transition log, once, with the new profile's id.
    let entered = |server: &Server| {
        let (code, log) = server.get("/api/v1/transitions?definition=high_value", &admin);
        assert_eq!(code, 200, "{log}");
        log["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["profile"] == new["canonical_id"] && t["what"]["kind"] == "segment_enter")
            .count()
    };
    assert_eq!(entered(&server), 1);
    // The feature API serves the same live values when asked.
    let (status, served) = server.post(
        "/api/v1/features",
        &admin,
        &json!({"features": ["lifetime_value", "high_value"],
                "entities": {"customer_id": ["C9999", "C7777"]}, "live": true}),
    );
    assert_eq!(status, 200, "{served}");
    assert_eq!(served["results"][1]["values"][0], json!(600.0), "{served}");
    assert_eq!(
        served["results"][2]["values"],
        json!([true, null]),
        "{served}"
    );
    assert_eq!(
        served["results"][1]["statuses"],
        json!(["PRESENT", "NOT_FOUND"])
    );
    // The entry's webhook: one POST with the profile's live values.
    let posted = |id: &Value| {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, body)| body["rows"][0]["canonical_id"] == *id)
            .map(|(_, body)| body.clone())
            .collect::<Vec<_>>()
    };
    let started = std::time::Instant::now();
    while posted(&new["canonical_id"]).is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "no webhook for the entry"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let hook = &posted(&new["canonical_id"])[0];
    assert_eq!(hook["activation"], "high_value_hook", "{hook}");
    assert_eq!(hook["segment"], "high_value", "{hook}");
    assert_eq!(hook["rows"][0]["customer_id"], "C9999", "{hook}");
    assert_eq!(hook["rows"][0]["primary_key"], "C9999", "{hook}");
    assert_eq!(
        hook["rows"][0]["lifetime_value"]
            .to_string()
            .trim_matches('"')
            .parse::<f64>()
            .ok(),
        Some(600.0),
        "{hook}"
    );
    // Moving the clock 25 days on moved journeys too (waits ran out): their steps and the
    // activations they fired are in the log.
    let journey_steps = |server: &Server| {
        let (_, log) = server.get("/api/v1/transitions?definition=winback&limit=1000", &admin);
        let steps = log["transitions"].as_array().unwrap().clone();
        assert!(
            steps.iter().all(|t| t["what"]["journey"] == "winback"),
            "{log}"
        );
        steps.len()
    };
    let steps = journey_steps(&server);
    assert!(steps > 0, "no winback step logged");
    let (_, fired) = server.get("/api/v1/transitions?definition=winback_email_1", &admin);
    assert!(
        fired["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["what"]["kind"] == "activation"),
        "{fired}"
    );
    assert_eq!(
        live(&server, &admin, "C7777").0,
        404,
        "no such customer in the stream"
    );

    // After a restart the operators replay the files and the log: the same values, and the
    // entry is not logged twice.
    drop(server);
    let server = Server::start(&dir);
    let (_, again) = live(&server, &admin, "C0001");
    assert_eq!(ltv(&again), ltv(&after));
    assert_eq!(entered(&server), 1);
    assert_eq!(journey_steps(&server), steps);
    // The entry is not posted again after the restart (deliveries run every half second).
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(posted(&new["canonical_id"]).len(), 1);
}

/// Starts the server and sends batches from 4 threads until it is killed with SIGKILL after
/// `wait(round)` ms, 4 times; `batch(round, thread, i)` makes a request's messageIds and body.
/// Returns the acknowledged messageIds with the thread that sent them.
fn kill_during_ingest(
    dir: &Path,
    key: &str,
    wait: fn(u64) -> u64,
    batch: fn(u64, usize, usize) -> (Vec<String>, String),
) -> Vec<(usize, String)> {
    let acknowledged = Arc::new(Mutex::new(Vec::<(usize, String)>::new()));
    for round in 0..4u64 {
        let server = Arc::new(Server::start(dir));
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let (server, key, acknowledged) =
                    (server.clone(), key.to_string(), acknowledged.clone());
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        let (ids, body) = batch(round, t, i);
                        let (status, _) =
                            server.send("POST", "/v1/batch", &basic(&key), body.as_bytes());
                        if status != 200 {
                            return; // the server is gone
                        }
                        let mut acked = acknowledged.lock().unwrap();
                        acked.extend(ids.into_iter().map(|id| (t, id)));
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(wait(round)));
        // SIGKILL: no chance to flush anything.
        let pid = server.pid();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        for s in senders {
            s.join().unwrap();
        }
    }
    let out = acknowledged.lock().unwrap().clone();
    out
}

/// A `/v1/batch` body of "Order Completed" events of 10.00 for customer `K<thread>`, each
/// messageId also its order id.
fn orders_batch<'a>(orders: impl Iterator<Item = (usize, &'a str)>) -> String {
    json!({"batch": orders.map(|(t, id)| json!({
        "type": "track", "event": "Order Completed", "userId": format!("K{t}"),
        "messageId": id, "timestamp": "2025-02-01T10:00:00Z",
        "properties": {"order_id": id, "total": 10.0, "status": "completed"},
    })).collect::<Vec<_>>()})
    .to_string()
}

/// Checkpoints under kills: the server checkpoints its operators' state after every batch of
/// events (`checkpoint_interval = "0"`) and is killed with SIGKILL during concurrent ingest,
/// four times. After the last restart (from a checkpoint, replaying only the log after it)
/// the live values count every logged event once — every acknowledged one among them — and
/// each profile's entry into high_value is in the transition log once.
#[test]
fn live_values_count_every_acknowledged_event_once_across_kills_and_checkpoints() {
    let (_tmp, dir, key) = project();
    let toml = dir.join("cdp.toml");
    let mut config = std::fs::read_to_string(&toml).unwrap();
    config.push_str("\n[stream]\ncheckpoint_interval = \"0\"\n");
    std::fs::write(&toml, config).unwrap();
    let admin = add_key(&dir, "ops", "admin");
    let acknowledged = kill_during_ingest(
        &dir,
        &key,
        |round| 900 + 300 * round,
        |round, t, i| {
            let ids: Vec<String> = (0..5).map(|j| format!("k{round}-{t}-{i}-{j}")).collect();
            (
                ids.clone(),
                orders_batch(ids.iter().map(|id| (t, id.as_str()))),
            )
        },
    );
    let server = Server::start(&dir);
    // Resending everything acknowledged changes nothing: all repeats.
    for chunk in acknowledged.chunks(200) {
        let body = orders_batch(chunk.iter().map(|(t, id)| (*t, id.as_str())));
        assert_eq!(
            server
                .send("POST", "/v1/batch", &basic(&key), body.as_bytes())
                .0,
            200
        );
    }
    let (_, status) = server.get("/api/v1/live", &admin);
    let checkpoint = &status["checkpoint"];
    assert!(
        checkpoint["restored_from_offset"].as_u64().unwrap_or(0) > 0,
        "the last start did not use a checkpoint: {status}"
    );
    assert!(
        checkpoint["events_replayed_since_start"].as_u64().unwrap()
            < status["events"].as_u64().unwrap(),
        "{status}"
    );
    // The log as another process reads it while the server holds it.
    let events: Vec<Value> = cdp_runtime::eventlog::read_all(&EventLog::path(&dir.join(".cdp")))
        .unwrap()
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    let mut entered_checked = 0;
    for t in 0..4 {
        let user = format!("K{t}");
        let logged = events
            .iter()
            .filter(|e| e["userId"] == user.as_str())
            .count();
        let acked = acknowledged.iter().filter(|(u, _)| *u == t).count();
        assert!(
            logged >= acked,
            "{user}: {acked} acknowledged, {logged} logged"
        );
        let (code, profile) = live(&server, &admin, &user);
        if logged == 0 {
            assert_eq!(code, 404);
            continue;
        }
        assert_eq!(code, 200, "{profile}");
        assert_eq!(
            profile["features"]["orders_total"],
            json!(logged),
            "{user}: {logged} orders logged ({acked} acknowledged): {profile}"
        );
        let ltv = profile["features"]["lifetime_value"].as_f64().unwrap();
        assert!(
            (ltv - 10.0 * logged as f64).abs() < 1e-6,
            "{user}: {profile}"
        );
        if logged >= 50 {
            let (_, log) = server.get(
                "/api/v1/transitions?definition=high_value&limit=1000",
                &admin,
            );
            let entries = log["transitions"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| {
                    x["profile"] == profile["canonical_id"] && x["what"]["kind"] == "segment_enter"
                })
                .count();
            assert_eq!(
                entries, 1,
                "{user} entered high_value {entries} times: {log}"
            );
            entered_checked += 1;
        }
    }
    assert!(
        entered_checked > 0,
        "no profile reached high_value: {status}"
    );
}

/// Polls `GET path` (as `key`) until `done` holds of the 200 answer; fails after 60 s.
fn poll(server: &Server, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (status, body) = server.get(path, key);
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{path}: still {status} {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A profile value of the profile API's answer, as a number (decimals come as text).
fn number(profile: &Value, name: &str) -> f64 {
    let v = &profile["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {profile}"))["value"];
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("{name} = {v}"))
}

#[test]
fn the_online_store_takes_the_streams_values_as_events_arrive() {
    let (_tmp, dir, key) = project();
    let d = dir.to_str().unwrap();
    let admin = add_key(&dir, "ops", "admin");
    let run = cdp(&["run", d]);
    assert!(run.status.success(), "{}", text(&run));
    let server = Server::start(&dir);
    let profile = |id: &str| format!("/api/v1/profiles/customer/customer_id/{id}");
    // Before any event: the batch run's records (as of 2024-12-01).
    let batch = poll(&server, &admin, &profile("C0001"), |_| true);
    assert_ne!(batch["run"], "live", "{batch}");
    assert_eq!(number(&batch, "lifetime_value"), 2134.19);
    let (_, c0002) = server.get(&profile("C0002"), &admin);
    let c0002_id = c0002["canonical_id"].as_str().unwrap().to_string();
    let (_, live_before) = live(&server, &admin, "C0001");
    let live_ltv = |p: &Value| p["features"]["lifetime_value"].as_f64().unwrap();

    let order = |id: &str, user: &str, email: Option<&str>, total: f64| {
        let mut o = json!({"userId": user, "event": "Order Completed", "messageId": id,
            "timestamp": "2025-02-01T10:00:00Z",
            "properties": {"order_id": id, "total": total, "status": "completed"}});
        if let Some(email) = email {
            o["context"] = json!({"traits": {"email": email}});
        }
        o
    };
    for body in [
        order("o-live-1", "C0001", None, 100.0),
        // A new customer id with C0002's email: the stream merges the two profiles.
        order("o-live-2", "C9999", Some("oskar.wolf@web.de"), 600.0),
    ] {
        let (status, answer) = server.send(
            "POST",
            "/v1/track",
            &basic(&key),
            body.to_string().as_bytes(),
        );
        assert_eq!(status, 200, "{answer}");
    }
    // The profile API serves the stream's record, with every event counted, as the live
    // endpoint computes it.
    let after = poll(&server, &admin, &profile("C0001"), |p| p["run"] == "live");
    let (_, live_after) = live(&server, &admin, "C0001");
    assert!((live_ltv(&live_after) - live_ltv(&live_before) - 100.0).abs() < 1e-6);
    assert!(
        (number(&after, "lifetime_value") - live_ltv(&live_after)).abs() < 1e-6,
        "{after} vs {live_after}"
    );
    assert!(
        after["as_of"]
            .as_str()
            .unwrap()
            .starts_with("2025-02-01 10:00"),
        "as of the stream's clock: {after}"
    );
    let merged = poll(&server, &admin, &profile("C9999"), |p| p["run"] == "live");
    let (_, live_merged) = live(&server, &admin, "C9999");
    assert_eq!(merged["canonical_id"], live_merged["canonical_id"]);
    assert!((number(&merged, "lifetime_value") - live_ltv(&live_merged)).abs() < 1e-6);
    let mut segments = merged["segments"].as_array().unwrap().clone();
    let mut live_segments = live_merged["segments"].as_array().unwrap().clone();
    segments.sort_by_key(|s| s.to_string());
    live_segments.sort_by_key(|s| s.to_string());
    assert_eq!(segments, live_segments);
    assert!(segments.contains(&json!("high_value")), "{merged}");
    let keys: Vec<&Value> = merged["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["value"])
        .collect();
    assert!(
        keys.contains(&&json!("C9999")) && keys.contains(&&json!("C0002")),
        "{merged}"
    );
    // C0002's key and its batch id both find the merged profile.
    let (_, by_key) = server.get(&profile("C0002"), &admin);
    assert_eq!(by_key["canonical_id"], merged["canonical_id"], "{by_key}");
    let (status, by_old_id) = server.get(
        &format!("/api/v1/profiles/customer/canonical_id/{c0002_id}"),
        &admin,
    );
    assert_eq!(status, 200, "{by_old_id}");
    assert_eq!(by_old_id["canonical_id"], merged["canonical_id"]);
    // The feature API (not asked for live values) reads the same record.
    let (status, served) = server.post(
        "/api/v1/features",
        &admin,
        &json!({"features": ["lifetime_value"], "entities": {"customer_id": ["C9999"]}}),
    );
    assert_eq!(status, 200, "{served}");
    let served_ltv = &served["results"][1]["values"][0];
    let served_ltv = served_ltv
        .as_f64()
        .or_else(|| served_ltv.as_str().and_then(|s| s.parse().ok()))
        .unwrap();
    assert!(
        (served_ltv - live_ltv(&live_merged)).abs() < 1e-6,
        "{served}"
    );
    // A profile no event reached keeps the batch run's record.
    let (_, untouched) = server.get(&profile("C0003"), &admin);
    assert_ne!(untouched["run"], "live", "{untouched}");
    let (_, status) = server.get("/api/v1/live", &admin);
    assert!(
        status["online_store_profiles_written"].as_u64().unwrap() >= 2,
        "{status}"
    );
    let first_run = status["online_store_run"].clone();

    // A new batch run (it reads the tracked events too) replaces the records with its own,
    // as of its own time; the next event writes the stream's record again.
    let run = cdp(&["run", d]);
    assert!(run.status.success(), "{}", text(&run));
    poll(&server, &admin, "/api/v1/live", |s| {
        s["online_store_run"] != first_run
    });
    let (_, rerun) = server.get(&profile("C0001"), &admin);
    assert_ne!(rerun["run"], "live", "{rerun}");
    assert_eq!(number(&rerun, "lifetime_value"), 2134.19, "{rerun}");
    let (status, _) = server.send(
        "POST",
        "/v1/track",
        &basic(&key),
        order("o-live-3", "C0001", None, 1.0).to_string().as_bytes(),
    );
    assert_eq!(status, 200);
    let again = poll(&server, &admin, &profile("C0001"), |p| p["run"] == "live");
    assert!((number(&again, "lifetime_value") - live_ltv(&live_after) - 1.0).abs() < 1e-6);
}
