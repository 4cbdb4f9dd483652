// This module is browser compatible.

/**
 * Reconnect policy: exponential backoff with full jitter.
 *
 * @example Give up after a minute or so of failures
 * ```ts
 * import type { ReconnectOptions } from "@tether/sync";
 *
 * const reconnect: ReconnectOptions = { minDelayMs: 500, maxDelayMs: 10_000, maxAttempts: 10 };
 * console.log(reconnect.maxAttempts);
 * ```
 */
export interface ReconnectOptions {
  /**
   * Upper bound of the first retry's delay, in milliseconds.
   *
   * @default {1000}
   */
  minDelayMs?: number;
  /**
   * Upper bound of any delay, in milliseconds.
   *
   * @default {30000}
   */
  maxDelayMs?: number;
  /**
   * Growth of the bound per failed attempt.
   *
   * @default {2}
   */
  multiplier?: number;
  /**
   * Failed connection attempts in a row after which sessions give up and go
   * to "error" with code `reconnect_gave_up`. A session the server keeps
   * failing with a retryable error (`session_failed`) gives up after as
   * many failed binds in a row.
   *
   * @default {Infinity}
   */
  maxAttempts?: number;
  /**
   * How long a connection must stay up before the backoff (and the count of
   * failed attempts) starts again from the beginning, in milliseconds. A
   * server that accepts connections and drops them at once thus still sees
   * growing delays. The same holds for a session's binds after session
   * errors: the count starts over once a bind has lasted this long.
   *
   * @default {10000}
   */
  resetAfterMs?: number;
}

/** {@linkcode ReconnectOptions} with every default filled in. */
export type ResolvedReconnectOptions = Required<ReconnectOptions>;

/** The defaults of {@linkcode ReconnectOptions}. */
export const DEFAULT_RECONNECT: Readonly<ResolvedReconnectOptions> = Object
  .freeze({
    minDelayMs: 1_000,
    maxDelayMs: 30_000,
    multiplier: 2,
    maxAttempts: Infinity,
    resetAfterMs: 10_000,
  });

/**
 * Fills in defaults and checks ranges.
 *
 * @throws {RangeError} For a negative or non-finite delay, a multiplier
 *   below 1, or `maxAttempts` below 1.
 */
export function resolveReconnectOptions(
  options: ReconnectOptions = {},
): ResolvedReconnectOptions {
  const resolved = { ...DEFAULT_RECONNECT };
  for (
    const key of Object.keys(DEFAULT_RECONNECT) as (keyof ReconnectOptions)[]
  ) {
    const value = options[key];
    if (value !== undefined) resolved[key] = value;
  }
  const { minDelayMs, maxDelayMs, multiplier, maxAttempts, resetAfterMs } =
    resolved;
  for (
    const [name, value] of [
      ["minDelayMs", minDelayMs],
      ["maxDelayMs", maxDelayMs],
      ["resetAfterMs", resetAfterMs],
    ] as const
  ) {
    if (!Number.isFinite(value) || value < 0) {
      throw new RangeError(
        `Cannot use reconnect.${name}: ${value} is not a non-negative number of milliseconds`,
      );
    }
  }
  if (maxDelayMs < minDelayMs) {
    throw new RangeError(
      `Cannot use reconnect.maxDelayMs: ${maxDelayMs} is below minDelayMs ${minDelayMs}`,
    );
  }
  if (!(multiplier >= 1) || !Number.isFinite(multiplier)) {
    throw new RangeError(
      `Cannot use reconnect.multiplier: ${multiplier} is not a finite number ≥ 1`,
    );
  }
  if (
    !(maxAttempts >= 1) ||
    (Number.isFinite(maxAttempts) && !Number.isInteger(maxAttempts))
  ) {
    throw new RangeError(
      `Cannot use reconnect.maxAttempts: ${maxAttempts} is not an integer ≥ 1 or Infinity`,
    );
  }
  return resolved;
}

/**
 * The delay before retry number `attempt + 1`, with full jitter: a uniform
 * draw between 0 and the capped exponential bound
 * `min(maxDelayMs, minDelayMs × multiplier^attempt)`.
 *
 * Full jitter spreads the reconnects of many clients after a server restart
 * instead of sending them back in waves.
 *
 * @param attempt Failed attempts so far, 0 for the first retry.
 * @param options Bounds (defaults as in {@linkcode ReconnectOptions}).
 * @param random Source of randomness in [0, 1).
 * @returns Milliseconds to wait, in `[0, maxDelayMs]`.
 * @throws {RangeError} If `attempt` is not a non-negative integer.
 *
 * @example The bound grows, then caps
 * ```ts
 * import { nextDelay } from "@tether/sync";
 * import assert from "node:assert/strict";
 *
 * assert.equal(nextDelay(0, {}, () => 0.5), 500);
 * assert.equal(nextDelay(3, {}, () => 0.5), 4_000);
 * assert.equal(nextDelay(20, {}, () => 0.5), 15_000);
 * ```
 */
export function nextDelay(
  attempt: number,
  options: ReconnectOptions = {},
  random: () => number = Math.random,
): number {
  if (!Number.isInteger(attempt) || attempt < 0) {
    throw new RangeError(
      `Cannot compute delay: attempt ${attempt} is not a non-negative integer`,
    );
  }
  const minDelayMs = options.minDelayMs ?? DEFAULT_RECONNECT.minDelayMs;
  const maxDelayMs = options.maxDelayMs ?? DEFAULT_RECONNECT.maxDelayMs;
  const multiplier = options.multiplier ?? DEFAULT_RECONNECT.multiplier;
  // Past 2^1024 the power is Infinity, and 0 × Infinity would be NaN.
  const bound = minDelayMs === 0
    ? 0
    : Math.min(maxDelayMs, minDelayMs * multiplier ** attempt);
  const draw = random();
  // A broken random source must not turn into a tight loop or a huge wait.
  const fraction = draw >= 0 && draw < 1 ? draw : 0.5;
  return Math.floor(fraction * bound);
}

/**
 * A retry counter with its backoff: how many retries in a row so far, the
 * delay before the next one, and the rule that a link which stayed up
 * `resetAfterMs` starts the count over. The connection's reconnects, its
 * token refreshes and a session's rebinds each keep one.
 */
export class Backoff {
  #options: ResolvedReconnectOptions;
  #random: () => number;
  #now: () => number;
  #maxExponent: number;
  #attempts = 0;
  #upSince: number | undefined;

  /**
   * @param options The policy (delays, multiplier, `resetAfterMs`).
   * @param random Jitter source in [0, 1).
   * @param now The clock, in milliseconds.
   * @param maxExponent Largest exponent passed to {@linkcode nextDelay}.
   */
  constructor(
    options: ResolvedReconnectOptions,
    random: () => number,
    now: () => number,
    maxExponent = Infinity,
  ) {
    this.#options = options;
    this.#random = random;
    this.#now = now;
    this.#maxExponent = maxExponent;
  }

  /** Retries counted since the last reset. */
  get attempts(): number {
    return this.#attempts;
  }

  /**
   * The delay before the next retry (at least `minimumMs`, a server's
   * Retry-After), and counts that retry.
   */
  next(minimumMs = 0): number {
    const delay = Math.max(
      nextDelay(
        Math.min(this.#attempts, this.#maxExponent),
        this.#options,
        this.#random,
      ),
      minimumMs,
    );
    this.#attempts++;
    return delay;
  }

  /** Starts the count over (a retry asked for by hand, a resume). */
  reset(): void {
    this.#attempts = 0;
  }

  /** The link came up now. */
  up(): void {
    this.#upSince = this.#now();
  }

  /**
   * The link went down: when it had stayed up `resetAfterMs`, the count
   * starts over. Returns whether it did.
   */
  down(): boolean {
    const since = this.#upSince;
    this.#upSince = undefined;
    if (
      since !== undefined && this.#now() - since >= this.#options.resetAfterMs
    ) {
      this.#attempts = 0;
      return true;
    }
    return false;
  }
}
