/**
 * The worker: claims jobs of the kinds it has handlers for, runs them with a concurrency
 * limit, heartbeats their leases, and reports every ending the way mend's own runtime does.
 *
 * | the handler...                         | durable cleanups of the attempt | reported as |
 * |----------------------------------------|---------------------------------|-------------|
 * | resolves a value                       | dropped by the server           | `completed`, the value as result |
 * | throws `JobError` (`retryAfterMs`)     | run, then reported done         | `failed`, kind `error` (retried) |
 * | throws `Fatal`                         | run                             | `failed`, fatal (discarded) |
 * | throws `Snooze`                        | kept                            | `snoozed` (the attempt does not count) |
 * | throws anything else                   | run                             | `failed`, kind `panic`, with the stack |
 * | runs past the job's `timeout_ms`       | run                             | `failed`, kind `timeout` |
 * | is cancelled (heartbeat answer)        | run                             | `cancelled` |
 * | is still running at the drain deadline | run                             | `released` (the attempt does not count) |
 * | loses its lease                        | left to the next owner          | nothing: the job is someone else's |
 * | dies (`kill -9`)                       | run by the next worker that claims the job, before its handler | (the server's rescue) |
 *
 * A promise cannot be interrupted: on a stop the worker aborts `ctx.signal`, reports the
 * ending at once and ignores what the handler does afterwards. Pass `ctx.signal` to what the
 * handler awaits (fetch, timers) so it really stops.
 */

import { hostname } from "node:os";
import { randomBytes } from "node:crypto";

import { Http } from "./http.js";
import { ConflictError, Fatal, JobError, Snooze } from "./types.js";
import type { Job, Json } from "./types.js";

/** A handler: `(ctx, args) => result`. */
export type Handler = (ctx: JobContext, args: Json) => Promise<Json | void> | Json | void;
/** A durable cleanup: `(args) => void`. Cleanups may run more than once (a crash after the
 * run, before the report): make them idempotent. */
export type CleanupFn = (args: Json) => Promise<void> | void;

/** Tries of a durable cleanup before the job is stopped (failed, fatal) so none is lost. */
export const CLEANUP_TRIES = 3;
const MAX_CLAIM = 100;
const MAX_FINISH = 1000;

/** Options of a `Worker`. */
export interface WorkerOptions {
  /** The queue (default `default`). */
  queue?: string;
  /** Jobs run at once (default 10). */
  concurrency?: number;
  /** The bearer token the server requires, if any. */
  token?: string;
  /** Unique per worker process (default `node-<host>-<pid>-<random>`). */
  workerId?: string;
  /** Lease length (default 30000). */
  leaseMs?: number;
  /** Heartbeat period (default a third of the lease). */
  heartbeatMs?: number;
  /** How long in-flight jobs may run on after a stop before they are released (default 30000). */
  drainMs?: number;
  /** Long-poll wait of a claim (default 1000). */
  pollWaitMs?: number;
  /** Where the worker writes what goes wrong (default `console`). */
  logger?: Pick<Console, "info" | "warn" | "error">;
}

type Outcome = { outcome: string; [k: string]: unknown };
type Stop = "cancel" | "shutdown" | "lost" | "timeout";

class Lost extends Error {}

interface Run {
  job: Job;
  ctx: JobContext;
  done?: Promise<void>;
  stop?: Stop;
  abort: AbortController;
  wake?: () => void;
}

/** What a handler knows about its attempt and can do during it. */
export class JobContext {
  /** The job. */
  readonly job: Job;
  /** The job's id. */
  readonly id: string;
  /** The job's kind. */
  readonly kind: string;
  /** This attempt's number (1-based). */
  readonly attempt: number;
  /** Attempts allowed. */
  readonly maxAttempts: number;
  /** Aborted when the attempt is stopped (cancel requested, timeout, shutdown deadline, lease lost). */
  readonly signal: AbortSignal;
  /** Durable cleanups this attempt wrote down. */
  readonly deferred: Array<{ seq: number; name: string; args: Json }> = [];
  private last: Json | null;

  /** @internal */
  constructor(
    private readonly worker: Worker,
    job: Job,
    signal: AbortSignal,
  ) {
    this.job = job;
    this.id = job.id;
    this.kind = job.kind;
    this.attempt = job.attempt;
    this.maxAttempts = job.max_attempts;
    this.signal = signal;
    this.last = job.checkpoint ?? null;
  }

  /** The last checkpoint saved for this job (by this attempt or an earlier one), or `null`:
   * resume from it. */
  get checkpoint(): Json | null {
    return this.last;
  }

  /** The attempt was stopped: return soon. */
  get cancelled(): boolean {
    return this.signal.aborted;
  }

  /** Saves `state` durably; the next attempt starts with it as `ctx.checkpoint`. Throws
   * `ConflictError` when this worker no longer holds the attempt. */
  async saveCheckpoint(state: Json): Promise<void> {
    await this.worker.post(`/v1/jobs/${this.id}/checkpoint`, { worker_id: this.worker.workerId, attempt: this.attempt, state });
    this.last = state;
  }

  /** Writes a durable cleanup down with the job, before the work it undoes. It runs if the
   * attempt fails, is cancelled or is released — and, if this process dies, on the next
   * worker that claims the job. `name` must be registered with `worker.cleanup`. */
  async defer(name: string, args: Json = null): Promise<void> {
    if (!this.worker.hasCleanup(name)) {
      throw new Error(`no cleanup registered as ${JSON.stringify(name)}; register it with worker.cleanup(${JSON.stringify(name)}, fn)`);
    }
    const r = await this.worker.post<{ seq: number }>(`/v1/jobs/${this.id}/cleanups`, {
      worker_id: this.worker.workerId,
      attempt: this.attempt,
      name,
      args,
    });
    this.deferred.push({ seq: r.seq, name, args });
  }
}

/** Runs jobs from one queue.
 *
 * ```ts
 * const worker = new Worker("http://127.0.0.1:7878", { concurrency: 10 });
 * worker.job("resize", async (ctx, args) => ({ ok: true }));
 * await worker.run({ signals: true }); // until SIGTERM/SIGINT
 * ```
 */
export class Worker {
  readonly workerId: string;
  readonly queue: string;
  readonly concurrency: number;
  /** Counts, for tests and logs. */
  readonly stats = { completed: 0, failed: 0, released: 0, fenced: 0, cleanups: 0 };
  private readonly http: Http;
  private readonly leaseMs: number;
  private readonly heartbeatMs: number;
  private readonly drainMs: number;
  private readonly pollWaitMs: number;
  private readonly log: Pick<Console, "info" | "warn" | "error">;
  private readonly handlers = new Map<string, Handler>();
  private readonly cleanups = new Map<string, CleanupFn>();
  private readonly running = new Map<string, Run>();
  /** Attempts this worker holds on the server (running, or outcome not yet sent). */
  private readonly held = new Map<string, number>();
  private outbox: Array<Record<string, unknown>> = [];
  private outboxWake?: () => void;
  private slotWaiters: Array<() => void> = [];
  /** Slots promised to claims in flight. */
  private reserved = 0;
  private stopping = false;
  private stopWake?: () => void;
  private drainNow = false;
  private drainWake?: () => void;

  constructor(baseUrl: string, options: WorkerOptions = {}) {
    this.http = new Http(baseUrl, options.token);
    this.queue = options.queue ?? "default";
    this.concurrency = options.concurrency ?? 10;
    if (this.concurrency < 1) throw new Error("concurrency must be at least 1");
    this.workerId = options.workerId ?? `node-${hostname().replace(/[^A-Za-z0-9_.-]/g, "-").slice(0, 60) || "host"}-${process.pid}-${randomBytes(3).toString("hex")}`;
    this.leaseMs = options.leaseMs ?? 30_000;
    this.heartbeatMs = options.heartbeatMs ?? this.leaseMs / 3;
    this.drainMs = options.drainMs ?? 30_000;
    this.pollWaitMs = options.pollWaitMs ?? 1000;
    this.log = options.logger ?? console;
  }

  /** Registers `handler` for jobs of `kind`. */
  job(kind: string, handler: Handler): this {
    this.handlers.set(kind, handler);
    return this;
  }

  /** Registers the durable cleanup `name` (see `ctx.defer`). */
  cleanup(name: string, fn: CleanupFn): this {
    this.cleanups.set(name, fn);
    return this;
  }

  /** @internal */
  hasCleanup(name: string): boolean {
    return this.cleanups.has(name);
  }

  /** @internal */
  post<T>(path: string, body: unknown): Promise<T> {
    return this.http.call<T>("POST", path, body);
  }

  /** Stops claiming; in-flight jobs may finish within `drainMs`, the rest are released (back
   * to the queue, the attempt does not count). A second call drains at once. */
  stop(): void {
    if (this.stopping) {
      this.drainNow = true;
      this.drainWake?.();
    }
    this.stopping = true;
    this.stopWake?.();
    this.wakeSlots();
  }

  private wakeSlots(): void {
    const waiters = this.slotWaiters;
    this.slotWaiters = [];
    for (const w of waiters) w();
  }

  /** Runs until `stop()` (or SIGTERM/SIGINT with `signals: true`); resolves once drained and
   * every outcome is reported. */
  async run(options: { signals?: boolean } = {}): Promise<void> {
    if (this.handlers.size === 0) throw new Error("register at least one handler with worker.job(kind, fn)");
    const onSignal = (): void => this.stop();
    if (options.signals) {
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    }
    const sender = this.sendLoop();
    const heart = setInterval(() => void this.heartbeat(), this.heartbeatMs);
    try {
      // Several claims in flight when the worker has many slots: one claim round trip per 100
      // jobs would otherwise bound a worker of short jobs.
      const claimers = Math.min(4, Math.ceil(this.concurrency / MAX_CLAIM));
      await Promise.all(Array.from({ length: claimers }, () => this.claimLoop()));
      await this.drain();
      this.outbox.push({ flush: true });
      this.outboxWake?.();
      await sender;
    } finally {
      clearInterval(heart);
      if (options.signals) {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
    }
  }

  private async drain(): Promise<void> {
    const deadline = Date.now() + this.drainMs;
    while (this.running.size > 0 && !this.drainNow) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        ...[...this.running.values()].map((r) => r.done),
        new Promise<void>((res) => {
          timer = setTimeout(res, left);
          this.drainWake = res;
        }),
      ]);
      clearTimeout(timer);
    }
    const rest = [...this.running.values()];
    if (rest.length) this.log.warn(`mend worker ${this.workerId}: drain deadline passed, releasing ${rest.length} job(s)`);
    for (const r of rest) this.stopRun(r, "shutdown");
    await Promise.all(rest.map((r) => r.done));
  }

  private async claimLoop(): Promise<void> {
    let backoff = 100;
    while (!this.stopping) {
      const free = this.concurrency - this.running.size - this.reserved;
      // Claim in batches: waiting for a quarter of the slots costs short jobs nothing and
      // saves a round trip per job.
      if (free <= 0 || (this.running.size > 0 && free < Math.ceil(this.concurrency / 4))) {
        await new Promise<void>((res) => this.slotWaiters.push(res));
        continue;
      }
      let jobs: Job[];
      const limit = Math.min(free, MAX_CLAIM);
      this.reserved += limit;
      try {
        const r = await this.post<{ jobs: Job[] }>("/v1/workers/claim", {
          worker_id: this.workerId,
          queue: this.queue,
          kinds: [...this.handlers.keys()].sort(),
          limit,
          wait_ms: this.pollWaitMs,
          lease_ms: this.leaseMs,
        });
        jobs = r.jobs;
        backoff = 100;
      } catch (e) {
        this.reserved -= limit;
        this.log.warn(`mend worker ${this.workerId}: claim failed (${String(e)}); retrying in ${backoff} ms`);
        await new Promise<void>((res) => {
          const t = setTimeout(res, backoff);
          this.stopWake = () => {
            clearTimeout(t);
            res();
          };
        });
        backoff = Math.min(backoff * 2, 5000);
        continue;
      }
      this.reserved -= limit;
      this.wakeSlots(); // another claimer may use what this one did not fill
      for (const job of jobs) {
        this.held.set(job.id, job.attempt);
        if (this.stopping) {
          // Claimed while stopping: hand it straight back.
          this.report(job, { outcome: "released" });
          continue;
        }
        this.start(job);
      }
    }
  }

  private start(job: Job): void {
    const abort = new AbortController();
    const run: Run = { job, abort, ctx: new JobContext(this, job, abort.signal) };
    this.running.set(job.id, run);
    run.done = this.execute(run);
  }

  private stopRun(run: Run, why: Stop): void {
    run.stop ??= why;
    if (!run.abort.signal.aborted) run.abort.abort(new Error(`attempt stopped: ${why}`));
    run.wake?.();
  }

  private async execute(run: Run): Promise<void> {
    let outcome: Outcome | undefined;
    try {
      outcome = await this.attempt(run);
    } catch (e) {
      if (!(e instanceof Lost)) {
        this.log.error(`mend worker ${this.workerId}: job ${run.job.id}: the worker failed`, e);
        outcome = { outcome: "failed", kind: "panic", error: `worker error: ${String(e)}`, traceback: (e as Error)?.stack ?? "" };
      }
    } finally {
      this.running.delete(run.job.id);
      this.wakeSlots();
    }
    if (outcome === undefined || run.stop === "lost") {
      this.held.delete(run.job.id);
      return;
    }
    this.report(run.job, outcome);
  }

  private report(job: Job, outcome: Outcome): void {
    this.outbox.push({ id: job.id, attempt: job.attempt, ...outcome });
    this.outboxWake?.();
  }

  private async attempt(run: Run): Promise<Outcome | undefined> {
    const { job, ctx } = run;
    // A lost attempt's durable cleanups run before this attempt does anything.
    if (job.pending_cleanups?.length) {
      const pending = [...job.pending_cleanups].sort((a, b) => b.seq - a.seq);
      const failed = await this.runCleanups(run, pending);
      if (failed) return { outcome: "failed", fatal: true, error: failed };
      if (job.stop_after_cleanups) return { outcome: "failed", fatal: true, error: job.stop_after_cleanups };
    }
    const outcome = await this.call(run);
    if (outcome === undefined) return undefined;
    // Failed, cancelled or released: the attempt's own durable cleanups run now.
    if (["failed", "cancelled", "released"].includes(outcome.outcome) && ctx.deferred.length > 0) {
      const own = [...ctx.deferred].reverse().map((c) => ({ ...c, attempt: ctx.attempt }));
      const failed = await this.runCleanups(run, own);
      if (failed) return { outcome: "failed", fatal: true, error: `${String(outcome["error"] ?? outcome.outcome)}; ${failed}` };
    }
    return outcome;
  }

  private async call(run: Run): Promise<Outcome | undefined> {
    const { job, ctx } = run;
    const handler = this.handlers.get(job.kind);
    if (!handler) return { outcome: "failed", error: `no handler for kind ${JSON.stringify(job.kind)} on worker ${this.workerId}` };
    if (job.cancel_requested) this.stopRun(run, "cancel");
    if (run.stop) return this.stopped(run);
    const timeoutMs = job.timeout_ms ?? undefined;
    let timer: NodeJS.Timeout | undefined;
    const stopped = new Promise<"stopped">((res) => {
      run.wake = () => res("stopped");
      if (timeoutMs) timer = setTimeout(() => this.stopRun(run, "timeout"), timeoutMs);
    });
    try {
      const result = await Promise.race([Promise.resolve().then(() => handler(ctx, job.args)), stopped]);
      if (result === "stopped" && run.stop) return this.stopped(run);
      return { outcome: "completed", result: result === undefined ? null : result };
    } catch (e) {
      if (run.stop) return this.stopped(run);
      if (e instanceof Snooze) return { outcome: "snoozed", delay_ms: Math.max(0, Math.round(e.delayMs)) };
      if (e instanceof Fatal) return { outcome: "failed", fatal: true, error: e.message || e.name };
      if (e instanceof JobError) {
        const out: Outcome = { outcome: "failed", error: e.message || e.name };
        if (e.options.retryAfterMs !== undefined) out["retry_after_ms"] = Math.max(0, Math.round(e.options.retryAfterMs));
        return out;
      }
      const err = e instanceof Error ? e : new Error(String(e));
      return { outcome: "failed", kind: "panic", error: `${err.name}: ${err.message}`, traceback: err.stack ?? "" };
    } finally {
      clearTimeout(timer);
      run.wake = undefined;
    }
  }

  private stopped(run: Run): Outcome | undefined {
    switch (run.stop) {
      case "cancel":
        return { outcome: "cancelled" };
      case "shutdown":
        return { outcome: "released" };
      case "timeout":
        return { outcome: "failed", kind: "timeout", error: `timed out after ${run.job.timeout_ms} ms` };
      default:
        return undefined; // lost: the job is someone else's now
    }
  }

  /** Runs durable cleanups in order, reporting each one done; returns what failed (empty: all
   * ran). Throws `Lost` when the worker no longer holds the job. */
  private async runCleanups(run: Run, list: Array<{ seq: number; name: string; args: Json; attempt: number }>): Promise<string> {
    const failed: string[] = [];
    for (const c of list) {
      const fn = this.cleanups.get(c.name);
      const started = Date.now();
      let last = "";
      let ran = false;
      for (let n = 0; n < CLEANUP_TRIES; n++) {
        if (n) await new Promise((res) => setTimeout(res, 100 * 4 ** (n - 1)));
        if (!fn) {
          last = `no cleanup registered as ${JSON.stringify(c.name)} on worker ${this.workerId}`;
          break;
        }
        try {
          await fn(c.args);
          ran = true;
          break;
        } catch (e) {
          last = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
          this.log.warn(`mend worker ${this.workerId}: job ${run.job.id}: durable cleanup ${c.name} failed (try ${n + 1}): ${last}`);
        }
      }
      if (!ran) {
        failed.push(`durable cleanup \`${c.name}\` (written down by attempt ${c.attempt}) failed: ${last}`);
        continue;
      }
      this.stats.cleanups++;
      try {
        await this.post(`/v1/jobs/${run.job.id}/cleanups/${c.seq}/done`, {
          worker_id: this.workerId,
          attempt: run.job.attempt,
          duration_ms: Date.now() - started,
        });
      } catch (e) {
        if (e instanceof ConflictError) throw new Lost();
        // It ran; it stays written down and runs again later (cleanups are idempotent).
        this.log.warn(`mend worker ${this.workerId}: job ${run.job.id}: reporting cleanup ${c.name} failed: ${String(e)}`);
      }
    }
    return failed.length ? `cleanup failed: ${failed.join("; ")}. The job is stopped so no cleanup is lost; fix them, then retry the job` : "";
  }

  private async sendLoop(): Promise<void> {
    for (;;) {
      if (this.outbox.length === 0) await new Promise<void>((res) => (this.outboxWake = res));
      const batch = this.outbox.splice(0, MAX_FINISH);
      const flush = batch.some((b) => b["flush"]);
      const items = batch.filter((b) => !b["flush"]);
      if (items.length) await this.send(items);
      for (const item of items) this.held.delete(String(item["id"]));
      if (flush && this.outbox.length === 0) return;
      if (flush) this.outbox.push({ flush: true });
    }
  }

  private async send(batch: Array<Record<string, unknown>>): Promise<void> {
    let delay = 100;
    for (let n = 0; n < 8; n++) {
      let r: { applied: string[]; fenced: string[] };
      try {
        r = await this.post("/v1/workers/finish", { worker_id: this.workerId, outcomes: batch });
      } catch (e) {
        // Retrying is safe: an outcome already recorded is fenced the second time.
        this.log.warn(`mend worker ${this.workerId}: reporting ${batch.length} outcome(s) failed (${String(e)}); retrying`);
        await new Promise((res) => setTimeout(res, delay));
        delay = Math.min(delay * 2, 5000);
        continue;
      }
      const fenced = new Set(r.fenced);
      for (const item of batch) {
        if (fenced.has(String(item["id"]))) {
          this.stats.fenced++;
          if (n === 0) this.log.warn(`mend worker ${this.workerId}: job ${String(item["id"])}: outcome refused, the worker no longer holds attempt ${String(item["attempt"])}`);
        } else if (item["outcome"] === "completed") this.stats.completed++;
        else if (item["outcome"] === "released") this.stats.released++;
        else this.stats.failed++;
      }
      return;
    }
    this.log.error(`mend worker ${this.workerId}: gave up reporting ${batch.length} outcome(s); their leases will expire and the server's rescue retries them`);
  }

  private async heartbeat(): Promise<void> {
    if (this.held.size === 0) return;
    const jobs = [...this.held].map(([id, attempt]) => ({ id, attempt }));
    let r: { lost: Array<{ id: string; attempt: number }>; cancel_requested: string[] };
    try {
      r = await this.post("/v1/workers/heartbeat", { worker_id: this.workerId, jobs, lease_ms: this.leaseMs });
    } catch (e) {
      this.log.warn(`mend worker ${this.workerId}: heartbeat failed: ${String(e)}`);
      return;
    }
    for (const lost of r.lost) {
      const run = this.running.get(lost.id);
      if (run && run.job.attempt === lost.attempt) {
        this.log.warn(`mend worker ${this.workerId}: job ${lost.id}: lease lost; stopping it`);
        this.stopRun(run, "lost");
      }
    }
    for (const id of r.cancel_requested) {
      const run = this.running.get(id);
      if (run) this.stopRun(run, "cancel");
    }
  }
}
