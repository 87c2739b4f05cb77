"""Client benchmark, Python: enqueue N no-op jobs through the client (1000 per call), then
drain them with one Python worker process. Prints one JSON line like the peers' harness.

    python drain.py URL N [CONCURRENCY]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from mend_client import AsyncClient, JobContext, NewJob, Worker


async def main() -> None:
    url, n = sys.argv[1], int(sys.argv[2])
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    queue = "bench-py"
    async with AsyncClient(url) as mend:
        calls: list[float] = []
        t0 = time.perf_counter()
        for i in range(0, n, 1000):
            batch = [NewJob("bench.noop", {"i": j}, queue=queue) for j in range(i, min(n, i + 1000))]
            t = time.perf_counter()
            await mend.enqueue_many_ids(batch)
            calls.append(len(batch) / (time.perf_counter() - t))
        enqueue_s = time.perf_counter() - t0
    worker = Worker(url, queue=queue, concurrency=concurrency, poll_wait_ms=200)

    @worker.job("bench.noop")
    async def noop(ctx: JobContext, args: Any) -> None:
        return None

    t1 = time.perf_counter()
    task = asyncio.create_task(worker.run_async())
    while worker.stats["completed"] < n:
        if task.done():
            task.result()
            raise SystemExit("worker stopped early")
        await asyncio.sleep(0.01)
    drain_s = time.perf_counter() - t1
    worker.stop()
    await task
    calls.sort()
    print(json.dumps({
        "peer": "mend-python-client", "jobs": n, "config": f"concurrency {concurrency}",
        "enqueue_per_sec": round(n / enqueue_s), "jobs_per_sec": round(n / drain_s),
        "end_to_end_per_sec": round(n / (enqueue_s + drain_s)),
        "enqueue_1000_per_call_median": round(calls[len(calls) // 2]),
        "enqueue_s": round(enqueue_s, 3), "drain_s": round(drain_s, 3),
        "processed": worker.stats["completed"], "ok": worker.stats["completed"] == n,
    }))


asyncio.run(main())
