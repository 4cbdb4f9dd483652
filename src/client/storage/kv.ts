// This module is browser compatible (it reaches Deno only through globalThis).

/**
 * A {@linkcode RealmStorage} on Deno KV: one realm of one user under its own
 * key prefix, each commit one atomic KV operation, or — when a batch exceeds
 * Deno KV's limits — staged, published by one small commit and replayed, so
 * it is all-or-nothing after a crash.
 */

import type { UploadChangeset } from "../../model/changeset.ts";
import type { ObjectRecord } from "../../model/merge.ts";
import {
  decodeChangeset,
  decodeRecord,
  encodeChangeset,
  encodeRecord,
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
/** Deno KV allows 2,048-byte keys; longer record names are hashed. */
const MAX_NAME_BYTES = 512;
/** A staged entry's estimated size (its value is one KV value). */
const STAGE_ENTRY_BYTES = 56_000;
/** The longest user id + realm path a prefix may hold. */
const MAX_PREFIX_BYTES = 1024;

const encoder = new TextEncoder();

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

/** What the storage gives back when it closes. */
interface StorageOwner {
  closing(done: Promise<void>): void;
  release(): Promise<void>;
}

interface LargeValue {
  parts: number;
  size: number;
}

interface Op {
  key: KvKey;
  /** The value to set, or undefined to delete. */
  value: unknown;
  keyBytes: number;
  bytes: number;
}

interface StoredMetaValue extends StoredMeta {
  /** A published batch whose replay has not finished. */
  redo?: { id: string; entries: number };
}

function keyBytes(key: KvKey): number {
  let total = 0;
  for (const part of key) {
    total += typeof part === "string" ? encoder.encode(part).length + 3 : 10;
  }
  return total;
}

function valueBytes(value: unknown): number {
  return value instanceof Uint8Array ? value.length + 8 : 64;
}

function makeOp(key: KvKey, value: unknown): Op {
  const keySize = keyBytes(key);
  return {
    key,
    value,
    keyBytes: keySize,
    bytes: keySize + (value === undefined ? 0 : valueBytes(value)),
  };
}

function recordName(type: string, id: string): string {
  return `${type.length}:${type}${id}`;
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", encoder.encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/** Splits ops into groups that each fit one atomic operation. */
function groups(ops: readonly Op[], reserve = 0): Op[][] {
  const result: Op[][] = [];
  let current: Op[] = [];
  let bytes = 0;
  let keys = 0;
  for (const op of ops) {
    if (
      current.length > 0 &&
      (current.length + 1 + reserve > MAX_MUTATIONS ||
        bytes + op.bytes > MAX_OPERATION_BYTES - reserve * 512 ||
        keys + op.keyBytes > MAX_OPERATION_KEY_BYTES - reserve * 512)
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

/**
 * A realm's storage in a Deno KV store file (`openRealm({ storage: { kvPath
 * } })`). One file holds many realms, each under
 * `["tether", "v1", "realm", userId, path]`:
 *
 * - `[…, "meta"]` the meta record (cursors, client identity, node id);
 * - `[…, "o", type, id]` an object record (`[…, "h", sha256]` when type and
 *   id are too long for a key);
 * - `[…, "p", clientVersion]` a pending changeset;
 * - `[…, "stage", batch, n]` a batch too large for one atomic operation,
 *   staged before it is published.
 *
 * A value larger than 60,000 bytes is stored as `{ parts, size }` with its
 * parts under `[…key, 0]`, `[…key, 1]`, ….
 *
 * @example A realm that survives a reopen
 * ```ts
 * import { KvRealmStorage } from "@tether/sync";
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
  /** Part counts of stored values split in parts, by key name. */
  #large = new Map<string, number>();
  /** Pending changesets stored: client version → part count (0: whole). */
  #pending = new Map<number, number>();
  #indexed = false;
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

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
   * every other handle on that file in this process), and finishes a batch
   * a crash interrupted.
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
      claim = await handle.claim(
        `realm ${JSON.stringify(location.path)} of user ${
          JSON.stringify(location.userId)
        }`,
      );
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
      await storage.#recover();
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
   * @throws {SyncError} `storage_invalid` for a realm that does not decode.
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
    await storage.#recover();
    return storage;
  }

  /** Reads everything stored for the realm. */
  load(): Promise<StoredRealm> {
    return this.#enqueue("load", () => this.#read());
  }

  /** Applies one batch atomically (see the class doc for large batches). */
  commit(batch: StorageBatch): Promise<void> {
    return this.#enqueue("commit", async () => {
      if (!this.#indexed) await this.#read();
      await this.#commit(batch);
    });
  }

  /** Waits for queued work, then releases the store file. */
  close(): Promise<void> {
    if (this.#closed) return this.#queue.then(() => {});
    this.#closed = true;
    const done = this.#queue.then(() => this.#owner.release());
    this.#owner.closing(done);
    this.#queue = done.catch(() => {});
    return done;
  }

  #enqueue<T>(what: string, task: () => Promise<T>): Promise<T> {
    if (this.#closed) {
      return Promise.reject(
        new TypeError(`Cannot ${what}: the storage is closed`),
      );
    }
    const result = this.#queue.then(task);
    this.#queue = result.catch(() => {});
    return result;
  }

  #key(...rest: (string | number)[]): KvKey {
    return [...this.#prefix, ...rest];
  }

  async #recordKey(record: ObjectRecord): Promise<KvKey> {
    const bytes = encoder.encode(record.type).length +
      encoder.encode(record.id).length;
    if (bytes <= MAX_NAME_BYTES) return this.#key("o", record.type, record.id);
    return this.#key("h", await sha256Hex(recordName(record.type, record.id)));
  }

  /** Ops that store `bytes` at `key`, dropping parts an older value had. */
  #valueOps(
    ops: Op[],
    key: KvKey,
    name: string,
    bytes: Uint8Array,
    changes: Map<string, number>,
  ): number {
    const old = changes.get(name) ?? this.#large.get(name) ?? 0;
    let parts = 0;
    if (bytes.length <= PART_BYTES) {
      ops.push(makeOp(key, bytes));
    } else {
      parts = Math.ceil(bytes.length / PART_BYTES);
      const header: LargeValue = { parts, size: bytes.length };
      ops.push(makeOp(key, header));
      for (let part = 0; part < parts; part++) {
        ops.push(
          makeOp(
            [...key, part],
            bytes.subarray(part * PART_BYTES, (part + 1) * PART_BYTES),
          ),
        );
      }
    }
    for (let part = parts; part < old; part++) {
      ops.push(makeOp([...key, part], undefined));
    }
    changes.set(name, parts);
    return parts;
  }

  async #commit(batch: StorageBatch): Promise<void> {
    const ops: Op[] = [];
    const large = new Map<string, number>();
    for (const record of batch.records) {
      const key = await this.#recordKey(record);
      this.#valueOps(
        ops,
        key,
        JSON.stringify(key.slice(this.#prefix.length)),
        encodeRecord(record),
        large,
      );
    }
    const appended = new Map<number, number>();
    for (const changeset of batch.append) {
      const key = this.#key("p", changeset.clientVersion);
      const parts = this.#valueOps(
        ops,
        key,
        `p${changeset.clientVersion}`,
        encodeChangeset(changeset),
        new Map(),
      );
      appended.set(changeset.clientVersion, parts);
    }
    const acknowledged = batch.meta.acknowledgedClientVersion;
    const dropped: number[] = [];
    for (const [version, parts] of [...this.#pending, ...appended]) {
      if (version > acknowledged) continue;
      dropped.push(version);
      ops.push(makeOp(this.#key("p", version), undefined));
      for (let part = 0; part < parts; part++) {
        ops.push(makeOp(this.#key("p", version, part), undefined));
      }
    }
    const meta: StoredMetaValue = metaToStored(batch.meta);
    const metaOp = makeOp(this.#key("meta"), meta);
    if (groups([...ops, metaOp]).length === 1) {
      await this.#apply([...ops, metaOp]);
    } else {
      await this.#commitStaged(ops, meta);
    }
    for (const [name, parts] of large) {
      if (parts === 0) this.#large.delete(name);
      else this.#large.set(name, parts);
    }
    for (const [version, parts] of appended) this.#pending.set(version, parts);
    for (const version of dropped) this.#pending.delete(version);
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

  /**
   * A batch too large for one atomic operation: stage its mutations, publish
   * them with the new meta in one small commit, then replay them. A crash
   * before the publish leaves staged garbage (dropped at the next open); a
   * crash after it is finished by the next open.
   */
  async #commitStaged(ops: readonly Op[], meta: StoredMeta): Promise<void> {
    const batch = crypto.randomUUID();
    const entries: Op[] = [];
    let current: [KvKey, unknown][] = [];
    let bytes = 0;
    const flush = () => {
      if (current.length === 0) return;
      const value = { ops: current };
      const op = makeOp(this.#key("stage", batch, entries.length), value);
      op.bytes += bytes;
      entries.push(op);
      current = [];
      bytes = 0;
    };
    for (const op of ops) {
      if (bytes > 0 && bytes + op.bytes > STAGE_ENTRY_BYTES) flush();
      // A deletion is staged as null, which no stored value is.
      current.push([op.key, op.value === undefined ? null : op.value]);
      bytes += op.bytes;
    }
    flush();
    for (const group of groups(entries)) await this.#apply(group);
    const published: StoredMetaValue = {
      ...meta,
      redo: { id: batch, entries: entries.length },
    };
    await this.#apply([makeOp(this.#key("meta"), published)]);
    await this.#finishRedo(ops, meta, batch, entries.length);
  }

  async #finishRedo(
    ops: readonly Op[],
    meta: StoredMeta,
    batch: string,
    entries: number,
  ): Promise<void> {
    for (const group of groups(ops)) await this.#apply(group);
    await this.#apply([makeOp(this.#key("meta"), meta)]);
    const deletions: Op[] = [];
    for (let entry = 0; entry < entries; entry++) {
      deletions.push(makeOp(this.#key("stage", batch, entry), undefined));
    }
    for (const group of groups(deletions)) await this.#apply(group);
  }

  /**
   * At open: finishes a published batch, then drops staged batches that
   * were never published.
   */
  async #recover(): Promise<void> {
    let entry;
    try {
      entry = await this.#kv.get(this.#key("meta"));
    } catch (error) {
      throw invalidStore(this.#where, "its meta record does not decode", error);
    }
    const stored = entry.value as StoredMetaValue | null;
    const redo = stored?.redo;
    if (stored !== null && redo !== undefined) {
      const ops: Op[] = [];
      let seen = 0;
      try {
        for await (
          const staged of this.#kv.list({
            prefix: this.#key("stage", redo.id),
          })
        ) {
          const value = staged.value as { ops: [KvKey, unknown][] };
          for (const [key, item] of value.ops) {
            ops.push(makeOp(key, item === null ? undefined : item));
          }
          seen++;
        }
      } catch (error) {
        throw invalidStore(
          this.#where,
          "a staged batch does not decode",
          error,
        );
      }
      if (seen !== redo.entries) {
        throw invalidStore(
          this.#where,
          `a published batch has ${seen} of its ${redo.entries} staged parts`,
        );
      }
      const { redo: _, ...meta } = stored;
      await this.#finishRedo(ops, meta, redo.id, redo.entries);
    }
    const garbage: Op[] = [];
    for await (
      const staged of this.#kv.list({ prefix: this.#key("stage") })
    ) {
      garbage.push(makeOp(staged.key, undefined));
    }
    for (const group of groups(garbage)) await this.#apply(group);
  }

  /** Reads the realm and rebuilds the part and pending indexes. */
  async #read(): Promise<StoredRealm> {
    const prefix = this.#prefix.length;
    let meta: RealmMeta | null = null;
    const records: ObjectRecord[] = [];
    const pending: UploadChangeset[] = [];
    const large = new Map<string, number>();
    const pendingIndex = new Map<number, number>();
    // A value split in parts being collected.
    let open:
      | {
        name: string;
        kind: string;
        version: number;
        header: LargeValue;
        parts: Uint8Array[];
      }
      | undefined;
    const finish = (
      kind: string,
      name: string,
      version: number,
      bytes: Uint8Array,
      parts: number,
    ) => {
      if (kind === "p") {
        const changeset = decodeChangeset(bytes);
        if (changeset.clientVersion !== version) {
          throw new RangeError("a pending changeset is under another version");
        }
        pending.push(changeset);
        pendingIndex.set(version, parts);
      } else {
        records.push(decodeRecord(bytes));
        if (parts > 0) large.set(name, parts);
      }
    };
    const closeOpen = () => {
      if (open === undefined) return;
      const { header, parts } = open;
      if (parts.length !== header.parts) {
        throw new RangeError("a value split in parts is missing parts");
      }
      const bytes = new Uint8Array(header.size);
      let offset = 0;
      for (const part of parts) {
        if (offset + part.length > bytes.length) {
          throw new RangeError("a value's parts are longer than its size");
        }
        bytes.set(part, offset);
        offset += part.length;
      }
      if (offset !== header.size) {
        throw new RangeError("a value's parts are shorter than its size");
      }
      const done = open;
      open = undefined;
      finish(done.kind, done.name, done.version, bytes, done.header.parts);
    };
    try {
      for await (
        const entry of this.#kv.list({ prefix: this.#prefix }, {
          batchSize: 1000,
        })
      ) {
        const rest = entry.key.slice(prefix);
        const kind = rest[0];
        const value = entry.value;
        if (kind === "meta" && rest.length === 1) {
          meta = metaFromStored(value);
          continue;
        }
        if (kind === "stage") continue;
        let base: number;
        if (kind === "o") base = 3;
        else if (kind === "h" || kind === "p") base = 2;
        else throw new RangeError(`an unknown key ${String(kind)}`);
        if (rest.length === base + 1) {
          if (
            open === undefined ||
            JSON.stringify(rest.slice(0, base)) !== open.name ||
            rest[base] !== open.parts.length ||
            !(value instanceof Uint8Array)
          ) {
            throw new RangeError("a value part without its value");
          }
          open.parts.push(value);
          continue;
        }
        if (rest.length !== base) throw new RangeError("a key of bad length");
        closeOpen();
        const name = JSON.stringify(rest);
        const version = kind === "p" ? rest[1] : 0;
        if (typeof version !== "number" || !Number.isSafeInteger(version)) {
          throw new RangeError("a pending changeset key is not a version");
        }
        if (value instanceof Uint8Array) {
          finish(kind, name, version, value, 0);
        } else {
          const header = value as Partial<LargeValue> | null;
          if (
            header === null || typeof header !== "object" ||
            !Number.isSafeInteger(header.parts) || header.parts! < 2 ||
            !Number.isSafeInteger(header.size) ||
            header.size! > header.parts! * PART_BYTES
          ) {
            throw new RangeError("a value is neither bytes nor parts");
          }
          open = {
            name,
            kind,
            version,
            header: header as LargeValue,
            parts: [],
          };
        }
      }
      closeOpen();
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
    pending.sort((a, b) => a.clientVersion - b.clientVersion);
    this.#large = large;
    this.#pending = pendingIndex;
    this.#indexed = true;
    return {
      meta,
      records,
      pending: pending.filter((c) => c.clientVersion > acknowledged),
    };
  }
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
  const bytes = encoder.encode(location.userId).length +
    encoder.encode(location.path).length;
  if (bytes > MAX_PREFIX_BYTES) {
    throw new TypeError(
      `Cannot open storage: user id and realm path are ${bytes} bytes, more than ${MAX_PREFIX_BYTES}`,
    );
  }
}
