// This module is browser compatible.

import type { Writer } from "./writer.ts";

/**
 * Object ids are very often UUIDs made offline by clients. A string in the
 * canonical lowercase form (`8-4-4-4-12` hex digits) travels as its 16
 * bytes instead of 36 characters (PROTOCOL.md §5.2); any other string,
 * uppercase UUIDs included, travels as text, so the decoded string is always
 * the one that was encoded.
 */

/**
 * The byte each pair of ASCII characters stands for as two lowercase hex
 * digits, indexed by `first << 7 | second`; -1 for any other pair.
 */
const PAIR_VALUES = new Int16Array(1 << 14).fill(-1);
for (let high = 0; high < 16; high++) {
  for (let low = 0; low < 16; low++) {
    PAIR_VALUES[
      ("0123456789abcdef".charCodeAt(high) << 7) |
      "0123456789abcdef".charCodeAt(low)
    ] = (high << 4) | low;
  }
}
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
 * returns whether it did (nothing is written otherwise). The caller has
 * ensured room for 16 bytes.
 */
export function writeUuidBytes(writer: Writer, text: string): boolean {
  if (
    text.length !== UUID_TEXT_LENGTH || text.charCodeAt(8) !== DASH ||
    text.charCodeAt(13) !== DASH || text.charCodeAt(18) !== DASH ||
    text.charCodeAt(23) !== DASH
  ) {
    return false;
  }
  // Unrolled: one table lookup per byte measured 20% faster than a loop
  // over digits (PERFORMANCE.md); a non-digit anywhere makes the OR negative.
  const b0 = pairAt(text, 0), b1 = pairAt(text, 2), b2 = pairAt(text, 4);
  const b3 = pairAt(text, 6), b4 = pairAt(text, 9), b5 = pairAt(text, 11);
  const b6 = pairAt(text, 14), b7 = pairAt(text, 16), b8 = pairAt(text, 19);
  const b9 = pairAt(text, 21), b10 = pairAt(text, 24);
  const b11 = pairAt(text, 26), b12 = pairAt(text, 28);
  const b13 = pairAt(text, 30), b14 = pairAt(text, 32);
  const b15 = pairAt(text, 34);
  if (
    (b0 | b1 | b2 | b3 | b4 | b5 | b6 | b7 | b8 | b9 | b10 | b11 | b12 | b13 |
      b14 | b15) < 0
  ) {
    return false;
  }
  const bytes = writer.bytes;
  const pos = writer.pos;
  bytes[pos] = b0;
  bytes[pos + 1] = b1;
  bytes[pos + 2] = b2;
  bytes[pos + 3] = b3;
  bytes[pos + 4] = b4;
  bytes[pos + 5] = b5;
  bytes[pos + 6] = b6;
  bytes[pos + 7] = b7;
  bytes[pos + 8] = b8;
  bytes[pos + 9] = b9;
  bytes[pos + 10] = b10;
  bytes[pos + 11] = b11;
  bytes[pos + 12] = b12;
  bytes[pos + 13] = b13;
  bytes[pos + 14] = b14;
  bytes[pos + 15] = b15;
  writer.pos = pos + UUID_BYTES;
  return true;
}

/** The byte two lowercase hex digits at `at` stand for, or -1. */
function pairAt(text: string, at: number): number {
  const high = text.charCodeAt(at);
  const low = text.charCodeAt(at + 1);
  return (high | low) < 0x80 ? PAIR_VALUES[(high << 7) | low]! : -1;
}

/**
 * Ids decoded lately, by a hash of their 16 bytes: one slot each, the
 * bytes as four words beside the string. An object updated again and again
 * (a counter, a shared document, every fan-out round) then decodes to the
 * string it had, which costs less to find than to build, and whose hash
 * the maps keyed by id have already computed (docs/PERFORMANCE.md
 * "Fan-out: the receive path, fourth pass"). Bounded: at most
 * `ID_CACHE_SIZE` strings of 36 characters stay alive.
 */
const ID_CACHE_SIZE = 1024;
const idWords = new Int32Array(ID_CACHE_SIZE * 4);
const idTexts: string[] = new Array(ID_CACHE_SIZE).fill("");

/**
 * {@linkcode formatUuid}, or the same string as the last time these 16
 * bytes were read when that id is still in the cache.
 */
export function readUuid(bytes: Uint8Array, pos: number): string {
  const w0 = bytes[pos]! | bytes[pos + 1]! << 8 | bytes[pos + 2]! << 16 |
    bytes[pos + 3]! << 24;
  const w1 = bytes[pos + 4]! | bytes[pos + 5]! << 8 | bytes[pos + 6]! << 16 |
    bytes[pos + 7]! << 24;
  const w2 = bytes[pos + 8]! | bytes[pos + 9]! << 8 |
    bytes[pos + 10]! << 16 | bytes[pos + 11]! << 24;
  const w3 = bytes[pos + 12]! | bytes[pos + 13]! << 8 |
    bytes[pos + 14]! << 16 | bytes[pos + 15]! << 24;
  const slot = Math.imul(
    w0 ^ Math.imul(w1, 0x85ebca6b) ^ Math.imul(w2, 0xc2b2ae35) ^
      Math.imul(w3, 0x27d4eb2f),
    0x9e3779b1,
  ) >>> 22;
  const at = slot * 4;
  const cached = idTexts[slot]!;
  if (
    cached !== "" && idWords[at] === w0 && idWords[at + 1] === w1 &&
    idWords[at + 2] === w2 && idWords[at + 3] === w3
  ) {
    return cached;
  }
  const text = formatUuid(bytes, pos);
  idWords[at] = w0;
  idWords[at + 1] = w1;
  idWords[at + 2] = w2;
  idWords[at + 3] = w3;
  idTexts[slot] = text;
  return text;
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
