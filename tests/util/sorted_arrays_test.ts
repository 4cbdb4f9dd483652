import assert from "node:assert/strict";
import { Prng } from "../_helpers/prng.ts";
import {
  merge,
  selectFirst,
  withoutIndexes,
} from "../../src/util/sorted_arrays.ts";

const byNumber = (a: number, b: number) => a - b;

Deno.test("merge() of two sorted lists is their sorted union, equal items from the first list first", () => {
  const random = new Prng(7);
  for (let round = 0; round < 200; round++) {
    const a = Array.from({ length: random.int(20) }, () => random.int(10))
      .sort(byNumber);
    const b = Array.from({ length: random.int(20) }, () => random.int(10))
      .sort(byNumber);
    assert.deepEqual(merge(a, b, byNumber), [...a, ...b].sort(byNumber));
  }
  const tagged = merge([[1, "a"]], [[1, "b"]], (x, y) => +x[0]! - +y[0]!);
  assert.deepEqual(tagged, [[1, "a"], [1, "b"]]);
});

Deno.test("selectFirst() puts the count smallest items first, in any order, and keeps every item", () => {
  const random = new Prng(11);
  for (let round = 0; round < 300; round++) {
    const items = Array.from(
      { length: 1 + random.int(40) },
      () => random.int(15),
    );
    const count = 1 + random.int(items.length);
    const copy = [...items];
    selectFirst(copy, count, byNumber);
    const sorted = [...items].sort(byNumber);
    assert.deepEqual([...copy].sort(byNumber), sorted);
    assert.deepEqual(
      copy.slice(0, count).sort(byNumber),
      sorted.slice(0, count),
    );
  }
});

Deno.test("withoutIndexes() drops the items at the given ascending positions", () => {
  assert.deepEqual(withoutIndexes(["a", "b", "c", "d"], [0, 2]), ["b", "d"]);
  const items = ["a"];
  assert.equal(withoutIndexes(items, []), items);
  assert.deepEqual(withoutIndexes(["a", "b"], [0, 1]), []);
});
