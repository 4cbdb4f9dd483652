// This module is browser compatible (it reaches Deno only through globalThis).

/**
 * A {@linkcode RealmStorage} on Deno KV: one realm of one user under its own
 * key prefix, written as a log of packed commits published by the meta
 * record, so every commit is all-or-nothing after a crash whatever its size.
 */

import { ClosableQueue } from "../../util/closable_queue.ts";
import type { UploadChangeset } from "../../model/changeset.ts";
import type { ObjectRecord } from "../../model/merge.ts";
import {
  invalidStore,
  metaFromStored,
  metaToStored,
  type StoredMeta,
} from "./codec.ts";
import {
  acquireKvStore,
  type KvClaim,
  type KvKey,
  type KvLike,
  type KvStoreHandle,
} from "./kv_store.ts";
import { decodeSegment, encodeSegment } from "./segment.ts";
import { utf8Length } from "../../util/utf8_length.ts";
import type {
  RealmMeta,
  RealmStorage,
  StorageBatch,
  StoredRealm,
} from "./storage.ts";

/** Largest value part, under Deno KV's 64 KiB value limit. */
const PART_BYTES = 60_000;
/** Deno KV 2.9.6 allows 1000 mutations per atomic operation. */
const MAX_MUTATIONS = 1000;
/** Deno KV 2.9.6 allows 819,200 bytes (keys + values) per operation. */
const MAX_OPERATION_BYTES = 780_000;
/** Deno KV 2.9.6 allows 81,920 bytes of keys per operation. */
const MAX_OPERATION_KEY_BYTES = 78_000;
/** The longest user id + realm path a prefix may hold (keys ≤ 2 KiB). */
const MAX_PREFIX_BYTES = 1024;
/**
 * Log entries after which a snapshot is taken once the log holds an eighth
 * of the snapshot's bytes: rewriting a large realm for a few small commits
 * would cost more than listing them at the next load.
 */
const LOG_ENTRIES = 256;
/** Log entries after which a snapshot is taken anyway (~75 µs each to list). */
const MAX_LOG_ENTRIES = 4096;
/** Log bytes that trigger a snapshot when they exceed the snapshot's. */
const MIN_LOG_BYTES_TO_COMPACT = 1 << 20;

/** Where one realm lives inside a store file. */
export interface KvRealmLocation {
  /** The id of the user who opens the realm. */
  userId: string;
  /** The realm's resolved path (no `~`). */
  path: string;
}

/**
 * The key prefix of one realm in a store file:
 * `["tether", "v1", "realm", userId, path]`.
 */
export function kvRealmPrefix(location: KvRealmLocation): KvKey {
  return ["tether", "v1", "realm", location.userId, location.path];
}

/**
 * The name under which one realm of one user is claimed in its store (one
 * local writer per realm in a process): by its storage, and by a logout
 * that deletes it.
 */
export function kvRealmClaim(location: KvRealmLocation): string {
  return `realm ${JSON.stringify(location.path)} of user ${
    JSON.stringify(location.userId)
  }`;
}

/** What the storage gives back when it closes. */
interface StorageOwner {
  closing(done: Promise<void>): void;
  release(): Promise<void>;
}

/** Where the realm's data is, as the meta record publishes it. */
interface Layout {
  /** The snapshot's generation id, or null before the first snapshot. */
  snapshot: string | null;
  /** The snapshot's parts and bytes. */
  snapshotParts: number;
  snapshotBytes: number;
  /** Published log entries are `[logStart, logEnd)`. */
  logStart: number;
  logEnd: number;
  /** Bytes in the published log entries. */
  logBytes: number;
}

interface StoredMetaValue extends StoredMeta, Layout {}

const EMPTY_LAYOUT: Layout = {
  snapshot: null,
  snapshotParts: 0,
  snapshotBytes: 0,
  logStart: 0,
  logEnd: 0,
  logBytes: 0,
};

interface Op {
  key: KvKey;
  /** The value to set, or undefined to delete. */
  value: unknown;
  keyBytes: number;
  bytes: number;
}

function keyBytes(key: KvKey): number {
  let total = 0;
  for (const part of key) {
    total += typeof part === "string" ? utf8Length(part) + 3 : 10;
  }
  return total;
}

function makeOp(key: KvKey, value: unknown): Op {
  const keySize = keyBytes(key);
  const valueSize = value === undefined
    ? 0
    : value instanceof Uint8Array
    ? value.length + 8
    : 256;
  return { key, value, keyBytes: keySize, bytes: keySize + valueSize };
}

/** Splits ops into groups that each fit one atomic operation. */
function groups(ops: readonly Op[]): Op[][] {
  const result: Op[][] = [];
  let current: Op[] = [];
  let bytes = 0;
  let keys = 0;
  for (const op of ops) {
    if (
      current.length > 0 &&
      (current.length + 1 > MAX_MUTATIONS ||
        bytes + op.bytes > MAX_OPERATION_BYTES ||
        keys + op.keyBytes > MAX_OPERATION_KEY_BYTES)
    ) {
      result.push(current);
      current = [];
      bytes = 0;
      keys = 0;
    }
    current.push(op);
    bytes += op.bytes;
    keys += op.keyBytes;
  }
  if (current.length > 0) result.push(current);
  return result;
}

function layoutOf(value: StoredMetaValue): Layout {
  const counts = [
    value.snapshotParts,
    value.snapshotBytes,
    value.logStart,
    value.logEnd,
    value.logBytes,
  ];
  if (
    !counts.every((n) => Number.isSafeInteger(n) && n >= 0) ||
    value.logStart > value.logEnd ||
    (value.snapshot !== null && typeof value.snapshot !== "string")
  ) {
    throw new RangeError("the meta record has a bad layout");
  }
  return {
    snapshot: value.snapshot,
    snapshotParts: value.snapshotParts,
    snapshotBytes: value.snapshotBytes,
    logStart: value.logStart,
    logEnd: value.logEnd,
    logBytes: value.logBytes,
  };
}

/**
 * A realm's storage in a Deno KV store file (`openRealm({ storage: { kvPath
 * } })`). One file holds many realms, each under
 * `["tether", "v1", "realm", userId, path]`:
 *
 * - `[…, "meta"]` the meta record (cursors, client identity, node id) and
 *   the layout: which snapshot and which log entries are published;
 * - `[…, "snap", generation, n]` the parts of the last snapshot: every
 *   object record and pending changeset, packed;
 * - `[…, "log", seq]` one commit since the snapshot, packed (its records and
 *   appended changesets); a commit over 60,000 bytes is
 *   `{ parts, size }` with its parts under `[…, "log", seq, n]`.
 *
 * A commit writes its log entry (in as many atomic operations as Deno KV's
 * limits require) and then publishes it with the meta record in the last
 * one, so an entry a crash left unpublished is ignored and deleted at the
 * next load. When the log grows long (256 entries holding an eighth of the
 * snapshot's bytes, or 4,096 entries, or more bytes than the snapshot) the
 * realm is rewritten as a new snapshot, published the same way.
 *
 * @example A realm that survives a reopen
 * ```ts
 * import { KvRealmStorage } from "./kv.ts";
 * import assert from "node:assert/strict";
 *
 * const directory = await Deno.makeTempDir();
 * const kvPath = `${directory}/app.kv`;
 * const where = { userId: "u1", path: "/u1/todos" };
 * const meta = {
 *   nodeId: 7, clientIdentity: null, downloadCursor: 3,
 *   lastClientVersion: 0, acknowledgedClientVersion: 0,
 * };
 * const first = await KvRealmStorage.open(kvPath, where);
 * await first.commit({ meta, records: [], append: [] });
 * await first.close();
 * const again = await KvRealmStorage.open(kvPath, where);
 * assert.equal((await again.load()).meta?.downloadCursor, 3);
 * await again.close();
 * await Deno.remove(directory, { recursive: true });
 * ```
 */
export class KvRealmStorage implements RealmStorage {
  #kv: KvLike;
  #where: string;
  #prefix: KvKey;
  #owner: StorageOwner;
  #layout: Layout = EMPTY_LAYOUT;
  /** Whether a load deleted what a crash left unpublished. */
  #clean = false;
  #queue = new ClosableQueue();

  private constructor(
    kv: KvLike,
    where: string,
    location: KvRealmLocation,
    owner: StorageOwner,
  ) {
    this.#kv = kv;
    this.#where = where;
    this.#prefix = kvRealmPrefix(location);
    this.#owner = owner;
  }

  /**
   * Opens a realm's storage in the store file at `kvPath` (shared with
   * every other handle on that file in this process).
   *
   * @param kvPath The store file; created when missing.
   * @param location The user and resolved realm path.
   * @returns The storage; close it to release the file.
   * @throws {TypeError} Outside Deno or without `--unstable-kv`.
   * @throws {SyncError} `storage_locked` when another process holds the
   *   file or this realm is already open in this process,
   *   `storage_invalid` for a foreign, newer or undecodable store.
   */
  static async open(
    kvPath: string,
    location: KvRealmLocation,
  ): Promise<KvRealmStorage> {
    checkLocation(location);
    const handle: KvStoreHandle = await acquireKvStore(kvPath);
    let claim: KvClaim | undefined;
    try {
      claim = await handle.claim(kvRealmClaim(location));
      const held = claim;
      const storage = new KvRealmStorage(
        handle.kv,
        JSON.stringify(kvPath),
        location,
        {
          closing: (done) => held.closing(done),
          release: () => {
            held.release();
            return handle.release();
          },
        },
      );
      await storage.#readLayout();
      return storage;
    } catch (error) {
      claim?.release();
      await handle.release();
      throw error;
    }
  }

  /**
   * Opens a realm's storage on a database the caller opened and owns (for
   * example a KV Connect URL). The caller keeps other writers off it and
   * closes it after this storage; the store header is not checked.
   *
   * @param kv An open `Deno.Kv` (or anything with its shape).
   * @param where How error messages name the store.
   * @param location The user and resolved realm path.
   * @returns The storage.
   * @throws {SyncError} `storage_invalid` for a meta record that does not
   *   decode.
   */
  static async openOn(
    kv: KvLike,
    where: string,
    location: KvRealmLocation,
  ): Promise<KvRealmStorage> {
    checkLocation(location);
    const storage = new KvRealmStorage(
      kv,
      where,
      location,
      { closing: () => {}, release: () => Promise.resolve() },
    );
    await storage.#readLayout();
    return storage;
  }

  /**
   * Reads everything stored for the realm, and deletes what a crash left
   * unpublished.
   */
  load(): Promise<StoredRealm> {
    return this.#queue.run("load", () => this.#loadAndClean());
  }

  async #loadAndClean(): Promise<StoredRealm> {
    const { stored, garbage } = await this.#read();
    await this.#delete(garbage);
    this.#clean = true;
    return stored;
  }

  /** Applies one batch atomically (see the class doc). */
  commit(batch: StorageBatch): Promise<void> {
    return this.#queue.run("commit", async () => {
      // A crash's unpublished parts may sit where this commit writes.
      if (!this.#clean) await this.#loadAndClean();
      await this.#commit(batch);
      const layout = this.#layout;
      const entries = layout.logEnd - layout.logStart;
      if (
        entries >= MAX_LOG_ENTRIES ||
        (entries >= LOG_ENTRIES &&
          layout.logBytes * 8 >= layout.snapshotBytes) ||
        (layout.logBytes >= MIN_LOG_BYTES_TO_COMPACT &&
          layout.logBytes > layout.snapshotBytes)
      ) {
        await this.#compact();
      }
    });
  }

  /** Waits for queued work, then releases the store file. */
  close(): Promise<void> {
    const first = !this.#queue.closed;
    const done = this.#queue.close(() => this.#owner.release());
    if (first) this.#owner.closing(done);
    return done;
  }

  #key(...rest: (string | number)[]): KvKey {
    return [...this.#prefix, ...rest];
  }

  async #readLayout(): Promise<void> {
    let entry;
    try {
      entry = await this.#kv.get(this.#key("meta"));
      if (entry.value !== null) {
        this.#layout = layoutOf(entry.value as StoredMetaValue);
      }
    } catch (error) {
      throw invalidStore(
        this.#where,
        `the meta record of realm ${
          JSON.stringify(this.#prefix[4])
        } does not decode`,
        error,
      );
    }
  }

  /** Ops that store `bytes` as the value at `key`, in parts if large. */
  #valueOps(ops: Op[], key: KvKey, bytes: Uint8Array): void {
    if (bytes.length <= PART_BYTES) {
      ops.push(makeOp(key, bytes));
      return;
    }
    const parts = Math.ceil(bytes.length / PART_BYTES);
    ops.push(makeOp(key, { parts, size: bytes.length }));
    for (let part = 0; part < parts; part++) {
      ops.push(
        makeOp(
          [...key, part],
          bytes.subarray(part * PART_BYTES, (part + 1) * PART_BYTES),
        ),
      );
    }
  }

  /**
   * Writes `ops` (invisible until published), then publishes them with
   * `meta` in the last atomic operation.
   */
  async #publish(ops: readonly Op[], meta: StoredMetaValue): Promise<void> {
    const all = [...ops, makeOp(this.#key("meta"), meta)];
    for (const group of groups(all)) await this.#apply(group);
    this.#layout = layoutOf(meta);
  }

  async #commit(batch: StorageBatch): Promise<void> {
    const layout = { ...this.#layout };
    const ops: Op[] = [];
    if (batch.records.length > 0 || batch.append.length > 0) {
      const segment = encodeSegment(batch.records, batch.append);
      this.#valueOps(ops, this.#key("log", layout.logEnd), segment);
      layout.logEnd++;
      layout.logBytes += segment.length;
    }
    await this.#publish(ops, { ...metaToStored(batch.meta), ...layout });
  }

  /** Rewrites the realm as one snapshot and drops the log. */
  async #compact(): Promise<void> {
    const { stored, garbage, published } = await this.#read();
    if (stored.meta === null) return;
    const old = this.#layout;
    const segment = encodeSegment(stored.records, stored.pending);
    const generation = crypto.randomUUID();
    const ops: Op[] = [];
    const parts = Math.max(1, Math.ceil(segment.length / PART_BYTES));
    for (let part = 0; part < parts; part++) {
      ops.push(
        makeOp(
          this.#key("snap", generation, part),
          segment.subarray(part * PART_BYTES, (part + 1) * PART_BYTES),
        ),
      );
    }
    await this.#publish(ops, {
      ...metaToStored(stored.meta),
      snapshot: generation,
      snapshotParts: parts,
      snapshotBytes: segment.length,
      logStart: old.logEnd,
      logEnd: old.logEnd,
      logBytes: 0,
    });
    // What the new snapshot replaced; a crash before this is cleaned up by
    // the next load.
    await this.#delete([...garbage, ...published]);
  }

  async #apply(ops: readonly Op[]): Promise<void> {
    const operation = this.#kv.atomic();
    for (const op of ops) {
      if (op.value === undefined) operation.delete(op.key);
      else operation.set(op.key, op.value);
    }
    const result = await operation.commit();
    if (!result.ok) {
      throw new Error(`Cannot commit to the store ${this.#where}: refused`);
    }
  }

  async #delete(keys: readonly KvKey[]): Promise<void> {
    const ops = keys.map((key) => makeOp(key, undefined));
    for (const group of groups(ops)) await this.#apply(group);
  }

  /**
   * Reads the published snapshot and log; returns the realm and the keys of
   * entries that are not published (a crash's leftovers, or what a snapshot
   * replaced).
   */
  async #read(): Promise<
    { stored: StoredRealm; garbage: KvKey[]; published: KvKey[] }
  > {
    await this.#readLayout();
    const layout = this.#layout;
    const prefix = this.#prefix.length;
    const garbage: KvKey[] = [];
    // Keys of the published snapshot and log, for a compaction to drop.
    const published: KvKey[] = [];
    const snapshotParts: Uint8Array[] = [];
    // Log entries by sequence: whole bytes, or parts being collected.
    const log = new Map<
      number,
      { header: { parts: number; size: number } | null; parts: Uint8Array[] }
    >();
    let meta: RealmMeta | null = null;
    const records = new Map<string, ObjectRecord>();
    const pending = new Map<number, UploadChangeset>();
    try {
      for await (
        const entry of this.#kv.list({ prefix: this.#prefix }, {
          batchSize: 1000,
        })
      ) {
        const rest = entry.key.slice(prefix);
        const value = entry.value;
        if (rest[0] === "meta" && rest.length === 1) {
          meta = metaFromStored(value);
        } else if (rest[0] === "snap" && rest.length === 3) {
          if (rest[1] !== layout.snapshot) {
            garbage.push(entry.key);
          } else if (
            rest[2] !== snapshotParts.length || !(value instanceof Uint8Array)
          ) {
            throw new RangeError("a snapshot part is out of order");
          } else {
            snapshotParts.push(value);
            published.push(entry.key);
          }
        } else if (
          rest[0] === "log" && typeof rest[1] === "number" &&
          (rest.length === 2 || rest.length === 3)
        ) {
          const seq = rest[1];
          if (seq < layout.logStart || seq >= layout.logEnd) {
            garbage.push(entry.key);
            continue;
          }
          published.push(entry.key);
          if (rest.length === 2) {
            if (value instanceof Uint8Array) {
              log.set(seq, { header: null, parts: [value] });
            } else {
              const header = value as { parts?: unknown; size?: unknown };
              if (
                typeof header !== "object" || header === null ||
                !Number.isSafeInteger(header.parts) ||
                !Number.isSafeInteger(header.size) ||
                (header.size as number) > (header.parts as number) * PART_BYTES
              ) {
                throw new RangeError("a log entry is neither bytes nor parts");
              }
              log.set(seq, {
                header: header as { parts: number; size: number },
                parts: [],
              });
            }
          } else {
            const item = log.get(seq);
            if (
              item?.header == null || rest[2] !== item.parts.length ||
              !(value instanceof Uint8Array)
            ) {
              throw new RangeError("a log part is out of order");
            }
            item.parts.push(value);
          }
        } else {
          throw new RangeError("an unknown key");
        }
      }
      if (layout.snapshot !== null) {
        if (snapshotParts.length !== layout.snapshotParts) {
          throw new RangeError("the snapshot is missing parts");
        }
        decodeSegment(
          join(snapshotParts, layout.snapshotBytes),
          records,
          pending,
        );
      }
      for (let seq = layout.logStart; seq < layout.logEnd; seq++) {
        const item = log.get(seq);
        if (item === undefined) continue; // A commit of meta only.
        const bytes = item.header === null
          ? item.parts[0]!
          : join(item.parts, item.header.size, item.header.parts);
        decodeSegment(bytes, records, pending);
      }
    } catch (error) {
      throw invalidStore(
        this.#where,
        `a value of realm ${JSON.stringify(this.#prefix[4])} does not decode (${
          error instanceof Error ? error.message : String(error)
        })`,
        error,
      );
    }
    const acknowledged = meta?.acknowledgedClientVersion ?? 0;
    const unacknowledged = [...pending.values()]
      .filter((c) => c.clientVersion > acknowledged)
      .sort((a, b) => a.clientVersion - b.clientVersion);
    return {
      stored: { meta, records: [...records.values()], pending: unacknowledged },
      garbage,
      published,
    };
  }
}

function join(
  parts: Uint8Array[],
  size: number,
  expected?: number,
): Uint8Array {
  if (expected !== undefined && parts.length !== expected) {
    throw new RangeError("a value is missing parts");
  }
  if (parts.length === 1 && parts[0]!.length === size) return parts[0]!;
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    if (offset + part.length > size) {
      throw new RangeError("a value's parts are longer than its size");
    }
    bytes.set(part, offset);
    offset += part.length;
  }
  if (offset !== size) throw new RangeError("a value's parts are too short");
  return bytes;
}

function checkLocation(location: KvRealmLocation): void {
  if (
    typeof location !== "object" || location === null ||
    typeof location.userId !== "string" || typeof location.path !== "string"
  ) {
    throw new TypeError(
      "Cannot open storage: the location needs a userId and a path",
    );
  }
  const bytes = utf8Length(location.userId) + utf8Length(location.path);
  if (bytes > MAX_PREFIX_BYTES) {
    throw new TypeError(
      `Cannot open storage: user id and realm path are ${bytes} bytes, more than ${MAX_PREFIX_BYTES}`,
    );
  }
}
