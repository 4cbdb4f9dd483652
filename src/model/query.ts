// This module is browser compatible.

/**
 * The query language (`where`, `sort`, `limit`, `offset`): its types, its
 * validation and its compilation into a matcher and a comparator, shared by
 * the client's queries and live queries and by the server.
 */

import {
  allOf,
  anyOf,
  equalsMatcher,
  inMatcher,
  type Matcher,
  notEqualsMatcher,
  orderMatcher,
  type OrderOperator,
  readField,
} from "./field_tests.ts";
import { compareValues, valueKind } from "./value_order.ts";
import {
  type Fields,
  isValue,
  storedValue,
  type Value,
  wellFormed,
  wellFormedName,
} from "./value.ts";

/**
 * The value a field may be compared with by shorthand (`field: value`):
 * every value except arrays and plain objects, which must use `{ eq }`
 * because a plain object there is read as operators.
 *
 * @example
 * ```ts
 * import type { Scalar } from "@tether/sync";
 *
 * const when: Scalar<Date> = new Date(0);
 * console.log(when);
 * ```
 */
export type Scalar<V> = V extends Date | Uint8Array ? V
  : V extends readonly unknown[] ? never
  : V extends object ? never
  : V;

/**
 * Operators on one field; several in one object must all hold. Range
 * operators (`gt`, `gte`, `lt`, `lte`) match only values of the operand's
 * kind (a number range never matches a string, `null` or a missing field).
 * A missing field matches only `eq: null` and `ne`.
 *
 * @example Open tasks of priority 2 to 4, not owned by "bob"
 * ```ts
 * import type { FieldCondition } from "@tether/sync";
 *
 * const priority: FieldCondition<number> = { gte: 2, lte: 4 };
 * const owner: FieldCondition<string> = { ne: "bob" };
 * console.log(priority, owner);
 * ```
 */
export interface FieldCondition<V = Value> {
  /** Equal in the value order (`-0` is not `0`, `1` is not `1n`). */
  eq?: V | null;
  /** Not equal; also matches a missing field. */
  ne?: V | null;
  /** Greater, among values of the operand's kind. */
  gt?: V;
  /** Greater or equal, among values of the operand's kind. */
  gte?: V;
  /** Less, among values of the operand's kind. */
  lt?: V;
  /** Less or equal, among values of the operand's kind. */
  lte?: V;
  /** Equal to one of the values. */
  in?: readonly (V | null)[];
}

/**
 * A filter: a conjunction of its entries, each `field: value` (equality),
 * `field: { eq, ne, gt, gte, lt, lte, in }`, or a combinator `$and`, `$or`,
 * `$not`. Data, not a function.
 *
 * @example Open tasks that are urgent or mine
 * ```ts
 * import type { Where } from "@tether/sync";
 *
 * type Task = { title: string; done: boolean; priority: number; owner: string };
 * const where: Where<Task> = {
 *   done: false,
 *   $or: [{ priority: { gte: 3 } }, { owner: "me" }],
 * };
 * console.log(where);
 * ```
 */
export type Where<T = Fields> = string extends keyof T ? UntypedWhere
  : TypedWhere<T>;

/**
 * A filter over objects whose fields have a known type `T`: field names
 * and operand types are checked.
 *
 * @example
 * ```ts
 * import type { TypedWhere } from "@tether/sync";
 *
 * const where: TypedWhere<{ done: boolean }> = { done: false };
 * console.log(where);
 * ```
 */
export type TypedWhere<T> =
  & {
    // `undefined` (an optional field's) is no operand: a realm never
    // stores it, and the run-time check refuses it.
    [K in keyof T & string]?:
      | Scalar<Exclude<T[K], undefined>>
      | null
      | FieldCondition<Exclude<T[K], undefined>>;
  }
  & {
    /** Every filter matches. */
    $and?: readonly TypedWhere<T>[];
    /** At least one filter matches. */
    $or?: readonly TypedWhere<T>[];
    /** The filter does not match. */
    $not?: TypedWhere<T>;
  };

/**
 * A filter over untyped fields ({@linkcode Fields}): any field name; the
 * shape is checked at run time.
 *
 * @example
 * ```ts
 * import type { UntypedWhere } from "@tether/sync";
 *
 * const where: UntypedWhere = { $or: [{ a: 1 }, { b: { gt: 2 } }] };
 * console.log(where);
 * ```
 */
export interface UntypedWhere {
  /** A field's value (equality) or operators, or a combinator's operand. */
  [field: string]:
    | Value
    | FieldCondition
    | UntypedWhere
    | readonly UntypedWhere[]
    | undefined;
  /** Every filter matches. */
  $and?: readonly UntypedWhere[];
  /** At least one filter matches. */
  $or?: readonly UntypedWhere[];
  /** The filter does not match. */
  $not?: UntypedWhere;
}

/**
 * One sort key: a field and a direction.
 *
 * @example
 * ```ts
 * import type { SortKey } from "@tether/sync";
 *
 * const key: SortKey<{ priority: number }> = ["priority", "desc"];
 * console.log(key);
 * ```
 */
export type SortKey<T = Fields> = readonly [
  field: keyof T & string,
  direction: "asc" | "desc",
];

/**
 * Sort keys, most significant first. Sorting is stable and ties break by id
 * ascending whatever the directions; a missing field sorts before every
 * value (after, in `"desc"`).
 *
 * @example
 * ```ts
 * import type { SortSpec } from "@tether/sync";
 *
 * const sort: SortSpec<{ priority: number; title: string }> = [
 *   ["priority", "desc"],
 *   ["title", "asc"],
 * ];
 * console.log(sort);
 * ```
 */
export type SortSpec<T = Fields> = readonly SortKey<T>[];

/**
 * A query over the objects of one type. Without `sort`, results come in id
 * order (unspecified by the contract, but stable).
 *
 * @example The first page of open tasks, most urgent first
 * ```ts
 * import type { Query } from "@tether/sync";
 *
 * type Task = { title: string; done: boolean; priority: number };
 * const query: Query<Task> = {
 *   where: { done: false },
 *   sort: [["priority", "desc"], ["title", "asc"]],
 *   limit: 20,
 *   offset: 0,
 * };
 * console.log(query);
 * ```
 */
export interface Query<T = Fields> {
  /** Which objects; every object of the type when absent. */
  where?: Where<T>;
  /** Their order. */
  sort?: SortSpec<T>;
  /** At most this many (a non-negative integer). */
  limit?: number;
  /** Skip this many first (a non-negative integer). */
  offset?: number;
}

/** One row a compiled query works on (internal). */
export interface Row {
  readonly id: string;
  readonly fields: Fields;
}

/** A row with its sort-key values extracted once (internal). */
export interface KeyedRow {
  readonly id: string;
  /** The values of the sort fields, in sort order (undefined: missing). */
  readonly keys: readonly (Value | undefined)[];
}

/** A condition an index can answer (internal): one field, one operator. */
export type IndexableCondition =
  | { field: string; op: "eq"; value: Value }
  | { field: string; op: "in"; values: Value[] }
  | {
    field: string;
    op: "range";
    lower: { value: Value; inclusive: boolean } | undefined;
    upper: { value: Value; inclusive: boolean } | undefined;
  };

/** A validated, compiled query (internal). */
export interface CompiledQuery {
  /** Whether an object's fields pass `where`. */
  matches(fields: Fields): boolean;
  /** Row order: the sort keys, then id ascending. */
  compare(a: Row, b: Row): number;
  /** The sort keys only (0 when they tie). */
  compareSortKeys(a: Fields, b: Fields): number;
  /** The values of an object's sort fields, for {@linkcode compareKeyed}. */
  keysOf(fields: Fields): (Value | undefined)[];
  /** Row order on extracted keys: the sort keys, then id ascending. */
  compareKeyed(a: KeyedRow, b: KeyedRow): number;
  /**
   * Row order of an object given by its fields against a keyed row, with
   * no keys extracted (a live query's test against its cut's bound).
   */
  compareToKeyed(id: string, fields: Fields, row: KeyedRow): number;
  /** Extracted sort keys only (0 when they tie). */
  compareKeys(
    a: readonly (Value | undefined)[],
    b: readonly (Value | undefined)[],
  ): number;
  /** Whether `sort` has keys (else order is by id alone). */
  readonly sorted: boolean;
  /** The first sort key's field, or undefined when `sort` has none. */
  readonly leadField: string | undefined;
  /** The first sort key's direction: 1 ascending, -1 descending. */
  readonly leadSign: number;
  /** `limit`, or Infinity. */
  readonly limit: number;
  /** `offset`, or 0. */
  readonly offset: number;
  /** Conditions of the top-level conjunction that an index can answer. */
  readonly indexable: readonly IndexableCondition[];
}

const read = readField;

const OPERATORS = new Set(["eq", "ne", "gt", "gte", "lt", "lte", "in"]);

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "function") return "a function";
  if (typeof value === "object") {
    const name = Object.getPrototypeOf(value)?.constructor?.name;
    return typeof name === "string" && name !== "Object"
      ? `a ${name}`
      : "an object";
  }
  return typeof value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

function fieldPath(path: string, field: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(field)
    ? `${path}.${field}`
    : `${path}[${JSON.stringify(field)}]`;
}

function checkOperand(path: string, value: unknown): Value {
  if (!isValue(value)) {
    const [where, what] = badPart(path, value, MAX_DEPTH);
    throw new TypeError(
      `Invalid query: ${where} must be a value a realm can store, got ${what}`,
    );
  }
  // A copy of a date, byte array, array or object: a live query keeps its
  // filter, which the caller's later changes to the operand must not move.
  // Strings as a write stores them (lone surrogates as U+FFFD), so a filter
  // finds what a write of the same string stored.
  return typeof value === "object" && value !== null
    ? storedValue(value)
    : wellFormedName(value);
}

/** How deep an operand may nest (as `isValue` allows by default). */
const MAX_DEPTH = 32;

/**
 * The innermost part of an operand `isValue` refused and what it is, so a
 * message names `where.tags.eq[1]` rather than the whole array.
 */
function badPart(
  path: string,
  value: unknown,
  depth: number,
): [string, string] {
  if (!Array.isArray(value) && !isPlainObject(value)) {
    return [path, describe(value)];
  }
  if (depth <= 0) {
    return [path, `${describe(value)} nested over ${MAX_DEPTH} levels deep`];
  }
  if (Array.isArray(value)) {
    for (let index = 0; index < value.length; index++) {
      const part = `${path}[${index}]`;
      if (!(index in value)) return [part, "a hole (a sparse array)"];
      if (!isValue(value[index], depth - 1)) {
        return badPart(part, value[index], depth - 1);
      }
    }
  } else {
    for (const key in value) {
      if (!isValue(value[key], depth - 1)) {
        return badPart(fieldPath(path, key), value[key], depth - 1);
      }
    }
  }
  return [path, describe(value)];
}

function compileCondition(
  path: string,
  field: string,
  condition: Record<string, unknown>,
  indexable: IndexableCondition[] | undefined,
): Matcher {
  const keys = Object.keys(condition);
  if (keys.length === 0) {
    throw new TypeError(
      `Invalid query: ${path} has no operator (use eq, ne, gt, gte, lt, lte or in)`,
    );
  }
  const parts: Matcher[] = [];
  let lower: { value: Value; inclusive: boolean } | undefined;
  let upper: { value: Value; inclusive: boolean } | undefined;
  for (const op of keys) {
    const operandPath = fieldPath(path, op);
    if (!OPERATORS.has(op)) {
      throw new TypeError(
        `Invalid query: ${operandPath} is not an operator (use eq, ne, gt, gte, lt, lte or in)`,
      );
    }
    const raw = condition[op];
    if (op === "in") {
      if (!Array.isArray(raw)) {
        throw new TypeError(
          `Invalid query: ${operandPath} must be an array of values, got ${
            describe(raw)
          }`,
        );
      }
      // An index loop, not `map`: a hole (a sparse array) is refused as
      // undefined instead of being skipped into a Set that holds it.
      const values: Value[] = [];
      for (let index = 0; index < raw.length; index++) {
        values.push(checkOperand(`${operandPath}[${index}]`, raw[index]));
      }
      parts.push(inMatcher(field, values));
      indexable?.push({ field, op: "in", values });
      continue;
    }
    const operand = checkOperand(operandPath, raw);
    if (op === "eq") {
      parts.push(equalsMatcher(field, operand));
      indexable?.push({ field, op: "eq", value: operand });
      continue;
    }
    if (op === "ne") {
      parts.push(notEqualsMatcher(field, operand));
      continue;
    }
    parts.push(orderMatcher(field, op as OrderOperator, operand));
    const bound = { value: operand, inclusive: op === "gte" || op === "lte" };
    if (op === "gt" || op === "gte") {
      if (lower === undefined || tighterLower(bound, lower)) lower = bound;
    } else if (upper === undefined || tighterUpper(bound, upper)) {
      upper = bound;
    }
  }
  if (
    indexable !== undefined && (lower !== undefined || upper !== undefined) &&
    (lower === undefined || upper === undefined ||
      valueKind(lower.value) === valueKind(upper.value))
  ) {
    indexable.push({ field, op: "range", lower, upper });
  }
  return allOf(parts);
}

function tighterLower(
  a: { value: Value; inclusive: boolean },
  b: { value: Value; inclusive: boolean },
): boolean {
  if (valueKind(a.value) !== valueKind(b.value)) return false;
  const order = compareValues(a.value, b.value);
  return order > 0 || (order === 0 && !a.inclusive);
}

function tighterUpper(
  a: { value: Value; inclusive: boolean },
  b: { value: Value; inclusive: boolean },
): boolean {
  if (valueKind(a.value) !== valueKind(b.value)) return false;
  const order = compareValues(a.value, b.value);
  return order < 0 || (order === 0 && !a.inclusive);
}

function compileWhereList(
  path: string,
  list: unknown,
  indexable: IndexableCondition[] | undefined,
  depth: number,
): Matcher[] {
  if (!Array.isArray(list)) {
    throw new TypeError(
      `Invalid query: ${path} must be an array of filters, got ${
        describe(list)
      }`,
    );
  }
  // Index loops, not `map`, here and below: a hole must be refused, not
  // skipped into a list of matchers that would call it.
  const matchers: Matcher[] = [];
  for (let index = 0; index < list.length; index++) {
    matchers.push(
      compileWhere(`${path}[${index}]`, list[index], indexable, depth),
    );
  }
  return matchers;
}

/**
 * How deep combinators may nest (MongoDB's limit): a filter is data that
 * may come from elsewhere (later, a client's partial-sync query on the
 * server), and compiling and matching recurse once per level, so a filter
 * thousands of levels deep overflowed the stack (a `RangeError`) instead of
 * being refused by name.
 */
const MAX_FILTER_DEPTH = 100;

/**
 * Compiles a filter nested in `depth` combinators; `indexable` (top-level
 * conjunction only) collects the conditions an index could answer.
 */
function compileWhere(
  path: string,
  where: unknown,
  indexable: IndexableCondition[] | undefined,
  depth = 0,
): Matcher {
  if (!isPlainObject(where)) {
    throw new TypeError(
      `Invalid query: ${path} must be a plain object, got ${describe(where)}`,
    );
  }
  if (depth > MAX_FILTER_DEPTH) {
    throw new TypeError(
      `Invalid query: ${path} nests combinators over ${MAX_FILTER_DEPTH} levels deep`,
    );
  }
  const parts: Matcher[] = [];
  for (const key of Object.keys(where)) {
    const value = where[key];
    if (key.startsWith("$")) {
      const combinatorPath = `${path}.${key}`;
      if (key === "$and") {
        // A top-level `$and` is part of the conjunction an index may answer.
        parts.push(
          allOf(compileWhereList(combinatorPath, value, indexable, depth + 1)),
        );
      } else if (key === "$or") {
        const list = compileWhereList(
          combinatorPath,
          value,
          undefined,
          depth + 1,
        );
        parts.push(anyOf(list));
      } else if (key === "$not") {
        const inner = compileWhere(
          combinatorPath,
          value,
          undefined,
          depth + 1,
        );
        parts.push((fields) => !inner(fields));
      } else {
        throw new TypeError(
          `Invalid query: ${combinatorPath} is not a combinator (use $and, $or or $not; a field whose name starts with $ cannot be filtered on)`,
        );
      }
      continue;
    }
    const path2 = fieldPath(path, key);
    // The field as a write names it (lone surrogates as U+FFFD).
    const field = wellFormed(key);
    if (isPlainObject(value)) {
      parts.push(compileCondition(path2, field, value, indexable));
    } else if (Array.isArray(value)) {
      throw new TypeError(
        `Invalid query: ${path2} is an array; compare arrays with { eq: [...] }`,
      );
    } else {
      const operand = checkOperand(path2, value);
      parts.push(equalsMatcher(field, operand));
      indexable?.push({ field, op: "eq", value: operand });
    }
  }
  return allOf(parts);
}

function compileSort(
  sort: unknown,
): { field: string; sign: number }[] {
  if (!Array.isArray(sort)) {
    throw new TypeError(
      `Invalid query: sort must be an array of [field, "asc" | "desc"] pairs, got ${
        describe(sort)
      }`,
    );
  }
  const keys: { field: string; sign: number }[] = [];
  for (let index = 0; index < sort.length; index++) {
    const key: unknown = sort[index];
    const path = `sort[${index}]`;
    if (!Array.isArray(key) || key.length !== 2) {
      throw new TypeError(
        `Invalid query: ${path} must be a [field, "asc" | "desc"] pair, got ${
          describe(key)
        }`,
      );
    }
    const [field, direction] = key;
    if (typeof field !== "string") {
      throw new TypeError(
        `Invalid query: ${path}[0] must be a field name, got ${
          describe(field)
        }`,
      );
    }
    if (direction !== "asc" && direction !== "desc") {
      throw new TypeError(
        `Invalid query: ${path}[1] must be "asc" or "desc", got ${
          typeof direction === "string"
            ? JSON.stringify(direction)
            : describe(direction)
        }`,
      );
    }
    keys.push({ field: wellFormed(field), sign: direction === "asc" ? 1 : -1 });
  }
  return keys;
}

function checkCount(name: string, value: unknown): number {
  if (
    typeof value !== "number" || !Number.isSafeInteger(value) || value < 0
  ) {
    throw new TypeError(
      `Invalid query: ${name} must be a non-negative integer, got ${
        typeof value === "number" ? String(value) : describe(value)
      }`,
    );
  }
  return value;
}

/**
 * Validates a query and compiles it once (internal).
 *
 * @param query The query as given by a caller (any value: it is checked).
 * @param allowed The options this call accepts besides the query's own
 *   (e.g. `"signal"` for a live query), or the query keys this call takes.
 * @throws {TypeError} Naming the offending part (`where.priority.between`,
 *   `sort[0][1]`, `limit`…).
 */
export function compileQuery(
  query: unknown,
  allowed: readonly string[] = ["where", "sort", "limit", "offset"],
): CompiledQuery {
  if (query === undefined) query = {};
  if (!isPlainObject(query)) {
    throw new TypeError(
      `Invalid query: the query must be a plain object, got ${describe(query)}`,
    );
  }
  for (const key of Object.keys(query)) {
    if (!allowed.includes(key)) {
      throw new TypeError(
        `Invalid query: ${key} is not an option here (use ${
          allowed.join(", ")
        })`,
      );
    }
  }
  const indexable: IndexableCondition[] = [];
  const matches = query.where === undefined
    ? () => true
    : compileWhere("where", query.where, indexable);
  const keys = query.sort === undefined ? [] : compileSort(query.sort);
  const limit = query.limit === undefined
    ? Infinity
    : checkCount("limit", query.limit);
  const offset = query.offset === undefined
    ? 0
    : checkCount("offset", query.offset);
  const compareSortKeys = (a: Fields, b: Fields): number => {
    for (const { field, sign } of keys) {
      const x = read(a, field);
      const y = read(b, field);
      if (Object.is(x, y)) continue;
      // A missing field sorts before every value.
      const order = x === undefined
        ? -1
        : y === undefined
        ? 1
        : compareValues(x, y);
      if (order !== 0) return order * sign;
    }
    return 0;
  };
  const signs = keys.map((key) => key.sign);
  const sortFields = keys.map((key) => key.field);
  // One sort key of two objects, in the key's direction; a missing field
  // sorts first.
  const compareAt = (
    index: number,
    x: Value | undefined,
    y: Value | undefined,
  ): number => {
    if (Object.is(x, y)) return 0;
    // Fast paths for the common kinds (same order as compareValues:
    // ordinary numbers by value, strings by code units).
    const kind = typeof x;
    if (kind === typeof y && (kind === "number" || kind === "string")) {
      if ((x as number) < (y as number)) return -signs[index]!;
      if ((x as number) > (y as number)) return signs[index]!;
    }
    const order = x === undefined
      ? -1
      : y === undefined
      ? 1
      : compareValues(x, y);
    return order === 0 ? 0 : order * signs[index]!;
  };
  const compareKeys = (
    a: readonly (Value | undefined)[],
    b: readonly (Value | undefined)[],
  ): number => {
    for (let index = 0; index < signs.length; index++) {
      const order = compareAt(index, a[index], b[index]);
      if (order !== 0) return order;
    }
    return 0;
  };
  const compareToKeyed = (
    id: string,
    fields: Fields,
    row: KeyedRow,
  ): number => {
    for (let index = 0; index < signs.length; index++) {
      const order = compareAt(
        index,
        read(fields, sortFields[index]!),
        row.keys[index],
      );
      if (order !== 0) return order;
    }
    return id < row.id ? -1 : id > row.id ? 1 : 0;
  };
  // One sort key (the common case): the comparisons a live query makes
  // per touched object and per search step, without the loop.
  const single = signs.length === 1 ? signs[0]! : 0;
  const compareSingle = (
    x: Value | undefined,
    y: Value | undefined,
    aId: string,
    bId: string,
  ): number => {
    if (typeof x === "number" && typeof y === "number") {
      if (x < y) return -single;
      if (x > y) return single;
      // NaN, or zeros (-0 sorts before 0).
      if (x !== y || x === 0) {
        const order = compareAt(0, x, y);
        if (order !== 0) return order;
      }
    } else if (typeof x === "string" && typeof y === "string") {
      if (x < y) return -single;
      if (x > y) return single;
    } else {
      const order = compareAt(0, x, y);
      if (order !== 0) return order;
    }
    return aId < bId ? -1 : aId > bId ? 1 : 0;
  };
  const sortField = sortFields[0] ?? "";
  return {
    matches,
    compareSortKeys,
    compareToKeyed: single === 0
      ? compareToKeyed
      : (id, fields, row) =>
        compareSingle(
          readField(fields, sortField),
          row.keys[0],
          id,
          row.id,
        ),
    keysOf: (fields) => {
      // A loop over plain names: called once per object per commit.
      const values = new Array<Value | undefined>(sortFields.length);
      for (let index = 0; index < sortFields.length; index++) {
        values[index] = read(fields, sortFields[index]!);
      }
      return values;
    },
    compareKeys,
    compareKeyed: single !== 0
      ? (a, b) => compareSingle(a.keys[0], b.keys[0], a.id, b.id)
      : (a, b) => {
        const order = signs.length === 0 ? 0 : compareKeys(a.keys, b.keys);
        if (order !== 0) return order;
        return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
      },
    compare: (a, b) => {
      const order = keys.length === 0 ? 0 : compareSortKeys(a.fields, b.fields);
      if (order !== 0) return order;
      return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    },
    sorted: keys.length > 0,
    leadField: sortFields[0],
    leadSign: signs[0] ?? 1,
    limit,
    offset,
    indexable,
  };
}

/**
 * Runs a compiled query over rows (a whole type, or index candidates):
 * filter, sort, window. Returns the matching rows in order.
 */
export function runQuery<R extends Row>(
  compiled: CompiledQuery,
  rows: Iterable<R>,
): R[] {
  const result: R[] = [];
  for (const row of rows) if (compiled.matches(row.fields)) result.push(row);
  result.sort(compiled.compare);
  if (compiled.offset === 0 && compiled.limit >= result.length) return result;
  return result.slice(compiled.offset, compiled.offset + compiled.limit);
}
