// This module is browser compatible.

import type { Value } from "../model/value.ts";
import { defineField } from "../model/value.ts";
import { ProtocolError } from "./protocol_error.ts";
import {
  readBoundedVarUint,
  readBytes,
  readCount,
  type Reader,
  readF64,
  readString,
  readU8,
  readVarUint,
} from "./reader.ts";
import {
  writeBytes,
  writeF64,
  type Writer,
  writeString,
  writeU8,
  writeVarUint,
} from "./writer.ts";

/** Value tags (PROTOCOL.md §4.4). Tags 0x80–0xff are integers 0–127. */
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
  Array: 0x0b,
  Object: 0x0c,
  SmallInt: 0x80,
} as const;

/** Longest bigint magnitude accepted, in bytes (2^2048 is plenty). */
const MAX_BIGINT_BYTES = 256;

/** Writes one value with its tag. Depth is checked against `maxDepth`. */
export function writeValue(
  writer: Writer,
  value: Value,
  maxDepth: number,
): void {
  switch (typeof value) {
    case "number":
      writeNumber(writer, value);
      return;
    case "string":
      writeU8(writer, ValueTag.String);
      writeString(writer, value);
      return;
    case "boolean":
      writeU8(writer, value ? ValueTag.True : ValueTag.False);
      return;
    case "bigint":
      writeBigInt(writer, value);
      return;
    case "object":
      break;
    default:
      throw unencodable(`type ${typeof value}`);
  }
  if (value === null) {
    writeU8(writer, ValueTag.Null);
  } else if (value instanceof Uint8Array) {
    writeU8(writer, ValueTag.Bytes);
    writeBytes(writer, value);
  } else if (value instanceof Date) {
    writeU8(writer, ValueTag.Date);
    writeF64(writer, value.getTime());
  } else {
    if (maxDepth <= 0) throw unencodable("nesting deeper than the limit");
    if (Array.isArray(value)) {
      writeU8(writer, ValueTag.Array);
      writeVarUint(writer, value.length);
      for (let index = 0; index < value.length; index++) {
        const item = value[index];
        if (item === undefined) throw unencodable("undefined in an array");
        writeValue(writer, item, maxDepth - 1);
      }
    } else {
      const prototype = Object.getPrototypeOf(value);
      if (prototype !== Object.prototype && prototype !== null) {
        throw unencodable("an object that is not a plain object");
      }
      const keys = Object.keys(value);
      writeU8(writer, ValueTag.Object);
      writeVarUint(writer, keys.length);
      for (const key of keys) {
        writeString(writer, key);
        const item = value[key];
        if (item === undefined) throw unencodable("undefined in an object");
        writeValue(writer, item, maxDepth - 1);
      }
    }
  }
}

function writeNumber(writer: Writer, value: number): void {
  if (value % 1 === 0 && !Object.is(value, -0)) {
    if (value >= 0) {
      if (value < 0x80) {
        writeU8(writer, ValueTag.SmallInt | value);
        return;
      }
      if (value <= Number.MAX_SAFE_INTEGER) {
        writeU8(writer, ValueTag.PositiveInt);
        writeVarUint(writer, value);
        return;
      }
    } else if (value >= -Number.MAX_SAFE_INTEGER) {
      // -1 - n keeps every negative safe integer in the varint range.
      writeU8(writer, ValueTag.NegativeInt);
      writeVarUint(writer, -1 - value);
      return;
    }
  }
  writeU8(writer, ValueTag.Float64);
  writeF64(writer, value);
}

function writeBigInt(writer: Writer, value: bigint): void {
  let magnitude = value < 0n ? -value : value;
  const bytes: number[] = [];
  while (magnitude > 0n) {
    bytes.push(Number(magnitude & 0xffn));
    magnitude >>= 8n;
  }
  if (bytes.length > MAX_BIGINT_BYTES) throw unencodable("bigint too large");
  writeU8(
    writer,
    value < 0n ? ValueTag.NegativeBigInt : ValueTag.PositiveBigInt,
  );
  writeBytes(writer, Uint8Array.from(bytes));
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
  const tag = readU8(reader);
  if (tag >= ValueTag.SmallInt) return tag - ValueTag.SmallInt;
  switch (tag) {
    case ValueTag.Null:
      return null;
    case ValueTag.False:
      return false;
    case ValueTag.True:
      return true;
    case ValueTag.Float64:
      return readF64(reader);
    case ValueTag.PositiveInt:
      return readVarUint(reader);
    case ValueTag.NegativeInt:
      return -1 - readVarUint(reader);
    case ValueTag.PositiveBigInt:
    case ValueTag.NegativeBigInt:
      return readBigInt(reader, tag === ValueTag.NegativeBigInt);
    case ValueTag.String:
      return readString(reader);
    case ValueTag.Bytes:
      return readBytes(reader);
    case ValueTag.Date:
      return new Date(readF64(reader));
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
  const count = readCount(
    reader,
    reader.limits.maxCollectionLength,
    2,
    "object size",
  );
  const object: { [key: string]: Value } = {};
  for (let index = 0; index < count; index++) {
    const key = readString(reader);
    defineField(object, key, readValue(reader, depth - 1));
  }
  return object;
}

function readBigInt(reader: Reader, negative: boolean): bigint {
  const length = readBoundedVarUint(reader, MAX_BIGINT_BYTES, "bigint length");
  if (length > reader.remaining) {
    throw new ProtocolError(
      "truncated",
      `Cannot decode bigint: need ${length} bytes at offset ${reader.pos}`,
      reader.pos,
    );
  }
  let magnitude = 0n;
  for (let index = length - 1; index >= 0; index--) {
    magnitude = (magnitude << 8n) | BigInt(reader.bytes[reader.pos + index]!);
  }
  reader.pos += length;
  return negative ? -magnitude : magnitude;
}
