/**
 * Opening the store a server was given (a Deno KV file path, a KV Connect
 * URL, an open `Deno.Kv`, or `":memory:"`, an in-process store), locked for
 * one process when it is a file (`docs/SERVER.md` "Scaling on a shared KV").
 */

import {
  foreignSqliteReason,
  sniffSqliteFile,
} from "../../util/sqlite_schema.ts";
import { type KvLock, lockKvPath } from "./kv_lock.ts";
import { MemoryKv } from "./memory_kv.ts";

/**
 * What the server needs of a store: `Deno.Kv`'s reads, listing, atomic
 * operations and watch. A `Deno.Kv` is one; so is the in-memory store that
 * `":memory:"` opens ({@linkcode MemoryKv}).
 */
export type ServerKv = Pick<
  Deno.Kv,
  "get" | "getMany" | "list" | "atomic" | "watch" | "close"
>;

/** An open store, with what closes whatever opening it took. */
export interface KvStore {
  kv: ServerKv;
  /**
   * Whether something other than this server may write to the store: a
   * `Deno.Kv` it was given (others may hold it) or a KV Connect URL (other
   * processes). `":memory:"` and a locked file are this server's alone.
   */
  shared: boolean;
  /**
   * Whether the store is across the network (a KV Connect URL): its commits
   * do not run on this thread. A `Deno.Kv` handed in counts as local.
   */
  remote: boolean;
  /** Closes what this server opened (idempotent). */
  release(): void;
}

/**
 * Opens `kv`: a `Deno.Kv` is used as is and never closed here; a path is
 * checked, then gets its directory created and an exclusive lock first.
 *
 * @throws {TypeError} If `kv` is none of the accepted kinds, or empty, or a
 *   path that is not a Deno KV file (a directory, another application's
 *   SQLite database, bytes that are not SQLite), which is left untouched.
 * @throws {KvLockedError} If another live process serves the same file.
 */
export async function openKvStore(kv: string | Deno.Kv): Promise<KvStore> {
  if (typeof kv !== "string") {
    if (typeof kv !== "object" || kv === null || !("atomic" in kv)) {
      throw new TypeError(
        "Cannot serve: kv must be a path, a URL or a Deno.Kv",
      );
    }
    return { kv, shared: true, remote: false, release() {} };
  }
  // In memory, the store is this process's own: an in-process one keeps
  // each commit on the server's thread, where Deno KV's in-memory store
  // wakes its own thread for it (docs/PERFORMANCE.md "An in-process store
  // for `:memory:`").
  if (kv === ":memory:") return closingOnce(new MemoryKv(), null, false, false);
  if (/^https?:\/\//i.test(kv)) {
    return closingOnce(await Deno.openKv(kv), null, true, true);
  }
  if (kv === "") throw new TypeError("Cannot serve: kv path is empty");
  await refuseNonKvFile(kv);
  const directory = parentDirectory(kv);
  if (directory !== "") await Deno.mkdir(directory, { recursive: true });
  const lock = await lockKvPath(kv);
  let opened: Deno.Kv;
  try {
    opened = await Deno.openKv(kv);
  } catch (error) {
    lock.release();
    throw error;
  }
  return closingOnce(opened, lock, false, false);
}

/**
 * Refuses a path that exists and is not a Deno KV file, before anything is
 * created or opened for writing: Deno KV would add its tables to another
 * application's SQLite database, and the lock would leave `<path>.lock`
 * beside it. A missing path or an empty file is a new store.
 */
async function refuseNonKvFile(path: string): Promise<void> {
  const where = JSON.stringify(path);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (info.isDirectory) throw notKvFile(where, "it is a directory");
  if (!info.isFile) throw notKvFile(where, "it is not a regular file");
  using file = await Deno.open(path, { read: true });
  const sniffed = await sniffSqliteFile(file);
  if (sniffed.kind === "not_sqlite") {
    throw notKvFile(where, "it is not an SQLite file, so not a Deno KV file");
  }
  if (sniffed.kind === "foreign") {
    throw notKvFile(where, foreignSqliteReason(sniffed.tables));
  }
}

function notKvFile(where: string, detail: string): TypeError {
  return new TypeError(
    `Cannot serve ${where}: ${detail}; it was left untouched`,
  );
}

function closingOnce(
  opened: ServerKv,
  lock: KvLock | null,
  shared: boolean,
  remote: boolean,
): KvStore {
  let released = false;
  return {
    kv: opened,
    shared,
    remote,
    release() {
      if (released) return;
      released = true;
      try {
        opened.close();
      } finally {
        lock?.release();
      }
    },
  };
}

function parentDirectory(path: string): string {
  const index = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return index <= 0 ? "" : path.slice(0, index);
}
