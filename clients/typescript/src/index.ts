/**
 * mend-client: producers and workers for mend, the self-healing durable job runtime, over its
 * HTTP API, on Node 20's built-in fetch with no runtime dependencies.
 *
 * - `Client`: enqueue one or many jobs (idempotency keys, unique options), get, cancel, retry.
 * - `Worker`: `worker.job("kind", handler)` with a concurrency limit, heartbeats, checkpoints,
 *   durable cleanups that survive `kill -9`, thrown errors recorded with their stack, and
 *   SIGTERM handling (stop claiming, drain, release the rest).
 */

export { Client, MAX_BATCH } from "./client.js";
export type { ClientOptions } from "./client.js";
export { Worker, JobContext, CLEANUP_TRIES } from "./worker.js";
export type { Handler, CleanupFn, WorkerOptions } from "./worker.js";
export { MendError, ConflictError, NotFoundError, InvalidRequestError, JobError, Fatal, Snooze } from "./types.js";
export type { Job, Json, AttemptError, PendingCleanup, Unique, EnqueueOptions, NewJob } from "./types.js";
