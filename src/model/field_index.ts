// This module is browser compatible.

/**
 * An equality and range index over one field of one type's objects, in the
 * value order of `value_order.ts`.
 */

import { compareValues, valueKey, valueKind } from "./value_order.ts";
import type { Fields, Value } from "./value.ts";

interface Bucket {
  value: Value;
  ids: Set<string>;
}

/** A bound of a range lookup. */
export interface IndexBound {
  value: Value;
  inclusive: boolean;
}

/**
 * Maps each value of one field to the ids holding it. Equality and `in`
 * are hash lookups; ranges walk the distinct values in order. The ordered
 * list of distinct values is rebuilt lazily after a value appears or
 * disappears, so a bootstrap that fills the index pays one hash insertion
 * per object and nothing per range query it never runs.
 */
export class FieldIndex {
  /** The indexed field. */
  readonly field: string;
  #buckets = new Map<string, Bucket>();
  #keyById = new Map<string, string>();
  #missing = new Set<string>();
  #ordered: Bucket[] | undefined = [];

  /** @param field The field to index. */
  constructor(field: string) {
    this.field = field;
  }

  /** Number of objects indexed (live objects of the type). */
  get size(): number {
    return this.#keyById.size + this.#missing.size;
  }

  /**
   * Records an object's current state: `fields` undefined when it no
   * longer exists.
   */
  set(id: string, fields: Fields | undefined): void {
    const value = fields !== undefined && Object.hasOwn(fields, this.field)
      ? fields[this.field]!
      : undefined;
    const oldKey = this.#keyById.get(id);
    if (value === undefined) {
      if (oldKey !== undefined) {
        this.#keyById.delete(id);
        this.#removeFromBucket(oldKey, id);
      }
      if (fields === undefined) this.#missing.delete(id);
      else this.#missing.add(id);
      return;
    }
    this.#missing.delete(id);
    const key = valueKey(value);
    if (oldKey === key) return;
    if (oldKey !== undefined) this.#removeFromBucket(oldKey, id);
    this.#keyById.set(id, key);
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      bucket = { value, ids: new Set() };
      this.#buckets.set(key, bucket);
      this.#ordered = undefined;
    }
    bucket.ids.add(id);
  }

  #removeFromBucket(key: string, id: string): void {
    const bucket = this.#buckets.get(key);
    if (bucket === undefined) return;
    bucket.ids.delete(id);
    if (bucket.ids.size === 0) {
      this.#buckets.delete(key);
      this.#ordered = undefined;
    }
  }

  /**
   * Ids whose field equals `value`; for `null`, also those without the
   * field (a missing field matches `eq: null`).
   */
  *equal(value: Value): IterableIterator<string> {
    const bucket = this.#buckets.get(valueKey(value));
    if (bucket !== undefined) yield* bucket.ids;
    if (value === null) yield* this.#missing;
  }

  /**
   * Ids whose field lies between the bounds, among values of the bounds'
   * kind (both bounds, when given, must be of one kind).
   */
  *range(
    lower: IndexBound | undefined,
    upper: IndexBound | undefined,
  ): IterableIterator<string> {
    const ordered = this.#orderedBuckets();
    const kind = valueKind((lower ?? upper)!.value);
    // First bucket not below the lower bound (or the kind's first value).
    let low = 0;
    let high = ordered.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      const value = ordered[middle]!.value;
      const below = lower === undefined
        ? valueKind(value) < kind
        : lower.inclusive
        ? compareValues(value, lower.value) < 0
        : compareValues(value, lower.value) <= 0;
      if (below) low = middle + 1;
      else high = middle;
    }
    for (let index = low; index < ordered.length; index++) {
      const bucket = ordered[index]!;
      if (valueKind(bucket.value) !== kind) return;
      if (upper !== undefined) {
        const order = compareValues(bucket.value, upper.value);
        if (order > 0 || (order === 0 && !upper.inclusive)) return;
      }
      yield* bucket.ids;
    }
  }

  #orderedBuckets(): Bucket[] {
    if (this.#ordered === undefined) {
      this.#ordered = [...this.#buckets.values()].sort((a, b) =>
        compareValues(a.value, b.value)
      );
    }
    return this.#ordered;
  }

  /** An estimate of how many ids {@linkcode equal} would yield. */
  equalCount(value: Value): number {
    return (this.#buckets.get(valueKey(value))?.ids.size ?? 0) +
      (value === null ? this.#missing.size : 0);
  }
}
