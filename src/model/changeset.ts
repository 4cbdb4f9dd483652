// This module is browser compatible.

import type { Fields } from "./value.ts";
import type { Hlc } from "./hlc.ts";

/**
 * What an instruction does to one object.
 *
 * - `put` creates the object, or replaces it whole: fields older than the put
 *   are dropped, the listed fields are set.
 * - `update` sets the listed fields of an existing object.
 * - `delete` removes the object; it wins over every older write.
 *
 * @example Naming an operation
 * ```ts
 * import { InstructionOp } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * assert.equal(InstructionOp.Delete, "delete");
 * ```
 */
export const InstructionOp = {
  Put: "put",
  Update: "update",
  Delete: "delete",
} as const;

/**
 * One of {@linkcode InstructionOp}'s values.
 *
 * @example A value of the union
 * ```ts
 * import type { InstructionOp } from "@tether/sync/protocol";
 *
 * const op: InstructionOp = "update";
 * console.log(op);
 * ```
 */
export type InstructionOp = typeof InstructionOp[keyof typeof InstructionOp];

/**
 * One write to one object. Decoded instructions always have every property
 * (a stable object shape is what keeps the codec fast), hence `null` rather
 * than absent.
 *
 * @example A put and a delete
 * ```ts
 * import type { Instruction } from "@tether/sync/protocol";
 *
 * const put: Instruction = {
 *   op: "put",
 *   type: "Task",
 *   id: "t1",
 *   fields: { title: "Buy milk", done: false },
 *   stamp: null,
 * };
 * const remove: Instruction = { op: "delete", type: "Task", id: "t2", fields: null, stamp: null };
 * console.log(put.op, remove.op);
 * ```
 */
export interface Instruction {
  /** What to do. */
  op: InstructionOp;
  /** The object's type name, e.g. `"Task"`. */
  type: string;
  /** The object's id within its type. */
  id: string;
  /** The fields written by `put` / `update`; `null` for `delete`. */
  fields: Fields | null;
  /**
   * A stamp for this instruction alone, overriding the changeset's stamp
   * (used when the server sends a snapshot, whose fields were written at
   * different times); `null` to use the changeset's stamp.
   */
  stamp: Hlc | null;
}

/**
 * A changeset as a client uploads it: one local write transaction.
 *
 * @example The first write of a client that has seen server version 3
 * ```ts
 * import {
 *   decodeMessage,
 *   encodeMessage,
 *   MessageType,
 *   type UploadChangeset,
 *   type UploadMessage,
 * } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const changeset: UploadChangeset = {
 *   clientVersion: 1,
 *   baseServerVersion: 3,
 *   stamp: { time: 1_700_000_000_000, counter: 0, node: 42 },
 *   instructions: [{ op: "update", type: "Task", id: "t1", fields: { done: true }, stamp: null }],
 * };
 * const message: UploadMessage = { type: MessageType.Upload, sessionId: 1, changesets: [changeset] };
 * assert.deepEqual(decodeMessage(encodeMessage(message)), message);
 * ```
 */
export interface UploadChangeset {
  /** The client's sequence number for this changeset, 1, 2, 3, … per realm. */
  clientVersion: number;
  /** The last server version integrated locally when the write was made. */
  baseServerVersion: number;
  /** The transaction's stamp; every instruction in it carries this stamp. */
  stamp: Hlc;
  /** The writes, in the order they were made. */
  instructions: Instruction[];
}

/**
 * A changeset as the server sends it down: a position in the history.
 *
 * @example Version 7 of a realm's history
 * ```ts
 * import type { DownloadChangeset } from "@tether/sync/protocol";
 *
 * const changeset: DownloadChangeset = {
 *   serverVersion: 7,
 *   stamp: { time: 1_700_000_000_000, counter: 2, node: 9 },
 *   instructions: [{ op: "delete", type: "Task", id: "t1", fields: null, stamp: null }],
 * };
 * console.log(changeset.serverVersion);
 * ```
 */
export interface DownloadChangeset {
  /**
   * The server version this changeset was assigned; snapshot chunks carry the
   * snapshot's version.
   */
  serverVersion: number;
  /** The stamp shared by every instruction without its own stamp. */
  stamp: Hlc;
  /** The writes, in order. */
  instructions: Instruction[];
}
