//! The project behind `cdp demo`: the definitions of `examples/retail` bound to a large, seeded,
//! generated data set, so that a user sees the product work on realistic data.
//!
//! [`create_demo`] writes the `.cdp` files (embedded in the binary), a `cdp.toml` whose as-of
//! time is the data's "now" ([`AS_OF`]), a README, and one CSV file per source with exactly the
//! columns and types `sources.cdp` declares.
//!
//! The data is made of *people*: account holders (most of them), anonymous visitors and
//! newsletter-only subscribers. Their activity is log-normal — a few whales, a long tail, a third
//! of the account holders never order — and carries what makes identity resolution and the
//! example's definitions meaningful:
//!
//! - account holders browse with one to three cookies (a few with more than the limit of ten),
//!   before their signup anonymously, afterwards often logged in;
//! - emails are typed with different case and whitespace, some accounts hold placeholders that
//!   identify nobody (blank, `null`, `test@example.com`), a few people have two accounts, a few
//!   families share one address, some check out with a work address;
//! - shared computers: a cookie on which many people type their email (over the limit of two);
//! - orders: completed, cancelled, pending (near the as-of time, often not priced yet), refunds
//!   as rows of their own with negative amounts, a Black Friday peak, baskets of SKUs;
//! - web sessions: page views with categories and traffic sources, carts added, viewed and
//!   abandoned, checkouts (some within 90 seconds), sessions that end in an order;
//! - email campaigns: sends, opens, clicks and unsubscribes, a welcome mail after each signup.
//!
//! Everything is derived from one seed by a SplitMix64 generator and integer or basic IEEE
//! arithmetic only, so the same seed and sizes give byte-identical files on every platform.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// The as-of time of the demo project (`cdp.toml`'s `as_of`): the generated data's "now".
pub const AS_OF: &str = "2024-12-01 00:00:00";

/// Sizes and seed of the generated data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// People: account holders, anonymous visitors and newsletter subscribers. Identity
    /// resolution finds about this many profiles.
    pub profiles: usize,
    /// Rows of the event sources together (orders, web events, email events), approximately.
    pub events: usize,
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> DemoOptions {
        DemoOptions {
            profiles: 100_000,
            events: 2_000_000,
            seed: 42,
        }
    }
}

/// One written file, relative to the demo directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoFile {
    pub path: String,
    /// Data rows (without the header) for CSV files; 0 for the others.
    pub rows: usize,
    pub bytes: u64,
}

/// What [`create_demo`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSummary {
    /// Every file, definitions first, then `cdp.toml`, `README.md` and the data files.
    pub files: Vec<DemoFile>,
    /// Generated people (before identity resolution).
    pub people: usize,
    pub customers: usize,
    pub orders: usize,
    pub web_events: usize,
    pub email_events: usize,
    /// The project's as-of time, [`AS_OF`].
    pub as_of: &'static str,
}

impl DemoSummary {
    /// Rows of the event sources together.
    pub fn events(&self) -> usize {
        self.orders + self.web_events + self.email_events
    }

    /// Bytes of the `data/` files together.
    pub fn data_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| f.path.starts_with("data/"))
            .map(|f| f.bytes)
            .sum()
    }
}

/// The definitions of examples/retail, embedded so that the binary is self-contained.
const DEFINITIONS: [(&str, &str); 8] = [
    (
        "sources.cdp",
        include_str!("../examples/retail/sources.cdp"),
    ),
    (
        "identity.cdp",
        include_str!("../examples/retail/identity.cdp"),
    ),
    (
        "behaviors.cdp",
        include_str!("../examples/retail/behaviors.cdp"),
    ),
    (
        "features.cdp",
        include_str!("../examples/retail/features.cdp"),
    ),
    (
        "segments.cdp",
        include_str!("../examples/retail/segments.cdp"),
    ),
    (
        "journeys.cdp",
        include_str!("../examples/retail/journeys.cdp"),
    ),
    (
        "metrics.cdp",
        include_str!("../examples/retail/metrics.cdp"),
    ),
    (
        "activations.cdp",
        include_str!("../examples/retail/activations.cdp"),
    ),
];

const CDP_TOML: &str = r#"# The cdp demo: the definitions of the retail example bound to generated data.
# `cdp demo` wrote this project; the data's "now" is the as-of time below, so every run
# computes the same numbers.

[project]
name = "demo"
storage = ".cdp"                # where runs write their outputs
as_of = "2024-12-01 00:00:00"   # the generated data's "now"; a little data lies after it

[sources.customers]
path = "data/customers.csv"
format = "csv"

[sources.orders]
path = "data/orders.csv"
format = "csv"

[sources.web_events]
path = "data/web_events.csv"
format = "csv"

[sources.email_events]
path = "data/email_events.csv"
format = "csv"
"#;

/// Writes the demo project into `dir`, which is created when missing and must otherwise be
/// empty (nothing is ever overwritten). `progress` hears one line per stage.
pub fn create_demo(
    dir: &Path,
    options: &DemoOptions,
    progress: &mut dyn FnMut(&str),
) -> io::Result<DemoSummary> {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a directory", dir.display()),
            ));
        }
        if fs::read_dir(dir)?.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} is not empty; the demo is only written into a new or empty directory",
                    dir.display()
                ),
            ));
        }
    }
    fs::create_dir_all(dir.join("data"))?;
    let mut files = Vec::new();
    for (name, text) in DEFINITIONS {
        files.push(write_text(dir, name, text)?);
    }
    files.push(write_text(dir, "cdp.toml", CDP_TOML)?);

    progress(&format!(
        "generating {} people (seed {})",
        group(options.profiles as u64),
        options.seed
    ));
    let world = World::generate(options);
    let customers = write_customers(dir, &world)?;
    progress(&format!(
        "data/customers.csv: {} accounts",
        group(customers.rows as u64)
    ));

    let budget = Budget::new(options.events);
    let mut orders = generate_orders(&world, &budget, options.seed);
    let web = generate_web(&world, &orders, &budget, options.seed);
    add_refunds(&mut orders, options.seed);
    let orders_file = write_orders(dir, &world, &orders)?;
    progress(&format!(
        "data/orders.csv: {} orders and refunds",
        group(orders_file.rows as u64)
    ));
    drop(orders);
    let web_file = write_web(dir, &world, &web)?;
    progress(&format!(
        "data/web_events.csv: {} web events",
        group(web_file.rows as u64)
    ));
    drop(web);
    let (mails, campaigns) = generate_mail(&world, &budget, options.seed);
    let mail_file = write_mail(dir, &world, &mails, &campaigns)?;
    progress(&format!(
        "data/email_events.csv: {} email events of {} campaigns",
        group(mail_file.rows as u64),
        campaigns.len()
    ));

    let mut summary = DemoSummary {
        files: Vec::new(),
        people: world.people.len(),
        customers: customers.rows,
        orders: orders_file.rows,
        web_events: web_file.rows,
        email_events: mail_file.rows,
        as_of: AS_OF,
    };
    let data = [customers, orders_file, web_file, mail_file];
    let readme = readme(options, &summary, &data);
    files.push(write_text(dir, "README.md", &readme)?);
    files.extend(data);
    summary.files = files;
    Ok(summary)
}

fn write_text(dir: &Path, name: &str, text: &str) -> io::Result<DemoFile> {
    fs::write(dir.join(name), text)?;
    Ok(DemoFile {
        path: name.to_string(),
        rows: 0,
        bytes: text.len() as u64,
    })
}

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn megabytes(bytes: u64) -> String {
    let tenths = (bytes * 10 + 524_288) / 1_048_576;
    format!("{}.{} MB", tenths / 10, tenths % 10)
}

fn readme(options: &DemoOptions, summary: &DemoSummary, data: &[DemoFile]) -> String {
    let mut rows = String::new();
    let notes = [
        "one row per shop account; ids in signup order",
        "completed, cancelled and pending orders; refunds (`R…`) with negative amounts",
        "page views, carts added and viewed, checkouts; logged in or anonymous",
        "campaign sends, opens, clicks, unsubscribes; a welcome mail per signup",
    ];
    for (file, note) in data.iter().zip(notes) {
        rows.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            file.path,
            group(file.rows as u64),
            megabytes(file.bytes),
            note
        ));
    }
    format!(
        r#"# cdp demo

A complete cdp project: the definitions of the retail example (an online shop) bound to
generated data — {people} people, {events} event rows. `cdp demo` wrote it with seed
{seed}; the same seed and sizes always give the same files.

## What to run

```sh
cdp check              # every definition checks
cdp graph              # what depends on what
cdp run                # identity, profiles, segments, journeys, metrics on the embedded engine
cdp plan               # the batch program, step by step
cdp compile --dialect duckdb --out sql/    # the same program as SQL for another engine
```

The as-of time is `{as_of}` (`cdp.toml`): every value is computed as of that moment, and
the few events dated after it must stay invisible.

## What is in it

| path | what |
|---|---|
| `cdp.toml` | project name, storage directory (`.cdp`), as-of time, one CSV file per source |
| `sources.cdp` | `customers`, `orders`, `web_events`, `email_events` |
| `identity.cdp` | entity `customer`: keys `customer_id`, `email` (normalized, placeholders excluded, at most 2 per identifier), `cookie_id` (at most 10 per identifier); the profile's attributes |
| `behaviors.cdp`, `features.cdp` | purchases, refunds, page views, carts, emails; lifetime value, recency, favorite category, open rates, … |
| `segments.cdp` | high value, VIP, at risk, lapsed, cart abandoners, win-back candidates, … |
| `journeys.cdp` | `welcome`, `cart_recovery`, `winback` |
| `metrics.cdp`, `activations.cdp` | daily KPIs per audience; exports and journey sends |

| file | rows | size | what |
|---|---|---|---|
{rows}
## What the data holds

- Activity is log-normal: a few heavy buyers, a long tail, a third of the account holders
  never order. A share of the buyers stopped buying months ago (lapsed, at risk).
- Identity: people browse with one to three cookies, anonymously before they sign up and often
  logged in afterwards; emails are typed with different case and whitespace; some accounts
  hold placeholders that identify nobody (blank, `null`, `test@example.com`); a few people
  have two accounts and a few families share one address (their profiles merge); some check
  out with a second, work address; shared computers see many people's emails (the limit of
  two emails per cookie keeps them apart); a few browsers clear cookies and exceed the limit
  of ten cookies per account.
- Orders peak on Black Friday (2024-11-29); orders of the last days are often still
  pending and not priced yet; a few completed orders lack an amount.
- Sessions end in an order, or with an abandoned cart, or just browsing; traffic comes from
  search, social and the newsletter.
- Newsletters go out every few weeks (`black_friday_2024` on 2024-11-28, `cyber_monday_2024`
  after the as-of time); each new account gets a `welcome` mail.
"#,
        people = group(summary.people as u64),
        events = group(summary.events() as u64),
        seed = options.seed,
        as_of = AS_OF,
        rows = rows,
    )
}

// ------------------------------------------------------------------------------ randomness

/// SplitMix64: small, fast, and the same numbers on every platform.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    /// A generator for one stage of the generation, independent of the other stages.
    fn new(seed: u64, stage: u64) -> Rng {
        let mut r = Rng(seed ^ stage.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// About standard normal (Irwin–Hall: twelve uniforms), with basic arithmetic only.
    fn normal(&mut self) -> f64 {
        let mut s = 0.0;
        for _ in 0..12 {
            s += self.unit();
        }
        s - 6.0
    }

    /// In `0..n`, small numbers more often (the popular products).
    fn popular(&mut self, n: u64) -> u64 {
        let k = self.below(n) + 1;
        self.below(k)
    }

    /// `x` rounded down or up at random, so that the expectation is `x`.
    fn round(&mut self, x: f64) -> u64 {
        if x <= 0.0 {
            return 0;
        }
        let whole = x as u64;
        whole + u64::from(self.chance(x - whole as f64))
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An index into `weights`, each chosen in proportion to its weight.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.below(u64::from(total)) as u32;
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// SplitMix64's finalizer: a good 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `e^x` by range reduction and a Taylor series: basic arithmetic only, so it gives the same
/// bits everywhere (the platform's `exp` may differ in the last bit).
fn exp(x: f64) -> f64 {
    const LN2: f64 = std::f64::consts::LN_2;
    let x = x.clamp(-700.0, 700.0);
    let k = (x / LN2).round();
    let r = x - k * LN2;
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..=16 {
        term *= r / f64::from(i);
        sum += term;
    }
    sum * 2f64.powi(k as i32)
}

// ------------------------------------------------------------------------------ time

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
/// [`AS_OF`] in seconds since the epoch.
const T: i64 = 1_733_011_200;
/// The data starts a year before the as-of time (signups go back further) ...
const START: i64 = T - 366 * DAY;
/// ... and ends two weeks after it.
const END: i64 = T + 14 * DAY;
/// Black Friday 2024, 2024-11-29 00:00:00.
const BLACK_FRIDAY: i64 = T - 2 * DAY;

/// Relative frequency of each hour of the day (UTC ≈ the shop's time zone).
const HOURS: [u32; 24] = [
    3, 2, 1, 1, 1, 1, 2, 4, 6, 7, 8, 8, 9, 8, 8, 8, 8, 9, 11, 13, 13, 11, 8, 5,
];

/// A whole-second time in `[lo, hi]` whose hour of day follows [`HOURS`].
fn daytime(rng: &mut Rng, lo: i64, hi: i64) -> i64 {
    let t = rng.range(lo, hi);
    let day = t.div_euclid(DAY) * DAY;
    let t = day + rng.weighted(&HOURS) as i64 * HOUR + rng.range(0, HOUR - 1);
    t.clamp(lo, hi)
}

/// Days since 1970-01-01 as (year, month, day) (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ------------------------------------------------------------------------------ people

const FIRST: [&str; 60] = [
    "Anna", "Ben", "Clara", "David", "Elif", "Felix", "Greta", "Hannah", "Ivan", "Julia", "Karim",
    "Lea", "Max", "Nina", "Oskar", "Paula", "Rosa", "Sven", "Tara", "Umut", "Vera", "Willem",
    "Xenia", "Yusuf", "Zoe", "Lukas", "Mia", "Noah", "Emma", "Leon", "Sophie", "Jonas", "Marie",
    "Elias", "Lena", "Paul", "Laura", "Finn", "Lisa", "Tim", "Sarah", "Jan", "Katja", "Moritz",
    "Johanna", "Luca", "Amelie", "Milan", "Ella", "Theo", "Chiara", "Matteo", "Camille", "Louis",
    "Sanne", "Daan", "Aylin", "Mehmet", "Olga", "Piotr",
];
const LAST: [&str; 48] = [
    "Schmidt", "Meyer", "Fischer", "Weber", "Wagner", "Becker", "Hoffmann", "Koch", "Richter",
    "Klein", "Wolf", "Neumann", "Schwarz", "Braun", "Vogel", "Hartmann", "Krueger", "Lange",
    "Werner", "Schulz", "Keller", "Frank", "Berger", "Huber", "Gruber", "Bauer", "Moser",
    "Steiner", "Meier", "Brunner", "Dupont", "Martin", "Bernard", "Dubois", "Jansen", "Devries",
    "Bakker", "Visser", "Smith", "Brown", "Rossi", "Bianchi", "Novak", "Kowalski", "Yilmaz",
    "Kaya", "Peeters", "Maes",
];
const DOMAINS: [&str; 18] = [
    "gmail.com",
    "web.de",
    "gmx.de",
    "t-online.de",
    "outlook.com",
    "hotmail.com",
    "yahoo.com",
    "icloud.com",
    "gmx.at",
    "gmx.ch",
    "bluewin.ch",
    "posteo.de",
    "orange.fr",
    "free.fr",
    "ziggo.nl",
    "proton.me",
    "mailbox.org",
    "freenet.de",
];
const DOMAIN_WEIGHTS: [u32; 18] = [20, 13, 12, 7, 8, 4, 4, 6, 3, 2, 3, 2, 3, 2, 2, 2, 1, 2];
const COMPANIES: [&str; 8] = [
    "acme-corp.de",
    "mueller-logistik.de",
    "alpenbank.ch",
    "stadtwerke-nord.de",
    "bureau-dupont.fr",
    "dutch-design.nl",
    "kanzlei-koch.de",
    "techhaus.at",
];
/// `None` is an unknown country.
const COUNTRIES: [Option<&str>; 15] = [
    Some("DE"),
    Some("AT"),
    Some("CH"),
    Some("FR"),
    Some("NL"),
    Some("BE"),
    Some("LU"),
    Some("GB"),
    Some("US"),
    Some("IT"),
    Some("ES"),
    Some("PL"),
    Some("DK"),
    Some("SE"),
    None,
];
const COUNTRY_WEIGHTS: [u32; 15] = [440, 100, 90, 70, 60, 30, 8, 45, 25, 30, 20, 20, 10, 10, 42];

const CATEGORIES: [&str; 7] = [
    "shoes",
    "apparel",
    "accessories",
    "outdoor",
    "kids",
    "luxury",
    "clearance",
];
const CATEGORY_WEIGHTS: [u32; 7] = [22, 26, 16, 12, 11, 4, 9];
/// The SKU prefix of each category.
const SKU_PREFIX: [&str; 7] = ["SHOES", "APPAR", "ACCES", "OUTDO", "KIDS", "LUXUR", "CLEAR"];
/// Price range of each category, in whole euros.
const PRICES: [(u64, u64); 7] = [
    (39, 149),
    (14, 89),
    (9, 59),
    (24, 199),
    (9, 49),
    (149, 899),
    (4, 29),
];
/// Products per category.
const PRODUCTS: u64 = 600;

/// `utm-source` values; index 0 is "none".
const UTM: [&str; 8] = [
    "",
    "google",
    "instagram",
    "newsletter",
    "newsletter_black_friday",
    "idealo",
    "facebook",
    "tiktok",
];

/// How an email address is written in a field.
mod typed {
    pub const NULL: u8 = 0;
    pub const EXACT: u8 = 1;
    pub const UPPER: u8 = 2;
    pub const LEADING_SPACES: u8 = 3;
    pub const TRAILING_SPACE: u8 = 4;
    pub const CAPITALIZED: u8 = 5;
    /// Placeholders that identify nobody (the entity's `exclude` list, after normalizing).
    pub const PLACEHOLDERS: [&str; 5] = [
        "null",
        "   ",
        "test@example.com",
        " TEST@example.com",
        "Test@Example.com",
    ];
    /// `PLACEHOLDER + i` is `PLACEHOLDERS[i]`.
    pub const PLACEHOLDER: u8 = 6;
    /// The person's work address.
    pub const WORK: u8 = 20;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Account,
    Anonymous,
    Subscriber,
}

const NONE: u32 = u32::MAX;

struct Person {
    kind: Kind,
    first: u8,
    /// The address the person really uses, lower case; empty for anonymous visitors.
    email: String,
    /// A second address (at work) some people check out with.
    work: Option<String>,
    /// Index of the first account in `World::accounts`, or `NONE`.
    account: u32,
    /// A second account of the same person, or `NONE`.
    second_account: u32,
    cookies_from: u32,
    cookies: u8,
    /// Relative activity (log-normal).
    activity: f64,
    /// Web activity starts here (a while before the signup), orders at `order_lo`; both end
    /// at `hi` (early for people who stopped buying). Empty when `hi <= lo`.
    web_lo: i64,
    order_lo: i64,
    hi: i64,
    buyer: bool,
    favorite: u8,
    second_favorite: u8,
    /// Preferred traffic source.
    utm: u8,
    /// Share of emails opened.
    opens: f64,
    /// Share of orders cancelled.
    cancels: f64,
    /// Receives newsletters from this time on (`i64::MAX`: never).
    subscribed_at: i64,
    /// How the email service provider writes the address.
    esp: u8,
}

struct Account {
    person: u32,
    signup: i64,
    email: u8,
    first_name: bool,
    country: u8,
    /// Days since the epoch, or `None`.
    birth: Option<i64>,
    opt_in: bool,
}

struct World {
    people: Vec<Person>,
    /// In signup order: `accounts[i]` is customer `C{i + 1}`.
    accounts: Vec<Account>,
    cookies: Vec<u64>,
    /// Cookies of shared computers, with the people who typed their email on them.
    shared: Vec<(u64, Vec<u32>)>,
    /// Digits of a customer number.
    id_width: usize,
}

impl World {
    fn generate(options: &DemoOptions) -> World {
        let mut rng = Rng::new(options.seed, 1);
        let n = options.profiles;
        let mut people: Vec<Person> = Vec::with_capacity(n);
        let mut accounts: Vec<Account> = Vec::with_capacity(n);
        let mut cookies: Vec<u64> = Vec::with_capacity(n * 2);
        let mut emails: HashSet<String> = HashSet::with_capacity(n);
        // People with an own address, for families who share one.
        let mut with_email: Vec<u32> = Vec::with_capacity(n);
        let mut local = String::new();

        for i in 0..n {
            let kind = match rng.below(100) {
                0..=84 => Kind::Account,
                85..=96 => Kind::Anonymous,
                _ => Kind::Subscriber,
            };
            let first = rng.below(FIRST.len() as u64) as u8;
            let last = rng.below(LAST.len() as u64) as u8;
            let mut person = Person {
                kind,
                first,
                email: String::new(),
                work: None,
                account: NONE,
                second_account: NONE,
                cookies_from: cookies.len() as u32,
                cookies: 0,
                activity: exp(1.2 * rng.normal()),
                web_lo: 0,
                order_lo: 0,
                hi: 0,
                buyer: false,
                favorite: rng.weighted(&CATEGORY_WEIGHTS) as u8,
                second_favorite: rng.weighted(&CATEGORY_WEIGHTS) as u8,
                utm: 0,
                opens: match rng.below(10) {
                    0..=2 => 0.02,
                    3..=7 => 0.1 + 0.4 * rng.unit(),
                    _ => 0.5 + 0.4 * rng.unit(),
                },
                cancels: if rng.chance(0.12) { 0.3 } else { 0.03 },
                subscribed_at: i64::MAX,
                esp: typed::EXACT,
            };
            person.utm = if person.opens > 0.5 && rng.chance(0.6) {
                3
            } else {
                1 + rng.below(UTM.len() as u64 - 1) as u8
            };
            if kind != Kind::Anonymous {
                // A family: the address of someone else, so the two profiles merge.
                if kind == Kind::Account && !with_email.is_empty() && rng.chance(0.012) {
                    let other = *rng.pick(&with_email);
                    person.email = people[other as usize].email.clone();
                } else {
                    person.email = new_email(&mut rng, &mut emails, &mut local, first, last);
                    with_email.push(i as u32);
                }
                if kind == Kind::Account && rng.chance(0.05) {
                    let company = *rng.pick(&COMPANIES);
                    local.clear();
                    local.push_str(&FIRST[first as usize].to_ascii_lowercase());
                    local.push('.');
                    local.push_str(&LAST[last as usize].to_ascii_lowercase());
                    person.work = Some(unique(&mut rng, &mut emails, &local, company));
                }
            }
            match kind {
                Kind::Account => {
                    let signup = signup_time(&mut rng);
                    let email = match rng.below(1000) {
                        0..=29 => typed::NULL,
                        30..=54 => typed::PLACEHOLDER + rng.below(5) as u8,
                        55..=74 => typed::UPPER,
                        75..=99 => typed::LEADING_SPACES + rng.below(2) as u8,
                        100..=129 => typed::CAPITALIZED,
                        _ => typed::EXACT,
                    };
                    let age = (40.0 + 13.0 * rng.normal()).clamp(16.0, 90.0) as i64;
                    let birth = if rng.chance(0.08) {
                        None
                    } else {
                        Some(T / DAY - age * 365 - rng.range(0, 364))
                    };
                    let account = Account {
                        person: i as u32,
                        signup,
                        email,
                        first_name: !rng.chance(0.02),
                        country: rng.weighted(&COUNTRY_WEIGHTS) as u8,
                        birth,
                        opt_in: rng.chance(0.72),
                    };
                    let usable = (typed::EXACT..=typed::CAPITALIZED).contains(&email);
                    if account.opt_in && usable {
                        person.subscribed_at = signup;
                        if rng.chance(0.03) {
                            person.esp = email;
                        }
                    }
                    // A second account of the same person, later, the email typed differently;
                    // some moved to another country in between.
                    if usable && signup < T - 30 * DAY && rng.chance(0.02) {
                        let later = rng.range(signup + DAY, T - DAY);
                        accounts.push(Account {
                            person: i as u32,
                            signup: later,
                            email: typed::UPPER + rng.below(4) as u8,
                            first_name: account.first_name,
                            country: if rng.chance(0.4) {
                                rng.weighted(&COUNTRY_WEIGHTS) as u8
                            } else {
                                account.country
                            },
                            birth: account.birth,
                            opt_in: account.opt_in,
                        });
                    }
                    accounts.push(account);
                    person.web_lo = (signup - rng.range(0, 21) * DAY).max(START);
                    person.order_lo = signup.max(START);
                    person.buyer = rng.chance(0.66);
                    // A third of the buyers stopped at some point; the others are still around.
                    person.hi = if person.buyer && rng.chance(0.35) && person.order_lo < T {
                        rng.range(person.order_lo, T)
                    } else {
                        END
                    };
                    person.cookies = match rng.below(1000) {
                        0..=549 => 1,
                        550..=849 => 2,
                        850..=996 => 3,
                        // Clears cookies all the time: more than the limit of ten.
                        _ => rng.range(11, 16) as u8,
                    };
                }
                Kind::Anonymous => {
                    person.activity *= 0.3;
                    person.web_lo = rng.range(START, END);
                    let days = 1 + (rng.unit() * rng.unit() * 120.0) as i64;
                    person.hi = (person.web_lo + days * DAY).min(END);
                    person.order_lo = person.hi;
                    person.cookies = 1 + u8::from(rng.chance(0.2));
                }
                Kind::Subscriber => {
                    person.activity *= 0.3;
                    let at = rng.range(START - 365 * DAY, T + 7 * DAY);
                    person.subscribed_at = at;
                    person.web_lo = at.max(START);
                    person.order_lo = END;
                    person.hi = END;
                    person.cookies = u8::from(rng.chance(0.5));
                }
            }
            for _ in 0..person.cookies {
                cookies.push(rng.next_u64());
            }
            people.push(person);
        }

        // Customer ids in signup order, as the shop numbers its accounts.
        accounts.sort_by_key(|a| a.signup);
        for (i, a) in accounts.iter().enumerate() {
            let p = &mut people[a.person as usize];
            if p.account == NONE {
                p.account = i as u32;
            } else {
                p.second_account = i as u32;
            }
        }

        // Shared computers: many people type their email on one browser.
        let mut shared = Vec::new();
        if !with_email.is_empty() {
            for _ in 0..(n / 4000).max(1) {
                let cookie = rng.next_u64();
                let users = (0..rng.range(4, 14))
                    .map(|_| *rng.pick(&with_email))
                    .collect();
                shared.push((cookie, users));
            }
        }
        let id_width = accounts.len().to_string().len().max(6);
        World {
            people,
            accounts,
            cookies,
            shared,
            id_width,
        }
    }

    fn cookies_of(&self, p: &Person) -> &[u64] {
        let from = p.cookies_from as usize;
        &self.cookies[from..from + p.cookies as usize]
    }
}

/// Signups over the five years before the as-of time, growing; a few after it.
fn signup_time(rng: &mut Rng) -> i64 {
    const SPAN: i64 = 5 * 365 * DAY;
    if rng.chance(0.004) {
        return daytime(rng, T + 1, END);
    }
    // Half uniform, half rising linearly: more signups lately.
    let u = if rng.chance(0.5) {
        rng.unit()
    } else {
        rng.unit().max(rng.unit())
    };
    daytime(rng, T - SPAN + (u * SPAN as f64) as i64, T)
}

/// A new address for a person, unique among all generated addresses.
fn new_email(
    rng: &mut Rng,
    emails: &mut HashSet<String>,
    local: &mut String,
    first: u8,
    last: u8,
) -> String {
    let first = FIRST[first as usize].to_ascii_lowercase();
    let last = LAST[last as usize].to_ascii_lowercase();
    let domain = DOMAINS[rng.weighted(&DOMAIN_WEIGHTS)];
    local.clear();
    match rng.below(100) {
        0..=29 => {
            local.push_str(&first);
            local.push('.');
            local.push_str(&last);
        }
        30..=54 => {
            local.push_str(&first);
            local.push('.');
            local.push_str(&last);
            local.push_str(&rng.range(1, 99).to_string());
        }
        55..=64 => {
            local.push_str(&first);
            local.push_str(&last);
        }
        65..=74 => {
            local.push_str(&first[..1]);
            local.push('.');
            local.push_str(&last);
        }
        75..=79 => {
            local.push_str(&first);
            local.push('_');
            local.push_str(&last);
        }
        80..=88 => {
            local.push_str(&first);
            local.push_str(&rng.range(1950, 2006).to_string());
        }
        89..=95 => {
            local.push_str(&last);
            local.push('.');
            local.push_str(&first);
        }
        _ => {
            // Sub-addressing: name+shop@…
            local.push_str(&first);
            local.push('.');
            local.push_str(&last);
            local.push_str("+shop");
            let local = local.clone();
            return unique(rng, emails, &local, "gmail.com");
        }
    }
    let local = local.clone();
    unique(rng, emails, &local, domain)
}

/// `local@domain`, with digits appended to `local` until the address is new.
fn unique(rng: &mut Rng, emails: &mut HashSet<String>, local: &str, domain: &str) -> String {
    let mut email = format!("{local}@{domain}");
    while emails.contains(&email) {
        email = format!("{local}{}@{domain}", rng.range(2, 9999));
    }
    emails.insert(email.clone());
    email
}

// ------------------------------------------------------------------------------ budget

/// How the event rows are shared between the sources.
struct Budget {
    /// Orders (refunds come on top, about 4%).
    orders: f64,
    web: f64,
    email: f64,
}

impl Budget {
    fn new(events: usize) -> Budget {
        let events = events as f64;
        Budget {
            orders: events * 0.06 / 1.04,
            email: events * 0.22,
            web: events * 0.72,
        }
    }
}

// ------------------------------------------------------------------------------ orders

mod status {
    pub const COMPLETED: u8 = 0;
    pub const PENDING: u8 = 1;
    pub const CANCELLED: u8 = 2;
    pub const REFUNDED: u8 = 3;
    pub const NAMES: [&str; 4] = ["completed", "pending", "cancelled", "refunded"];
}

/// No amount.
const NO_AMOUNT: i64 = i64::MIN;

struct Order {
    ts: i64,
    person: u32,
    /// The customer row the order belongs to.
    account: u32,
    /// Seeds the basket (see [`basket`]).
    basket: u64,
    cents: i64,
    status: u8,
    /// 0 as is, 1 lower case, 2 with a leading space.
    id_form: u8,
    /// A `typed` code; `typed::WORK` for the work address.
    email: u8,
    /// Whose address the checkout email is (someone else's now and then).
    email_of: u32,
    /// The order number; for a refund, the refunded order's.
    number: u32,
}

/// One item of a basket: a category and a product number, or a gift card (`GIFT_CARD`).
#[derive(Clone, Copy)]
struct Item {
    category: u8,
    product: u16,
}

const GIFT_CARD: u8 = u8::MAX;

fn price_cents(item: Item) -> i64 {
    if item.category == GIFT_CARD {
        return i64::from(item.product) * 100;
    }
    let (lo, hi) = PRICES[item.category as usize];
    let h = mix(u64::from(item.category) << 32 | u64::from(item.product));
    // Cheaper products are the more common ones.
    let span = hi - lo + 1;
    let euros = lo + (h % span) * ((h >> 20) % span) / span;
    let cents = [95, 99, 0, 50][((h >> 40) % 4) as usize];
    (euros * 100 + cents) as i64
}

/// The basket an order's seed stands for: 1 to 6 items, mostly of the person's favorite
/// categories; popular products more often.
fn basket(seed: u64, p: &Person, items: &mut [Item; 7]) -> usize {
    let mut rng = Rng(seed);
    let n = 1 + rng.weighted(&[50, 25, 12, 7, 4, 2]);
    for item in items.iter_mut().take(n) {
        let category = match rng.below(10) {
            0..=4 => p.favorite,
            5..=6 => p.second_favorite,
            _ => rng.weighted(&CATEGORY_WEIGHTS) as u8,
        };
        let product = rng.popular(PRODUCTS) as u16;
        *item = Item { category, product };
    }
    if rng.chance(0.025) {
        items[n] = Item {
            category: GIFT_CARD,
            product: *rng.pick(&[25, 50, 100]),
        };
        return n + 1;
    }
    n
}

fn basket_cents(items: &[Item]) -> i64 {
    let sum: i64 = items.iter().map(|&i| price_cents(i)).sum();
    if sum < 5_000 {
        sum + 495 // shipping
    } else {
        sum
    }
}

fn generate_orders(world: &World, budget: &Budget, seed: u64) -> Vec<Order> {
    let mut rng = Rng::new(seed, 2);
    let people = &world.people;
    let weight = |p: &Person| {
        let years = (p.hi - p.order_lo) as f64 / (365 * DAY) as f64;
        p.activity * (0.25 + 0.75 * years.min(1.0))
    };
    let buyers = people
        .iter()
        .filter(|p| p.buyer && p.order_lo < p.hi)
        .count();
    let total: f64 = people
        .iter()
        .filter(|p| p.buyer && p.order_lo < p.hi)
        .map(weight)
        .sum();
    let extra = (budget.orders - buyers as f64).max(0.0);
    let mut orders = Vec::with_capacity(budget.orders as usize + buyers);
    let mut items = [Item {
        category: 0,
        product: 0,
    }; 7];
    for (i, p) in people.iter().enumerate() {
        if !(p.buyer && p.order_lo < p.hi) {
            continue;
        }
        let n = if budget.orders < 1.0 {
            0
        } else {
            1 + rng.round(extra * weight(p) / total)
        };
        for _ in 0..n {
            let mut ts = daytime(&mut rng, p.order_lo, p.hi);
            if p.order_lo < BLACK_FRIDAY && BLACK_FRIDAY + DAY <= p.hi && rng.chance(0.03) {
                ts = daytime(&mut rng, BLACK_FRIDAY, BLACK_FRIDAY + DAY - 1);
            }
            let seed = rng.next_u64();
            let n_items = basket(seed, p, &mut items);
            let mut cents = basket_cents(&items[..n_items]);
            let recent = ts > T - 3 * DAY;
            let status = if (recent && rng.chance(0.25)) || rng.chance(0.003) {
                status::PENDING
            } else if rng.chance(p.cancels) {
                status::CANCELLED
            } else {
                status::COMPLETED
            };
            if (status == status::PENDING && rng.chance(0.6))
                || (status == status::COMPLETED && rng.chance(0.001))
            {
                cents = NO_AMOUNT;
            }
            let account = if p.second_account != NONE && rng.chance(0.3) {
                p.second_account
            } else {
                p.account
            };
            let id_form = match rng.below(200) {
                0..=1 => 1,
                2 => 2,
                _ => 0,
            };
            let mut email_of = i as u32;
            let email = match rng.below(1000) {
                0..=139 => typed::NULL,
                140..=159 => typed::PLACEHOLDER + rng.below(5) as u8,
                160..=199 if p.work.is_some() => typed::WORK,
                200..=202 => {
                    // A gift, or the partner's checkout: someone else's address.
                    email_of = rng.below(people.len() as u64) as u32;
                    if people[email_of as usize].email.is_empty() {
                        email_of = i as u32;
                    }
                    typed::EXACT
                }
                203..=229 => typed::UPPER + rng.below(4) as u8,
                _ => typed::EXACT,
            };
            orders.push(Order {
                ts,
                person: i as u32,
                account,
                basket: seed,
                cents,
                status,
                id_form,
                email,
                email_of,
                number: 0,
            });
        }
    }
    // Order numbers follow time.
    orders.sort_by_key(|o| o.ts);
    for (k, o) in orders.iter_mut().enumerate() {
        o.number = 1_000_001 + k as u32;
    }
    orders
}

/// Adds refunds of some completed orders: rows of their own, days later, with a negative
/// amount (the whole order, or a part).
fn add_refunds(orders: &mut Vec<Order>, seed: u64) {
    let mut rng = Rng::new(seed, 3);
    let mut refunds = Vec::new();
    for o in orders.iter() {
        if o.status != status::COMPLETED || o.cents == NO_AMOUNT || !rng.chance(0.05) {
            continue;
        }
        let ts = o.ts + rng.range(2, 21) * DAY + rng.range(0, DAY - 1);
        if ts > END {
            continue;
        }
        let share = if rng.chance(0.65) {
            o.cents
        } else {
            (o.cents / 100 * rng.range(20, 60) / 100).max(1) * 100 + 95
        };
        refunds.push(Order {
            ts,
            cents: -share.min(o.cents),
            status: status::REFUNDED,
            email: typed::NULL,
            id_form: 0,
            ..*o
        });
    }
    orders.extend(refunds);
    orders.sort_by_key(|o| o.ts);
}

// ------------------------------------------------------------------------------ web events

mod event {
    pub const PAGE: u8 = 0;
    pub const VIEW_CART: u8 = 1;
    pub const ADD_TO_CART: u8 = 2;
    pub const CHECKOUT: u8 = 3;
    pub const NAMES: [&str; 4] = ["page", "view_cart", "add_to_cart", "checkout"];
    pub const URLS: [&str; 4] = [
        "",
        "https://shop.example.com/cart",
        "https://shop.example.com/cart/add",
        "https://shop.example.com/checkout",
    ];
}

/// No category: the home page and the search (page views), and cart and checkout events.
const NO_CATEGORY: u8 = u8::MAX;
/// Pages without a category.
const HOME: u16 = 0;
const SEARCH: u16 = 1;

struct Web {
    ts: i64,
    cookie: u64,
    person: u32,
    kind: u8,
    category: u8,
    product: u16,
    /// Index into `UTM`.
    utm: u8,
    /// 0 anonymous, 1 logged in, 2 logged in, id in lower case.
    login: u8,
    /// A `typed` code: the email the visitor submitted in a form on this page.
    email: u8,
    /// Percent, or `u8::MAX` for null.
    scroll: u8,
    /// Seconds; 0 for null.
    dwell: u16,
}

/// One step of a session being planned.
#[derive(Clone, Copy)]
struct Step {
    kind: u8,
    category: u8,
    product: u16,
    /// Seconds to the next step.
    gap: i64,
    scroll: u8,
}

/// What a session holds.
#[derive(Clone, Copy)]
struct Visit {
    cookie: u64,
    person: u32,
    logged_in: bool,
    /// Ends with a checkout followed by an order.
    order: bool,
    /// A `typed` code for an email submitted on the first page, or `typed::NULL`.
    form: u8,
    /// The person's usual traffic source.
    utm: u8,
}

fn plan_session(rng: &mut Rng, p: &Person, visit: &Visit, steps: &mut Vec<Step>) {
    steps.clear();
    let pages = 1 + rng.weighted(&[30, 24, 16, 11, 7, 5, 3, 2, 1, 1]);
    let mut adds = 0;
    for k in 0..pages {
        let (category, product) = if k == 0 && rng.chance(0.12) {
            (NO_CATEGORY, HOME)
        } else if rng.chance(0.05) {
            (NO_CATEGORY, SEARCH)
        } else {
            let category = match rng.below(20) {
                0..=10 => p.favorite,
                11..=14 => p.second_favorite,
                _ => rng.weighted(&CATEGORY_WEIGHTS) as u8,
            };
            (category, rng.popular(PRODUCTS) as u16)
        };
        let dwell = 3 + (rng.unit() * rng.unit() * 300.0) as i64;
        steps.push(Step {
            kind: event::PAGE,
            category,
            product,
            gap: dwell,
            scroll: if rng.chance(0.07) {
                u8::MAX
            } else {
                rng.below(101) as u8
            },
        });
        let last = k + 1 == pages;
        let add = category != NO_CATEGORY
            && ((visit.order && last && adds == 0)
                || rng.chance(if visit.order { 0.3 } else { 0.09 }));
        if add {
            adds += 1;
            steps.push(Step {
                kind: event::ADD_TO_CART,
                category: NO_CATEGORY,
                product: 0,
                gap: rng.range(4, 60),
                scroll: u8::MAX,
            });
        }
    }
    if visit.order {
        // Some are in a hurry: checkout within 90 seconds of the last add to cart.
        let express = rng.chance(0.25);
        if let Some(last) = steps.last_mut() {
            last.gap = if express {
                rng.range(3, 30)
            } else {
                rng.range(10, 180)
            };
        }
        if !express || rng.chance(0.5) {
            steps.push(Step {
                kind: event::VIEW_CART,
                category: NO_CATEGORY,
                product: 0,
                gap: if express {
                    rng.range(3, 30)
                } else {
                    rng.range(10, 300)
                },
                scroll: u8::MAX,
            });
        }
        steps.push(Step {
            kind: event::CHECKOUT,
            category: NO_CATEGORY,
            product: 0,
            gap: 0,
            scroll: u8::MAX,
        });
    } else if (adds > 0 && rng.chance(0.65)) || rng.chance(0.02) {
        steps.push(Step {
            kind: event::VIEW_CART,
            category: NO_CATEGORY,
            product: 0,
            gap: rng.range(10, 400),
            scroll: u8::MAX,
        });
        // Reached the checkout, and left.
        if rng.chance(0.12) {
            steps.push(Step {
                kind: event::CHECKOUT,
                category: NO_CATEGORY,
                product: 0,
                gap: 0,
                scroll: u8::MAX,
            });
        }
    }
}

/// Appends a planned session starting at `start`.
fn emit_session(rng: &mut Rng, out: &mut Vec<Web>, steps: &[Step], start: i64, visit: &Visit) {
    // Half the sessions come through a tracked link, mostly the person's usual one.
    let utm = if !rng.chance(0.45) {
        0
    } else if rng.chance(0.6) {
        visit.utm
    } else {
        rng.below(UTM.len() as u64 - 1) as u8 + 1
    };
    let mut t = start;
    for (k, s) in steps.iter().enumerate() {
        let last = k + 1 == steps.len();
        let login = if !visit.logged_in {
            0
        } else if rng.chance(0.01) {
            2
        } else {
            1
        };
        out.push(Web {
            ts: t,
            cookie: visit.cookie,
            person: visit.person,
            kind: s.kind,
            category: s.category,
            product: s.product,
            utm: if k == 0 { utm } else { 0 },
            login,
            email: if k == 0 { visit.form } else { typed::NULL },
            scroll: s.scroll,
            // The time on a page is known when another page follows.
            dwell: if s.kind == event::PAGE && !last && s.gap < 65_535 {
                s.gap as u16
            } else {
                0
            },
        });
        t += s.gap;
    }
}

fn generate_web(world: &World, orders: &[Order], budget: &Budget, seed: u64) -> Vec<Web> {
    let mut rng = Rng::new(seed, 4);
    let people = &world.people;
    let mut web: Vec<Web> = Vec::with_capacity(budget.web as usize + 1024);
    let mut steps: Vec<Step> = Vec::with_capacity(32);

    // About half of the orders come from a tracked session that ends in the checkout.
    for o in orders {
        let p = &people[o.person as usize];
        let cookies = world.cookies_of(p);
        if cookies.is_empty() || !rng.chance(0.5) {
            continue;
        }
        let visit = Visit {
            cookie: cookie_for(&mut rng, cookies),
            person: o.person,
            logged_in: rng.chance(0.9),
            order: true,
            form: typed::NULL,
            utm: p.utm,
        };
        plan_session(&mut rng, p, &visit, &mut steps);
        let length: i64 = steps.iter().map(|s| s.gap).sum();
        let checkout = o.ts - rng.range(15, 150);
        let start = checkout - length;
        emit_session(&mut rng, &mut web, &steps, start, &visit);
    }

    // Browsing, in proportion to each person's activity.
    let rest = (budget.web - web.len() as f64).max(0.0);
    let weight = |p: &Person| {
        if p.cookies == 0 || p.web_lo >= p.hi {
            return 0.0;
        }
        let years = (p.hi - p.web_lo) as f64 / (365 * DAY) as f64;
        p.activity * (0.2 + 0.8 * years.min(1.0))
    };
    let total: f64 = people.iter().map(weight).sum();
    let mut carry = 0i64;
    for (i, p) in people.iter().enumerate() {
        let w = weight(p);
        if w == 0.0 {
            continue;
        }
        // What earlier people's last sessions overshot comes off this one's share.
        let target = rng.round(rest * w / total) as i64 + carry;
        let cookies = world.cookies_of(p);
        let signup = match p.account {
            NONE => i64::MAX,
            a => world.accounts[a as usize].signup,
        };
        let mut made = 0;
        let mut first = true;
        while made < target {
            let start = daytime(&mut rng, p.web_lo, p.hi);
            let logged_in = start >= signup && rng.chance(0.55);
            // A newsletter form: subscribers sign up with it, account holders now and then.
            let form = if (p.kind == Kind::Subscriber && first)
                || (p.kind == Kind::Account && rng.chance(0.015))
            {
                match rng.below(20) {
                    0 => typed::UPPER,
                    1 => typed::LEADING_SPACES,
                    _ => typed::EXACT,
                }
            } else {
                typed::NULL
            };
            first = false;
            let visit = Visit {
                cookie: cookie_for(&mut rng, cookies),
                person: i as u32,
                logged_in,
                order: false,
                form,
                utm: p.utm,
            };
            plan_session(&mut rng, p, &visit, &mut steps);
            emit_session(&mut rng, &mut web, &steps, start, &visit);
            made += steps.len() as i64;
        }
        carry = target - made;
    }

    // Shared computers: people sign up to the newsletter on the same browser.
    for (cookie, users) in &world.shared {
        for &u in users {
            let p = &people[u as usize];
            let visit = Visit {
                cookie: *cookie,
                person: u,
                logged_in: false,
                order: false,
                form: typed::EXACT,
                utm: p.utm,
            };
            plan_session(&mut rng, p, &visit, &mut steps);
            let start = daytime(&mut rng, START, T);
            emit_session(&mut rng, &mut web, &steps, start, &visit);
        }
    }
    web.sort_by_key(|w| w.ts);
    web
}

/// Mostly the main browser; people with many cookies spread over all of them.
fn cookie_for(rng: &mut Rng, cookies: &[u64]) -> u64 {
    if cookies.len() > 3 || rng.chance(0.4) {
        *rng.pick(cookies)
    } else {
        cookies[0]
    }
}

// ------------------------------------------------------------------------------ email events

mod mail {
    pub const SENT: u8 = 0;
    pub const OPEN: u8 = 1;
    pub const CLICK: u8 = 2;
    pub const UNSUBSCRIBE: u8 = 3;
    pub const NAMES: [&str; 4] = ["sent", "open", "click", "unsubscribe"];
}

/// The email service provider's seed address: it receives every campaign.
const SEED_ADDRESS: u32 = u32::MAX;

struct Mail {
    ts: i64,
    person: u32,
    kind: u8,
    campaign: u16,
}

struct Campaign {
    name: String,
    at: i64,
    /// Share of the subscribers it goes to.
    reach: f64,
}

/// The newsletter schedule: `regular` newsletters evenly spread from the start of the data to a
/// week after the as-of time (none in Black Friday week), then Black Friday and Cyber Monday.
/// Each is (time, share of the subscribers it goes to).
fn schedule(regular: usize) -> Vec<(i64, f64)> {
    let first = START + 5 * DAY;
    let last = T + 7 * DAY;
    let mut out: Vec<(i64, f64)> = (0..regular)
        .map(|k| {
            let at = if regular == 1 {
                last
            } else {
                first + (last - first) * k as i64 / (regular as i64 - 1)
            };
            let reach = 0.6 + 0.4 * (mix(k as u64) % 1000) as f64 / 1000.0;
            (at.div_euclid(DAY) * DAY + 8 * HOUR, reach)
        })
        .filter(|(at, _)| (at - BLACK_FRIDAY).abs() >= 3 * DAY)
        .collect();
    out.push((BLACK_FRIDAY - DAY + 8 * HOUR, 1.0));
    out.push((T + DAY + 8 * HOUR, 0.8));
    out.sort_by_key(|c| c.0);
    out
}

/// The campaigns of a schedule; the first is the welcome mail sent after each signup.
fn campaigns(schedule: &[(i64, f64)]) -> Vec<Campaign> {
    let mut out = vec![Campaign {
        name: "welcome".into(),
        at: 0,
        reach: 0.0,
    }];
    for &(at, reach) in schedule {
        let name = if at == BLACK_FRIDAY - DAY + 8 * HOUR {
            "black_friday_2024".to_string()
        } else if at == T + DAY + 8 * HOUR {
            "cyber_monday_2024".to_string()
        } else {
            let (y, m, d) = civil(at.div_euclid(DAY));
            format!("newsletter_{y}_{m:02}_{d:02}")
        };
        out.push(Campaign { name, at, reach });
    }
    out
}

/// Expected email rows of one send to `p`: the send, an open, a click, an unsubscribe.
fn rows_per_send(p: &Person) -> f64 {
    1.0 + p.opens + p.opens * (0.1 + p.opens * 0.3) + 0.004
}

fn generate_mail(world: &World, budget: &Budget, seed: u64) -> (Vec<Mail>, Vec<Campaign>) {
    let mut rng = Rng::new(seed, 5);
    let people = &world.people;
    let welcome = |p: &Person| p.kind == Kind::Account && (START..=END).contains(&p.subscribed_at);
    // As many newsletters as the budget allows: the expected rows of a newsletter are the
    // expected rows of the people subscribed by then, times its reach.
    let welcome_rows: f64 = people
        .iter()
        .filter(|p| welcome(p))
        .map(rows_per_send)
        .sum();
    let mut subscribed: Vec<(i64, f64)> = people
        .iter()
        .filter(|p| p.subscribed_at != i64::MAX)
        .map(|p| (p.subscribed_at, rows_per_send(p)))
        .collect();
    subscribed.sort_by_key(|s| s.0);
    let mut cumulative = Vec::with_capacity(subscribed.len() + 1);
    cumulative.push(0.0);
    for s in &subscribed {
        cumulative.push(cumulative.last().copied().unwrap_or(0.0) + s.1);
    }
    let expected = |regular: usize| {
        welcome_rows
            + schedule(regular)
                .iter()
                .map(|&(at, reach)| {
                    let n = subscribed.partition_point(|s| s.0 <= at);
                    1.0 + reach * cumulative[n]
                })
                .sum::<f64>()
    };
    let regular = (1..=150)
        .min_by(|&a, &b| {
            let da = (expected(a) - budget.email).abs();
            let db = (expected(b) - budget.email).abs();
            da.total_cmp(&db).then(a.cmp(&b))
        })
        .unwrap_or(1);
    let campaigns = campaigns(&schedule(regular));
    let mut mails: Vec<Mail> = Vec::with_capacity(budget.email as usize + 1024);
    let mut unsubscribed = vec![i64::MAX; people.len()];

    // A send, maybe opened and clicked; the time of an unsubscribe, if it led to one.
    let engage = |rng: &mut Rng, mails: &mut Vec<Mail>, i: usize, sent: i64, c: u16| {
        let p = &people[i];
        mails.push(Mail {
            ts: sent,
            person: i as u32,
            kind: mail::SENT,
            campaign: c,
        });
        let mut t = sent;
        if rng.chance(p.opens) {
            t += MINUTE + (rng.unit() * rng.unit() * (3 * DAY) as f64) as i64;
            mails.push(Mail {
                ts: t,
                person: i as u32,
                kind: mail::OPEN,
                campaign: c,
            });
            if rng.chance(0.1 + p.opens * 0.3) {
                t += rng.range(3, 300);
                mails.push(Mail {
                    ts: t,
                    person: i as u32,
                    kind: mail::CLICK,
                    campaign: c,
                });
            }
        }
        if rng.chance(0.004) {
            t += rng.range(5, 600);
            mails.push(Mail {
                ts: t,
                person: i as u32,
                kind: mail::UNSUBSCRIBE,
                campaign: c,
            });
            return Some(t);
        }
        None
    };

    // The welcome mail, minutes after the signup.
    for (i, p) in people.iter().enumerate() {
        if welcome(p) {
            let sent = p.subscribed_at + rng.range(MINUTE, 15 * MINUTE);
            if let Some(t) = engage(&mut rng, &mut mails, i, sent, 0) {
                unsubscribed[i] = t;
            }
        }
    }
    for (c, campaign) in campaigns.iter().enumerate().skip(1) {
        let c = c as u16;
        mails.push(Mail {
            ts: campaign.at,
            person: SEED_ADDRESS,
            kind: mail::SENT,
            campaign: c,
        });
        for (i, p) in people.iter().enumerate() {
            if p.subscribed_at > campaign.at
                || unsubscribed[i] <= campaign.at
                || !rng.chance(campaign.reach)
            {
                continue;
            }
            let sent = campaign.at + rng.range(0, 2 * HOUR);
            if let Some(t) = engage(&mut rng, &mut mails, i, sent, c) {
                unsubscribed[i] = t;
            }
        }
    }
    mails.sort_by_key(|m| m.ts);
    (mails, campaigns)
}

// ------------------------------------------------------------------------------ CSV

/// A CSV file written row by row into a large buffer: no allocation per row.
struct Csv {
    file: File,
    path: String,
    buf: Vec<u8>,
    rows: usize,
    bytes: u64,
    first: bool,
}

const FLUSH_AT: usize = 1 << 20;

impl Csv {
    fn create(dir: &Path, name: &str, header: &str) -> io::Result<Csv> {
        let path = format!("data/{name}");
        let mut csv = Csv {
            file: File::create(dir.join(&path))?,
            path,
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            rows: 0,
            bytes: 0,
            first: true,
        };
        csv.buf.extend_from_slice(header.as_bytes());
        csv.buf.push(b'\n');
        Ok(csv)
    }

    fn sep(&mut self) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
    }

    fn null(&mut self) {
        self.sep();
    }

    fn str(&mut self, s: &str) {
        self.sep();
        self.buf.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, n: u64) {
        self.sep();
        push_int(&mut self.buf, n, 1);
    }

    /// `2024-11-03 14:22:05`.
    fn ts(&mut self, secs: i64) {
        self.sep();
        let (y, m, d) = civil(secs.div_euclid(DAY));
        let s = secs.rem_euclid(DAY) as u64;
        push_int(&mut self.buf, y as u64, 4);
        self.buf.push(b'-');
        push_int(&mut self.buf, u64::from(m), 2);
        self.buf.push(b'-');
        push_int(&mut self.buf, u64::from(d), 2);
        self.buf.push(b' ');
        push_int(&mut self.buf, s / 3600, 2);
        self.buf.push(b':');
        push_int(&mut self.buf, s / 60 % 60, 2);
        self.buf.push(b':');
        push_int(&mut self.buf, s % 60, 2);
    }

    /// `1990-05-17`.
    fn date(&mut self, days: i64) {
        self.sep();
        let (y, m, d) = civil(days);
        push_int(&mut self.buf, y as u64, 4);
        self.buf.push(b'-');
        push_int(&mut self.buf, u64::from(m), 2);
        self.buf.push(b'-');
        push_int(&mut self.buf, u64::from(d), 2);
    }

    /// `-12.50`.
    fn cents(&mut self, cents: i64) {
        self.sep();
        if cents < 0 {
            self.buf.push(b'-');
        }
        let c = cents.unsigned_abs();
        push_int(&mut self.buf, c / 100, 1);
        self.buf.push(b'.');
        push_int(&mut self.buf, c % 100, 2);
    }

    /// A customer id, `C000042`, in upper or lower case, maybe with a leading space.
    fn customer_id(&mut self, account: u32, width: usize, form: u8) {
        self.sep();
        match form {
            1 => self.buf.push(b'c'),
            2 => self.buf.extend_from_slice(b" C"),
            _ => self.buf.push(b'C'),
        }
        push_int(&mut self.buf, u64::from(account) + 1, width);
    }

    /// An email address as typed (`typed` codes); `email` is lower case.
    fn email(&mut self, email: &str, how: u8) {
        self.sep();
        let start = self.buf.len();
        match how {
            typed::NULL => {}
            typed::UPPER => self
                .buf
                .extend(email.bytes().map(|b| b.to_ascii_uppercase())),
            typed::LEADING_SPACES => {
                self.buf.extend_from_slice(b"  ");
                self.buf.extend_from_slice(email.as_bytes());
            }
            typed::TRAILING_SPACE => {
                self.buf.extend_from_slice(email.as_bytes());
                self.buf.push(b' ');
            }
            typed::CAPITALIZED => {
                self.buf.extend_from_slice(email.as_bytes());
                self.buf[start] = self.buf[start].to_ascii_uppercase();
            }
            h if (typed::PLACEHOLDER..typed::PLACEHOLDER + 5).contains(&h) => {
                let text = typed::PLACEHOLDERS[(h - typed::PLACEHOLDER) as usize];
                self.buf.extend_from_slice(text.as_bytes());
            }
            _ => self.buf.extend_from_slice(email.as_bytes()),
        }
    }

    fn end(&mut self) -> io::Result<()> {
        self.buf.push(b'\n');
        self.rows += 1;
        self.first = true;
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.write_all(&self.buf)?;
        self.bytes += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<DemoFile> {
        self.flush()?;
        self.file.flush()?;
        Ok(DemoFile {
            path: self.path,
            rows: self.rows,
            bytes: self.bytes,
        })
    }
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn push_int(buf: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in len..width {
        buf.push(b'0');
    }
    buf.extend(digits[..len].iter().rev());
}

/// `CK-` and 16 hex digits.
fn push_cookie(buf: &mut Vec<u8>, cookie: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.extend_from_slice(b"CK-");
    for k in (0..16).rev() {
        buf.push(HEX[((cookie >> (4 * k)) & 15) as usize]);
    }
}

/// A product page's path segment: `shoes-0042`.
fn push_sku(buf: &mut Vec<u8>, item: Item, lower: bool) {
    if item.category == GIFT_CARD {
        buf.extend_from_slice(if lower { b"gift-card" } else { b"GIFT-CARD" });
        return;
    }
    let prefix = SKU_PREFIX[item.category as usize].as_bytes();
    if lower {
        buf.extend(prefix.iter().map(|b| b.to_ascii_lowercase()));
    } else {
        buf.extend_from_slice(prefix);
    }
    buf.push(b'-');
    push_int(buf, u64::from(item.product), 4);
}

fn write_customers(dir: &Path, world: &World) -> io::Result<DemoFile> {
    let mut csv = Csv::create(
        dir,
        "customers.csv",
        "customer_id,email,first_name,country,birth_date,signup_at,marketing_opt_in",
    )?;
    for (i, a) in world.accounts.iter().enumerate() {
        let p = &world.people[a.person as usize];
        csv.customer_id(i as u32, world.id_width, 0);
        csv.email(&p.email, a.email);
        if a.first_name {
            csv.str(FIRST[p.first as usize]);
        } else {
            csv.null();
        }
        match COUNTRIES[a.country as usize] {
            Some(c) => csv.str(c),
            None => csv.null(),
        }
        match a.birth {
            Some(days) => csv.date(days),
            None => csv.null(),
        }
        csv.ts(a.signup);
        csv.str(if a.opt_in { "true" } else { "false" });
        csv.end()?;
    }
    csv.finish()
}

fn write_orders(dir: &Path, world: &World, orders: &[Order]) -> io::Result<DemoFile> {
    let mut csv = Csv::create(
        dir,
        "orders.csv",
        "order_id,order_ts,customer_id,email,amount,status,items,item_count",
    )?;
    let mut items = [Item {
        category: 0,
        product: 0,
    }; 7];
    for o in orders {
        let p = &world.people[o.person as usize];
        let refund = o.status == status::REFUNDED;
        csv.sep();
        csv.buf.push(if refund { b'R' } else { b'O' });
        push_int(&mut csv.buf, u64::from(o.number), 1);
        csv.ts(o.ts);
        csv.customer_id(o.account, world.id_width, o.id_form);
        match o.email {
            typed::WORK => csv.email(p.work.as_deref().unwrap_or(""), typed::EXACT),
            how => csv.email(&world.people[o.email_of as usize].email, how),
        }
        if o.cents == NO_AMOUNT {
            csv.null();
        } else {
            csv.cents(o.cents);
        }
        csv.str(status::NAMES[o.status as usize]);
        if refund {
            csv.null();
            csv.null();
        } else {
            // A JSON array in one quoted field: ["SHOES-0042","KIDS-0007"].
            let n = basket(o.basket, p, &mut items);
            csv.sep();
            csv.buf.extend_from_slice(b"\"[");
            for (k, &item) in items[..n].iter().enumerate() {
                if k > 0 {
                    csv.buf.push(b',');
                }
                csv.buf.extend_from_slice(b"\"\"");
                push_sku(&mut csv.buf, item, false);
                csv.buf.extend_from_slice(b"\"\"");
            }
            csv.buf.extend_from_slice(b"]\"");
            csv.int(n as u64);
        }
        csv.end()?;
    }
    csv.finish()
}

fn write_web(dir: &Path, world: &World, web: &[Web]) -> io::Result<DemoFile> {
    let mut csv = Csv::create(
        dir,
        "web_events.csv",
        "ts,cookie_id,customer_id,email,event,url,category,utm-source,scroll_depth,time_on_page",
    )?;
    for w in web {
        let p = &world.people[w.person as usize];
        csv.ts(w.ts);
        csv.sep();
        push_cookie(&mut csv.buf, w.cookie);
        if w.login == 0 || p.account == NONE {
            csv.null();
        } else {
            csv.customer_id(p.account, world.id_width, if w.login == 2 { 1 } else { 0 });
        }
        csv.email(&p.email, w.email);
        csv.str(event::NAMES[w.kind as usize]);
        csv.sep();
        if w.kind == event::PAGE {
            csv.buf.extend_from_slice(b"https://shop.example.com/");
            if w.category == NO_CATEGORY {
                if w.product == SEARCH {
                    csv.buf.extend_from_slice(b"search");
                }
            } else {
                let category = CATEGORIES[w.category as usize];
                csv.buf.extend_from_slice(category.as_bytes());
                csv.buf.push(b'/');
                let item = Item {
                    category: w.category,
                    product: w.product,
                };
                push_sku(&mut csv.buf, item, true);
            }
        } else {
            csv.buf
                .extend_from_slice(event::URLS[w.kind as usize].as_bytes());
        }
        if w.category == NO_CATEGORY {
            csv.null();
        } else {
            csv.str(CATEGORIES[w.category as usize]);
        }
        csv.str(UTM[w.utm as usize]);
        if w.scroll == u8::MAX {
            csv.null();
        } else {
            csv.sep();
            if w.scroll >= 100 {
                csv.buf.push(b'1');
            } else {
                csv.buf.extend_from_slice(b"0.");
                push_int(&mut csv.buf, u64::from(w.scroll), 2);
            }
        }
        if w.dwell == 0 {
            csv.null();
        } else {
            csv.int(u64::from(w.dwell));
            csv.buf.push(b's');
        }
        csv.end()?;
    }
    csv.finish()
}

fn write_mail(
    dir: &Path,
    world: &World,
    mails: &[Mail],
    campaigns: &[Campaign],
) -> io::Result<DemoFile> {
    let mut csv = Csv::create(dir, "email_events.csv", "event_ts,email,type,campaign")?;
    for m in mails {
        csv.ts(m.ts);
        if m.person == SEED_ADDRESS {
            csv.str("test@example.com");
        } else {
            let p = &world.people[m.person as usize];
            csv.email(&p.email, p.esp);
        }
        csv.str(mail::NAMES[m.kind as usize]);
        csv.str(&campaigns[m.campaign as usize].name);
        csv.end()?;
    }
    csv.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> DemoOptions {
        DemoOptions {
            profiles: 500,
            events: 10_000,
            seed,
        }
    }

    fn create(options: &DemoOptions) -> (tempfile::TempDir, DemoSummary) {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let summary = create_demo(dir.path(), options, &mut |_| {}).expect("create the demo");
        (dir, summary)
    }

    fn data_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        ["customers", "orders", "web_events", "email_events"]
            .iter()
            .map(|name| {
                let path = dir.join("data").join(format!("{name}.csv"));
                (name.to_string(), fs::read(&path).expect("read a data file"))
            })
            .collect()
    }

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(T / DAY), (2024, 12, 1));
        assert_eq!(civil(BLACK_FRIDAY / DAY), (2024, 11, 29));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(-1), (1969, 12, 31));
    }

    #[test]
    fn exp_is_close_to_the_platforms() {
        for x in [-5.0, -1.3, 0.0, 0.4, 1.0, 2.5, 7.2] {
            let ours = exp(x);
            assert!((ours - x.exp()).abs() <= 1e-12 * x.exp(), "{x}: {ours}");
        }
    }

    #[test]
    fn demo_is_deterministic() {
        let (a, sa) = create(&small(7));
        let (b, sb) = create(&small(7));
        assert_eq!(sa, sb);
        for name in ["cdp.toml", "README.md", "sources.cdp"] {
            assert_eq!(
                fs::read(a.path().join(name)).unwrap(),
                fs::read(b.path().join(name)).unwrap(),
                "{name}"
            );
        }
        assert_eq!(data_files(a.path()), data_files(b.path()));
    }

    #[test]
    fn another_seed_gives_other_data() {
        let (a, _) = create(&small(7));
        let (b, _) = create(&small(8));
        for ((name, x), (_, y)) in data_files(a.path()).iter().zip(&data_files(b.path())) {
            assert_ne!(x, y, "{name}");
        }
    }

    #[test]
    fn sizes_follow_the_options() {
        let (_dir, s) = create(&DemoOptions {
            profiles: 2_000,
            events: 40_000,
            seed: 1,
        });
        assert_eq!(s.people, 2_000);
        assert!(
            (1_600..=1_800).contains(&s.customers),
            "{} customers",
            s.customers
        );
        let events = s.events() as f64;
        assert!((36_000.0..=44_000.0).contains(&events), "{events} events");
        assert!(s.orders > 1_000 && s.web_events > 20_000 && s.email_events > 5_000);
        let files: Vec<&str> = s.files.iter().map(|f| f.path.as_str()).collect();
        assert!(files.contains(&"data/web_events.csv") && files.contains(&"README.md"));
    }

    #[test]
    fn an_existing_project_is_never_overwritten() {
        let (dir, _) = create(&small(1));
        let err = create_demo(dir.path(), &small(1), &mut |_| {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn demo_project_checks_and_its_data_loads_strictly() {
        let (dir, summary) = create(&small(3));
        let sources = cdp_compiler::load_project(dir.path()).expect("load the project");
        let checked = cdp_compiler::check(&sources);
        let errors: Vec<String> = checked
            .diagnostics
            .iter()
            .filter(|d| d.severity == cdp_grammar::diag::Severity::Error)
            .map(|d| cdp_grammar::diag::render(&sources.map, d))
            .collect();
        assert!(errors.is_empty(), "{}", errors.join("\n"));
        let project = cdp_compiler::lower(&checked).expect("lower");
        let config = checked.config.as_ref().expect("cdp.toml");
        assert_eq!(config.project.as_of.as_deref(), Some(AS_OF));
        let expected = [
            ("customers", summary.customers),
            ("orders", summary.orders),
            ("web_events", summary.web_events),
            ("email_events", summary.email_events),
        ];
        assert_eq!(project.sources.len(), expected.len());
        for source in &project.sources {
            let name = source.meta.name.as_str();
            let binding = &config.sources[name];
            let files = cdp_runtime::load::SourceFiles::from_binding(dir.path(), name, binding)
                .expect("bound files");
            let batches = cdp_runtime::load::read_source(source, &files)
                .unwrap_or_else(|e| panic!("{name} does not load: {e}"));
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let want = expected.iter().find(|(n, _)| *n == name).map(|(_, r)| *r);
            assert_eq!(Some(rows), want, "{name}");
        }
    }
}

#[cfg(test)]
mod measure {
    use super::*;

    /// `DEMO_PROFILES=100000 DEMO_EVENTS=2000000 cargo test --release --lib demo::measure -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn measure_generation() {
        let env = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let options = DemoOptions {
            profiles: env("DEMO_PROFILES", 100_000),
            events: env("DEMO_EVENTS", 2_000_000),
            seed: env("DEMO_SEED", 42) as u64,
        };
        let dir = std::env::var("DEMO_DIR").map(std::path::PathBuf::from);
        let temp = tempfile::TempDir::new().expect("temp dir");
        let dir = dir.unwrap_or_else(|_| temp.path().join("demo"));
        let started = std::time::Instant::now();
        let summary = create_demo(&dir, &options, &mut |line| {
            println!("{:>8.3}s {line}", started.elapsed().as_secs_f64())
        })
        .expect("create the demo");
        println!("total {:.3}s", started.elapsed().as_secs_f64());
        for f in &summary.files {
            println!("{:<24} {:>10} rows {:>12} bytes", f.path, f.rows, f.bytes);
        }
        println!("{summary:?}");
    }
}
