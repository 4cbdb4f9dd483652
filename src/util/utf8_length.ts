// This module is browser compatible.

/**
 * The length of a string's UTF-8 encoding, counted without encoding it.
 */

/**
 * The number of bytes `TextEncoder` would write for `text`: 1 per code
 * unit below U+0080, 2 below U+0800, 4 per surrogate pair and 3 for any
 * other unit (a lone surrogate becomes U+FFFD, 3 bytes). Counting is a
 * loop over the string; `TextEncoder.encode` crosses into the runtime and
 * allocates the bytes, which on a path run per upload cost more than the
 * counting.
 *
 * @example Counting
 * ```ts
 * import { utf8Length } from "./utf8_length.ts";
 * import assert from "node:assert/strict";
 *
 * assert.equal(utf8Length("é"), 2);
 * assert.equal(utf8Length("\u{1F600}"), 4);
 * assert.equal(utf8Length("\uD800"), 3);
 * ```
 */
export function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) continue;
    if (unit < 0x800) {
      bytes += 1;
    } else if (
      unit >= 0xd800 && unit < 0xdc00 && i + 1 < text.length &&
      (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00
    ) {
      // A pair: 4 bytes for its two units.
      bytes += 2;
      i++;
    } else {
      bytes += 2;
    }
  }
  return bytes;
}
