// This module is browser compatible.

/**
 * The encoder's side of a block's string table (PROTOCOL.md §5.2): string
 * to index, reset for every block.
 *
 * Why not a `Map`: clearing a `Map` and growing it again for every message
 * cost more than the rest of encoding a small message (PERFORMANCE.md). This
 * table is open addressing over arrays that survive between blocks; a
 * generation number marks which slots belong to the current block, so a
 * reset touches only the slots used.
 *
 * The hash samples a few characters, which is cheap but lets crafted strings
 * collide. So a probe gives up after {@linkcode MAX_PROBES} slots and the
 * string goes to an overflow `Map` instead: colliding input costs a `Map`
 * operation per string, never a quadratic scan.
 */

const MAX_PROBES = 16;
const INITIAL_CAPACITY = 256;

/**
 * Cheap hash of a string's length and its first two and last two
 * characters (random hex digits in a UUID, the varying end of a counter).
 */
function sampleHash(text: string): number {
  const length = text.length;
  let hash = Math.imul(length, 0x9e3779b1);
  if (length > 1) {
    hash = Math.imul(
      hash ^ (text.charCodeAt(0) | (text.charCodeAt(1) << 16)),
      0x85ebca6b,
    );
    hash = Math.imul(
      hash ^
        (text.charCodeAt(length - 1) | (text.charCodeAt(length - 2) << 16)),
      0xc2b2ae35,
    );
  } else if (length === 1) {
    hash = Math.imul(hash ^ text.charCodeAt(0), 0x85ebca6b);
  }
  return hash ^ (hash >>> 15);
}

/** String to table index for one block at a time. */
export class StringTable {
  /** Number of strings added since the last reset. */
  size = 0;
  #capacity = INITIAL_CAPACITY;
  #keys: string[] = new Array(INITIAL_CAPACITY).fill("");
  #indexes = new Int32Array(INITIAL_CAPACITY);
  #generations = new Int32Array(INITIAL_CAPACITY);
  #generation = 1;
  /** Slot of each index, so a reset can drop the strings it holds. */
  #slots = new Int32Array(INITIAL_CAPACITY);
  #overflow: Map<string, number> | null = null;

  /**
   * Returns the index of `text` if the table holds it; otherwise adds it
   * and returns `-1 - index` of the new entry.
   */
  lookupOrAdd(text: string): number {
    const mask = this.#capacity - 1;
    const keys = this.#keys;
    const generations = this.#generations;
    const generation = this.#generation;
    let slot = sampleHash(text) & mask;
    for (let probe = 0; probe < MAX_PROBES; probe++) {
      if (generations[slot] !== generation) {
        // A string that once overflowed stays in the overflow map, even if
        // a rehash has since made room in its probe sequence.
        const overflowed = this.#overflow?.get(text);
        if (overflowed !== undefined) return overflowed;
        return this.#addAt(slot, text);
      }
      if (keys[slot] === text) return this.#indexes[slot]!;
      slot = (slot + 1) & mask;
    }
    this.#overflow ??= new Map();
    const overflowed = this.#overflow.get(text);
    if (overflowed !== undefined) return overflowed;
    const index = this.size++;
    this.#overflow.set(text, index);
    return -1 - index;
  }

  #addAt(slot: number, text: string): number {
    const index = this.size++;
    this.#keys[slot] = text;
    this.#indexes[slot] = index;
    this.#generations[slot] = this.#generation;
    if (index >= this.#slots.length) {
      const slots = new Int32Array(this.#slots.length * 2);
      slots.set(this.#slots);
      this.#slots = slots;
    }
    this.#slots[index] = slot;
    if (this.size * 2 > this.#capacity) this.#grow();
    return -1 - index;
  }

  #grow(): void {
    const oldKeys = this.#keys;
    const oldIndexes = this.#indexes;
    const oldGenerations = this.#generations;
    const generation = this.#generation;
    const capacity = this.#capacity * 2;
    const mask = capacity - 1;
    this.#capacity = capacity;
    this.#keys = new Array(capacity).fill("");
    this.#indexes = new Int32Array(capacity);
    this.#generations = new Int32Array(capacity);
    for (let old = 0; old < oldKeys.length; old++) {
      if (oldGenerations[old] !== generation) continue;
      const text = oldKeys[old]!;
      let slot = sampleHash(text) & mask;
      // Rehashing into twice the room cannot fill a probe sequence that
      // fitted before, but bound the walk all the same.
      while (this.#generations[slot] === generation) slot = (slot + 1) & mask;
      this.#keys[slot] = text;
      this.#indexes[slot] = oldIndexes[old]!;
      this.#generations[slot] = generation;
      this.#slots[oldIndexes[old]!] = slot;
    }
  }

  /** Empties the table, dropping its references to the strings. */
  reset(): void {
    const keys = this.#keys;
    const slots = this.#slots;
    const generations = this.#generations;
    for (let index = 0; index < this.size; index++) {
      const slot = slots[index]!;
      if (generations[slot] === this.#generation && keys[slot] !== "") {
        keys[slot] = "";
      }
    }
    this.size = 0;
    this.#overflow = null;
    if (++this.#generation === 0x7fffffff) {
      this.#generation = 1;
      this.#generations.fill(0);
    }
  }
}
