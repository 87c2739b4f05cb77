/**
 * The producer: enqueue one or many jobs (idempotency keys, unique options), get, cancel and
 * retry them over mend's HTTP API.
 */

import { Http } from "./http.js";
import type { EnqueueOptions, Job, Json, NewJob } from "./types.js";

/** Most jobs one batch request carries (the server's limit); longer lists are sent in several
 * requests, each stored all or nothing. */
export const MAX_BATCH = 1000;

/** Options of a `Client`. */
export interface ClientOptions {
  /** The bearer token the server requires, if any. */
  token?: string;
}

/** A producer.
 *
 * ```ts
 * const mend = new Client("http://127.0.0.1:7878");
 * const job = await mend.enqueue("resize", { w: 100 });
 * ```
 */
export class Client {
  private readonly http: Http;

  constructor(baseUrl: string, options: ClientOptions = {}) {
    this.http = new Http(baseUrl, options.token);
  }

  /** Enqueues one job. With `idempotency_key` or `unique`, an existing job may come back
   * instead (`job.duplicate`). */
  enqueue(kind: string, args?: Json, options: EnqueueOptions = {}): Promise<Job> {
    return this.http.call<Job>("POST", "/v1/jobs", body({ kind, args, ...options }));
  }

  /** Enqueues many jobs, up to 1000 per request (each all or nothing), in input order. */
  async enqueueMany(jobs: Iterable<NewJob>): Promise<Job[]> {
    const all = Array.from(jobs, body);
    const out: Job[] = [];
    for (let i = 0; i < all.length; i += MAX_BATCH) {
      const r = await this.http.call<{ jobs: Job[] }>("POST", "/v1/jobs/batch", { jobs: all.slice(i, i + MAX_BATCH) });
      out.push(...r.jobs);
    }
    return out;
  }

  /** `enqueueMany`, answered with the jobs' ids only (`Prefer: return=minimal`): the fastest
   * way to enqueue in bulk. A duplicate's id is the existing job's. */
  async enqueueManyIds(jobs: Iterable<NewJob>): Promise<string[]> {
    const all = Array.from(jobs, body);
    const out: string[] = [];
    for (let i = 0; i < all.length; i += MAX_BATCH) {
      const r = await this.http.call<{ jobs: Array<{ id: string }> }>("POST", "/v1/jobs/batch", { jobs: all.slice(i, i + MAX_BATCH) }, undefined, {
        prefer: "return=minimal",
      });
      for (const j of r.jobs) out.push(j.id);
    }
    return out;
  }

  /** One job, with its timeline. */
  get(id: string): Promise<Job> {
    return this.http.call<Job>("GET", `/v1/jobs/${encodeURIComponent(id)}`);
  }

  /** Cancels a job: a waiting one at once, a running one through its worker. */
  cancel(id: string): Promise<Job> {
    return this.http.call<Job>("POST", `/v1/jobs/${encodeURIComponent(id)}/cancel`);
  }

  /** Runs a finished (completed, cancelled, discarded) job again now. */
  retry(id: string): Promise<Job> {
    return this.http.call<Job>("POST", `/v1/jobs/${encodeURIComponent(id)}/retry`);
  }
}

/** The request body of one job: unset options left out. */
function body(job: NewJob): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(job)) if (v !== undefined) out[k] = v;
  return out;
}
