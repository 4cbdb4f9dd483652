// This module is browser compatible.

/**
 * The engine behind one `User`: its tokens, its connection and its open
 * realms with their sessions (docs/CLIENT.md "Tour").
 */

import { abortable } from "../util/abort.ts";
import type { ClientConfig } from "./client_config.ts";
import { type AccessToken, Connection } from "./connection.ts";
import { refreshDueAt } from "./connection_types.ts";
import { type Credentials, credentialsBody, renewJwt } from "./credentials.ts";
import { checkIndexes } from "./live_query.ts";
import { emitLog } from "./log.ts";
import { type LoginResponse, requestLogin, retryAfterMs } from "./login.ts";
import { type Realm, type RealmCore, RealmHandle } from "./realm.ts";
import {
  checkStorageOption,
  openLocalRealm,
  type StorageOption,
} from "./storage/open.ts";
import { SyncError } from "./sync_error.ts";
import { SessionCore } from "./session_core.ts";
import { createSyncSession, type SyncSession } from "./sync_session.ts";
import type {
  RealmConfig,
  RealmStorageOption,
  User,
  UserEngine,
} from "./user.ts";

interface OpenRealm extends RealmCore {
  handles: Set<RealmHandle>;
}

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
  checkStorageOption(storage);
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
  checkClientReset(config.clientReset);
}

const RESET_MODES = ["recover", "recoverAll", "discard", "manual"];

function checkClientReset(options: RealmConfig["clientReset"]): void {
  if (options === undefined) return;
  if (typeof options !== "object" || options === null) {
    throw new TypeError("Cannot open realm: clientReset must be an object");
  }
  if (options.mode !== undefined && !RESET_MODES.includes(options.mode)) {
    throw new TypeError(
      `Cannot open realm: clientReset.mode must be one of ${
        RESET_MODES.join(", ")
      }, got ${JSON.stringify(options.mode)}`,
    );
  }
  for (const hook of ["onBefore", "onAfter"] as const) {
    if (options[hook] !== undefined && typeof options[hook] !== "function") {
      throw new TypeError(
        `Cannot open realm: clientReset.${hook} must be a function`,
      );
    }
  }
}

/** What a user asks of its app. */
export interface UserHost {
  /** Where realms live unless `openRealm({ storage })` says otherwise. */
  readonly realmStorage: StorageOption;
  /**
   * The user logged out, or the server refused its refresh token: forget
   * it (and its saved login); resolves once the store says so.
   */
  loggedOut(
    user: UserCore,
    deleteLocalData: boolean,
    refused: boolean,
  ): Promise<void>;
  /** The user got a new refresh token: save it. */
  tokensChanged(user: UserCore): void;
}

/**
 * A saved user's access token before the first refresh: already stale, so
 * the first connection exchanges the refresh token for a real one.
 */
const NO_TOKEN: AccessToken = { token: "", expiresAt: 0, obtainedAt: 0 };

/** A logged-in user's state and work; `User` is its public face. */
export class UserCore implements UserEngine {
  /** The public face, set by `createUser`. */
  user!: User;
  #config: ClientConfig;
  #host: UserHost;
  /** Undefined for a user restored from storage (no JWT kept). */
  #credentials: Credentials | undefined;
  #provider: "anonymous" | "jwt";
  #id: string;
  #token: AccessToken;
  #refreshToken: string;
  #refreshing: Promise<AccessToken> | undefined;
  #loggedIn = true;
  #loggingOut: Promise<void> | undefined;
  #lifetime = new AbortController();
  #connection: Connection | undefined;
  #realms = new Map<string, OpenRealm>();
  #opening = new Map<string, Promise<OpenRealm>>();

  /**
   * @param config The app's resolved configuration.
   * @param host The app: default storage, told of logouts and new tokens.
   * @param login What the user logged in with and the server's answer, or
   *   a user restored from storage (refresh token only).
   */
  constructor(
    config: ClientConfig,
    host: UserHost,
    login:
      | { credentials: Credentials; response: LoginResponse }
      | {
        restored: {
          id: string;
          refreshToken: string;
          provider: "anonymous" | "jwt";
        };
      },
  ) {
    this.#config = config;
    this.#host = host;
    if ("restored" in login) {
      this.#credentials = undefined;
      this.#provider = login.restored.provider;
      this.#id = login.restored.id;
      this.#token = NO_TOKEN;
      this.#refreshToken = login.restored.refreshToken;
    } else {
      this.#credentials = login.credentials;
      this.#provider = login.credentials.provider;
      this.#id = login.response.userId;
      this.#token = this.#tokenFrom(login.response);
      this.#refreshToken = login.response.refreshToken;
    }
  }

  /** Takes the tokens of a new login (`App.logIn` of a known user). */
  updateLogin(credentials: Credentials, login: LoginResponse): void {
    this.#credentials = credentials;
    this.#provider = credentials.provider;
    this.#token = this.#tokenFrom(login);
    this.#refreshToken = login.refreshToken;
  }

  /** What the user logged in with. */
  get provider(): "anonymous" | "jwt" {
    return this.#provider;
  }

  /** The latest refresh token (saved by a durable app; never the access token). */
  get refreshToken(): string {
    return this.#refreshToken;
  }

  // A session waiting out a session-level rebind delay has left the
  // connection, which therefore cannot cancel that delay: each session
  // is told as well, after the connection so it joins the new dial.

  /** Reconnects now (`App.reconnect`). */
  reconnect(): void {
    this.#connection?.reconnect();
    for (const realm of this.#realms.values()) realm.sync.reconnectNow();
  }

  /** The network came back (the `online` event). */
  networkOnline(): void {
    this.#connection?.networkOnline();
    for (const realm of this.#realms.values()) realm.sync.reconnectNow();
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
   * @throws {TypeError} For a bad config, a storage this runtime lacks
   *   (`{ kvPath }` outside Deno), or a logged-out user.
   * @throws {SyncError} `storage_locked` / `storage_invalid` when the store
   *   is held by another process or is not a readable Tether store.
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
      const opening = this.#openCore(
        key,
        config.path,
        config.storage,
        config.clientReset,
      );
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
    const handle = new RealmHandle(core);
    const realm = handle.realm;
    core.handles.add(handle);
    if (config.onProgress !== undefined || config.waitForDownload) {
      const registration = config.onProgress === undefined || core.sync.isOver
        ? null
        : core.sync.progress.addDownloadCallback(config.onProgress);
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
   * `session_closed`) and the user's connection, and forgets the saved
   * login; with `deleteLocalData`, deletes the user's realms from the
   * app's store. Idempotent (a second call waits for the first).
   *
   * @returns Resolves once everything is closed.
   */
  logOut(options: { deleteLocalData?: boolean } = {}): Promise<void> {
    this.#loggingOut ??= (async () => {
      const wasLoggedIn = this.#loggedIn;
      this.#loggedIn = false;
      await this.closeAll();
      await this.#host.loggedOut(
        this,
        options.deleteLocalData === true,
        false,
      );
      if (!wasLoggedIn) return;
      emitLog(this.#config.logger, {
        level: "info",
        event: "user_logout",
        message: `User ${this.#id} logged out`,
        time: this.#config.clock.now(),
      });
    })();
    return this.#loggingOut;
  }

  /** Closes every realm and the connection, staying logged in. */
  async closeAll(): Promise<void> {
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

  #openCore(
    key: string,
    path: string,
    storage: RealmStorageOption | undefined,
    clientReset: RealmConfig["clientReset"],
  ): Promise<OpenRealm> {
    const open = this.#realms.get(key);
    if (open !== undefined) return Promise.resolve(open);
    const opening = this.#opening.get(key);
    if (opening !== undefined) return opening;
    const promise = (async () => {
      const local = await openLocalRealm(
        storage ?? this.#host.realmStorage,
        { userId: this.#id, path: key },
        () => this.#config.clock.now(),
      );
      if (!this.#loggedIn) {
        await local.close();
        throw new TypeError("Cannot open realm: the user is logged out");
      }
      // The client reset hooks get handles of their own, made on use;
      // onBefore's is read-only: it shows the state the reset replaces,
      // and a write there would slip between that state and the reset.
      const hookRealms: { onBefore?: Realm; onAfter?: Realm } = {};
      const sync = new SessionCore({
        path,
        local,
        connection: () => this.#connectionFor(),
        config: this.#config,
        clientReset,
        realm: (hook) =>
          hookRealms[hook] ??= new RealmHandle(
            core,
            hook === "onBefore"
              ? "the realm clientReset.onBefore receives is read-only"
              : undefined,
          ).realm,
      });
      const session = createSyncSession(sync, this.user);
      let released: Promise<void> | undefined;
      const core: OpenRealm = {
        path,
        local,
        session,
        sync,
        handles: new Set(),
        release: () => {
          // A handle closed: the realm closes with its last handle.
          for (const handle of core.handles) {
            if (!handle.closed) return Promise.resolve();
          }
          released ??= this.#release(key, core);
          return released;
        },
      };
      this.#realms.set(key, core);
      sync.start();
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
    core.sync.close();
    await core.local.close();
  }

  async #closeRealm(core: OpenRealm): Promise<void> {
    for (const handle of core.handles) handle.markClosed();
    await core.release();
  }

  #connectionFor(): Connection {
    if (!this.#loggedIn) {
      throw new TypeError("the user is logged out");
    }
    if (this.#connection === undefined) {
      const config = this.#config;
      this.#connection = new Connection({
        ...config,
        url: config.syncUrl,
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
      obtainedAt: this.#config.clock.now(),
    };
  }

  /** Whether a token is still worth sending (not yet due for refresh). */
  #isFresh(token: AccessToken): boolean {
    const due = refreshDueAt(token);
    return due === undefined || this.#config.clock.now() < due;
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
    const context = this.#config;
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
      response = await this.#refreshedLogin(login);
    } catch (error) {
      if (error instanceof SyncError && error.code === "login_failed") {
        // Refused for good: the saved login is worthless. The sessions
        // report the error (the connection fails with it).
        await this.#refused(error);
      }
      throw error;
    }
    if (response.userId !== this.#id) {
      throw new SyncError(
        "login_failed",
        `Cannot refresh the access token: the server issued it for user ${response.userId}, not ${this.#id}`,
        { willRetry: false },
      );
    }
    this.#token = this.#tokenFrom(response);
    if (response.refreshToken !== this.#refreshToken) {
      this.#refreshToken = response.refreshToken;
      this.#host.tokensChanged(this);
    }
    emitLog(context.logger, {
      level: "debug",
      event: "token_refresh",
      message: `New access token for user ${this.#id}`,
      time: context.clock.now(),
    });
    return this.#token;
  }

  /** Logs the user out after the server refused its login for good. */
  async #refused(error: SyncError): Promise<void> {
    if (!this.#loggedIn) return;
    this.#loggedIn = false;
    emitLog(this.#config.logger, {
      level: "warn",
      event: "user_logout",
      message: `User ${this.#id} logged out: ${error.message}`,
      time: this.#config.clock.now(),
    });
    await this.#host.loggedOut(this, false, true).catch(() => {});
  }

  async #refreshedLogin(
    login: (body: Parameters<typeof requestLogin>[2]) => Promise<LoginResponse>,
  ): Promise<LoginResponse> {
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
      if (this.#credentials === undefined || this.#provider === "anonymous") {
        throw new SyncError(
          "login_failed",
          `Cannot refresh the access token of ${this.#provider} user ${this.#id}: ${error.message}`,
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
    return response;
  }
}
