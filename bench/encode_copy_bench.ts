/**
 * Encoding into a buffer of its own: `encodeMessage(message)` without a
 * writer returns each frame in a fresh `ArrayBuffer`, which is what a
 * caller that keeps frames gets. `codec_bench.ts` times the send path
 * instead (one reused `Writer`, no buffer per frame). Each group has its
 * own `json` baseline and `msgpackr`, so its ratios come from one run of
 * this file; the difference from `<corpus>/encode` in `codec_bench.ts` is
 * what one `ArrayBuffer` per frame costs in Deno.
 *
 * @module
 */

import { decodeMessage } from "../src/protocol/decode.ts";
import { encodeMessage } from "../src/protocol/encode.ts";
import { BENCH_ITERATIONS, buildCorpora } from "./_corpora.ts";
import {
  assertExactRoundTrip,
  jsonEncode,
  msgpackrEncode,
} from "./_baselines.ts";

/** Folds every result in, so the optimiser cannot drop the measured work. */
let sink = 0;

for (const { name, message } of buildCorpora()) {
  const { n, warmup } = BENCH_ITERATIONS[name];
  assertExactRoundTrip(
    "tether",
    message,
    decodeMessage(encodeMessage(message)),
  );
  const group = `${name}/encode-copy`;
  Deno.bench("json", { group, baseline: true, n, warmup }, () => {
    sink += jsonEncode(message).length;
  });
  Deno.bench("msgpackr", { group, n, warmup }, () => {
    sink += msgpackrEncode(message).length;
  });
  Deno.bench("tether", { group, n, warmup }, () => {
    sink += encodeMessage(message).length;
  });
}

globalThis.addEventListener("unload", () => {
  if (sink === -1) console.log(sink);
});
