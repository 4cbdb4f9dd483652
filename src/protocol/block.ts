// This module is browser compatible.

import { ProtocolError } from "./protocol_error.ts";
import { type Reader, readUtf8, readVarUint, truncated } from "./reader.ts";
import { StringTable } from "./string_table.ts";
import { formatUuid, UUID_BYTES, writeUuidBytes } from "./uuid.ts";
import { varUintSize, Writer, writeRaw, writeVarUint } from "./writer.ts";

/**
 * A changeset block (PROTOCOL.md §5): the part of an UPLOAD, a DOWNLOAD or a
 * stored changeset that carries changesets. It starts with two sections,
 *
 * 1. the string section: every string of the block, UTF-8, concatenated;
 * 2. the byte section: every byte-array value of the block, concatenated;
 *
 * then the structure (changesets, instructions, values), which says how many
 * UTF-16 code units of the string section each string takes, and how many
 * bytes of the byte section each byte array takes, in order.
 *
 * Why: one `TextDecoder` call for the whole string section plus a `slice`
 * per string costs a tenth of decoding each string on its own, and one copy
 * of the byte section with a view per value costs a fraction of one buffer
 * per value (PERFORMANCE.md).
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

const NO_BYTES = new Uint8Array(0);

/** Encoding state for one block. */
export class BlockWriter {
  /** The structure. */
  readonly out: Writer = new Writer(64 * 1024);
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
  /** Starts a new block. */
  begin(): void {
    this.out.reset();
    this.blobs.reset();
    this.release();
    this.ownOnly = hasEnumerableInherited();
  }

  /** Writes the block (sections, then structure) into `frame`. */
  end(frame: Writer): void {
    writeStringSection(frame, this.strings);
    writeVarUint(frame, this.blobs.length);
    writeRaw(frame, this.blobs.bytes.subarray(0, this.blobs.pos));
    writeRaw(frame, this.out.bytes.subarray(0, this.out.pos));
  }

  /**
   * Forgets the block's strings, so the block writer does not keep the
   * caller's data alive between calls.
   */
  release(): void {
    this.strings = "";
    if (this.table.size !== 0) this.table.reset();
    if (this.shapes.length !== 0) this.shapes.length = 0;
  }
}

const EMPTY_OBJECT = {};

function hasEnumerableInherited(): boolean {
  for (const _ in EMPTY_OBJECT) return true;
  return false;
}

function writeStringSection(frame: Writer, text: string): void {
  const maxBytes = text.length * 3;
  const reserved = varUintSize(maxBytes);
  frame.ensure(reserved + maxBytes);
  const start = frame.pos + reserved;
  const written = maxBytes === 0 ? 0 : textEncoder.encodeInto(
    text,
    frame.bytes.subarray(start, start + maxBytes),
  ).written;
  const needed = varUintSize(written);
  if (needed !== reserved) {
    frame.bytes.copyWithin(frame.pos + needed, start, start + written);
  }
  writeVarUint(frame, written);
  frame.pos += written;
}

/**
 * Writes a string-table reference to `text` and returns its table index.
 */
export function writeReference(block: BlockWriter, text: string): number {
  const found = block.table.lookupOrAdd(text);
  const out = block.out;
  if (found >= 0) {
    writeVarUint(out, found * 2 + 1);
    return found;
  }
  const index = -1 - found;
  if (text.length === 36) {
    out.ensure(1 + UUID_BYTES);
    const at = out.pos;
    out.bytes[out.pos++] = 0;
    if (writeUuidBytes(out, text)) return index;
    out.pos = at;
  }
  writeVarUint(out, text.length * 2 + 2);
  block.strings += text;
  return index;
}

/** Appends a string value's text; the caller writes its length. */
export function appendString(block: BlockWriter, text: string): void {
  block.strings += text;
}

/** Appends a byte-array value to the byte section. */
export function appendBytes(block: BlockWriter, bytes: Uint8Array): void {
  writeRaw(block.blobs, bytes);
}

/** Reads the two sections at the start of a block into `reader`. */
export function readBlockSections(reader: Reader): void {
  const stringBytes = readSectionLength(reader, "string section");
  reader.strings = stringBytes === 0 ? "" : readUtf8(reader, stringBytes);
  reader.stringsPos = 0;
  const blobBytes = readSectionLength(reader, "byte section");
  // One copy of the whole section, which byte values are views into: they
  // must not alias the caller's frame, and a buffer per value would cost
  // more than the rest of the decoding (PERFORMANCE.md).
  reader.blobs = blobBytes === 0
    ? NO_BYTES
    : reader.bytes.slice(reader.pos, reader.pos + blobBytes);
  reader.blobsPos = 0;
  reader.pos += blobBytes;
  reader.table = [];
  reader.shapes = [];
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

/** Throws `trailing_bytes` unless the block used both sections up. */
export function checkBlockEnd(reader: Reader): void {
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

/** Reads a string-table reference and returns the string's table index. */
export function readReference(reader: Reader): number {
  const start = reader.pos;
  const reference = readVarUint(reader);
  const table = reader.table;
  if (reference % 2 === 1) {
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
    text = formatUuid(reader.bytes, reader.pos);
    reader.pos += UUID_BYTES;
  } else {
    text = takeString(reader, reference / 2 - 1, start);
  }
  table.push(text);
  return table.length - 1;
}
