/**
 * The IndexedDB realm storage, run in Deno on `fake-indexeddb` (a real
 * browser runs it in the browser test): the storage contract, reopen, and
 * refusal of foreign, newer and undecodable databases.
 */
import assert from "node:assert/strict";
import { IDBFactory, IDBKeyRange } from "npm:fake-indexeddb@6.2.8";
import {
  type IndexedDbApi,
  IndexedDbRealmStorage,
} from "../../../src/client/storage/indexed_db.ts";
import { SyncError } from "../../../src/client/sync_error.ts";
import { runStorageTests } from "../../_helpers/storage_conformance.ts";

const realm = { userId: "u1", path: "/u1/r" };

/** A fresh, empty IndexedDB for each test. */
function freshApi(): IndexedDbApi {
  return { indexedDB: new IDBFactory(), IDBKeyRange };
}

runStorageTests(
  "IndexedDbRealmStorage",
  () => IndexedDbRealmStorage.open("app", realm, freshApi()),
  () => {
    const api = freshApi();
    return Promise.resolve({
      open: () => IndexedDbRealmStorage.open("app", realm, api),
      [Symbol.asyncDispose]: () => Promise.resolve(),
    });
  },
);

const meta = {
  nodeId: 7,
  clientIdentity: null,
  downloadCursor: 0,
  lastClientVersion: 0,
  acknowledgedClientVersion: 0,
};

function request<T>(req: IDBRequestLike<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

interface IDBRequestLike<T> {
  result: T;
  error: unknown;
  onsuccess: (() => void) | null;
  onerror: (() => void) | null;
}

// deno-lint-ignore no-explicit-any
type Any = any;

/** Opens a raw database with its own upgrade step. */
async function rawDatabase(
  api: IndexedDbApi,
  name: string,
  version: number,
  upgrade: (db: Any, tx: Any) => void,
): Promise<Any> {
  const open = (api.indexedDB as Any).open(name, version);
  open.onupgradeneeded = () => upgrade(open.result, open.transaction);
  return await request<Any>(open);
}

async function assertInvalid(api: IndexedDbApi, pattern: RegExp) {
  await assert.rejects(
    IndexedDbRealmStorage.open("app", realm, api),
    (error: unknown) => {
      assert.ok(error instanceof SyncError, String(error));
      assert.equal(error.code, "storage_invalid");
      assert.ok(error.message.includes('IndexedDB "app"'), error.message);
      assert.match(error.message, pattern);
      return true;
    },
  );
}

Deno.test("IndexedDbRealmStorage: a database with other object stores is refused", async () => {
  const api = freshApi();
  const db = await rawDatabase(
    api,
    "app",
    1,
    (db) => db.createObjectStore("todos"),
  );
  db.close();
  await assertInvalid(api, /not a Tether store/);
});

Deno.test("IndexedDbRealmStorage: a store written by a newer format is refused", async () => {
  const api = freshApi();
  const db = await rawDatabase(api, "app", 1, (db, tx) => {
    for (const name of ["header", "meta", "records", "pending"]) {
      db.createObjectStore(name);
    }
    tx.objectStore("header").put(
      { magic: "tether.store", format: 9 },
      "header",
    );
  });
  db.close();
  await assertInvalid(api, /newer Tether \(format 9/);
});

Deno.test("IndexedDbRealmStorage: a value that does not decode is refused at load", async () => {
  const api = freshApi();
  const storage = await IndexedDbRealmStorage.open("app", realm, api);
  await storage.commit({ meta, records: [], append: [] });
  await storage.close();
  const db = await request<Any>((api.indexedDB as Any).open("app"));
  const tx = db.transaction(["records"], "readwrite");
  tx.objectStore("records").put(new Uint8Array([9, 9]), [
    "u1",
    "/u1/r",
    "T",
    "x",
  ]);
  await new Promise((resolve) => (tx.oncomplete = resolve));
  db.close();
  const again = await IndexedDbRealmStorage.open("app", realm, api);
  try {
    await assert.rejects(again.load(), (error: unknown) => {
      assert.ok(error instanceof SyncError);
      assert.equal(error.code, "storage_invalid");
      return true;
    });
  } finally {
    await again.close();
  }
});

Deno.test("IndexedDbRealmStorage: two realms share a database; one realm has one writer", async () => {
  const api = freshApi();
  const a = await IndexedDbRealmStorage.open("app", realm, api);
  const b = await IndexedDbRealmStorage.open("app", {
    userId: "u1",
    path: "/u1/s",
  }, api);
  try {
    await a.commit({
      meta: { ...meta, downloadCursor: 1 },
      records: [],
      append: [],
    });
    await b.commit({
      meta: { ...meta, downloadCursor: 2 },
      records: [],
      append: [],
    });
    await assert.rejects(
      IndexedDbRealmStorage.open("app", realm, api),
      (error: unknown) =>
        error instanceof SyncError && error.code === "storage_locked",
    );
    assert.equal((await a.load()).meta?.downloadCursor, 1);
    assert.equal((await b.load()).meta?.downloadCursor, 2);
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("IndexedDbRealmStorage: a realm whose Web Lock another tab holds is refused", async () => {
  const api = freshApi();
  const name = `tether:${JSON.stringify(["app", realm.userId, realm.path])}`;
  const held = Promise.withResolvers<void>();
  const acquired = Promise.withResolvers<void>();
  // Deno has Web Locks at run time; its type library does not declare them.
  const locks = (navigator as Any).locks as {
    request(name: string, callback: () => Promise<void>): Promise<void>;
  };
  const other = locks.request(name, () => {
    acquired.resolve();
    return held.promise;
  });
  await acquired.promise;
  try {
    await assert.rejects(
      IndexedDbRealmStorage.open("app", realm, api),
      (error: unknown) =>
        error instanceof SyncError && error.code === "storage_locked" &&
        error.message.includes("another tab"),
    );
  } finally {
    held.resolve();
    await other;
  }
  const storage = await IndexedDbRealmStorage.open("app", realm, api);
  await storage.close();
});

Deno.test("IndexedDbRealmStorage: a realm whose Web Lock a closing tab still holds opens once that tab frees it, within the grace", async () => {
  const api = freshApi();
  const name = `tether:${JSON.stringify(["app", realm.userId, realm.path])}`;
  const held = Promise.withResolvers<void>();
  const acquired = Promise.withResolvers<void>();
  const locks = (navigator as Any).locks as {
    request(name: string, callback: () => Promise<void>): Promise<void>;
    query(): Promise<{ pending?: { name?: string }[] }>;
  };
  const other = locks.request(name, () => {
    acquired.resolve();
    return held.promise;
  });
  await acquired.promise;
  // A closed tab's lock goes a moment after the tab: the open finds it
  // held, waits, and gets it when it is freed (here, once the open is
  // queued for it), rather than refusing.
  const opening = IndexedDbRealmStorage.open("app", realm, api);
  let refusal: unknown;
  opening.catch((error) => refusal = error);
  try {
    const signal = AbortSignal.timeout(5_000);
    while (
      !(await locks.query()).pending?.some((request) => request.name === name)
    ) {
      if (refusal !== undefined) throw refusal;
      signal.throwIfAborted();
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  } finally {
    held.resolve();
    await other;
  }
  const storage = await opening;
  try {
    assert.equal((await storage.load()).meta, null);
  } finally {
    await storage.close();
  }
});
