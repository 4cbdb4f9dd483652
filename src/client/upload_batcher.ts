// This module is browser compatible.

/**
 * The upload batcher: packs a session's pending local changesets into
 * UPLOAD frames under the server's frame limit, in client-version order,
 * and remembers how far the current binding has sent (docs/PROTOCOL.md
 * §4.3). Its frames take room in the connection's upload window
 * (`upload_window.ts`), shared by every session on the socket, so fast
 * writers never make the server hold more than its per-connection bound
 * (docs/SERVER.md "Memory") and refuse them with `queue_full`; more goes out
 * as acknowledgements arrive.
 *
 * It also keeps at most {@linkcode UPLOAD_FRAMES_IN_FLIGHT} frames
 * unacknowledged: what is written while they are out waits and leaves in
 * one frame when an acknowledgement comes back (Nagle's rule, by messages
 * rather than bytes), so a writer awaiting one `write()` after another
 * sends a few full frames per round trip instead of one frame per write.
 * Each changeset keeps its own client version, so its receipt still
 * settles on its own acknowledgement (docs/CLIENT.md "Upload batching").
 */

import type { UploadChangeset } from "../model/changeset.ts";
import { encodeMessage } from "../protocol/encode.ts";
import { DEFAULT_LIMITS } from "../protocol/limits.ts";
import {
  MessageType,
  type ObjectKey,
  type UploadMessage,
  type UploadTooLargeMessage,
} from "../protocol/messages.ts";
import type { SessionChannel } from "./connection.ts";
import { SyncError } from "./sync_error.ts";
import { Writer } from "../protocol/writer.ts";
import type { UploadWindow } from "./upload_window.ts";

/**
 * UPLOAD frames are encoded here and sent as views (the socket copies what
 * it sends, `ConnectionAttempt.sendBytes` copies what it must keep), not
 * copied into a buffer of their own each. A writer that grew past
 * {@linkcode KEPT_WRITER_BYTES} for a large upload is dropped afterwards
 * rather than kept for the life of the process.
 */
let uploadWriter = new Writer(4 * 1024);
const KEPT_WRITER_BYTES = 1024 * 1024;

/**
 * The most UPLOAD frames a session keeps sent and unacknowledged. Two, not
 * one: a write made right after the previous one's acknowledgement was
 * forwarded, but before it reached this client, still leaves at once.
 */
export const UPLOAD_FRAMES_IN_FLIGHT = 2;

/** Room for an UPLOAD's tag, session id and count around its changesets. */
export const UPLOAD_OVERHEAD_BYTES = 32;

/** A local changeset waiting for the server, with its encoded size. */
export interface PendingChangeset {
  readonly changeset: UploadChangeset;
  readonly bytes: number;
}

/** Where uploads go: the part of a binding's channel the batcher uses. */
export type UploadChannel = Pick<
  SessionChannel,
  | "sessionId"
  | "maxMessageBytes"
  | "protocolVersion"
  | "uploadWindow"
  | "send"
  | "sendUpload"
>;

/** How an {@linkcode UploadBatcher} is made. */
export interface UploadBatcherOptions {
  /**
   * Called (once) when the connection's upload window, full when a frame
   * was to go, has room again: send more then.
   */
  wake?: () => void;
  /**
   * The most frames kept sent but unacknowledged.
   *
   * @default {UPLOAD_FRAMES_IN_FLIGHT}
   */
  maxFrames?: number;
}

/** Packs pending changesets into frames; see the module comment. */
export class UploadBatcher {
  #sentThrough = 0;
  #maxFrames: number;
  #wake: () => void;
  /** The window this binding's frames took room in. */
  #window: UploadWindow | undefined;
  /**
   * Frames sent and not yet acknowledged (from #inFlightHead on): last
   * client version, bytes. A head index, since `shift()` is linear.
   */
  #inFlight: { through: number; bytes: number }[] = [];
  #inFlightHead = 0;
  #inFlightBytes = 0;

  /** @param options See {@linkcode UploadBatcherOptions}. */
  constructor(options: UploadBatcherOptions = {}) {
    const maxFrames = options.maxFrames ?? UPLOAD_FRAMES_IN_FLIGHT;
    if (!Number.isInteger(maxFrames) || maxFrames < 1) {
      throw new RangeError(
        `maxFrames must be a positive integer, got ${maxFrames}`,
      );
    }
    this.#maxFrames = maxFrames;
    this.#wake = options.wake ?? (() => {});
  }

  /** Frames sent and not yet acknowledged. */
  get framesInFlight(): number {
    return this.#inFlight.length - this.#inFlightHead;
  }

  /** Bytes of UPLOAD frames sent and not yet acknowledged. */
  get inFlightBytes(): number {
    return this.#inFlightBytes;
  }

  /**
   * The server acknowledged client versions up to `version`: their frames
   * leave the window. Returns whether room was freed (send more then).
   */
  acknowledged(version: number): boolean {
    const inFlight = this.#inFlight;
    let head = this.#inFlightHead;
    let bytes = 0;
    while (head < inFlight.length && inFlight[head]!.through <= version) {
      bytes += inFlight[head]!.bytes;
      head++;
    }
    this.#inFlightBytes -= bytes;
    this.#window?.release(bytes);
    const freed = head !== this.#inFlightHead;
    if (head === inFlight.length) {
      inFlight.length = 0;
      head = 0;
    } else if (head >= 64) {
      // Acknowledgements that always leave a frame out: drop the prefix
      // now and then (at most #maxFrames entries follow it).
      inFlight.splice(0, head);
      head = 0;
    }
    this.#inFlightHead = head;
    return freed;
  }

  /** The last client version sent on the current binding. */
  get sentThrough(): number {
    return this.#sentThrough;
  }

  /**
   * A new binding: the server has everything up to `acknowledged`, so
   * sending starts after it.
   */
  rebound(acknowledged: number): void {
    this.#sentThrough = acknowledged;
    // What the old binding had out is settled there or never will be; its
    // room goes back, and a wait for room on it is over.
    this.#window?.release(this.#inFlightBytes);
    this.#window?.forget(this.#wake);
    this.#window = undefined;
    this.#inFlight = [];
    this.#inFlightHead = 0;
    this.#inFlightBytes = 0;
  }

  /**
   * Sends every pending changeset not yet sent on this binding, as few
   * frames as fit (and no more changesets per frame than a decoder with
   * the default limits takes). Stops quietly when the channel refuses a frame (the
   * binding is gone), the window is full or enough frames are in flight.
   * `pending` may start anywhere at or before the first changeset not yet
   * sent (`LocalRealm.pendingAfter(sentThrough)` starts right there).
   *
   * A changeset larger than the server's frame limit goes as
   * UPLOAD_TOO_LARGE in its place, for the server to refuse (protocol
   * version 3, docs/PROTOCOL.md §4.17): the write is rejected and the
   * session goes on.
   *
   * @param onSent Told each frame's size on the wire.
   * @returns A `bad_changeset` error when a changeset can never fit in a
   *   frame and the server cannot be told so (protocol version 2 or older,
   *   or even the list of objects it touched is over the limit): the
   *   session fails with it. Else undefined.
   */
  send(
    pending: Iterable<PendingChangeset>,
    channel: UploadChannel,
    onSent: (wireBytes: number) => void,
  ): SyncError | undefined {
    const limit = channel.maxMessageBytes;
    const budget = limit - UPLOAD_OVERHEAD_BYTES;
    this.#window = channel.uploadWindow;
    // Frames pack at most a window's worth, so one frame never holds the
    // server's bound alone; a larger changeset still goes, by itself.
    const frameBudget = Math.min(
      budget,
      channel.uploadWindow.limit - UPLOAD_OVERHEAD_BYTES,
    );
    if (this.framesInFlight >= this.#maxFrames) return undefined;
    let batch: UploadChangeset[] = [];
    let batchBytes = 0;
    for (const { changeset, bytes } of pending) {
      if (changeset.clientVersion <= this.#sentThrough) continue;
      if (bytes > budget) {
        if (batch.length > 0) {
          const outcome = this.#sendFrame(channel, batch, onSent);
          if (outcome !== true) return outcome === false ? undefined : outcome;
          batch = [];
          batchBytes = 0;
        }
        const outcome = this.#sendTooLarge(channel, changeset, bytes, onSent);
        if (outcome !== true) return outcome === false ? undefined : outcome;
        if (this.framesInFlight >= this.#maxFrames) return undefined;
        continue;
      }
      if (
        batch.length > 0 &&
        (batchBytes + bytes > frameBudget ||
          batch.length >= DEFAULT_LIMITS.maxChangesets)
      ) {
        const outcome = this.#sendFrame(channel, batch, onSent);
        if (outcome === false) return undefined;
        if (outcome !== true) return outcome;
        if (this.framesInFlight >= this.#maxFrames) return undefined;
        batch = [];
        batchBytes = 0;
      }
      batch.push(changeset);
      batchBytes += bytes;
    }
    if (batch.length === 0) return undefined;
    const outcome = this.#sendFrame(channel, batch, onSent);
    return outcome === true || outcome === false ? undefined : outcome;
  }

  /**
   * True when sent, false when the channel is gone or the window full,
   * else the error.
   */
  #sendFrame(
    channel: UploadChannel,
    changesets: UploadChangeset[],
    onSent: (wireBytes: number) => void,
  ): boolean | SyncError {
    if (this.framesInFlight >= this.#maxFrames) return false;
    const message: UploadMessage = {
      type: MessageType.Upload,
      sessionId: channel.sessionId,
      changesets,
    };
    const frame = encodeMessage(message, uploadWriter);
    if (uploadWriter.bytes.byteLength > KEPT_WRITER_BYTES) {
      // This frame keeps the grown buffer alive only as long as it needs.
      uploadWriter = new Writer(4 * 1024);
    }
    if (frame.byteLength > channel.maxMessageBytes) {
      // Interning across changesets can, rarely, cost more than it saves:
      // split and try again.
      if (changesets.length === 1) {
        return this.#sendTooLarge(
          channel,
          changesets[0]!,
          frame.byteLength,
          onSent,
        );
      }
      const half = changesets.length >> 1;
      const first = this.#sendFrame(channel, changesets.slice(0, half), onSent);
      if (first !== true) return first;
      return this.#sendFrame(channel, changesets.slice(half), onSent);
    }
    if (!this.#room(channel, frame.byteLength)) return false;
    if (!channel.sendUpload(frame, onSent)) return false;
    this.#sent(
      channel,
      changesets[changesets.length - 1]!.clientVersion,
      frame,
    );
    return true;
  }

  /**
   * Sends UPLOAD_TOO_LARGE in place of `changeset`, `bytes` long encoded:
   * true when sent, false when the channel is gone or the window full, else
   * the error that ends the session (the server cannot be told).
   */
  #sendTooLarge(
    channel: UploadChannel,
    changeset: UploadChangeset,
    bytes: number,
    onSent: (wireBytes: number) => void,
  ): boolean | SyncError {
    const tooLarge = new SyncError(
      "bad_changeset",
      `Cannot upload changeset ${changeset.clientVersion}: ${bytes} bytes exceed the server's limit of ${channel.maxMessageBytes} per message`,
    );
    if (channel.protocolVersion < 3) return tooLarge;
    if (this.framesInFlight >= this.#maxFrames) return false;
    // Each object appears once: the server refuses an upload touching one
    // twice, so a transaction merges its writes per object.
    const objects: ObjectKey[] = changeset.instructions.map(({ type, id }) => ({
      type,
      id,
    }));
    const message: UploadTooLargeMessage = {
      type: MessageType.UploadTooLarge,
      sessionId: channel.sessionId,
      clientVersion: changeset.clientVersion,
      changesetBytes: bytes,
      objects,
    };
    const frame = encodeMessage(message, uploadWriter);
    if (frame.byteLength > channel.maxMessageBytes) {
      return new SyncError(
        "bad_changeset",
        `${tooLarge.message}, and the list of the ${objects.length} objects it touched (${frame.byteLength} bytes) too`,
      );
    }
    if (!this.#room(channel, frame.byteLength)) return false;
    const sent = channel.send(message);
    if (sent === 0) return false;
    onSent(sent);
    this.#sent(channel, changeset.clientVersion, frame);
    return true;
  }

  /**
   * Whether the connection's window has room for a frame of `bytes`; when
   * not, waits in line to be woken (one frame always goes into an empty
   * window).
   */
  #room(channel: UploadChannel, bytes: number): boolean {
    if (channel.uploadWindow.fits(bytes)) return true;
    channel.uploadWindow.wait(this.#wake);
    return false;
  }

  /** A frame went out: the window holds it until `through` is settled. */
  #sent(channel: UploadChannel, through: number, frame: Uint8Array): void {
    this.#sentThrough = through;
    this.#inFlight.push({ through, bytes: frame.byteLength });
    this.#inFlightBytes += frame.byteLength;
    channel.uploadWindow.take(frame.byteLength);
  }
}
