/**
 * The server's in-memory store for `kv: ":memory:"`: the part of `Deno.Kv`
 * the server uses, kept in this process's heap, so that a commit is work
 * on the server's own thread rather than a wake-up of Deno KV's.
 */

import { SortedStrings } from "../../util/sorted_strings.ts";
import {
  decodeKey,
  type EncodedKey,
  encodeKey,
  MAX_READ_KEY_BYTES,
  MAX_WRITE_KEY_BYTES,
} from "./kv_key_encoding.ts";
import type { ServerKv } from "./kv_store.ts";

// Deno KV's limits, which the server's storage code is written to keep
// (docs/ARCHITECTURE.md "Server storage"): kept here too, so that a test on
// `":memory:"` still fails where the server would overrun a real store.
const MAX_VALUE_BYTES = 65_536;
const MAX_CHECKS = 100;
const MAX_MUTATIONS = 1_000;
const MAX_TOTAL_MUTATION_BYTES = 819_200;
const MAX_READ_RANGES = 10;
const DEFAULT_LIST_BATCH = 100;
const MAX_LIST_BATCH = 1_000;
// How long the store's operations may hold the thread before one waits
// for a timer. Deno KV's operations each wait for its thread, and the event
// loop (sockets included) turns meanwhile: a session sending a long history,
// a snapshot advance working piece by piece or an admin read of a large
// realm let every other socket in between. Operations here resolve at once,
// so a chain of them would hold the thread until it ended.
const SLICE_MS = 8;

interface Stored {
  value: unknown;
  versionstamp: string;
}

/**
 * An ordered key-value store in memory with Deno KV's semantics for what
 * the server uses: keys ordered as Deno KV orders them, values copied in
 * and out (structured clone), versionstamps that grow with each commit,
 * atomic operations with checks and Deno KV's limits, paged and reversed
 * listing with cursors, `sum`/`min`/`max` on `Deno.KvU64`, and `watch`.
 * Queues and expiry are not supported (the server uses neither).
 *
 * Nothing is durable: the data lives as long as the object.
 *
 * @example Committing and reading back
 * ```ts
 * import { MemoryKv } from "./memory_kv.ts";
 *
 * const kv = new MemoryKv();
 * const result = await kv.atomic()
 *   .check({ key: ["head"], versionstamp: null })
 *   .set(["head"], { version: 1 })
 *   .commit();
 * console.log(result.ok, (await kv.get(["head"])).value); // true { version: 1 }
 * kv.close();
 * ```
 */
export class MemoryKv implements ServerKv {
  #entries = new Map<string, Stored>();
  #order = new SortedStrings();
  #version = 0n;
  #closed = false;
  #watchers = new Set<Watcher>();
  #slice: Slice | null = null;

  /** Reads one key. */
  async get<T = unknown>(key: Deno.KvKey): Promise<Deno.KvEntryMaybe<T>> {
    this.#open();
    const sortable = readKey(key);
    await this.#turn();
    this.#open();
    return this.#read<T>(sortable, key);
  }

  /** Reads up to ten keys, consistently. */
  async getMany<T extends readonly unknown[]>(
    keys: readonly [...{ [K in keyof T]: Deno.KvKey }],
  ): Promise<{ [K in keyof T]: Deno.KvEntryMaybe<T[K]> }> {
    this.#open();
    if (keys.length > MAX_READ_RANGES) {
      throw new TypeError(`Too many ranges (max ${MAX_READ_RANGES})`);
    }
    const encoded = keys.map((key) => readKey(key));
    await this.#turn();
    this.#open();
    return encoded.map((sortable, i) => this.#read(sortable, keys[i])) as {
      [K in keyof T]: Deno.KvEntryMaybe<T[K]>;
    };
  }

  /**
   * Lists a range in pages of `batchSize` (default 100), each page read at
   * once; like Deno KV, pages are not one snapshot. The cursor, once the
   * iteration started, resumes after the last entry returned ("" when the
   * range is exhausted).
   */
  list<T = unknown>(
    selector: Deno.KvListSelector,
    options: Deno.KvListOptions = {},
  ): Deno.KvListIterator<T> {
    this.#open();
    const bounds = rangeOf(selector);
    if (options.cursor !== undefined && options.cursor !== "") {
      const after = decodeCursor(options.cursor, bounds);
      if (options.reverse) bounds.end = after;
      else bounds.start = after + "\x00";
    }
    const batch = options.batchSize ?? Math.min(
      options.limit ?? DEFAULT_LIST_BATCH,
      DEFAULT_LIST_BATCH,
    );
    if (!Number.isInteger(batch) || batch < 1 || batch > MAX_LIST_BATCH) {
      throw new TypeError(
        `batchSize must be an integer from 1 to ${MAX_LIST_BATCH}`,
      );
    }
    return new MemoryListIterator<T>(
      async (range, limit, reverse) => {
        await this.#turn();
        return this.#page(range, limit, reverse);
      },
      bounds,
      options.limit ?? Infinity,
      options.reverse === true,
      batch,
    );
  }

  /** Starts an atomic operation. */
  atomic(): Deno.AtomicOperation {
    return new MemoryAtomic(async (checks, mutations) => {
      this.#open();
      await this.#turn();
      return this.#commit(checks, mutations);
    });
  }

  /**
   * A stream of the keys' entries: their current entries first, then again
   * after each commit that wrote one of them (commits that land before the
   * reader pulls are seen as one item, as Deno KV may).
   */
  watch<T extends readonly unknown[]>(
    keys: readonly [...{ [K in keyof T]: Deno.KvKey }],
  ): ReadableStream<{ [K in keyof T]: Deno.KvEntryMaybe<T[K]> }> {
    this.#open();
    if (keys.length > MAX_READ_RANGES) {
      throw new TypeError(`Too many keys (max ${MAX_READ_RANGES})`);
    }
    const encoded = keys.map((key) => readKey(key));
    const watcher: Watcher = {
      keys: new Set(encoded),
      dirty: true,
      live: true,
      wake: null,
    };
    const watchers = this.#watchers;
    return new ReadableStream({
      start: () => {
        watchers.add(watcher);
      },
      pull: async (controller) => {
        while (!watcher.dirty && !this.#closed && watcher.live) {
          await new Promise<void>((resolve) => watcher.wake = resolve);
        }
        if (this.#closed) {
          watchers.delete(watcher);
          controller.close();
          return;
        }
        watcher.dirty = false;
        controller.enqueue(
          encoded.map((sortable, i) => this.#read(sortable, keys[i])) as {
            [K in keyof T]: Deno.KvEntryMaybe<T[K]>;
          },
        );
      },
      cancel: () => {
        watcher.live = false;
        watchers.delete(watcher);
        watcher.wake?.();
      },
    }, { highWaterMark: 0 });
  }

  /** Closes the store: every later call throws, every watch ends. */
  close(): void {
    this.#closed = true;
    const slice = this.#slice;
    if (slice !== null) {
      this.#slice = null;
      clearImmediate(slice.immediate);
      if (slice.wait !== null) {
        clearTimeout(slice.wait.timer);
        // Whatever waits for it goes on, to find the store closed.
        slice.wait.resolve();
      }
    }
    for (const watcher of this.#watchers) watcher.wake?.();
  }

  /**
   * Resolves at once, unless operations have gone on for `SLICE_MS` without
   * the event loop turning: then after a timer, which fires once the loop
   * has read the sockets. An immediate set at a slice's first operation
   * tells that the loop turned (it runs once the operations' microtasks
   * stop); it costs about a microsecond, where a timer per slice cost tens
   * and woke the loop again a millisecond or two later. A timer is what
   * makes Deno poll the sockets: a `MessageChannel` message does not (a
   * WebSocket message waited 200 ms behind such yields in a probe).
   */
  #turn(): Promise<void> | undefined {
    const now = performance.now();
    const slice = this.#slice;
    if (slice === null) {
      const started: Slice = {
        started: now,
        immediate: setImmediate(() => {
          if (this.#slice === started) this.#slice = null;
        }),
        wait: null,
      };
      this.#slice = started;
      return undefined;
    }
    if (now - slice.started < SLICE_MS) return undefined;
    if (slice.wait === null) {
      const { promise, resolve } = Promise.withResolvers<void>();
      slice.wait = {
        passed: promise,
        resolve,
        timer: setTimeout(() => {
          if (this.#slice === slice) this.#slice = null;
          resolve();
        }, 0),
      };
    }
    return slice.wait.passed;
  }

  #page(bounds: Bounds, limit: number, reverse: boolean): Page {
    this.#open();
    const keys = this.#order.range(bounds.start, bounds.end, limit, reverse);
    const entries = keys.map((sortable) => {
      const stored = this.#entries.get(sortable)!;
      return {
        key: decodeKey(sortable),
        value: copyValue(stored.value),
        versionstamp: stored.versionstamp,
      };
    });
    return { entries, last: keys.at(-1) ?? null };
  }

  #commit(
    checks: readonly Deno.AtomicCheck[],
    mutations: readonly Deno.KvMutation[],
  ): Deno.KvCommitResult | Deno.KvCommitError {
    this.#open();
    if (checks.length > MAX_CHECKS) {
      throw new TypeError(`Too many checks (max ${MAX_CHECKS})`);
    }
    if (mutations.length > MAX_MUTATIONS) {
      throw new TypeError(`Too many mutations (max ${MAX_MUTATIONS})`);
    }
    const written: { key: EncodedKey; mutation: Deno.KvMutation }[] = [];
    let total = 0;
    for (const mutation of mutations) {
      const key = writeKey(mutation.key);
      total += key.bytes;
      if (mutation.type === "set") {
        const size = valueSize(mutation.value);
        if (size > MAX_VALUE_BYTES) {
          throw new TypeError(`Value too large (max ${MAX_VALUE_BYTES} bytes)`);
        }
        total += size;
      } else if (mutation.type !== "delete") {
        if (!(mutation.value instanceof Deno.KvU64)) {
          throw new TypeError(`Invalid mutation '${mutation.type}' value`);
        }
        total += 8;
      }
      written.push({ key, mutation });
    }
    if (total > MAX_TOTAL_MUTATION_BYTES) {
      throw new TypeError(
        `Total mutation size too large (max ${MAX_TOTAL_MUTATION_BYTES} bytes)`,
      );
    }
    for (const check of checks) {
      const current = this.#entries.get(readKey(check.key))?.versionstamp ??
        null;
      if (current !== check.versionstamp) return { ok: false };
    }
    // Everything is computed before anything is written: the operation is
    // all or nothing, even when a sum meets a value that is not a KvU64. A
    // key mutated twice sees its first mutation, as in Deno KV.
    const pending = new Map<string, unknown>();
    for (const { key, mutation } of written) {
      const before = pending.has(key.sortable)
        ? pending.get(key.sortable)
        : this.#entries.get(key.sortable)?.value;
      pending.set(key.sortable, mutated(before, mutation));
    }
    const versionstamp = (++this.#version).toString(16).padStart(16, "0") +
      "0000";
    for (const [sortable, value] of pending) {
      if (value === DELETED) {
        if (this.#entries.delete(sortable)) this.#order.delete(sortable);
      } else {
        if (!this.#entries.has(sortable)) this.#order.add(sortable);
        this.#entries.set(sortable, { value, versionstamp });
      }
    }
    if (this.#watchers.size > 0) this.#notify(pending);
    return { ok: true, versionstamp };
  }

  #notify(changed: ReadonlyMap<string, unknown>): void {
    for (const watcher of this.#watchers) {
      for (const sortable of watcher.keys) {
        if (!changed.has(sortable)) continue;
        watcher.dirty = true;
        const wake = watcher.wake;
        watcher.wake = null;
        wake?.();
        break;
      }
    }
  }

  #read<T>(sortable: string, key: Deno.KvKey): Deno.KvEntryMaybe<T> {
    const stored = this.#entries.get(sortable);
    if (stored === undefined) {
      return { key: [...key], value: null, versionstamp: null };
    }
    return {
      key: [...key],
      value: copyValue(stored.value) as T,
      versionstamp: stored.versionstamp,
    };
  }

  #open(): void {
    if (this.#closed) {
      throw new Deno.errors.BadResource("The in-memory store is closed");
    }
  }
}

/** A half-open range of encoded keys. */
interface Bounds {
  start: string;
  end: string;
  /** What a cursor is relative to. */
  base: string;
}

/** Operations since the event loop last turned. */
interface Slice {
  started: number;
  /** Runs once the loop turns: the slice is over. */
  immediate: ReturnType<typeof setImmediate>;
  /** Set once the slice has gone on for `SLICE_MS`. */
  wait: {
    /** Settled when the timer fires. */
    passed: Promise<void>;
    resolve: () => void;
    timer: ReturnType<typeof setTimeout>;
  } | null;
}

interface Watcher {
  keys: Set<string>;
  dirty: boolean;
  /** False once the stream is cancelled. */
  live: boolean;
  wake: (() => void) | null;
}

/** One page of a listing and the encoded key of its last entry. */
interface Page {
  entries: Deno.KvEntry<unknown>[];
  last: string | null;
}

type ReadPage = (
  bounds: Bounds,
  limit: number,
  reverse: boolean,
) => Promise<Page>;
type Commit = (
  checks: readonly Deno.AtomicCheck[],
  mutations: readonly Deno.KvMutation[],
) => Promise<Deno.KvCommitResult | Deno.KvCommitError>;

const DELETED = Symbol("deleted");

/** Deno KV's selector rules: a prefix's own key is not in its range. */
function rangeOf(selector: Deno.KvListSelector): Bounds {
  const has = (name: string) => name in selector;
  if (has("prefix")) {
    const prefix = readKey((selector as { prefix: Deno.KvKey }).prefix);
    const bounds = {
      start: prefix + "\x02",
      end: prefix + "\uffff",
      base: prefix,
    };
    if (has("start")) {
      const start = readKey((selector as { start: Deno.KvKey }).start);
      if (!start.startsWith(prefix) || start === prefix) {
        throw new TypeError(
          "Start key is not in the keyspace defined by prefix",
        );
      }
      bounds.start = start;
    }
    if (has("end")) {
      const end = readKey((selector as { end: Deno.KvKey }).end);
      if (!end.startsWith(prefix) || end === prefix) {
        throw new TypeError("End key is not in the keyspace defined by prefix");
      }
      bounds.end = end;
    }
    return bounds;
  }
  if (!has("start") || !has("end")) {
    throw new TypeError("Selector must have a prefix, or a start and an end");
  }
  const { start, end } = selector as { start: Deno.KvKey; end: Deno.KvKey };
  const bounds = { start: readKey(start), end: readKey(end), base: "" };
  if (bounds.start > bounds.end) {
    throw new TypeError("Start key is greater than end key");
  }
  return bounds;
}

function decodeCursor(cursor: string, bounds: Bounds): string {
  const sortable = bounds.base + cursor;
  if (!(sortable >= bounds.start && sortable < bounds.end)) {
    throw new TypeError("Invalid cursor");
  }
  return sortable;
}

/** A listing that reads a page from the store whenever it runs dry. */
class MemoryListIterator<T> implements Deno.KvListIterator<T> {
  #read: ReadPage;
  #bounds: Bounds;
  #left: number;
  #reverse: boolean;
  #batch: number;
  #page: Deno.KvEntry<unknown>[] = [];
  #at = 0;
  #last: string | null = null;
  #started = false;
  #exhausted = false;

  constructor(
    read: ReadPage,
    bounds: Bounds,
    limit: number,
    reverse: boolean,
    batch: number,
  ) {
    this.#read = read;
    this.#bounds = { ...bounds };
    this.#left = limit;
    this.#reverse = reverse;
    this.#batch = batch;
  }

  /** Resumes after the last entry returned; "" once the range is exhausted. */
  get cursor(): string {
    if (!this.#started) {
      throw new Error("Cannot get cursor before first iteration");
    }
    if (this.#exhausted || this.#last === null) return "";
    return this.#last.slice(this.#bounds.base.length);
  }

  async next(): Promise<IteratorResult<Deno.KvEntry<T>, undefined>> {
    this.#started = true;
    if (this.#at === this.#page.length) await this.#fill();
    if (this.#at === this.#page.length) return { done: true, value: undefined };
    const entry = this.#page[this.#at++] as Deno.KvEntry<T>;
    this.#left--;
    return { done: false, value: entry };
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Deno.KvEntry<T>> {
    return this;
  }

  async #fill(): Promise<void> {
    this.#page = [];
    this.#at = 0;
    if (this.#left <= 0 || this.#exhausted) return;
    const wanted = Math.min(this.#batch, this.#left);
    const { entries, last } = await this.#read(
      this.#bounds,
      wanted,
      this.#reverse,
    );
    // Fewer than asked for: nothing is left in the range.
    if (entries.length < wanted) this.#exhausted = true;
    if (last !== null) {
      this.#last = last;
      if (this.#reverse) this.#bounds.end = last;
      else this.#bounds.start = last + "\x00";
    }
    this.#page = entries;
  }
}

/** An atomic operation gathered here and applied by the store at once. */
class MemoryAtomic implements Deno.AtomicOperation {
  #commit: Commit;
  #checks: Deno.AtomicCheck[] = [];
  #mutations: Deno.KvMutation[] = [];

  constructor(commit: Commit) {
    this.#commit = commit;
  }

  check(...checks: Deno.AtomicCheck[]): this {
    this.#checks.push(...checks);
    return this;
  }

  mutate(...mutations: Deno.KvMutation[]): this {
    for (const mutation of mutations) {
      if ("expireIn" in mutation && mutation.expireIn !== undefined) {
        throw new TypeError("The in-memory store does not support expireIn");
      }
    }
    this.#mutations.push(...mutations);
    return this;
  }

  sum(key: Deno.KvKey, n: bigint): this {
    return this.mutate({ type: "sum", key, value: new Deno.KvU64(n) });
  }

  min(key: Deno.KvKey, n: bigint): this {
    return this.mutate({ type: "min", key, value: new Deno.KvU64(n) });
  }

  max(key: Deno.KvKey, n: bigint): this {
    return this.mutate({ type: "max", key, value: new Deno.KvU64(n) });
  }

  set(key: Deno.KvKey, value: unknown, options?: { expireIn?: number }): this {
    return this.mutate({ type: "set", key, value, ...options });
  }

  delete(key: Deno.KvKey): this {
    return this.mutate({ type: "delete", key });
  }

  enqueue(): this {
    throw new TypeError("The in-memory store does not support queues");
  }

  commit(): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    return this.#commit(this.#checks, this.#mutations);
  }
}

/** The value `mutation` leaves where `current` was (undefined: none). */
function mutated(current: unknown, mutation: Deno.KvMutation): unknown {
  switch (mutation.type) {
    case "set":
      return copyValue(mutation.value);
    case "delete":
      return DELETED;
    case "sum":
    case "min":
    case "max": {
      const operand = (mutation.value as Deno.KvU64).value;
      if (current === undefined || current === DELETED) {
        return new Deno.KvU64(operand);
      }
      if (!(current instanceof Deno.KvU64)) {
        throw new TypeError(
          `Failed to perform '${mutation.type}' mutation on a non-U64 value in the database`,
        );
      }
      const now = current.value;
      if (mutation.type === "sum") {
        return new Deno.KvU64((now + operand) & 0xffff_ffff_ffff_ffffn);
      }
      const pick = mutation.type === "min"
        ? (operand < now ? operand : now)
        : (operand > now ? operand : now);
      return new Deno.KvU64(pick);
    }
    default:
      throw new TypeError(
        `Unsupported mutation '${(mutation as { type: string }).type}'`,
      );
  }
}

function readKey(key: Deno.KvKey): string {
  const encoded = encodeKey(key);
  if (encoded.bytes > MAX_READ_KEY_BYTES) {
    throw new TypeError(
      `Key too large for read (max ${MAX_READ_KEY_BYTES} bytes)`,
    );
  }
  return encoded.sortable;
}

function writeKey(key: Deno.KvKey): EncodedKey {
  const encoded = encodeKey(key);
  if (encoded.bytes > MAX_WRITE_KEY_BYTES) {
    throw new TypeError(
      `Key too large for write (max ${MAX_WRITE_KEY_BYTES} bytes)`,
    );
  }
  return encoded;
}

/**
 * A value copied into or out of the store, as Deno KV's serialization
 * copies it. Plain data (what the server stores: records of numbers,
 * strings, byte arrays and arrays) is copied here, several times faster
 * than `structuredClone`, which goes through V8's serializer; anything else
 * goes to `structuredClone`.
 */
function copyValue(value: unknown): unknown {
  if (value === null || typeof value !== "object") return value;
  if (value instanceof Deno.KvU64) return value;
  return copyPlain(value, 0) ?? structuredClone(value);
}

// Deeper than the server's records go: past it, structuredClone copies.
const MAX_PLAIN_DEPTH = 8;

/**
 * A copy of `value` if it is plain data all the way down (plain objects,
 * arrays, `Uint8Array`s, primitives), else undefined. Functions and symbols
 * make it give up too, so that `structuredClone` refuses them as Deno KV
 * does.
 */
function copyPlain(value: object, depth: number): unknown {
  if (depth > MAX_PLAIN_DEPTH) return undefined;
  if (value instanceof Uint8Array) {
    return value.constructor === Uint8Array ? value.slice() : undefined;
  }
  if (Array.isArray(value)) {
    const copy = new Array(value.length);
    for (let i = 0; i < value.length; i++) {
      const item = copyItem(value[i], depth);
      if (item === UNCOPIED) return undefined;
      copy[i] = item;
    }
    return copy;
  }
  const prototype = Object.getPrototypeOf(value);
  if (prototype !== Object.prototype && prototype !== null) return undefined;
  const copy: Record<string, unknown> = {};
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    const item = copyItem((value as Record<string, unknown>)[key], depth);
    if (item === UNCOPIED) return undefined;
    copy[key] = item;
  }
  return copy;
}

const UNCOPIED = Symbol("uncopied");

function copyItem(item: unknown, depth: number): unknown {
  switch (typeof item) {
    case "object":
      if (item === null) return null;
      return copyPlain(item, depth + 1) ?? UNCOPIED;
    case "function":
    case "symbol":
      return UNCOPIED;
    default:
      return item;
  }
}

/**
 * About the bytes V8's serializer (which Deno KV uses) writes for `value`:
 * exact for byte arrays and strings, within a few bytes per field
 * otherwise. A byte array alone is stored raw.
 */
function valueSize(value: unknown, top = true): number {
  switch (typeof value) {
    case "string": {
      let wide = false;
      for (let i = 0; i < value.length && !wide; i++) {
        wide = value.charCodeAt(i) > 0xff;
      }
      return 3 + (wide ? 2 * value.length : value.length);
    }
    case "number":
      return 9;
    case "bigint":
      return 3 + 8 * Math.ceil(value.toString(16).length / 16);
    case "boolean":
    case "undefined":
      return 1;
    case "object": {
      if (value === null) return 1;
      if (ArrayBuffer.isView(value)) {
        return value.byteLength + (top && value instanceof Uint8Array ? 0 : 8);
      }
      if (value instanceof ArrayBuffer) return value.byteLength + 4;
      if (value instanceof Date) return 9;
      if (value instanceof Deno.KvU64) return 8;
      let size = 4;
      if (value instanceof Map) {
        for (const [k, v] of value) {
          size += valueSize(k, false) + valueSize(v, false);
        }
        return size;
      }
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          size += valueSize(value[i], false);
        }
        return size;
      }
      if (value instanceof Set) {
        for (const item of value) size += valueSize(item, false);
        return size;
      }
      // Not Object.entries: it allocates an array per field, and this runs
      // on every value committed.
      for (const key in value) {
        if (!Object.hasOwn(value, key)) continue;
        size += valueSize(key, false) +
          valueSize((value as Record<string, unknown>)[key], false);
      }
      return size;
    }
    default:
      // Functions and symbols: structuredClone refuses them at the set.
      return 1;
  }
}
