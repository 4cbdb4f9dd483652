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
  for (const other of others) {
    if (other <= index) index++;
    else break;
  }
  return index;
}

/** Sorts numbers ascending. */
export const ascending = (a: number, b: number): number => a - b;

/** How a touched object relates to the result. */
export type Kind = "stay" | "move" | "leave" | "enter";

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
