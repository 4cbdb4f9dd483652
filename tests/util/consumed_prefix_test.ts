import assert from "node:assert/strict";
import { trimConsumed } from "../../src/util/consumed_prefix.ts";

Deno.test("trimConsumed() empties a fully consumed list and keeps a short prefix in place", () => {
  const done = [1, 2, 3];
  assert.equal(trimConsumed(done, 3), 0);
  assert.deepEqual(done, []);
  const partly = [1, 2, 3, 4];
  assert.equal(trimConsumed(partly, 2), 2);
  assert.deepEqual(partly, [1, 2, 3, 4]);
});

Deno.test("trimConsumed() cuts a long prefix once it is at least half the list, so consuming one at a time stays linear", () => {
  const items = Array.from({ length: 3_000 }, (_, index) => index);
  let head = 0;
  let cuts = 0;
  for (let step = 0; step < 2_000; step++) {
    const before = items.length;
    head = trimConsumed(items, head + 1);
    if (items.length !== before) cuts++;
    // The entries not yet consumed are always the same ones, in order.
    assert.equal(items[head], step + 1);
  }
  assert.equal(cuts, 1);
  assert.equal(items.length, 3_000 - 1_501);
});
