"""The values the client hands out and takes in: jobs, unique options, errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

__all__ = [
    "Job",
    "NewJob",
    "Unique",
    "MendError",
    "ConflictError",
    "NotFoundError",
    "InvalidRequestError",
    "JobError",
    "Fatal",
    "Snooze",
]


@dataclass(frozen=True)
class Job:
    """A job as the server stores it (see the OpenAPI document's `JobRow`)."""

    id: str
    kind: str
    queue: str
    state: str
    args: Any
    attempt: int
    max_attempts: int
    priority: int
    run_at: str
    result: Any
    errors: list[dict[str, Any]]
    tags: list[str]
    checkpoint: Any
    pending_cleanups: list[dict[str, Any]]
    timeout_ms: int | None
    cancel_requested: bool
    #: `True` when the enqueue returned an existing job (idempotency key or unique options).
    duplicate: bool
    #: Set on a claimed job kept alive only so a lost attempt's cleanups could run.
    stop_after_cleanups: str | None
    #: Every field the server sent.
    raw: dict[str, Any] = field(repr=False)

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Job:
        """Reads a job from the server's JSON."""
        return Job(
            id=str(d["id"]),
            kind=str(d["kind"]),
            queue=str(d.get("queue", "default")),
            state=str(d.get("state", "")),
            args=d.get("args"),
            attempt=int(d.get("attempt", 0)),
            max_attempts=int(d.get("max_attempts", 0)),
            priority=int(d.get("priority", 0)),
            run_at=str(d.get("run_at", "")),
            result=d.get("result"),
            errors=list(d.get("errors") or []),
            tags=list(d.get("tags") or []),
            checkpoint=d.get("checkpoint"),
            pending_cleanups=list(d.get("pending_cleanups") or []),
            timeout_ms=d.get("timeout_ms"),
            cancel_requested=bool(d.get("cancel_requested", False)),
            duplicate=bool(d.get("duplicate", False)),
            stop_after_cleanups=d.get("stop_after_cleanups"),
            raw=dict(d),
        )


@dataclass(frozen=True)
class Unique:
    """Unique options: while a job these options call the same is in one of `states`, an
    enqueue returns it (`duplicate=True`) instead of inserting another."""

    #: `True`: all args count; a list: only these top-level keys or JSON pointers.
    by_args: bool | Sequence[str] = False
    #: Unique within the job's queue (default: across queues).
    per_queue: bool = False
    #: One per period, e.g. "1h", "30m", "1d".
    period: str | None = None
    #: The states the existing job holds its key in (default: the four not-finished ones).
    states: Sequence[str] | None = None

    def to_json(self) -> dict[str, Any]:
        """The request's `unique` object."""
        out: dict[str, Any] = {}
        if self.by_args is True or (not isinstance(self.by_args, bool) and self.by_args):
            out["by_args"] = self.by_args if isinstance(self.by_args, bool) else list(self.by_args)
        if self.per_queue:
            out["per_queue"] = True
        if self.period is not None:
            out["period"] = self.period
        if self.states is not None:
            out["states"] = list(self.states)
        return out


@dataclass(frozen=True)
class NewJob:
    """A job to enqueue (for `enqueue_many`)."""

    kind: str
    args: Any = None
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    #: RFC 3339 time before which it does not run.
    run_at: str | None = None
    delay_ms: int | None = None
    timeout_ms: int | None = None
    tags: Sequence[str] | None = None
    #: Enqueueing again with the same key returns the first job.
    idempotency_key: str | None = None
    limit_key: str | None = None
    unique: Unique | None = None

    def to_json(self) -> dict[str, Any]:
        """The request body of one job."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            if f.name == "kind":
                continue
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, Unique):
                out[f.name] = v.to_json()
            elif f.name == "tags":
                out[f.name] = list(v)
            else:
                out[f.name] = v
        return out


class MendError(Exception):
    """The server refused a request; `problem` is its RFC 9457 answer."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        detail = problem.get("detail") or problem.get("title") or "request failed"
        super().__init__(f"mend answered {status}: {detail}")


class ConflictError(MendError):
    """409: e.g. the worker no longer holds the attempt (drop the job)."""


class NotFoundError(MendError):
    """404: no such job."""


class InvalidRequestError(MendError):
    """422 or 400: the request was wrong; `problem["field"]` names the field."""


class JobError(Exception):
    """Raise from a handler for an ordinary failure: retried with backoff (or after
    `retry_after` seconds), recorded with error kind `error`. Any other exception is recorded
    as a panic, with its traceback."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Fatal(JobError):
    """Raise from a handler to give up for good: the job is discarded, not retried."""


class Snooze(Exception):
    """Raise from a handler to run the job again after `delay` seconds; the attempt does not
    count."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"snoozed for {delay} s")
        self.delay = delay
