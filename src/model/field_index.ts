// This module is browser compatible.

/**
 * An equality and range index over one field of one type's objects, in the
 * value order of `value_order.ts`.
 */

import { compareValues, valueKey, valueKind } from "./value_order.ts";
import type { Fields, Value } from "./value.ts";

interface Bucket {
  value: Value;
  /** One id, or a set of several (a field of unique values needs no sets). */
  ids: string | Set<string>;
}

function bucketSize(bucket: Bucket): number {
  return typeof bucket.ids === "string" ? 1 : bucket.ids.size;
}

function* bucketIds(bucket: Bucket): IterableIterator<string> {
  if (typeof bucket.ids === "string") yield bucket.ids;
  else yield* bucket.ids;
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
    const bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      this.#buckets.set(key, { value, ids: id });
      this.#ordered = undefined;
    } else if (typeof bucket.ids === "string") {
      if (bucket.ids !== id) bucket.ids = new Set([bucket.ids, id]);
    } else {
      bucket.ids.add(id);
    }
  }

  #removeFromBucket(key: string, id: string): void {
    const bucket = this.#buckets.get(key);
    if (bucket === undefined) return;
    if (typeof bucket.ids === "string") {
      if (bucket.ids !== id) return;
      this.#buckets.delete(key);
      this.#ordered = undefined;
      return;
    }
    bucket.ids.delete(id);
    if (bucket.ids.size === 1) {
      // Back to one id: the set is not worth keeping.
      for (const only of bucket.ids) bucket.ids = only;
    }
  }

  /**
   * Ids whose field equals `value`; for `null`, also those without the
   * field (a missing field matches `eq: null`).
   */
  *equal(value: Value): IterableIterator<string> {
    const bucket = this.#buckets.get(valueKey(value));
    if (bucket !== undefined) yield* bucketIds(bucket);
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
      yield* bucketIds(bucket);
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
    const bucket = this.#buckets.get(valueKey(value));
    return (bucket === undefined ? 0 : bucketSize(bucket)) +
      (value === null ? this.#missing.size : 0);
  }
}
