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
import { delay } from "../../util/delay.ts";
import { backoffDelayMs, retryKv, type RetryOptions } from "./retry.ts";

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
  return crypto.getRandomValues(new Uint32Array(1))[0]! || 1;
}

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
  kv: Deno.Kv,
  realm: string,
  options: RetryOptions,
): Promise<Head> {
  const entry = await retryKv(() => kv.get<Head>(headKey(realm)), options);
  return entry.value ?? EMPTY_HEAD;
}

// A group of changesets committed together stays well inside the limits of
// one atomic operation (1000 mutations, 800 KiB): two sets per group (head,
// identity) plus one per changeset.
const GROUP_MAX_CHANGESETS = 500;
const GROUP_MAX_BYTES = 600_000;

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

interface Pending {
  upload: UploadChangeset;
  stored: StoredBytes;
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
  kv: Deno.Kv,
  realm: string,
  identity: ClientIdentity,
  changesets: readonly UploadChangeset[],
  options: RetryOptions,
  committed?: CommittedState,
): Promise<IntegrateResult> {
  const integrated: HistoryItem[] = [];
  let acknowledged = 0;
  let head: Head = EMPTY_HEAD;
  const pending: Pending[] = [];
  for (const upload of changesets) {
    const bytes = encodeDownloadChangeset({
      serverVersion: 0,
      stamp: upload.stamp,
      instructions: upload.instructions,
    });
    const stored = needsBlob(bytes)
      ? await retryKv(() => writeBlob(kv, realm, bytes), options)
      : inlineBytes(bytes);
    pending.push({ upload, stored });
  }
  let start = 0;
  do {
    let end = start;
    let groupBytes = 0;
    while (
      end < pending.length && end - start < GROUP_MAX_CHANGESETS &&
      (end === start ||
        groupBytes + (pending[end]!.stored.data?.length ?? 0) <=
          GROUP_MAX_BYTES)
    ) {
      groupBytes += pending[end]!.stored.data?.length ?? 0;
      end++;
    }
    const group = pending.slice(start, end);
    // The first attempt may check what this process committed last
    // instead of reading it; a failed check reads.
    let known = committed?.head != null &&
      committed.identities.has(identity.id);
    for (let attempt = 1;; attempt++) {
      const [headEntry, identityEntry] = known
        ? [committed!.head!, committed!.identities.get(identity.id)!]
        : await retryKv(
          () =>
            kv.getMany<[Head, IdentityRecord]>([
              headKey(realm),
              identityKey(realm, identity.id),
            ]),
          options,
        );
      const fromMemory = known;
      known = false;
      const record = identityEntry.value;
      if (record === null || record.salt !== identity.salt) {
        throw new UnknownIdentityError(
          `Cannot integrate changesets: client identity ${identity.id} is unknown in realm ${
            JSON.stringify(realm)
          }`,
        );
      }
      head = headEntry.value ?? EMPTY_HEAD;
      acknowledged = Math.max(acknowledged, record.lastClientVersion);
      const fresh = group.filter((item) =>
        item.upload.clientVersion > record.lastClientVersion
      );
      if (fresh.length === 0) break;
      const operation = kv.atomic().check(headEntry).check(identityEntry);
      let version = head.version;
      let bytes = head.bytes;
      const items: HistoryItem[] = [];
      for (const { upload, stored } of fresh) {
        version++;
        bytes += stored.size;
        const salt = randomVersionSalt();
        const entry: HistoryEntry = {
          identity: identity.id,
          clientVersion: upload.clientVersion,
          cumulativeBytes: bytes,
          salt,
          changeset: stored,
        };
        operation.set(historyKey(realm, version), entry);
        items.push({
          version,
          identity: identity.id,
          clientVersion: upload.clientVersion,
          size: stored.size,
          cumulativeBytes: bytes,
          salt,
          changeset: {
            serverVersion: version,
            stamp: upload.stamp,
            instructions: upload.instructions,
          },
        });
      }
      const last = fresh[fresh.length - 1]!.upload.clientVersion;
      const nextHead: Head = { version, bytes };
      operation.set(headKey(realm), nextHead);
      // The record is rewritten whole: keep its `rejected` flag.
      const nextRecord: IdentityRecord = { ...record, lastClientVersion: last };
      operation.set(identityKey(realm, identity.id), nextRecord);
      const result = await retryKv(() => operation.commit(), options);
      if (result.ok) {
        integrated.push(...items);
        acknowledged = last;
        head = nextHead;
        if (committed !== undefined) {
          const versionstamp = result.versionstamp;
          committed.head = {
            key: headKey(realm),
            value: nextHead,
            versionstamp,
          };
          if (
            !committed.identities.has(identity.id) &&
            committed.identities.size >= COMMITTED_IDENTITIES
          ) {
            committed.identities.clear();
          }
          committed.identities.set(identity.id, {
            key: identityKey(realm, identity.id),
            value: nextRecord,
            versionstamp,
          });
        }
        break;
      }
      // What this process committed last is stale: read, without waiting.
      if (fromMemory) {
        attempt--;
        continue;
      }
      await delay(backoffDelayMs(attempt), options.signal);
    }
    start = end;
  } while (start < pending.length);
  return { lastIntegratedClientVersion: acknowledged, head, integrated };
}

/** What {@linkcode readHistory} found. */
export interface HistoryRead {
  /** Consecutive items from `fromVersion` on (may be empty). */
  items: HistoryItem[];
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
  kv: Deno.Kv,
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
  kv: Deno.Kv,
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
  kv: Deno.Kv,
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
