//! The registry's web pages in a real headless Chromium, driven over WebDriver (`chromedriver`):
//! sign in with the key `cdp serve` prints, search a feature and open it, open a segment whose
//! rule changed between two applies (its population chart has one point per run and its history
//! shows both versions side by side), find a profile by email through the form, and see personal
//! data masked for a read key without the `pii` right. A screenshot of every page goes to
//! `target/test-artifacts/browser/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`bash .ci/run` installs both; set
//! `CDP_CHROMIUM` and `CDP_CHROMEDRIVER` to use others). A missing browser fails the test and
//! says how to install it; `CDP_SKIP_BROWSER=1` skips it, saying so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::retail_copy;
use serde_json::{json, Value};

/// The WebDriver name of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn cdp(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_cdp"))
        .args(args)
        .output()
        .expect("cdp runs");
    assert!(
        output.status.success(),
        "cdp {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// A program on the PATH (or the path an environment variable names).
fn program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path));
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing running.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command`, reads its stdout until `done` accepts a line (collecting the lines), then
/// keeps reading in the background so the process never blocks on a full pipe.
fn start(mut command: Command, what: &str, done: impl Fn(&str) -> bool) -> (Process, Vec<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let process = Process(child);
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap_or_default();
        let finished = done(&line);
        seen.push(line);
        if finished {
            std::thread::spawn(move || for _ in lines {});
            return (process, seen);
        }
    }
    panic!(
        "{what} stopped before it was ready; it printed:\n{}",
        seen.join("\n")
    );
}

/// One HTTP/1.1 request with a JSON body; returns the status and the body.
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    // chromedriver keeps the connection open whatever the request says: read the head, then
    // exactly Content-Length bytes (to the end only when there is none).
    let mut reader = BufReader::new(stream);
    let mut status = 0;
    let mut length = None;
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some(code) = header.strip_prefix("HTTP/1.1 ") {
            status = code
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
        } else if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
        line.clear();
    }
    let mut response = Vec::new();
    match length {
        Some(n) => {
            response.resize(n, 0);
            reader
                .read_exact(&mut response)
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        }
        None => {
            let _ = reader.read_to_end(&mut response);
        }
    }
    (status, String::from_utf8_lossy(&response).to_string())
}

/// A running `cdp serve` and the sign-in URL it printed.
struct Server {
    _process: Process,
    addr: String,
    login: String,
}

fn serve(dir: &Path) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cdp"));
    command.args(["serve", dir.to_str().unwrap(), "--addr", "127.0.0.1:0"]);
    let (process, lines) = start(command, "cdp serve", |l| l.starts_with("open http://"));
    let addr = lines
        .iter()
        .find_map(|l| l.split(" on http://").nth(1))
        .map(|a| a.trim_end_matches('/').to_string())
        .expect("cdp serve prints `serving … on http://ADDR/`");
    let login = lines
        .iter()
        .find_map(|l| l.strip_prefix("open "))
        .expect("cdp serve prints the sign-in URL")
        .to_string();
    Server {
        _process: process,
        addr,
        login,
    }
}

/// A headless Chromium session over chromedriver; ends the session and the driver when dropped.
struct Browser {
    driver: String,
    session: String,
    shots: PathBuf,
    _process: Process,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium; killing only the driver would leave the browser running.
        let _ = http(
            &self.driver,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

impl Browser {
    fn open(chromedriver: &Path, chromium: &Path, shots: PathBuf) -> Browser {
        let mut command = Command::new(chromedriver);
        command.arg("--port=0");
        let (process, lines) = start(command, "chromedriver", |l| {
            l.contains("started successfully on port")
        });
        let port = lines
            .last()
            .and_then(|l| l.rsplit("port ").next())
            .map(|p| p.trim().trim_end_matches('.').to_string())
            .expect("chromedriver prints its port");
        let driver = format!("127.0.0.1:{port}");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,1000", "--lang=en-US"],
            },
        }}});
        let (status, body) = http(&driver, "POST", "/session", Some(&capabilities));
        let reply: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let session = reply["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "chromedriver could not start {} (HTTP {status}): {body}",
                    chromium.display()
                )
            })
            .to_string();
        Browser {
            driver,
            session,
            shots,
            _process: process,
        }
    }

    /// A WebDriver command; panics with the driver's message when it fails.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, text) = http(
            &self.driver,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        );
        let reply: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            status == 200,
            "WebDriver {method} {path}: HTTP {status}: {}",
            reply["value"]["message"].as_str().unwrap_or(&text)
        );
        reply["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.command("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn all(&self, css: &str) -> Vec<String> {
        self.command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
    }

    /// The first element matching `css`, waiting a little for it (pages load after a click).
    fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(e) = self.all(css).into_iter().next() {
                return e;
            }
            if started.elapsed() > Duration::from_secs(20) {
                self.screenshot("failed");
                panic!("no element matches `{css}` on {}", self.url());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.command("GET", &format!("/element/{e}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.command("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.command("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.command(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn script(&self, js: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }

    /// Waits until the browser shows a page whose URL satisfies `ok`.
    fn wait_for_url(&self, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let url = self.url();
            let ready = self.script("return document.readyState") == json!("complete");
            if ok(&url) && ready {
                return url;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the browser stayed on {url}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the whole page (the window grown to the page's height).
    fn screenshot(&self, name: &str) {
        let height = self
            .script("return document.documentElement.scrollHeight")
            .as_u64()
            .unwrap_or(1000)
            .clamp(600, 6000);
        self.command(
            "POST",
            "/window/rect",
            Some(json!({"width": 1280, "height": height + 140})),
        );
        let png = self.command("GET", "/screenshot", None);
        let bytes = base64(png.as_str().unwrap_or_default());
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.command(
            "POST",
            "/window/rect",
            Some(json!({"width": 1280, "height": 1000})),
        );
    }
}

/// Decodes standard base64 (WebDriver's screenshots).
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, d) in chunk.iter().enumerate() {
            n |= d << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(base64("aGVsbG8="), b"hello");
    assert_eq!(base64("aGVsbG8hIQ=="), b"hello!!");
    assert_eq!(base64("YWJj"), b"abc");
}

#[test]
fn pages_in_a_real_browser() {
    if std::env::var("CDP_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("skipped: CDP_SKIP_BROWSER=1 (the browser test needs chromium and chromedriver)");
        return;
    }
    let install = "install Chromium and its WebDriver: `apt-get install chromium chromium-driver` \
                   (`bash .ci/run` does), or name them with CDP_CHROMIUM and CDP_CHROMEDRIVER; \
                   CDP_SKIP_BROWSER=1 skips this test";
    let chromedriver = program("CDP_CHROMEDRIVER", &["chromedriver"])
        .unwrap_or_else(|| panic!("no chromedriver on the PATH: {install}"));
    let chromium = program(
        "CDP_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    )
    .unwrap_or_else(|| panic!("no chromium on the PATH: {install}"));
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/browser");
    std::fs::create_dir_all(&shots).unwrap();

    // A project applied twice, with a segment rule changed in between, and run at two as-of
    // times, so the segment has two versions and two points of population.
    let (_tmp, dir) = retail_copy();
    let d = dir.to_str().unwrap();
    cdp(&["apply", d, "--yes", "-m", "first version"]);
    let segments = dir.join("segments.cdp");
    let text = std::fs::read_to_string(&segments).unwrap();
    let (old_rule, new_rule) = (
        "lifetime_value >= 500 or big_orders_30d >= 2",
        "lifetime_value >= 400 or big_orders_30d >= 2",
    );
    assert!(
        text.contains(old_rule),
        "examples/retail's high_value rule changed: update this test"
    );
    std::fs::write(&segments, text.replace(old_rule, new_rule)).unwrap();
    cdp(&["apply", d, "--yes", "-m", "high_value from 400 EUR"]);
    cdp(&["run", d, "--as-of", "2024-11-15"]);
    cdp(&["run", d]);
    // Ben's lifetime value (439.36 EUR) makes him high_value only under the new rule.
    let expected: Value = serde_json::from_str(&cdp(&[
        "profile",
        "email=ben.braun@outlook.com",
        "--dir",
        d,
        "--format",
        "json",
    ]))
    .unwrap();
    let canonical_id = expected["canonical_id"].as_str().unwrap().to_string();
    let expected_segments: Vec<String> = expected["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert!(expected_segments.iter().any(|s| s == "high_value"));

    let server = serve(&dir);
    let base = format!("http://{}", server.addr);
    let browser = Browser::open(&chromedriver, &chromium, shots);

    // Sign in with the printed link: the cookie is set and the home page shows.
    browser.goto(&server.login);
    browser.wait_for_url(|u| u == format!("{base}/"));
    assert_eq!(browser.text("#project"), "retail");
    assert!(browser.text("#caller").contains("sees personal data"));
    assert!(
        browser.all("#run-steps-chart rect.bar").len() > 5,
        "the latest run's step timings are drawn"
    );
    assert!(!browser.all("#segment-sizes rect.bar").is_empty());
    assert!(browser.text("#latest-apply").contains("high_value"));
    browser.screenshot("01-home");

    // Search a feature, and open it from the results.
    browser.type_into("#search", "lifetime\u{E007}");
    browser.wait_for_url(|u| u.contains("q=lifetime"));
    let results = browser.text("#search-results");
    assert!(results.contains("lifetime_value"), "{results}");
    browser.screenshot("02-search");
    browser.click("#search-results li[data-name=\"lifetime_value\"] a");
    browser.wait_for_url(|u| u.ends_with("/d/lifetime_value"));
    assert_eq!(browser.text("#definition-name"), "lifetime_value feature");
    assert!(
        browser.all("#histogram rect.bar").len() > 1,
        "the feature's histogram is drawn"
    );
    assert!(
        !browser
            .all("#lineage-graph g.node[data-name=\"orders\"]")
            .is_empty(),
        "the lineage reaches back to the orders source"
    );
    browser.screenshot("03-feature");

    // A segment: its population over time, and its history after two applies.
    browser.click("#kind-nav a[href=\"/k/segment\"]");
    browser.wait_for_url(|u| u.ends_with("/k/segment"));
    browser.click("#definitions li[data-name=\"high_value\"] a");
    browser.wait_for_url(|u| u.ends_with("/d/high_value"));
    assert_eq!(
        browser.all("#population-chart circle.point").len(),
        2,
        "one point per as-of time"
    );
    assert_eq!(browser.all("#population-chart polyline.line").len(), 1);
    assert!(!browser.all("svg[id^=\"kpi-audience_kpis-\"]").is_empty());
    assert!(browser.text("#version-1").contains("first version"));
    assert!(browser
        .text("#version-2")
        .contains("high_value from 400 EUR"));
    let old = browser.text("#diff td.del");
    let new = browser.text("#diff td.add");
    assert!(old.contains("lifetime_value >= 500"), "{old}");
    assert!(new.contains("lifetime_value >= 400"), "{new}");
    let preview = browser.text("#preview-table");
    assert!(
        preview.contains('@'),
        "the admin key sees emails: {preview}"
    );
    browser.screenshot("04-segment");

    // A profile by email through the home page's form, typed as a person would.
    browser.goto(&format!("{base}/"));
    browser.click("#profile-key option[value=\"email\"]");
    browser.type_into("#profile-value", " Ben.Braun@Outlook.com ");
    browser.click("#profile-submit");
    browser.wait_for_url(|u| u.contains("/profile?"));
    assert_eq!(browser.text("#canonical-id"), canonical_id);
    let mut shown: Vec<String> = browser
        .all("#segment-list li")
        .iter()
        .map(|e| {
            browser
                .command("GET", &format!("/element/{e}/text"), None)
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    shown.sort();
    let mut wanted = expected_segments.clone();
    wanted.sort();
    assert_eq!(shown, wanted);
    assert_eq!(
        browser.text("#profile-keys td[data-key=\"email\"]"),
        "ben.braun@outlook.com"
    );
    browser.screenshot("05-profile");

    // A read key without the pii right: the same pages, personal data masked.
    let reader = cdp(&["keys", "add", "reader", "--role", "read", "--dir", d]);
    let reader = reader
        .split_whitespace()
        .find(|w| w.starts_with("cdp_"))
        .expect("cdp keys add prints the key")
        .to_string();
    let login = format!("/login?key={reader}");
    let started = Instant::now();
    while http(&server.addr, "GET", &login, None).0 == 401 {
        // The server notices the new key within a second.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server never loaded the new key"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.goto(&format!("{base}{login}"));
    browser.wait_for_url(|u| u == format!("{base}/"));
    assert!(browser.text("#caller").contains("personal data masked"));
    browser.goto(&format!(
        "{base}/profile?entity=customer&key=email&value=ben.braun%40outlook.com"
    ));
    browser.wait_for_url(|u| u.contains("/profile?"));
    assert_eq!(browser.text("#canonical-id"), canonical_id);
    assert_eq!(browser.text("#profile-keys td[data-key=\"email\"]"), "b•••");
    assert_eq!(
        browser.text("#profile-attributes tr[data-value=\"contact_email\"] td:last-child"),
        "masked"
    );
    browser.screenshot("06-profile-masked");
    browser.goto(&format!("{base}/d/high_value"));
    browser.wait_for_url(|u| u.ends_with("/d/high_value"));
    let preview = browser.text("#preview-table");
    assert!(
        !preview.contains('@'),
        "emails are masked for the read key: {preview}"
    );
    browser.screenshot("07-segment-masked");
}
