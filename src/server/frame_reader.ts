/**
 * The inbound half of a connection's socket: frames checked against the
 * frame limit, inflated when compressed, decoded and handed on in arrival
 * order (`docs/PROTOCOL.md` §2).
 */

import { decompressFrame, isCompressedFrame } from "../protocol/compression.ts";
import { decodeMessage } from "../protocol/decode.ts";
import type { ErrorCodeName } from "../protocol/error_codes.ts";
import type { Message } from "../protocol/messages.ts";
import { ProtocolError } from "../protocol/protocol_error.ts";
import { SerialQueue } from "../util/serial_queue.ts";

/** How a {@linkcode FrameReader} is set up. */
export interface FrameReaderOptions {
  /** The largest frame taken, before and after inflating it. */
  maxMessageBytes: number;
  /** False once the connection is closing: frames are dropped from then. */
  isOpen(): boolean;
  /** Called with each frame's size as it arrives (compressed or not). */
  onReceived(bytes: number): void;
  /** Given each decoded message and its frame's size once inflated. */
  onMessage(message: Message, frameBytes: number): void;
  /** Ends the connection on a frame that cannot be read. */
  fail(code: ErrorCodeName, message: string, error?: unknown): void;
  /** Told of a decoder failure that is not a `ProtocolError` (a bug). */
  onDecoderCrash(error: unknown): void;
  /** Called with anything else a frame's handling threw (a bug). */
  onCrash(error: unknown): void;
  /** Given every pending inflate chain, so the connection can wait for it. */
  track(task: Promise<unknown>): void;
}

/** See the file comment. */
export class FrameReader {
  #options: FrameReaderOptions;
  // Frames wait here while an earlier one is being inflated, so they are
  // handled in arrival order.
  #inbound: SerialQueue;

  /** @param options See {@linkcode FrameReaderOptions}. */
  constructor(options: FrameReaderOptions) {
    this.#options = options;
    // Inflate failures close the connection inside the step; anything else
    // thrown there is a bug, which must not leave later frames unhandled.
    this.#inbound = new SerialQueue(options.onCrash);
  }

  /** Takes one frame's data as the socket delivered it. */
  receive(data: unknown): void {
    if (!this.#options.isOpen()) return;
    if (!(data instanceof ArrayBuffer)) {
      this.#options.fail(
        "protocol_violation",
        "Cannot decode message: text frames are not part of the protocol",
      );
      return;
    }
    this.#options.onReceived(data.byteLength);
    const limit = this.#options.maxMessageBytes;
    if (data.byteLength > limit) {
      this.#options.fail(
        "message_too_large",
        `Cannot accept message: ${data.byteLength} bytes exceeds the limit of ${limit}`,
      );
      return;
    }
    const frame = new Uint8Array(data);
    if (this.#inbound.idle && !isCompressedFrame(frame)) {
      this.#decodeAndDispatch(frame);
      return;
    }
    this.#inbound.push(() => this.#inflateAndDispatch(frame));
    this.#options.track(this.#inbound.drained());
  }

  async #inflateAndDispatch(frame: Uint8Array): Promise<void> {
    if (!this.#options.isOpen()) return;
    let inflated: Uint8Array;
    try {
      inflated = await decompressFrame(frame, {
        maxMessageBytes: this.#options.maxMessageBytes,
      });
    } catch (error) {
      const tooLarge = error instanceof ProtocolError &&
        error.code === "length_over_limit";
      this.#options.fail(
        tooLarge ? "message_too_large" : "protocol_violation",
        error instanceof Error ? error.message : "Cannot decompress frame",
        error,
      );
      return;
    }
    if (!this.#options.isOpen()) return;
    this.#decodeAndDispatch(inflated);
  }

  #decodeAndDispatch(frame: Uint8Array): void {
    const limit = this.#options.maxMessageBytes;
    let message: Message;
    try {
      message = decodeMessage(frame, { maxMessageBytes: limit });
    } catch (error) {
      if (!(error instanceof ProtocolError)) {
        this.#options.onDecoderCrash(error);
      }
      this.#options.fail(
        "protocol_violation",
        error instanceof Error ? error.message : "Cannot decode message",
        error,
      );
      return;
    }
    this.#options.onMessage(message, frame.byteLength);
  }
}
