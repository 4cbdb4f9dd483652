// This module is browser compatible.

/**
 * An equality and range index over one field of one type's objects, in the
 * value order of `value_order.ts`, built in bulk from the index's own
 * entries.
 */

import { compareValues, valueKind } from "./value_order.ts";
import type { Fields, Value } from "./value.ts";

// Much faster than `Object.hasOwn` in V8 (see src/model/query.ts).
const hasOwnProperty = Object.prototype.hasOwnProperty;

/**
 * What the index holds for a live object without the field: sorts before
 * every value, and matches `eq: null` only.
 */
const MISSING: unique symbol = Symbol("missing");
/** What the index holds for an object: its value, or {@linkcode MISSING}. */
type Held = Value | typeof MISSING;
/** Pairs per chunk of pending additions. */
const CHUNK = 1_024;
/** A changed object that no longer exists. */
const GONE: unique symbol = Symbol("gone");

/** The kind rank of a held value; {@linkcode MISSING} ranks below `null`. */
function heldKind(held: Held): number {
  return held === MISSING ? -1 : valueKind(held);
}

/** The value order, with {@linkcode MISSING} first. */
function compareHeld(a: Held, b: Held): number {
  // The common kinds first, without a kind test.
  if (typeof a === "number" && typeof b === "number") {
    if (a < b) return -1;
    if (a > b) return 1;
    if (a !== 0 && a === b) return 0;
    return compareValues(a, b);
  }
  if (typeof a === "string" && typeof b === "string") {
    return a < b ? -1 : a > b ? 1 : 0;
  }
  if (a === MISSING) return b === MISSING ? 0 : -1;
  if (b === MISSING) return 1;
  return compareValues(a, b);
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** A bound of a range lookup. */
export interface IndexBound {
  value: Value;
  inclusive: boolean;
}

/**
 * One object change as the store reports it (a realm's `ObjectChange`):
 * `put` carries every visible field and `created` says whether the object
 * is new (without it, the index searches its entries), `update` the fields
 * that changed, `delete` none.
 */
export interface IndexedChange {
  readonly id: string;
  readonly op?: string;
  readonly fields?: Fields;
  readonly created?: boolean;
}

/**
 * Maps each value of one field to the ids holding it: equality, `in` and
 * ranges are binary searches over the index's entries sorted by (value,
 * id). Commits do not sort: a new object's entry is appended to a list of
 * additions, a change to an object already indexed is recorded by id
 * (overriding its older entry), and the first lookup that finds more of
 * these than a few times the square root of the index's size sorts them
 * and merges them into the sorted entries. Below that, a lookup also checks
 * each pending addition and change. So a bootstrap pays two array appends
 * per object and index, and the first lookup after it one sort of the
 * index's own entries (never a scan of the type); a single-object write
 * costs one map update, and the merges it leads to cost O(√n) per change.
 */
export class FieldIndex {
  /** The indexed field. */
  readonly field: string;
  /** Held values of the sorted entries, by (value, id). */
  #values: Held[] = [];
  /** Ids of the sorted entries. */
  #ids: string[] = [];
  /**
   * Objects created since the last merge, in chunks of at most
   * {@linkcode CHUNK} (id, held value) pairs: no array grows into a large
   * object that each append would copy and the collector would sweep.
   */
  #tail: Held[] = [];
  /** The chunks; the last is the tail. */
  #added: Held[][] = [this.#tail];
  #addedCount = 0;
  /**
   * Objects changed since the last merge that were indexed when changed:
   * what they hold now. Their entries in the sorted list or the additions
   * are stale.
   */
  #changed = new Map<string, Held | typeof GONE>();
  #size = 0;

  /** @param field The field to index. */
  constructor(field: string) {
    this.field = field;
  }

  /** Number of objects indexed (live objects of the type). */
  get size(): number {
    return this.#size;
  }

  /**
   * Records an object's current state: `fields` undefined when it no
   * longer exists. Whether it was indexed is looked up (a search of the
   * entries): the engine says so through {@linkcode follow}.
   */
  set(id: string, fields: Fields | undefined): void {
    this.setValue(
      id,
      fields !== undefined,
      fields !== undefined && hasOwnProperty.call(fields, this.field)
        ? fields[this.field]!
        : undefined,
    );
  }

  /**
   * Records an object's current state by its indexed field alone: `live`
   * false when it no longer exists, `value` undefined when it lacks the
   * field. Whether it was indexed is looked up (a search of the entries).
   */
  setValue(id: string, live: boolean, value: Value | undefined): void {
    this.#record(id, this.#holds(id), live, value);
  }

  /**
   * Follows one change the store reported, in commit order. Returns false,
   * recording nothing, when the change does not say the field's value (no
   * `op`, or no `fields` with a `put` or `update`): the caller then reads
   * the object and calls {@linkcode setValue}.
   */
  follow(change: IndexedChange): boolean {
    const { op, fields } = change;
    if (op === "delete") {
      this.#record(change.id, true, false, undefined);
      return true;
    }
    if (fields === undefined) return false;
    const field = this.field;
    if (op === "put") {
      const value = hasOwnProperty.call(fields, field)
        ? fields[field]!
        : undefined;
      if (change.created === true) this.#add(change.id, value);
      else {
        // A replaced object; without `created`, a search tells.
        const indexed = change.created === false || this.#holds(change.id);
        this.#record(change.id, indexed, true, value);
      }
      return true;
    }
    if (op !== "update") return false;
    // An update names the fields it changed; an absent one kept its value.
    if (hasOwnProperty.call(fields, field)) {
      this.#record(change.id, true, true, fields[field]!);
    }
    return true;
  }

  /**
   * Follows the changes `[from, to)` the store reported, in commit order,
   * as {@linkcode follow} does; `read` tells the field's value for a change
   * that does not (`null`: the object is gone, undefined: it lacks the
   * field). A new object costs two appends.
   */
  followAll(
    changes: readonly IndexedChange[],
    from: number,
    to: number,
    read: (id: string) => Value | undefined | null,
  ): void {
    const field = this.field;
    let tail = this.#tail;
    for (let i = from; i < to; i++) {
      const change = changes[i]!;
      const fields = change.fields;
      if (
        change.created === true && fields !== undefined &&
        change.op === "put" && this.#changed.size === 0
      ) {
        if (tail.length === 2 * CHUNK) tail = this.#newChunk();
        tail.push(
          change.id,
          hasOwnProperty.call(fields, field) ? fields[field]! : MISSING,
        );
        this.#addedCount++;
        this.#size++;
        continue;
      }
      if (this.follow(change)) {
        tail = this.#tail;
        continue;
      }
      const value = read(change.id);
      this.setValue(change.id, value !== null, value ?? undefined);
      tail = this.#tail;
    }
  }

  #newChunk(): Held[] {
    const chunk: Held[] = [];
    this.#added.push(chunk);
    this.#tail = chunk;
    return chunk;
  }

  /** Records an object that was not indexed: an append. */
  #add(id: string, value: Value | undefined): void {
    const held = value === undefined ? MISSING : value;
    this.#size++;
    // Deleted since the last merge: its stale entries stay overridden.
    if (this.#changed.size !== 0 && this.#changed.has(id)) {
      this.#changed.set(id, held);
      return;
    }
    const tail = this.#tail.length === 2 * CHUNK
      ? this.#newChunk()
      : this.#tail;
    tail.push(id, held);
    this.#addedCount++;
  }

  /** Records an object's new state, `indexed` telling whether it was. */
  #record(
    id: string,
    indexed: boolean,
    live: boolean,
    value: Value | undefined,
  ): void {
    if (!indexed) {
      if (live) this.#add(id, value);
      return;
    }
    const before = this.#changed.get(id);
    const wasLive = before !== GONE;
    if (live) {
      this.#changed.set(id, value === undefined ? MISSING : value);
      if (!wasLive) this.#size++;
    } else {
      this.#changed.set(id, GONE);
      if (wasLive) this.#size--;
    }
  }

  /** Whether the index holds a live object (a linear search). */
  #holds(id: string): boolean {
    const changed = this.#changed.get(id);
    if (changed !== undefined) return changed !== GONE;
    for (const chunk of this.#added) {
      for (let i = 0; i < chunk.length; i += 2) {
        if (chunk[i] === id) return true;
      }
    }
    return this.#ids.includes(id);
  }

  /**
   * Merges the pending additions and changes into the sorted entries when
   * there are more than a lookup should check one by one: a sort of those
   * (not of the sorted entries) and one merge pass.
   */
  #settle(): void {
    const pending = this.#addedCount + this.#changed.size;
    if (pending === 0) return;
    if (pending <= 32 + 2 * Math.sqrt(this.#ids.length)) return;
    const changed = this.#changed;
    const ids: string[] = [];
    const values: Held[] = [];
    for (const chunk of this.#added) {
      for (let i = 0; i < chunk.length; i += 2) {
        const id = chunk[i] as string;
        if (changed.size !== 0 && changed.has(id)) continue;
        ids.push(id);
        values.push(chunk[i + 1]!);
      }
    }
    for (const [id, held] of changed) {
      if (held === GONE) continue;
      ids.push(id);
      values.push(held);
    }
    const order = new Array<number>(ids.length);
    for (let i = 0; i < order.length; i++) order[i] = i;
    order.sort((a, b) =>
      compareHeld(values[a]!, values[b]!) || compareIds(ids[a]!, ids[b]!)
    );
    this.#tail = [];
    this.#added = [this.#tail];
    this.#addedCount = 0;
    this.#changed = new Map();
    if (this.#ids.length === 0) {
      // The first merge (a bootstrap): the sorted additions are the list.
      const nextIds = new Array<string>(order.length);
      const nextValues = new Array<Held>(order.length);
      for (let k = 0; k < order.length; k++) {
        nextIds[k] = ids[order[k]!]!;
        nextValues[k] = values[order[k]!]!;
      }
      this.#ids = nextIds;
      this.#values = nextValues;
      return;
    }
    const oldIds = this.#ids;
    const oldValues = this.#values;
    const total = oldIds.length + order.length;
    const nextIds = new Array<string>(total);
    const nextValues = new Array<Held>(total);
    let i = 0;
    let j = 0;
    let k = 0;
    const skip = changed.size > 0;
    while (i < oldIds.length && j < order.length) {
      const id = oldIds[i]!;
      if (skip && changed.has(id)) {
        i++;
        continue;
      }
      const at = order[j]!;
      if (
        (compareHeld(oldValues[i]!, values[at]!) || compareIds(id, ids[at]!)) <
          0
      ) {
        nextIds[k] = id;
        nextValues[k++] = oldValues[i++]!;
      } else {
        nextIds[k] = ids[at]!;
        nextValues[k++] = values[at]!;
        j++;
      }
    }
    for (; i < oldIds.length; i++) {
      const id = oldIds[i]!;
      if (skip && changed.has(id)) continue;
      nextIds[k] = id;
      nextValues[k++] = oldValues[i]!;
    }
    for (; j < order.length; j++) {
      const at = order[j]!;
      nextIds[k] = ids[at]!;
      nextValues[k++] = values[at]!;
    }
    nextIds.length = k;
    nextValues.length = k;
    this.#ids = nextIds;
    this.#values = nextValues;
  }

  /** The first sorted entry whose held value is not below (or above) `held`. */
  #search(held: Held, after: boolean): number {
    const values = this.#values;
    let low = 0;
    let high = values.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      const order = compareHeld(values[middle]!, held);
      if (order < 0 || (after && order === 0)) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  /** The first sorted entry of a kind above `kind`, from `low`. */
  #kindEnd(kind: number, low: number): number {
    const values = this.#values;
    let high = values.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (heldKind(values[middle]!) <= kind) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  /**
   * The ids of sorted entries `[from, to)` that are not stale, then those
   * of pending entries that pass `test`.
   */
  #yield(
    from: number,
    to: number,
    test: (held: Held) => boolean,
  ): IterableIterator<string> {
    return entries(
      this.#ids,
      from,
      to,
      this.#changed,
      this.#pending(test),
    );
  }

  /** Ids of pending additions and changes that pass `test`. */
  #pending(test: (held: Held) => boolean): IterableIterator<string> {
    return pendingIds(
      this.#added,
      this.#changed,
      test,
    );
  }

  /** The sorted entries equal to `value` (and missing ones, for `null`). */
  #equalSpan(value: Value): [number, number] {
    return [
      value === null ? 0 : this.#search(value, false),
      this.#search(value, true),
    ];
  }

  /**
   * Ids whose field equals `value`; for `null`, also those without the
   * field (a missing field matches `eq: null`).
   */
  equal(value: Value): IterableIterator<string> {
    this.#settle();
    const [from, to] = this.#equalSpan(value);
    return this.#yield(from, to, equalTest(value));
  }

  /**
   * Ids whose field lies between the bounds, among values of the bounds'
   * kind (both bounds, when given, must be of one kind).
   */
  range(
    lower: IndexBound | undefined,
    upper: IndexBound | undefined,
  ): IterableIterator<string> {
    this.#settle();
    const kind = valueKind((lower ?? upper)!.value);
    const values = this.#values;
    // First entry not below the lower bound (or the kind's first value).
    let from = 0;
    let high = values.length;
    while (from < high) {
      const middle = (from + high) >>> 1;
      const held = values[middle]!;
      const below = lower === undefined
        ? heldKind(held) < kind
        : lower.inclusive
        ? compareHeld(held, lower.value) < 0
        : compareHeld(held, lower.value) <= 0;
      if (below) from = middle + 1;
      else high = middle;
    }
    const to = upper === undefined
      ? this.#kindEnd(kind, from)
      : Math.max(from, this.#search(upper.value, upper.inclusive));
    return this.#yield(from, to, (held) => {
      if (heldKind(held) !== kind) return false;
      if (lower !== undefined) {
        const order = compareHeld(held, lower.value);
        if (order < 0 || (order === 0 && !lower.inclusive)) return false;
      }
      if (upper !== undefined) {
        const order = compareHeld(held, upper.value);
        if (order > 0 || (order === 0 && !upper.inclusive)) return false;
      }
      return true;
    });
  }

  /** How many ids {@linkcode equal} would yield (exact). */
  equalCount(value: Value): number {
    this.#settle();
    const [from, to] = this.#equalSpan(value);
    let count = to - from;
    const changed = this.#changed;
    if (changed.size > 0 && count > 0) {
      // Stale entries in the span: walk it when short, else look each
      // changed id up in it (entries of one value are sorted by id).
      if (to - from <= 8 * changed.size || value === null) {
        for (let i = from; i < to; i++) {
          if (changed.has(this.#ids[i]!)) count--;
        }
      } else {
        for (const id of changed.keys()) {
          if (this.#hasEntry(id, from, to)) count--;
        }
      }
    }
    for (const _ of this.#pending(equalTest(value))) count++;
    return count;
  }

  /** Whether `id` has a sorted entry in `[from, to)`, which ids order. */
  #hasEntry(id: string, from: number, to: number): boolean {
    const ids = this.#ids;
    let low = from;
    let high = to;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (ids[middle]! < id) low = middle + 1;
      else high = middle;
    }
    return low < to && ids[low] === id;
  }
}

/** The ids of sorted entries `[from, to)` not in `changed`, then `rest`. */
function* entries(
  ids: readonly string[],
  from: number,
  to: number,
  changed: ReadonlyMap<string, unknown>,
  rest: Iterable<string>,
): IterableIterator<string> {
  if (changed.size === 0) {
    for (let i = from; i < to; i++) yield ids[i]!;
  } else {
    for (let i = from; i < to; i++) {
      if (!changed.has(ids[i]!)) yield ids[i]!;
    }
  }
  yield* rest;
}

/** Ids of pending additions not changed since, and of live changed ones, that pass `test`. */
function* pendingIds(
  added: readonly (readonly Held[])[],
  changed: ReadonlyMap<string, Held | typeof GONE>,
  test: (held: Held) => boolean,
): IterableIterator<string> {
  for (const chunk of added) {
    for (let i = 0; i < chunk.length; i += 2) {
      const id = chunk[i] as string;
      if (changed.size !== 0 && changed.has(id)) continue;
      if (test(chunk[i + 1]!)) yield id;
    }
  }
  for (const [id, held] of changed) {
    if (held !== GONE && test(held)) yield id;
  }
}

function equalTest(value: Value): (held: Held) => boolean {
  return (held) =>
    held === MISSING ? value === null : compareHeld(held, value) === 0;
}
