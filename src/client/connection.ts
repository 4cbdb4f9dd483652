// This module is browser compatible.

import {
  compressFrame,
  COMPRESSION_THRESHOLD,
  decompressFrame,
  isCompressedFrame,
} from "../protocol/compression.ts";
import { decodeMessage } from "../protocol/decode.ts";
import { encodeMessage } from "../protocol/encode.ts";
import {
  type ClientMessage,
  type ErrorMessage,
  type HandshakeReplyMessage,
  MessageType,
  RECEIVED_INTERVAL_BYTES,
  type ReceivedMessage,
  type ServerMessage,
} from "../protocol/messages.ts";
import { ProtocolError } from "../protocol/protocol_error.ts";
import { MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from "../protocol/version.ts";
import { Writer } from "../protocol/writer.ts";
import { type Clock, Timer } from "../util/clock.ts";
import { nextDelay, type ResolvedReconnectOptions } from "./backoff.ts";
import { Keepalive, type ResolvedKeepaliveOptions } from "./keepalive.ts";
import { emitLog, type Logger } from "./log.ts";
import { SyncError, syncErrorFromWire } from "./sync_error.ts";

// One writer for the frames every connection in this process encodes.
// Encoding and `WebSocket.send` are synchronous and `send` copies what it is
// given, so a frame sent at once can be a view into the writer (saving a
// buffer per frame); `#sendBytes` copies a frame that has to wait.
const sendWriter = new Writer(4096);

/** An access token and what the client knows of its lifetime. */
export interface AccessToken {
  /** The token sent in HANDSHAKE and REFRESH. */
  token: string;
  /** When the server says it expires (epoch ms), if it said. */
  expiresAt: number | undefined;
  /** When the client received it (epoch ms, the app's clock). */
  obtainedAt: number;
}

/** Where a connection gets its tokens (the user). */
export interface TokenSource {
  /**
   * A token to send now. With `fresh`, never the one sent last (it was
   * rejected or is about to expire). Rejects with a `SyncError`:
   * `login_failed` (fatal) when the server refuses, `connection_lost` when
   * it could not be reached.
   */
  accessToken(fresh: boolean, signal: AbortSignal): Promise<AccessToken>;
  /** Milliseconds the server asked to wait (Retry-After) before `error`. */
  retryAfterMs?(error: unknown): number | undefined;
}

/**
 * A scheduled reconnect: which retry it is, when it is due, and the error
 * that made it necessary.
 *
 * @example Showing the schedule
 * ```ts
 * import type { RetryInfo } from "@tether/sync";
 *
 * function describe(retry: RetryInfo | undefined): string {
 *   if (retry === undefined) return "no retry scheduled";
 *   const seconds = Math.ceil((retry.nextAttemptAt - Date.now()) / 1000);
 *   return `retry ${retry.attempt} in ${seconds}s (${retry.lastError.code})`;
 * }
 * console.log(describe(undefined));
 * ```
 */
export interface RetryInfo {
  /** 1 for the first retry after a loss, then 2, 3, … */
  attempt: number;
  /** When the next attempt starts, in epoch milliseconds. */
  nextAttemptAt: number;
  /** The error that caused the retry. */
  lastError: SyncError;
}

/** A session's view of the socket while it is bound. */
export interface SessionChannel {
  /** The id this binding uses on the wire. */
  readonly sessionId: number;
  /** The server's frame limit (HANDSHAKE_REPLY). */
  readonly maxMessageBytes: number;
  /** Whether messages sent now reach this binding's socket. */
  readonly isOpen: boolean;
  /**
   * Whether frames sent on this socket (by any session) have not all been
   * handed to the network yet: waiting to be compressed, or in the socket's
   * buffer (`bufferedAmount`, where the runtime reports it).
   */
  readonly isSending: boolean;
  /**
   * Sends a message; returns the frame's size in bytes, or 0 when the
   * binding is gone.
   */
  send(message: ClientMessage): number;
  /**
   * Sends an UPLOAD frame encoded by the caller, compressed when that pays
   * (frames of at least `COMPRESSION_THRESHOLD` bytes). Frames leave in call
   * order. Returns false when the binding is gone.
   *
   * @param onSent Told the size that went on the wire.
   */
  sendUpload(
    frame: Uint8Array<ArrayBuffer>,
    onSent: (wireBytes: number) => void,
  ): boolean;
}

/** What a connection tells the sessions attached to it. */
export interface ConnectionClient {
  /** A connection attempt started (or the socket is up and a bind follows). */
  connectionConnecting(): void;
  /** The socket is up: bind on this channel. */
  connectionOpened(channel: SessionChannel): void;
  /**
   * A message for this session arrived; `wireBytes` is what its frame took
   * on the wire (compressed, when it came compressed).
   */
  connectionMessage(message: ServerMessage, wireBytes: number): void;
  /**
   * The socket is gone. `error` is why (undefined for a requested stop);
   * `retry` is the scheduled reconnect, if any.
   */
  connectionLost(
    error: SyncError | undefined,
    retry: RetryInfo | undefined,
  ): void;
  /** The connection failed fatally; the client is detached. */
  connectionFailed(error: SyncError): void;
}

/** A client's attachment; `detach()` ends it. */
export interface Attachment {
  /**
   * Leaves the connection. With `unbind` (the default) an UNBIND is sent
   * when bound; without, the server has already ended the session.
   */
  detach(options?: { unbind?: boolean }): void;
}

/** Options of a {@linkcode Connection}. */
export interface ConnectionOptions {
  /** The WebSocket URL (`ws://host/sync`). */
  url: string;
  /** The WebSocket constructor. */
  WebSocket: typeof WebSocket;
  /** Time and timers. */
  clock: Clock;
  /** Randomness for backoff jitter. */
  random: () => number;
  /** Backoff policy. */
  reconnect: ResolvedReconnectOptions;
  /** Keepalive policy. */
  keepalive: ResolvedKeepaliveOptions;
  /** Limit for one attempt: token, socket open and HANDSHAKE_REPLY. */
  connectTimeoutMs: number;
  /** How long an unused socket stays open. */
  lingerMs: number;
  /** Where tokens come from. */
  tokens: TokenSource;
  /** Lifecycle records. */
  logger?: Logger | undefined;
}

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

class Channel implements SessionChannel {
  readonly sessionId: number;
  readonly maxMessageBytes: number;
  isOpen = true;
  #send: (
    frame: Uint8Array<ArrayBuffer>,
    compress: boolean,
    onSent?: (wireBytes: number) => void,
  ) => number;
  #isSending: () => boolean;

  constructor(
    sessionId: number,
    maxMessageBytes: number,
    send: (
      frame: Uint8Array<ArrayBuffer>,
      compress: boolean,
      onSent?: (wireBytes: number) => void,
    ) => number,
    isSending: () => boolean,
  ) {
    this.sessionId = sessionId;
    this.maxMessageBytes = maxMessageBytes;
    this.#send = send;
    this.#isSending = isSending;
  }

  get isSending(): boolean {
    return this.isOpen && this.#isSending();
  }

  send(message: ClientMessage): number {
    return this.isOpen
      ? this.#send(encodeMessage(message, sendWriter), false)
      : 0;
  }

  sendUpload(
    frame: Uint8Array<ArrayBuffer>,
    onSent: (wireBytes: number) => void,
  ): boolean {
    return this.isOpen && this.#send(frame, true, onSent) > 0;
  }
}

/** A WebSocket close code with what it means for retrying. */
function errorFromClose(code: number, reason: string): SyncError {
  const detail = reason ? `: ${reason}` : "";
  switch (code) {
    case 1002:
      return new SyncError(
        "protocol_violation",
        `Connection closed with a protocol error (1002)${detail}`,
      );
    case 1008:
      return new SyncError(
        "bad_token",
        `Connection closed by policy (1008)${detail}`,
      );
    case 1009:
      return new SyncError(
        "message_too_large",
        `Connection closed: message too big (1009)${detail}`,
      );
    default:
      return new SyncError(
        "connection_lost",
        `Connection closed (${code})${detail}`,
      );
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
  #socket: WebSocket | undefined;
  #attempt: AbortController | undefined;
  #connectTimer: Timer;
  #retryTimer: Timer;
  #lingerTimer: Timer;
  #refreshTimer: Timer;
  #keepalive: Keepalive;
  #failures = 0;
  #backoffExponent = 0;
  #refreshFailures = 0;
  #authRetried = false;
  #freshToken = false;
  #connectedAt = 0;
  #maxMessageBytes = 0;
  #retry: RetryInfo | undefined;
  #lastError: SyncError | undefined;
  #closing = new Set<Promise<void>>();
  #inflating: Promise<void> | undefined;
  #outbound: Promise<void> | undefined;
  #bytesSent = 0;
  #bytesReceived = 0;
  #connects = 0;
  // RECEIVED (PROTOCOL.md §4.8): server bytes received on the current
  // socket, and the count the last RECEIVED carried. One message object,
  // updated in place, so acknowledging costs no allocation but the frame.
  #socketBytesReceived = 0;
  #acknowledgedBytes = 0;
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
    this.#connectTimer = new Timer(clock);
    this.#retryTimer = new Timer(clock);
    this.#lingerTimer = new Timer(clock);
    this.#refreshTimer = new Timer(clock);
    this.#keepalive = new Keepalive(clock, options.keepalive, {
      sendPing: (timestamp) => {
        this.#sendFrame({ type: MessageType.Ping, timestamp });
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
        this.#open(slot);
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
    this.#backoffExponent = 0;
    this.#failures = 0;
    this.#log("info", "connection.reconnect", "Reconnecting now on request");
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
    this.#log("debug", "connection.idle", "Closing the unused connection");
    this.#teardown();
    this.#phase = "idle";
    this.#backoffExponent = 0;
    this.#failures = 0;
  }

  #open(slot: Slot): void {
    const sessionId = this.#nextSessionId++;
    const channel = new Channel(
      sessionId,
      this.#maxMessageBytes,
      (frame, compress, onSent) => this.#sendBytes(frame, compress, onSent),
      () => this.#isSending(),
    );
    slot.channel = channel;
    this.#bySessionId.set(sessionId, slot);
    slot.client.connectionOpened(channel);
  }

  async #dial(): Promise<void> {
    this.#retryTimer.stop();
    this.#retry = undefined;
    this.#phase = "connecting";
    const attempt = new AbortController();
    this.#attempt = attempt;
    this.#log("debug", "connection.state", "Connecting");
    for (const slot of [...this.#slots.values()]) {
      if (this.#attempt !== attempt) return;
      slot.client.connectionConnecting();
    }
    if (this.#attempt !== attempt) return;
    this.#connectTimer.start(() => {
      if (this.#attempt !== attempt) return;
      this.#lost(
        new SyncError(
          "connect_timeout",
          `No connection within ${this.#options.connectTimeoutMs} ms`,
        ),
      );
    }, this.#options.connectTimeoutMs);
    let token: AccessToken;
    try {
      token = await this.#options.tokens.accessToken(
        this.#freshToken,
        attempt.signal,
      );
    } catch (error) {
      if (this.#attempt !== attempt) return;
      const failure = error instanceof SyncError ? error : new SyncError(
        "connection_lost",
        `Cannot get an access token: ${String(error)}`,
        { cause: error },
      );
      this.#lost(failure, this.#options.tokens.retryAfterMs?.(error));
      return;
    }
    if (this.#attempt !== attempt) return;
    this.#freshToken = false;
    let socket: WebSocket;
    try {
      socket = new this.#options.WebSocket(this.#options.url);
    } catch (error) {
      this.#lost(
        new SyncError(
          "connection_lost",
          `Cannot open a WebSocket to ${this.#options.url}: ${String(error)}`,
          { cause: error },
        ),
      );
      return;
    }
    socket.binaryType = "arraybuffer";
    this.#socket = socket;
    this.#socketBytesReceived = 0;
    this.#acknowledgedBytes = 0;
    const closed = new Promise<void>((resolve) => {
      socket.addEventListener("close", (event) => {
        this.#closing.delete(closed);
        resolve();
        if (this.#attempt === attempt) {
          this.#lost(errorFromClose(event.code, event.reason));
        }
      });
    });
    this.#closing.add(closed);
    socket.addEventListener("open", () => {
      if (this.#attempt !== attempt) return;
      this.#sendFrame({
        type: MessageType.Handshake,
        minVersion: MIN_PROTOCOL_VERSION,
        maxVersion: PROTOCOL_VERSION,
        accessToken: token.token,
      });
    });
    socket.addEventListener("message", (event) => {
      if (this.#attempt !== attempt) return;
      this.#onFrame(event.data, token);
    });
  }

  #onFrame(data: unknown, token: AccessToken): void {
    if (!(data instanceof ArrayBuffer)) {
      this.#lost(
        new SyncError(
          "protocol_violation",
          "Cannot decode message: the server sent a text frame",
        ),
      );
      return;
    }
    const bytes = new Uint8Array(data);
    this.#bytesReceived += bytes.byteLength;
    this.#socketBytesReceived += bytes.byteLength;
    this.#keepalive.noteInbound();
    if (
      this.#phase === "connected" &&
      this.#socketBytesReceived - this.#acknowledgedBytes >=
        RECEIVED_INTERVAL_BYTES
    ) {
      this.#acknowledge();
    }
    if (this.#inflating === undefined && !isCompressedFrame(bytes)) {
      this.#decodeAndDispatch(bytes, bytes.byteLength, token);
      return;
    }
    // A compressed frame inflates asynchronously; frames behind it wait
    // their turn so messages are handled in the order they arrived.
    const attempt = this.#attempt;
    const previous = this.#inflating ?? Promise.resolve();
    const inflating: Promise<void> = previous.then(async () => {
      if (this.#attempt !== attempt) return;
      let frame: Uint8Array;
      try {
        frame = await decompressFrame(bytes);
      } catch (error) {
        if (this.#attempt !== attempt) return;
        this.#protocolFailure(error);
        return;
      }
      if (this.#attempt !== attempt) return;
      this.#decodeAndDispatch(frame, bytes.byteLength, token);
    });
    this.#inflating = inflating;
    const settled = () => {
      if (this.#inflating === inflating) this.#inflating = undefined;
    };
    inflating.then(settled, (error) => {
      settled();
      if (this.#attempt === attempt) this.#protocolFailure(error);
    });
  }

  #decodeAndDispatch(
    frame: Uint8Array,
    wireBytes: number,
    token: AccessToken,
  ): void {
    let message;
    try {
      message = decodeMessage(frame);
    } catch (error) {
      this.#protocolFailure(error);
      return;
    }
    this.#dispatch(message as ServerMessage, wireBytes, token);
  }

  #protocolFailure(error: unknown): void {
    this.#lost(
      new SyncError(
        "protocol_violation",
        error instanceof ProtocolError
          ? error.message
          : `Cannot handle a frame: ${String(error)}`,
        { cause: error },
      ),
    );
  }

  #dispatch(
    message: ServerMessage,
    wireBytes: number,
    token: AccessToken,
  ): void {
    if (this.#phase === "connecting") {
      if (message.type === MessageType.HandshakeReply) {
        this.#handshaken(message, token);
      } else if (message.type === MessageType.Error) {
        this.#connectionError(message);
      } else {
        this.#lost(
          new SyncError(
            "protocol_violation",
            `Cannot use message 0x${
              message.type.toString(16)
            } before HANDSHAKE_REPLY`,
          ),
        );
      }
      return;
    }
    switch (message.type) {
      case MessageType.Pong:
        this.#keepalive.notePong(message.timestamp);
        return;
      case MessageType.HandshakeReply:
        this.#lost(
          new SyncError(
            "protocol_violation",
            "Received a second HANDSHAKE_REPLY",
          ),
        );
        return;
      case MessageType.Error:
        if (message.sessionId === null) {
          this.#connectionError(message);
          return;
        }
        break;
    }
    const slot = this.#bySessionId.get(message.sessionId!);
    // Messages for a session that has since unbound are expected; drop them.
    slot?.client.connectionMessage(message, wireBytes);
  }

  #handshaken(message: HandshakeReplyMessage, token: AccessToken): void {
    this.#connectTimer.stop();
    this.#phase = "connected";
    this.#connects++;
    this.#connectedAt = this.#options.clock.now();
    this.#failures = 0;
    this.#maxMessageBytes = message.maxMessageBytes;
    this.#lastError = undefined;
    this.#keepalive.start();
    this.#scheduleRefresh(token);
    // Before any BIND, so the server sizes even a session's first DOWNLOAD
    // for a link it has not measured yet.
    this.#acknowledge();
    this.#log("info", "connection.state", "Connected");
    const attempt = this.#attempt;
    for (const slot of [...this.#slots.values()]) {
      if (this.#attempt !== attempt) return;
      if (this.#slots.get(slot.client) === slot && slot.channel === undefined) {
        this.#open(slot);
      }
    }
  }

  #connectionError(message: ErrorMessage): void {
    const error = syncErrorFromWire(
      message.code,
      message.tryAgain,
      message.message,
    );
    // The server closes after a connection-scoped ERROR; act on the ERROR
    // at once rather than on the close that follows.
    this.#lost(error);
  }

  #scheduleRefresh(token: AccessToken): void {
    this.#refreshTimer.stop();
    if (token.expiresAt === undefined) return;
    const lifetime = token.expiresAt - token.obtainedAt;
    // Refresh at 80% of the token's life: early enough for a slow login
    // round trip, late enough not to churn.
    const refreshAt = token.obtainedAt + Math.max(0, lifetime * 0.8);
    const attempt = this.#attempt;
    this.#refreshTimer.start(
      () => this.#refresh(attempt),
      refreshAt - this.#options.clock.now(),
    );
  }

  async #refresh(attempt: AbortController | undefined): Promise<void> {
    if (attempt === undefined || this.#attempt !== attempt) return;
    let token: AccessToken;
    try {
      token = await this.#options.tokens.accessToken(true, attempt.signal);
    } catch (error) {
      if (this.#attempt !== attempt) return;
      if (error instanceof SyncError && error.isFatal) {
        this.#lost(error);
        return;
      }
      // Transient: try again with backoff while the socket stays up; if
      // the token expires meanwhile the server says so and the reconnect
      // path takes over.
      const delay = Math.max(
        nextDelay(
          this.#refreshFailures++,
          this.#options.reconnect,
          this.#options.random,
        ),
        this.#options.tokens.retryAfterMs?.(error) ?? 0,
      );
      this.#log(
        "warn",
        "token.refresh",
        `Token refresh failed; retrying in ${delay} ms`,
      );
      this.#refreshTimer.start(() => this.#refresh(attempt), delay);
      return;
    }
    if (this.#attempt !== attempt || this.#phase !== "connected") return;
    this.#refreshFailures = 0;
    this.#sendFrame({ type: MessageType.Refresh, accessToken: token.token });
    this.#log("debug", "token.refresh", "Sent a fresh access token");
    this.#scheduleRefresh(token);
  }

  /** Sends RECEIVED with the count so far (PROTOCOL.md §4.8). */
  #acknowledge(): void {
    this.#acknowledgedBytes = this.#socketBytesReceived;
    this.#received.receivedBytes = this.#socketBytesReceived;
    this.#sendFrame(this.#received);
  }

  #sendFrame(message: ClientMessage): number {
    return this.#sendBytes(encodeMessage(message, sendWriter));
  }

  /**
   * Sends a frame now, or — behind a frame still being compressed — as soon
   * as the frames before it have gone, so frames always leave in call order.
   * Returns the frame's uncompressed size, or 0 when there is no open socket.
   */
  #sendBytes(
    frame: Uint8Array<ArrayBuffer>,
    compress = false,
    onSent?: (wireBytes: number) => void,
  ): number {
    const socket = this.#socket;
    if (socket === undefined || socket.readyState !== 1) return 0;
    const worthCompressing = compress &&
      frame.byteLength >= COMPRESSION_THRESHOLD;
    if (!worthCompressing && this.#outbound === undefined) {
      socket.send(frame);
      this.#bytesSent += frame.byteLength;
      onSent?.(frame.byteLength);
      return frame.byteLength;
    }
    const attempt = this.#attempt;
    // The frame may be a view into a writer that the next message reuses.
    const owned = frame.slice();
    const prepared = worthCompressing
      ? compressFrame(owned).catch(() => owned)
      : Promise.resolve(owned);
    const previous = this.#outbound ?? Promise.resolve();
    const sending: Promise<void> = Promise.all([previous, prepared]).then(
      ([, wire]) => {
        if (this.#attempt !== attempt || socket.readyState !== 1) return;
        socket.send(wire);
        this.#bytesSent += wire.byteLength;
        onSent?.(wire.byteLength);
      },
    );
    this.#outbound = sending;
    const settled = () => {
      if (this.#outbound === sending) this.#outbound = undefined;
    };
    sending.then(settled, settled);
    return frame.byteLength;
  }

  #isSending(): boolean {
    if (this.#outbound !== undefined) return true;
    // Not every WebSocket implementation reports it; then a frame counts
    // as gone once `send` returned.
    const buffered = this.#socket?.bufferedAmount;
    return typeof buffered === "number" && buffered > 0;
  }

  /** Stops the current attempt or socket and every timer tied to it. */
  #teardown(): void {
    this.#attempt?.abort();
    this.#attempt = undefined;
    this.#inflating = undefined;
    this.#outbound = undefined;
    this.#connectTimer.stop();
    this.#refreshTimer.stop();
    this.#refreshFailures = 0;
    this.#keepalive.stop();
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket !== undefined) {
      try {
        socket.close(1000);
      } catch {
        // Already closing.
      }
    }
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
    const now = this.#options.clock.now();
    if (
      wasConnected &&
      now - this.#connectedAt >= this.#options.reconnect.resetAfterMs
    ) {
      this.#backoffExponent = 0;
      this.#authRetried = false;
    }
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
          "connection.reconnect",
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
      this.#log("debug", "connection.state", `${what}; no session needs it`);
      return;
    }
    const delay = Math.max(
      nextDelay(
        this.#backoffExponent,
        this.#options.reconnect,
        this.#options.random,
      ),
      retryAfterMs ?? 0,
    );
    this.#backoffExponent++;
    const retry: RetryInfo = {
      attempt: this.#backoffExponent,
      nextAttemptAt: now + delay,
      lastError: error,
    };
    this.#retry = retry;
    this.#phase = "waiting";
    this.#retryTimer.start(() => this.#dial(), delay);
    this.#log(
      "warn",
      "connection.retry",
      `${what}; retry ${retry.attempt} in ${delay} ms`,
      error,
    );
    for (const slot of [...this.#slots.values()]) {
      if (this.#retry !== retry) return;
      slot.client.connectionLost(retry.lastError, retry);
    }
  }

  #fail(error: SyncError): void {
    this.#log("error", "connection.failed", error.message, error);
    this.#phase = "idle";
    this.#failures = 0;
    this.#backoffExponent = 0;
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
