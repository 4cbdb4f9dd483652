import type {
  DownloadChangeset,
  UploadChangeset,
} from "../../model/changeset.ts";
import type { ClientIdentity } from "../../protocol/messages.ts";
import { encodeDownloadChangeset } from "../../protocol/encode.ts";
import { decodeDownloadChangeset } from "../../protocol/decode.ts";
import {
  inlineBytes,
  needsBlob,
  readStoredBytes,
  type StoredBytes,
  writeBlob,
} from "./chunks.ts";
import type { IdentityRecord } from "./identities.ts";
import { headKey, historyKey, identityKey, saltsKey } from "./keys.ts";
import { readMany } from "./read_many.ts";
import { delay } from "../../util/delay.ts";
import { backoffDelayMs, retryKv, type RetryOptions } from "./retry.ts";
import type { ServerKv } from "./kv_store.ts";

/**
 * A realm's history in Deno KV (docs/ARCHITECTURE.md "Server storage"): server
 * versions 1, 2, 3, …, each assigned in an atomic commit guarded by a check
 * on the realm's head, so two processes can never assign one version twice
 * or lose a changeset.
 */

/** The newest version of a realm and the cumulative bytes of its history. */
export interface Head {
  version: number;
  bytes: number;
}

/** A realm before its first changeset. */
export const EMPTY_HEAD: Readonly<Head> = Object.freeze({
  version: 0,
  bytes: 0,
});

/** One stored history entry (the value under `historyKey(realm, v)`). */
export interface HistoryEntry {
  /** The client identity that uploaded the changeset. */
  identity: number;
  clientVersion: number;
  /** Sum of the sizes of every changeset up to and including this one. */
  cumulativeBytes: number;
  /**
   * The version's random salt, chosen at commit (docs/PROTOCOL.md §4.11);
   * absent in entries written before salts existed (unknown: not checked).
   */
  salt?: number;
  /**
   * The changeset encoded with `encodeDownloadChangeset` and server version
   * 0 (the version is the key; encoding before it is known lets large
   * changesets be staged before the commit that numbers them).
   */
  changeset: StoredBytes;
}

/** A history entry read back, with its changeset decoded. */
export interface HistoryItem {
  version: number;
  identity: number;
  clientVersion: number;
  /** Encoded size of the changeset in bytes. */
  size: number;
  cumulativeBytes: number;
  /** The version's salt (0 = unknown, an entry older than salts). */
  salt: number;
  changeset: DownloadChangeset;
}

/**
 * A random version salt in [1, 2^32 − 1] (docs/PROTOCOL.md §4.11): a server
 * restored from an older copy numbers its new versions as the lost ones
 * were, but almost surely salts them differently, which is how it tells a
 * client's cursor on a lost version from one on its own.
 */
export function randomVersionSalt(): number {
  // One getRandomValues call per 256 salts, not per version: the call
  // crosses into Rust and allocated an array on every commit.
  if (saltsLeft === 0) {
    crypto.getRandomValues(saltPool);
    saltsLeft = saltPool.length;
  }
  return saltPool[--saltsLeft]! || 1;
}

const saltPool = new Uint32Array(256);
let saltsLeft = 0;

/** Thrown when an upload's identity is unknown or its salt is wrong. */
export class UnknownIdentityError extends Error {
  /** @param message Detail for the log and the client. */
  constructor(message: string) {
    super(message);
    this.name = "UnknownIdentityError";
  }
}

/** What {@linkcode integrateChangesets} did. */
export interface IntegrateResult {
  /** The acknowledgement: every client version at or below it is stored. */
  lastIntegratedClientVersion: number;
  /** The head after the last commit this call made (or read). */
  head: Head;
  /** Changesets stored by this call, in version order. */
  integrated: HistoryItem[];
}

/** Reads a realm's head (strongly consistent). */
export async function readHead(
  kv: ServerKv,
  realm: string,
  options: RetryOptions,
): Promise<Head> {
  const entry = await retryKv(() => kv.get<Head>(headKey(realm)), options);
  return entry.value ?? EMPTY_HEAD;
}

// A group of changesets committed together stays well inside the limits of
// one atomic operation (docs/ARCHITECTURE.md "Server storage": 1000
// mutations, 800 KiB, and 10 checks on denokv, 100 on a local KV): one set
// per changeset, plus a check and a set for the head and for each identity,
// so at most 9 identities. Their head and records are then one getMany
// (at most 10 keys).
const GROUP_MAX_CHANGESETS = 500;
const GROUP_MAX_BYTES = 600_000;
const GROUP_MAX_IDENTITIES = 9;

/**
 * The head and identity entries this process last committed for one realm,
 * with their versionstamps, so the next commit can check them instead of
 * reading them first. The atomic check still guards every commit: when
 * another process (or a rejection, a snapshot) wrote either key since, the
 * check fails and the commit reads them as usual.
 */
export interface CommittedState {
  head: Deno.KvEntry<Head> | null;
  /** By identity id. */
  identities: Map<number, Deno.KvEntry<IdentityRecord>>;
}

// Identities a realm's committed state keeps at most.
const COMMITTED_IDENTITIES = 1024;

/** One upload of a group: one identity's changesets, client versions increasing. */
export interface GroupUpload {
  identity: ClientIdentity;
  changesets: readonly UploadChangeset[];
}

/** How one upload of a group ended: stored (or found stored), or failed. */
export type GroupOutcome =
  | { ok: true; result: IntegrateResult }
  | { ok: false; error: unknown };

/** Uploads settled by one commit of a group, in upload order. */
export type GroupSettled = { index: number; outcome: GroupOutcome }[];

// One changeset of a group, staged; a null changeset stands for an upload
// with none, which still needs its identity checked and its acknowledgement.
interface Staged {
  upload: number;
  changeset: UploadChangeset | null;
  stored: StoredBytes | null;
}

/**
 * Stores every changeset of `changesets` (client versions increasing) whose
 * client version is above the identity's last integrated one; the others
 * are re-uploads, acknowledged without being stored again. Commits are
 * retried until they win against concurrent writers.
 *
 * @throws {UnknownIdentityError} When the realm never issued `identity`.
 */
export async function integrateChangesets(
  kv: ServerKv,
  realm: string,
  identity: ClientIdentity,
  changesets: readonly UploadChangeset[],
  options: RetryOptions,
  committed?: CommittedState,
): Promise<IntegrateResult> {
  const [outcome] = await integrateGroup(
    kv,
    realm,
    [{ identity, changesets }],
    options,
    committed,
  );
  if (!outcome!.ok) throw outcome!.error;
  return outcome!.result;
}

/**
 * Group commit (docs/ARCHITECTURE.md "Write flow on the server"):
 * integrates several uploads, of one identity or many, in as few atomic
 * operations as the KV limits allow, in upload order. Each operation checks the head and every
 * identity it advances, and sets each such identity's record once, so it
 * either stores all of its changesets or none. Per identity the same rule
 * as {@linkcode integrateChangesets} holds across the group: a changeset at
 * or below the identity's last integrated client version (stored before,
 * or earlier in the group) is acknowledged, not stored again.
 *
 * An upload whose identity is unknown fails alone, with
 * {@linkcode UnknownIdentityError}. A storage failure fails every upload
 * not yet settled: none of them is acknowledged. `onSettled` is told the
 * uploads each commit settled, in upload order, as soon as it is durable.
 *
 * @returns One outcome per upload, in the same order.
 */
export async function integrateGroup(
  kv: ServerKv,
  realm: string,
  uploads: readonly GroupUpload[],
  options: RetryOptions,
  committed?: CommittedState,
  onSettled: (settled: GroupSettled) => void = () => {},
): Promise<GroupOutcome[]> {
  const outcomes: (GroupOutcome | undefined)[] = uploads.map(() => undefined);
  const acks = uploads.map(() => 0);
  const integrated: HistoryItem[][] = uploads.map(() => []);
  let head: Head = EMPTY_HEAD;
  let reported = 0;
  const settle = (through: number, failure?: { error: unknown }) => {
    const settled: GroupSettled = [];
    for (; reported < through; reported++) {
      let outcome = outcomes[reported];
      if (outcome === undefined) {
        outcome = failure !== undefined
          ? { ok: false, error: failure.error }
          : {
            ok: true,
            result: {
              lastIntegratedClientVersion: acks[reported]!,
              head,
              integrated: integrated[reported]!,
            },
          };
        outcomes[reported] = outcome;
      }
      settled.push({ index: reported, outcome });
    }
    if (settled.length > 0) onSettled(settled);
  };
  const staged: Staged[] = [];
  try {
    for (let index = 0; index < uploads.length; index++) {
      const { changesets } = uploads[index]!;
      if (changesets.length === 0) {
        staged.push({ upload: index, changeset: null, stored: null });
      }
      for (const upload of changesets) {
        const bytes = encodeDownloadChangeset({
          serverVersion: 0,
          stamp: upload.stamp,
          instructions: upload.instructions,
        });
        const stored = needsBlob(bytes)
          ? await retryKv(() => writeBlob(kv, realm, bytes), options)
          : inlineBytes(bytes);
        staged.push({ upload: index, changeset: upload, stored });
      }
    }
  } catch (error) {
    settle(uploads.length, { error });
    return outcomes as GroupOutcome[];
  }
  let start = 0;
  while (start < staged.length) {
    let end = start;
    let groupBytes = 0;
    const ids = new Set<number>();
    while (end < staged.length && end - start < GROUP_MAX_CHANGESETS) {
      const item = staged[end]!;
      const size = item.stored?.data?.length ?? 0;
      const id = uploads[item.upload]!.identity.id;
      if (
        end > start &&
        (groupBytes + size > GROUP_MAX_BYTES ||
          (!ids.has(id) && ids.size >= GROUP_MAX_IDENTITIES))
      ) {
        break;
      }
      groupBytes += size;
      ids.add(id);
      end++;
    }
    try {
      head = await commitGroup(
        kv,
        realm,
        uploads,
        staged.slice(start, end),
        outcomes,
        acks,
        integrated,
        options,
        committed,
      );
    } catch (error) {
      settle(uploads.length, { error });
      return outcomes as GroupOutcome[];
    }
    // Every upload whose last changeset this commit held is settled.
    const next = staged[end]?.upload ?? uploads.length;
    settle(next);
    start = end;
  }
  settle(uploads.length);
  return outcomes as GroupOutcome[];
}

/**
 * Commits one KV-sized part of a group (see {@linkcode integrateGroup});
 * returns the head after it. Fails uploads whose identity is unknown in
 * `outcomes`, and advances `acks` and `integrated` once the commit is
 * durable.
 */
async function commitGroup(
  kv: ServerKv,
  realm: string,
  uploads: readonly GroupUpload[],
  part: readonly Staged[],
  outcomes: (GroupOutcome | undefined)[],
  acks: number[],
  integrated: HistoryItem[][],
  options: RetryOptions,
  committed: CommittedState | undefined,
): Promise<Head> {
  let head: Head = EMPTY_HEAD;
  // The first attempt may check what this process committed last instead
  // of reading it; a failed check reads.
  let known = committed?.head != null &&
    part.every((item) =>
      committed.identities.has(uploads[item.upload]!.identity.id)
    );
  for (let attempt = 1;; attempt++) {
    const live = part.filter((item) => outcomes[item.upload] === undefined);
    const ids = [
      ...new Set(live.map((item) => uploads[item.upload]!.identity.id)),
    ];
    let headEntry: Deno.KvEntryMaybe<Head>;
    const records = new Map<number, Deno.KvEntryMaybe<IdentityRecord>>();
    if (known) {
      headEntry = committed!.head!;
      for (const id of ids) records.set(id, committed!.identities.get(id)!);
    } else {
      const keys = [headKey(realm), ...ids.map((id) => identityKey(realm, id))];
      const entries = await retryKv(() => readMany(kv, keys), options);
      headEntry = entries[0] as Deno.KvEntryMaybe<Head>;
      ids.forEach((id, at) =>
        records.set(id, entries[at + 1] as Deno.KvEntryMaybe<IdentityRecord>)
      );
    }
    const fromMemory = known;
    known = false;
    head = headEntry.value ?? EMPTY_HEAD;
    // Each upload's identity (and salt) is checked on its own: one unknown
    // identity fails its uploads, not the group.
    for (const item of live) {
      if (outcomes[item.upload] !== undefined) continue;
      const { identity } = uploads[item.upload]!;
      const record = records.get(identity.id)!.value;
      if (record === null || record.salt !== identity.salt) {
        outcomes[item.upload] = {
          ok: false,
          error: new UnknownIdentityError(
            `Cannot integrate changesets: client identity ${identity.id} is unknown in realm ${
              JSON.stringify(realm)
            }`,
          ),
        };
      }
    }
    const last = new Map<number, number>();
    for (const [id, entry] of records) {
      if (entry.value !== null) last.set(id, entry.value.lastClientVersion);
    }
    const acked = new Map<number, number>();
    const fresh: { upload: number; item: HistoryItem; stored: StoredBytes }[] =
      [];
    const advanced = new Set<number>();
    let version = head.version;
    let bytes = head.bytes;
    for (const item of live) {
      if (outcomes[item.upload] !== undefined) continue;
      const id = uploads[item.upload]!.identity.id;
      const before = last.get(id)!;
      let ack = Math.max(acked.get(item.upload) ?? acks[item.upload]!, before);
      const upload = item.changeset;
      if (upload !== null && upload.clientVersion > before) {
        version++;
        bytes += item.stored!.size;
        const salt = randomVersionSalt();
        last.set(id, upload.clientVersion);
        advanced.add(id);
        ack = upload.clientVersion;
        fresh.push({
          upload: item.upload,
          stored: item.stored!,
          item: {
            version,
            identity: id,
            clientVersion: upload.clientVersion,
            size: item.stored!.size,
            cumulativeBytes: bytes,
            salt,
            changeset: {
              serverVersion: version,
              stamp: upload.stamp,
              instructions: upload.instructions,
            },
          },
        });
      }
      acked.set(item.upload, ack);
    }
    if (fresh.length === 0) {
      for (const [upload, ack] of acked) acks[upload] = ack;
      return head;
    }
    const operation = kv.atomic().check(headEntry);
    for (const { item, stored } of fresh) {
      const entry: HistoryEntry = {
        identity: item.identity,
        clientVersion: item.clientVersion,
        cumulativeBytes: item.cumulativeBytes,
        salt: item.salt,
        changeset: stored,
      };
      operation.set(historyKey(realm, item.version), entry);
    }
    const nextHead: Head = { version, bytes };
    operation.set(headKey(realm), nextHead);
    // Each record is rewritten whole: keep its `rejected` flag.
    const nextRecords = new Map<number, IdentityRecord>();
    for (const id of advanced) {
      const record = {
        ...records.get(id)!.value!,
        lastClientVersion: last.get(id)!,
      };
      nextRecords.set(id, record);
      operation.check(records.get(id)!);
      operation.set(identityKey(realm, id), record);
    }
    const result = await retryKv(() => operation.commit(), options);
    if (result.ok) {
      for (const [upload, ack] of acked) acks[upload] = ack;
      for (const { upload, item } of fresh) integrated[upload]!.push(item);
      if (committed !== undefined) {
        const versionstamp = result.versionstamp;
        committed.head = { key: headKey(realm), value: nextHead, versionstamp };
        for (const id of advanced) {
          if (
            !committed.identities.has(id) &&
            committed.identities.size >= COMMITTED_IDENTITIES
          ) {
            committed.identities.clear();
          }
          committed.identities.set(id, {
            key: identityKey(realm, id),
            value: nextRecords.get(id)!,
            versionstamp,
          });
        }
      }
      return nextHead;
    }
    // What this process committed last is stale: read, without waiting.
    if (fromMemory) {
      attempt--;
      continue;
    }
    await delay(backoffDelayMs(attempt), options.signal);
  }
}

/** What {@linkcode readHistory} found. */
export interface HistoryRead {
  /** Consecutive items from `fromVersion` on (may be empty). */
  items: readonly HistoryItem[];
  /**
   * True when `fromVersion` is no longer stored (compacted away): the reader
   * must bootstrap from the snapshot. Callers only ask for versions at or
   * below a head they have read, so "nothing found" is a gap too.
   */
  gap: boolean;
}

/**
 * Bytes a changeset may take in a DOWNLOAD beyond its stored size: its real
 * server version (stored as 0) as a varint of up to 8 bytes, and a margin.
 */
export const ITEM_OVERHEAD_BYTES = 9;

/**
 * Reads consecutive history entries from `fromVersion` up to `toVersion`
 * whose sizes (each plus {@linkcode ITEM_OVERHEAD_BYTES}) add up to at most
 * `maxBytes`; one entry larger than that is read alone.
 */
export async function readHistory(
  kv: ServerKv,
  realm: string,
  fromVersion: number,
  toVersion: number,
  maxBytes: number,
  options: RetryOptions,
): Promise<HistoryRead> {
  const items: HistoryItem[] = [];
  if (toVersion < fromVersion) return { items, gap: false };
  let expected = fromVersion;
  const entries = await retryKv(async () => {
    const found: Deno.KvEntry<HistoryEntry>[] = [];
    let total = 0;
    for await (
      const entry of kv.list<HistoryEntry>({
        start: historyKey(realm, fromVersion),
        end: historyKey(realm, toVersion + 1),
      }, { batchSize: 100 })
    ) {
      const cost = entry.value.changeset.size + ITEM_OVERHEAD_BYTES;
      if (found.length > 0 && total + cost > maxBytes) break;
      found.push(entry);
      total += cost;
    }
    return found;
  }, options);
  for (const entry of entries) {
    const version = entry.key[entry.key.length - 1] as number;
    if (version !== expected) return { items, gap: items.length === 0 };
    const value = entry.value;
    const encoded = await retryKv(
      () => readStoredBytes(kv, realm, value.changeset),
      options,
    );
    if (encoded === null) return { items, gap: items.length === 0 };
    const changeset = decodeDownloadChangeset(encoded);
    changeset.serverVersion = version;
    items.push({
      version,
      identity: value.identity,
      clientVersion: value.clientVersion,
      size: value.changeset.size,
      cumulativeBytes: value.cumulativeBytes,
      salt: value.salt ?? 0,
      changeset,
    });
    expected++;
  }
  // The caller only asks for versions its head says exist, so finding none
  // means they were compacted away.
  return { items, gap: items.length === 0 };
}

/** What the server still knows of one version (see {@linkcode readVersionMeta}). */
export interface VersionMeta {
  /** Cumulative history bytes at the version, or null once compacted. */
  cumulativeBytes: number | null;
  /** The version's salt, or 0 when unknown (0 for version 0). */
  salt: number;
}

/**
 * Reads the cumulative history bytes and the salt of `version` (0 and 0 for
 * version 0). A compacted version has no bytes any more, but its salt is
 * kept (`readCompactedSalt`), so a client whose cursor is that old is still
 * told apart from one on another history.
 */
export async function readVersionMeta(
  kv: ServerKv,
  realm: string,
  version: number,
  options: RetryOptions,
): Promise<VersionMeta> {
  if (version === 0) return { cumulativeBytes: 0, salt: 0 };
  const entry = await retryKv(
    () => kv.get<HistoryEntry>(historyKey(realm, version)),
    options,
  );
  if (entry.value !== null) {
    return {
      cumulativeBytes: entry.value.cumulativeBytes,
      salt: entry.value.salt ?? 0,
    };
  }
  return {
    cumulativeBytes: null,
    salt: await readCompactedSalt(kv, realm, version, options),
  };
}

/**
 * The salts of compacted versions, one record per compaction step:
 * `{ salts }` under `saltsKey(realm, first)` holds the salts of versions
 * `first`, `first + 1`, … as 32-bit little-endian words (0 = unknown). It is
 * written in the same atomic operation that deletes those history entries,
 * so every version's salt is always in one place or the other.
 */
export interface CompactedSalts {
  salts: Uint8Array;
}

// Records looked at (newest first) for one version: overlapping records
// only come from two compactions racing, which the snapshot lease makes rare.
const SALT_RECORDS_SCANNED = 8;

/** Reads the salt kept for a compacted `version`, or 0 when none is. */
export async function readCompactedSalt(
  kv: ServerKv,
  realm: string,
  version: number,
  options: RetryOptions,
): Promise<number> {
  const records = await retryKv(async () => {
    const found: Deno.KvEntry<CompactedSalts>[] = [];
    for await (
      const entry of kv.list<CompactedSalts>({
        start: saltsKey(realm, 0),
        end: saltsKey(realm, version + 1),
      }, { reverse: true, limit: SALT_RECORDS_SCANNED })
    ) {
      found.push(entry);
    }
    return found;
  }, options);
  for (const record of records) {
    const first = record.key[record.key.length - 1] as number;
    const salts = record.value.salts;
    const offset = (version - first) * 4;
    if (!(salts instanceof Uint8Array) || offset + 4 > salts.length) continue;
    const view = new DataView(salts.buffer, salts.byteOffset, salts.length);
    const salt = view.getUint32(offset, true);
    if (salt !== 0) return salt;
  }
  return 0;
}
