// This module is browser compatible.

import { COMPRESSED_FLAG } from "./decode.ts";
import { DEFAULT_LIMITS, type Limits } from "./limits.ts";
import { MessageType, SALTED_DOWNLOAD_TAG } from "./messages.ts";
import { ProtocolError } from "./protocol_error.ts";

/**
 * Frames shorter than this many bytes are sent as they are: below it,
 * deflating a DOWNLOAD frame costs more time than the bytes it saves take to
 * send on a 100 Mbit/s link, and saves little (measured by
 * `bench/compression_bench.ts`; see PERFORMANCE.md).
 *
 * @example Small frames are sent as they are
 * ```ts
 * import { COMPRESSION_THRESHOLD, compressFrame, encodeMessage, MessageType } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const frame = encodeMessage({ type: MessageType.Unbind, sessionId: 1 });
 * assert.ok(frame.length < COMPRESSION_THRESHOLD);
 * assert.equal(await compressFrame(frame), frame);
 * ```
 */
export const COMPRESSION_THRESHOLD = 8192;

/** A compressed frame must be at most this share of the original. */
const MIN_SAVING = 15 / 16;

/**
 * Options for {@linkcode compressFrame}.
 *
 * @example Compressing everything that pays, whatever its size
 * ```ts
 * import { type CompressOptions, compressFrame, encodeMessage, MessageType } from "@tether/sync/protocol";
 *
 * const options: CompressOptions = { threshold: 0 };
 * await compressFrame(encodeMessage({ type: MessageType.Unbind, sessionId: 1 }), options);
 * ```
 */
export interface CompressOptions {
  /**
   * Frames shorter than this many bytes are returned unchanged.
   *
   * @default {COMPRESSION_THRESHOLD}
   */
  threshold?: number;
}

/**
 * Returns whether `frame` has a compressed body (the top bit of its tag
 * byte, PROTOCOL.md §2).
 *
 * @param frame A frame as received.
 * @returns Whether it must go through `decompressFrame` before decoding.
 *
 * @example Telling compressed frames apart
 * ```ts
 * import { isCompressedFrame, MessageType } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * assert.equal(isCompressedFrame(new Uint8Array([MessageType.Download | 0x80, 0x03, 0x00])), true);
 * assert.equal(isCompressedFrame(new Uint8Array([MessageType.Pong])), false);
 * ```
 */
export function isCompressedFrame(frame: Uint8Array): boolean {
  return frame.length > 0 && (frame[0]! & COMPRESSED_FLAG) !== 0;
}

/** Only these frames may be compressed (PROTOCOL.md §2). */
function isCompressible(tag: number): boolean {
  return tag === MessageType.Upload || tag === MessageType.Download ||
    tag === SALTED_DOWNLOAD_TAG;
}

async function pump(
  input: Uint8Array,
  transform: CompressionStream | DecompressionStream,
  maxOutput: number,
): Promise<{ chunks: Uint8Array[]; length: number } | null> {
  const writer = transform.writable.getWriter();
  const reader = transform.readable.getReader();
  // Not awaited before reading: the transform holds back its input until
  // its output is read, so awaiting the write first could wait forever.
  const writing = writer.write(input as Uint8Array<ArrayBuffer>).then(
    () => writer.close(),
  ).catch(() => {
    // The read side reports the same failure.
  });
  const chunks: Uint8Array[] = [];
  let length = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      length += value.length;
      if (length > maxOutput) {
        await reader.cancel();
        return null;
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
    await writing;
  }
  return { chunks, length };
}

function join(
  tag: number,
  chunks: Uint8Array[],
  length: number,
): Uint8Array<ArrayBuffer> {
  const frame = new Uint8Array(1 + length);
  frame[0] = tag;
  let pos = 1;
  for (const chunk of chunks) {
    frame.set(chunk, pos);
    pos += chunk.length;
  }
  return frame;
}

/**
 * Compresses an UPLOAD or DOWNLOAD frame with `deflate-raw` when that pays
 * (PROTOCOL.md §2): the tag byte gets its top bit set and the rest of the
 * frame is deflated.
 *
 * The frame comes back unchanged when it is shorter than the threshold, is
 * not an UPLOAD or DOWNLOAD, is already compressed, or would shrink by less
 * than a sixteenth (not worth inflating on the other end).
 *
 * @param frame A frame from `encodeMessage`.
 * @param options The size threshold.
 * @returns The compressed frame, or `frame` itself.
 *
 * @example Only large frames are compressed
 * ```ts
 * import {
 *   compressFrame,
 *   decodeMessage,
 *   decompressFrame,
 *   encodeMessage,
 *   isCompressedFrame,
 *   MessageType,
 * } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * const ping = encodeMessage({ type: MessageType.Ping, timestamp: 1 });
 * assert.equal(await compressFrame(ping), ping);
 *
 * const instructions = Array.from({ length: 500 }, (_, index) => ({
 *   op: "put" as const,
 *   type: "Task",
 *   id: `task-${index}`,
 *   fields: { title: "Buy milk", done: false },
 *   stamp: null,
 * }));
 * const frame = encodeMessage({
 *   type: MessageType.Download,
 *   sessionId: 1,
 *   serverVersion: 1,
 *   lastIntegratedClientVersion: 0,
 *   downloadableBytes: 0,
 *   changesetBytes: 3_000,
 *   changesets: [{ serverVersion: 1, stamp: { time: 1, counter: 0, node: 1 }, instructions }],
 * });
 * const compressed = await compressFrame(frame);
 * assert.ok(isCompressedFrame(compressed));
 * assert.ok(compressed.length < frame.length);
 * assert.deepEqual(decodeMessage(await decompressFrame(compressed)), decodeMessage(frame));
 * ```
 */
export async function compressFrame(
  frame: Uint8Array<ArrayBuffer>,
  options: CompressOptions = {},
): Promise<Uint8Array<ArrayBuffer>> {
  const threshold = options.threshold ?? COMPRESSION_THRESHOLD;
  if (frame.length < threshold || frame.length < 2) return frame;
  const tag = frame[0]!;
  if ((tag & COMPRESSED_FLAG) !== 0 || !isCompressible(tag)) return frame;
  // Saving less than a sixteenth is not worth inflating on the other end.
  const result = await pump(
    frame.subarray(1),
    new CompressionStream("deflate-raw"),
    Math.floor(frame.length * MIN_SAVING) - 1,
  );
  if (result === null) return frame;
  return join(tag | COMPRESSED_FLAG, result.chunks, result.length);
}

/**
 * Inflates a compressed frame back to the frame `encodeMessage` made;
 * returns an uncompressed frame unchanged. Inflation stops as soon as the
 * output would pass `limits.maxMessageBytes`, so a small frame cannot make
 * the receiver allocate without bound.
 *
 * A deflate stream that ends early yields what it held; `decodeMessage`
 * then rejects the truncated frame.
 *
 * @param frame A frame as received.
 * @param limits Bounds to enforce; only `maxMessageBytes` is used here.
 * @returns The uncompressed frame.
 * @throws {ProtocolError} `invalid_field` when a frame other than UPLOAD or
 *   DOWNLOAD is marked compressed, `length_over_limit` when the inflated
 *   frame would exceed `maxMessageBytes`, `decompression_failed` when the
 *   body is not valid deflate data.
 *
 * @example A compressed frame that inflates past the limit is rejected
 * ```ts
 * import { decompressFrame, MessageType, ProtocolError } from "@tether/sync/protocol";
 * import assert from "node:assert/strict";
 *
 * // 1 MiB of zeros deflates to about a kilobyte.
 * const zeros = new Blob([new Uint8Array(1 << 20)]).stream()
 *   .pipeThrough(new CompressionStream("deflate-raw"));
 * const body = new Uint8Array(await new Response(zeros).arrayBuffer());
 * const frame = new Uint8Array([MessageType.Download | 0x80, ...body]);
 *
 * await assert.rejects(
 *   decompressFrame(frame, { maxMessageBytes: 64 * 1024 }),
 *   (error) => error instanceof ProtocolError && error.code === "length_over_limit",
 * );
 * ```
 */
export async function decompressFrame(
  frame: Uint8Array,
  limits: Partial<Limits> = DEFAULT_LIMITS,
): Promise<Uint8Array> {
  if (!isCompressedFrame(frame)) return frame;
  const tag = frame[0]! & ~COMPRESSED_FLAG;
  if (!isCompressible(tag)) {
    throw new ProtocolError(
      "invalid_field",
      `Cannot decompress frame: type 0x${
        tag.toString(16).padStart(2, "0")
      } may not be compressed`,
      0,
    );
  }
  const maxMessageBytes = limits.maxMessageBytes ??
    DEFAULT_LIMITS.maxMessageBytes;
  let result: Awaited<ReturnType<typeof pump>>;
  try {
    result = await pump(
      frame.subarray(1),
      new DecompressionStream("deflate-raw"),
      maxMessageBytes - 1,
    );
  } catch {
    throw new ProtocolError(
      "decompression_failed",
      "Cannot decompress frame: the body is not valid deflate-raw data",
      1,
    );
  }
  if (result === null) {
    throw new ProtocolError(
      "length_over_limit",
      `Cannot decompress frame: inflated length exceeds limit ${maxMessageBytes}`,
      1,
    );
  }
  return join(tag, result.chunks, result.length);
}
