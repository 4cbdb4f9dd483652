import { blobKey } from "./keys.ts";
import type { ServerKv } from "./kv_store.ts";

/**
 * Values larger than one Deno KV value (64 KiB) are split into parts stored
 * under a blob id; the record that owns them holds a {@linkcode StoredBytes}
 * reference. Small values are stored inline in the record itself.
 */

/** Largest byte string stored inline in a record, or as one blob part. */
export const PART_BYTES = 60_000;

/**
 * Bytes the server stores, inline (`data`) or as `parts` parts of blob
 * `blob`. `size` is the byte length either way.
 */
export interface StoredBytes {
  size: number;
  data: Uint8Array | null;
  blob: string | null;
  parts: number;
}

/** Whether `bytes` must go to a blob. */
export function needsBlob(bytes: Uint8Array): boolean {
  return bytes.length > PART_BYTES;
}

/** A stored reference to inline bytes. */
export function inlineBytes(bytes: Uint8Array): StoredBytes {
  return { size: bytes.length, data: bytes, blob: null, parts: 0 };
}

/** Most parts written by one atomic operation (12 × 60 KB < 800 KiB). */
const PARTS_PER_COMMIT = 12;

/**
 * Writes `bytes` as a new blob in as many atomic operations as the KV limits
 * require, and returns the reference. Parts live under a fresh random id, so
 * nothing else can be writing them and no check is needed; a crash before
 * the reference is committed leaves an unreferenced blob, never a torn one.
 */
export async function writeBlob(
  kv: ServerKv,
  realm: string,
  bytes: Uint8Array,
): Promise<StoredBytes> {
  const blob = crypto.randomUUID();
  const parts = Math.ceil(bytes.length / PART_BYTES);
  for (let first = 0; first < parts; first += PARTS_PER_COMMIT) {
    const operation = kv.atomic();
    for (
      let part = first;
      part < Math.min(parts, first + PARTS_PER_COMMIT);
      part++
    ) {
      operation.set(
        blobKey(realm, blob, part),
        bytes.subarray(part * PART_BYTES, (part + 1) * PART_BYTES),
      );
    }
    const result = await operation.commit();
    if (!result.ok) throw new Error("Cannot write blob: commit refused");
  }
  return { size: bytes.length, data: null, blob, parts };
}

/**
 * Reads stored bytes back, or returns null when the blob's parts are gone
 * (deleted by compaction after the reference was read).
 */
export async function readStoredBytes(
  kv: ServerKv,
  realm: string,
  stored: StoredBytes,
): Promise<Uint8Array | null> {
  if (stored.data !== null) return stored.data;
  if (stored.blob === null) return null;
  const bytes = new Uint8Array(stored.size);
  let offset = 0;
  let seen = 0;
  for await (
    const entry of kv.list<Uint8Array>({ prefix: blobKey(realm, stored.blob) })
  ) {
    const part = entry.value;
    if (offset + part.length > bytes.length) return null;
    bytes.set(part, offset);
    offset += part.length;
    seen++;
  }
  return seen === stored.parts && offset === stored.size ? bytes : null;
}

/** Adds deletions of a blob's parts to an atomic operation. */
export function deleteBlob(
  operation: Deno.AtomicOperation,
  realm: string,
  stored: StoredBytes,
): number {
  if (stored.blob === null) return 0;
  for (let part = 0; part < stored.parts; part++) {
    operation.delete(blobKey(realm, stored.blob, part));
  }
  return stored.parts;
}
