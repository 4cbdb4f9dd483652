/**
 * The lock that keeps a second process off a local KV file (on a local
 * file, `kv.watch` does not see other processes' commits, and two writers
 * fail with "database is locked"; docs/SERVER.md "Storage").
 *
 * Advisory `flock`s, which the kernel drops when the process dies, so a
 * crash leaves no stale lock to clean up: one on the KV file itself, so a
 * hard link or a symlink to the same file is the same lock (the lock
 * follows the inode, not the name), and one on `<path>.lock`, which also
 * names the holder's pid for operators. SQLite locks the file with `fcntl`
 * locks, which on Linux and macOS are independent of `flock`, so holding
 * the file's flock does not get in the store's way.
 */

/** A held lock; release it when the store is closed. */
export interface KvLock {
  /** The lock file's path. */
  readonly path: string;
  /** Releases the lock (the file stays, harmlessly). */
  release(): void;
}

/**
 * Thrown by `serveSync` when another live process (or another server in
 * this process) already serves the same KV file.
 *
 * @example A second server on one file is refused
 * ```ts
 * import { KvLockedError, serveSync } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * const directory = await Deno.makeTempDir();
 * const options = {
 *   port: 0,
 *   kv: `${directory}/sync.kv`,
 *   auth: { allowAnonymous: true },
 *   logger: () => {},
 * };
 * try {
 *   await using _first = await serveSync(options);
 *   await assert.rejects(() => serveSync(options), KvLockedError);
 * } finally {
 *   await Deno.remove(directory, { recursive: true });
 * }
 * ```
 */
export class KvLockedError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is locked and what to do.
   */
  constructor(message: string) {
    super(message);
    this.name = "KvLockedError";
  }
}

/**
 * Takes the lock for the KV file at `kvPath`, or throws
 * {@linkcode KvLockedError} if a live process holds it.
 */
export async function lockKvPath(kvPath: string): Promise<KvLock> {
  const path = `${kvPath}.lock`;
  const file = await takeLock(path, { create: true, write: true });
  if (file === null) throw lockedError(kvPath, path);
  // An empty file is a valid empty SQLite database, so creating the store
  // file here for its lock changes nothing for Deno.openKv.
  let store: Deno.FsFile | null;
  try {
    store = await takeLock(kvPath, { create: true, read: true, write: true });
  } catch (error) {
    release(file);
    throw error;
  }
  if (store === null) {
    release(file);
    throw new KvLockedError(
      `Cannot serve ${
        JSON.stringify(kvPath)
      }: another server process holds this file under another name (a hard link or a symlink to it). A local KV file is served by one process; to run several, share a KV Connect URL instead`,
    );
  }
  // Written for operators who wonder who holds the lock; not relied on.
  await file.truncate(0);
  await file.write(new TextEncoder().encode(`${Deno.pid}\n`));
  let released = false;
  return {
    path,
    release() {
      if (released) return;
      released = true;
      try {
        release(store);
      } finally {
        release(file);
      }
    },
  };
}

/** Opens `path` and takes an exclusive flock, or returns null if held. */
async function takeLock(
  path: string,
  options: Deno.OpenOptions,
): Promise<Deno.FsFile | null> {
  const file = await Deno.open(path, options);
  let locked = false;
  try {
    locked = await file.tryLock(true);
  } catch (error) {
    file.close();
    throw error;
  }
  if (locked) return file;
  file.close();
  return null;
}

function release(file: Deno.FsFile): void {
  try {
    file.unlockSync();
  } finally {
    file.close();
  }
}

function lockedError(kvPath: string, lockPath: string): KvLockedError {
  return new KvLockedError(
    `Cannot serve ${
      JSON.stringify(kvPath)
    }: another server process holds it (lock file ${
      JSON.stringify(lockPath)
    }). A local KV file is served by one process; to run several, share a KV Connect URL instead`,
  );
}
