// This module is browser compatible.

/**
 * Why a frame could not be decoded (or a message encoded). One code per
 * rejection rule in PROTOCOL.md §8.
 *
 * @example A stable code to match on
 * ```ts
 * import type { ProtocolErrorCode } from "@tether/sync/protocol";
 *
 * const code: ProtocolErrorCode = "trailing_bytes";
 * ```
 */
export type ProtocolErrorCode =
  | "truncated"
  | "length_over_limit"
  | "varint_too_long"
  | "integer_out_of_range"
  | "unknown_message"
  | "unknown_value"
  | "unknown_instruction"
  | "invalid_utf8"
  | "depth_over_limit"
  | "trailing_bytes"
  | "bad_reference"
  | "bad_magic"
  | "invalid_field"
  | "decompression_failed"
  | "unencodable_value";

/**
 * Thrown when bytes are not a valid Tether frame, or a message cannot be
 * encoded. `offset` is where in the frame the problem was found. Tests and
 * callers match on `code`, which is stable; `message` says what and where
 * for a person.
 *
 * @example Catching a truncated frame
 * ```ts
 * import { ProtocolError } from "@tether/sync";
 * import assert from "node:assert/strict";
 *
 * const error = new ProtocolError("truncated", "Cannot decode message: need 4 bytes at offset 2", 2);
 * assert.ok(error instanceof Error);
 * assert.equal(error.code, "truncated");
 * assert.equal(error.offset, 2);
 * ```
 */
export class ProtocolError extends Error {
  /** The rejection rule that fired. */
  readonly code: ProtocolErrorCode;
  /** Byte offset in the frame where decoding stopped (-1 when encoding). */
  readonly offset: number;

  /**
   * Creates a protocol error.
   *
   * @param code The rejection rule that fired.
   * @param message Human-readable detail.
   * @param offset Byte offset where decoding stopped.
   */
  constructor(code: ProtocolErrorCode, message: string, offset = -1) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
    this.offset = offset;
  }
}
