// This module is browser compatible.

/** Turns a realm's `storage` option into an open {@linkcode RealmStorage}. */

import { LocalRealm } from "../local_realm.ts";
import { IndexedDbRealmStorage } from "./indexed_db.ts";
import { KvRealmStorage } from "./kv.ts";
import { MemoryStorage } from "./memory.ts";
import type { RealmStorage } from "./storage.ts";

/** What `openRealm({ storage })` accepts (see `RealmStorageOption`). */
export type StorageOption =
  | "memory"
  | { kvPath: string }
  | { indexedDb: string }
  | RealmStorage;

function isRealmStorage(value: object): value is RealmStorage {
  const candidate = value as Partial<RealmStorage>;
  return typeof candidate.load === "function" &&
    typeof candidate.commit === "function" &&
    typeof candidate.close === "function";
}

/**
 * Checks a storage option; throws a `TypeError` naming what is wrong.
 */
export function checkStorageOption(storage: unknown): void {
  if (storage === undefined || storage === "memory") return;
  if (typeof storage === "object" && storage !== null) {
    if ("kvPath" in storage) {
      const { kvPath } = storage as { kvPath: unknown };
      if (typeof kvPath === "string" && kvPath.length > 0) return;
      throw new TypeError(
        "Cannot open realm: storage.kvPath must be a non-empty string",
      );
    }
    if ("indexedDb" in storage) {
      const { indexedDb } = storage as { indexedDb: unknown };
      if (typeof indexedDb === "string" && indexedDb.length > 0) return;
      throw new TypeError(
        "Cannot open realm: storage.indexedDb must be a non-empty string",
      );
    }
    if (isRealmStorage(storage)) return;
  }
  throw new TypeError(
    `Cannot open realm: storage must be "memory", { kvPath }, { indexedDb } or a RealmStorage, got ${
      typeof storage === "object" ? "another object" : JSON.stringify(storage)
    }`,
  );
}

/**
 * Opens the storage of one realm of one user. A `RealmStorage` object is
 * used as given (the realm closes it when it closes).
 */
export function openStorage(
  storage: StorageOption | undefined,
  location: { userId: string; path: string },
): Promise<RealmStorage> {
  if (storage === undefined || storage === "memory") {
    return Promise.resolve(new MemoryStorage());
  }
  if ("kvPath" in storage) return KvRealmStorage.open(storage.kvPath, location);
  if ("indexedDb" in storage) {
    return IndexedDbRealmStorage.open(storage.indexedDb, location);
  }
  return Promise.resolve(storage);
}

/**
 * Opens the storage and the local realm on it; closes the storage again if
 * the realm does not open (e.g. a value that does not decode).
 */
export async function openLocalRealm(
  storage: StorageOption | undefined,
  location: { userId: string; path: string },
  now: () => number,
): Promise<LocalRealm> {
  const opened = await openStorage(storage, location);
  try {
    return await LocalRealm.open(opened, now);
  } catch (error) {
    await opened.close().catch(() => {});
    throw error;
  }
}
