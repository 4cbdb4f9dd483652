// This module is browser compatible.

import { ProtocolError } from "./protocol_error.ts";

const textEncoder = new TextEncoder();

/**
 * Strings up to this many UTF-16 code units are encoded by a plain loop,
 * which beats a `TextEncoder.encodeInto` call for short strings; longer ones
 * go through `encodeInto`. Also keeps a short string's length prefix to one
 * byte (3 × 42 < 128).
 */
const SHORT_STRING_UNITS = 42;

/**
 * A growable byte buffer with one `writeX` per wire type (PROTOCOL.md §4).
 * Reuse one writer across messages: `reset()` keeps the buffer.
 */
export class Writer {
  /** The buffer; valid bytes are `[0, pos)`. */
  bytes: Uint8Array<ArrayBuffer>;
  /** A view over `bytes`, replaced whenever the buffer grows. */
  view: DataView<ArrayBuffer>;
  /** Next write position. */
  pos = 0;

  /** @param initialSize Starting buffer size in bytes. */
  constructor(initialSize = 4096) {
    this.bytes = new Uint8Array(initialSize);
    this.view = new DataView(this.bytes.buffer);
  }

  /** Forgets what was written, keeping the buffer. */
  reset(): void {
    this.pos = 0;
  }

  /** Makes room for `count` more bytes. */
  ensure(count: number): void {
    const needed = this.pos + count;
    if (needed <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < needed) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.bytes.subarray(0, this.pos));
    this.bytes = grown;
    this.view = new DataView(grown.buffer);
  }

  /** A copy of the bytes written so far. */
  finish(): Uint8Array<ArrayBuffer> {
    return this.bytes.slice(0, this.pos);
  }
}

/** Writes one byte. */
export function writeU8(writer: Writer, value: number): void {
  writer.ensure(1);
  writer.bytes[writer.pos++] = value;
}

/**
 * Writes a non-negative safe integer as LEB128 (PROTOCOL.md §4.1): seven
 * bits per byte, low first, high bit set on every byte but the last.
 */
export function writeVarUint(writer: Writer, value: number): void {
  if (!(value >= 0 && value <= Number.MAX_SAFE_INTEGER) || value % 1 !== 0) {
    throw new ProtocolError(
      "unencodable_value",
      `Cannot encode varint: ${value} is not a non-negative safe integer`,
    );
  }
  writer.ensure(8);
  const bytes = writer.bytes;
  let pos = writer.pos;
  if (value < 0x80) {
    bytes[pos++] = value;
  } else {
    // Above 2^31 the bitwise operators would truncate, so divide instead.
    while (value > 0x7fffffff) {
      bytes[pos++] = (value % 0x80) | 0x80;
      value = Math.floor(value / 0x80);
    }
    while (value >= 0x80) {
      bytes[pos++] = (value & 0x7f) | 0x80;
      value >>>= 7;
    }
    bytes[pos++] = value;
  }
  writer.pos = pos;
}

/** Writes a float64, little-endian. */
export function writeF64(writer: Writer, value: number): void {
  writer.ensure(8);
  writer.view.setFloat64(writer.pos, value, true);
  writer.pos += 8;
}

/** Writes raw bytes with no length prefix. */
export function writeRaw(writer: Writer, bytes: Uint8Array): void {
  writer.ensure(bytes.length);
  writer.bytes.set(bytes, writer.pos);
  writer.pos += bytes.length;
}

/** Writes a byte array: varuint length, then the bytes. */
export function writeBytes(writer: Writer, bytes: Uint8Array): void {
  writeVarUint(writer, bytes.length);
  writeRaw(writer, bytes);
}

/**
 * Writes a string: varuint UTF-8 byte length, then the bytes. Lone
 * surrogates become U+FFFD, as `TextEncoder` does (PROTOCOL.md §4.3).
 */
export function writeString(writer: Writer, value: string): void {
  const length = value.length;
  if (length <= SHORT_STRING_UNITS) {
    writer.ensure(1 + length * 3);
    const start = writer.pos + 1;
    const end = encodeShortUtf8(value, writer.bytes, start);
    writer.bytes[writer.pos] = end - start;
    writer.pos = end;
    return;
  }
  // Reserve the longest length prefix the worst case could need, encode,
  // then close the gap if the real length needs fewer prefix bytes.
  const maxBytes = length * 3;
  const reserved = varUintSize(maxBytes);
  writer.ensure(reserved + maxBytes);
  const start = writer.pos + reserved;
  const { written } = textEncoder.encodeInto(
    value,
    writer.bytes.subarray(start, start + maxBytes),
  );
  const needed = varUintSize(written);
  if (needed !== reserved) {
    writer.bytes.copyWithin(writer.pos + needed, start, start + written);
  }
  writeVarUint(writer, written);
  writer.pos += written;
}

/** Number of bytes `writeVarUint` uses for `value`. */
export function varUintSize(value: number): number {
  let size = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 0x80);
    size++;
  }
  return size;
}

/** Encodes `value` as UTF-8 at `bytes[pos…]`; returns the end position. */
function encodeShortUtf8(
  value: string,
  bytes: Uint8Array,
  pos: number,
): number {
  const length = value.length;
  for (let index = 0; index < length; index++) {
    let code = value.charCodeAt(index);
    if (code < 0x80) {
      bytes[pos++] = code;
    } else if (code < 0x800) {
      bytes[pos++] = 0xc0 | (code >> 6);
      bytes[pos++] = 0x80 | (code & 0x3f);
    } else if (code < 0xd800 || code > 0xdfff) {
      bytes[pos++] = 0xe0 | (code >> 12);
      bytes[pos++] = 0x80 | ((code >> 6) & 0x3f);
      bytes[pos++] = 0x80 | (code & 0x3f);
    } else {
      const next = index + 1 < length ? value.charCodeAt(index + 1) : 0;
      if (code <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        code = 0x10000 + ((code - 0xd800) << 10) + (next - 0xdc00);
        index++;
        bytes[pos++] = 0xf0 | (code >> 18);
        bytes[pos++] = 0x80 | ((code >> 12) & 0x3f);
        bytes[pos++] = 0x80 | ((code >> 6) & 0x3f);
        bytes[pos++] = 0x80 | (code & 0x3f);
      } else {
        // A lone surrogate: U+FFFD, as TextEncoder writes it.
        bytes[pos++] = 0xef;
        bytes[pos++] = 0xbf;
        bytes[pos++] = 0xbd;
      }
    }
  }
  return pos;
}
