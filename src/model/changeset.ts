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
 */
export const InstructionOp = {
  Put: "put",
  Update: "update",
  Delete: "delete",
} as const;

/** One of {@linkcode InstructionOp}'s values. */
export type InstructionOp = typeof InstructionOp[keyof typeof InstructionOp];

/**
 * One write to one object. Decoded instructions always have every property
 * (a stable object shape is what keeps the codec fast), hence `null` rather
 * than absent.
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

/** A changeset as a client uploads it: one local write transaction. */
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

/** A changeset as the server sends it down: a position in the history. */
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
