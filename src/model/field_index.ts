// This module is browser compatible.

/**
 * An equality and range index over one field of one type's objects, in the
 * value order of `value_order.ts`.
 */

import { compareValues, valueKey, valueKind } from "./value_order.ts";
import type { Fields, Value } from "./value.ts";

// Much faster than `Object.hasOwn` in V8 (see src/model/query.ts).
const hasOwnProperty = Object.prototype.hasOwnProperty;

interface Bucket {
  value: Value;
  /** Its key in #byPrimitive (the value) or #byKey (its valueKey). */
  key: unknown;
  primitive: boolean;
  /** One id, or a set of several (a field of unique values needs no sets). */
  ids: string | Set<string>;
}

/**
 * Whether a value can key a `Map` by itself: a `Map` tells these apart
 * exactly as the value order does (NaN equals NaN; 1, 1n and "1" differ),
 * except 0 and -0, which it merges.
 */
function isPlainKey(value: Value): boolean {
  switch (typeof value) {
    case "number":
      return value !== 0 || !Object.is(value, -0);
    case "string":
    case "boolean":
    case "bigint":
      return true;
    default:
      return false;
  }
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
  /** Buckets of numbers (not -0), strings, booleans and bigints. */
  #byPrimitive = new Map<unknown, Bucket>();
  /** Buckets of the other values, by `valueKey` (no string per number). */
  #byKey = new Map<string, Bucket>();
  #bucketById = new Map<string, Bucket>();
  #missing = new Set<string>();
  #ordered: Bucket[] | undefined = [];

  /** @param field The field to index. */
  constructor(field: string) {
    this.field = field;
  }

  /** Number of objects indexed (live objects of the type). */
  get size(): number {
    return this.#bucketById.size + this.#missing.size;
  }

  /**
   * Records an object's current state: `fields` undefined when it no
   * longer exists.
   */
  set(id: string, fields: Fields | undefined): void {
    this.setValue(
      id,
      fields !== undefined,
      fields !== undefined && hasOwnProperty.call(fields, this.field)
        ? fields[this.field]!
        : undefined,
    );
  }

  /**
   * Records an object's current state by its indexed field alone: `live`
   * false when it no longer exists, `value` undefined when it lacks the
   * field.
   */
  setValue(id: string, live: boolean, value: Value | undefined): void {
    const old = this.#bucketById.get(id);
    if (value === undefined) {
      if (old !== undefined) {
        this.#bucketById.delete(id);
        this.#removeFromBucket(old, id);
      }
      if (!live) this.#missing.delete(id);
      else this.#missing.add(id);
      return;
    }
    if (this.#missing.size > 0) this.#missing.delete(id);
    const bucket = this.#bucket(value);
    if (old !== undefined && old === bucket) return;
    if (old !== undefined) this.#removeFromBucket(old, id);
    if (bucket === undefined) {
      const primitive = isPlainKey(value);
      const key = primitive ? value : valueKey(value);
      const created: Bucket = { value, key, primitive, ids: id };
      if (primitive) this.#byPrimitive.set(key, created);
      else this.#byKey.set(key as string, created);
      this.#bucketById.set(id, created);
      this.#ordered = undefined;
      return;
    }
    this.#bucketById.set(id, bucket);
    if (typeof bucket.ids === "string") {
      if (bucket.ids !== id) bucket.ids = new Set([bucket.ids, id]);
    } else {
      bucket.ids.add(id);
    }
  }

  #bucket(value: Value): Bucket | undefined {
    return isPlainKey(value)
      ? this.#byPrimitive.get(value)
      : this.#byKey.get(valueKey(value));
  }

  #removeFromBucket(bucket: Bucket, id: string): void {
    if (typeof bucket.ids === "string") {
      if (bucket.ids !== id) return;
      if (bucket.primitive) this.#byPrimitive.delete(bucket.key);
      else this.#byKey.delete(bucket.key as string);
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
    const bucket = this.#bucket(value);
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
      this.#ordered = [
        ...this.#byPrimitive.values(),
        ...this.#byKey.values(),
      ].sort((a, b) => compareValues(a.value, b.value));
    }
    return this.#ordered;
  }

  /** An estimate of how many ids {@linkcode equal} would yield. */
  equalCount(value: Value): number {
    const bucket = this.#bucket(value);
    return (bucket === undefined ? 0 : bucketSize(bucket)) +
      (value === null ? this.#missing.size : 0);
  }
}
