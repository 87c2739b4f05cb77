/**
 * A worker process for the signal tests: `node worker-proc.js URL QUEUE DIR`. Handlers write
 * what they did into files under DIR, so the test can see it after the process is gone.
 */

import { appendFileSync, existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { Worker } from "../src/index.js";

const [url, queue, out] = process.argv.slice(2) as [string, string, string];
const worker = new Worker(url, { queue, concurrency: 4, leaseMs: 1000, heartbeatMs: 250, drainMs: 1500, pollWaitMs: 200 });

worker.cleanup("remove", (args) => {
  const path = (args as { path: string }).path;
  rmSync(path, { force: true });
  appendFileSync(join(out, "cleanups.log"), `remove ${path}\n`);
});

worker.job("ts.kill", async (ctx, args) => {
  const path = (args as { path: string }).path;
  if (ctx.attempt > 1) return { attempt: ctx.attempt, file_left: existsSync(path) };
  // Written down before the work it undoes.
  await ctx.defer("remove", { path });
  writeFileSync(path, "temp");
  writeFileSync(join(out, `started-${ctx.id}`), "");
  await sleep(60_000, undefined, { signal: ctx.signal });
  return null;
});

worker.job("ts.term", async (ctx, args) => {
  const a = args as { path: string; sleep: number };
  await ctx.defer("remove", { path: a.path });
  writeFileSync(a.path, "temp");
  writeFileSync(join(out, `started-${ctx.id}`), "");
  await sleep(a.sleep, undefined, { signal: ctx.signal });
  return { slept: a.sleep };
});

await worker.run({ signals: true });
writeFileSync(join(out, "exited"), JSON.stringify(worker.stats));
