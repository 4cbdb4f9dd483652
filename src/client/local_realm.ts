// This module is browser compatible.

// The engine under `Realm`: one realm's objects, clock, pending changesets
// and cursors over its storage, with the change records `changes()` and
// live queries are fed from.

import type { Instruction, UploadChangeset } from "../model/changeset.ts";
import { type Hlc, HLC_MAX_NODE, HlcClock } from "../model/hlc.ts";
import type {
  ObjectChange as ModelChange,
  ObjectRecord,
} from "../model/merge.ts";
import { ObjectStore } from "../model/object_store.ts";
import { cloneValue, defineField, type Fields } from "../model/value.ts";
import { encodeUploadChangeset } from "../protocol/encode.ts";
import type {
  ClientIdentity,
  DownloadMessage,
  RejectMessage,
} from "../protocol/messages.ts";
import { GroupCommit } from "./group_commit.ts";
import {
  type PendingChangeset,
  PendingChangesets,
} from "./pending_changesets.ts";
import { QueryEngine } from "./query_engine.ts";
import {
  absentRecord,
  buildReset,
  rebuildRejected,
  type ResetPlan,
  type ResetResult,
  visibleChange,
} from "./realm_rebuild.ts";
import { checkEncodable } from "./write_check.ts";
import { type Transaction, TransactionWrites } from "./transaction.ts";
import type {
  RealmMeta,
  RealmStorage,
  StorageBatch,
} from "./storage/storage.ts";

// The pending-changeset type moved to pending_changesets.ts; importers of
// this file keep finding it here.
export type { PendingChangeset } from "./pending_changesets.ts";

// The write cap and check moved to write_check.ts; importers of this file
// keep finding the cap here.
export { MAX_WRITE_BYTES } from "./write_check.ts";

/**
 * The visible effect of a committed transaction on one object.
 *
 * @example Reading a change
 * ```ts
 * import type { ObjectChange } from "@tether/sync";
 *
 * function describe(change: ObjectChange): string {
 *   switch (change.op) {
 *     case "put": return `${change.type} ${change.id} is now ${JSON.stringify(change.fields)}`;
 *     case "update": return `${change.type} ${change.id} changed ${Object.keys(change.fields ?? {})}`;
 *     case "delete": return `${change.type} ${change.id} is gone`;
 *   }
 * }
 * console.log(describe({ type: "Task", id: "t1", op: "delete" }));
 * ```
 */
export interface ObjectChange {
  /** The object's type name. */
  type: string;
  /** The object's id. */
  id: string;
  /**
   * `"put"` when the object appeared or was replaced (`fields` holds all of
   * it), `"update"` when some fields changed (`fields` holds those),
   * `"delete"` when it disappeared (no `fields`).
   */
  op: "put" | "update" | "delete";
  /** See `op`. */
  fields?: Fields;
}

/**
 * A committed transaction's effect, as `Realm.changes()` delivers it.
 *
 * @example Following remote changes only
 * ```ts
 * import type { RealmChange } from "@tether/sync";
 *
 * function onChange(change: RealmChange): void {
 *   if (change.origin === "remote") console.log(`${change.changes.length} objects changed elsewhere`);
 * }
 * onChange({ origin: "remote", changes: [] });
 * ```
 */
export interface RealmChange {
  /** `"local"` for this realm's own writes, `"remote"` for downloaded ones. */
  origin: "local" | "remote";
  /** One entry per object whose visible state changed. */
  changes: ObjectChange[];
}

/** What one committed write produced. */
export interface CommitResult {
  /** The changeset's client version, or 0 for a write with no changes. */
  clientVersion: number;
  /** Its encoded size in bytes (0 for none). */
  bytes: number;
}

/** What integrating one DOWNLOAD did. */
export interface IntegrateResult {
  /** The highest client version now acknowledged. */
  acknowledged: number;
}

/** What applying one DOWNLOAD in memory left to commit and report. */
interface AppliedDownload {
  /** The meta record once committed. */
  meta: RealmMeta;
  /** The highest client version acknowledged once committed. */
  acknowledged: number;
  /** The visible changes of each changeset that made any, in order. */
  perChangeset: ModelChange[][];
  /** What to commit, or null when nothing changed. */
  batch: StorageBatch | null;
}

const NO_CHANGESETS: readonly UploadChangeset[] = Object.freeze([]);

/** `records` without repeats, in first-seen order (a copy only if needed). */
function distinct(records: ObjectRecord[]): ObjectRecord[] {
  if (records.length < 2) return records;
  if (records.length === 2) {
    return records[0] === records[1] ? [records[0]!] : records;
  }
  return [...new Set(records)];
}

/** Hears about commits, in commit order. */
export interface LocalRealmListener {
  /** A local write was committed. */
  onLocalCommit?(pending: PendingChangeset): void;
  /** A committed transaction (local or remote) changed objects. */
  onChange?(change: RealmChange): void;
}

/** A download cursor with its salt (docs/PROTOCOL.md §4.11). */
export interface SaltedCursor {
  downloadCursor: number;
  /** Absent when unknown. */
  downloadCursorSalt?: number;
}

/**
 * Moves `cursor` to a DOWNLOAD's server version with its salt. A DOWNLOAD
 * never moves it back; one at the same version (an acknowledgement) keeps
 * the salt unless it brings one. A version 1 DOWNLOAD has no salt: the
 * cursor's salt is then unknown, which the server does not check.
 */
export function moveCursor(
  cursor: SaltedCursor,
  message: { serverVersion: number; serverVersionSalt?: number | undefined },
): void {
  if (message.serverVersion < cursor.downloadCursor) return;
  const salt = message.serverVersionSalt ?? 0;
  if (message.serverVersion > cursor.downloadCursor) {
    cursor.downloadCursor = message.serverVersion;
    if (salt === 0) delete cursor.downloadCursorSalt;
  }
  if (salt !== 0) cursor.downloadCursorSalt = salt;
}

function randomNodeId(): number {
  const words = new Uint32Array(2);
  for (let attempt = 0; attempt < 100; attempt++) {
    crypto.getRandomValues(words);
    const node = (words[0]! & 0xffff) * 2 ** 32 + words[1]!;
    if (node >= 1 && node <= HLC_MAX_NODE) return node;
  }
  throw new Error("Cannot choose a node id: the random source returns zeros");
}

function cloneFields(fields: Fields): Fields {
  const copy: Fields = {};
  for (const name of Object.keys(fields)) {
    defineField(copy, name, cloneValue(fields[name]!));
  }
  return copy;
}

function cloneChange(change: ModelChange): ObjectChange {
  return change.fields === undefined
    ? { type: change.type, id: change.id, op: change.op }
    : {
      type: change.type,
      id: change.id,
      op: change.op,
      fields: cloneFields(change.fields),
    };
}

/**
 * The data side of one open realm: objects, the HLC clock, pending local
 * changesets and cursors, kept in a {@linkcode RealmStorage}. Every
 * mutation (a local write, an integrated DOWNLOAD, a new identity) runs in
 * one queue, so commits happen in call order.
 */
export class LocalRealm {
  #storage: RealmStorage;
  #store = new ObjectStore();
  #clock: HlcClock;
  #meta: RealmMeta;
  /** Local changesets awaiting acknowledgement (pending_changesets.ts). */
  #pending = new PendingChangesets();
  #queue: Promise<unknown> = Promise.resolve();
  /** Tasks in `#queue` not yet finished (`integrateNow` runs only at 0). */
  #queued = 0;
  #listeners = new Set<LocalRealmListener>();
  /** `#listeners` as an array, until the set changes (`#emit`). */
  #listenerList: LocalRealmListener[] | null = null;
  /**
   * Listeners with `onChange`: while there are none, commits neither
   * group nor copy the changes they made.
   */
  #changeListeners = 0;
  #closed = false;
  /** Local writes committed together (group_commit.ts). */
  #commits: GroupCommit;
  /**
   * Indexes, queries and live queries (src/client/query_engine.ts); every
   * commit hands it the objects it changed.
   */
  readonly queries: QueryEngine = new QueryEngine({
    get: (type, id) => this.#store.get(type, id),
    objects: (type) => this.#store.objects(type),
    fieldValue: (type, id, name) => this.#store.fieldValue(type, id, name),
    current: (type, id, fields) => this.#store.isVisible(type, id, fields),
  });

  /** Use {@linkcode LocalRealm.open}. */
  constructor(
    storage: RealmStorage,
    meta: RealmMeta,
    now: () => number,
  ) {
    this.#storage = storage;
    this.#commits = new GroupCommit(storage);
    this.#meta = meta;
    this.#clock = new HlcClock(meta.nodeId, now);
  }

  /**
   * Opens a realm on `storage`, creating its meta record (a fresh node id)
   * when the storage is new.
   *
   * @param storage Where the data lives.
   * @param now Wall-clock milliseconds for HLC stamps.
   */
  static async open(
    storage: RealmStorage,
    now: () => number,
  ): Promise<LocalRealm> {
    const stored = await storage.load();
    let meta = stored.meta;
    if (meta === null) {
      meta = {
        nodeId: randomNodeId(),
        clientIdentity: null,
        downloadCursor: 0,
        lastClientVersion: 0,
        acknowledgedClientVersion: 0,
      };
      await storage.commit({ meta, records: [], append: [] });
    }
    const realm = new LocalRealm(storage, meta, now);
    for (const record of stored.records) realm.#restore(record);
    for (const changeset of stored.pending) {
      if (changeset.clientVersion <= meta.acknowledgedClientVersion) continue;
      realm.#clock.observe(changeset.stamp);
      realm.#pending.push({
        changeset,
        bytes: encodeUploadChangeset(changeset).byteLength,
      });
    }
    return realm;
  }

  #restore(record: ObjectRecord): void {
    if (record.putStamp !== null) this.#clock.observe(record.putStamp);
    if (record.deleteStamp !== null) this.#clock.observe(record.deleteStamp);
    for (const entry of record.fields.values()) {
      this.#clock.observe(entry.stamp);
    }
    // The record is the merged state itself: no need to replay it.
    this.#store.restore(record);
  }

  /** The meta record as of the last commit (a copy). */
  get meta(): RealmMeta {
    return { ...this.#meta };
  }

  /**
   * The upload cursor to send at BIND: the last client version the server
   * acknowledged under the current identity, which is 0 after a client
   * reset until the first acknowledgement under the new identity (the
   * server would take a higher cursor for a store restored from a backup).
   */
  get uploadCursor(): number {
    const acknowledged = this.#meta.acknowledgedClientVersion;
    const base = this.#meta.resetClientVersion ?? 0;
    return acknowledged > base ? acknowledged : 0;
  }

  /** Every object record, live or dead (for a client reset). */
  records(): Iterable<ObjectRecord> {
    return this.#store.records();
  }

  /**
   * Local changesets not yet acknowledged, in client-version order (a
   * copy: for the hot path use {@linkcode pendingAfter}).
   */
  get pending(): readonly PendingChangeset[] {
    return this.#pending.toArray();
  }

  /**
   * The pending changesets whose client version is above `clientVersion`,
   * in order, found by binary search: what an upload sends next costs what
   * it sends, not what is still waiting for acknowledgement.
   */
  pendingAfter(clientVersion: number): Generator<PendingChangeset> {
    return this.#pending.after(clientVersion);
  }

  /** Whether {@linkcode close} was called. */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Number of live objects. */
  get size(): number {
    return this.#store.size;
  }

  /** Resolves once every mutation queued before the call has finished. */
  barrier(): Promise<void> {
    return this.#queue.then(() => this.#commits.drain());
  }

  /** Number of listeners with `onChange` (what tests count). */
  get changeListeners(): number {
    return this.#changeListeners;
  }

  /** Adds a listener; returns a function that removes it. */
  listen(listener: LocalRealmListener): () => void {
    // A copy, so that the count stays right if the caller's object changes.
    const entry: LocalRealmListener = {};
    if (listener.onLocalCommit !== undefined) {
      entry.onLocalCommit = listener.onLocalCommit.bind(listener);
    }
    if (listener.onChange !== undefined) {
      entry.onChange = listener.onChange.bind(listener);
      this.#changeListeners++;
    }
    this.#listeners.add(entry);
    this.#listenerList = null;
    return () => {
      if (!this.#listeners.delete(entry)) return;
      this.#listenerList = null;
      if (entry.onChange !== undefined) this.#changeListeners--;
    };
  }

  /** Whether the object exists now. */
  exists(type: string, id: string): boolean {
    return this.#store.get(type, id) !== undefined;
  }

  /** A copy of an object's fields, or undefined. */
  get(type: string, id: string): Fields | undefined {
    const fields = this.#store.get(type, id);
    return fields === undefined ? undefined : cloneFields(fields);
  }

  /** Copies of the live objects of one type. */
  objects(type: string): { id: string; fields: Fields }[] {
    const result: { id: string; fields: Fields }[] = [];
    for (const { id, fields } of this.#store.objects(type)) {
      result.push({ id, fields: cloneFields(fields) });
    }
    return result;
  }

  /**
   * Runs `fn` with a transaction once every earlier mutation has committed,
   * then commits its writes as one changeset.
   *
   * @throws {TypeError} From the transaction, or for a value the protocol
   *   cannot carry.
   * @throws {RangeError} When the changeset exceeds {@linkcode MAX_WRITE_BYTES}
   *   or a protocol limit (string length, nesting depth…).
   * @throws The error of an earlier storage commit that failed (nothing
   *   commits after one), before the write is applied.
   */
  write(
    fn: (tx: Transaction) => void | Promise<void>,
  ): Promise<CommitResult> {
    // The queue holds the next write only until this one is applied in
    // memory, not until it is durable, so queued writes share a commit.
    let durable: Promise<CommitResult> | undefined;
    const applied = this.#enqueue(async () => {
      const writes = new TransactionWrites((type, id) => this.exists(type, id));
      try {
        await fn(writes.transaction);
      } catch (error) {
        // Ends the transaction even when fn threw: a tx kept past the
        // callback must not write into a later one.
        writes.finish();
        throw error;
      }
      const instructions = writes.finish();
      this.#checkOpen("write");
      // After a failed storage commit nothing more commits: refuse the
      // write before it changes what queries and live queries show.
      const failure = this.#commits.failure;
      if (failure !== null) throw failure.error;
      if (instructions.length === 0) {
        await this.#commits.drain();
        return { clientVersion: 0, bytes: 0 };
      }
      durable = this.#commitLocal(instructions);
      return null;
    });
    return applied.then((result) => result ?? durable!);
  }

  #commitLocal(instructions: Instruction[]): Promise<CommitResult> {
    const changeset: UploadChangeset = {
      clientVersion: this.#meta.lastClientVersion + 1,
      baseServerVersion: this.#meta.downloadCursor,
      stamp: this.#clock.next(),
      instructions,
    };
    const bytes = checkEncodable(changeset);
    const changes = this.#store.apply(changeset.stamp, instructions);
    // A transaction folds its writes into one instruction per object.
    this.queries.applied(changes, true);
    const meta = { ...this.#meta, lastClientVersion: changeset.clientVersion };
    this.#meta = meta;
    const pending = { changeset, bytes };
    // Committed with the writes queued behind it; listeners (the session's
    // upload) hear of it only once it is durable.
    const durable = this.#commits.stage(
      this.#touched(instructions),
      changeset,
      meta,
      () => {
        this.#pending.push(pending);
        for (const listener of this.#listeners) {
          listener.onLocalCommit?.(pending);
        }
        this.#emit("local", changes);
      },
    );
    return durable.then(() => ({
      clientVersion: changeset.clientVersion,
      bytes,
    }));
  }

  /**
   * Integrates one DOWNLOAD: applies its changesets, advances the download
   * cursor and records the upload acknowledgement it carries.
   */
  integrate(message: DownloadMessage): Promise<IntegrateResult> {
    return this.#enqueue(async () => {
      this.#checkOpen("integrate");
      // Local writes commit first, so commits stay in call order.
      await this.#commits.drain();
      const applied = this.#applyDownload(message);
      if (applied.batch !== null) await this.#storage.commit(applied.batch);
      return { acknowledged: this.#downloadCommitted(applied) };
    });
  }

  /**
   * {@linkcode integrate} done before it returns, when nothing is ahead of
   * it (no mutation queued, no local write committing) and the storage
   * commits synchronously (`commitNow`): the highest client version now
   * acknowledged. Undefined when it cannot run now; nothing happened then,
   * and `integrate` does it in turn. Throws what `integrate` would reject
   * with.
   */
  integrateNow(message: DownloadMessage): number | undefined {
    const storage = this.#storage;
    if (
      this.#closed || this.#queued > 0 || !this.#commits.idle ||
      storage.commitNow === undefined
    ) {
      return undefined;
    }
    const applied = this.#applyDownload(message);
    if (applied.batch !== null) storage.commitNow(applied.batch);
    return this.#downloadCommitted(applied);
  }

  /**
   * Applies a DOWNLOAD's changesets in memory and says what to commit: the
   * first half of integrating it, shared by both paths.
   */
  #applyDownload(message: DownloadMessage): AppliedDownload {
    // One entry per changeset that changed something visible: `changes()`
    // reports each remote transaction on its own, however many one
    // DOWNLOAD carries (docs/CLIENT.md "Writing and reading").
    const { touched, perChangeset } = this.#store.applyChangesets(
      message.changesets,
      this.#observe,
    );
    // The records to store, one per object: as many as instructions means
    // no object changed twice (live queries trust that).
    const records = distinct(touched);
    const once = records.length === touched.length;
    if (perChangeset.length === 1) this.queries.applied(perChangeset[0]!, once);
    else if (perChangeset.length > 1) {
      this.queries.applied(perChangeset.flat(), once);
    }
    const before = this.#meta;
    const acknowledged = Math.max(
      before.acknowledgedClientVersion,
      Math.min(message.lastIntegratedClientVersion, before.lastClientVersion),
    );
    const meta: RealmMeta = {
      ...before,
      acknowledgedClientVersion: acknowledged,
    };
    moveCursor(meta, message);
    const changed = touched.length > 0 ||
      meta.downloadCursor !== before.downloadCursor ||
      meta.downloadCursorSalt !== before.downloadCursorSalt ||
      acknowledged !== before.acknowledgedClientVersion;
    return {
      meta,
      acknowledged,
      perChangeset,
      batch: changed ? { meta, records, append: NO_CHANGESETS } : null,
    };
  }

  /** The second half: the commit is done; report it. */
  #downloadCommitted(applied: AppliedDownload): number {
    if (applied.batch !== null) this.#meta = applied.meta;
    this.#pending.drop(applied.acknowledged);
    if (this.#changeListeners > 0) {
      for (const changes of applied.perChangeset) {
        this.#emit("remote", changes);
      }
    }
    return applied.acknowledged;
  }

  /**
   * Settles a changeset the server refused (REJECT): rebuilds every object
   * it touched from the server's `revert` with the later pending changesets
   * on top, commits those records and the acknowledgement of its client
   * version in one storage commit, and reports the visible difference as
   * one remote change. Returns false when that changeset was already
   * settled (nothing to do).
   */
  reject(message: RejectMessage): Promise<boolean> {
    return this.#enqueue(async () => {
      this.#checkOpen("reject");
      // Local writes commit first, so commits stay in call order.
      await this.#commits.drain();
      const pendingNow = this.#pending.toArray();
      const index = pendingNow.findIndex((p) =>
        p.changeset.clientVersion === message.clientVersion
      );
      if (index < 0) return false;
      const rejected = pendingNow[index]!.changeset;
      for (const changeset of message.revert) {
        this.#observe(changeset.stamp, changeset.instructions);
      }
      const later = pendingNow.slice(index + 1).map((p) => p.changeset);
      const rebuilt = rebuildRejected(
        rejected.instructions,
        message.revert,
        later,
      );
      const changes: ModelChange[] = [];
      for (const record of rebuilt) {
        const change = visibleChange(
          this.#store.record(record.type, record.id),
          record,
        );
        if (change !== null) changes.push(change);
      }
      const meta = {
        ...this.#meta,
        acknowledgedClientVersion: Math.max(
          this.#meta.acknowledgedClientVersion,
          message.clientVersion,
        ),
      };
      await this.#storage.commit({ meta, records: rebuilt, append: [] });
      this.#meta = meta;
      for (const record of rebuilt) this.#store.restore(record);
      this.queries.applied(changes);
      this.#pending.drop(message.clientVersion);
      this.#emit("remote", changes);
      return true;
    });
  }

  /**
   * A client reset: replaces every object with the staged server state
   * (plus the pending changesets for `recover` and `recoverAll`, plus what
   * `recoverAll` synthesizes), takes the new identity and download cursor,
   * all in one storage commit, and reports the visible difference as one
   * remote change. Client versions go on upward, so receipts keep their
   * numbers; discarded changesets count as acknowledged (they are settled).
   */
  reset(plan: ResetPlan): Promise<ResetResult> {
    return this.#enqueue(async () => {
      this.#checkOpen("reset");
      // Local writes commit first, so commits stay in call order.
      await this.#commits.drain();
      for (const record of plan.staged.records()) {
        if (record.putStamp !== null) this.#clock.observe(record.putStamp);
        if (record.deleteStamp !== null) {
          this.#clock.observe(record.deleteStamp);
        }
        for (const entry of record.fields.values()) {
          this.#clock.observe(entry.stamp);
        }
      }
      const keep = plan.mode !== "discard";
      const pending = this.pending.map((p) => p.changeset);
      const build = buildReset(
        plan.staged,
        this.#store.records(),
        keep ? pending : [],
        plan.mode === "recoverAll",
        this.#meta.lastClientVersion + 1,
        plan.downloadCursor,
      );
      const records: ObjectRecord[] = [];
      const changes: ModelChange[] = [];
      const seen = new Set<ObjectRecord>();
      for (const record of build.store.records()) {
        seen.add(this.#store.record(record.type, record.id) ?? record);
        const change = visibleChange(
          this.#store.record(record.type, record.id),
          record,
        );
        if (change !== null) changes.push(change);
        records.push(record);
      }
      // Objects the server does not hold become records of absence.
      for (const record of this.#store.records()) {
        if (seen.has(record)) continue;
        const empty = absentRecord(record.type, record.id);
        const change = visibleChange(record, empty);
        if (change !== null) changes.push(change);
        records.push(empty);
      }
      const last = build.synthesized.length > 0
        ? build.synthesized[build.synthesized.length - 1]!.clientVersion
        : this.#meta.lastClientVersion;
      const acknowledged = keep
        ? this.#meta.acknowledgedClientVersion
        : this.#meta.lastClientVersion;
      const meta: RealmMeta = {
        ...this.#meta,
        clientIdentity: { ...plan.identity },
        downloadCursor: plan.downloadCursor,
        lastClientVersion: last,
        acknowledgedClientVersion: acknowledged,
        resetClientVersion: acknowledged,
      };
      // The old cursor's salt belongs to the history that was left.
      delete meta.downloadCursorSalt;
      if (plan.downloadCursorSalt !== 0) {
        meta.downloadCursorSalt = plan.downloadCursorSalt;
      }
      await this.#storage.commit({
        meta,
        records,
        append: build.synthesized,
      });
      this.#meta = meta;
      for (const record of records) this.#store.restore(record);
      this.queries.applied(changes);
      const discarded = keep ? [] : pending.map((c) => c.clientVersion);
      if (!keep) {
        this.#pending.clear();
      }
      for (const changeset of build.synthesized) {
        const entry = {
          changeset,
          bytes: encodeUploadChangeset(changeset).byteLength,
        };
        this.#pending.push(entry);
        for (const listener of [...this.#listeners]) {
          listener.onLocalCommit?.(entry);
        }
      }
      this.#emit("remote", changes);
      return {
        recovered: keep ? pending.map((c) => c.clientVersion) : [],
        discarded,
        synthesized: build.synthesized.map((c) => c.clientVersion),
        acknowledged,
      };
    });
  }

  /** Stores the identity the server issued for this realm. */
  setIdentity(identity: ClientIdentity): Promise<void> {
    return this.#enqueue(async () => {
      this.#checkOpen("set identity");
      await this.#commits.drain();
      const meta = { ...this.#meta, clientIdentity: { ...identity } };
      await this.#storage.commit({ meta, records: [], append: [] });
      this.#meta = meta;
    });
  }

  /**
   * Waits for queued mutations, then releases the storage. Later mutations
   * reject with a `TypeError`.
   */
  close(): Promise<void> {
    if (this.#closed) return this.#queue.then(() => {});
    this.#closed = true;
    this.#listeners.clear();
    this.#listenerList = null;
    this.#changeListeners = 0;
    const done = this.#queue.then(() => this.#commits.drain().catch(() => {}))
      .then(
        () => this.#storage.close(),
      );
    this.#queue = done.catch(() => {});
    return done;
  }

  // A field, not a method: each DOWNLOAD passes it on without a closure.
  #observe = (stamp: Hlc, instructions: readonly Instruction[]): void => {
    this.#clock.observe(stamp);
    for (const instruction of instructions) {
      if (instruction.stamp !== null) this.#clock.observe(instruction.stamp);
    }
  };

  #touched(instructions: readonly Instruction[]): ObjectRecord[] {
    const records = new Set<ObjectRecord>();
    for (const { type, id } of instructions) {
      const record = this.#store.record(type, id);
      if (record !== undefined) records.add(record);
    }
    return [...records];
  }

  #emit(origin: "local" | "remote", changes: ModelChange[]): void {
    if (changes.length === 0 || this.#changeListeners === 0) return;
    const event: RealmChange = { origin, changes: changes.map(cloneChange) };
    // A snapshot, so that a listener added meanwhile does not hear of a
    // change made before it; kept until the set changes, not made per emit.
    this.#listenerList ??= [...this.#listeners];
    for (const listener of this.#listenerList) listener.onChange?.(event);
  }

  #enqueue<T>(task: () => Promise<T>): Promise<T> {
    if (this.#closed) {
      return Promise.reject(
        new TypeError("Cannot change the realm: it is closed"),
      );
    }
    this.#queued++;
    const result = this.#queue.then(task);
    this.#queue = result.then(this.#dequeued, this.#dequeued);
    return result;
  }

  // One function for every task rather than a closure each.
  #dequeued = (): void => {
    this.#queued--;
  };

  #checkOpen(what: string): void {
    if (this.#closed) {
      throw new TypeError(`Cannot ${what}: the realm is closed`);
    }
  }
}
