// This module is browser compatible.

import { abortable } from "./abort.ts";

/**
 * Reads a byte stream to its end into one array, or returns null as soon
 * as it passes `limit` bytes (what is left is not waited for); rejects with
 * `signal.reason` when `signal` aborts first. The stream is cancelled on
 * every path, so nothing keeps reading it.
 */
export async function readBounded(
  body: ReadableStream<Uint8Array> | null | undefined,
  limit: number,
  signal?: AbortSignal,
): Promise<Uint8Array | null> {
  if (body === null || body === undefined) return new Uint8Array();
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await abortable(reader.read(), signal);
      if (done) break;
      size += value.length;
      if (size > limit) return null;
      chunks.push(value);
    }
  } finally {
    // Whatever has not arrived is not waited for (a no-op once done).
    reader.cancel(signal?.aborted ? signal.reason : undefined).catch(() => {});
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}
