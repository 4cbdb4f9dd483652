// This module is browser compatible.

import {
  type AppOptions,
  type ClientConfig,
  resolveClientConfig,
} from "./client_config.ts";
import { type Credentials, credentialsBody } from "./credentials.ts";
import { emitLog } from "./log.ts";
import { requestLogin } from "./login.ts";
import {
  type AppStorageOption,
  type AppStore,
  checkAppStorage,
  openAppStore,
  type SavedUser,
} from "./storage/app_store.ts";
import { createUser, type User } from "./user.ts";
import { UserCore, type UserHost } from "./user_core.ts";
import { badSignal } from "../util/abort.ts";
import { linkAbort } from "../util/abort_link.ts";

export type { AppOptions } from "./client_config.ts";
export type { AppStorageOption } from "./storage/app_store.ts";

/**
 * Options of {@linkcode App.open}: every {@linkcode AppOptions} option and
 * where the app keeps its users and, by default, its users' realms.
 *
 * @example A durable app in Deno
 * ```ts
 * import type { AppOpenOptions } from "@tether/sync";
 *
 * const options: AppOpenOptions = {
 *   baseUrl: "http://127.0.0.1:8080",
 *   storage: { kvPath: "./my-app.kv" },
 * };
 * console.log(options.storage);
 * ```
 */
export interface AppOpenOptions extends AppOptions {
  /**
   * `"memory"` (nothing survives), `{ kvPath }` (a Deno KV file) or `{
   * indexedDb: name }` (browsers). docs/CLIENT.md "Storage" says what
   * survives a crash.
   *
   * @default {"memory"}
   */
  storage?: AppStorageOption;
}

// Set by App.open around the constructor call.
let openingStore: AppStore | undefined;

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
  #store: AppStore | undefined;
  #users = new Map<string, UserCore>();
  /** Users the server refused while logged in: closed with the app. */
  #retired = new Set<UserCore>();
  #order = new Map<UserCore, number>();
  #nextOrder = 1;
  #current: UserCore | undefined;
  #closed: Promise<void> | undefined;
  #lifetime = new AbortController();
  #removeOnline: (() => void) | undefined;
  /** Store writes, one at a time, in call order. */
  #saving: Promise<void> = Promise.resolve();
  #host: UserHost;

  /**
   * Creates an app on memory storage: users and realms last as long as the
   * app. Nothing connects until a user opens a realm. Use
   * {@linkcode App.open} for durable storage.
   *
   * @param options The server's base URL and, optionally, policies.
   * @throws {TypeError} For a base URL that is not http(s), a missing
   *   WebSocket or fetch, or a `storage` option (it needs `App.open`).
   * @throws {RangeError} For a negative or non-finite duration, or a bad
   *   reconnect or keepalive option.
   */
  constructor(options: AppOptions) {
    const store = openingStore;
    openingStore = undefined;
    if (
      store === undefined && typeof options === "object" && options !== null &&
      "storage" in options &&
      (options as { storage?: unknown }).storage !== undefined &&
      (options as { storage?: unknown }).storage !== "memory"
    ) {
      throw new TypeError(
        "Cannot create the app: durable storage needs `await App.open({ baseUrl, storage })`",
      );
    }
    this.#config = resolveClientConfig(options);
    this.#store = store;
    this.#host = {
      realmStorage: store?.realmStorage ?? "memory",
      loggedOut: (user, deleteLocalData, refused) =>
        this.#forget(user, deleteLocalData, refused),
      tokensChanged: (user) => {
        void this.#save(user).catch((error) => this.#storeFailed(error));
      },
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

  /**
   * Opens an app whose users and realms are kept in `storage`: loads the
   * saved users first, so `currentUser` and `allUsers` are there at once,
   * also offline (the first connection exchanges the saved refresh token
   * for an access token). Realms of its users live in the same store
   * unless `openRealm({ storage })` says otherwise. Several apps on one
   * store in one process share it; a store held by another process is
   * refused.
   *
   * @example Restoring the user of the last run
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
   * const kvPath = await Deno.makeTempFile({ suffix: ".kv" });
   * let id: string;
   * {
   *   await using app = await App.open({ baseUrl: server.url, storage: { kvPath } });
   *   const user = app.currentUser ?? await app.logIn(Credentials.anonymous());
   *   id = user.id;
   *   await using realm = await user.openRealm({ path: "/~/todos" });
   *   await realm.write((tx) => tx.put("Task", "t1", { title: "Buy milk" }));
   * }
   * {
   *   await using app = await App.open({ baseUrl: server.url, storage: { kvPath } });
   *   assert.equal(app.currentUser?.id, id);
   *   await using realm = await app.currentUser!.openRealm({ path: "/~/todos" });
   *   assert.deepEqual(realm.get("Task", "t1"), { title: "Buy milk" });
   * }
   * await Deno.remove(kvPath);
   * ```
   *
   * @param options Every `App` option and `storage`.
   * @returns The app, with its saved users restored.
   * @throws {TypeError} For a bad option, or a storage this runtime lacks
   *   (`{ kvPath }` outside Deno or without `--unstable-kv`, `{ indexedDb }`
   *   without IndexedDB).
   * @throws {RangeError} For a bad duration or policy option.
   * @throws {SyncError} `storage_locked` when another process holds the
   *   store, `storage_invalid` when it is not a readable Tether store (the
   *   message names the path; the store is left untouched).
   * @throws {Error} Deno's own file-system errors for a `kvPath` it cannot
   *   create (`Deno.errors.NotFound` for a missing directory,
   *   `PermissionDenied`), naming the path.
   */
  static async open(options: AppOpenOptions): Promise<App> {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("Cannot open the app: options must be an object");
    }
    const { storage, ...rest } = options;
    checkAppStorage(storage);
    resolveClientConfig(rest);
    const store = await openAppStore(storage);
    let saved: SavedUser[];
    let app: App;
    try {
      saved = await store.loadUsers();
      openingStore = store;
      app = new App(rest);
    } catch (error) {
      openingStore = undefined;
      await store.close();
      throw error;
    }
    for (const user of saved) app.#restore(user);
    return app;
  }

  /** Whether users and realms survive a restart (`App.open` on KV or IndexedDB). */
  get isDurable(): boolean {
    return this.#store?.durable ?? false;
  }

  /** The base URL, normalised (no trailing slash). */
  get baseUrl(): string {
    return this.#config.baseUrl;
  }

  /** The user who logged in last and has not logged out, if any. */
  get currentUser(): User | undefined {
    return this.#current?.user;
  }

  /**
   * Every logged-in user in login order, a user's latest login counting
   * (so `currentUser` is the last): the order `App.open` restores.
   */
  get allUsers(): User[] {
    return this.#byLogin().map((core) => core.user);
  }

  /**
   * Logs in with `POST <baseUrl>/login`. Logging in again as a JWT user who
   * is already logged in returns the same {@linkcode User} with fresh
   * tokens; each anonymous login is a new user, except in a durable app
   * (`App.open`) that has a saved anonymous user (also one another tab or
   * app on the same store saved after this one opened; anonymous logins on
   * one store take turns): that user is returned, without a network call.
   * A durable app saves the login (the refresh token, never the access
   * token) before resolving.
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
    const invalid = badSignal(signal, "Cannot log in");
    if (invalid !== undefined) throw invalid;
    if (signal?.aborted) throw signal.reason;
    if (this.#closed !== undefined) {
      throw new TypeError("Cannot log in: the app is closed");
    }
    const body = credentialsBody(credentials);
    const store = this.#store;
    if (credentials.provider === "anonymous" && store?.durable) {
      // Another tab (or app on this store) may have saved an anonymous
      // user since this app opened, or be logging one in now: the lock
      // makes the read and the save one step, so all end with one user.
      return await store.exclusive(async () => {
        await this.#adoptSavedAnonymous(store);
        const saved = this.#byLogin().reverse().find((user) =>
          user.provider === "anonymous"
        );
        if (saved === undefined) {
          return await this.#logInOnline(credentials, body, signal);
        }
        this.#current = saved;
        this.#order.set(saved, this.#nextOrder++);
        await this.#save(saved);
        return saved.user;
      }, signal);
    }
    return await this.#logInOnline(credentials, body, signal);
  }

  /**
   * Restores anonymous users another app saved on this store since this
   * one opened (none when this app knows of one already).
   */
  async #adoptSavedAnonymous(store: AppStore): Promise<void> {
    if (this.#byLogin().some((user) => user.provider === "anonymous")) return;
    // Removals this app queued go first: a user it logged out stays out.
    await this.#saving;
    const saved = await store.loadUsers();
    if (this.#closed !== undefined) {
      throw new TypeError("Cannot log in: the app is closed");
    }
    for (const user of saved) {
      if (user.provider === "anonymous" && !this.#users.has(user.id)) {
        this.#restore(user);
      }
    }
  }

  async #logInOnline(
    credentials: Credentials,
    body: ReturnType<typeof credentialsBody>,
    signal: AbortSignal | undefined,
  ): Promise<User> {
    // Linked for this login only: the app outlives it, and the fetch is
    // the caller's, which may leave listeners behind (docs/PERFORMANCE.md).
    const link = linkAbort([signal, this.#lifetime.signal]);
    const login = await requestLogin(
      this.#config.fetch,
      this.#config.loginUrl,
      body,
      link.signal,
      () => this.#config.clock.now(),
    ).catch((error) => {
      throw signal?.aborted ? signal.reason : error;
    }).finally(() => link.dispose());
    if (this.#closed !== undefined) {
      throw new TypeError("Cannot log in: the app is closed");
    }
    let core = this.#users.get(login.userId);
    if (core !== undefined && credentials.provider === "jwt") {
      core.updateLogin(credentials, login);
    } else {
      core = new UserCore(this.#config, this.#host, {
        credentials,
        response: login,
      });
      createUser(core);
      this.#users.set(login.userId, core);
    }
    this.#current = core;
    this.#order.set(core, this.#nextOrder++);
    await this.#save(core);
    const user = core.user;
    emitLog(this.#config.logger, {
      level: "info",
      event: "user_login",
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
        [...this.#users.values(), ...this.#retired].map((user) =>
          user.closeAll()
        ),
      );
      await this.#saving;
      await this.#store?.close();
    })();
    return this.#closed;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * The logged-in users by their latest login: an order kept across
   * restarts (each saved user carries it), unlike the map's first-login
   * order.
   */
  #byLogin(): UserCore[] {
    return [...this.#users.values()].sort((a, b) =>
      (this.#order.get(a) ?? 0) - (this.#order.get(b) ?? 0)
    );
  }

  #restore(saved: SavedUser): void {
    const core = new UserCore(this.#config, this.#host, { restored: saved });
    createUser(core);
    this.#users.set(saved.id, core);
    this.#order.set(core, saved.order);
    this.#nextOrder = Math.max(this.#nextOrder, saved.order + 1);
    this.#current = core;
  }

  /** Saves a user's login (a no-op in memory); store writes run in order. */
  #save(user: UserCore): Promise<void> {
    const store = this.#store;
    if (store === undefined || !store.durable) return Promise.resolve();
    const record: SavedUser = {
      id: user.id,
      refreshToken: user.refreshToken,
      provider: user.provider,
      order: this.#order.get(user) ?? 0,
    };
    const result = this.#saving.then(() => {
      // Logged out meanwhile: the removal already ran or is queued.
      if (this.#users.get(user.id) !== user) return;
      return store.saveUser(record);
    });
    this.#saving = result.catch(() => {});
    return result;
  }

  #storeFailed(error: unknown): void {
    emitLog(this.#config.logger, {
      level: "error",
      event: "storage_error",
      message: `Cannot save a user's login: ${
        error instanceof Error ? error.message : String(error)
      }`,
      time: this.#config.clock.now(),
    });
  }

  #forget(
    user: UserCore,
    deleteLocalData: boolean,
    refused: boolean,
  ): Promise<void> {
    const known = this.#users.get(user.id) === user;
    if (known) this.#users.delete(user.id);
    // A user the server logged out still has realms and a connection to
    // close with the app (or with its own logOut()).
    if (refused) this.#retired.add(user);
    else this.#retired.delete(user);
    if (this.#current === user) this.#current = this.#byLogin().at(-1);
    const store = this.#store;
    if (store === undefined || !store.durable || (!known && !deleteLocalData)) {
      return Promise.resolve();
    }
    const result = this.#saving.then(() =>
      store.removeUser(user.id, deleteLocalData)
    );
    this.#saving = result.catch(() => {});
    return result;
  }
}
