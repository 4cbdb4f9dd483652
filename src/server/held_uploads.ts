/**
 * How many bytes one connection holds for uploads it has received but not
 * yet stored, against `limits.maxQueuedBytesPerConnection`
 * (docs/SERVER.md "Memory").
 */

import type {
  UploadMessage,
  UploadTooLargeMessage,
} from "../protocol/messages.ts";

// What an UPLOAD held until it is stored is counted as: its frame twice
// (the bytes, and the strings and byte arrays decoded from them) plus a
// fixed cost per instruction for the objects it decodes to. For small
// objects that is about 4.5× the frame (measured: 3.2×), for large byte
// arrays about 2×.
const UPLOAD_FRAME_FACTOR = 2;
const UPLOAD_INSTRUCTION_BYTES = 256;

/** See the file comment. */
export class HeldUploads {
  #limit: number;
  #held = 0;

  /** @param limit The most bytes held at once. */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Bytes held now. */
  get bytes(): number {
    return this.#held;
  }

  /** The bound. */
  get limit(): number {
    return this.#limit;
  }

  /**
   * Counts `bytes` more held, or returns false (counting nothing) when that
   * would pass the limit. One upload is always taken when nothing is held,
   * whatever its size, so a single large frame is never refused.
   */
  hold(bytes: number): boolean {
    if (this.#held + bytes > this.#limit && this.#held !== 0) return false;
    this.#held += bytes;
    return true;
  }

  /** Counts `bytes` as no longer held. */
  release(bytes: number): void {
    this.#held -= bytes;
  }
}

/**
 * What an UPLOAD (or UPLOAD_TOO_LARGE, an object counted as an
 * instruction) is counted as while held (see UPLOAD_FRAME_FACTOR).
 */
export function heldUploadBytes(
  message: UploadMessage | UploadTooLargeMessage,
  frameBytes: number,
): number {
  let instructions = 0;
  if ("objects" in message) instructions = message.objects.length;
  else {
    for (const changeset of message.changesets) {
      instructions += changeset.instructions.length;
    }
  }
  return frameBytes * UPLOAD_FRAME_FACTOR +
    instructions * UPLOAD_INSTRUCTION_BYTES;
}
