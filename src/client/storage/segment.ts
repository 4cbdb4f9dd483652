// This module is browser compatible.

/**
 * The packed form in which the Deno KV storage writes a commit (or a
 * snapshot): object records in blocks of instructions and pending
 * changesets, as one byte string, so a realm of 100,000 objects is a few
 * hundred KV values instead of 100,000.
 */

import type { Instruction, UploadChangeset } from "../../model/changeset.ts";
import type { Hlc } from "../../model/hlc.ts";
import {
  emptyRecord,
  type ObjectRecord,
  recordToInstructions,
} from "../../model/merge.ts";
import {
  decodeDownloadChangeset,
  decodeUploadChangeset,
} from "../../protocol/decode.ts";
import {
  encodeDownloadChangeset,
  encodeUploadChangeset,
} from "../../protocol/encode.ts";

const RECORDS = 1;
const CHANGESET = 2;
/** Records per block: bounds one block's decode, keeps blocks shared. */
const RECORDS_PER_BLOCK = 1_000;
const BLOCK_STAMP: Readonly<Hlc> = Object.freeze({
  time: 0,
  counter: 0,
  node: 0,
});
// A block is bounded by RECORDS_PER_BLOCK records, not by bytes: a stored
// record may be as large as one write.
const BLOCK_LIMITS = {
  maxMessageBytes: 2 ** 31,
  maxInstructions: 2 ** 31,
  maxChangesets: 2 ** 31,
};

function pushLength(target: number[], length: number): void {
  let rest = length;
  while (rest >= 0x80) {
    target.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  target.push(rest);
}

/** Encodes records and changesets as one segment. */
export function encodeSegment(
  records: readonly ObjectRecord[],
  changesets: readonly UploadChangeset[],
): Uint8Array<ArrayBuffer> {
  const frames: [number, Uint8Array][] = [];
  for (let first = 0; first < records.length; first += RECORDS_PER_BLOCK) {
    const instructions: Instruction[] = [];
    for (const record of records.slice(first, first + RECORDS_PER_BLOCK)) {
      for (const instruction of recordToInstructions(record)) {
        instructions.push(instruction);
      }
    }
    frames.push([
      RECORDS,
      encodeDownloadChangeset({
        serverVersion: 0,
        stamp: BLOCK_STAMP,
        instructions,
      }),
    ]);
  }
  for (const changeset of changesets) {
    frames.push([CHANGESET, encodeUploadChangeset(changeset)]);
  }
  const head: number[][] = frames.map(([kind, bytes]) => {
    const prefix = [kind];
    pushLength(prefix, bytes.length);
    return prefix;
  });
  let size = 0;
  for (let i = 0; i < frames.length; i++) {
    size += head[i]!.length + frames[i]![1].length;
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (let i = 0; i < frames.length; i++) {
    out.set(head[i]!, offset);
    offset += head[i]!.length;
    out.set(frames[i]![1], offset);
    offset += frames[i]![1].length;
  }
  return out;
}

/**
 * Rebuilds a record from the instructions `recordToInstructions` made of
 * it: they are its state (a delete stamp, a put with the fields it set,
 * updates with theirs), so they are set directly, not merged.
 */
function restoreInstruction(record: ObjectRecord, instruction: Instruction) {
  const stamp = instruction.stamp;
  if (stamp === null) throw new RangeError("a stored instruction has no stamp");
  if (instruction.op === "delete") {
    record.deleteStamp = stamp;
    return;
  }
  if (instruction.op === "put") record.putStamp = stamp;
  const fields = instruction.fields;
  if (fields === null) return;
  for (const name of Object.keys(fields)) {
    record.fields.set(name, { value: fields[name]!, stamp });
  }
}

function recordName(type: string, id: string): string {
  return `${type.length}:${type}${id}`;
}

/**
 * Decodes a segment into `records` (each record it holds replaces the one
 * kept, since a segment holds whole records) and `pending`. Throws a
 * `RangeError` or `ProtocolError` for bytes that do not decode.
 */
export function decodeSegment(
  bytes: Uint8Array,
  records: Map<string, ObjectRecord>,
  pending: Map<number, UploadChangeset>,
): void {
  const fresh = new Set<string>();
  let offset = 0;
  while (offset < bytes.length) {
    const kind = bytes[offset++]!;
    let length = 0;
    let scale = 1;
    for (let i = 0;; i++) {
      if (i === 5 || offset >= bytes.length) {
        throw new RangeError("a segment frame length is bad");
      }
      const byte = bytes[offset++]!;
      length += (byte & 0x7f) * scale;
      if (byte < 0x80) break;
      scale *= 128;
    }
    if (offset + length > bytes.length) {
      throw new RangeError("a segment frame runs past the end");
    }
    const frame = bytes.subarray(offset, offset + length);
    offset += length;
    if (kind === RECORDS) {
      const { instructions } = decodeDownloadChangeset(frame, BLOCK_LIMITS);
      for (const instruction of instructions) {
        const name = recordName(instruction.type, instruction.id);
        let record = records.get(name);
        if (record === undefined || !fresh.has(name)) {
          record = emptyRecord(instruction.type, instruction.id);
          records.set(name, record);
          fresh.add(name);
        }
        restoreInstruction(record, instruction);
      }
    } else if (kind === CHANGESET) {
      const changeset = decodeUploadChangeset(frame);
      pending.set(changeset.clientVersion, changeset);
    } else {
      throw new RangeError(`a segment frame of unknown kind ${kind}`);
    }
  }
}
