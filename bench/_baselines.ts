/**
 * The two rival codecs the codec bench compares Tether with, set up so that
 * each one round-trips the corpora exactly:
 *
 * - `json`: see `_json_codec.ts` (kept apart so the size test can use it
 *   without loading msgpackr).
 * - `msgpackr`: the package's plain `pack` / `unpack`, pinned, with its
 *   defaults (it loads its native `msgpackr-extract` add-on when it can).
 *   It round-trips every value kind in the corpora; it cannot carry `-0`
 *   (written as 0) or bigints beyond 64 bits (it throws), which the corpora
 *   do not contain, so no mapping is needed and none is timed. It decodes
 *   byte arrays as Node `Buffer`s, a `Uint8Array` subclass, which the
 *   round-trip check accepts.
 *
 * @module
 */

import { pack, unpack } from "npm:msgpackr@2.1.4";
import type { Message } from "../src/protocol/messages.ts";
import { type Value, valuesEqual } from "../src/model/value.ts";

export { pack as msgpackrEncode, unpack as msgpackrDecode };
export { jsonDecode, jsonEncode } from "./_json_codec.ts";

/**
 * Throws unless `decoded` equals `original` exactly: same keys, numbers by
 * `Object.is`, bytes by content, dates by time.
 */
export function assertExactRoundTrip(
  codec: string,
  original: Message,
  decoded: unknown,
): void {
  if (!valuesEqual(original as unknown as Value, decoded as Value)) {
    throw new Error(`${codec} does not round-trip the corpus exactly`);
  }
}
