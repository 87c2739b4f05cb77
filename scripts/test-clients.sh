#!/usr/bin/env bash
# Tests the Python and TypeScript clients against a real `mend serve`.
#
# Needs only Python 3.10+ with pip and venv, and Node 20 with npm: the test tools are
# installed from the pinned clients/python/requirements-dev.txt into clients/python/.venv and
# from clients/typescript/package-lock.json (`npm ci`). The `mend` binary is $MEND_BIN, or
# built with `cargo build -p mend-cli` into target/debug/mend.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ -z "${MEND_BIN:-}" ]]; then
  echo "== building mend (cargo build -p mend-cli)"
  cargo build -q -p mend-cli
  MEND_BIN="$root/target/debug/mend"
fi
export MEND_BIN
[[ -x "$MEND_BIN" ]] || { echo "no mend binary at $MEND_BIN" >&2; exit 1; }

echo "== Python client"
py=clients/python
python3 -m venv "$py/.venv"
"$py/.venv/bin/pip" install -q -r "$py/requirements-dev.txt"
(cd "$py" && .venv/bin/mypy --strict src tests)
(cd "$py" && .venv/bin/python -m pytest -q -p no:cacheprovider)

echo "== TypeScript client"
ts=clients/typescript
(cd "$ts" && npm ci --no-audit --no-fund --loglevel=error)
(cd "$ts" && npm run --silent typecheck)
(cd "$ts" && npm test)
