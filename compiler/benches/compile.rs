//! Compile benchmark: parse + check of a generated 2,000-definition project in 50 files, then
//! lowering to the IR and SQL generation for each of the five dialects.
//!
//! Goal (SPEC.md): parse + check < 200 ms on the 2-core development machine. Prints the median
//! of several runs after a warm-up, and the ratio to that budget; then the median time of
//! lowering and of compiling to each dialect, and the whole way (source text to the SQL of all
//! five dialects). `--quick` (or `CDP_BENCH_QUICK=1`) runs
//! fewer iterations, for CI; `--save-project <dir>` writes the generated project to disk.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cdp_compiler::sql::{self, Dialect};

const DEFINITIONS: usize = 2_000;
const FILES: usize = 50;
const BUDGET: Duration = Duration::from_millis(200);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick =
        args.iter().any(|a| a == "--quick") || std::env::var_os("CDP_BENCH_QUICK").is_some();
    let (warmup, runs) = if quick { (1, 5) } else { (3, 21) };

    let project = cdp_compiler::synthetic::generate(DEFINITIONS, FILES);
    if let Some(dir) = args
        .iter()
        .position(|a| a == "--save-project")
        .and_then(|i| args.get(i + 1))
    {
        let dir = std::path::Path::new(dir);
        std::fs::create_dir_all(dir).expect("create the directory for --save-project");
        project.write_to(dir).expect("write the generated project");
        println!("wrote the generated project to {}", dir.display());
    }
    let sources = project.sources();
    let bytes: usize = project.files.iter().map(|(_, t)| t.len()).sum();

    let first = cdp_compiler::check(&sources);
    let errors = first.diagnostics.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        // Still measured, but an error may cut the checker short: say so next to the number.
        println!(
            "warning: the generated project has {errors} errors (first: {}); timings may be too low",
            first.diagnostics[0].message
        );
    }

    for _ in 0..warmup {
        black_box(cdp_compiler::check(black_box(&sources)));
    }
    let times = measure(runs, || {
        black_box(cdp_compiler::check(black_box(&sources)));
    });
    // Parsing alone, so that the output says which half of the budget goes where.
    let parse_times = measure(runs, || {
        for &id in &sources.files {
            black_box(cdp_grammar::parse_file(id, &sources.map.get(id).text));
        }
    });
    let median = times[times.len() / 2];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "compile {} definitions / {} files ({:.0} KiB): parse+check median {:.1} ms \
         (min {:.1}, max {:.1}, {runs} runs; parse alone {:.1} ms) (goal < {} ms: {:.2}x of budget)",
        project.definitions,
        project.files.len(),
        bytes as f64 / 1024.0,
        ms(median),
        ms(times[0]),
        ms(times[times.len() - 1]),
        ms(parse_times[parse_times.len() / 2]),
        BUDGET.as_millis(),
        median.as_secs_f64() / BUDGET.as_secs_f64(),
    );

    // The back ends: lowering to the IR, then SQL for every dialect.
    let as_of = 1_733_011_200_000_000; // 2024-12-01 00:00:00
    let ir = cdp_compiler::lower(&first).expect("the generated project lowers");
    let lower_times = measure(runs, || {
        black_box(cdp_compiler::lower(black_box(&first)).ok());
    });
    let mut line = format!("lower to IR {:.1} ms;", ms(lower_times[runs / 2]));
    for dialect in Dialect::ALL {
        let program = sql::compile(&ir, dialect, as_of);
        let statements = program.steps.len();
        let bytes = program.to_script().len();
        let t = measure(runs, || {
            black_box(sql::compile(black_box(&ir), dialect, as_of));
        });
        line += &format!(
            " {} {:.1} ms ({statements} steps, {:.0} KiB)",
            dialect.name(),
            ms(t[runs / 2]),
            bytes as f64 / 1024.0
        );
    }
    println!("{line}");
    let all = measure(runs, || {
        let checked = cdp_compiler::check(black_box(&sources));
        let ir = cdp_compiler::lower(&checked).expect("lowers");
        for dialect in Dialect::ALL {
            black_box(sql::compile(&ir, dialect, as_of));
        }
    });
    println!(
        "source text to SQL in all five dialects: median {:.1} ms (min {:.1}, max {:.1})",
        ms(all[runs / 2]),
        ms(all[0]),
        ms(all[runs - 1])
    );
}

/// Wall-clock times of `runs` calls, sorted.
fn measure(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}
