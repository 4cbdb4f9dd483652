// This module is browser compatible.

/**
 * The public face of a session, `SyncSession`, and the types of its API;
 * the engine behind it is `SessionCore` (session_core.ts).
 */

import { badSignal } from "../util/abort.ts";
import { PushStream } from "../util/push_stream.ts";
import type { RetryInfo } from "./connection.ts";
import {
  type Progress,
  ProgressDirection,
  ProgressMode,
  type ProgressRegistration,
} from "./progress.ts";
import type { SessionCore } from "./session_core.ts";
import type { SessionStats } from "./session_tally.ts";

export type { SessionStats } from "./session_tally.ts";
import type { SyncError } from "./sync_error.ts";
import type { User } from "./user.ts";

/**
 * The state of a session: `"active"` while it syncs (or tries to),
 * `"inactive"` when paused or closed, `"error"` after a fatal error.
 *
 * @example Comparing states
 * ```ts
 * import { SessionState } from "@tether/sync";
 *
 * const state: SessionState = SessionState.Active;
 * console.log(state === "active");
 * ```
 */
export const SessionState = {
  Active: "active",
  Inactive: "inactive",
  Error: "error",
} as const;

/**
 * One of {@linkcode SessionState}'s values.
 *
 * @example A value of the union
 * ```ts
 * import type { SessionState } from "@tether/sync";
 *
 * const state: SessionState = "inactive";
 * console.log(state);
 * ```
 */
export type SessionState = typeof SessionState[keyof typeof SessionState];

/**
 * A session's link to the server: `"connecting"` from the start of a
 * connection attempt (or a bind on an open socket) until the server first
 * answers this session, then `"connected"`; `"disconnected"` otherwise.
 *
 * @example Comparing states
 * ```ts
 * import { ConnectionState } from "@tether/sync";
 *
 * const state: ConnectionState = ConnectionState.Connected;
 * console.log(state === "connected");
 * ```
 */
export const ConnectionState = {
  Disconnected: "disconnected",
  Connecting: "connecting",
  Connected: "connected",
} as const;

/**
 * One of {@linkcode ConnectionState}'s values.
 *
 * @example A value of the union
 * ```ts
 * import type { ConnectionState } from "@tether/sync";
 *
 * const state: ConnectionState = "disconnected";
 * console.log(state);
 * ```
 */
export type ConnectionState =
  typeof ConnectionState[keyof typeof ConnectionState];

/**
 * One transition of a session's connection state. A change to
 * `"disconnected"` carries the error that caused it (none for a requested
 * stop: pause, close) and, when a retry is scheduled, `retry`.
 *
 * @example Printing transitions
 * ```ts
 * import type { ConnectionStateChange } from "@tether/sync";
 *
 * function describe(change: ConnectionStateChange): string {
 *   let line = `${change.previous} → ${change.current}`;
 *   if (change.error) line += ` (${change.error.code})`;
 *   if (change.retry) line += `, retry ${change.retry.attempt} at ${new Date(change.retry.nextAttemptAt).toISOString()}`;
 *   return line;
 * }
 * console.log(describe({ previous: "connecting", current: "connected" }));
 * ```
 */
export interface ConnectionStateChange {
  /** The state before. */
  previous: ConnectionState;
  /** The state now. */
  current: ConnectionState;
  /** Why the connection was lost, when it was lost. */
  error?: SyncError;
  /** The scheduled reconnect, when there is one. */
  retry?: RetryInfo;
}

/**
 * Options of the waiting calls.
 *
 * @example A wait with a deadline
 * ```ts
 * import type { WaitOptions } from "@tether/sync";
 *
 * const options: WaitOptions = { signal: AbortSignal.timeout(10_000) };
 * console.log(options.signal?.aborted);
 * ```
 */
export interface WaitOptions {
  /** Cancels the wait: it rejects with `signal.reason`, unchanged. */
  signal?: AbortSignal;
}

/**
 * Options of the streams.
 *
 * @example A stream that ends with a component's lifetime
 * ```ts
 * import type { StreamOptions } from "@tether/sync";
 *
 * const lifetime = new AbortController();
 * const options: StreamOptions = { signal: lifetime.signal };
 * lifetime.abort(); // every stream opened with `options` ends
 * console.log(options.signal?.aborted);
 * ```
 */
export interface StreamOptions {
  /** Ends the stream (without an error) when aborted. */
  signal?: AbortSignal;
}

/**
 * A progress callback: transferred and transferable bytes (as Realm
 * passes them), plus the whole report.
 *
 * @example A Realm-style callback
 * ```ts
 * import type { ProgressCallback } from "@tether/sync";
 *
 * const callback: ProgressCallback = (transferred, transferable) => {
 *   console.log(`${transferred} of ${transferable} bytes`);
 * };
 * callback(10, 20, { transferredBytes: 10, transferableBytes: 20, progressEstimate: 0.5, isTransferComplete: false });
 * ```
 */
export type ProgressCallback = (
  transferred: number,
  transferable: number,
  progress: Progress,
) => void;

/**
 * Cancels a progress registration made with
 * {@linkcode SyncSession.addProgressNotification}; also `using`-disposable.
 *
 * @example Cancelling with `using`
 * ```ts
 * import type { ProgressNotificationToken } from "@tether/sync";
 *
 * function watch(token: ProgressNotificationToken | null) {
 *   using _registration = token ?? { cancel() {}, [Symbol.dispose]() {} };
 *   // … the registration ends when this block ends
 * }
 * watch(null);
 * ```
 */
export interface ProgressNotificationToken {
  /** Ends the registration; a second call is ignored. */
  cancel(): void;
  /** Same as `cancel()`. */
  [Symbol.dispose](): void;
}

let pending: { core: SessionCore; user: User } | undefined;

/**
 * Wraps a session engine in its public face (internal: `User` does this
 * when it opens a realm).
 */
export function createSyncSession(core: SessionCore, user: User): SyncSession {
  pending = { core, user };
  try {
    return new SyncSession();
  } finally {
    pending = undefined;
  }
}

/**
 * The link between one realm and the server: its state, connection state,
 * upload and download progress, waits, pause and resume.
 *
 * Sessions of one user share one WebSocket; each is independent: pausing
 * one, or its failing, never touches another. Get one from
 * `realm.syncSession` or `user.sessionFor(path)`.
 *
 * Rules (docs/CLIENT.md "Session rules"):
 * - a paused session is `"inactive"` and `"disconnected"`, sends nothing,
 *   and uploads its local writes after `resume()`;
 * - waits keep waiting while paused or offline, reject with `signal.reason`
 *   on abort, with the session's error on a fatal failure, and with
 *   `session_closed` when the realm closes;
 * - a fatal error puts the session in `"error"`, ends progress streams with
 *   that error and keeps the local data.
 *
 * @example Following a session
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
 * await using realm = await user.openRealm({ path: "/~/notes" });
 * const session = realm.syncSession;
 * assert.equal(session.state, "active");
 * await realm.write((tx) => tx.put("Note", "n1", { text: "hello" }));
 * await session.waitForUpload({ signal: AbortSignal.timeout(5_000) });
 * assert.equal(session.stats().pendingUploadChangesets, 0);
 * session.pause();
 * assert.equal(session.state, "inactive");
 * assert.equal(session.connectionState, "disconnected");
 * session.resume();
 * await session.waitForDownload({ signal: AbortSignal.timeout(5_000) });
 * assert.equal(session.connectionState, "connected");
 * ```
 */
export class SyncSession {
  #core: SessionCore;
  #user: User;

  /**
   * Sessions come from `realm.syncSession`; this constructor throws.
   *
   * @throws {TypeError} Always, when called directly.
   */
  constructor() {
    if (pending === undefined) {
      throw new TypeError(
        "Cannot construct SyncSession: use realm.syncSession or user.sessionFor(path)",
      );
    }
    this.#core = pending.core;
    this.#user = pending.user;
  }

  /** The realm path, as given to `openRealm`. */
  get path(): string {
    return this.#core.path;
  }

  /** The user this session syncs for. */
  get user(): User {
    return this.#user;
  }

  /** `"active"`, `"inactive"` (paused or closed) or `"error"`. */
  get state(): SessionState {
    return this.#core.state;
  }

  /** `"disconnected"`, `"connecting"` or `"connected"`. */
  get connectionState(): ConnectionState {
    return this.#core.connectionState;
  }

  /**
   * The error behind the last disconnection (until the session connects
   * again), or the fatal error that put the session in `"error"`.
   */
  get error(): SyncError | undefined {
    return this.#core.error;
  }

  /**
   * The scheduled reconnect while the session waits for one: `attempt` (1 =
   * first retry), `nextAttemptAt` (epoch ms) and `lastError`.
   */
  get retry(): RetryInfo | undefined {
    return this.#core.retry;
  }

  /**
   * Counters: bytes sent and received by this session, the connection's
   * round-trip time, reconnects, and the local writes not yet acknowledged.
   *
   * @returns A snapshot of the counters.
   */
  stats(): SessionStats {
    return this.#core.stats();
  }

  /**
   * Stops syncing this session until {@linkcode resume}: it becomes
   * `"inactive"` and `"disconnected"` and sends nothing, whatever else
   * happens (writes, token refresh, `app.reconnect()`). Other sessions on
   * the same socket are not affected. Waits keep waiting. Idempotent; does
   * nothing on a closed or failed session.
   */
  pause(): void {
    this.#core.pause();
  }

  /**
   * Syncs again after {@linkcode pause}: the session reports connecting →
   * connected (also when the shared socket is already up), binds, and
   * uploads the writes made meanwhile. Idempotent; does nothing on a closed
   * or failed session.
   */
  resume(): void {
    this.#core.resume();
  }

  /**
   * The connection state's transitions, in order, each once: `{ previous,
   * current, error?, retry? }`. Every transition is kept until read (they
   * are few). The stream ends when `signal` aborts or the session closes,
   * and errors with the session's error after a fatal failure (once the
   * transition to "disconnected" has been read).
   *
   * @param options `signal` ends the stream.
   * @returns A stream of transitions from now on.
   */
  connectionStateChanges(
    options: StreamOptions = {},
  ): ReadableStream<ConnectionStateChange> {
    return this.#core.connectionStateChanges(options.signal);
  }

  /**
   * Progress reports as a latest-value stream (a slow reader sees the
   * newest figures, never a growing queue). A registration made while
   * figures are known gets them at once.
   *
   * Ends: when `signal` aborts; after the final complete report in
   * `forCurrentlyOutstandingWork` mode; when the session closes. Errors with
   * the session's error on a fatal failure; on a session already in
   * `"error"` the stream errors at once.
   *
   * @param direction `"upload"` or `"download"`.
   * @param mode `"reportIndefinitely"` or `"forCurrentlyOutstandingWork"`.
   * @param options `signal` ends the stream.
   * @returns The stream of reports.
   * @throws {TypeError} For an unknown direction or mode.
   *
   * @example Waiting for an upload with a progress bar
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
   * await using realm = await user.openRealm({ path: "/~/items" });
   * await realm.write((tx) => {
   *   for (let i = 0; i < 100; i++) tx.put("Item", `i${i}`, { n: i });
   * });
   * let last = 0;
   * for await (
   *   const p of realm.syncSession.getProgressStream("upload", "forCurrentlyOutstandingWork", {
   *     signal: AbortSignal.timeout(5_000),
   *   })
   * ) {
   *   assert.ok(p.progressEstimate >= last);
   *   last = p.progressEstimate;
   * }
   * assert.equal(last, 1);
   * ```
   */
  getProgressStream(
    direction: ProgressDirection,
    mode: ProgressMode,
    options: StreamOptions = {},
  ): ReadableStream<Progress> {
    checkDirection("getProgressStream", direction);
    checkMode("getProgressStream", mode);
    const holder: { registration?: ProgressRegistration } = {};
    const stream = new PushStream<Progress>({
      latestOnly: true,
      signal: options.signal,
      onDetach: () => holder.registration?.cancel(),
    });
    const core = this.#core;
    if (core.state === "error") {
      stream.error(core.error);
    } else if (core.isOver) {
      stream.close();
    } else if (!stream.isDetached) {
      holder.registration = core.progress.register(direction, mode, {
        next: (progress) => stream.push(progress),
        complete: () => stream.close(),
        error: (reason) => stream.error(reason),
      });
    }
    return stream.stream;
  }

  /**
   * Calls `callback(transferred, transferable, progress)` with progress
   * reports (asynchronously, in order). A registration made while figures
   * are known gets them at once. A callback may cancel its own or another
   * registration while it runs.
   *
   * @param direction `"upload"` or `"download"`.
   * @param mode `"reportIndefinitely"` or `"forCurrentlyOutstandingWork"`
   *   (which unregisters itself after its final complete report).
   * @param callback Receives the reports; what it throws is logged and
   *   ignored.
   * @returns A token to cancel the registration, or `null` when it would
   *   never fire (the session is closed or in `"error"`).
   * @throws {TypeError} For an unknown direction or mode, or a callback
   *   that is not a function.
   */
  addProgressNotification(
    direction: ProgressDirection,
    mode: ProgressMode,
    callback: ProgressCallback,
  ): ProgressNotificationToken | null {
    checkDirection("addProgressNotification", direction);
    checkMode("addProgressNotification", mode);
    if (typeof callback !== "function") {
      throw new TypeError(
        "Cannot add progress notification: callback must be a function",
      );
    }
    const core = this.#core;
    return core.isOver
      ? null
      : core.progress.addCallback(direction, mode, callback);
  }

  /**
   * Cancels every registration of `callback` (Realm JS style); a callback
   * not registered, or a second call, is ignored.
   *
   * @param callback A callback passed to
   *   {@linkcode addProgressNotification}.
   */
  removeProgressNotification(callback: ProgressCallback): void {
    this.#core.progress.removeCallback(callback);
  }

  /**
   * Resolves once the server has acknowledged every local write committed
   * (or started) before the call. Keeps waiting while paused or offline.
   *
   * @param options `signal` cancels the wait.
   * @returns Resolves when acknowledged.
   * @throws {SyncError} The session's error on a fatal failure;
   *   `session_closed` when the realm closes first.
   * @throws The signal's reason, unchanged, when aborted.
   */
  async waitForUpload(options: WaitOptions = {}): Promise<void> {
    const signal = options.signal;
    const invalid = badSignal(signal, "Cannot wait for the upload");
    if (invalid !== undefined) throw invalid;
    if (signal?.aborted) throw signal.reason;
    this.#core.checkUsable();
    await this.#core.waitForUpload(signal);
  }

  /**
   * Resolves once everything the server held at the time of the call has
   * been integrated locally (a MARK round trip). Keeps waiting while paused
   * or offline, and across reconnects.
   *
   * @param options `signal` cancels the wait.
   * @returns Resolves when downloaded.
   * @throws {SyncError} The session's error on a fatal failure;
   *   `session_closed` when the realm closes first.
   * @throws The signal's reason, unchanged, when aborted.
   */
  waitForDownload(options: WaitOptions = {}): Promise<void> {
    const signal = options.signal;
    const invalid = badSignal(signal, "Cannot wait for the download");
    if (invalid !== undefined) return Promise.reject(invalid);
    if (signal?.aborted) return Promise.reject(signal.reason);
    try {
      this.#core.checkUsable();
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#core.waitForDownload(signal);
  }
}

function checkDirection(method: string, direction: unknown): void {
  if (
    direction !== ProgressDirection.Upload &&
    direction !== ProgressDirection.Download
  ) {
    throw new TypeError(
      `Cannot ${method}: direction must be "upload" or "download", got ${
        JSON.stringify(direction)
      }`,
    );
  }
}

function checkMode(method: string, mode: unknown): void {
  if (
    mode !== ProgressMode.ReportIndefinitely &&
    mode !== ProgressMode.ForCurrentlyOutstandingWork
  ) {
    throw new TypeError(
      `Cannot ${method}: mode must be "reportIndefinitely" or "forCurrentlyOutstandingWork", got ${
        JSON.stringify(mode)
      }`,
    );
  }
}
