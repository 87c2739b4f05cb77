/**
 * The worker against a real server: every way an attempt ends, checkpoints, durable cleanups,
 * cancellation through the heartbeat, SIGTERM and SIGKILL of a worker process.
 */

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import { Client, Fatal, JobError, Snooze, Worker } from "../src/index.js";
import type { Job, Json } from "../src/index.js";
import { startServer, waitFor } from "./helpers.js";
import type { Server } from "./helpers.js";

const here = dirname(fileURLToPath(import.meta.url));
let server: Server;
let mend: Client;
before(async () => {
  server = await startServer();
  mend = new Client(server.url);
});
after(async () => {
  await server.stop();
});

async function waitState(id: string, ...states: string[]): Promise<Job> {
  let job: Job | undefined;
  await waitFor(async () => {
    job = await mend.get(id);
    return states.includes(job.state);
  }).catch(() => assert.fail(`job ${id} is ${job?.state}, not ${states.join("/")}: ${JSON.stringify(job)}`));
  return job!;
}

const quiet = { info: () => {}, warn: () => {}, error: console.error };

test("every ending is recorded", async () => {
  const q = `ts-endings-${randomUUID().slice(0, 6)}`;
  const worker = new Worker(server.url, { queue: q, concurrency: 8, pollWaitMs: 200, logger: quiet });
  const marks: Json[] = [];
  worker.cleanup("mark", (args) => {
    marks.push(args);
  });
  worker.job("ok", async (_ctx, args) => ({ doubled: (args as { n: number }).n * 2 }));
  worker.job("boom", async () => {
    throw new TypeError("bad pixel");
  });
  worker.job("err", async () => {
    throw new JobError("upstream 503", { retryAfterMs: 60_000 });
  });
  worker.job("fatal", async (ctx) => {
    await ctx.defer("mark", { who: "fatal" });
    throw new Fatal("bad input");
  });
  worker.job("snooze", () => {
    throw new Snooze(60_000);
  });
  worker.job("resume", async (ctx) => {
    if (ctx.checkpoint === null) {
      await ctx.saveCheckpoint({ step: 1 });
      throw new JobError("again", { retryAfterMs: 0 });
    }
    return { from: ctx.checkpoint, attempt: ctx.attempt };
  });
  worker.job("slow", async (ctx) => {
    await ctx.defer("mark", { who: "slow" });
    await sleep(30_000, undefined, { signal: ctx.signal });
  });
  const running = worker.run();
  try {
    const kinds = ["ok", "boom", "err", "fatal", "snooze", "resume"];
    const jobs = await mend.enqueueMany([
      ...kinds.map((kind) => ({ kind, args: { n: 21 }, queue: q, max_attempts: 3 })),
      { kind: "slow", queue: q, timeout_ms: 300, max_attempts: 1 },
    ]);
    const id = (i: number): string => jobs[i]!.id;

    let j = await waitState(id(0), "completed");
    assert.deepEqual(j.result, { doubled: 42 });

    j = await waitState(id(1), "retryable");
    assert.equal(j.errors[0]!.kind, "panic");
    assert.match(j.errors[0]!.message, /^TypeError: bad pixel/);
    assert.match(j.errors[0]!.message, /worker\.test\.js/, "with the stack");

    j = await waitState(id(2), "retryable");
    assert.equal(j.errors[0]!.kind, "error");
    assert.equal(j.errors[0]!.message, "upstream 503");
    const delay = Date.parse(j.run_at) - Date.parse(j.errors[0]!.at);
    assert.ok(delay >= 59_000 && delay <= 61_000, `retry in ~60 s, got ${delay}`);

    j = await waitState(id(3), "discarded");
    assert.equal(j.errors[0]!.message, "bad input");
    assert.ok(!j.pending_cleanups?.length, "no cleanup left");
    assert.ok(marks.some((m) => JSON.stringify(m) === '{"who":"fatal"}'), "a failed attempt's durable cleanup ran");

    j = await waitState(id(4), "scheduled");
    assert.equal(j.attempt, 0, "a snooze does not use an attempt");
    assert.deepEqual(j.errors, []);

    j = await waitState(id(5), "completed");
    assert.deepEqual(j.result, { from: { step: 1 }, attempt: 2 });

    j = await waitState(id(6), "discarded");
    assert.equal(j.errors[0]!.kind, "timeout");
    assert.ok(marks.some((m) => JSON.stringify(m) === '{"who":"slow"}'));
    assert.ok(j.timeline?.some((e) => e.event === "cleanup"));
  } finally {
    worker.stop();
    await running;
  }
  assert.equal(worker.stats.fenced, 0);
});

test("a cancel reaches a running job through the heartbeat", async () => {
  const q = `ts-cancel-${randomUUID().slice(0, 6)}`;
  const worker = new Worker(server.url, { queue: q, leaseMs: 3000, heartbeatMs: 100, pollWaitMs: 200, logger: quiet });
  const marks: Json[] = [];
  let started = false;
  worker.cleanup("mark", async (args) => {
    marks.push(args);
  });
  worker.job("hang", async (ctx) => {
    await ctx.defer("mark", "hang");
    started = true;
    await sleep(60_000, undefined, { signal: ctx.signal });
  });
  const running = worker.run();
  try {
    const job = await mend.enqueue("hang", null, { queue: q });
    await waitFor(() => started);
    const t = Date.now();
    await mend.cancel(job.id);
    const j = await waitState(job.id, "cancelled");
    assert.ok(Date.now() - t < 5000);
    assert.equal(j.errors[0]!.kind, "cancelled");
    assert.deepEqual(marks, ["hang"]);
  } finally {
    worker.stop();
    await running;
  }
});

function spawnWorker(queue: string, out: string) {
  const log = openSync(join(out, "worker.log"), "a");
  return spawn(process.execPath, [join(here, "worker-proc.js"), server.url, queue, out], { stdio: ["ignore", log, log] });
}

function exited(p: ReturnType<typeof spawnWorker>): Promise<number | null> {
  return new Promise((res) => {
    if (p.exitCode !== null || p.signalCode !== null) return res(p.exitCode);
    p.on("exit", (code) => res(code));
  });
}

test("SIGTERM: finish in time, release the rest", async () => {
  const q = `ts-term-${randomUUID().slice(0, 6)}`;
  const dir = mkdtempSync(join(tmpdir(), "mend-ts-term-"));
  const quick = await mend.enqueue("ts.term", { path: join(dir, "q"), sleep: 700 }, { queue: q });
  const long = await mend.enqueue("ts.term", { path: join(dir, "l"), sleep: 60_000 }, { queue: q });
  const proc = spawnWorker(q, dir);
  try {
    await waitFor(() => existsSync(join(dir, `started-${quick.id}`)) && existsSync(join(dir, `started-${long.id}`)));
    proc.kill("SIGTERM");
    const code = await Promise.race([exited(proc), sleep(15_000, "timeout")]);
    assert.equal(code, 0, "exits cleanly within the drain");
  } finally {
    proc.kill("SIGKILL");
  }
  assert.ok(existsSync(join(dir, "exited")));
  const q1 = await mend.get(quick.id);
  assert.equal(q1.state, "completed");
  assert.deepEqual(q1.result, { slept: 700 });
  assert.ok(existsSync(join(dir, "q")), "a completed attempt's cleanup does not run");
  const l1 = await mend.get(long.id);
  assert.equal(l1.state, "available");
  assert.equal(l1.attempt, 0, "released without using an attempt");
  assert.deepEqual(l1.errors, []);
  assert.ok(!existsSync(join(dir, "l")), "the released attempt's durable cleanup ran");
});

test("SIGKILL mid-job: the next worker runs the durable cleanup", async () => {
  const q = `ts-kill-${randomUUID().slice(0, 6)}`;
  const dir = mkdtempSync(join(tmpdir(), "mend-ts-kill-"));
  const temp = join(dir, "temp-file");
  const job = await mend.enqueue("ts.kill", { path: temp }, { queue: q });
  const first = spawnWorker(q, dir);
  try {
    await waitFor(() => existsSync(join(dir, `started-${job.id}`)));
    assert.ok(existsSync(temp));
    first.kill("SIGKILL");
    await exited(first);
  } finally {
    first.kill("SIGKILL");
  }
  assert.ok(existsSync(temp), "kill -9 ran nothing");
  const second = spawnWorker(q, dir);
  try {
    await waitFor(async () => (await mend.get(job.id)).state === "completed", 40_000, 200);
  } finally {
    second.kill("SIGTERM");
    await Promise.race([exited(second), sleep(15_000)]);
    second.kill("SIGKILL");
  }
  const done = await mend.get(job.id);
  assert.ok(!existsSync(temp), "the next worker ran the durable cleanup");
  assert.deepEqual(done.result, { attempt: 2, file_left: false }, "cleanup before the handler");
  assert.equal(done.errors[0]!.kind, "lost");
  assert.equal(readFileSync(join(dir, "cleanups.log"), "utf8"), `remove ${temp}\n`);
  assert.ok(done.timeline?.some((e) => e.event === "cleanup" && (e.detail ?? "").includes("remove")));
});
