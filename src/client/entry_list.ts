// This module is browser compatible.

/**
 * A sorted list of blocks: the result of one live query, patched per
 * touched object in O(log n + block size) and snapshotted in O(blocks)
 * (copy-on-write per block), so neither costs time in the size of the
 * result.
 */

/** Largest block before it is split in two (by default). */
const MAX_BLOCK = 512;

/** A sorted sequence of items in blocks (internal). */
export class BlockList<T> {
  #maxBlock: number;
  #blocks: T[][] = [];
  /** Blocks created since the last snapshot (the others are shared). */
  #owned = new Set<T[]>();
  #length = 0;
  /** Index of each block's first item; recomputed after a change. */
  #starts: number[] | undefined;

  /** @param maxBlock Largest block before it is split (tests use small). */
  constructor(maxBlock: number = MAX_BLOCK) {
    this.#maxBlock = Math.max(2, maxBlock);
  }

  /** Builds a list from items already in order. */
  static from<T>(items: readonly T[], maxBlock?: number): BlockList<T> {
    const list = new BlockList<T>(maxBlock);
    const half = list.#maxBlock >>> 1;
    for (let start = 0; start < items.length; start += half) {
      const block = items.slice(start, start + half);
      list.#blocks.push(block);
      list.#owned.add(block);
    }
    list.#length = items.length;
    return list;
  }

  /** Number of items. */
  get length(): number {
    return this.#length;
  }

  /** Every item, in order (a new array). */
  toArray(): T[] {
    return this.#blocks.flat() as T[];
  }

  /**
   * The blocks as they are now, for a reader; later changes copy a block
   * before changing it, so what a snapshot holds never changes.
   */
  snapshot(): readonly (readonly T[])[] {
    this.#owned.clear();
    return this.#blocks.slice();
  }

  /**
   * The index of the first item not below `item` (`item` itself when it is
   * in the list).
   */
  lowerBound(item: T, compare: (a: T, b: T) => number): number {
    const { block, offset } = this.#locate(item, compare);
    if (block === this.#blocks.length) return this.#length;
    if (this.#starts === undefined) {
      // Lookups come in runs between changes (a transaction's old
      // positions, then its new ones): one pass serves the whole run.
      const starts = new Array<number>(this.#blocks.length);
      let start = 0;
      for (let b = 0; b < this.#blocks.length; b++) {
        starts[b] = start;
        start += this.#blocks[b]!.length;
      }
      this.#starts = starts;
    }
    return this.#starts[block]! + offset;
  }

  /** Inserts `item` at its place in the order. */
  insert(item: T, compare: (a: T, b: T) => number): void {
    if (this.#blocks.length === 0) {
      this.#starts = undefined;
      const block = [item];
      this.#blocks.push(block);
      this.#owned.add(block);
      this.#length = 1;
      return;
    }
    let { block, offset } = this.#locate(item, compare);
    if (block === this.#blocks.length) {
      block--;
      offset = this.#blocks[block]!.length;
    }
    const items = this.#insertInto(block, offset, item);
    this.#length++;
    if (items.length > this.#maxBlock) {
      const tail = items.splice(this.#maxBlock >>> 1);
      this.#blocks.splice(block + 1, 0, tail);
      this.#owned.add(tail);
    }
  }

  /** The item at `index`. */
  at(index: number): T {
    const { block, offset } = this.#at(index);
    return this.#blocks[block]![offset]!;
  }

  /** Replaces the item at `index` (the order must not change). */
  replaceAt(index: number, item: T): void {
    const { block, offset } = this.#at(index);
    this.#own(block)[offset] = item;
  }

  /**
   * Keeps the first `length` items and returns the rest, in order (only
   * they are copied).
   */
  dropFrom(length: number): T[] {
    const dropped: T[] = [];
    if (length >= this.#length) return dropped;
    let skip = length;
    for (const block of this.#blocks) {
      if (skip >= block.length) {
        skip -= block.length;
        continue;
      }
      for (let index = skip; index < block.length; index++) {
        dropped.push(block[index]!);
      }
      skip = 0;
    }
    this.truncate(length);
    return dropped;
  }

  /** Keeps the first `length` items and drops the rest. */
  truncate(length: number): void {
    if (length >= this.#length) return;
    this.#starts = undefined;
    let kept = 0;
    let block = 0;
    while (block < this.#blocks.length) {
      const size = this.#blocks[block]!.length;
      if (kept + size > length) break;
      kept += size;
      block++;
    }
    if (kept < length) {
      this.#own(block).length = length - kept;
      block++;
    }
    this.#blocks.length = block;
    this.#length = length;
  }

  /** Removes the item at `index`. */
  removeAt(index: number): void {
    const { block, offset } = this.#at(index);
    const items = this.#removeFrom(block, offset);
    this.#length--;
    if (items.length === 0) this.#blocks.splice(block, 1);
  }

  /**
   * Inserts `item` into a block at `offset` and returns the block. A block
   * shared with a snapshot becomes an exact-size copy with the item in it:
   * one allocation, where a copy and then a splice would also allocate a
   * bigger store for the grown copy (a live query meets this once per
   * block per commit).
   */
  #insertInto(block: number, offset: number, item: T): T[] {
    this.#starts = undefined;
    const items = this.#blocks[block]!;
    if (this.#owned.has(items)) {
      items.splice(offset, 0, item);
      return items;
    }
    return this.#adopt(block, items.toSpliced(offset, 0, item));
  }

  /** Removes the item at `offset` of a block, as `#insertInto` inserts. */
  #removeFrom(block: number, offset: number): T[] {
    this.#starts = undefined;
    const items = this.#blocks[block]!;
    if (this.#owned.has(items)) {
      items.splice(offset, 1);
      return items;
    }
    return this.#adopt(block, items.toSpliced(offset, 1));
  }

  /** Puts `items`, a new array, in place of a block. */
  #adopt(block: number, items: T[]): T[] {
    this.#blocks[block] = items;
    this.#owned.add(items);
    return items;
  }

  #own(block: number): T[] {
    this.#starts = undefined;
    const items = this.#blocks[block]!;
    if (this.#owned.has(items)) return items;
    return this.#adopt(block, items.slice());
  }

  #at(index: number): { block: number; offset: number } {
    let offset = index;
    for (let block = 0; block < this.#blocks.length; block++) {
      const size = this.#blocks[block]!.length;
      if (offset < size) return { block, offset };
      offset -= size;
    }
    throw new RangeError(`Index ${index} is outside the list`);
  }

  /** The block that holds (or would hold) `item`, and the offset in it. */
  #locate(
    item: T,
    compare: (a: T, b: T) => number,
  ): { block: number; offset: number } {
    const blocks = this.#blocks;
    let low = 0;
    let high = blocks.length;
    // First block whose last item is not below `item`.
    while (low < high) {
      const middle = (low + high) >>> 1;
      const items = blocks[middle]!;
      if (compare(items[items.length - 1]!, item) < 0) low = middle + 1;
      else high = middle;
    }
    if (low === blocks.length) return { block: low, offset: 0 };
    const items = blocks[low]!;
    let first = 0;
    let last = items.length;
    while (first < last) {
      const middle = (first + last) >>> 1;
      if (compare(items[middle]!, item) < 0) first = middle + 1;
      else last = middle;
    }
    return { block: low, offset: first };
  }
}
