#!/usr/bin/env bash
# The DuckDB benchmark: the SQL that cdp generates for bench/project vs the hand-written
# bench/sql/retail.sql, on the same data (goal: generated <= 1.3x hand-written).
#
#   bench/run.sh [--preset small|large] [--repeat N] [--explain] [-- extra duckdb_bench.py args]
#
# Makes a venv under target/bench-venv (pinned duckdb, pyarrow, numpy), generates the data into
# target/bench-data/<preset> unless it is there, compiles the project into
# target/bench-results/<preset>/program, runs bench/duckdb_bench.py, and writes the figures to
# target/bench-results/<preset>/result.json. CDP=/path/to/cdp skips `cargo build --release`.
# See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PRESET=small
REPEAT=3
EXPLAIN=0
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) PRESET="$2"; shift 2 ;;
    --preset=*) PRESET="${1#*=}"; shift ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --repeat=*) REPEAT="${1#*=}"; shift ;;
    --explain) EXPLAIN=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
. bench/env.sh
bench_env "$PRESET"

OUT="$PWD/target/bench-results/$PRESET"
rm -rf "$OUT/program"
mkdir -p "$OUT"
echo "== compiling bench/project (DuckDB, as of 2024-12-01 00:00:00) with $CDP_VERSION"
"$CDP" compile bench/project --dialect duckdb --as-of '2024-12-01 00:00:00' --out "$OUT/program" >/dev/null

ARGS=(--data "$DATA" --program "$OUT/program" --sql bench/sql/retail.sql --repeat "$REPEAT" --json "$OUT/result.json")
if [ "$EXPLAIN" = 1 ]; then
  rm -rf "$OUT/explain"
  ARGS+=(--explain "$OUT/explain")
fi
echo "== benchmark ($PRESET, $REPEAT runs per side; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg))"
"$PY" bench/duckdb_bench.py "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
echo "figures: $OUT/result.json"
