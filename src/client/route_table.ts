// This module is browser compatible.

/**
 * Live queries routed by the value they require of one field: which of
 * them an object may enter, found by one lookup of the value it holds.
 */

import { readField } from "../model/field_tests.ts";
import type { CompiledQuery } from "../model/query.ts";
import type { Fields, Value } from "../model/value.ts";
import { valueKey } from "../model/value_order.ts";

/**
 * The values a query requires of one field (a top-level equality, or else
 * a top-level `in`): an object holding none of them now cannot enter its
 * result. Undefined when the query requires neither.
 */
export type Route = { field: string; values: readonly Value[] } | undefined;

/**
 * The route of a compiled query: its first top-level equality, else its
 * first top-level `in` (one route table entry per listed value).
 */
export function routeOf(compiled: CompiledQuery): Route {
  for (const condition of compiled.indexable) {
    if (condition.op === "eq") {
      return { field: condition.field, values: [condition.value] };
    }
  }
  for (const condition of compiled.indexable) {
    if (condition.op === "in") {
      return { field: condition.field, values: condition.values };
    }
  }
  return undefined;
}

/**
 * Integers from 0 to one below this are routed through an array indexed by
 * the value (no hashing; the lookup runs once per object and table in a
 * bootstrap). The bound keeps the array small whatever a query lists.
 */
export const SMALL_INTEGERS = 1_024;

/**
 * The live queries of one type that require values of one field
 * (internal). Every value has exactly one place, so that a lookup gives
 * the answer of one map keyed by {@linkcode valueKey} (`-0` is not `0`,
 * `1` is not `1n`, `NaN` is `NaN`, a missing field is `null`): booleans in
 * two slots, the integers 0 to {@linkcode SMALL_INTEGERS} − 1 (never `-0`)
 * in an array, other strings, bigints and numbers but `-0` in a map by the
 * value itself, and the rest by `valueKey`.
 */
export class RouteTable<Q> {
  readonly field: string;
  #false: Q[] | undefined = undefined;
  #true: Q[] | undefined = undefined;
  /** By the integer itself; as long as its last list needs. */
  #small: (Q[] | undefined)[] = [];
  /** By the value itself: strings, bigints, other numbers but -0. */
  #primitive = new Map<unknown, Q[]>();
  /** By `valueKey`: -0, null (a missing field), bytes, dates, composites. */
  #keyed = new Map<string, Q[]>();
  #size = 0;

  constructor(field: string) {
    this.field = field;
  }

  /** How many (value, query) pairs are routed. */
  get size(): number {
    return this.#size;
  }

  /** The queries that require the value an object holds now. */
  lookup(fields: Fields): Q[] | undefined {
    // A plain read first: a primitive there is the field's own value.
    const value = fields[this.field];
    switch (typeof value) {
      case "boolean":
        return value ? this.#true : this.#false;
      case "number": {
        const index = value | 0;
        if (index === value && index >= 0 && index < SMALL_INTEGERS) {
          // -0 passes the tests above and is keyed apart from 0.
          if (index !== 0 || 1 / value > 0) {
            const small = this.#small;
            return index < small.length ? small[index] : undefined;
          }
          break;
        }
        return this.#primitive.get(value);
      }
      case "string":
      case "bigint":
        return this.#primitive.get(value);
    }
    return this.#keyed.size === 0
      ? undefined
      : this.#keyed.get(valueKey(readField(fields, this.field) ?? null));
  }

  /** Routes `query` by each of `values` (a value listed twice, once). */
  add(values: readonly Value[], query: Q): void {
    for (const value of values) {
      const list = this.#get(value);
      if (list === undefined) this.#set(value, [query]);
      else if (!list.includes(query)) list.push(query);
      else continue;
      this.#size++;
    }
  }

  /** Undoes {@linkcode add} with the same values. */
  remove(values: readonly Value[], query: Q): void {
    for (const value of values) {
      const list = this.#get(value);
      const at = list === undefined ? -1 : list.indexOf(query);
      if (at === -1) continue;
      list!.splice(at, 1);
      if (list!.length === 0) this.#set(value, undefined);
      this.#size--;
    }
  }

  /** The list of the queries routed by `value`, by its place. */
  #get(value: Value): Q[] | undefined {
    if (typeof value === "boolean") return value ? this.#true : this.#false;
    if (isSmall(value)) return this.#small[value];
    return isPrimitive(value)
      ? this.#primitive.get(value)
      : this.#keyed.get(valueKey(value));
  }

  /** Sets (or, with undefined, deletes) the list of `value`'s queries. */
  #set(value: Value, list: Q[] | undefined): void {
    if (typeof value === "boolean") {
      if (value) this.#true = list;
      else this.#false = list;
    } else if (isSmall(value)) {
      const small = this.#small;
      while (small.length <= value) small.push(undefined);
      small[value] = list;
      // Trailing empty slots go, so lookups past them stop at the length.
      while (small.length > 0 && small[small.length - 1] === undefined) {
        small.pop();
      }
    } else if (isPrimitive(value)) {
      if (list === undefined) this.#primitive.delete(value);
      else this.#primitive.set(value, list);
    } else if (list === undefined) this.#keyed.delete(valueKey(value));
    else this.#keyed.set(valueKey(value), list);
  }
}

/** Whether `value` is routed through the array: 0 to 1,023, not -0. */
function isSmall(value: Value): value is number {
  return typeof value === "number" && Number.isInteger(value) &&
    value >= 0 && value < SMALL_INTEGERS && !Object.is(value, -0);
}

/** Whether `value` is its own map key: strings, bigints, numbers but -0. */
function isPrimitive(value: Value): boolean {
  return typeof value === "string" || typeof value === "bigint" ||
    (typeof value === "number" && !Object.is(value, -0));
}
