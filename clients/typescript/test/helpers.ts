/**
 * Test support: a real `mend serve` (binary from $MEND_BIN, default
 * <repo>/target/debug/mend) on a temporary SQLite file and a free port, and waits.
 */

import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (this file runs from clients/typescript/dist/test). */
export const REPO = resolve(here, "..", "..", "..", "..");

export interface Server {
  url: string;
  proc: ChildProcess;
  dir: string;
  stop(): Promise<void>;
}

/** Starts `mend serve` and waits until it listens. */
export async function startServer(): Promise<Server> {
  const bin = process.env["MEND_BIN"] || join(REPO, "target", "debug", "mend");
  if (!existsSync(bin)) throw new Error(`no mend binary at ${bin}: run \`cargo build -p mend-cli\` or set MEND_BIN`);
  const dir = mkdtempSync(join(tmpdir(), "mend-ts-"));
  const log = openSync(join(dir, "serve.log"), "w");
  const proc = spawn(bin, ["serve", "--database", `sqlite://${dir}/mend.db`, "--bind", "127.0.0.1:0"], {
    cwd: dir,
    stdio: ["ignore", "pipe", log],
  });
  const url = await new Promise<string>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`mend serve did not start; see ${dir}/serve.log`)), 30_000);
    const lines = createInterface({ input: proc.stdout! });
    lines.on("line", (line) => {
      const m = /listening on (\S+)/.exec(line);
      if (m?.[1]) {
        clearTimeout(timer);
        res(m[1]);
      }
    });
    proc.on("exit", (code) => rej(new Error(`mend serve exited (${code}); see ${dir}/serve.log`)));
  });
  return {
    url,
    proc,
    dir,
    stop: () =>
      new Promise<void>((res) => {
        if (proc.exitCode !== null) return res();
        proc.on("exit", () => res());
        proc.kill("SIGTERM");
      }),
  };
}

/** Waits until `check()` resolves truthy. */
export async function waitFor(check: () => Promise<unknown> | unknown, timeoutMs = 20_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
