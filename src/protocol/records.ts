// This module is browser compatible.

import type {
  DownloadChangeset,
  Instruction,
  InstructionOp,
  UploadChangeset,
} from "../model/changeset.ts";
import type { Hlc } from "../model/hlc.ts";
import type { Fields } from "../model/value.ts";

/**
 * Constructors for the plain objects the decoder builds per instruction.
 *
 * Why not object literals: a literal carries an allocation site, and when
 * the objects from one site outlive a few garbage collections (a large
 * message kept while it is processed), V8 may decide that everything from
 * that site is long-lived and allocate it in the old generation from then
 * on ("pretenuring"). In about one process in three, that made every later
 * decode 1.7× slower, for good (PERFORMANCE.md). Objects made with `new` on
 * a function carry no allocation site. Each function's `prototype` is
 * `Object.prototype`, so what it makes is an ordinary plain object.
 */

/** Makes `{ op, type, id, fields, stamp }`, always in that shape. */
export const InstructionRecord = function (
  this: Instruction,
  op: InstructionOp,
  type: string,
  id: string,
  fields: Fields | null,
  stamp: Hlc | null,
) {
  this.op = op;
  this.type = type;
  this.id = id;
  this.fields = fields;
  this.stamp = stamp;
} as unknown as new (
  op: InstructionOp,
  type: string,
  id: string,
  fields: Fields | null,
  stamp: Hlc | null,
) => Instruction;
InstructionRecord.prototype = Object.prototype;

/** Makes `{ time, counter, node }`. */
export const StampRecord = function (
  this: Hlc,
  time: number,
  counter: number,
  node: number,
) {
  this.time = time;
  this.counter = counter;
  this.node = node;
} as unknown as new (time: number, counter: number, node: number) => Hlc;
StampRecord.prototype = Object.prototype;

/** Makes an empty plain object for fields or object values. */
export const EmptyRecord = function () {} as unknown as new () => {
  [key: string]: unknown;
};
EmptyRecord.prototype = Object.prototype;

/** Makes `{ clientVersion, baseServerVersion, stamp, instructions }`. */
export const UploadChangesetRecord = function (
  this: UploadChangeset,
  clientVersion: number,
  baseServerVersion: number,
  stamp: Hlc,
  instructions: Instruction[],
) {
  this.clientVersion = clientVersion;
  this.baseServerVersion = baseServerVersion;
  this.stamp = stamp;
  this.instructions = instructions;
} as unknown as new (
  clientVersion: number,
  baseServerVersion: number,
  stamp: Hlc,
  instructions: Instruction[],
) => UploadChangeset;
UploadChangesetRecord.prototype = Object.prototype;

/** Makes `{ serverVersion, stamp, instructions }`. */
export const DownloadChangesetRecord = function (
  this: DownloadChangeset,
  serverVersion: number,
  stamp: Hlc,
  instructions: Instruction[],
) {
  this.serverVersion = serverVersion;
  this.stamp = stamp;
  this.instructions = instructions;
} as unknown as new (
  serverVersion: number,
  stamp: Hlc,
  instructions: Instruction[],
) => DownloadChangeset;
DownloadChangesetRecord.prototype = Object.prototype;
