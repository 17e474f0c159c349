#!/usr/bin/env bash
# Tracking API ingest throughput: events per second acknowledged by `cdp serve`, each durable in
# the event log (fsync before the 200) and de-duplicated by messageId.
#
#   tools/ingest_bench.sh [--seconds 20] [--batch 100] [--connections 16]
#
# Builds cdp (release), copies examples/retail to a temporary directory, makes a write key,
# starts `cdp serve` (on core 1 when there are two or more, the load tool on core 0), and drives
# POST /v1/batch with `wrk` (Debian package; installed when missing): every request carries
# --batch track events with fresh messageIds. Prints wrk's figures, events/s (requests/s x
# batch), the log's size and record count afterwards, and bytes per event.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_=20
BATCH=100
CONNECTIONS=16
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 1 ;;
  esac
done
command -v wrk >/dev/null || { echo "== installing wrk"; apt-get install -y -q wrk >/dev/null; }
cargo build --release -q
CDP="$PWD/target/release/cdp"
WORK="$(mktemp -d)"
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
cp -r examples/retail "$WORK/p"
rm -rf "$WORK/p/.cdp"
KEY=$("$CDP" keys add bench --role write --dir "$WORK/p" | grep -o 'cdp_[0-9a-f]*')
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
AUTH=$(printf '%s:' "$KEY" | base64 -w0)
cat >"$WORK/batch.lua" <<LUA
-- Each request: $BATCH track events, messageIds unique per thread and request (thread_id is
-- a global that setup() sets in each thread).
thread_id = 0
local counter = 0
function setup(thread)
  thread:set("thread_id", math.random(1, 1000000000))
end
request = function()
  counter = counter + 1
  local events = {}
  for i = 1, $BATCH do
    events[i] = string.format(
      '{"type":"track","userId":"C%05d","event":"Product Viewed","messageId":"%d-%d-%d",' ..
      '"properties":{"sku":"S-%d","price":19.9},"timestamp":"2024-11-20T10:00:00Z"}',
      (counter * $BATCH + i) % 100000, thread_id, counter, i, i)
  end
  local body = '{"batch":[' .. table.concat(events, ",") .. '],"sentAt":"2024-11-20T10:00:01Z"}'
  return wrk.format("POST", "/v1/batch",
    {["Content-Type"] = "application/json", ["Authorization"] = "Basic $AUTH"}, body)
end
LUA
echo "== wrk: $CONNECTIONS connections, ${SECONDS_}s, $BATCH events per request (POST /v1/batch)"
OUT=$("${LOAD_CPU[@]}" wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_}s" --latency -s "$WORK/batch.lua" "$ADDR/v1/batch")
echo "$OUT"
RPS=$(echo "$OUT" | awk '/Requests\/sec/ {print $2}')
NON2XX=$(echo "$OUT" | awk '/Non-2xx/ {print $NF}')
kill $SERVER; wait $SERVER 2>/dev/null || true
LOG="$WORK/p/.cdp/stream/events.log"
BYTES=$(stat -c %s "$LOG")
EVENTS=$(python3 - "$LOG" <<'PY'
import struct, sys
data = open(sys.argv[1], 'rb').read()
n = at = 0
while at + 8 <= len(data):
    (length,) = struct.unpack_from('<I', data, at)
    at += 8 + length
    n += 1
print(n)
PY
)
echo "== events/s acknowledged: $(python3 -c "print(round($RPS * $BATCH))") (requests/s $RPS x $BATCH); non-2xx: ${NON2XX:-0}"
echo "== log: $EVENTS events, $BYTES bytes, $(python3 -c "print(round($BYTES / max($EVENTS, 1)))") bytes per event"
