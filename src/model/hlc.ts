// This module is browser compatible.

/**
 * A hybrid-logical-clock stamp: wall-clock milliseconds, a counter that
 * orders events within one millisecond (or while the wall clock lags behind
 * a stamp already seen), and the id of the replica that made it.
 *
 * Stamps are totally ordered by (`time`, `counter`, `node`), so two replicas
 * never produce equal stamps and every tie has one winner.
 *
 * @example Two writes in the same millisecond
 * ```ts
 * import type { Hlc } from "@tether/sync/protocol";
 *
 * const first: Hlc = { time: 1_700_000_000_000, counter: 0, node: 42 };
 * const second: Hlc = { ...first, counter: 1 }; // orders after `first`
 * console.log(second.counter > first.counter);
 * ```
 */
export interface Hlc {
  /** Milliseconds since the Unix epoch, an integer in [0, 2^48). */
  time: number;
  /** Orders stamps with equal `time`, an integer in [0, 2^16). */
  counter: number;
  /** The writing replica's id, an integer in [0, 2^48). */
  node: number;
}

/** Largest `time` a stamp may carry (exclusive bound 2^48). */
export const HLC_MAX_TIME = 2 ** 48 - 1;
/** Largest `counter` a stamp may carry. */
export const HLC_MAX_COUNTER = 0xffff;
/** Largest `node` a stamp may carry. */
export const HLC_MAX_NODE = 2 ** 48 - 1;

/** Negative when `a` is older than `b`, positive when newer, 0 when equal. */
export function compareHlc(a: Hlc, b: Hlc): number {
  return a.time - b.time || a.counter - b.counter || a.node - b.node;
}

/** Returns whether every component of `stamp` is an integer in range. */
export function isValidHlc(stamp: Hlc): boolean {
  return Number.isInteger(stamp.time) && stamp.time >= 0 &&
    stamp.time <= HLC_MAX_TIME &&
    Number.isInteger(stamp.counter) && stamp.counter >= 0 &&
    stamp.counter <= HLC_MAX_COUNTER &&
    Number.isInteger(stamp.node) && stamp.node >= 0 &&
    stamp.node <= HLC_MAX_NODE;
}

/**
 * Issues monotonically increasing stamps for one replica and folds in stamps
 * seen from others, so a local write always orders after everything this
 * replica has observed, even when the local wall clock runs behind.
 */
export class HlcClock {
  #node: number;
  #now: () => number;
  #last: Hlc;

  /**
   * @param node This replica's id, an integer in [0, 2^48).
   * @param now Source of wall-clock milliseconds; injectable for tests.
   */
  constructor(node: number, now: () => number = Date.now) {
    if (!Number.isInteger(node) || node < 0 || node > HLC_MAX_NODE) {
      throw new RangeError(`Cannot create clock: node ${node} out of range`);
    }
    this.#node = node;
    this.#now = now;
    this.#last = { time: 0, counter: 0, node };
  }

  /** This replica's id. */
  get node(): number {
    return this.#node;
  }

  /** Returns a stamp newer than every stamp issued or observed so far. */
  next(): Hlc {
    const wall = Math.min(Math.floor(this.#now()), HLC_MAX_TIME);
    const last = this.#last;
    let stamp: Hlc;
    if (wall > last.time) {
      stamp = { time: wall, counter: 0, node: this.#node };
    } else if (last.counter < HLC_MAX_COUNTER) {
      stamp = { time: last.time, counter: last.counter + 1, node: this.#node };
    } else {
      // The counter is exhausted within one millisecond: borrow the next one.
      stamp = { time: last.time + 1, counter: 0, node: this.#node };
    }
    this.#last = stamp;
    return stamp;
  }

  /** Records a stamp seen from another replica. */
  observe(stamp: Hlc): void {
    if (compareHlc(stamp, this.#last) > 0) {
      this.#last = {
        time: stamp.time,
        counter: stamp.counter,
        node: this.#node,
      };
    }
  }
}
