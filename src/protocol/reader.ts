// This module is browser compatible.

import { DEFAULT_LIMITS, type Limits } from "./limits.ts";
import { ProtocolError } from "./protocol_error.ts";

// Deno's fatal decoder takes three times as long as the replacing one
// (PERFORMANCE.md). The replacing one turns every malformed sequence into
// U+FFFD, so a result without U+FFFD proves the input well-formed; only a
// result with one (malformed input, or a real U+FFFD) is decoded again,
// fatally, for the verdict.
const laxDecoder = new TextDecoder("utf-8", { ignoreBOM: true });
const fatalDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const NO_BYTES = new Uint8Array(0);

/**
 * A cursor over one frame. Every `readX` checks that the bytes it needs are
 * present before touching them (PROTOCOL.md §8), and every length read is
 * checked against the bytes left and a limit before anything is allocated.
 *
 * While a changeset block is read (PROTOCOL.md §5) the reader also holds the
 * block's string section, byte section and string table.
 */
export class Reader {
  /** The frame. */
  readonly bytes: Uint8Array;
  /** Next read position. */
  pos: number;
  /** Where reading must stop: the frame's end, or a block structure's. */
  end: number;
  /** The end of the block being read (PROTOCOL.md §5). */
  blockEnd = 0;
  /** Bounds to enforce. */
  readonly limits: Limits;
  /** The block's string section, decoded. */
  strings = "";
  /** Next unread UTF-16 code unit of `strings`. */
  stringsPos = 0;
  /** A copy of the block's byte section; byte values are views into it. */
  blobs: Uint8Array = NO_BYTES;
  /** Next unread byte of `blobs`. */
  blobsPos = 0;
  /** The block's string table, in order of first use. */
  table: string[] = [];
  /** Per type (by table index), the field names of its last instruction. */
  shapes: (string[] | undefined)[] = [];

  /**
   * @param bytes The frame.
   * @param limits Bounds to enforce.
   * @param start Where to start reading.
   */
  constructor(bytes: Uint8Array, limits: Limits = DEFAULT_LIMITS, start = 0) {
    this.bytes = bytes;
    this.pos = start;
    this.end = bytes.length;
    this.limits = limits;
  }
}

/** Builds the `truncated` error for a read of `count` bytes at `pos`. */
export function truncated(reader: Reader, count: number): ProtocolError {
  return new ProtocolError(
    "truncated",
    `Cannot decode message: need ${count} bytes at offset ${reader.pos}, ${
      reader.end - reader.pos
    } left`,
    reader.pos,
  );
}

/** Reads one byte. */
export function readU8(reader: Reader): number {
  if (reader.pos >= reader.end) throw truncated(reader, 1);
  return reader.bytes[reader.pos++]!;
}

/**
 * Reads a LEB128 varuint. Rejects encodings longer than 8 bytes and values
 * above `Number.MAX_SAFE_INTEGER` (PROTOCOL.md §3.1).
 */
export function readVarUint(reader: Reader): number {
  const bytes = reader.bytes;
  const start = reader.pos;
  if (start < reader.end) {
    const first = bytes[start]!;
    if (first < 0x80) {
      reader.pos = start + 1;
      return first;
    }
  }
  return readLongVarUint(reader);
}

function readLongVarUint(reader: Reader): number {
  const bytes = reader.bytes;
  const start = reader.pos;
  let pos = start;
  let result = 0;
  let scale = 1;
  for (let index = 0; index < 8; index++) {
    if (pos >= reader.end) {
      throw new ProtocolError(
        "truncated",
        `Cannot decode varint: frame ends at offset ${pos}`,
        pos,
      );
    }
    const byte = bytes[pos++]!;
    result += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      if (result > Number.MAX_SAFE_INTEGER) {
        throw new ProtocolError(
          "integer_out_of_range",
          `Cannot decode varint: value exceeds 2^53 - 1 at offset ${start}`,
          start,
        );
      }
      reader.pos = pos;
      return result;
    }
    scale *= 0x80;
  }
  throw new ProtocolError(
    "varint_too_long",
    `Cannot decode varint: more than 8 bytes at offset ${start}`,
    start,
  );
}

/** Reads a varuint and checks it against `max` (inclusive). */
export function readBoundedVarUint(
  reader: Reader,
  max: number,
  what: string,
): number {
  const start = reader.pos;
  const value = readVarUint(reader);
  if (value > max) {
    throw new ProtocolError(
      "length_over_limit",
      `Cannot decode ${what}: ${value} exceeds limit ${max} at offset ${start}`,
      start,
    );
  }
  return value;
}

/**
 * Reads a count of items that each take at least `minItemBytes` bytes, and
 * rejects it if it exceeds `max` or the rest of the frame could not hold
 * that many, so nothing is allocated from a count the bytes cannot back.
 */
export function readCount(
  reader: Reader,
  max: number,
  minItemBytes: number,
  what: string,
): number {
  const count = readBoundedVarUint(reader, max, what);
  if (count * minItemBytes > reader.end - reader.pos) {
    throw new ProtocolError(
      "truncated",
      `Cannot decode ${what}: ${count} items cannot fit in ${
        reader.end - reader.pos
      } bytes at offset ${reader.pos}`,
      reader.pos,
    );
  }
  return count;
}

// Float64 reads go through an 8-byte scratch buffer rather than a DataView
// per frame: creating the DataView cost more than a small message's floats.
const scratch = new Float64Array(1);
const scratchBytes = new Uint8Array(scratch.buffer);
const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Reads a little-endian float64. */
export function readF64(reader: Reader): number {
  if (reader.end - reader.pos < 8) throw truncated(reader, 8);
  const bytes = reader.bytes;
  const pos = reader.pos;
  reader.pos = pos + 8;
  if (littleEndian) {
    scratchBytes[0] = bytes[pos]!;
    scratchBytes[1] = bytes[pos + 1]!;
    scratchBytes[2] = bytes[pos + 2]!;
    scratchBytes[3] = bytes[pos + 3]!;
    scratchBytes[4] = bytes[pos + 4]!;
    scratchBytes[5] = bytes[pos + 5]!;
    scratchBytes[6] = bytes[pos + 6]!;
    scratchBytes[7] = bytes[pos + 7]!;
  } else {
    for (let index = 0; index < 8; index++) {
      scratchBytes[7 - index] = bytes[pos + index]!;
    }
  }
  return scratch[0]!;
}

/**
 * Decodes `length` bytes at the cursor as strict UTF-8: stray continuation
 * bytes, overlong forms, encoded surrogates and truncated sequences are
 * `invalid_utf8`. A leading U+FEFF is kept, not stripped.
 */
export function readUtf8(reader: Reader, length: number): string {
  if (reader.end - reader.pos < length) throw truncated(reader, length);
  const start = reader.pos;
  reader.pos += length;
  if (length <= SHORT_ASCII_BYTES) {
    const ascii = shortAscii(reader.bytes, start, start + length);
    if (ascii !== undefined) return ascii;
  }
  const bytes = reader.bytes.subarray(start, start + length);
  const text = laxDecoder.decode(bytes);
  if (text.indexOf("\ufffd") === -1) return text;
  try {
    return fatalDecoder.decode(bytes);
  } catch {
    throw new ProtocolError(
      "invalid_utf8",
      `Cannot decode string: invalid UTF-8 at offset ${start}`,
      start,
    );
  }
}

/**
 * Up to this many bytes, an all-ASCII string is built in JavaScript: a
 * small message's string section ("Item", "n") took 250 ns through
 * `TextDecoder` and 50 ns this way (docs/PERFORMANCE.md "Fan-out").
 */
const SHORT_ASCII_BYTES = 16;

/** `bytes[start, end)` as a string when all ASCII, else undefined. */
function shortAscii(
  bytes: Uint8Array,
  start: number,
  end: number,
): string | undefined {
  let text = "";
  for (let index = start; index < end; index++) {
    const byte = bytes[index]!;
    if (byte >= 0x80) return undefined;
    text += String.fromCharCode(byte);
  }
  return text;
}

/** Reads a string: varuint UTF-8 byte length (bounded), then the bytes. */
export function readString(reader: Reader): string {
  const length = readBoundedVarUint(
    reader,
    reader.limits.maxStringBytes,
    "string length",
  );
  return readUtf8(reader, length);
}
