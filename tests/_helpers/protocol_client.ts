/**
 * A protocol-level test client over a real WebSocket: it speaks messages,
 * not sessions, so server tests can send exactly what they mean (including
 * what a well-behaved client never would) and see exactly what comes back.
 * Every wait is bounded. Not the real client (that is `src/client`).
 */
import {
  decompressFrame,
  isCompressedFrame,
} from "../../src/protocol/compression.ts";
import { decodeMessage } from "../../src/protocol/decode.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import {
  type ClientIdentity,
  type ClientMessage,
  type DownloadMessage,
  type HandshakeReplyMessage,
  type IdentMessage,
  MessageType,
  type ServerMessage,
} from "../../src/protocol/messages.ts";
import { PROTOCOL_VERSION } from "../../src/protocol/version.ts";

/** How long a wait lasts when the caller gives no signal, in milliseconds. */
export const DEFAULT_WAIT_MS = 5000;

/** Names of server message types, for readable failures. */
const TYPE_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(MessageType).map(([name, value]) => [value, name]),
);

/** Returns a message type's name, e.g. `"Download"`. */
export function typeName(type: number): string {
  return TYPE_NAMES[type] ?? `0x${type.toString(16)}`;
}

/**
 * A received frame: the decoded message, the frame's size on the wire in
 * bytes, and whether it came compressed.
 */
export interface Frame {
  message: ServerMessage;
  bytes: number;
  compressed: boolean;
}

/** How the socket closed. */
export interface CloseInfo {
  code: number;
  reason: string;
}

type Waiter = {
  resolve: (frame: Frame) => void;
  reject: (error: unknown) => void;
};

/** Options of {@linkcode ProtocolClient.connect}. */
export interface ConnectOptions {
  /** Bounds the connect; default {@linkcode DEFAULT_WAIT_MS}. */
  signal?: AbortSignal;
  /** The sync endpoint's path. */
  path?: string;
}

/** See the file comment. */
export class ProtocolClient implements AsyncDisposable {
  #socket: WebSocket;
  #frames: Frame[] = [];
  #waiters: Waiter[] = [];
  #failure: unknown = null;
  #closed = Promise.withResolvers<CloseInfo>();
  #closeInfo: CloseInfo | null = null;
  // Frames are inflated in arrival order; the close waits behind them.
  #inbound: Promise<void> = Promise.resolve();
  /** Payload bytes received so far. */
  bytesReceived = 0;
  /** Payload bytes sent so far. */
  bytesSent = 0;

  /** Use {@linkcode ProtocolClient.connect}. */
  constructor(socket: WebSocket) {
    this.#socket = socket;
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this.#onMessage(event);
    socket.onclose = (event) => {
      this.#inbound = this.#inbound.then(() => {
        this.#closeInfo = { code: event.code, reason: event.reason };
        this.#closed.resolve(this.#closeInfo);
        const error = new Error(
          `Socket closed (${event.code} ${event.reason}) while waiting for a message`,
        );
        for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
      });
    };
    socket.onerror = () => {};
  }

  /** Opens a WebSocket to `${baseUrl}/sync` and waits until it is open. */
  static async connect(
    baseUrl: string,
    options: ConnectOptions = {},
  ): Promise<ProtocolClient> {
    const url = new URL(options.path ?? "/sync", baseUrl);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url);
    const client = new ProtocolClient(socket);
    const signal = options.signal ?? AbortSignal.timeout(DEFAULT_WAIT_MS);
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        socket.close();
        reject(signal.reason);
      };
      socket.onopen = () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      client.#closed.promise.then((info) => {
        signal.removeEventListener("abort", onAbort);
        reject(new Error(`Cannot connect: closed with ${info.code}`));
      });
      signal.addEventListener("abort", onAbort, { once: true });
    });
    return client;
  }

  /** Resolves with the close code and reason once the socket has closed. */
  get closed(): Promise<CloseInfo> {
    return this.#closed.promise;
  }

  /** Bytes queued on the socket but not yet sent. */
  get bufferedAmount(): number {
    return this.#socket.bufferedAmount;
  }

  /** Encodes and sends a message. */
  send(message: ClientMessage): void {
    const bytes = encodeMessage(message);
    this.bytesSent += bytes.length;
    this.#socket.send(bytes);
  }

  /** Sends raw bytes or text, as a misbehaving client would. */
  sendRaw(data: Uint8Array<ArrayBuffer> | string): void {
    this.bytesSent += typeof data === "string"
      ? new TextEncoder().encode(data).length
      : data.length;
    this.#socket.send(data);
  }

  /** The next frame, waiting up to the signal (default 5 s). */
  nextFrame(signal?: AbortSignal): Promise<Frame> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    const frame = this.#frames.shift();
    if (frame !== undefined) return Promise.resolve(frame);
    if (this.#closeInfo !== null) {
      return Promise.reject(
        new Error(
          `Socket closed (${this.#closeInfo.code} ${this.#closeInfo.reason}) while waiting for a message`,
        ),
      );
    }
    const bound = signal ?? AbortSignal.timeout(DEFAULT_WAIT_MS);
    if (bound.aborted) return Promise.reject(bound.reason);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve: (next) => {
          bound.removeEventListener("abort", onAbort);
          resolve(next);
        },
        reject: (error) => {
          bound.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      const onAbort = () => {
        const index = this.#waiters.indexOf(waiter);
        if (index >= 0) this.#waiters.splice(index, 1);
        reject(bound.reason);
      };
      bound.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  /** The next message. */
  async next(signal?: AbortSignal): Promise<ServerMessage> {
    return (await this.nextFrame(signal)).message;
  }

  /**
   * The next message, which must be of `type` (else this throws, naming
   * what came instead).
   */
  async expect<T extends ServerMessage["type"]>(
    type: T,
    signal?: AbortSignal,
  ): Promise<Extract<ServerMessage, { type: T }>> {
    const message = await this.next(signal);
    if (message.type !== type) {
      throw new Error(
        `Expected ${typeName(type)}, got ${typeName(message.type)}: ${
          describe(message)
        }`,
      );
    }
    return message as Extract<ServerMessage, { type: T }>;
  }

  /** Sends HANDSHAKE and returns the reply (throws on an ERROR). */
  handshake(
    accessToken: string,
    options: { minVersion?: number; maxVersion?: number } = {},
  ): Promise<HandshakeReplyMessage> {
    this.send({
      type: MessageType.Handshake,
      minVersion: options.minVersion ?? PROTOCOL_VERSION,
      maxVersion: options.maxVersion ?? PROTOCOL_VERSION,
      accessToken,
    });
    return this.expect(MessageType.HandshakeReply);
  }

  /**
   * Sends BIND; with no identity, waits for IDENT and returns it.
   */
  async bind(
    sessionId: number,
    path: string,
    options: {
      identity?: ClientIdentity | null;
      downloadCursor?: number;
      downloadCursorSalt?: number;
      uploadCursor?: number;
    } = {},
  ): Promise<ClientIdentity | null> {
    const identity = options.identity ?? null;
    this.send({
      type: MessageType.Bind,
      sessionId,
      path,
      clientIdentity: identity,
      downloadCursor: options.downloadCursor ?? 0,
      uploadCursor: options.uploadCursor ?? 0,
      ...(options.downloadCursorSalt === undefined
        ? {}
        : { downloadCursorSalt: options.downloadCursorSalt }),
    });
    if (identity !== null) return null;
    const ident: IdentMessage = await this.expect(MessageType.Ident);
    if (ident.sessionId !== sessionId) {
      throw new Error(`IDENT for session ${ident.sessionId}, not ${sessionId}`);
    }
    return ident.clientIdentity;
  }

  /**
   * Reads DOWNLOADs for `sessionId` until one reaches `serverVersion` with
   * nothing left to download; returns them all (at most `maxMessages`).
   * Any other message fails the wait.
   */
  async downloadUntil(
    sessionId: number,
    serverVersion: number,
    options: { signal?: AbortSignal; maxMessages?: number } = {},
  ): Promise<Frame[]> {
    const frames: Frame[] = [];
    const signal = options.signal ?? AbortSignal.timeout(DEFAULT_WAIT_MS);
    const maxMessages = options.maxMessages ?? 100_000;
    while (frames.length < maxMessages) {
      const frame = await this.nextFrame(signal);
      const message = frame.message;
      if (message.type !== MessageType.Download) {
        throw new Error(`Expected Download, got ${describe(message)}`);
      }
      if (message.sessionId !== sessionId) {
        throw new Error(`Download for session ${message.sessionId}`);
      }
      frames.push(frame);
      if (
        message.serverVersion >= serverVersion &&
        message.downloadableBytes === 0
      ) {
        return frames;
      }
    }
    throw new Error(`No catch-up within ${maxMessages} messages`);
  }

  /** Frames received and not yet read. */
  get pending(): number {
    return this.#frames.length;
  }

  /** Closes the socket and waits (bounded) for the close to complete. */
  async close(code = 1000): Promise<CloseInfo> {
    if (this.#closeInfo === null) {
      try {
        this.#socket.close(code);
      } catch {
        // Already closing.
      }
    }
    const timeout = AbortSignal.timeout(DEFAULT_WAIT_MS);
    return await Promise.race([
      this.#closed.promise,
      new Promise<never>((_, reject) =>
        timeout.addEventListener("abort", () => reject(timeout.reason), {
          once: true,
        })
      ),
    ]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #onMessage(event: MessageEvent): void {
    if (!(event.data instanceof ArrayBuffer)) {
      this.#fail(new Error("Server sent a text frame"));
      return;
    }
    const bytes = new Uint8Array(event.data);
    this.bytesReceived += bytes.length;
    this.#inbound = this.#inbound.then(async () => {
      let message: ServerMessage;
      try {
        message = decodeMessage(await decompressFrame(bytes)) as ServerMessage;
      } catch (error) {
        this.#fail(error);
        return;
      }
      const frame = {
        message,
        bytes: bytes.length,
        compressed: isCompressedFrame(bytes),
      };
      const waiter = this.#waiters.shift();
      if (waiter !== undefined) waiter.resolve(frame);
      else this.#frames.push(frame);
    });
  }

  #fail(error: unknown): void {
    this.#failure = error;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
  }
}

/** A short description of a message for failure messages. */
export function describe(message: ServerMessage): string {
  if (message.type === MessageType.Error) {
    return `Error(session ${message.sessionId}, code ${message.code}, tryAgain ${message.tryAgain}: ${message.message})`;
  }
  if (message.type === MessageType.Download) {
    const download: DownloadMessage = message;
    return `Download(session ${download.sessionId}, v${download.serverVersion}, ack ${download.lastIntegratedClientVersion}, ${download.downloadableBytes} B left, ${download.changesets.length} changesets)`;
  }
  return `${typeName(message.type)}(${JSON.stringify(message)})`;
}
