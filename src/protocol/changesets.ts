// This module is browser compatible.

import type {
  DownloadChangeset,
  Instruction,
  InstructionOp,
  UploadChangeset,
} from "../model/changeset.ts";
import {
  type Hlc,
  HLC_MAX_COUNTER,
  HLC_MAX_NODE,
  HLC_MAX_TIME,
} from "../model/hlc.ts";
import type { Fields, Value } from "../model/value.ts";
import {
  type BlockWriter,
  MAX_REFERENCE_BYTES,
  putReference,
  readReference,
} from "./block.ts";
import { DEFAULT_LIMITS } from "./limits.ts";
import {
  DownloadChangesetRecord,
  EmptyRecord,
  InstructionRecord,
  StampRecord,
  UploadChangesetRecord,
} from "./records.ts";
import { ProtocolError } from "./protocol_error.ts";
import { readCount, type Reader, readVarUint, truncated } from "./reader.ts";
import {
  defineProto,
  isPlainObject,
  MAX_SCALAR_BYTES,
  putValue,
  readValue,
} from "./values.ts";
import {
  putVarUint,
  varUintSize,
  type Writer,
  writeVarUint,
} from "./writer.ts";

/**
 * Changesets, instructions and stamps inside a changeset block
 * (PROTOCOL.md §5.3).
 *
 * Instruction header byte: bits 0–1 the op (0 put, 1 update, 2 delete),
 * bit 2 "has its own stamp", bit 3 "same type as the previous instruction
 * of this changeset" (no type reference follows), bit 4 "same field names,
 * in the same order, as the last put/update of this type in this block" (no
 * count or names follow, only values). Bits 5–7 are zero.
 */

const OPS: readonly InstructionOp[] = ["put", "update", "delete"];
const OP_DELETE = 2;
const HAS_STAMP = 0x04;
const SAME_TYPE = 0x08;
const SAME_FIELDS = 0x10;
const HEADER_BITS = 0x1f;

/** Most bytes a stamp takes: three varuints. */
const MAX_STAMP_BYTES = 24;
/** Most bytes an instruction takes before its field names and values. */
const MAX_INSTRUCTION_HEAD_BYTES = 1 + 2 * MAX_REFERENCE_BYTES +
  MAX_STAMP_BYTES + 8;

/** Writes a stamp: time, counter, node as varuints. */
export function writeStamp(out: Writer, stamp: Hlc): void {
  out.ensure(MAX_STAMP_BYTES);
  putStamp(out, stamp);
}

/** `writeStamp` for a caller that has ensured room for 24 bytes. */
function putStamp(out: Writer, stamp: Hlc): void {
  const { time, counter, node } = stamp;
  if (
    !(time <= HLC_MAX_TIME && counter <= HLC_MAX_COUNTER &&
      node <= HLC_MAX_NODE)
  ) {
    throw new ProtocolError(
      "unencodable_value",
      `Cannot encode stamp: (${time}, ${counter}, ${node}) is out of range`,
    );
  }
  putVarUint(out, time);
  putVarUint(out, counter);
  putVarUint(out, node);
}

function readStampPart(reader: Reader, max: number, what: string): number {
  const start = reader.pos;
  const value = readVarUint(reader);
  if (value > max) {
    throw new ProtocolError(
      "invalid_field",
      `Cannot decode stamp: ${what} ${value} exceeds ${max} at offset ${start}`,
      start,
    );
  }
  return value;
}

/** Reads a stamp, checking each component's range. */
export function readStamp(reader: Reader): Hlc {
  const time = readStampPart(reader, HLC_MAX_TIME, "time");
  const counter = readStampPart(reader, HLC_MAX_COUNTER, "counter");
  const node = readStampPart(reader, HLC_MAX_NODE, "node");
  return new StampRecord(time, counter, node);
}

function unencodableInstruction(what: string): ProtocolError {
  return new ProtocolError(
    "unencodable_value",
    `Cannot encode instruction: ${what}`,
  );
}

/** Writes a count and the instructions. */
export function writeInstructions(
  block: BlockWriter,
  instructions: readonly Instruction[],
): void {
  const out = block.out;
  const maxDepth = DEFAULT_LIMITS.maxDepth;
  const count = instructions.length;
  writeVarUint(out, count);
  let previousType: string | null = null;
  let typeIndex = -1;
  for (let index = 0; index < count; index++) {
    const instruction = instructions[index]!;
    const { op, type, id, stamp } = instruction;
    let header = op === "update"
      ? 1
      : op === "put"
      ? 0
      : op === "delete"
      ? 2
      : -1;
    if (header < 0) throw unencodableInstruction(`unknown op ${String(op)}`);
    if (typeof type !== "string" || typeof id !== "string") {
      throw unencodableInstruction("type and id must be strings");
    }
    // One capacity check for everything up to the field names; the header
    // is patched in once the shape check below is done.
    out.ensure(MAX_INSTRUCTION_HEAD_BYTES);
    const headerAt = out.pos++;
    if (type === previousType) {
      header |= SAME_TYPE;
    } else {
      typeIndex = putReference(block, type);
      previousType = type;
    }
    putReference(block, id);
    if (stamp !== null) {
      header |= HAS_STAMP;
      putStamp(out, stamp);
    }
    if (header & OP_DELETE) {
      out.bytes[headerAt] = header;
      continue;
    }
    const fields = instruction.fields ?? {};
    if (!isPlainObject(fields)) {
      throw unencodableInstruction("fields must be a plain object");
    }
    const ownOnly = block.ownOnly;
    // for-in with `fields[name]` is V8's fastest way through an object's
    // properties (it reads the enum cache), measured 2-3x faster than
    // Object.keys plus keyed loads (PERFORMANCE.md).
    const shape = block.shapes[typeIndex];
    if (shape === undefined) {
      out.bytes[headerAt] = header;
      block.shapes[typeIndex] = writeNamedFields(block, fields, maxDepth);
      continue;
    }
    let count = 0;
    let sameShape = true;
    for (const name in fields) {
      if (ownOnly && !Object.hasOwn(fields, name)) continue;
      if (sameShape && shape[count] !== name) sameShape = false;
      count++;
    }
    if (sameShape && count === shape.length) {
      out.bytes[headerAt] = header | SAME_FIELDS;
      for (const name in fields) {
        if (ownOnly && !Object.hasOwn(fields, name)) continue;
        out.ensure(MAX_SCALAR_BYTES);
        putField(block, fields[name], name, maxDepth);
      }
    } else {
      out.bytes[headerAt] = header;
      block.shapes[typeIndex] = writeNamedFields(block, fields, maxDepth);
    }
  }
}

/**
 * Writes a field count and the fields with their names, in one pass: the
 * count goes in a byte reserved up front, widened afterwards in the rare
 * case that it needs more. Returns the names, in order.
 */
function writeNamedFields(
  block: BlockWriter,
  fields: Fields,
  maxDepth: number,
): string[] {
  const out = block.out;
  const ownOnly = block.ownOnly;
  const countAt = out.pos++;
  const names: string[] = [];
  for (const name in fields) {
    if (ownOnly && !Object.hasOwn(fields, name)) continue;
    names.push(name);
    out.ensure(MAX_REFERENCE_BYTES + MAX_SCALAR_BYTES);
    putReference(block, name);
    putField(block, fields[name], name, maxDepth);
  }
  const count = names.length;
  if (count < 0x80) {
    out.bytes[countAt] = count;
  } else {
    const extra = varUintSize(count) - 1;
    out.ensure(extra);
    out.bytes.copyWithin(countAt + 1 + extra, countAt + 1, out.pos);
    out.pos += extra;
    const end = out.pos;
    out.pos = countAt;
    putVarUint(out, count);
    out.pos = end;
  }
  return names;
}

/** Writes a field's value; the caller has ensured `MAX_SCALAR_BYTES`. */
function putField(
  block: BlockWriter,
  value: Value | undefined,
  name: string,
  maxDepth: number,
): void {
  if (value === undefined) {
    throw new ProtocolError(
      "unencodable_value",
      `Cannot encode value: undefined in field "${name}" is not a storable value`,
    );
  }
  putValue(block, value, maxDepth);
}

function badHeader(header: number, start: number): ProtocolError {
  return new ProtocolError(
    "unknown_instruction",
    `Cannot decode instruction: bad header 0x${
      header.toString(16).padStart(2, "0")
    } at offset ${start}`,
    start,
  );
}

/** Reads a count and the instructions. */
export function readInstructions(reader: Reader): Instruction[] {
  // Smallest instruction: a header and an id reference ("same type").
  const count = readCount(
    reader,
    reader.limits.maxInstructions,
    2,
    "instruction count",
  );
  const maxDepth = reader.limits.maxDepth;
  const table = reader.table;
  const shapes = reader.shapes;
  const instructions: Instruction[] = new Array(count);
  let typeIndex = -1;
  for (let index = 0; index < count; index++) {
    const start = reader.pos;
    if (start >= reader.end) throw truncated(reader, 1);
    const header = reader.bytes[reader.pos++]!;
    const opCode = header & 0x03;
    if (opCode === 3 || (header & ~HEADER_BITS) !== 0) {
      throw badHeader(header, start);
    }
    if ((header & SAME_TYPE) === 0) {
      typeIndex = readReference(reader, true);
    } else if (typeIndex < 0) {
      throw new ProtocolError(
        "bad_reference",
        `Cannot decode instruction: "same type" with no previous instruction at offset ${start}`,
        start,
      );
    }
    const type = table[typeIndex]!;
    const id = table[readReference(reader, false)]!;
    const stamp = (header & HAS_STAMP) !== 0 ? readStamp(reader) : null;
    let fields: Fields | null = null;
    if (opCode === OP_DELETE) {
      if ((header & SAME_FIELDS) !== 0) throw badHeader(header, start);
    } else if ((header & SAME_FIELDS) !== 0) {
      const names = shapes[typeIndex];
      if (names === undefined) {
        throw new ProtocolError(
          "bad_reference",
          `Cannot decode instruction: "same fields" with no earlier fields for type "${type}" at offset ${start}`,
          start,
        );
      }
      fields = new EmptyRecord() as Fields;
      for (let field = 0; field < names.length; field++) {
        setField(fields, names[field]!, readValue(reader, maxDepth));
      }
    } else {
      // Every field takes at least a name reference and a value tag.
      const fieldCount = readCount(
        reader,
        reader.limits.maxCollectionLength,
        2,
        "field count",
      );
      const names: string[] = new Array(fieldCount);
      fields = new EmptyRecord() as Fields;
      for (let field = 0; field < fieldCount; field++) {
        const name = table[readReference(reader, true)]!;
        names[field] = name;
        setField(fields, name, readValue(reader, maxDepth));
      }
      shapes[typeIndex] = names;
    }
    instructions[index] = new InstructionRecord(
      OPS[opCode]!,
      type,
      id,
      fields,
      stamp,
    );
  }
  return instructions;
}

function setField(fields: Fields, name: string, value: Value): void {
  if (name === "__proto__") defineProto(fields, value);
  else fields[name] = value;
}

/** Writes an upload changeset (PROTOCOL.md §5.3). */
export function writeUploadChangeset(
  block: BlockWriter,
  changeset: UploadChangeset,
): void {
  writeVarUint(block.out, changeset.clientVersion);
  writeVarUint(block.out, changeset.baseServerVersion);
  writeStamp(block.out, changeset.stamp);
  writeInstructions(block, changeset.instructions);
}

/** Reads an upload changeset. */
export function readUploadChangeset(reader: Reader): UploadChangeset {
  const clientVersion = readVarUint(reader);
  const baseServerVersion = readVarUint(reader);
  const stamp = readStamp(reader);
  const instructions = readInstructions(reader);
  return new UploadChangesetRecord(
    clientVersion,
    baseServerVersion,
    stamp,
    instructions,
  );
}

/** Writes a download changeset (PROTOCOL.md §5.3). */
export function writeDownloadChangeset(
  block: BlockWriter,
  changeset: DownloadChangeset,
): void {
  writeVarUint(block.out, changeset.serverVersion);
  writeStamp(block.out, changeset.stamp);
  writeInstructions(block, changeset.instructions);
}

/** Reads a download changeset. */
export function readDownloadChangeset(reader: Reader): DownloadChangeset {
  const serverVersion = readVarUint(reader);
  const stamp = readStamp(reader);
  const instructions = readInstructions(reader);
  return new DownloadChangesetRecord(serverVersion, stamp, instructions);
}
