import assert from "node:assert/strict";
import { BlockList } from "../../src/client/entry_list.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";

const compare = (a: number, b: number) => a - b;

/** An empty list with `maxBlock`, its model and the snapshots taken of it. */
function emptyCase(maxBlock: number) {
  return {
    model: [] as number[],
    list: BlockList.from<number>([], maxBlock),
    snapshots: [] as {
      blocks: readonly (readonly number[])[];
      copy: number[];
    }[],
  };
}

Deno.test("BlockList keeps order through inserts, removals and replacements across block splits, and snapshots never change", () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  for (const maxBlock of [2, 3, 8]) {
    const { model, list, snapshots } = emptyCase(maxBlock);
    for (let step = 0; step < 2_000; step++) {
      const roll = prng.int(10);
      if (roll < 5 || model.length === 0) {
        const value = prng.int(1_000_000) + step / 10_000;
        list.insert(value, compare);
        let at = 0;
        while (at < model.length && model[at]! < value) at++;
        model.splice(at, 0, value);
      } else if (roll < 8) {
        const index = prng.int(model.length);
        assert.equal(list.lowerBound(model[index]!, compare), index);
        list.removeAt(index);
        model.splice(index, 1);
      } else if (roll < 9) {
        const index = prng.int(model.length);
        list.replaceAt(index, model[index]!);
      } else {
        const blocks = list.snapshot();
        snapshots.push({ blocks, copy: blocks.flat() });
      }
      assert.equal(list.length, model.length, `seed ${seed}`);
    }
    assert.deepEqual(list.toArray(), model, `seed ${seed}`);
    assert.equal(list.lowerBound(Infinity, compare), model.length);
    for (const { blocks, copy } of snapshots) {
      assert.deepEqual(blocks.flat(), copy);
    }
    const rebuilt = BlockList.from(model, maxBlock);
    assert.deepEqual(rebuilt.toArray(), model);
  }
});

Deno.test("BlockList.truncate keeps a prefix across block boundaries and leaves earlier snapshots alone", () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  for (const maxBlock of [2, 3, 8]) {
    for (let round = 0; round < 50; round++) {
      const items = Array.from({ length: prng.int(40) }, (_, i) => i);
      const list = BlockList.from(items, maxBlock);
      for (const extra of [prng.int(1_000) + 0.5, prng.int(1_000) + 0.25]) {
        list.insert(extra, compare);
        items.push(extra);
      }
      items.sort(compare);
      const blocks = list.snapshot();
      const before = blocks.flat();
      const length = prng.int(items.length + 2);
      list.truncate(length);
      const kept = items.slice(0, length);
      assert.deepEqual(list.toArray(), kept, `seed ${seed}`);
      assert.equal(list.length, kept.length, `seed ${seed}`);
      assert.deepEqual(blocks.flat(), before, `seed ${seed}: snapshot kept`);
      // Still a working list after the cut.
      list.insert(-1, compare);
      assert.equal(list.lowerBound(-1, compare), 0);
      assert.deepEqual(list.toArray(), [-1, ...kept], `seed ${seed}`);
    }
  }
});

Deno.test("BlockList.insertAll places a sorted batch as inserts one by one would, into shared and owned blocks, splits big blocks, and snapshots never change", () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  for (const maxBlock of [2, 3, 8, 64]) {
    const { model, list, snapshots } = emptyCase(maxBlock);
    for (let step = 0; step < 400; step++) {
      const roll = prng.int(6);
      if (roll < 3 || model.length === 0) {
        // Distinct new values (the fraction tells them from the list's).
        const batch = Array.from(
          { length: prng.int(3) === 0 ? 1 : prng.int(3 * maxBlock) },
          (_, i) => prng.int(1_000) + (step * 1_000 + i + 1) / 10_000_000,
        ).sort(compare);
        list.insertAll(batch, compare);
        model.push(...batch);
        model.sort(compare);
      } else if (roll < 4) {
        const index = prng.int(model.length);
        list.removeAt(index);
        model.splice(index, 1);
      } else {
        const blocks = list.snapshot();
        snapshots.push({ blocks, copy: blocks.flat() });
        for (const block of blocks) {
          assert.ok(
            block.length > 0 && block.length <= maxBlock,
            `seed ${seed}: block sizes`,
          );
        }
      }
      assert.equal(list.length, model.length, `seed ${seed}`);
      assert.deepEqual(list.toArray(), model, `seed ${seed}`);
    }
    for (let i = 0; i < model.length; i++) {
      assert.equal(list.lowerBound(model[i]!, compare), i, `seed ${seed}`);
    }
    for (const { blocks, copy } of snapshots) {
      assert.deepEqual(blocks.flat(), copy, `seed ${seed}: snapshot kept`);
    }
  }
});
