// This module is browser compatible.

/**
 * A promise with its `resolve` and `reject` exposed, which settles once:
 * later calls are ignored, and `isSettled` tells whether it already has.
 */
export class Deferred<T> {
  /** The promise. */
  readonly promise: Promise<T>;
  #resolve!: (value: T) => void;
  #reject!: (reason: unknown) => void;
  #settled = false;

  /**
   * @param options.handled Attach a no-op rejection handler, for internal
   *   promises that may reject while nobody awaits them (an unhandled
   *   rejection would otherwise end the process).
   */
  constructor(options: { handled?: boolean } = {}) {
    this.promise = new Promise<T>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    if (options.handled) this.promise.catch(() => {});
  }

  /** Whether `resolve` or `reject` was called. */
  get isSettled(): boolean {
    return this.#settled;
  }

  /** Fulfils the promise unless it is already settled. */
  resolve(value: T): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#resolve(value);
  }

  /** Rejects the promise unless it is already settled. */
  reject(reason: unknown): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#reject(reason);
  }
}
