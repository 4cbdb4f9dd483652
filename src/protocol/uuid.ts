// This module is browser compatible.

import type { Writer } from "./writer.ts";

/**
 * Object ids are very often UUIDs made offline by clients. A string in the
 * canonical lowercase form (`8-4-4-4-12` hex digits) travels as its 16
 * bytes instead of 36 characters (PROTOCOL.md §5.2); any other string,
 * uppercase UUIDs included, travels as text, so the decoded string is always
 * the one that was encoded.
 */

/** Hex digit value of each Latin-1 char code, or -1; lowercase only. */
const DIGIT_VALUES = new Int8Array(256).fill(-1);
for (let digit = 0; digit < 16; digit++) {
  DIGIT_VALUES["0123456789abcdef".charCodeAt(digit)] = digit;
}
/** Where each byte's two hex digits start in the text form. */
const PAIR_OFFSETS = new Uint8Array([
  0,
  2,
  4,
  6,
  9,
  11,
  14,
  16,
  19,
  21,
  24,
  26,
  28,
  30,
  32,
  34,
]);
/** Char code of the high and low hex digit of each byte. */
const HIGH = new Uint8Array(256);
const LOW = new Uint8Array(256);
for (let byte = 0; byte < 256; byte++) {
  HIGH[byte] = "0123456789abcdef".charCodeAt(byte >> 4);
  LOW[byte] = "0123456789abcdef".charCodeAt(byte & 15);
}
const DASH = 0x2d;

/** Length of a UUID in its canonical text form. */
export const UUID_TEXT_LENGTH = 36;
/** Length of a UUID on the wire. */
export const UUID_BYTES = 16;

/**
 * Writes the 16 bytes of `text` if it is a canonical lowercase UUID, and
 * returns whether it did (nothing is written otherwise).
 */
export function writeUuidBytes(writer: Writer, text: string): boolean {
  if (
    text.length !== UUID_TEXT_LENGTH || text.charCodeAt(8) !== DASH ||
    text.charCodeAt(13) !== DASH || text.charCodeAt(18) !== DASH ||
    text.charCodeAt(23) !== DASH
  ) {
    return false;
  }
  writer.ensure(UUID_BYTES);
  const bytes = writer.bytes;
  const pos = writer.pos;
  // Any character that is not a lowercase hex digit makes `invalid`
  // negative: the table holds -1 for it, or `code >> 8` is non-zero.
  let invalid = 0;
  for (let index = 0; index < UUID_BYTES; index++) {
    const at = PAIR_OFFSETS[index]!;
    const highCode = text.charCodeAt(at);
    const lowCode = text.charCodeAt(at + 1);
    const high = DIGIT_VALUES[highCode & 0xff]! | -(highCode >> 8);
    const low = DIGIT_VALUES[lowCode & 0xff]! | -(lowCode >> 8);
    invalid |= high | low;
    bytes[pos + index] = (high << 4) | low;
  }
  if (invalid < 0) return false;
  writer.pos = pos + UUID_BYTES;
  return true;
}

/** Formats the 16 bytes at `bytes[pos…]` as a canonical lowercase UUID. */
export function formatUuid(bytes: Uint8Array, pos: number): string {
  // One call with every char code builds a flat string in one allocation.
  const b0 = bytes[pos]!, b1 = bytes[pos + 1]!, b2 = bytes[pos + 2]!;
  const b3 = bytes[pos + 3]!, b4 = bytes[pos + 4]!, b5 = bytes[pos + 5]!;
  const b6 = bytes[pos + 6]!, b7 = bytes[pos + 7]!, b8 = bytes[pos + 8]!;
  const b9 = bytes[pos + 9]!, b10 = bytes[pos + 10]!, b11 = bytes[pos + 11]!;
  const b12 = bytes[pos + 12]!, b13 = bytes[pos + 13]!;
  const b14 = bytes[pos + 14]!, b15 = bytes[pos + 15]!;
  return String.fromCharCode(
    HIGH[b0]!,
    LOW[b0]!,
    HIGH[b1]!,
    LOW[b1]!,
    HIGH[b2]!,
    LOW[b2]!,
    HIGH[b3]!,
    LOW[b3]!,
    DASH,
    HIGH[b4]!,
    LOW[b4]!,
    HIGH[b5]!,
    LOW[b5]!,
    DASH,
    HIGH[b6]!,
    LOW[b6]!,
    HIGH[b7]!,
    LOW[b7]!,
    DASH,
    HIGH[b8]!,
    LOW[b8]!,
    HIGH[b9]!,
    LOW[b9]!,
    DASH,
    HIGH[b10]!,
    LOW[b10]!,
    HIGH[b11]!,
    LOW[b11]!,
    HIGH[b12]!,
    LOW[b12]!,
    HIGH[b13]!,
    LOW[b13]!,
    HIGH[b14]!,
    LOW[b14]!,
    HIGH[b15]!,
    LOW[b15]!,
  );
}
