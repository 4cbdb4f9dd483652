// This module is browser compatible.

/**
 * The app store of `App.open`: the saved users (id, refresh token,
 * credentials kind — never an access token) in the same Deno KV file or
 * IndexedDB database as the realms they open, and the deletion of a
 * user's local realms.
 */

import { SyncError } from "../sync_error.ts";
import {
  claimRealm,
  done,
  globalApi,
  type IdbDatabase,
  type IndexedDbApi,
  openDatabase,
  request,
} from "./indexed_db.ts";
import { kvRealmClaim, kvRealmPrefix } from "./kv.ts";
import {
  acquireKvStore,
  type KvClaim,
  type KvKey,
  type KvLike,
  type KvStoreHandle,
} from "./kv_store.ts";
import type { StorageOption } from "./open.ts";

/** What an app keeps of one logged-in user across restarts. */
export interface SavedUser {
  /** The user id. */
  id: string;
  /** The refresh token of the latest login or refresh. */
  refreshToken: string;
  /** What the user logged in with. */
  provider: "anonymous" | "jwt";
  /** Login order: the highest is the current user. */
  order: number;
}

/** The app's durable store of users (memory: nothing survives). */
export interface AppStore {
  /** The storage realms of this app's users use by default. */
  readonly realmStorage: StorageOption;
  /** Whether users survive a restart. */
  readonly durable: boolean;
  /** Every saved user, in login order. */
  loadUsers(): Promise<SavedUser[]>;
  /** Saves (or replaces) a user; resolves once durable. */
  saveUser(user: SavedUser): Promise<void>;
  /**
   * Forgets a user; with `deleteLocalData`, deletes its realms too, or
   * none of them (`storage_locked`) when one is open in another app of
   * this process.
   */
  removeUser(id: string, deleteLocalData: boolean): Promise<void>;
  /**
   * Runs `work` while no other app on this store runs one (apps of this
   * process and, in browsers, of other tabs and workers, by a Web Lock):
   * an anonymous login reads the saved users and saves its own under it,
   * so tabs logging in at once end up with one user.
   */
  exclusive<T>(work: () => Promise<T>, signal?: AbortSignal): Promise<T>;
  /** Releases the store. */
  close(): Promise<void>;
}

interface LoginLocks {
  request<T>(
    name: string,
    options: { signal?: AbortSignal },
    callback: () => Promise<T>,
  ): Promise<T>;
}

/**
 * Runs `work` under the Web Lock `name` where Web Locks exist (browsers,
 * Deno), else at once; an abort while waiting rejects with the reason.
 */
async function underLock<T>(
  name: string,
  work: () => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  const locks = (globalThis as { navigator?: { locks?: LoginLocks } })
    .navigator?.locks;
  if (locks === undefined || typeof locks.request !== "function") {
    return await work();
  }
  try {
    return await locks.request(
      name,
      signal === undefined ? {} : { signal },
      work,
    );
  } catch (error) {
    throw signal?.aborted ? signal.reason : error;
  }
}

/** What `App.open({ storage })` accepts. */
export type AppStorageOption = "memory" | { kvPath: string } | {
  indexedDb: string;
};

/** Checks `App.open`'s storage option; a `TypeError` names what is wrong. */
export function checkAppStorage(storage: unknown): void {
  if (storage === undefined || storage === "memory") return;
  if (typeof storage === "object" && storage !== null) {
    const { kvPath, indexedDb } = storage as {
      kvPath?: unknown;
      indexedDb?: unknown;
    };
    if ("kvPath" in storage) {
      if (typeof kvPath === "string" && kvPath.length > 0) return;
      throw new TypeError(
        "Cannot open the app: storage.kvPath must be a non-empty string",
      );
    }
    if ("indexedDb" in storage) {
      if (typeof indexedDb === "string" && indexedDb.length > 0) return;
      throw new TypeError(
        "Cannot open the app: storage.indexedDb must be a non-empty string",
      );
    }
  }
  throw new TypeError(
    `Cannot open the app: storage must be "memory", { kvPath } or { indexedDb }, got ${
      typeof storage === "object" ? "another object" : JSON.stringify(storage)
    }`,
  );
}

/**
 * Opens the app store for a checked storage option (`api`: the IndexedDB
 * implementation, for tests).
 */
export function openAppStore(
  storage: AppStorageOption | undefined,
  api?: IndexedDbApi,
): Promise<AppStore> {
  if (storage === undefined || storage === "memory") {
    return Promise.resolve(new MemoryAppStore());
  }
  if ("kvPath" in storage) return KvAppStore.open(storage.kvPath);
  return IndexedDbAppStore.open(storage.indexedDb, api);
}

/** Checks a stored user record; undefined when it is not one. */
function savedUserFrom(value: unknown): SavedUser | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const { id, refreshToken, provider, order } = value as Record<
    string,
    unknown
  >;
  if (
    typeof id !== "string" || id.length === 0 ||
    typeof refreshToken !== "string" ||
    (provider !== "anonymous" && provider !== "jwt") ||
    typeof order !== "number" || !Number.isFinite(order)
  ) {
    return undefined;
  }
  return { id, refreshToken, provider, order };
}

function loadedUsers(values: unknown[], where: string): SavedUser[] {
  const users: SavedUser[] = [];
  for (const value of values) {
    const user = savedUserFrom(value);
    if (user === undefined) {
      throw new SyncError(
        "storage_invalid",
        `Cannot open the store ${where}: a saved user does not decode; it was left untouched`,
      );
    }
    users.push(user);
  }
  return users.sort((a, b) => a.order - b.order);
}

/** `new App()` and `App.open({ storage: "memory" })`: nothing is saved. */
class MemoryAppStore implements AppStore {
  readonly realmStorage: StorageOption = "memory";
  readonly durable = false;
  loadUsers(): Promise<SavedUser[]> {
    return Promise.resolve([]);
  }
  saveUser(): Promise<void> {
    return Promise.resolve();
  }
  removeUser(): Promise<void> {
    return Promise.resolve();
  }
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    return work();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const USERS: KvKey = ["tether", "v1", "users"];
/** Mutations per atomic operation when deleting (Deno KV allows 1000). */
const DELETE_CHUNK = 500;

/** Saved users in a Deno KV store file, under `["tether","v1","users",id]`. */
class KvAppStore implements AppStore {
  readonly realmStorage: StorageOption;
  readonly durable = true;
  #kv: KvLike;
  #handle: KvStoreHandle;
  #where: string;

  private constructor(kvPath: string, handle: KvStoreHandle) {
    this.realmStorage = { kvPath };
    this.#kv = handle.kv;
    this.#handle = handle;
    this.#where = JSON.stringify(kvPath);
  }

  static async open(kvPath: string): Promise<KvAppStore> {
    return new KvAppStore(kvPath, await acquireKvStore(kvPath));
  }

  async loadUsers(): Promise<SavedUser[]> {
    const values: unknown[] = [];
    try {
      for await (const entry of this.#kv.list({ prefix: USERS })) {
        values.push(entry.value);
      }
    } catch (error) {
      throw new SyncError(
        "storage_invalid",
        `Cannot open the store ${this.#where}: its saved users do not decode; it was left untouched`,
        { cause: error },
      );
    }
    return loadedUsers(values, this.#where);
  }

  async saveUser(user: SavedUser): Promise<void> {
    await this.#kv.atomic().set([...USERS, user.id], { ...user }).commit();
  }

  async removeUser(id: string, deleteLocalData: boolean): Promise<void> {
    await this.#kv.atomic().delete([...USERS, id]).commit();
    if (!deleteLocalData) return;
    // Each realm's meta publishes the rest of its keys: deleted first, a
    // crash halfway leaves only unpublished entries, which the next load
    // of that realm ignores and deletes.
    const prefix = kvRealmPrefix({ userId: id, path: "" }).slice(0, 4);
    const metas: KvKey[] = [];
    const rest: KvKey[] = [];
    const paths = new Set<string>();
    for await (const entry of this.#kv.list({ prefix })) {
      (entry.key[5] === "meta" && entry.key.length === 6 ? metas : rest)
        .push(entry.key);
      if (typeof entry.key[4] === "string") paths.add(entry.key[4]);
    }
    // A realm another app of this process has open on this store keeps
    // writing to it: deleting its keys under it would tear it. Each realm
    // is claimed first (and held while it goes), or nothing is deleted.
    const claims: KvClaim[] = [];
    try {
      for (const path of paths) {
        try {
          claims.push(
            await this.#handle.claim(kvRealmClaim({ userId: id, path })),
          );
        } catch (error) {
          if (!(error instanceof SyncError)) throw error;
          throw dataKept(
            id,
            this.#where,
            path,
            "in another app of this process",
            error,
          );
        }
      }
      for (const keys of [metas, rest]) {
        for (let start = 0; start < keys.length; start += DELETE_CHUNK) {
          const atomic = this.#kv.atomic();
          for (const key of keys.slice(start, start + DELETE_CHUNK)) {
            atomic.delete(key);
          }
          await atomic.commit();
        }
      }
    } finally {
      for (const claim of claims) claim.release();
    }
  }

  exclusive<T>(work: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return underLock(`tether:users:kv:${this.#where}`, work, signal);
  }

  close(): Promise<void> {
    return this.#handle.release();
  }
}

/**
 * Saved users in an IndexedDB Tether database: in its `header` object
 * store, under keys `["users", id]` (no schema change for older databases).
 */
class IndexedDbAppStore implements AppStore {
  readonly realmStorage: StorageOption;
  readonly durable = true;
  #db: IdbDatabase;
  #api: IndexedDbApi;
  #name: string;
  #where: string;

  private constructor(name: string, db: IdbDatabase, api: IndexedDbApi) {
    this.realmStorage = { indexedDb: name };
    this.#name = name;
    this.#db = db;
    this.#api = api;
    this.#where = `IndexedDB ${JSON.stringify(name)}`;
  }

  static async open(
    name: string,
    api: IndexedDbApi = globalApi(),
  ): Promise<IndexedDbAppStore> {
    const db = await openDatabase(
      api,
      name,
      `IndexedDB ${JSON.stringify(name)}`,
    );
    return new IndexedDbAppStore(name, db, api);
  }

  #usersRange(): unknown {
    return this.#api.IDBKeyRange.bound(["users"], ["users", []]);
  }

  async loadUsers(): Promise<SavedUser[]> {
    const tx = this.#db.transaction(["header"], "readonly");
    const finished = done(tx);
    const values = await request(
      tx.objectStore("header").getAll(this.#usersRange()),
    );
    await finished;
    return loadedUsers(values, this.#where);
  }

  async saveUser(user: SavedUser): Promise<void> {
    const tx = this.#db.transaction(["header"], "readwrite", {
      durability: "strict",
    });
    const finished = done(tx);
    tx.objectStore("header").put({ ...user }, ["users", user.id]);
    await finished;
  }

  async removeUser(id: string, deleteLocalData: boolean): Promise<void> {
    if (!deleteLocalData) {
      const tx = this.#db.transaction(["header"], "readwrite", {
        durability: "strict",
      });
      const finished = done(tx);
      tx.objectStore("header").delete(["users", id]);
      await finished;
      return;
    }
    // Arrays sort after strings: [id, []] bounds every [id, path, …].
    const range = this.#api.IDBKeyRange.bound([id], [id, []]);
    const read = this.#db.transaction(["meta"], "readonly");
    const listed = done(read);
    const keys = await request(read.objectStore("meta").getAllKeys(range));
    await listed;
    // A realm open in this page, or in another tab, keeps writing: its
    // data is deleted only under its claim, or not at all.
    const releases: (() => Promise<void>)[] = [];
    try {
      for (const key of keys) {
        const path = Array.isArray(key) ? key[1] : undefined;
        if (typeof path !== "string") continue;
        try {
          releases.push(await claimRealm(this.#name, { userId: id, path }));
        } catch (error) {
          if (!(error instanceof SyncError)) throw error;
          // The saved login goes all the same.
          await this.removeUser(id, false);
          throw dataKept(
            id,
            this.#where,
            path,
            "elsewhere (another app, tab or worker)",
            error,
          );
        }
      }
      const tx = this.#db.transaction(
        ["header", "meta", "records", "pending"],
        "readwrite",
        { durability: "strict" },
      );
      const finished = done(tx);
      tx.objectStore("header").delete(["users", id]);
      for (const store of ["meta", "records", "pending"]) {
        tx.objectStore(store).delete(range);
      }
      await finished;
    } finally {
      for (const release of releases) await release();
    }
  }

  exclusive<T>(work: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return underLock(`tether:users:${this.#where}`, work, signal);
  }

  close(): Promise<void> {
    this.#db.close();
    return Promise.resolve();
  }
}

/**
 * Why `logOut({ deleteLocalData: true })` deleted nothing: one of the
 * user's realms is open `where` (the user is logged out all the same).
 */
function dataKept(
  id: string,
  store: string,
  path: string,
  where: string,
  cause: SyncError,
): SyncError {
  return new SyncError(
    "storage_locked",
    `Cannot delete the local data of user ${
      JSON.stringify(id)
    } in the store ${store}: its realm ${
      JSON.stringify(path)
    } is open ${where}, so the user is logged out but its local data stays (as without deleteLocalData); close that realm before logging out to delete it`,
    { cause },
  );
}
