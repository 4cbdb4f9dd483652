// This module is browser compatible.

/**
 * A source of time and timers. Everything in the client that waits or
 * measures goes through one, so tests can drive backoff, keepalive and "the
 * machine slept" deterministically with a fake.
 *
 * @example The system clock
 * ```ts
 * import { type Clock, systemClock } from "@tether/sync";
 * import assert from "node:assert/strict";
 *
 * const clock: Clock = systemClock;
 * const fired = await new Promise<boolean>((resolve) => {
 *   clock.setTimeout(() => resolve(true), 1);
 * });
 * assert.ok(fired);
 * assert.ok(clock.now() > 0);
 * ```
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /**
   * Calls `callback` once, `delayMs` milliseconds from now.
   *
   * @returns A handle for {@linkcode Clock.clearTimeout}.
   */
  setTimeout(callback: () => void, delayMs: number): unknown;
  /** Cancels a timer; a handle that already fired or was cleared is ignored. */
  clearTimeout(handle: unknown): void;
}

/**
 * The platform's clock: `Date.now` and the global timer functions.
 *
 * @example Measuring
 * ```ts
 * import { systemClock } from "@tether/sync";
 * import assert from "node:assert/strict";
 *
 * const start = systemClock.now();
 * assert.ok(systemClock.now() >= start);
 * ```
 */
export const systemClock: Clock = Object.freeze({
  now: (): number => Date.now(),
  setTimeout: (callback: () => void, delayMs: number): unknown =>
    globalThis.setTimeout(callback, delayMs),
  clearTimeout: (handle: unknown): void =>
    globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
});

/**
 * One restartable timer on a {@linkcode Clock}: at most one callback is
 * pending at a time, and `stop()` leaves nothing behind.
 */
export class Timer {
  #clock: Clock;
  #handle: unknown = undefined;
  #dueAt = 0;

  /** @param clock The clock to schedule on. */
  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** Whether a callback is pending. */
  get isRunning(): boolean {
    return this.#handle !== undefined;
  }

  /** When the pending callback is due (epoch ms); meaningless when idle. */
  get dueAt(): number {
    return this.#dueAt;
  }

  /**
   * Replaces any pending callback with `callback`, due in `delayMs`.
   *
   * @param callback Receives how late it fired, in milliseconds (≥ 0).
   */
  start(callback: (lateMs: number) => void, delayMs: number): void {
    this.stop();
    const delay = Math.max(0, delayMs);
    const dueAt = this.#clock.now() + delay;
    this.#dueAt = dueAt;
    const handle = this.#clock.setTimeout(() => {
      if (this.#handle !== handle) return;
      this.#handle = undefined;
      callback(Math.max(0, this.#clock.now() - dueAt));
    }, delay);
    this.#handle = handle;
  }

  /** Cancels the pending callback, if any. */
  stop(): void {
    if (this.#handle !== undefined) {
      this.#clock.clearTimeout(this.#handle);
      this.#handle = undefined;
    }
  }
}
