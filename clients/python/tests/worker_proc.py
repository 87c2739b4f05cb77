"""A worker process for the signal tests: `python worker_proc.py URL QUEUE DIR`.

Handlers write what they did into files under DIR, so the test can see it from outside after
the process is gone."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from mend_client import JobContext, Worker


def main() -> None:
    url, queue, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    worker = Worker(url, queue=queue, concurrency=4, lease_ms=1000, heartbeat_every=0.25,
                    drain=1.5, poll_wait_ms=200)

    @worker.cleanup("remove")
    def remove(args: Any) -> None:
        Path(args["path"]).unlink(missing_ok=True)
        with open(out / "cleanups.log", "a") as f:
            f.write(f"remove {args['path']}\n")

    @worker.job("py.kill")
    async def kill_me(ctx: JobContext, args: Any) -> Any:
        if ctx.attempt > 1:
            return {"attempt": ctx.attempt, "file_left": Path(args["path"]).exists()}
        # Written down before the work it undoes.
        await ctx.defer("remove", {"path": args["path"]})
        Path(args["path"]).write_text("temp")
        (out / f"started-{ctx.id}").write_text("")
        await asyncio.sleep(60)
        return None

    @worker.job("py.term")
    async def term(ctx: JobContext, args: Any) -> Any:
        await ctx.defer("remove", {"path": args["path"]})
        Path(args["path"]).write_text("temp")
        (out / f"started-{ctx.id}").write_text("")
        await asyncio.sleep(args["sleep"])
        return {"slept": args["sleep"]}

    worker.run()
    (out / "exited").write_text(str(worker.stats))


if __name__ == "__main__":
    main()
