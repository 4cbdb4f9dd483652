// The decoder's id cache (readUuid): the same string as formatting, always.
import assert from "node:assert/strict";
import { formatUuid, readUuid } from "../../src/protocol/uuid.ts";

Deno.test("readUuid gives formatUuid's string, the same one for a repeated id", () => {
  const bytes = new Uint8Array(16 * 5000);
  for (let at = 0; at < bytes.length; at += 65536) {
    crypto.getRandomValues(bytes.subarray(at, at + 65536));
  }
  // Ids that differ in one byte only, as sequential ids do.
  for (let index = 0; index < 256; index++) {
    bytes[16 * index + 15] = index;
    bytes.fill(7, 16 * index, 16 * index + 15);
  }
  // 5,000 ids into 1,024 slots: slots are shared, and a shared slot must
  // never answer with another id's string.
  for (let round = 0; round < 2; round++) {
    for (let at = 0; at < bytes.length; at += 16) {
      assert.equal(readUuid(bytes, at), formatUuid(bytes, at));
    }
  }
  const id = bytes.slice(0, 16);
  const once = readUuid(id, 0);
  assert.equal(readUuid(id.slice(), 0), once);
  id[3]! ^= 1;
  assert.notEqual(readUuid(id, 0), once);
  assert.equal(readUuid(id, 0), formatUuid(id, 0));
});
