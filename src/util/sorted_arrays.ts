// This module is browser compatible.

/**
 * Small operations on arrays kept in an order: merging two sorted lists,
 * selecting the smallest items, and dropping items by position.
 */

/** Merges two lists sorted by `compare` (`b` itself when `a` is empty). */
export function merge<T>(
  a: T[],
  b: T[],
  compare: (x: T, y: T) => number,
): T[] {
  if (a.length === 0) return b;
  const out = new Array<T>(a.length + b.length);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < a.length && j < b.length) {
    out[k++] = compare(a[i]!, b[j]!) <= 0 ? a[i++]! : b[j++]!;
  }
  while (i < a.length) out[k++] = a[i++]!;
  while (j < b.length) out[k++] = b[j++]!;
  return out;
}

/** `items` without those at `indexes` (ascending); `items` if none. */
export function withoutIndexes<T>(items: T[], indexes: readonly number[]): T[] {
  if (indexes.length === 0) return items;
  const rest: T[] = [];
  let next = 0;
  for (let index = 0; index < items.length; index++) {
    if (indexes[next] === index) next++;
    else rest.push(items[index]!);
  }
  return rest;
}

/**
 * Reorders `items` so that its first `count` are the smallest (in any
 * order): Hoare's selection, linear on average, where a sort is not.
 */
export function selectFirst<T>(
  items: T[],
  count: number,
  compare: (a: T, b: T) => number,
): void {
  selectFirstAgainst(items, 0, count, same, compare);
}

function same<T>(item: T): T {
  return item;
}

/**
 * Reorders `items[from..]` so that its first `count` are the smallest of
 * them (in any order), as {@linkcode selectFirst} does, but each round
 * compares the items with a pivot that `pivotOf` prepares from one of
 * them: for items cheaper to compare with a prepared key than to prepare
 * each (a live query's entering objects against one extracted sort key).
 * `compare(item, pivotOf(item))` must be 0: the pivot bounds each scan.
 */
export function selectFirstAgainst<T, P>(
  items: T[],
  from: number,
  count: number,
  pivotOf: (item: T) => P,
  compare: (item: T, pivot: P) => number,
): void {
  const target = from + count - 1;
  let low = from;
  let high = items.length - 1;
  while (low < high) {
    const pivot = pivotOf(items[(low + high) >>> 1]!);
    let i = low;
    let j = high;
    while (i <= j) {
      while (compare(items[i]!, pivot) < 0) i++;
      while (compare(items[j]!, pivot) > 0) j--;
      if (i <= j) {
        const swap = items[i]!;
        items[i++] = items[j]!;
        items[j--] = swap;
      }
    }
    if (target <= j) high = j;
    else if (target >= i) low = i;
    else return;
  }
}
