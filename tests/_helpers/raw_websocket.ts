/**
 * A bare WebSocket client over TCP for tests that need what a browser-grade
 * client will not do: stop reading (to fill the server's send buffer), or
 * read frames at its own pace. Client frames are masked (RFC 6455 §5.3).
 */
import { decompressFrame } from "../../src/protocol/compression.ts";
import { decodeMessage } from "../../src/protocol/decode.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import type {
  ClientMessage,
  ServerMessage,
} from "../../src/protocol/messages.ts";

/** A raw client; close it with `await using`. */
export class RawWebSocket implements AsyncDisposable {
  #connection: Deno.TcpConn;
  #buffer = new Uint8Array(0);
  #writing = Promise.resolve();
  /** Payload bytes of frames read so far. */
  payloadBytes = 0;

  /** Use {@linkcode RawWebSocket.connect}. */
  constructor(connection: Deno.TcpConn) {
    this.#connection = connection;
  }

  /** Connects to `${baseUrl}/sync` and completes the upgrade. */
  static async connect(baseUrl: string): Promise<RawWebSocket> {
    const url = new URL(baseUrl);
    const connection = await Deno.connect({
      hostname: url.hostname,
      port: Number(url.port),
    });
    const socket = new RawWebSocket(connection);
    const key = btoa(
      String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))),
    );
    await socket.#write(new TextEncoder().encode(
      `GET /sync HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
        `Sec-WebSocket-Version: 13\r\n\r\n`,
    ));
    const head = await socket.#readUntilHeaderEnd();
    if (!head.startsWith("HTTP/1.1 101")) {
      connection.close();
      throw new Error(`Upgrade refused: ${head.split("\r\n")[0]}`);
    }
    return socket;
  }

  /** Sends one message as a masked binary frame. */
  async send(message: ClientMessage): Promise<void> {
    const frame = maskedFrame(0x82, encodeMessage(message));
    await this.#write(frame);
  }

  /**
   * Reads the next binary frame and decodes it (pings from the server are
   * answered, other control frames skipped). Bounded by `signal`.
   */
  async next(
    signal: AbortSignal,
  ): Promise<{ message: ServerMessage; bytes: number }> {
    for (let frames = 0; frames < 1000; frames++) {
      await this.#fill(2, signal);
      const opcode = this.#buffer[0]! & 0x0f;
      let length = this.#buffer[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        await this.#fill(4, signal);
        length = new DataView(this.#buffer.buffer, this.#buffer.byteOffset)
          .getUint16(2);
        offset = 4;
      } else if (length === 127) {
        await this.#fill(10, signal);
        length = Number(
          new DataView(this.#buffer.buffer, this.#buffer.byteOffset)
            .getBigUint64(2),
        );
        offset = 10;
      }
      await this.#fill(offset + length, signal);
      const payload = this.#buffer.slice(offset, offset + length);
      this.#buffer = this.#buffer.slice(offset + length);
      if (opcode === 0x2) {
        this.payloadBytes += length;
        return {
          message: decodeMessage(
            await decompressFrame(payload),
          ) as ServerMessage,
          bytes: length,
        };
      }
      if (opcode === 0x9) {
        // A ping: answered, as every client must (RFC 6455 §5.5.2), or the
        // server drops the connection as dead.
        await this.#write(maskedFrame(0x8a, payload));
        continue;
      }
      if (opcode === 0x8) {
        const code = length >= 2 ? (payload[0]! << 8) | payload[1]! : 1005;
        const reason = new TextDecoder().decode(payload.subarray(2));
        throw new Error(`Server closed the connection (${code} ${reason})`);
      }
    }
    throw new Error("Too many control frames");
  }

  /** Closes the TCP connection. */
  close(): void {
    try {
      this.#connection.close();
    } catch {
      // Already closed.
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }

  // Writes one after the other: a pong must not land inside a frame.
  #write(bytes: Uint8Array): Promise<void> {
    const write = this.#writing.then(async () => {
      let written = 0;
      while (written < bytes.length) {
        written += await this.#connection.write(bytes.subarray(written));
      }
    });
    this.#writing = write.catch(() => {});
    return write;
  }

  async #fill(count: number, signal: AbortSignal): Promise<void> {
    if (this.#buffer.length >= count) return;
    signal.throwIfAborted();
    // A read cannot be aborted; closing the connection ends it.
    const onAbort = () => this.close();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await this.#fillUnbounded(count, signal);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  async #fillUnbounded(count: number, signal: AbortSignal): Promise<void> {
    while (this.#buffer.length < count) {
      signal.throwIfAborted();
      const chunk = new Uint8Array(64 * 1024);
      const read = await this.#connection.read(chunk);
      if (read === null) throw new Error("Connection closed");
      const joined = new Uint8Array(this.#buffer.length + read);
      joined.set(this.#buffer);
      joined.set(chunk.subarray(0, read), this.#buffer.length);
      this.#buffer = joined;
    }
  }

  async #readUntilHeaderEnd(): Promise<string> {
    const signal = AbortSignal.timeout(5000);
    for (;;) {
      const text = new TextDecoder().decode(this.#buffer);
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        this.#buffer = this.#buffer.slice(end + 4);
        return text.slice(0, end);
      }
      await this.#fill(this.#buffer.length + 1, signal);
    }
  }
}

/** A client frame: `first` (FIN and opcode) and the masked payload. */
function maskedFrame(first: number, payload: Uint8Array): Uint8Array {
  const length = payload.length;
  const header = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const frame = new Uint8Array(header + 4 + length);
  frame[0] = first;
  if (length < 126) {
    frame[1] = 0x80 | length;
  } else if (length < 65536) {
    frame[1] = 0x80 | 126;
    new DataView(frame.buffer).setUint16(2, length);
  } else {
    frame[1] = 0x80 | 127;
    new DataView(frame.buffer).setBigUint64(2, BigInt(length));
  }
  const mask = crypto.getRandomValues(new Uint8Array(4));
  frame.set(mask, header);
  for (let index = 0; index < length; index++) {
    frame[header + 4 + index] = payload[index]! ^ mask[index & 3]!;
  }
  return frame;
}
