/**
 * A sorted set of strings in chunks of a few hundred, so that an insertion
 * anywhere moves at most one chunk's elements rather than the whole set.
 */

/** The largest chunk before it splits in two. */
const CHUNK_MAX = 512;

/**
 * Strings kept in code-unit order (`<`), each once. Insertion, removal and
 * finding a position cost a binary search over the chunks plus a move
 * within one chunk.
 *
 * @example Listing a range
 * ```ts
 * import { SortedStrings } from "./sorted_strings.ts";
 *
 * const set = new SortedStrings();
 * for (const s of ["b", "d", "a", "c"]) set.add(s);
 * console.log(set.range("b", "d", 10, false)); // ["b", "c"]
 * ```
 */
export class SortedStrings {
  #chunks: string[][] = [];
  #size = 0;

  /** How many strings the set holds. */
  get size(): number {
    return this.#size;
  }

  /** Adds `value`; false when it was there already. */
  add(value: string): boolean {
    const chunks = this.#chunks;
    if (chunks.length === 0) {
      chunks.push([value]);
      this.#size = 1;
      return true;
    }
    const c = this.#chunkFor(value);
    const chunk = chunks[c]!;
    const at = lowerBound(chunk, value);
    if (chunk[at] === value) return false;
    chunk.splice(at, 0, value);
    this.#size++;
    if (chunk.length > CHUNK_MAX) {
      chunks.splice(c + 1, 0, chunk.splice(chunk.length >> 1));
    }
    return true;
  }

  /** Removes `value`; false when it was not there. */
  delete(value: string): boolean {
    const chunks = this.#chunks;
    if (chunks.length === 0) return false;
    const c = this.#chunkFor(value);
    const chunk = chunks[c]!;
    const at = lowerBound(chunk, value);
    if (chunk[at] !== value) return false;
    chunk.splice(at, 1);
    this.#size--;
    if (chunk.length === 0) chunks.splice(c, 1);
    return true;
  }

  /**
   * Up to `limit` strings `s` with `start <= s < end`, ascending, or the
   * last `limit` of them descending when `reverse` is set.
   */
  range(start: string, end: string, limit: number, reverse: boolean): string[] {
    const found: string[] = [];
    const chunks = this.#chunks;
    if (chunks.length === 0 || !(start < end) || limit <= 0) return found;
    if (!reverse) {
      let c = this.#chunkFor(start);
      let i = lowerBound(chunks[c]!, start);
      for (; c < chunks.length; c++, i = 0) {
        const chunk = chunks[c]!;
        for (; i < chunk.length; i++) {
          const value = chunk[i]!;
          if (!(value < end) || found.length === limit) return found;
          found.push(value);
        }
      }
      return found;
    }
    let c = this.#chunkFor(end);
    let i = lowerBound(chunks[c]!, end) - 1;
    for (; c >= 0; c--, i = c >= 0 ? chunks[c]!.length - 1 : 0) {
      const chunk = chunks[c]!;
      for (; i >= 0; i--) {
        const value = chunk[i]!;
        if (value < start || found.length === limit) return found;
        found.push(value);
      }
    }
    return found;
  }

  /** The chunk where `value` is or would go: the first whose last is >= it. */
  #chunkFor(value: string): number {
    const chunks = this.#chunks;
    let low = 0;
    let high = chunks.length - 1;
    while (low < high) {
      const middle = (low + high) >> 1;
      const chunk = chunks[middle]!;
      if (chunk[chunk.length - 1]! < value) low = middle + 1;
      else high = middle;
    }
    return low;
  }
}

/** The first index of `sorted` whose element is not below `value`. */
function lowerBound(sorted: readonly string[], value: string): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (sorted[middle]! < value) low = middle + 1;
    else high = middle;
  }
  return low;
}
