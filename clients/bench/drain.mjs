// Client benchmark, Node: enqueue N no-op jobs through the client (1000 per call), then drain
// them with one Node worker process. Prints one JSON line like the peers' harness.
//
//     node drain.mjs URL N [CONCURRENCY]
import { Client, Worker } from "../typescript/dist/src/index.js";

const [url, nArg, cArg] = process.argv.slice(2);
const n = Number(nArg);
const concurrency = Number(cArg ?? 200);
const queue = "bench-node";
const mend = new Client(url);
const calls = [];
const t0 = performance.now();
for (let i = 0; i < n; i += 1000) {
  const batch = [];
  for (let j = i; j < Math.min(n, i + 1000); j++) batch.push({ kind: "bench.noop", args: { i: j }, queue });
  const t = performance.now();
  await mend.enqueueManyIds(batch);
  calls.push(batch.length / ((performance.now() - t) / 1000));
}
const enqueueS = (performance.now() - t0) / 1000;
const worker = new Worker(url, { queue, concurrency, pollWaitMs: 200 });
worker.job("bench.noop", async () => null);
const t1 = performance.now();
const running = worker.run();
while (worker.stats.completed < n) await new Promise((r) => setTimeout(r, 10));
const drainS = (performance.now() - t1) / 1000;
worker.stop();
await running;
calls.sort((a, b) => a - b);
console.log(JSON.stringify({
  peer: "mend-node-client", jobs: n, config: `concurrency ${concurrency}`,
  enqueue_per_sec: Math.round(n / enqueueS), jobs_per_sec: Math.round(n / drainS),
  end_to_end_per_sec: Math.round(n / (enqueueS + drainS)),
  enqueue_1000_per_call_median: Math.round(calls[Math.floor(calls.length / 2)]),
  enqueue_s: +enqueueS.toFixed(3), drain_s: +drainS.toFixed(3),
  processed: worker.stats.completed, ok: worker.stats.completed === n,
}));
