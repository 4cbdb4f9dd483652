// This module is browser compatible.

/**
 * One connection attempt of a client `Connection`: its token, its socket,
 * its ordered inflate and deflate queues and its timers, from the dial to
 * the socket's end (docs/CLIENT.md "Connection, retries and keepalive").
 *
 * The connection drops an attempt whole on teardown; a dropped attempt
 * tells its host nothing more, so late socket events, inflations and token
 * answers of an old attempt need no check at the host.
 */

import { UploadWindow } from "./upload_window.ts";
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
  RECEIVED_TRIGGER_FRAME_BYTES,
  type ReceivedMessage,
  type ServerMessage,
} from "../protocol/messages.ts";
import { ProtocolError } from "../protocol/protocol_error.ts";
import { MIN_PROTOCOL_VERSION, PROTOCOL_VERSION } from "../protocol/version.ts";
import { Writer } from "../protocol/writer.ts";
import { Timer } from "../util/clock.ts";
import { SerialQueue } from "../util/serial_queue.ts";
import { Backoff } from "./backoff.ts";
import {
  type AccessToken,
  type ConnectionOptions,
  refreshDueAt,
} from "./connection_types.ts";
import { SyncError, syncErrorFromWire } from "./sync_error.ts";

// One writer for the frames every connection in this process encodes.
// Encoding and `WebSocket.send` are synchronous and `send` copies what it is
// given, so a frame sent at once can be a view into the writer (saving a
// buffer per frame); `sendBytes` copies a frame that has to wait.
const sendWriter = new Writer(4096);

// Frames from this size whose arrival sent a RECEIVED are handled in a
// later task (see #onFrame): a few milliseconds of work or more.
const LARGE_FRAME_BYTES = 64 * 1024;

/**
 * Encodes `message` into the shared writer (valid until the next call); a
 * BIND's version salt only for a server talking `protocolVersion` 2 or
 * later (docs/PROTOCOL.md §4.2).
 */
export function encodeForSend(
  message: ClientMessage,
  protocolVersion: number,
): Uint8Array<ArrayBuffer> {
  if (
    protocolVersion < 2 && message.type === MessageType.Bind &&
    message.downloadCursorSalt !== undefined
  ) {
    const { downloadCursorSalt: _, ...unsalted } = message;
    return encodeMessage(unsalted, sendWriter);
  }
  return encodeMessage(message, sendWriter);
}

/** What an attempt tells, and asks of, its connection. */
export interface AttemptHost {
  /** The HANDSHAKE_REPLY arrived: the attempt is connected. */
  handshaken(reply: HandshakeReplyMessage, token: AccessToken): void;
  /** The token for this attempt arrived (the next may be the same). */
  gotToken(): void;
  /** A message for session `sessionId`, after the handshake. */
  message(sessionId: number, message: ServerMessage, wireBytes: number): void;
  /** The attempt failed with `error`; the host drops it. */
  lost(error: SyncError, retryAfterMs?: number): void;
  /** A PONG arrived. */
  pong(timestamp: number): void;
  /** `bytes` arrived from the server (any frame). */
  received(bytes: number): void;
  /** `bytes` went on the wire. */
  sent(bytes: number): void;
  /** A lifecycle record. */
  log(level: "debug" | "warn", event: string, message: string): void;
}

type AttemptState = "connecting" | "connected" | "dropped";

/** One attempt; see the module comment. */
export class ConnectionAttempt {
  #options: ConnectionOptions;
  #host: AttemptHost;
  #state: AttemptState = "connecting";
  #abort = new AbortController();
  #socket: WebSocket | undefined;
  #connectTimer: Timer;
  #refreshTimer: Timer;
  #refreshes: Backoff;
  /** Compressed frames inflate in turn, so messages keep arrival order. */
  #inflating: SerialQueue;
  // Ends a turn of the event loop before a large frame is handled; made on
  // the first such frame, closed with the attempt.
  #turns: { channel: MessageChannel; passed: (() => void) | null } | null =
    null;
  /** Frames leave in call order, also behind one being compressed. */
  #outbound = new SerialQueue(() => {});
  // RECEIVED (docs/PROTOCOL.md §4.8): server bytes received on this socket,
  // and the count the last RECEIVED carried.
  #socketBytesReceived = 0;
  #acknowledgedBytes = 0;
  #received: ReceivedMessage;
  /**
   * The protocol version the HANDSHAKE_REPLY chose (a BIND carries its salt
   * only with 2 or later); the newest until then, when no BIND goes out.
   */
  protocolVersion: number = PROTOCOL_VERSION;
  /**
   * Room for UPLOAD frames on this socket, shared by its sessions; the next
   * socket starts empty (what was out on this one is settled here or never).
   */
  readonly uploadWindow: UploadWindow = new UploadWindow();

  /**
   * @param options The connection's options.
   * @param host Told what happens, until the attempt is dropped.
   * @param received The connection's RECEIVED message, updated in place
   *   (one object, so acknowledging costs no allocation but the frame).
   */
  constructor(
    options: ConnectionOptions,
    host: AttemptHost,
    received: ReceivedMessage,
  ) {
    this.#options = options;
    this.#host = host;
    this.#received = received;
    this.#connectTimer = new Timer(options.clock);
    this.#refreshTimer = new Timer(options.clock);
    this.#refreshes = new Backoff(
      options.reconnect,
      options.random,
      () => options.clock.now(),
    );
    this.#inflating = new SerialQueue((error) => {
      if (!this.isDropped) this.#protocolFailure(error);
    });
  }

  /** Whether the connection has dropped this attempt. */
  get isDropped(): boolean {
    return this.#state === "dropped";
  }

  /**
   * Whether frames have not all been handed to the network yet: waiting
   * to be compressed, or in the socket's buffer.
   */
  get isSending(): boolean {
    if (!this.#outbound.idle) return true;
    // Not every WebSocket implementation reports it; then a frame counts
    // as gone once `send` returned.
    const buffered = this.#socket?.bufferedAmount;
    return typeof buffered === "number" && buffered > 0;
  }

  /**
   * Gets a token, opens the socket and sends HANDSHAKE, within
   * `connectTimeoutMs`.
   *
   * @param freshToken Ask for a token other than the last one sent.
   * @param closing Holds a promise per socket until it has closed.
   */
  async dial(freshToken: boolean, closing: Set<Promise<void>>): Promise<void> {
    const options = this.#options;
    this.#connectTimer.start(() => {
      this.#fail(
        new SyncError(
          "connect_timeout",
          `No connection within ${options.connectTimeoutMs} ms`,
        ),
      );
    }, options.connectTimeoutMs);
    let token: AccessToken;
    try {
      token = await options.tokens.accessToken(freshToken, this.#abort.signal);
    } catch (error) {
      const failure = error instanceof SyncError ? error : new SyncError(
        "connection_lost",
        `Cannot get an access token: ${String(error)}`,
        { cause: error },
      );
      this.#fail(failure, options.tokens.retryAfterMs?.(error));
      return;
    }
    if (this.isDropped) return;
    this.#host.gotToken();
    let socket: WebSocket;
    try {
      socket = new options.WebSocket(options.url);
    } catch (error) {
      this.#fail(
        new SyncError(
          "connection_lost",
          `Cannot open a WebSocket to ${options.url}: ${String(error)}`,
          { cause: error },
        ),
      );
      return;
    }
    socket.binaryType = "arraybuffer";
    this.#socket = socket;
    const closed = new Promise<void>((resolve) => {
      socket.addEventListener("close", (event) => {
        closing.delete(closed);
        resolve();
        this.#fail(errorFromClose(event.code, event.reason));
      });
    });
    closing.add(closed);
    socket.addEventListener("open", () => {
      if (this.isDropped) return;
      this.sendFrame({
        type: MessageType.Handshake,
        minVersion: MIN_PROTOCOL_VERSION,
        maxVersion: PROTOCOL_VERSION,
        accessToken: token.token,
      });
    });
    socket.addEventListener("message", (event) => {
      if (!this.isDropped) this.#onFrame(event.data, token);
    });
  }

  /** Stops everything this attempt started and closes its socket. */
  drop(): void {
    if (this.isDropped) return;
    this.#state = "dropped";
    this.#abort.abort();
    this.#connectTimer.stop();
    this.#refreshTimer.stop();
    const turns = this.#turns;
    this.#turns = null;
    if (turns !== null) {
      turns.channel.port1.close();
      turns.channel.port2.close();
      // A frame waiting for its turn goes on, to find the attempt dropped.
      turns.passed?.();
    }
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket !== undefined) {
      try {
        socket.close(1000);
      } catch {
        // Already closing.
      }
    }
  }

  /** Sends RECEIVED with the count so far (docs/PROTOCOL.md §4.8). */
  acknowledge(): void {
    this.#acknowledgedBytes = this.#socketBytesReceived;
    this.#received.receivedBytes = this.#socketBytesReceived;
    this.sendFrame(this.#received);
  }

  /** Sends a message; returns its size, or 0 when there is no open socket. */
  sendFrame(message: ClientMessage): number {
    return this.sendBytes(encodeForSend(message, this.protocolVersion));
  }

  /**
   * Sends a frame now, or — behind a frame still being compressed — as soon
   * as the frames before it have gone, so frames always leave in call order.
   * Returns the frame's uncompressed size, or 0 when there is no open socket.
   */
  sendBytes(
    frame: Uint8Array<ArrayBuffer>,
    compress = false,
    onSent?: (wireBytes: number) => void,
  ): number {
    const socket = this.#socket;
    if (socket === undefined || socket.readyState !== 1) return 0;
    const worthCompressing = compress &&
      frame.byteLength >= COMPRESSION_THRESHOLD;
    if (!worthCompressing && this.#outbound.idle) {
      socket.send(frame);
      this.#host.sent(frame.byteLength);
      onSent?.(frame.byteLength);
      return frame.byteLength;
    }
    // The frame may be a view into a writer that the next message reuses.
    const owned = frame.slice();
    const prepared = worthCompressing
      ? compressFrame(owned).catch(() => owned)
      : Promise.resolve(owned);
    this.#outbound.push(async () => {
      const wire = await prepared;
      if (this.isDropped || socket.readyState !== 1) return;
      socket.send(wire);
      this.#host.sent(wire.byteLength);
      onSent?.(wire.byteLength);
    });
    return frame.byteLength;
  }

  #fail(error: SyncError, retryAfterMs?: number): void {
    if (!this.isDropped) this.#host.lost(error, retryAfterMs);
  }

  #onFrame(data: unknown, token: AccessToken): void {
    if (!(data instanceof ArrayBuffer)) {
      this.#fail(
        new SyncError(
          "protocol_violation",
          "Cannot decode message: the server sent a text frame",
        ),
      );
      return;
    }
    const bytes = new Uint8Array(data);
    this.#socketBytesReceived += bytes.byteLength;
    this.#host.received(bytes.byteLength);
    // Only a large frame sends a due RECEIVED: see
    // RECEIVED_TRIGGER_FRAME_BYTES for the stall a small one would risk.
    let acknowledged = false;
    if (
      this.#state === "connected" &&
      bytes.byteLength >= RECEIVED_TRIGGER_FRAME_BYTES &&
      this.#socketBytesReceived - this.#acknowledgedBytes >=
        RECEIVED_INTERVAL_BYTES
    ) {
      this.acknowledge();
      acknowledged = true;
    }
    // Deno writes a frame once the task that sent it has ended, and
    // inflating, decoding and applying a large frame is one task of tens
    // of milliseconds (inflating runs on promises only): handled at once,
    // the frame would hold its RECEIVED back until it was applied, and the
    // server would time the client's work as the link's
    // (docs/PERFORMANCE.md "Tenth pass").
    const turnFirst = acknowledged && bytes.byteLength >= LARGE_FRAME_BYTES;
    if (this.#inflating.idle && !turnFirst && !isCompressedFrame(bytes)) {
      this.#decodeAndDispatch(bytes, bytes.byteLength, token);
      return;
    }
    // A compressed frame inflates asynchronously; frames behind it wait
    // their turn so messages are handled in the order they arrived.
    this.#inflating.push(async () => {
      if (turnFirst) await this.#nextTurn();
      if (this.isDropped) return;
      const frame = await decompressFrame(bytes);
      if (!this.isDropped) {
        this.#decodeAndDispatch(frame, bytes.byteLength, token);
      }
    });
  }

  // Resolves in a task of its own: a `MessageChannel` message, which lets
  // Deno write the frames sent before it (an immediate does not), and comes
  // sooner than a timer.
  #nextTurn(): Promise<void> {
    if (this.isDropped) return Promise.resolve();
    const turns = this.#turns ??= {
      channel: new MessageChannel(),
      passed: null,
    };
    return new Promise((resolve) => {
      turns.passed = resolve;
      turns.channel.port1.onmessage = () => {
        turns.passed = null;
        resolve();
      };
      turns.channel.port2.postMessage(null);
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
    this.#fail(
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
    if (this.#state === "connecting") {
      if (message.type === MessageType.HandshakeReply) {
        if (
          message.version < MIN_PROTOCOL_VERSION ||
          message.version > PROTOCOL_VERSION
        ) {
          // A version this client never offered: what follows may use
          // messages it does not know.
          this.#fail(
            new SyncError(
              "protocol_violation",
              `The server chose protocol version ${message.version}, outside the ${MIN_PROTOCOL_VERSION}-${PROTOCOL_VERSION} offered`,
            ),
          );
          return;
        }
        this.#connectTimer.stop();
        this.#state = "connected";
        this.protocolVersion = message.version;
        this.#host.handshaken(message, token);
      } else if (message.type === MessageType.Error) {
        this.#connectionError(message);
      } else {
        this.#fail(
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
        this.#host.pong(message.timestamp);
        return;
      case MessageType.HandshakeReply:
        this.#fail(
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
    this.#host.message(message.sessionId!, message, wireBytes);
  }

  #connectionError(message: ErrorMessage): void {
    // The server closes after a connection-scoped ERROR; act on the ERROR
    // at once rather than on the close that follows.
    this.#fail(
      syncErrorFromWire(message.code, message.tryAgain, message.message),
    );
  }

  /** Refreshes `token` in-band when it is due (REFRESH, `refreshDueAt`). */
  scheduleRefresh(token: AccessToken): void {
    this.#refreshTimer.stop();
    const refreshAt = refreshDueAt(token);
    if (refreshAt === undefined) return;
    this.#refreshTimer.start(
      () => this.#refresh(),
      refreshAt - this.#options.clock.now(),
    );
  }

  async #refresh(): Promise<void> {
    if (this.isDropped) return;
    const tokens = this.#options.tokens;
    let token: AccessToken;
    try {
      token = await tokens.accessToken(true, this.#abort.signal);
    } catch (error) {
      if (this.isDropped) return;
      if (error instanceof SyncError && error.isFatal) {
        this.#fail(error);
        return;
      }
      // Transient: try again with backoff while the socket stays up; if
      // the token expires meanwhile the server says so and the reconnect
      // path takes over.
      const delay = this.#refreshes.next(tokens.retryAfterMs?.(error) ?? 0);
      this.#host.log(
        "warn",
        "token_refresh",
        `Token refresh failed; retrying in ${delay} ms`,
      );
      this.#refreshTimer.start(() => this.#refresh(), delay);
      return;
    }
    if (this.#state !== "connected") return;
    this.#refreshes.reset();
    this.sendFrame({ type: MessageType.Refresh, accessToken: token.token });
    this.#host.log("debug", "token_refresh", "Sent a fresh access token");
    this.scheduleRefresh(token);
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
