#!/usr/bin/env bash
# The clients' benchmark: a release `mend serve` on a fresh PostgreSQL database, N no-op jobs
# enqueued through each client (1000 per call), then drained by one worker process of that
# client. One JSON line per client on stdout.
#
#   MEND_BIN=target/release/mend DSN=postgres://... JOBS=20000 bash clients/bench/run.sh
#
# Meant to run as the peers' harness's MEND_DRAIN_CMD, so both clients join the same session
# as pgqueuer and graphile-worker on the same throwaway PostgreSQL:
#   MEND_DRAIN_CMD='bash clients/bench/run.sh' bash ../shared/bench/peers/run.sh 20000
# CLIENTS="python node" picks the clients; CONCURRENCY (default 200) the worker's slots.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin=${MEND_BIN:-$root/target/release/mend}
[[ "$bin" = /* ]] || bin="$root/$bin"
jobs=${JOBS:-20000}
dsn=${DSN:?set DSN to an empty PostgreSQL database}
conc=${CONCURRENCY:-200}
for client in ${CLIENTS:-python node}; do
  log=$(mktemp)
  "$bin" serve --database "$dsn" --bind 127.0.0.1:0 >"$log" 2>"$log.err" &
  pid=$!
  url=""
  for _ in $(seq 1 200); do
    url=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$log" | head -1)
    [[ -n "$url" ]] && break
    sleep 0.1
  done
  [[ -n "$url" ]] || { echo "mend serve did not start: $(cat "$log.err")" >&2; kill $pid; exit 1; }
  case $client in
    python) PYTHONPATH="$root/clients/python/src" "$root/clients/python/.venv/bin/python" "$root/clients/bench/drain.py" "$url" "$jobs" "$conc" ;;
    node) node "$root/clients/bench/drain.mjs" "$url" "$jobs" "$conc" ;;
  esac
  kill -TERM $pid; wait $pid || true
  # The next client starts on an empty queue table: drop what this one left.
  psql "$dsn" -qc "truncate mend_jobs" >/dev/null 2>&1 || true
  rm -f "$log" "$log.err"
done
