// This module is browser compatible.

import { DEFAULT_LIMITS, type Limits } from "./limits.ts";
import { ProtocolError } from "./protocol_error.ts";

const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Strings up to this many bytes are decoded by a plain loop. */
const SHORT_STRING_BYTES = 64;

/**
 * A cursor over one frame. Every `readX` checks that the bytes it needs are
 * present before touching them (PROTOCOL.md §7), and every length read is
 * checked against the bytes left and a limit before anything is allocated.
 */
export class Reader {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  pos: number;
  readonly end: number;
  readonly limits: Limits;

  /**
   * @param bytes The frame.
   * @param limits Bounds to enforce.
   * @param start Where to start reading.
   */
  constructor(bytes: Uint8Array, limits: Limits = DEFAULT_LIMITS, start = 0) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = start;
    this.end = bytes.length;
    this.limits = limits;
  }

  /** Bytes not yet read. */
  get remaining(): number {
    return this.end - this.pos;
  }
}

/** Throws `truncated` unless `count` more bytes are present. */
export function need(reader: Reader, count: number): void {
  if (reader.end - reader.pos < count) {
    throw new ProtocolError(
      "truncated",
      `Cannot decode message: need ${count} bytes at offset ${reader.pos}, ${
        reader.end - reader.pos
      } left`,
      reader.pos,
    );
  }
}

/** Reads one byte. */
export function readU8(reader: Reader): number {
  need(reader, 1);
  return reader.bytes[reader.pos++]!;
}

/**
 * Reads a LEB128 varuint. Rejects encodings longer than 8 bytes and values
 * above `Number.MAX_SAFE_INTEGER` (PROTOCOL.md §4.1).
 */
export function readVarUint(reader: Reader): number {
  const bytes = reader.bytes;
  const start = reader.pos;
  let pos = start;
  if (pos < reader.end) {
    const first = bytes[pos]!;
    if (first < 0x80) {
      reader.pos = pos + 1;
      return first;
    }
  }
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
 * rejects it if the frame could not hold that many or it exceeds `max`.
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

/** Reads a little-endian float64. */
export function readF64(reader: Reader): number {
  need(reader, 8);
  const value = reader.view.getFloat64(reader.pos, true);
  reader.pos += 8;
  return value;
}

/** Reads `length` raw bytes as a copy. */
export function readRaw(
  reader: Reader,
  length: number,
): Uint8Array<ArrayBuffer> {
  need(reader, length);
  const copy = reader.bytes.slice(reader.pos, reader.pos + length);
  reader.pos += length;
  return copy as Uint8Array<ArrayBuffer>;
}

/** Reads a byte array: varuint length (bounded), then the bytes. */
export function readBytes(reader: Reader): Uint8Array<ArrayBuffer> {
  const length = readBoundedVarUint(
    reader,
    reader.limits.maxBytesLength,
    "byte array length",
  );
  return readRaw(reader, length);
}

/** Reads a string: varuint UTF-8 length (bounded), then strict UTF-8. */
export function readString(reader: Reader): string {
  const length = readBoundedVarUint(
    reader,
    reader.limits.maxStringBytes,
    "string length",
  );
  need(reader, length);
  const start = reader.pos;
  reader.pos += length;
  if (length <= SHORT_STRING_BYTES) {
    return decodeShortUtf8(reader.bytes, start, start + length);
  }
  try {
    return utf8Decoder.decode(reader.bytes.subarray(start, start + length));
  } catch {
    throw new ProtocolError(
      "invalid_utf8",
      `Cannot decode string: invalid UTF-8 at offset ${start}`,
      start,
    );
  }
}

function invalidUtf8(offset: number): ProtocolError {
  return new ProtocolError(
    "invalid_utf8",
    `Cannot decode string: invalid UTF-8 at offset ${offset}`,
    offset,
  );
}

/**
 * Strict UTF-8 → string for short runs, rejecting what a fatal TextDecoder
 * rejects: stray continuation bytes, overlong forms, surrogates, values
 * above U+10FFFF and truncated sequences.
 */
function decodeShortUtf8(bytes: Uint8Array, pos: number, end: number): string {
  let result = "";
  while (pos < end) {
    const byte = bytes[pos]!;
    if (byte < 0x80) {
      result += String.fromCharCode(byte);
      pos++;
      continue;
    }
    let code: number;
    let size: number;
    let min: number;
    if (byte >= 0xc2 && byte <= 0xdf) {
      code = byte & 0x1f;
      size = 2;
      min = 0x80;
    } else if (byte >= 0xe0 && byte <= 0xef) {
      code = byte & 0x0f;
      size = 3;
      min = 0x800;
    } else if (byte >= 0xf0 && byte <= 0xf4) {
      code = byte & 0x07;
      size = 4;
      min = 0x10000;
    } else {
      throw invalidUtf8(pos);
    }
    if (pos + size > end) throw invalidUtf8(pos);
    for (let index = 1; index < size; index++) {
      const next = bytes[pos + index]!;
      if ((next & 0xc0) !== 0x80) throw invalidUtf8(pos);
      code = (code << 6) | (next & 0x3f);
    }
    if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
      throw invalidUtf8(pos);
    }
    pos += size;
    if (code >= 0x10000) {
      code -= 0x10000;
      result += String.fromCharCode(
        0xd800 + (code >> 10),
        0xdc00 + (code & 0x3ff),
      );
    } else {
      result += String.fromCharCode(code);
    }
  }
  return result;
}
