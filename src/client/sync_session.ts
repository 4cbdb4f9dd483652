// This module is browser compatible.

import { encodeMessage } from "../protocol/encode.ts";
import {
  MessageType,
  type ServerMessage,
  type UploadMessage,
} from "../protocol/messages.ts";
import type { UploadChangeset } from "../model/changeset.ts";
import { onAbort } from "../util/abort.ts";
import { type Clock, Timer } from "../util/clock.ts";
import { Deferred } from "../util/deferred.ts";
import { PushStream } from "../util/push_stream.ts";
import { nextDelay, type ResolvedReconnectOptions } from "./backoff.ts";
import type {
  Attachment,
  Connection,
  ConnectionClient,
  RetryInfo,
  SessionChannel,
} from "./connection.ts";
import type { LocalRealm } from "./local_realm.ts";
import { emitLog, type Logger } from "./log.ts";
import {
  type Progress,
  ProgressDirection,
  ProgressMode,
  type ProgressRegistration,
  ProgressTracker,
} from "./progress.ts";
import { SyncError, syncErrorFromWire } from "./sync_error.ts";
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
 * Counters of one session.
 *
 * @example Showing the pending writes
 * ```ts
 * import type { SessionStats } from "@tether/sync";
 *
 * const stats: SessionStats = {
 *   bytesSent: 0, bytesReceived: 0, rttMs: undefined, reconnects: 0,
 *   pendingUploadBytes: 0, pendingUploadChangesets: 0,
 * };
 * console.log(`${stats.pendingUploadChangesets} writes waiting for the server`);
 * ```
 */
export interface SessionStats {
  /** Bytes this session sent (BIND, UPLOAD, MARK, UNBIND frames). */
  bytesSent: number;
  /** Bytes this session received (IDENT, DOWNLOAD, MARK_REPLY… frames). */
  bytesReceived: number;
  /** The connection's last measured round-trip time (PING → PONG), in ms. */
  rttMs: number | undefined;
  /** How often the session bound again after its connection was lost. */
  reconnects: number;
  /** Bytes of local changesets the server has not acknowledged yet. */
  pendingUploadBytes: number;
  /** Number of local changesets the server has not acknowledged yet. */
  pendingUploadChangesets: number;
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

/** What a session is built from (internal). */
export interface SessionInit {
  path: string;
  user: User;
  local: LocalRealm;
  connection: () => Connection;
  clock: Clock;
  random: () => number;
  reconnect: ResolvedReconnectOptions;
  progressIntervalMs: number;
  /** How long an unanswered UPLOAD or MARK may wait for the server. */
  responseTimeoutMs: number;
  logger: Logger | undefined;
}

interface UploadWaiter {
  target: number;
  deferred: Deferred<void>;
  remove: () => void;
}

interface DownloadWaiter {
  deferred: Deferred<void>;
  remove: () => void;
}

interface SentMark {
  sequence: number;
  waiters: Set<DownloadWaiter>;
}

class CallbackToken implements ProgressNotificationToken {
  readonly callback: ProgressCallback;
  registration: ProgressRegistration | undefined;
  cancelled = false;
  #onCancel: (token: CallbackToken) => void;

  constructor(
    callback: ProgressCallback,
    onCancel: (token: CallbackToken) => void,
  ) {
    this.callback = callback;
    this.#onCancel = onCancel;
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.registration?.cancel();
    this.#onCancel(this);
  }

  [Symbol.dispose](): void {
    this.cancel();
  }
}

/** Room for an UPLOAD's tag, session id and count around its changesets. */
const UPLOAD_OVERHEAD_BYTES = 32;

/**
 * How often the stall watchdog looks again while the socket is still
 * sending, in milliseconds: the response timeout counts from when the
 * frames have left, give or take this much.
 */
const STALL_DRAIN_POLL_MS = 250;

let constructing = false;

/** Creates a session (internal: `Realm` does this). */
export let createSyncSession: (init: SessionInit) => SyncSession;
/** Starts syncing a session created by {@linkcode createSyncSession}. */
export let startSyncSession: (session: SyncSession) => void;
/** Ends a session for good (its realm closed). */
export let closeSyncSession: (session: SyncSession) => void;
/** Waits until the local changeset `clientVersion` is acknowledged. */
export let waitForAcknowledgement: (
  session: SyncSession,
  clientVersion: number,
  signal: AbortSignal | undefined,
) => Promise<void>;
/** Makes a `forCurrentlyOutstandingWork` registration report its end. */
export let registerDownloadCallback: (
  session: SyncSession,
  callback: (progress: Progress) => void,
) => ProgressRegistration | null;
/**
 * `app.reconnect()` and the `online` event: resets the session's rebind
 * backoff and cancels a pending rebind delay, binding now.
 */
export let reconnectSyncSession: (session: SyncSession) => void;

/**
 * The link between one realm and the server: its state, connection state,
 * upload and download progress, waits, pause and resume.
 *
 * Sessions of one user share one WebSocket; each is independent: pausing
 * one, or its failing, never touches another. Get one from
 * `realm.syncSession` or `user.sessionFor(path)`.
 *
 * Rules (DESIGN.md "Session rules"):
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
  #path!: string;
  #user!: User;
  #local!: LocalRealm;
  #connection!: () => Connection;
  #clock!: Clock;
  #random!: () => number;
  #reconnect!: ResolvedReconnectOptions;
  #progressIntervalMs!: number;
  #responseTimeoutMs!: number;
  #logger: Logger | undefined;

  #state: SessionState = "active";
  #connectionState: ConnectionState = "disconnected";
  #error: SyncError | undefined;
  #retry: RetryInfo | undefined;
  #started = false;
  #paused = false;
  #closed = false;

  #attachment: Attachment | undefined;
  #channel: SessionChannel | undefined;
  #bound = false;
  #identityPending = false;
  #sentThrough = 0;
  #inbound: Promise<void> = Promise.resolve();
  #client: ConnectionClient;

  #tracker = new ProgressTracker();
  #publishTimer!: Timer;
  #lastPublishAt = -Infinity;
  #callbackQueue: { token: CallbackToken; progress: Progress }[] = [];
  #callbackTokens = new Set<CallbackToken>();

  #stateStreams = new Set<PushStream<ConnectionStateChange>>();
  #uploadWaiters = new Set<UploadWaiter>();
  #downloadWaiters = new Set<DownloadWaiter>();
  #sentMarks = new Map<number, SentMark>();
  #nextRequestId = 1;
  #markScheduled = false;
  /** A download registration needs a MARK to learn when its work is here. */
  #progressMarkWanted = false;
  #uploadScheduled = false;
  #rebindTimer!: Timer;
  #stallTimer!: Timer;
  /** Messages for this session received and not yet handled. */
  #unhandled = 0;
  /** Session-scoped errors in a row (rebinds that did not last). */
  #sessionRetries = 0;
  /** When the session last became "connected", while it still is. */
  #connectedSince: number | undefined;
  #unlisten: (() => void) | undefined;

  #bytesSent = 0;
  #bytesReceived = 0;
  #reconnects = 0;
  #everBound = false;
  #lostSinceBind = false;

  /**
   * Sessions come from `realm.syncSession`; this constructor throws.
   *
   * @throws {TypeError} Always, when called directly.
   */
  constructor() {
    if (!constructing) {
      throw new TypeError(
        "Cannot construct SyncSession: use realm.syncSession or user.sessionFor(path)",
      );
    }
    // The stall watchdog listens to the connection beside the handlers: a
    // binding's end stops it, every message for this session restarts it.
    this.#client = {
      connectionConnecting: () => {
        this.#stallTimer.stop();
        this.#onConnecting();
      },
      connectionOpened: (channel) => {
        this.#stallTimer.stop();
        this.#onOpened(channel);
      },
      connectionMessage: (message, wireBytes) => {
        this.#onMessage(message, wireBytes);
        this.#noteAnswer();
      },
      connectionLost: (error, retry) => {
        this.#stallTimer.stop();
        this.#onLost(error, retry);
      },
      connectionFailed: (error) => this.#fail(error, false),
    };
  }

  static {
    createSyncSession = (init) => {
      constructing = true;
      try {
        const session = new SyncSession();
        session.#init(init);
        return session;
      } finally {
        constructing = false;
      }
    };
    startSyncSession = (session) => session.#start();
    closeSyncSession = (session) => session.#close();
    waitForAcknowledgement = (session, clientVersion, signal) =>
      session.#waitForAcknowledgement(clientVersion, signal);
    registerDownloadCallback = (session, callback) =>
      session.#registerDownloadCallback(callback);
    reconnectSyncSession = (session) => session.#reconnectNow();
  }

  #init(init: SessionInit): void {
    this.#path = init.path;
    this.#user = init.user;
    this.#local = init.local;
    this.#connection = init.connection;
    this.#clock = init.clock;
    this.#random = init.random;
    this.#reconnect = init.reconnect;
    this.#progressIntervalMs = init.progressIntervalMs;
    this.#responseTimeoutMs = init.responseTimeoutMs;
    this.#logger = init.logger;
    this.#publishTimer = new Timer(init.clock);
    this.#rebindTimer = new Timer(init.clock);
    this.#stallTimer = new Timer(init.clock);
  }

  /** The realm path, as given to `openRealm`. */
  get path(): string {
    return this.#path;
  }

  /** The user this session syncs for. */
  get user(): User {
    return this.#user;
  }

  /** `"active"`, `"inactive"` (paused or closed) or `"error"`. */
  get state(): SessionState {
    return this.#state;
  }

  /** `"disconnected"`, `"connecting"` or `"connected"`. */
  get connectionState(): ConnectionState {
    return this.#connectionState;
  }

  /**
   * The error behind the last disconnection (until the session connects
   * again), or the fatal error that put the session in `"error"`.
   */
  get error(): SyncError | undefined {
    return this.#error;
  }

  /**
   * The scheduled reconnect while the session waits for one: `attempt` (1 =
   * first retry), `nextAttemptAt` (epoch ms) and `lastError`.
   */
  get retry(): RetryInfo | undefined {
    return this.#retry;
  }

  /**
   * Counters: bytes sent and received by this session, the connection's
   * round-trip time, reconnects, and the local writes not yet acknowledged.
   *
   * @returns A snapshot of the counters.
   */
  stats(): SessionStats {
    let rttMs: number | undefined;
    try {
      rttMs = this.#closed ? undefined : this.#connection().rttMs;
    } catch {
      rttMs = undefined;
    }
    return {
      bytesSent: this.#bytesSent,
      bytesReceived: this.#bytesReceived,
      rttMs,
      reconnects: this.#reconnects,
      pendingUploadBytes: this.#tracker.pendingUploadBytes,
      pendingUploadChangesets: this.#tracker.pendingUploadChangesets,
    };
  }

  /**
   * Stops syncing this session until {@linkcode resume}: it becomes
   * `"inactive"` and `"disconnected"` and sends nothing, whatever else
   * happens (writes, token refresh, `app.reconnect()`). Other sessions on
   * the same socket are not affected. Waits keep waiting. Idempotent; does
   * nothing on a closed or failed session.
   */
  pause(): void {
    if (this.#closed || this.#paused || this.#state === "error") return;
    this.#paused = true;
    this.#lostSinceBind = false;
    this.#leave(true);
    this.#retry = undefined;
    this.#state = "inactive";
    this.#log("info", "session.pause", "Paused");
    this.#transition("disconnected");
  }

  /**
   * Syncs again after {@linkcode pause}: the session reports connecting →
   * connected (also when the shared socket is already up), binds, and
   * uploads the writes made meanwhile. Idempotent; does nothing on a closed
   * or failed session.
   */
  resume(): void {
    if (this.#closed || !this.#paused || this.#state === "error") return;
    this.#paused = false;
    this.#state = "active";
    this.#sessionRetries = 0;
    this.#log("info", "session.resume", "Resumed");
    this.#attach();
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
    const stream: PushStream<ConnectionStateChange> = new PushStream({
      latestOnly: false,
      signal: options.signal,
      onDetach: () => this.#stateStreams.delete(stream),
    });
    if (this.#state === "error") stream.error(this.#error);
    else if (this.#closed) stream.close();
    else if (!stream.isDetached) this.#stateStreams.add(stream);
    return stream.stream;
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
    if (this.#state === "error") {
      stream.error(this.#error);
    } else if (this.#closed) {
      stream.close();
    } else if (!stream.isDetached) {
      holder.registration = this.#tracker.register(direction, mode, {
        next: (progress) => stream.push(progress),
        complete: () => stream.close(),
        error: (reason) => stream.error(reason),
      });
      this.#markForProgress(holder.registration);
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
    if (this.#closed || this.#state === "error") return null;
    const token = new CallbackToken(
      callback,
      (cancelled) => this.#callbackTokens.delete(cancelled),
    );
    this.#callbackTokens.add(token);
    token.registration = this.#tracker.register(direction, mode, {
      next: (progress) => this.#queueCallback(token, progress),
      complete: () => this.#callbackTokens.delete(token),
      error: () => this.#callbackTokens.delete(token),
    });
    this.#markForProgress(token.registration);
    return token;
  }

  /**
   * Cancels every registration of `callback` (Realm JS style); a callback
   * not registered, or a second call, is ignored.
   *
   * @param callback A callback passed to
   *   {@linkcode addProgressNotification}.
   */
  removeProgressNotification(callback: ProgressCallback): void {
    for (const token of [...this.#callbackTokens]) {
      if (token.callback === callback) token.cancel();
    }
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
    if (signal?.aborted) throw signal.reason;
    this.#checkUsable();
    // Writes started before this call are part of "committed before".
    await abortableBarrier(this.#local.barrier(), signal);
    await this.#waitForAcknowledgement(
      this.#tracker.lastCommittedVersion,
      signal,
    );
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
    if (signal?.aborted) return Promise.reject(signal.reason);
    try {
      this.#checkUsable();
    } catch (error) {
      return Promise.reject(error);
    }
    const deferred = new Deferred<void>();
    const waiter: DownloadWaiter = { deferred, remove: () => {} };
    const removeAbort = onAbort(signal, (reason) => {
      this.#forgetDownloadWaiter(waiter);
      deferred.reject(reason);
    });
    waiter.remove = removeAbort;
    this.#downloadWaiters.add(waiter);
    this.#scheduleMark();
    return deferred.promise;
  }

  // ----- internal: lifecycle -----

  #start(): void {
    if (this.#started) return;
    this.#started = true;
    const meta = this.#local.meta;
    this.#tracker.restore(meta.acknowledgedClientVersion);
    for (const { changeset, bytes } of this.#local.pending) {
      this.#tracker.localCommitted(changeset.clientVersion, bytes);
    }
    this.#unlisten = this.#local.listen({
      onLocalCommit: ({ changeset, bytes }) => {
        this.#tracker.localCommitted(changeset.clientVersion, bytes);
        this.#progressChanged();
        this.#scheduleUpload();
      },
    });
    this.#attach();
  }

  #attach(): void {
    if (this.#attachment !== undefined) return;
    try {
      const attachment = this.#connection().attach(this.#client);
      if (this.#paused || this.#closed || this.#state === "error") {
        attachment.detach();
      } else {
        this.#attachment = attachment;
      }
    } catch (error) {
      this.#fail(
        new SyncError(
          "session_closed",
          `Cannot sync ${this.#path}: ${(error as Error).message}`,
          { cause: error },
        ),
        false,
      );
    }
  }

  /** Leaves the connection (pause, close, failure). */
  #leave(unbind: boolean): void {
    this.#rebindTimer.stop();
    this.#stallTimer.stop();
    const attachment = this.#attachment;
    this.#attachment = undefined;
    const channel = this.#channel;
    if (unbind && channel !== undefined && this.#bound) {
      this.#bytesSent += channel.send({
        type: MessageType.Unbind,
        sessionId: channel.sessionId,
      });
    }
    attachment?.detach({ unbind: false });
    this.#dropChannel();
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#leave(true);
    this.#publishTimer.stop();
    this.#retry = undefined;
    this.#unlisten?.();
    this.#unlisten = undefined;
    const error = new SyncError(
      "session_closed",
      `Session for ${this.#path} closed`,
    );
    this.#rejectWaiters(error);
    this.#tracker.close();
    this.#callbackTokens.clear();
    if (this.#state !== "error") this.#state = "inactive";
    this.#transition("disconnected");
    for (const stream of [...this.#stateStreams]) stream.close();
    this.#stateStreams.clear();
    this.#log("debug", "session.close", "Closed");
  }

  #fail(error: SyncError, unbind: boolean): void {
    if (this.#closed || this.#state === "error") return;
    this.#leave(unbind);
    this.#publishTimer.stop();
    this.#retry = undefined;
    this.#error = error;
    this.#state = "error";
    this.#log("error", "session.error", error.message, error);
    this.#transition("disconnected", error);
    this.#rejectWaiters(error);
    this.#tracker.close(error);
    this.#callbackTokens.clear();
    for (const stream of [...this.#stateStreams]) stream.fail(error);
    this.#stateStreams.clear();
  }

  #checkUsable(): void {
    if (this.#state === "error") throw this.#error;
    if (this.#closed) {
      throw new SyncError(
        "session_closed",
        `Session for ${this.#path} is closed`,
      );
    }
  }

  // ----- internal: connection events -----

  #onConnecting(): void {
    if (this.#paused || this.#closed) return;
    if (this.#everBound && this.#connectionState !== "disconnected") {
      this.#lostSinceBind = true;
    }
    this.#dropChannel();
    this.#retry = undefined;
    this.#transition("connecting");
  }

  #onOpened(channel: SessionChannel): void {
    if (this.#paused || this.#closed) return;
    this.#dropChannel();
    this.#channel = channel;
    this.#inbound = this.#inbound
      .then(() => this.#bind(channel))
      .catch((error) => this.#handlingFailed(error));
  }

  #onLost(error: SyncError | undefined, retry: RetryInfo | undefined): void {
    if (this.#paused || this.#closed) return;
    this.#dropChannel();
    if (this.#everBound) this.#lostSinceBind = true;
    this.#retry = retry;
    if (error !== undefined) this.#error = error;
    this.#transition("disconnected", error, retry);
  }

  #onMessage(message: ServerMessage, wireBytes: number): void {
    if (this.#channel === undefined) return;
    this.#bytesReceived += wireBytes;
    // The first answer for this session means the server accepted the bind
    // (a refusal arrives as an ERROR, which is not "connected").
    if (
      this.#connectionState === "connecting" &&
      message.type !== MessageType.Error
    ) {
      this.#error = undefined;
      this.#transition("connected");
    }
    const channel = this.#channel;
    this.#inbound = this.#inbound
      .then(() => this.#handle(message, channel))
      .catch((error) => this.#handlingFailed(error));
  }

  #dropChannel(): void {
    const channel = this.#channel;
    this.#channel = undefined;
    this.#bound = false;
    this.#identityPending = false;
    if (channel === undefined) return;
    // MARKs sent on the lost binding will never be answered: their waiters
    // wait for the MARK sent after the next bind.
    for (const mark of this.#sentMarks.values()) {
      for (const waiter of mark.waiters) this.#downloadWaiters.add(waiter);
    }
    this.#sentMarks.clear();
  }

  async #bind(channel: SessionChannel): Promise<void> {
    if (channel !== this.#channel || !channel.isOpen) return;
    const meta = this.#local.meta;
    this.#bytesSent += channel.send({
      type: MessageType.Bind,
      sessionId: channel.sessionId,
      path: this.#path,
      clientIdentity: meta.clientIdentity,
      downloadCursor: meta.downloadCursor,
      uploadCursor: meta.acknowledgedClientVersion,
    });
    if (this.#lostSinceBind) this.#reconnects++;
    this.#lostSinceBind = false;
    this.#everBound = true;
    this.#bound = true;
    this.#sentThrough = meta.acknowledgedClientVersion;
    this.#identityPending = meta.clientIdentity === null;
    // A MARK right after BIND: its reply says the server has nothing more
    // for now, which makes download progress known even when there was
    // nothing to download, and answers waits made while unbound.
    this.#sendMark();
    if (!this.#identityPending) this.#upload();
    await Promise.resolve();
  }

  async #handle(
    message: ServerMessage,
    channel: SessionChannel,
  ): Promise<void> {
    switch (message.type) {
      case MessageType.Ident: {
        await this.#local.setIdentity(message.clientIdentity);
        if (channel === this.#channel && this.#identityPending) {
          this.#identityPending = false;
          this.#upload();
        }
        return;
      }
      case MessageType.Download: {
        const { acknowledged } = await this.#local.integrate(message);
        this.#tracker.downloaded(
          message.changesetBytes,
          message.downloadableBytes,
        );
        this.#tracker.acknowledged(acknowledged);
        this.#resolveUploadWaiters();
        this.#progressChanged();
        return;
      }
      case MessageType.MarkReply: {
        if (channel !== this.#channel) return;
        const mark = this.#sentMarks.get(message.requestId);
        if (mark === undefined) return;
        this.#sentMarks.delete(message.requestId);
        this.#tracker.caughtUp(mark.sequence);
        this.#progressChanged();
        for (const waiter of mark.waiters) {
          waiter.remove();
          waiter.deferred.resolve();
        }
        return;
      }
      case MessageType.Error: {
        if (channel !== this.#channel) return;
        const error = syncErrorFromWire(
          message.code,
          message.tryAgain,
          message.message,
        );
        if (error.isFatal || !message.tryAgain) {
          this.#fail(error, false);
        } else {
          this.#rebindLater(error);
        }
        return;
      }
      default:
        return;
    }
  }

  #handlingFailed(error: unknown): void {
    if (this.#closed || this.#state === "error") return;
    this.#fail(
      error instanceof SyncError ? error : new SyncError(
        "protocol_violation",
        `Cannot handle a message for ${this.#path}: ${
          error instanceof Error ? error.message : String(error)
        }`,
        { cause: error },
      ),
      true,
    );
  }

  /**
   * A session-scoped error the server says may pass: bind again later, with
   * a backoff that grows while the binds keep failing (a bind that reached
   * "connected" but did not last `resetAfterMs` failed too: an upload the
   * server cannot store fails the same way after every bind), and gives up
   * after `maxAttempts` of them in a row, as the connection does.
   */
  #rebindLater(error: SyncError): void {
    this.#endConnectedSpell();
    if (this.#sessionRetries >= this.#reconnect.maxAttempts) {
      this.#fail(
        new SyncError(
          "reconnect_gave_up",
          `Gave up after ${this.#sessionRetries} failed attempts in a row to bind ${this.#path}: ${error.message}`,
          { cause: error },
        ),
        false,
      );
      return;
    }
    this.#leave(false);
    const delay = nextDelay(
      Math.min(this.#sessionRetries, 60),
      this.#reconnect,
      this.#random,
    );
    this.#sessionRetries++;
    const retry: RetryInfo = {
      attempt: this.#sessionRetries,
      nextAttemptAt: this.#clock.now() + delay,
      lastError: error,
    };
    this.#retry = retry;
    this.#error = error;
    this.#log("warn", "session.retry", `Binding again in ${delay} ms`, error);
    this.#transition("disconnected", error, retry);
    this.#rebindTimer.start(() => {
      if (this.#paused || this.#closed || this.#state === "error") return;
      this.#attach();
    }, delay);
  }

  /**
   * Ends a spell of being "connected": one that lasted `resetAfterMs`
   * proves the session healthy, so its rebind backoff starts over.
   */
  #endConnectedSpell(): void {
    const since = this.#connectedSince;
    this.#connectedSince = undefined;
    if (
      since !== undefined &&
      this.#clock.now() - since >= this.#reconnect.resetAfterMs
    ) {
      this.#sessionRetries = 0;
    }
  }

  #reconnectNow(): void {
    if (this.#closed || this.#paused || this.#state === "error") return;
    this.#sessionRetries = 0;
    if (!this.#rebindTimer.isRunning) return;
    this.#rebindTimer.stop();
    this.#log("info", "session.reconnect", "Binding again now on request");
    this.#attach();
  }

  // ----- internal: upload -----

  #scheduleUpload(): void {
    if (this.#uploadScheduled) return;
    this.#uploadScheduled = true;
    queueMicrotask(() => {
      this.#uploadScheduled = false;
      this.#upload();
    });
  }

  /** Sends every local changeset not yet sent on this binding. */
  #upload(): void {
    const channel = this.#channel;
    if (
      channel === undefined || !this.#bound || this.#identityPending ||
      this.#paused || this.#closed || this.#state === "error"
    ) {
      return;
    }
    const limit = channel.maxMessageBytes;
    const budget = limit - UPLOAD_OVERHEAD_BYTES;
    let batch: UploadChangeset[] = [];
    let batchBytes = 0;
    for (const { changeset, bytes } of this.#local.pending) {
      if (changeset.clientVersion <= this.#sentThrough) continue;
      if (bytes > budget) {
        this.#fail(
          new SyncError(
            "bad_changeset",
            `Cannot upload changeset ${changeset.clientVersion}: ${bytes} bytes exceed the server's limit of ${limit} per message`,
          ),
          true,
        );
        return;
      }
      if (batch.length > 0 && batchBytes + bytes > budget) {
        if (!this.#sendUpload(channel, batch)) return;
        batch = [];
        batchBytes = 0;
      }
      batch.push(changeset);
      batchBytes += bytes;
    }
    if (batch.length > 0) this.#sendUpload(channel, batch);
  }

  #sendUpload(channel: SessionChannel, changesets: UploadChangeset[]): boolean {
    const message: UploadMessage = {
      type: MessageType.Upload,
      sessionId: channel.sessionId,
      changesets,
    };
    const frame = encodeMessage(message);
    if (frame.byteLength > channel.maxMessageBytes) {
      // Interning across changesets can, rarely, cost more than it saves:
      // split and try again.
      if (changesets.length === 1) {
        this.#fail(
          new SyncError(
            "bad_changeset",
            `Cannot upload changeset ${
              changesets[0]!.clientVersion
            }: ${frame.byteLength} bytes exceed the server's limit of ${channel.maxMessageBytes} per message`,
          ),
          true,
        );
        return false;
      }
      const half = changesets.length >> 1;
      return this.#sendUpload(channel, changesets.slice(0, half)) &&
        this.#sendUpload(channel, changesets.slice(half));
    }
    const accepted = channel.sendUpload(frame, (wireBytes) => {
      this.#bytesSent += wireBytes;
    });
    if (!accepted) return false;
    this.#sentThrough = changesets[changesets.length - 1]!.clientVersion;
    this.#watchForStall();
    return true;
  }

  #waitForAcknowledgement(
    clientVersion: number,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    try {
      this.#checkUsable();
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#tracker.lastAcknowledgedVersion >= clientVersion) {
      return Promise.resolve();
    }
    const deferred = new Deferred<void>();
    const waiter: UploadWaiter = {
      target: clientVersion,
      deferred,
      remove: () => {},
    };
    waiter.remove = onAbort(signal, (reason) => {
      this.#uploadWaiters.delete(waiter);
      deferred.reject(reason);
    });
    this.#uploadWaiters.add(waiter);
    return deferred.promise;
  }

  #resolveUploadWaiters(): void {
    const acknowledged = this.#tracker.lastAcknowledgedVersion;
    for (const waiter of [...this.#uploadWaiters]) {
      if (waiter.target <= acknowledged) {
        this.#uploadWaiters.delete(waiter);
        waiter.remove();
        waiter.deferred.resolve();
      }
    }
  }

  // ----- internal: download waits -----

  #scheduleMark(): void {
    if (this.#markScheduled) return;
    this.#markScheduled = true;
    queueMicrotask(() => {
      this.#markScheduled = false;
      if (
        this.#bound &&
        (this.#downloadWaiters.size > 0 || this.#progressMarkWanted)
      ) {
        this.#sendMark();
      }
    });
  }

  /**
   * A `forCurrentlyOutstandingWork` download registration completes when a
   * MARK sent after it is answered (or the server says nothing more is to
   * come), so one is sent — at once when bound; otherwise the MARK that
   * follows every BIND serves.
   */
  #markForProgress(registration: ProgressRegistration): void {
    if (
      registration.direction !== "download" ||
      registration.mode !== "forCurrentlyOutstandingWork" ||
      !registration.isActive
    ) {
      return;
    }
    this.#progressMarkWanted = true;
    this.#scheduleMark();
  }

  #sendMark(): void {
    const channel = this.#channel;
    if (channel === undefined || !channel.isOpen) return;
    const requestId = this.#nextRequestId++;
    this.#progressMarkWanted = false;
    const waiters = new Set(this.#downloadWaiters);
    this.#downloadWaiters.clear();
    this.#sentMarks.set(requestId, {
      sequence: this.#tracker.sequence + 1,
      waiters,
    });
    this.#bytesSent += channel.send({
      type: MessageType.Mark,
      sessionId: channel.sessionId,
      requestId,
    });
    this.#watchForStall();
  }

  // ----- internal: stall watchdog -----

  /**
   * Whether this binding waits for the server: an UPLOAD not yet
   * acknowledged, or a MARK not yet answered (one follows every BIND, so a
   * bind that is never answered counts too).
   */
  #owesAnswer(): boolean {
    return this.#channel !== undefined && this.#bound &&
      (this.#sentMarks.size > 0 ||
        this.#sentThrough > this.#tracker.lastAcknowledgedVersion);
  }

  /**
   * Starts the response timeout when the server now owes an answer and it
   * is not already running: a later UPLOAD or MARK must not push back the
   * deadline of an earlier one. Stops it when nothing is owed.
   */
  #watchForStall(): void {
    if (!this.#owesAnswer()) {
      this.#stallTimer.stop();
    } else if (!this.#stallTimer.isRunning) {
      this.#startStallTimer();
    }
  }

  #startStallTimer(): void {
    const channel = this.#channel;
    if (channel === undefined) return;
    // Time while our frames are still leaving the client is not the
    // server's: look again shortly, and count the full timeout from when
    // they are gone.
    if (channel.isSending) {
      this.#stallTimer.start(
        () => this.#startStallTimer(),
        Math.min(STALL_DRAIN_POLL_MS, this.#responseTimeoutMs),
      );
      return;
    }
    this.#stallTimer.start(
      () => this.#stallTimeout(channel),
      this.#responseTimeoutMs,
    );
  }

  /** A message for this session arrived: the server is answering. */
  #noteAnswer(): void {
    if (this.#channel === undefined) return;
    this.#stallTimer.stop();
    this.#watchForStall();
    // Handling can take a while (integrating a large DOWNLOAD): the time it
    // takes is the client's, so the wait starts again once it is done.
    this.#unhandled++;
    this.#inbound = this.#inbound.then(this.#answerHandled);
  }

  // One function for every message rather than a closure each.
  #answerHandled = (): void => {
    this.#unhandled--;
    this.#stallTimer.stop();
    this.#watchForStall();
  };

  #stallTimeout(channel: SessionChannel): void {
    if (channel !== this.#channel || !this.#owesAnswer()) return;
    if (this.#unhandled > 0 || channel.isSending) {
      this.#startStallTimer();
      return;
    }
    const owed = [];
    if (this.#sentThrough > this.#tracker.lastAcknowledgedVersion) {
      owed.push(
        `an acknowledgement of client version ${this.#sentThrough}`,
      );
    }
    if (this.#sentMarks.size > 0) owed.push("a MARK reply");
    const error = new SyncError(
      "session_stalled",
      `No answer from the server for ${this.#path} within ${this.#responseTimeoutMs} ms while it owed ${
        owed.join(" and ")
      }`,
    );
    // Unbind (the server may still be working on the old binding: it
    // deduplicates what is uploaded again) and bind afresh after the
    // session backoff; the socket and the other sessions stay as they are.
    this.#leave(true);
    this.#rebindLater(error);
  }

  #forgetDownloadWaiter(waiter: DownloadWaiter): void {
    this.#downloadWaiters.delete(waiter);
    for (const mark of this.#sentMarks.values()) mark.waiters.delete(waiter);
  }

  #rejectWaiters(error: SyncError): void {
    for (const waiter of this.#uploadWaiters) {
      waiter.remove();
      waiter.deferred.reject(error);
    }
    this.#uploadWaiters.clear();
    const downloads = new Set(this.#downloadWaiters);
    for (const mark of this.#sentMarks.values()) {
      for (const waiter of mark.waiters) downloads.add(waiter);
    }
    this.#downloadWaiters.clear();
    this.#sentMarks.clear();
    for (const waiter of downloads) {
      waiter.remove();
      waiter.deferred.reject(error);
    }
  }

  // ----- internal: progress -----

  #registerDownloadCallback(
    callback: (progress: Progress) => void,
  ): ProgressRegistration | null {
    if (this.#closed || this.#state === "error") return null;
    const token = new CallbackToken(
      (_transferred, _transferable, progress) => callback(progress),
      () => {},
    );
    token.registration = this.#tracker.register(
      "download",
      "forCurrentlyOutstandingWork",
      {
        next: (progress) => this.#queueCallback(token, progress),
        complete: () => {},
        error: () => {},
      },
    );
    this.#markForProgress(token.registration);
    return token.registration;
  }

  #progressChanged(): void {
    if (this.#tracker.registrationCount === 0) return;
    const interval = this.#progressIntervalMs;
    if (interval <= 0 || this.#tracker.hasCompletion) {
      this.#publishNow();
      return;
    }
    if (this.#publishTimer.isRunning) return;
    const now = this.#clock.now();
    const due = this.#lastPublishAt + interval;
    if (now >= due) this.#publishNow();
    else this.#publishTimer.start(() => this.#publishNow(), due - now);
  }

  #publishNow(): void {
    this.#publishTimer.stop();
    this.#lastPublishAt = this.#clock.now();
    this.#tracker.publish();
  }

  #queueCallback(token: CallbackToken, progress: Progress): void {
    this.#callbackQueue.push({ token, progress });
    if (this.#callbackQueue.length > 1) return;
    queueMicrotask(() => {
      const queue = this.#callbackQueue;
      this.#callbackQueue = [];
      for (const { token, progress } of queue) {
        // A callback earlier in this round may have cancelled this one.
        if (token.cancelled) continue;
        try {
          token.callback(
            progress.transferredBytes,
            progress.transferableBytes,
            progress,
          );
        } catch (error) {
          this.#log(
            "error",
            "session.callback",
            `A progress callback threw: ${
              error instanceof Error ? error.message : String(error)
            }`,
          );
        }
      }
    });
  }

  // ----- internal: state -----

  #transition(
    next: ConnectionState,
    error?: SyncError,
    retry?: RetryInfo,
  ): void {
    const previous = this.#connectionState;
    if (previous === next) return;
    this.#connectionState = next;
    if (previous === "connected") this.#endConnectedSpell();
    if (next === "connected") this.#connectedSince = this.#clock.now();
    const change: ConnectionStateChange = { previous, current: next };
    if (error !== undefined) change.error = error;
    if (retry !== undefined) change.retry = retry;
    this.#log(
      "debug",
      "session.state",
      `${previous} → ${next}${error ? ` (${error.code})` : ""}`,
      error,
    );
    for (const stream of [...this.#stateStreams]) stream.push(change);
  }

  #log(
    level: "debug" | "info" | "warn" | "error",
    event: string,
    message: string,
    error?: SyncError,
  ): void {
    emitLog(this.#logger, {
      level,
      event,
      message,
      time: this.#clock.now(),
      path: this.#path,
      ...(error === undefined ? {} : { error }),
    });
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

function abortableBarrier(
  barrier: Promise<void>,
  signal: AbortSignal | undefined,
): Promise<void> {
  if (signal === undefined) return barrier;
  return new Promise<void>((resolve, reject) => {
    const remove = onAbort(signal, reject);
    barrier.then(() => {
      remove();
      resolve();
    });
  });
}
