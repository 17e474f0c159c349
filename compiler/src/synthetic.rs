//! A synthetic project of any size, shaped like a real one: the compile benchmark measures it,
//! and the end-to-end tests check that it is free of diagnostics (so the benchmark measures the
//! checker's full path, not an early exit on errors).
//!
//! The mix follows what a mature CDP project holds: a few sources and one entity, then mostly
//! features and segments, some behaviors and activations, a few metrics and journeys. Every
//! definition reads only definitions generated before it, so the graph has no cycle, and files
//! read each other's definitions freely. The output is deterministic.

use std::fmt::Write as _;

use crate::{project_from_texts, ProjectSources};

/// A generated project held in memory: `.cdp` files and the `cdp.toml` that binds its sources.
#[derive(Debug, Clone)]
pub struct SyntheticProject {
    /// `(path, text)` of each `.cdp` file.
    pub files: Vec<(String, String)>,
    pub config: String,
    /// Number of definitions across all files.
    pub definitions: usize,
}

impl SyntheticProject {
    /// The project as the compiler reads it.
    pub fn sources(&self) -> ProjectSources {
        project_from_texts(
            self.files.iter().map(|(p, t)| (p.as_str(), t.as_str())),
            Some(&self.config),
        )
    }

    /// Writes the project (files, `cdp.toml`) under `dir`, for tests that run the CLI on it.
    pub fn write_to(&self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(dir.join("cdp.toml"), &self.config)?;
        for (path, text) in &self.files {
            std::fs::write(dir.join(path), text)?;
        }
        Ok(())
    }
}

/// Event sources: name and the values of their `kind` column that behaviors filter on.
const EVENT_SOURCES: [&str; 8] = [
    "orders",
    "web_events",
    "app_events",
    "email_events",
    "payments",
    "returns",
    "support_tickets",
    "reviews",
];

const CATEGORIES: [&str; 6] = ["shoes", "books", "garden", "toys", "luxury", "food"];
const COUNTRIES: [&str; 7] = ["DE", "AT", "CH", "FR", "NL", "PT", "GB"];
const WINDOWS: [&str; 6] = ["12h", "7d", "2w", "30d", "90d", "365d"];

/// Generates a project of exactly `definitions` definitions (at least 20) spread over `files`
/// files (at least 2): the first holds the sources and the entity, the rest the profile logic.
pub fn generate(definitions: usize, files: usize) -> SyntheticProject {
    let definitions = definitions.max(20);
    let files = files.max(2);
    let mut g = Generator::default();

    let mut header = String::from("# Raw data and identity of the synthetic shop.\n\n");
    g.sources(&mut header);
    g.entity(&mut header);
    g.attributes(&mut header);
    let fixed = g.count;

    let remaining = definitions - fixed;
    let body_files = files - 1;
    let mut bodies = vec![String::new(); body_files];
    for k in 0..remaining {
        let out = &mut bodies[k * body_files / remaining];
        g.next_definition(k, out);
        out.push('\n');
    }

    let mut out_files = vec![("f000_sources.cdp".to_string(), header)];
    for (i, body) in bodies.into_iter().enumerate() {
        let text = format!("# Synthetic profile logic, part {}.\n\n{body}", i + 1);
        out_files.push((format!("f{:03}_profile.cdp", i + 1), text));
    }
    SyntheticProject {
        files: out_files,
        config: g.config(),
        definitions: g.count,
    }
}

/// What has been generated so far, by type, so that later definitions read earlier ones
/// with the right types.
#[derive(Default)]
struct Generator {
    count: usize,
    seed: u64,
    behaviors: Vec<String>,
    /// Numeric features (counts, sums, averages…).
    numbers: Vec<String>,
    /// Timestamp features (`last(b.event_ts)`).
    times: Vec<String>,
    /// String features (`mode(b.category)`).
    strings: Vec<String>,
    /// `list<string>` features (`last_k(b.category, 5)`).
    lists: Vec<String>,
    segments: Vec<String>,
    /// Activations without a segment, for journeys to trigger.
    messages: Vec<String>,
}

impl Generator {
    /// A deterministic pseudo-random number below `n` (splitmix64).
    fn pick(&mut self, n: usize) -> usize {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % n.max(1) as u64) as usize
    }

    /// One earlier definition of the given group (`self.numbers`, `self.segments`, …).
    fn one_of(&mut self, group: fn(&Generator) -> &Vec<String>) -> String {
        let i = self.pick(group(self).len());
        group(self)[i].clone()
    }

    fn word(&mut self, words: &[&'static str]) -> &'static str {
        words[self.pick(words.len())]
    }

    fn sources(&mut self, out: &mut String) {
        out.push_str(
            "source customers \"Registered accounts\" {\n  owner \"data@shop.example\"\n  \
             key customer_id\n  columns {\n    customer_id: string\n    email: string? pii\n    \
             country: string?\n    birth_date: date? pii\n    signup_at: timestamp\n    \
             opted_in: bool\n  }\n}\n\n",
        );
        for name in EVENT_SOURCES {
            let _ = write!(
                out,
                "source {name} {{\n  tags [\"events\"]\n  key event_id\n  time event_ts\n  columns {{\n    \
                 event_id: string\n    event_ts: timestamp\n    customer_id: string?\n    \
                 email: string? pii\n    kind: string\n    amount: decimal(12, 2)?\n    \
                 quantity: int?\n    category: string?\n    channel: string\n    score: float?\n  }}\n}}\n\n"
            );
        }
        self.count += 1 + EVENT_SOURCES.len();
    }

    fn entity(&mut self, out: &mut String) {
        out.push_str(
            "entity customer \"One person across all systems\" {\n  \
             key customer_id priority 1 normalize upper(trim(customer_id))\n  \
             key email priority 2 normalize lower(trim(email)) exclude [\"\", \"test@example.com\"] max 3 per profile\n  \
             from customers { customer_id = customer_id, email = email }\n",
        );
        for name in EVENT_SOURCES {
            let _ = writeln!(
                out,
                "  from {name} {{ customer_id = customer_id, email = email }}"
            );
        }
        out.push_str("}\n\n");
        self.count += 1;
    }

    fn attributes(&mut self, out: &mut String) {
        out.push_str(
            "attribute contact_email of customer = lower(trim(customers.email)) latest by signup_at\n\n\
             attribute country of customer = customers.country latest by signup_at\n\n\
             attribute signup_at of customer = customers.signup_at earliest by signup_at\n\n\
             attribute opted_in of customer = customers.opted_in latest by signup_at\n\n",
        );
        self.strings.push("country".into());
        self.times.push("signup_at".into());
        self.count += 4;
    }

    /// The `k`-th definition of the profile logic; the kind follows a fixed mix per hundred.
    fn next_definition(&mut self, k: usize, out: &mut String) {
        // Per hundred: 8 behaviors, 55 features, 25 segments, 8 activations, 3 metrics, 1 journey.
        let slot = k % 100;
        if slot < 8 || self.behaviors.is_empty() {
            self.behavior(k, out);
        } else if slot < 63 || self.numbers.len() < 4 || self.lists.is_empty() {
            self.feature(k, out);
        } else if slot < 88 || self.segments.len() < 2 {
            self.segment(k, out);
        } else if slot < 96 || self.messages.len() < 3 {
            self.activation(k, out);
        } else if slot < 99 {
            self.metric(k, out);
        } else {
            self.journey(k, out);
        }
        self.count += 1;
    }

    fn behavior(&mut self, k: usize, out: &mut String) {
        let source = self.word(&EVENT_SOURCES);
        let name = format!("b{k}_{source}");
        let filter = match self.pick(3) {
            0 => format!("kind = \"k{}\"", k % 7),
            1 => format!(
                "kind in [\"k{}\", \"k{}\"] and channel != \"test\"",
                k % 5,
                5 + k % 3
            ),
            _ => "amount > 0 or quantity >= 1".to_string(),
        };
        let _ = writeln!(
            out,
            "behavior {name} of customer \"Synthetic behavior {k}\" = {source} where {filter}\n  tags [\"synthetic\"]"
        );
        self.behaviors.push(name);
    }

    fn feature(&mut self, k: usize, out: &mut String) {
        let b = self.one_of(|g| &g.behaviors);
        let w = self.word(&WINDOWS);
        let name = format!("f{k}");
        let (value, kind) = match self.pick(14) {
            0 => (format!("count({b}) over {w}"), Kind::Number),
            1 => (
                format!("count({b} where amount > {}) over {w}", 10 + k % 90),
                Kind::Number,
            ),
            2 => (format!("sum({b}.amount) over {w}"), Kind::Number),
            3 => (format!("avg({b}.amount)"), Kind::Number),
            4 => (format!("min({b}.amount) over {w}"), Kind::Number),
            5 => (format!("max({b}.quantity)"), Kind::Number),
            6 => (
                format!("count_distinct({b}.category) over {w}"),
                Kind::Number,
            ),
            7 => (format!("last({b}.event_ts)"), Kind::Time),
            8 => (format!("mode({b}.category) over {w}"), Kind::String),
            9 => (format!("first({b}.channel)"), Kind::String),
            10 => (format!("last_k({b}.category, 5)"), Kind::List),
            11 => {
                let a = self.one_of(|g| &g.numbers);
                let c = self.one_of(|g| &g.numbers);
                (
                    format!("coalesce({a}, 0) + coalesce({c}, 0) * 2"),
                    Kind::Number,
                )
            }
            12 => {
                let t = self.one_of(|g| &g.times);
                (format!("days_between({t}, now())"), Kind::Number)
            }
            _ => {
                let a = self.one_of(|g| &g.numbers);
                (
                    format!(
                        "sum({b}.amount where category = \"{}\") over {w} - {a}",
                        self.word(&CATEGORIES)
                    ),
                    Kind::Number,
                )
            }
        };
        let _ = writeln!(out, "feature {name} of customer = {value}");
        match kind {
            Kind::Number => self.numbers.push(name),
            Kind::Time => self.times.push(name),
            Kind::String => self.strings.push(name),
            Kind::List => self.lists.push(name),
        }
    }

    /// One condition over earlier definitions, using a different operator each time.
    fn condition(&mut self) -> String {
        let n = self.one_of(|g| &g.numbers);
        let s = self.one_of(|g| &g.strings);
        let t = self.one_of(|g| &g.times);
        let b = self.one_of(|g| &g.behaviors);
        let b2 = self.one_of(|g| &g.behaviors);
        let cat = self.word(&CATEGORIES);
        let w = self.word(&WINDOWS);
        match self.pick(16) {
            0 => format!("{n} > {}", self.pick(1000)),
            1 => format!("{n} between {} and {}", self.pick(10), 10 + self.pick(100)),
            2 => format!("{n} not between 1 and 5"),
            3 => format!(
                "country in [\"{}\", \"{}\"]",
                self.word(&COUNTRIES),
                self.word(&COUNTRIES)
            ),
            4 => format!("{s} not in [\"{cat}\", \"unknown\"]"),
            5 => format!("{s} contains \"{}\"", &cat[..2]),
            6 => format!("{s} starts with \"{}\" or {s} ends with \"s\"", &cat[..1]),
            7 => {
                "contact_email matches \"^[a-z]+\\\\.[a-z]+@\" and contact_email is set".to_string()
            }
            8 => format!("{t} within last {w}"),
            9 => format!("{t} before now() - 30d"),
            10 => format!("{t} after timestamp \"2024-01-01 00:00:00\""),
            11 => format!("{n} is null or {s} is not null"),
            12 => {
                let l = self.one_of(|g| &g.lists);
                format!("{l} contains \"{cat}\"")
            }
            13 => format!("count({b} where amount > 50) over 30d >= 2"),
            14 => format!("did {b} then not {b2} within 1d over 7d"),
            _ if self.segments.is_empty() => format!("{n} >= 1"),
            _ => {
                let seg = self.one_of(|g| &g.segments);
                format!("{seg} and not ({n} < 3 or opted_in = false)")
            }
        }
    }

    fn segment(&mut self, k: usize, out: &mut String) {
        let name = format!("s{k}");
        let first = self.condition();
        let second = self.condition();
        let joiner = if self.pick(3) == 0 { "or" } else { "and" };
        let _ = writeln!(
            out,
            "segment {name} of customer \"Synthetic audience {k}\" {{\n  owner \"growth@shop.example\"\n  \
             tags [\"synthetic\", \"audience\"]\n  ({first})\n    {joiner} ({second})\n}}"
        );
        self.segments.push(name);
    }

    fn activation(&mut self, k: usize, out: &mut String) {
        let name = format!("a{k}");
        let n = self.one_of(|g| &g.numbers);
        // Half export a segment on a schedule; half are destinations journeys trigger.
        if self.pick(2) == 0 && self.messages.len() >= 3 {
            let seg = self.one_of(|g| &g.segments);
            let (to, schedule) = match self.pick(3) {
                0 => (
                    format!("file \"exports/{name}.csv\" format csv"),
                    "cron \"0 6 * * *\"",
                ),
                1 => (
                    format!("postgres \"postgresql://cdp@localhost/marketing\" table \"audiences.{name}\""),
                    "every 1d",
                ),
                _ => (format!("file \"exports/{name}.parquet\""), "once"),
            };
            let _ = writeln!(
                out,
                "activation {name} of customer {{\n  segment {seg}\n  to {to}\n  columns [contact_email, country, {n}]\n  \
                 schedule {schedule}\n  deliver changes\n}}"
            );
        } else {
            let _ = writeln!(
                out,
                "activation {name} of customer {{\n  to webhook \"https://esp.example.com/hooks/{name}\"\n  \
                 columns [contact_email, {n}]\n}}"
            );
            self.messages.push(name);
        }
    }

    fn metric(&mut self, k: usize, out: &mut String) {
        let s1 = self.one_of(|g| &g.segments);
        let s2 = self.one_of(|g| &g.segments);
        let n = self.one_of(|g| &g.numbers);
        let b = self.one_of(|g| &g.behaviors);
        let segments = if s1 == s2 { s1 } else { format!("{s1}, {s2}") };
        let _ = writeln!(
            out,
            "metric m{k} of customer {{\n  segments [{segments}]\n  measure members = count(customer)\n  \
             measure avg_value = avg({n})\n  measure revenue = sum({b}.amount)\n  grain 1d\n}}"
        );
    }

    fn journey(&mut self, k: usize, out: &mut String) {
        let entry = self.one_of(|g| &g.segments);
        let exit = self.one_of(|g| &g.segments);
        let goal_b = self.one_of(|g| &g.behaviors);
        let [m1, m2, m3] = [(); 3].map(|()| self.one_of(|g| &g.messages));
        let n = self.one_of(|g| &g.numbers);
        let _ = writeln!(
            out,
            "journey j{k} of customer \"Synthetic journey {k}\" {{\n  entry {entry}\n  \
             goal count({goal_b}) over 7d >= 1\n  exit {exit}\n  reentry after 30d\n\n  \
             stage first {{\n    activate {m1}\n    wait 2d\n    split {{\n      50% -> activate {m2}\n      \
             50% -> {{ }}\n    }}\n    wait until {n} >= 1 timeout 5d\n    branch {{\n      \
             when {n} > 10 -> jump last\n      else -> {{ wait 1d  activate {m3} }}\n    }}\n  }}\n\n  \
             stage last {{\n    activate {m3}\n    end\n  }}\n}}"
        );
    }

    /// `cdp.toml` binding every source to a CSV file.
    fn config(&self) -> String {
        let mut out = String::from("[project]\nname = \"synthetic\"\n\n[sources.customers]\npath = \"data/customers.csv\"\n");
        for name in EVENT_SOURCES {
            let _ = write!(out, "\n[sources.{name}]\npath = \"data/{name}.csv\"\n");
        }
        out
    }
}

enum Kind {
    Number,
    Time,
    String,
    List,
}
