"""The worker against a real server: every way an attempt ends, checkpoints, durable
cleanups, cancellation through the heartbeat, SIGTERM and SIGKILL of a worker process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable

from mend_client import (
    AsyncClient,
    Client,
    Fatal,
    Job,
    JobContext,
    JobError,
    NewJob,
    Snooze,
    Worker,
)

from .conftest import Server, wait_for

HERE = Path(__file__).resolve().parent


async def wait_state(mend: AsyncClient, job_id: str, *states: str, timeout: float = 20) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = await mend.get(job_id)
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} is {job.state}, not {states}: {job.raw}")
        await asyncio.sleep(0.05)


def with_worker(server: Server, worker: Worker,
                body: Callable[[AsyncClient], Awaitable[None]]) -> None:
    async def main() -> None:
        task = asyncio.create_task(worker.run_async())
        try:
            async with AsyncClient(server.url) as mend:
                await body(mend)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 30)

    asyncio.run(main())


def test_every_ending_is_recorded(server: Server) -> None:
    q = f"py-endings-{uuid.uuid4().hex[:6]}"
    worker = Worker(server.url, queue=q, concurrency=8, poll_wait_ms=200)
    marks: list[Any] = []

    @worker.cleanup("mark")
    def mark(args: Any) -> None:
        marks.append(args)

    @worker.job("ok")
    async def ok(ctx: JobContext, args: Any) -> Any:
        return {"doubled": args["n"] * 2}

    @worker.job("boom")
    async def boom(ctx: JobContext, args: Any) -> Any:
        raise ValueError("bad pixel")

    @worker.job("err")
    async def err(ctx: JobContext, args: Any) -> Any:
        raise JobError("upstream 503", retry_after=60)

    @worker.job("fatal")
    def fatal(ctx: JobContext, args: Any) -> Any:
        ctx.defer_sync("mark", {"who": "fatal"})
        raise Fatal("bad input")

    @worker.job("snooze")
    async def snooze(ctx: JobContext, args: Any) -> Any:
        raise Snooze(60)

    @worker.job("resume")
    async def resume(ctx: JobContext, args: Any) -> Any:
        if ctx.checkpoint is None:
            await ctx.save_checkpoint({"step": 1})
            raise JobError("again", retry_after=0)
        return {"from": ctx.checkpoint, "attempt": ctx.attempt}

    @worker.job("sync")
    def sync(ctx: JobContext, args: Any) -> Any:
        ctx.save_checkpoint_sync({"s": 1})
        return {"args": args, "checkpoint": ctx.checkpoint}

    @worker.job("slow")
    async def slow(ctx: JobContext, args: Any) -> Any:
        await ctx.defer("mark", {"who": "slow"})
        await asyncio.sleep(30)

    async def body(mend: AsyncClient) -> None:
        kinds = ["ok", "boom", "err", "fatal", "snooze", "resume", "sync"]
        jobs = await mend.enqueue_many(
            [NewJob(k, {"n": 21}, queue=q, max_attempts=3) for k in kinds]
            + [NewJob("slow", queue=q, timeout_ms=300, max_attempts=1)])
        ids = {k: j.id for k, j in zip(kinds + ["slow"], jobs)}

        j = await wait_state(mend, ids["ok"], "completed")
        assert j.result == {"doubled": 42}

        j = await wait_state(mend, ids["boom"], "retryable")
        e = j.errors[0]
        assert e["kind"] == "panic", e
        assert e["message"].startswith("ValueError: bad pixel"), e
        assert "Traceback" in e["message"] and "in boom" in e["message"], e

        j = await wait_state(mend, ids["err"], "retryable")
        assert j.errors[0]["kind"] == "error" and j.errors[0]["message"] == "upstream 503"
        delay = (datetime.fromisoformat(j.run_at) - datetime.fromisoformat(j.errors[0]["at"]))
        assert 59 <= delay.total_seconds() <= 61, delay

        j = await wait_state(mend, ids["fatal"], "discarded")
        assert j.errors[0]["message"] == "bad input"
        assert {"who": "fatal"} in marks, "a failed attempt's durable cleanup ran"
        assert j.pending_cleanups == []

        j = await wait_state(mend, ids["snooze"], "scheduled")
        assert j.attempt == 0 and j.errors == [], "a snooze does not use an attempt"

        j = await wait_state(mend, ids["resume"], "completed")
        assert j.result == {"from": {"step": 1}, "attempt": 2}

        j = await wait_state(mend, ids["sync"], "completed")
        assert j.result == {"args": {"n": 21}, "checkpoint": {"s": 1}}

        j = await wait_state(mend, ids["slow"], "discarded")
        assert j.errors[0]["kind"] == "timeout", j.errors
        assert {"who": "slow"} in marks
        assert any(ev.get("event") == "cleanup" for ev in j.raw["timeline"]), j.raw["timeline"]

    with_worker(server, worker, body)
    assert worker.stats["fenced"] == 0


def test_a_cancel_reaches_a_running_job_through_the_heartbeat(server: Server) -> None:
    q = f"py-cancel-{uuid.uuid4().hex[:6]}"
    worker = Worker(server.url, queue=q, lease_ms=3000, heartbeat_every=0.1, poll_wait_ms=200)
    marks: list[Any] = []
    started = asyncio.Event()

    @worker.cleanup("mark")
    async def mark(args: Any) -> None:
        marks.append(args)

    @worker.job("hang")
    async def hang(ctx: JobContext, args: Any) -> Any:
        await ctx.defer("mark", "hang")
        started.set()
        await asyncio.sleep(60)

    async def body(mend: AsyncClient) -> None:
        job = await mend.enqueue("hang", queue=q)
        await asyncio.wait_for(started.wait(), 20)
        t = time.monotonic()
        await mend.cancel(job.id)
        j = await wait_state(mend, job.id, "cancelled")
        assert time.monotonic() - t < 5
        assert j.errors[0]["kind"] == "cancelled"
        assert marks == ["hang"]

    with_worker(server, worker, body)


def spawn_worker(server: Server, queue: str, out: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, str(HERE / "worker_proc.py"), server.url, queue,
                             str(out)], env=env, stderr=open(out / "worker.log", "ab"))


def test_sigterm_finishes_in_time_and_releases_the_rest(server: Server, tmp_path: Path) -> None:
    q = f"py-term-{uuid.uuid4().hex[:6]}"
    with Client(server.url) as mend:
        quick = mend.enqueue("py.term", {"path": str(tmp_path / "q"), "sleep": 0.7}, queue=q)
        long = mend.enqueue("py.term", {"path": str(tmp_path / "l"), "sleep": 60}, queue=q)
        proc = spawn_worker(server, q, tmp_path)
        try:
            wait_for(lambda: (tmp_path / f"started-{quick.id}").exists()
                     and (tmp_path / f"started-{long.id}").exists())
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
        finally:
            proc.kill()
        assert (tmp_path / "exited").exists()
        q_job = mend.get(quick.id)
        assert q_job.state == "completed" and q_job.result == {"slept": 0.7}
        assert (tmp_path / "q").exists(), "a completed attempt's cleanup does not run"
        l_job = mend.get(long.id)
        assert l_job.state == "available", l_job.raw
        assert l_job.attempt == 0 and l_job.errors == [], "released without using an attempt"
        assert not (tmp_path / "l").exists(), "the released attempt's durable cleanup ran"


def test_sigkill_mid_job_the_next_worker_runs_the_durable_cleanup(
        server: Server, tmp_path: Path) -> None:
    q = f"py-kill-{uuid.uuid4().hex[:6]}"
    temp = tmp_path / "temp-file"
    with Client(server.url) as mend:
        job = mend.enqueue("py.kill", {"path": str(temp)}, queue=q)
        first = spawn_worker(server, q, tmp_path)
        try:
            wait_for(lambda: (tmp_path / f"started-{job.id}").exists())
            assert temp.exists()
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        finally:
            first.kill()
        assert temp.exists(), "kill -9 ran nothing"
        second = spawn_worker(server, q, tmp_path)
        try:
            wait_for(lambda: mend.get(job.id).state == "completed", timeout=40, every=0.2)
        finally:
            second.terminate()
            second.wait(timeout=15)
        done = mend.get(job.id)
        assert not temp.exists(), "the next worker ran the durable cleanup"
        assert done.result == {"attempt": 2, "file_left": False}, "cleanup before the handler"
        assert done.errors[0]["kind"] == "lost"
        assert (tmp_path / "cleanups.log").read_text() == f"remove {temp}\n"
        assert any(ev.get("event") == "cleanup" and "remove" in (ev.get("detail") or "")
                   for ev in done.raw["timeline"]), done.raw["timeline"]
