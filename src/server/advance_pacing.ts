/**
 * When one realm's next background snapshot advance may start: once the
 * server's writes pause, or once enough history has piled up to go on
 * regardless.
 *
 * An advance reads the history since the snapshot, writes the records it
 * touched and compacts old history: many store operations, on the same
 * thread and the same store as every realm's live traffic. Started while
 * writes stream in, to that realm or any other, it lands on their path:
 * every write waits behind its operations, and a write that meets a
 * compaction waits milliseconds (docs/PERFORMANCE.md "Snapshot advances wait
 * for a pause"). A pause in the server's writes is the cheap moment, so a
 * due advance waits for one, but only so long and only for so many bytes:
 * under writes that never pause, the snapshot still follows, and a fresh
 * client never replays more than about `maxBytes` of history on top of it.
 *
 * Pure: the caller passes the time, and nothing here schedules anything.
 */

/** How background snapshot advances are paced. */
export interface AdvancePacing {
  /** A due advance waits until the server had no write for this long (ms). */
  readonly quietMs: number;
  /** …but no longer than this after it became due (ms). */
  readonly maxDeferMs: number;
  /** …nor once this many bytes were committed since the last one started. */
  readonly maxBytes: number;
  /** Least time between the end of one advance and the next start (ms). */
  readonly minIntervalMs: number;
}

/**
 * The server's pacing: a fifth of a second without writes, at most ten
 * seconds or 4 MiB of history behind, at most two advances a second.
 */
export const ADVANCE_PACING: AdvancePacing = {
  quietMs: 200,
  maxDeferMs: 10_000,
  maxBytes: 4 * 1024 * 1024,
  minIntervalMs: 500,
};

/** See the file comment. */
export class AdvancePacer {
  readonly #pacing: AdvancePacing;
  // When an advance became due; -1 while none is.
  #dueSince = -1;
  // Bytes committed since the last advance started.
  #bytes = 0;
  #notBefore = Number.NEGATIVE_INFINITY;

  /** @param pacing The limits; {@linkcode ADVANCE_PACING} by default. */
  constructor(pacing: AdvancePacing = ADVANCE_PACING) {
    this.#pacing = pacing;
  }

  /** Notes a commit of `bytes` of this realm's history. */
  wrote(bytes: number): void {
    this.#bytes += bytes;
  }

  /** Notes that an advance is due from `now` on (kept if it already was). */
  due(now: number): void {
    if (this.#dueSince < 0) this.#dueSince = now;
  }

  /** Whether an advance is due and has not started. */
  get isDue(): boolean {
    return this.#dueSince >= 0;
  }

  /**
   * When the due advance may start: `now` or later, given when the server
   * last committed a write (to any realm).
   */
  startAt(now: number, lastWriteAt: number): number {
    const earliest = Math.max(now, this.#notBefore);
    if (this.#bytes >= this.#pacing.maxBytes) return earliest;
    const quiet = lastWriteAt + this.#pacing.quietMs;
    const deadline = this.#dueSince + this.#pacing.maxDeferMs;
    return Math.max(earliest, Math.min(quiet, deadline));
  }

  /** Notes that the due advance started: nothing is due until noted again. */
  started(): void {
    this.#dueSince = -1;
    this.#bytes = 0;
  }

  /** Notes that an advance ended at `now`. */
  ended(now: number): void {
    this.#notBefore = now + this.#pacing.minIntervalMs;
  }
}
