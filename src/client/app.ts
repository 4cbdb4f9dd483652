// This module is browser compatible.

import { type Clock, systemClock } from "../util/clock.ts";
import { type ReconnectOptions, resolveReconnectOptions } from "./backoff.ts";
import { type Credentials, credentialsBody } from "./credentials.ts";
import { type KeepaliveOptions, resolveKeepaliveOptions } from "./keepalive.ts";
import { emitLog, type Logger } from "./log.ts";
import { requestLogin } from "./login.ts";
import { createUser, type User } from "./user.ts";
import { type UserContext, UserCore } from "./user_core.ts";

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

/**
 * Options of {@linkcode App.logIn}.
 *
 * @example A login that gives up after 5 seconds
 * ```ts
 * import type { LogInOptions } from "@tether/sync";
 *
 * const options: LogInOptions = { signal: AbortSignal.timeout(5_000) };
 * console.log(options.signal?.aborted);
 * ```
 */
export interface LogInOptions {
  /** Cancels the login: it rejects with `signal.reason`. */
  signal?: AbortSignal;
}

function checkDuration(name: string, value: number | undefined): void {
  if (value !== undefined && (!Number.isFinite(value) || value < 0)) {
    throw new RangeError(
      `Cannot create App: ${name} ${value} is not a non-negative number of milliseconds`,
    );
  }
}

/**
 * The client's entry point: one per server. Logs users in, and through them
 * opens realms; owns the connections (one WebSocket per user, shared by
 * that user's sessions) and their reconnect policy.
 *
 * In browsers, an `online` event retries every waiting connection at once
 * and checks open ones.
 *
 * @example A tour
 * ```ts
 * import { App, Credentials } from "@tether/sync";
 * import { serveSync } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: () => {},
 * });
 * await using app = new App({
 *   baseUrl: server.url,
 *   reconnect: { minDelayMs: 100, maxDelayMs: 5_000 },
 * });
 * const user = await app.logIn(Credentials.anonymous());
 * assert.equal(app.currentUser, user);
 * await using realm = await user.openRealm({ path: "/~/todos" });
 * await realm.write((tx) => tx.put("Task", "t1", { title: "Buy milk" }));
 * app.reconnect(); // every session, now
 * await realm.syncSession.waitForUpload({ signal: AbortSignal.timeout(5_000) });
 * ```
 */
export class App {
  #baseUrl: string;
  #context: UserContext;
  #users = new Map<string, UserCore>();
  #current: UserCore | undefined;
  #closed: Promise<void> | undefined;
  #lifetime = new AbortController();
  #removeOnline: (() => void) | undefined;

  /**
   * Creates an app. Nothing connects until a user opens a realm.
   *
   * @param options The server's base URL and, optionally, policies.
   * @throws {TypeError} For a base URL that is not http(s), or a missing
   *   WebSocket or fetch.
   * @throws {RangeError} For a negative or non-finite duration, or a bad
   *   reconnect or keepalive option.
   */
  constructor(options: AppOptions) {
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
    checkDuration("connectTimeoutMs", options.connectTimeoutMs);
    checkDuration("lingerMs", options.lingerMs);
    checkDuration("progressIntervalMs", options.progressIntervalMs);
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
    this.#baseUrl = `${base.origin}${path}`;
    const loginUrl = `${base.origin}${path}/login`;
    const sync = new URL(`${base.origin}${path}/sync`);
    sync.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    const clock = options.clock ?? systemClock;
    this.#context = {
      loginUrl,
      syncUrl: sync.href,
      fetch: fetchFunction,
      WebSocket: WebSocketClass,
      clock,
      random: options.random ?? Math.random,
      reconnect: resolveReconnectOptions(options.reconnect),
      keepalive: resolveKeepaliveOptions(options.keepalive),
      connectTimeoutMs: options.connectTimeoutMs ?? 30_000,
      lingerMs: options.lingerMs ?? 30_000,
      progressIntervalMs: options.progressIntervalMs ?? 50,
      logger: options.logger,
      onLogOut: (user) => this.#forget(user),
    };
    const target = globalThis as {
      addEventListener?: (type: string, listener: () => void) => void;
      removeEventListener?: (type: string, listener: () => void) => void;
    };
    if (
      typeof target.addEventListener === "function" &&
      typeof target.removeEventListener === "function"
    ) {
      const listener = () => {
        for (const user of this.#users.values()) user.networkOnline();
      };
      target.addEventListener("online", listener);
      this.#removeOnline = () =>
        target.removeEventListener!("online", listener);
    }
  }

  /** The base URL, normalised (no trailing slash). */
  get baseUrl(): string {
    return this.#baseUrl;
  }

  /** The user who logged in last and has not logged out, if any. */
  get currentUser(): User | undefined {
    return this.#current?.user;
  }

  /** Every logged-in user, in login order. */
  get allUsers(): User[] {
    return [...this.#users.values()].map((core) => core.user);
  }

  /**
   * Logs in with `POST <baseUrl>/login`. Logging in again as a JWT user who
   * is already logged in returns the same {@linkcode User} with fresh
   * tokens; each anonymous login is a new user.
   *
   * @param credentials `Credentials.anonymous()` or `Credentials.jwt(token)`.
   * @param options `signal` cancels the login.
   * @returns The user, now `currentUser`.
   * @throws {SyncError} `login_failed` with the server's message when it
   *   refuses (bad or expired JWT, anonymous login disabled);
   *   `connection_lost` when it cannot be reached.
   * @throws {TypeError} When the app is closed.
   * @throws The signal's reason, unchanged, when aborted.
   */
  async logIn(
    credentials: Credentials,
    options: LogInOptions = {},
  ): Promise<User> {
    const signal = options.signal;
    if (signal?.aborted) throw signal.reason;
    if (this.#closed !== undefined) {
      throw new TypeError("Cannot log in: the app is closed");
    }
    const body = credentialsBody(credentials);
    const combined = signal === undefined
      ? this.#lifetime.signal
      : AbortSignal.any([signal, this.#lifetime.signal]);
    const login = await requestLogin(
      this.#context.fetch,
      this.#context.loginUrl,
      body,
      combined,
      () => this.#context.clock.now(),
    ).catch((error) => {
      throw signal?.aborted ? signal.reason : error;
    });
    if (this.#closed !== undefined) {
      throw new TypeError("Cannot log in: the app is closed");
    }
    let core = this.#users.get(login.userId);
    if (core !== undefined && credentials.provider === "jwt") {
      core.updateLogin(credentials, login);
    } else {
      core = new UserCore(this.#context, credentials, login);
      createUser(core);
      this.#users.set(login.userId, core);
    }
    this.#current = core;
    const user = core.user;
    emitLog(this.#context.logger, {
      level: "info",
      event: "user.login",
      message: `User ${user.id} logged in (${credentials.provider})`,
      time: this.#context.clock.now(),
    });
    return user;
  }

  /**
   * Reconnects every session of every user now: cancels pending retry
   * delays (a connection's, and a session's rebind after a session error),
   * resets the backoffs, and replaces open sockets (one may have gone
   * silent). Paused sessions stay paused.
   */
  reconnect(): void {
    for (const user of this.#users.values()) user.reconnect();
  }

  /**
   * Closes every realm (their waits reject with `session_closed`) and
   * every connection; nothing dials afterwards. Users stay logged in as far
   * as the server is concerned. A second call waits for the first.
   *
   * @returns Resolves once everything is closed.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#lifetime.abort(new TypeError("The app was closed"));
      this.#removeOnline?.();
      this.#removeOnline = undefined;
      await Promise.all(
        [...this.#users.values()].map((user) => user.closeAll()),
      );
    })();
    return this.#closed;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #forget(user: UserCore): void {
    if (this.#users.get(user.id) === user) this.#users.delete(user.id);
    if (this.#current === user) {
      const remaining = [...this.#users.values()];
      this.#current = remaining[remaining.length - 1];
    }
  }
}
