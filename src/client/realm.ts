// This module is browser compatible.

import type { Fields } from "../model/value.ts";
import { PushStream } from "../util/push_stream.ts";
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
export interface RealmObject {
  /** The object's id within its type. */
  id: string;
  /** A copy of its fields. */
  fields: Fields;
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

/** The receipt of the local write `clientVersion` (0: changed nothing). */
function receiptFor(sync: SessionCore, clientVersion: number): WriteReceipt {
  return {
    clientVersion,
    waitForUpload: (options: WaitOptions = {}) =>
      clientVersion === 0
        ? (options.signal?.aborted
          ? Promise.reject(options.signal.reason)
          : Promise.resolve())
        : sync.waitForAcknowledgement(clientVersion, options.signal),
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
  readonly streams: Set<PushStream<RealmChange>> = new Set();

  /** @param core The realm shared by every handle on the path. */
  constructor(core: RealmCore) {
    this.core = core;
    pending = this;
    try {
      this.realm = new Realm();
    } finally {
      pending = undefined;
    }
  }

  /** Closes this handle without releasing the realm (logOut does that). */
  markClosed(): void {
    if (this.closed) return;
    this.closed = true;
    for (const stream of [...this.streams]) stream.close();
    this.streams.clear();
  }
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
   * @throws {TypeError} When the realm is closed, from the transaction
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
   * Reads every live object of one type, in the order they were first
   * seen.
   *
   * @param type The type name.
   * @returns Copies of the objects with their ids.
   * @throws {TypeError} When the realm is closed.
   */
  objects(type: string): RealmObject[] {
    this.#checkOpen("read");
    return this.#handle.core.local.objects(type);
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
    const stream: PushStream<RealmChange> = new PushStream({
      latestOnly: false,
      signal: options.signal,
      onDetach: () => {
        holder.remove?.();
        this.#handle.streams.delete(stream);
      },
    });
    if (!stream.isDetached) {
      this.#handle.streams.add(stream);
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
