// This module is browser compatible.

import { ProtocolError } from "./protocol_error.ts";

const textEncoder = new TextEncoder();

/**
 * A growable byte buffer that frames are encoded into (PROTOCOL.md §3).
 * `reset()` keeps the buffer between frames.
 *
 * `encodeMessage` has a shared one and returns a copy of each frame. Given a
 * writer of one's own it returns a view into the writer instead, which the
 * next `encodeMessage` with that writer overwrites: the way to encode a
 * frame that is sent at once (`WebSocket.send` copies what it is given)
 * without allocating a buffer for it.
 *
 * @example Encoding for sending, without a buffer per frame
 * ```ts
 * import { decodeMessage, encodeMessage, MessageType, Writer } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const writer = new Writer(1024);
 * const sent: Uint8Array[] = [];
 * const send = (frame: Uint8Array) => sent.push(frame.slice()); // like WebSocket.send
 * send(encodeMessage({ type: MessageType.Unbind, sessionId: 1 }, writer));
 * send(encodeMessage({ type: MessageType.Unbind, sessionId: 2 }, writer));
 * assert.deepEqual(sent.map((frame) => decodeMessage(frame)), [
 *   { type: MessageType.Unbind, sessionId: 1 },
 *   { type: MessageType.Unbind, sessionId: 2 },
 * ]);
 * ```
 */
export class Writer {
  /** The buffer; the frame being written is `[0, pos)`. */
  bytes: Uint8Array<ArrayBuffer>;
  /** A view over `bytes`, replaced whenever the buffer is. */
  view: DataView<ArrayBuffer>;
  /** Next write position. */
  pos = 0;

  /**
   * Creates a writer.
   *
   * @param initialSize Starting buffer size in bytes; it grows as needed.
   */
  constructor(initialSize = 64 * 1024) {
    this.bytes = new Uint8Array(Math.max(initialSize, 64));
    this.view = new DataView(this.bytes.buffer);
  }

  /**
   * Number of bytes written since the last `reset()`.
   *
   * @returns The length of the frame being written.
   */
  get length(): number {
    return this.pos;
  }

  /** Starts a new frame, keeping the buffer. */
  reset(): void {
    this.pos = 0;
  }

  /**
   * Makes room for `count` more bytes.
   *
   * @param count Bytes about to be written.
   */
  ensure(count: number): void {
    if (this.pos + count <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < this.pos + count) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.bytes.subarray(0, this.pos));
    this.bytes = grown;
    this.view = new DataView(grown.buffer);
  }

  /**
   * Ends the frame.
   *
   * @returns A copy of the bytes written since the last `reset()`, in a
   *   buffer of its own.
   */
  finish(): Uint8Array<ArrayBuffer> {
    return this.bytes.slice(0, this.pos);
  }
}

/** Writes one byte. */
export function writeU8(writer: Writer, value: number): void {
  writer.ensure(1);
  writer.bytes[writer.pos++] = value;
}

/** Throws unless `value` is an integer in [0, 2^53 − 1]. */
function checkVarUint(value: number): void {
  // Math.floor, not `% 1`: V8 compiles `%` on doubles to a C call.
  if (
    !(value >= 0 && value <= Number.MAX_SAFE_INTEGER &&
      Math.floor(value) === value)
  ) {
    throw new ProtocolError(
      "unencodable_value",
      `Cannot encode varint: ${value} is not an integer in [0, 2^53 - 1]`,
    );
  }
}

/**
 * Writes a non-negative safe integer as LEB128 (PROTOCOL.md §3.1): seven
 * bits per byte, low first, high bit set on every byte but the last.
 *
 * @throws {ProtocolError} `unencodable_value` unless `value` is an integer
 *   in [0, 2^53 − 1].
 */
export function writeVarUint(writer: Writer, value: number): void {
  writer.ensure(8);
  putVarUint(writer, value);
}

/**
 * `writeVarUint` for a caller that has already ensured room for 8 bytes,
 * which saves the capacity check on the hot paths.
 */
export function putVarUint(writer: Writer, value: number): void {
  // True exactly for the integers 0–127 (and -0): the common case.
  if ((value & 0x7f) === value) {
    writer.bytes[writer.pos++] = value;
    return;
  }
  putLongVarUint(writer, value);
}

function putLongVarUint(writer: Writer, value: number): void {
  checkVarUint(value);
  const bytes = writer.bytes;
  let pos = writer.pos;
  if (value > 0xfffffff) {
    // Past 28 bits the bitwise operators would truncate: emit the low 28
    // bits as four groups, then go on with the rest, now below 2^25.
    const high = Math.floor(value / 0x10000000);
    const low = value - high * 0x10000000;
    bytes[pos++] = (low & 0x7f) | 0x80;
    bytes[pos++] = ((low >>> 7) & 0x7f) | 0x80;
    bytes[pos++] = ((low >>> 14) & 0x7f) | 0x80;
    bytes[pos++] = (low >>> 21) | 0x80;
    value = high;
  }
  while (value >= 0x80) {
    bytes[pos++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  bytes[pos++] = value;
  writer.pos = pos;
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

/**
 * Writes `text` as UTF-8 preceded by its byte length as a varuint
 * (PROTOCOL.md §3.4). Lone surrogates become U+FFFD, as `TextEncoder` writes
 * them.
 */
export function writeString(writer: Writer, text: string): void {
  // Reserve the longest length prefix the worst case could need, encode,
  // then close the gap if the real length needs fewer prefix bytes.
  const maxBytes = text.length * 3;
  const reserved = varUintSize(maxBytes);
  writer.ensure(reserved + maxBytes);
  const start = writer.pos + reserved;
  const { written } = textEncoder.encodeInto(
    text,
    writer.bytes.subarray(start, start + maxBytes),
  );
  const needed = varUintSize(written);
  if (needed !== reserved) {
    writer.bytes.copyWithin(writer.pos + needed, start, start + written);
  }
  writeVarUint(writer, written);
  writer.pos += written;
}
