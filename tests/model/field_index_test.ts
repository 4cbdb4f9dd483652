import assert from "node:assert/strict";
import { FieldIndex } from "../../src/model/field_index.ts";
import { compareValues } from "../../src/model/value_order.ts";
import type { Value } from "../../src/model/value.ts";
import { Prng, testSeed } from "../_helpers/prng.ts";

// Values a Map alone would confuse (0 and -0) or that need a key string
// (null, bytes, dates, composites), beside 1, 1n and "1", which differ.
const VALUES: Value[] = [
  null,
  false,
  true,
  NaN,
  -0,
  0,
  1,
  2.5,
  1n,
  -3n,
  "1",
  "",
  "b",
  new Uint8Array([1, 2]),
  new Uint8Array([1]),
  new Date(5),
  new Date(7),
  [1, "a"],
  [],
  { a: 1 },
  { a: 1, b: [2] },
];

Deno.test("FieldIndex answers equality and ranges as a scan in the value order does, for every value kind, through random sets, updates and deletes", () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  const index = new FieldIndex("v");
  // id → value (undefined: the object has no field v).
  const model = new Map<string, Value | undefined>();
  const scanEqual = (value: Value) =>
    [...model].filter(([, held]) =>
      held === undefined ? value === null : compareValues(held, value) === 0
    ).map(([id]) => id).sort();
  for (let step = 0; step < 3_000; step++) {
    const id = `o${prng.int(60)}`;
    const roll = prng.int(10);
    if (roll === 0) {
      index.set(id, undefined);
      model.delete(id);
    } else if (roll === 1) {
      index.set(id, { other: 1 });
      model.set(id, undefined);
    } else {
      // A fresh copy: equal values need not be the same object.
      const value = structuredClone(prng.pick(VALUES));
      index.set(id, { v: value });
      model.set(id, value);
    }
    if (step % 50 !== 0) continue;
    const label = `seed ${seed} step ${step}`;
    assert.equal(index.size, model.size, label);
    for (const value of VALUES) {
      assert.deepEqual([...index.equal(value)].sort(), scanEqual(value), label);
      assert.equal(index.equalCount(value), scanEqual(value).length, label);
    }
    for (const [lower, upper] of [[-0, 2.5], [0, 1], ["", "b"]] as const) {
      const expected = [...model].filter(([, held]) =>
        held !== undefined && typeof held === typeof lower &&
        compareValues(held, lower) >= 0 && compareValues(held, upper) < 0
      ).map(([id]) => id).sort();
      assert.deepEqual(
        [...index.range(
          { value: lower, inclusive: true },
          { value: upper, inclusive: false },
        )].sort(),
        expected,
        `${label}: [${String(lower)}, ${String(upper)})`,
      );
    }
  }
});
