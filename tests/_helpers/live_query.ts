/**
 * Helpers for live-query tests: watching a list of queries and checking
 * each item against the query recomputed from scratch.
 */
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import {
  type LiveQueryUpdate,
  materialize,
  type QueryEngine,
} from "../../src/client/query_engine.ts";
import type { LocalRealm } from "../../src/client/local_realm.ts";
import type { RealmObject } from "../../src/client/realm.ts";
import type { CompiledQuery } from "../../src/model/query.ts";
import { compileQuery } from "../../src/model/query.ts";
import type { Fields } from "../../src/model/value.ts";
import type { Prng } from "./prng.ts";

/**
 * Applies a live-query change set to the previous result the way a UI
 * would (deletions from the highest, insertions from the lowest, then
 * modifications) and asserts it yields the new result.
 */
export function assertPatches<T>(
  previous: readonly RealmObject<T>[],
  update: LiveQueryUpdate<T>,
  label = "",
): void {
  const { objects, changes } = update;
  const rows = [...previous];
  for (
    const list of [changes.deletions, changes.insertions, changes.modifications]
  ) {
    for (let i = 1; i < list.length; i++) {
      assert.ok(
        list[i - 1]! < list[i]!,
        `${label}: indexes ascend and are unique`,
      );
    }
  }
  for (let i = changes.deletions.length - 1; i >= 0; i--) {
    const index = changes.deletions[i]!;
    assert.ok(
      index >= 0 && index < rows.length,
      `${label}: deletion ${index} in range`,
    );
    rows.splice(index, 1);
  }
  for (const index of changes.insertions) {
    assert.ok(
      index >= 0 && index <= rows.length,
      `${label}: insertion ${index} in range`,
    );
    rows.splice(index, 0, objects[index]!);
  }
  for (const index of changes.modifications) {
    assert.ok(
      index >= 0 && index < rows.length,
      `${label}: modification ${index} in range`,
    );
    assert.equal(
      rows[index]!.id,
      objects[index]!.id,
      `${label}: modified in place`,
    );
    rows[index] = objects[index]!;
  }
  assert.deepEqual(
    rows,
    objects,
    `${label}: the change set patches the previous result into the new one`,
  );
  // Changes are by value: a kept object is a modification exactly when its
  // fields changed, and one that did not change is the same object.
  const before = new Map(previous.map((row) => [row.id, row]));
  const moved = new Set(changes.deletions.map((i) => previous[i]!.id));
  const modified = new Set(changes.modifications);
  objects.forEach((row, index) => {
    const old = before.get(row.id);
    if (old === undefined || moved.has(row.id)) return;
    const changed = !isDeepStrictEqual(old.fields, row.fields);
    assert.equal(
      modified.has(index),
      changed,
      `${label}: ${row.id} is a modification exactly when it changed`,
    );
    if (!changed) assert.equal(row, old, `${label}: ${row.id} is shared`);
  });
}

/** One live query under watch: its items so far and its current result. */
export interface WatchedQuery {
  readonly query: unknown;
  readonly compiled: CompiledQuery;
  /** Items delivered and not yet checked. */
  readonly items: LiveQueryUpdate[];
  readonly remove: () => void;
  /** The result as the items so far leave it. */
  current: readonly RealmObject<unknown>[];
}

/** Watches each of `queries` on objects of `type`, collecting its items. */
export function watchAll(
  engine: QueryEngine,
  type: string,
  queries: readonly unknown[],
): WatchedQuery[] {
  return queries.map((query) => {
    const compiled = compileQuery(query);
    const items: LiveQueryUpdate[] = [];
    const { first, remove } = engine.watch(
      type,
      compiled,
      (snapshot) => items.push(materialize(snapshot)),
    );
    return {
      query,
      compiled,
      items,
      remove,
      current: materialize(first).objects,
    };
  });
}

/**
 * Checks a watched query after one transaction against `fresh`, its result
 * recomputed from scratch: at most one item; none only if nothing changed;
 * otherwise the item is the fresh result and its change set patches the
 * previous result into it. Returns the item (then the new current result).
 */
export function checkWatched(
  entry: WatchedQuery,
  fresh: readonly RealmObject<unknown>[],
  label: string,
): LiveQueryUpdate | undefined {
  assert.ok(entry.items.length <= 1, `${label}: one item at most`);
  const item = entry.items.shift();
  if (item === undefined) {
    assert.deepEqual(entry.current, fresh, `${label}: nothing changed`);
    return undefined;
  }
  assert.deepEqual(item.objects, fresh, `${label}: the fresh result`);
  assertPatches(entry.current, item, label);
  entry.current = item.objects;
  return item;
}

/**
 * One local transaction over the objects `ids` of type `T`: each deleted,
 * updated (if it exists) or put, at random, with fields from `fields`.
 */
export function writeRandomly(
  realm: LocalRealm,
  ids: readonly string[],
  prng: Prng,
  fields: (prng: Prng) => Fields,
): Promise<unknown> {
  return realm.write((tx) => {
    for (const id of ids) {
      const roll = prng.int(4);
      if (roll === 0) tx.delete("T", id);
      else if (roll === 1 && realm.exists("T", id)) {
        tx.update("T", id, fields(prng));
      } else tx.put("T", id, fields(prng));
    }
  });
}
