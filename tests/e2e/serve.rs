//! `cdp serve`'s JSON API against a real server on 127.0.0.1: keys and roles, masking of
//! personal data, online features checked against values computed by hand, profiles by any
//! identity key, the OpenAPI document against the routes, 4xx JSON errors, and a run committed
//! while the server runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{cdp, retail_copy};
use serde_json::{json, Value};

/// A running `cdp serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
    /// The first key the server printed, when the project had none.
    pub first_key: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `cdp serve` on a free port and waits for its address.
    pub fn start(dir: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cdp"))
            .args(["serve", dir.to_str().unwrap(), "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cdp serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addr = None;
        let mut first_key = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.split(" on http://").nth(1) {
                addr = Some(rest.trim_end_matches('/').to_string());
            }
            if let Some(key) = line.strip_prefix("first API key") {
                first_key = key.rsplit(": ").next().map(str::to_string);
            }
            if line.starts_with("open http://") || (addr.is_some() && first_key.is_none()) {
                break;
            }
        }
        // Keep reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr: addr.expect("the server printed its address"),
            first_key,
        }
    }

    /// One HTTP/1.1 request; returns the status and the body as JSON (or as a JSON string).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut headers = Vec::new();
        if let Some(k) = key {
            headers.push(("Authorization", format!("Bearer {k}")));
        }
        self.send(method, path, &headers, body.unwrap_or("").as_bytes())
    }

    /// One HTTP/1.1 request with these headers (and a JSON content type when there is a body).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, Value) {
        // No server (killed by a test): status 0.
        let Ok(mut stream) = TcpStream::connect(&self.addr) else {
            return (0, Value::Null);
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        // Killed by a test after the connection was accepted: status 0 as well.
        if stream.write_all(head.as_bytes()).is_err() {
            return (0, Value::Null);
        }
        // The server may answer (413) before reading a large body: a failed write is fine.
        let _ = stream.write_all(body);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).to_string();
        let (headers, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status: u16 = headers
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let rest = if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        let value = serde_json::from_str(&rest).unwrap_or(Value::String(rest));
        (status, value)
    }

    pub fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.request("GET", path, Some(key), None)
    }

    pub fn post(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        self.request("POST", path, Some(key), Some(&body.to_string()))
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A copy of examples/retail, run once, with a read key and an admin key with the pii right.
fn served_retail() -> (tempfile::TempDir, PathBuf, String, String) {
    let (tmp, dir) = retail_copy();
    let d = dir.to_str().unwrap();
    let run = cdp(&["run", d]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let key = |args: &[&str]| {
        let o = cdp(args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        text.split_whitespace()
            .find(|w| w.starts_with("cdp_"))
            .expect("a key is printed")
            .to_string()
    };
    let reader = key(&["keys", "add", "reader", "--dir", d]);
    let admin = key(&["keys", "add", "ops", "--role", "admin", "--pii", "--dir", d]);
    (tmp, dir, reader, admin)
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn keys_roles_and_errors_are_checked_on_every_request() {
    let (_tmp, dir, reader, admin) = served_retail();
    let server = Server::start(&dir);
    assert!(
        server.first_key.is_none(),
        "the project has keys: none is made"
    );

    let (s, v) = server.request("GET", "/api/v1/definitions", None, None);
    assert_eq!((s, error_code(&v)), (401, "unauthorized"), "{v}");
    let (s, v) = server.get("/api/v1/definitions", "cdp_0123");
    assert_eq!((s, error_code(&v)), (401, "unauthorized"), "{v}");
    let (s, page) = server.request("GET", "/", None, None);
    assert_eq!(s, 401);
    assert!(page.as_str().unwrap_or("").contains("Sign in"), "{page}");
    assert_eq!(server.request("GET", "/healthz", None, None).0, 200);

    // Keys are managed by admins only.
    let (s, v) = server.get("/api/v1/keys", &reader);
    assert_eq!((s, error_code(&v)), (403, "forbidden"), "{v}");
    let (s, v) = server.get("/api/v1/keys", &admin);
    assert_eq!(s, 200, "{v}");
    let names: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["reader", "ops"]);
    assert!(
        !v.to_string().contains(&reader),
        "keys are never shown again"
    );
    let (s, made) = server.post(
        "/api/v1/keys",
        &admin,
        &json!({"name": "etl", "role": "read"}),
    );
    assert_eq!(s, 201, "{made}");
    let etl = made["key"].as_str().unwrap().to_string();
    assert_eq!(server.get("/api/v1/runs", &etl).0, 200);
    let (s, v) = server.post(
        "/api/v1/keys",
        &admin,
        &json!({"name": "etl", "role": "read"}),
    );
    assert_eq!((s, error_code(&v)), (409, "conflict"), "{v}");
    let (s, v) = server.post(
        "/api/v1/keys",
        &admin,
        &json!({"name": "x", "role": "root"}),
    );
    assert_eq!((s, error_code(&v)), (400, "bad_request"), "{v}");
    assert_eq!(
        server
            .request("DELETE", "/api/v1/keys/etl", Some(&admin), None)
            .0,
        200
    );
    assert_eq!(
        server.get("/api/v1/runs", &etl).0,
        401,
        "a revoked key stops working"
    );
    let (s, v) = server.request("DELETE", "/api/v1/keys/etl", Some(&admin), None);
    assert_eq!((s, error_code(&v)), (404, "not_found"), "{v}");

    // Unknown names and malformed requests: 4xx with a JSON body, never a 5xx.
    let cases: [(&str, &str, Option<&str>, u16); 9] = [
        ("GET", "/api/v1/definitions/lifetme_value", None, 404),
        (
            "GET",
            "/api/v1/definitions/high_value/sql?dialect=oracle",
            None,
            400,
        ),
        ("GET", "/api/v1/nothing/here", None, 404),
        (
            "GET",
            "/api/v1/profiles/customer/email/nobody@example.com",
            None,
            404,
        ),
        ("GET", "/api/v1/profiles/customer/shoe_size/42", None, 404),
        ("GET", "/api/v1/profiles/shop/email/x", None, 404),
        ("POST", "/api/v1/features", Some("{not json"), 400),
        (
            "POST",
            "/api/v1/features",
            Some(
                r#"{"features": ["lifetime_value"], "entities": {"email": ["a"], "customer_id": ["b"]}}"#,
            ),
            400,
        ),
        (
            "POST",
            "/api/v1/features",
            Some(r#"{"features": ["lifetime_value"], "entities": {"email": "a"}, "extra": 1}"#),
            400,
        ),
    ];
    for (method, path, body, status) in cases {
        let (s, v) = server.request(method, path, Some(&reader), body);
        assert_eq!(s, status, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{method} {path}: {v}"
        );
    }
    let (_, v) = server.get("/api/v1/definitions/lifetme_value", &reader);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `lifetime_value`"),
        "{v}"
    );
}

/// Customer C0001 (hannah.becker@bluewin.ch): 11 completed orders before 2024-12-01 adding to
/// 2134.19, 3 in the last 30 days (see tests/e2e/training_set.rs for the orders).
#[test]
fn online_features_and_profiles_by_any_key_with_personal_data_masked() {
    let (_tmp, dir, reader, admin) = served_retail();
    let server = Server::start(&dir);
    let request = json!({
        "features": ["lifetime_value", "orders_30d", "high_value", "contact_email"],
        "entities": {"email": ["hannah.becker@bluewin.ch", " Hannah.Becker@Bluewin.CH", "nobody@example.com"]}
    });
    let (s, v) = server.post("/api/v1/features", &reader, &request);
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["metadata"]["feature_names"],
        json!([
            "email",
            "lifetime_value",
            "orders_30d",
            "high_value",
            "contact_email"
        ])
    );
    let results = v["results"].as_array().unwrap();
    let ltv = &results[1];
    assert_eq!(
        ltv["values"][0].to_string().trim_matches('"'),
        "2134.19",
        "{v}"
    );
    assert_eq!(
        ltv["values"][0], ltv["values"][1],
        "an unnormalized email finds the same profile"
    );
    assert_eq!(ltv["statuses"], json!(["PRESENT", "PRESENT", "NOT_FOUND"]));
    assert_eq!(ltv["event_timestamps"][0], json!("2024-12-01 00:00:00"));
    assert_eq!(results[2]["values"][0], json!(3));
    assert_eq!(results[3]["values"][0], json!(true));
    // The email shows personal data: masked for a key without the right…
    assert_eq!(results[4]["statuses"][0], json!("MASKED"));
    assert_eq!(results[4]["values"][0], Value::Null);
    // …shown to one with it.
    let (_, v) = server.post("/api/v1/features", &admin, &request);
    assert_eq!(
        v["results"][4]["values"][0],
        json!("hannah.becker@bluewin.ch"),
        "{v}"
    );
    assert_eq!(v["results"][4]["statuses"][0], json!("PRESENT"));
    let id = v["metadata"]["canonical_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(v["metadata"]["canonical_ids"][2], Value::Null);

    // The same profile by customer id, by canonical id; masked keys for the reader.
    let (s, by_id) = server.get("/api/v1/profiles/customer/customer_id/C0001", &reader);
    assert_eq!(s, 200, "{by_id}");
    assert_eq!(by_id["canonical_id"], json!(id));
    let (_, by_canonical) = server.get(
        &format!("/api/v1/profiles/customer/canonical_id/{id}"),
        &reader,
    );
    assert_eq!(by_canonical["canonical_id"], json!(id));
    let shown = by_id.to_string();
    assert!(!shown.contains("hannah.becker@bluewin.ch"), "{shown}");
    assert!(shown.contains("\"masked\":true"), "{shown}");
    let (_, full) = server.get("/api/v1/profiles/customer/customer_id/C0001", &admin);
    assert!(
        full.to_string().contains("hannah.becker@bluewin.ch"),
        "{full}"
    );
    let (_, segments) = server.get(
        "/api/v1/profiles/customer/email/hannah.becker@bluewin.ch/segments",
        &reader,
    );
    let segments: Vec<&str> = segments["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        segments.contains(&"high_value") && segments.contains(&"repeat_buyers_30d"),
        "{segments:?}"
    );
}

#[test]
fn the_registry_api_follows_its_openapi_document_and_sees_new_runs() {
    let (_tmp, dir, reader, admin) = served_retail();
    let server = Server::start(&dir);
    let (s, doc) = server.get("/api/v1/openapi.json", &reader);
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths.len(), cdp::serve::openapi::PATHS.len());
    // Every documented path answers (a route exists: no "no API endpoint" 404).
    for path in cdp::serve::openapi::PATHS {
        let concrete = path
            .replace("{name}", "high_value")
            .replace("{entity}", "customer")
            .replace("{key}", "customer_id")
            .replace("{value}", "C0001");
        for (method, _) in doc["paths"][path].as_object().unwrap() {
            let body = (method == "post").then(|| {
                if path == "/keys" {
                    json!({"name": "doc", "role": "read"}).to_string()
                } else {
                    json!({"features": ["orders_total"], "entities": {"customer_id": ["C0001"]}})
                        .to_string()
                }
            });
            let concrete = if method == "delete" {
                "/keys/doc".to_string()
            } else {
                concrete.clone()
            };
            let (s, v) = server.request(
                &method.to_uppercase(),
                &format!("/api/v1{concrete}"),
                Some(&admin),
                body.as_deref(),
            );
            assert!(s < 300, "{method} {concrete}: {s} {v}");
        }
    }

    // Search, a definition, its lineage and SQL.
    let (_, found) = server.get("/api/v1/definitions?q=lifetime", &reader);
    assert_eq!(
        found["definitions"][0]["name"],
        json!("lifetime_value"),
        "{found}"
    );
    let (_, segments) = server.get("/api/v1/definitions?kind=segment", &reader);
    assert!(segments["definitions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["kind"] == json!("segment")));
    let (_, d) = server.get("/api/v1/definitions/lifetime_value", &reader);
    assert_eq!(d["upstream"], json!(["customer", "purchase"]), "{d}");
    assert!(
        d["downstream"]
            .as_array()
            .unwrap()
            .contains(&json!("high_value")),
        "{d}"
    );
    assert!(
        d["text"]
            .as_str()
            .unwrap()
            .starts_with("feature lifetime_value"),
        "{d}"
    );
    let (_, lineage) = server.get("/api/v1/definitions/high_value/lineage", &reader);
    let nodes = lineage["nodes"].to_string();
    assert!(
        nodes.contains("\"orders\"") && nodes.contains("\"purchase\""),
        "{lineage}"
    );
    assert!(lineage["edges"]
        .as_array()
        .unwrap()
        .contains(&json!({"from": "lifetime_value", "to": "high_value"})));
    for dialect in ["datafusion", "trino", "spark", "postgres", "duckdb"] {
        let (s, sql) = server.get(
            &format!("/api/v1/definitions/high_value/sql?dialect={dialect}"),
            &reader,
        );
        assert_eq!(s, 200);
        assert!(
            sql["sql"].as_str().unwrap().contains("CREATE TABLE"),
            "{dialect}: {sql}"
        );
    }

    // A run committed while the server runs shows up, and the online store follows it.
    let (_, runs) = server.get("/api/v1/runs", &reader);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
    let run = cdp(&["run", dir.to_str().unwrap(), "--as-of", "2024-08-01"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let started = Instant::now();
    let request = json!({"features": ["orders_total"], "entities": {"customer_id": ["C0001"]}});
    loop {
        let (_, v) = server.post("/api/v1/features", &reader, &request);
        let (_, runs) = server.get("/api/v1/runs", &reader);
        // As of 2024-08-01, C0001 had 5 completed orders.
        if runs["runs"].as_array().unwrap().len() == 2 && v["results"][1]["values"][0] == json!(5) {
            assert_eq!(
                v["results"][1]["event_timestamps"][0],
                json!("2024-08-01 00:00:00")
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server did not load the new run: {runs} {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn operators_that_cannot_start_answer_503_with_the_reason_and_are_not_rebuilt_per_request() {
    let (_tmp, dir) = retail_copy();
    let d = dir.to_str().unwrap();
    let o = cdp(&["keys", "add", "ops", "--role", "admin", "--dir", d]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let admin = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("cdp_"))
        .expect("a key is printed")
        .to_string();
    // The operators start from the project's source files: one is gone.
    std::fs::remove_file(dir.join("data/email_events.csv")).unwrap();
    let server = Server::start(&dir);
    let (status, first) = server.get("/api/v1/live", &admin);
    assert_eq!(status, 503, "{first}");
    assert_eq!(error_code(&first), "stream_unavailable", "{first}");
    let why = first["error"]["message"].as_str().unwrap_or("").to_string();
    assert!(
        why.contains("email_events"),
        "the reason names the file: {why}"
    );
    // The next requests get the same reason without the files being read again.
    for path in [
        "/api/v1/live",
        "/api/v1/live/customer/customer_id/C0001",
        "/api/v1/transitions",
    ] {
        let (status, again) = server.get(path, &admin);
        assert_eq!(status, 503, "{path}: {again}");
        let message = again["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("email_events") && message.contains("tried again 10 s after"),
            "{path}: {again}"
        );
    }
    // The rest of the server is unaffected.
    let (status, health) = server.get("/api/v1/definitions", &admin);
    assert_eq!(status, 200, "{health}");
}
