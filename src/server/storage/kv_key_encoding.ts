/**
 * Deno KV keys as strings whose code-unit order (`<`) is Deno KV's key
 * order, for the in-memory store (`memory_kv.ts`).
 */

/** Deno KV's limit on a written key, in its encoded bytes. */
export const MAX_WRITE_KEY_BYTES = 2048;

/** Deno KV's limit on a read key (one byte of range marker more). */
export const MAX_READ_KEY_BYTES = 2049;

// Deno KV orders parts by kind first: bytes, strings, bigints, numbers,
// booleans (checked against Deno KV itself in
// tests/server/storage/memory_kv_test.ts).
const BYTES = "\x10";
const STRING = "\x20";
const BIGINT = "\x30";
const NUMBER = "\x40";
const FALSE = "\x50";
const TRUE = "\x51";
// Ends a variable-length part. Content code units are shifted above it, so
// a part that is a prefix of another sorts first, and every tag is above it
// so a key sorts before its extensions.
const END = "\x01";

const view = new DataView(new ArrayBuffer(8));

/** An encoded key and the size Deno KV would count for it. */
export interface EncodedKey {
  /** Sorts like the key in Deno KV. */
  sortable: string;
  /** Approximately Deno KV's encoded length in bytes. */
  bytes: number;
}

/**
 * Encodes `key`.
 *
 * @throws {TypeError} If a part is not a string, number, bigint, boolean
 *   or byte array (Deno KV's message).
 */
export function encodeKey(key: Deno.KvKey): EncodedKey {
  if (!Array.isArray(key)) throw new TypeError("Key must be an array");
  let sortable = "";
  let bytes = 0;
  for (const part of key) {
    switch (typeof part) {
      case "string": {
        const encoded = stringPart(part);
        sortable += encoded.text;
        bytes += encoded.bytes;
        break;
      }
      case "number":
        sortable += NUMBER + encodeNumber(part);
        bytes += 9;
        break;
      case "bigint": {
        const encoded = encodeBigint(part);
        sortable += BIGINT + encoded;
        bytes += 2 + 2 * encoded.length;
        break;
      }
      case "boolean":
        sortable += part ? TRUE : FALSE;
        bytes += 1;
        break;
      default: {
        if (!(part instanceof Uint8Array)) {
          throw new TypeError(
            "expected string, number, bigint, ArrayBufferView, boolean",
          );
        }
        let text = "";
        for (let i = 0; i < part.length; i++) {
          text += String.fromCharCode(part[i]! + 2);
        }
        sortable += BYTES + text + END;
        bytes += 2 + part.length;
      }
    }
  }
  return { sortable, bytes };
}

/** The key an encoded string came from, parts copied fresh. */
export function decodeKey(sortable: string): Deno.KvKey {
  const key: Deno.KvKeyPart[] = [];
  let at = 0;
  while (at < sortable.length) {
    const tag = sortable.charAt(at++);
    switch (tag) {
      case STRING: {
        const end = sortable.indexOf(END, at);
        key.push(decodeString(sortable.slice(at, end)));
        at = end + 1;
        break;
      }
      case BYTES: {
        const end = sortable.indexOf(END, at);
        const part = new Uint8Array(end - at);
        for (let i = 0; i < part.length; i++) {
          part[i] = sortable.charCodeAt(at + i) - 2;
        }
        key.push(part);
        at = end + 1;
        break;
      }
      case NUMBER:
        key.push(decodeNumber(sortable, at));
        at += 4;
        break;
      case BIGINT: {
        const length = bigintLength(sortable, at);
        key.push(decodeBigint(sortable.slice(at, at + 2 + length)));
        at += 2 + length;
        break;
      }
      case TRUE:
        key.push(true);
        break;
      case FALSE:
        key.push(false);
        break;
      default:
        throw new RangeError(`Not an encoded key (tag ${tag.charCodeAt(0)})`);
    }
  }
  return key;
}

/** An encoded string part, tag and end included, and its size. */
interface StringPart {
  text: string;
  bytes: number;
}

// Encoded string parts by string. The server's keys repeat the same few
// parts (a realm's path, a kind of record) in every key it writes and
// reads: encoding them code unit by code unit was most of what a commit
// on the in-memory store allocated.
const stringParts = new Map<string, StringPart>();
const MAX_CACHED_PARTS = 1024;
const MAX_CACHED_LENGTH = 512;

function stringPart(value: string): StringPart {
  let part = stringParts.get(value);
  if (part !== undefined) return part;
  const encoded = encodeString(value);
  part = { text: STRING + encoded.text + END, bytes: 2 + encoded.bytes };
  if (value.length <= MAX_CACHED_LENGTH) {
    if (stringParts.size >= MAX_CACHED_PARTS) stringParts.clear();
    stringParts.set(value, part);
  }
  return part;
}

/**
 * The string's UTF-8 bytes, each shifted above {@link END}: UTF-8 byte
 * order is code point order, which Deno KV uses and UTF-16 `<` is not.
 * A lone surrogate is encoded as its three bytes (as WTF-8 does).
 */
function encodeString(value: string): { text: string; bytes: number } {
  let text = "";
  let bytes = 0;
  for (let i = 0; i < value.length; i++) {
    let point = value.charCodeAt(i);
    if (point >= 0xd800 && point < 0xdc00 && i + 1 < value.length) {
      const low = value.charCodeAt(i + 1);
      if (low >= 0xdc00 && low < 0xe000) {
        point = 0x10000 + ((point - 0xd800) << 10) + (low - 0xdc00);
        i++;
      }
    }
    if (point < 0x80) {
      text += String.fromCharCode(point + 2);
      bytes += 1;
    } else if (point < 0x800) {
      text += String.fromCharCode(
        (0xc0 | (point >> 6)) + 2,
        (0x80 | (point & 0x3f)) + 2,
      );
      bytes += 2;
    } else if (point < 0x10000) {
      text += String.fromCharCode(
        (0xe0 | (point >> 12)) + 2,
        (0x80 | ((point >> 6) & 0x3f)) + 2,
        (0x80 | (point & 0x3f)) + 2,
      );
      bytes += 3;
    } else {
      text += String.fromCharCode(
        (0xf0 | (point >> 18)) + 2,
        (0x80 | ((point >> 12) & 0x3f)) + 2,
        (0x80 | ((point >> 6) & 0x3f)) + 2,
        (0x80 | (point & 0x3f)) + 2,
      );
      bytes += 4;
    }
  }
  return { text, bytes };
}

function decodeString(text: string): string {
  let value = "";
  for (let i = 0; i < text.length;) {
    const first = text.charCodeAt(i) - 2;
    let point: number;
    if (first < 0x80) {
      point = first;
      i += 1;
    } else if (first < 0xe0) {
      point = ((first & 0x1f) << 6) | (byteAt(text, i + 1) & 0x3f);
      i += 2;
    } else if (first < 0xf0) {
      point = ((first & 0x0f) << 12) | ((byteAt(text, i + 1) & 0x3f) << 6) |
        (byteAt(text, i + 2) & 0x3f);
      i += 3;
    } else {
      point = ((first & 0x07) << 18) | ((byteAt(text, i + 1) & 0x3f) << 12) |
        ((byteAt(text, i + 2) & 0x3f) << 6) | (byteAt(text, i + 3) & 0x3f);
      i += 4;
    }
    value += String.fromCodePoint(point);
  }
  return value;
}

function byteAt(text: string, at: number): number {
  return text.charCodeAt(at) - 2;
}

/**
 * A double as four 16-bit code units, most significant first: the sign bit
 * flipped for a positive number and every bit for a negative one, so that
 * the order is numeric with -0 just below 0 and NaN above Infinity, as in
 * Deno KV. (A fixed-length part needs no end marker.)
 */
function encodeNumber(value: number): string {
  view.setFloat64(0, value);
  let a = view.getUint16(0);
  let b = view.getUint16(2);
  let c = view.getUint16(4);
  let d = view.getUint16(6);
  if (a & 0x8000) {
    a = ~a & 0xffff;
    b = ~b & 0xffff;
    c = ~c & 0xffff;
    d = ~d & 0xffff;
  } else a |= 0x8000;
  return String.fromCharCode(a, b, c, d);
}

function decodeNumber(sortable: string, at: number): number {
  const a = sortable.charCodeAt(at);
  const flip = a & 0x8000 ? 0 : 0xffff;
  view.setUint16(0, flip ? ~a & 0xffff : a & 0x7fff);
  for (let i = 1; i < 4; i++) {
    view.setUint16(2 * i, sortable.charCodeAt(at + i) ^ flip);
  }
  return view.getFloat64(0);
}

/**
 * A bigint as a sign unit, a length unit and its magnitude in 16-bit
 * units: negatives first, longer magnitudes further from zero; a negative
 * one's length and units inverted so that it sorts the other way.
 */
function encodeBigint(value: bigint): string {
  const negative = value < 0n;
  let magnitude = negative ? -value : value;
  const units: number[] = [];
  while (magnitude > 0n) {
    units.unshift(Number(magnitude & 0xffffn));
    magnitude >>= 16n;
  }
  if (!negative) {
    return String.fromCharCode(1, units.length, ...units);
  }
  return String.fromCharCode(
    0,
    0xffff - units.length,
    ...units.map((unit) => 0xffff - unit),
  );
}

function bigintLength(sortable: string, at: number): number {
  const length = sortable.charCodeAt(at + 1);
  return sortable.charCodeAt(at) === 1 ? length : 0xffff - length;
}

function decodeBigint(encoded: string): bigint {
  const negative = encoded.charCodeAt(0) === 0;
  let magnitude = 0n;
  for (let i = 2; i < encoded.length; i++) {
    const unit = encoded.charCodeAt(i);
    magnitude = (magnitude << 16n) | BigInt(negative ? 0xffff - unit : unit);
  }
  return negative ? -magnitude : magnitude;
}
