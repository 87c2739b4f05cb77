#!/usr/bin/env python3
"""What a CPU profile costs a node under load (issue 17's target: under 5%).

Against a running `mend serve` (release build, loopback, no token), each round pauses the
`default` queue, enqueues N `noop` jobs through `/v1/jobs/batch` in calls of 1,000, resumes the
queue and times the drain until no job is available or running. Rounds alternate plain and
"with a profile" (a `GET /debug/pprof/profile?seconds=S` started just before the resume, long
enough to cover the whole drain), and the order flips every pair so neither side always runs
on a warmer database. Prints one line per pair and the medians and their ratio.

    mend serve --database sqlite:///tmp/pc.db --queues default=256 &
    python3 scripts/bench-profile-cost.py http://127.0.0.1:7979 150000 4

Standard library only.
"""

import json
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
    _, body = call(base, "GET", "/v1/queues")
    queues = json.loads(body)
    queues = queues.get("queues", queues) if isinstance(queues, dict) else queues
    for q in queues:
        if q["name"] == "default":
            c = q["counts"]
            return c.get("available", 0) + c.get("running", 0)
    return 0


def drain(base, n, profile_seconds):
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
                base, "GET", f"/debug/pprof/profile?seconds={profile_seconds}", timeout=300
            )

        prof = threading.Thread(target=take)
        prof.start()
        time.sleep(0.2)  # the sampler is on before the drain starts
    start = time.monotonic()
    call(base, "POST", "/v1/queues/default/resume")
    while unfinished(base) > 0:
        time.sleep(0.02)
    took = time.monotonic() - start
    if prof is not None:
        prof.join()
        if got.get("status") != 200 or len(got.get("body", b"")) < 100:
            sys.exit(f"the profile failed: {got.get('status')}")
    return n / took


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:7979"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 150_000
    pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    plain, profiled = [], []
    for i in range(pairs):
        order = [0, seconds] if i % 2 == 0 else [seconds, 0]
        got = {}
        for s in order:
            got[s] = drain(base, n, s)
        plain.append(got[0])
        profiled.append(got[seconds])
        print(
            f"pair {i + 1}: plain {got[0]:,.0f} jobs/s, with a profile {got[seconds]:,.0f} jobs/s,"
            f" ratio {got[seconds] / got[0]:.2f}",
            flush=True,
        )
    a, b = statistics.median(plain), statistics.median(profiled)
    print(f"median: plain {a:,.0f}, with a profile {b:,.0f}, ratio {b / a:.2f}")


if __name__ == "__main__":
    main()
