// This module is browser compatible.

import type { Hlc } from "./hlc.ts";
import type { Instruction } from "./changeset.ts";
import {
  applyInstruction,
  emptyRecord,
  isLive,
  type ObjectChange,
  type ObjectRecord,
  visibleFields,
} from "./merge.ts";
import type { Fields, Value } from "./value.ts";

/**
 * What `apply` returns when nothing visible changed: shared, and frozen so
 * that a caller growing it fails loudly instead of corrupting every result.
 */
const NO_CHANGES = Object.freeze([]) as unknown as ObjectChange[];
/** What `applyChangesets` reports when no changeset changed anything. */
const NO_CHANGESETS = Object.freeze([]) as unknown as ObjectChange[][];

/**
 * An in-memory set of object records, keyed by type then id, that applies
 * changesets with the rules in `merge.ts` and reports their visible effect.
 */
export class ObjectStore {
  #types = new Map<string, Map<string, ObjectRecord>>();
  #liveCount = 0;

  /** Number of live objects. */
  get size(): number {
    return this.#liveCount;
  }

  /**
   * Applies a changeset's instructions in order and returns their visible
   * effect, one entry per instruction that changed something.
   */
  apply(stamp: Hlc, instructions: readonly Instruction[]): ObjectChange[] {
    return this.#apply(stamp, instructions, undefined, 0);
  }

  /**
   * Applies changesets in order (a DOWNLOAD's): `touched` holds the record
   * of every instruction, in order, repeats included, so a caller that
   * commits them need not look them up again; `perChangeset` each
   * changeset's visible effect, for those that changed something.
   *
   * @param before Told each changeset just before it is applied.
   */
  applyChangesets(
    changesets: readonly {
      stamp: Hlc;
      instructions: readonly Instruction[];
    }[],
    before: (stamp: Hlc, instructions: readonly Instruction[]) => void,
  ): { touched: ObjectRecord[]; perChangeset: ObjectChange[][] } {
    // Both arrays sized once rather than grown: an empty array's first push
    // reserves 17 slots, and most DOWNLOADs carry one changeset of one
    // instruction (docs/PERFORMANCE.md "Fan-out: the receive path, fourth
    // pass").
    let instructions = 0;
    for (let c = 0; c < changesets.length; c++) {
      instructions += changesets[c]!.instructions.length;
    }
    const touched: ObjectRecord[] = new Array(instructions);
    let perChangeset: ObjectChange[][] = NO_CHANGESETS;
    let at = 0;
    for (let c = 0; c < changesets.length; c++) {
      const { stamp, instructions } = changesets[c]!;
      before(stamp, instructions);
      const changes = this.#apply(stamp, instructions, touched, at);
      at += instructions.length;
      if (changes.length === 0) continue;
      if (perChangeset === NO_CHANGESETS) perChangeset = [changes];
      else perChangeset.push(changes);
    }
    return { touched, perChangeset };
  }

  #apply(
    stamp: Hlc,
    instructions: readonly Instruction[],
    touched: ObjectRecord[] | undefined,
    touchedAt: number,
  ): ObjectChange[] {
    // Sized on the first change, for the same reason.
    let changes: ObjectChange[] = NO_CHANGES;
    for (let index = 0; index < instructions.length; index++) {
      const instruction = instructions[index]!;
      const record = this.#recordFor(instruction.type, instruction.id);
      if (touched !== undefined) touched[touchedAt + index] = record;
      const wasLive = isLive(record);
      const change = applyInstruction(
        record,
        instruction,
        instruction.stamp ?? stamp,
      );
      const live = isLive(record);
      if (wasLive !== live) this.#liveCount += live ? 1 : -1;
      if (change === null) continue;
      if (changes === NO_CHANGES) changes = [change];
      else changes.push(change);
    }
    return changes;
  }

  /** The visible fields of a live object, or undefined. */
  get(type: string, id: string): Fields | undefined {
    const record = this.#types.get(type)?.get(id);
    return record !== undefined && isLive(record)
      ? visibleFields(record)
      : undefined;
  }

  /**
   * Whether `fields` are the visible fields of a live object, value for
   * value (the same values: `get` and a `put` change share them with the
   * record), without copying its fields.
   */
  isVisible(type: string, id: string, fields: Fields): boolean {
    const record = this.#types.get(type)?.get(id);
    if (record === undefined || !isLive(record)) return false;
    let count = 0;
    for (const name in fields) {
      const entry = record.fields.get(name);
      if (entry === undefined || !Object.is(entry.value, fields[name])) {
        return false;
      }
      count++;
    }
    return count === record.fields.size;
  }

  /**
   * One field's value of a live object without copying its fields: `null`
   * when the object is not live, undefined when it lacks the field.
   */
  fieldValue(type: string, id: string, name: string): Value | undefined | null {
    const record = this.#types.get(type)?.get(id);
    if (record === undefined || !isLive(record)) return null;
    return record.fields.get(name)?.value;
  }

  /** The record of an object, live or not, or undefined if never seen. */
  record(type: string, id: string): ObjectRecord | undefined {
    return this.#types.get(type)?.get(id);
  }

  /** Live objects of one type, in insertion order. */
  *objects(type: string): IterableIterator<{ id: string; fields: Fields }> {
    const byId = this.#types.get(type);
    if (byId === undefined) return;
    for (const record of byId.values()) {
      if (isLive(record)) {
        yield { id: record.id, fields: visibleFields(record) };
      }
    }
  }

  /** Every record, live or dead (tombstones included). */
  *records(): IterableIterator<ObjectRecord> {
    for (const byId of this.#types.values()) yield* byId.values();
  }

  /**
   * Puts a stored record back as it is (the store takes it over), in place
   * of replaying it as instructions: how a realm reopens from storage. A
   * record already present is replaced.
   */
  restore(record: ObjectRecord): void {
    let byId = this.#types.get(record.type);
    if (byId === undefined) {
      byId = new Map();
      this.#types.set(record.type, byId);
    }
    const previous = byId.get(record.id);
    if (previous !== undefined && isLive(previous)) this.#liveCount--;
    byId.set(record.id, record);
    if (isLive(record)) this.#liveCount++;
  }

  #recordFor(type: string, id: string): ObjectRecord {
    let byId = this.#types.get(type);
    if (byId === undefined) {
      byId = new Map();
      this.#types.set(type, byId);
    }
    let record = byId.get(id);
    if (record === undefined) {
      record = emptyRecord(type, id);
      byId.set(id, record);
    }
    return record;
  }
}

/**
 * Returns a reason string if `instructions` touch one object more than once
 * (a transaction's writes to one object are folded into one instruction
 * before upload, so a repeat means a broken or hostile client), else null.
 */
export function findRepeatedObject(
  instructions: readonly Instruction[],
): string | null {
  const seen = new Set<string>();
  for (const { type, id } of instructions) {
    // Lengths prefix the key so no (type, id) pair can alias another.
    const key = `${type.length}:${type}${id}`;
    if (seen.has(key)) {
      return `object ${JSON.stringify(type)} ${
        JSON.stringify(id)
      } appears twice`;
    }
    seen.add(key);
  }
  return null;
}
