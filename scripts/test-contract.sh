#!/usr/bin/env bash
# The API contract test: schemathesis (every check, every phase including the stateful one)
# against a real `mend serve` on SQLite in a temporary directory, with a token. It passes
# only when the server answers exactly what /openapi.json says: the statuses, the bodies,
# and the constraints on what it accepts and refuses.
#
# Needs Python 3.10+ with venv; schemathesis and its dependencies are installed, only when
# missing, from the exact versions in tests/contract/requirements.txt into
# tests/contract/.venv. The `mend` binary is $MEND_BIN, or built with
# `cargo build -p mend-cli`. Bounded: --max-examples per operation and a time limit.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dir=tests/contract
venv="$dir/.venv"

if [[ -z "${MEND_BIN:-}" ]]; then
  echo "== building mend (cargo build -p mend-cli)"
  cargo build -q -p mend-cli
  MEND_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/mend"
fi
[[ -x "$MEND_BIN" ]] || { echo "no mend binary at $MEND_BIN" >&2; exit 1; }

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$(grep -i '^schemathesis==' "$dir/requirements.txt" | cut -d= -f3)"; then
  echo "== installing schemathesis into $venv (pinned in $dir/requirements.txt)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$dir/requirements.txt"
fi

tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

token="contract-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# Port 0 picks a free port; the address is read back from the server's log.
RUST_LOG="${RUST_LOG:-warn}" MEND_API_TOKEN="$token" "$MEND_BIN" serve --database "sqlite://$tmp/mend.db" \
  --bind 127.0.0.1:0 --queues default=4 >"$tmp/server.log" 2>&1 &
pid=$!
addr=""
for _ in $(seq 1 100); do
  addr="$(grep -oE 'http://127\.0\.0\.1:[0-9]+' "$tmp/server.log" | head -n1 || true)"
  [[ -n "$addr" ]] && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/server.log" >&2; echo "mend serve exited" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$addr" ]] || { cat "$tmp/server.log" >&2; echo "mend serve did not say where it listens" >&2; exit 1; }
echo "== schemathesis against $addr/openapi.json"

# /debug/pprof/profile is left out: a valid request profiles the CPU for up to a minute, by
# design (its contract is covered by the Rust tests of routes/debug.rs).
status=0
PYTHONPATH="$dir" timeout "${MEND_CONTRACT_TIMEOUT:-300}" \
  "$venv/bin/schemathesis" --config-file "$dir/schemathesis.toml" run "$addr/openapi.json" \
  --checks all \
  --phases examples,coverage,fuzzing,stateful \
  --header "Authorization: Bearer $token" \
  --exclude-path /debug/pprof/profile \
  --max-examples "${MEND_CONTRACT_EXAMPLES:-30}" \
  --seed "${MEND_CONTRACT_SEED:-1}" \
  --request-timeout 30 \
  --max-response-time 25 \
  --no-color \
  "$@" || status=$?
if [[ $status -ne 0 ]]; then
  echo "contract test FAILED (exit $status); the server's log:" >&2
  tail -n 40 "$tmp/server.log" >&2
fi
exit $status
