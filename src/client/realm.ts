// This module is browser compatible.

import type { Fields } from "../model/value.ts";
import { badSignal } from "../util/abort.ts";
import { PushStream } from "../util/push_stream.ts";
import {
  type CountOptions,
  type LiveQueryOptions,
  type LiveStream,
  type LiveStreamHooks,
  queryCount,
  queryObjects,
  type WatchObjectOptions,
  watchObjects,
  watchOneObject,
} from "./live_query.ts";
import type {
  LiveQueryUpdate,
  ObjectUpdate,
  QueryEngine,
} from "./query_engine.ts";
import type { Query } from "../model/query.ts";
import type { LocalRealm, ObjectChange, RealmChange } from "./local_realm.ts";
import type { SessionCore } from "./session_core.ts";
import type {
  StreamOptions,
  SyncSession,
  WaitOptions,
} from "./sync_session.ts";
import type { Transaction } from "./transaction.ts";

export type { ObjectChange, RealmChange };

/**
 * What {@linkcode Realm.write} resolves with once the write is committed
 * locally: its client version and a way to wait for the server's
 * acknowledgement of this very write.
 *
 * @example Two-stage acknowledgement
 * ```ts
 * import { App, Credentials } from "@tether/sync";
 * import { serveSync } from "@tether/sync/server";
 *
 * await using server = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: () => {},
 * });
 * await using app = new App({ baseUrl: server.url });
 * const user = await app.logIn(Credentials.anonymous());
 * await using realm = await user.openRealm({ path: "/~/todos" });
 * const receipt = await realm.write((tx) => tx.put("Task", "t1", { title: "Buy milk" }));
 * // Committed locally: visible now, uploaded when connected.
 * await receipt.waitForUpload({ signal: AbortSignal.timeout(5_000) });
 * // Acknowledged by the server.
 * ```
 */
export interface WriteReceipt {
  /**
   * The write's client version (1, 2, 3, … per realm), or 0 for a write
   * that changed nothing.
   */
  readonly clientVersion: number;
  /**
   * Resolves once the server has acknowledged this write (at once for a
   * write that changed nothing). Waits while paused or offline.
   *
   * @throws {SyncError} The session's error on a fatal failure;
   *   `session_closed` when the realm closes first.
   * @throws The signal's reason, unchanged, when aborted.
   */
  waitForUpload(options?: WaitOptions): Promise<void>;
}

/**
 * One live object as {@linkcode Realm.objects} returns it.
 *
 * @example Listing titles
 * ```ts
 * import type { RealmObject } from "@tether/sync";
 *
 * const tasks: RealmObject[] = [{ id: "t1", fields: { title: "Buy milk" } }];
 * console.log(tasks.map((task) => `${task.id}: ${task.fields.title}`));
 * ```
 */
export interface RealmObject<T = Fields> {
  /** The object's id within its type. */
  id: string;
  /** A copy of its fields. */
  fields: T;
}

/** The shared part of every handle on one open realm (internal). */
export interface RealmCore {
  readonly path: string;
  readonly local: LocalRealm;
  readonly session: SyncSession;
  /** The engine behind `session`. */
  readonly sync: SessionCore;
  /** Called when a handle closes; closes the realm after the last one. */
  release(): Promise<void>;
}

let pending: RealmHandle | undefined;
// Each public Realm's handle, for internal helpers that are given a Realm.
const handles = new WeakMap<Realm, RealmHandle>();

/** The receipt of the local write `clientVersion` (0: changed nothing). */
function receiptFor(sync: SessionCore, clientVersion: number): WriteReceipt {
  return {
    clientVersion,
    waitForUpload: (options: WaitOptions = {}) => {
      const invalid = badSignal(options.signal, "Cannot wait for the upload");
      if (invalid !== undefined) return Promise.reject(invalid);
      return clientVersion === 0
        ? (options.signal?.aborted
          ? Promise.reject(options.signal.reason)
          : Promise.resolve())
        : sync.waitForAcknowledgement(clientVersion, options.signal);
    },
  };
}

/**
 * One handle on an open realm: its closed state and its change streams,
 * behind the public {@linkcode Realm} it makes (internal: `User.openRealm`
 * keeps the handle, the caller gets `handle.realm`).
 */
export class RealmHandle {
  /** The realm shared by every handle on the path. */
  readonly core: RealmCore;
  /** The public face. */
  readonly realm: Realm;
  /** Whether this handle was closed. */
  closed = false;
  /** The release started by `close()`. */
  closing: Promise<void> | undefined;
  /** Open `changes()` streams of this handle. */
  readonly streams: Set<LiveStream> = new Set();
  /** Open `watch()` / `watchObject()` streams of this handle. */
  readonly liveStreams: Set<LiveStream> = new Set();
  /** Why this handle may not write (the realm `onBefore` reads), if so. */
  readonly readOnly: string | undefined;

  /**
   * @param core The realm shared by every handle on the path.
   * @param readOnly Why writes through this handle throw, if they do.
   */
  constructor(core: RealmCore, readOnly?: string) {
    this.core = core;
    this.readOnly = readOnly;
    pending = this;
    try {
      this.realm = new Realm();
    } finally {
      pending = undefined;
    }
    handles.set(this.realm, this);
  }

  /** Closes this handle without releasing the realm (logOut does that). */
  markClosed(): void {
    if (this.closed) return;
    this.closed = true;
    for (const stream of [...this.streams]) stream.close();
    this.streams.clear();
    for (const stream of [...this.liveStreams]) stream.close();
    this.liveStreams.clear();
  }
}

/**
 * A realm's local database (internal: tests count its change listeners).
 */
export function realmLocal(realm: Realm): LocalRealm {
  const handle = handles.get(realm);
  if (handle === undefined) throw new TypeError("Not a realm");
  return handle.core.local;
}

/**
 * A realm's query engine (internal: tests count the objects a query
 * examined).
 */
export function realmQueryEngine(realm: Realm): QueryEngine {
  const handle = handles.get(realm);
  if (handle === undefined) throw new TypeError("Not a realm");
  return handle.core.local.queries;
}

/**
 * The local database of one realm path: objects of named types keyed by
 * id, written in transactions, read synchronously, kept in sync with the
 * server by its {@linkcode SyncSession}.
 *
 * Conflicts resolve per field, last writer wins by hybrid logical clock,
 * ties broken by replica id; deletes win over older writes. Writes commit in
 * call order, also when several are started without awaiting each other.
 *
 * @example Writing, reading, following changes
 * ```ts
 * import { App, Credentials } from "@tether/sync";
 * import { serveSync } from "@tether/sync/server";
 * import assert from "node:assert/strict";
 *
 * await using server = await serveSync({
 *   port: 0,
 *   kv: ":memory:",
 *   auth: { allowAnonymous: true },
 *   logger: () => {},
 * });
 * await using app = new App({ baseUrl: server.url });
 * const user = await app.logIn(Credentials.anonymous());
 * await using realm = await user.openRealm({ path: "/~/todos" });
 * const changes = realm.changes({ signal: AbortSignal.timeout(5_000) });
 * await realm.write((tx) => {
 *   tx.put("Task", "t1", { title: "Buy milk", done: false });
 *   tx.put("Task", "t2", { title: "Call mum", done: false });
 * });
 * await realm.write((tx) => tx.delete("Task", "t2"));
 * assert.deepEqual(realm.objects("Task"), [
 *   { id: "t1", fields: { title: "Buy milk", done: false } },
 * ]);
 * const reader = changes.getReader();
 * const first = await reader.read();
 * assert.equal(first.value?.origin, "local");
 * assert.equal(first.value?.changes.length, 2);
 * await reader.cancel();
 * ```
 */
export class Realm {
  #handle: RealmHandle;

  /**
   * Realms come from `user.openRealm()`; this constructor throws.
   *
   * @throws {TypeError} Always, when called directly.
   */
  constructor() {
    if (pending === undefined) {
      throw new TypeError("Cannot construct Realm: use user.openRealm(config)");
    }
    this.#handle = pending;
  }

  /** The realm path, as given to `openRealm`. */
  get path(): string {
    return this.#handle.core.path;
  }

  /**
   * The realm's sync session; the same object as `user.sessionFor(path)`.
   */
  get syncSession(): SyncSession {
    return this.#handle.core.session;
  }

  /** Whether this handle was closed. */
  get isClosed(): boolean {
    return this.#handle.closed;
  }

  /**
   * Runs `fn` with a transaction and commits its writes as one changeset,
   * after every write started earlier. Resolves once committed locally —
   * also offline; the receipt waits for the server.
   *
   * @param fn Makes the writes (`tx.put`, `tx.update`, `tx.delete`); may be
   *   async. If it throws, nothing is committed.
   * @returns The receipt of the write.
   * @throws {TypeError} When the realm is closed or read-only (the realm
   *   `clientReset.onBefore` receives), from the transaction
   *   (update of a missing object, a value a realm cannot store), or what
   *   `fn` throws.
   * @throws {RangeError} When the changeset is larger than the client's cap
   *   on one write (16 MiB minus 1 KiB encoded) or breaks a protocol limit
   *   (a string over 1 MiB, nesting over 32 levels…).
   */
  async write(
    fn: (tx: Transaction) => void | Promise<void>,
  ): Promise<WriteReceipt> {
    if (this.#handle.closed) {
      throw new TypeError("Cannot write: the realm is closed");
    }
    if (this.#handle.readOnly !== undefined) {
      throw new TypeError(`Cannot write: ${this.#handle.readOnly}`);
    }
    if (typeof fn !== "function") {
      throw new TypeError("Cannot write: fn must be a function");
    }
    const { clientVersion } = await this.#handle.core.local.write(fn);
    return receiptFor(this.#handle.core.sync, clientVersion);
  }

  /**
   * The receipts of every local write the server has not acknowledged
   * yet, in commit order: one per transaction, also after a restart (a
   * durable realm reloads them from storage). Each receipt's
   * `waitForUpload()` resolves when the server acknowledges that write;
   * `syncSession.stats().pendingUploadChangesets` counts the same writes.
   *
   * @example Waiting for what an earlier run left unsent
   * ```ts
   * import { App, Credentials } from "@tether/sync";
   * import { serveSync } from "@tether/sync/server";
   * import assert from "node:assert/strict";
   *
   * await using server = await serveSync({
   *   port: 0,
   *   kv: ":memory:",
   *   auth: { allowAnonymous: true },
   *   logger: () => {},
   * });
   * await using app = new App({ baseUrl: server.url });
   * const user = await app.logIn(Credentials.anonymous());
   * await using realm = await user.openRealm({ path: "/~/todos" });
   * realm.syncSession.pause();
   * await realm.write((tx) => tx.put("Task", "t1", { title: "Buy milk" }));
   * const pending = realm.pendingWrites();
   * assert.equal(pending.length, 1);
   * realm.syncSession.resume();
   * await Promise.all(
   *   pending.map((receipt) => receipt.waitForUpload({ signal: AbortSignal.timeout(5_000) })),
   * );
   * assert.equal(realm.pendingWrites().length, 0);
   * ```
   *
   * @returns One receipt per unacknowledged write, oldest first.
   * @throws {TypeError} When the realm is closed.
   */
  pendingWrites(): WriteReceipt[] {
    this.#checkOpen("list pending writes");
    const sync = this.#handle.core.sync;
    return this.#handle.core.local.pending.map(({ changeset }) =>
      receiptFor(sync, changeset.clientVersion)
    );
  }

  /**
   * Reads one object.
   *
   * @param type The object's type name.
   * @param id The object's id.
   * @returns A copy of its fields, or undefined when it does not exist.
   * @throws {TypeError} When the realm is closed.
   */
  get(type: string, id: string): Fields | undefined {
    this.#checkOpen("read");
    return this.#handle.core.local.get(type, id);
  }

  /**
   * Reads the live objects of one type. Without a query: every one, in the
   * order they were first seen. With one: filter with `where`,
   * order with `sort` (ties and the order without `sort`: by id), then skip
   * `offset` and keep `limit`. Uses an index (`openRealm({ indexes })`)
   * when the filter's top-level conjunction has an equality, `in` or range
   * condition on an indexed field. See docs/CLIENT.md "Querying".
   *
   * @param type The type name.
   * @param query `where`, `sort`, `limit`, `offset` (optional).
   * @returns Copies of the matching objects with their ids, in order.
   * @throws {TypeError} When the realm is closed, or for a malformed query
   *   (the message names the offending part, e.g. `where.priority.between`).
   *
   * @example Open tasks, most urgent first
   * ```ts
   * import { App, Credentials } from "@tether/sync";
   * import { serveSync } from "@tether/sync/server";
   * import assert from "node:assert/strict";
   *
   * await using server = await serveSync({
   *   port: 0,
   *   kv: ":memory:",
   *   auth: { allowAnonymous: true },
   *   logger: () => {},
   * });
   * await using app = new App({ baseUrl: server.url });
   * const user = await app.logIn(Credentials.anonymous());
   * await using realm = await user.openRealm({ path: "/~/todos" });
   * type Task = { title: string; done: boolean; priority: number };
   * await realm.write((tx) => {
   *   tx.put("Task", "t1", { title: "Buy milk", done: false, priority: 1 });
   *   tx.put("Task", "t2", { title: "Call mum", done: false, priority: 3 });
   *   tx.put("Task", "t3", { title: "Pay rent", done: true, priority: 5 });
   * });
   * const open = realm.objects<Task>("Task", {
   *   where: { done: false },
   *   sort: [["priority", "desc"]],
   * });
   * assert.deepEqual(open.map((task) => task.fields.title), ["Call mum", "Buy milk"]);
   * ```
   */
  objects<T = Fields>(
    type: string,
    query?: Query<NoInfer<T>>,
  ): RealmObject<T>[] {
    this.#checkOpen("read");
    if (query === undefined) {
      return this.#handle.core.local.objects(type) as RealmObject<
        unknown
      >[] as RealmObject<T>[];
    }
    return queryObjects<T>(this.#handle.core.local.queries, type, query);
  }

  /**
   * Counts the live objects of one type that match `where` (all of them
   * without it), using an index when one applies.
   *
   * @param type The type name.
   * @param options `where`.
   * @returns The number of matching objects.
   * @throws {TypeError} When the realm is closed, or for a malformed query.
   *
   * @example Counting open tasks
   * ```ts
   * import { App, Credentials } from "@tether/sync";
   * import { serveSync } from "@tether/sync/server";
   * import assert from "node:assert/strict";
   *
   * await using server = await serveSync({
   *   port: 0,
   *   kv: ":memory:",
   *   auth: { allowAnonymous: true },
   *   logger: () => {},
   * });
   * await using app = new App({ baseUrl: server.url });
   * const user = await app.logIn(Credentials.anonymous());
   * await using realm = await user.openRealm({ path: "/~/todos" });
   * await realm.write((tx) => {
   *   tx.put("Task", "t1", { done: false });
   *   tx.put("Task", "t2", { done: true });
   * });
   * assert.equal(realm.count("Task", { where: { done: false } }), 1);
   * assert.equal(realm.count("Task"), 2);
   * ```
   */
  count<T = Fields>(
    type: string,
    options?: CountOptions<NoInfer<T>>,
  ): number {
    this.#checkOpen("count");
    return queryCount(this.#handle.core.local.queries, type, options);
  }

  /**
   * A live query: an async iterable (a `ReadableStream`) whose first item
   * is the current result of the query, every index in
   * `changes.insertions`, then one item per committed transaction (local,
   * downloaded, bootstrap batches included) that changed the result, with
   * `changes = { insertions, deletions, modifications }` as indexes
   * (deletions into the previous result, the others into the new one). A
   * transaction that touches nothing in the result produces no item. Each
   * item is kept until read.
   *
   * Maintaining it costs time proportional to the objects a transaction
   * touched, not to the size of the realm or of the result.
   *
   * Ends when `signal` aborts (at once, dropping items not yet read;
   * nothing stays registered), when the reader cancels (`break`), or when
   * this handle closes (after the items not yet read); errors with the
   * session's error when the session fails (after the items already
   * queued).
   *
   * @param type The type name.
   * @param options `where`, `sort`, `limit`, `offset`, `signal`.
   * @returns The stream of updates.
   * @throws {TypeError} When the realm is closed, or for a malformed query.
   *
   * @example A live list of open tasks
   * ```ts
   * import { App, Credentials } from "@tether/sync";
   * import { serveSync } from "@tether/sync/server";
   * import assert from "node:assert/strict";
   *
   * await using server = await serveSync({
   *   port: 0,
   *   kv: ":memory:",
   *   auth: { allowAnonymous: true },
   *   logger: () => {},
   * });
   * await using app = new App({ baseUrl: server.url });
   * const user = await app.logIn(Credentials.anonymous());
   * await using realm = await user.openRealm({ path: "/~/todos" });
   * type Task = { title: string; done: boolean };
   * const controller = new AbortController();
   * const updates = realm.watch<Task>("Task", {
   *   where: { done: false },
   *   sort: [["title", "asc"]],
   *   signal: controller.signal,
   * });
   * await realm.write((tx) => tx.put("Task", "t1", { title: "Buy milk", done: false }));
   * let seen = 0;
   * for await (const { objects, changes } of updates) {
   *   if (++seen === 1) {
   *     assert.deepEqual(objects, []);
   *   } else {
   *     assert.deepEqual(objects.map((task) => task.fields.title), ["Buy milk"]);
   *     assert.deepEqual(changes.insertions, [0]);
   *     controller.abort();
   *   }
   * }
   * ```
   */
  watch<T = Fields>(
    type: string,
    options?: LiveQueryOptions<NoInfer<T>>,
  ): ReadableStream<LiveQueryUpdate<T>> {
    this.#checkOpen("watch");
    return watchObjects<T>(this.#liveHooks(), type, options);
  }

  /**
   * Follows one object: the first item is its current state (`fields`
   * undefined when it does not exist; `changedFields` names every field it
   * has), then one item per committed transaction that changed it, naming
   * the changed fields; `fields` is undefined once it is deleted (and
   * defined again if it is re-created).
   *
   * Ends and errors as {@linkcode Realm.watch} does: when `signal` aborts
   * (at once), the reader cancels or this handle closes (after the items
   * not yet read); errors with the session's error when the session fails.
   *
   * @param type The object's type name.
   * @param id The object's id.
   * @param options `signal` ends the stream.
   * @returns The stream of updates.
   * @throws {TypeError} When the realm is closed, or `type`/`id` is not a
   *   string.
   *
   * @example Following a task until it is deleted
   * ```ts
   * import { App, Credentials } from "@tether/sync";
   * import { serveSync } from "@tether/sync/server";
   * import assert from "node:assert/strict";
   *
   * await using server = await serveSync({
   *   port: 0,
   *   kv: ":memory:",
   *   auth: { allowAnonymous: true },
   *   logger: () => {},
   * });
   * await using app = new App({ baseUrl: server.url });
   * const user = await app.logIn(Credentials.anonymous());
   * await using realm = await user.openRealm({ path: "/~/todos" });
   * await realm.write((tx) => tx.put("Task", "t1", { title: "Buy milk", done: false }));
   * const updates = realm.watchObject<{ title: string; done: boolean }>("Task", "t1", {
   *   signal: AbortSignal.timeout(5_000),
   * });
   * await realm.write((tx) => tx.update("Task", "t1", { done: true }));
   * await realm.write((tx) => tx.delete("Task", "t1"));
   * const seen = [];
   * for await (const update of updates) {
   *   seen.push(update.changedFields);
   *   if (update.fields === undefined) break;
   * }
   * assert.deepEqual(seen, [["done", "title"], ["done"], ["done", "title"]]);
   * ```
   */
  watchObject<T = Fields>(
    type: string,
    id: string,
    options?: WatchObjectOptions,
  ): ReadableStream<ObjectUpdate<T>> {
    this.#checkOpen("watch");
    return watchOneObject<T>(this.#liveHooks(), type, id, options);
  }

  #liveHooks(): LiveStreamHooks {
    return {
      engine: this.#handle.core.local.queries,
      session: this.#handle.core.session,
      streams: this.#handle.liveStreams,
    };
  }

  /**
   * Committed transactions from now on, local and remote, one item each:
   * `{ origin, changes: [{ type, id, op, fields? }] }` (a downloaded
   * message counts as one remote transaction). Every item is kept until
   * read. Ends when `signal` aborts or the realm closes; a sync error does
   * not end it (the local data stays usable).
   *
   * @param options `signal` ends the stream.
   * @returns The stream of changes.
   * @throws {TypeError} When the realm is closed.
   */
  changes(options: StreamOptions = {}): ReadableStream<RealmChange> {
    this.#checkOpen("follow changes");
    const holder: { remove?: () => void } = {};
    // As for live streams: the handle's close stops the listening at once
    // (a listener makes every commit copy its changes, and another handle
    // may keep the realm open), and the reader still gets what is queued.
    const unregister = () => {
      holder.remove?.();
      this.#handle.streams.delete(entry);
    };
    const entry: LiveStream = {
      close: () => {
        unregister();
        stream.close();
      },
    };
    const stream: PushStream<RealmChange> = new PushStream({
      latestOnly: false,
      signal: options.signal,
      onDetach: unregister,
    });
    if (!stream.isDetached) {
      this.#handle.streams.add(entry);
      holder.remove = this.#handle.core.local.listen({
        onChange: (change) => stream.push(change),
      });
    }
    return stream.stream;
  }

  /**
   * Closes this handle: its change streams end; when it is the last handle
   * on the path, the session closes (pending waits reject with
   * `session_closed`) and the local data is released. A second call waits
   * for the first.
   *
   * @returns Resolves once closed.
   */
  close(): Promise<void> {
    const handle = this.#handle;
    if (handle.closing !== undefined) return handle.closing;
    handle.markClosed();
    handle.closing = handle.core.release();
    return handle.closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #checkOpen(what: string): void {
    if (this.#handle.closed) {
      throw new TypeError(`Cannot ${what}: the realm is closed`);
    }
  }
}
