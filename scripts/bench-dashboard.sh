#!/usr/bin/env bash
# Dashboard pages on a big database: fill it with `mend bench` (1,000,000 completed jobs),
# add jobs in the other states, serve it, and time each page (median of 9, server side as
# curl's time to first byte on loopback). Usage: scripts/bench-dashboard.sh DB_URL [JOBS]
# (SKIP_BENCH=1 reuses a filled database). Needs a release build: cargo build --release -p mend-cli.
set -euo pipefail
BIN="${MEND_BIN:-$(dirname "$0")/../target/release/mend}"
DB="$1"; JOBS="${2:-1000000}"; PORT=7993; T=bench-token-0123456789
[ -n "${SKIP_BENCH:-}" ] || $BIN bench --database "$DB" --jobs "$JOBS" --latency-samples 10 --json > /tmp/bigdb-bench.json
$BIN serve --database "$DB" --bind 127.0.0.1:$PORT --token $T --queues default=4 > /tmp/bigdb-serve.log 2>&1 < /dev/zero &
SERVE=$!
trap 'kill $SERVE 2>/dev/null' EXIT
sleep 2
api() { curl -sf -H "authorization: Bearer $T" -H 'content-type: application/json' "$@"; }
api -XPOST localhost:$PORT/v1/queues/backlog/pause >/dev/null
body=$(python3 -c 'import json; print(json.dumps({"jobs":[{"kind":"report","args":{"n":i},"queue":"backlog"} for i in range(1000)]}))')
for i in $(seq 1 20); do api -XPOST localhost:$PORT/v1/jobs/batch -d "$body" >/dev/null; done
last=$(api -XPOST localhost:$PORT/v1/jobs -d '{"kind":"report","args":{"n":-1},"queue":"backlog"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
api -XPOST localhost:$PORT/v1/jobs -d '{"kind":"noop","args":{},"delay_ms":3600000}' >/dev/null
c=$(api -XPOST localhost:$PORT/v1/jobs -d '{"kind":"report","args":{},"queue":"backlog"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
api -XPOST localhost:$PORT/v1/jobs/$c/cancel >/dev/null
curl -s -c /tmp/bigdb-cookie -o /dev/null -d "token=$T&next=/" localhost:$PORT/login
sleep 3
for page in "/" "/?window=24h" "/jobs" "/jobs?state=completed" "/jobs?state=cancelled" "/jobs?state=available&queue=backlog" "/jobs?kind=noop&range=1h" "/jobs?args=%7B%22n%22%3A5%7D" "/jobs/$last" "/queues" "/nodes"; do
  ts=()
  for i in $(seq 1 9); do
    ts+=($(curl -s -b /tmp/bigdb-cookie -o /tmp/bigdb-page.html -w '%{http_code} %{time_starttransfer}' "localhost:$PORT$page" | awk '{ if ($1 != 200) { print "HTTP" $1 } else { printf "%.1f", $2*1000 } }'))
  done
  med=$(printf '%s\n' "${ts[@]}" | sort -n | sed -n 5p)
  printf '%-40s median %s ms  (all: %s)\n' "$page" "$med" "${ts[*]}"
done
