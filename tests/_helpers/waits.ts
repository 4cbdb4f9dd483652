/**
 * Bounded waits for tests: a signal per wait, a wait for a condition on
 * events, and a recorder that keeps a stream's items so a test can wait for
 * one. Imports nothing from `src/`, so every suite can use it.
 *
 * @module
 */

/** Default upper bound of one wait, in milliseconds. */
export const WAIT_MS = 5_000;

/** A fresh bounded signal for one wait. */
export function bounded(ms: number = WAIT_MS): AbortSignal {
  return AbortSignal.timeout(ms);
}

/** Reads one item of `reader`, rejecting when `signal` aborts first. */
export function readBounded<T>(
  reader: ReadableStreamDefaultReader<T>,
  signal: AbortSignal = bounded(),
): Promise<ReadableStreamReadResult<T>> {
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new Error("timed out waiting for an item"));
    if (signal.aborted) return onAbort();
    signal.addEventListener("abort", onAbort, { once: true });
    reader.read().then((result) => {
      signal.removeEventListener("abort", onAbort);
      resolve(result);
    }, (error) => {
      signal.removeEventListener("abort", onAbort);
      reject(error);
    });
  });
}

/**
 * Reads a stream in the background, keeping every item, so a test can wait
 * for a condition on what has arrived so far.
 */
export class Recorder<T> implements AsyncDisposable {
  readonly items: T[] = [];
  /** Set once the stream has ended (`"end"`) or errored (the error). */
  outcome: { kind: "end" } | { kind: "error"; error: unknown } | undefined;
  #reader: ReadableStreamDefaultReader<T>;
  #waiters = new Set<() => void>();
  #loop: Promise<void>;

  constructor(stream: ReadableStream<T>) {
    this.#reader = stream.getReader();
    this.#loop = this.#read();
  }

  async #read(): Promise<void> {
    try {
      for (;;) {
        const { done, value } = await this.#reader.read();
        if (done) {
          this.outcome = { kind: "end" };
          break;
        }
        this.items.push(value);
        this.#wake();
      }
    } catch (error) {
      this.outcome = { kind: "error", error };
    }
    this.#wake();
  }

  #wake(): void {
    for (const waiter of this.#waiters) waiter();
  }

  /**
   * Resolves with the first item (at index `from` or later) that satisfies
   * `predicate`; rejects when the stream finishes first or `signal` aborts.
   */
  async until(
    predicate: (item: T) => boolean,
    options: { from?: number; signal?: AbortSignal } = {},
  ): Promise<T> {
    const signal = options.signal ?? bounded();
    let index = options.from ?? 0;
    for (;;) {
      for (; index < this.items.length; index++) {
        const item = this.items[index]!;
        if (predicate(item)) return item;
      }
      if (this.outcome !== undefined) {
        throw new Error(
          `stream finished (${this.outcome.kind}) before the condition held; got ${
            JSON.stringify(this.items)
          }`,
        );
      }
      await this.#next(signal);
    }
  }

  /** Resolves once the stream has ended or errored. */
  async finished(signal: AbortSignal = bounded()): Promise<void> {
    while (this.outcome === undefined) await this.#next(signal);
  }

  #next(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal.aborted) {
        reject(
          new Error(
            `timed out waiting; got ${
              JSON.stringify(this.items, (_k, v) =>
                typeof v === "bigint" ? String(v) : v)
            }`,
          ),
        );
        return;
      }
      const done = () => {
        this.#waiters.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      this.#waiters.add(done);
      signal.addEventListener("abort", done);
    });
  }

  /** Stops reading and waits for the loop to finish. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#reader.cancel().catch(() => {});
    await this.#loop;
  }
}

/** Resolves once `predicate()` holds, checked after each call of `poke`. */
export function condition(
  subscribe: (poke: () => void) => () => void,
  predicate: () => boolean,
  signal: AbortSignal = bounded(),
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (predicate()) {
      resolve();
      return;
    }
    const check = () => {
      if (!predicate()) return;
      cleanup();
      resolve();
    };
    const abort = () => {
      cleanup();
      reject(new Error("timed out waiting for a condition"));
    };
    const unsubscribe = subscribe(check);
    const cleanup = () => {
      unsubscribe();
      signal.removeEventListener("abort", abort);
    };
    signal.addEventListener("abort", abort);
  });
}
