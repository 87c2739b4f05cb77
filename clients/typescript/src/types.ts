/**
 * The values the client hands out and takes in: jobs, unique options, errors.
 */

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** One failed attempt's record. */
export interface AttemptError {
  attempt: number;
  /** `error`, `panic`, `timeout`, `lost` or `cancelled`. */
  kind: string;
  message: string;
  at: string;
}

/** A durable cleanup written down with a job and not yet run. */
export interface PendingCleanup {
  seq: number;
  attempt: number;
  name: string;
  args: Json;
}

/** A job as the server stores it (the OpenAPI document's `JobRow`). */
export interface Job {
  id: string;
  queue: string;
  kind: string;
  args: Json;
  state: string;
  priority: number;
  attempt: number;
  max_attempts: number;
  run_at: string;
  created_at: string;
  result: Json | null;
  errors: AttemptError[];
  tags: string[];
  timeout_ms: number | null;
  cancel_requested: boolean;
  /** The last checkpoint saved (absent: none). */
  checkpoint?: Json | null;
  /** Durable cleanups written down and not yet run (absent: none). */
  pending_cleanups?: PendingCleanup[];
  timeline?: Array<{ event: string; at: string; attempt?: number; node?: string; detail?: string }>;
  /** `true` when an enqueue returned an existing job (idempotency key or unique options). */
  duplicate?: boolean;
  /** Set on a claimed job kept alive only so a lost attempt's cleanups could run. */
  stop_after_cleanups?: string | null;
  [other: string]: unknown;
}

/** Unique options: while a job these options call the same is in one of `states`, an
 * enqueue returns it (`duplicate: true`) instead of inserting another. */
export interface Unique {
  /** `true`: all args count; a list: only these top-level keys or JSON pointers. */
  by_args?: boolean | string[];
  /** Unique within the job's queue (default: across queues). */
  per_queue?: boolean;
  /** One per period, e.g. "1h", "30m", "1d". */
  period?: string;
  /** The states the existing job holds its key in. */
  states?: string[];
}

/** Options of one enqueue. */
export interface EnqueueOptions {
  queue?: string;
  priority?: number;
  max_attempts?: number;
  /** RFC 3339 time before which it does not run. */
  run_at?: string;
  delay_ms?: number;
  timeout_ms?: number;
  tags?: string[];
  /** Enqueueing again with the same key returns the first job. */
  idempotency_key?: string;
  limit_key?: string;
  unique?: Unique;
}

/** A job to enqueue with `enqueueMany`. */
export interface NewJob extends EnqueueOptions {
  kind: string;
  args?: Json;
}

/** The server refused a request; `problem` is its RFC 9457 answer. */
export class MendError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Record<string, unknown>,
  ) {
    super(`mend answered ${status}: ${String(problem["detail"] ?? problem["title"] ?? "request failed")}`);
    this.name = "MendError";
  }
}

/** 409: e.g. the worker no longer holds the attempt (drop the job). */
export class ConflictError extends MendError {
  override name = "ConflictError";
}

/** 404: no such job. */
export class NotFoundError extends MendError {
  override name = "NotFoundError";
}

/** 400 or 422: the request was wrong; `problem.field` names the field. */
export class InvalidRequestError extends MendError {
  override name = "InvalidRequestError";
}

/** Throw from a handler for an ordinary failure: retried with backoff (or after
 * `retryAfterMs`), recorded with error kind `error`. Anything else thrown is recorded as a
 * panic, with its stack. */
export class JobError extends Error {
  override name = "JobError";
  constructor(
    message: string,
    readonly options: { retryAfterMs?: number } = {},
  ) {
    super(message);
  }
}

/** Throw from a handler to give up for good: the job is discarded, not retried. */
export class Fatal extends JobError {
  override name = "Fatal";
}

/** Throw from a handler to run the job again after `delayMs`; the attempt does not count. */
export class Snooze extends Error {
  override name = "Snooze";
  constructor(readonly delayMs: number) {
    super(`snoozed for ${delayMs} ms`);
  }
}
