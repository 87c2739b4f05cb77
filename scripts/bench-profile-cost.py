#!/usr/bin/env python3
"""What a CPU profile costs a node under load (issue 17's target: under 5%).

Against a running `mend serve` (release build, loopback, no token), each round pauses the
`default` queue, enqueues N `noop` jobs through `/v1/jobs/batch` in calls of 1,000, resumes the
queue and times the drain until no job is available or running. Rounds alternate plain and
"with a profile" (a `GET /debug/pprof/profile?seconds=S` started just before the resume, long
enough to cover the whole drain), and the order flips every pair so neither side always runs
on a warmer database. Prints one line per pair and the medians and their ratio. On a busy machine throughput moves
with whatever else runs, so with `MEND_PID` set to the server's pid it also reports the
server's CPU time per 1,000 jobs (user + system, from /proc): the profiler's own cost is the
extra CPU it burns, which other load barely moves.

    mend serve --database sqlite:///tmp/pc.db --queues default=256 &
    python3 scripts/bench-profile-cost.py http://127.0.0.1:7979 150000 4 [SECONDS [HZ]]

Standard library only.
"""

import json
import os
import statistics
import sys
import threading
import time
import urllib.request


def call(base, method, path, body=None, timeout=120):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    req.add_header("prefer", "return=minimal")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def unfinished(base):
    """Whether any `default` job is still available or running. Asks for one job of each
    state (index-backed, LIMIT 1) rather than `GET /v1/queues`, whose counts of finished jobs
    read every finished row: polled every 20 ms, that scan was most of the server's CPU once
    a few million jobs had finished."""
    for state in ("available", "running"):
        _, body = call(base, "GET", f"/v1/jobs?queue=default&state={state}&limit=1")
        if json.loads(body).get("jobs"):
            return 1
    return 0


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far, or None without a pid."""
    if not pid:
        return None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(base, n, profile_seconds, hz=None, pid=None):
    call(base, "POST", "/v1/queues/default/pause")
    jobs = [{"kind": "noop", "args": {}} for _ in range(1000)]
    left = n
    while left > 0:
        k = min(1000, left)
        call(base, "POST", "/v1/jobs/batch", {"jobs": jobs[:k]})
        left -= k
    prof = None
    if profile_seconds:
        got = {}

        def take():
            got["status"], got["body"] = call(
                base, "GET", f"/debug/pprof/profile?seconds={profile_seconds}" + (f"&hz={hz}" if hz else ""), timeout=300
            )

        prof = threading.Thread(target=take)
        prof.start()
        time.sleep(0.2)  # the sampler is on before the drain starts
    start = time.monotonic()
    cpu0 = cpu_seconds(pid)
    call(base, "POST", "/v1/queues/default/resume")
    while unfinished(base) > 0:
        time.sleep(0.02)
    took = time.monotonic() - start
    cpu = None if cpu0 is None else (cpu_seconds(pid) - cpu0) * 1000 / (n / 1000)
    if prof is not None:
        prof.join()
        if got.get("status") != 200 or len(got.get("body", b"")) < 100:
            sys.exit(f"the profile failed: {got.get('status')}")
    return n / took, cpu


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:7979"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 150_000
    pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    hz = int(sys.argv[5]) if len(sys.argv) > 5 else None
    pid = os.environ.get("MEND_PID")
    plain, profiled, cpu_plain, cpu_profiled = [], [], [], []
    for i in range(pairs):
        order = [0, seconds] if i % 2 == 0 else [seconds, 0]
        got = {}
        cpu = {}
        for s in order:
            got[s], cpu[s] = drain(base, n, s, hz, pid)
        plain.append(got[0])
        profiled.append(got[seconds])
        line = (
            f"pair {i + 1}: plain {got[0]:,.0f} jobs/s, with a profile {got[seconds]:,.0f} jobs/s,"
            f" ratio {got[seconds] / got[0]:.2f}"
        )
        if pid:
            cpu_plain.append(cpu[0])
            cpu_profiled.append(cpu[seconds])
            line += (
                f"; CPU ms per 1,000 jobs: plain {cpu[0]:.1f}, with a profile {cpu[seconds]:.1f},"
                f" ratio {cpu[seconds] / cpu[0]:.3f}"
            )
        print(line, flush=True)
    a, b = statistics.median(plain), statistics.median(profiled)
    pair = statistics.median(q / p for p, q in zip(plain, profiled))
    line = f"median: plain {a:,.0f}, with a profile {b:,.0f}, ratio {b / a:.2f} (median of the pairs' ratios {pair:.2f})"
    if pid:
        c, d = statistics.median(cpu_plain), statistics.median(cpu_profiled)
        cpair = statistics.median(q / p for p, q in zip(cpu_plain, cpu_profiled))
        line += f"; CPU ms per 1,000 jobs: plain {c:.1f}, with a profile {d:.1f}, ratio {d / c:.3f} (pairs' median {cpair:.3f})"
    print(line)


if __name__ == "__main__":
    main()
