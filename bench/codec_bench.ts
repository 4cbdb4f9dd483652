/**
 * Codec benchmarks (issue #3, item 7): for each corpus, one group per
 * direction with three benches, `json` (the baseline), `msgpackr` and
 * `tether`. Every codec is checked for an exact round trip of every corpus
 * before anything is timed. `bench/report.ts` turns `deno bench --json`
 * output into the table in docs/PERFORMANCE.md.
 *
 * What each bench does per iteration:
 * - `json`: `JSON.stringify` with a replacer + `TextEncoder.encode`;
 *   `TextDecoder.decode` + `JSON.parse` with a reviver (bench/_baselines.ts).
 * - `msgpackr`: plain `pack` / `unpack`. `pack` returns a view into a buffer
 *   it shares between calls; `unpack` returns byte arrays that are views
 *   into the input.
 * - `tether`: `encodeMessage(message, writer)` with one reused `Writer`,
 *   the way a connection encodes a frame it sends at once: like `pack`, it
 *   allocates no buffer per frame. `decodeMessage(frame)`, which copies the
 *   frame's byte arrays out of it (one buffer per message).
 *
 * `encode_copy_bench.ts` times `encodeMessage(message)` without a writer
 * (a frame in a buffer of its own), in groups of its own.
 *
 * @module
 */

import { decodeMessage } from "../src/protocol/decode.ts";
import { encodeMessage } from "../src/protocol/encode.ts";
import { Writer } from "../src/protocol/writer.ts";
import { BENCH_ITERATIONS, buildCorpora } from "./_corpora.ts";
import {
  assertExactRoundTrip,
  jsonDecode,
  jsonEncode,
  msgpackrDecode,
  msgpackrEncode,
} from "./_baselines.ts";

/** Folds every result in, so the optimiser cannot drop the measured work. */
let sink = 0;
const writer = new Writer();

for (const { name, message } of buildCorpora()) {
  const { n, warmup } = BENCH_ITERATIONS[name];
  const jsonBytes = jsonEncode(message);
  const msgpackrBytes = msgpackrEncode(message).slice();
  const tetherBytes = encodeMessage(message);
  assertExactRoundTrip("json", message, jsonDecode(jsonBytes));
  assertExactRoundTrip("msgpackr", message, msgpackrDecode(msgpackrBytes));
  assertExactRoundTrip("tether", message, decodeMessage(tetherBytes));
  assertExactRoundTrip(
    "tether with a writer",
    message,
    decodeMessage(encodeMessage(message, writer)),
  );

  const encode = `${name}/encode`;
  Deno.bench("json", { group: encode, baseline: true, n, warmup }, () => {
    sink += jsonEncode(message).length;
  });
  Deno.bench("msgpackr", { group: encode, n, warmup }, () => {
    sink += msgpackrEncode(message).length;
  });
  Deno.bench("tether", { group: encode, n, warmup }, () => {
    sink += encodeMessage(message, writer).length;
  });

  const decode = `${name}/decode`;
  Deno.bench("json", { group: decode, baseline: true, n, warmup }, () => {
    sink += jsonDecode(jsonBytes).type;
  });
  Deno.bench("msgpackr", { group: decode, n, warmup }, () => {
    sink += (msgpackrDecode(msgpackrBytes) as { type: number }).type;
  });
  Deno.bench("tether", { group: decode, n, warmup }, () => {
    sink += decodeMessage(tetherBytes).type;
  });
}

globalThis.addEventListener("unload", () => {
  if (sink === -1) console.log(sink);
});
