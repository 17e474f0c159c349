//! Streaming operator benchmark: the demo project's events (examples/retail's definitions over
//! seeded generated data) through one `StreamEngine` on one thread — identity, aggregates with
//! exact windows, segments with their timers, journeys — in event-time order, advancing the
//! clock at every hour of event time as a server does when events keep arriving (and, first,
//! the same rows as history: `StreamEngine::start_from`, one evaluation at the end). The reference,
//! in the same process: the batch program over the same files on the embedded DataFusion
//! engine (2 threads), as of the last event. Goal: ≥ 500,000 events/s per core.
//!
//! ```sh
//! cargo bench --bench stream                                   # 100k people, 2M events
//! cargo bench --bench stream -- --profiles 20000 --events 400000
//! ```

use std::sync::Arc;
use std::time::Instant;

use cdp::demo::{create_demo, DemoOptions};
use cdp_runtime::batch::BatchEngine;
use cdp_runtime::stream::feed::Feed;
use cdp_runtime::stream::{Options, StreamEngine};

// The allocator the `cdp` binary runs with, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GOAL_EVENTS_PER_SECOND: f64 = 500_000.0;
const HOUR: i64 = 3_600_000_000;

fn main() {
    cdp::allocator::tune();
    let mut options = DemoOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |default: usize| {
            args.next()
                .and_then(|n| n.replace('_', "").parse().ok())
                .unwrap_or(default)
        };
        match arg.as_str() {
            "--profiles" => options.profiles = number(options.profiles),
            "--events" => options.events = number(options.events),
            // `cargo bench` passes `--bench`; ignore what is not ours.
            _ => {}
        }
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let started = Instant::now();
    create_demo(dir.path(), &options, &mut |_| {}).expect("the demo project");
    println!(
        "demo data: {} people, ~{} events, written in {:.1} s",
        options.profiles,
        options.events,
        started.elapsed().as_secs_f64()
    );

    let sources = cdp_compiler::load_project(dir.path()).expect("the demo loads");
    let checked = cdp_compiler::check(&sources);
    assert!(!checked.has_errors(), "{:#?}", checked.diagnostics);
    let project = cdp_compiler::lower(&checked).expect("the demo lowers");
    let config = checked.config.clone().expect("the demo has a cdp.toml");

    let started = Instant::now();
    let (rows, refused) =
        Feed::read_files(&project, dir.path(), &config.sources).expect("the demo's files");
    println!(
        "read {} rows ({refused} refused) in {:.1} s (not counted below)",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    let timed = rows.iter().filter(|(t, _, _)| *t != i64::MIN).count();
    let last = rows.last().map_or(0, |(t, _, _)| *t);

    // Starting from history (what the server does with the source files): one evaluation
    // per profile at the end.
    let mut engine = StreamEngine::new(Arc::new(project.clone()), Options::default());
    let history: Vec<_> = rows.iter().map(|(_, s, r)| (*s, r.clone())).collect();
    let started = Instant::now();
    engine.start_from(history, last);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "history (start_from, 1 thread): {} rows in {seconds:.2} s, {:.0} rows/s; {:.2}x the goal",
        rows.len(),
        rows.len() as f64 / seconds,
        rows.len() as f64 / seconds / GOAL_EVENTS_PER_SECOND
    );
    drop(engine);

    // The stream: every row, advancing at each hour of event time.
    let mut engine = StreamEngine::new(
        Arc::new(project.clone()),
        Options {
            allowed_lateness_ms: config.stream.allowed_lateness_ms().unwrap_or(3_600_000),
        },
    );
    let n = rows.len();
    let (mut transitions, mut steps, mut advances) = (0usize, 0usize, 0usize);
    let mut next_advance = i64::MIN;
    let started = Instant::now();
    for (t, source, row) in rows {
        if t != i64::MIN && t >= next_advance {
            if next_advance != i64::MIN {
                engine.advance(next_advance - 1);
                advances += 1;
                transitions += engine.take_transitions().len();
                steps += engine.take_journey_events().len();
            }
            next_advance = (t.div_euclid(HOUR) + 1) * HOUR;
        }
        engine.ingest(source, row);
    }
    engine.advance(last);
    transitions += engine.take_transitions().len();
    steps += engine.take_journey_events().len();
    let stream_seconds = started.elapsed().as_secs_f64();
    let (bytes, profiles) = engine.state_bytes();
    let counts = engine.counts();
    let per_second = n as f64 / stream_seconds;
    println!("stream (1 thread): {n} rows ({timed} with a time) in {stream_seconds:.2} s");
    println!(
        "  {:.0} events/s; goal {:.0}/s per core: {:.2}x the goal",
        per_second,
        GOAL_EVENTS_PER_SECOND,
        per_second / GOAL_EVENTS_PER_SECOND
    );
    println!(
        "  {advances} hourly advances, {transitions} segment transitions, {steps} journey steps, \
         {} merges, {} late rows",
        counts.merges, counts.late
    );
    println!(
        "  {} profile evaluations ({} by timers: time alone), {:.0} evaluations/s, {:.1} µs each",
        counts.evaluations,
        counts.timer_evaluations,
        counts.evaluations as f64 / stream_seconds,
        stream_seconds * 1e6 / counts.evaluations.max(1) as f64
    );
    println!(
        "  {profiles} profiles, {} MiB of operator state, {} bytes per profile",
        bytes / (1 << 20),
        bytes / profiles.max(1)
    );

    // The reference: one batch run over the same files, as of the last event.
    let started = Instant::now();
    let batch = BatchEngine::with_threads(2).expect("the batch engine");
    batch
        .register_project_sources(dir.path(), &project, &config)
        .expect("the demo's sources");
    let program = cdp_runtime::program::compile(&project, cdp_runtime::Dialect::DataFusion, last);
    batch.run(&program).expect("the batch run");
    let batch_seconds = started.elapsed().as_secs_f64();
    println!(
        "batch (DataFusion, 2 threads, reads the files too): {batch_seconds:.2} s, {:.0} rows/s",
        n as f64 / batch_seconds
    );
    println!(
        "stream / batch time: {:.2} (the stream also keeps every value current at each hour)",
        stream_seconds / batch_seconds
    );
}
