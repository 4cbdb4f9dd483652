// This module is browser compatible.

import type { Value } from "../model/value.ts";
import {
  appendString,
  type BlockWriter,
  readReference,
  takeBytes,
  takeString,
  writeReference,
} from "./block.ts";
import { ProtocolError } from "./protocol_error.ts";
import { EmptyRecord } from "./records.ts";
import {
  readCount,
  type Reader,
  readF64,
  readVarUint,
  truncated,
} from "./reader.ts";
import { putVarUint, type Writer, writeU8, writeVarUint } from "./writer.ts";

/**
 * Value tags (PROTOCOL.md §5.4): the first byte of every field value.
 * Tags 0x80–0xff are the integers 0–127 with no further bytes.
 */
export const ValueTag = {
  Null: 0x00,
  False: 0x01,
  True: 0x02,
  Float64: 0x03,
  PositiveInt: 0x04,
  NegativeInt: 0x05,
  PositiveBigInt: 0x06,
  NegativeBigInt: 0x07,
  String: 0x08,
  Bytes: 0x09,
  Date: 0x0a,
  DateBeforeEpoch: 0x0b,
  InvalidDate: 0x0c,
  Array: 0x0d,
  Object: 0x0e,
  SmallInt: 0x80,
} as const;

/** Longest bigint magnitude on the wire, in bytes (up to 2^2048 − 1). */
export const MAX_BIGINT_BYTES = 256;

/**
 * Writes one value with its tag. `depth` is how many more levels of arrays
 * and objects may follow (PROTOCOL.md §5.4).
 *
 * @throws {ProtocolError} `unencodable_value` for anything that is not a
 *   {@linkcode Value}, or nesting deeper than `depth` (which includes
 *   cycles).
 */
export function writeValue(
  block: BlockWriter,
  value: Value,
  depth: number,
): void {
  block.out.ensure(MAX_SCALAR_BYTES);
  putValue(block, value, depth);
}

/** Most bytes a value other than an array, object or bigint takes here. */
export const MAX_SCALAR_BYTES = 9;

/**
 * `writeValue` for a caller that has ensured room for
 * {@linkcode MAX_SCALAR_BYTES}: a tag and a varuint or float64. Arrays,
 * objects and bigints ensure more for themselves.
 */
export function putValue(
  block: BlockWriter,
  value: Value,
  depth: number,
): void {
  const out = block.out;
  switch (typeof value) {
    case "string":
      out.bytes[out.pos++] = ValueTag.String;
      putVarUint(out, value.length);
      appendString(block, value);
      return;
    case "number":
      putNumber(out, value);
      return;
    case "boolean":
      out.bytes[out.pos++] = value ? ValueTag.True : ValueTag.False;
      return;
    case "object":
      if (value === null) {
        out.bytes[out.pos++] = ValueTag.Null;
        return;
      }
      writeObjectValue(block, value, depth);
      return;
    case "bigint":
      writeBigInt(block, value);
      return;
    default:
      throw unencodable(describe(value));
  }
}

function putNumber(out: Writer, value: number): void {
  const bytes = out.bytes;
  // Math.floor, not `% 1`: V8 compiles `%` on doubles to a C call.
  if (Math.floor(value) === value && value <= Number.MAX_SAFE_INTEGER) {
    if (value >= 0) {
      if (value < 0x80) {
        // -0 passes every test above; it must stay a float.
        if (value !== 0 || 1 / value > 0) {
          bytes[out.pos++] = ValueTag.SmallInt | value;
          return;
        }
      } else {
        bytes[out.pos++] = ValueTag.PositiveInt;
        putVarUint(out, value);
        return;
      }
    } else if (value >= -Number.MAX_SAFE_INTEGER) {
      // -1 - n keeps every negative safe integer in the varint range.
      bytes[out.pos++] = ValueTag.NegativeInt;
      putVarUint(out, -1 - value);
      return;
    }
  }
  bytes[out.pos++] = ValueTag.Float64;
  out.view.setFloat64(out.pos, value, true);
  out.pos += 8;
}

function writeObjectValue(
  block: BlockWriter,
  value: object,
  depth: number,
): void {
  const out = block.out;
  if (value instanceof Uint8Array) {
    out.bytes[out.pos++] = ValueTag.Bytes;
    putVarUint(out, value.length);
    const blobs = block.blobs;
    blobs.ensure(value.length);
    blobs.bytes.set(value, blobs.pos);
    blobs.pos += value.length;
    return;
  }
  if (value instanceof Date) {
    const time = value.getTime();
    if (time >= 0) {
      out.bytes[out.pos++] = ValueTag.Date;
      putVarUint(out, time);
    } else if (time < 0) {
      out.bytes[out.pos++] = ValueTag.DateBeforeEpoch;
      putVarUint(out, -1 - time);
    } else {
      out.bytes[out.pos++] = ValueTag.InvalidDate;
    }
    return;
  }
  if (depth <= 0) {
    throw unencodable("nesting deeper than the depth limit (or a cycle)");
  }
  if (Array.isArray(value)) {
    const length = value.length;
    writeU8(out, ValueTag.Array);
    writeVarUint(out, length);
    for (let index = 0; index < length; index++) {
      const item = value[index];
      if (item === undefined) {
        throw unencodable("undefined (or a hole) in an array");
      }
      writeValue(block, item as Value, depth - 1);
    }
    return;
  }
  if (!isPlainObject(value)) throw unencodable(describe(value));
  const record = value as { [key: string]: Value };
  const ownOnly = block.ownOnly;
  let count = 0;
  for (const key in record) {
    if (!ownOnly || Object.hasOwn(record, key)) count++;
  }
  writeU8(out, ValueTag.Object);
  writeVarUint(out, count);
  for (const key in record) {
    if (ownOnly && !Object.hasOwn(record, key)) continue;
    writeReference(block, key);
    const item = record[key];
    if (item === undefined) throw unencodable(`undefined in key "${key}"`);
    writeValue(block, item, depth - 1);
  }
}

/** Whether `value`'s prototype is `Object.prototype` or null. */
export function isPlainObject(value: object): boolean {
  // Reading `constructor` is an inline-cached load, where getPrototypeOf is
  // a call that cost a twentieth of encoding a small message. (An object
  // that sets an own `constructor` to `Object` passes; for-in still reads
  // only enumerable keys from it.)
  if ((value as { constructor?: unknown }).constructor === Object) return true;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

function writeBigInt(block: BlockWriter, value: bigint): void {
  const negative = value < 0n;
  let magnitude = negative ? -value : value;
  const hexDigits = magnitude === 0n ? 0 : magnitude.toString(16).length;
  const length = (hexDigits + 1) >> 1;
  if (length > MAX_BIGINT_BYTES) {
    throw unencodable(
      `a bigint of ${length} bytes (limit ${MAX_BIGINT_BYTES})`,
    );
  }
  const out = block.out;
  writeU8(out, negative ? ValueTag.NegativeBigInt : ValueTag.PositiveBigInt);
  writeVarUint(out, length);
  out.ensure(length);
  for (let index = 0; index < length; index++) {
    out.bytes[out.pos++] = Number(magnitude & 0xffn);
    magnitude >>= 8n;
  }
}

function describe(value: unknown): string {
  if (value === undefined) return "undefined";
  if (typeof value === "function") return "a function";
  if (typeof value === "symbol") return "a symbol";
  const name = (value as object)?.constructor?.name;
  return name ? `an instance of ${name}` : "an object with a custom prototype";
}

function unencodable(what: string): ProtocolError {
  return new ProtocolError(
    "unencodable_value",
    `Cannot encode value: ${what} is not a storable value`,
  );
}

/** Reads one value. `depth` is how many more levels of nesting may follow. */
export function readValue(reader: Reader, depth: number): Value {
  const start = reader.pos;
  if (start >= reader.end) throw truncated(reader, 1);
  const tag = reader.bytes[reader.pos++]!;
  if (tag >= ValueTag.SmallInt) return tag - ValueTag.SmallInt;
  switch (tag) {
    case ValueTag.String:
      return takeString(reader, readVarUint(reader), start);
    case ValueTag.Float64:
      return readF64(reader);
    case ValueTag.PositiveInt:
      return readVarUint(reader);
    case ValueTag.NegativeInt:
      return -1 - readVarUint(reader);
    case ValueTag.Null:
      return null;
    case ValueTag.False:
      return false;
    case ValueTag.True:
      return true;
    case ValueTag.Bytes:
      return takeBytes(reader, readVarUint(reader), start);
    case ValueTag.Date:
      return new Date(readDateTime(reader, MAX_DATE_MS, start));
    case ValueTag.DateBeforeEpoch:
      return new Date(-1 - readDateTime(reader, MAX_DATE_MS - 1, start));
    case ValueTag.InvalidDate:
      return new Date(NaN);
    case ValueTag.PositiveBigInt:
    case ValueTag.NegativeBigInt:
      return readBigInt(reader, tag === ValueTag.NegativeBigInt, start);
    case ValueTag.Array:
    case ValueTag.Object:
      return readCollection(reader, tag, depth, start);
    default:
      throw new ProtocolError(
        "unknown_value",
        `Cannot decode value: unknown tag 0x${
          tag.toString(16).padStart(2, "0")
        } at offset ${start}`,
        start,
      );
  }
}

/** Largest |time| a `Date` can hold, in milliseconds. */
const MAX_DATE_MS = 8.64e15;

function readDateTime(reader: Reader, max: number, start: number): number {
  const time = readVarUint(reader);
  if (time > max) {
    throw new ProtocolError(
      "invalid_field",
      `Cannot decode date: ${time} ms is outside the range of a Date at offset ${start}`,
      start,
    );
  }
  return time;
}

function readCollection(
  reader: Reader,
  tag: number,
  depth: number,
  start: number,
): Value {
  if (depth <= 0) {
    throw new ProtocolError(
      "depth_over_limit",
      `Cannot decode value: nesting exceeds limit ${reader.limits.maxDepth} at offset ${start}`,
      start,
    );
  }
  if (tag === ValueTag.Array) {
    // Every item takes at least its tag byte.
    const count = readCount(
      reader,
      reader.limits.maxCollectionLength,
      1,
      "array length",
    );
    const items: Value[] = new Array(count);
    for (let index = 0; index < count; index++) {
      items[index] = readValue(reader, depth - 1);
    }
    return items;
  }
  // Every entry takes at least a key reference and a value tag.
  const count = readCount(
    reader,
    reader.limits.maxCollectionLength,
    2,
    "object size",
  );
  const object = new EmptyRecord() as { [key: string]: Value };
  const table = reader.table;
  for (let index = 0; index < count; index++) {
    const key = table[readReference(reader, true)]!;
    const item = readValue(reader, depth - 1);
    if (key === "__proto__") defineProto(object, item);
    else object[key] = item;
  }
  return object;
}

/**
 * Sets an own `__proto__` property, which plain assignment would turn into
 * a prototype change.
 */
export function defineProto(
  record: { [key: string]: Value },
  value: Value,
): void {
  Object.defineProperty(record, "__proto__", {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

function readBigInt(reader: Reader, negative: boolean, start: number): bigint {
  const length = readVarUint(reader);
  if (length > MAX_BIGINT_BYTES) {
    throw new ProtocolError(
      "length_over_limit",
      `Cannot decode bigint length: ${length} exceeds limit ${MAX_BIGINT_BYTES} at offset ${start}`,
      start,
    );
  }
  if (reader.end - reader.pos < length) throw truncated(reader, length);
  const bytes = reader.bytes;
  let magnitude = 0n;
  for (let index = reader.pos + length - 1; index >= reader.pos; index--) {
    magnitude = (magnitude << 8n) | BigInt(bytes[index]!);
  }
  reader.pos += length;
  return negative ? -magnitude : magnitude;
}
