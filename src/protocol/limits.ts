// This module is browser compatible.

/**
 * Bounds the decoder enforces before it allocates (PROTOCOL.md §8). Every
 * length and count read from the wire is checked against the bytes actually
 * present and against these limits.
 *
 * @example A server that takes smaller frames than the default
 * ```ts
 * import { DEFAULT_LIMITS, decodeMessage, encodeMessage, type Limits, MessageType } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const limits: Limits = { ...DEFAULT_LIMITS, maxMessageBytes: 1024 * 1024 };
 * const frame = encodeMessage({ type: MessageType.Unbind, sessionId: 1 });
 * assert.equal(decodeMessage(frame, limits).type, MessageType.Unbind);
 * ```
 */
export interface Limits {
  /**
   * Largest frame accepted, in bytes (after decompression).
   *
   * @default {16777216}
   */
  maxMessageBytes: number;
  /**
   * Largest string accepted (type names, ids, field names, values, tokens):
   * in UTF-8 bytes for strings outside changesets, in UTF-16 code units for
   * strings inside a changeset block (PROTOCOL.md §5.1).
   *
   * @default {1048576}
   */
  maxStringBytes: number;
  /**
   * Largest byte-array value accepted, in bytes.
   *
   * @default {8388608}
   */
  maxBytesLength: number;
  /**
   * Deepest nesting of arrays and objects inside one field value.
   *
   * @default {32}
   */
  maxDepth: number;
  /**
   * Most changesets in one UPLOAD or DOWNLOAD.
   *
   * @default {100000}
   */
  maxChangesets: number;
  /**
   * Most instructions in one changeset.
   *
   * @default {1000000}
   */
  maxInstructions: number;
  /**
   * Most elements in one array or entries in one object or field map.
   *
   * @default {1000000}
   */
  maxCollectionLength: number;
}

/**
 * The limits used when a caller gives none (PROTOCOL.md §8).
 *
 * @example The defaults
 * ```ts
 * import { DEFAULT_LIMITS } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * assert.equal(DEFAULT_LIMITS.maxMessageBytes, 16 * 1024 * 1024);
 * assert.ok(Object.isFrozen(DEFAULT_LIMITS));
 * ```
 */
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxMessageBytes: 16 * 1024 * 1024,
  maxStringBytes: 1024 * 1024,
  maxBytesLength: 8 * 1024 * 1024,
  maxDepth: 32,
  maxChangesets: 100_000,
  maxInstructions: 1_000_000,
  maxCollectionLength: 1_000_000,
});
