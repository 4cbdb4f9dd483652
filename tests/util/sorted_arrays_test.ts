import assert from "node:assert/strict";
import { Prng } from "../_helpers/prng.ts";
import {
  merge,
  selectFirst,
  selectFirstAgainst,
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

Deno.test("selectFirstAgainst() puts the count smallest items after `from` first, comparing each with a key prepared from a pivot, and leaves the items before `from` alone", () => {
  const random = new Prng(13);
  type Item = { value: number; id: number };
  const byItem = (a: Item, b: Item) => a.value - b.value || a.id - b.id;
  for (let round = 0; round < 300; round++) {
    // Few values, so many items tie on the value and differ by id only.
    const items = Array.from(
      { length: 1 + random.int(60) },
      (_, id): Item => ({ value: random.int(6), id }),
    );
    const from = random.int(items.length);
    const count = 1 + random.int(items.length - from);
    const copy = [...items];
    let pivots = 0;
    selectFirstAgainst(
      copy,
      from,
      count,
      (item) => {
        pivots++;
        return [item.value, item.id] as const;
      },
      (item, [value, id]) => item.value - value || item.id - id,
    );
    assert.deepEqual(copy.slice(0, from), items.slice(0, from));
    const rest = items.slice(from).sort(byItem);
    assert.deepEqual(copy.slice(from).sort(byItem), rest);
    assert.deepEqual(
      copy.slice(from, from + count).sort(byItem),
      rest.slice(0, count),
    );
    assert.ok(pivots < items.length, "a pivot per round, not per item");
  }
});

Deno.test("withoutIndexes() drops the items at the given ascending positions", () => {
  assert.deepEqual(withoutIndexes(["a", "b", "c", "d"], [0, 2]), ["b", "d"]);
  const items = ["a"];
  assert.equal(withoutIndexes(items, []), items);
  assert.deepEqual(withoutIndexes(["a", "b"], [0, 1]), []);
});
