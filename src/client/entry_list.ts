// This module is browser compatible.

/**
 * A sorted list of blocks: the result of one live query, patched per
 * touched object in O(log n + block size) and snapshotted in O(blocks)
 * (copy-on-write per block), so neither costs time in the size of the
 * result.
 */

/** Largest block before it is split in two (by default). */
const MAX_BLOCK = 512;

/**
 * The least a block copied from a snapshot's is cut to (see
 * `#mergeInto`): blocks of about twice the square root of the list's
 * length, never below this, keep both a commit's copies and a snapshot's
 * list of blocks small.
 */
const MIN_COPIED = 32;

/** A sorted sequence of items in blocks (internal). */
export class BlockList<T> {
  #maxBlock: number;
  #blocks: T[][] = [];
  /** Blocks created since the last snapshot (the others are shared). */
  #owned = new Set<T[]>();
  #length = 0;
  /** The offset in its block of the item `#at` or `#locate` found. */
  #offset = 0;
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
    const block = this.#locate(item, compare);
    const offset = this.#offset;
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
    let block = this.#locate(item, compare);
    let offset = this.#offset;
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

  /**
   * Inserts `items` (in order, none equal to an item of the list) at their
   * places, as {@linkcode insert} would one by one; but a block shared
   * with a snapshot is copied once with every item it takes, at its exact
   * size, rather than copied for the first and grown for the next.
   */
  insertAll(items: readonly T[], compare: (a: T, b: T) => number): void {
    for (let from = 0; from < items.length;) {
      let block = this.#blocks.length === 0
        ? -1
        : this.#locate(items[from]!, compare);
      if (block === this.#blocks.length) block--;
      if (block === -1 || this.#owned.has(this.#blocks[block]!)) {
        this.insert(items[from++]!, compare);
        continue;
      }
      // The items up to the block's last one (the rest, into the last).
      const target = this.#blocks[block]!;
      const last = target[target.length - 1]!;
      const open = block === this.#blocks.length - 1;
      let to = from + 1;
      while (to < items.length && (open || compare(items[to]!, last) < 0)) to++;
      this.#mergeInto(block, items, from, to, compare);
      from = to;
    }
  }

  /** The item at `index`. */
  at(index: number): T {
    const block = this.#at(index);
    const offset = this.#offset;
    return this.#blocks[block]![offset]!;
  }

  /** Replaces the item at `index` (the order must not change). */
  replaceAt(index: number, item: T): void {
    const block = this.#at(index);
    const offset = this.#offset;
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
    const block = this.#at(index);
    const offset = this.#offset;
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

  /**
   * Replaces a block by a new one, exactly sized, that holds its items and
   * `items[from]` to `items[to - 1]` in order (split when too big).
   */
  #mergeInto(
    block: number,
    items: readonly T[],
    from: number,
    to: number,
    compare: (a: T, b: T) => number,
  ): void {
    const old = this.#blocks[block]!;
    const merged = new Array<T>(old.length + to - from);
    // Old items copied so far, and items written.
    let copied = 0;
    let k = 0;
    for (let b = from; b < to; b++) {
      const item = items[b]!;
      // Its place by a search, not a comparison per item of the block
      // (before an equal one, as `insert` puts it).
      let low = copied;
      let high = old.length;
      while (low < high) {
        const middle = (low + high) >>> 1;
        if (compare(old[middle]!, item) < 0) low = middle + 1;
        else high = middle;
      }
      while (copied < low) merged[k++] = old[copied++]!;
      merged[k++] = item;
    }
    while (copied < old.length) merged[k++] = old[copied++]!;
    this.#length += to - from;
    this.#starts = undefined;
    // A copy is paid for anyway: when the list is short for its blocks,
    // cut the copy in smaller blocks, so that the next commit to a short
    // list copies a few items rather than the whole list again.
    const most = Math.min(
      this.#maxBlock,
      Math.max(MIN_COPIED, 2 * Math.ceil(Math.sqrt(this.#length))),
    );
    if (merged.length <= most) {
      this.#adopt(block, merged);
      return;
    }
    const pieces: T[][] = [];
    const half = most >>> 1;
    for (let start = 0; start < merged.length; start += half) {
      const piece = merged.slice(start, start + half);
      pieces.push(piece);
      this.#owned.add(piece);
    }
    this.#blocks.splice(block, 1, ...pieces);
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

  /**
   * The block that holds the item at `index`; the offset in it is left in
   * `#offset` (no result object: this runs per touched object).
   */
  #at(index: number): number {
    let offset = index;
    for (let block = 0; block < this.#blocks.length; block++) {
      const size = this.#blocks[block]!.length;
      if (offset < size) {
        this.#offset = offset;
        return block;
      }
      offset -= size;
    }
    throw new RangeError(`Index ${index} is outside the list`);
  }

  /**
   * The block that holds (or would hold) `item`; the offset in it is left
   * in `#offset`.
   */
  #locate(item: T, compare: (a: T, b: T) => number): number {
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
    this.#offset = 0;
    if (low === blocks.length) return low;
    const items = blocks[low]!;
    let first = 0;
    let last = items.length;
    while (first < last) {
      const middle = (first + last) >>> 1;
      if (compare(items[middle]!, item) < 0) first = middle + 1;
      else last = middle;
    }
    this.#offset = first;
    return low;
  }
}
