// This module is browser compatible.

/**
 * The field tests a compiled `where` is built from (src/model/query.ts):
 * equality, `ne`, `in` and the range operators on one field, exactly in
 * the value order (docs/CLIENT.md "Querying"), with plain `===`/`typeof`
 * tests where they agree with it, and their conjunction and disjunction.
 */

import { compareWithinKind, mapKey, valueKind } from "./value_order.ts";
import type { Fields, Value } from "./value.ts";

/** A compiled filter, or one part of it (internal). */
export type Matcher = (fields: Fields) => boolean;

/** A range operator. */
export type OrderOperator = "gt" | "gte" | "lt" | "lte";

const hasOwnProperty = Object.prototype.hasOwnProperty;

/**
 * One field of stored fields, or undefined when the object lacks it
 * (internal). Runs once per object per condition per commit, so it asks
 * for an own property only when a plain read cannot tell: a stored value
 * is never undefined nor a function, and every member a plain object
 * inherits is a function but `__proto__`. (`Object.hasOwn`, and even
 * `hasOwnProperty.call` with a field name that is not a constant, call
 * into V8's runtime: hundreds of instructions per read in Deno 2.9.)
 */
export function readField(fields: Fields, field: string): Value | undefined {
  const value = fields[field];
  if (value === undefined || typeof value === "function") return undefined;
  return field !== "__proto__" || hasOwnProperty.call(fields, field)
    ? value
    : undefined;
}

const read = readField;

/**
 * Whether `===` on a stored value and `operand` is exactly equality in the
 * value order: a string, boolean or bigint, or a number but `0`, `-0` and
 * `NaN` (`0 === -0` though they are distinct values; `NaN !== NaN` though
 * they are equal). No value of another kind, no missing field (undefined)
 * and no member a plain object inherits (a function, or `__proto__`'s
 * object) is `===` to such an operand.
 */
function isStrictOperand(operand: Value): boolean {
  switch (typeof operand) {
    case "string":
    case "boolean":
    case "bigint":
      return true;
    case "number":
      return operand !== 0 && operand === operand;
  }
  return false;
}

/** `field` equal to `operand` in the value order (a missing field: to null). */
export function equalsMatcher(field: string, operand: Value): Matcher {
  // The common shape (a primitive operand): one read, one `===`, no kind.
  if (isStrictOperand(operand)) return (fields) => fields[field] === operand;
  const kind = valueKind(operand);
  return (fields) => {
    const value = read(fields, field);
    if (value === undefined) return operand === null;
    return valueKind(value) === kind &&
      compareWithinKind(kind, value, operand) === 0;
  };
}

/**
 * A range test of one operator against a number, string or bigint operand
 * by JavaScript's own comparison, which agrees with the value order within
 * those kinds (strings by code units) except for a number operand of 0,
 * -0 or NaN (left to the general test) and a NaN value, which sorts before
 * every number: below any bound, so it passes `lt` and `lte`. Undefined
 * for the other operands.
 */
function rangeMatcher(
  field: string,
  op: OrderOperator,
  operand: Value,
): Matcher | undefined {
  const type = typeof operand;
  if (type === "boolean" || !isStrictOperand(operand)) return undefined;
  if (type === "number") {
    const bound = operand as number;
    switch (op) {
      case "gt":
        return (fields) => {
          const value = fields[field];
          return typeof value === "number" && value > bound;
        };
      case "gte":
        return (fields) => {
          const value = fields[field];
          return typeof value === "number" && value >= bound;
        };
      case "lt":
        return (fields) => {
          const value = fields[field];
          return typeof value === "number" && !(value >= bound);
        };
      default:
        return (fields) => {
          const value = fields[field];
          return typeof value === "number" && !(value > bound);
        };
    }
  }
  // A string or bigint: no value of its kind is unordered.
  if (type === "string") {
    const text = operand as string;
    switch (op) {
      case "gt":
        return (fields) => {
          const value = fields[field];
          return typeof value === "string" && value > text;
        };
      case "gte":
        return (fields) => {
          const value = fields[field];
          return typeof value === "string" && value >= text;
        };
      case "lt":
        return (fields) => {
          const value = fields[field];
          return typeof value === "string" && value < text;
        };
      default:
        return (fields) => {
          const value = fields[field];
          return typeof value === "string" && value <= text;
        };
    }
  }
  const big = operand as bigint;
  switch (op) {
    case "gt":
      return (fields) => {
        const value = fields[field];
        return typeof value === "bigint" && value > big;
      };
    case "gte":
      return (fields) => {
        const value = fields[field];
        return typeof value === "bigint" && value >= big;
      };
    case "lt":
      return (fields) => {
        const value = fields[field];
        return typeof value === "bigint" && value < big;
      };
    default:
      return (fields) => {
        const value = fields[field];
        return typeof value === "bigint" && value <= big;
      };
  }
}

/**
 * `field` not equal to `operand` in the value order; a missing field
 * matches.
 */
export function notEqualsMatcher(field: string, operand: Value): Matcher {
  if (isStrictOperand(operand)) return (fields) => fields[field] !== operand;
  const equals = equalsMatcher(field, operand);
  return (fields) => read(fields, field) === undefined ? true : !equals(fields);
}

/** `field` equal to one of `values`; a missing field matches none. */
export function inMatcher(field: string, values: readonly Value[]): Matcher {
  if (values.every((value) => value === null || isStrictOperand(value))) {
    // Primitives but zeros (a Set takes -0 for 0): the value itself is the
    // key, and nothing a missing field reads as is in the set.
    const set = new Set<unknown>(values);
    return (fields) => set.has(fields[field]);
  }
  const keySet = new Set(values.map(mapKey));
  return (fields) => {
    const value = read(fields, field);
    return value !== undefined && keySet.has(mapKey(value));
  };
}

/**
 * `field` ordered against `operand` as `op` says, among values of the
 * operand's kind only (type bracketing: a missing field or a value of
 * another kind matches nothing).
 */
export function orderMatcher(
  field: string,
  op: OrderOperator,
  operand: Value,
): Matcher {
  const fast = rangeMatcher(field, op, operand);
  if (fast !== undefined) return fast;
  const kind = valueKind(operand);
  const test = op === "gt"
    ? (order: number) => order > 0
    : op === "gte"
    ? (order: number) => order >= 0
    : op === "lt"
    ? (order: number) => order < 0
    : (order: number) => order <= 0;
  return (fields) => {
    const value = read(fields, field);
    return value !== undefined && valueKind(value) === kind &&
      test(compareWithinKind(kind, value, operand));
  };
}

/** A matcher true when all of `parts` are (loops only past two). */
export function allOf(parts: readonly Matcher[]): Matcher {
  if (parts.length === 0) return () => true;
  if (parts.length === 1) return parts[0]!;
  if (parts.length === 2) {
    const [a, b] = parts as [Matcher, Matcher];
    return (fields) => a(fields) && b(fields);
  }
  return (fields) => {
    for (let index = 0; index < parts.length; index++) {
      if (!parts[index]!(fields)) return false;
    }
    return true;
  };
}

/** A matcher true when one of `parts` is (loops only past two). */
export function anyOf(parts: readonly Matcher[]): Matcher {
  if (parts.length === 0) return () => false;
  if (parts.length === 1) return parts[0]!;
  if (parts.length === 2) {
    const [a, b] = parts as [Matcher, Matcher];
    return (fields) => a(fields) || b(fields);
  }
  return (fields) => {
    for (let index = 0; index < parts.length; index++) {
      if (parts[index]!(fields)) return true;
    }
    return false;
  };
}
