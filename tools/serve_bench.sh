#!/usr/bin/env bash
# Online features for one profile over HTTP on loopback: latency at a fixed rate.
#
#   tools/serve_bench.sh [--rate 5000] [--seconds 30] [--project DIR]
#
# Builds cdp (release), runs the project (examples/retail by default, copied to a temporary
# directory) so that the online store holds its profiles, makes a read key, starts
# `cdp serve` on a free port, and drives `POST /api/v1/features` (one profile by email, four
# values) with `hey` (Debian package; installed here when missing) at the given rate for the
# given time: 10 connections, rate/10 requests per second each (--connections changes it). Prints
# hey's latency distribution (p50, p99 …). A `wrk` run (closed loop, maximum throughput) follows
# for reference. With two cores or more, the server runs on core 1 and the load tools on core 0
# (taskset), so that the measured latency is the server's, not the two fighting for one core; on
# two cores, hey's own scheduling of 50 connections adds ~1.5 ms at p99 (measured: see the notes).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=5000
SECONDS_=30
PROJECT=examples/retail
CONNECTIONS=10
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) RATE="$2"; shift 2 ;;
    --seconds) SECONDS_="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 1 ;;
  esac
done
for tool in hey wrk; do
  command -v "$tool" >/dev/null || { echo "== installing $tool"; apt-get install -y -q "$tool" >/dev/null; }
done
cargo build --release -q
CDP="$PWD/target/release/cdp"
WORK="$(mktemp -d)"
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
cp -r "$PROJECT" "$WORK/p"
rm -rf "$WORK/p/.cdp"
"$CDP" run "$WORK/p" >/dev/null
KEY=$("$CDP" keys add bench --dir "$WORK/p" | grep -o 'cdp_[0-9a-f]*')
SERVER_CPU=()
LOAD_CPU=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_CPU=(taskset -c 1)
  LOAD_CPU=(taskset -c 0)
fi
"${SERVER_CPU[@]}" "$CDP" serve "$WORK/p" --addr 127.0.0.1:0 >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do grep -q "serving" "$WORK/serve.log" && break; sleep 0.1; done
ADDR=$(grep -o 'http://[0-9.:]*' "$WORK/serve.log" | head -1)
BODY='{"features":["lifetime_value","orders_30d","high_value","favorite_category"],"entities":{"email":["hannah.becker@bluewin.ch"]}}'
echo "== one request"
curl -s -X POST "$ADDR/api/v1/features" -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -d "$BODY"
echo
echo "== hey: $RATE requests/s for ${SECONDS_}s ($CONNECTIONS connections x $((RATE / CONNECTIONS))/s)"
"${LOAD_CPU[@]}" hey -z "${SECONDS_}s" -c "$CONNECTIONS" -q $((RATE / CONNECTIONS)) -m POST -T application/json \
  -H "Authorization: Bearer $KEY" -d "$BODY" "$ADDR/api/v1/features"
cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA
echo "== wrk: closed loop, 2 threads, 50 connections, 10 s (maximum throughput)"
"${LOAD_CPU[@]}" wrk -t2 -c50 -d10s --latency -s "$WORK/post.lua" "$ADDR/api/v1/features"
