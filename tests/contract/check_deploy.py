"""Checks that deploy/ agrees with mend itself: the Dockerfile parses and uses only flags,
environment variables and ports `mend serve` has; the Kubernetes manifests pass flags
`mend serve --help` lists, probe routes the server has, and a termination grace period that
covers the whole shutdown (preStop + shutdown grace + drain + the cancel-and-release tail).

Usage: check_deploy.py MEND_BIN REPO_ROOT. Run by scripts/validate-deploy.sh after the schema
validation (kubernetes-validate)."""

import re
import subprocess
import sys
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

# After the drain deadline mend cancels what still runs and waits for cleanups (their
# timeout, mend::cleanup::DEFAULT_CLEANUP_TIMEOUT = 10 s) plus FINAL_GRACE (5 s) before it
# releases the jobs and exits (mend::runtime::Runtime::shutdown).
AFTER_DRAIN_S = 15

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}", file=sys.stderr)


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    if not m:
        raise ValueError(f"not a duration mend's manifests use: {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": n / 1000, "s": n, "m": n * 60}[unit]


def main(mend_bin, root):
    root = Path(root)
    help_text = subprocess.run([mend_bin, "serve", "--help"], check=True, capture_output=True, text=True).stdout
    flags = set(re.findall(r"--([a-z][a-z-]+)", help_text))
    envs = set(re.findall(r"\[env: (MEND_[A-Z_]+)", help_text))
    routes = (root / "crates/mend-server/src/routes/mod.rs").read_text()
    served = set(re.findall(r'\.route\("([^"]+)"', routes))

    # The Dockerfile.
    df = DockerfileParser(path=str(root / "deploy/Dockerfile"))
    instructions = df.structure
    if not instructions:
        fail("deploy/Dockerfile has no instructions")
    stages = [i for i in instructions if i["instruction"] == "FROM"]
    if len(stages) < 2:
        fail("deploy/Dockerfile is not multi-stage")
    env = df.envs
    for name in env:
        if name.startswith("MEND_") and name not in envs:
            fail(f"Dockerfile sets {name}, which `mend serve` does not read")
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        fail("the runtime stage does not run as a non-root user")
    exposed = {i["value"].split("/")[0] for i in instructions if i["instruction"] == "EXPOSE"}
    bind_port = env.get("MEND_BIND", "").rsplit(":", 1)[-1]
    if bind_port not in exposed:
        fail(f"MEND_BIND port {bind_port!r} is not EXPOSEd ({exposed})")
    health = [i["value"] for i in instructions if i["instruction"] == "HEALTHCHECK"]
    if not health or f":{bind_port}/healthz" not in health[0]:
        fail("HEALTHCHECK does not ask /healthz on the bound port")
    if not any(i["instruction"] == "VOLUME" and "/var/lib/mend" in i["value"] for i in instructions):
        fail("the SQLite directory is not a VOLUME")
    for i in instructions:
        if i["instruction"] in ("CMD", "ENTRYPOINT"):
            for flag in re.findall(r"--([a-z][a-z-]+)", i["value"]):
                if flag not in flags:
                    fail(f"Dockerfile {i['instruction']} uses --{flag}, not a flag of `mend serve`")

    # The manifests.
    checked = 0
    for path in sorted((root / "deploy/kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") not in ("Deployment", "StatefulSet"):
                continue
            checked += 1
            where = f"{path.name} {doc['kind']}"
            before = len(failures)
            pod = doc["spec"]["template"]["spec"]
            (c,) = [c for c in pod["containers"] if c["name"] == "mend"]
            args = c.get("args", [])
            given = {}
            for a in args[1:]:
                m = re.fullmatch(r"--([a-z-]+)(?:=(.*))?", a)
                if not m or m.group(1) not in flags:
                    fail(f"{where}: {a} is not a flag of `mend serve`")
                    continue
                given[m.group(1)] = m.group(2)
            for e in c.get("env", []):
                if e["name"].startswith("MEND_") and e["name"] not in envs:
                    fail(f"{where}: env {e['name']} is not read by `mend serve`")
            for key in ("drain", "shutdown-grace", "bind"):
                if key not in given:
                    fail(f"{where}: --{key} is not set explicitly")
            port = int(given.get("bind", ":0").rsplit(":", 1)[-1])
            if [p["containerPort"] for p in c["ports"]] != [port]:
                fail(f"{where}: containerPort differs from --bind's port {port}")
            for probe, path_ in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
                got = c.get(probe, {}).get("httpGet", {}).get("path")
                if got != path_ or got not in served:
                    fail(f"{where}: {probe} asks {got!r}, want {path_!r} (a route the server has)")
            pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            pre_s = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
            if not pre_s:
                fail(f"{where}: no preStop sleep")
            need = pre_s + seconds(given.get("shutdown-grace", "1s")) + seconds(given.get("drain", "30s")) + AFTER_DRAIN_S
            have = pod.get("terminationGracePeriodSeconds", 30)
            if have < need:
                fail(f"{where}: terminationGracePeriodSeconds {have} < {need} (preStop + grace + drain + {AFTER_DRAIN_S})")
            if not pod.get("securityContext", {}).get("runAsNonRoot"):
                fail(f"{where}: not runAsNonRoot")
            if len(failures) == before:
                print(f"ok   {where}: flags exist, probes /healthz and /readyz, grace {have} s >= {need} s")
    if checked < 2:
        fail(f"expected the StatefulSet and the Deployment, found {checked} workloads")
    if failures:
        print(f"{len(failures)} deploy checks failed", file=sys.stderr)
        return 1
    print("deploy/ agrees with `mend serve`")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
