// This module is browser compatible.

/**
 * The ledger of a session's pending waits: upload waiters by client version,
 * download waiters by the MARK round trip that will answer them.
 *
 * A download wait is answered by the reply to a MARK sent after it began
 * (docs/PROTOCOL.md §4.4): waiters queue until the next MARK goes out,
 * then ride on it; a binding lost before the reply puts them back in the
 * queue for the MARK that follows the next BIND. Knows nothing of sockets:
 * the session sends the MARKs.
 */

import { onAbort } from "../util/abort.ts";
import { Deferred } from "../util/deferred.ts";

interface Waiter {
  deferred: Deferred<void>;
  remove: () => void;
}

interface UploadWaiter extends Waiter {
  target: number;
  /**
   * A write's own receipt (rejects when that very write is refused or
   * dropped), rather than a wait for everything up to `target`.
   */
  receipt: boolean;
}

/** A MARK sent and not yet answered. */
export interface SentMark {
  /** The download sequence its reply completes (see `ProgressTracker`). */
  readonly sequence: number;
  readonly waiters: Set<Waiter>;
}

/** Upload waiters, download waiters and the MARKs they ride on. */
export class WaitsLedger {
  #uploads = new Set<UploadWaiter>();
  /**
   * The same upload waiters as a min-heap by target, so an acknowledgement
   * costs what it resolves rather than a scan of every wait. Waiters that
   * left `#uploads` (aborted, rejected) are dropped when they surface.
   */
  #byTarget: UploadWaiter[] = [];
  #downloads = new Set<Waiter>();
  #sentMarks = new Map<number, SentMark>();
  #nextRequestId = 1;
  #progressMarkWanted = false;
  /** Writes settled without being stored: their receipts reject. */
  #failed = new Map<number, unknown>();

  /**
   * Waits until `acknowledged(v)` is told a `v ≥ target`. Rejects with
   * `signal.reason` on abort (the caller checks `signal.aborted` first).
   */
  waitForUpload(
    target: number,
    signal: AbortSignal | undefined,
    receipt = false,
  ): Promise<void> {
    const deferred = new Deferred<void>();
    const waiter: UploadWaiter = {
      target,
      receipt,
      deferred,
      remove: () => {},
    };
    waiter.remove = onAbort(signal, (reason) => {
      this.#uploads.delete(waiter);
      deferred.reject(reason);
    });
    this.#uploads.add(waiter);
    this.#push(waiter);
    return deferred.promise;
  }

  /**
   * The write `version` was settled without being stored (the server
   * refused it, a client reset dropped it): its receipt waiters reject with
   * `error`, and so does every later receipt wait for it
   * ({@linkcode failure}). Waits for everything are not affected.
   */
  failed(version: number, error: unknown): void {
    this.#failed.set(version, error);
    for (const waiter of [...this.#uploads]) {
      if (waiter.receipt && waiter.target === version) {
        this.#uploads.delete(waiter);
        waiter.remove();
        waiter.deferred.reject(error);
      }
    }
  }

  /** Why the write `version` was not stored, if it was refused or dropped. */
  failure(version: number): { error: unknown } | undefined {
    return this.#failed.has(version)
      ? { error: this.#failed.get(version) }
      : undefined;
  }

  /** The server acknowledged local changesets up to `version`. */
  acknowledged(version: number): void {
    const heap = this.#byTarget;
    while (heap.length > 0 && heap[0]!.target <= version) {
      const waiter = this.#pop();
      if (!this.#uploads.delete(waiter)) continue;
      waiter.remove();
      waiter.deferred.resolve();
    }
  }

  #push(waiter: UploadWaiter): void {
    const heap = this.#byTarget;
    // Waits that left early (aborted) would pile up in a heap whose targets
    // are never reached: rebuild it from the live ones now and then.
    if (heap.length >= 64 && heap.length > 2 * this.#uploads.size) {
      const live = heap.filter((w) => this.#uploads.has(w) && w !== waiter);
      heap.length = 0;
      for (const w of live) this.#siftUp(heap, heap.push(w) - 1);
    }
    this.#siftUp(heap, heap.push(waiter) - 1);
  }

  #siftUp(heap: UploadWaiter[], index: number): void {
    const item = heap[index]!;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (heap[parent]!.target <= item.target) break;
      heap[index] = heap[parent]!;
      index = parent;
    }
    heap[index] = item;
  }

  #pop(): UploadWaiter {
    const heap = this.#byTarget;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length === 0) return top;
    let index = 0;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length &&
          heap[right]!.target < heap[left]!.target
        ? right
        : left;
      if (heap[child]!.target >= last.target) break;
      heap[index] = heap[child]!;
      index = child;
    }
    heap[index] = last;
    return top;
  }

  /**
   * Waits for the reply to a MARK sent after this call. Rejects with
   * `signal.reason` on abort (the caller checks `signal.aborted` first).
   */
  waitForDownload(signal: AbortSignal | undefined): Promise<void> {
    const deferred = new Deferred<void>();
    const waiter: Waiter = { deferred, remove: () => {} };
    waiter.remove = onAbort(signal, (reason) => {
      this.#downloads.delete(waiter);
      for (const mark of this.#sentMarks.values()) mark.waiters.delete(waiter);
      deferred.reject(reason);
    });
    this.#downloads.add(waiter);
    return deferred.promise;
  }

  /** A progress registration needs a MARK to learn when its work is here. */
  wantMark(): void {
    this.#progressMarkWanted = true;
  }

  /** Whether someone waits for a MARK that has not been sent yet. */
  get needsMark(): boolean {
    return this.#downloads.size > 0 || this.#progressMarkWanted;
  }

  /** Whether a MARK sent on the current binding is still unanswered. */
  get marksOutstanding(): boolean {
    return this.#sentMarks.size > 0;
  }

  /**
   * A MARK is going out: the queued waiters ride on it. Returns its
   * request id.
   *
   * @param sequence The download sequence its reply completes.
   */
  markSent(sequence: number): number {
    const requestId = this.#nextRequestId++;
    this.#progressMarkWanted = false;
    this.#sentMarks.set(requestId, {
      sequence,
      waiters: new Set(this.#downloads),
    });
    this.#downloads.clear();
    return requestId;
  }

  /**
   * Takes the MARK a MARK_REPLY answers off the ledger; settle its waiters
   * with {@linkcode resolveMark}. Undefined for a request id not sent on
   * this binding.
   */
  takeMark(requestId: number): SentMark | undefined {
    const mark = this.#sentMarks.get(requestId);
    if (mark !== undefined) this.#sentMarks.delete(requestId);
    return mark;
  }

  /** Resolves the waiters that rode on `mark`. */
  resolveMark(mark: SentMark): void {
    for (const waiter of mark.waiters) {
      waiter.remove();
      waiter.deferred.resolve();
    }
  }

  /**
   * The binding is gone: MARKs sent on it will never be answered, so their
   * waiters wait for the MARK sent after the next bind.
   */
  bindingLost(): void {
    for (const mark of this.#sentMarks.values()) {
      for (const waiter of mark.waiters) this.#downloads.add(waiter);
    }
    this.#sentMarks.clear();
  }

  /** Rejects every wait with `error` (a fatal failure, the close). */
  rejectAll(error: unknown): void {
    for (const waiter of this.#uploads) {
      waiter.remove();
      waiter.deferred.reject(error);
    }
    this.#uploads.clear();
    this.#byTarget = [];
    const downloads = new Set(this.#downloads);
    for (const mark of this.#sentMarks.values()) {
      for (const waiter of mark.waiters) downloads.add(waiter);
    }
    this.#downloads.clear();
    this.#sentMarks.clear();
    for (const waiter of downloads) {
      waiter.remove();
      waiter.deferred.reject(error);
    }
  }
}
