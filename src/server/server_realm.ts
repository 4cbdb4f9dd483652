/**
 * `server.realm(path)`: a realm's data read, written and followed from the
 * server's own process, without a socket (docs/SERVER.md "Server-side data
 * access").
 */

import type { Instruction, UploadChangeset } from "../model/changeset.ts";
import { HlcClock } from "../model/hlc.ts";
import { isLive, type ObjectRecord, visibleFields } from "../model/merge.ts";
import type { Transaction } from "../model/transaction.ts";
import { TransactionWrites } from "../model/transaction.ts";
import type { Fields } from "../model/value.ts";
import { compileQuery, type Query, runQuery } from "../model/query.ts";
import type { ClientIdentity } from "../protocol/messages.ts";
import { checkWrite } from "../protocol/write_check.ts";
import { type AbortLink, linkAbort } from "../util/abort_link.ts";
import type { RealmHub } from "./realm_hub.ts";
import { resolveRealmPath } from "./realm_path.ts";
import type { RealmRegistry } from "./realm_registry.ts";
import { allocateIdentity } from "./storage/identities.ts";
import {
  readObjectRecords,
  readRealmState,
  recordName,
} from "./storage/realm_state.ts";
import type { RetryOptions } from "./storage/retry.ts";
import { findInvalidUpload } from "./upload_validation.ts";
import type { ServerKv } from "./storage/kv_store.ts";

/**
 * One change of a committed changeset as {@linkcode ServerRealm.changes}
 * reports it: `fields` for `put` (the whole object) and `update` (the
 * fields written); none for `delete`.
 *
 * @example
 * ```ts
 * import type { RealmChange } from "@tether/sync/server";
 *
 * const change: RealmChange = { op: "put", type: "Task", id: "t1", fields: { title: "Milk" } };
 * console.log(change.op);
 * ```
 */
export type RealmChange =
  | { op: "put" | "update"; type: string; id: string; fields: Fields }
  | { op: "delete"; type: string; id: string };

/**
 * One committed changeset of a realm, in server-version order.
 *
 * @example
 * ```ts
 * import type { RealmChangeset } from "@tether/sync/server";
 *
 * const item: RealmChangeset = { version: 3, changes: [{ op: "delete", type: "Task", id: "t1" }] };
 * console.log(item.version);
 * ```
 */
export interface RealmChangeset {
  /** The server version the changeset was stored at. */
  version: number;
  /** Its changes, in the order they were written. */
  changes: RealmChange[];
}

/**
 * A live object of a realm: its id and its fields.
 *
 * @example
 * ```ts
 * import type { ServerObject } from "@tether/sync/server";
 *
 * const object: ServerObject = { id: "t1", fields: { title: "Milk" } };
 * console.log(object.id);
 * ```
 */
export interface ServerObject {
  /** The object's id within its type. */
  id: string;
  /** Its current fields. */
  fields: Fields;
}

/**
 * What {@linkcode ServerRealm.objects} selects: the client's query language
 * (`Realm.objects`), `{ where, sort, limit, offset }` — equality or
 * `{ eq, ne, gt, gte, lt, lte, in }` per field, `$and`, `$or`, `$not`, sorts
 * that break ties by id (docs/CLIENT.md "Queries").
 *
 * @example
 * ```ts
 * import type { ServerQuery } from "@tether/sync/server";
 *
 * const query: ServerQuery = {
 *   where: { done: false, priority: { gte: 2 } },
 *   sort: [["priority", "desc"], ["title", "asc"]],
 *   limit: 10,
 * };
 * console.log(query.limit);
 * ```
 */
export type ServerQuery = Query;

/**
 * Options of {@linkcode ServerRealm.changes}.
 *
 * @example
 * ```ts
 * import type { ChangeFeedOptions } from "@tether/sync/server";
 *
 * const options: ChangeFeedOptions = { since: 0, signal: AbortSignal.timeout(1000) };
 * console.log(options.since);
 * ```
 */
export interface ChangeFeedOptions {
  /**
   * The last version the consumer has seen: the feed starts after it.
   *
   * @default {0}
   */
  since?: number;
  /** Ends the feed (without an error) when aborted. */
  signal?: AbortSignal;
}

/**
 * The change feed cannot start at `since`: the history after it has been
 * compacted into the snapshot (`history.retainVersions`). Read the state
 * afresh (`objects()`), then follow the feed from the head's version.
 *
 * @example
 * ```ts
 * import { ChangesCompactedError } from "@tether/sync/server";
 *
 * const error = new ChangesCompactedError("/alice/todos", 3);
 * console.log(error.code); // "changes_compacted"
 * ```
 */
export class ChangesCompactedError extends Error {
  /** Always `"changes_compacted"`. */
  readonly code = "changes_compacted";
  /** The `since` the feed was asked for. */
  readonly since: number;

  /**
   * Creates the error for a feed of `path` asked to start after `since`.
   *
   * @param path The realm path.
   * @param since The version the feed was asked to follow.
   */
  constructor(path: string, since: number) {
    super(
      `Cannot follow ${
        JSON.stringify(path)
      } from version ${since}: that history has been compacted; read the objects and follow from the current version`,
    );
    this.name = "ChangesCompactedError";
    this.since = since;
  }
}

/**
 * The server's handle on one realm, from `server.realm(path)`. It holds no
 * state: every read goes to the store (the server keeps no realm in
 * memory), so `get` and `objects` return promises.
 *
 * @example Write from the backend, read it back, follow the feed
 * ```ts
 * import { serveSync } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: () => {},
 * });
 * const todos = server.realm("/alice/todos");
 * const { version } = await todos.write((tx) => tx.put("Task", "t9", { title: "From the backend" }));
 * assert.deepEqual(await todos.get("Task", "t9"), { title: "From the backend" });
 * const controller = new AbortController();
 * for await (const item of todos.changes({ since: 0, signal: controller.signal })) {
 *   assert.equal(item.version, version);
 *   controller.abort();
 * }
 * ```
 */
export interface ServerRealm {
  /** The realm path. */
  readonly path: string;
  /**
   * The fields of one object, or `undefined` when it does not exist.
   */
  get(type: string, id: string): Promise<Fields | undefined>;
  /** The live objects of `type` that `query` selects. */
  objects(type: string, query?: ServerQuery): Promise<ServerObject[]>;
  /**
   * Writes as a client does: one changeset with the server's own identity
   * in this realm and an HLC stamp, synced to every client. Resolves once
   * it is durably stored. Writes to one realm commit in the order of the
   * calls.
   *
   * @param fn Makes the writes (`tx.put`, `tx.update`, `tx.delete`); may be
   *   async, as on the client. If it throws or rejects, nothing is written.
   * @throws {TypeError} For a value a realm cannot store, an update of an
   *   object that does not exist, or names that are too long.
   */
  write(
    fn: (tx: Transaction) => void | Promise<void>,
  ): Promise<{ version: number }>;
  /**
   * Every committed changeset after `since`, in server-version order, then
   * live. Ends when the signal aborts; errors with
   * {@linkcode ChangesCompactedError} when `since` is below the retained
   * history.
   */
  changes(options?: ChangeFeedOptions): ReadableStream<RealmChangeset>;
}

/** What the realm handles need from their server. */
export interface ServerRealmContext {
  kv: ServerKv;
  retry: RetryOptions;
  registry: RealmRegistry;
  /** Aborts when the server shuts down: feeds end, writes refuse. */
  lifetime: AbortSignal;
  /** Aborts when commits in flight must give up. */
  commitSignal: AbortSignal;
  now: () => number;
}

// History read per step of a feed.
const FEED_STEP_BYTES = 1024 * 1024;

/** The server's writer in one realm: identity, clock and client version. */
interface RealmWriter {
  identity: ClientIdentity;
  clock: HlcClock;
  lastClientVersion: number;
}

/** Makes the realm handles of one server; one writer per realm per process. */
export class ServerRealms {
  #context: ServerRealmContext;
  // Resolved writers, or the allocation in progress.
  #writers = new Map<string, Promise<RealmWriter>>();
  // Writes to one realm go one at a time, so client versions follow.
  #writing = new Map<string, Promise<unknown>>();

  /** @param context The server's store and registry. */
  constructor(context: ServerRealmContext) {
    this.#context = context;
  }

  /**
   * The handle of `path`.
   *
   * @throws {TypeError} For a path that is not a valid realm path.
   */
  realm(path: string): ServerRealm {
    if (typeof path !== "string" || path.split("/").includes("~")) {
      throw new TypeError(
        `Cannot open realm: ${
          JSON.stringify(path)
        } is not a realm path ("~" names a user, and there is none here)`,
      );
    }
    const resolved = resolveRealmPath(path, "");
    if (!resolved.ok) {
      throw new TypeError(`Cannot open realm: ${resolved.reason}`);
    }
    const realmPath = resolved.path;
    return {
      path: realmPath,
      get: (type, id) => this.#get(realmPath, type, id),
      objects: (type, query) => this.#objects(realmPath, type, query),
      write: (fn) => this.#write(realmPath, fn),
      changes: (options) => this.#changes(realmPath, options ?? {}),
    };
  }

  /**
   * Opens a feed after checking that `since` is still in the history, so
   * an HTTP route can answer 410 before it starts streaming.
   *
   * @throws {ChangesCompactedError} When it is not.
   */
  async openFeed(
    path: string,
    since: number,
    signal: AbortSignal,
  ): Promise<ReadableStream<RealmChangeset>> {
    const feed = new ChangeFeed(this.#context, path, since, signal);
    try {
      await feed.prime();
    } catch (error) {
      feed.dispose();
      throw error;
    }
    return feed.stream();
  }

  async #get(
    path: string,
    type: string,
    id: string,
  ): Promise<Fields | undefined> {
    checkName("get", "type", type);
    checkName("get", "id", id);
    const state = await readObjectRecords(
      this.#context.kv,
      path,
      [{ type, id }],
      this.#retry(),
    );
    const record = state.records.values().next().value;
    return record !== undefined && isLive(record)
      ? visibleFields(record)
      : undefined;
  }

  async #objects(
    path: string,
    type: string,
    query?: ServerQuery,
  ): Promise<ServerObject[]> {
    checkName("objects", "type", type);
    // Checked before the store is read: a bad query is the caller's error.
    const compiled = compileQuery(query);
    const state = await readRealmState(this.#context.kv, path, this.#retry());
    const objects: ServerObject[] = [];
    for (const record of state.records.values()) {
      if (record.type !== type || !isLive(record)) continue;
      objects.push({ id: record.id, fields: visibleFields(record) });
    }
    return runQuery(compiled, objects);
  }

  #write(
    path: string,
    fn: (tx: Transaction) => void | Promise<void>,
  ): Promise<{ version: number }> {
    if (typeof fn !== "function") {
      return Promise.reject(
        new TypeError("Cannot write: pass a function (tx) => { … }"),
      );
    }
    // Runs at once, so a throw or a bad value is the caller's error now. An
    // async function (allowed, as on the client) ends its transaction when
    // its promise settles: writes made after an await belong to it, and a
    // rejection commits nothing.
    const writes = new TransactionWrites(() => true);
    let made: Promise<Instruction[]>;
    try {
      const returned = fn(writes.transaction);
      made = isThenable(returned)
        ? Promise.resolve(returned).then(
          () => writes.finish(),
          (error) => {
            writes.finish();
            throw error;
          },
        )
        : Promise.resolve(writes.finish());
    } catch (error) {
      writes.finish();
      return Promise.reject(error);
    }
    // Observed here; the caller sees the rejection through `result`.
    made.catch(() => {});
    // Commits follow the order of the calls, as the client's writes do.
    const run = () =>
      made.then((instructions) => this.#commit(path, instructions));
    const previous = this.#writing.get(path) ?? Promise.resolve();
    const result = previous.then(run, run);
    const settled = result.catch(() => {});
    this.#writing.set(path, settled);
    settled.then(() => {
      if (this.#writing.get(path) === settled) this.#writing.delete(path);
    });
    return result;
  }

  async #commit(
    path: string,
    instructions: Instruction[],
  ): Promise<{ version: number }> {
    this.#context.lifetime.throwIfAborted();
    // Every object written is read first: an update makes no new object
    // (the transaction could not know), and the write must stamp after
    // what it overwrites, however far ahead the clock of the client that
    // wrote it ran.
    // (The transaction folded the writes: one instruction per object.)
    const state = await readObjectRecords(
      this.#context.kv,
      path,
      instructions.map(({ type, id }) => ({ type, id })),
      this.#retry(),
    );
    for (const { op, type, id } of instructions) {
      if (op !== "update") continue;
      const record = state.records.get(recordName(type, id));
      if (record === undefined || !isLive(record)) {
        throw new TypeError(
          `Cannot update: ${type} ${JSON.stringify(id)} does not exist`,
        );
      }
    }
    const hub = this.#context.registry.acquire(path);
    try {
      const head = await hub.refreshHead();
      if (instructions.length === 0) return { version: head.version };
      const writer = await this.#writer(path);
      for (const record of state.records.values()) {
        observeRecord(writer.clock, record);
      }
      const changeset: UploadChangeset = {
        clientVersion: writer.lastClientVersion + 1,
        baseServerVersion: head.version,
        stamp: writer.clock.next(),
        instructions,
      };
      const invalid = findInvalidUpload([changeset], path);
      if (invalid !== null) throw new TypeError(`Cannot write: ${invalid}`);
      checkDownloadable(changeset);
      const result = await hub.integrate(
        writer.identity,
        [changeset],
        this.#context.commitSignal,
      );
      writer.lastClientVersion = changeset.clientVersion;
      const stored = result.integrated.find((item) =>
        item.clientVersion === changeset.clientVersion
      );
      if (stored === undefined) {
        throw new Error(
          `Cannot write: the store did not take client version ${changeset.clientVersion}`,
        );
      }
      return { version: stored.version };
    } finally {
      this.#context.registry.release(hub);
    }
  }

  #writer(path: string): Promise<RealmWriter> {
    let writer = this.#writers.get(path);
    if (writer === undefined) {
      writer = allocateIdentity(this.#context.kv, path, this.#retry()).then(
        (identity) => ({
          identity,
          clock: new HlcClock(randomNode(), this.#context.now),
          lastClientVersion: 0,
        }),
      );
      this.#writers.set(path, writer);
      writer.catch(() => this.#writers.delete(path));
    }
    return writer;
  }

  #changes(
    path: string,
    options: ChangeFeedOptions,
  ): ReadableStream<RealmChangeset> {
    const since = options.since ?? 0;
    if (!Number.isSafeInteger(since) || since < 0) {
      throw new TypeError(
        `Cannot follow changes: since must be a non-negative integer, got ${since}`,
      );
    }
    const feed = new ChangeFeed(
      this.#context,
      path,
      since,
      options.signal ?? new AbortController().signal,
    );
    return feed.stream();
  }

  #retry(): RetryOptions {
    return this.#context.retry;
  }
}

/**
 * One consumer's feed: reads history from its cursor through the realm's
 * hub (recent versions from memory), then waits for the hub to wake it.
 */
class ChangeFeed {
  #context: ServerRealmContext;
  #path: string;
  #cursor: number;
  #source: AbortSignal;
  // Made when the feed starts (prime), so a stream nobody reads holds
  // nothing on the caller's signal or the lifetime.
  #link: AbortLink | null = null;
  #hub: RealmHub | null = null;
  #wake: (() => void) | null = null;
  #member = { wake: () => this.#wake?.() };
  #primed = false;
  #onAbort = () => this.#wake?.();

  constructor(
    context: ServerRealmContext,
    path: string,
    since: number,
    signal: AbortSignal,
  ) {
    this.#context = context;
    this.#path = path;
    this.#cursor = since;
    this.#source = signal;
  }

  // Linked until dispose: a feed lives shorter than the server, and
  // AbortSignal.any would keep it reachable from the lifetime while its
  // listener is registered (docs/PERFORMANCE.md "Linked signals").
  get #signal(): AbortSignal {
    if (this.#link === null) {
      this.#link = linkAbort([this.#source, this.#context.lifetime]);
      this.#link.signal.addEventListener("abort", this.#onAbort);
    }
    return this.#link.signal;
  }

  /** Attaches to the hub and checks the first version still exists. */
  async prime(): Promise<void> {
    if (this.#primed) return;
    this.#primed = true;
    this.#signal.throwIfAborted();
    const hub = this.#context.registry.acquire(this.#path);
    this.#hub = hub;
    hub.attach(this.#member);
    const head = await hub.refreshHead();
    if (this.#cursor < head.version) {
      const read = await hub.read(this.#cursor + 1, 1, this.#signal);
      if (read.gap) throw new ChangesCompactedError(this.#path, this.#cursor);
    }
  }

  stream(): ReadableStream<RealmChangeset> {
    return new ReadableStream<RealmChangeset>({
      pull: async (controller) => {
        try {
          const items = await this.#next();
          if (items === null) {
            this.dispose();
            controller.close();
            return;
          }
          for (const item of items) controller.enqueue(item);
        } catch (error) {
          this.dispose();
          controller.error(error);
        }
      },
      cancel: () => this.dispose(),
    }, { highWaterMark: 0 });
  }

  /** The next changesets (at least one), or null once the feed ends. */
  async #next(): Promise<RealmChangeset[] | null> {
    try {
      await this.prime();
    } catch (error) {
      if (this.#signal.aborted) return null;
      throw error;
    }
    const hub = this.#hub!;
    // Bounded: each turn either returns or waits for a wake or the abort.
    for (;;) {
      if (this.#signal.aborted) return null;
      if (this.#cursor < hub.head.version) {
        let read;
        try {
          read = await hub.read(
            this.#cursor + 1,
            FEED_STEP_BYTES,
            this.#signal,
          );
        } catch (error) {
          if (this.#signal.aborted) return null;
          throw error;
        }
        if (read.gap) throw new ChangesCompactedError(this.#path, this.#cursor);
        if (read.items.length > 0) {
          this.#cursor = read.items[read.items.length - 1]!.version;
          return read.items.map((item) => ({
            version: item.version,
            changes: item.changeset.instructions.map(toChange),
          }));
        }
      }
      const woken = new Promise<void>((resolve) => this.#wake = resolve);
      // The head may have moved between the check and the waiter.
      if (this.#cursor < hub.head.version || this.#signal.aborted) continue;
      await woken;
      this.#wake = null;
    }
  }

  /** Detaches from the hub; safe to call more than once. */
  dispose(): void {
    this.#link?.signal.removeEventListener("abort", this.#onAbort);
    // A link to nothing when none was made, so nothing links after this.
    (this.#link ??= linkAbort([])).dispose();
    const hub = this.#hub;
    this.#hub = null;
    if (hub === null) return;
    hub.detach(this.#member);
    this.#context.registry.release(hub);
  }
}

/** Folds every stamp `record` holds into `clock`, as a client does on download. */
function observeRecord(clock: HlcClock, record: ObjectRecord): void {
  if (record.putStamp !== null) clock.observe(record.putStamp);
  if (record.deleteStamp !== null) clock.observe(record.deleteStamp);
  for (const entry of record.fields.values()) clock.observe(entry.stamp);
}

function toChange(instruction: Instruction): RealmChange {
  const { op, type, id, fields } = instruction;
  return op === "delete"
    ? { op, type, id }
    : { op, type, id, fields: fields ?? {} };
}

function checkName(method: string, what: string, value: unknown): void {
  if (typeof value !== "string" || value.length === 0) {
    throw new TypeError(
      `Cannot ${method}: ${what} must be a non-empty string`,
    );
  }
}

/**
 * Refuses a changeset that clients could not decode (a string over 1 MiB,
 * bytes over 8 MiB, a changeset over `MAX_WRITE_BYTES`…): stored, it would
 * stop every client of the realm at the same download, over and over. The
 * check is the client's own (`checkWrite`); the error names the first field
 * that fails on its own.
 *
 * @throws {TypeError} Naming the field, or the changeset's size.
 */
function checkDownloadable(changeset: UploadChangeset): void {
  const problem = encodingProblem(changeset);
  if (problem === null) return;
  for (const instruction of changeset.instructions) {
    for (const [name, value] of Object.entries(instruction.fields ?? {})) {
      const alone: Fields = {};
      Object.defineProperty(alone, name, {
        value,
        enumerable: true,
        writable: true,
        configurable: true,
      });
      const fieldProblem = encodingProblem({
        ...changeset,
        instructions: [{ ...instruction, fields: alone }],
      });
      if (fieldProblem !== null) {
        throw new TypeError(
          `Cannot ${instruction.op}: field ${
            JSON.stringify(name)
          } of ${instruction.type} ${
            JSON.stringify(instruction.id)
          } holds a value a realm cannot store (${fieldProblem})`,
        );
      }
    }
  }
  throw new TypeError(`Cannot write: ${problem}`);
}

/** Why `changeset` cannot travel to clients, or null when it can. */
function encodingProblem(changeset: UploadChangeset): string | null {
  const check = checkWrite(changeset);
  return check.ok ? null : check.message;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === "function";
}

function randomNode(): number {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return (words[0]! & 0xffff) * 2 ** 32 + words[1]!;
}
