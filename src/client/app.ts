// This module is browser compatible.

import {
  type AppOptions,
  type ClientConfig,
  resolveClientConfig,
} from "./client_config.ts";
import { type Credentials, credentialsBody } from "./credentials.ts";
import { emitLog } from "./log.ts";
import { requestLogin } from "./login.ts";
import { createUser, type User } from "./user.ts";
import { UserCore } from "./user_core.ts";

export type { AppOptions } from "./client_config.ts";

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
  #config: ClientConfig;
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
    this.#config = resolveClientConfig(options);
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
    return this.#config.baseUrl;
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
      this.#config.fetch,
      this.#config.loginUrl,
      body,
      combined,
      () => this.#config.clock.now(),
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
      core = new UserCore(
        this.#config,
        (user) => this.#forget(user),
        credentials,
        login,
      );
      createUser(core);
      this.#users.set(login.userId, core);
    }
    this.#current = core;
    const user = core.user;
    emitLog(this.#config.logger, {
      level: "info",
      event: "user.login",
      message: `User ${user.id} logged in (${credentials.provider})`,
      time: this.#config.clock.now(),
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
