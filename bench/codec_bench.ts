/**
 * Codec benchmarks (issue #3, item 7): for each corpus, one group per
 * direction with three benches, `json` (the baseline), `msgpackr` and
 * `tether`. Every codec is checked for an exact round trip of every corpus
 * before anything is timed. `bench/report.ts` turns `deno bench --json`
 * output into the table in docs/PERFORMANCE.md.
 *
 * @module
 */

import { decodeMessage } from "../src/protocol/decode.ts";
import { encodeMessage } from "../src/protocol/encode.ts";
import { buildCorpora } from "./_corpora.ts";
import {
  assertExactRoundTrip,
  jsonDecode,
  jsonEncode,
  msgpackrDecode,
  msgpackrEncode,
} from "./_baselines.ts";

/** Folds every result in, so the optimiser cannot drop the measured work. */
let sink = 0;

for (const { name, message } of buildCorpora()) {
  const jsonBytes = jsonEncode(message);
  const msgpackrBytes = msgpackrEncode(message);
  const tetherBytes = encodeMessage(message);
  assertExactRoundTrip("json", message, jsonDecode(jsonBytes));
  assertExactRoundTrip("msgpackr", message, msgpackrDecode(msgpackrBytes));
  assertExactRoundTrip("tether", message, decodeMessage(tetherBytes));

  const encode = `${name}/encode`;
  Deno.bench("json", { group: encode, baseline: true }, () => {
    sink += jsonEncode(message).length;
  });
  Deno.bench("msgpackr", { group: encode }, () => {
    sink += msgpackrEncode(message).length;
  });
  Deno.bench("tether", { group: encode }, () => {
    sink += encodeMessage(message).length;
  });

  const decode = `${name}/decode`;
  Deno.bench("json", { group: decode, baseline: true }, () => {
    sink += jsonDecode(jsonBytes).type;
  });
  Deno.bench("msgpackr", { group: decode }, () => {
    sink += (msgpackrDecode(msgpackrBytes) as { type: number }).type;
  });
  Deno.bench("tether", { group: decode }, () => {
    sink += decodeMessage(tetherBytes).type;
  });
}

globalThis.addEventListener("unload", () => {
  if (sink === -1) console.log(sink);
});
