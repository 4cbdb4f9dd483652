// This module is browser compatible.

/**
 * What readers of live queries and object watchers receive, and how a
 * live query's result at one commit becomes the item a reader sees.
 */

import {
  cloneValue,
  defineField,
  type Fields,
  type Value,
  valuesEqual,
} from "../model/value.ts";
import type { RealmObject } from "./realm.ts";

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

/** One object in a live query's result. Replaced, never mutated. */
export interface Entry {
  readonly id: string;
  readonly fields: Fields;
  /** The sort fields' values, extracted once. */
  readonly keys: readonly (Value | undefined)[];
  /** The frozen copy handed to readers, made on first read. */
  object: RealmObject | undefined;
}

/**
 * A new {@linkcode Entry} (internal): every entry has the same shape from
 * the start, its reader's copy included, so the code that handles entries
 * sees one object layout.
 */
export function newEntry(
  id: string,
  fields: Fields,
  keys: readonly (Value | undefined)[],
): Entry {
  return { id, fields, keys, object: undefined };
}

/** A live query's result at one commit, materialized when read. */
export interface LiveSnapshot {
  /** The result's blocks at that commit (never changed afterwards). */
  readonly blocks: readonly (readonly Entry[])[];
  readonly start: number;
  readonly end: number;
  readonly changes: CollectionChanges;
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

/**
 * The frozen copy of an entry a reader sees: `deepFreeze` of its
 * `copyFields`, built with one list of the field names rather than three.
 */
function frozenObject(entry: Entry): RealmObject {
  const fields = entry.fields;
  const copy: Fields = {};
  const names = Object.keys(fields);
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    defineField(copy, name, deepFreeze(cloneValue(fields[name]!)));
  }
  return Object.freeze({ id: entry.id, fields: Object.freeze(copy) });
}

/** Turns a snapshot into the item a reader sees. */
export function materialize<T>(snapshot: LiveSnapshot): LiveQueryUpdate<T> {
  let skip = snapshot.start;
  let take = snapshot.end - snapshot.start;
  // Sized once: grown by `push`, the list would allocate about twice its
  // size in stores it outgrows (a reader gets one per commit).
  const objects = new Array<RealmObject>(take);
  let filled = 0;
  for (const block of snapshot.blocks) {
    if (take === 0) break;
    if (skip >= block.length) {
      skip -= block.length;
      continue;
    }
    for (let index = skip; index < block.length && take > 0; index++, take--) {
      const entry = block[index]!;
      entry.object ??= frozenObject(entry);
      objects[filled++] = entry.object;
    }
    skip = 0;
  }
  // (A snapshot's blocks hold its window; this keeps a short one from
  // leaving holes.)
  objects.length = filled;
  return {
    objects: objects as RealmObject<unknown>[] as RealmObject<T>[],
    changes: snapshot.changes,
  };
}

/** An object watcher (internal): what it watches and last reported. */
export interface ObjectWatcher {
  readonly type: string;
  readonly id: string;
  last: Fields | undefined;
  deliver(update: ObjectUpdate): void;
}

/**
 * Tells an object watcher of the object's fields after a transaction (internal):
 * nothing when no field changed, appeared or vanished.
 */
export function notify(
  watcher: ObjectWatcher,
  fields: Fields | undefined,
): void {
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

/**
 * Tells the object watchers of the objects a transaction changed
 * (internal; `watchers` by type and id), each once with the object's
 * state after the transaction: from its last change when that tells it (a
 * `put` with its fields, a `delete`), else from `read`.
 */
export function notifyAll(
  watchers: ReadonlyMap<
    string,
    ReadonlyMap<string, ReadonlySet<ObjectWatcher>>
  >,
  changes: readonly {
    readonly type: string;
    readonly id: string;
    readonly op?: string;
    readonly fields?: Fields;
  }[],
  read: { get(type: string, id: string): Fields | undefined },
): void {
  // Per type, per touched object: its fields after the transaction when
  // its last change tells them (undefined: gone), null when it does not.
  const byType = new Map<string, Map<string, Fields | undefined | null>>();
  for (const { type, id, op, fields } of changes) {
    let ids = byType.get(type);
    if (ids === undefined) {
      if (!watchers.has(type)) continue;
      ids = new Map();
      byType.set(type, ids);
    }
    ids.set(
      id,
      op === "put" && fields !== undefined
        ? fields
        : op === "delete"
        ? undefined
        : null,
    );
  }
  for (const [type, ids] of byType) {
    const forType = watchers.get(type);
    if (forType === undefined) continue;
    for (const [id, known] of ids) {
      const forId = forType.get(id);
      // Only a watched object's state is read from the store.
      if (forId === undefined) continue;
      const now = known === null ? read.get(type, id) : known;
      for (const watcher of [...forId]) notify(watcher, now);
    }
  }
}
