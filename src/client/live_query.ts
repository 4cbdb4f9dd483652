// This module is browser compatible.

/**
 * The realm's query methods behind `Realm.objects(type, query)`,
 * `Realm.count`, `Realm.watch` and `Realm.watchObject`: option checking and
 * the live streams.
 */

import { compileQuery, type Query, type Where } from "../model/query.ts";
import type { Fields } from "../model/value.ts";
import { PushStream } from "../util/push_stream.ts";
import {
  copyFields,
  type LiveQueryUpdate,
  type LiveSnapshot,
  materialize,
  type ObjectUpdate,
  type QueryEngine,
} from "./query_engine.ts";
import type { RealmObject } from "./realm.ts";
import type { SyncSession } from "./sync_session.ts";

/**
 * Options of {@linkcode Realm.count}.
 *
 * @example
 * ```ts
 * import type { CountOptions } from "@tether/sync";
 *
 * const options: CountOptions<{ done: boolean }> = { where: { done: false } };
 * console.log(options);
 * ```
 */
export interface CountOptions<T = Fields> {
  /** Which objects to count; all of the type when absent. */
  where?: Where<T>;
}

/**
 * Options of {@linkcode Realm.watch}: a query and the signal that ends the
 * stream.
 *
 * @example The ten most urgent open tasks, live
 * ```ts
 * import type { LiveQueryOptions } from "@tether/sync";
 *
 * type Task = { done: boolean; priority: number };
 * const options: LiveQueryOptions<Task> = {
 *   where: { done: false },
 *   sort: [["priority", "desc"]],
 *   limit: 10,
 *   signal: AbortSignal.timeout(60_000),
 * };
 * console.log(options.limit);
 * ```
 */
export interface LiveQueryOptions<T = Fields> extends Query<T> {
  /** Ends the stream (without error) when aborted. */
  signal?: AbortSignal;
}

/**
 * Options of {@linkcode Realm.watchObject}.
 *
 * @example
 * ```ts
 * import type { WatchObjectOptions } from "@tether/sync";
 *
 * const options: WatchObjectOptions = { signal: AbortSignal.timeout(60_000) };
 * console.log(options);
 * ```
 */
export interface WatchObjectOptions {
  /** Ends the stream (without error) when aborted. */
  signal?: AbortSignal;
}

/** What a realm handle lends its live streams (internal). */
export interface LiveStreamHooks {
  engine: QueryEngine;
  session: SyncSession;
  /**
   * The handle's open live streams, closed with it: each unregisters at
   * once, and its reader gets the items already queued, then the end.
   */
  streams: Set<LiveStream>;
}

/** A live stream as its realm handle closes it (internal). */
export interface LiveStream {
  /** Unregisters, and ends the stream after the items not yet read. */
  close(): void;
}

function checkName(what: string, value: unknown): void {
  if (typeof value !== "string") {
    throw new TypeError(
      `Invalid query: ${what} must be a string, got ${
        value === null ? "null" : typeof value
      }`,
    );
  }
}

/** `prefix` is how the caller's other option errors begin. */
function checkSignal(
  signal: unknown,
  prefix: string,
): AbortSignal | undefined {
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new TypeError(`${prefix}: signal must be an AbortSignal`);
  }
  return signal;
}

/** `realm.objects(type, query)` (internal). */
export function queryObjects<T>(
  engine: QueryEngine,
  type: string,
  query: Query<T>,
): RealmObject<T>[] {
  checkName("type", type);
  const compiled = compileQuery(query);
  return engine.query(type, compiled).map((entry) => ({
    id: entry.id,
    fields: copyFields(entry.fields) as unknown as T,
  }));
}

/** `realm.count(type, { where })` (internal). */
export function queryCount<T>(
  engine: QueryEngine,
  type: string,
  options: CountOptions<T> | undefined,
): number {
  checkName("type", type);
  return engine.count(type, compileQuery(options, ["where"]));
}

/** `realm.watch(type, options)` (internal). */
export function watchObjects<T>(
  hooks: LiveStreamHooks,
  type: string,
  options: LiveQueryOptions<T> | undefined,
): ReadableStream<LiveQueryUpdate<T>> {
  checkName("type", type);
  // The options are the query plus `signal`, checked as one (a plain
  // object with known keys): a spread of them would turn an array or a
  // class instance into an empty query instead of a TypeError.
  const compiled = compileQuery(options, [
    "where",
    "sort",
    "limit",
    "offset",
    "signal",
  ]);
  return openLiveStream<LiveSnapshot, LiveQueryUpdate<T>>(
    hooks,
    checkSignal(options?.signal, "Invalid query"),
    (push) => hooks.engine.watch(type, compiled, push),
    (snapshot) => materialize<T>(snapshot),
  );
}

/** `realm.watchObject(type, id, options)` (internal). */
export function watchOneObject<T>(
  hooks: LiveStreamHooks,
  type: string,
  id: string,
  options: WatchObjectOptions | undefined,
): ReadableStream<ObjectUpdate<T>> {
  checkName("type", type);
  checkName("id", id);
  if (options !== undefined) {
    const prototype = typeof options === "object" && options !== null
      ? Object.getPrototypeOf(options)
      : undefined;
    // An array or a class instance is a mistake, not "no options".
    if (prototype !== Object.prototype && prototype !== null) {
      throw new TypeError("Invalid options: must be a plain object");
    }
    for (const key of Object.keys(options)) {
      if (key !== "signal") {
        throw new TypeError(
          `Invalid options: ${key} is not an option here (use signal)`,
        );
      }
    }
  }
  return openLiveStream<ObjectUpdate, ObjectUpdate<T>>(
    hooks,
    checkSignal(options?.signal, "Invalid options"),
    (push) => hooks.engine.watchObject(type, id, push),
    (update) => update as unknown as ObjectUpdate<T>,
  );
}

/**
 * A stream fed by an engine registration: items are kept until read and
 * turned into what the reader sees only when read (so a commit pays for
 * patching, never for copying a result nobody reads yet). Ends on abort,
 * cancel or realm close, unregistering (on close at once, before the
 * items left are read); errors with the session's error when the session
 * fails, also unregistering at once.
 */
function openLiveStream<R, O>(
  hooks: LiveStreamHooks,
  signal: AbortSignal | undefined,
  register: (push: (item: R) => void) => { first: R; remove: () => void },
  map: (item: R) => O,
): ReadableStream<O> {
  const holder: { remove?: () => void; monitor?: AbortController } = {};
  // Unregisters from the engine and stops following the session: on
  // detach, and when the handle closes, which must not wait for a reader
  // that may never read the items left (another handle on the path keeps
  // the engine, and every commit, going).
  const unregister = () => {
    holder.remove?.();
    holder.monitor?.abort();
    hooks.streams.delete(entry);
  };
  const entry: LiveStream = {
    close: () => {
      unregister();
      source.close();
    },
  };
  const source: PushStream<R> = new PushStream<R>({
    latestOnly: false,
    signal,
    onDetach: unregister,
  });
  if (!source.isDetached) {
    const { first, remove } = register((item) => source.push(item));
    holder.remove = remove;
    source.push(first);
    hooks.streams.add(entry);
    const monitor = new AbortController();
    holder.monitor = monitor;
    // A failed session ends the stream: unregister now, as on close (the
    // local realm stays writable, so its commits go on), and error the
    // stream after the items already queued.
    followFailure(hooks.session, monitor.signal, (error) => {
      unregister();
      source.fail(error);
    });
  }
  const reader = source.stream.getReader();
  return new ReadableStream<O>({
    async pull(controller) {
      const { done, value } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(map(value));
    },
    cancel: (reason) => reader.cancel(reason),
  }, { highWaterMark: 0 });
}

/**
 * Calls `onError` with the session's error when it fails (at once if it
 * already has); stops quietly when `signal` aborts or the session closes.
 */
async function followFailure(
  session: SyncSession,
  signal: AbortSignal,
  onError: (error: unknown) => void,
): Promise<void> {
  const states = session.connectionStateChanges({ signal });
  try {
    for await (const _ of states) {
      // Transitions are not news to a live query; only the end matters.
    }
  } catch (error) {
    onError(error);
  }
}

/** Checks `RealmConfig.indexes` (internal: `openRealm`). */
export function checkIndexes(indexes: unknown): void {
  if (indexes === undefined) return;
  if (
    typeof indexes !== "object" || indexes === null || Array.isArray(indexes)
  ) {
    throw new TypeError(
      "Cannot open realm: indexes must be an object of type name to field names",
    );
  }
  for (const [type, fields] of Object.entries(indexes)) {
    if (!Array.isArray(fields)) {
      throw new TypeError(
        `Cannot open realm: indexes.${type} must be an array of field names`,
      );
    }
    // An index loop, not `forEach`: a hole must be refused, not skipped
    // into an index on `undefined`.
    for (let index = 0; index < fields.length; index++) {
      if (typeof fields[index] !== "string") {
        throw new TypeError(
          `Cannot open realm: indexes.${type}[${index}] must be a field name`,
        );
      }
    }
  }
}
