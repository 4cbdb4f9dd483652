// This module is browser compatible.

/**
 * The engine behind one `SyncSession`: it follows the shared connection,
 * binds, uploads, answers waits and reacts to the server's messages
 * (docs/CLIENT.md "Session rules", docs/ARCHITECTURE.md "Session flow on
 * one connection").
 *
 * The pieces it drives each live in their own file: the session's life
 * (`SessionLife`), the upload batcher, the waits ledger, the stall
 * watchdog, the progress notifier and the rebind `Backoff`.
 */

import {
  MessageType,
  type RejectMessage,
  type ServerMessage,
} from "../protocol/messages.ts";
import { abortable } from "../util/abort.ts";
import { type Clock, Timer } from "../util/clock.ts";
import { Backoff } from "./backoff.ts";
import { ClientReset } from "./client_reset.ts";
import {
  beginClientReset,
  finishClientReset,
  type ResetHost,
} from "./reset_flow.ts";
import type {
  Attachment,
  ConnectionClient,
  RetryInfo,
  SessionChannel,
} from "./connection.ts";
import type { SessionInit } from "./session_init.ts";
import {
  type LinkChange,
  type LinkState,
  LinkStateFeed,
} from "./link_state.ts";
import { MicrotaskOnce } from "../util/microtask_once.ts";
import { InboundQueue } from "./inbound_queue.ts";
import { emitLog } from "./log.ts";
import { ProgressTracker } from "./progress.ts";
import { ProgressNotifier } from "./progress_notifier.ts";
import { type PublicSessionState, SessionLife } from "./session_life.ts";
import { stallError, StallWatchdog } from "./stall_watchdog.ts";
import { SyncError, syncErrorFromWire } from "./sync_error.ts";
import { UploadBatcher } from "./upload_batcher.ts";
import { WaitsLedger } from "./waits_ledger.ts";
import { type SessionStats, SessionTally } from "./session_tally.ts";

// Rebinds after session errors cap the backoff's exponent (the
// connection's does not).
const REBIND_MAX_EXPONENT = 60;

/** The engine of one session; `SyncSession` is its public face. */
export class SessionCore {
  readonly path: string;
  #init: SessionInit;
  #clock: Clock;
  #life = new SessionLife();
  #link = new LinkStateFeed();
  #error: SyncError | undefined;
  #retry: RetryInfo | undefined;
  #attachment: Attachment | undefined;
  #client: ConnectionClient;
  /** The BIND and the messages of this session, one after the other. */
  #inbound: InboundQueue;

  #tracker = new ProgressTracker();
  #notifier: ProgressNotifier;
  #waits = new WaitsLedger();
  #reset: ClientReset;
  #batcher = new UploadBatcher({ wake: () => this.#upload() });
  #watchdog: StallWatchdog;
  #rebinds: Backoff;
  #rebindTimer: Timer;
  /** Uploads, and MARKs for waits, once per turn however often asked. */
  #uploadSoon = new MicrotaskOnce(() => this.#upload());
  #markSoon = new MicrotaskOnce(() => {
    if (this.#life.isBound && this.#waits.needsMark) this.#sendMark();
  });
  #unlisten: (() => void) | undefined;

  #tally = new SessionTally();

  /** @param init The session's configuration. */
  constructor(init: SessionInit) {
    this.path = init.path;
    const config = init.config;
    this.#init = init;
    this.#clock = config.clock;
    this.#reset = new ClientReset(init.clientReset);
    this.#notifier = new ProgressNotifier(
      this.#tracker,
      config.clock,
      config.progressIntervalMs,
      (error) =>
        this.#log(
          "error",
          "session_callback",
          `A progress callback threw: ${
            error instanceof Error ? error.message : String(error)
          }`,
        ),
      () => this.#markForProgress(),
    );
    this.#watchdog = new StallWatchdog(
      config.clock,
      config.keepalive.responseTimeoutMs,
      {
        binding: () => this.#life.channel,
        owesAnswer: () => this.#owesAnswer(),
        stalled: () => this.#stalled(),
      },
    );
    this.#rebinds = new Backoff(
      config.reconnect,
      config.random,
      () => config.clock.now(),
      REBIND_MAX_EXPONENT,
    );
    this.#rebindTimer = new Timer(config.clock);
    this.#inbound = new InboundQueue(
      (error) => this.#handlingFailed(error),
      () => this.#watchdog.answerHandled(),
    );
    // The stall watchdog listens to the connection beside the handlers: a
    // binding's end stops it, every message for this session restarts it.
    this.#client = {
      connectionConnecting: () => {
        this.#watchdog.stop();
        this.#onConnecting();
      },
      connectionOpened: (channel) => {
        this.#watchdog.stop();
        this.#onOpened(channel);
      },
      connectionMessage: (message, wireBytes) =>
        this.#onMessage(message, wireBytes),
      connectionLost: (error, retry) => {
        this.#watchdog.stop();
        this.#onLost(error, retry);
      },
      connectionFailed: (error) => this.fail(error, false),
    };
  }

  // ----- what the facade reads -----

  /** `session.state`. */
  get state(): PublicSessionState {
    return this.#life.publicState;
  }

  /** `session.connectionState`. */
  get connectionState(): LinkState {
    return this.#link.current;
  }

  /** `session.error`. */
  get error(): SyncError | undefined {
    return this.#error;
  }

  /** `session.retry`. */
  get retry(): RetryInfo | undefined {
    return this.#retry;
  }

  /** Whether a progress registration or wait could still be answered. */
  get isOver(): boolean {
    return this.#life.isClosed || this.#life.fatalError !== undefined;
  }

  /** `session.stats()`. */
  stats(): SessionStats {
    let rttMs: number | undefined;
    try {
      rttMs = this.#life.isClosed ? undefined : this.#init.connection().rttMs;
    } catch {
      rttMs = undefined;
    }
    return this.#tally.stats(rttMs, this.#tracker, this.#reset.count);
  }

  // ----- lifecycle -----

  /** Starts syncing (once). */
  start(): void {
    if (this.#life.phase !== "new") return;
    this.#life.go({ phase: "unbound" });
    const local = this.#init.local;
    this.#tracker.restore(local.meta.acknowledgedClientVersion);
    for (const { changeset, bytes } of local.pending) {
      this.#tracker.localCommitted(changeset.clientVersion, bytes);
    }
    this.#unlisten = local.listen({
      onLocalCommit: ({ changeset, bytes }) => {
        this.#tracker.localCommitted(changeset.clientVersion, bytes);
        this.#notifier.changed();
        this.#uploadSoon.schedule();
      },
    });
    this.#attach();
  }

  /** `session.pause()`. */
  pause(): void {
    if (!this.#life.isLive) return;
    this.#tally.paused();
    this.#leave(true);
    this.#life.go({ phase: "paused" });
    this.#retry = undefined;
    this.#log("info", "session_pause", "Paused");
    this.#transition("disconnected");
  }

  /** `session.resume()`. */
  resume(): void {
    if (!this.#life.isPaused) return;
    this.#life.go({ phase: "unbound" });
    this.#rebinds.reset();
    this.#log("info", "session_resume", "Resumed");
    this.#attach();
  }

  /**
   * `app.reconnect()` and the `online` event: resets the rebind backoff and
   * cancels a pending rebind delay, binding now.
   */
  reconnectNow(): void {
    if (!this.#life.isLive) return;
    this.#rebinds.reset();
    if (!this.#rebindTimer.isRunning) return;
    this.#rebindTimer.stop();
    this.#log("info", "session_reconnect", "Binding again now on request");
    this.#attach();
  }

  /** Ends the session for good (its realm closed). */
  close(): void {
    if (this.#life.isClosed) return;
    this.#leave(true);
    this.#reset.abandon();
    const fatal = this.#life.fatalError;
    this.#life.go({ phase: "closed", error: fatal });
    this.#notifier.stop();
    this.#retry = undefined;
    this.#unlisten?.();
    this.#unlisten = undefined;
    this.#waits.rejectAll(
      new SyncError("session_closed", `Session for ${this.path} closed`),
    );
    this.#tracker.close();
    this.#notifier.clearCallbacks();
    this.#transition("disconnected");
    this.#link.end();
    this.#log("debug", "session_close", "Closed");
  }

  /** Puts the session in `"error"` for good. */
  fail(error: SyncError, unbind: boolean): void {
    if (this.isOver) return;
    this.#leave(unbind);
    this.#reset.abandon();
    this.#life.go({ phase: "failed", error });
    this.#notifier.stop();
    this.#retry = undefined;
    this.#error = error;
    this.#log("error", "session_error", error.message, error);
    this.#transition("disconnected", error);
    this.#waits.rejectAll(error);
    this.#tracker.close(error);
    this.#notifier.clearCallbacks();
    this.#link.end(error);
  }

  /**
   * Throws the session's fatal error, or `session_closed` when closed.
   *
   * @throws {SyncError} When the session can no longer answer a wait.
   */
  checkUsable(): void {
    const fatal = this.#life.fatalError;
    if (fatal !== undefined) throw fatal;
    if (this.#life.isClosed) {
      throw new SyncError(
        "session_closed",
        `Session for ${this.path} is closed`,
      );
    }
  }

  #attach(): void {
    if (this.#attachment !== undefined) return;
    try {
      const attachment = this.#init.connection().attach(this.#client);
      if (this.#life.isLive) this.#attachment = attachment;
      else attachment.detach();
    } catch (error) {
      this.fail(
        new SyncError(
          "session_closed",
          `Cannot sync ${this.path}: ${(error as Error).message}`,
          { cause: error },
        ),
        false,
      );
    }
  }

  /** Leaves the connection (pause, close, failure, a stall). */
  #leave(unbind: boolean): void {
    this.#rebindTimer.stop();
    this.#watchdog.stop();
    const attachment = this.#attachment;
    this.#attachment = undefined;
    const channel = this.#life.channel;
    if (unbind && channel !== undefined && this.#life.isBound) {
      this.#tally.bytesSent += channel.send({
        type: MessageType.Unbind,
        sessionId: channel.sessionId,
      });
    }
    attachment?.detach({ unbind: false });
    this.#dropChannel();
  }

  // ----- connection events -----

  #onConnecting(): void {
    if (!this.#life.isLive) return;
    if (this.#link.current !== "disconnected") this.#tally.lost();
    this.#dropChannel();
    this.#retry = undefined;
    this.#transition("connecting");
  }

  #onOpened(channel: SessionChannel): void {
    if (!this.#life.isLive) return;
    this.#dropChannel();
    this.#life.go({ phase: "opened", channel });
    this.#inbound.push(() => this.#bind(channel), false);
  }

  #onLost(error: SyncError | undefined, retry: RetryInfo | undefined): void {
    if (!this.#life.isLive) return;
    this.#dropChannel();
    this.#tally.lost();
    this.#retry = retry;
    if (error !== undefined) this.#error = error;
    this.#transition("disconnected", error, retry);
  }

  #onMessage(message: ServerMessage, wireBytes: number): void {
    const channel = this.#life.channel;
    if (channel === undefined) return;
    this.#tally.bytesReceived += wireBytes;
    // The first answer for this session means the server accepted the bind
    // (a refusal arrives as an ERROR, which is not "connected").
    if (
      this.#link.current === "connecting" &&
      message.type !== MessageType.Error
    ) {
      this.#error = undefined;
      this.#transition("connected");
    }
    if (this.#inbound.idle && this.#handleNow(message)) return;
    // Handling can take a while (integrating a large DOWNLOAD): the time it
    // takes is the client's, so the stall wait starts again once it is done.
    this.#watchdog.answerArrived();
    this.#inbound.push(() => this.#handle(message, channel), true);
  }

  /**
   * `#handle` for a DOWNLOAD with nothing ahead of it, done before returning
   * when the realm can integrate it at once (`LocalRealm.integrateNow`): no
   * promise or microtask per message (docs/PERFORMANCE.md "Fan-out"). False,
   * having done nothing, when it must wait its turn.
   */
  #handleNow(message: ServerMessage): boolean {
    if (message.type !== MessageType.Download || this.#reset.isStaging) {
      return false;
    }
    try {
      const acknowledged = this.#init.local.integrateNow(message);
      if (acknowledged === undefined) return false;
      this.#tracker.downloaded(
        message.changesetBytes,
        message.downloadableBytes,
      );
      this.#settle(acknowledged);
    } catch (error) {
      this.#handlingFailed(error);
    }
    this.#watchdog.answered();
    return true;
  }

  /** Forgets the current binding; its unanswered MARKs wait for the next. */
  #dropChannel(): void {
    if (this.#life.channel === undefined) return;
    this.#life.go({ phase: "unbound" });
    this.#waits.bindingLost();
  }

  async #bind(channel: SessionChannel): Promise<void> {
    if (channel !== this.#life.channel || !channel.isOpen) return;
    const local = this.#init.local;
    const meta = local.meta;
    // A client reset binds with no identity and cursors 0, and starts its
    // staging download over on every binding.
    const resetting = this.#reset.isStaging;
    if (resetting) this.#reset.begin();
    this.#tally.bytesSent += channel.send({
      type: MessageType.Bind,
      sessionId: channel.sessionId,
      path: this.path,
      clientIdentity: resetting ? null : meta.clientIdentity,
      downloadCursor: resetting ? 0 : meta.downloadCursor,
      downloadCursorSalt: resetting ? 0 : meta.downloadCursorSalt ?? 0,
      uploadCursor: resetting ? 0 : local.uploadCursor,
    });
    this.#tally.bound();
    this.#batcher.rebound(meta.acknowledgedClientVersion);
    this.#life.go({
      phase: resetting || meta.clientIdentity === null
        ? "identifying"
        : "bound",
      channel,
    });
    // A MARK right after BIND: its reply says the server has nothing more
    // for now, which makes download progress known even when there was
    // nothing to download, and answers waits made while unbound. For a
    // client reset it says the staging download is complete.
    const markId = this.#sendMark();
    if (resetting && markId !== undefined) this.#reset.markSent(markId);
    this.#upload();
    await Promise.resolve();
  }

  async #handle(
    message: ServerMessage,
    channel: SessionChannel,
  ): Promise<void> {
    switch (message.type) {
      case MessageType.Ident: {
        if (this.#reset.isStaging) {
          // Kept until the reset commits, with the state it belongs to.
          this.#reset.identified(message.clientIdentity);
          const state = this.#life.state;
          if (state.phase === "identifying" && state.channel === channel) {
            this.#life.go({ phase: "bound", channel });
          }
          return;
        }
        await this.#init.local.setIdentity(message.clientIdentity);
        const state = this.#life.state;
        if (state.phase === "identifying" && state.channel === channel) {
          this.#life.go({ phase: "bound", channel });
          this.#upload();
        }
        return;
      }
      case MessageType.Download: {
        // Like every message of a binding lost before it was handled: a
        // REJECT of that binding just before it is dropped too, so its
        // acknowledgement must not settle the refused write. The next
        // binding sends it all again from the cursors its BIND gave.
        if (channel !== this.#life.channel) return;
        if (this.#reset.isStaging) {
          this.#reset.stage(message);
          this.#tracker.downloaded(
            message.changesetBytes,
            message.downloadableBytes,
          );
          this.#notifier.changed();
          return;
        }
        const { acknowledged } = await this.#init.local.integrate(message);
        this.#tracker.downloaded(
          message.changesetBytes,
          message.downloadableBytes,
        );
        this.#settle(acknowledged);
        return;
      }
      case MessageType.MarkReply: {
        if (channel !== this.#life.channel) return;
        if (this.#reset.isCaughtUp(message.requestId)) {
          await finishClientReset(this.#resetHost());
          if (channel !== this.#life.channel) return;
        }
        const mark = this.#waits.takeMark(message.requestId);
        if (mark === undefined) return;
        this.#tracker.caughtUp(mark.sequence);
        this.#notifier.changed();
        this.#waits.resolveMark(mark);
        return;
      }
      case MessageType.Reject: {
        if (channel !== this.#life.channel) return;
        await this.#rejected(message);
        return;
      }
      case MessageType.Error: {
        if (channel !== this.#life.channel) return;
        const error = syncErrorFromWire(
          message.code,
          message.tryAgain,
          message.message,
        );
        if (error.code === "client_reset_required") {
          await beginClientReset(this.#resetHost(), error);
          return;
        }
        if (error.isFatal || !message.tryAgain) this.fail(error, false);
        else this.#rebindLater(error);
        return;
      }
      default:
        return;
    }
  }

  /**
   * The server refused one write (REJECT): the local copy reverts it, its
   * receipt rejects with `write_rejected`, and the session goes on.
   */
  async #rejected(message: RejectMessage): Promise<void> {
    if (!await this.#init.local.reject(message)) return;
    const cause = syncErrorFromWire(message.code, false, message.message);
    const error = new SyncError(
      "write_rejected",
      `The server refused write ${message.clientVersion} to ${this.path} (${cause.code}): ${message.message}`,
      { cause },
    );
    this.#log("warn", "session_write_rejected", error.message, error);
    this.#waits.failed(message.clientVersion, error);
    this.#settle(message.clientVersion);
  }

  /** Everything at or below `version` is settled: waits, progress, uploads. */
  #settle(version: number): void {
    this.#tracker.acknowledged(version);
    this.#waits.acknowledged(this.#tracker.lastAcknowledgedVersion);
    this.#notifier.changed();
    if (this.#batcher.acknowledged(version)) this.#upload();
  }

  /** The session as its client reset sees it (reset_flow.ts). */
  #resetHost(): ResetHost {
    return {
      path: this.path,
      reset: this.#reset,
      local: this.#init.local,
      realm: (hook) => this.#init.realm?.(hook),
      fail: (error) => this.fail(error, false),
      leave: () => this.#leave(false),
      report: (error) => {
        this.#error = error;
        this.#log("warn", "session_client_reset", error.message, error);
        this.#transition("disconnected", error);
      },
      rebind: () => {
        if (this.#life.isLive) this.#attach();
      },
      dropped: (version, error) => this.#waits.failed(version, error),
      settled: (acknowledged) => {
        this.#tracker.acknowledged(acknowledged);
        this.#waits.acknowledged(this.#tracker.lastAcknowledgedVersion);
        this.#batcher.rebound(acknowledged);
        this.#notifier.changed();
        this.#upload();
      },
      log: (level, event, message) => this.#log(level, event, message),
    };
  }

  #handlingFailed(error: unknown): void {
    if (this.isOver) return;
    this.fail(
      error instanceof SyncError ? error : new SyncError(
        "protocol_violation",
        `Cannot handle a message for ${this.path}: ${
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
    this.#rebinds.down();
    const failures = this.#rebinds.attempts;
    if (failures >= this.#init.config.reconnect.maxAttempts) {
      this.fail(
        new SyncError(
          "reconnect_gave_up",
          `Gave up after ${failures} failed attempts in a row to bind ${this.path}: ${error.message}`,
          { cause: error },
        ),
        false,
      );
      return;
    }
    this.#leave(false);
    const delay = this.#rebinds.next();
    const retry: RetryInfo = {
      attempt: this.#rebinds.attempts,
      nextAttemptAt: this.#clock.now() + delay,
      lastError: error,
    };
    this.#retry = retry;
    this.#error = error;
    this.#log("warn", "session_retry", `Binding again in ${delay} ms`, error);
    this.#transition("disconnected", error, retry);
    this.#rebindTimer.start(() => {
      if (this.#life.isLive) this.#attach();
    }, delay);
  }

  // ----- uploads -----

  /** Sends every local changeset not yet sent on this binding. */
  #upload(): void {
    const channel = this.#life.channel;
    if (
      channel === undefined || !this.#life.canUpload || this.#reset.isStaging
    ) return;
    const before = this.#batcher.sentThrough;
    const error = this.#batcher.send(
      this.#init.local.pendingAfter(before),
      channel,
      (wireBytes) => {
        this.#tally.bytesSent += wireBytes;
      },
    );
    if (this.#batcher.sentThrough !== before) this.#watchdog.watch();
    if (error !== undefined) this.fail(error, true);
  }

  /** Waits until the local changeset `clientVersion` is acknowledged. */
  waitForAcknowledgement(
    clientVersion: number,
    signal: AbortSignal | undefined,
    receipt = true,
  ): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    try {
      this.checkUsable();
    } catch (error) {
      return Promise.reject(error);
    }
    // A write's own receipt rejects when that write was refused or dropped.
    const failure = receipt ? this.#waits.failure(clientVersion) : undefined;
    if (failure !== undefined) return Promise.reject(failure.error);
    if (this.#tracker.lastAcknowledgedVersion >= clientVersion) {
      return Promise.resolve();
    }
    return this.#waits.waitForUpload(clientVersion, signal, receipt);
  }

  /** `session.waitForUpload()`, after its checks. */
  async waitForUpload(signal: AbortSignal | undefined): Promise<void> {
    // Writes started before this call are part of "committed before".
    await abortable(this.#init.local.barrier(), signal);
    await this.waitForAcknowledgement(
      this.#tracker.lastCommittedVersion,
      signal,
      false,
    );
  }

  // ----- downloads -----

  /** `session.waitForDownload()`, after its checks. */
  waitForDownload(signal: AbortSignal | undefined): Promise<void> {
    const wait = this.#waits.waitForDownload(signal);
    this.#markSoon.schedule();
    return wait;
  }

  /** Sends a MARK; returns its request id (undefined when not sent). */
  #sendMark(): number | undefined {
    const channel = this.#life.channel;
    if (channel === undefined || !channel.isOpen) return undefined;
    const requestId = this.#waits.markSent(this.#tracker.sequence + 1);
    this.#tally.bytesSent += channel.send({
      type: MessageType.Mark,
      sessionId: channel.sessionId,
      requestId,
    });
    this.#watchdog.watch();
    return requestId;
  }

  // ----- stalls -----

  /**
   * Whether this binding waits for the server: an UPLOAD not yet
   * acknowledged, or a MARK not yet answered (one follows every BIND, so a
   * bind that is never answered counts too).
   */
  #owesAnswer(): boolean {
    return this.#life.isBound &&
      (this.#waits.marksOutstanding ||
        this.#batcher.sentThrough > this.#tracker.lastAcknowledgedVersion);
  }

  #stalled(): void {
    const sentThrough = this.#batcher.sentThrough;
    const error = stallError(
      this.path,
      this.#init.config.keepalive.responseTimeoutMs,
      sentThrough > this.#tracker.lastAcknowledgedVersion ? sentThrough : 0,
      this.#waits.marksOutstanding,
    );
    // Unbind (the server may still be working on the old binding: it
    // deduplicates what is uploaded again) and bind afresh after the
    // session backoff; the socket and the other sessions stay as they are.
    this.#leave(true);
    this.#rebindLater(error);
  }

  // ----- progress and streams -----

  /**
   * Progress registrations and callbacks (`getProgressStream`,
   * `addProgressNotification`, `onProgress`): callers check `isOver`
   * first, since a registration on an ended session would never fire.
   */
  get progress(): ProgressNotifier {
    return this.#notifier;
  }

  /** `session.connectionStateChanges()`. */
  connectionStateChanges(
    signal: AbortSignal | undefined,
  ): ReadableStream<LinkChange> {
    return this.#link.follow(
      signal,
      this.#life.fatalError,
      this.#life.isClosed,
    );
  }

  /**
   * A progress registration wants a MARK: sent at once when bound;
   * otherwise the MARK that follows every BIND serves.
   */
  #markForProgress(): void {
    this.#waits.wantMark();
    this.#markSoon.schedule();
  }

  #transition(next: LinkState, error?: SyncError, retry?: RetryInfo): void {
    const change = this.#link.move(next, error, retry);
    if (change === undefined) return;
    if (change.previous === "connected") this.#rebinds.down();
    if (next === "connected") this.#rebinds.up();
    this.#log(
      "debug",
      "session_state",
      `${change.previous} → ${next}${error ? ` (${error.code})` : ""}`,
      error,
    );
  }

  #log(
    level: "debug" | "info" | "warn" | "error",
    event: string,
    message: string,
    error?: SyncError,
  ): void {
    emitLog(this.#init.config.logger, {
      level,
      event,
      message,
      time: this.#clock.now(),
      path: this.path,
      ...(error === undefined ? {} : { error }),
    });
  }
}
