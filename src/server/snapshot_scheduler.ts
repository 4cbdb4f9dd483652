import type { Log } from "./log.ts";
import type { RetryOptions } from "./storage/retry.ts";
import {
  type AdvanceResult,
  advanceSnapshot,
  readSnapshotInfo,
  type SnapshotInfo,
} from "./storage/snapshot.ts";

/**
 * Runs snapshot advances for one server: at most one per realm at a time in
 * this process (other processes are kept out by the lease), outliving the
 * realm's hub so a bootstrap that binds just after the last session left
 * waits for the advance in flight instead of finding its lease taken.
 */

/** How a server keeps its realms' snapshots. */
export interface SnapshotSettings {
  enabled: boolean;
  /** Advance in the background once the head is this far ahead. */
  lagVersions: number;
  /** History versions kept below the snapshot's version. */
  retainVersions: number;
  /** Lifetime of a snapshot lease, in milliseconds. */
  leaseMs: number;
}

/** See the file comment. */
export class SnapshotScheduler {
  #kv: Deno.Kv;
  #settings: SnapshotSettings;
  #retry: RetryOptions;
  #log: Log;
  #now: () => number;
  #running = new Map<string, Promise<AdvanceResult>>();
  #versions = new Map<string, number>();
  // Newest head noted while an advance ran; checked again when it ends.
  #pendingHeads = new Map<string, number>();

  /**
   * @param kv The store.
   * @param settings Whether and how to keep snapshots.
   * @param retry Retry pacing; its signal is the server's lifetime.
   * @param log The server's log.
   * @param now The clock for leases.
   */
  constructor(
    kv: Deno.Kv,
    settings: SnapshotSettings,
    retry: RetryOptions,
    log: Log,
    now: () => number,
  ) {
    this.#kv = kv;
    this.#settings = settings;
    this.#retry = retry;
    this.#log = log;
    this.#now = now;
  }

  /** Whether snapshots are kept at all. */
  get enabled(): boolean {
    return this.#settings.enabled;
  }

  /**
   * Brings the realm's snapshot up to its head, unless another process
   * holds the lease, and returns the version record as it then stands.
   */
  async ensure(realm: string, signal: AbortSignal): Promise<SnapshotInfo> {
    // Whatever runs now may have started before the caller's head; wait for
    // it, then advance over what arrived meanwhile.
    await this.#running.get(realm)?.catch(() => {});
    const result = await this.#advance(realm).catch(() => null);
    return result?.snapshot ??
      await readSnapshotInfo(this.#kv, realm, { ...this.#retry, signal });
  }

  /** Starts an advance in the background if the snapshot lags far enough. */
  noteHead(realm: string, headVersion: number): void {
    if (!this.#settings.enabled) return;
    if (this.#running.has(realm)) {
      const pending = this.#pendingHeads.get(realm) ?? 0;
      if (headVersion > pending) this.#pendingHeads.set(realm, headVersion);
      return;
    }
    const known = this.#versions.get(realm) ?? -1;
    if (headVersion - known < this.#settings.lagVersions) return;
    this.#advance(realm).catch(() => {});
  }

  /** Waits for every advance in flight (they stop at the lifetime's end). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.#running.values()]);
  }

  #advance(realm: string): Promise<AdvanceResult | null> {
    if (!this.#settings.enabled) return Promise.resolve(null);
    const running = this.#running.get(realm);
    if (running !== undefined) return running;
    const task = advanceSnapshot(this.#kv, realm, {
      retainVersions: this.#settings.retainVersions,
      leaseMs: this.#settings.leaseMs,
      now: this.#now,
      retry: this.#retry,
    }).then((result) => {
      this.#versions.set(realm, result.snapshot.version);
      if (result.advanced) {
        this.#log(
          "debug",
          "snapshot_advanced",
          `Snapshot at version ${result.snapshot.version}, history compacted through ${result.compactedThrough}`,
          { path: realm },
        );
      }
      return result;
    });
    this.#running.set(realm, task);
    task.catch((error) => {
      if (!this.#retry.signal.aborted) {
        this.#log(
          "warn",
          "snapshot_failed",
          "Advancing the snapshot failed; it will be tried again",
          { path: realm, error },
        );
      }
    }).finally(() => {
      if (this.#running.get(realm) !== task) return;
      this.#running.delete(realm);
      // Forget the versions of realms nobody writes to any more.
      if (this.#versions.size > 10_000) this.#versions.clear();
      const pending = this.#pendingHeads.get(realm);
      this.#pendingHeads.delete(realm);
      if (pending !== undefined && !this.#retry.signal.aborted) {
        this.noteHead(realm, pending);
      }
    });
    return task;
  }
}
