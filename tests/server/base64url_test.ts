import assert from "node:assert/strict";
import {
  decodeBase64Url,
  encodeBase64Url,
} from "../../src/server/base64url.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";

Deno.test("encodeBase64Url() matches RFC 4648 test vectors without padding", () => {
  const vectors: [string, string][] = [
    ["", ""],
    ["f", "Zg"],
    ["fo", "Zm8"],
    ["foo", "Zm9v"],
    ["foob", "Zm9vYg"],
    ["fooba", "Zm9vYmE"],
    ["foobar", "Zm9vYmFy"],
  ];
  for (const [text, encoded] of vectors) {
    const bytes = new TextEncoder().encode(text);
    assert.equal(encodeBase64Url(bytes), encoded);
    assert.deepEqual(decodeBase64Url(encoded), bytes);
  }
  assert.equal(encodeBase64Url(new Uint8Array([0xfb, 0xff])), "-_8");
});

Deno.test("decodeBase64Url() round-trips 1,000 seeded random byte strings", () => {
  const prng = new Prng(testSeed());
  for (let round = 0; round < 1000; round++) {
    const bytes = new Uint8Array(prng.nextUint32() % 70);
    for (let index = 0; index < bytes.length; index++) {
      bytes[index] = prng.nextUint32() & 255;
    }
    const decoded = decodeBase64Url(encodeBase64Url(bytes));
    assert.deepEqual(decoded, bytes, `seed ${prng.seed}, round ${round}`);
  }
});

Deno.test("decodeBase64Url() refuses non-canonical and foreign input", () => {
  for (
    const text of ["a", "Zg==", "Zh", "Zm9=", "Zm+v", "Zm/v", "Zm9v\n", "é"]
  ) {
    assert.equal(decodeBase64Url(text), null, text);
  }
});
