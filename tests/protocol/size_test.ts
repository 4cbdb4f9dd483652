import assert from "node:assert/strict";
import { decodeMessage } from "../../src/protocol/decode.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import { jsonEncode } from "../../bench/_json_codec.ts";
import { buildCorpora, CORPUS_NAMES } from "../../bench/_corpora.ts";

Deno.test("encodeMessage() writes each bench corpus in at most half the bytes of JSON", async (t) => {
  const corpora = buildCorpora();
  assert.deepEqual(corpora.map(({ name }) => name), [...CORPUS_NAMES]);
  for (const { name, message } of corpora) {
    await t.step(name, () => {
      const tether = encodeMessage(message);
      const json = jsonEncode(message);
      assert.ok(
        tether.length <= json.length * 0.5,
        `${name}: ${tether.length} bytes, JSON ${json.length} (${
          (tether.length / json.length).toFixed(3)
        })`,
      );
      assert.deepStrictEqual(decodeMessage(tether), message);
    });
  }
});

Deno.test("buildCorpora() is deterministic", () => {
  const sizes = () =>
    buildCorpora().map(({ message }) => encodeMessage(message).slice());
  assert.deepStrictEqual(sizes(), sizes());
});
