// This module is browser compatible.

/**
 * The Realm-style change set of a live query's window, computed from the
 * positions of the objects one commit touched.
 */

import type { CompiledQuery } from "../model/query.ts";
import type { CollectionChanges, Entry } from "./live_results.ts";

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
  for (let i = 0; i < others.length; i++) {
    if (others[i]! <= index) index++;
    else break;
  }
  return index;
}

/** The rank among survivors of the survivor at `index`. */
function rankOf(index: number, others: readonly number[]): number {
  return index - countBelow(others, index);
}

/** Sorts `numbers` ascending unless they already are (a sort copies). */
function sortAscending(numbers: number[]): void {
  for (let i = 1; i < numbers.length; i++) {
    if (numbers[i - 1]! > numbers[i]!) {
      numbers.sort(ascending);
      return;
    }
  }
}

/** A touched object's position on the side its kind changes. */
function at(item: Touched): number {
  return item.kind === "leave" ? item.oldIndex : item.newIndex;
}

/** Sorts numbers ascending. */
export const ascending = (a: number, b: number): number => a - b;

/**
 * How a touched object relates to the result. `same`: in the result before
 * and after with the same values (a write of the values it held, or a
 * change undone within one DOWNLOAD), so not a change at all; such objects
 * are dropped before {@linkcode diffWindow}.
 */
export type Kind = "stay" | "move" | "leave" | "enter" | "same";

/** How a touched object relates to a live query's result (internal). */
export function kindOf(
  compiled: CompiledQuery,
  old: Entry | undefined,
  fresh: Entry | undefined,
): Kind {
  return old === undefined
    ? "enter"
    : fresh === undefined
    ? "leave"
    : compiled.sorted && compiled.compareKeys(old.keys, fresh.keys) !== 0
    ? "move"
    : "stay";
}

/** One touched object's place before and after a commit. */
export interface Touched {
  kind: Kind;
  old: Entry | undefined;
  fresh: Entry | undefined;
  oldIndex: number;
  newIndex: number;
}

/**
 * The change set of a live query's window, from the touched objects'
 * positions before and after. Untouched objects and objects whose sort
 * keys did not change ("survivors") keep their relative order; the window
 * over the survivor sequence tells which untouched objects slid in or out
 * at its edges.
 */
export function diffWindow(
  touched: Touched[],
  oldLength: number,
  newLength: number,
  compiled: CompiledQuery,
): CollectionChanges {
  const offset = compiled.offset;
  const oldStart = Math.min(offset, oldLength);
  const oldEnd = Math.min(offset + compiled.limit, oldLength);
  const newStart = Math.min(offset, newLength);
  const newEnd = Math.min(offset + compiled.limit, newLength);
  let moves = 0;
  for (let i = 0; i < touched.length; i++) {
    if (touched[i]!.kind === "move") moves++;
  }
  // A position past the window's end counts for nothing below: leaving it
  // out keeps a big batch's arrays and sorts to the window's size. (Only
  // telling whether moved objects kept their rank needs every position.)
  const oldOthers = others(touched, "leave", moves > 0 ? -1 : oldEnd);
  const newOthers = others(touched, "enter", moves > 0 ? -1 : newEnd);
  // Objects whose sort keys changed are reported as modifications when
  // they all kept their rank among survivors, else as moves.
  let movedSurvive = true;
  for (let i = 0; i < touched.length && movedSurvive; i++) {
    const item = touched[i]!;
    movedSurvive = item.kind !== "move" ||
      rankOf(item.oldIndex, oldOthers) === rankOf(item.newIndex, newOthers);
  }
  if (!movedSurvive) {
    for (let i = 0; i < touched.length; i++) {
      const item = touched[i]!;
      if (item.kind !== "move") continue;
      oldOthers.push(item.oldIndex);
      newOthers.push(item.newIndex);
    }
    sortAscending(oldOthers);
    sortAscending(newOthers);
  }
  const oldFirst = rankOf(oldStart, oldOthers);
  const oldLast = rankOf(oldEnd, oldOthers);
  const newFirst = rankOf(newStart, newOthers);
  const newLast = rankOf(newEnd, newOthers);
  const keptFirst = Math.max(oldFirst, newFirst);
  const keptLast = Math.max(keptFirst, Math.min(oldLast, newLast));
  const deletions = edges(
    oldOthers,
    oldStart,
    oldEnd,
    offset,
    oldFirst,
    oldLast,
    keptFirst,
    keptLast,
  );
  const insertions = edges(
    newOthers,
    newStart,
    newEnd,
    offset,
    newFirst,
    newLast,
    keptFirst,
    keptLast,
  );
  const modifications: number[] = [];
  for (let i = 0; i < touched.length; i++) {
    const item = touched[i]!;
    if (item.kind === "stay" || (item.kind === "move" && movedSurvive)) {
      const rank = rankOf(item.newIndex, newOthers);
      if (rank >= keptFirst && rank < keptLast) {
        modifications.push(item.newIndex - offset);
      }
    }
  }
  sortAscending(modifications);
  return { insertions, deletions, modifications };
}

/**
 * The ascending positions (old ones for `leave`, new ones for `enter`) of
 * the touched objects of one kind: those below `end`, or all when `end` is
 * -1.
 */
function others(touched: Touched[], kind: Kind, end: number): number[] {
  let count = 0;
  for (let i = 0; i < touched.length; i++) {
    if (touched[i]!.kind === kind && (end === -1 || at(touched[i]!) < end)) {
      count++;
    }
  }
  // Sized once (see `edges`).
  const positions = new Array<number>(count);
  let k = 0;
  for (let i = 0; i < touched.length; i++) {
    if (touched[i]!.kind === kind && (end === -1 || at(touched[i]!) < end)) {
      positions[k++] = at(touched[i]!);
    }
  }
  sortAscending(positions);
  return positions;
}

/**
 * One side's window-relative indexes that changed (deletions from the old
 * side, insertions from the new): the touched objects' positions in the
 * window, and the survivors of ranks `first` to `last` outside the ranks
 * `keptFirst` to `keptLast` (those that slid in or out at an edge).
 */
function edges(
  others: readonly number[],
  start: number,
  end: number,
  offset: number,
  first: number,
  last: number,
  keptFirst: number,
  keptLast: number,
): number[] {
  let inside = 0;
  for (let i = 0; i < others.length; i++) {
    if (others[i]! >= start && others[i]! < end) inside++;
  }
  // Sized once: grown by `push`, a list allocates 17 places for its first
  // item and copies itself as it grows (a change set is made per commit).
  const changed = new Array<number>(
    inside + Math.max(0, Math.min(last, keptFirst) - first) +
      Math.max(0, last - Math.max(first, keptLast)),
  );
  let k = 0;
  for (let i = 0; i < others.length; i++) {
    const index = others[i]!;
    if (index >= start && index < end) changed[k++] = index - offset;
  }
  for (let rank = first; rank < Math.min(last, keptFirst); rank++) {
    changed[k++] = indexOfRank(rank, others) - offset;
  }
  for (let rank = Math.max(first, keptLast); rank < last; rank++) {
    changed[k++] = indexOfRank(rank, others) - offset;
  }
  sortAscending(changed);
  return changed;
}
