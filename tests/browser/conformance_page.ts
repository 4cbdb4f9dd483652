/**
 * The browser side of conformance_test.ts: a page that drives the public
 * client API on IndexedDB (apps, users, realms, writes, queries, live
 * queries, log-outs) and reads IndexedDB directly, as `globalThis.confPage`.
 */
import {
  App,
  Credentials,
  type Fields,
  type Query,
  type Realm,
  type WriteReceipt,
} from "../../mod.ts";
import { exoticObjects, exoticReport } from "./exotic_values.ts";

/** A failure, as data: the error's name, `code` (SyncError) and message. */
export interface PageError {
  name: string;
  code: string | null;
  message: string;
  /** The `code` of its `cause`, when that is a SyncError. */
  causeCode: string | null;
}

/** What a call that may fail returns. */
export type Outcome<T> = { ok: true; value: T } | {
  ok: false;
  error: PageError;
};

/** An object as the test compares it. */
export interface PlainObject {
  id: string;
  fields: Fields;
}

/** One query for {@linkcode ConfPage.query}: the `objects()` options. */
export type PageQuery = Pick<Query, "where" | "sort" | "limit" | "offset">;

/** One query's result: the objects in order, and `count()` of its `where`. */
export interface QueryResult {
  objects: PlainObject[];
  count: number;
}

/** How many keys the raw IndexedDB stores hold for a user. */
export interface RawKeys {
  meta: number;
  records: number;
  pending: number;
  savedUser: boolean;
}

/** What `watchStatus` reports of the live query the page follows. */
export interface WatchStatus {
  /** Items read so far. */
  items: number;
  /** Ids of the latest item, in order. */
  ids: string[];
  /** The latest item's objects. */
  objects: PlainObject[];
  /** Items whose changes did not patch the previous result into theirs. */
  badPatches: string[];
  /** Items that differed from `objects()` run when they were read. */
  staleItems: number;
}

/** An IndexedDB database as foreign code left it. */
export interface ForeignSnapshot {
  version: number;
  stores: string[];
  entries: { store: string; key: unknown; value: unknown }[];
}

/** What the page offers the test (every wait takes a limit in ms). */
export interface ConfPage {
  /** `App.open` on IndexedDB `database`: the restored user and all users. */
  openApp(
    baseUrl: string,
    database: string,
  ): Promise<Outcome<{ currentUser: string | null; allUsers: string[] }>>;
  /** Logs in anonymously; resolves with the user id. */
  logIn(): Promise<string>;
  /** Opens `path` for the current user (indexes optional). */
  openRealm(
    path: string,
    indexes?: Record<string, string[]>,
    storageDb?: string,
  ): Promise<Outcome<{ path: string }>>;
  /** One write transaction of `puts`; resolves with its client version. */
  write(puts: PlainObject[], type: string): Promise<number>;
  /**
   * Starts `count` sequential one-object writes `${prefix}${i}` of `type`;
   * logs `resolved <id>` on the console as each `write()` resolves.
   */
  startWrites(type: string, prefix: string, count: number): void;
  /** Every object of `type`, by id. */
  objects(type: string): PlainObject[];
  /** Runs each query with `objects()` and its `where` with `count()`. */
  query(type: string, queries: PageQuery[]): QueryResult[];
  /** Starts following `watch(type, query)`. */
  startWatch(type: string, query: PageQuery): void;
  /** Waits until the latest item's ids are `ids` (or the limit). */
  waitWatch(ids: string[], timeoutMs: number): Promise<WatchStatus>;
  /** Waits for one write's receipt (by client version) to settle. */
  waitForUpload(
    clientVersion: number,
    timeoutMs: number,
  ): Promise<Outcome<null>>;
  /** The session's state. */
  sessionState(): string;
  /** Writes every object of `exoticObjects()` as `type`, in one transaction. */
  writeExotic(type: string): Promise<number>;
  /**
   * Every object of `type` described (by id), then each of
   * `EXOTIC_QUERIES` described in its order, with its count.
   */
  exoticReport(type: string): string[][];
  /** Client versions of `pendingWrites()`. */
  pending(): number[];
  /** Waits for the receipts of every pending write. */
  waitForPending(timeoutMs: number): Promise<number[]>;
  /** Closes the realm. */
  closeRealm(): Promise<void>;
  /** `currentUser.logOut({ deleteLocalData })`. */
  logOut(deleteLocalData: boolean): Promise<Outcome<null>>;
  /** The current user's id, or null. */
  currentUser(): string | null;
  /** Counts a user's keys in a Tether database, read directly. */
  rawKeys(database: string, userId: string): Promise<RawKeys>;
  /**
   * Creates a database of other code (version 3): by default stores
   * `people` and `settings`; or the given stores, with `header` holding
   * `headerValue` under key "header".
   */
  createForeign(
    database: string,
    stores?: string[],
    headerValue?: unknown,
  ): Promise<void>;
  /** A database's version, stores and every entry (of `only`), read directly. */
  snapshot(database: string, only?: string[]): Promise<ForeignSnapshot>;
  /** Closes the realm, the watch and the app. */
  close(): Promise<void>;
}

// The IndexedDB API as this page uses it (no DOM library in the test's
// type check).
interface Req<T> {
  result: T;
  error: unknown;
  onsuccess: (() => void) | null;
  onerror: (() => void) | null;
}
interface Store {
  put(value: unknown, key?: unknown): Req<unknown>;
  getAll(): Req<unknown[]>;
  getAllKeys(): Req<unknown[]>;
  get(key: unknown): Req<unknown>;
}
interface Tx {
  objectStore(name: string): Store;
  oncomplete: (() => void) | null;
  onerror: (() => void) | null;
  onabort: (() => void) | null;
}
interface Db {
  version: number;
  objectStoreNames: ArrayLike<string>;
  createObjectStore(name: string): Store;
  transaction(stores: string[], mode: "readonly" | "readwrite"): Tx;
  close(): void;
}
interface OpenReq extends Req<Db> {
  onupgradeneeded: (() => void) | null;
}
const idb = (globalThis as unknown as {
  indexedDB: {
    open(name: string, version?: number): OpenReq;
    databases(): Promise<{ name: string; version: number }[]>;
  };
}).indexedDB;

function settle<T>(req: Req<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function finished(tx: Tx): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(new Error("transaction failed"));
    tx.onabort = () => reject(new Error("transaction aborted"));
  });
}

/** Opens an existing database without upgrading it. */
async function openExisting(database: string): Promise<Db> {
  const known = await idb.databases();
  if (!known.some((db) => db.name === database)) {
    throw new Error(`No IndexedDB database ${database}`);
  }
  return await settle(idb.open(database));
}

let app: App | undefined;
let realm: Realm | undefined;
let watching: AbortController | undefined;
let latest: WatchStatus = {
  items: 0,
  ids: [],
  objects: [],
  badPatches: [],
  staleItems: 0,
};
let wake: (() => void) | undefined;
const receipts = new Map<number, WriteReceipt>();

function failure(error: unknown): { ok: false; error: PageError } {
  const e = error instanceof Error ? error : new Error(String(error));
  const code = (e as { code?: unknown }).code;
  const causeCode = (e.cause as { code?: unknown } | undefined)?.code;
  return {
    ok: false,
    error: {
      name: e.name,
      code: typeof code === "string" ? code : null,
      message: e.message,
      causeCode: typeof causeCode === "string" ? causeCode : null,
    },
  };
}

function open(): Realm {
  if (realm === undefined || realm.isClosed) throw new Error("No open realm");
  return realm;
}

function plain(objects: readonly { id: string; fields: Fields }[]) {
  return objects.map(({ id, fields }) => ({ id, fields: { ...fields } }));
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

const api: ConfPage = {
  async openApp(baseUrl, database) {
    if (app !== undefined) throw new Error("The app is open");
    try {
      app = await App.open({
        baseUrl,
        storage: { indexedDb: database },
        reconnect: { minDelayMs: 50, maxDelayMs: 300 },
        connectTimeoutMs: 3_000,
        lingerMs: 50,
      });
    } catch (error) {
      return failure(error);
    }
    return {
      ok: true,
      value: {
        currentUser: app.currentUser?.id ?? null,
        allUsers: app.allUsers.map((user) => user.id),
      },
    };
  },

  async logIn() {
    if (app === undefined) throw new Error("Call openApp() first");
    return (await app.logIn(Credentials.anonymous())).id;
  },

  async openRealm(path, indexes, storageDb) {
    const user = app?.currentUser;
    if (user === undefined) throw new Error("No current user");
    try {
      realm = await user.openRealm({
        path,
        ...(indexes === undefined ? {} : { indexes }),
        ...(storageDb === undefined
          ? {}
          : { storage: { indexedDb: storageDb } }),
      });
    } catch (error) {
      return failure(error);
    }
    return { ok: true, value: { path: realm.path } };
  },

  async write(puts, type) {
    const receipt = await open().write((tx) => {
      for (const { id, fields } of puts) tx.put(type, id, fields);
    });
    receipts.set(receipt.clientVersion, receipt);
    return receipt.clientVersion;
  },

  async waitForUpload(clientVersion, timeoutMs) {
    const receipt = receipts.get(clientVersion);
    if (receipt === undefined) throw new Error(`No receipt ${clientVersion}`);
    try {
      await receipt.waitForUpload({ signal: AbortSignal.timeout(timeoutMs) });
    } catch (error) {
      return failure(error);
    }
    return { ok: true, value: null };
  },

  async writeExotic(type) {
    const receipt = await open().write((tx) => {
      for (const { id, fields } of exoticObjects()) tx.put(type, id, fields);
    });
    receipts.set(receipt.clientVersion, receipt);
    return receipt.clientVersion;
  },

  exoticReport(type) {
    return exoticReport(open(), type);
  },

  sessionState() {
    return open().syncSession.state;
  },

  startWrites(type, prefix, count) {
    const target = open();
    void (async () => {
      for (let i = 0; i < count; i++) {
        const id = `${prefix}${i}`;
        await target.write((tx) => tx.put(type, id, { n: i }));
        console.log(`resolved ${id}`);
      }
    })();
  },

  objects(type) {
    return plain(open().objects(type)).sort((a, b) => a.id < b.id ? -1 : 1);
  },

  query(type, queries) {
    const target = open();
    return queries.map((query) => ({
      objects: plain(target.objects(type, query)),
      count: target.count(
        type,
        query.where === undefined ? {} : { where: query.where },
      ),
    }));
  },

  startWatch(type, query) {
    const target = open();
    watching?.abort();
    const controller = new AbortController();
    watching = controller;
    latest = { items: 0, ids: [], objects: [], badPatches: [], staleItems: 0 };
    const stream = target.watch(type, { ...query, signal: controller.signal });
    void (async () => {
      let previous: PlainObject[] = [];
      try {
        for await (const { objects, changes } of stream) {
          const next = plain(objects);
          // Realm-style patching: drop deletions (indexes in the previous
          // result), insert insertions (indexes in the new one); every
          // other object keeps its fields unless it is a modification.
          const patched: (PlainObject | undefined)[] = previous.filter((_, i) =>
            !changes.deletions.includes(i)
          );
          for (const i of [...changes.insertions].sort((a, b) => a - b)) {
            patched.splice(i, 0, undefined);
          }
          const ok = patched.length === next.length &&
            patched.every((object, i) =>
              object === undefined
                ? changes.insertions.includes(i)
                : object.id === next[i]!.id &&
                  (changes.modifications.includes(i) ||
                    same(object.fields, next[i]!.fields))
            );
          if (!ok) {
            latest.badPatches.push(JSON.stringify({
              previous: previous.map((o) => o.id),
              next: next.map((o) => o.id),
              changes,
            }));
          }
          if (!same(next, plain(target.objects(type, query)))) {
            latest.staleItems++;
          }
          previous = next;
          latest.items++;
          latest.ids = next.map((o) => o.id);
          latest.objects = next;
          wake?.();
        }
      } catch (error) {
        if (!controller.signal.aborted) throw error;
      }
    })();
  },

  async waitWatch(ids, timeoutMs) {
    const signal = AbortSignal.timeout(timeoutMs);
    while (!same(latest.ids, ids) || latest.items === 0) {
      signal.throwIfAborted();
      await new Promise<void>((resolve) => {
        const done = () => {
          signal.removeEventListener("abort", done);
          wake = undefined;
          resolve();
        };
        wake = done;
        signal.addEventListener("abort", done);
      });
    }
    return latest;
  },

  pending() {
    return open().pendingWrites().map((receipt) => receipt.clientVersion);
  },

  async waitForPending(timeoutMs) {
    const target = open();
    const signal = AbortSignal.timeout(timeoutMs);
    await Promise.all(
      target.pendingWrites().map((receipt) =>
        receipt.waitForUpload({ signal })
      ),
    );
    return api.pending();
  },

  async closeRealm() {
    watching?.abort();
    await realm?.close();
    realm = undefined;
  },

  async logOut(deleteLocalData) {
    const user = app?.currentUser;
    if (user === undefined) throw new Error("No current user");
    try {
      await user.logOut({ deleteLocalData });
    } catch (error) {
      return failure(error);
    }
    return { ok: true, value: null };
  },

  currentUser() {
    return app?.currentUser?.id ?? null;
  },

  async rawKeys(database, userId) {
    const db = await openExisting(database);
    try {
      const tx = db.transaction(
        ["header", "meta", "records", "pending"],
        "readonly",
      );
      const done = finished(tx);
      const mine = (keys: unknown[]) =>
        keys.filter((key) => Array.isArray(key) && key[0] === userId).length;
      const [meta, records, pending, user] = await Promise.all([
        settle(tx.objectStore("meta").getAllKeys()),
        settle(tx.objectStore("records").getAllKeys()),
        settle(tx.objectStore("pending").getAllKeys()),
        settle(tx.objectStore("header").get(["users", userId])),
      ]);
      await done;
      return {
        meta: mine(meta),
        records: mine(records),
        pending: mine(pending),
        savedUser: user !== undefined,
      };
    } finally {
      db.close();
    }
  },

  async createForeign(database, stores, headerValue) {
    const names = stores ?? ["people", "settings"];
    const req = idb.open(database, 3);
    req.onupgradeneeded = () => {
      for (const name of names) req.result.createObjectStore(name);
    };
    const db = await settle(req);
    try {
      const tx = db.transaction(names, "readwrite");
      const done = finished(tx);
      for (const name of names) {
        tx.objectStore(name).put(
          name === "header" ? headerValue : { name: "Ada" },
          name === "header" ? "header" : "p1",
        );
      }
      await done;
    } finally {
      db.close();
    }
  },

  async snapshot(database, only) {
    const db = await openExisting(database);
    try {
      const stores = Array.from(db.objectStoreNames).sort();
      const entries: ForeignSnapshot["entries"] = [];
      for (const store of stores) {
        if (only !== undefined && !only.includes(store)) continue;
        const tx = db.transaction([store], "readonly");
        const done = finished(tx);
        const [keys, values] = await Promise.all([
          settle(tx.objectStore(store).getAllKeys()),
          settle(tx.objectStore(store).getAll()),
        ]);
        await done;
        keys.forEach((key, i) =>
          entries.push({ store, key, value: values[i] })
        );
      }
      return { version: db.version, stores, entries };
    } finally {
      db.close();
    }
  },

  async close() {
    watching?.abort();
    await realm?.close();
    await app?.close();
    realm = undefined;
    app = undefined;
  },
};

(globalThis as unknown as { confPage: ConfPage }).confPage = api;
