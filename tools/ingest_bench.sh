#!/usr/bin/env bash
# Tracking API ingest throughput and latency: events per second acknowledged by `cdp serve`,
# each durable in the event log (fsync before the 200), de-duplicated by messageId and applied
# by the streaming operators right after the 200; and the time from a 200 to the new value being
# served by GET /api/v1/live and by the profile API (the online store, which the stream writes).
#
#   tools/ingest_bench.sh [--seconds 20] [--batch 100] [--connections 16] [--unmapped]
#
# Builds cdp (release), copies examples/retail to a temporary directory, makes a write key and
# an admin key, starts `cdp serve` (on core 1 when there are two or more, the load tool on core
# 0), and drives POST /v1/batch with `wrk` (Debian package; installed when missing): every
# request carries --batch "Order Completed" track events (rows of `orders`, so they go through
# identity, aggregates, segments and journeys) for 100,000 customers, with fresh messageIds;
# --unmapped sends "Product Viewed" events instead, which no source takes (log only). Prints
# wrk's figures, events/s (requests/s x batch), the log's size and record count afterwards, and
# bytes per event. A probe meanwhile (under load) and afterwards (idle) sends 200 orders of
# new customers one at a time and reads each one's lifetime_value back at once: it prints the
# percentiles of POST -> 200 and of 200 -> value served, and fails if a value is wrong.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_=20
BATCH=100
CONNECTIONS=16
EVENT="Order Completed"
while [ $# -gt 0 ]; do
  case "$1" in
    --unmapped) EVENT="Product Viewed"; shift ;;
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
ADMIN=$("$CDP" keys add ops --role admin --dir "$WORK/p" | grep -o 'cdp_[0-9a-f]*')
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
-- Each request: $BATCH track events (no sentAt: Segment's clock-skew correction would move
-- them to the time of receipt), messageIds unique per thread and request (thread_id is
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
      '{"type":"track","userId":"C%05d","event":"$EVENT","messageId":"%d-%d-%d",' ..
      '"properties":{"order_id":"%d-%d-%d","total":19.9,"status":"completed"},' ..
      '"timestamp":"2025-02-01T10:00:00Z"}',
      (counter * $BATCH + i) % 100000, thread_id, counter, i, thread_id, counter, i)
  end
  local body = '{"batch":[' .. table.concat(events, ",") .. ']}'
  return wrk.format("POST", "/v1/batch",
    {["Content-Type"] = "application/json", ["Authorization"] = "Basic $AUTH"}, body)
end
LUA
cat >"$WORK/probe.py" <<'PY'
# One order of a new customer at a time: POST /v1/track, then at once read its lifetime_value,
# which must be the order's total: on even orders from the live endpoint (which catches the
# operators up first), on odd ones from the profile API, polled until the stream worker has
# written the profile to the online store. Prints percentiles (ms) of each time.
import base64, json, sys, time, urllib.request
addr, key, admin, tag, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
basic = "Basic " + base64.b64encode((key + ":").encode()).decode()
acks, served, online = [], [], []
def get(path):
    req = urllib.request.Request(addr + path, headers={"Authorization": "Bearer " + admin})
    try:
        return json.loads(urllib.request.urlopen(req).read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise
for i in range(n):
    user, total = f"P{tag}{i}", 100 + i
    body = json.dumps({"userId": user, "event": "Order Completed", "messageId": f"probe-{tag}-{i}",
                       "timestamp": "2025-02-01T10:00:00Z",
                       "properties": {"order_id": f"probe-{tag}-{i}", "total": total,
                                      "status": "completed"}}).encode()
    req = urllib.request.Request(addr + "/v1/track", body, {"Authorization": basic,
                                                            "Content-Type": "application/json"})
    t0 = time.perf_counter()
    urllib.request.urlopen(req).read()
    t1 = time.perf_counter()
    if i % 2 == 0:
        got = get(f"/api/v1/live/customer/customer_id/{user}")["features"]["lifetime_value"]
        served.append((time.perf_counter() - t1) * 1000)
    else:
        while True:
            profile = get(f"/api/v1/profiles/customer/customer_id/{user}")
            if profile is not None:
                break
            if time.perf_counter() - t1 > 30:
                sys.exit(f"probe {tag}: {user} not in the online store after 30 s")
            time.sleep(0.0005)
        got = next(v["value"] for v in profile["values"] if v["name"] == "lifetime_value")
        online.append((time.perf_counter() - t1) * 1000)
    if abs(float(got) - total) > 1e-6:
        sys.exit(f"probe {tag}: {user} has lifetime_value {got}, sent {total}")
    acks.append((t1 - t0) * 1000)
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]
for name, xs in [("POST -> 200", acks), ("200 -> live value served", served),
                 ("200 -> online store (profile API)", online)]:
    print(f"   {tag}: {name}: p50 {pct(xs, 50):.2f} ms, p95 {pct(xs, 95):.2f} ms, "
          f"p99 {pct(xs, 99):.2f} ms ({len(xs)} orders, every value right)")
PY
echo "== wrk: $CONNECTIONS connections, ${SECONDS_}s, $BATCH \"$EVENT\" events per request (POST /v1/batch)"
( sleep 2; "${LOAD_CPU[@]}" python3 "$WORK/probe.py" "$ADDR" "$KEY" "$ADMIN" under-load 200 ) >"$WORK/probe.out" 2>&1 &
PROBE=$!
OUT=$("${LOAD_CPU[@]}" wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_}s" --latency -s "$WORK/batch.lua" "$ADDR/v1/batch")
echo "$OUT"
wait $PROBE || { cat "$WORK/probe.out"; exit 1; }
"${LOAD_CPU[@]}" python3 "$WORK/probe.py" "$ADDR" "$KEY" "$ADMIN" idle 200 >>"$WORK/probe.out"
echo "== latency probe (one order of a new customer, then its lifetime_value, live or from the online store):"
cat "$WORK/probe.out"
echo "== the operators afterwards (GET /api/v1/live):"
curl -s -H "Authorization: Bearer $ADMIN" "$ADDR/api/v1/live" | python3 -c '
import json, sys
s = json.load(sys.stdin)
for k in ["events", "rows", "profiles", "online_store_profiles_written", "seconds_applying_events",
          "seconds_writing_online_store", "state_bytes"]:
    print(f"   {k}: {s.get(k)}")'
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
