#!/usr/bin/env bash
# Every test of mend: the Rust suite, the dashboard in headless Chromium, and the Python and
# TypeScript clients against a real `mend serve`. What the browser and client tests need is
# installed first if it is missing (Debian's chromium, the pinned npm and pip packages), so
# this is the one command a fresh machine needs. Extra arguments go to `cargo nextest run`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is missing; installing it from crates.io" >&2
  cargo install cargo-nextest --locked
fi

# The dashboard's browser tests drive Debian's Chromium; no test tool downloads a browser.
if [ ! -x "${MEND_CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "installing Debian's chromium for the dashboard's browser tests" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d tests/browser/node_modules/playwright-core ] \
  || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi

# The Rust suite (it builds target/debug/mend, which the other suites run).
cargo nextest run --workspace "$@"

echo "== dashboard: headless Chromium against a real mend serve" >&2
npm test --prefix tests/browser

if [ -x scripts/test-clients.sh ]; then
  echo "== Python and TypeScript clients" >&2
  MEND_BIN="${MEND_BIN:-$PWD/target/debug/mend}" scripts/test-clients.sh
fi

# The binary the Rust suite built (the same one the clients' tests ran).
mend_bin="${MEND_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/mend}"

if [ -x scripts/test-contract.sh ]; then
  echo "== API contract: schemathesis against a real mend serve" >&2
  MEND_BIN="$mend_bin" scripts/test-contract.sh
fi

if [ -x scripts/validate-deploy.sh ]; then
  echo "== deploy/: Kubernetes schemas, Dockerfile, flags and timings" >&2
  MEND_BIN="$mend_bin" scripts/validate-deploy.sh
fi
