// This module is browser compatible.

import { badSignal } from "./abort.ts";

/** Options for {@linkcode PushStream}. */
export interface PushStreamOptions {
  /**
   * Keep only the newest value not yet read (a latest-value stream: a slow
   * reader sees the newest figures, never an ever-growing queue); otherwise
   * every pushed value is delivered, in order.
   */
  latestOnly: boolean;
  /** Ends the stream (closes it, without error) when aborted. */
  signal?: AbortSignal | undefined;
  /**
   * Runs once when the stream is done with its source: closed, errored,
   * cancelled by the reader (`break` out of `for await`) or aborted. Not run
   * for a signal already aborted at construction (check `isDetached`).
   */
  onDetach?: (() => void) | undefined;
}

/**
 * A `ReadableStream` fed by `push()`. Closing, erroring, the reader's
 * `cancel()` and the signal's abort all run one detach path, so a
 * `for await` that breaks leaves no listener behind.
 */
export class PushStream<T> {
  /** The stream handed to the reader. */
  readonly stream: ReadableStream<T>;
  #latestOnly: boolean;
  #queue: T[] = [];
  #controller!: ReadableStreamDefaultController<T>;
  /**
   * Whether the stream asked for a value (its `pull`) and none was handed
   * over since: a read is pending. A flag rather than a promise returned
   * from `pull`: the stream asks again only after the next read finds its
   * queue empty either way, and a promise and its resolver per value cost
   * more than the value's own delivery (docs/PERFORMANCE.md "Fan-out: the
   * receive path, fourth pass").
   */
  #readWaiting = false;
  #closing = false;
  #failure: { reason: unknown } | undefined;
  #detached = false;
  #removeAbort: (() => void) | undefined;
  #onDetach: (() => void) | undefined;

  /** @param options How values are kept and when the stream ends. */
  constructor(options: PushStreamOptions) {
    this.#latestOnly = options.latestOnly;
    const invalid = badSignal(options.signal, "Cannot open the stream");
    if (invalid !== undefined) throw invalid;
    this.#onDetach = options.onDetach;
    this.stream = new ReadableStream<T>({
      start: (controller) => {
        this.#controller = controller;
      },
      pull: () => this.#pull(),
      cancel: () => this.#detach(),
    }, { highWaterMark: 0 });
    const signal = options.signal;
    if (signal !== undefined) {
      if (signal.aborted) {
        // Nothing was registered yet, so there is nothing to detach from:
        // the caller sees `isDetached` and registers nothing.
        this.#onDetach = undefined;
        this.#end();
      } else {
        const listener = () => this.#end();
        signal.addEventListener("abort", listener, { once: true });
        this.#removeAbort = () => signal.removeEventListener("abort", listener);
      }
    }
  }

  /** Whether the stream no longer accepts values. */
  get isDetached(): boolean {
    return this.#detached || this.#closing;
  }

  /** Offers a value to the reader; ignored once closed. */
  push(value: T): void {
    if (this.isDetached) return;
    if (this.#readWaiting && this.#queue.length === 0) {
      // The common case of a reader keeping up: straight to its read.
      this.#readWaiting = false;
      this.#controller.enqueue(value);
      return;
    }
    if (this.#latestOnly) {
      this.#queue.length = 0;
    }
    this.#queue.push(value);
    this.#deliver();
  }

  /** Ends the stream after the values not yet read. */
  close(): void {
    if (this.isDetached) return;
    this.#closing = true;
    this.#deliver();
  }

  /** Errors the stream after the values not yet read have been read. */
  fail(reason: unknown): void {
    if (this.isDetached) return;
    this.#failure = { reason };
    this.#closing = true;
    this.#deliver();
  }

  /** Errors the stream at once (values not yet read are dropped). */
  error(reason: unknown): void {
    if (this.#detached) return;
    this.#queue.length = 0;
    this.#controller.error(reason);
    this.#detach();
  }

  #pull(): void {
    if (this.#detached) return;
    this.#readWaiting = true;
    if (this.#queue.length > 0 || this.#closing) this.#flush();
  }

  /**
   * Hands values over only when a read is waiting, so a latest-value stream
   * keeps coalescing while its reader is busy; a close with nothing left to
   * read happens at once.
   */
  #deliver(): void {
    if (this.#detached) return;
    if (!this.#readWaiting) {
      if (this.#closing && this.#queue.length === 0) this.#flush();
      return;
    }
    this.#flush();
  }

  /** Hands over one value, or ends the stream once nothing is left. */
  #flush(): void {
    if (this.#detached) return;
    this.#readWaiting = false;
    if (this.#queue.length > 0) {
      this.#controller.enqueue(this.#queue.shift()!);
    }
    // Values go out one per read (a read is always pending here, so the
    // value is already taken and an error cannot drop it).
    if (this.#closing && this.#queue.length === 0) {
      if (this.#failure !== undefined) {
        this.#controller.error(this.#failure.reason);
      } else {
        this.#controller.close();
      }
      this.#detach();
    }
  }

  /** Ends the stream now, dropping values not yet read (abort). */
  #end(): void {
    if (this.#detached) return;
    this.#queue.length = 0;
    this.#controller.close();
    this.#detach();
  }

  #detach(): void {
    if (this.#detached) return;
    this.#detached = true;
    this.#queue.length = 0;
    this.#readWaiting = false;
    this.#removeAbort?.();
    this.#removeAbort = undefined;
    const onDetach = this.#onDetach;
    this.#onDetach = undefined;
    onDetach?.();
  }
}
