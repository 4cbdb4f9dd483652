// This module is browser compatible.

/**
 * The stall watchdog of one session: the response timeout that runs while
 * the server owes an answer (an UPLOAD not yet acknowledged, a MARK not yet
 * answered) and reports a stall when none comes (docs/CLIENT.md "Connection, retries and keepalive").
 *
 * Time that is the client's does not count against the server: while the
 * socket is still sending the wait is looked at again shortly, and a
 * message still being handled (integrating a large DOWNLOAD) restarts it
 * once handled. A later UPLOAD or MARK never pushes back the deadline of an
 * earlier one.
 */

import { type Clock, Timer } from "../util/clock.ts";
import { SyncError } from "./sync_error.ts";

/**
 * How often the watchdog looks again while the socket is still sending, in
 * milliseconds: the response timeout counts from when the frames have left,
 * give or take this much.
 */
export const STALL_DRAIN_POLL_MS = 250;

/** A binding as the watchdog sees it. */
export interface WatchedBinding {
  /** Whether frames are still leaving the client. */
  readonly isSending: boolean;
}

/** What the watchdog asks of its session. */
export interface StallHost {
  /** The current binding, if any. */
  binding(): WatchedBinding | undefined;
  /** Whether the server owes this binding an answer. */
  owesAnswer(): boolean;
  /** No answer came within the timeout on this binding. */
  stalled(): void;
}

/** A response timeout with an injected clock; see the module comment. */
export class StallWatchdog {
  /**
   * One timer for the session's life, not one per message: an answer moves
   * `#deadline` and the timer, when it fires early, sleeps again for the
   * rest; when nothing is owed it lapses on its next firing instead of
   * being cleared and set again around every write.
   */
  #timer: Timer;
  #clock: Clock;
  #timeoutMs: number;
  #host: StallHost;
  /** Messages received and not yet handled. */
  #unhandled = 0;
  /** Whether a wait runs: the server owes an answer on this binding. */
  #waiting = false;
  /** `"drain"`: the socket was still sending, look again at the deadline. */
  #phase: "drain" | "wait" = "wait";
  /** When the running wait (or drain poll) ends, epoch ms. */
  #deadline = 0;
  #binding: WatchedBinding | undefined;

  /**
   * @param clock Time and timers.
   * @param timeoutMs How long an owed answer may take.
   * @param host The session watched.
   */
  constructor(clock: Clock, timeoutMs: number, host: StallHost) {
    this.#timer = new Timer(clock);
    this.#clock = clock;
    this.#timeoutMs = timeoutMs;
    this.#host = host;
  }

  /** Whether the timeout (or a drain poll) is running. */
  get isRunning(): boolean {
    return this.#waiting;
  }

  /** Stops the timeout (a binding's end). */
  stop(): void {
    this.#waiting = false;
    this.#binding = undefined;
    this.#timer.stop();
  }

  /**
   * Starts the timeout when the server now owes an answer and it is not
   * already running; stops it when nothing is owed.
   */
  watch(): void {
    if (!this.#host.owesAnswer()) this.#waiting = false;
    else if (!this.#waiting) this.#start();
  }

  /**
   * A message for the session arrived: the server is answering. Pair with
   * {@linkcode answerHandled} once it has been handled.
   */
  answerArrived(): void {
    this.#restart();
    this.#unhandled++;
  }

  /** A message told to {@linkcode answerArrived} has been handled. */
  answerHandled(): void {
    this.#unhandled--;
    this.#restart();
  }

  /**
   * A message for the session arrived and was handled before this call:
   * {@linkcode answerArrived} and {@linkcode answerHandled} in one.
   */
  answered(): void {
    this.#restart();
  }

  /** The wait starts again from now, when an answer is still owed. */
  #restart(): void {
    if (this.#host.owesAnswer()) this.#start();
    else this.#waiting = false;
  }

  #start(): void {
    const binding = this.#host.binding();
    if (binding === undefined) {
      this.#waiting = false;
      return;
    }
    this.#waiting = true;
    this.#binding = binding;
    this.#phase = binding.isSending ? "drain" : "wait";
    const delay = binding.isSending
      ? Math.min(STALL_DRAIN_POLL_MS, this.#timeoutMs)
      : this.#timeoutMs;
    this.#deadline = this.#clock.now() + delay;
    // A timer already due no later than the deadline serves: it sleeps
    // again for the rest when it fires.
    if (!this.#timer.isRunning || this.#timer.dueAt > this.#deadline) {
      this.#timer.start(this.#fired, delay);
    }
  }

  #fired = (): void => {
    if (!this.#waiting) return;
    const rest = this.#deadline - this.#clock.now();
    if (rest > 0) {
      this.#timer.start(this.#fired, rest);
      return;
    }
    const binding = this.#binding!;
    if (this.#phase === "drain") {
      // The socket was still sending: the timeout counts from when it is
      // done, if an answer is still owed.
      this.#waiting = false;
      this.watch();
      return;
    }
    if (binding !== this.#host.binding() || !this.#host.owesAnswer()) {
      this.#waiting = false;
      return;
    }
    if (this.#unhandled > 0 || binding.isSending) {
      this.#start();
      return;
    }
    this.#waiting = false;
    this.#host.stalled();
  };
}

/**
 * The `session_stalled` error of a binding that owed an acknowledgement of
 * `unacknowledged` (0: none) and/or a MARK reply past `timeoutMs`.
 */
export function stallError(
  path: string,
  timeoutMs: number,
  unacknowledged: number,
  markOwed: boolean,
): SyncError {
  const owed = [];
  if (unacknowledged > 0) {
    owed.push(`an acknowledgement of client version ${unacknowledged}`);
  }
  if (markOwed) owed.push("a MARK reply");
  return new SyncError(
    "session_stalled",
    `No answer from the server for ${path} within ${timeoutMs} ms while it owed ${
      owed.join(" and ")
    }`,
  );
}
