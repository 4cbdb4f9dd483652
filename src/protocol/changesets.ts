// This module is browser compatible.

import type {
  DownloadChangeset,
  Instruction,
  InstructionOp,
  UploadChangeset,
} from "../model/changeset.ts";
import type { Hlc } from "../model/hlc.ts";
import { defineField, type Fields } from "../model/value.ts";
import { ProtocolError } from "./protocol_error.ts";
import {
  readBoundedVarUint,
  readCount,
  type Reader,
  readString,
  readU8,
  readVarUint,
} from "./reader.ts";
import { readValue, writeValue } from "./values.ts";
import { type Writer, writeString, writeU8, writeVarUint } from "./writer.ts";

/**
 * Changesets and instructions on the wire (PROTOCOL.md §5). Type names,
 * object ids and field names go through a per-message string table: the
 * first use writes the string, later uses write its index.
 */

/** Interns strings while encoding one message. */
export class StringTable {
  #indexes = new Map<string, number>();

  /** Forgets every string, for the next message. */
  reset(): void {
    this.#indexes.clear();
  }

  /** Writes `value` as a reference: 0 + string when new, else index + 1. */
  write(writer: Writer, value: string): void {
    const index = this.#indexes.get(value);
    if (index !== undefined) {
      writeVarUint(writer, index + 1);
      return;
    }
    this.#indexes.set(value, this.#indexes.size);
    writeU8(writer, 0);
    writeString(writer, value);
  }
}

/** The decoding side of {@linkcode StringTable}. */
export class StringTableReader {
  #strings: string[] = [];

  /** Forgets every string, for the next message. */
  reset(): void {
    this.#strings.length = 0;
  }

  /** Reads a reference written by `StringTable.write`. */
  read(reader: Reader): string {
    const start = reader.pos;
    const reference = readVarUint(reader);
    if (reference === 0) {
      const value = readString(reader);
      this.#strings.push(value);
      return value;
    }
    const value = this.#strings[reference - 1];
    if (value === undefined) {
      throw new ProtocolError(
        "bad_reference",
        `Cannot decode string reference: ${reference} exceeds table size ${this.#strings.length} at offset ${start}`,
        start,
      );
    }
    return value;
  }
}

// Instruction header byte (PROTOCOL.md §5.2): bits 0–1 op, bit 2 own stamp,
// bit 3 same type as the previous instruction in this changeset.
const OP_CODES: Record<InstructionOp, number> = {
  put: 0,
  update: 1,
  delete: 2,
};
const OPS: readonly InstructionOp[] = ["put", "update", "delete"];
const HAS_STAMP = 0x04;
const SAME_TYPE = 0x08;
const HEADER_MASK = 0x0f;

/** Writes a stamp: time, counter, node as varuints. */
export function writeStamp(writer: Writer, stamp: Hlc): void {
  writeVarUint(writer, stamp.time);
  writeVarUint(writer, stamp.counter);
  writeVarUint(writer, stamp.node);
}

/** Reads a stamp, checking each component's range. */
export function readStamp(reader: Reader): Hlc {
  const time = readBoundedVarUint(reader, 2 ** 48 - 1, "stamp time");
  const counter = readBoundedVarUint(reader, 0xffff, "stamp counter");
  const node = readBoundedVarUint(reader, 2 ** 48 - 1, "stamp node");
  return { time, counter, node };
}

/** Writes a list of instructions. */
export function writeInstructions(
  writer: Writer,
  instructions: readonly Instruction[],
  strings: StringTable,
  maxDepth: number,
): void {
  writeVarUint(writer, instructions.length);
  let previousType: string | null = null;
  for (let index = 0; index < instructions.length; index++) {
    const instruction = instructions[index]!;
    const opCode = OP_CODES[instruction.op];
    if (opCode === undefined) {
      throw new ProtocolError(
        "unencodable_value",
        `Cannot encode instruction: unknown op ${String(instruction.op)}`,
      );
    }
    const sameType = instruction.type === previousType;
    writeU8(
      writer,
      opCode | (instruction.stamp !== null ? HAS_STAMP : 0) |
        (sameType ? SAME_TYPE : 0),
    );
    if (!sameType) strings.write(writer, instruction.type);
    previousType = instruction.type;
    strings.write(writer, instruction.id);
    if (instruction.stamp !== null) writeStamp(writer, instruction.stamp);
    if (opCode !== 2) {
      writeFields(writer, instruction.fields ?? {}, strings, maxDepth);
    }
  }
}

function writeFields(
  writer: Writer,
  fields: Fields,
  strings: StringTable,
  maxDepth: number,
): void {
  const names = Object.keys(fields);
  writeVarUint(writer, names.length);
  for (const name of names) {
    strings.write(writer, name);
    writeValue(writer, fields[name]!, maxDepth);
  }
}

/** Reads a list of instructions. */
export function readInstructions(
  reader: Reader,
  strings: StringTableReader,
): Instruction[] {
  // Smallest instruction: header, type ref 0 + empty string, id ref.
  const count = readCount(
    reader,
    reader.limits.maxInstructions,
    2,
    "instruction count",
  );
  const instructions: Instruction[] = new Array(count);
  let previousType: string | null = null;
  for (let index = 0; index < count; index++) {
    const start = reader.pos;
    const header = readU8(reader);
    const op = OPS[header & 0x03];
    if (op === undefined || (header & ~HEADER_MASK) !== 0) {
      throw new ProtocolError(
        "unknown_instruction",
        `Cannot decode instruction: bad header 0x${
          header.toString(16).padStart(2, "0")
        } at offset ${start}`,
        start,
      );
    }
    let type: string;
    if ((header & SAME_TYPE) !== 0) {
      if (previousType === null) {
        throw new ProtocolError(
          "bad_reference",
          `Cannot decode instruction: "same type" with no previous instruction at offset ${start}`,
          start,
        );
      }
      type = previousType;
    } else {
      type = strings.read(reader);
    }
    previousType = type;
    const id = strings.read(reader);
    const stamp = (header & HAS_STAMP) !== 0 ? readStamp(reader) : null;
    const fields = op === "delete" ? null : readFields(reader, strings);
    instructions[index] = { op, type, id, fields, stamp };
  }
  return instructions;
}

function readFields(reader: Reader, strings: StringTableReader): Fields {
  const count = readCount(
    reader,
    reader.limits.maxCollectionLength,
    2,
    "field count",
  );
  const fields: Fields = {};
  for (let index = 0; index < count; index++) {
    const name = strings.read(reader);
    defineField(fields, name, readValue(reader, reader.limits.maxDepth));
  }
  return fields;
}

/** Writes an upload changeset (PROTOCOL.md §5.1). */
export function writeUploadChangeset(
  writer: Writer,
  changeset: UploadChangeset,
  strings: StringTable,
  maxDepth: number,
): void {
  writeVarUint(writer, changeset.clientVersion);
  writeVarUint(writer, changeset.baseServerVersion);
  writeStamp(writer, changeset.stamp);
  writeInstructions(writer, changeset.instructions, strings, maxDepth);
}

/** Reads an upload changeset. */
export function readUploadChangeset(
  reader: Reader,
  strings: StringTableReader,
): UploadChangeset {
  const clientVersion = readVarUint(reader);
  const baseServerVersion = readVarUint(reader);
  const stamp = readStamp(reader);
  const instructions = readInstructions(reader, strings);
  return { clientVersion, baseServerVersion, stamp, instructions };
}

/** Writes a download changeset (PROTOCOL.md §5.1). */
export function writeDownloadChangeset(
  writer: Writer,
  changeset: DownloadChangeset,
  strings: StringTable,
  maxDepth: number,
): void {
  writeVarUint(writer, changeset.serverVersion);
  writeStamp(writer, changeset.stamp);
  writeInstructions(writer, changeset.instructions, strings, maxDepth);
}

/** Reads a download changeset. */
export function readDownloadChangeset(
  reader: Reader,
  strings: StringTableReader,
): DownloadChangeset {
  const serverVersion = readVarUint(reader);
  const stamp = readStamp(reader);
  const instructions = readInstructions(reader, strings);
  return { serverVersion, stamp, instructions };
}
