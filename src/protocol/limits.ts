// This module is browser compatible.

/**
 * Bounds the decoder enforces before it allocates (PROTOCOL.md §7). Every
 * length and count read from the wire is checked against the bytes actually
 * present and against these limits.
 */
export interface Limits {
  /**
   * Largest frame accepted, in bytes (after decompression).
   *
   * @default {16777216}
   */
  maxMessageBytes: number;
  /**
   * Largest UTF-8 string accepted (type names, ids, field names, values,
   * tokens), in bytes.
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

/** The limits used when a caller gives none. */
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxMessageBytes: 16 * 1024 * 1024,
  maxStringBytes: 1024 * 1024,
  maxBytesLength: 8 * 1024 * 1024,
  maxDepth: 32,
  maxChangesets: 100_000,
  maxInstructions: 1_000_000,
  maxCollectionLength: 1_000_000,
});
