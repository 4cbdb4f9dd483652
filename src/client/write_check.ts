// This module is browser compatible.

/**
 * What one local write may be: the size cap, and the check that the server
 * would accept its encoding, made before anything is committed.
 */

import type { UploadChangeset } from "../model/changeset.ts";
import { decodeUploadChangeset } from "../protocol/decode.ts";
import { encodeUploadChangesetView } from "../protocol/encode.ts";
import { DEFAULT_LIMITS } from "../protocol/limits.ts";
import { ProtocolError } from "../protocol/protocol_error.ts";

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

/**
 * Encodes a changeset the way it will be uploaded and decodes it back with
 * the protocol's default limits, so a write the server would refuse is
 * refused here, before anything is committed. Returns its encoded size.
 */
export function checkEncodable(changeset: UploadChangeset): number {
  let bytes: Uint8Array;
  try {
    // A view, not a copy: only its size and whether it decodes matter here.
    bytes = encodeUploadChangesetView(changeset);
  } catch (error) {
    if (error instanceof ProtocolError) {
      throw new TypeError(`Cannot write: ${error.message}`, { cause: error });
    }
    throw error;
  }
  if (bytes.byteLength > MAX_WRITE_BYTES) {
    throw new RangeError(
      `Cannot write: the changeset is ${bytes.byteLength} bytes, more than the limit of ${MAX_WRITE_BYTES}; split it into several writes`,
    );
  }
  try {
    decodeUploadChangeset(bytes);
  } catch (error) {
    if (error instanceof ProtocolError) {
      throw new RangeError(`Cannot write: ${error.message}`, { cause: error });
    }
    throw error;
  }
  return bytes.byteLength;
}
