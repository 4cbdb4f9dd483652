import type { UploadChangeset } from "../model/changeset.ts";
import type { ClientIdentity } from "../protocol/messages.ts";
import {
  type CommittedState,
  EMPTY_HEAD,
  type GroupSettled,
  type Head,
  type HistoryItem,
  type HistoryRead,
  integrateGroup,
  type IntegrateResult,
  ITEM_OVERHEAD_BYTES,
  readHead,
  readHistory,
} from "./storage/history.ts";
import { headKey } from "./storage/keys.ts";
import {
  type ObjectKey,
  readObjectRecords,
  type RealmState,
} from "./storage/realm_state.ts";
import {
  readRejection,
  recordRejection,
  type Refusal,
} from "./storage/rejections.ts";
import {
  listSnapshotObjects,
  type SnapshotInfo,
  type SnapshotObject,
} from "./storage/snapshot.ts";
import type { SnapshotScheduler } from "./snapshot_scheduler.ts";
import { linkAbort } from "../util/abort_link.ts";
import { delay } from "../util/delay.ts";
import { backoffDelayMs, type RetryOptions } from "./storage/retry.ts";
import type { Log } from "./log.ts";
import type { ServerKv } from "./storage/kv_store.ts";

/**
 * What one process knows about one realm while sessions are bound to it.
 *
 * That is the newest head it has seen, recent history (so a changeset integrated
 * here is fanned out without being read back from KV), and one `kv.watch`
 * on the head, through which commits by other processes arrive (none on a
 * store only this server can write to, `HubContext.watchHeads`). It exists
 * only while a session is bound: the registry drops it after the last one
 * leaves.
 */

/** A bound session, as the hub sees it. */
export interface HubMember {
  /** Called when the hub's head moved: the session may have more to send. */
  wake(): void;
}

/** What a hub needs from its server. */
export interface HubContext {
  kv: ServerKv;
  /**
   * Whether to watch each realm's head for other writers' commits: false
   * when nothing but this server can write to the store (`KvStore.shared`),
   * where the watch would only report this process's own commits, each one
   * a KV read and a wake-up right behind the commit on the propagation path
   * (docs/PERFORMANCE.md, propagation).
   */
  watchHeads: boolean;
  /** Retry pacing; its signal is the server's lifetime. */
  retry: RetryOptions;
  log: Log;
  /** Called with the number of changesets this hub stored. */
  onIntegrated(count: number): void;
  /** Advances snapshots, one per realm at a time. */
  snapshots: SnapshotScheduler;
}

// Recent history kept in memory per realm, in encoded bytes.
const CACHE_BYTES = 1024 * 1024;

/** A `readCached` answer and the question it answers at a head. */
interface CachedRead {
  from: number;
  maxBytes: number;
  head: number;
  items: readonly HistoryItem[];
}

// Matches no question (versions start at 1).
const NO_CACHED_READ: CachedRead = {
  from: -1,
  maxBytes: -1,
  head: -1,
  items: [],
};

// No session is woken later: `noteHead` wakes them all.
const NO_MEMBERS: ReadonlyMap<object, unknown> = new Map();

/**
 * Called with an upload's result once the commit holding it is durable,
 * before any session is woken; `more` says whether an upload of the same
 * owner is settled after it by the same commit (one acknowledgement then
 * covers both).
 */
export type BeforeFanOut = (result: IntegrateResult, more: boolean) => void;

// What the realm's storage queue holds: uploads to commit together, or a
// step that runs alone (a rejection) in its place in the order.
type Job =
  | {
    kind: "upload";
    identity: ClientIdentity;
    changesets: readonly UploadChangeset[];
    signal: AbortSignal;
    beforeFanOut: BeforeFanOut;
    owner: object | undefined;
    done: PromiseWithResolvers<IntegrateResult>;
  }
  | {
    kind: "alone";
    run: () => Promise<unknown>;
    done: PromiseWithResolvers<unknown>;
  };

/** One realm's in-process state; see the file comment. */
export class RealmHub {
  /** The resolved realm path. */
  readonly path: string;
  #context: HubContext;
  #head: Head = EMPTY_HEAD;
  #members = new Set<HubMember>();
  #cache = new Map<number, HistoryItem>();
  #cacheBytes = 0;
  // readCached's last answer, while the cache and the head are unchanged.
  #lastCached: CachedRead = NO_CACHED_READ;
  // No cached version is below this one (while the cache is not empty).
  #cacheLow = 0;
  // What this process committed last, checked instead of read (history.ts).
  #committed: CommittedState = { head: null, identities: new Map() };
  // Storage steps waiting, in order, and whether they are being run.
  #jobs: Job[] = [];
  #running = false;
  #watch: ReadableStreamDefaultReader<Deno.KvEntryMaybe<unknown>[]> | null =
    null;
  #watchTask: Promise<void> | null = null;
  #closed = new AbortController();

  /**
   * @param path The resolved realm path.
   * @param context The server's KV, retry pacing and log.
   */
  constructor(path: string, context: HubContext) {
    this.path = path;
    this.#context = context;
  }

  /** The newest head this process has seen. */
  get head(): Head {
    return this.#head;
  }

  /** Number of sessions bound to the realm in this process. */
  get size(): number {
    return this.#members.size;
  }

  /** Adds a session; the first one starts the watch on the realm's head. */
  attach(member: HubMember): void {
    this.#members.add(member);
    if (this.#watchTask === null && this.#context.watchHeads) {
      this.#watchTask = this.#runWatch();
    }
  }

  /** Removes a session; returns whether the hub is now empty. */
  detach(member: HubMember): boolean {
    this.#members.delete(member);
    return this.#members.size === 0;
  }

  /** Whether sessions may bootstrap from a snapshot. */
  get snapshotsEnabled(): boolean {
    return this.#context.snapshots.enabled;
  }

  /**
   * The snapshot's version record as stored; when it lags the known head
   * by the configured lag, an advance is started in the background (nobody
   * waits for it).
   */
  async storedSnapshot(signal: AbortSignal): Promise<SnapshotInfo> {
    const snapshot = await this.#context.snapshots.stored(this.path, signal);
    this.#context.snapshots.noteHead(this.path, this.#head.version);
    return snapshot;
  }

  /** The snapshot's records, for a bootstrap. */
  listSnapshot(signal: AbortSignal): AsyncGenerator<SnapshotObject> {
    return listSnapshotObjects(this.#context.kv, this.path, {
      ...this.#context.retry,
      signal,
    });
  }

  /** Stops the watch and forgets the cache. */
  async close(): Promise<void> {
    this.#closed.abort();
    const watch = this.#watch;
    this.#watch = null;
    if (watch !== null) await watch.cancel().catch(() => {});
    await this.#watchTask;
    this.#cache.clear();
    this.#cacheBytes = 0;
    this.#lastCached = NO_CACHED_READ;
  }

  /** Records a head seen anywhere; wakes every session if it is newer. */
  noteHead(head: Head): void {
    this.#advanceHead(head, NO_MEMBERS);
  }

  // Notes a newer head and wakes every session but those in `later`;
  // false when the head was not newer (nobody is woken).
  #advanceHead(head: Head, later: ReadonlyMap<object, unknown>): boolean {
    if (head.version <= this.#head.version) return false;
    this.#head = head;
    for (const member of this.#members) {
      if (!later.has(member)) member.wake();
    }
    return true;
  }

  /** Reads the head from KV (strongly consistent) and notes it. */
  async refreshHead(): Promise<Head> {
    const head = await readHead(this.#context.kv, this.path, this.#retry());
    this.noteHead(head);
    return this.#head;
  }

  /**
   * Integrates an upload, calls `beforeFanOut` with the result once the
   * commit holding it is durable, then wakes every session.
   *
   * Uploads to one realm from this process are queued in arrival order:
   * while one commit is in flight, the uploads that arrive (from any
   * session) wait, and the next commit takes them all together
   * (`integrateGroup`, docs/ARCHITECTURE.md "Write flow on the server").
   * So they never conflict with each other, only with other processes.
   *
   * @param owner Groups the uploads of one session: `beforeFanOut` is told
   *   whether another of the owner's uploads settles later in the same
   *   commit.
   */
  integrate(
    identity: ClientIdentity,
    changesets: readonly UploadChangeset[],
    signal: AbortSignal,
    beforeFanOut: BeforeFanOut = () => {},
    owner?: object,
  ): Promise<IntegrateResult> {
    const done = Promise.withResolvers<IntegrateResult>();
    this.#jobs.push({
      kind: "upload",
      identity,
      changesets,
      signal,
      beforeFanOut,
      owner,
      done,
    });
    this.#drain();
    return done.promise;
  }

  /**
   * Settles one uploaded changeset as refused (see `recordRejection`), in
   * its place among this process's integrations of the realm, alone, so the
   * identity's client versions advance in upload order. Returns false when
   * that version was already settled.
   */
  reject(
    identity: ClientIdentity,
    clientVersion: number,
    refusal: Refusal,
    signal: AbortSignal,
  ): Promise<boolean> {
    const done = Promise.withResolvers<unknown>();
    this.#jobs.push({
      kind: "alone",
      run: () => {
        // The rejection rewrites the identity's record.
        this.#committed.identities.delete(identity.id);
        return recordRejection(
          this.#context.kv,
          this.path,
          identity,
          clientVersion,
          refusal,
          { ...this.#context.retry, signal },
        );
      },
      done,
    });
    this.#drain();
    return done.promise as Promise<boolean>;
  }

  // Runs the queue until it is empty: a step alone, or every upload queued
  // up to the next such step as one group.
  async #drain(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      while (this.#jobs.length > 0) {
        const first = this.#jobs[0]!;
        if (first.kind === "alone") {
          this.#jobs.shift();
          await first.run().then(first.done.resolve, first.done.reject);
          continue;
        }
        let count = 1;
        while (this.#jobs[count]?.kind === "upload") count++;
        const group = this.#jobs.splice(0, count) as Extract<
          Job,
          { kind: "upload" }
        >[];
        await this.#commitGroup(group);
      }
    } finally {
      this.#running = false;
    }
  }

  async #commitGroup(
    group: Extract<Job, { kind: "upload" }>[],
  ): Promise<void> {
    const signals = [...new Set(group.map((job) => job.signal))];
    // Linked for this commit only: each session's signal outlives many
    // shared commits, and must not collect one link per commit
    // (docs/PERFORMANCE.md).
    const link = signals.length === 1 ? null : linkAbort(signals);
    const signal = link?.signal ?? signals[0]!;
    const onSettled = (settled: GroupSettled) => {
      let count = 0;
      let written = 0;
      let head: Head | null = null;
      // Each owner's last upload settled here acknowledges for the others.
      const lastOf = new Map<object, number>();
      for (const { outcome, index } of settled) {
        const owner = group[index]!.owner;
        if (outcome.ok && owner !== undefined) lastOf.set(owner, index);
      }
      for (const { outcome } of settled) {
        if (!outcome.ok) continue;
        const result = outcome.result;
        for (const item of result.integrated) {
          this.#remember(item);
          written += item.size;
        }
        count += result.integrated.length;
        if (head === null || result.head.version > head.version) {
          head = result.head;
        }
      }
      // Sessions that uploaded none of these may send them now, before the
      // acknowledgements: forwarding to readers does not wait for the
      // writers' DOWNLOADs (docs/ARCHITECTURE.md "Write flow on the
      // server"). The uploaders (lastOf's keys) are woken only after their
      // acknowledgement.
      const advanced = head !== null && this.#advanceHead(head, lastOf);
      for (let at = 0; at < settled.length; at++) {
        const { outcome, index } = settled[at]!;
        if (!outcome.ok) continue;
        const result = outcome.result;
        const job = group[index]!;
        const more = job.owner !== undefined &&
          lastOf.get(job.owner) !== index;
        // The uploader acknowledges before its own session is woken, so no
        // DOWNLOAD moves past the new versions with a stale ack.
        try {
          job.beforeFanOut(result, more);
        } catch (error) {
          job.done.reject(error);
        }
      }
      if (count > 0) this.#context.onIntegrated(count);
      if (advanced) {
        for (const member of this.#members) {
          if (lastOf.has(member)) member.wake();
        }
      }
      if (head !== null) {
        this.#context.snapshots.noteHead(this.path, head.version, written);
      }
      for (const { outcome, index } of settled) {
        const { done } = group[index]!;
        if (outcome.ok) done.resolve(outcome.result);
        else done.reject(outcome.error);
      }
    };
    try {
      await integrateGroup(
        this.#context.kv,
        this.path,
        group,
        { ...this.#context.retry, signal },
        this.#committed,
        onSettled,
      );
    } catch (error) {
      // Only a bug lands here; no upload of the group may wait for good.
      for (const job of group) job.done.reject(error);
    } finally {
      link?.dispose();
    }
  }

  /** The refusal recorded for one of `identity`'s client versions, or null. */
  readRejection(
    identity: ClientIdentity,
    clientVersion: number,
    signal: AbortSignal,
  ): Promise<Refusal | null> {
    return readRejection(
      this.#context.kv,
      this.path,
      identity.id,
      clientVersion,
      { ...this.#context.retry, signal },
    );
  }

  /** The server's current records of `keys` (see `realm_state.ts`). */
  currentRecords(
    keys: readonly ObjectKey[],
    signal: AbortSignal,
  ): Promise<RealmState> {
    return readObjectRecords(this.#context.kv, this.path, keys, {
      ...this.#context.retry,
      signal,
    });
  }

  /**
   * Reads consecutive history from `fromVersion`, up to the known head and
   * at most `maxBytes` (see `readHistory`): from memory when the versions
   * are recent, else from KV.
   */
  async read(
    fromVersion: number,
    maxBytes: number,
    signal: AbortSignal,
  ): Promise<HistoryRead> {
    const cached = this.readCached(fromVersion, maxBytes);
    if (cached.length > 0) return { items: cached, gap: false };
    const read = await readHistory(
      this.#context.kv,
      this.path,
      fromVersion,
      this.#head.version,
      maxBytes,
      { ...this.#context.retry, signal },
    );
    for (const item of read.items) this.#remember(item);
    return read;
  }

  /**
   * The consecutive history from `fromVersion` that memory holds, up to the
   * known head and at most `maxBytes` (at least one item when there is
   * one): what {@linkcode read} returns without a storage read, and empty
   * when the first version is not in memory.
   */
  readCached(fromVersion: number, maxBytes: number): readonly HistoryItem[] {
    // Every session of a fan-out at the same cursor asks the same question
    // in the same turn: they share one answer.
    const last = this.#lastCached;
    if (
      last.from === fromVersion && last.maxBytes === maxBytes &&
      last.head === this.#head.version
    ) {
      return last.items;
    }
    const cached: HistoryItem[] = [];
    let bytes = 0;
    for (let version = fromVersion; version <= this.#head.version; version++) {
      const item = this.#cache.get(version);
      if (item === undefined) break;
      const cost = item.size + ITEM_OVERHEAD_BYTES;
      if (cached.length > 0 && bytes + cost > maxBytes) break;
      cached.push(item);
      bytes += cost;
    }
    Object.freeze(cached);
    this.#lastCached = {
      from: fromVersion,
      maxBytes,
      head: this.#head.version,
      items: cached,
    };
    return cached;
  }

  #retry(): RetryOptions {
    return this.#context.retry;
  }

  #remember(item: HistoryItem): void {
    // Kept by bytes, not by distance from the head: a reader far behind a
    // burst of writes still reads from memory while the burst fits. When
    // full, the lowest versions go first (the head is what every bound
    // session is about to send), and an item below all of them is not kept.
    if (this.#cache.has(item.version)) return;
    // What memory holds changes (below, or not at all when not kept).
    this.#lastCached = NO_CACHED_READ;
    if (this.#cache.size === 0 || item.version < this.#cacheLow) {
      if (
        this.#cache.size > 0 && this.#cacheBytes + item.size > CACHE_BYTES
      ) {
        return;
      }
      this.#cacheLow = item.version;
    }
    this.#cache.set(item.version, item);
    this.#cacheBytes += item.size;
    while (this.#cacheBytes > CACHE_BYTES && this.#cache.size > 1) {
      const old = this.#cache.get(this.#cacheLow);
      if (old !== undefined) {
        this.#cache.delete(this.#cacheLow);
        this.#cacheBytes -= old.size;
      }
      this.#cacheLow++;
    }
  }

  async #runWatch(): Promise<void> {
    // The hub's own signal, not one linked to the server's lifetime with
    // AbortSignal.any: a linked signal that anything listens to stays
    // reachable from the lifetime for as long as the server runs
    // (docs/PERFORMANCE.md). The lifetime is checked between steps; at shutdown the registry closes
    // every hub, which aborts this one.
    const closed = this.#closed.signal;
    const lifetime = this.#context.retry.signal;
    const stopped = () => closed.aborted || lifetime.aborted;
    for (let attempt = 1; !stopped(); attempt++) {
      try {
        const reader = this.#context.kv.watch([headKey(this.path)])
          .getReader();
        this.#watch = reader;
        if (stopped()) {
          await reader.cancel();
          return;
        }
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          attempt = 1;
          const head = value[0]?.value as Head | null | undefined;
          if (head) this.noteHead(head);
        }
      } catch (error) {
        if (stopped()) return;
        this.#context.log(
          "warn",
          "watch_failed",
          "Watching the realm head failed; retrying",
          { path: this.path, error },
        );
      }
      if (stopped()) return;
      try {
        await delay(backoffDelayMs(attempt), closed);
      } catch {
        return;
      }
    }
  }
}
