/**
 * Waiting for a value a bench client observes, shared by the end-to-end
 * benches: `ValueWaiter` and `within`, one timer per round, and
 * `watchField`, which feeds a waiter from a realm's `changes()`.
 *
 * @module
 */

import type { Realm } from "../mod.ts";

/**
 * Waits for values of one counter a client observes: `expect(v)` resolves
 * with the `performance.now()` at which a value ≥ v was first seen.
 */
export class ValueWaiter {
  #seen = -Infinity;
  #seenAt = 0;
  #want = Infinity;
  #resolve: ((at: number) => void) | undefined;

  /** A value arrived. */
  saw(value: number): void {
    if (value <= this.#seen) return;
    this.#seen = value;
    this.#seenAt = performance.now();
    if (value >= this.#want) {
      const resolve = this.#resolve!;
      this.#resolve = undefined;
      this.#want = Infinity;
      resolve(this.#seenAt);
    }
  }

  /** Resolves with when `value` was seen; unbounded: wrap it in `within`. */
  expect(value: number): Promise<number> {
    if (this.#seen >= value) return Promise.resolve(this.#seenAt);
    const { promise, resolve } = Promise.withResolvers<number>();
    this.#want = value;
    this.#resolve = resolve;
    return promise;
  }
}

/**
 * `promise`, or a rejection after `ms`: one timer per round rather than
 * one per waiter, so a fan-out round does not arm and clear 50 timers inside
 * the interval it measures.
 */
export async function within<T>(
  promise: Promise<T>,
  what: string,
  ms: number,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} not seen in ${ms} ms`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Feeds field `n` of object `id` into a new waiter from `realm.changes()`
 * until `signal` aborts; `done` settles once the stream has ended.
 */
export function watchField(
  realm: Realm,
  id: string,
  signal: AbortSignal,
): { waiter: ValueWaiter; done: Promise<void> } {
  const waiter = new ValueWaiter();
  const done = (async () => {
    for await (const change of realm.changes({ signal })) {
      for (const object of change.changes) {
        const n = object.fields?.n;
        if (object.id === id && typeof n === "number") waiter.saw(n);
      }
    }
  })();
  return { waiter, done };
}
