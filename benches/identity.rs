//! Identity resolution benchmark: synthetic `<e>_id_records` batches for millions of customers,
//! each with an email and one to three cookies (a few cookies shared between customers, a few
//! customers with an account id), resolved from scratch and then again from the first run's id
//! map with more records. Goal: the ~10M links of the default size resolve in < 10 s.
//! Also prints the process's peak resident memory (Linux: `VmHWM`, reset before each run, so a
//! run's peak includes the records it reads but not the previous run's garbage).
//!
//! ```sh
//! cargo bench --bench identity                   # 5M customers
//! cargo bench --bench identity -- --customers 500000
//! ```

use std::sync::Arc;
use std::time::Instant;

use cdp_runtime::identity::{KeySpec, Resolution, Resolver};
use cdp_runtime::Result;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

// The allocator the `cdp` binary runs with, so the figures are the product's: with the system
// allocator, the second run pays for the first (glibc's mmap threshold rises as the first run's
// large blocks are freed, and the second run's growing buffers are then copied on every
// reallocation).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GOAL_SECONDS: f64 = 10.0;
const BATCH_ROWS: usize = 1 << 20;
/// 2024-01-01 00:00:00 in microseconds.
const START: i64 = 1_704_067_200_000_000;
const YEAR: i64 = 365 * 86_400 * 1_000_000;

fn main() -> Result<()> {
    cdp::allocator::tune();
    let mut customers: u64 = 5_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--customers" => {
                customers = args
                    .next()
                    .and_then(|n| n.replace('_', "").parse().ok())
                    .unwrap_or(customers)
            }
            "--quick" => customers = 500_000,
            // `cargo bench` passes `--bench`; ignore what is not ours.
            _ => {}
        }
    }

    let keys = vec![
        KeySpec::new("customer_id", 1, None),
        KeySpec::new("email", 2, Some(2)),
        KeySpec::new("cookie_id", 3, Some(10)),
    ];
    let started = Instant::now();
    let first = records(customers, 0, customers);
    println!(
        "generated {} records in {:.1} s",
        rows(&first),
        started.elapsed().as_secs_f64()
    );

    println!("run 1: from scratch (peak RSS so far {})", peak_rss());
    reset_peak_rss();
    let (one, seconds_one) = run(&keys, &first, &[])?;
    println!("  peak RSS    {:>12}", peak_rss());
    let map = one.id_map_batch()?;

    // The second run sees 5% more records (new and returning customers) and starts from the
    // first run's id map.
    let more = records(customers / 20, customers, customers + customers / 20);
    let all: Vec<RecordBatch> = first.into_iter().chain(more).collect();
    println!("run 2: {} records, from the id map of run 1", rows(&all));
    reset_peak_rss();
    let (two, seconds_two) = run(&keys, &all, &[map])?;
    println!("  peak RSS    {:>12}", peak_rss());
    let kept = one
        .iter()
        .filter(|r| two.canonical_id(r.key_name, r.key_value) == Some(r.canonical_id))
        .count();
    println!(
        "  {kept} of {} identifiers kept their id ({:.2}%)",
        one.stats().nodes,
        100.0 * kept as f64 / one.stats().nodes.max(1) as f64
    );

    let worst = seconds_one.max(seconds_two);
    println!(
        "resolve: {seconds_one:.2} s from scratch, {seconds_two:.2} s from an id map (goal < {GOAL_SECONDS} s: {})",
        if worst < GOAL_SECONDS { "ok" } else { "MISSED" }
    );
    Ok(())
}

/// Resolves and prints the figures; returns the resolution and the seconds it took from
/// batches to canonical ids.
fn run(
    keys: &[KeySpec],
    records: &[RecordBatch],
    previous: &[RecordBatch],
) -> Result<(Resolution, f64)> {
    let start = Instant::now();
    let mut resolver = Resolver::new(keys.to_vec())?;
    resolver.reserve_for(records, previous);
    for batch in previous {
        resolver.add_previous_batch(batch)?;
    }
    if !previous.is_empty() {
        println!(
            "  the previous id map read in {:.2} s",
            start.elapsed().as_secs_f64()
        );
    }
    for batch in records {
        resolver.add_batch(batch)?;
    }
    let read = start.elapsed().as_secs_f64();
    let resolution = resolver.resolve()?;
    let seconds = start.elapsed().as_secs_f64();
    let output = Instant::now();
    let map = resolution.id_map_batch()?;
    let output = output.elapsed().as_secs_f64();
    let s = resolution.stats();
    println!("  records     {:>12}", s.records);
    println!("  nodes       {:>12}", s.nodes);
    println!("  links       {:>12}", s.links);
    println!("  edges       {:>12}  (after max N per profile)", s.edges);
    println!("  components  {:>12}", s.components);
    println!("  merges      {:>12}", s.merges);
    println!(
        "  seconds     {seconds:>12.2}  (reading batches {read:.2} s, resolving {:.2} s with filing; the id map as a batch of {} rows: {output:.2} s more)",
        seconds - read,
        map.num_rows()
    );
    Ok((resolution, seconds))
}

/// The peak resident set size of this process (`VmHWM`), or "?" where /proc has none.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{} MiB", kib / 1024))
        })
        .unwrap_or_else(|| "?".into())
}

/// Resets the peak to the current resident size (Linux >= 4.0; elsewhere a no-op).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// A deterministic 64-bit mix (splitmix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Records of `count` customers numbered from `from` (in a later run, half of them returning
/// customers below `from`): one record per cookie with the customer's email; 1% of records carry
/// a cookie of another customer (a shared computer); one customer in ten has an account id on its
/// first record. Records come in time order, as events do, so that the identifiers of one
/// customer are spread over the whole input.
fn records(count: u64, from: u64, population: u64) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "seen_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("k_customer_id", DataType::Utf8, true),
        Field::new("k_email", DataType::Utf8, true),
        Field::new("k_cookie_id", DataType::Utf8, true),
    ]));
    // (time, customer, cookie number, the customer whose cookie it is)
    let mut plan: Vec<(i64, u64, u64, u64)> = Vec::with_capacity(count as usize * 2);
    for n in from..from + count {
        let i = if from > 0 && n % 2 == 0 {
            mix(n) % from
        } else {
            n
        };
        let h = mix(i ^ (n << 40));
        for j in 0..1 + h % 3 {
            let r = mix(h.wrapping_add(j));
            let t = START + (r % YEAR as u64) as i64 + if from > 0 { YEAR } else { 0 };
            let (owner, number) = if r.is_multiple_of(100) {
                (mix(r) % population.max(1), 0)
            } else {
                (i, j)
            };
            plan.push((t, i, number, owner));
        }
    }
    plan.sort_unstable();
    let mut batches = Vec::new();
    let mut b = Builder::new();
    let mut first_record = std::collections::HashSet::new();
    for (t, i, j, owner) in plan {
        let customer_id = (i % 10 == 0 && first_record.insert(i)).then(|| format!("C{i:09}"));
        let email = format!("user.{i}@mail{}.example.com", i % 97);
        let cookie = format!("CK-{owner:010x}-{j}");
        b.push(t, customer_id.as_deref(), &email, &cookie);
        if b.len == BATCH_ROWS {
            batches.push(b.finish(&schema));
        }
    }
    if b.len > 0 {
        batches.push(b.finish(&schema));
    }
    batches
}

struct Builder {
    len: usize,
    times: Vec<i64>,
    customer_ids: StringBuilder,
    emails: StringBuilder,
    cookies: StringBuilder,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            len: 0,
            times: Vec::with_capacity(BATCH_ROWS),
            customer_ids: StringBuilder::new(),
            emails: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 32),
            cookies: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16),
        }
    }

    fn push(&mut self, t: i64, customer_id: Option<&str>, email: &str, cookie: &str) {
        self.len += 1;
        self.times.push(t);
        self.customer_ids.append_option(customer_id);
        self.emails.append_value(email);
        self.cookies.append_value(cookie);
    }

    fn finish(&mut self, schema: &Arc<Schema>) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(std::mem::take(
                &mut self.times,
            ))),
            Arc::new(self.customer_ids.finish()),
            Arc::new(self.emails.finish()),
            Arc::new(self.cookies.finish()),
        ];
        self.len = 0;
        self.times.reserve(BATCH_ROWS);
        RecordBatch::try_new(schema.clone(), columns).expect("the batch fits its schema")
    }
}
