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

Deno.test("FieldIndex.follow: bulk additions, then changes in bursts between lookups (pending and merged), agree with a scan; equalCount stays exact", () => {
  const seed = testSeed();
  const prng = new Prng(seed);
  const index = new FieldIndex("v");
  const model = new Map<string, Value | undefined>();
  // Few distinct values: long runs of equal entries, where equalCount
  // looks changed ids up by id.
  const values: Value[] = [null, 0, -0, 1, "a", 2n, new Date(3)];
  const pick = () => structuredClone(prng.pick(values));
  const fieldsOf = (value: Value | undefined) =>
    value === undefined ? {} : { v: value };
  // A bootstrap: 3,000 new objects in batches.
  for (let batch = 0; batch < 3; batch++) {
    const changes = [];
    for (let i = 0; i < 1_000; i++) {
      const id = `o${batch * 1_000 + i}`;
      const value = prng.int(10) === 0 ? undefined : pick();
      changes.push({ id, op: "put", fields: fieldsOf(value), created: true });
      model.set(id, value);
    }
    index.followAll(changes, 0, changes.length, () => {
      throw new Error("a put says its fields");
    });
  }
  const check = (label: string) => {
    assert.equal(index.size, model.size, label);
    for (const value of values) {
      const want = [...model].filter(([, held]) =>
        held === undefined ? value === null : compareValues(held, value) === 0
      ).map(([id]) => id).sort();
      assert.deepEqual([...index.equal(value)].sort(), want, label);
      assert.equal(index.equalCount(value), want.length, label);
    }
    const want = [...model].filter(([, held]) =>
      typeof held === "number" && compareValues(held, -0) >= 0
    ).map(([id]) => id).sort();
    assert.deepEqual(
      [...index.range({ value: -0, inclusive: true }, undefined)].sort(),
      want,
      label,
    );
  };
  check(`seed ${seed}: after the bootstrap`);
  for (let burst = 0; burst < 40; burst++) {
    // Bursts below and above the merge threshold (about 140 here).
    const length = prng.pick([1, 3, 20, 300]);
    for (let step = 0; step < length; step++) {
      const id = `o${prng.int(3_200)}`;
      const live = model.has(id);
      const roll = prng.int(4);
      if (!live) {
        const value = pick();
        index.follow({ id, op: "put", fields: fieldsOf(value), created: true });
        model.set(id, value);
      } else if (roll === 0) {
        index.follow({ id, op: "delete" });
        model.delete(id);
      } else if (roll === 1) {
        const value = prng.int(3) === 0 ? undefined : pick();
        index.follow({
          id,
          op: "put",
          fields: fieldsOf(value),
          created: false,
        });
        model.set(id, value);
      } else {
        const value = pick();
        index.follow({ id, op: "update", fields: { v: value } });
        model.set(id, value);
      }
    }
    check(`seed ${seed}: burst ${burst} of ${length}`);
  }
});
