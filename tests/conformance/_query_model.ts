/**
 * A model of the query language written from docs/CLIENT.md "Querying" and
 * "The value order" (not from the code), with values of every kind, for the
 * query conformance tests (`queries_test.ts`, `query_indexes_test.ts`). Like
 * every conformance helper it imports only the public entry points.
 *
 * @module
 */

import type { Fields, Value } from "../../mod.ts";

// The documented order, written from the table in docs/CLIENT.md "The value
// order" (not from the code): kinds lowest first, then within the kind.

const KINDS = [
  "null",
  "boolean",
  "number",
  "bigint",
  "string",
  "bytes",
  "date",
  "array",
  "object",
] as const;

/** The rank of a value's kind in the documented order (null 0 … object 8). */
export function kindOf(value: Value): number {
  if (value === null) return 0;
  switch (typeof value) {
    case "boolean":
      return 1;
    case "number":
      return 2;
    case "bigint":
      return 3;
    case "string":
      return 4;
  }
  if (value instanceof Uint8Array) return 5;
  if (value instanceof Date) return 6;
  return Array.isArray(value) ? 7 : 8;
}

/** -1, 0 or 1. */
export function sign(x: number): number {
  return x < 0 ? -1 : x > 0 ? 1 : 0;
}

/** NaN first, then numerically, `-0` before `0`. */
function numberOrder(a: number, b: number): number {
  if (Number.isNaN(a) || Number.isNaN(b)) {
    return Number(!Number.isNaN(a)) - Number(!Number.isNaN(b));
  }
  if (a !== b) return a < b ? -1 : 1;
  return Number(!Object.is(a, -0)) - Number(!Object.is(b, -0));
}

/** Element by element, a shorter prefix first. */
function listOrder<T>(
  a: readonly T[],
  b: readonly T[],
  item: (x: T, y: T) => number,
): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const order = item(a[i]!, b[i]!);
    if (order !== 0) return order;
  }
  return sign(a.length - b.length);
}

/** The documented total order: -1, 0 or 1. */
export function order(a: Value, b: Value): number {
  const kinds = kindOf(a) - kindOf(b);
  if (kinds !== 0) return sign(kinds);
  switch (KINDS[kindOf(a)]) {
    case "null":
      return 0;
    case "boolean":
      return Number(a) - Number(b);
    case "number":
      return numberOrder(a as number, b as number);
    case "bigint":
      return (a as bigint) < (b as bigint)
        ? -1
        : (a as bigint) > (b as bigint)
        ? 1
        : 0;
    case "string":
      // By UTF-16 code unit, written out rather than JavaScript's `<`.
      return listOrder(
        [...Array((a as string).length).keys()].map((i) =>
          (a as string).charCodeAt(i)
        ),
        [...Array((b as string).length).keys()].map((i) =>
          (b as string).charCodeAt(i)
        ),
        (x, y) => sign(x - y),
      );
    case "bytes":
      return listOrder(
        [...a as Uint8Array],
        [...b as Uint8Array],
        (x, y) => sign(x - y),
      );
    case "date":
      return numberOrder((a as Date).getTime(), (b as Date).getTime());
    case "array":
      return listOrder(a as Value[], b as Value[], order);
    default: {
      const entries = (o: Value) =>
        Object.entries(o as Record<string, Value>).sort(([x], [y]) =>
          x < y ? -1 : x > y ? 1 : 0
        );
      return listOrder(
        entries(a),
        entries(b),
        ([k1, v1], [k2, v2]) => (k1 < k2 ? -1 : k1 > k2 ? 1 : order(v1, v2)),
      );
    }
  }
}

/** An operator of a field condition. */
export type Op = "eq" | "ne" | "gt" | "gte" | "lt" | "lte" | "in";
/** The operators that take one operand. */
export const OPS: Op[] = ["eq", "ne", "gt", "gte", "lt", "lte"];

/** Whether a field (undefined: missing) passes one operator, per the docs. */
export function passes(
  op: Op,
  value: Value | undefined,
  operand: Value,
): boolean {
  if (op === "in") {
    return value !== undefined &&
      (operand as Value[]).some((x) => order(value, x) === 0);
  }
  if (value === undefined) {
    return (op === "eq" && operand === null) || op === "ne";
  }
  if (op === "eq") return order(value, operand) === 0;
  if (op === "ne") return order(value, operand) !== 0;
  // Range operators are bracketed by kind.
  if (kindOf(value) !== kindOf(operand)) return false;
  const o = order(value, operand);
  return op === "gt"
    ? o > 0
    : op === "gte"
    ? o >= 0
    : op === "lt"
    ? o < 0
    : o <= 0;
}

/** An own field, or undefined when the object lacks it. */
export function field(fields: Fields, name: string): Value | undefined {
  return Object.hasOwn(fields, name) ? fields[name] : undefined;
}

/** A where of the language, evaluated by the model. */
export function modelMatches(
  where: Record<string, unknown>,
  fields: Fields,
): boolean {
  return Object.entries(where).every(([key, condition]) => {
    if (key === "$and") {
      return (condition as Record<string, unknown>[]).every((w) =>
        modelMatches(w, fields)
      );
    }
    if (key === "$or") {
      return (condition as Record<string, unknown>[]).some((w) =>
        modelMatches(w, fields)
      );
    }
    if (key === "$not") {
      return !modelMatches(condition as Record<string, unknown>, fields);
    }
    const value = field(fields, key);
    if (
      condition === null || typeof condition !== "object" ||
      condition instanceof Date || condition instanceof Uint8Array
    ) {
      return passes("eq", value, condition as Value);
    }
    return Object.entries(condition).every(([op, operand]) =>
      passes(op as Op, value, operand as Value)
    );
  });
}

/** A query as the model reads it. */
export interface ModelQuery {
  where?: Record<string, unknown>;
  sort?: [string, "asc" | "desc"][];
  limit?: number;
  offset?: number;
}

/** The ids a query returns, per the docs: filter, sort (ties by id), window. */
export function modelIds(
  objects: ReadonlyMap<string, Fields>,
  query: ModelQuery,
) {
  const rows = [...objects].filter(([, fields]) =>
    query.where === undefined || modelMatches(query.where, fields)
  );
  rows.sort(([idA, a], [idB, b]) => {
    for (const [name, direction] of query.sort ?? []) {
      const x = field(a, name);
      const y = field(b, name);
      // A missing field sorts before every value (after, in "desc").
      const o = x === undefined
        ? (y === undefined ? 0 : -1)
        : y === undefined
        ? 1
        : order(x, y);
      if (o !== 0) return direction === "asc" ? o : -o;
    }
    return idA < idB ? -1 : idA > idB ? 1 : 0;
  });
  const offset = query.offset ?? 0;
  return rows.slice(offset, offset + (query.limit ?? Infinity)).map(([id]) =>
    id
  );
}

// ---------------------------------------------------------------------------
// Values of every kind, listed in ascending documented order (each distinct).

export const SAMPLES: Value[] = [
  null,
  false,
  true,
  NaN,
  -Infinity,
  -1.5,
  -0,
  0,
  1,
  Infinity,
  -1n,
  0n,
  1n,
  2n ** 64n,
  "",
  "1",
  "a",
  "ab",
  "b",
  "é",
  "\u{1F600}", // a surrogate pair: D83D DE00, below E000 by code unit
  "\uE000",
  "\uFFFF",
  new Uint8Array([]),
  new Uint8Array([0]),
  new Uint8Array([1]),
  new Uint8Array([1, 0]),
  new Uint8Array([255]),
  new Date(NaN),
  new Date(-1),
  new Date(0),
  new Date(8.64e15),
  [],
  [null],
  [1],
  [1, "a"],
  [1n],
  [[0]],
  {},
  { a: 1 },
  { a: 1, b: null },
  { a: [1] },
  { b: 0 },
];

/** Equal copies of composite samples (new objects, keys reordered). */
export function copyOf(value: Value): Value {
  if (value instanceof Date) return new Date(value.getTime());
  if (value instanceof Uint8Array) return value.slice();
  if (Array.isArray(value)) return value.map(copyOf);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value).reverse().map(([k, v]) => [k, copyOf(v)]),
    );
  }
  return value;
}

/** A value or query for a message (`…` past a few levels). */
export function show(value: unknown, depth = 8): string {
  if (depth === 0) return "…";
  if (Object.is(value, -0)) return "-0";
  if (typeof value === "bigint") return `${value}n`;
  if (value instanceof Date) return `Date(${value.getTime()})`;
  if (value instanceof Uint8Array) return `bytes[${value}]`;
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    return `[${value.map((v) => show(v, depth - 1)).join(", ")}]`;
  }
  if (value !== null && typeof value === "object") {
    return `{${
      Object.entries(value).map(([k, v]) => `${k}: ${show(v, depth - 1)}`)
        .join(", ")
    }}`;
  }
  return String(value);
}
