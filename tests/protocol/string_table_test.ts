import assert from "node:assert/strict";
import { decodeMessage } from "../../src/protocol/decode.ts";
import { encodeMessage } from "../../src/protocol/encode.ts";
import {
  type DownloadMessage,
  MessageType,
} from "../../src/protocol/messages.ts";
import { StringTable } from "../../src/protocol/string_table.ts";

/**
 * Distinct strings that agree on every character the table's hash samples
 * (length 10: positions 0, 1, 5, 6, 8, 9), so they all collide.
 */
function collidingStrings(count: number): string[] {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const strings: string[] = [];
  for (let index = 0; strings.length < count; index++) {
    const a = alphabet[index % 36]!;
    const b = alphabet[Math.floor(index / 36) % 36]!;
    const c = alphabet[Math.floor(index / 1296) % 36]!;
    strings.push(`XY${a}${b}${c}MN${a}PQ`);
  }
  return strings;
}

Deno.test("StringTable.lookupOrAdd() numbers new strings in order and finds them again", () => {
  const table = new StringTable();
  const words = Array.from({ length: 5_000 }, (_, index) => `word-${index}`);
  words.forEach((word, index) =>
    assert.equal(table.lookupOrAdd(word), -1 - index)
  );
  words.forEach((word, index) => assert.equal(table.lookupOrAdd(word), index));
  assert.equal(table.size, words.length);
});

Deno.test("StringTable.lookupOrAdd() stays correct when every string collides", () => {
  const table = new StringTable();
  const strings = collidingStrings(3_000);
  strings.forEach((text, index) =>
    assert.equal(table.lookupOrAdd(text), -1 - index)
  );
  strings.forEach((text, index) =>
    assert.equal(table.lookupOrAdd(text), index)
  );
});

Deno.test("StringTable.reset() empties the table for the next block", () => {
  const table = new StringTable();
  for (let round = 0; round < 100; round++) {
    assert.equal(table.lookupOrAdd("a"), -1);
    assert.equal(table.lookupOrAdd(`b${round}`), -2);
    assert.equal(table.lookupOrAdd("a"), 0);
    table.reset();
    assert.equal(table.size, 0);
  }
});

Deno.test("encodeMessage() interns colliding ids correctly", () => {
  const ids = collidingStrings(2_000);
  const message: DownloadMessage = {
    type: MessageType.Download,
    sessionId: 1,
    serverVersion: 1,
    lastIntegratedClientVersion: 0,
    downloadableBytes: 0,
    changesetBytes: 0,
    changesets: [{
      serverVersion: 1,
      stamp: { time: 1, counter: 0, node: 1 },
      instructions: [...ids, ...ids].map((id) => ({
        op: "delete" as const,
        type: "T",
        id,
        fields: null,
        stamp: null,
      })),
    }],
  };
  const frame = encodeMessage(message);
  assert.deepStrictEqual(decodeMessage(frame), message);
  // The second round refers to the table: a header and a 2-byte reference.
  assert.ok(frame.length < ids.length * (1 + 1 + 10) + ids.length * 3 + 100);
});
