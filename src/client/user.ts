// This module is browser compatible.

/**
 * The public face of a logged-in user, `User`, and the options of
 * `openRealm`; the engine behind it is `UserCore` (user_core.ts), seen
 * here through the {@linkcode UserEngine} it implements.
 */

import type { ClientResetOptions } from "./client_reset.ts";
import type { Progress } from "./progress.ts";
import type { Realm } from "./realm.ts";
import type { RealmStorage } from "./storage/storage.ts";
import type { SyncSession } from "./sync_session.ts";

/**
 * Where a realm keeps its local copy: `"memory"` (for the life of the open
 * realm), `{ kvPath }` for a durable Deno KV file, `{ indexedDb }` for a
 * durable IndexedDB database in browsers, or your own `RealmStorage` (closed
 * when the realm closes). docs/CLIENT.md "Storage" says what survives a
 * crash.
 *
 * @example A durable realm in Deno
 * ```ts
 * import type { RealmStorageOption } from "@tether/sync";
 *
 * const storage: RealmStorageOption = { kvPath: "./my-app.kv" };
 * console.log(storage);
 * ```
 */
export type RealmStorageOption =
  | "memory"
  | { kvPath: string }
  | { indexedDb: string }
  | RealmStorage;

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
   * @default {The app's storage: `"memory"` for `new App()`, the `storage` of `App.open`}
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
   * What to do when the server cannot continue the local history of this
   * realm (docs/CLIENT.md "Client reset").
   *
   * @default {{ mode: "recover" }}
   */
  clientReset?: ClientResetOptions;
  /**
   * Fields to index per type, e.g. `{ Task: ["done", "ownerId"] }`: a query
   * whose top-level conjunction has an equality, `in` or range condition on
   * one of them reads the index instead of scanning the type. Maintained on
   * every commit (local, downloaded, bootstrap). Opening a path again adds
   * its indexes to those it has. See docs/CLIENT.md "Querying".
   */
  indexes?: { readonly [type: string]: readonly string[] };
}

/** What the public `User` asks of its engine (`UserCore` implements it). */
export interface UserEngine {
  /** Set by {@linkcode createUser}. */
  user: User;
  readonly id: string;
  readonly isLoggedIn: boolean;
  readonly allSessions: SyncSession[];
  sessionFor(path: string): SyncSession | undefined;
  openRealm(config: RealmConfig): Promise<Realm>;
  logOut(options?: LogOutOptions): Promise<void>;
}

/**
 * Options of {@linkcode User.logOut}.
 *
 * @example Forgetting a user and its local data
 * ```ts
 * import type { LogOutOptions } from "@tether/sync";
 *
 * const options: LogOutOptions = { deleteLocalData: true };
 * console.log(options.deleteLocalData);
 * ```
 */
export interface LogOutOptions {
  /**
   * Also delete the user's realms from the app's store (`App.open({
   * storage })`); without it, they stay for the user's next login.
   *
   * @default {false}
   */
  deleteLocalData?: boolean;
}

let pending: UserEngine | undefined;

/** Gives a user engine its public face (internal: `App.logIn`). */
export function createUser(core: UserEngine): User {
  pending = core;
  try {
    core.user = new User();
    return core.user;
  } finally {
    pending = undefined;
  }
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
  #core: UserEngine;

  /**
   * Users come from `app.logIn()`; this constructor throws.
   *
   * @throws {TypeError} Always, when called directly.
   */
  constructor() {
    if (pending === undefined) {
      throw new TypeError("Cannot construct User: use app.logIn(credentials)");
    }
    this.#core = pending;
  }

  /** The user id (the JWT's `sub`, or the server's id for anonymous users). */
  get id(): string {
    return this.#core.id;
  }

  /** Whether the user is still logged in. */
  get isLoggedIn(): boolean {
    return this.#core.isLoggedIn;
  }

  /** The sessions of every realm this user has open. */
  get allSessions(): SyncSession[] {
    return this.#core.allSessions;
  }

  /**
   * The session of an open realm.
   *
   * @param path The realm path, with `~` or with the user id.
   * @returns The session, or undefined when no realm is open there.
   */
  sessionFor(path: string): SyncSession | undefined {
    return this.#core.sessionFor(path);
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
    return await this.#core.openRealm(config);
  }

  /**
   * Logs out: closes every realm of this user (their waits reject with
   * `session_closed`) and the user's connection, and forgets the user's
   * saved login (`App.open`). The user's realms stay in the app's store
   * unless `deleteLocalData` is set. Idempotent.
   *
   * @param options `deleteLocalData` deletes the user's local realms.
   * @returns Resolves once everything is closed (and, for a durable app,
   *   the saved login is gone).
   * @throws {TypeError} When `options` is not an object or
   *   `deleteLocalData` is not a boolean.
   * @throws {SyncError} `storage_locked` when `deleteLocalData` finds one
   *   of the user's realms open in another app of this process on the same
   *   store (in browsers also another tab or worker): nothing is deleted,
   *   and the user is logged out all the same.
   */
  async logOut(options: LogOutOptions = {}): Promise<void> {
    if (typeof options !== "object" || options === null) {
      throw new TypeError("Cannot log out: options must be an object");
    }
    const { deleteLocalData } = options;
    if (deleteLocalData !== undefined && typeof deleteLocalData !== "boolean") {
      // Read as false, a truthy "yes" would silently keep the data.
      throw new TypeError(
        `Cannot log out: options.deleteLocalData must be a boolean, got ${
          JSON.stringify(deleteLocalData)
        }`,
      );
    }
    await this.#core.logOut(options);
  }
}
