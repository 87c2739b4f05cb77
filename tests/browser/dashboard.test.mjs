// The dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core),
// against real `mend serve` processes on SQLite. Jobs are put in every state by doing what a
// user does: enqueueing through the API, running the built-in kinds and the drill kind
// (which panics or fails on request), a remote worker that vanishes, and a node killed with
// SIGKILL. Every page is checked against the API's answers.
//
// Run: npm test --prefix tests/browser (after `cargo build -p mend-cli`; MEND_BIN names
// another binary). MEND_SCREENSHOT_DIR=docs/screenshots refreshes the README's pictures.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import http from "node:http";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const BIN = process.env.MEND_BIN ?? path.join(repo, "target/debug/mend");
const CHROMIUM = process.env.MEND_CHROMIUM ?? "/usr/bin/chromium";
const TOKEN = "browser-test-token-0123456789abcdef";
let VIEWER_TOKEN; // a stored token with the viewer role (`mend tokens create`)
const SHOTS = process.env.MEND_SCREENSHOT_DIR;

const dir = mkdtempSync(path.join(tmpdir(), "mend-browser-"));
const children = [];

/** Starts `mend serve` with `args`; resolves with its URL and node id once it listens. */
function serve(name, args, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(BIN, ["serve", "--bind", "127.0.0.1:0", ...args], {
      env: { ...process.env, RUST_LOG: "warn", ...env },
      // stdin stays open: a drill node exits when it closes (its parent is gone).
      stdio: ["pipe", "pipe", "pipe"],
    });
    children.push(child);
    let out = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`${name} did not start in 30 s:\n${err}`)), 30_000);
    child.stdout.on("data", (d) => {
      out += d;
      const url = /mend listening on (\S+)/.exec(out);
      const node = /mend node (\S+)/.exec(out);
      if (url && node) {
        clearTimeout(timer);
        resolve({ url: url[1], node: node[1], child });
      }
    });
    child.stderr.on("data", (d) => { err += d; });
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`${name} exited (${code}):\n${err}`)); });
  });
}

/** The API of the server at `base`, with the token. */
function api(base) {
  return async (method, p, body) => {
    const resp = await fetch(base + p, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await resp.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = text; }
    if (resp.status >= 400) throw new Error(`${method} ${p} → ${resp.status}: ${text}`);
    return json;
  };
}

async function waitFor(what, fn, ms = 20_000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
}

let browser;
let main; // the server most tests use
let call;
const jobs = {}; // name → job id

async function enqueue(name, body) {
  const j = await call("POST", "/v1/jobs", body);
  jobs[name] = j.id;
  return j;
}

const stateOf = async (id) => (await call("GET", `/v1/jobs/${id}`)).state;

before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  VIEWER_TOKEN = JSON.parse(execFileSync(BIN, [
    "tokens", "create", "--name", "browser-viewer", "--role", "viewer", "--json",
    "--database", `sqlite://${path.join(dir, "main.db")}`,
  ]).toString()).token;
  main = await serve("main", [
    "--database", `sqlite://${path.join(dir, "main.db")}`,
    "--token", TOKEN,
    "--queues", "default=4,busy=1,limited=4,held=1",
    "--drill-dir", path.join(dir, "drill"),
    // The drill kind also as the named version v2: the rollout test rolls it out.
    "--drill-version", "v2",
  ]);
  call = api(main.url);

  // Completed.
  for (let i = 0; i < 3; i++) await enqueue(`done${i}`, { kind: "noop", args: {}, tags: ["batch"] });
  // Panicked on its only attempt: discarded, with the panic and its cleanup in the timeline.
  await enqueue("panicked", { kind: "mend.drill", args: { run: "ui", work_ms: 10, faults: ["panic"] }, max_attempts: 1 });
  // Failed once, then completed (by a remote worker).
  await enqueue("retried", { kind: "remote.flaky", args: {} });
  for (const outcome of ["fail", "complete"]) {
    const c = await waitFor("a flaky job to claim", async () => {
      const r = await call("POST", "/v1/workers/claim", { worker_id: "w-flaky", kinds: ["remote.flaky"], lease_ms: 30_000 });
      return r.jobs.length ? r.jobs[0] : null;
    });
    const body = outcome === "fail"
      ? { worker_id: "w-flaky", attempt: c.attempt, error: "upstream timed out", retry_after_ms: 1 }
      : { worker_id: "w-flaky", attempt: c.attempt, result: { ok: true } };
    await call("POST", `/v1/jobs/${c.id}/${outcome}`, body);
  }
  // Running for a minute in a queue of one slot, and three waiting behind it.
  await enqueue("busy-running", { kind: "noop", args: { sleep_ms: 600_000 }, queue: "busy" });
  await waitFor("the busy job to run", async () => (await stateOf(jobs["busy-running"])) === "running");
  for (let i = 0; i < 3; i++) await enqueue(`busy-waiting${i}`, { kind: "noop", args: {}, queue: "busy" });
  // A job to cancel from the dashboard while it runs.
  await enqueue("to-cancel", { kind: "noop", args: { sleep_ms: 600_000 } });
  // Scheduled for later.
  await enqueue("scheduled", { kind: "noop", args: {}, delay_ms: 3_600_000 });
  // A paused queue holds its job.
  await call("POST", "/v1/queues/held/pause");
  await enqueue("paused", { kind: "noop", args: {}, queue: "held" });
  // No node serves this kind; its args carry a secret.
  await enqueue("unserved", { kind: "remote.resize", args: { image: "cat.png", api_key: "sk-live-123" } });
  // A per-queue concurrency limit of one holds the second job.
  await call("PUT", "/v1/limits/one-at-a-time", { queue: "limited", concurrency: 1 });
  await enqueue("limit-running", { kind: "noop", args: { sleep_ms: 600_000 }, queue: "limited" });
  await waitFor("the limited job to run", async () => (await stateOf(jobs["limit-running"])) === "running");
  await enqueue("limit-held", { kind: "noop", args: {}, queue: "limited" });
  // A remote worker fails a job with a long retry delay: retryable.
  await enqueue("retry-later", { kind: "remote.thumb", args: {} });
  const c1 = await call("POST", "/v1/workers/claim", { worker_id: "w-fail", kinds: ["remote.thumb"], lease_ms: 30_000 });
  assert.equal(c1.jobs.length, 1);
  await call("POST", `/v1/jobs/${c1.jobs[0].id}/fail`, { worker_id: "w-fail", attempt: c1.jobs[0].attempt, error: "thumbnailer unreachable", retry_after_ms: 3_600_000 });
  // A remote worker claims with a short lease and vanishes: the job is rescued.
  await enqueue("rescued", { kind: "remote.scan", args: {} });
  const c2 = await call("POST", "/v1/workers/claim", { worker_id: "w-gone", kinds: ["remote.scan"], lease_ms: 1_000 });
  assert.equal(c2.jobs.length, 1);

  let seen = [];
  await waitFor("jobs to settle (done0-2, panicked, retried, rescued)", async () => {
    const s = await Promise.all(["done0", "done1", "done2", "panicked", "retried", "rescued"].map((n) => stateOf(jobs[n])));
    seen = s;
    return s.slice(0, 3).every((x) => x === "completed") && s[3] === "discarded" && s[4] === "completed" && s[5] !== "running";
  }, 30_000).catch((e) => { throw new Error(`${e.message}; states: ${seen.join(", ")}`); });
});

after(async () => {
  await browser?.close();
  for (const c of children) c.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

/** A logged-in page on the main server (as admin, or with `token`'s role). */
async function loggedIn(token = TOKEN) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(main.url + "/");
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(main.url + "/"), page.click("button[type=submit]")]);
  return { context, page };
}

async function shot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

test("without a session the dashboard asks for the token, and a wrong one is refused", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const resp = await page.goto(main.url + "/jobs?state=running");
  assert.equal(new URL(page.url()).pathname, "/login");
  assert.equal(resp.status(), 200);
  await page.fill("#token", "not-the-token");
  await page.click("button[type=submit]");
  assert.match(await page.textContent("[role=alert]"), /not this server's/);
  await page.fill("#token", TOKEN);
  await Promise.all([page.waitForURL(/\/jobs\?state=running$/), page.click("button[type=submit]")]);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "mend_session");
  assert.ok(session, "a session cookie is set");
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, "Strict");
  // The API still wants its bearer token: the cookie is not an API credential.
  const apiResp = await page.request.get(main.url + "/v1/jobs");
  assert.equal(apiResp.status(), 401);
  // Every page carries a strict CSP.
  const csp = (await page.request.get(main.url + "/")).headers()["content-security-policy"];
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  await context.close();
});

test("the overview's figures are the API's", async () => {
  const { context, page } = await loggedIn();
  for (const state of ["completed", "discarded", "running", "scheduled", "retryable"]) {
    const api = await call("GET", `/v1/jobs?state=${state}&limit=1000`);
    const shown = await page.textContent(`#overview-figures [data-state=${state}] .figure`);
    assert.equal(Number(shown.replace(/[,+]/g, "")), api.jobs.length, `${state} on the overview`);
  }
  assert.match(await page.textContent("#nodes-alive .figure"), /^1 \/ 1$/);
  // Per kind: the history every node flushes (every 2 s) is the API's /v1/stats. Compared
  // when the API gives the same answer before and after the page was drawn.
  await waitFor("the history to hold the settled jobs", async () => {
    const s = await call("GET", "/v1/stats?by=kind&step=window");
    return s.buckets.some((b) => b.kind === "noop" && b.completed >= 3) && s.buckets.some((b) => b.kind === "remote.scan" && b.lost >= 1);
  });
  await waitFor("the overview to match /v1/stats", async () => {
    const before = await call("GET", "/v1/stats?by=kind&step=window");
    await page.goto(main.url + "/");
    const after = await call("GET", "/v1/stats?by=kind&step=window");
    if (JSON.stringify(before.buckets) !== JSON.stringify(after.buckets)) return false;
    for (const b of after.buckets) {
      const shown = await page.getAttribute(`#kinds tr[data-kind="${b.kind}"]`, "data-completed");
      assert.equal(Number(shown), b.completed, `${b.kind} completed`);
    }
    const total = after.buckets.reduce((n, b) => n + b.completed + b.retried + b.failed + b.cancelled + b.lost + b.snoozed, 0);
    assert.equal(Number(await page.getAttribute("#throughput", "data-ended")), total);
    return true;
  });
  assert.equal(await page.locator("#throughput svg polyline").count(), 4, "four lines on the chart");
  // The vanished remote worker's rescue is listed.
  assert.match(await page.textContent("#rescues"), /remote:w-gone/);
  await shot(page, "overview");
  await context.close();
});

test("the jobs page lists what the API lists, and its filters work", async () => {
  const { context, page } = await loggedIn();
  await page.goto(main.url + "/jobs");
  for (const state of ["completed", "running", "available", "discarded"]) {
    const api = await call("GET", `/v1/jobs?state=${state}&limit=1000`);
    const n = await page.getAttribute(`#state-counts [data-state=${state}]`, "data-count");
    assert.equal(Number(n), api.jobs.length, `${state} count`);
  }
  await shot(page, "jobs");
  // A state tab.
  await page.click("#state-counts [data-state=completed]");
  const ids = await page.$$eval("#jobs tbody tr", (rows) => rows.map((r) => r.dataset.id));
  const api = await call("GET", "/v1/jobs?state=completed&limit=1000");
  assert.deepEqual(ids, api.jobs.map((j) => j.id));
  assert.ok(ids.length >= 4, "not an empty page");
  // Kind and tag filters.
  await page.goto(main.url + "/jobs");
  await page.fill("input[name=kind]", "noop");
  await page.fill("input[name=tag]", "batch");
  await page.click("form.filters button[type=submit]");
  const tagged = await page.$$eval("#jobs tbody tr", (rows) => rows.map((r) => r.dataset.id));
  assert.deepEqual(new Set(tagged), new Set([jobs.done0, jobs.done1, jobs.done2]));
  // Args content.
  await page.goto(main.url + "/jobs");
  await page.fill("input[name=args]", '{"image": "cat.png"}');
  await page.click("form.filters button[type=submit]");
  const byArgs = await page.$$eval("#jobs tbody tr", (rows) => rows.map((r) => r.dataset.id));
  assert.deepEqual(byArgs, [jobs.unserved]);
  // Bad input gets a clear message, not a crash.
  await page.goto(main.url + "/jobs");
  await page.fill("input[name=args]", "{not json");
  await page.click("form.filters button[type=submit]");
  assert.match(await page.textContent("[role=alert]"), /args is not valid JSON/);
  await context.close();
});

test("a panicked job's page shows the panic, its cleanup and the fence", async () => {
  const { context, page } = await loggedIn();
  await page.goto(`${main.url}/jobs/${jobs.panicked}`);
  const job = await call("GET", `/v1/jobs/${jobs.panicked}`);
  assert.equal(await page.getAttribute("#state", "data-state"), job.state);
  assert.match(await page.textContent("#errors"), /panic/);
  assert.match(await page.textContent("#errors"), /injected panic/);
  const events = await page.$$eval("#timeline li", (li) => li.map((l) => l.dataset.event));
  assert.deepEqual(events, job.timeline.map((e) => e.event));
  assert.ok(events.length >= 3, `a real timeline: ${events}`);
  const cleanups = await page.$$eval("#timeline li[data-event=cleanup]", (li) => li.map((l) => l.textContent));
  assert.ok(cleanups.some((c) => /mend\.drill\.remove_marker/.test(c)), `the drill's durable cleanup is shown: ${cleanups}`);
  assert.match(await page.textContent("#facts"), new RegExp(`${job.attempt} of ${job.max_attempts}`));
  await shot(page, "job-panicked");
  await context.close();
});

test("secrets in args are masked for a viewer, who sees no actions; an admin sees them", async () => {
  const { context, page } = await loggedIn(VIEWER_TOKEN);
  await page.goto(`${main.url}/jobs/${jobs.unserved}`);
  const html = await page.content();
  assert.doesNotMatch(html, /sk-live-123/);
  assert.match(html, /cat\.png/);
  assert.match(await page.textContent("#masked"), /1 secret-looking value masked/);
  assert.equal(await page.locator("#job-actions form").count(), 0, "no retry or cancel for a viewer");
  await page.goto(`${main.url}/jobs`);
  assert.equal(await page.locator("button[name=action]").count(), 0, "no bulk actions for a viewer");
  await context.close();
  const admin = await loggedIn();
  await admin.page.goto(`${main.url}/jobs/${jobs.unserved}`);
  assert.match(await admin.page.content(), /sk-live-123/);
  await admin.context.close();
});

test("a rescued job's timeline says so", async () => {
  const { context, page } = await loggedIn();
  await page.goto(`${main.url}/jobs/${jobs.rescued}`);
  const events = await page.$$eval("#timeline li", (li) => li.map((l) => l.dataset.event));
  const job = await call("GET", `/v1/jobs/${jobs.rescued}`);
  assert.deepEqual(events, job.timeline.map((e) => e.event));
  assert.ok(events.some((e) => /rescue|lost/.test(e)), `rescued: ${events}`);
  assert.match(await page.textContent("#errors"), /lost/);
  await context.close();
});

const whyText = async (page, name) => {
  await page.goto(`${main.url}/jobs/${jobs[name]}`);
  return page.textContent("#why");
};

test("why isn't it running: each answer from a real situation", async () => {
  const { context, page } = await loggedIn();
  assert.match(await whyText(page, "paused"), /Its queue held is paused\./);
  await shot(page, "job-why");
  assert.match(await whyText(page, "unserved"), /No live node serves kind remote\.resize\./);
  assert.match(await whyText(page, "scheduled"), /It is scheduled for .* \(in 59 m/);
  const retry = await whyText(page, "retry-later");
  assert.match(retry, /It waits to retry at/);
  assert.match(retry, /Attempt 1 failed \(error: thumbnailer unreachable\)/);
  assert.match(await whyText(page, "busy-waiting2"), /2 jobs are ahead of it in queue busy; every slot is busy \(1 of 1 running\)\./);
  assert.match(await whyText(page, "limit-held"), /Limit one-at-a-time holds it/);
  // A running job on a live node needs no answer.
  await page.goto(`${main.url}/jobs/${jobs["busy-running"]}`);
  assert.equal(await page.$("#why"), null);
  await context.close();
});

test("why: the lease holder died (a node killed with SIGKILL)", async () => {
  // A second database: one node that looks for dead nodes only once an hour, and a node
  // serving the slow queue that is killed mid-job.
  const db = `sqlite://${path.join(dir, "dead.db")}`;
  const watcher = await serve("watcher", ["--database", db, "--token", TOKEN, "--queues", "default=1", "--rescue-interval", "1h"]);
  const victim = await serve("victim", ["--database", db, "--token", TOKEN, "--queues", "slow=1"]);
  const w = api(watcher.url);
  const j = await w("POST", "/v1/jobs", { kind: "noop", args: { sleep_ms: 600_000 }, queue: "slow" });
  await waitFor("the victim to run the job", async () => (await w("GET", `/v1/jobs/${j.id}`)).state === "running");
  victim.child.kill("SIGKILL");
  await new Promise((r) => victim.child.once("exit", r));
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${watcher.url}/jobs/${j.id}`);
  await page.fill("#token", TOKEN);
  await Promise.all([page.waitForURL(`${watcher.url}/jobs/${j.id}`), page.click("button[type=submit]")]);
  const text = await page.textContent("#why");
  assert.match(text, new RegExp(`Its lease holder ${victim.node} died`));
  assert.match(text, /rescuer hands the job back/);
  await page.goto(`${watcher.url}/nodes`);
  assert.equal(await page.getAttribute(`#nodes [data-node="${victim.node}"]`, "data-alive"), "false");
  assert.equal(await page.getAttribute(`#nodes [data-node="${watcher.node}"]`, "data-alive"), "true");
  await context.close();
});

test("retry and cancel a job from its page", async () => {
  const { context, page } = await loggedIn();
  await page.goto(`${main.url}/jobs/${jobs["to-cancel"]}`);
  await page.click("#job-actions button.danger");
  await waitFor("the cancel", async () => (await stateOf(jobs["to-cancel"])) === "cancelled", 10_000);
  await page.goto(`${main.url}/jobs/${jobs.panicked}`);
  const [retried] = await Promise.all([page.waitForResponse((r) => r.url().endsWith("/retry")), page.click("#job-actions button:has-text('Retry')")]);
  assert.equal(retried.status(), 303, `retry answered ${retried.status()}: ${await page.textContent("main")}`);
  // The retry runs it again at once (and the drill's second attempt fails for its own reasons).
  const after = await waitFor("the retry", async () => {
    const j = await call("GET", `/v1/jobs/${jobs.panicked}`);
    return j.timeline.some((e) => e.event === "retried") ? j : null;
  }, 10_000);
  assert.equal(after.timeline.find((e) => e.event === "retried").detail, "on request");
  // Enqueue a copy: a new job with the same kind and args.
  await page.goto(`${main.url}/jobs/${jobs.unserved}`);
  await Promise.all([page.waitForURL((u) => !u.pathname.endsWith(jobs.unserved)), page.click("#job-actions button:has-text('Enqueue a copy')")]);
  const copyId = page.url().split("/").pop();
  const copy = await call("GET", `/v1/jobs/${copyId}`);
  assert.equal(copy.kind, "remote.resize");
  assert.equal(copy.args.api_key, "sk-live-123", "the copy has the real args, not the mask");
  await context.close();
});

test("bulk delete asks first and says how many jobs it touches", async () => {
  const { context, page } = await loggedIn();
  await page.goto(main.url + "/jobs?state=completed&tag=batch");
  await page.check(`input[name=id][value="${jobs.done0}"]`);
  await page.check(`input[name=id][value="${jobs.done1}"]`);
  await page.click("button[value=delete]");
  assert.equal(await page.getAttribute("#confirm-summary", "data-count"), "2");
  // Nothing happened yet.
  assert.equal(await stateOf(jobs.done0), "completed");
  await page.click("form button.primary");
  assert.match(await page.textContent(".flash"), /2 of 2 selected jobs deleted/);
  for (const id of [jobs.done0, jobs.done1]) {
    const resp = await fetch(`${main.url}/v1/jobs/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(resp.status, 404);
  }
  assert.equal(await stateOf(jobs.done2), "completed", "an unselected job is untouched");
  await context.close();
});

test("pause and resume a queue", async () => {
  const { context, page } = await loggedIn();
  await page.goto(main.url + "/queues");
  await shot(page, "queues");
  const row = "#queues tr[data-queue=busy]";
  await page.click(`${row} button`);
  let queues = (await call("GET", "/v1/queues")).queues;
  assert.equal(queues.find((q) => q.name === "busy").paused, true);
  assert.equal(await page.getAttribute(`${row} [data-paused]`, "data-paused"), "true");
  await page.click(`${row} button`);
  queues = (await call("GET", "/v1/queues")).queues;
  assert.equal(queues.find((q) => q.name === "busy").paused, false);
  // The next job of the busy queue has been waiting since it was enqueued.
  const head = await call("GET", `/v1/jobs/${jobs["busy-waiting0"]}`);
  const waited = Number(await page.getAttribute(`${row} [data-head-wait-ms]`, "data-head-wait-ms"));
  assert.ok(waited >= Date.now() - Date.parse(head.created_at) - 60_000 && waited > 1000, `head waited ${waited} ms`);
  // The counts are the API's.
  const api = await call("GET", "/v1/jobs?queue=busy&state=available&limit=1000");
  assert.equal(await page.textContent(`${row} [data-state=available]`), String(api.jobs.length));
  await context.close();
});

test("the nodes page shows this node", async () => {
  const { context, page } = await loggedIn();
  await page.goto(main.url + "/nodes");
  assert.equal(await page.getAttribute(`#nodes [data-node="${main.node}"]`, "data-alive"), "true");
  assert.match(await page.textContent(`#nodes [data-node="${main.node}"]`), /noop/);
  await shot(page, "nodes");
  await context.close();
});

test("a cross-site form post is refused", async () => {
  // An attacker's page on another origin posts a cancel form to the dashboard.
  const evil = http.createServer((req, res) => {
    res.setHeader("content-type", "text/html");
    res.end(`<form id=f method=post action="${main.url}/jobs/${jobs["busy-running"]}/cancel"></form><script>document.getElementById('f').submit()</script>`);
  });
  await new Promise((r) => evil.listen(0, "127.0.0.1", r));
  const evilUrl = `http://localhost:${evil.address().port}/`;
  const { context, page } = await loggedIn();
  const refused = page.waitForResponse((r) => r.url().endsWith("/cancel"));
  await page.goto(evilUrl);
  const resp = await refused;
  assert.ok([401, 403].includes(resp.status()), `refused, got ${resp.status()}`);
  // A forged Origin with a valid session is refused too.
  const forged = await page.request.post(`${main.url}/jobs/${jobs["busy-running"]}/cancel`, { headers: { origin: "http://evil.example" } });
  assert.equal(forged.status(), 403);
  assert.equal(await stateOf(jobs["busy-running"]), "running", "nothing was cancelled");
  evil.close();
  await context.close();
});

test("pages work on a phone-sized screen and refresh while visible", async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  await page.goto(main.url + "/login");
  await page.fill("#token", TOKEN);
  await Promise.all([page.waitForURL(main.url + "/"), page.click("button[type=submit]")]);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no sideways scrolling on the overview (${overflow}px)`);
  assert.equal(await page.getAttribute("html", "data-live"), "on");
  await page.waitForFunction(() => document.documentElement.dataset.refreshed, null, { timeout: 12_000 });
  // Keyboard: the skip link is the first stop.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
  await context.close();
});

test("a rollout: listed, both versions charted with the decision log, paused and resumed from its page", async () => {
  // The drill kind at 50% to v2 (the same code): about half its jobs run on each side.
  const r = await call("POST", "/v1/rollouts", { kind: "mend.drill", version: "v2", steps: "50%,100%", every: "1h", guard: { min_samples: 3, alpha: 0.000001 } });
  assert.equal(r.state, "running");
  try {
    // Traffic until both versions have samples: a node routes by the rollout from its next
    // heartbeat on, and its samples reach the store at its next flush. One job in four fails
    // its only attempt, whichever side it falls on.
    let n = 0;
    await waitFor("both versions to have samples", async () => {
      for (let i = 0; i < 4; i++, n++) {
        await enqueue(`rollout${n}`, { kind: "mend.drill", args: { run: "rollout", work_ms: 5, faults: n % 4 === 0 ? ["error"] : [] }, max_attempts: 1 });
      }
      await new Promise((res) => setTimeout(res, 400));
      const d = await call("GET", `/v1/rollouts/${r.id}`);
      return d.window.evidence.canary.attempts >= 3 && d.window.evidence.stable.attempts >= 3;
    }, 30_000).catch(async (e) => {
      const states = await Promise.all([...Array(n).keys()].map((i) => stateOf(jobs[`rollout${i}`])));
      const d = await call("GET", `/v1/rollouts/${r.id}`);
      throw new Error(`${e.message}; jobs: ${states.join(", ")}; window: ${JSON.stringify(d.window.evidence)}`);
    });
    const detail = await call("GET", `/v1/rollouts/${r.id}`);
    const { context, page } = await loggedIn();
    await page.goto(main.url + "/rollouts");
    const row = `#rollouts tr[data-rollout="${r.id}"]`;
    assert.equal(await page.getAttribute(`${row} [data-rollout-state]`, "data-rollout-state"), "running");
    assert.equal(await page.getAttribute(`${row} [data-share]`, "data-share"), "5000");
    await Promise.all([page.waitForURL(`${main.url}/rollouts/${r.id}`), page.click(`${row} a`)]);
    // The window's figures are the API's (they only grow between the two reads).
    const canary = Number(await page.getAttribute("#window tr[data-side=canary] [data-attempts]", "data-attempts"));
    const stable = Number(await page.getAttribute("#window tr[data-side=stable] [data-attempts]", "data-attempts"));
    assert.ok(canary >= detail.window.evidence.canary.attempts && canary > 0, `canary ${canary}`);
    assert.ok(stable >= detail.window.evidence.stable.attempts && stable > 0, `stable ${stable}`);
    assert.equal(await page.locator("#series svg polyline").count(), 2, "one curve per version");
    assert.ok(await page.locator("#series svg line.marker-step").count() >= 1, "the start is marked");
    assert.match(await page.textContent("#decisions"), /canary v2 at 50% of mend\.drill/);
    await shot(page, "rollout");
    // Pause from the page: the API says paused, and the page offers Resume.
    await Promise.all([page.waitForURL(`${main.url}/rollouts/${r.id}`), page.click("#rollout-actions button[data-action=pause]")]);
    assert.equal((await call("GET", `/v1/rollouts/${r.id}`)).state, "paused");
    assert.equal(await page.getAttribute("#state", "data-state"), "paused");
    assert.match(await page.textContent("#decisions"), /paused by hand/);
    await Promise.all([page.waitForURL(`${main.url}/rollouts/${r.id}`), page.click("#rollout-actions button[data-action=resume]")]);
    assert.equal((await call("GET", `/v1/rollouts/${r.id}`)).state, "running");
    // The audit log has both, by the admin token's name.
    const audit = await call("GET", "/v1/audit?limit=5");
    assert.deepEqual(audit.entries.slice(0, 2).map((e) => [e.action, e.target]), [["rollout.resume", r.id], ["rollout.pause", r.id]]);
    // The nodes page shows the version served.
    await page.goto(main.url + "/nodes");
    assert.match(await page.textContent(`#nodes [data-node="${main.node}"]`), /mend\.drill: v2/);
    await context.close();
    // A viewer sees the rollout and no buttons.
    const v = await loggedIn(VIEWER_TOKEN);
    await v.page.goto(`${main.url}/rollouts/${r.id}`);
    assert.equal(await v.page.locator("#rollout-actions button").count(), 0);
    await v.context.close();
  } finally {
    // The other tests' drill jobs are routed plainly again.
    await call("POST", `/v1/rollouts/${r.id}/abort`).catch(() => {});
  }
});
