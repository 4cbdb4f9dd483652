// This module is browser compatible.

/**
 * The client's configuration: the options of an `App` and their one
 * resolution into a `ClientConfig` that every user, connection and session
 * reads by reference (docs/CLIENT.md "Connection, retries and keepalive").
 */

import { type Clock, systemClock } from "../util/clock.ts";
import {
  type ReconnectOptions,
  type ResolvedReconnectOptions,
  resolveReconnectOptions,
} from "./backoff.ts";
import {
  type KeepaliveOptions,
  type ResolvedKeepaliveOptions,
  resolveKeepaliveOptions,
} from "./keepalive.ts";
import type { Logger } from "./log.ts";

/**
 * Options of an {@linkcode App}. Every option but `baseUrl` is optional;
 * the defaults suit a phone on a flaky network as well as a server.
 *
 * @example Tighter policies for a test or a LAN
 * ```ts
 * import type { AppOptions } from "@tether/sync";
 *
 * const options: AppOptions = {
 *   baseUrl: "http://127.0.0.1:8080",
 *   reconnect: { minDelayMs: 100, maxDelayMs: 5_000, maxAttempts: 20 },
 *   keepalive: { pingIntervalMs: 10_000, readTimeoutMs: 30_000 },
 *   connectTimeoutMs: 5_000,
 *   lingerMs: 1_000,
 *   logger: (record) => { if (record.level !== "debug") console.log(record.message); },
 * };
 * console.log(options.baseUrl);
 * ```
 */
export interface AppOptions {
  /**
   * The sync server's base URL, e.g. `"http://127.0.0.1:8080"` (`https:`
   * for TLS). Login goes to `<baseUrl>/login`, the WebSocket to
   * `<baseUrl>/sync` (`ws:` / `wss:`).
   */
  baseUrl: string | URL;
  /**
   * Reconnect backoff: exponential with full jitter between 0 and
   * `min(maxDelayMs, minDelayMs × multiplier^n)`; `maxAttempts` failed
   * attempts in a row end the sessions with `reconnect_gave_up`; the
   * backoff resets once a connection stayed up `resetAfterMs`. A session
   * the server fails with a retryable error binds again on the same policy,
   * counting its own attempts.
   *
   * @default {{ minDelayMs: 1000, maxDelayMs: 30000, multiplier: 2, maxAttempts: Infinity, resetAfterMs: 10000 }}
   */
  reconnect?: ReconnectOptions;
  /**
   * Keepalive: a PING every `pingIntervalMs`; no inbound message within
   * `readTimeoutMs` means the connection is dead; after a sleep, the server
   * gets `wakeTimeoutMs` to answer; a session the server owes an answer (an
   * upload acknowledgement, a MARK reply) hears nothing for
   * `responseTimeoutMs` (default: `readTimeoutMs`) is stalled: it reports
   * `session_stalled` and binds again.
   *
   * @default {{ pingIntervalMs: 30000, readTimeoutMs: 120000, wakeTimeoutMs: 5000, responseTimeoutMs: 120000 }}
   */
  keepalive?: KeepaliveOptions;
  /**
   * Limit for one connection attempt (token, socket, handshake), in
   * milliseconds.
   *
   * @default {30000}
   */
  connectTimeoutMs?: number;
  /**
   * How long an unused connection stays open after its last session
   * closed or paused, in milliseconds.
   *
   * @default {30000}
   */
  lingerMs?: number;
  /**
   * Shortest interval between two intermediate progress reports, in
   * milliseconds: bursts are merged (about 20 reports a second at most).
   * Complete reports are never delayed. 0 reports every change.
   *
   * @default {50}
   */
  progressIntervalMs?: number;
  /** Receives lifecycle, state-change, retry and error records. */
  logger?: Logger;
  /**
   * The WebSocket constructor (for runtimes without a global one, or
   * tests).
   *
   * @default {globalThis.WebSocket}
   */
  WebSocket?: typeof WebSocket;
  /**
   * The fetch function used for `POST /login`.
   *
   * @default {globalThis.fetch}
   */
  fetch?: typeof fetch;
  /**
   * Time and timers (for tests that drive backoff and keepalive).
   *
   * @default {systemClock}
   */
  clock?: Clock;
  /**
   * Randomness in [0, 1) for backoff jitter.
   *
   * @default {Math.random}
   */
  random?: () => number;
}

/** An `App`'s options, checked and with every default filled in. */
export interface ClientConfig {
  /** The base URL without a trailing slash, query or hash. */
  readonly baseUrl: string;
  /** `POST` here to log in. */
  readonly loginUrl: string;
  /** The WebSocket URL of the sync endpoint. */
  readonly syncUrl: string;
  readonly fetch: typeof fetch;
  readonly WebSocket: typeof WebSocket;
  readonly clock: Clock;
  readonly random: () => number;
  readonly reconnect: ResolvedReconnectOptions;
  readonly keepalive: ResolvedKeepaliveOptions;
  readonly connectTimeoutMs: number;
  readonly lingerMs: number;
  readonly progressIntervalMs: number;
  readonly logger: Logger | undefined;
}

/** The duration options: name and default, checked in this order. */
const DURATIONS = [
  ["connectTimeoutMs", 30_000],
  ["lingerMs", 30_000],
  ["progressIntervalMs", 50],
] as const;

type DurationName = typeof DURATIONS[number][0];

/**
 * Checks `options` and fills in the defaults, once per app.
 *
 * @throws {TypeError} For options that are not an object, a base URL that
 *   is not http(s), or a missing WebSocket or fetch.
 * @throws {RangeError} For a negative or non-finite duration, or a bad
 *   reconnect or keepalive option.
 */
export function resolveClientConfig(options: AppOptions): ClientConfig {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("Cannot create App: options must be an object");
  }
  let base: URL;
  try {
    base = new URL(String(options.baseUrl));
  } catch {
    throw new TypeError(
      `Cannot create App: baseUrl ${
        JSON.stringify(String(options.baseUrl))
      } is not a URL`,
    );
  }
  if (base.protocol !== "http:" && base.protocol !== "https:") {
    throw new TypeError(
      `Cannot create App: baseUrl must be http: or https:, got ${base.protocol}`,
    );
  }
  const durations = {} as Record<DurationName, number>;
  for (const [name, fallback] of DURATIONS) {
    const value = options[name];
    if (value !== undefined && (!Number.isFinite(value) || value < 0)) {
      throw new RangeError(
        `Cannot create App: ${name} ${value} is not a non-negative number of milliseconds`,
      );
    }
    durations[name] = value ?? fallback;
  }
  const WebSocketClass = options.WebSocket ?? globalThis.WebSocket;
  const fetchFunction = options.fetch ?? globalThis.fetch?.bind(globalThis);
  if (typeof WebSocketClass !== "function") {
    throw new TypeError(
      "Cannot create App: no WebSocket; pass options.WebSocket",
    );
  }
  if (typeof fetchFunction !== "function") {
    throw new TypeError("Cannot create App: no fetch; pass options.fetch");
  }
  const path = base.pathname.replace(/\/+$/, "");
  base.search = "";
  base.hash = "";
  const sync = new URL(`${base.origin}${path}/sync`);
  sync.protocol = base.protocol === "https:" ? "wss:" : "ws:";
  return Object.freeze({
    baseUrl: `${base.origin}${path}`,
    loginUrl: `${base.origin}${path}/login`,
    syncUrl: sync.href,
    fetch: fetchFunction,
    WebSocket: WebSocketClass,
    clock: options.clock ?? systemClock,
    random: options.random ?? Math.random,
    reconnect: resolveReconnectOptions(options.reconnect),
    keepalive: resolveKeepaliveOptions(options.keepalive),
    ...durations,
    logger: options.logger,
  });
}
