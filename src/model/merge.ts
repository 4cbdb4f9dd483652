// This module is browser compatible.

import { compareHlc, type Hlc } from "./hlc.ts";
import type { Instruction, InstructionOp } from "./changeset.ts";
import { defineField, type Fields, type Value } from "./value.ts";

/**
 * Conflict resolution (docs/ARCHITECTURE.md "Data model").
 *
 * An object's state is a join-semilattice of registers, so applying the same
 * set of instructions in any order, any number of times, gives the same
 * state:
 * - one last-writer-wins register per field (value + stamp);
 * - the newest put stamp, the newest delete stamp.
 *
 * The object exists when its newest put is newer than its newest delete (a
 * delete wins over every older write, and over a put with an equal stamp).
 * A put replaces the object: fields older than the newest put are dead. A
 * field no newer than the newest delete is dead. Dead registers are dropped
 * at once, which keeps the state normalised: two replicas that have seen the
 * same instructions hold equal records.
 */

/** One field register: its value and the stamp of the write that set it. */
export interface FieldEntry {
  /** The field's value. */
  value: Value;
  /** The stamp of the write that set it. */
  stamp: Hlc;
}

/** Everything a replica keeps about one object, dead or alive. */
export interface ObjectRecord {
  /** The object's type name. */
  type: string;
  /** The object's id. */
  id: string;
  /** Newest put, or null when none is newer than the newest delete. */
  putStamp: Hlc | null;
  /** Newest delete, or null. */
  deleteStamp: Hlc | null;
  /** Live field registers (newer than the delete, not older than the put). */
  fields: Map<string, FieldEntry>;
}

/** The visible effect of a committed transaction on one object. */
export interface ObjectChange {
  /** The object's type name. */
  type: string;
  /** The object's id. */
  id: string;
  /**
   * `put` when the object appeared or was replaced (`fields` holds all of
   * it), `update` when some fields changed (`fields` holds those), `delete`
   * when it disappeared (no `fields`).
   */
  op: InstructionOp;
  /** See `op`. */
  fields?: Fields;
  /**
   * With `put`: true when the object did not exist before (it appeared),
   * false when it was replaced. Field indexes append a new object's entry
   * without looking for an old one (docs/PERFORMANCE.md "Index maintenance
   * in bulk").
   */
  created?: boolean;
}

/** Returns an empty record for an object never seen. */
export function emptyRecord(type: string, id: string): ObjectRecord {
  return { type, id, putStamp: null, deleteStamp: null, fields: new Map() };
}

/** Returns whether the object the record describes currently exists. */
export function isLive(record: ObjectRecord): boolean {
  return record.putStamp !== null;
}

/** Returns the visible fields of a live record as a new plain object. */
export function visibleFields(record: ObjectRecord): Fields {
  const result: Fields = {};
  for (const [name, entry] of record.fields) {
    defineField(result, name, entry.value);
  }
  return result;
}

/**
 * Applies one instruction to `record` in place and returns its visible
 * effect, or null when nothing visible changed (an older write lost).
 *
 * @param stamp The instruction's own stamp if it has one, else its
 *   changeset's.
 */
export function applyInstruction(
  record: ObjectRecord,
  instruction: Instruction,
  stamp: Hlc,
): ObjectChange | null {
  const wasLive = isLive(record);
  const previousPut = record.putStamp;
  if (instruction.op === "delete") {
    applyDelete(record, stamp);
  } else {
    if (instruction.op === "put") applyPut(record, stamp);
    const changed = instruction.fields === null
      ? null
      : applyFields(record, instruction.fields, stamp);
    if (wasLive && isLive(record) && record.putStamp === previousPut) {
      return changed === null
        ? null
        : { type: record.type, id: record.id, op: "update", fields: changed };
    }
  }
  const live = isLive(record);
  if (live && (!wasLive || record.putStamp !== previousPut)) {
    return {
      type: record.type,
      id: record.id,
      op: "put",
      fields: visibleFields(record),
      created: !wasLive,
    };
  }
  if (wasLive && !live) {
    return { type: record.type, id: record.id, op: "delete" };
  }
  return null;
}

function applyDelete(record: ObjectRecord, stamp: Hlc): void {
  if (
    record.deleteStamp !== null && compareHlc(stamp, record.deleteStamp) <= 0
  ) {
    return;
  }
  record.deleteStamp = stamp;
  if (record.putStamp !== null && compareHlc(record.putStamp, stamp) <= 0) {
    record.putStamp = null;
  }
  for (const [name, entry] of record.fields) {
    if (compareHlc(entry.stamp, stamp) <= 0) record.fields.delete(name);
  }
}

function applyPut(record: ObjectRecord, stamp: Hlc): void {
  if (
    record.deleteStamp !== null && compareHlc(stamp, record.deleteStamp) <= 0
  ) {
    return;
  }
  if (record.putStamp !== null && compareHlc(stamp, record.putStamp) <= 0) {
    return;
  }
  record.putStamp = stamp;
  for (const [name, entry] of record.fields) {
    if (compareHlc(entry.stamp, stamp) < 0) record.fields.delete(name);
  }
}

/**
 * Writes each field whose register is older than `stamp`; returns the fields
 * that changed while the object is live, or null if none did.
 */
function applyFields(
  record: ObjectRecord,
  fields: Fields,
  stamp: Hlc,
): Fields | null {
  // A write no newer than the delete, or older than the put, is dead on
  // arrival.
  if (
    record.deleteStamp !== null && compareHlc(stamp, record.deleteStamp) <= 0
  ) {
    return null;
  }
  if (record.putStamp !== null && compareHlc(stamp, record.putStamp) < 0) {
    return null;
  }
  let changed: Fields | null = null;
  for (const name in fields) {
    const current = record.fields.get(name);
    if (current !== undefined && compareHlc(stamp, current.stamp) <= 0) {
      continue;
    }
    const value = fields[name]!;
    record.fields.set(name, { value, stamp });
    if (record.putStamp !== null) {
      changed ??= {};
      defineField(changed, name, value);
    }
  }
  return changed;
}

/**
 * Expresses a record as instructions with their own stamps, such that
 * applying them to an empty record rebuilds an equal record. This is how the
 * server sends a snapshot: the state itself, not the history behind it.
 */
export function recordToInstructions(record: ObjectRecord): Instruction[] {
  const groups = new Map<string, { stamp: Hlc; fields: Fields }>();
  for (const [name, entry] of record.fields) {
    const key =
      `${entry.stamp.time}:${entry.stamp.counter}:${entry.stamp.node}`;
    let group = groups.get(key);
    if (group === undefined) {
      group = { stamp: entry.stamp, fields: {} };
      groups.set(key, group);
    }
    defineField(group.fields, name, entry.value);
  }
  const result: Instruction[] = [];
  if (record.deleteStamp !== null) {
    result.push({
      op: "delete",
      type: record.type,
      id: record.id,
      fields: null,
      stamp: record.deleteStamp,
    });
  }
  if (record.putStamp !== null) {
    const put = record.putStamp;
    const key = `${put.time}:${put.counter}:${put.node}`;
    const own = groups.get(key);
    groups.delete(key);
    result.push({
      op: "put",
      type: record.type,
      id: record.id,
      fields: own?.fields ?? {},
      stamp: put,
    });
  }
  for (const group of groups.values()) {
    result.push({
      op: "update",
      type: record.type,
      id: record.id,
      fields: group.fields,
      stamp: group.stamp,
    });
  }
  return result;
}
