// This module is browser compatible.

import { abortable } from "../util/abort.ts";
import type { Clock } from "../util/clock.ts";
import type { ResolvedReconnectOptions } from "./backoff.ts";
import { type AccessToken, Connection } from "./connection.ts";
import { type Credentials, credentialsBody, renewJwt } from "./credentials.ts";
import type { ResolvedKeepaliveOptions } from "./keepalive.ts";
import { LocalRealm } from "./local_realm.ts";
import { emitLog, type Logger } from "./log.ts";
import { type LoginResponse, requestLogin, retryAfterMs } from "./login.ts";
import type { Progress } from "./progress.ts";
import {
  createRealm,
  markRealmClosed,
  type Realm,
  type RealmCore,
} from "./realm.ts";
import { MemoryStorage } from "./storage/memory.ts";
import { SyncError } from "./sync_error.ts";
import { checkIndexes } from "./live_query.ts";
import {
  closeSyncSession,
  createSyncSession,
  reconnectSyncSession,
  registerDownloadCallback,
  startSyncSession,
  type SyncSession,
} from "./sync_session.ts";

/**
 * Where a realm keeps its local copy: `"memory"` (for the life of the open
 * realm), or `{ kvPath }` for a durable Deno KV file — not yet supported
 * (it arrives with the durability work; passing it throws a `TypeError`).
 *
 * @example The one storage available today
 * ```ts
 * import type { RealmStorageOption } from "@tether/sync";
 *
 * const storage: RealmStorageOption = "memory";
 * console.log(storage);
 * ```
 */
export type RealmStorageOption = "memory" | { kvPath: string };

/**
 * How to open a realm.
 *
 * @example Opening with a progress bar and a deadline
 * ```ts
 * import type { RealmConfig } from "@tether/sync";
 *
 * const config: RealmConfig = {
 *   path: "/~/todos",
 *   waitForDownload: true,
 *   onProgress: (p) => console.log(`${Math.round(p.progressEstimate * 100)}%`),
 *   signal: AbortSignal.timeout(30_000),
 * };
 * console.log(config.path);
 * ```
 */
export interface RealmConfig {
  /**
   * The realm path, e.g. `"/~/todos"`; a `~` segment stands for this user's
   * id. Must start with `/`.
   */
  path: string;
  /**
   * Where the local copy lives.
   *
   * @default {"memory"}
   */
  storage?: RealmStorageOption;
  /**
   * Resolve only after the initial download (everything the server held
   * when the realm opened). Without it, `openRealm` resolves at once, even
   * offline or on a path the server will refuse; the session then reports
   * what the server said.
   *
   * @default {false}
   */
  waitForDownload?: boolean;
  /**
   * Download progress of the initial sync (`forCurrentlyOutstandingWork`):
   * never decreasing, ending with exactly one report at 1.0.
   */
  onProgress?: (progress: Progress) => void;
  /**
   * Cancels the open: it rejects with `signal.reason` and closes what it
   * opened.
   */
  signal?: AbortSignal;
  /**
   * Fields to index per type, e.g. `{ Task: ["done", "ownerId"] }`: a query
   * whose top-level conjunction has an equality, `in` or range condition on
   * one of them reads the index instead of scanning the type. Maintained on
   * every commit (local, downloaded, bootstrap). Opening a path again adds
   * its indexes to those it has. See docs/CLIENT.md "Querying".
   */
  indexes?: { readonly [type: string]: readonly string[] };
}

/** What a user needs from its app (internal). */
export interface UserContext {
  loginUrl: string;
  syncUrl: string;
  fetch: typeof fetch;
  WebSocket: typeof WebSocket;
  clock: Clock;
  random: () => number;
  reconnect: ResolvedReconnectOptions;
  keepalive: ResolvedKeepaliveOptions;
  connectTimeoutMs: number;
  lingerMs: number;
  progressIntervalMs: number;
  logger: Logger | undefined;
  onLogOut(user: User): void;
}

interface OpenRealm extends RealmCore {
  handles: Set<Realm>;
}

let constructing = false;
let pendingInit:
  | { context: UserContext; credentials: Credentials; login: LoginResponse }
  | undefined;

/** Creates a logged-in user (internal: `App.logIn`). */
export function createUser(
  context: UserContext,
  credentials: Credentials,
  login: LoginResponse,
): User {
  constructing = true;
  pendingInit = { context, credentials, login };
  try {
    return new User();
  } finally {
    constructing = false;
    pendingInit = undefined;
  }
}

/** Gives a user the tokens of a new login (internal: `App.logIn`). */
export let updateUserLogin: (
  user: User,
  credentials: Credentials,
  login: LoginResponse,
) => void;

/** Reconnects a user's connection now (internal: `App.reconnect`). */
export let reconnectUser: (user: User) => void;

/** Tells a user's connection the network came back (internal). */
export let networkOnline: (user: User) => void;

/** Closes a user's realms and connection without logging out (internal). */
export let closeUser: (user: User) => Promise<void>;

function resolvePath(path: string, userId: string): string {
  return path.split("/").map((segment) => segment === "~" ? userId : segment)
    .join("/");
}

function checkConfig(config: RealmConfig): void {
  if (typeof config !== "object" || config === null) {
    throw new TypeError("Cannot open realm: config must be an object");
  }
  const { path, storage, waitForDownload, onProgress, signal } = config;
  if (typeof path !== "string" || !path.startsWith("/") || path.length < 2) {
    throw new TypeError(
      `Cannot open realm: path must be a string starting with "/", got ${
        JSON.stringify(path)
      }`,
    );
  }
  if (path.split("/").slice(1).some((segment) => segment.length === 0)) {
    throw new TypeError(
      `Cannot open realm: path ${JSON.stringify(path)} has an empty segment`,
    );
  }
  if (storage !== undefined && storage !== "memory") {
    if (
      typeof storage === "object" && storage !== null && "kvPath" in storage
    ) {
      throw new TypeError(
        'Cannot open realm: storage { kvPath } is not yet supported; use "memory"',
      );
    }
    throw new TypeError(
      `Cannot open realm: storage must be "memory", got ${
        JSON.stringify(storage)
      }`,
    );
  }
  if (waitForDownload !== undefined && typeof waitForDownload !== "boolean") {
    throw new TypeError("Cannot open realm: waitForDownload must be a boolean");
  }
  if (onProgress !== undefined && typeof onProgress !== "function") {
    throw new TypeError("Cannot open realm: onProgress must be a function");
  }
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError("Cannot open realm: signal must be an AbortSignal");
  }
  checkIndexes(config.indexes);
}

/**
 * A logged-in user: opens realms, owns their sessions (which share one
 * WebSocket to the server), and keeps the user's tokens fresh — refreshing
 * the access token before it expires and after the server reports it
 * expired, without the sessions seeing an error.
 *
 * @example Opening realms
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
 * await using app = new App({ baseUrl: server.url });
 * const user = await app.logIn(Credentials.anonymous());
 * await using todos = await user.openRealm({ path: "/~/todos", waitForDownload: true });
 * await using notes = await user.openRealm({ path: "/~/notes" });
 * assert.equal(user.allSessions.length, 2);
 * assert.equal(user.sessionFor("/~/todos"), todos.syncSession);
 * assert.equal(user.sessionFor(`/${user.id}/notes`), notes.syncSession);
 * ```
 */
export class User {
  #context: UserContext;
  #credentials: Credentials;
  #id: string;
  #token: AccessToken;
  #refreshToken: string;
  #refreshing: Promise<AccessToken> | undefined;
  #loggedIn = true;
  #lifetime = new AbortController();
  #connection: Connection | undefined;
  #realms = new Map<string, OpenRealm>();
  #opening = new Map<string, Promise<OpenRealm>>();

  /**
   * Users come from `app.logIn()`; this constructor throws.
   *
   * @throws {TypeError} Always, when called directly.
   */
  constructor() {
    if (!constructing || pendingInit === undefined) {
      throw new TypeError("Cannot construct User: use app.logIn(credentials)");
    }
    const { context, credentials, login } = pendingInit;
    this.#context = context;
    this.#credentials = credentials;
    this.#id = login.userId;
    this.#token = this.#tokenFrom(login);
    this.#refreshToken = login.refreshToken;
  }

  static {
    updateUserLogin = (user, credentials, login) => {
      user.#credentials = credentials;
      user.#token = user.#tokenFrom(login);
      user.#refreshToken = login.refreshToken;
    };
    // A session waiting out a session-level rebind delay has left the
    // connection, which therefore cannot cancel that delay: each session
    // is told as well, after the connection so it joins the new dial.
    reconnectUser = (user) => {
      user.#connection?.reconnect();
      for (const realm of user.#realms.values()) {
        reconnectSyncSession(realm.session);
      }
    };
    networkOnline = (user) => {
      user.#connection?.networkOnline();
      for (const realm of user.#realms.values()) {
        reconnectSyncSession(realm.session);
      }
    };
    closeUser = (user) => user.#closeAll();
  }

  /** The user id (the JWT's `sub`, or the server's id for anonymous users). */
  get id(): string {
    return this.#id;
  }

  /** Whether the user is still logged in. */
  get isLoggedIn(): boolean {
    return this.#loggedIn;
  }

  /** The sessions of every realm this user has open. */
  get allSessions(): SyncSession[] {
    return [...this.#realms.values()].map((realm) => realm.session);
  }

  /**
   * The session of an open realm.
   *
   * @param path The realm path, with `~` or with the user id.
   * @returns The session, or undefined when no realm is open there.
   */
  sessionFor(path: string): SyncSession | undefined {
    return this.#realms.get(resolvePath(path, this.#id))?.session;
  }

  /**
   * Opens the realm at `config.path` and starts syncing it. Opening a path
   * that is already open gives another handle on the same realm and
   * session.
   *
   * Without `waitForDownload` it resolves at once with the local copy,
   * even offline or on a path the server will refuse (the session then
   * reports the server's answer). With it, it resolves after the initial
   * download, reporting progress to `onProgress`, and rejects with the
   * session's error if the server refuses.
   *
   * @param config Path, storage, waiting, progress, signal.
   * @returns The realm.
   * @throws {TypeError} For a bad config, `storage: { kvPath }` (not yet
   *   supported), or a logged-out user.
   * @throws {SyncError} With `waitForDownload`, the session's fatal error
   *   (e.g. `permission_denied`).
   * @throws The signal's reason, unchanged, when aborted (what was opened
   *   is closed again).
   */
  async openRealm(config: RealmConfig): Promise<Realm> {
    checkConfig(config);
    const signal = config.signal;
    if (signal?.aborted) throw signal.reason;
    if (!this.#loggedIn) {
      throw new TypeError("Cannot open realm: the user is logged out");
    }
    const key = resolvePath(config.path, this.#id);
    let core: OpenRealm | undefined;
    // A realm whose last handle closed while this call waited is gone;
    // open it again.
    for (let attempt = 0; attempt < 3 && core === undefined; attempt++) {
      const opening = this.#openCore(key, config.path);
      try {
        core = await abortable(opening, signal);
      } catch (error) {
        // Aborted while opening: let the open finish, then drop it unless
        // another handle uses it.
        await opening.then(
          (opened) => opened.handles.size === 0 ? opened.release() : undefined,
          () => {},
        );
        throw error;
      }
      if (this.#realms.get(key) !== core) core = undefined;
    }
    if (core === undefined) {
      throw new TypeError(`Cannot open realm: ${config.path} keeps closing`);
    }
    if (config.indexes !== undefined) {
      core.local.queries.ensureIndexes(config.indexes);
    }
    const realm = createRealm(core);
    core.handles.add(realm);
    if (config.onProgress !== undefined || config.waitForDownload) {
      const registration = config.onProgress === undefined
        ? null
        : registerDownloadCallback(core.session, config.onProgress);
      if (config.waitForDownload) {
        try {
          await core.session.waitForDownload(
            signal === undefined ? {} : { signal },
          );
        } catch (error) {
          registration?.cancel();
          await realm.close();
          throw error;
        }
      }
    }
    return realm;
  }

  /**
   * Logs out: closes every realm of this user (their waits reject with
   * `session_closed`) and the user's connection. Idempotent.
   *
   * @returns Resolves once everything is closed.
   */
  async logOut(): Promise<void> {
    if (!this.#loggedIn) return;
    this.#loggedIn = false;
    await this.#closeAll();
    this.#context.onLogOut(this);
    emitLog(this.#context.logger, {
      level: "info",
      event: "user.logout",
      message: `User ${this.#id} logged out`,
      time: this.#context.clock.now(),
    });
  }

  async #closeAll(): Promise<void> {
    const realms = [...this.#realms.values()];
    await Promise.allSettled([...this.#opening.values()]);
    for (const realm of this.#realms.values()) {
      if (!realms.includes(realm)) realms.push(realm);
    }
    await Promise.all(realms.map((realm) => this.#closeRealm(realm)));
    this.#lifetime.abort(new SyncError("session_closed", "User logged out"));
    const connection = this.#connection;
    this.#connection = undefined;
    await connection?.close();
  }

  #openCore(key: string, path: string): Promise<OpenRealm> {
    const open = this.#realms.get(key);
    if (open !== undefined) return Promise.resolve(open);
    const opening = this.#opening.get(key);
    if (opening !== undefined) return opening;
    const promise = (async () => {
      const local = await LocalRealm.open(
        new MemoryStorage(),
        () => this.#context.clock.now(),
      );
      if (!this.#loggedIn) {
        await local.close();
        throw new TypeError("Cannot open realm: the user is logged out");
      }
      const session = createSyncSession({
        path,
        user: this,
        local,
        connection: () => this.#connectionFor(),
        clock: this.#context.clock,
        random: this.#context.random,
        reconnect: this.#context.reconnect,
        progressIntervalMs: this.#context.progressIntervalMs,
        responseTimeoutMs: this.#context.keepalive.responseTimeoutMs,
        logger: this.#context.logger,
      });
      let released: Promise<void> | undefined;
      const core: OpenRealm = {
        path,
        local,
        session,
        handles: new Set(),
        release: () => {
          // A handle closed: the realm closes with its last handle.
          for (const handle of core.handles) {
            if (!handle.isClosed) return Promise.resolve();
          }
          released ??= this.#release(key, core);
          return released;
        },
      };
      this.#realms.set(key, core);
      startSyncSession(session);
      return core;
    })();
    this.#opening.set(key, promise);
    const forget = () => {
      if (this.#opening.get(key) === promise) this.#opening.delete(key);
    };
    promise.then(forget, forget);
    return promise;
  }

  async #release(key: string, core: OpenRealm): Promise<void> {
    if (this.#realms.get(key) === core) this.#realms.delete(key);
    closeSyncSession(core.session);
    await core.local.close();
  }

  async #closeRealm(core: OpenRealm): Promise<void> {
    for (const handle of core.handles) markRealmClosed(handle);
    await core.release();
  }

  #connectionFor(): Connection {
    if (!this.#loggedIn) {
      throw new TypeError("the user is logged out");
    }
    if (this.#connection === undefined) {
      const context = this.#context;
      this.#connection = new Connection({
        url: context.syncUrl,
        WebSocket: context.WebSocket,
        clock: context.clock,
        random: context.random,
        reconnect: context.reconnect,
        keepalive: context.keepalive,
        connectTimeoutMs: context.connectTimeoutMs,
        lingerMs: context.lingerMs,
        logger: context.logger,
        tokens: {
          accessToken: (fresh, signal) => this.#accessToken(fresh, signal),
          retryAfterMs,
        },
      });
    }
    return this.#connection;
  }

  #tokenFrom(login: LoginResponse): AccessToken {
    return {
      token: login.accessToken,
      expiresAt: login.accessTokenExpiresAt,
      obtainedAt: this.#context.clock.now(),
    };
  }

  /** Whether a token is still worth sending (within 80% of its life). */
  #isFresh(token: AccessToken): boolean {
    if (token.expiresAt === undefined) return true;
    const lifetime = token.expiresAt - token.obtainedAt;
    return this.#context.clock.now() < token.obtainedAt + lifetime * 0.8;
  }

  #accessToken(fresh: boolean, signal: AbortSignal): Promise<AccessToken> {
    if (!fresh && this.#isFresh(this.#token)) {
      return Promise.resolve(this.#token);
    }
    this.#refreshing ??= this.#renewToken().finally(() => {
      this.#refreshing = undefined;
    });
    return abortable(this.#refreshing, signal);
  }

  /**
   * A new access token: from the refresh token, or — when that is refused
   * — by logging in again with the credentials (asking a JWT user's
   * `refreshToken` callback for a new JWT if the old one is refused too).
   */
  async #renewToken(): Promise<AccessToken> {
    const context = this.#context;
    const login = (body: Parameters<typeof requestLogin>[2]) =>
      requestLogin(
        context.fetch,
        context.loginUrl,
        body,
        this.#lifetime.signal,
        () => context.clock.now(),
      );
    let response: LoginResponse;
    try {
      response = await login({
        provider: "refresh",
        refreshToken: this.#refreshToken,
      });
    } catch (error) {
      if (!(error instanceof SyncError) || error.code !== "login_failed") {
        throw error;
      }
      if (this.#credentials.provider === "anonymous") {
        throw new SyncError(
          "login_failed",
          `Cannot refresh the access token of anonymous user ${this.#id}: ${error.message}`,
          { cause: error, willRetry: false },
        );
      }
      try {
        response = await login(credentialsBody(this.#credentials));
      } catch (again) {
        if (!(again instanceof SyncError) || again.code !== "login_failed") {
          throw again;
        }
        let renewed: boolean;
        try {
          renewed = await renewJwt(this.#credentials);
        } catch (callbackError) {
          throw new SyncError(
            "login_failed",
            `Cannot get a new JWT: ${
              callbackError instanceof Error
                ? callbackError.message
                : String(callbackError)
            }`,
            { cause: callbackError, willRetry: false },
          );
        }
        if (!renewed) throw again;
        response = await login(credentialsBody(this.#credentials));
      }
    }
    if (response.userId !== this.#id) {
      throw new SyncError(
        "login_failed",
        `Cannot refresh the access token: the server issued it for user ${response.userId}, not ${this.#id}`,
        { willRetry: false },
      );
    }
    this.#token = this.#tokenFrom(response);
    this.#refreshToken = response.refreshToken;
    emitLog(context.logger, {
      level: "debug",
      event: "token.refresh",
      message: `New access token for user ${this.#id}`,
      time: context.clock.now(),
    });
    return this.#token;
  }
}
