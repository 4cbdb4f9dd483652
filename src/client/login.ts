// This module is browser compatible.

import type { LoginBody } from "./credentials.ts";
import { SyncError } from "./sync_error.ts";

/** A successful `POST /login` answer (docs/ARCHITECTURE.md). */
export interface LoginResponse {
  /** The user the tokens are for. */
  userId: string;
  /** The token for HANDSHAKE and REFRESH. */
  accessToken: string;
  /** When it expires, in epoch milliseconds. */
  accessTokenExpiresAt: number;
  /** Exchanged for a new access token with `{"provider":"refresh"}`. */
  refreshToken: string;
}

const retryAfter = new WeakMap<object, number>();

/** The Retry-After the server sent with `error`, in milliseconds, if any. */
export function retryAfterMs(error: unknown): number | undefined {
  return typeof error === "object" && error !== null
    ? retryAfter.get(error)
    : undefined;
}

function parseRetryAfter(
  value: string | null,
  now: number,
): number | undefined {
  if (value === null) return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, date - now) : undefined;
}

function isLoginResponse(value: unknown): value is LoginResponse {
  if (typeof value !== "object" || value === null) return false;
  const body = value as Record<string, unknown>;
  return typeof body.userId === "string" && body.userId.length > 0 &&
    typeof body.accessToken === "string" && body.accessToken.length > 0 &&
    typeof body.accessTokenExpiresAt === "number" &&
    typeof body.refreshToken === "string";
}

function serverMessage(text: string): string | undefined {
  try {
    const body = JSON.parse(text);
    const message = body?.error?.message;
    return typeof message === "string" ? message : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Sends `POST /login` and returns the tokens.
 *
 * @throws {SyncError} `login_failed` when the server refuses (400, 401,
 *   403, or any other answer that is not a retryable failure) with the
 *   server's message; `connection_lost` when it cannot be reached or
 *   answers 429 / 5xx (with Retry-After, see {@linkcode retryAfterMs}).
 * @throws The signal's reason, unchanged, when aborted.
 */
export async function requestLogin(
  fetchFunction: typeof fetch,
  url: string,
  body: LoginBody,
  signal: AbortSignal | undefined,
  now: () => number,
): Promise<LoginResponse> {
  let response: Response;
  try {
    response = await fetchFunction(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      ...(signal === undefined ? {} : { signal }),
    });
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw new SyncError(
      "connection_lost",
      `Cannot log in: ${url} is unreachable (${
        error instanceof Error ? error.message : String(error)
      })`,
      { cause: error },
    );
  }
  let text: string;
  try {
    text = await response.text();
  } catch (error) {
    if (signal?.aborted) throw signal.reason;
    throw new SyncError(
      "connection_lost",
      `Cannot log in: the answer from ${url} broke off`,
      { cause: error },
    );
  }
  if (response.status === 429 || response.status >= 500) {
    const error = new SyncError(
      "connection_lost",
      `Cannot log in: the server answered ${response.status}${
        serverMessage(text) ? `: ${serverMessage(text)}` : ""
      }`,
    );
    const wait = parseRetryAfter(response.headers.get("retry-after"), now());
    if (wait !== undefined) retryAfter.set(error, wait);
    throw error;
  }
  if (!response.ok) {
    throw new SyncError(
      "login_failed",
      serverMessage(text) ??
        `Cannot log in: the server answered ${response.status} at ${url}`,
      { willRetry: false },
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new SyncError(
      "login_failed",
      `Cannot log in: the answer from ${url} is not JSON`,
      { cause: error },
    );
  }
  if (!isLoginResponse(parsed)) {
    throw new SyncError(
      "login_failed",
      `Cannot log in: the answer from ${url} lacks userId, accessToken, accessTokenExpiresAt or refreshToken`,
    );
  }
  return parsed;
}
