// This module is browser compatible.

/**
 * The query side of one open realm: field indexes, query execution, and the
 * live queries and object watchers that a commit patches in time
 * proportional to the objects it touched.
 */

import type { CompiledQuery, Row } from "../model/query.ts";
import { type Fields, type Value, valuesEqual } from "../model/value.ts";
import { merge, selectFirst, withoutIndexes } from "../util/sorted_arrays.ts";
import { enteringLast, selectBest } from "./batch_cut.ts";
import { BlockList } from "./entry_list.ts";
import { FieldIndexes } from "./field_indexes.ts";
import {
  ascending,
  diffWindow,
  type Kind,
  kindOf,
  type Touched,
} from "./change_sets.ts";
import {
  copyFields,
  type Entry,
  type LiveSnapshot,
  newEntry,
  notifyAll,
  type ObjectUpdate,
  type ObjectWatcher,
} from "./live_results.ts";
import {
  LiveScan,
  type ScanChange,
  type Scanned,
  settle,
} from "./live_scan.ts";
import { type Route, routeOf } from "./route_table.ts";

// The result types moved to live_results.ts; importers of this file keep
// finding them here.
export {
  type CollectionChanges,
  copyFields,
  type LiveQueryUpdate,
  type LiveSnapshot,
  materialize,
  type ObjectUpdate,
} from "./live_results.ts";

/** What the engine reads from the object store (internal). */
export interface StoreReader {
  /** The visible fields of a live object (a new object; values shared). */
  get(type: string, id: string): Fields | undefined;
  /** Live objects of one type. */
  objects(type: string): Iterable<{ id: string; fields: Fields }>;
  /**
   * One field of an object without copying its fields: `null` when the
   * object is not live, undefined when it lacks the field. Optional: the
   * engine falls back to `get`.
   */
  fieldValue?(type: string, id: string, name: string): Value | undefined | null;
  /**
   * Whether `fields` (a `put` change's) are still the visible fields of
   * the object, value for value. Optional: the engine falls back to `get`.
   */
  current?(type: string, id: string, fields: Fields): boolean;
}

/**
 * One object a transaction changed (internal): a realm's `ObjectChange`;
 * `op` and `fields` are optional (without them the engine reads the store).
 */
export interface AppliedChange {
  readonly type: string;
  readonly id: string;
  /** `put` (then `fields` holds all the visible fields), `update`, `delete`. */
  readonly op?: string;
  readonly fields?: Fields;
  /** With `put`: whether the object did not exist before. */
  readonly created?: boolean;
}

/** A registered live query (internal). */
export interface LiveQuery {
  readonly type: string;
  readonly compiled: CompiledQuery;
  /**
   * The matching objects in query order: all of them, or (when
   * {@linkcode bound} is set) a prefix that covers the window.
   */
  sorted: BlockList<Entry>;
  /**
   * Set when {@linkcode sorted} is cut: it holds every match up to this
   * entry and no other; every other match sorts after it. Only a query with
   * a `limit` is cut, never inside its window.
   */
  bound: Entry | undefined;
  /**
   * A top-level equality the query requires: only objects holding that
   * value now, or held by the result, can concern the query.
   */
  readonly route: Route;
  /** The entries of {@linkcode sorted} by id. */
  members: Map<string, Entry>;
  /**
   * How many objects past its window a cut result keeps at least: it
   * starts at about the window's size (a bootstrap enters few objects that
   * a later batch pushes out again) and doubles at each refill, up to
   * {@linkcode QueryEngine.windowMargin}.
   */
  margin: number;
  /** What the commit in progress does to the kept result (live_scan.ts). */
  scanned: Scanned[];
  /** A mark of the scan (live_scan.ts). */
  seen: number;
  deliver(snapshot: LiveSnapshot): void;
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
  /**
   * The most objects past its window a live query with a `limit` keeps at
   * least (it keeps up to twice as many, and refills from the store when it
   * holds fewer than its window needs). A query starts with a margin of
   * about its window (at least {@linkcode MIN_MARGIN}), doubled at each
   * refill up to this. Tests set it small.
   */
  windowMargin = 512;
  /** Refills of cut live queries (a scan each): what tests count. */
  refills = 0;
  /**
   * Batches cut to what a windowed result keeps before their entries were
   * made (see `#enter`): what tests count.
   */
  batchesCut = 0;
  #read: StoreReader;
  #indexes: FieldIndexes;
  #queries = new Map<string, Set<LiveQuery>>();
  #objectWatchers = new Map<string, Map<string, Set<ObjectWatcher>>>();
  #active = 0;
  /** The live queries by type and route, and which hold each object. */
  #live = new LiveScan<LiveQuery>();

  /** @param read Access to the store. */
  constructor(read: StoreReader) {
    this.#read = read;
    this.#indexes = new FieldIndexes(read);
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
    return this.#indexes.fields(type);
  }

  /**
   * Adds indexes (fields already indexed are kept), filling each from the
   * objects present.
   */
  ensureIndexes(spec: { readonly [type: string]: readonly string[] }): void {
    this.#active += this.#indexes.ensure(spec);
  }

  /**
   * The objects of `type` matching the query, sorted, not windowed: all of
   * them, or only the first `most` when there are more (picked without
   * sorting the rest).
   */
  #select(
    type: string,
    compiled: CompiledQuery,
    most = Infinity,
  ): Entry[] {
    // Rows first, entries only for those kept: a live query's selection
    // from a big type keeps its window and margin out of every match.
    const rows: Row[] = [];
    const candidates = this.#indexes.candidates(type, compiled.indexable);
    if (candidates === undefined) {
      // (The store's rows as they come: only read, never changed.)
      for (const row of this.#read.objects(type)) {
        this.examined++;
        if (compiled.matches(row.fields)) rows.push(row);
      }
    } else {
      for (const id of candidates) {
        const fields = this.#read.get(type, id);
        if (fields === undefined) continue;
        this.examined++;
        if (compiled.matches(fields)) rows.push({ id, fields });
      }
    }
    if (rows.length > 2 * most) {
      selectBest(rows, 0, most, compiled);
      rows.length = most;
    }
    const result = new Array<Entry>(rows.length);
    for (let i = 0; i < rows.length; i++) {
      const { id, fields } = rows[i]!;
      result[i] = newEntry(id, fields, compiled.keysOf(fields));
    }
    result.sort(compiled.compareKeyed);
    if (result.length > most) result.length = most;
    return result;
  }

  /** The query's result rows (uncopied fields). */
  query(type: string, compiled: CompiledQuery): Entry[] {
    const all = this.#select(type, compiled);
    if (compiled.offset === 0 && compiled.limit >= all.length) return all;
    return all.slice(compiled.offset, compiled.offset + compiled.limit);
  }

  /** How many objects of `type` match the compiled `where`. */
  count(type: string, compiled: CompiledQuery): number {
    const candidates = this.#indexes.candidates(type, compiled.indexable);
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
    const route = routeOf(compiled);
    const query: LiveQuery = {
      type,
      compiled,
      sorted: new BlockList(),
      bound: undefined,
      members: new Map(),
      margin: Math.min(
        this.windowMargin,
        Math.max(MIN_MARGIN, compiled.offset + compiled.limit),
      ),
      route,
      scanned: [],
      seen: 0,
      deliver,
    };
    this.#live.add(query);
    this.#fill(query, this.#selectKept(query));
    const sorted = query.sorted;
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
          for (const id of query.members.keys()) this.#live.release(query, id);
          this.#live.remove(query);
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

  /**
   * The commit hook: `changes` are the objects a transaction (a local write
   * or one integrated DOWNLOAD) changed visibly, already applied to the
   * store. Updates indexes, patches live queries and tells object watchers.
   * A change that says what an object is now (a `put` carries all its
   * fields, a `delete` none) spares a copy from the store.
   *
   * @param distinct No object appears twice in `changes` (the caller
   *   knows it for free; without it live queries check what they keep).
   */
  applied(changes: readonly AppliedChange[], distinct = false): void {
    if (this.#active === 0 || changes.length === 0) return;
    if (this.#indexes.size > 0) this.#indexes.follow(changes);
    // Indexes first: a live query's refill selects through them.
    if (this.#objectWatchers.size === 0) {
      this.#appliedLive(changes, distinct);
      return;
    }
    notifyAll(this.#objectWatchers, changes, this.#read);
    this.#appliedLive(changes, distinct);
  }

  /**
   * Patches the live queries a commit concerns: one scan of the changes
   * (live_scan.ts), then each query with records.
   */
  #appliedLive(changes: readonly ScanChange[], distinct: boolean): void {
    if (this.#live.size === 0) return;
    const read = this.#read;
    const dirty = this.#live.scan(
      changes,
      (type, id) => read.get(type, id),
      distinct,
    );
    this.examined += this.#live.examined;
    this.#live.examined = 0;
    for (let q = 0; q < dirty.length; q++) this.#patch(dirty[q]!, distinct);
  }

  /**
   * Sets a live query's result from `selected` (every match, in order),
   * cut after its window plus the margin when it has a `limit` and the
   * result is longer than its window plus twice the margin.
   */
  #fill(query: LiveQuery, selected: Entry[]): void {
    const keep = this.#keep(query);
    let bound: Entry | undefined;
    // (Nothing to keep, nothing to bound: an empty window stays uncut.)
    if (keep > 0 && selected.length > keep + query.margin) {
      selected.length = keep;
      bound = selected[keep - 1];
    }
    for (const id of query.members.keys()) this.#live.release(query, id);
    const members = new Map<string, Entry>();
    for (const entry of selected) {
      members.set(entry.id, entry);
      this.#live.hold(query, entry.id);
    }
    query.members = members;
    query.bound = bound;
    query.sorted = BlockList.from(selected);
  }

  /**
   * A live query's result from the store, for `#fill`: one object
   * more than it would keep uncut, if there are that many (so the cut
   * shows).
   */
  #selectKept(query: LiveQuery): Entry[] {
    return this.#select(
      query.type,
      query.compiled,
      this.#keep(query) + query.margin + 1,
    );
  }

  /** How many objects a cut live query keeps: its window plus its margin. */
  #keep(query: LiveQuery): number {
    return query.compiled.offset + query.compiled.limit + query.margin;
  }

  /**
   * Cuts a live query's result back to its window plus the margin, once it
   * is longer than that plus `slack`.
   */
  #trim(query: LiveQuery, slack: number): void {
    const { sorted } = query;
    const keep = this.#keep(query);
    if (keep === 0 || sorted.length <= keep + slack) return;
    const dropped = sorted.dropFrom(keep);
    for (let i = 0; i < dropped.length; i++) {
      const id = dropped[i]!.id;
      query.members.delete(id);
      this.#live.release(query, id);
    }
    query.bound = sorted.at(keep - 1);
  }

  /**
   * Applies the scan's records to a live query and delivers the change of
   * its window, if any.
   */
  #patch(query: LiveQuery, distinct: boolean): void {
    const { compiled } = query;
    const compare = compiled.compareKeyed;
    const bound = query.bound;
    const records = settle(query, distinct, this.#read);
    // Nothing in or entering the result: wake nobody.
    if (records.length === 0) return;
    const previous = query.sorted;
    const oldLength = previous.length;
    // Entries for the objects the result held; those entering get theirs
    // in #enter, once it is known which of them the result can keep.
    let entering = 0;
    let leaving = 0;
    let moving = 0;
    let same = 0;
    // Indexed loops here and below: a `for…of` allocates a step object per
    // item until V8 optimizes it, and a bootstrap runs much of this cold.
    for (let i = 0; i < records.length; i++) {
      const item = records[i]!;
      const { id, old, fields } = item;
      if (old === undefined) {
        entering++;
        continue;
      }
      // An object of the result that holds the values it held did not
      // change the result (the contract: an item per transaction that
      // changed it, modifications are objects whose fields changed). The
      // value order's equality: -0 is not 0, NaN is NaN.
      if (fields !== undefined && valuesEqual(old.fields, fields)) {
        item.kind = SAME;
        same++;
        continue;
      }
      const fresh: Entry | undefined = fields === undefined
        ? undefined
        : newEntry(id, fields, compiled.keysOf(fields));
      item.fresh = fresh;
      item.kind = kindOf(compiled, old, fresh);
      item.oldIndex = previous.lowerBound(old, compare);
      if (fresh === undefined) leaving++;
      else if (item.kind === "move") moving++;
    }
    const changed = same > 0
      ? records.filter((item) => item.kind !== SAME)
      : records;
    if (changed.length === 0) return;
    const length = oldLength + entering - leaving;
    let touched: Touched[] = changed;
    let merged = false;
    if (bound !== undefined && length < compiled.offset + compiled.limit) {
      // The cut result no longer covers the window: select it again (a
      // scan of the type or its index candidates, once per `windowMargin`
      // objects gone), and tell each touched object's fate from the new
      // result (one that was past the bound may now be in it).
      this.refills++;
      // Objects do leave this result: keep more of them from now on.
      query.margin = Math.min(this.windowMargin, query.margin * 2);
      const oldMembers = query.members;
      const selected = this.#selectKept(query);
      // An object this commit did not change keeps its entry, so the next
      // item holds the same frozen object for it, as items promise
      // (LiveQueryUpdate); a refill is a pass over the type already.
      const changedIds = new Set<string>();
      for (let i = 0; i < changed.length; i++) changedIds.add(changed[i]!.id);
      for (let i = 0; i < selected.length; i++) {
        const kept = oldMembers.get(selected[i]!.id);
        if (kept !== undefined && !changedIds.has(kept.id)) selected[i] = kept;
      }
      this.#fill(query, selected);
      touched = [];
      for (let i = 0; i < changed.length; i++) {
        const id = changed[i]!.id;
        const old = oldMembers.get(id);
        const fresh = query.members.get(id);
        if (old === undefined && fresh === undefined) continue;
        touched.push({
          kind: kindOf(compiled, old, fresh),
          old,
          fresh,
          oldIndex: old === undefined ? -1 : previous.lowerBound(old, compare),
          newIndex: -1,
        });
      }
    } else {
      const cut = this.#enter(query, changed, entering, moving, leaving);
      merged = this.#update(query, changed, cut);
    }
    const result = query.sorted;
    // Positions past the window's end matter only as "past the end" (the
    // change set is about the window): one comparison with the window's
    // last object instead of a search, which keeps big batches cheap.
    const windowEnd = Math.min(compiled.offset + compiled.limit, result.length);
    const last = windowEnd > 0 && windowEnd < result.length
      ? result.at(windowEnd - 1)
      : undefined;
    for (let i = 0; i < touched.length; i++) {
      const item = touched[i]!;
      if (item.fresh === undefined) continue;
      item.newIndex = last !== undefined && compare(item.fresh, last) > 0
        ? Infinity
        : result.lowerBound(item.fresh, compare);
    }
    const changes = diffWindow(touched, oldLength, result.length, compiled);
    // Past the window: the change set is unaffected.
    // A merged batch is cut at once (its cost is in the batch's size
    // already), so the next batch meets a bound.
    if (compiled.limit !== Infinity) {
      this.#trim(query, merged ? 0 : query.margin);
    }
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

  /**
   * Gives the entering records their entries. A batch that will be merged
   * into a windowed result and brings more objects than the result keeps
   * is first cut to the best of them, chosen on their fields against one
   * extracted key per round of the selection: the merge would drop the
   * others, and their entries would be made for nothing (the first batch
   * into an empty list makes one per match, for the window and margin the
   * list keeps). Returns whether it cut any (`#mergeBatch` needs to know).
   */
  #enter(
    query: LiveQuery,
    records: Scanned[],
    entering: number,
    moving: number,
    leaving: number,
  ): boolean {
    const compiled = query.compiled;
    const keep = compiled.limit === Infinity ? 0 : this.#keep(query);
    const cut = keep > 0 && entering > keep &&
      merges(entering + moving, moving + leaving, query);
    if (cut) {
      // The best `keep` entering are the only ones the merge can keep (it
      // keeps the best `keep` of all it adds): the held records first, then
      // those, and the rest let go.
      const from = records.length - entering;
      enteringLast(records);
      // (Entering records all have fields.)
      selectBest(records as Row[], from, keep, compiled);
      records.length = from + keep;
      this.batchesCut++;
    }
    for (let i = 0; i < records.length; i++) {
      const item = records[i]!;
      if (item.old !== undefined) continue;
      item.fresh = newEntry(
        item.id,
        item.fields!,
        compiled.keysOf(item.fields!),
      );
    }
    return cut;
  }

  /**
   * Applies the touched objects (old positions known) to a live query's
   * list and members. Returns whether the batch was merged, and then the
   * result is already cut back to its window plus its margin: an entering
   * object that the cut drops is never held. `cut`: `#enter` left entering
   * objects out (the batch is merged, and the result cut).
   */
  #update(
    query: LiveQuery,
    touched: readonly Touched[],
    cut: boolean,
  ): boolean {
    const compare = query.compiled.compareKeyed;
    const { sorted, members } = query;
    // Read once per call, up front: read only where an object is held,
    // V8 compiled that read without type feedback and deoptimized there
    // again and again (docs/PERFORMANCE.md "Seventh pass").
    const live = this.#live;
    // Sized once, then cut to what they hold (see diffWindow's lists).
    const removals = new Array<number>(touched.length);
    const additions = new Array<Entry>(touched.length);
    let removed = 0;
    let added = 0;
    for (let i = 0; i < touched.length; i++) {
      const item = touched[i]!;
      if (item.kind === "stay") {
        sorted.replaceAt(item.oldIndex, item.fresh!);
        members.set(item.fresh!.id, item.fresh!);
        continue;
      }
      if (item.old !== undefined) removals[removed++] = item.oldIndex;
      if (item.fresh !== undefined) additions[added++] = item.fresh;
      else {
        members.delete(item.old!.id);
        live.release(query, item.old!.id);
      }
    }
    removals.length = removed;
    additions.length = added;
    if (removals.length > 1) removals.sort(ascending);
    if (cut || merges(additions.length, removals.length, query)) {
      this.#mergeBatch(query, removals, additions, cut);
      return true;
    }
    for (let i = 0; i < additions.length; i++) {
      const entry = additions[i]!;
      if (!members.has(entry.id)) live.hold(query, entry.id);
      members.set(entry.id, entry);
    }
    // Blocks keep each step O(log n + block size), so a bootstrap batch of
    // k objects costs k steps, not a pass over the whole result.
    for (let i = removals.length - 1; i >= 0; i--) {
      sorted.removeAt(removals[i]!);
    }
    // In order, so that each block they enter is copied once.
    if (additions.length > 1) additions.sort(compare);
    sorted.insertAll(additions, compare);
    return false;
  }

  /**
   * Many objects against a short or cut result (a bootstrap batch): sorts
   * the batch once and merges it with the survivors, instead of a search
   * and a splice per object, then cuts the result at once, holding only
   * the additions it keeps. `cut`: additions were left out before (see
   * `#enter`).
   */
  #mergeBatch(
    query: LiveQuery,
    removals: readonly number[],
    additions: Entry[],
    cut: boolean,
  ): void {
    const compare = query.compiled.compareKeyed;
    const members = query.members;
    const keep = query.compiled.limit === Infinity ? 0 : this.#keep(query);
    const selected = keep > 0 && additions.length > keep;
    if (selected) {
      // Only the first `keep` additions can be kept (a batch into an empty
      // or small type): select them, and sort only those.
      selectFirst(additions, keep, compare);
      for (let i = keep; i < additions.length; i++) {
        const id = additions[i]!.id;
        // One that moved here from the kept result is no longer held.
        if (members.delete(id)) this.#live.release(query, id);
      }
      additions.length = keep;
    }
    additions.sort(compare);
    const result = merge(
      withoutIndexes(query.sorted.toArray(), removals),
      additions,
      compare,
    );
    // (Additions left out by the selection make it a cut result even when
    // exactly `keep` remain.)
    if (keep > 0 && (result.length > keep || selected || cut)) {
      for (let index = keep; index < result.length; index++) {
        const entry = result[index]!;
        // A survivor the cut drops was held; an addition is settled below.
        if (members.get(entry.id) === entry) {
          members.delete(entry.id);
          this.#live.release(query, entry.id);
        }
      }
      result.length = keep;
      query.bound = result[keep - 1];
    }
    // Additions are sorted: those up to the bound are kept.
    const bound = query.bound;
    let kept = additions.length;
    if (bound !== undefined) {
      while (kept > 0 && compare(additions[kept - 1]!, bound) > 0) kept--;
    }
    for (let i = 0; i < additions.length; i++) {
      const entry = additions[i]!;
      const before = members.get(entry.id);
      if (i < kept) {
        members.set(entry.id, entry);
        if (before === undefined) this.#live.hold(query, entry.id);
      } else if (before !== undefined) {
        // It moved past the cut: no longer held.
        members.delete(entry.id);
        this.#live.release(query, entry.id);
      }
    }
    query.sorted = BlockList.from(result);
  }
}

/** The least margin a cut live query starts with (see `LiveQuery.margin`). */
const MIN_MARGIN = 32;

/** Batches at least this big may be merged rather than inserted one by one. */
const MERGE_AT = 32;

const SAME: Kind = "same";

/**
 * Whether a batch of `additions` (and `removals`) into a live query's
 * result is merged rather than inserted one by one: a big batch against a
 * short or cut result.
 */
function merges(
  additions: number,
  removals: number,
  query: LiveQuery,
): boolean {
  return additions >= MERGE_AT &&
    (additions * 4 >= query.sorted.length - removals ||
      query.bound !== undefined);
}
