// This module is browser compatible.

/**
 * Whether one changeset can travel as a single write: encoded as it is
 * uploaded, within the write cap, and decodable with the protocol's default
 * limits, so every client can download it once it is stored.
 */

import type { UploadChangeset } from "../model/changeset.ts";
import { decodeUploadChangeset } from "./decode.ts";
import { encodeUploadChangesetView } from "./encode.ts";
import { DEFAULT_LIMITS } from "./limits.ts";
import { ProtocolError } from "./protocol_error.ts";

/**
 * The largest changeset one write may produce, in encoded bytes: the
 * protocol's default frame limit minus room for the UPLOAD header. A larger
 * write is rejected with a `RangeError` before anything is committed. A
 * server configured with a smaller frame limit reports a larger changeset as
 * `bad_changeset` when it is uploaded.
 *
 * @example The cap
 * ```ts
 * import { MAX_WRITE_BYTES } from "@tether/sync";
 * import assert from "node:assert/strict";
 *
 * assert.equal(MAX_WRITE_BYTES, 16 * 1024 * 1024 - 1024);
 * ```
 */
export const MAX_WRITE_BYTES: number = DEFAULT_LIMITS.maxMessageBytes - 1024;

// The size from which a changeset is decoded back to check the decoder's
// limits. Each limit but depth counts units of at least one encoded byte
// (a string's UTF-16 units, a byte array's bytes, instructions, a
// collection's entries), and the encoder refuses nesting deeper than the
// decoder takes (the same `maxDepth`, counted alike): so a smaller
// changeset decodes, and the decode, a third of a small write's check,
// is skipped.
const DECODE_CHECKED_FROM = Math.min(
  DEFAULT_LIMITS.maxStringBytes,
  DEFAULT_LIMITS.maxBytesLength,
  DEFAULT_LIMITS.maxInstructions,
  DEFAULT_LIMITS.maxCollectionLength,
);

/**
 * What {@linkcode checkWrite} found: the encoded size, or why the changeset
 * cannot be one write (`encode`: the encoder refused a value; `limit`: too
 * large, or beyond a limit the decoder enforces).
 */
export type WriteCheck =
  | { ok: true; bytes: number }
  | {
    ok: false;
    stage: "encode" | "limit";
    message: string;
    cause?: ProtocolError;
  };

/**
 * Encodes `changeset` the way it is uploaded and decodes it back with the
 * protocol's default limits; see {@linkcode WriteCheck}.
 */
export function checkWrite(changeset: UploadChangeset): WriteCheck {
  let bytes: Uint8Array;
  try {
    // A view, not a copy: only its size and whether it decodes matter here.
    bytes = encodeUploadChangesetView(changeset);
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
    return { ok: false, stage: "encode", message: error.message, cause: error };
  }
  if (bytes.byteLength > MAX_WRITE_BYTES) {
    return {
      ok: false,
      stage: "limit",
      message:
        `the changeset is ${bytes.byteLength} bytes, more than the limit of ${MAX_WRITE_BYTES}; split it into several writes`,
    };
  }
  // Too small to break a limit: decoding it back would find nothing.
  if (bytes.byteLength < DECODE_CHECKED_FROM) {
    return { ok: true, bytes: bytes.byteLength };
  }
  try {
    decodeUploadChangeset(bytes);
  } catch (error) {
    if (!(error instanceof ProtocolError)) throw error;
    return { ok: false, stage: "limit", message: error.message, cause: error };
  }
  return { ok: true, bytes: bytes.byteLength };
}
