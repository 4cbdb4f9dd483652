// This module is browser compatible (it reaches Deno only through globalThis).

/**
 * The process-wide registry of open Deno KV store files: one `Deno.Kv` and
 * one OS lock per file, shared by every handle in the process and refused to
 * other processes.
 */

import { SyncError } from "../sync_error.ts";
import {
  checkHeader,
  invalidStore,
  STORE_FORMAT,
  STORE_MAGIC,
} from "./codec.ts";
import {
  foreignSqliteReason,
  sniffSqliteFile,
} from "../../util/sqlite_schema.ts";

/** One part of a Deno KV key. */
export type KvKeyPart =
  | Uint8Array
  | string
  | number
  | bigint
  | boolean
  | symbol;

/** A Deno KV key. */
export type KvKey = readonly KvKeyPart[];

/** One entry read from Deno KV (`value` null when missing). */
export interface KvEntryLike {
  /** The key. */
  readonly key: KvKey;
  /** The value, or null for a missing key. */
  readonly value: unknown;
  /** The versionstamp, or null for a missing key. */
  readonly versionstamp: string | null;
}

/** The part of `Deno.AtomicOperation` a store uses. */
export interface KvAtomicLike {
  /** Adds a version check (null: the key must be missing). */
  check(...checks: { key: KvKey; versionstamp: string | null }[]): this;
  /** Adds a set. */
  set(key: KvKey, value: unknown): this;
  /** Adds a delete. */
  delete(key: KvKey): this;
  /** Commits every mutation at once. */
  commit(): Promise<{ ok: boolean }>;
}

/**
 * The part of `Deno.Kv` a store uses, written out so the client entry point
 * type-checks without the Deno namespace. A `Deno.Kv` fits it.
 */
export interface KvLike {
  /** Reads one key. */
  get(key: KvKey): Promise<KvEntryLike>;
  /** Lists keys in order. */
  list(
    selector: { prefix: KvKey } | { prefix: KvKey; start: KvKey },
    options?: { limit?: number; batchSize?: number },
  ): AsyncIterable<KvEntryLike>;
  /** Starts an atomic operation. */
  atomic(): KvAtomicLike;
  /** Closes the database. */
  close(): void;
}

interface FileLike {
  stat(): Promise<{ dev: number; ino: number | null }>;
  read(buffer: Uint8Array): Promise<number | null>;
  tryLock(exclusive?: boolean): Promise<boolean>;
  close(): void;
}

interface DenoLike {
  openKv?: (path?: string) => Promise<KvLike>;
  open(
    path: string,
    options: { read: boolean; write: boolean; create: boolean },
  ): Promise<FileLike>;
  stat(path: string): Promise<{ dev: number; ino: number | null }>;
}

/** The Deno namespace, or a `TypeError` saying why it cannot be used. */
function denoApi(): DenoLike {
  const deno = (globalThis as { Deno?: DenoLike }).Deno;
  if (typeof deno !== "object" || deno === null) {
    throw new TypeError(
      "Cannot open storage { kvPath }: Deno KV needs Deno; in a browser use { indexedDb: name }",
    );
  }
  if (typeof deno.openKv !== "function") {
    throw new TypeError(
      'Cannot open storage { kvPath }: Deno.openKv is missing; run Deno with --unstable-kv (or "unstable": ["kv"] in deno.json)',
    );
  }
  return deno;
}

/** The key of a store's header: the only key outside the data key space. */
export const HEADER_KEY: KvKey = ["tether", "header"];

/**
 * A handle on a shared store file. Each `acquireKvStore` returns its own
 * handle; the file closes (and its lock goes) with the last release.
 */
export interface KvStoreHandle {
  /** The open database, shared by every handle on this file. */
  readonly kv: KvLike;
  /** The path the handle was opened with (for messages). */
  readonly path: string;
  /**
   * Marks a part of the store (e.g. one realm of one user) as used by one
   * writer in this process: waits for a writer that is closing it, and
   * throws `storage_locked` if one holds it open.
   */
  claim(part: string): Promise<KvClaim>;
  /** Gives the handle back; the last one closes the database. */
  release(): Promise<void>;
}

/** A part of a store held by one writer in this process. */
export interface KvClaim {
  /** Says the writer is closing: a new claim waits for `done`. */
  closing(done: Promise<void>): void;
  /** Gives the part back. */
  release(): void;
}

interface SharedStore {
  id: string;
  kv: KvLike;
  file: FileLike;
  handles: number;
  /** Held parts: null while open, the close's promise while closing. */
  claimed: Map<string, Promise<void> | null>;
}

const stores = new Map<string, SharedStore>();
// Opens and closes run one at a time, so two opens of one new file in this
// process cannot both create it.
let registry: Promise<unknown> = Promise.resolve();

function serialized<T>(task: () => Promise<T>): Promise<T> {
  const result = registry.then(task);
  registry = result.catch(() => {});
  return result;
}

function fileId(stat: { dev: number; ino: number | null }): string {
  return `${stat.dev}:${stat.ino}`;
}

/**
 * Opens (or shares) the Deno KV store file at `path`: takes an exclusive
 * OS lock on the file itself (so a hard link or symlink is the same store),
 * opens it, and checks or writes its header.
 *
 * @throws {TypeError} Outside Deno, or without `--unstable-kv`, or for the
 *   path `":memory:"` (nothing would survive: use the memory storage).
 * @throws {SyncError} `storage_locked` when another process holds the file,
 *   `storage_invalid` when it is not a Tether store (random bytes, a KV file
 *   with other keys, another SQLite database, a directory), was written by
 *   a newer format, or does not open.
 * @throws {Error} Deno's own file-system errors (`Deno.errors.NotFound`
 *   for a missing parent directory, `PermissionDenied`), naming the path.
 */
export function acquireKvStore(path: string): Promise<KvStoreHandle> {
  if (typeof path !== "string" || path.length === 0) {
    return Promise.reject(
      new TypeError("Cannot open storage: kvPath must be a non-empty string"),
    );
  }
  if (path === ":memory:") {
    // Deno KV would open an in-memory database while the lock file
    // ":memory:" appeared in the working directory: durable in name only.
    return Promise.reject(
      new TypeError(
        'Cannot open storage: kvPath ":memory:" is Deno KV\'s in-memory database, where nothing survives; use storage: "memory"',
      ),
    );
  }
  let deno: DenoLike;
  try {
    deno = denoApi();
  } catch (error) {
    return Promise.reject(error);
  }
  return serialized(async () => {
    const where = JSON.stringify(path);
    let existing: SharedStore | undefined;
    try {
      existing = stores.get(fileId(await deno.stat(path)));
    } catch {
      // Missing: created below.
    }
    if (existing !== undefined) {
      existing.handles++;
      return handleFor(existing, path);
    }
    // Never opened while this process has the file open through Deno KV:
    // closing a second descriptor would drop SQLite's POSIX locks.
    const file = await deno.open(path, {
      read: true,
      write: true,
      create: true,
    }).catch((error) => {
      // A directory is not a store; other file-system errors (a missing
      // parent directory, no permission) stay Deno's own, naming the path.
      if (error instanceof Error && error.name === "IsADirectory") {
        throw invalidStore(where, "it is a directory", error);
      }
      throw error;
    });
    let kv: KvLike | undefined;
    try {
      const id = fileId(await file.stat());
      if (!await file.tryLock(true)) {
        throw new SyncError(
          "storage_locked",
          `Cannot open the store ${where}: another process holds it; a store has one owner process`,
        );
      }
      await refuseForeignSqlite(file, where);
      try {
        kv = await deno.openKv!(path);
      } catch (error) {
        throw invalidStore(where, "it is not a Deno KV file", error);
      }
      await checkOrWriteHeader(kv, where);
      const store: SharedStore = {
        id,
        kv,
        file,
        handles: 1,
        claimed: new Map(),
      };
      stores.set(id, store);
      return handleFor(store, path);
    } catch (error) {
      kv?.close();
      file.close();
      throw error;
    }
  });
}

/**
 * Refuses another application's SQLite database before Deno KV opens it:
 * Deno KV would add its tables to any SQLite file, so the file would no
 * longer be left untouched. Only a schema that lists tables, none of them
 * Deno KV's, is refused; a schema page that is unreadable or stale (a KV
 * file whose newest pages are still in its write-ahead log) is left to
 * Deno KV and the header check.
 */
async function refuseForeignSqlite(
  file: FileLike,
  where: string,
): Promise<void> {
  const sniffed = await sniffSqliteFile(file);
  if (sniffed.kind === "foreign") {
    throw invalidStore(where, foreignSqliteReason(sniffed.tables));
  }
}

async function checkOrWriteHeader(kv: KvLike, where: string): Promise<void> {
  let header: KvEntryLike;
  try {
    header = await kv.get(HEADER_KEY);
  } catch (error) {
    throw invalidStore(where, "its header does not decode", error);
  }
  if (header.versionstamp !== null) {
    checkHeader(header.value, where);
    return;
  }
  try {
    for await (const _ of kv.list({ prefix: [] }, { limit: 1 })) {
      throw invalidStore(
        where,
        "it is a Deno KV file with other data (no Tether header)",
      );
    }
  } catch (error) {
    if (error instanceof SyncError) throw error;
    throw invalidStore(where, "its keys do not decode", error);
  }
  const result = await kv.atomic()
    .check({ key: HEADER_KEY, versionstamp: null })
    .set(HEADER_KEY, { magic: STORE_MAGIC, format: STORE_FORMAT })
    .commit();
  if (!result.ok) {
    throw invalidStore(where, "its header changed while it was opened");
  }
}

function handleFor(store: SharedStore, path: string): KvStoreHandle {
  const mine = new Set<string>();
  let released: Promise<void> | undefined;
  return {
    kv: store.kv,
    path,
    async claim(part: string): Promise<KvClaim> {
      for (let attempt = 0; attempt < 10; attempt++) {
        if (released !== undefined) {
          throw new TypeError("Cannot claim: the store handle was released");
        }
        const holder = store.claimed.get(part);
        if (holder === undefined) break;
        if (holder === null) {
          throw new SyncError(
            "storage_locked",
            `Cannot open ${part} in the store ${
              JSON.stringify(path)
            }: it is already open in this process; open it once and share the handle`,
          );
        }
        await holder.catch(() => {});
      }
      if (store.claimed.has(part)) {
        throw new SyncError(
          "storage_locked",
          `Cannot open ${part} in the store ${
            JSON.stringify(path)
          }: it keeps being reopened in this process`,
        );
      }
      store.claimed.set(part, null);
      mine.add(part);
      return {
        closing(done: Promise<void>): void {
          if (mine.has(part)) store.claimed.set(part, done);
        },
        release(): void {
          if (mine.delete(part)) store.claimed.delete(part);
        },
      };
    },
    release(): Promise<void> {
      released ??= serialized(() => {
        for (const part of mine) store.claimed.delete(part);
        mine.clear();
        store.handles--;
        if (store.handles === 0) {
          stores.delete(store.id);
          try {
            store.kv.close();
          } finally {
            // Closing the descriptor releases the OS lock.
            store.file.close();
          }
        }
        return Promise.resolve();
      });
      return released;
    },
  };
}
