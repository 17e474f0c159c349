//! Webhook deliveries of activations: a durable outbox and an at-least-once sender.
//!
//! The stream fires an activation (a profile entered its segment, a journey reached an
//! `activate` step) by putting a [`Delivery`] in the [`Outbox`]: a sled tree, flushed before
//! `enqueue` returns, so a delivery that was queued survives a crash. [`Outbox::deliver_due`]
//! POSTs what is due and takes each delivery out only once the receiver answered 2xx; a network
//! error, a timeout, 408, 429 or 5xx is retried with exponential backoff; other 4xx answers say
//! the request itself is wrong, so retrying cannot help and the delivery is set aside with the
//! answer (as is one that still fails after [`MAX_ATTEMPTS`]). Receivers see the same
//! `Idempotency-Key` on every attempt of one delivery, so they can drop repeats.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Attempts before a delivery that keeps failing is set aside (about a day of retries).
pub const MAX_ATTEMPTS: u32 = 30;
/// The first retry waits this long; each further one twice as long, up to [`MAX_BACKOFF_MS`].
pub const FIRST_BACKOFF_MS: i64 = 1_000;
pub const MAX_BACKOFF_MS: i64 = 3_600_000;

/// One POST to make: the activation that fired, where to, and the JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub activation: String,
    pub url: String,
    pub body: Value,
}

/// A queued delivery with its attempts so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub id: u64,
    pub delivery: Delivery,
    pub queued_at_ms: i64,
    pub attempts: u32,
    /// Not before this time (ms since the epoch).
    pub next_at_ms: i64,
    /// The last failure: the receiver's status and body, or the network error.
    pub last_error: Option<String>,
}

impl Pending {
    /// The header value that is the same on every attempt of this delivery.
    pub fn idempotency_key(&self) -> String {
        format!("cdp-{}-{}", self.delivery.activation, self.id)
    }
}

/// How one POST ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The receiver answered with this status and body.
    Status(u16, String),
    /// No answer: connection refused, timeout, TLS failure, bad URL.
    Failed(String),
}

/// What makes the POSTs; [`HttpPost`] in production.
pub trait Post {
    fn post(&self, url: &str, idempotency_key: &str, body: &[u8]) -> Answer;
}

/// POSTs over HTTP(S) with a timeout, TLS certificates checked against the web's roots.
pub struct HttpPost {
    agent: ureq::Agent,
}

impl HttpPost {
    pub fn new(timeout: Duration) -> HttpPost {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(concat!("cdp/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        HttpPost { agent }
    }
}

impl Post for HttpPost {
    fn post(&self, url: &str, idempotency_key: &str, body: &[u8]) -> Answer {
        let sent = self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", idempotency_key)
            .send(body);
        match sent {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let text = response
                    .body_mut()
                    .with_config()
                    .limit(4096)
                    .read_to_string()
                    .unwrap_or_default();
                Answer::Status(status, text)
            }
            Err(e) => Answer::Failed(e.to_string()),
        }
    }
}

/// What one pass of [`Outbox::deliver_due`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub delivered: usize,
    pub retried: usize,
    pub set_aside: usize,
}

/// The queue of deliveries, in a sled database the caller holds (the server's online store).
pub struct Outbox {
    db: sled::Db,
    pending: sled::Tree,
    set_aside: sled::Tree,
    /// Activation name → deliveries the receiver accepted.
    delivered: sled::Tree,
}

pub type OutboxResult<T> = std::result::Result<T, String>;

fn storage(e: impl std::fmt::Display) -> String {
    format!("the webhook outbox could not be read or written: {e}")
}

impl Outbox {
    pub fn open(db: &sled::Db) -> OutboxResult<Outbox> {
        Ok(Outbox {
            db: db.clone(),
            pending: db.open_tree("webhook_pending").map_err(storage)?,
            set_aside: db.open_tree("webhook_set_aside").map_err(storage)?,
            delivered: db.open_tree("webhook_delivered").map_err(storage)?,
        })
    }

    /// Queues a delivery, due at once; returns when it is on disk.
    pub fn enqueue(&self, delivery: Delivery, now_ms: i64) -> OutboxResult<u64> {
        let id = self.db.generate_id().map_err(storage)?;
        let pending = Pending {
            id,
            delivery,
            queued_at_ms: now_ms,
            attempts: 0,
            next_at_ms: now_ms,
            last_error: None,
        };
        self.put(&self.pending, &pending)?;
        self.db.flush().map_err(storage)?;
        Ok(id)
    }

    fn put(&self, tree: &sled::Tree, p: &Pending) -> OutboxResult<()> {
        let bytes = serde_json::to_vec(p).map_err(storage)?;
        tree.insert(p.id.to_be_bytes(), bytes).map_err(storage)?;
        Ok(())
    }

    fn read(tree: &sled::Tree) -> impl Iterator<Item = OutboxResult<Pending>> + '_ {
        tree.iter().map(|item| {
            let (_, bytes) = item.map_err(storage)?;
            serde_json::from_slice(&bytes).map_err(storage)
        })
    }

    /// The deliveries due at `now_ms`, oldest first, at most `limit`.
    pub fn due(&self, now_ms: i64, limit: usize) -> OutboxResult<Vec<Pending>> {
        let mut due = Vec::new();
        for p in Self::read(&self.pending) {
            let p = p?;
            if p.next_at_ms <= now_ms {
                due.push(p);
                if due.len() == limit {
                    break;
                }
            }
        }
        Ok(due)
    }

    /// Every delivery that was set aside, with its last answer.
    pub fn set_aside(&self) -> OutboxResult<Vec<Pending>> {
        Self::read(&self.set_aside).collect()
    }

    /// How many deliveries of `activation` the receivers accepted.
    pub fn delivered(&self, activation: &str) -> u64 {
        self.delivered
            .get(activation.as_bytes())
            .ok()
            .flatten()
            .and_then(|b| b.as_ref().try_into().ok())
            .map_or(0, u64::from_be_bytes)
    }

    /// The deliveries still waiting, oldest first (at most `limit`).
    pub fn pending(&self, limit: usize) -> OutboxResult<Vec<Pending>> {
        Self::read(&self.pending).take(limit).collect()
    }

    /// POSTs every delivery due at `now_ms` (at most `limit`) and records the outcomes.
    pub fn deliver_due(&self, post: &dyn Post, now_ms: i64, limit: usize) -> OutboxResult<Report> {
        let mut report = Report::default();
        for mut p in self.due(now_ms, limit)? {
            let body = serde_json::to_vec(&p.delivery.body).map_err(storage)?;
            let answer = post.post(&p.delivery.url, &p.idempotency_key(), &body);
            p.attempts += 1;
            let (done, retry, error) = match answer {
                Answer::Status(s, _) if (200..300).contains(&s) => (true, false, None),
                Answer::Status(s, text) => {
                    let retry = s == 408 || s == 429 || s >= 500;
                    (false, retry, Some(format!("HTTP {s}: {}", text.trim())))
                }
                Answer::Failed(e) => (false, true, Some(e)),
            };
            let key = p.id.to_be_bytes();
            if done {
                self.pending.remove(key).map_err(storage)?;
                self.delivered
                    .update_and_fetch(p.delivery.activation.as_bytes(), |n| {
                        let n = n
                            .and_then(|b| b.try_into().ok())
                            .map_or(0, u64::from_be_bytes);
                        Some((n + 1).to_be_bytes().to_vec())
                    })
                    .map_err(storage)?;
                report.delivered += 1;
            } else if retry && p.attempts < MAX_ATTEMPTS {
                p.next_at_ms = now_ms + backoff_ms(p.attempts);
                p.last_error = error;
                self.put(&self.pending, &p)?;
                report.retried += 1;
            } else {
                p.last_error = error;
                self.put(&self.set_aside, &p)?;
                self.pending.remove(key).map_err(storage)?;
                report.set_aside += 1;
            }
        }
        self.db.flush().map_err(storage)?;
        Ok(report)
    }
}

/// The wait after the `attempts`-th failure.
pub fn backoff_ms(attempts: u32) -> i64 {
    let doublings = attempts.saturating_sub(1).min(32);
    FIRST_BACKOFF_MS
        .saturating_mul(1i64 << doublings)
        .min(MAX_BACKOFF_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    fn outbox() -> (tempfile::TempDir, sled::Db, Outbox) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let outbox = Outbox::open(&db).unwrap();
        (dir, db, outbox)
    }

    fn delivery(url: &str) -> Delivery {
        Delivery {
            activation: "welcome_email".into(),
            url: url.into(),
            body: json!({"activation": "welcome_email", "rows": [{"canonical_id": "c1"}]}),
        }
    }

    /// A receiver on 127.0.0.1 that answers each request with the next status of `statuses`
    /// and sends what it received (Idempotency-Key, body) to the test.
    fn receiver(statuses: Vec<u16>) -> (String, mpsc::Receiver<(String, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for (stream, status) in listener.incoming().zip(statuses) {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut length, mut key, mut line) = (0, String::new(), String::new());
                while reader.read_line(&mut line).unwrap() > 0 && line.trim() != "" {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if lower.starts_with("idempotency-key:") {
                        key = line["idempotency-key:".len()..].trim().to_string();
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                tx.send((key, String::from_utf8(body).unwrap())).unwrap();
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
                );
                stream.write_all(reply.as_bytes()).unwrap();
            }
        });
        (url, rx)
    }

    #[test]
    fn a_delivery_is_posted_once_the_receiver_says_2xx_and_retried_with_the_same_key() {
        let (_dir, _db, outbox) = outbox();
        let (url, received) = receiver(vec![503, 200]);
        let post = HttpPost::new(Duration::from_secs(5));
        let id = outbox.enqueue(delivery(&url), 1_000).unwrap();

        let first = outbox.deliver_due(&post, 1_000, 10).unwrap();
        assert_eq!(first.retried, 1);
        let (key1, body) = received.recv().unwrap();
        assert_eq!(key1, format!("cdp-welcome_email-{id}"));
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            delivery(&url).body
        );
        // Not due again before its backoff.
        assert!(outbox
            .due(1_000 + FIRST_BACKOFF_MS - 1, 10)
            .unwrap()
            .is_empty());
        let waiting = outbox.due(1_000 + FIRST_BACKOFF_MS, 10).unwrap();
        assert_eq!(waiting[0].attempts, 1);
        assert_eq!(waiting[0].last_error.as_deref(), Some("HTTP 503: no"));

        let second = outbox
            .deliver_due(&post, 1_000 + FIRST_BACKOFF_MS, 10)
            .unwrap();
        assert_eq!(second.delivered, 1);
        assert_eq!(received.recv().unwrap().0, key1, "the same key on a retry");
        assert_eq!(outbox.delivered("welcome_email"), 1);
        assert_eq!(outbox.delivered("other"), 0);
        assert!(outbox.pending(10).unwrap().is_empty());
        assert!(outbox.set_aside().unwrap().is_empty());
    }

    #[test]
    fn a_request_the_receiver_refuses_is_set_aside_with_its_answer() {
        let (_dir, _db, outbox) = outbox();
        let (url, _received) = receiver(vec![422]);
        outbox.enqueue(delivery(&url), 0).unwrap();
        let report = outbox
            .deliver_due(&HttpPost::new(Duration::from_secs(5)), 0, 10)
            .unwrap();
        assert_eq!(report.set_aside, 1);
        let aside = outbox.set_aside().unwrap();
        assert_eq!(aside[0].last_error.as_deref(), Some("HTTP 422: no"));
        assert!(outbox.pending(10).unwrap().is_empty());
    }

    #[test]
    fn an_unreachable_receiver_is_retried_until_the_attempts_run_out() {
        let (_dir, _db, outbox) = outbox();
        // A port that was free a moment ago: connections are refused.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        outbox
            .enqueue(delivery(&format!("http://127.0.0.1:{port}/hook")), 0)
            .unwrap();
        let post = HttpPost::new(Duration::from_secs(5));
        let mut now = 0;
        for attempt in 1..MAX_ATTEMPTS {
            let report = outbox.deliver_due(&post, now, 10).unwrap();
            assert_eq!(report.retried, 1, "attempt {attempt}");
            now += backoff_ms(attempt);
        }
        let last = outbox.deliver_due(&post, now, 10).unwrap();
        assert_eq!(last.set_aside, 1);
        assert_eq!(outbox.set_aside().unwrap()[0].attempts, MAX_ATTEMPTS);
    }

    #[test]
    fn queued_deliveries_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = sled::open(&path).unwrap();
            let outbox = Outbox::open(&db).unwrap();
            outbox.enqueue(delivery("http://a/1"), 5).unwrap();
            outbox.enqueue(delivery("http://a/2"), 6).unwrap();
        }
        // The dropped handle's flusher may still hold the lock for a moment.
        let db =
            cdp_registry::sleddb::open_waiting(&path, std::time::Duration::from_secs(10)).unwrap();
        let due = Outbox::open(&db).unwrap().due(10, 10).unwrap();
        let urls: Vec<&str> = due.iter().map(|p| p.delivery.url.as_str()).collect();
        assert_eq!(urls, ["http://a/1", "http://a/2"], "oldest first");
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(2), 2_000);
        assert_eq!(backoff_ms(5), 16_000);
        assert_eq!(backoff_ms(13), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(u32::MAX), MAX_BACKOFF_MS);
    }
}
