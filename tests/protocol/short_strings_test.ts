/**
 * Short ASCII strings take a JavaScript path on both ends (block.ts,
 * reader.ts) instead of TextEncoder/TextDecoder: the bytes and the decoded
 * strings must be the same either side of its 16-unit bound, and anything
 * not ASCII must still go through the platform's strict UTF-8.
 */
import assert from "node:assert/strict";
import { decodeMessage } from "../../src/protocol/decode.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import { type Message, MessageType } from "../../src/protocol/messages.ts";

const texts = [
  "n",
  "Item",
  "a".repeat(15),
  "b".repeat(16),
  "c".repeat(17),
  "é",
  "日本",
  "🌍",
  "\u007f\u0000",
];

function downloadWith(type: string, field: string): Message {
  return {
    type: MessageType.Download,
    sessionId: 1,
    serverVersion: 2,
    lastIntegratedClientVersion: 0,
    downloadableBytes: 0,
    changesetBytes: 0,
    changesets: [{
      serverVersion: 2,
      stamp: { time: 1, counter: 0, node: 1 },
      instructions: [{
        op: "put",
        type,
        id: "o",
        fields: { [field]: 1 },
        stamp: null,
      }],
    }],
  };
}

Deno.test("block strings round-trip, and their bytes are TextEncoder's, on both sides of the short-ASCII bound", () => {
  for (const type of texts) {
    for (const field of ["f", "x".repeat(16), "ü"]) {
      const message = downloadWith(type, field);
      const frame = encodeMessage(message).slice();
      assert.deepEqual(decodeMessage(frame), message, `${type} / ${field}`);
      // The string section closes the frame: type, id, then the field name.
      const section = new TextEncoder().encode(type + "o" + field);
      assert.deepEqual(
        frame.subarray(frame.length - section.length),
        section,
        `${type} / ${field}`,
      );
    }
  }
});

Deno.test("inline strings round-trip on both sides of the short-ASCII bound", () => {
  for (const token of texts) {
    const message: Message = { type: MessageType.Refresh, accessToken: token };
    assert.deepEqual(decodeMessage(encodeMessage(message).slice()), message);
  }
});
