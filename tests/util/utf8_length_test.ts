// utf8Length (src/util/utf8_length.ts) against TextEncoder on strings of
// every kind of UTF-16 unit, lone surrogates included.
import assert from "node:assert/strict";
import { utf8Length } from "../../src/util/utf8_length.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";

const encoder = new TextEncoder();

Deno.test("utf8Length counts what TextEncoder writes", () => {
  for (
    const text of [
      "",
      "a",
      "é",
      "€",
      "\u{1F600}",
      "\uD800",
      "\uDC00",
      "\uDC00\uD800",
      "a\uD800b",
      "\uD83D\uDE00\uD83D",
      "\0",
    ]
  ) {
    assert.equal(utf8Length(text), encoder.encode(text).length, text);
  }
  const random = new Prng(testSeed());
  // Units from each range the count distinguishes: ASCII, two-byte,
  // three-byte, high and low surrogates.
  const ranges = [[0, 0x80], [0x80, 0x800], [0x800, 0xd800], [0xd800, 0xdc00], [
    0xdc00,
    0xe000,
  ], [0xe000, 0x10000]];
  for (let round = 0; round < 2_000; round++) {
    let text = "";
    const length = Math.floor(random.next() * 12);
    for (let i = 0; i < length; i++) {
      const [from, to] = ranges[Math.floor(random.next() * ranges.length)]!;
      text += String.fromCharCode(
        from! + Math.floor(random.next() * (to! - from!)),
      );
    }
    assert.equal(
      utf8Length(text),
      encoder.encode(text).length,
      `seed ${random.seed}: ${JSON.stringify(text)}`,
    );
  }
});
