"""The producers (blocking and asyncio) against a real server."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mend_client import (
    AsyncClient,
    Client,
    InvalidRequestError,
    NewJob,
    NotFoundError,
    Unique,
)

from .conftest import Server


def test_enqueue_get_cancel_retry(server: Server) -> None:
    with Client(server.url) as mend:
        job = mend.enqueue("py.resize", {"w": 100}, queue="py-producer", priority=2,
                           max_attempts=3, tags=["a"], delay_ms=60_000)
        assert job.kind == "py.resize" and job.args == {"w": 100}
        assert job.state == "scheduled" and job.max_attempts == 3 and job.tags == ["a"]
        assert not job.duplicate
        got = mend.get(job.id)
        assert got.id == job.id and got.queue == "py-producer" and got.priority == 2

        key = f"order-{uuid.uuid4()}"
        first = mend.enqueue("py.resize", {"n": 1}, queue="py-producer", idempotency_key=key)
        again = mend.enqueue("py.resize", {"n": 2}, queue="py-producer", idempotency_key=key)
        assert again.id == first.id and again.duplicate and again.args == {"n": 1}

        u = Unique(by_args=["customer"], per_queue=True)
        one = mend.enqueue("py.report", {"customer": str(job.id)}, queue="py-producer", unique=u)
        two = mend.enqueue("py.report", {"customer": str(job.id), "x": 1}, queue="py-producer",
                           unique=u)
        assert two.id == one.id and two.duplicate

        many = mend.enqueue_many([NewJob("py.a", {"i": i}, queue="py-producer", delay_ms=60_000)
                                  for i in range(3)] + [{"kind": "py.b", "queue": "py-producer"}])
        assert [j.kind for j in many] == ["py.a", "py.a", "py.a", "py.b"]
        assert [j.args for j in many[:3]] == [{"i": 0}, {"i": 1}, {"i": 2}]

        cancelled = mend.cancel(many[0].id)
        assert cancelled.state == "cancelled"
        retried = mend.retry(many[0].id)
        assert retried.state == "available"

        with pytest.raises(NotFoundError):
            mend.get(str(uuid.uuid4()))
        with pytest.raises(InvalidRequestError) as bad:
            mend.enqueue("no spaces allowed")
        assert bad.value.problem["field"] == "kind"


def test_async_client_enqueues_a_thousand_in_one_call(server: Server) -> None:
    async def main() -> None:
        async with AsyncClient(server.url) as mend:
            jobs = await mend.enqueue_many(
                NewJob("py.bulk", {"i": i}, queue="py-bulk") for i in range(1000))
            assert len(jobs) == 1000 and len({j.id for j in jobs}) == 1000
            assert jobs[999].args == {"i": 999}
            ids = await mend.enqueue_many_ids(
                NewJob("py.bulk", {"i": i}, queue="py-bulk") for i in range(1500))
            assert len(set(ids)) == 1500, "two requests of at most 1000"
            assert (await mend.get(ids[1499])).args == {"i": 1499}
            one = await mend.enqueue("py.bulk", queue="py-bulk", idempotency_key="k1")
            dup = await mend.enqueue("py.bulk", queue="py-bulk", idempotency_key="k1")
            assert dup.duplicate and dup.id == one.id
            assert (await mend.get(one.id)).state == "available"
            assert (await mend.cancel(one.id)).state == "cancelled"
            assert (await mend.retry(one.id)).state == "available"

    asyncio.run(main())
