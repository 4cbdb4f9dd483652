// This module is browser compatible.

/**
 * The one pass over a transaction's changes that finds, for every live
 * query, the touched objects that enter, stay in or leave its kept result.
 */

import type { CompiledQuery } from "../model/query.ts";
import type { Fields } from "../model/value.ts";
import type { Kind, Touched } from "./change_sets.ts";
import type { Entry } from "./live_results.ts";
import { type Route, RouteTable } from "./route_table.ts";

/**
 * What one transaction does to one object of a live query's kept result
 * (internal): it was held as `old`, it is now `fields`, or both. The
 * engine fills in the rest of the {@linkcode Touched} it becomes.
 */
export interface Scanned extends Touched {
  readonly id: string;
  /** Its entry in the kept result before the transaction, if any. */
  readonly old: Entry | undefined;
  /** Its fields when it belongs to the kept result now, else undefined. */
  fields: Fields | undefined;
  /**
   * Whether `fields` is known to be the object's state after the whole
   * transaction. A `put` change's fields are not when a later change in
   * the same transaction touched the object again (see
   * {@linkcode LiveScan.scan}).
   */
  final: boolean;
}

/** A live query as the scan sees it (internal). */
export interface Scannable {
  readonly type: string;
  readonly compiled: CompiledQuery;
  readonly route: Route;
  /**
   * Set when the kept result is cut: every match that sorts after it is
   * outside the kept result.
   */
  readonly bound: Entry | undefined;
  /** The kept result's entries by id. */
  readonly members: Map<string, Entry>;
  /** The records of the scan in progress (empty between scans). */
  scanned: Scanned[];
  /** The scan step that last considered this query (internal mark). */
  seen: number;
}

/** One change of a transaction, as the realm reports it. */
export interface ScanChange {
  readonly type: string;
  readonly id: string;
  readonly op?: string;
  readonly fields?: Fields;
  /** On a `put`: whether the object was not live before it. */
  readonly created?: boolean;
}

/** The live queries of one type, and which of them hold each object. */
class TypeQueries<Q extends Scannable> {
  /** Queries with no route: every touched object may concern them. */
  unrouted: Q[] = [];
  /** Routed queries, one table per routing field. */
  routes: RouteTable<Q>[] = [];
  /** Per object id, the queries whose kept result holds it. */
  holders = new Map<string, Q | Q[]>();
  count = 0;
  /**
   * The scan in progress's objects of this type that no kept result holds
   * (every object of a bootstrap), tested query by query once the pass is
   * over: each one's position in the changes, or `~position` when its
   * fields were read from the store (then in `freshRead` at the same
   * index). Numbers only, so filling it costs no write barrier.
   */
  freshAt: number[] = [];
  freshRead: (Fields | undefined)[] = [];
  /** How many of the `fresh*` entries belong to the scan in progress. */
  freshCount = 0;
}

/**
 * Past this many, the `fresh*` lists of a type are let go after a scan;
 * below, they keep their capacity (and, until overwritten, references to
 * that many objects of the last transaction).
 */
const KEEP_FRESH = 1_024;

/**
 * The live queries of one realm by type, routed by a top-level equality,
 * with the queries that hold each object (internal). {@linkcode scan} runs
 * once per transaction and allocates nothing for an object that enters no
 * kept result and leaves none.
 */
export class LiveScan<Q extends Scannable> {
  #types = new Map<string, TypeQueries<Q>>();
  /** Scan steps so far: marks which queries one object was tested on. */
  #step = 0;
  /** Objects tested against a filter, for {@linkcode QueryEngine.examined}. */
  examined = 0;

  /** Whether any live query is registered. */
  get size(): number {
    return this.#types.size;
  }

  /** Registers a live query (its kept result empty so far). */
  add(query: Q): void {
    let type = this.#types.get(query.type);
    if (type === undefined) {
      type = new TypeQueries();
      this.#types.set(query.type, type);
    }
    type.count++;
    const route = query.route;
    if (route === undefined) {
      type.unrouted.push(query);
      return;
    }
    let table = type.routes.find((table) => table.field === route.field);
    if (table === undefined) {
      table = new RouteTable(route.field);
      type.routes.push(table);
    }
    table.add(route.values, query);
  }

  /**
   * Unregisters a live query registered with {@linkcode add}, once its
   * kept result has been released.
   */
  remove(query: Q): void {
    const type = this.#types.get(query.type)!;
    const route = query.route;
    if (route === undefined) {
      type.unrouted.splice(type.unrouted.indexOf(query), 1);
    } else {
      const at = type.routes.findIndex((table) => table.field === route.field);
      const table = type.routes[at]!;
      table.remove(route.values, query);
      if (table.size === 0) type.routes.splice(at, 1);
    }
    if (--type.count === 0) this.#types.delete(query.type);
  }

  /** Records that a query's kept result now holds the object `id`. */
  hold(query: Q, id: string): void {
    const holders = this.#types.get(query.type)!.holders;
    const held = holders.get(id);
    if (held === undefined) holders.set(id, query);
    else if (Array.isArray(held)) held.push(query);
    else holders.set(id, [held, query]);
  }

  /** Records that a query's kept result no longer holds the object `id`. */
  release(query: Q, id: string): void {
    const holders = this.#types.get(query.type)!.holders;
    const held = holders.get(id);
    if (held === query) holders.delete(id);
    else if (Array.isArray(held)) {
      held.splice(held.indexOf(query), 1);
      if (held.length === 1) holders.set(id, held[0]!);
    }
  }

  /**
   * One pass over a transaction's changes (already applied to the store):
   * each touched object is tested once against each live query of its type
   * that it may concern (the unrouted ones, the routed ones whose value it
   * holds now, and those whose kept result holds it); what it does to a
   * query is appended to the query's `scanned`. Returns the queries with
   * records, each once.
   *
   * A change that says what the object is now (a `put` with its fields, a
   * `delete`) spares a read of the store; `read` is called for the others.
   * An object touched twice in one transaction yields a record per change
   * for a query it concerns: the last record is the one that counts, and a
   * record from a `put` that is not marked `final` must be checked against
   * the store (a later change may have made its fields stale).
   */
  scan(
    changes: readonly ScanChange[],
    read: (type: string, id: string) => Fields | undefined,
    distinct: boolean,
  ): Q[] {
    const dirty: Q[] = [];
    /** Types with objects for {@linkcode #enterFresh}. */
    const fresh: TypeQueries<Q>[] = [];
    this.#pass(changes, read, distinct, dirty, fresh);
    for (let t = 0; t < fresh.length; t++) {
      this.#enterFresh(fresh[t]!, changes, distinct, dirty);
    }
    return dirty;
  }

  /**
   * The pass of {@linkcode scan} over the changes: records for the objects
   * kept results hold, and each other object noted in its type's `fresh*`
   * lists. (Only the loop: V8 compiles a long loop while it runs, and code
   * after it, run for the first time from that compiled code, would lack
   * type feedback and leave it on every call.)
   */
  #pass(
    changes: readonly ScanChange[],
    read: (type: string, id: string) => Fields | undefined,
    distinct: boolean,
    dirty: Q[],
    fresh: TypeQueries<Q>[],
  ): void {
    let typeName: string | undefined;
    let type: TypeQueries<Q> | undefined;
    for (let c = 0; c < changes.length; c++) {
      const change = changes[c]!;
      if (change.type !== typeName) {
        typeName = change.type;
        type = this.#types.get(typeName);
      }
      if (type === undefined) continue;
      const id = change.id;
      const op = change.op;
      let fields: Fields | undefined;
      let final = distinct;
      if (op === "put" && change.fields !== undefined) fields = change.fields;
      else if (op !== "delete") {
        fields = read(typeName, id);
        final = true;
      }
      // Created by the only change to it in the transaction (every object
      // of a bootstrap): in no kept result, no lookup.
      const held = distinct && change.created === true
        ? undefined
        : type.holders.get(id);
      if (held === undefined) {
        // In no kept result (every new object): a record only if it
        // enters one, found query by query after this pass.
        if (fields === undefined) continue;
        const n = type.freshCount++;
        if (n === 0) fresh.push(type);
        if (fields === change.fields) type.freshAt[n] = c;
        else {
          type.freshAt[n] = ~c;
          type.freshRead[n] = fields;
        }
        continue;
      }
      this.#scanHeld(type, held, id, fields, final, dirty);
    }
  }

  /**
   * An object some kept results hold: a record for each holder whatever
   * happens (it stays, moves or leaves), with a mark so that no query is
   * tested twice, then the queries it may enter.
   */
  #scanHeld(
    type: TypeQueries<Q>,
    held: Q | Q[],
    id: string,
    fields: Fields | undefined,
    final: boolean,
    dirty: Q[],
  ): void {
    const step = ++this.#step;
    let examined = 0;
    if (Array.isArray(held)) {
      for (let h = 0; h < held.length; h++) {
        const query = held[h]!;
        query.seen = step;
        examined++;
        const enters = fields !== undefined && enter(query, id, fields);
        const old = query.members.get(id);
        record(query, id, old, enters ? fields : undefined, true, dirty);
      }
    } else {
      held.seen = step;
      examined++;
      const enters = fields !== undefined && enter(held, id, fields);
      const old = held.members.get(id);
      record(held, id, old, enters ? fields : undefined, true, dirty);
    }
    if (fields !== undefined) {
      examined += this.#enterNew(type, id, fields, final, step, dirty);
    }
    this.examined += examined;
  }

  /**
   * Tests the objects no kept result held (a type's `fresh*` lists, then
   * emptied) against the queries that may take them, query by query: each
   * unrouted query over all of them, then per routing field the queries
   * for the value each holds. An object in no kept result yet cannot be
   * recorded twice for one query.
   */
  #enterFresh(
    type: TypeQueries<Q>,
    changes: readonly ScanChange[],
    distinct: boolean,
    dirty: Q[],
  ): void {
    const at = type.freshAt;
    const count = type.freshCount;
    const read = type.freshRead;
    let examined = 0;
    const unrouted = type.unrouted;
    for (let u = 0; u < unrouted.length; u++) {
      examined += count;
      enterEach(unrouted[u]!, count, at, read, changes, distinct, dirty);
    }
    const routes = type.routes;
    for (let r = 0; r < routes.length; r++) {
      examined += routeEach(
        routes[r]!,
        count,
        at,
        read,
        changes,
        distinct,
        dirty,
      );
    }
    type.freshCount = 0;
    if (read.length > 0) type.freshRead = [];
    if (count > KEEP_FRESH) type.freshAt = [];
    this.examined += examined;
  }

  /**
   * Tests an object against the queries of its type that may now take it
   * (the unrouted ones and those routed to a value it holds), skipping
   * those marked with `step` (its holders, already recorded), and records
   * each it enters. Returns how many queries were tested.
   */
  #enterNew(
    type: TypeQueries<Q>,
    id: string,
    fields: Fields,
    final: boolean,
    step: number,
    dirty: Q[],
  ): number {
    let examined = 0;
    const unrouted = type.unrouted;
    for (let u = 0; u < unrouted.length; u++) {
      const query = unrouted[u]!;
      if (query.seen === step) continue;
      examined++;
      if (enter(query, id, fields)) {
        record(query, id, undefined, fields, final, dirty);
      }
    }
    const routes = type.routes;
    for (let r = 0; r < routes.length; r++) {
      const queries = routes[r]!.lookup(fields);
      if (queries === undefined) continue;
      for (let q = 0; q < queries.length; q++) {
        const query = queries[q]!;
        if (query.seen === step) continue;
        examined++;
        if (enter(query, id, fields)) {
          record(query, id, undefined, fields, final, dirty);
        }
      }
    }
    return examined;
  }
}

/**
 * A query's records from the last {@linkcode LiveScan.scan}, settled and
 * taken (its `scanned` emptied): one per object (its last), each with the
 * object's state after the whole transaction. `distinct` says no object
 * appeared twice in the transaction (every record is then settled).
 */
export function settle<Q extends Scannable>(
  query: Q,
  distinct: boolean,
  store: {
    get(type: string, id: string): Fields | undefined;
    current?(type: string, id: string, fields: Fields): boolean;
  },
): Scanned[] {
  let records = query.scanned;
  query.scanned = [];
  if (distinct) return records;
  if (records.length > 1) {
    // An object changed twice in one transaction: its last record counts.
    const last = new Map<string, number>();
    for (let i = 0; i < records.length; i++) last.set(records[i]!.id, i);
    if (last.size < records.length) {
      records = records.filter((record, i) => last.get(record.id) === i);
    }
  }
  let stale = false;
  for (const record of records) {
    if (record.final || record.fields === undefined) continue;
    // A put's fields, and a later change may have replaced them.
    if (store.current?.(query.type, record.id, record.fields)) continue;
    const fields = store.get(query.type, record.id);
    record.fields = fields !== undefined && enter(query, record.id, fields)
      ? fields
      : undefined;
    if (record.fields === undefined && record.old === undefined) stale = true;
  }
  return stale
    ? records.filter((r) => r.fields !== undefined || r.old !== undefined)
    : records;
}

/** Appends a record to a query's (and the query to `dirty` on its first). */
function record<Q extends Scannable>(
  query: Q,
  id: string,
  old: Entry | undefined,
  fields: Fields | undefined,
  final: boolean,
  dirty: Q[],
): void {
  const scanned = query.scanned;
  if (scanned.length === 0) dirty.push(query);
  scanned.push({
    id,
    old,
    fields,
    final,
    kind: ENTER,
    fresh: undefined,
    oldIndex: -1,
    newIndex: -1,
  });
}

const ENTER: Kind = "enter";

/**
 * Records each of a type's fresh objects (see `TypeQueries.freshAt`) that
 * enters a query's kept result. A cut result with a number or string as
 * its bound's first sort key compares that key inline first, as
 * {@linkcode enter} does, with the loop's invariants read once.
 */
function enterEach<Q extends Scannable>(
  query: Q,
  count: number,
  at: readonly number[],
  read: readonly (Fields | undefined)[],
  changes: readonly ScanChange[],
  distinct: boolean,
  dirty: Q[],
): void {
  const compiled = query.compiled;
  const bound = query.bound;
  const field = compiled.leadField;
  const limit = bound?.keys[0];
  const inline = field !== undefined &&
    (typeof limit === "number" || typeof limit === "string");
  const matches = compiled.matches;
  const ascending = compiled.leadSign > 0;
  for (let i = 0; i < count; i++) {
    const c = at[i]!;
    const change = changes[c < 0 ? ~c : c]!;
    const fields = c < 0 ? read[i]! : change.fields!;
    if (inline) {
      // Objects strictly past the bound's first key are rejected without
      // the filter (a tie, NaN, -0 or another kind takes the full test).
      const value = fields[field];
      if (typeof value === typeof limit) {
        if (ascending ? value! > limit! : value! < limit!) continue;
      }
      if (!matches(fields)) continue;
      if (compiled.compareToKeyed(change.id, fields, bound!) > 0) continue;
    } else if (!enter(query, change.id, fields)) continue;
    record(query, change.id, undefined, fields, distinct || c < 0, dirty);
  }
}

/**
 * Tests each of a type's fresh objects (see `TypeQueries.freshAt`) against
 * the queries one routing table has for the value it holds, and records
 * each it enters. Returns how many tests were made.
 */
function routeEach<Q extends Scannable>(
  table: RouteTable<Q>,
  count: number,
  at: readonly number[],
  read: readonly (Fields | undefined)[],
  changes: readonly ScanChange[],
  distinct: boolean,
  dirty: Q[],
): number {
  let examined = 0;
  for (let i = 0; i < count; i++) {
    const c = at[i]!;
    const change = changes[c < 0 ? ~c : c]!;
    const fields = c < 0 ? read[i]! : change.fields!;
    const queries = table.lookup(fields);
    if (queries === undefined) continue;
    examined += queries.length;
    for (let q = 0; q < queries.length; q++) {
      const query = queries[q]!;
      if (enter(query, change.id, fields)) {
        record(query, change.id, undefined, fields, distinct || c < 0, dirty);
      }
    }
  }
  return examined;
}

/** Whether an object with these fields belongs to the kept result. */
export function enter(query: Scannable, id: string, fields: Fields): boolean {
  const compiled = query.compiled;
  const bound = query.bound;
  if (bound !== undefined) {
    // Most objects of a big batch sort past a cut result's bound: one
    // comparison of the first sort key, inline, tells it for numbers and
    // strings strictly past (a tie, NaN or -0 takes the full comparison;
    // a field that is not a number or string here never reads as one).
    const field = compiled.leadField;
    if (field !== undefined) {
      const value = fields[field];
      const limit = bound.keys[0];
      if (
        (typeof value === "number" && typeof limit === "number") ||
        (typeof value === "string" && typeof limit === "string")
      ) {
        if (compiled.leadSign > 0 ? value > limit : value < limit) {
          return false;
        }
      }
    }
  }
  if (!compiled.matches(fields)) return false;
  return bound === undefined || compiled.compareToKeyed(id, fields, bound) <= 0;
}
