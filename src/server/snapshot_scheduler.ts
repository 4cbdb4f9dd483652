import { AdvancePacer, type AdvancePacing } from "./advance_pacing.ts";
import type { Log } from "./log.ts";
import type { RetryOptions } from "./storage/retry.ts";
import {
  type AdvancePieces,
  type AdvanceResult,
  advanceSnapshot,
  readSnapshotInfo,
  type SnapshotInfo,
} from "./storage/snapshot.ts";
import type { ServerKv } from "./storage/kv_store.ts";

/**
 * Runs snapshot advances for one server in the background: at most one per
 * realm at a time in this process (other processes are kept out by the
 * lease), paced by `advance_pacing.ts` so that an advance waits for a pause
 * in the server's writes and a burst of writes does not re-run it thousands
 * of times. No client ever waits for one: a bootstrap takes the snapshot as
 * stored and asks for an advance after it (docs/ARCHITECTURE.md
 * "Snapshots").
 */

/** How a server keeps its realms' snapshots. */
export interface SnapshotSettings {
  enabled: boolean;
  /** An advance is due once the head is this far ahead. */
  lagVersions: number;
  /** History versions kept below the snapshot's version. */
  retainVersions: number;
  /** Lifetime of a snapshot lease, in milliseconds. */
  leaseMs: number;
  /** How an advance cuts its work (`LOCAL_PIECES` on a local store). */
  pieces: AdvancePieces;
  /** When a due advance starts (`ADVANCE_PACING` by default). */
  pacing?: AdvancePacing;
}

/** Where one realm's advances stand in this process. */
interface RealmAdvances {
  /** Idle, waiting for its start time, or running. */
  state: "idle" | "waiting" | "running";
  pacer: AdvancePacer;
  /** The snapshot version the last advance left (-1: not known yet). */
  known: number;
  /** The newest head noted while an advance was due or ran (-1: none). */
  noted: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  task: Promise<AdvanceResult> | undefined;
}

// Realms whose records are kept at most; past it the idle ones are dropped
// (a realm nobody writes to any more needs none).
const MAX_REALMS = 10_000;

/** See the file comment. */
export class SnapshotScheduler {
  #kv: ServerKv;
  #settings: SnapshotSettings;
  #retry: RetryOptions;
  #log: Log;
  #now: () => number;
  #realms = new Map<string, RealmAdvances>();
  // When this server last committed a write, to any realm: an advance
  // shares the thread and the store with all of them.
  #lastWriteAt = Number.NEGATIVE_INFINITY;

  /**
   * @param kv The store.
   * @param settings Whether and how to keep snapshots.
   * @param retry Retry pacing; its signal is the server's lifetime.
   * @param log The server's log.
   * @param now The clock for leases.
   */
  constructor(
    kv: ServerKv,
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
    retry.signal.addEventListener("abort", () => this.#clearTimers(), {
      once: true,
    });
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
   * Notes the realm's head after a commit of `written` bytes of history (0
   * for a head only seen, as by a bootstrap). An advance becomes due once
   * the snapshot lags `lagVersions` behind the head, and starts when the
   * pacing allows.
   */
  noteHead(realm: string, headVersion: number, written = 0): void {
    if (!this.#settings.enabled || this.#retry.signal.aborted) return;
    const now = performance.now();
    const advances = this.#realm(realm);
    if (written > 0) {
      this.#lastWriteAt = now;
      advances.pacer.wrote(written);
    }
    if (headVersion <= advances.known) return;
    if (headVersion - advances.known < this.#settings.lagVersions) return;
    if (headVersion > advances.noted) advances.noted = headVersion;
    advances.pacer.due(now);
    // Waiting: its timer looks again; running: its end does.
    if (advances.state === "idle") this.#schedule(realm, advances, now);
  }

  /** Waits for every advance in flight (they stop at the lifetime's end). */
  async drain(): Promise<void> {
    this.#clearTimers();
    const tasks = [...this.#realms.values()].map((advances) => advances.task);
    await Promise.allSettled(tasks);
  }

  #realm(realm: string): RealmAdvances {
    let advances = this.#realms.get(realm);
    if (advances !== undefined) return advances;
    if (this.#realms.size >= MAX_REALMS) this.#dropIdle();
    advances = {
      state: "idle",
      pacer: new AdvancePacer(this.#settings.pacing),
      known: -1,
      noted: -1,
      timer: undefined,
      task: undefined,
    };
    this.#realms.set(realm, advances);
    return advances;
  }

  #dropIdle(): void {
    for (const [realm, advances] of this.#realms) {
      if (advances.state === "idle") this.#realms.delete(realm);
    }
  }

  #clearTimers(): void {
    for (const advances of this.#realms.values()) {
      if (advances.state !== "waiting") continue;
      clearTimeout(advances.timer);
      advances.timer = undefined;
      advances.state = "idle";
    }
  }

  // Starts the due advance now, or waits until the pacing allows it. The
  // writes meanwhile only move the pacer's time: one timer, looked at again
  // when it fires, rather than one per write.
  #schedule(realm: string, advances: RealmAdvances, now: number): void {
    const at = advances.pacer.startAt(now, this.#lastWriteAt);
    if (at <= now) {
      this.#start(realm, advances);
      return;
    }
    advances.state = "waiting";
    advances.timer = setTimeout(() => {
      advances.timer = undefined;
      advances.state = "idle";
      if (this.#retry.signal.aborted) return;
      this.#schedule(realm, advances, performance.now());
    }, Math.ceil(at - now));
  }

  #start(realm: string, advances: RealmAdvances): void {
    advances.state = "running";
    advances.pacer.started();
    advances.noted = -1;
    const task = advanceSnapshot(this.#kv, realm, {
      pieces: this.#settings.pieces,
      retainVersions: this.#settings.retainVersions,
      leaseMs: this.#settings.leaseMs,
      now: this.#now,
      retry: this.#retry,
    });
    advances.task = task;
    task.then((result) => {
      advances.known = result.snapshot.version;
      if (result.advanced) {
        this.#log(
          "debug",
          "snapshot_advanced",
          `Snapshot at version ${result.snapshot.version}, history compacted through ${result.compactedThrough}`,
          { path: realm },
        );
      }
    }, (error) => {
      if (!this.#retry.signal.aborted) {
        this.#log(
          "warn",
          "snapshot_failed",
          "Advancing the snapshot failed; it will be tried again",
          { path: realm, error },
        );
      }
    }).finally(() => this.#ended(realm, advances));
  }

  #ended(realm: string, advances: RealmAdvances): void {
    const now = performance.now();
    advances.state = "idle";
    advances.task = undefined;
    advances.pacer.ended(now);
    if (this.#retry.signal.aborted) return;
    // A head noted while it ran is advanced over, lag or not: it was noted
    // because it was worth it, or asked for.
    if (advances.noted > advances.known) {
      advances.pacer.due(now);
      this.#schedule(realm, advances, now);
    }
  }
}
