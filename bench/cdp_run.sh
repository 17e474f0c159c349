#!/usr/bin/env bash
# `cdp run` of bench/project vs DuckDB running the hand-written bench/sql/retail.sql, both from the
# same Parquet files and both writing their outputs (goal: cdp run <= 1.3x DuckDB's time).
#
#   bench/cdp_run.sh [--preset small|large] [--identity native|sql] [--duckdb-generated]
#
# Copies bench/project to target/bench-results/<preset>/cdp-run/project with cdp.toml pointing at
# target/bench-data/<preset>, then, one after the other, each under /usr/bin/time -v (wall time,
# peak RSS):
#   1. cdp run (a first run: fresh storage), committing its outputs to the offline store;
#   2. duckdb_bench.py --once hand: DuckDB with views over the Parquet files runs retail.sql and
#      writes hw_identity, hw_profiles, hw_segments to Parquet;
#   3. with --duckdb-generated, the same for the SQL cdp generates for DuckDB;
# then checks that cdp run's committed tables equal DuckDB's, and prints the ratio.
# CDP=/path/to/cdp skips `cargo build --release`. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PRESET=small
IDENTITY=native
GENERATED=0
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) PRESET="$2"; shift 2 ;;
    --preset=*) PRESET="${1#*=}"; shift ;;
    --identity) IDENTITY="$2"; shift 2 ;;
    --identity=*) IDENTITY="${1#*=}"; shift ;;
    --duckdb-generated) GENERATED=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 1 ;;
  esac
done
. bench/env.sh
bench_env "$PRESET"

OUT="$PWD/target/bench-results/$PRESET/cdp-run"
rm -rf "$OUT"
mkdir -p "$OUT/project"
cp bench/project/*.cdp "$OUT/project/"
cat > "$OUT/project/cdp.toml" <<TOML
# bench/project/cdp.toml, pointed at $DATA by bench/cdp_run.sh
[project]
name = "bench"
storage = ".cdp"
as_of = "2024-12-01 00:00:00"

[sources.customers]
path = "$DATA/customers.parquet"

[sources.orders]
path = "$DATA/orders.parquet"

[sources.web_events]
path = "$DATA/web_events.parquet"
TOML

# wall seconds and peak RSS (MiB) from a /usr/bin/time -v log
wall() { awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$1"; }
rss() { awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$1"; }

echo "== $CDP_VERSION; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== cdp run --identity $IDENTITY ($PRESET)"
/usr/bin/time -v -o "$OUT/cdp.time" "$CDP" run --identity "$IDENTITY" "$OUT/project" >"$OUT/cdp.out" 2>"$OUT/cdp.err" \
  || { cat "$OUT/cdp.err" "$OUT/cdp.out" >&2; exit 1; }
tail -n 20 "$OUT/cdp.out"
CDP_S=$(wall "$OUT/cdp.time"); CDP_MIB=$(rss "$OUT/cdp.time")
# cdp's own `total` is the time until the run is committed to the offline store; after it, cdp run
# records the run in the registry and brings the online store up to date
COMMIT_S=$(awk '/^total / { v = $2; if (v ~ /ms$/) { sub(/ms$/, "", v); v /= 1000 } else sub(/s$/, "", v); print v }' "$OUT/cdp.out")
echo "   $CDP_S s in all ($COMMIT_S s until committed to the offline store), peak RSS $CDP_MIB MiB"

echo "== DuckDB, bench/sql/retail.sql from the Parquet files; load average $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -v -o "$OUT/hand.time" "$PY" bench/duckdb_bench.py --once hand --data "$DATA" \
  --sql bench/sql/retail.sql --out "$OUT/duckdb-hand" >"$OUT/hand.json"
HAND_S=$(wall "$OUT/hand.time"); HAND_MIB=$(rss "$OUT/hand.time")
echo "   $HAND_S s, peak RSS $HAND_MIB MiB  $(cat "$OUT/hand.json")"

if [ "$GENERATED" = 1 ]; then
  echo "== DuckDB, the SQL cdp generates for DuckDB, from the Parquet files"
  "$CDP" compile "$OUT/project" --dialect duckdb --out "$OUT/program" >/dev/null
  /usr/bin/time -v -o "$OUT/gen.time" "$PY" bench/duckdb_bench.py --once gen --data "$DATA" \
    --program "$OUT/program" --out "$OUT/duckdb-gen" >"$OUT/gen.json"
  echo "   $(wall "$OUT/gen.time") s, peak RSS $(rss "$OUT/gen.time") MiB  $(cat "$OUT/gen.json")"
fi
echo "   load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== check: cdp run's committed tables vs DuckDB's"
"$PY" bench/duckdb_bench.py --compare "$OUT/project/.cdp" "$OUT/duckdb-hand" --data "$DATA" | tee "$OUT/check.json"

awk -v c="$CDP_S" -v k="$COMMIT_S" -v h="$HAND_S" -v cm="$CDP_MIB" -v hm="$HAND_MIB" 'BEGIN {
  printf "cdp run %.1f s, %d MiB peak RSS; DuckDB hand-written %.1f s, %d MiB; ratio %.2fx (goal <= 1.3x: %s)\n",
         c, cm, h, hm, c / h, (c / h <= 1.3 ? "met" : "NOT met")
  printf "until cdp run has committed its outputs (without the registry and online store after it): %.1f s, ratio %.2fx\n",
         k, k / h }' | tee "$OUT/summary.txt"
