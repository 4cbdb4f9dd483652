// This module is browser compatible.

/**
 * The query side of one open realm: field indexes, query execution, and the
 * live queries and object watchers that a commit patches in time
 * proportional to the objects it touched.
 */

import { FieldIndex } from "../model/field_index.ts";
import type { CompiledQuery, IndexableCondition } from "../model/query.ts";
import {
  cloneValue,
  defineField,
  type Fields,
  type Value,
  valuesEqual,
} from "../model/value.ts";
import { BlockList } from "./entry_list.ts";
import type { RealmObject } from "./realm.ts";
import { valueKey } from "../model/value_order.ts";

/**
 * Index changes of one live-query update, Realm-style: `deletions` are
 * indexes into the previous result, `insertions` and `modifications` into
 * the new one, each ascending. Apply deletions (from the highest), then
 * insertions (from the lowest), then replace the modified items, and a copy
 * of the previous list equals the new one. An object that moved is a
 * deletion plus an insertion.
 *
 * @example Patching a rendered list
 * ```ts
 * import type { CollectionChanges } from "@tether/sync";
 *
 * function patch<T>(rows: T[], next: T[], changes: CollectionChanges): void {
 *   for (const index of [...changes.deletions].reverse()) rows.splice(index, 1);
 *   for (const index of changes.insertions) rows.splice(index, 0, next[index]!);
 *   for (const index of changes.modifications) rows[index] = next[index]!;
 * }
 * const rows = ["a", "b", "c"];
 * patch(rows, ["a", "c", "d"], { deletions: [1], insertions: [2], modifications: [] });
 * console.log(rows); // ["a", "c", "d"]
 * ```
 */
export interface CollectionChanges {
  /** Indexes in the new result of objects that entered it (or moved). */
  insertions: number[];
  /** Indexes in the previous result of objects that left it (or moved). */
  deletions: number[];
  /** Indexes in the new result of objects that stayed put but changed. */
  modifications: number[];
}

/**
 * One item of {@linkcode Realm.watch}: the whole current result and how it
 * differs from the previous item's. The first item has every index in
 * `changes.insertions`.
 *
 * `objects` and their `fields` are frozen and shared between items (an
 * unchanged object is the same object in the next item): copy before
 * mutating.
 *
 * @example Logging a live list
 * ```ts
 * import type { LiveQueryUpdate } from "@tether/sync";
 *
 * type Task = { title: string; done: boolean };
 * function render({ objects, changes }: LiveQueryUpdate<Task>): void {
 *   console.log(objects.map((task) => task.fields.title), changes);
 * }
 * render({
 *   objects: [{ id: "t1", fields: { title: "Buy milk", done: false } }],
 *   changes: { insertions: [0], deletions: [], modifications: [] },
 * });
 * ```
 */
export interface LiveQueryUpdate<T = Fields> {
  /** The result after the transaction, in query order. */
  objects: RealmObject<T>[];
  /** What changed since the previous item. */
  changes: CollectionChanges;
}

/**
 * One item of {@linkcode Realm.watchObject}. The first item is the current
 * state (`changedFields` names every field it has; `fields` is undefined if
 * the object does not exist); then one item per transaction that changed
 * the object, naming the fields whose value changed, appeared or vanished.
 *
 * @example Reacting to a deletion
 * ```ts
 * import type { ObjectUpdate } from "@tether/sync";
 *
 * function onUpdate(update: ObjectUpdate<{ title: string }>): void {
 *   if (update.fields === undefined) console.log(`${update.id} was deleted`);
 *   else console.log(`${update.id}: ${update.changedFields.join(", ")} changed`);
 * }
 * onUpdate({ id: "t1", fields: undefined, changedFields: ["title"] });
 * ```
 */
export interface ObjectUpdate<T = Fields> {
  /** The object's id. */
  id: string;
  /** A copy of its fields, or undefined while it does not exist. */
  fields: T | undefined;
  /** Names of the fields that changed (sorted). */
  changedFields: string[];
}

/** What the engine reads from the object store (internal). */
export interface StoreReader {
  /** The visible fields of a live object (a new object; values shared). */
  get(type: string, id: string): Fields | undefined;
  /** Live objects of one type. */
  objects(type: string): Iterable<{ id: string; fields: Fields }>;
}

/** One object in a live query's result. Replaced, never mutated. */
interface Entry {
  readonly id: string;
  readonly fields: Fields;
  /** The sort fields' values, extracted once. */
  readonly keys: readonly (Value | undefined)[];
  /** The frozen copy handed to readers, made on first read. */
  object?: RealmObject;
}

/** A live query's result at one commit, materialized when read. */
export interface LiveSnapshot {
  /** The result's blocks at that commit (never changed afterwards). */
  readonly blocks: readonly (readonly Entry[])[];
  readonly start: number;
  readonly end: number;
  readonly changes: CollectionChanges;
}

/** A registered live query (internal). */
export interface LiveQuery {
  readonly type: string;
  readonly compiled: CompiledQuery;
  /** Every matching object, in query order (the window is cut on read). */
  sorted: BlockList<Entry>;
  /**
   * A top-level equality the query requires (`field` equal to the value
   * whose key is `key`): only objects holding that value before or after a
   * commit can concern the query.
   */
  readonly route: { field: string; key: string } | undefined;
  members: Map<string, Entry>;
  deliver(snapshot: LiveSnapshot): void;
}

interface ObjectWatcher {
  readonly type: string;
  readonly id: string;
  last: Fields | undefined;
  deliver(update: ObjectUpdate): void;
}

function deepFreeze<T>(value: T): T {
  if (
    value !== null && typeof value === "object" &&
    !(value instanceof Date) && !(value instanceof Uint8Array)
  ) {
    for (const key of Object.keys(value)) {
      deepFreeze((value as Record<string, unknown>)[key]);
    }
    Object.freeze(value);
  }
  return value;
}

/** A deep copy of fields (internal). */
export function copyFields(fields: Fields): Fields {
  const copy: Fields = {};
  for (const name of Object.keys(fields)) {
    defineField(copy, name, cloneValue(fields[name]!));
  }
  return copy;
}

/** Turns a snapshot into the item a reader sees. */
export function materialize<T>(snapshot: LiveSnapshot): LiveQueryUpdate<T> {
  const objects: RealmObject[] = [];
  let skip = snapshot.start;
  let take = snapshot.end - snapshot.start;
  for (const block of snapshot.blocks) {
    if (take === 0) break;
    if (skip >= block.length) {
      skip -= block.length;
      continue;
    }
    for (let index = skip; index < block.length && take > 0; index++, take--) {
      const entry = block[index]!;
      entry.object ??= deepFreeze({
        id: entry.id,
        fields: copyFields(entry.fields),
      });
      objects.push(entry.object);
    }
    skip = 0;
  }
  return {
    objects: objects as RealmObject<unknown>[] as RealmObject<T>[],
    changes: snapshot.changes,
  };
}

/** How many of the ascending `indexes` are below `index`. */
function countBelow(indexes: readonly number[], index: number): number {
  let low = 0;
  let high = indexes.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (indexes[middle]! < index) low = middle + 1;
    else high = middle;
  }
  return low;
}

/**
 * The index of the survivor of rank `rank`, given the ascending indexes of
 * the non-survivors.
 */
function indexOfRank(rank: number, others: readonly number[]): number {
  let index = rank;
  for (const other of others) {
    if (other <= index) index++;
    else break;
  }
  return index;
}

const ascending = (a: number, b: number) => a - b;

type Kind = "stay" | "move" | "leave" | "enter";

interface Touched {
  kind: Kind;
  old: Entry | undefined;
  fresh: Entry | undefined;
  oldIndex: number;
  newIndex: number;
}

/**
 * Indexes, query execution and live queries over one realm's objects.
 * {@linkcode applied} is the commit hook: it costs nothing while no index
 * or watcher exists.
 */
export class QueryEngine {
  /**
   * Objects examined by queries and live-query maintenance (evaluated
   * against a filter): what a test checks to see that an index was used.
   */
  examined = 0;
  #read: StoreReader;
  #indexes = new Map<string, Map<string, FieldIndex>>();
  #queries = new Map<string, Set<LiveQuery>>();
  #objectWatchers = new Map<string, Map<string, Set<ObjectWatcher>>>();
  #active = 0;
  /** Routed live queries per type: field → value key → queries. */
  #routes = new Map<string, Map<string, Map<string, Set<LiveQuery>>>>();
  /** Unrouted live queries per type. */
  #unrouted = new Map<string, Set<LiveQuery>>();
  /** Fields before the commit in progress, for routed types only. */
  #before = new Map<string, Map<string, Fields | undefined>>();

  /** @param read Access to the store. */
  constructor(read: StoreReader) {
    this.#read = read;
  }

  /** Number of registered live queries and object watchers. */
  get watchers(): number {
    let count = 0;
    for (const set of this.#queries.values()) count += set.size;
    for (const byId of this.#objectWatchers.values()) {
      for (const set of byId.values()) count += set.size;
    }
    return count;
  }

  /** The indexed fields of a type. */
  indexedFields(type: string): string[] {
    return [...(this.#indexes.get(type)?.keys() ?? [])];
  }

  /**
   * Adds indexes (fields already indexed are kept), filling each from the
   * objects present.
   */
  ensureIndexes(spec: { readonly [type: string]: readonly string[] }): void {
    for (const type of Object.keys(spec)) {
      let byField = this.#indexes.get(type);
      for (const field of spec[type]!) {
        if (byField?.has(field)) continue;
        if (byField === undefined) {
          byField = new Map();
          this.#indexes.set(type, byField);
        }
        const index = new FieldIndex(field);
        for (const { id, fields } of this.#read.objects(type)) {
          index.set(id, fields);
        }
        byField.set(field, index);
        this.#active++;
      }
    }
  }

  /** Every object of `type` matching the query, sorted, not windowed. */
  #select(type: string, compiled: CompiledQuery): Entry[] {
    const result: Entry[] = [];
    const candidates = this.#candidates(type, compiled.indexable);
    if (candidates === undefined) {
      for (const { id, fields } of this.#read.objects(type)) {
        this.examined++;
        if (compiled.matches(fields)) {
          result.push({ id, fields, keys: compiled.keysOf(fields) });
        }
      }
    } else {
      for (const id of candidates) {
        const fields = this.#read.get(type, id);
        if (fields === undefined) continue;
        this.examined++;
        if (compiled.matches(fields)) {
          result.push({ id, fields, keys: compiled.keysOf(fields) });
        }
      }
    }
    result.sort(compiled.compareKeyed);
    return result;
  }

  /**
   * Ids that may match, from the most selective usable index, or undefined
   * when no index applies (scan the type).
   */
  #candidates(
    type: string,
    conditions: readonly IndexableCondition[],
  ): Iterable<string> | undefined {
    const byField = this.#indexes.get(type);
    if (byField === undefined || conditions.length === 0) return undefined;
    let best: { cost: number; ids: () => Iterable<string> } | undefined;
    for (const condition of conditions) {
      const index = byField.get(condition.field);
      if (index === undefined) continue;
      let option: { cost: number; ids: () => Iterable<string> };
      if (condition.op === "eq") {
        option = {
          cost: index.equalCount(condition.value),
          ids: () => index.equal(condition.value),
        };
      } else if (condition.op === "in") {
        let cost = 0;
        for (const value of condition.values) cost += index.equalCount(value);
        option = {
          cost,
          ids: () => {
            const ids = new Set<string>();
            for (const value of condition.values) {
              for (const id of index.equal(value)) ids.add(id);
            }
            return ids;
          },
        };
      } else {
        // Unknown size: preferred only over no index at all.
        option = {
          cost: index.size,
          ids: () => index.range(condition.lower, condition.upper),
        };
      }
      if (best === undefined || option.cost < best.cost) best = option;
    }
    return best?.ids();
  }

  /** The query's result rows (uncopied fields). */
  query(type: string, compiled: CompiledQuery): Entry[] {
    const all = this.#select(type, compiled);
    if (compiled.offset === 0 && compiled.limit >= all.length) return all;
    return all.slice(compiled.offset, compiled.offset + compiled.limit);
  }

  /** How many objects of `type` match the compiled `where`. */
  count(type: string, compiled: CompiledQuery): number {
    const candidates = this.#candidates(type, compiled.indexable);
    let count = 0;
    if (candidates === undefined) {
      for (const { fields } of this.#read.objects(type)) {
        this.examined++;
        if (compiled.matches(fields)) count++;
      }
    } else {
      for (const id of candidates) {
        const fields = this.#read.get(type, id);
        if (fields === undefined) continue;
        this.examined++;
        if (compiled.matches(fields)) count++;
      }
    }
    return count;
  }

  /**
   * Registers a live query and returns its first snapshot (the current
   * result, every index inserted) and the function that unregisters it.
   */
  watch(
    type: string,
    compiled: CompiledQuery,
    deliver: (snapshot: LiveSnapshot) => void,
  ): { first: LiveSnapshot; remove: () => void } {
    const selected = this.#select(type, compiled);
    const members = new Map<string, Entry>();
    for (const entry of selected) members.set(entry.id, entry);
    const sorted = BlockList.from(selected);
    const equality = compiled.indexable.find((condition) =>
      condition.op === "eq"
    );
    const route = equality?.op === "eq"
      ? { field: equality.field, key: valueKey(equality.value) }
      : undefined;
    const query: LiveQuery = {
      type,
      compiled,
      sorted,
      members,
      route,
      deliver,
    };
    this.#addRoute(query);
    let set = this.#queries.get(type);
    if (set === undefined) {
      set = new Set();
      this.#queries.set(type, set);
    }
    set.add(query);
    this.#active++;
    const start = Math.min(compiled.offset, sorted.length);
    const end = Math.min(compiled.offset + compiled.limit, sorted.length);
    const insertions: number[] = [];
    for (let index = 0; index < end - start; index++) insertions.push(index);
    let removed = false;
    return {
      first: {
        blocks: sorted.snapshot(),
        start,
        end,
        changes: { insertions, deletions: [], modifications: [] },
      },
      remove: () => {
        if (removed) return;
        removed = true;
        const queries = this.#queries.get(type);
        if (queries?.delete(query)) {
          this.#active--;
          this.#removeRoute(query);
          if (queries.size === 0) this.#queries.delete(type);
        }
      },
    };
  }

  /**
   * Registers an object watcher and returns its first item (the current
   * state) and the function that unregisters it.
   */
  watchObject(
    type: string,
    id: string,
    deliver: (update: ObjectUpdate) => void,
  ): { first: ObjectUpdate; remove: () => void } {
    const fields = this.#read.get(type, id);
    const watcher: ObjectWatcher = { type, id, last: fields, deliver };
    let byId = this.#objectWatchers.get(type);
    if (byId === undefined) {
      byId = new Map();
      this.#objectWatchers.set(type, byId);
    }
    let set = byId.get(id);
    if (set === undefined) {
      set = new Set();
      byId.set(id, set);
    }
    set.add(watcher);
    this.#active++;
    let removed = false;
    return {
      first: {
        id,
        fields: fields === undefined ? undefined : copyFields(fields),
        changedFields: fields === undefined ? [] : Object.keys(fields).sort(),
      },
      remove: () => {
        if (removed) return;
        removed = true;
        const watchers = this.#objectWatchers.get(type);
        const forId = watchers?.get(id);
        if (forId?.delete(watcher)) {
          this.#active--;
          if (forId.size === 0) watchers!.delete(id);
          if (watchers!.size === 0) this.#objectWatchers.delete(type);
        }
      },
    };
  }

  #addRoute(query: LiveQuery): void {
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

  #removeRoute(query: LiveQuery): void {
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
   * The hook before a commit applies `instructions`: remembers the current
   * fields of the objects they touch, for types with routed live queries
   * (a routed query is told about an object only if it held the routing
   * value before or after). Costs nothing for other types.
   */
  beforeApply(instructions: readonly { type: string; id: string }[]): void {
    if (this.#routes.size === 0) return;
    for (const { type, id } of instructions) {
      if (!this.#routes.has(type)) continue;
      let before = this.#before.get(type);
      if (before === undefined) {
        before = new Map();
        this.#before.set(type, before);
      }
      if (!before.has(id)) before.set(id, this.#read.get(type, id));
    }
  }

  /**
   * The commit hook: `changes` are the objects a transaction (a local write
   * or one integrated DOWNLOAD) changed visibly, already applied to the
   * store. Updates indexes, patches live queries and tells object watchers.
   */
  applied(changes: readonly { type: string; id: string }[]): void {
    const before = this.#before;
    if (before.size > 0) this.#before = new Map();
    if (this.#active === 0 || changes.length === 0) return;
    const byType = new Map<string, Set<string>>();
    for (const { type, id } of changes) {
      let ids = byType.get(type);
      if (ids === undefined) {
        if (
          !this.#indexes.has(type) && !this.#queries.has(type) &&
          !this.#objectWatchers.has(type)
        ) {
          continue;
        }
        ids = new Set();
        byType.set(type, ids);
      }
      ids.add(id);
    }
    for (const [type, idSet] of byType) {
      const ids = [...idSet];
      const now = ids.map((id) => this.#read.get(type, id));
      const indexes = this.#indexes.get(type);
      if (indexes !== undefined) {
        for (const index of indexes.values()) {
          for (let i = 0; i < ids.length; i++) index.set(ids[i]!, now[i]);
        }
      }
      const unrouted = this.#unrouted.get(type);
      if (unrouted !== undefined) {
        for (const query of [...unrouted]) this.#patch(query, ids, now);
      }
      const routes = this.#routes.get(type);
      if (routes !== undefined) {
        this.#patchRouted(routes, ids, now, before.get(type));
      }
      const watchers = this.#objectWatchers.get(type);
      if (watchers !== undefined) {
        for (let i = 0; i < ids.length; i++) {
          const forId = watchers.get(ids[i]!);
          if (forId === undefined) continue;
          for (const watcher of [...forId]) notify(watcher, now[i]);
        }
      }
    }
  }

  /**
   * Patches the routed live queries a commit may concern: those whose
   * routing value a touched object held before or holds now.
   */
  #patchRouted(
    routes: Map<string, Map<string, Set<LiveQuery>>>,
    ids: readonly string[],
    now: readonly (Fields | undefined)[],
    before: Map<string, Fields | undefined> | undefined,
  ): void {
    const concerned = new Map<LiveQuery, number[]>();
    const add = (queries: Set<LiveQuery> | undefined, index: number) => {
      if (queries === undefined) return;
      for (const query of queries) {
        const list = concerned.get(query);
        if (list === undefined) concerned.set(query, [index]);
        else if (list[list.length - 1] !== index) list.push(index);
      }
    };
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const known = before !== undefined && before.has(id);
      for (const [field, byKey] of routes) {
        if (!known) {
          // No record of the object's past: every routed query may hold it.
          for (const queries of byKey.values()) add(queries, i);
          continue;
        }
        const old = routeKey(before.get(id), field);
        const fresh = routeKey(now[i], field);
        if (old !== undefined) add(byKey.get(old), i);
        if (fresh !== undefined && fresh !== old) add(byKey.get(fresh), i);
      }
    }
    for (const [query, indexes] of concerned) {
      this.#patch(
        query,
        indexes.map((i) => ids[i]!),
        indexes.map((i) => now[i]),
      );
    }
  }

  #patch(
    query: LiveQuery,
    ids: readonly string[],
    now: readonly (Fields | undefined)[],
  ): void {
    const { compiled } = query;
    const touched: Touched[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const fields = now[i];
      const old = query.members.get(id);
      let fresh: Entry | undefined;
      if (fields !== undefined) {
        this.examined++;
        if (compiled.matches(fields)) {
          fresh = { id, fields, keys: compiled.keysOf(fields) };
        }
      }
      if (old === undefined && fresh === undefined) continue;
      const kind: Kind = old === undefined
        ? "enter"
        : fresh === undefined
        ? "leave"
        : compiled.sorted &&
            compiled.compareKeys(old.keys, fresh.keys) !== 0
        ? "move"
        : "stay";
      touched.push({ kind, old, fresh, oldIndex: -1, newIndex: -1 });
    }
    // Nothing in or entering the result: wake nobody.
    if (touched.length === 0) return;
    const compare = compiled.compareKeyed;
    const oldLength = query.sorted.length;
    for (const item of touched) {
      if (item.old !== undefined) {
        item.oldIndex = query.sorted.lowerBound(item.old, compare);
      }
    }
    const sorted = query.sorted;
    const removals: number[] = [];
    const additions: Entry[] = [];
    for (const item of touched) {
      if (item.kind === "stay") {
        sorted.replaceAt(item.oldIndex, item.fresh!);
        query.members.set(item.fresh!.id, item.fresh!);
        continue;
      }
      if (item.old !== undefined) removals.push(item.oldIndex);
      if (item.fresh !== undefined) {
        additions.push(item.fresh);
        query.members.set(item.fresh.id, item.fresh);
      } else {
        query.members.delete(item.old!.id);
      }
    }
    // Blocks keep each step O(log n + block size), so a bootstrap batch of
    // k objects costs k steps, not a pass over the whole result.
    removals.sort(ascending);
    for (let i = removals.length - 1; i >= 0; i--) {
      sorted.removeAt(removals[i]!);
    }
    for (const entry of additions) sorted.insert(entry, compare);
    const result = query.sorted;
    // Positions past the window's end matter only as "past the end" (the
    // change set is about the window): one comparison with the window's
    // last object instead of a search, which keeps big batches cheap.
    const windowEnd = Math.min(compiled.offset + compiled.limit, result.length);
    const last = windowEnd > 0 && windowEnd < result.length
      ? result.at(windowEnd - 1)
      : undefined;
    for (const item of touched) {
      if (item.fresh === undefined) continue;
      item.newIndex = last !== undefined && compare(item.fresh, last) > 0
        ? Infinity
        : result.lowerBound(item.fresh, compare);
    }
    const changes = diffWindow(touched, oldLength, result.length, compiled);
    if (
      changes.insertions.length === 0 && changes.deletions.length === 0 &&
      changes.modifications.length === 0
    ) {
      return;
    }
    query.deliver({
      blocks: result.snapshot(),
      start: Math.min(compiled.offset, result.length),
      end: Math.min(compiled.offset + compiled.limit, result.length),
      changes,
    });
  }
}

/**
 * The change set of a live query's window, from the touched objects'
 * positions before and after. Untouched objects and objects whose sort
 * keys did not change ("survivors") keep their relative order; the window
 * over the survivor sequence tells which untouched objects slid in or out
 * at its edges.
 */
function diffWindow(
  touched: Touched[],
  oldLength: number,
  newLength: number,
  compiled: CompiledQuery,
): CollectionChanges {
  const oldOthers: number[] = [];
  const newOthers: number[] = [];
  const moved: Touched[] = [];
  for (const item of touched) {
    if (item.kind === "leave") oldOthers.push(item.oldIndex);
    else if (item.kind === "enter") newOthers.push(item.newIndex);
    else if (item.kind === "move") moved.push(item);
  }
  oldOthers.sort(ascending);
  newOthers.sort(ascending);
  // Objects whose sort keys changed are reported as modifications when
  // they all kept their rank among survivors, else as moves.
  let movedSurvive = true;
  for (const item of moved) {
    const oldRank = item.oldIndex - countBelow(oldOthers, item.oldIndex);
    const newRank = item.newIndex - countBelow(newOthers, item.newIndex);
    if (oldRank !== newRank) {
      movedSurvive = false;
      break;
    }
  }
  if (!movedSurvive) {
    for (const item of moved) {
      oldOthers.push(item.oldIndex);
      newOthers.push(item.newIndex);
    }
    oldOthers.sort(ascending);
    newOthers.sort(ascending);
  }
  const offset = compiled.offset;
  const oldStart = Math.min(offset, oldLength);
  const oldEnd = Math.min(offset + compiled.limit, oldLength);
  const newStart = Math.min(offset, newLength);
  const newEnd = Math.min(offset + compiled.limit, newLength);
  const rankOld = (index: number) => index - countBelow(oldOthers, index);
  const rankNew = (index: number) => index - countBelow(newOthers, index);
  const oldFirst = rankOld(oldStart);
  const oldLast = rankOld(oldEnd);
  const newFirst = rankNew(newStart);
  const newLast = rankNew(newEnd);
  const keptFirst = Math.max(oldFirst, newFirst);
  const keptLast = Math.max(keptFirst, Math.min(oldLast, newLast));

  const deletions: number[] = [];
  for (const index of oldOthers) {
    if (index >= oldStart && index < oldEnd) deletions.push(index - offset);
  }
  for (let rank = oldFirst; rank < Math.min(oldLast, keptFirst); rank++) {
    deletions.push(indexOfRank(rank, oldOthers) - offset);
  }
  for (let rank = Math.max(oldFirst, keptLast); rank < oldLast; rank++) {
    deletions.push(indexOfRank(rank, oldOthers) - offset);
  }
  const insertions: number[] = [];
  for (const index of newOthers) {
    if (index >= newStart && index < newEnd) insertions.push(index - offset);
  }
  for (let rank = newFirst; rank < Math.min(newLast, keptFirst); rank++) {
    insertions.push(indexOfRank(rank, newOthers) - offset);
  }
  for (let rank = Math.max(newFirst, keptLast); rank < newLast; rank++) {
    insertions.push(indexOfRank(rank, newOthers) - offset);
  }
  const modifications: number[] = [];
  for (const item of touched) {
    if (item.kind === "stay" || (item.kind === "move" && movedSurvive)) {
      const rank = rankNew(item.newIndex);
      if (rank >= keptFirst && rank < keptLast) {
        modifications.push(item.newIndex - offset);
      }
    }
  }
  deletions.sort(ascending);
  insertions.sort(ascending);
  modifications.sort(ascending);
  return { insertions, deletions, modifications };
}

/** The routing key of an object's field (a missing field equals null). */
function routeKey(
  fields: Fields | undefined,
  field: string,
): string | undefined {
  if (fields === undefined) return undefined;
  return valueKey(Object.hasOwn(fields, field) ? fields[field]! : null);
}

function notify(watcher: ObjectWatcher, fields: Fields | undefined): void {
  const last = watcher.last;
  if (last === undefined && fields === undefined) return;
  const changed = new Set<string>();
  if (last === undefined || fields === undefined) {
    for (const name of Object.keys(last ?? fields!)) changed.add(name);
  } else {
    for (const name of Object.keys(fields)) {
      if (
        !Object.hasOwn(last, name) ||
        !valuesEqual(last[name] as Value, fields[name] as Value)
      ) {
        changed.add(name);
      }
    }
    for (const name of Object.keys(last)) {
      if (!Object.hasOwn(fields, name)) changed.add(name);
    }
    if (changed.size === 0) return;
  }
  watcher.last = fields;
  watcher.deliver({
    id: watcher.id,
    fields: fields === undefined ? undefined : copyFields(fields),
    changedFields: [...changed].sort(),
  });
}
