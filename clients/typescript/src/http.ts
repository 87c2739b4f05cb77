/**
 * The one place that talks HTTP: Node's built-in fetch, JSON in and out, problem answers
 * turned into typed errors.
 */

import { ConflictError, InvalidRequestError, MendError, NotFoundError } from "./types.js";

/** A base URL and a token, and a JSON call. */
export class Http {
  readonly base: string;
  private readonly headers: Record<string, string>;

  constructor(base: string, token?: string) {
    this.base = base.replace(/\/+$/, "");
    this.headers = { accept: "application/json", "content-type": "application/json" };
    if (token) this.headers["authorization"] = `Bearer ${token}`;
  }

  /** Sends `body` as JSON and returns the JSON answer, or throws the matching `MendError`. */
  async call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal, extra?: Record<string, string>): Promise<T> {
    const init: RequestInit = { method, headers: extra ? { ...this.headers, ...extra } : this.headers };
    if (body !== undefined) init.body = JSON.stringify(body);
    if (signal) init.signal = signal;
    const resp = await fetch(this.base + path, init);
    const text = await resp.text();
    if (resp.status < 300) return (text ? JSON.parse(text) : null) as T;
    let problem: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(text);
      problem = typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : { detail: String(parsed) };
    } catch {
      problem = { detail: text.slice(0, 500) };
    }
    const cls =
      resp.status === 409 ? ConflictError : resp.status === 404 ? NotFoundError : resp.status === 400 || resp.status === 422 ? InvalidRequestError : MendError;
    throw new cls(resp.status, problem);
  }
}
