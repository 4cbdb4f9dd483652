/**
 * A clock for tests whose time moves only when the test says so, injected
 * through the public `clock` option (so the conformance suite can use it).
 *
 * @module
 */
import type { Clock } from "../../mod.ts";

interface FakeTimer {
  id: number;
  dueAt: number;
  callback: () => void;
}

/**
 * A clock whose time moves only when the test says so. `advance(ms)` fires
 * the timers that fall due on the way, each at its own due time, in order
 * (timers due at the same time fire in the order they were set), with
 * `now()` equal to their due time; `sleep(ms)` moves time without firing
 * anything (the machine was asleep), so the next `advance(0)` fires overdue
 * timers late; `jump(ms)` is the two at once.
 *
 * The default start is a fixed instant; pass `Date.now()` when the code
 * under test compares the clock with real time (token expiry, a real
 * server).
 */
export class FakeClock implements Clock {
  #now: number;
  /** The time the clock started at. */
  readonly start: number;
  #timers: FakeTimer[] = [];
  #nextId = 1;

  constructor(start = 1_700_000_000_000) {
    this.#now = start;
    this.start = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(callback: () => void, delayMs: number): unknown {
    const timer = {
      id: this.#nextId++,
      dueAt: this.#now + Math.max(0, delayMs),
      callback,
    };
    this.#timers.push(timer);
    return timer.id;
  }

  clearTimeout(handle: unknown): void {
    this.#timers = this.#timers.filter((timer) => timer.id !== handle);
  }

  /** Number of timers waiting to fire. */
  get pending(): number {
    return this.#timers.length;
  }

  /** Due time of the earliest pending timer, or undefined. */
  get nextDueAt(): number | undefined {
    let earliest: number | undefined;
    for (const timer of this.#timers) {
      if (earliest === undefined || timer.dueAt < earliest) {
        earliest = timer.dueAt;
      }
    }
    return earliest;
  }

  /** Moves time forward by `ms`, firing due timers in order. */
  advance(ms: number): void {
    const target = this.#now + ms;
    for (let guard = 0; guard < 100_000; guard++) {
      const timer = this.#earliestDue(target);
      if (timer === undefined) {
        this.#now = Math.max(this.#now, target);
        return;
      }
      this.#timers = this.#timers.filter((other) => other !== timer);
      this.#now = Math.max(this.#now, timer.dueAt);
      timer.callback();
    }
    throw new Error("FakeClock.advance(): more than 100,000 timers fired");
  }

  /** Moves time forward by `ms` without firing anything. */
  sleep(ms: number): void {
    this.#now += ms;
  }

  /**
   * Moves time forward by `ms` at once, as a machine waking from sleep sees
   * it, then fires every overdue timer, late.
   */
  jump(ms: number): void {
    this.sleep(ms);
    this.advance(0);
  }

  #earliestDue(limit: number): FakeTimer | undefined {
    let found: FakeTimer | undefined;
    for (const timer of this.#timers) {
      if (
        timer.dueAt <= limit &&
        (found === undefined || timer.dueAt < found.dueAt)
      ) {
        found = timer;
      }
    }
    return found;
  }
}
