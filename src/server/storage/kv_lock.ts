/**
 * The lock that keeps a second process off a local KV file (ISSUE: on a
 * local file, `kv.watch` does not see other processes' commits, and two
 * writers fail with "database is locked"). An advisory `flock` on a file
 * next to the store: the kernel drops it when the process dies, so a crash
 * leaves no stale lock to clean up.
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
  const file = await Deno.open(path, { create: true, write: true });
  let locked = false;
  try {
    locked = await file.tryLock(true);
  } catch (error) {
    file.close();
    throw error;
  }
  if (!locked) {
    file.close();
    throw new KvLockedError(
      `Cannot serve ${
        JSON.stringify(kvPath)
      }: another server process holds it (lock file ${
        JSON.stringify(path)
      }). A local KV file is served by one process; to run several, share a KV Connect URL instead`,
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
        file.unlockSync();
      } finally {
        file.close();
      }
    },
  };
}
