"""Producers: enqueue, get, cancel and retry jobs over mend's HTTP API, blocking (`Client`)
or with asyncio (`AsyncClient`). Both build the same requests; only the transport differs."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import httpx

from ._types import (
    ConflictError,
    InvalidRequestError,
    Job,
    MendError,
    NewJob,
    NotFoundError,
    Unique,
)

__all__ = ["Client", "AsyncClient", "MAX_BATCH"]

#: Most jobs one `enqueue_many` request carries (the server's limit); longer lists are sent
#: in several requests, each stored all or nothing.
MAX_BATCH = 1000

_DEFAULT_TIMEOUT = 30.0
#: Asks a batch enqueue to answer ids only.
_MINIMAL = {"prefer": "return=minimal"}


def _headers(token: str | None) -> dict[str, str]:
    h = {"accept": "application/json"}
    if token:
        h["authorization"] = f"Bearer {token}"
    return h


def check(resp: httpx.Response) -> Any:
    """The JSON body of a successful answer, or the matching `MendError`."""
    if resp.status_code < 300:
        return resp.json() if resp.content else None
    try:
        problem = resp.json()
        if not isinstance(problem, dict):
            problem = {"detail": str(problem)}
    except ValueError:
        problem = {"detail": resp.text[:500]}
    cls: type[MendError] = MendError
    if resp.status_code == 409:
        cls = ConflictError
    elif resp.status_code == 404:
        cls = NotFoundError
    elif resp.status_code in (400, 422):
        cls = InvalidRequestError
    raise cls(resp.status_code, problem)


def _one(
    kind: str,
    args: Any,
    queue: str | None,
    priority: int | None,
    max_attempts: int | None,
    run_at: str | None,
    delay_ms: int | None,
    timeout_ms: int | None,
    tags: Sequence[str] | None,
    idempotency_key: str | None,
    limit_key: str | None,
    unique: Unique | None,
) -> dict[str, Any]:
    return NewJob(
        kind=kind,
        args=args,
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        run_at=run_at,
        delay_ms=delay_ms,
        timeout_ms=timeout_ms,
        tags=tags,
        idempotency_key=idempotency_key,
        limit_key=limit_key,
        unique=unique,
    ).to_json()


def _batches(jobs: Iterable[NewJob | Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    body = [j.to_json() if isinstance(j, NewJob) else dict(j) for j in jobs]
    return [body[i : i + MAX_BATCH] for i in range(0, len(body), MAX_BATCH)] or []


class Client:
    """A blocking producer. Use as a context manager, or call `close()`.

    >>> with Client("http://127.0.0.1:7878") as mend:
    ...     job = mend.enqueue("resize", {"w": 100})
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
        http: httpx.Client | None = None,
    ) -> None:
        self._http = http or httpx.Client(
            base_url=base_url.rstrip("/"), headers=_headers(token), timeout=timeout
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def enqueue(
        self,
        kind: str,
        args: Any = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        run_at: str | None = None,
        delay_ms: int | None = None,
        timeout_ms: int | None = None,
        tags: Sequence[str] | None = None,
        idempotency_key: str | None = None,
        limit_key: str | None = None,
        unique: Unique | None = None,
    ) -> Job:
        """Enqueues one job. With `idempotency_key` or `unique`, an existing job may come
        back instead (`job.duplicate`)."""
        body = _one(kind, args, queue, priority, max_attempts, run_at, delay_ms,
                    timeout_ms, tags, idempotency_key, limit_key, unique)
        return Job.from_json(check(self._http.post("/v1/jobs", json=body)))

    def enqueue_many(self, jobs: Iterable[NewJob | Mapping[str, Any]]) -> list[Job]:
        """Enqueues many jobs, up to 1000 per request (each request all or nothing), in
        input order."""
        out: list[Job] = []
        for batch in _batches(jobs):
            r = check(self._http.post("/v1/jobs/batch", json={"jobs": batch}))
            out.extend(Job.from_json(j) for j in r["jobs"])
        return out

    def enqueue_many_ids(self, jobs: Iterable[NewJob | Mapping[str, Any]]) -> list[str]:
        """`enqueue_many`, answered with the jobs' ids only (`Prefer: return=minimal`): the
        fastest way to enqueue in bulk. A duplicate's id is the existing job's."""
        out: list[str] = []
        for batch in _batches(jobs):
            r = check(self._http.post("/v1/jobs/batch", json={"jobs": batch}, headers=_MINIMAL))
            out.extend(str(j["id"]) for j in r["jobs"])
        return out

    def get(self, job_id: str) -> Job:
        """One job, with its timeline."""
        return Job.from_json(check(self._http.get(f"/v1/jobs/{job_id}")))

    def cancel(self, job_id: str) -> Job:
        """Cancels a job: a waiting one at once, a running one through its worker."""
        return Job.from_json(check(self._http.post(f"/v1/jobs/{job_id}/cancel")))

    def retry(self, job_id: str) -> Job:
        """Runs a finished (completed, cancelled, discarded) job again now."""
        return Job.from_json(check(self._http.post(f"/v1/jobs/{job_id}/retry")))


class AsyncClient:
    """An asyncio producer. Use as an async context manager, or `await aclose()`."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._http = http or httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=_headers(token), timeout=timeout
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    async def enqueue(
        self,
        kind: str,
        args: Any = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        run_at: str | None = None,
        delay_ms: int | None = None,
        timeout_ms: int | None = None,
        tags: Sequence[str] | None = None,
        idempotency_key: str | None = None,
        limit_key: str | None = None,
        unique: Unique | None = None,
    ) -> Job:
        """See `Client.enqueue`."""
        body = _one(kind, args, queue, priority, max_attempts, run_at, delay_ms,
                    timeout_ms, tags, idempotency_key, limit_key, unique)
        return Job.from_json(check(await self._http.post("/v1/jobs", json=body)))

    async def enqueue_many(self, jobs: Iterable[NewJob | Mapping[str, Any]]) -> list[Job]:
        """See `Client.enqueue_many`."""
        out: list[Job] = []
        for batch in _batches(jobs):
            r = check(await self._http.post("/v1/jobs/batch", json={"jobs": batch}))
            out.extend(Job.from_json(j) for j in r["jobs"])
        return out

    async def enqueue_many_ids(self, jobs: Iterable[NewJob | Mapping[str, Any]]) -> list[str]:
        """See `Client.enqueue_many_ids`."""
        out: list[str] = []
        for batch in _batches(jobs):
            r = check(await self._http.post("/v1/jobs/batch", json={"jobs": batch},
                                            headers=_MINIMAL))
            out.extend(str(j["id"]) for j in r["jobs"])
        return out

    async def get(self, job_id: str) -> Job:
        """See `Client.get`."""
        return Job.from_json(check(await self._http.get(f"/v1/jobs/{job_id}")))

    async def cancel(self, job_id: str) -> Job:
        """See `Client.cancel`."""
        return Job.from_json(check(await self._http.post(f"/v1/jobs/{job_id}/cancel")))

    async def retry(self, job_id: str) -> Job:
        """See `Client.retry`."""
        return Job.from_json(check(await self._http.post(f"/v1/jobs/{job_id}/retry")))
