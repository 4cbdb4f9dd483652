/**
 * Waiting for a value a bench client observes, shared by the end-to-end
 * benches: `ValueWaiter` and `within`, one timer per round.
 *
 * @module
 */

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
