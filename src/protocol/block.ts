// This module is browser compatible.

import { ProtocolError } from "./protocol_error.ts";
import { type Reader, readUtf8, readVarUint, truncated } from "./reader.ts";
import { StringTable } from "./string_table.ts";
import { readUuid, UUID_BYTES, writeUuidBytes } from "./uuid.ts";
import { putVarUint, Writer, writeRaw, writeVarUint } from "./writer.ts";

/**
 * A changeset block (PROTOCOL.md §5): the part of an UPLOAD, a DOWNLOAD or a
 * stored changeset that carries changesets. It is the last thing in its
 * frame:
 *
 * 1. the structure's length, a u32, and the structure (changesets,
 *    instructions, values);
 * 2. the byte section: every byte-array value of the block, concatenated;
 * 3. the string section: every string of the block, UTF-8, concatenated, to
 *    the end of the frame.
 *
 * The structure says how many UTF-16 code units of the string section each
 * string takes, and how many bytes of the byte section each byte array
 * takes, in order.
 *
 * Why: one `TextDecoder` call for the whole string section plus a `slice`
 * per string costs a tenth of decoding each string on its own, and one copy
 * of the byte section with a view per value costs a fraction of one buffer
 * per value (PERFORMANCE.md). The sections come after the structure so the
 * encoder writes the structure straight into the frame and the strings with
 * one `encodeInto` at its end, copying nothing twice.
 *
 * Type names, object ids, field names and object keys go through the
 * block's string table: a reference is a varuint `r`:
 * - `r` odd: the string at table index `(r - 1) / 2`;
 * - `r` = 0: a new canonical lowercase UUID, its 16 bytes follow;
 * - `r` even ≥ 2: a new string of `r / 2 - 1` code units of the string
 *   section.
 * New strings are appended to the table.
 */

const textEncoder = new TextEncoder();

/**
 * Up to this many code units, an all-ASCII string section is copied in
 * JavaScript rather than through `TextEncoder.encodeInto`, whose call costs
 * more than the copy for a small message's "Item" and "n".
 */
const SHORT_ASCII_UNITS = 16;

/**
 * Writes `text` byte for byte when it is short and all ASCII; false (having
 * written nothing) otherwise.
 */
function putShortAscii(frame: Writer, text: string): boolean {
  const length = text.length;
  if (length > SHORT_ASCII_UNITS) return false;
  for (let index = 0; index < length; index++) {
    if (text.charCodeAt(index) >= 0x80) return false;
  }
  frame.ensure(length);
  const bytes = frame.bytes;
  const at = frame.pos;
  for (let index = 0; index < length; index++) {
    bytes[at + index] = text.charCodeAt(index);
  }
  frame.pos = at + length;
  return true;
}

const NO_BYTES = new Uint8Array(0);

/** Most bytes a string-table reference takes: a 0 and a UUID. */
export const MAX_REFERENCE_BYTES = 1 + UUID_BYTES;

/** Encoding state for one block. */
export class BlockWriter {
  /** The frame the structure is written into (set by `begin`). */
  out: Writer = new Writer(64);
  /** The byte section. */
  readonly blobs: Writer = new Writer(4 * 1024);
  /** The string section, as text. */
  strings = "";
  /** The block's string table. */
  readonly table: StringTable = new StringTable();
  /** Per type (by table index), the field names of its last instruction. */
  shapes: (readonly string[] | undefined)[] = [];
  /**
   * Whether `for…in` must skip inherited keys: only when someone has added
   * an enumerable property to `Object.prototype`.
   */
  ownOnly = false;
  #lengthAt = 0;

  /** Starts a block at the current end of `frame`. */
  begin(frame: Writer): void {
    this.out = frame;
    this.blobs.reset();
    this.release();
    this.ownOnly = hasEnumerableInherited();
    frame.ensure(4);
    this.#lengthAt = frame.pos;
    frame.pos += 4;
  }

  /** Ends the block: the structure's length, then the two sections. */
  end(): void {
    const frame = this.out;
    const length = frame.pos - this.#lengthAt - 4;
    if (length > 0xffffffff) {
      throw new ProtocolError(
        "unencodable_value",
        `Cannot encode changesets: structure of ${length} bytes exceeds 2^32 - 1`,
      );
    }
    const bytes = frame.bytes;
    const at = this.#lengthAt;
    bytes[at] = length;
    bytes[at + 1] = length >>> 8;
    bytes[at + 2] = length >>> 16;
    bytes[at + 3] = length >>> 24;
    const blobs = this.blobs.pos;
    writeVarUint(frame, blobs);
    if (blobs !== 0) writeRaw(frame, this.blobs.bytes.subarray(0, blobs));
    const text = this.strings;
    if (text.length !== 0 && !putShortAscii(frame, text)) {
      const maxBytes = text.length * 3;
      frame.ensure(maxBytes);
      frame.pos += textEncoder.encodeInto(
        text,
        frame.bytes.subarray(frame.pos, frame.pos + maxBytes),
      ).written;
    }
  }

  /**
   * Forgets the block's strings, so the block writer does not keep the
   * caller's data alive between calls.
   */
  release(): void {
    this.strings = "";
    if (this.table.size !== 0) this.table.reset();
    // A new array is cheaper than truncating one in V8.
    if (this.shapes.length !== 0) this.shapes = [];
  }
}

const EMPTY_OBJECT = {};

function hasEnumerableInherited(): boolean {
  for (const _ in EMPTY_OBJECT) return true;
  return false;
}

/**
 * Writes a string-table reference to `text` and returns its table index.
 * The caller has ensured room for {@linkcode MAX_REFERENCE_BYTES}.
 */
export function putReference(block: BlockWriter, text: string): number {
  const found = block.table.lookupOrAdd(text);
  const out = block.out;
  if (found >= 0) {
    putVarUint(out, found * 2 + 1);
    return found;
  }
  const index = -1 - found;
  if (text.length === 36) {
    const at = out.pos;
    out.bytes[out.pos++] = 0;
    if (writeUuidBytes(out, text)) return index;
    out.pos = at;
  }
  putVarUint(out, text.length * 2 + 2);
  appendString(block, text);
  return index;
}

/**
 * Appends `text` to the block's string section. A low surrogate at its
 * start is lone (nothing precedes it in `text`), but right after a string
 * that ends in a lone high surrogate the two would make one pair, and the
 * section's UTF-8 one code point across two strings, which no decoder can
 * split. So it becomes U+FFFD here, as `TextEncoder` writes every other
 * lone surrogate (PROTOCOL.md §3.4); the length in code units is the same.
 */
export function appendString(block: BlockWriter, text: string): void {
  const first = text.charCodeAt(0);
  block.strings += first >= 0xdc00 && first <= 0xdfff
    ? "\ufffd" + text.slice(1)
    : text;
}

/** `putReference` for a caller that has not ensured room. */
export function writeReference(block: BlockWriter, text: string): number {
  block.out.ensure(MAX_REFERENCE_BYTES);
  return putReference(block, text);
}

/**
 * Reads a block's structure length and its two sections into `reader`, and
 * leaves the reader at the start of the structure, its end at the
 * structure's end. `checkBlockEnd` puts it after the sections.
 *
 * With `copyBytes`, byte-array values are views into one copy of the byte
 * section; without, views into the frame itself.
 */
export function readBlockSections(reader: Reader, copyBytes: boolean): void {
  const start = reader.pos;
  if (reader.end - start < 4) throw truncated(reader, 4);
  const bytes = reader.bytes;
  const length = (bytes[start]! | (bytes[start + 1]! << 8) |
    (bytes[start + 2]! << 16)) + bytes[start + 3]! * 0x1000000;
  const structureStart = start + 4;
  if (length > reader.end - structureStart) {
    throw new ProtocolError(
      "truncated",
      `Cannot decode changesets: structure length ${length} exceeds the ${
        reader.end - structureStart
      } bytes left at offset ${start}`,
      start,
    );
  }
  const structureEnd = structureStart + length;
  reader.pos = structureEnd;
  const blobBytes = readSectionLength(reader, "byte section");
  // Byte values are views into one buffer, never a buffer each: allocating
  // an ArrayBuffer costs more than decoding a small message (PERFORMANCE.md).
  reader.blobs = blobBytes === 0
    ? NO_BYTES
    : copyBytes
    ? reader.bytes.slice(reader.pos, reader.pos + blobBytes)
    : reader.bytes.subarray(reader.pos, reader.pos + blobBytes);
  reader.blobsPos = 0;
  reader.pos += blobBytes;
  const stringBytes = reader.end - reader.pos;
  reader.strings = stringBytes === 0 ? "" : readUtf8(reader, stringBytes);
  reader.stringsPos = 0;
  reader.table = [];
  reader.shapes = [];
  reader.blockEnd = reader.end;
  reader.pos = structureStart;
  reader.end = structureEnd;
}

function readSectionLength(reader: Reader, what: string): number {
  const start = reader.pos;
  const length = readVarUint(reader);
  if (length > reader.end - reader.pos) {
    throw new ProtocolError(
      "truncated",
      `Cannot decode ${what}: length ${length} exceeds the ${
        reader.end - reader.pos
      } bytes left at offset ${start}`,
      start,
    );
  }
  return length;
}

/**
 * Throws `trailing_bytes` unless the structure was read to its end and both
 * sections were used up; then moves the reader past the block.
 */
export function checkBlockEnd(reader: Reader): void {
  if (reader.pos !== reader.end) {
    throw new ProtocolError(
      "trailing_bytes",
      `Cannot decode changesets: ${
        reader.end - reader.pos
      } bytes of the structure left over at offset ${reader.pos}`,
      reader.pos,
    );
  }
  const unusedUnits = reader.strings.length - reader.stringsPos;
  if (unusedUnits !== 0) {
    throw new ProtocolError(
      "trailing_bytes",
      `Cannot decode changesets: ${unusedUnits} code units of the string section unused`,
      reader.pos,
    );
  }
  const unusedBytes = reader.blobs.length - reader.blobsPos;
  if (unusedBytes !== 0) {
    throw new ProtocolError(
      "trailing_bytes",
      `Cannot decode changesets: ${unusedBytes} bytes of the byte section unused`,
      reader.pos,
    );
  }
  reader.pos = reader.end = reader.blockEnd;
}

/**
 * Takes the next `units` UTF-16 code units of the string section. `start`
 * is the offset of the length in the frame, for error messages.
 */
export function takeString(
  reader: Reader,
  units: number,
  start: number,
): string {
  if (units > reader.limits.maxStringBytes) {
    throw new ProtocolError(
      "length_over_limit",
      `Cannot decode string length: ${units} exceeds limit ${reader.limits.maxStringBytes} at offset ${start}`,
      start,
    );
  }
  const from = reader.stringsPos;
  const strings = reader.strings;
  if (units > strings.length - from) {
    throw new ProtocolError(
      "truncated",
      `Cannot decode string: ${units} code units needed, ${
        strings.length - from
      } left in the string section at offset ${start}`,
      start,
    );
  }
  // A low surrogate here means the previous string ended inside a pair:
  // the section is valid UTF-8, so only a cut can produce one.
  const first = strings.charCodeAt(from);
  if (first >= 0xdc00 && first <= 0xdfff) {
    throw new ProtocolError(
      "invalid_utf8",
      `Cannot decode string: it starts inside a surrogate pair at offset ${start}`,
      start,
    );
  }
  reader.stringsPos = from + units;
  return strings.slice(from, from + units);
}

/** Takes the next `length` bytes of the byte section, as a view. */
export function takeBytes(
  reader: Reader,
  length: number,
  start: number,
): Uint8Array {
  if (length > reader.limits.maxBytesLength) {
    throw new ProtocolError(
      "length_over_limit",
      `Cannot decode byte array length: ${length} exceeds limit ${reader.limits.maxBytesLength} at offset ${start}`,
      start,
    );
  }
  const from = reader.blobsPos;
  if (length > reader.blobs.length - from) {
    throw new ProtocolError(
      "truncated",
      `Cannot decode byte array: ${length} bytes needed, ${
        reader.blobs.length - from
      } left in the byte section at offset ${start}`,
      start,
    );
  }
  reader.blobsPos = from + length;
  return reader.blobs.subarray(from, from + length);
}

/**
 * Names up to this many code units are looked up in the name cache. Shorter
 * than 13 also means `slice` copies them rather than keeping a view of the
 * whole string section, so the cache never holds a message's section alive.
 */
const CACHED_NAME_UNITS = 12;
const NAME_CACHE_SIZE = 4096;

/**
 * Type and field names recently decoded, shared by all decoding: the same
 * few names arrive in message after message, and giving V8 the string it
 * has already seen as a property key saves it a string-table lookup per
 * field written, which cost more than the decoding (PERFORMANCE.md).
 * Entries are only ever compared with and returned for equal text.
 */
const nameCache: string[] = new Array(NAME_CACHE_SIZE).fill("");

/** `takeString` for names, through the name cache. */
function takeName(reader: Reader, units: number, start: number): string {
  const from = reader.stringsPos;
  const strings = reader.strings;
  if (
    units === 0 || units > CACHED_NAME_UNITS ||
    units > reader.limits.maxStringBytes || units > strings.length - from
  ) {
    return takeString(reader, units, start);
  }
  const first = strings.charCodeAt(from);
  if (first >= 0xdc00 && first <= 0xdfff) {
    return takeString(reader, units, start);
  }
  const last = strings.charCodeAt(from + units - 1);
  const slot = (Math.imul(units ^ (first << 5) ^ (last << 16), 0x9e3779b1) >>>
    20) & (NAME_CACHE_SIZE - 1);
  reader.stringsPos = from + units;
  const cached = nameCache[slot]!;
  if (cached.length === units && strings.startsWith(cached, from)) {
    return cached;
  }
  const text = strings.slice(from, from + units);
  nameCache[slot] = text;
  return text;
}

/**
 * Reads a string-table reference and returns the string's table index.
 * `isName` marks type names, field names and object keys, which go through
 * the name cache; ids sent as 16 bytes go through the id cache of
 * `readUuid`, other ids through neither.
 */
export function readReference(reader: Reader, isName: boolean): number {
  const start = reader.pos;
  const reference = readVarUint(reader);
  const table = reader.table;
  if ((reference & 1) === 1) {
    const index = (reference - 1) / 2;
    if (index >= table.length) {
      throw new ProtocolError(
        "bad_reference",
        `Cannot decode string reference: index ${index} exceeds table size ${table.length} at offset ${start}`,
        start,
      );
    }
    return index;
  }
  let text: string;
  if (reference === 0) {
    if (reader.end - reader.pos < UUID_BYTES) throw truncated(reader, 16);
    text = readUuid(reader.bytes, reader.pos);
    reader.pos += UUID_BYTES;
  } else if (isName) {
    text = takeName(reader, reference / 2 - 1, start);
  } else {
    text = takeString(reader, reference / 2 - 1, start);
  }
  table.push(text);
  return table.length - 1;
}
