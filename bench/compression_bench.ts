/**
 * Where compression starts to pay (issue #3, item 4): deflating and
 * inflating realistic DOWNLOAD frames of growing size, from a few hundred
 * bytes to a full 400 KB batch. `bench/report.ts` prints the compressed
 * sizes next to these times and the link speed at which the bytes saved
 * take longer to send than the compression takes; PERFORMANCE.md explains
 * the threshold chosen from it.
 *
 * @module
 */

import { encodeMessage } from "../src/protocol/encode.ts";
import { compressFrame, decompressFrame } from "../src/protocol/compression.ts";
import { decodeMessage } from "../src/protocol/decode.ts";
import { COMPRESSION_FRAMES } from "./_compression_frames.ts";

let sink = 0;

for (const { label, message } of COMPRESSION_FRAMES) {
  const frame = encodeMessage(message).slice();
  const compressed = await compressFrame(frame, { threshold: 0 });
  const inflated = await decompressFrame(compressed);
  if (compressed !== frame && inflated.length !== frame.length) {
    throw new Error(`${label}: compression does not round-trip`);
  }
  decodeMessage(inflated);
  const group = `compression/${label}`;
  Deno.bench("deflate", { group }, async () => {
    sink += (await compressFrame(frame, { threshold: 0 })).length;
  });
  Deno.bench("inflate", { group }, async () => {
    sink += (await decompressFrame(compressed)).length;
  });
}

globalThis.addEventListener("unload", () => {
  if (sink === -1) console.log(sink);
});
