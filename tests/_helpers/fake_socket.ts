import {
  decompressFrame,
  isCompressedFrame,
} from "../../src/protocol/compression.ts";
import { decodeMessage } from "../../src/protocol/decode.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import {
  type ClientMessage,
  MessageType,
  type ServerMessage,
} from "../../src/protocol/messages.ts";

/**
 * A WebSocket double the test drives by hand: it records what the client
 * sends (decoded) and delivers what the test plays as the server, with
 * synchronous events. It is a seam for deterministic connection and session
 * tests with a fake clock; tests of real behaviour use real sockets against
 * serveSync.
 */
export class FakeWebSocket extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSING = 2;
  static readonly CLOSED = 3;
  readonly url: string;
  readyState = 0;
  binaryType = "blob";
  /** Every frame the client sent, decoded. */
  readonly sent: ClientMessage[] = [];
  /** Sizes of those frames. */
  readonly sentBytes: number[] = [];
  /** The code the client closed with, if it did. */
  closedWith: number | undefined;
  #sockets: FakeSockets;

  constructor(url: string, sockets: FakeSockets) {
    super();
    this.url = url;
    this.#sockets = sockets;
  }

  send(data: Uint8Array): void {
    if (this.readyState !== 1) {
      throw new Error("send() on a socket that is not open");
    }
    const bytes = data.slice();
    if (!isCompressedFrame(bytes) && this.#inflating === 0) {
      this.#record(bytes, bytes.byteLength);
      return;
    }
    // A compressed frame is recorded once inflated; frames sent after it
    // wait, so `sent` keeps the order they were sent in.
    this.#inflating++;
    this.#pending = this.#pending.then(async () => {
      this.#record(await decompressFrame(bytes), bytes.byteLength);
      this.#inflating--;
    });
  }

  #pending: Promise<void> = Promise.resolve();

  /** Resolves once every compressed frame sent so far is recorded. */
  settled(): Promise<void> {
    return this.#pending;
  }
  #inflating = 0;

  #record(frame: Uint8Array, wireBytes: number): void {
    this.sent.push(decodeMessage(frame) as ClientMessage);
    this.sentBytes.push(wireBytes);
    this.#sockets.onSend?.(this);
  }

  close(code = 1000): void {
    if (this.readyState >= 2) return;
    this.closedWith = code;
    this.readyState = 3;
    this.dispatchEvent(new CloseEvent("close", { code, reason: "" }));
  }

  // ----- the test plays the server -----

  /** The TCP + upgrade succeeded. */
  open(): void {
    this.readyState = 1;
    this.dispatchEvent(new Event("open"));
  }

  /** Delivers one server message; returns its frame size. */
  receive(message: ServerMessage): number {
    const frame = encodeMessage(message);
    this.dispatchEvent(
      new MessageEvent("message", { data: frame.buffer.slice(0) }),
    );
    return frame.byteLength;
  }

  /** Answers the handshake on protocol `version`; returns the reply's size. */
  acceptHandshake(
    maxMessageBytes = 16 * 1024 * 1024,
    userId = "u1",
    version = 1,
  ): number {
    return this.receive({
      type: MessageType.HandshakeReply,
      version,
      userId,
      maxMessageBytes,
    });
  }

  /** The server (or the network) closed the socket. */
  serverClose(code = 1006, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.dispatchEvent(new CloseEvent("close", { code, reason }));
  }

  /** Messages of one type the client sent. */
  sentOf<T extends ClientMessage["type"]>(
    type: T,
  ): Extract<ClientMessage, { type: T }>[] {
    return this.sent.filter((message) => message.type === type) as Extract<
      ClientMessage,
      { type: T }
    >[];
  }
}

/** Creates {@linkcode FakeWebSocket}s and remembers them. */
export class FakeSockets {
  readonly all: FakeWebSocket[] = [];
  /** Called after each send, for tests that answer automatically. */
  onSend: ((socket: FakeWebSocket) => void) | undefined;
  readonly WebSocket: typeof WebSocket;

  constructor() {
    // deno-lint-ignore no-this-alias
    const sockets = this;
    this.WebSocket = class extends FakeWebSocket {
      constructor(url: string | URL) {
        super(String(url), sockets);
        sockets.all.push(this);
      }
    } as unknown as typeof WebSocket;
  }

  /** The most recent socket. */
  get last(): FakeWebSocket {
    const socket = this.all.at(-1);
    if (socket === undefined) throw new Error("No socket was created");
    return socket;
  }
}
