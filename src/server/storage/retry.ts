/**
 * Retrying Deno KV calls that fail for reasons that pass: a local file
 * briefly held by another handle ("database is locked"), or a remote KV
 * Connect endpoint that is busy or unreachable for a moment. A failed atomic
 * check is not an error (the commit returns `ok: false`) and is retried by
 * the caller, which re-reads before it writes again.
 */

import { delay } from "../../util/delay.ts";

/** Messages (lower case) of KV errors worth retrying. */
const TRANSIENT_PATTERNS = [
  "database is locked",
  "database is busy",
  "sqlite_busy",
  "timed out",
  "timeout",
  "connection",
  "network",
  "unavailable",
  "temporarily",
  "try again",
  "503",
  "429",
];

/** Returns whether a KV error is worth retrying after a pause. */
export function isTransientKvError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const message = error.message.toLowerCase();
  return TRANSIENT_PATTERNS.some((pattern) => message.includes(pattern));
}

/** How {@linkcode retryKv} and {@linkcode backoffDelayMs} pace attempts. */
export interface RetryOptions {
  /** Ends the retrying: the pending pause rejects with the signal's reason. */
  signal: AbortSignal;
  /** Attempts in all, the first included. */
  attempts?: number;
  /** Called before each pause, for logging. */
  onRetry?: (error: unknown, attempt: number) => void;
}

/** Attempts a KV operation gets by default (about 6 s of pauses in all). */
export const DEFAULT_KV_ATTEMPTS = 12;

/**
 * Pause before retry `attempt` (1 = first retry), in milliseconds:
 * exponential from 5 ms, capped at 1 s, with full jitter so processes that
 * collided do not collide again in step.
 */
export function backoffDelayMs(
  attempt: number,
  random: () => number = Math.random,
): number {
  const bound = Math.min(1000, 5 * 2 ** Math.min(attempt, 20));
  return Math.floor(random() * bound) + 1;
}

/**
 * Runs `operation`, retrying transient KV errors with backoff; other errors
 * and the last transient one are thrown.
 */
export async function retryKv<T>(
  operation: () => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  const attempts = options.attempts ?? DEFAULT_KV_ATTEMPTS;
  for (let attempt = 1;; attempt++) {
    options.signal.throwIfAborted();
    try {
      return await operation();
    } catch (error) {
      if (attempt >= attempts || !isTransientKvError(error)) throw error;
      options.onRetry?.(error, attempt);
      await delay(backoffDelayMs(attempt), options.signal);
    }
  }
}
