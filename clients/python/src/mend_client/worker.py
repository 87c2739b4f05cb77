"""The worker: claims jobs of the kinds it has handlers for, runs them with a concurrency
limit, heartbeats their leases, and reports every ending the way mend's own runtime does.

How an attempt ends, and what the worker reports (the same table as mend's Rust runtime):

| the handler...                         | durable cleanups of the attempt | reported as |
|----------------------------------------|---------------------------------|-------------|
| returns a value                        | dropped by the server           | `completed`, the value as result |
| raises `JobError` (`retry_after`)      | run, then reported done         | `failed`, kind `error` (retried) |
| raises `Fatal`                         | run                             | `failed`, fatal (discarded) |
| raises `Snooze(delay)`                 | kept                            | `snoozed` (the attempt does not count) |
| raises anything else                   | run                             | `failed`, kind `panic`, with the traceback |
| runs past the job's `timeout_ms`       | run                             | `failed`, kind `timeout` |
| is cancelled (heartbeat answer)        | run                             | `cancelled` |
| is still running at the drain deadline | run                             | `released` (the attempt does not count) |
| loses its lease                        | left to the next owner          | nothing: the job is someone else's |
| dies (`kill -9`)                       | run by the next worker that claims the job, before its handler | (the server's rescue) |

Async handlers run on the worker's event loop and are cancelled on a stop; plain functions run
in threads and cannot be interrupted, so they should look at `ctx.cancelled` in long loops.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import re
import secrets
import signal
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar, Union

import httpx

from ._types import ConflictError, Fatal, Job, JobError, Snooze
from .client import _headers, check

__all__ = ["Worker", "JobContext", "Handler", "CleanupFn"]

log = logging.getLogger("mend_client")

#: A handler: `(ctx, args) -> result`, a coroutine function or a plain one.
Handler = Callable[["JobContext", Any], Union[Awaitable[Any], Any]]
#: A durable cleanup: `(args) -> None`, a coroutine function or a plain one.
CleanupFn = Callable[[Any], Union[Awaitable[None], None]]

F = TypeVar("F", bound=Callable[..., Any])

#: Tries of a durable cleanup before the job is stopped (failed, fatal) so none is lost.
CLEANUP_TRIES = 3
#: Most jobs one claim asks for (the server's limit).
MAX_CLAIM = 100
#: Most outcomes one finish request carries (the server's limit).
MAX_FINISH = 1000


class _Lost(Exception):
    """This worker no longer holds the attempt."""


@dataclass
class _Run:
    job: Job
    ctx: JobContext
    task: asyncio.Task[None] | None = None
    inner: asyncio.Future[Any] | None = None
    #: Why it was stopped from outside: "cancel", "shutdown" or "lost".
    stop: str | None = None


class JobContext:
    """What a handler knows about its attempt and can do during it."""

    def __init__(self, worker: Worker, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        self._worker = worker
        self._loop = loop
        self.job = job
        #: The job's id.
        self.id = job.id
        #: The job's kind.
        self.kind = job.kind
        #: This attempt's number (1-based).
        self.attempt = job.attempt
        #: The attempts allowed.
        self.max_attempts = job.max_attempts
        self._checkpoint: Any = job.checkpoint
        self._cancelled = False
        #: Durable cleanups this attempt wrote down: (seq, name, args).
        self.deferred: list[tuple[int, str, Any]] = []

    @property
    def checkpoint(self) -> Any:
        """The last checkpoint saved for this job (by this attempt or an earlier one), or
        `None`: resume from it."""
        return self._checkpoint

    @property
    def cancelled(self) -> bool:
        """The attempt was stopped (cancel requested, shutdown deadline, lease lost): a plain
        function handler should return soon."""
        return self._cancelled

    async def save_checkpoint(self, state: Any) -> None:
        """Saves `state` durably; the next attempt starts with it as `ctx.checkpoint`. Raises
        `ConflictError` when this worker no longer holds the attempt."""
        await self._worker._post(
            f"/v1/jobs/{self.id}/checkpoint",
            {"worker_id": self._worker.worker_id, "attempt": self.attempt, "state": state},
        )
        self._checkpoint = state

    async def defer(self, name: str, args: Any = None) -> None:
        """Writes a durable cleanup down with the job, before the work it undoes. It runs if
        the attempt fails, is cancelled or is released — and, if this process dies, on the
        next worker that claims the job. `name` must be registered with `@worker.cleanup`."""
        if name not in self._worker._cleanups:
            raise ValueError(
                f"no cleanup registered as {name!r}; register it with @worker.cleanup({name!r})"
            )
        r = await self._worker._post(
            f"/v1/jobs/{self.id}/cleanups",
            {"worker_id": self._worker.worker_id, "attempt": self.attempt, "name": name,
             "args": args},
        )
        self.deferred.append((int(r["seq"]), name, args))

    def save_checkpoint_sync(self, state: Any) -> None:
        """`save_checkpoint` for plain-function handlers (which run in threads)."""
        self._blocking(self.save_checkpoint(state))

    def defer_sync(self, name: str, args: Any = None) -> None:
        """`defer` for plain-function handlers (which run in threads)."""
        self._blocking(self.defer(name, args))

    def _blocking(self, coro: Awaitable[Any]) -> Any:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("use `await ctx.save_checkpoint(...)`/`await ctx.defer(...)` in async handlers")

        async def wrap() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result()


def _default_worker_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:60] or "host"
    return f"py-{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _call_maybe_async(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    if inspect.iscoroutinefunction(fn):
        return fn(*args)  # type: ignore[no-any-return]
    return asyncio.to_thread(fn, *args)


class Worker:
    """Runs jobs from one queue.

    >>> worker = Worker("http://127.0.0.1:7878", concurrency=10)
    >>> @worker.job("resize")
    ... async def resize(ctx: JobContext, args: dict) -> dict:
    ...     return {"ok": True}
    >>> worker.run()  # until SIGTERM/SIGINT
    """

    def __init__(
        self,
        base_url: str,
        *,
        queue: str = "default",
        concurrency: int = 10,
        token: str | None = None,
        worker_id: str | None = None,
        lease_ms: int = 30_000,
        heartbeat_every: float | None = None,
        drain: float = 30.0,
        poll_wait_ms: int = 1000,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.queue = queue
        self.concurrency = concurrency
        self.token = token
        self.worker_id = worker_id or _default_worker_id()
        self.lease_ms = lease_ms
        self.heartbeat_every = heartbeat_every or lease_ms / 1000 / 3
        #: Seconds in-flight jobs may run on after a stop before they are released.
        self.drain = drain
        self.poll_wait_ms = poll_wait_ms
        self._handlers: dict[str, Handler] = {}
        self._cleanups: dict[str, CleanupFn] = {}
        self._running: dict[str, _Run] = {}
        #: Slots promised to claims in flight.
        self._reserved = 0
        #: Attempts this worker holds on the server (running, or outcome not yet sent).
        self._held: dict[str, int] = {}
        self._http: httpx.AsyncClient | None = None
        self._stopping: asyncio.Event | None = None
        self._drain_now: asyncio.Event | None = None
        self._slot: asyncio.Event | None = None
        self._outbox: asyncio.Queue[dict[str, Any]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Counts, for tests and logs.
        self.stats: dict[str, int] = {"completed": 0, "failed": 0, "released": 0,
                                      "fenced": 0, "cleanups": 0}

    # ---- registration ----

    def job(self, kind: str) -> Callable[[F], F]:
        """Registers the decorated function as the handler of `kind`."""

        def register(fn: F) -> F:
            self._handlers[kind] = fn
            return fn

        return register

    def cleanup(self, name: str) -> Callable[[F], F]:
        """Registers the decorated function as the durable cleanup `name` (`ctx.defer`).
        Cleanups may run more than once (a crash after the run, before the report): make
        them idempotent."""

        def register(fn: F) -> F:
            self._cleanups[name] = fn
            return fn

        return register

    # ---- running ----

    def run(self) -> None:
        """Runs until SIGTERM or SIGINT (then drains, see `stop`)."""
        asyncio.run(self.run_async(install_signals=True))

    def stop(self) -> None:
        """Stops claiming; in-flight jobs may finish within `drain` seconds, the rest are
        released (back to the queue, the attempt does not count). A second call drains at
        once. Safe to call from a signal handler on the worker's loop."""
        if self._stopping is None or self._drain_now is None:
            return
        if self._stopping.is_set():
            self._drain_now.set()
        self._stopping.set()
        if self._slot is not None:
            self._slot.set()

    async def run_async(self, *, install_signals: bool = False) -> None:
        """Runs on the current event loop until `stop()` (or a signal, when
        `install_signals`)."""
        if not self._handlers:
            raise ValueError("register at least one handler with @worker.job(kind)")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stopping = asyncio.Event()
        self._drain_now = asyncio.Event()
        self._slot = asyncio.Event()
        self._outbox = asyncio.Queue()
        limits = httpx.Limits(max_connections=self.concurrency + 8,
                              max_keepalive_connections=self.concurrency + 8)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(self.token),
                                       timeout=60.0, limits=limits)
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        log.info("mend worker %s: queue %s, kinds %s", self.worker_id, self.queue,
                 sorted(self._handlers))
        # Several claims in flight when the worker has many slots: one claim round trip per
        # 100 jobs would otherwise bound a worker of short jobs.
        claimers = [asyncio.create_task(self._claim_loop())
                    for _ in range(min(4, math.ceil(self.concurrency / MAX_CLAIM)))]
        heart = asyncio.create_task(self._heartbeat_loop())
        sender = asyncio.create_task(self._send_loop())
        try:
            await self._stopping.wait()
            await asyncio.gather(*claimers)
            await self._drain()
            await self._outbox.join()
        finally:
            tasks = [heart, sender, *claimers]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await self._http.aclose()

    async def _drain(self) -> None:
        assert self._drain_now is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain
        waiter = asyncio.ensure_future(self._drain_now.wait())
        try:
            while self._running and not self._drain_now.is_set():
                left = deadline - loop.time()
                if left <= 0:
                    break
                tasks = [r.task for r in self._running.values() if r.task is not None]
                await asyncio.wait([*tasks, waiter], timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        rest = list(self._running.values())
        if rest:
            log.warning("drain deadline passed: releasing %d job(s)", len(rest))
        for r in rest:
            self._stop_run(r, "shutdown")
        tasks = [r.task for r in rest if r.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        assert self._http is not None
        return check(await self._http.post(path, json=body))

    async def _claim_loop(self) -> None:
        assert self._stopping is not None and self._slot is not None
        backoff = 0.1
        while not self._stopping.is_set():
            self._slot.clear()
            free = self.concurrency - len(self._running) - self._reserved
            # Claim in batches: waiting for a quarter of the slots costs short jobs nothing
            # and saves a round trip per job.
            if free <= 0 or (self._running and free < math.ceil(self.concurrency / 4)):
                await self._slot.wait()
                continue
            limit = min(free, MAX_CLAIM)
            self._reserved += limit
            try:
                r = await self._post("/v1/workers/claim", {
                    "worker_id": self.worker_id, "queue": self.queue,
                    "kinds": sorted(self._handlers), "limit": limit,
                    "wait_ms": self.poll_wait_ms, "lease_ms": self.lease_ms,
                })
                backoff = 0.1
            except (httpx.HTTPError, ValueError) as e:
                self._reserved -= limit
                log.warning("claim failed (%s); retrying in %.1f s", e, backoff)
                try:
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, 5.0)
                continue
            self._reserved -= limit
            self._slot.set()  # another claimer may use what this one did not fill
            for raw in r["jobs"]:
                job = Job.from_json(raw)
                self._held[job.id] = job.attempt
                if self._stopping.is_set():
                    # Claimed while stopping: hand it straight back.
                    self._report(job, {"outcome": "released"})
                    continue
                self._start(job)

    def _start(self, job: Job) -> None:
        assert self._loop is not None
        run = _Run(job=job, ctx=JobContext(self, job, self._loop))
        self._running[job.id] = run
        run.task = asyncio.create_task(self._execute(run))

    def _stop_run(self, run: _Run, why: str) -> None:
        if run.stop is None:
            run.stop = why
        run.ctx._cancelled = True
        if run.inner is not None:
            run.inner.cancel()

    async def _execute(self, run: _Run) -> None:
        job = run.job
        try:
            outcome = await self._attempt(run)
        except _Lost:
            outcome = None
        except Exception as e:  # the worker's own failure: never lose the job silently
            log.exception("job %s: the worker failed", job.id)
            outcome = {"outcome": "failed", "error": f"worker error: {e!r}", "kind": "panic",
                       "traceback": traceback.format_exc()}
        finally:
            self._running.pop(job.id, None)
            if self._slot is not None:
                self._slot.set()
        if outcome is None or run.stop == "lost":
            self._held.pop(job.id, None)
            return
        self._report(job, outcome)

    def _report(self, job: Job, outcome: dict[str, Any]) -> None:
        assert self._outbox is not None
        self._outbox.put_nowait({"id": job.id, "attempt": job.attempt, **outcome})

    async def _attempt(self, run: _Run) -> dict[str, Any] | None:
        job, ctx = run.job, run.ctx
        # A lost attempt's durable cleanups run before this attempt does anything.
        if job.pending_cleanups:
            pending = sorted(job.pending_cleanups, key=lambda c: int(c["seq"]), reverse=True)
            failed = await self._run_cleanups(run, [(int(c["seq"]), str(c["name"]), c.get("args"),
                                                     int(c.get("attempt", 0))) for c in pending])
            if failed:
                return {"outcome": "failed", "fatal": True, "error": failed}
            if job.stop_after_cleanups:
                return {"outcome": "failed", "fatal": True, "error": job.stop_after_cleanups}
        outcome = await self._call(run)
        if outcome is None:
            return None
        # Failed, cancelled or released: the attempt's own durable cleanups run now.
        if outcome["outcome"] in ("failed", "cancelled", "released") and ctx.deferred:
            own = [(seq, name, args, ctx.attempt) for seq, name, args in reversed(ctx.deferred)]
            failed = await self._run_cleanups(run, own)
            if failed:
                return {"outcome": "failed", "fatal": True,
                        "error": f"{outcome.get('error') or outcome['outcome']}; {failed}"}
        return outcome

    async def _call(self, run: _Run) -> dict[str, Any] | None:
        job, ctx = run.job, run.ctx
        handler = self._handlers.get(job.kind)
        if handler is None:
            return {"outcome": "failed",
                    "error": f"no handler for kind {job.kind!r} on worker {self.worker_id}"}
        if job.cancel_requested:
            run.stop = "cancel"
        if run.stop is None:
            run.inner = asyncio.ensure_future(_call_maybe_async(handler, ctx, job.args))
        timeout = job.timeout_ms / 1000 if job.timeout_ms else None
        try:
            if run.inner is None:
                raise asyncio.CancelledError()
            result = await asyncio.wait_for(asyncio.shield(run.inner), timeout)
            return {"outcome": "completed", "result": result}
        except TimeoutError:
            self._stop_run(run, "timeout")
            return {"outcome": "failed", "kind": "timeout",
                    "error": f"timed out after {timeout} s"}
        except asyncio.CancelledError:
            if run.stop is None:
                # The handler raised CancelledError by itself.
                return {"outcome": "failed", "kind": "panic", "error": "CancelledError",
                        "traceback": traceback.format_exc()}
            return self._stopped(run)
        except Snooze as s:
            return {"outcome": "snoozed", "delay_ms": max(0, int(s.delay * 1000))}
        except Fatal as e:
            return {"outcome": "failed", "fatal": True, "error": str(e) or type(e).__name__}
        except JobError as e:
            out: dict[str, Any] = {"outcome": "failed", "error": str(e) or type(e).__name__}
            if e.retry_after is not None:
                out["retry_after_ms"] = max(0, int(e.retry_after * 1000))
            return out
        except Exception as e:
            if run.stop is not None:
                # Stopped, and the handler ended by raising: the stop is what happened.
                return self._stopped(run)
            return {"outcome": "failed", "kind": "panic",
                    "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc()}

    @staticmethod
    def _stopped(run: _Run) -> dict[str, Any] | None:
        if run.stop == "cancel":
            return {"outcome": "cancelled"}
        if run.stop == "shutdown":
            return {"outcome": "released"}
        return None  # lost: the job is someone else's now

    async def _run_cleanups(self, run: _Run, cleanups: list[tuple[int, str, Any, int]]) -> str:
        """Runs durable cleanups in order, reporting each one done; returns what failed
        (empty: all ran). Raises `_Lost` when the worker no longer holds the job."""
        failed: list[str] = []
        for seq, name, args, attempt in cleanups:
            fn = self._cleanups.get(name)
            started = time.monotonic()
            last = ""
            ran = False
            for n in range(CLEANUP_TRIES):
                if n:
                    await asyncio.sleep(0.1 * 4 ** (n - 1))
                if fn is None:
                    last = f"no cleanup registered as {name!r} on worker {self.worker_id}"
                    break
                try:
                    await _call_maybe_async(fn, args)
                    ran = True
                    break
                except Exception as e:
                    last = f"{type(e).__name__}: {e}"
                    log.warning("job %s: durable cleanup %s failed (try %d): %s",
                                run.job.id, name, n + 1, last)
            if not ran:
                failed.append(f"durable cleanup `{name}` (written down by attempt {attempt}) "
                              f"failed: {last}")
                continue
            self.stats["cleanups"] += 1
            try:
                await self._post(f"/v1/jobs/{run.job.id}/cleanups/{seq}/done", {
                    "worker_id": self.worker_id, "attempt": run.job.attempt,
                    "duration_ms": int((time.monotonic() - started) * 1000),
                })
            except ConflictError as e:
                raise _Lost() from e
            except httpx.HTTPError as e:
                # It ran; it stays written down and runs again later (cleanups are idempotent).
                log.warning("job %s: reporting cleanup %s failed: %s", run.job.id, name, e)
        if failed:
            return ("cleanup failed: " + "; ".join(failed)
                    + ". The job is stopped so no cleanup is lost; fix them, then retry the job")
        return ""

    async def _send_loop(self) -> None:
        assert self._outbox is not None
        q = self._outbox
        while True:
            batch = [await q.get()]
            while not q.empty() and len(batch) < MAX_FINISH:
                batch.append(q.get_nowait())
            await self._send(batch)
            for item in batch:
                self._held.pop(item["id"], None)
                q.task_done()

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        delay = 0.1
        for n in range(8):
            try:
                r = await self._post("/v1/workers/finish",
                                     {"worker_id": self.worker_id, "outcomes": batch})
            except httpx.HTTPError as e:
                # Retrying is safe: an outcome already recorded is fenced the second time.
                log.warning("reporting %d outcome(s) failed (%s); retrying", len(batch), e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            fenced = set(r.get("fenced", []))
            for item in batch:
                if item["id"] in fenced:
                    self.stats["fenced"] += 1
                    if n == 0:
                        log.warning("job %s: outcome refused, the worker no longer holds "
                                    "attempt %s", item["id"], item["attempt"])
                elif item["outcome"] == "completed":
                    self.stats["completed"] += 1
                elif item["outcome"] == "released":
                    self.stats["released"] += 1
                else:
                    self.stats["failed"] += 1
            return
        log.error("gave up reporting %d outcome(s); their leases will expire and the "
                  "server's rescue retries them", len(batch))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_every)
            if not self._held:
                continue
            held = [{"id": i, "attempt": a} for i, a in list(self._held.items())]
            try:
                r = await self._post("/v1/workers/heartbeat", {
                    "worker_id": self.worker_id, "jobs": held, "lease_ms": self.lease_ms})
            except (httpx.HTTPError, ValueError) as e:
                log.warning("heartbeat failed: %s", e)
                continue
            for lost in r.get("lost", []):
                run = self._running.get(str(lost["id"]))
                if run is not None and run.job.attempt == int(lost["attempt"]):
                    log.warning("job %s: lease lost; stopping it", run.job.id)
                    self._stop_run(run, "lost")
            for job_id in r.get("cancel_requested", []):
                run = self._running.get(str(job_id))
                if run is not None:
                    self._stop_run(run, "cancel")

