// This module is browser compatible.

import { type Clock, Timer } from "../util/clock.ts";

/**
 * Keepalive policy of a connection.
 *
 * @example Notice a dead link within about 20 seconds
 * ```ts
 * import type { KeepaliveOptions } from "@tether/sync";
 *
 * const keepalive: KeepaliveOptions = { pingIntervalMs: 5_000, readTimeoutMs: 20_000 };
 * console.log(keepalive.readTimeoutMs);
 * ```
 */
export interface KeepaliveOptions {
  /**
   * How often the client sends PING, in milliseconds. The server answers
   * with PONG, which also measures the round-trip time.
   *
   * @default {30000}
   */
  pingIntervalMs?: number;
  /**
   * How long without any inbound message before the connection counts as
   * dead and is replaced, in milliseconds. Any message counts as life, not
   * only PONG, so a long download is never cut.
   *
   * @default {120000}
   */
  readTimeoutMs?: number;
  /**
   * How long to wait for an answer after a timer fired far later than
   * scheduled (the machine slept, or the process was frozen), in
   * milliseconds. Instead of waiting out the read timeout, the client pings
   * at once and gives the server this long to show life.
   *
   * @default {5000}
   */
  wakeTimeoutMs?: number;
  /**
   * How long a session waits for the server to answer, in milliseconds,
   * while it owes one: an UPLOAD not yet acknowledged or a MARK not yet
   * answered. Any message for the session restarts the wait, so a long
   * download or a large upload that is progressing is never cut; time spent
   * while the upload is still leaving the client does not count. When it
   * passes, the session reports `"disconnected"` with a `session_stalled`
   * error, unbinds and binds again after the session backoff (the socket and
   * the other sessions on it stay up). This catches a server whose stream
   * for one session stalled while it still answers PINGs. Unset, it follows
   * `readTimeoutMs`.
   *
   * @default {120000}
   */
  responseTimeoutMs?: number;
}

/** {@linkcode KeepaliveOptions} with every default filled in. */
export type ResolvedKeepaliveOptions = Required<KeepaliveOptions>;

/** The defaults of {@linkcode KeepaliveOptions}. */
export const DEFAULT_KEEPALIVE: Readonly<ResolvedKeepaliveOptions> = Object
  .freeze({
    pingIntervalMs: 30_000,
    readTimeoutMs: 120_000,
    wakeTimeoutMs: 5_000,
    responseTimeoutMs: 120_000,
  });

/**
 * Fills in defaults and checks ranges. `responseTimeoutMs` defaults to the
 * resolved `readTimeoutMs`.
 *
 * @throws {RangeError} For a non-positive or non-finite duration.
 */
export function resolveKeepaliveOptions(
  options: KeepaliveOptions = {},
): ResolvedKeepaliveOptions {
  const resolved = { ...DEFAULT_KEEPALIVE };
  for (
    const key of Object.keys(DEFAULT_KEEPALIVE) as (keyof KeepaliveOptions)[]
  ) {
    const value = options[key];
    if (value === undefined) continue;
    if (!Number.isFinite(value) || value <= 0) {
      throw new RangeError(
        `Cannot use keepalive.${key}: ${value} is not a positive number of milliseconds`,
      );
    }
    resolved[key] = value;
  }
  if (options.responseTimeoutMs === undefined) {
    resolved.responseTimeoutMs = resolved.readTimeoutMs;
  }
  return resolved;
}

/** The options a connection's {@linkcode Keepalive} uses (the response
 * timeout belongs to each session). */
export type ConnectionKeepaliveOptions = Omit<
  ResolvedKeepaliveOptions,
  "responseTimeoutMs"
>;

/** What a {@linkcode Keepalive} drives. */
export interface KeepaliveTarget {
  /** Sends a PING carrying `timestamp` (the clock's now). */
  sendPing(timestamp: number): void;
  /** The connection showed no life in time; replace it. */
  onDead(reason: "read_timeout" | "wake_timeout"): void;
}

/**
 * Liveness of one open connection: pings every `pingIntervalMs`, declares the
 * connection dead after `readTimeoutMs` without inbound messages, and when its
 * timer fires far later than scheduled (a sleep) pings at once with a short
 * deadline instead of trusting either figure.
 */
export class Keepalive {
  #clock: Clock;
  #options: ConnectionKeepaliveOptions;
  #target: KeepaliveTarget;
  #timer: Timer;
  #running = false;
  #lastInboundAt = 0;
  #lastPingAt = 0;
  #wakeDeadline: number | undefined;
  #rttMs: number | undefined;
  #confirming = false;

  /**
   * @param clock Time and timers.
   * @param options Intervals (resolved).
   * @param target Where pings go and who hears of a dead connection.
   */
  constructor(
    clock: Clock,
    options: ConnectionKeepaliveOptions,
    target: KeepaliveTarget,
  ) {
    this.#clock = clock;
    this.#options = options;
    this.#target = target;
    this.#timer = new Timer(clock);
  }

  /** The last measured round-trip time in milliseconds, if any. */
  get rttMs(): number | undefined {
    return this.#rttMs;
  }

  /** Whether a liveness check after a sleep is waiting for an answer. */
  get isCheckingLiveness(): boolean {
    return this.#wakeDeadline !== undefined;
  }

  /**
   * A timer fired this much later than scheduled means the process did not
   * run meanwhile: larger than any event-loop stall worth ignoring, smaller
   * than the ping interval so a sleep is noticed at the first tick, and at
   * most half the read timeout, since time the process did not run cannot
   * be charged to the link.
   */
  get #sleepThresholdMs(): number {
    return Math.min(
      Math.max(1_000, this.#options.pingIntervalMs / 2),
      this.#options.readTimeoutMs / 2,
    );
  }

  /** Starts watching a connection that just opened. */
  start(): void {
    const now = this.#clock.now();
    this.#running = true;
    this.#lastInboundAt = now;
    this.#lastPingAt = now;
    this.#wakeDeadline = undefined;
    this.#schedule();
  }

  /** Stops every timer. */
  stop(): void {
    this.#running = false;
    this.#wakeDeadline = undefined;
    this.#confirming = false;
    this.#timer.stop();
  }

  /** Records that a message arrived (any message counts as life). */
  noteInbound(): void {
    if (!this.#running) return;
    this.#lastInboundAt = this.#clock.now();
    this.#confirming = false;
    if (this.#wakeDeadline !== undefined) {
      this.#wakeDeadline = undefined;
      this.#schedule();
    }
  }

  /** Records a PONG echoing `timestamp`, measuring the round trip. */
  notePong(timestamp: number): void {
    const rtt = this.#clock.now() - timestamp;
    if (Number.isFinite(rtt) && rtt >= 0) this.#rttMs = rtt;
    this.noteInbound();
  }

  /**
   * Pings now and treats the connection as dead unless something arrives
   * within `wakeTimeoutMs` (after a sleep, or when the network came back).
   */
  checkNow(): void {
    if (!this.#running) return;
    const now = this.#clock.now();
    this.#ping(now);
    this.#wakeDeadline = now +
      Math.min(this.#options.wakeTimeoutMs, this.#options.readTimeoutMs);
    this.#schedule();
  }

  #ping(now: number): void {
    this.#lastPingAt = now;
    this.#target.sendPing(now);
  }

  #schedule(): void {
    if (!this.#running) return;
    const now = this.#clock.now();
    const nextPingAt = this.#lastPingAt + this.#options.pingIntervalMs;
    const deadAt = this.#wakeDeadline ??
      this.#lastInboundAt + this.#options.readTimeoutMs;
    this.#timer.start(
      (lateMs) => this.#tick(lateMs),
      Math.min(nextPingAt, deadAt) - now,
    );
  }

  #tick(lateMs: number): void {
    if (!this.#running) return;
    const now = this.#clock.now();
    if (lateMs > this.#sleepThresholdMs) {
      // Also during a liveness check: its deadline passed while the process
      // was not running, so it proves nothing about the link.
      this.checkNow();
      return;
    }
    const dead = this.#wakeDeadline !== undefined
      ? now >= this.#wakeDeadline ? "wake_timeout" : null
      : now - this.#lastInboundAt >= this.#options.readTimeoutMs
      ? "read_timeout"
      : null;
    if (dead !== null) {
      // A timer and the input that would have reset it can be due in the
      // same turn of the event loop (after the process was busy or
      // starved), and timers run first: read what is already there before
      // calling the link dead.
      if (!this.#confirming) {
        this.#confirming = true;
        this.#timer.start((late) => this.#tick(late), 0);
        return;
      }
      this.stop();
      this.#target.onDead(dead);
      return;
    }
    this.#confirming = false;
    if (now - this.#lastPingAt >= this.#options.pingIntervalMs) this.#ping(now);
    this.#schedule();
  }
}
