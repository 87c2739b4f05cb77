/** The producer against a real server. */

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { Client, InvalidRequestError, NotFoundError } from "../src/index.js";
import { startServer } from "./helpers.js";
import type { Server } from "./helpers.js";

let server: Server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server.stop();
});

test("enqueue, get, cancel and retry", async () => {
  const mend = new Client(server.url);
  const job = await mend.enqueue("ts.resize", { w: 100 }, { queue: "ts-producer", priority: 2, max_attempts: 3, tags: ["a"], delay_ms: 60_000 });
  assert.equal(job.kind, "ts.resize");
  assert.deepEqual(job.args, { w: 100 });
  assert.equal(job.state, "scheduled");
  assert.equal(job.max_attempts, 3);
  assert.equal(job.duplicate, false);
  const got = await mend.get(job.id);
  assert.equal(got.queue, "ts-producer");
  assert.equal(got.priority, 2);

  const key = `order-${randomUUID()}`;
  const first = await mend.enqueue("ts.resize", { n: 1 }, { queue: "ts-producer", idempotency_key: key });
  const again = await mend.enqueue("ts.resize", { n: 2 }, { queue: "ts-producer", idempotency_key: key });
  assert.equal(again.id, first.id);
  assert.equal(again.duplicate, true);
  assert.deepEqual(again.args, { n: 1 });

  const unique = { by_args: ["customer"], per_queue: true };
  const one = await mend.enqueue("ts.report", { customer: job.id }, { queue: "ts-producer", unique });
  const two = await mend.enqueue("ts.report", { customer: job.id, x: 1 }, { queue: "ts-producer", unique });
  assert.equal(two.id, one.id);
  assert.equal(two.duplicate, true);

  const many = await mend.enqueueMany([0, 1, 2].map((i) => ({ kind: "ts.a", args: { i }, queue: "ts-producer", delay_ms: 60_000 })));
  assert.deepEqual(
    many.map((j) => j.args),
    [{ i: 0 }, { i: 1 }, { i: 2 }],
  );
  assert.equal((await mend.cancel(many[0]!.id)).state, "cancelled");
  assert.equal((await mend.retry(many[0]!.id)).state, "available");

  await assert.rejects(mend.get(randomUUID()), NotFoundError);
  await assert.rejects(mend.enqueue("no spaces allowed"), (e: unknown) => e instanceof InvalidRequestError && e.problem["field"] === "kind");
});

test("a thousand jobs in one call", async () => {
  const mend = new Client(server.url);
  const jobs = await mend.enqueueMany(Array.from({ length: 1000 }, (_, i) => ({ kind: "ts.bulk", args: { i }, queue: "ts-bulk" })));
  assert.equal(jobs.length, 1000);
  assert.equal(new Set(jobs.map((j) => j.id)).size, 1000);
  assert.deepEqual(jobs[999]!.args, { i: 999 });
  const ids = await mend.enqueueManyIds(Array.from({ length: 1500 }, (_, i) => ({ kind: "ts.bulk", args: { i }, queue: "ts-bulk" })));
  assert.equal(new Set(ids).size, 1500, "two requests of at most 1000");
  assert.deepEqual((await mend.get(ids[1499]!)).args, { i: 1499 });
});
