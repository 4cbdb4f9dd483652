/**
 * The server's Deno KV key layout (docs/ARCHITECTURE.md "Server storage"). Every
 * key starts with {@linkcode ROOT} so the server can share a store with the
 * application that embeds it. Realm paths are one key part each, so a
 * prefix list of one realm never reaches into another.
 */

import { utf8Length } from "../../util/utf8_length.ts";

/** First part of every key the server writes. */
export const ROOT = "tether";

/** Longest key Deno KV writes, in encoded bytes. */
export const MAX_KEY_BYTES = 2048;

/**
 * The encoded size of a key of strings and numbers, as Deno KV counts it
 * against {@linkcode MAX_KEY_BYTES}: each string part takes
 * {@linkcode keyPartBytes}, each number part a tag and eight bytes.
 */
export function keyBytes(key: Deno.KvKey): number {
  let bytes = 0;
  for (const part of key) {
    bytes += typeof part === "string" ? keyPartBytes(part) : 9;
  }
  return bytes;
}

/**
 * The encoded size of one string key part: a tag, its UTF-8 bytes (a NUL
 * byte twice: it is escaped) and a terminator. At most three bytes per
 * UTF-16 unit, plus two.
 */
export function keyPartBytes(part: string): number {
  let bytes = 2 + utf8Length(part);
  for (
    let index = part.indexOf("\0");
    index >= 0;
    index = part.indexOf("\0", index + 1)
  ) {
    bytes++;
  }
  return bytes;
}

/** The server's token signing key (raw bytes), shared by every process. */
export function signingKeyKey(): Deno.KvKey {
  return [ROOT, "server", "signing_key"];
}

/** A realm's head: `{ version, bytes }` of its history. */
export function headKey(realm: string): Deno.KvKey {
  return [ROOT, "realm", realm, "head"];
}

/** One history entry, or (without `version`) the prefix of all of them. */
export function historyKey(realm: string, version?: number): Deno.KvKey {
  return version === undefined
    ? [ROOT, "realm", realm, "history"]
    : [ROOT, "realm", realm, "history", version];
}

/** One part of a chunked value, or the prefix of all parts of one blob. */
export function blobKey(
  realm: string,
  blobId: string,
  part?: number,
): Deno.KvKey {
  return part === undefined
    ? [ROOT, "realm", realm, "blob", blobId]
    : [ROOT, "realm", realm, "blob", blobId, part];
}

/** The counter client identities are allocated from. */
export function identityCounterKey(realm: string): Deno.KvKey {
  return [ROOT, "realm", realm, "identities"];
}

/** One client identity: `{ salt, lastClientVersion }`. */
export function identityKey(realm: string, id: number): Deno.KvKey {
  return [ROOT, "realm", realm, "identity", id];
}

/** The snapshot's version record. */
export function snapshotKey(realm: string): Deno.KvKey {
  return [ROOT, "realm", realm, "snapshot"];
}

/** One object's record in the snapshot, or the prefix of all of them. */
export function objectKey(
  realm: string,
  type?: string,
  id?: string,
): Deno.KvKey {
  if (type === undefined) return [ROOT, "realm", realm, "object"];
  return [ROOT, "realm", realm, "object", type, id ?? ""];
}

/** The lease that lets one process at a time advance the snapshot. */
export function snapshotLeaseKey(realm: string): Deno.KvKey {
  return [ROOT, "realm", realm, "snapshot_lease"];
}

/**
 * A changeset the server refused (REJECT), kept until the client's BIND
 * shows it settled, or the prefix of one identity's refusals.
 */
export function rejectionKey(
  realm: string,
  identity: number,
  clientVersion?: number,
): Deno.KvKey {
  const prefix = [ROOT, "realm", realm, "rejection", identity];
  return clientVersion === undefined ? prefix : [...prefix, clientVersion];
}

/**
 * Salts of compacted history versions from `first` on (`CompactedSalts`
 * in history.ts), or with `first` 0 the start of their range.
 */
export function saltsKey(realm: string, first: number): Deno.KvKey {
  return [ROOT, "realm", realm, "salts", first];
}

/** The highest version deleted from history by compaction. */
export function compactedKey(realm: string): Deno.KvKey {
  return [ROOT, "realm", realm, "compacted"];
}
