// This module is browser compatible.

/**
 * A field value a realm can store.
 *
 * Arrays and plain objects are values too, and are replaced whole when a field
 * is written: conflict resolution works per field, never inside a value.
 *
 * @example A value of every kind
 * ```ts
 * import type { Value } from "@tether/sync";
 *
 * const everything: Value = {
 *   nothing: null,
 *   flag: true,
 *   count: -0,
 *   big: 2n ** 63n - 1n,
 *   text: "héllo 🌍",
 *   bytes: new Uint8Array([1, 2, 3]),
 *   when: new Date(0),
 *   list: [1, "two", [3]],
 * };
 * ```
 */
export type Value =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | Date
  | Value[]
  | { [key: string]: Value };

/**
 * The fields of one object: field name to value.
 *
 * @example
 * ```ts
 * import type { Fields } from "@tether/sync";
 *
 * const task: Fields = { title: "Buy milk", done: false };
 * ```
 */
export type Fields = { [field: string]: Value };

/**
 * Returns whether `value` is something a realm can store, checking nested
 * arrays and objects down to `maxDepth` levels.
 *
 * Plain objects are those whose prototype is `Object.prototype` or `null`;
 * class instances (other than `Date` and `Uint8Array`), functions, symbols,
 * `undefined`, sparse arrays and cyclic structures are rejected.
 */
export function isValue(value: unknown, maxDepth = 32): value is Value {
  return checkValue(value, maxDepth);
}

function checkValue(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case "boolean":
    case "number":
    case "bigint":
    case "string":
      return true;
    case "object":
      break;
    default:
      return false;
  }
  if (value === null) return true;
  if (value instanceof Uint8Array || value instanceof Date) return true;
  if (depth <= 0) return false;
  if (Array.isArray(value)) {
    for (let index = 0; index < value.length; index++) {
      if (!(index in value) || !checkValue(value[index], depth - 1)) {
        return false;
      }
    }
    return true;
  }
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) return false;
  for (const key in value) {
    if (!checkValue((value as Record<string, unknown>)[key], depth - 1)) {
      return false;
    }
  }
  return true;
}

/**
 * Structural equality of two values: `-0` differs from `0`, `NaN` equals
 * `NaN`, dates compare by time, bytes by content, objects by their own keys.
 */
export function valuesEqual(a: Value, b: Value): boolean {
  if (typeof a !== typeof b) return false;
  if (typeof a === "number") return Object.is(a, b);
  if (a === b) return true;
  if (a === null || b === null || typeof a !== "object") return false;
  if (a instanceof Date) {
    return b instanceof Date && Object.is(a.getTime(), b.getTime());
  }
  if (a instanceof Uint8Array) {
    if (!(b instanceof Uint8Array) || a.length !== b.length) return false;
    for (let index = 0; index < a.length; index++) {
      if (a[index] !== b[index]) return false;
    }
    return true;
  }
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let index = 0; index < a.length; index++) {
      if (!valuesEqual(a[index]!, b[index]!)) return false;
    }
    return true;
  }
  if (
    Array.isArray(b) || b instanceof Date || b instanceof Uint8Array ||
    typeof b !== "object"
  ) {
    return false;
  }
  const keysA = Object.keys(a);
  if (keysA.length !== Object.keys(b).length) return false;
  for (const key of keysA) {
    if (!Object.hasOwn(b, key) || !valuesEqual(a[key]!, b[key]!)) return false;
  }
  return true;
}

/**
 * Returns a deep copy of `value`, so a caller can never mutate what a realm
 * stores (dates and byte arrays are mutable).
 */
export function cloneValue(value: Value): Value {
  if (value === null || typeof value !== "object") return value;
  if (value instanceof Date) return new Date(value.getTime());
  if (value instanceof Uint8Array) return value.slice();
  if (Array.isArray(value)) return value.map(cloneValue);
  const copy: { [key: string]: Value } = {};
  for (const key of Object.keys(value)) {
    defineField(copy, key, cloneValue(value[key]!));
  }
  return copy;
}

/**
 * A string as UTF-8 carries it: each lone surrogate (half of a pair, as
 * `slice` can leave of an emoji) becomes U+FFFD, as the protocol's encoder
 * writes it (PROTOCOL.md §3.4). Writes store names and values this way, so
 * a realm holds what its store and every other replica hold; reads and
 * queries look names and operands up the same way.
 */
export function wellFormed(text: string): string {
  return text.isWellFormed() ? text : text.toWellFormed();
}

/** {@linkcode wellFormed} for a string; anything else unchanged. */
export function wellFormedName<T>(name: T): T {
  return typeof name === "string" ? wellFormed(name) as T : name;
}

/**
 * A copy of `value` as it is stored: every string and object key
 * {@linkcode wellFormed}.
 */
export function storedValue(value: Value): Value {
  if (typeof value === "string") return wellFormed(value);
  if (value === null || typeof value !== "object") return value;
  if (value instanceof Date) return new Date(value.getTime());
  if (value instanceof Uint8Array) return value.slice();
  if (Array.isArray(value)) return value.map(storedValue);
  const copy: { [key: string]: Value } = {};
  for (const key of Object.keys(value)) {
    defineField(copy, wellFormed(key), storedValue(value[key]!));
  }
  return copy;
}

/**
 * Sets `record[key] = value` as an own data property even for `"__proto__"`,
 * which plain assignment would turn into a prototype change.
 */
export function defineField<T>(
  record: { [key: string]: T },
  key: string,
  value: T,
): void {
  if (key === "__proto__") {
    Object.defineProperty(record, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else {
    record[key] = value;
  }
}
