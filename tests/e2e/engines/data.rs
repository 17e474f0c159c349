//! A seeded random data set for the sources of examples/retail: a few thousand profiles with the
//! edge cases where engines (and compilers) tend to disagree.
//!
//! Relative to the as-of time T = 2024-12-01 00:00:00: events exactly on window edges (T − D and
//! T − D + 1s for every window the example uses), at T itself, and after T; ties in timestamps;
//! nulls in every nullable column; sub-second timestamps; amounts exactly on the thresholds the
//! segments test; emails that differ only in case and whitespace, shared emails that merge
//! profiles, excluded values (blank, "null", "test@example.com"); customer ids in lower case;
//! anonymous cookies; one shared computer whose cookie sees more customers than the identity
//! limit allows; sequences exactly on their `within` edges; empty and null lists.

use std::io;
use std::path::Path;

/// The as-of time the edge cases are placed around, in seconds since the epoch.
pub const AS_OF: i64 = 1_733_011_200; // 2024-12-01 00:00:00

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

/// The windows the example's definitions use; events land on both sides of each edge.
const WINDOWS: [i64; 9] = [
    90 * DAY,
    30 * DAY,
    14 * DAY,
    7 * DAY,
    2 * DAY,
    DAY,
    12 * HOUR,
    30 * 60,
    90,
];

/// SplitMix64: small, seeded, the same numbers on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `p` percent.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// How many rows each source got.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub customers: usize,
    pub orders: usize,
    pub web_events: usize,
    pub email_events: usize,
}

/// A time: usually random between May 2024 and a week after T, often exactly on a window edge.
fn event_time(rng: &mut Rng) -> i64 {
    match rng.below(100) {
        0..=14 => {
            let w = *rng.pick(&WINDOWS);
            AS_OF - w + *rng.pick(&[0, 1, -1])
        }
        15..=17 => AS_OF + *rng.pick(&[0, 1, 3600, 3 * DAY]),
        _ => rng.range(AS_OF - 214 * DAY, AS_OF + 7 * DAY),
    }
}

/// `2024-11-03 14:22:05`, with a fraction for some values (`micros` in 0..1_000_000).
fn timestamp(secs: i64, micros: i64) -> String {
    let t = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    let base = t.naive_utc().format("%Y-%m-%d %H:%M:%S").to_string();
    if micros == 0 {
        base
    } else {
        format!("{base}.{micros:06}")
    }
}

fn fraction(rng: &mut Rng) -> i64 {
    if rng.chance(3) {
        *rng.pick(&[250_000, 500_000, 1, 999_999])
    } else {
        0
    }
}

const FIRST: [&str; 12] = [
    "Anna", "Max", "Lena", "Paul", "Mia", "Jonas", "Emma", "Noah", "Hannah", "Oskar", "Clara",
    "Karim",
];
const LAST: [&str; 10] = [
    "Schmidt", "Weber", "Becker", "Wolf", "Richter", "Koch", "Bauer", "Klein", "Neumann", "Braun",
];
const DOMAINS: [&str; 5] = ["web.de", "gmx.de", "gmail.com", "bluewin.ch", "yahoo.com"];
const COUNTRIES: [&str; 5] = ["DE", "AT", "CH", "NL", "FR"];
const CATEGORIES: [&str; 5] = ["shoes", "accessories", "kids", "women", "men"];

/// Case and whitespace variants of one address, as people type them.
fn typed(rng: &mut Rng, email: &str) -> String {
    match rng.below(10) {
        0 => email.to_uppercase(),
        1 => format!("  {email}"),
        2 => format!("{email} "),
        3 => {
            let mut c = email.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        }
        _ => email.to_string(),
    }
}

/// An email field that never identifies anybody, or a null.
fn unusable_email(rng: &mut Rng) -> String {
    rng.pick(&[
        "",
        "   ",
        "null",
        "test@example.com",
        " TEST@example.com",
        "Test@Example.com",
    ])
    .to_string()
}

struct Person {
    customer_id: String,
    email: String,
    cookies: Vec<String>,
}

/// Writes `customers.csv`, `orders.csv`, `web_events.csv` and `email_events.csv` into `dir`.
pub fn write_retail_data(dir: &Path, seed: u64, profiles: usize) -> io::Result<Counts> {
    let mut rng = Rng::new(seed);
    let mut counts = Counts::default();
    let mut people: Vec<Person> = Vec::with_capacity(profiles);
    let mut cookie_no = 0u64;
    let mut new_cookie = |rng: &mut Rng| {
        cookie_no += 1;
        format!("CK-{:08x}-{cookie_no:03}", rng.next_u64() as u32)
    };

    // customers -------------------------------------------------------------------------------
    let mut w = csv::Writer::from_path(dir.join("customers.csv"))?;
    w.write_record([
        "customer_id",
        "email",
        "first_name",
        "country",
        "birth_date",
        "signup_at",
        "marketing_opt_in",
    ])?;
    let mut last_signup = AS_OF - 400 * DAY;
    for i in 0..profiles {
        let first = *rng.pick(&FIRST);
        let last = *rng.pick(&LAST);
        let own = format!(
            "{}.{}{}@{}",
            first.to_lowercase(),
            last.to_lowercase(),
            i,
            rng.pick(&DOMAINS)
        );
        // A family address: this account shares the email of an earlier one, merging them.
        let email = if i > 0 && rng.chance(3) {
            people[rng.below(i as u64) as usize].email.clone()
        } else {
            own
        };
        let customer_id = format!("C{:05}", i + 1);
        let email_field = match rng.below(100) {
            0..=3 => String::new(),
            4..=7 => unusable_email(&mut rng),
            _ => typed(&mut rng, &email),
        };
        let birth = if rng.chance(5) {
            String::new()
        } else {
            match rng.below(40) {
                0 => format!("{}-12-01", rng.range(1950, 2006)),
                1 => format!("{}-02-29", rng.pick(&[1960, 1972, 1984, 1996, 2000, 2004])),
                2 => format!("{}-11-30", rng.range(1950, 2006)),
                _ => format!(
                    "{}-{:02}-{:02}",
                    rng.range(1950, 2006),
                    rng.range(1, 12),
                    rng.range(1, 28)
                ),
            }
        };
        // Ties: now and then an account opens in the same second as the one before.
        let signup = if rng.chance(3) {
            last_signup
        } else if rng.chance(10) {
            event_time(&mut rng)
        } else {
            rng.range(AS_OF - 4 * 365 * DAY, AS_OF + 7 * DAY)
        };
        last_signup = signup;
        w.write_record([
            customer_id.as_str(),
            &email_field,
            if rng.chance(5) { "" } else { first },
            if rng.chance(5) {
                ""
            } else {
                *rng.pick(&COUNTRIES)
            },
            &birth,
            &timestamp(signup, fraction(&mut rng)),
            if rng.chance(50) { "true" } else { "false" },
        ])?;
        counts.customers += 1;
        let cookies = (0..rng.range(0, 3)).map(|_| new_cookie(&mut rng)).collect();
        people.push(Person {
            customer_id,
            email,
            cookies,
        });
    }
    w.flush()?;

    // orders ----------------------------------------------------------------------------------
    let mut w = csv::Writer::from_path(dir.join("orders.csv"))?;
    w.write_record([
        "order_id",
        "order_ts",
        "customer_id",
        "email",
        "amount",
        "status",
        "items",
        "item_count",
    ])?;
    let mut order_no = 0;
    let mut purchases: Vec<(usize, i64)> = Vec::new();
    for (p, person) in people.iter().enumerate() {
        let mut previous = None;
        for _ in 0..rng.range(0, 6) {
            order_no += 1;
            let ts = match previous {
                Some(t) if rng.chance(5) => t,
                _ => event_time(&mut rng),
            };
            previous = Some(ts);
            let status = *rng.pick(&[
                "completed",
                "completed",
                "completed",
                "completed",
                "completed",
                "completed",
                "pending",
                "cancelled",
                "refunded",
            ]);
            let cents = match rng.below(20) {
                0 => 10_000,
                1 => 5_000,
                2 => 10_001,
                3 => 1,
                _ => rng.range(100, 50_000),
            };
            let amount = match status {
                "pending" if rng.chance(50) => String::new(),
                "refunded" => format!("-{}.{:02}", cents / 100, cents % 100),
                _ if rng.chance(2) => String::new(),
                _ => format!("{}.{:02}", cents / 100, cents % 100),
            };
            let n_items = rng.range(0, 4);
            let items: Vec<String> = (0..n_items)
                .map(|_| {
                    format!(
                        "\"{}-{:04}\"",
                        rng.pick(&CATEGORIES).to_uppercase(),
                        rng.below(10_000)
                    )
                })
                .collect();
            let items = if rng.chance(5) {
                String::new()
            } else {
                format!("[{}]", items.join(","))
            };
            let customer_id = match rng.below(10) {
                0 => person.customer_id.to_lowercase(),
                1 => format!(" {}", person.customer_id),
                _ => person.customer_id.clone(),
            };
            let email = match rng.below(10) {
                0..=5 => typed(&mut rng, &person.email),
                6 => format!("other.{}@{}", order_no, rng.pick(&DOMAINS)),
                7 => unusable_email(&mut rng),
                _ => String::new(),
            };
            let item_count = if rng.chance(10) {
                String::new()
            } else {
                n_items.to_string()
            };
            if status == "completed" {
                purchases.push((p, ts));
            }
            w.write_record([
                format!("O{order_no:06}"),
                timestamp(ts, fraction(&mut rng)),
                customer_id,
                email,
                amount,
                status.to_string(),
                items,
                item_count,
            ])?;
            counts.orders += 1;
        }
    }
    w.flush()?;

    // web events ------------------------------------------------------------------------------
    let mut w = csv::Writer::from_path(dir.join("web_events.csv"))?;
    w.write_record([
        "ts",
        "cookie_id",
        "customer_id",
        "email",
        "event",
        "url",
        "category",
        "utm-source",
        "scroll_depth",
        "time_on_page",
    ])?;
    let mut write_event = |w: &mut csv::Writer<std::fs::File>,
                           rng: &mut Rng,
                           ts: i64,
                           cookie: &str,
                           person: Option<&Person>,
                           event: &str|
     -> io::Result<()> {
        let category = if event == "page" {
            rng.pick(&CATEGORIES).to_string()
        } else {
            String::new()
        };
        let url = if event == "page" {
            format!("https://shop.example.com/{category}/p-{}", rng.below(1000))
        } else {
            format!("https://shop.example.com/{}", event.replace('_', "/"))
        };
        let customer_id = match person {
            Some(p) if rng.chance(35) => {
                if rng.chance(15) {
                    p.customer_id.to_lowercase()
                } else {
                    p.customer_id.clone()
                }
            }
            _ => String::new(),
        };
        let email = match person {
            Some(p) if rng.chance(4) => typed(rng, &p.email),
            _ if rng.chance(1) => unusable_email(rng),
            _ => String::new(),
        };
        let scroll = match rng.below(10) {
            0..=2 => String::new(),
            3 => "0.3333333333333333".to_string(),
            4 => "1".to_string(),
            5 => "0.1".to_string(),
            _ => format!("0.{:02}", rng.below(100)),
        };
        let time_on_page = match rng.below(10) {
            0..=2 => String::new(),
            3 => format!("{}ms", rng.range(1, 999)),
            4 => format!("{}m", rng.range(1, 30)),
            _ => format!("{}s", rng.range(0, 600)),
        };
        let utm = if rng.chance(20) {
            rng.pick(&["newsletter", "google", "instagram"]).to_string()
        } else {
            String::new()
        };
        w.write_record([
            timestamp(ts, fraction(rng)),
            cookie.to_string(),
            customer_id,
            email,
            event.to_string(),
            url,
            category,
            utm,
            scroll,
            time_on_page,
        ])?;
        counts.web_events += 1;
        Ok(())
    };
    const EVENTS: [&str; 6] = [
        "page",
        "page",
        "page",
        "view_cart",
        "add_to_cart",
        "checkout",
    ];
    for person in &people {
        for cookie in &person.cookies {
            let mut previous = None;
            for _ in 0..rng.range(0, 8) {
                let ts = match previous {
                    Some(t) if rng.chance(5) => t,
                    _ => event_time(&mut rng),
                };
                previous = Some(ts);
                let event = *rng.pick(&EVENTS);
                write_event(&mut w, &mut rng, ts, cookie, Some(person), event)?;
                // Sequences exactly on their `within` edges.
                if event == "add_to_cart" && rng.chance(30) {
                    let gap = *rng.pick(&[90, 91, 89, 30 * 60, 30 * 60 + 1]);
                    let next = *rng.pick(&["checkout", "add_to_cart"]);
                    write_event(&mut w, &mut rng, ts + gap, cookie, Some(person), next)?;
                }
            }
        }
    }
    // Cart views exactly one day (and a second more) before a purchase of the same person.
    for &(p, ts) in purchases.iter().step_by(7) {
        let person = &people[p];
        if let Some(cookie) = person.cookies.first() {
            let gap = *rng.pick(&[DAY, DAY + 1, DAY - 1]);
            write_event(
                &mut w,
                &mut rng,
                ts - gap,
                cookie,
                Some(person),
                "view_cart",
            )?;
        }
    }
    // Anonymous visitors: cookies that never log in.
    for _ in 0..profiles / 10 {
        let cookie = new_cookie(&mut rng);
        for _ in 0..rng.range(1, 4) {
            let ts = event_time(&mut rng);
            write_event(&mut w, &mut rng, ts, &cookie, None, "page")?;
        }
    }
    // A shared computer: one cookie, a dozen customers logging in.
    let shared = new_cookie(&mut rng);
    for k in 0..12.min(people.len()) {
        let person = &people[(k * 7919) % people.len()];
        let ts = AS_OF - (k as i64 + 1) * HOUR;
        let email = typed(&mut rng, &person.email);
        w.write_record([
            timestamp(ts, 0).as_str(),
            &shared,
            &person.customer_id,
            &email,
            "page",
            "https://shop.example.com/account",
            "",
            "",
            "",
            "",
        ])?;
        counts.web_events += 1;
    }
    w.flush()?;

    // email events ----------------------------------------------------------------------------
    let mut w = csv::Writer::from_path(dir.join("email_events.csv"))?;
    w.write_record(["event_ts", "email", "type", "campaign"])?;
    let campaigns = [
        "newsletter_2024_10",
        "newsletter_2024_11",
        "winback",
        "black_friday",
    ];
    for person in &people {
        if rng.chance(30) {
            continue;
        }
        for _ in 0..rng.range(1, 6) {
            let sent = event_time(&mut rng);
            let campaign = *rng.pick(&campaigns);
            let email = typed(&mut rng, &person.email);
            w.write_record([timestamp(sent, 0).as_str(), &email, "sent", campaign])?;
            counts.email_events += 1;
            let mut t = sent;
            for kind in ["open", "click", "unsubscribe"] {
                if !rng.chance(40) {
                    break;
                }
                t += *rng.pick(&[0, 1, 60, HOUR, DAY]);
                let email = typed(&mut rng, &person.email);
                w.write_record([timestamp(t, 0).as_str(), &email, kind, campaign])?;
                counts.email_events += 1;
            }
        }
    }
    for k in 0..profiles / 50 {
        let email = if k % 2 == 0 {
            "test@example.com".to_string()
        } else {
            format!("nobody{k}@example.org")
        };
        let t = timestamp(event_time(&mut rng), 0);
        w.write_record([t.as_str(), &email, "sent", "newsletter_2024_11"])?;
        counts.email_events += 1;
    }
    w.flush()?;
    Ok(counts)
}

/// A copy of examples/retail (definitions and cdp.toml) whose data is the random data set.
pub fn write_retail_project(dir: &Path, seed: u64, profiles: usize) -> io::Result<Counts> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/retail");
    for entry in std::fs::read_dir(&example)? {
        let path = entry?.path();
        let keep = path.is_file()
            && matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("cdp") | Some("toml")
            );
        if keep {
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, dir.join(name))?;
            }
        }
    }
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    write_retail_data(&data, seed, profiles)
}
