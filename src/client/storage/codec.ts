// This module is browser compatible.

/**
 * The bytes a durable realm storage keeps per value (object records,
 * pending changesets, the meta record), shared by the Deno KV and IndexedDB
 * storages so both hold the same on-disk format version.
 */

import type { Hlc } from "../../model/hlc.ts";
import {
  applyInstruction,
  emptyRecord,
  type ObjectRecord,
  recordToInstructions,
} from "../../model/merge.ts";
import type { UploadChangeset } from "../../model/changeset.ts";
import {
  decodeDownloadChangeset,
  decodeUploadChangeset,
} from "../../protocol/decode.ts";
import {
  encodeDownloadChangeset,
  encodeUploadChangeset,
} from "../../protocol/encode.ts";
import { SyncError } from "../sync_error.ts";
import { MAX_VERSION_SALT } from "../../protocol/messages.ts";
import type { RealmMeta } from "./storage.ts";

/** Marks a store as Tether's (the header's `magic`). */
export const STORE_MAGIC = "tether.store";

/**
 * The on-disk format this build writes and reads. A store with a higher
 * number was written by a newer Tether and is refused; there is no older
 * format yet (1 is the first).
 */
export const STORE_FORMAT = 1;

/** The header a store carries once, whatever it holds. */
export interface StoreHeader {
  magic: string;
  format: number;
}

const RECORD_STAMP: Readonly<Hlc> = Object.freeze({
  time: 0,
  counter: 0,
  node: 0,
});

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** A `storage_invalid` error naming the store. */
export function invalidStore(
  where: string,
  detail: string,
  cause?: unknown,
): SyncError {
  return new SyncError(
    "storage_invalid",
    `Cannot open the store ${where}: ${detail}; it was left untouched`,
    cause === undefined ? {} : { cause },
  );
}

/**
 * Checks a stored header: throws `storage_invalid` for a foreign or newer
 * store.
 */
export function checkHeader(value: unknown, where: string): void {
  if (
    typeof value !== "object" || value === null ||
    (value as StoreHeader).magic !== STORE_MAGIC
  ) {
    throw invalidStore(where, "it is not a Tether store (foreign header)");
  }
  const format = (value as StoreHeader).format;
  if (!Number.isSafeInteger(format) || format < 1) {
    throw invalidStore(where, `its format version ${String(format)} is bad`);
  }
  if (format > STORE_FORMAT) {
    throw invalidStore(
      where,
      `it was written by a newer Tether (format ${format}; this build reads format ${STORE_FORMAT}); upgrade @tether/sync`,
    );
  }
}

function writeLength(target: number[], length: number): void {
  let rest = length;
  while (rest >= 0x80) {
    target.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  target.push(rest);
}

/** Encodes an object record: its type and id, then its instructions. */
export function encodeRecord(record: ObjectRecord): Uint8Array<ArrayBuffer> {
  const type = encoder.encode(record.type);
  const id = encoder.encode(record.id);
  const body = encodeDownloadChangeset({
    serverVersion: 0,
    stamp: RECORD_STAMP,
    instructions: recordToInstructions(record),
  });
  const head: number[] = [];
  writeLength(head, type.length);
  const middle: number[] = [];
  writeLength(middle, id.length);
  const bytes = new Uint8Array(
    head.length + type.length + middle.length + id.length + body.length,
  );
  let offset = 0;
  bytes.set(head, offset);
  offset += head.length;
  bytes.set(type, offset);
  offset += type.length;
  bytes.set(middle, offset);
  offset += middle.length;
  bytes.set(id, offset);
  offset += id.length;
  bytes.set(body, offset);
  return bytes;
}

function readLength(bytes: Uint8Array, start: number): [number, number] {
  let value = 0;
  let scale = 1;
  let offset = start;
  for (let i = 0; i < 5; i++) {
    if (offset >= bytes.length) throw new RangeError("truncated length");
    const byte = bytes[offset++]!;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      if (offset + value > bytes.length) {
        throw new RangeError("length past the end");
      }
      return [value, offset];
    }
    scale *= 128;
  }
  throw new RangeError("length too long");
}

/**
 * Decodes a record written by {@linkcode encodeRecord}; throws for bytes
 * that do not decode (the caller turns that into `storage_invalid`).
 */
export function decodeRecord(bytes: Uint8Array): ObjectRecord {
  const [typeLength, typeStart] = readLength(bytes, 0);
  const type = decoder.decode(
    bytes.subarray(typeStart, typeStart + typeLength),
  );
  const [idLength, idStart] = readLength(bytes, typeStart + typeLength);
  const id = decoder.decode(bytes.subarray(idStart, idStart + idLength));
  const { instructions } = decodeDownloadChangeset(
    bytes.subarray(idStart + idLength),
  );
  const record = emptyRecord(type, id);
  for (const instruction of instructions) {
    if (instruction.type !== type || instruction.id !== id) {
      throw new RangeError("an instruction names another object");
    }
    applyInstruction(record, instruction, instruction.stamp ?? RECORD_STAMP);
  }
  return record;
}

/** Encodes a pending changeset as it will be uploaded. */
export function encodeChangeset(
  changeset: UploadChangeset,
): Uint8Array<ArrayBuffer> {
  return encodeUploadChangeset(changeset);
}

/** Decodes a pending changeset. */
export function decodeChangeset(bytes: Uint8Array): UploadChangeset {
  return decodeUploadChangeset(bytes);
}

/** The meta record as stored (a structured-clone value). */
export interface StoredMeta {
  nodeId: number;
  identityId: number | null;
  identitySalt: number | null;
  downloadCursor: number;
  /** Absent when 0 (unknown), as in stores written before salts. */
  downloadCursorSalt?: number;
  lastClientVersion: number;
  acknowledgedClientVersion: number;
  /** Absent when 0 (a realm that never reset). */
  resetClientVersion?: number;
}

/** The stored form of a meta record. */
export function metaToStored(meta: RealmMeta): StoredMeta {
  return {
    nodeId: meta.nodeId,
    identityId: meta.clientIdentity?.id ?? null,
    identitySalt: meta.clientIdentity?.salt ?? null,
    downloadCursor: meta.downloadCursor,
    ...(meta.downloadCursorSalt
      ? { downloadCursorSalt: meta.downloadCursorSalt }
      : {}),
    lastClientVersion: meta.lastClientVersion,
    acknowledgedClientVersion: meta.acknowledgedClientVersion,
    ...(meta.resetClientVersion
      ? { resetClientVersion: meta.resetClientVersion }
      : {}),
  };
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) &&
    value >= 0;
}

/** Reads a stored meta record back; throws a `RangeError` if it is bad. */
export function metaFromStored(value: unknown): RealmMeta {
  if (typeof value !== "object" || value === null) {
    throw new RangeError("the meta record is not an object");
  }
  const stored = value as Partial<StoredMeta>;
  const counts = [
    stored.nodeId,
    stored.downloadCursor,
    stored.lastClientVersion,
    stored.acknowledgedClientVersion,
  ];
  if (!counts.every(isCount) || stored.nodeId === 0) {
    throw new RangeError("the meta record has a bad counter");
  }
  const reset = stored.resetClientVersion;
  if (reset !== undefined && !isCount(reset)) {
    throw new RangeError("the meta record has a bad counter");
  }
  const salt = stored.downloadCursorSalt;
  if (salt !== undefined && !(isCount(salt) && salt <= MAX_VERSION_SALT)) {
    throw new RangeError("the meta record has a bad download cursor salt");
  }
  const { identityId, identitySalt } = stored;
  let clientIdentity: RealmMeta["clientIdentity"] = null;
  if (identityId !== null || identitySalt !== null) {
    if (!isCount(identityId) || !isCount(identitySalt)) {
      throw new RangeError("the meta record has a bad client identity");
    }
    clientIdentity = { id: identityId, salt: identitySalt };
  }
  return {
    nodeId: stored.nodeId!,
    clientIdentity,
    downloadCursor: stored.downloadCursor!,
    ...(salt ? { downloadCursorSalt: salt } : {}),
    lastClientVersion: stored.lastClientVersion!,
    acknowledgedClientVersion: stored.acknowledgedClientVersion!,
    ...(reset ? { resetClientVersion: reset } : {}),
  };
}
