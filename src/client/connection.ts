// This module is browser compatible.

/**
 * The client's `Connection`: one WebSocket per user shared by that user's
 * sessions, with its retry policy (docs/CLIENT.md "Connection, retries and
 * keepalive").
 */

import type { UploadWindow } from "./upload_window.ts";
import {
  type ClientMessage,
  type HandshakeReplyMessage,
  MessageType,
  type ReceivedMessage,
  type ServerMessage,
} from "../protocol/messages.ts";
import { Timer } from "../util/clock.ts";
import { Backoff } from "./backoff.ts";
import { ConnectionAttempt, encodeForSend } from "./connection_attempt.ts";
import type {
  AccessToken,
  Attachment,
  ConnectionClient,
  ConnectionOptions,
  RetryInfo,
  SessionChannel,
} from "./connection_types.ts";
import { Keepalive } from "./keepalive.ts";
import { emitLog } from "./log.ts";
import { SyncError } from "./sync_error.ts";

export type {
  AccessToken,
  Attachment,
  ConnectionClient,
  ConnectionOptions,
  RetryInfo,
  SessionChannel,
  TokenSource,
} from "./connection_types.ts";

/**
 * How long `close()` waits for a socket's closing handshake, in
 * milliseconds: enough for a live server, short for a dead link (the
 * WebSocket API has no way to drop a socket without the handshake).
 */
export const CLOSE_WAIT_MS = 1_000;

/** The phase of a connection. */
export type ConnectionPhase =
  | "idle"
  | "connecting"
  | "connected"
  | "waiting"
  | "closed";

interface Slot {
  client: ConnectionClient;
  channel: Channel | undefined;
}

/** A bound session's channel on one attempt's socket. */
class Channel implements SessionChannel {
  readonly sessionId: number;
  readonly maxMessageBytes: number;
  isOpen = true;
  #attempt: ConnectionAttempt;

  constructor(
    sessionId: number,
    maxMessageBytes: number,
    attempt: ConnectionAttempt,
  ) {
    this.sessionId = sessionId;
    this.maxMessageBytes = maxMessageBytes;
    this.#attempt = attempt;
  }

  get isSending(): boolean {
    return this.isOpen && this.#attempt.isSending;
  }

  get protocolVersion(): number {
    return this.#attempt.protocolVersion;
  }

  get uploadWindow(): UploadWindow {
    return this.#attempt.uploadWindow;
  }

  send(message: ClientMessage): number {
    return this.isOpen
      ? this.#attempt.sendBytes(
        encodeForSend(message, this.#attempt.protocolVersion),
        false,
      )
      : 0;
  }

  sendUpload(
    frame: Uint8Array<ArrayBuffer>,
    onSent: (wireBytes: number) => void,
  ): boolean {
    return this.isOpen && this.#attempt.sendBytes(frame, true, onSent) > 0;
  }
}

/**
 * One WebSocket to one server for one user, shared by every session of that
 * user (multiplexed by session id). Dialled when the first session attaches,
 * closed `lingerMs` after the last one leaves. Owns the one backoff and the
 * one dial for all its sessions, keepalive, in-band token refresh, and the
 * mapping of connection-level errors to retries or failures.
 *
 * Retry rules:
 * - a lost connection is retried after `nextDelay(n)` (full jitter), `n`
 *   counting retries since the connection last stayed up `resetAfterMs`;
 * - `maxAttempts` failed dials in a row (no HANDSHAKE_REPLY) end every
 *   session with `reconnect_gave_up`;
 * - an expired or rejected token is dropped and the next dial, at once,
 *   uses a fresh one; a second rejection in a row is fatal (`bad_token`), a
 *   second expiry is retried with backoff;
 * - fatal errors (protocol violation, unsupported version, login refused)
 *   end every session attached.
 */
export class Connection {
  #options: ConnectionOptions;
  #phase: ConnectionPhase = "idle";
  #slots = new Map<ConnectionClient, Slot>();
  #bySessionId = new Map<number, Slot>();
  #nextSessionId = 1;
  /** The current attempt, from its dial to its teardown. */
  #attempt: ConnectionAttempt | undefined;
  #retryTimer: Timer;
  #lingerTimer: Timer;
  #keepalive: Keepalive;
  /** Failed dials in a row (no HANDSHAKE_REPLY), against `maxAttempts`. */
  #failures = 0;
  #backoff: Backoff;
  #authRetried = false;
  #freshToken = false;
  #maxMessageBytes = 0;
  #retry: RetryInfo | undefined;
  #lastError: SyncError | undefined;
  #closing = new Set<Promise<void>>();
  #bytesSent = 0;
  #bytesReceived = 0;
  #connects = 0;
  #received: ReceivedMessage;

  /** @param options Where to connect and how. */
  constructor(options: ConnectionOptions) {
    this.#options = options;
    this.#received = {
      type: MessageType.Received,
      receivedBytes: 0,
      // The server sizes DOWNLOADs to arrive well within the shorter wait.
      timeoutMs: Math.max(
        1,
        Math.floor(
          Math.min(
            options.keepalive.readTimeoutMs,
            options.keepalive.responseTimeoutMs,
            Number.MAX_SAFE_INTEGER,
          ),
        ),
      ),
    };
    const clock = options.clock;
    this.#backoff = new Backoff(
      options.reconnect,
      options.random,
      () => clock.now(),
    );
    this.#retryTimer = new Timer(clock);
    this.#lingerTimer = new Timer(clock);
    this.#keepalive = new Keepalive(clock, options.keepalive, {
      sendPing: (timestamp) => {
        this.#attempt?.sendFrame({ type: MessageType.Ping, timestamp });
      },
      onDead: (reason) => {
        this.#lost(
          new SyncError(
            "read_timeout",
            reason === "read_timeout"
              ? `No data from the server within ${options.keepalive.readTimeoutMs} ms`
              : `No answer to a liveness check within ${options.keepalive.wakeTimeoutMs} ms after a pause in timers (the machine slept?)`,
          ),
        );
      },
    });
  }

  /** The current phase. */
  get phase(): ConnectionPhase {
    return this.#phase;
  }

  /** The last measured round-trip time, in milliseconds. */
  get rttMs(): number | undefined {
    return this.#keepalive.rttMs;
  }

  /** The scheduled retry, while waiting for one. */
  get retry(): RetryInfo | undefined {
    return this.#retry;
  }

  /** Bytes sent over every socket so far. */
  get bytesSent(): number {
    return this.#bytesSent;
  }

  /** Bytes received over every socket so far. */
  get bytesReceived(): number {
    return this.#bytesReceived;
  }

  /** Number of successful handshakes so far. */
  get connects(): number {
    return this.#connects;
  }

  /** Number of attached clients. */
  get clientCount(): number {
    return this.#slots.size;
  }

  /**
   * Attaches a session. It hears at once where the connection stands
   * (connecting, opened, or lost with the scheduled retry) and from then on
   * every change.
   *
   * @throws {TypeError} When the connection is closed, or `client` is
   *   already attached.
   */
  attach(client: ConnectionClient): Attachment {
    if (this.#phase === "closed") {
      throw new TypeError("Cannot attach: the connection is closed");
    }
    if (this.#slots.has(client)) {
      throw new TypeError("Cannot attach: already attached");
    }
    const slot: Slot = { client, channel: undefined };
    this.#slots.set(client, slot);
    this.#lingerTimer.stop();
    switch (this.#phase) {
      case "idle":
        this.#dial();
        break;
      case "connecting":
        client.connectionConnecting();
        break;
      case "connected":
        client.connectionConnecting();
        this.#open(slot, this.#attempt!);
        break;
      case "waiting":
        client.connectionLost(this.#lastError, this.#retry);
        break;
    }
    return { detach: (options) => this.#detach(slot, options?.unbind ?? true) };
  }

  /**
   * Reconnects now: cancels a pending delay, resets the backoff, and
   * replaces a socket that is open or opening (it may have gone silent).
   * Does nothing while no session is attached.
   */
  reconnect(): void {
    if (this.#phase === "closed" || this.#phase === "idle") return;
    this.#backoff.reset();
    this.#failures = 0;
    this.#log("info", "connection_reconnect", "Reconnecting now on request");
    this.#teardown();
    this.#dial();
  }

  /**
   * The network came back (a browser `online` event): retries at once when
   * waiting, and checks an open socket's liveness with a short deadline.
   */
  networkOnline(): void {
    if (this.#phase === "waiting") this.reconnect();
    else if (this.#phase === "connected") this.#keepalive.checkNow();
  }

  /**
   * Closes the socket and stops every timer; attached clients are dropped
   * without notice (close them first). Resolves once every socket this
   * connection opened has closed, or after {@linkcode CLOSE_WAIT_MS} for a
   * peer that never answers the close (a dead link). A second call waits for
   * the same.
   */
  async close(): Promise<void> {
    if (this.#phase !== "closed") {
      this.#phase = "closed";
      this.#slots.clear();
      this.#bySessionId.clear();
      this.#lingerTimer.stop();
      this.#retryTimer.stop();
      this.#retry = undefined;
      this.#teardown();
    }
    await this.#settleClosing();
  }

  #settleClosing(): Promise<void> {
    if (this.#closing.size === 0) return Promise.resolve();
    const all = Promise.all([...this.#closing]).then(() => {});
    // A peer that never answers the close frame must not hold close()
    // forever.
    return new Promise<void>((resolve) => {
      const timer = new Timer(this.#options.clock);
      timer.start(() => resolve(), CLOSE_WAIT_MS);
      all.then(() => {
        timer.stop();
        resolve();
      });
    });
  }

  #detach(slot: Slot, unbind: boolean): void {
    if (this.#slots.get(slot.client) !== slot) return;
    this.#slots.delete(slot.client);
    const channel = slot.channel;
    if (channel !== undefined) {
      this.#bySessionId.delete(channel.sessionId);
      if (unbind && channel.isOpen) {
        channel.send({
          type: MessageType.Unbind,
          sessionId: channel.sessionId,
        });
      }
      channel.isOpen = false;
      slot.channel = undefined;
    }
    if (this.#slots.size > 0) return;
    if (this.#phase === "waiting") {
      this.#retryTimer.stop();
      this.#retry = undefined;
      this.#phase = "idle";
    } else if (this.#phase === "connecting" || this.#phase === "connected") {
      this.#lingerTimer.start(() => this.#idleClose(), this.#options.lingerMs);
    }
  }

  #idleClose(): void {
    if (this.#slots.size > 0) return;
    this.#log("debug", "connection_idle", "Closing the unused connection");
    this.#teardown();
    this.#phase = "idle";
    this.#backoff.reset();
    this.#failures = 0;
  }

  #open(slot: Slot, attempt: ConnectionAttempt): void {
    const sessionId = this.#nextSessionId++;
    const channel = new Channel(sessionId, this.#maxMessageBytes, attempt);
    slot.channel = channel;
    this.#bySessionId.set(sessionId, slot);
    slot.client.connectionOpened(channel);
  }

  #dial(): void {
    this.#retryTimer.stop();
    this.#retry = undefined;
    this.#phase = "connecting";
    const attempt = new ConnectionAttempt(this.#options, {
      gotToken: () => {
        this.#freshToken = false;
      },
      handshaken: (reply, token) => this.#handshaken(attempt, reply, token),
      message: (sessionId, message, wireBytes) =>
        this.#dispatch(sessionId, message, wireBytes),
      lost: (error, retryAfterMs) => this.#lost(error, retryAfterMs),
      pong: (timestamp) => this.#keepalive.notePong(timestamp),
      received: (bytes) => {
        this.#bytesReceived += bytes;
        this.#keepalive.noteInbound();
      },
      sent: (bytes) => {
        this.#bytesSent += bytes;
      },
      log: (level, event, message) => this.#log(level, event, message),
    }, this.#received);
    this.#attempt = attempt;
    this.#log("debug", "connection_state", "Connecting");
    // A client told may tear this attempt down (a pause, a failure).
    for (const slot of [...this.#slots.values()]) {
      if (attempt.isDropped) return;
      slot.client.connectionConnecting();
    }
    if (attempt.isDropped) return;
    attempt.dial(this.#freshToken, this.#closing);
  }

  #dispatch(
    sessionId: number,
    message: ServerMessage,
    wireBytes: number,
  ): void {
    const slot = this.#bySessionId.get(sessionId);
    // Messages for a session that has since unbound are expected; drop them.
    slot?.client.connectionMessage(message, wireBytes);
  }

  #handshaken(
    attempt: ConnectionAttempt,
    message: HandshakeReplyMessage,
    token: AccessToken,
  ): void {
    this.#phase = "connected";
    this.#connects++;
    this.#backoff.up();
    this.#failures = 0;
    this.#maxMessageBytes = message.maxMessageBytes;
    this.#lastError = undefined;
    this.#keepalive.start();
    attempt.scheduleRefresh(token);
    // Protocol 1: before any BIND, so the server sizes even a session's
    // first DOWNLOAD for a link it has not measured yet. Protocol 2 servers
    // assume it, and it is not sent: the server never answers a RECEIVED, so
    // the BIND right after it would wait ~40 ms for the server's delayed TCP
    // ACK (Nagle's algorithm; PROTOCOL.md §4.8).
    if (attempt.protocolVersion < 2) attempt.acknowledge();
    this.#log("info", "connection_state", "Connected");
    for (const slot of [...this.#slots.values()]) {
      if (attempt.isDropped) return;
      if (this.#slots.get(slot.client) === slot && slot.channel === undefined) {
        this.#open(slot, attempt);
      }
    }
  }

  /** Drops the current attempt and closes the channels opened on it. */
  #teardown(): void {
    this.#attempt?.drop();
    this.#attempt = undefined;
    this.#keepalive.stop();
    for (const slot of this.#slots.values()) {
      if (slot.channel !== undefined) {
        slot.channel.isOpen = false;
        slot.channel = undefined;
      }
    }
    this.#bySessionId.clear();
  }

  /** The current attempt or socket failed with `error`. */
  #lost(error: SyncError, retryAfterMs?: number): void {
    if (this.#phase === "closed") return;
    const wasConnected = this.#phase === "connected";
    if (wasConnected && this.#backoff.down()) this.#authRetried = false;
    this.#teardown();
    this.#lastError = error;
    // One log line per change: the loss and what happens next together.
    const what = wasConnected
      ? `Connection lost: ${error.message}`
      : `Connection attempt failed: ${error.message}`;
    if (error.code === "token_expired" || error.code === "bad_token") {
      this.#freshToken = true;
      if (!this.#authRetried && this.#slots.size > 0) {
        // The first rejection in a row: a fresh token, at once.
        this.#authRetried = true;
        this.#log(
          "info",
          "connection_reconnect",
          `${what}; reconnecting at once with a fresh token`,
          error,
        );
        this.#dial();
        return;
      }
      if (error.code === "bad_token") {
        this.#fail(error);
        return;
      }
    } else if (error.isFatal) {
      this.#fail(error);
      return;
    }
    if (!wasConnected) this.#failures++;
    if (this.#failures >= this.#options.reconnect.maxAttempts) {
      this.#fail(
        new SyncError(
          "reconnect_gave_up",
          `Gave up after ${this.#failures} failed connection attempts in a row: ${error.message}`,
          { cause: error },
        ),
      );
      return;
    }
    if (this.#slots.size === 0) {
      this.#phase = "idle";
      this.#log("debug", "connection_state", `${what}; no session needs it`);
      return;
    }
    const delay = this.#backoff.next(retryAfterMs ?? 0);
    const retry: RetryInfo = {
      attempt: this.#backoff.attempts,
      nextAttemptAt: this.#options.clock.now() + delay,
      lastError: error,
    };
    this.#retry = retry;
    this.#phase = "waiting";
    this.#retryTimer.start(() => this.#dial(), delay);
    this.#log(
      "warn",
      "connection_retry",
      `${what}; retry ${retry.attempt} in ${delay} ms`,
      error,
    );
    for (const slot of [...this.#slots.values()]) {
      if (this.#retry !== retry) return;
      slot.client.connectionLost(retry.lastError, retry);
    }
  }

  #fail(error: SyncError): void {
    this.#log("error", "connection_failed", error.message, error);
    this.#phase = "idle";
    this.#failures = 0;
    this.#backoff.reset();
    this.#authRetried = false;
    this.#retry = undefined;
    this.#lastError = undefined;
    const slots = [...this.#slots.values()];
    this.#slots.clear();
    this.#bySessionId.clear();
    for (const slot of slots) slot.client.connectionFailed(error);
  }

  #log(
    level: "debug" | "info" | "warn" | "error",
    event: string,
    message: string,
    error?: SyncError,
  ): void {
    emitLog(this.#options.logger, {
      level,
      event,
      message,
      time: this.#options.clock.now(),
      ...(error === undefined ? {} : { error }),
    });
  }
}
