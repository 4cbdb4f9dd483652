// This module is browser compatible.

/**
 * The field indexes of one realm's query engine by type: filled from the
 * store, fed every commit, and asked which objects may match a query.
 */

import { FieldIndex, type IndexedChange } from "../model/field_index.ts";
import type { IndexableCondition } from "../model/query.ts";
import type { Fields, Value } from "../model/value.ts";

/** What the indexes read from the object store (internal). */
export interface IndexReader {
  /** The visible fields of a live object. */
  get(type: string, id: string): Fields | undefined;
  /** Live objects of one type. */
  objects(type: string): Iterable<{ id: string; fields: Fields }>;
  /** One field of an object (`null`: not live); optional. */
  fieldValue?(type: string, id: string, name: string): Value | undefined | null;
}

/** One change of a commit as the indexes follow it (internal). */
export interface FollowedChange extends IndexedChange {
  readonly type: string;
}

/** The field indexes of one realm, by type and field (internal). */
export class FieldIndexes {
  #byType = new Map<string, Map<string, FieldIndex>>();
  #read: IndexReader;

  /** @param read Access to the store. */
  constructor(read: IndexReader) {
    this.#read = read;
  }

  /** How many types have indexes. */
  get size(): number {
    return this.#byType.size;
  }

  /** The indexed fields of a type. */
  fields(type: string): string[] {
    return [...(this.#byType.get(type)?.keys() ?? [])];
  }

  /**
   * Adds indexes (fields already indexed are kept), filling each from the
   * objects present. Returns how many it added.
   */
  ensure(spec: { readonly [type: string]: readonly string[] }): number {
    let added = 0;
    for (const type of Object.keys(spec)) {
      let byField = this.#byType.get(type);
      for (const field of spec[type]!) {
        if (byField?.has(field)) continue;
        if (byField === undefined) {
          byField = new Map();
          this.#byType.set(type, byField);
        }
        const index = new FieldIndex(field);
        for (const { id, fields } of this.#read.objects(type)) {
          index.follow({ id, op: "put", fields, created: true });
        }
        byField.set(field, index);
        added++;
      }
    }
    return added;
  }

  /**
   * Ids that may match, from the most selective usable index, or undefined
   * when no index applies (scan the type).
   */
  candidates(
    type: string,
    conditions: readonly IndexableCondition[],
  ): Iterable<string> | undefined {
    const byField = this.#byType.get(type);
    if (byField === undefined || conditions.length === 0) return undefined;
    let best: { cost: number; ids: () => Iterable<string> } | undefined;
    for (const condition of conditions) {
      const index = byField.get(condition.field);
      if (index === undefined) continue;
      let option: { cost: number; ids: () => Iterable<string> };
      if (condition.op === "eq") {
        option = {
          cost: index.equalCount(condition.value),
          ids: () => index.equal(condition.value),
        };
      } else if (condition.op === "in") {
        let cost = 0;
        for (const value of condition.values) cost += index.equalCount(value);
        option = {
          cost,
          ids: () => {
            const ids = new Set<string>();
            for (const value of condition.values) {
              for (const id of index.equal(value)) ids.add(id);
            }
            return ids;
          },
        };
      } else {
        // Unknown size: preferred only over no index at all.
        option = {
          cost: index.size,
          ids: () => index.range(condition.lower, condition.upper),
        };
      }
      if (best === undefined || option.cost < best.cost) best = option;
    }
    return best?.ids();
  }

  /**
   * Feeds the indexes every change in commit order, from the change itself
   * (a put's fields, an update's changed fields) or else from the store,
   * with no copy of an object's fields and no per-transaction map.
   */
  follow(changes: readonly FollowedChange[]): void {
    // Runs of changes to one type, each fed to each index of the type.
    for (let from = 0, to = 1; from < changes.length; from = to++) {
      const type = changes[from]!.type;
      while (to < changes.length && changes[to]!.type === type) to++;
      const byField = this.#byType.get(type);
      if (byField === undefined) continue;
      for (const index of byField.values()) {
        index.followAll(changes, from, to, (id) => {
          if (this.#read.fieldValue !== undefined) {
            return this.#read.fieldValue(type, id, index.field);
          }
          const fields = this.#read.get(type, id);
          if (fields === undefined) return null;
          return Object.hasOwn(fields, index.field)
            ? fields[index.field]
            : undefined;
        });
      }
    }
  }
}
