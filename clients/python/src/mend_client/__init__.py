"""mend_client: producers and workers for mend, the self-healing durable job runtime, over
its HTTP API.

- `Client` / `AsyncClient`: enqueue one or many jobs (idempotency keys, unique options), get,
  cancel and retry them.
- `Worker`: `@worker.job("kind")` handlers with a concurrency limit, heartbeats, checkpoints,
  durable cleanups that survive `kill -9`, exceptions recorded with their traceback, and
  SIGTERM handling (stop claiming, drain, release the rest).
"""

from ._types import (
    ConflictError,
    Fatal,
    InvalidRequestError,
    Job,
    JobError,
    MendError,
    NewJob,
    NotFoundError,
    Snooze,
    Unique,
)
from .client import AsyncClient, Client
from .worker import JobContext, Worker

__all__ = [
    "AsyncClient",
    "Client",
    "ConflictError",
    "Fatal",
    "InvalidRequestError",
    "Job",
    "JobContext",
    "JobError",
    "MendError",
    "NewJob",
    "NotFoundError",
    "Snooze",
    "Unique",
    "Worker",
]
