#!/usr/bin/env bash
# Spark conformance: runs the Spark SQL program the compiler writes for a project on real Apache
# Spark (pyspark, local mode) and checks that every output table equals the one DuckDB computes
# from the DuckDB program on the same data, and that every loop took as many rounds.
#
# Usage (from anywhere; run by hand, not part of CI):
#   bash tools/spark_conformance.sh [PROJECT_DIR] [--as-of "YYYY-MM-DD HH:MM:SS"]
#                                   [--random SEED:PROFILES] [--keep]
#     PROJECT_DIR   a cdp project with CSV sources (default: examples/retail)
#     --as-of       compile both programs for this as-of time instead of the project's
#     --random      run on the seeded random data set of the conformance tests
#                   (tests/e2e/engines/data.rs, e.g. 7:3000) written next to PROJECT_DIR's
#                   definitions; builds a tiny generator with cargo --offline on first use
#     --keep        keep the work directory (programs, prepared CSVs, jobs, results)
#
# Prints one line per output table (rows on DuckDB and Spark, equal or DIFFERENT with the rows
# that differ), the loop rounds of both engines, the wall time of each engine, and a summary
# line; exits 1 on any difference or when either engine fails (Spark's error names the table and
# the statement), 0 when all agree.
#
# What it does: creates target/spark-venv when missing (pyspark 4.x, which needs Java 17+, and
# duckdb==1.5.6 as the project pins it), compiles the project with `cargo run -q -- compile
# --dialect spark|duckdb --out …` from the repository root, prepares the inputs as the Rust
# conformance harness does (tools/prepare_job.py), runs tools/duckdb_job.py and
# tools/spark_job.py on the same job, and compares with tools/compare_tables.py (canonical values
# as tests/e2e/engines/canon.rs; approx_count_distinct columns within 2 or 20%). The SQL runs as
# compiled, nothing is rewritten. Environment: SPARK_JOB_ANSI=false runs Spark with ANSI mode
# off (default: on, as Spark 4 ships); SPARK_JOB_DRIVER_MEMORY (default 2g); PYTHON picks the
# interpreter the venv is made from (default python3).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
project="$repo/examples/retail"
as_of=""
random=""
keep=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --as-of) as_of="$2"; shift 2 ;;
        --random) random="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) project="$(cd "$1" && pwd)"; shift ;;
    esac
done

venv="$repo/target/spark-venv"
py="$venv/bin/python"
if ! "$py" -c 'import pyspark, duckdb; assert pyspark.__version__.split(".")[0] >= "4" and duckdb.__version__ == "1.5.6"' 2>/dev/null; then
    echo "== creating $venv (pyspark 4.x, duckdb 1.5.6)"
    "${PYTHON:-python3}" -m venv "$venv"
    "$py" -m pip install --quiet --upgrade pip
    "$py" -m pip install --quiet "pyspark>=4,<5" "duckdb==1.5.6"
fi
java_version="$(java -version 2>&1 | head -1)"
echo "== java: $java_version; $("$py" -c 'import pyspark, duckdb; print("pyspark", pyspark.__version__, "/ duckdb", duckdb.__version__)')"

mkdir -p "$repo/target/spark-conformance"
work="$(mktemp -d "$repo/target/spark-conformance/run-XXXXXX")"
cleanup() {
    if [[ $keep -eq 1 ]]; then echo "== kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

if [[ -n "$random" ]]; then
    seed="${random%%:*}"
    profiles="${random#*:}"
    gen_dir="$repo/target/spark-conformance/randdata"
    if [[ ! -x "$gen_dir/target/release/cdp-randdata" ]]; then
        echo "== building the random data generator (tests/e2e/engines/data.rs)"
        mkdir -p "$gen_dir/src"
        cat > "$gen_dir/Cargo.toml" <<'EOF'
[package]
name = "cdp-randdata"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
chrono = { version = "0.4", default-features = false, features = ["std"] }
csv = "1"
[workspace]
EOF
        cat > "$gen_dir/src/main.rs" <<EOF
// Writes the seeded random data of the conformance tests: cdp-randdata DIR SEED PROFILES.
#[allow(dead_code)]
#[path = "$repo/tests/e2e/engines/data.rs"]
mod data;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[1]);
    std::fs::create_dir_all(dir).expect("data directory");
    let counts = data::write_retail_data(dir, args[2].parse().expect("seed"), args[3].parse().expect("profiles"))
        .expect("writing the data");
    println!("{counts:?}");
}
EOF
        (cd "$gen_dir" && cargo build --offline -q --release)
    fi
    mkdir -p "$work/project"
    cp "$project"/*.cdp "$project"/cdp.toml "$work/project/"
    echo "== random data: seed $seed, $profiles profiles: $("$gen_dir/target/release/cdp-randdata" "$work/project/data" "$seed" "$profiles")"
    project="$work/project"
fi

echo "== compiling $project (spark, duckdb)${as_of:+ as of $as_of}"
for dialect in spark duckdb; do
    args=(compile "$project" --dialect "$dialect" --out "$work/$dialect")
    [[ -n "$as_of" ]] && args+=(--as-of "$as_of")
    (cd "$repo" && cargo run -q -- "${args[@]}" > /dev/null)
    "$py" "$repo/tools/prepare_job.py" "$project" "$work/$dialect/program.json" "$work" "$dialect"
done
"$py" - "$work/spark.json" <<'EOF'
import json, sys
job = json.load(open(sys.argv[1]))
print("== inputs: " + ", ".join("{} {} rows".format(t["name"], t["rows"]) for t in job["tables"]))
EOF

seconds() { date +%s.%N; }
elapsed() { "$py" -c "import sys; print('{:.1f}'.format(float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }

echo "== DuckDB"
t0="$(seconds)"
duck_rc=0
"$py" "$repo/tools/duckdb_job.py" "$work/duckdb.json" "$work/duckdb_result.json" || duck_rc=$?
t1="$(seconds)"
duck_time="$(elapsed "$t0" "$t1")"
echo "   DuckDB: exit $duck_rc, ${duck_time}s"

echo "== Spark (local[2]; first JVM start is slow)"
spark_rc=0
SPARK_JOB_TMP="$work" "$py" "$repo/tools/spark_job.py" "$work/spark.json" "$work/spark_result.json" \
    > "$work/spark.log" 2>&1 || spark_rc=$?
t2="$(seconds)"
spark_time="$(elapsed "$t1" "$t2")"
"$py" - "$work/spark_result.json" "$spark_rc" "$spark_time" "$work/spark.log" <<'EOF'
import json, sys
path, rc, wall, log = sys.argv[1:5]
try:
    r = json.load(open(path))
except (OSError, ValueError):
    print("   Spark: exit {}, {}s, no result; the end of its log:".format(rc, wall))
    print("".join(open(log).readlines()[-30:]))
    sys.exit(0)
if "error" in r:
    print("   Spark: exit {}, {}s".format(rc, wall))
else:
    s = r["seconds"]
    slow = sorted(r["steps"], key=lambda t: -t[1])[:3]
    print("   Spark {} (ANSI {}): exit {}, {}s wall: JVM start {}s, load {}s, program {}s "
          "({} statements; slowest {}), read {}s".format(
              r["version"], r["ansi"], rc, wall, s["startup"], s["load"], s["program"],
              len(r["steps"]), ", ".join("{} {}s".format(t, x) for t, x in slow), s["read"]))
EOF

echo "== comparing (DuckDB is the reference)"
"$py" "$repo/tools/compare_tables.py" DuckDB "$work/duckdb_result.json" Spark "$work/spark_result.json" \
    "$work/approximate.json"
