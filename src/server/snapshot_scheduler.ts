import type { Log } from "./log.ts";
import type { RetryOptions } from "./storage/retry.ts";
import {
  type AdvancePieces,
  type AdvanceResult,
  advanceSnapshot,
  readSnapshotInfo,
  type SnapshotInfo,
} from "./storage/snapshot.ts";

/**
 * Runs snapshot advances for one server in the background: at most one per
 * realm at a time in this process (other processes are kept out by the
 * lease), and at most one per realm every `MIN_INTERVAL_MS`, so a burst of
 * writes does not re-run them thousands of times. No client ever waits for
 * one: a bootstrap takes the snapshot as stored and asks for an advance
 * after it (docs/ARCHITECTURE.md "Snapshots").
 */

// Least time between the end of one advance of a realm and the start of
// the next in this process.
const MIN_INTERVAL_MS = 500;

/** How a server keeps its realms' snapshots. */
export interface SnapshotSettings {
  enabled: boolean;
  /** Advance in the background once the head is this far ahead. */
  lagVersions: number;
  /** History versions kept below the snapshot's version. */
  retainVersions: number;
  /** Lifetime of a snapshot lease, in milliseconds. */
  leaseMs: number;
  /** How an advance cuts its work (`LOCAL_PIECES` on a local store). */
  pieces: AdvancePieces;
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
  // Newest head noted while an advance ran or waited for its interval;
  // checked again when it ends.
  #pendingHeads = new Map<string, number>();
  // When the next advance of a realm may start, and its timer if one waits.
  #notBefore = new Map<string, number>();
  #timers = new Map<string, ReturnType<typeof setTimeout>>();

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
    retry.signal.addEventListener("abort", () => {
      for (const timer of this.#timers.values()) clearTimeout(timer);
      this.#timers.clear();
    }, { once: true });
  }

  /** Whether snapshots are kept at all. */
  get enabled(): boolean {
    return this.#settings.enabled;
  }

  /** The realm's snapshot version record as stored (nothing is advanced). */
  stored(realm: string, signal: AbortSignal): Promise<SnapshotInfo> {
    return readSnapshotInfo(this.#kv, realm, { ...this.#retry, signal });
  }

  /**
   * Starts an advance in the background if the snapshot lags far enough
   * (`force`: at all) behind `headVersion`, as soon as the realm's interval
   * allows.
   */
  noteHead(realm: string, headVersion: number, force = false): void {
    if (!this.#settings.enabled || this.#retry.signal.aborted) return;
    const known = this.#versions.get(realm) ?? -1;
    if (headVersion <= known) return;
    if (!force && headVersion - known < this.#settings.lagVersions) return;
    const wait = Math.ceil(
      (this.#notBefore.get(realm) ?? 0) - performance.now(),
    );
    if (this.#running.has(realm) || wait > 0) {
      const pending = this.#pendingHeads.get(realm) ?? -1;
      if (headVersion > pending) this.#pendingHeads.set(realm, headVersion);
      if (!this.#running.has(realm) && !this.#timers.has(realm)) {
        this.#timers.set(
          realm,
          setTimeout(() => {
            this.#timers.delete(realm);
            this.#notePending(realm);
          }, wait),
        );
      }
      return;
    }
    this.#advance(realm).catch(() => {});
  }

  /** Waits for every advance in flight (they stop at the lifetime's end). */
  async drain(): Promise<void> {
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
    this.#pendingHeads.clear();
    await Promise.allSettled([...this.#running.values()]);
  }

  #notePending(realm: string): void {
    const pending = this.#pendingHeads.get(realm);
    this.#pendingHeads.delete(realm);
    // A head noted since the last advance started is advanced over, lag
    // or not: it was noted because it was worth it, or asked for.
    if (pending !== undefined) this.noteHead(realm, pending, true);
  }

  #advance(realm: string): Promise<AdvanceResult | null> {
    if (!this.#settings.enabled) return Promise.resolve(null);
    const running = this.#running.get(realm);
    if (running !== undefined) return running;
    const task = advanceSnapshot(this.#kv, realm, {
      pieces: this.#settings.pieces,
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
      // Real time, not the lease clock (which tests may hold still).
      this.#notBefore.set(realm, performance.now() + MIN_INTERVAL_MS);
      // Forget the realms nobody writes to any more.
      if (this.#versions.size > 10_000) this.#versions.clear();
      if (this.#notBefore.size > 10_000) this.#notBefore.clear();
      this.#notePending(realm);
    });
    return task;
  }
}
