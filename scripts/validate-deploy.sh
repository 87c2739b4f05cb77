#!/usr/bin/env bash
# Validates deploy/: every Kubernetes manifest against the API's schemas (kubernetes-validate,
# strict: unknown fields fail), then tests/contract/check_deploy.py: the Dockerfile parses
# (dockerfile-parse) and uses only what `mend serve` has, and the manifests' flags, probes and
# termination grace period agree with mend. No image is built: base images cannot be pulled
# here. Tools come from tests/contract/requirements.txt (exact versions), installed into
# tests/contract/.venv only when missing. The `mend` binary is $MEND_BIN, or built.
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
if ! "$venv/bin/python" -c "import kubernetes_validate, dockerfile_parse" 2>/dev/null; then
  echo "== installing the validators into $venv (pinned in $dir/requirements.txt)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$dir/requirements.txt"
fi

# The oldest Kubernetes still commonly run; the manifests use nothing newer.
"$venv/bin/kubernetes-validate" --strict --quiet --kubernetes-version "${MEND_K8S_VERSION:-1.30.0}" deploy/kubernetes/*.yaml
echo "kubernetes-validate: deploy/kubernetes/*.yaml are valid for Kubernetes ${MEND_K8S_VERSION:-1.30.0}"
"$venv/bin/python" "$dir/check_deploy.py" "$MEND_BIN" "$root"
