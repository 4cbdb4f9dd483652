// This module is browser compatible.

/**
 * The routing of live queries by a top-level equality they require, which
 * tells which live queries a commit may concern without evaluating them all.
 */

import type { CompiledQuery } from "../model/query.ts";
import type { Fields } from "../model/value.ts";
import { mapKey } from "../model/value_order.ts";

// Much faster than `Object.hasOwn` in V8 (see src/model/query.ts).
const hasOwnProperty = Object.prototype.hasOwnProperty;

/**
 * A top-level equality a query requires (`field` equal to the value whose
 * `mapKey` is `key`), or undefined.
 */
export type Route = { field: string; key: unknown } | undefined;

/** A live query as routing sees it (internal). */
export interface Routed {
  /** The type the query reads. */
  readonly type: string;
  /** Its top-level equality, or undefined (a commit may concern it). */
  readonly route: Route;
}

/** The route of a compiled query: its first top-level equality. */
export function routeOf(compiled: CompiledQuery): Route {
  const equality = compiled.indexable.find((condition) =>
    condition.op === "eq"
  );
  return equality?.op === "eq"
    ? { field: equality.field, key: mapKey(equality.value) }
    : undefined;
}

/**
 * The live queries of one realm by route, and per routed query the objects
 * its result holds (internal).
 */
export class QueryRoutes<Q extends Routed> {
  /** Routed live queries per type: field → value key → queries. */
  #routes = new Map<string, Map<string, Map<unknown, Set<Q>>>>();
  /** Unrouted live queries per type. */
  #unrouted = new Map<string, Set<Q>>();
  /**
   * Per type, the routed live queries whose result holds each object: with
   * the routing value an object holds now, what tells which routed queries
   * a commit may concern (no copy of the objects' past state).
   */
  #holders = new Map<string, Map<string, Set<Q>>>();

  /** The unrouted live queries of a type (a commit may concern each). */
  unrouted(type: string): Set<Q> | undefined {
    return this.#unrouted.get(type);
  }

  /** Registers a live query by its route. */
  add(query: Q): void {
    const { type, route } = query;
    if (route === undefined) {
      let set = this.#unrouted.get(type);
      if (set === undefined) {
        set = new Set();
        this.#unrouted.set(type, set);
      }
      set.add(query);
      return;
    }
    let byField = this.#routes.get(type);
    if (byField === undefined) {
      byField = new Map();
      this.#routes.set(type, byField);
    }
    let byKey = byField.get(route.field);
    if (byKey === undefined) {
      byKey = new Map();
      byField.set(route.field, byKey);
    }
    let set = byKey.get(route.key);
    if (set === undefined) {
      set = new Set();
      byKey.set(route.key, set);
    }
    set.add(query);
  }

  /** Unregisters a live query registered with {@linkcode add}. */
  remove(query: Q): void {
    const { type, route } = query;
    if (route === undefined) {
      const set = this.#unrouted.get(type);
      set?.delete(query);
      if (set?.size === 0) this.#unrouted.delete(type);
      return;
    }
    const byField = this.#routes.get(type)!;
    const byKey = byField.get(route.field)!;
    const set = byKey.get(route.key)!;
    set.delete(query);
    if (set.size === 0) byKey.delete(route.key);
    if (byKey.size === 0) byField.delete(route.field);
    if (byField.size === 0) this.#routes.delete(type);
  }

  /**
   * Records that a routed live query's result now holds (`held`) or no
   * longer holds the object `id`.
   */
  hold(query: Q, id: string, held: boolean): void {
    if (query.route === undefined) return;
    let byId = this.#holders.get(query.type);
    if (byId === undefined) {
      if (!held) return;
      byId = new Map();
      this.#holders.set(query.type, byId);
    }
    let queries = byId.get(id);
    if (held) {
      if (queries === undefined) {
        queries = new Set();
        byId.set(id, queries);
      }
      queries.add(query);
      return;
    }
    if (queries === undefined) return;
    queries.delete(query);
    if (queries.size === 0) {
      byId.delete(id);
      if (byId.size === 0) this.#holders.delete(query.type);
    }
  }

  /**
   * The routed live queries of `type` a commit may concern, each with the
   * ascending positions in `ids` of the objects that concern it: those
   * whose routing value a touched object holds now, and those whose result
   * holds it. Undefined when no routed query follows the type.
   */
  concerned(
    type: string,
    ids: readonly string[],
    now: readonly (Fields | undefined)[],
  ): Map<Q, number[]> | undefined {
    const routes = this.#routes.get(type);
    if (routes === undefined) return undefined;
    const holders = this.#holders.get(type);
    const concerned = new Map<Q, number[]>();
    const add = (queries: Set<Q> | undefined, index: number) => {
      if (queries === undefined) return;
      for (const query of queries) {
        const list = concerned.get(query);
        if (list === undefined) concerned.set(query, [index]);
        else if (list[list.length - 1] !== index) list.push(index);
      }
    };
    const byField = [...routes];
    for (let i = 0; i < ids.length; i++) {
      // The queries it may enter (by the value it holds now), and those
      // whose result holds it (it may leave them).
      const fields = now[i];
      if (fields !== undefined) {
        for (let f = 0; f < byField.length; f++) {
          const [field, byKey] = byField[f]!;
          add(byKey.get(routeKey(fields, field)), i);
        }
      }
      if (holders !== undefined) add(holders.get(ids[i]!), i);
    }
    return concerned;
  }
}

/** The routing key of an object's field (a missing field equals null). */
function routeKey(fields: Fields, field: string): unknown {
  return mapKey(
    hasOwnProperty.call(fields, field) ? fields[field]! : null,
  );
}
