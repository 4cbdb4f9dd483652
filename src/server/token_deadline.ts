/**
 * When a connection's access token runs out, as a timer on an injected clock
 * (`docs/ARCHITECTURE.md` "Tokens on a live connection").
 */

import { type Clock, Timer } from "../util/clock.ts";

// setTimeout takes at most a signed 32-bit delay; longer waits re-arm.
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Calls `onExpired` once the clock reaches the expiry of the newest token
 * armed; a REFRESH arms a later one in its place.
 */
export class TokenDeadline {
  #clock: Clock;
  #timer: Timer;
  #expiresAt = Infinity;
  #onExpired: () => void;

  /**
   * @param clock Epoch time for token lifetimes; its timers wait.
   * @param onExpired Called when the armed expiry has passed.
   */
  constructor(clock: Clock, onExpired: () => void) {
    this.#clock = clock;
    this.#timer = new Timer(clock);
    this.#onExpired = onExpired;
  }

  /** Replaces the deadline with `expiresAt` (epoch ms; Infinity = never). */
  arm(expiresAt: number): void {
    this.#expiresAt = expiresAt;
    this.#timer.stop();
    if (!Number.isFinite(expiresAt)) return;
    const remaining = expiresAt - this.#clock.now();
    this.#timer.start(() => {
      // A clock that moved slower than the timer (or a wait cut at the
      // 32-bit limit) is looked at again instead of trusted.
      if (this.#clock.now() >= this.#expiresAt) this.#onExpired();
      else this.arm(this.#expiresAt);
    }, Math.min(remaining, MAX_TIMER_MS));
  }

  /** Cancels the deadline (the connection closed). */
  stop(): void {
    this.#timer.stop();
  }
}
