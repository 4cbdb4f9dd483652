// This module is browser compatible.

/**
 * The one total order over stored values that query equality, sorting and
 * indexes share (docs/CLIENT.md
 * "Querying").
 *
 * Kinds come in this fixed order, lowest first:
 *
 * | rank | kind         | order within the kind                                  |
 * | ---- | ------------ | ------------------------------------------------------ |
 * | 0    | `null`       | one value                                              |
 * | 1    | boolean      | `false` < `true`                                       |
 * | 2    | number       | `NaN` < `-Infinity` < … < `-0` < `0` < … < `Infinity`  |
 * | 3    | bigint       | numeric                                                |
 * | 4    | string       | UTF-16 code units, shorter prefix first (JS `<`)       |
 * | 5    | `Uint8Array` | byte by byte, shorter prefix first                     |
 * | 6    | `Date`       | by time; an invalid date (NaN time) first              |
 * | 7    | array        | element by element, shorter prefix first               |
 * | 8    | plain object | entries sorted by key, then key by key, value by value |
 *
 * Distinct stored values never compare equal: `-0` is below `0`, `1` (a
 * number) is below `1n` (a bigint), and `NaN` equals `NaN`.
 */

import type { Value } from "./value.ts";

/**
 * The rank of each value kind in {@linkcode compareValues}, lowest first.
 *
 * @example Kinds of a few values
 * ```ts
 * import { ValueKind, valueKind } from "@tether/sync";
 * import assert from "node:assert/strict";
 *
 * assert.equal(valueKind(null), ValueKind.Null);
 * assert.equal(valueKind(1n), ValueKind.BigInt);
 * assert.ok(ValueKind.Number < ValueKind.String);
 * ```
 */
export const ValueKind = {
  /** `null`. */
  Null: 0,
  /** `false`, `true`. */
  Boolean: 1,
  /** Every JavaScript number, `NaN` and `-0` included. */
  Number: 2,
  /** `bigint`. */
  BigInt: 3,
  /** `string`. */
  String: 4,
  /** `Uint8Array`. */
  Bytes: 5,
  /** `Date`. */
  Date: 6,
  /** Arrays of values. */
  Array: 7,
  /** Plain objects of values. */
  Object: 8,
} as const;

/**
 * One of the {@linkcode ValueKind} ranks.
 *
 * @example
 * ```ts
 * import { type ValueKind, valueKind } from "@tether/sync";
 *
 * const kind: ValueKind = valueKind("text");
 * console.log(kind);
 * ```
 */
export type ValueKind = typeof ValueKind[keyof typeof ValueKind];

/**
 * Returns the kind of a stored value, as ranked by {@linkcode compareValues}.
 *
 * @param value A value a realm can store.
 * @returns Its kind.
 *
 * @example
 * ```ts
 * import { ValueKind, valueKind } from "@tether/sync";
 * import assert from "node:assert/strict";
 *
 * assert.equal(valueKind(new Date(0)), ValueKind.Date);
 * assert.equal(valueKind([1, 2]), ValueKind.Array);
 * ```
 */
export function valueKind(value: Value): ValueKind {
  switch (typeof value) {
    case "boolean":
      return ValueKind.Boolean;
    case "number":
      return ValueKind.Number;
    case "bigint":
      return ValueKind.BigInt;
    case "string":
      return ValueKind.String;
  }
  if (value === null) return ValueKind.Null;
  if (value instanceof Uint8Array) return ValueKind.Bytes;
  if (value instanceof Date) return ValueKind.Date;
  if (Array.isArray(value)) return ValueKind.Array;
  return ValueKind.Object;
}

function compareNumbers(a: number, b: number): number {
  if (a < b) return -1;
  if (a > b) return 1;
  if (a === b) {
    // Only 0 and -0 are === yet distinct.
    if (a !== 0) return 0;
    const negA = Object.is(a, -0);
    const negB = Object.is(b, -0);
    return negA === negB ? 0 : negA ? -1 : 1;
  }
  // At least one NaN: NaN equals NaN and sorts first.
  const nanA = a !== a;
  const nanB = b !== b;
  return nanA === nanB ? 0 : nanA ? -1 : 1;
}

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Compares two stored values in the one total order of queries, sorts and
 * indexes (see the table in this module's documentation and docs/CLIENT.md
 * "Querying"): first by kind, then within the kind.
 *
 * @param a A value a realm can store.
 * @param b Another.
 * @returns A negative number when `a` comes first, positive when `b` does,
 *   0 only when the two are the same stored value.
 *
 * @example Ordering mixed values
 * ```ts
 * import { compareValues } from "@tether/sync";
 * import assert from "node:assert/strict";
 *
 * const values = ["b", 2, null, 1n, -0, 0, true, NaN];
 * values.sort(compareValues);
 * assert.deepEqual(values, [null, true, NaN, -0, 0, 2, 1n, "b"]);
 * assert.notEqual(compareValues(1, 1n), 0);
 * assert.equal(compareValues(NaN, NaN), 0);
 * ```
 */
export function compareValues(a: Value, b: Value): number {
  const kindA = valueKind(a);
  const kindB = valueKind(b);
  if (kindA !== kindB) return kindA - kindB;
  return compareWithinKind(kindA, a, b);
}

/**
 * Compares two values already known to be of `kind` (internal: saves the
 * kind test when a caller has done it).
 */
export function compareWithinKind(kind: ValueKind, a: Value, b: Value): number {
  switch (kind) {
    case ValueKind.Null:
      return 0;
    case ValueKind.Boolean:
      return a === b ? 0 : a ? 1 : -1;
    case ValueKind.Number:
      return compareNumbers(a as number, b as number);
    case ValueKind.BigInt:
      return (a as bigint) < (b as bigint)
        ? -1
        : (a as bigint) > (b as bigint)
        ? 1
        : 0;
    case ValueKind.String:
      return compareKeys(a as string, b as string);
    case ValueKind.Bytes: {
      const x = a as Uint8Array;
      const y = b as Uint8Array;
      const length = Math.min(x.length, y.length);
      for (let index = 0; index < length; index++) {
        if (x[index] !== y[index]) return x[index]! - y[index]!;
      }
      return x.length - y.length;
    }
    case ValueKind.Date:
      return compareNumbers((a as Date).getTime(), (b as Date).getTime());
    case ValueKind.Array: {
      const x = a as Value[];
      const y = b as Value[];
      const length = Math.min(x.length, y.length);
      for (let index = 0; index < length; index++) {
        const order = compareValues(x[index]!, y[index]!);
        if (order !== 0) return order;
      }
      return x.length - y.length;
    }
    default: {
      const x = a as { [key: string]: Value };
      const y = b as { [key: string]: Value };
      const keysX = Object.keys(x).sort(compareKeys);
      const keysY = Object.keys(y).sort(compareKeys);
      const length = Math.min(keysX.length, keysY.length);
      for (let index = 0; index < length; index++) {
        const keyOrder = compareKeys(keysX[index]!, keysY[index]!);
        if (keyOrder !== 0) return keyOrder;
        const order = compareValues(x[keysX[index]!]!, y[keysY[index]!]!);
        if (order !== 0) return order;
      }
      return keysX.length - keysY.length;
    }
  }
}

/**
 * A `Map` key that tells values apart as the value order does, cheaper
 * than {@linkcode valueKey} for the common kinds: numbers (but -0),
 * booleans and bigints stand for themselves (no string built); the others
 * go by `valueKey`, a string, which no number, boolean or bigint equals.
 */
export function mapKey(value: Value): unknown {
  switch (typeof value) {
    case "number":
      return Object.is(value, -0) ? "n-0" : value;
    case "boolean":
    case "bigint":
      return value;
    default:
      return valueKey(value);
  }
}

/**
 * Returns a string that is the same for two values exactly when
 * {@linkcode compareValues} says they are equal (internal: hash keys of
 * equality indexes).
 */
export function valueKey(value: Value): string {
  switch (typeof value) {
    case "boolean":
      return value ? "t" : "f";
    case "number":
      return Object.is(value, -0) ? "n-0" : `n${value}`;
    case "bigint":
      return `b${value}`;
    case "string":
      return `s${value}`;
  }
  if (value === null) return "z";
  if (value instanceof Uint8Array) {
    let text = "u";
    for (const byte of value) text += String.fromCharCode(byte);
    return text;
  }
  if (value instanceof Date) {
    const time = value.getTime();
    return `d${time}`;
  }
  // Composite values: JSON of the key of each part, keys sorted, so key
  // order inside an object does not matter.
  return `j${JSON.stringify(compositeKey(value))}`;
}

function compositeKey(value: Value): unknown {
  if (Array.isArray(value)) return value.map(valueKey);
  if (
    value !== null && typeof value === "object" &&
    !(value instanceof Date) && !(value instanceof Uint8Array)
  ) {
    const entries: [string, string][] = [];
    for (const key of Object.keys(value).sort(compareKeys)) {
      entries.push([key, valueKey(value[key]!)]);
    }
    return { o: entries };
  }
  return valueKey(value);
}
