/**
 * The outbound half of a connection's socket: encoding messages into frames
 * that leave in order, DOWNLOADs deflated on the way (`docs/PROTOCOL.md` §2).
 */

import {
  compressFrame,
  COMPRESSION_THRESHOLD,
} from "../protocol/compression.ts";
import { encodeMessage } from "../protocol/encode.ts";
import { MessageType, type ServerMessage } from "../protocol/messages.ts";
import { Writer } from "../protocol/writer.ts";
import { SerialQueue } from "../util/serial_queue.ts";
import { encodeSharedDownload } from "./shared_download.ts";

// One writer for every frame this process sends. Encoding and
// `WebSocket.send` are synchronous and `send` copies what it is given, so a
// frame sent at once can be a view into the writer (saving a buffer per
// frame, about a third of encoding a small message); a frame that has to wait
// behind compression is copied first, before the next message reuses it.
const sendWriter = new Writer();

/** How a {@linkcode FrameWriter} is set up. */
export interface FrameWriterOptions {
  /** Whether large DOWNLOAD frames are deflated (docs/PROTOCOL.md §2). */
  compression: boolean;
  /**
   * Whether the link is fast enough to send DOWNLOADs as they are: deflate
   * only pays on a slow link (`delivery_rate.ts`). Unset: never.
   */
  isFast?: () => boolean;
  /** Called with each frame's message type and size once the socket has taken it. */
  onWritten(type: number, bytes: number): void;
  /** Given every pending deflate chain, so the connection can wait for it. */
  track(task: Promise<unknown>): void;
}

/** See the file comment. */
export class FrameWriter {
  #socket: WebSocket;
  #options: FrameWriterOptions;
  // Frames wait here while an earlier one is being deflated, so they leave
  // in the order they were sent.
  #queue = new SerialQueue(() => {});
  // Bytes of frames waiting in #queue.
  #queuedBytes = 0;
  // At least the socket's `bufferedAmount`: its value when last read plus
  // every byte sent since (it counts the data given to `send` and only
  // shrinks as the socket writes), so that a check against a limit this is
  // under needs no call into the socket.
  #socketBound = 0;

  /**
   * @param socket The connection's socket.
   * @param options See {@linkcode FrameWriterOptions}.
   */
  constructor(socket: WebSocket, options: FrameWriterOptions) {
    this.#socket = socket;
    this.#options = options;
  }

  /** Encodes and sends `message` (nothing once the socket is not open). */
  send(message: ServerMessage): void {
    // Read once: a frame sent at once goes out in this same turn.
    if (this.#socket.readyState !== WebSocket.OPEN) return;
    const view =
      (message.type === MessageType.Download
        ? encodeSharedDownload(message, sendWriter)
        : null) ?? encodeMessage(message, sendWriter);
    const deflate = this.#options.compression &&
      message.type === MessageType.Download &&
      view.length >= COMPRESSION_THRESHOLD &&
      this.#options.isFast?.() !== true;
    if (this.#queue.idle && !deflate) {
      this.#writeOpen(message.type, view);
      return;
    }
    const frame = view.slice();
    this.#queuedBytes += frame.length;
    this.#queue.push(async () => {
      let out = frame;
      if (deflate) {
        try {
          out = await compressFrame(frame);
        } catch {
          // Sending it as it is is always correct.
        }
      }
      this.#queuedBytes -= frame.length;
      this.#write(message.type, out);
    });
    this.#options.track(this.#queue.drained());
  }

  /** Runs `action` once every frame sent so far has left (at once if so). */
  afterQueued(action: () => void): void {
    if (this.#queue.idle) {
      action();
      return;
    }
    this.#queue.drained().finally(action);
  }

  #write(type: number, frame: Uint8Array<ArrayBuffer>): void {
    if (this.#socket.readyState !== WebSocket.OPEN) return;
    this.#writeOpen(type, frame);
  }

  // #write for a socket just seen open in this turn.
  #writeOpen(type: number, frame: Uint8Array<ArrayBuffer>): void {
    try {
      this.#socket.send(frame);
      this.#socketBound += frame.length;
      this.#options.onWritten(type, frame.length);
    } catch {
      // The socket closed under us; onclose cleans up.
    }
  }

  /** Bytes sent but not yet written to the network, compression included. */
  pendingBytes(): number {
    this.#socketBound = this.#socket.bufferedAmount;
    return this.#socketBound + this.#queuedBytes;
  }

  /**
   * Whether {@linkcode pendingBytes} is above `limit`; asks the socket only
   * when the bound it keeps is above it (a session checks this before every
   * DOWNLOAD it sends at once, and the question costs a call into Deno).
   */
  buffersMoreThan(limit: number): boolean {
    if (this.#socketBound + this.#queuedBytes <= limit) return false;
    return this.pendingBytes() > limit;
  }
}
