import type { DownloadChangeset, Instruction } from "../../model/changeset.ts";
import type { Hlc } from "../../model/hlc.ts";
import {
  applyInstruction,
  emptyRecord,
  type ObjectRecord,
  recordToInstructions,
} from "../../model/merge.ts";
import { decodeDownloadChangeset } from "../../protocol/decode.ts";
import { encodeDownloadChangeset } from "../../protocol/encode.ts";
import {
  deleteBlob,
  inlineBytes,
  needsBlob,
  readStoredBytes,
  type StoredBytes,
  writeBlob,
} from "./chunks.ts";
import {
  compactedKey,
  headKey,
  historyKey,
  objectKey,
  saltsKey,
  snapshotKey,
  snapshotLeaseKey,
} from "./keys.ts";
import {
  type CompactedSalts,
  EMPTY_HEAD,
  type Head,
  type HistoryEntry,
  readHistory,
} from "./history.ts";
import { retryKv, type RetryOptions } from "./retry.ts";
import { GET_MANY_KEYS } from "./read_many.ts";
import type { ServerKv } from "./kv_store.ts";

/**
 * The materialised snapshot of a realm (docs/ARCHITECTURE.md "Server storage"):
 * one record per object (its registers with their stamps, tombstones
 * included so a late, older write cannot resurrect a deleted object), plus a
 * version record saying which history version the records include.
 *
 * Records are advanced from the history by whichever process holds the
 * realm's snapshot lease; every write it makes checks the lease, so a
 * process whose lease was taken over cannot overwrite newer records with
 * older ones. A crash between writes leaves records ahead of the version
 * record, never behind it: merging is a join, so applying those changesets
 * again (to the records, or on a client after a bootstrap) changes nothing.
 */

/** The snapshot's version record. */
export interface SnapshotInfo {
  /** Every history version at or below this one is in the records. */
  version: number;
  /** Sum of the stored sizes of all records, in bytes (an estimate). */
  bytes: number;
  /** The history's cumulative bytes at `version`. */
  historyBytes: number;
  /**
   * The salt of `version` (docs/PROTOCOL.md §4.11), sent with the DOWNLOAD
   * that ends a bootstrap; absent (unknown) in records older than salts.
   */
  salt?: number;
  /** Number of records (objects ever written, tombstones included). */
  objects: number;
}

/** A realm without a snapshot. */
export const EMPTY_SNAPSHOT: Readonly<SnapshotInfo> = Object.freeze({
  version: 0,
  bytes: 0,
  historyBytes: 0,
  objects: 0,
});

/** The stamp of snapshot changesets; every instruction has its own. */
export const SNAPSHOT_STAMP: Readonly<Hlc> = Object.freeze({
  time: 0,
  counter: 0,
  node: 0,
});

interface Lease {
  owner: string;
  expiresAt: number;
}

/** Tuning of {@linkcode advanceSnapshot}. */
export interface AdvanceOptions {
  /** Advance no further than this version (default: the head). */
  targetVersion?: number;
  /**
   * How much one piece of the work may do (default
   * {@linkcode REMOTE_PIECES}); see {@linkcode LOCAL_PIECES}.
   */
  pieces?: AdvancePieces;
  /** Keep this many history versions below the snapshot's version. */
  retainVersions: number;
  /** How long a lease lasts without renewal, in milliseconds. */
  leaseMs: number;
  now: () => number;
  retry: RetryOptions;
}

/** What {@linkcode advanceSnapshot} achieved. */
export interface AdvanceResult {
  /** The version record after the call (possibly unchanged). */
  snapshot: SnapshotInfo;
  /** Whether this call held the lease (false: another process advances). */
  advanced: boolean;
  /** Highest version deleted from history so far. */
  compactedThrough: number;
}

/**
 * How an advance cuts its work: a step reads at most `stepVersions` versions
 * and `stepBytes` of history (decoding them is one stretch of work on the
 * thread), then writes the records it touched; one atomic operation holds
 * at most `operationMutations` mutations and `operationBytes` (well inside
 * denokv's limits of 1000 and 800 KiB, with room for the checks' keys and
 * the version record); compaction lists history `listBatch` entries at a
 * time.
 */
export interface AdvancePieces {
  stepVersions: number;
  stepBytes: number;
  operationMutations: number;
  operationBytes: number;
  listBatch: number;
}

/**
 * Large pieces, for a store across the network, where each operation is a
 * round trip and does not hold the server's thread.
 */
export const REMOTE_PIECES: Readonly<AdvancePieces> = Object.freeze({
  stepVersions: Infinity,
  stepBytes: 1024 * 1024,
  operationMutations: 900,
  operationBytes: 640 * 1024,
  listBatch: 200,
});

/**
 * Small pieces, for a local store (`":memory:"` or a file), whose commits
 * run on the server's own thread: one of 900 mutations held it about 2.7 ms
 * on an idle 2-core VM (tens of ms under load) while every session's socket
 * waited. An advance runs beside live traffic, so it works in pieces of
 * well under a millisecond, each followed by a turn of the event loop
 * (docs/PERFORMANCE.md "Propagation, hop by hop").
 */
export const LOCAL_PIECES: Readonly<AdvancePieces> = Object.freeze({
  stepVersions: 32,
  stepBytes: 64 * 1024,
  operationMutations: 64,
  operationBytes: 64 * 1024,
  listBatch: 64,
});
const PARALLEL_READS = 8;

/** Reads the snapshot's version record. */
export async function readSnapshotInfo(
  kv: ServerKv,
  realm: string,
  retry: RetryOptions,
): Promise<SnapshotInfo> {
  const entry = await retryKv(
    () => kv.get<SnapshotInfo>(snapshotKey(realm)),
    retry,
  );
  return entry.value ?? EMPTY_SNAPSHOT;
}

/** Reads the highest history version deleted by compaction (0 = none). */
export async function readCompactedThrough(
  kv: ServerKv,
  realm: string,
  retry: RetryOptions,
): Promise<number> {
  const entry = await retryKv(() => kv.get<number>(compactedKey(realm)), retry);
  return entry.value ?? 0;
}

/**
 * Brings the snapshot up to `targetVersion` (default: the head) and compacts
 * history below it, if this process can take the realm's snapshot lease;
 * otherwise returns the snapshot as it is.
 */
export async function advanceSnapshot(
  kv: ServerKv,
  realm: string,
  options: AdvanceOptions,
): Promise<AdvanceResult> {
  const { retry } = options;
  const pieces = options.pieces ?? REMOTE_PIECES;
  // A fresh owner per call: two calls never share a lease, even in one
  // process, and a lease left by a crash simply expires.
  const owner = crypto.randomUUID();
  let leaseStamp = await acquireLease(kv, realm, owner, options);
  if (leaseStamp === null) {
    return {
      snapshot: await readSnapshotInfo(kv, realm, retry),
      advanced: false,
      compactedThrough: await readCompactedThrough(kv, realm, retry),
    };
  }
  try {
    let snapshot: SnapshotInfo;
    for (;;) {
      const [snapshotEntry, headEntry] = await retryKv(
        () =>
          kv.getMany<[SnapshotInfo, Head]>([
            snapshotKey(realm),
            headKey(realm),
          ]),
        retry,
      );
      snapshot = snapshotEntry.value ?? EMPTY_SNAPSHOT;
      const head = headEntry.value ?? EMPTY_HEAD;
      const target = Math.min(head.version, options.targetVersion ?? Infinity);
      if (snapshot.version >= target) break;
      const step = await advanceStep(
        kv,
        realm,
        snapshot,
        snapshotEntry.versionstamp,
        target,
        leaseStamp,
        owner,
        options,
      );
      if (step === null) {
        throw new Error(
          `Cannot advance the snapshot of ${realm}: the lease was lost`,
        );
      }
      leaseStamp = step;
    }
    const compactedThrough = await compactHistory(
      kv,
      realm,
      snapshot.version - options.retainVersions,
      leaseStamp,
      retry,
      pieces,
    );
    return { snapshot, advanced: true, compactedThrough };
  } finally {
    await releaseLease(kv, realm, leaseStamp, retry).catch(() => {});
  }
}

async function acquireLease(
  kv: ServerKv,
  realm: string,
  owner: string,
  options: AdvanceOptions,
): Promise<string | null> {
  const entry = await retryKv(
    () => kv.get<Lease>(snapshotLeaseKey(realm)),
    options.retry,
  );
  const lease = entry.value;
  if (lease !== null && lease.expiresAt > options.now()) return null;
  const result = await retryKv(
    () =>
      kv.atomic().check(entry).set(
        snapshotLeaseKey(realm),
        {
          owner,
          expiresAt: options.now() + options.leaseMs,
        } satisfies Lease,
      ).commit(),
    options.retry,
  );
  return result.ok ? result.versionstamp : null;
}

async function releaseLease(
  kv: ServerKv,
  realm: string,
  leaseStamp: string,
  retry: RetryOptions,
): Promise<void> {
  await retryKv(
    () =>
      kv.atomic()
        .check({ key: snapshotLeaseKey(realm), versionstamp: leaseStamp })
        .delete(snapshotLeaseKey(realm))
        .commit(),
    retry,
  );
}

/** A record being rewritten by one step. */
interface Touched {
  key: Deno.KvKey;
  record: ObjectRecord;
  previous: StoredBytes | null;
}

/**
 * Applies one step of history to the records and moves the version record;
 * returns the renewed lease's versionstamp, or null if the lease was lost.
 */
async function advanceStep(
  kv: ServerKv,
  realm: string,
  snapshot: SnapshotInfo,
  snapshotStamp: string | null,
  target: number,
  leaseStamp: string,
  owner: string,
  options: AdvanceOptions,
): Promise<string | null> {
  const { retry } = options;
  const pieces = options.pieces ?? REMOTE_PIECES;
  const read = await readHistory(
    kv,
    realm,
    snapshot.version + 1,
    Math.min(target, snapshot.version + pieces.stepVersions),
    pieces.stepBytes,
    retry,
  );
  if (read.gap || read.items.length === 0) {
    throw new Error(
      `Cannot advance the snapshot of ${realm}: history after version ${snapshot.version} is missing`,
    );
  }
  // Load every touched record once, in first-touch order.
  const touched = new Map<string, Touched>();
  const order: { type: string; id: string; name: string }[] = [];
  const seen = new Set<string>();
  for (const item of read.items) {
    for (const instruction of item.changeset.instructions) {
      const name = recordName(instruction.type, instruction.id);
      if (seen.has(name)) continue;
      seen.add(name);
      order.push({ type: instruction.type, id: instruction.id, name });
    }
  }
  const loadSlice = async (start: number): Promise<void> => {
    const slice = order.slice(start, start + GET_MANY_KEYS);
    const entries = await retryKv(
      () =>
        kv.getMany<StoredBytes[]>(
          slice.map(({ type, id }) => objectKey(realm, type, id)),
        ),
      retry,
    );
    for (let index = 0; index < slice.length; index++) {
      const { type, id, name } = slice[index]!;
      const stored = entries[index]!.value;
      const record = stored === null
        ? emptyRecord(type, id)
        : await loadRecord(kv, realm, type, id, stored, retry);
      touched.set(name, {
        key: objectKey(realm, type, id),
        record,
        previous: stored,
      });
    }
  };
  // Several reads in flight: on a remote store each one is a round trip.
  const inFlight = GET_MANY_KEYS * PARALLEL_READS;
  for (let start = 0; start < order.length; start += inFlight) {
    const starts = [];
    for (
      let slice = start;
      slice < Math.min(order.length, start + inFlight);
      slice += GET_MANY_KEYS
    ) {
      starts.push(slice);
    }
    await Promise.all(starts.map(loadSlice));
  }
  // Writes go in first-touch order, whatever order the reads finished in.
  const ordered = new Map<string, Touched>();
  for (const { name } of order) ordered.set(name, touched.get(name)!);
  for (const item of read.items) {
    for (const instruction of item.changeset.instructions) {
      const entry = touched.get(recordName(instruction.type, instruction.id))!;
      applyInstruction(
        entry.record,
        instruction,
        instruction.stamp ?? item.changeset.stamp,
      );
    }
  }
  // Write the records in as many operations as the limits need, each one
  // checking the lease, then the version record.
  let bytesDelta = 0;
  let objectsDelta = 0;
  let operation = kv.atomic().check({
    key: snapshotLeaseKey(realm),
    versionstamp: leaseStamp,
  });
  let mutations = 0;
  let operationBytes = 0;
  const flush = async (): Promise<boolean> => {
    if (mutations === 0) return true;
    const result = await retryKv(() => operation.commit(), retry);
    operation = kv.atomic().check({
      key: snapshotLeaseKey(realm),
      versionstamp: leaseStamp,
    });
    mutations = 0;
    operationBytes = 0;
    return result.ok;
  };
  for (const entry of ordered.values()) {
    const bytes = encodeRecord(entry.record);
    const stored = needsBlob(bytes)
      ? await retryKv(() => writeBlob(kv, realm, bytes), retry)
      : inlineBytes(bytes);
    const size = (stored.data?.length ?? 0) + 64;
    const parts = entry.previous?.parts ?? 0;
    if (
      mutations + 1 + parts > pieces.operationMutations ||
      operationBytes + size > pieces.operationBytes
    ) {
      if (!await flush()) return null;
    }
    operation.set(entry.key, stored);
    if (entry.previous !== null) deleteBlob(operation, realm, entry.previous);
    mutations += 1 + parts;
    operationBytes += size;
    bytesDelta += stored.size - (entry.previous?.size ?? 0);
    if (entry.previous === null) objectsDelta++;
  }
  if (!await flush()) return null;
  const last = read.items[read.items.length - 1]!;
  const next: SnapshotInfo = {
    version: last.version,
    bytes: snapshot.bytes + bytesDelta,
    historyBytes: last.cumulativeBytes,
    objects: snapshot.objects + objectsDelta,
    salt: last.salt,
  };
  const result = await retryKv(
    () =>
      kv.atomic()
        .check({ key: snapshotLeaseKey(realm), versionstamp: leaseStamp })
        .check({ key: snapshotKey(realm), versionstamp: snapshotStamp })
        .set(snapshotKey(realm), next)
        .set(
          snapshotLeaseKey(realm),
          {
            owner,
            expiresAt: options.now() + options.leaseMs,
          } satisfies Lease,
        )
        .commit(),
    retry,
  );
  return result.ok ? result.versionstamp : null;
}

/**
 * Deletes history at or below `floor` (never at or above the snapshot's
 * version, which the caller guarantees). The compaction marker moves first,
 * so a reader that finds a version missing knows to bootstrap instead.
 */
async function compactHistory(
  kv: ServerKv,
  realm: string,
  floor: number,
  leaseStamp: string,
  retry: RetryOptions,
  pieces: AdvancePieces,
): Promise<number> {
  const markerEntry = await retryKv(
    () => kv.get<number>(compactedKey(realm)),
    retry,
  );
  const compacted = markerEntry.value ?? 0;
  if (floor <= compacted) return compacted;
  const marked = await retryKv(
    () =>
      kv.atomic()
        .check({ key: snapshotLeaseKey(realm), versionstamp: leaseStamp })
        .check(markerEntry)
        .set(compactedKey(realm), floor)
        .commit(),
    retry,
  );
  if (!marked.ok) return compacted;
  // Each operation that deletes entries also keeps their salts (one
  // `CompactedSalts` record), so a client whose cursor is on a compacted
  // version can still be checked at BIND.
  let operation = kv.atomic();
  let mutations = 0;
  let first = 0;
  let salts: number[] = [];
  const commit = async () => {
    if (mutations === 0) return;
    const packed = new Uint8Array(salts.length * 4);
    const view = new DataView(packed.buffer);
    salts.forEach((salt, index) => view.setUint32(index * 4, salt, true));
    operation.set(
      saltsKey(realm, first),
      { salts: packed } satisfies CompactedSalts,
    );
    await retryKv(() => operation.commit(), retry);
    operation = kv.atomic();
    mutations = 0;
    salts = [];
  };
  for await (
    const entry of kv.list<HistoryEntry>({
      start: historyKey(realm, compacted + 1),
      end: historyKey(realm, floor + 1),
    }, { batchSize: pieces.listBatch })
  ) {
    const version = entry.key[entry.key.length - 1] as number;
    const parts = entry.value.changeset.parts;
    if (
      mutations + 2 + parts > pieces.operationMutations ||
      (mutations > 0 && version - first >= SALTS_PER_RECORD)
    ) {
      await commit();
    }
    if (mutations === 0) first = version;
    // A version missing from the list (never expected) keeps salt 0.
    while (first + salts.length < version) salts.push(0);
    salts.push(entry.value.salt ?? 0);
    operation.delete(entry.key);
    deleteBlob(operation, realm, entry.value.changeset);
    mutations += 1 + parts;
  }
  await commit();
  return floor;
}

// Versions one `CompactedSalts` record spans at most (16 KiB of salts).
const SALTS_PER_RECORD = 4096;

function recordName(type: string, id: string): string {
  // The length prefix keeps ("ab", "c") and ("a", "bc") apart.
  return `${type.length}:${type}${id}`;
}

/** Encodes a record as a download changeset of its instructions. */
export function encodeRecord(record: ObjectRecord): Uint8Array<ArrayBuffer> {
  return encodeDownloadChangeset({
    serverVersion: 0,
    stamp: SNAPSHOT_STAMP,
    instructions: recordToInstructions(record),
  });
}

/** The instructions of a stored record (each with its own stamp). */
export function decodeRecordInstructions(bytes: Uint8Array): Instruction[] {
  return decodeDownloadChangeset(bytes).instructions;
}

async function loadRecord(
  kv: ServerKv,
  realm: string,
  type: string,
  id: string,
  stored: StoredBytes,
  retry: RetryOptions,
): Promise<ObjectRecord> {
  // The lease holder is the only writer of records, so the blob cannot be
  // replaced under it.
  const bytes = await retryKv(
    () => readStoredBytes(kv, realm, stored),
    retry,
  );
  if (bytes === null) {
    throw new Error(`Cannot read the snapshot record of ${type} ${id}`);
  }
  const record = emptyRecord(type, id);
  for (const instruction of decodeRecordInstructions(bytes)) {
    applyInstruction(record, instruction, instruction.stamp ?? SNAPSHOT_STAMP);
  }
  return record;
}

/** One object of the snapshot, read for a bootstrap. */
export interface SnapshotObject {
  /** The record's instructions, each with its own stamp. */
  instructions: Instruction[];
  /** The record's stored size in bytes. */
  size: number;
}

/**
 * Lists the snapshot's records in key order, `batchSize` at a time. Records
 * may be newer than the version record (a step in progress), never older.
 */
export async function* listSnapshotObjects(
  kv: ServerKv,
  realm: string,
  retry: RetryOptions,
): AsyncGenerator<SnapshotObject> {
  let cursor: string | undefined;
  for (;;) {
    const page = await retryKv(async () => {
      const iterator = kv.list<StoredBytes>(
        { prefix: objectKey(realm) },
        { limit: 100, ...(cursor === undefined ? {} : { cursor }) },
      );
      const entries: Deno.KvEntry<StoredBytes>[] = [];
      for await (const entry of iterator) entries.push(entry);
      return { entries, cursor: iterator.cursor };
    }, retry);
    for (const entry of page.entries) {
      const bytes = await readObjectBytes(kv, realm, entry, retry);
      if (bytes === null) continue;
      yield {
        instructions: decodeRecordInstructions(bytes),
        size: bytes.length,
      };
    }
    if (page.entries.length < 100 || page.cursor === "") return;
    cursor = page.cursor;
  }
}

/**
 * Reads a snapshot record's bytes, reading the record again when its blob
 * was replaced meanwhile; null when the record is gone.
 */
export async function readObjectBytes(
  kv: ServerKv,
  realm: string,
  entry: Deno.KvEntry<StoredBytes>,
  retry: RetryOptions,
): Promise<Uint8Array | null> {
  let stored: StoredBytes | null = entry.value;
  // A blob may be replaced (and its parts deleted) between listing the
  // record and reading the parts: read the record again, a few times.
  for (let attempt = 0; attempt < 5 && stored !== null; attempt++) {
    const current: StoredBytes = stored;
    const bytes = await retryKv(
      () => readStoredBytes(kv, realm, current),
      retry,
    );
    if (bytes !== null) return bytes;
    stored = (await retryKv(() => kv.get<StoredBytes>(entry.key), retry))
      .value;
  }
  if (stored === null) return null;
  throw new Error(`Cannot read the snapshot record ${String(entry.key)}`);
}

/** A download changeset for a batch of snapshot instructions. */
export function snapshotChangeset(
  version: number,
  instructions: Instruction[],
): DownloadChangeset {
  return { serverVersion: version, stamp: SNAPSHOT_STAMP, instructions };
}
