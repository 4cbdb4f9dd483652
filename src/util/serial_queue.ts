// This module is browser compatible.

/**
 * A queue that runs asynchronous steps one at a time, in the order they were
 * added, so work that may finish out of order (inflating or deflating frames)
 * is still handed on in arrival order.
 *
 * `idle` is true when nothing is queued or running: callers use it to take a
 * synchronous fast path (a frame that needs no inflating, with nothing ahead
 * of it, is handled at once instead of behind a resolved promise).
 *
 * A step that throws does not stop later steps; its error goes to the
 * `onError` given when the queue was made.
 */
export class SerialQueue {
  #tail: Promise<void> | null = null;
  #onError: (error: unknown) => void;

  /** @param onError Called with the error of any step that throws. */
  constructor(onError: (error: unknown) => void) {
    this.#onError = onError;
  }

  /** True when no step is queued or running. */
  get idle(): boolean {
    return this.#tail === null;
  }

  /** Settles once every step added so far has finished. */
  drained(): Promise<void> {
    return this.#tail ?? Promise.resolve();
  }

  /** Runs `step` after every step added before it has finished. */
  push(step: () => void | Promise<void>): void {
    const previous = this.#tail ?? Promise.resolve();
    const next: Promise<void> = previous.then(step).catch(this.#onError);
    this.#tail = next;
    next.then(() => {
      if (this.#tail === next) this.#tail = null;
    });
  }
}
