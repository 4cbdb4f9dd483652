// This module is browser compatible.

/**
 * A {@linkcode RealmStorage} on IndexedDB for browsers: one database holds
 * many realms, each commit is one IndexedDB transaction.
 */

import { ClosableQueue } from "../../util/closable_queue.ts";
import type { UploadChangeset } from "../../model/changeset.ts";
import type { ObjectRecord } from "../../model/merge.ts";
import { SyncError } from "../sync_error.ts";
import {
  checkHeader,
  decodeChangeset,
  decodeRecord,
  encodeChangeset,
  encodeRecord,
  invalidStore,
  metaFromStored,
  metaToStored,
  STORE_FORMAT,
  STORE_MAGIC,
} from "./codec.ts";
import type {
  RealmMeta,
  RealmStorage,
  StorageBatch,
  StoredRealm,
} from "./storage.ts";

// The IndexedDB API as this file uses it, written out so the client type-
// checks without the DOM library (Deno's default one has no IndexedDB).
export interface IdbRequest<T = unknown> {
  result: T;
  error: unknown;
  onsuccess: ((event: unknown) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
interface IdbOpenRequest extends IdbRequest<IdbDatabase> {
  onupgradeneeded: ((event: { oldVersion: number }) => void) | null;
  onblocked: ((event: unknown) => void) | null;
  transaction: IdbTransaction | null;
}
export interface IdbObjectStore {
  put(value: unknown, key?: unknown): IdbRequest;
  get(key: unknown): IdbRequest;
  getAll(query?: unknown): IdbRequest<unknown[]>;
  getAllKeys(query?: unknown): IdbRequest<unknown[]>;
  delete(key: unknown): IdbRequest;
}
export interface IdbTransaction {
  objectStore(name: string): IdbObjectStore;
  oncomplete: ((event: unknown) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onabort: ((event: unknown) => void) | null;
  error: unknown;
  abort(): void;
}
export interface IdbDatabase {
  objectStoreNames: { contains(name: string): boolean };
  createObjectStore(name: string): IdbObjectStore;
  transaction(
    stores: string[],
    mode: "readonly" | "readwrite",
    options?: { durability?: "default" | "strict" | "relaxed" },
  ): IdbTransaction;
  close(): void;
  onversionchange: ((event: unknown) => void) | null;
}

/** The IndexedDB globals a storage needs (`indexedDB`, `IDBKeyRange`). */
export interface IndexedDbApi {
  /** The factory, like `globalThis.indexedDB`. */
  indexedDB: { open(name: string): unknown };
  /** The key-range class, like `globalThis.IDBKeyRange`. */
  IDBKeyRange: { bound(lower: unknown, upper: unknown): unknown };
}

interface LockManagerLike {
  request(
    name: string,
    options: { ifAvailable?: boolean; signal?: AbortSignal },
    callback: (lock: unknown) => Promise<void>,
  ): Promise<void>;
}

/**
 * How long an open waits for a realm's Web Lock that another tab holds
 * before refusing: a tab that was just closed or reloaded frees its locks
 * only once the browser has torn its page down, a moment after the close
 * returned, and an open in the next tab (or the reloaded page) should not
 * be refused for that.
 */
export const LOCK_GRACE_MS = 1_000;

const STORES = ["header", "meta", "records", "pending"];
const DATA_STORES = ["meta", "records", "pending"];

/** The global IndexedDB, or a `TypeError` saying it is missing (internal). */
export function globalApi(): IndexedDbApi {
  const scope = globalThis as Partial<IndexedDbApi>;
  if (scope.indexedDB === undefined || scope.IDBKeyRange === undefined) {
    throw new TypeError(
      "Cannot open storage { indexedDb }: this runtime has no IndexedDB; in Deno use { kvPath }",
    );
  }
  return { indexedDB: scope.indexedDB, IDBKeyRange: scope.IDBKeyRange };
}

/** Settles with a request's result (internal). */
export function request<T>(req: IdbRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** Settles when a transaction completes or aborts (internal). */
export function done(tx: IdbTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("transaction aborted"));
  });
}

// Realms open in this page or process, so one realm has one writer here.
const openRealms = new Set<string>();

/**
 * A realm's storage in an IndexedDB database (`openRealm({ storage: {
 * indexedDb: name } })`). The database holds object stores `header` (magic
 * and format version), `meta` (key `[userId, path]`), `records` (key
 * `[userId, path, type, id]`) and `pending` (key `[userId, path,
 * clientVersion]`); each commit is one `readwrite` transaction over them,
 * with strict durability.
 *
 * Where Web Locks exist (browsers), a realm is held by one tab at a time:
 * another tab opening it is refused with `storage_locked` (after waiting
 * up to {@linkcode LOCK_GRACE_MS} for a tab that is closing to free it).
 *
 * @example Opening with an explicit IndexedDB implementation
 * ```ts ignore
 * import { IndexedDbRealmStorage } from "@tether/sync";
 *
 * const storage = await IndexedDbRealmStorage.open("my-app", { userId: "u1", path: "/u1/todos" });
 * console.log((await storage.load()).records.length);
 * await storage.close();
 * ```
 */
export class IndexedDbRealmStorage implements RealmStorage {
  #db: IdbDatabase;
  #api: IndexedDbApi;
  #where: string;
  #realm: [string, string];
  #release: () => Promise<void>;
  #queue = new ClosableQueue();

  private constructor(
    db: IdbDatabase,
    api: IndexedDbApi,
    where: string,
    realm: [string, string],
    release: () => Promise<void>,
  ) {
    this.#db = db;
    this.#api = api;
    this.#where = where;
    this.#realm = realm;
    this.#release = release;
  }

  /**
   * Opens a realm's storage in the IndexedDB database `name` (created when
   * missing).
   *
   * @param name The database name.
   * @param location The user and resolved realm path.
   * @param api The IndexedDB implementation; defaults to the global one.
   * @returns The storage.
   * @throws {TypeError} Without IndexedDB.
   * @throws {SyncError} `storage_locked` when the realm is open elsewhere
   *   (another tab, or already in this page); `storage_invalid` for a
   *   database that is not a Tether store or is newer.
   */
  static async open(
    name: string,
    location: { userId: string; path: string },
    api: IndexedDbApi = globalApi(),
  ): Promise<IndexedDbRealmStorage> {
    const where = `IndexedDB ${JSON.stringify(name)}`;
    const release = await claimRealm(name, location);
    let db: IdbDatabase | undefined;
    try {
      db = await openDatabase(api, name, where);
      return new IndexedDbRealmStorage(
        db,
        api,
        where,
        [location.userId, location.path],
        release,
      );
    } catch (error) {
      db?.close();
      await release();
      throw error;
    }
  }

  #range(): unknown {
    const [user, path] = this.#realm;
    // Arrays sort after every number and string, so [user, path, []]
    // bounds every key that starts with [user, path].
    return this.#api.IDBKeyRange.bound([user, path], [user, path, []]);
  }

  /** Reads everything stored for the realm. */
  load(): Promise<StoredRealm> {
    return this.#queue.run("load", async () => {
      const tx = this.#db.transaction(DATA_STORES, "readonly");
      const finished = done(tx);
      const range = this.#range();
      const [metaValue, recordValues, pendingValues] = await Promise.all([
        request(tx.objectStore("meta").get(this.#realm)),
        request(tx.objectStore("records").getAll(range)),
        request(tx.objectStore("pending").getAll(range)),
      ]);
      await finished;
      let meta: RealmMeta | null = null;
      const records: ObjectRecord[] = [];
      const pending: UploadChangeset[] = [];
      try {
        if (metaValue !== undefined) meta = metaFromStored(metaValue);
        for (const value of recordValues) {
          if (!(value instanceof Uint8Array)) {
            throw new RangeError("a record is not bytes");
          }
          records.push(decodeRecord(value));
        }
        for (const value of pendingValues) {
          if (!(value instanceof Uint8Array)) {
            throw new RangeError("a pending changeset is not bytes");
          }
          pending.push(decodeChangeset(value));
        }
      } catch (error) {
        throw invalidStore(
          this.#where,
          `a value of realm ${JSON.stringify(this.#realm[1])} does not decode`,
          error,
        );
      }
      const acknowledged = meta?.acknowledgedClientVersion ?? 0;
      return {
        meta,
        records,
        pending: pending.filter((c) => c.clientVersion > acknowledged),
      };
    });
  }

  /** Applies one batch in one IndexedDB transaction. */
  commit(batch: StorageBatch): Promise<void> {
    return this.#queue.run("commit", async () => {
      const [user, path] = this.#realm;
      const records = batch.records.map((record) => ({
        key: [user, path, record.type, record.id],
        value: encodeRecord(record),
      }));
      const append = batch.append.map((changeset) => ({
        key: [user, path, changeset.clientVersion],
        value: encodeChangeset(changeset),
      }));
      const tx = this.#db.transaction(DATA_STORES, "readwrite", {
        durability: "strict",
      });
      const finished = done(tx);
      const recordStore = tx.objectStore("records");
      for (const { key, value } of records) recordStore.put(value, key);
      const pendingStore = tx.objectStore("pending");
      for (const { key, value } of append) pendingStore.put(value, key);
      const acknowledged = batch.meta.acknowledgedClientVersion;
      if (acknowledged > 0) {
        pendingStore.delete(
          this.#api.IDBKeyRange.bound([user, path, 0], [
            user,
            path,
            acknowledged,
          ]),
        );
      }
      tx.objectStore("meta").put(metaToStored(batch.meta), this.#realm);
      await finished;
    });
  }

  /** Waits for queued work, then closes the database. */
  close(): Promise<void> {
    return this.#queue.close(() => {
      this.#db.close();
      return this.#release();
    });
  }
}

/**
 * Claims one realm of one user in the database `name` for one writer: in
 * this page or process, and (where Web Locks exist) across tabs and
 * workers. Resolves with the release, after which the realm may open again.
 *
 * @throws {SyncError} `storage_locked` when it is open elsewhere.
 */
export async function claimRealm(
  name: string,
  location: { userId: string; path: string },
): Promise<() => Promise<void>> {
  const where = `IndexedDB ${JSON.stringify(name)}`;
  const claim = JSON.stringify([name, location.userId, location.path]);
  if (openRealms.has(claim)) {
    throw new SyncError(
      "storage_locked",
      `Cannot open realm ${
        JSON.stringify(location.path)
      } in the store ${where}: it is already open here; open it once and share the handle`,
    );
  }
  openRealms.add(claim);
  try {
    const unlock = await webLock(`tether:${claim}`, where, location.path);
    return async () => {
      // The lock is free once its request settles; only then may this
      // realm open again.
      await unlock();
      openRealms.delete(claim);
    };
  } catch (error) {
    openRealms.delete(claim);
    throw error;
  }
}

/** Holds the Web Lock `name` until the returned function is called. */
async function webLock(
  name: string,
  where: string,
  path: string,
): Promise<() => Promise<void>> {
  const locks = (globalThis as { navigator?: { locks?: LockManagerLike } })
    .navigator?.locks;
  if (locks === undefined || typeof locks.request !== "function") {
    return () => Promise.resolve();
  }
  const release = Promise.withResolvers<void>();
  const first = Promise.withResolvers<boolean>();
  let settled = locks.request(name, { ifAvailable: true }, (lock) => {
    first.resolve(lock !== null);
    return lock === null ? Promise.resolve() : release.promise;
  }).catch((error) => first.reject(error));
  if (!await first.promise) {
    // Held: by a live tab (refused below), or by one that is closing and
    // frees it within moments (LOCK_GRACE_MS).
    const grace = new AbortController();
    const timer = setTimeout(() => grace.abort(), LOCK_GRACE_MS);
    const second = Promise.withResolvers<boolean>();
    settled = locks.request(name, { signal: grace.signal }, () => {
      second.resolve(true);
      return release.promise;
    }).catch((error) => {
      if (grace.signal.aborted) second.resolve(false);
      else second.reject(error);
    });
    try {
      if (!await second.promise) {
        throw new SyncError(
          "storage_locked",
          `Cannot open realm ${
            JSON.stringify(path)
          } in the store ${where}: another tab or worker holds it`,
        );
      }
    } finally {
      clearTimeout(timer);
    }
  }
  return () => {
    release.resolve();
    return settled;
  };
}

/**
 * Opens (creating when missing) the Tether database `name` and checks its
 * header; shared with the app store (internal).
 */
export async function openDatabase(
  api: IndexedDbApi,
  name: string,
  where: string,
): Promise<IdbDatabase> {
  const open = api.indexedDB.open(name) as IdbOpenRequest;
  let created = false;
  open.onupgradeneeded = (event) => {
    // A database that did not exist: make it a Tether store.
    if (event.oldVersion !== 0) return;
    created = true;
    const db = open.result;
    for (const store of STORES) db.createObjectStore(store);
    open.transaction!.objectStore("header").put(
      { magic: STORE_MAGIC, format: STORE_FORMAT },
      "header",
    );
  };
  let db: IdbDatabase;
  try {
    db = await request(open);
  } catch (error) {
    throw invalidStore(where, "it does not open", error);
  }
  try {
    // Another tab upgrading the database (a newer Tether) closes this one.
    db.onversionchange = () => db.close();
    if (created) return db;
    if (!STORES.every((store) => db.objectStoreNames.contains(store))) {
      throw invalidStore(
        where,
        "it is not a Tether store (other object stores)",
      );
    }
    const tx = db.transaction(["header"], "readonly");
    const header = await request(tx.objectStore("header").get("header"));
    checkHeader(header, where);
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}
